-- ---
-- family: services_qpv2024
-- sources: [bpe, insee_qpv24_population, insee_qpv24_population_communes]
-- requires: [src.bpe, src.insee_qpv_population, src.insee_qpv_population_communes]
-- generation: 2024
-- absent_fr: "les équipements ou la population de ce quartier ne sont pas disponibles"
-- indicators:
--   - id: q24_equipements_pour_1000_hab
--     label_fr: Équipements pour 1 000 habitants — quartiers 2024
--     unit: équipements pour 1 000 habitants
--     theme: services
--     method: >
--       Équipements géolocalisés de la BPE situés dans le périmètre du quartier (liste 2024), pour 1 000
--       habitants du quartier (population municipale publiée par l'INSEE pour les périmètres 2024).
--       Portée « commune » : équipements de la commune (DEPCOM) pour 1 000 habitants de la commune ;
--       « commune_hors_qpv » : équipements de la commune hors de tous ses quartiers, pour 1 000 habitants
--       hors quartiers.
--     millesime: BPE et recensement (millésimes des sources)
--     range: [0, 100000]
--     secrecy: {rate_of: q24_population}
-- ---
-- Only départements the BPE covers; a population INSEE keeps secret gives a row without value, status 'secret'.
WITH run AS (
    SELECT min(source_run_id) AS run_id, array_agg(DISTINCT dep) AS deps FROM src.bpe
), qpv AS (
    SELECT q.generation, q.code_qp, q.insee_com, q.source_run_id AS qpv_run,
           p.value AS pop_qp, p.status = 's' AS pop_secret, p.source_run_id AS pop_run
    FROM ref.qpv q
    JOIN src.insee_qpv_cells('population', %(release_insee_qpv24_population)s, %(generation)s) p
      ON p.code_qp = q.code_qp AND p.generation = q.generation AND p.scope = 'qpv' AND p.variable = 'POPMUNI'
    WHERE q.generation = %(generation)s AND q.dep = ANY ((SELECT deps FROM run)::text[])
), com AS (
    SELECT code_qp, max(value) FILTER (WHERE variable = 'POPMUNI_COM') AS pop_com,
           max(value) FILTER (WHERE variable = 'POPMUNI_COM') - max(value) FILTER (WHERE variable = 'POPMUNI_QP')
               AS pop_hors,
           coalesce(bool_or(status = 's'), false) AS com_secret, min(source_run_id) AS com_run
    FROM src.insee_qpv_cells('population_communes', %(release_insee_qpv24_population_communes)s, %(generation)s)
    WHERE scope = 'commune'
    GROUP BY 1
), inside AS (
    SELECT qpv.code_qp,
           (SELECT count(DISTINCT b.ctid) FROM ref.qpv_subdivided s JOIN src.bpe b ON ST_Intersects(b.geom, s.geom)
             WHERE s.generation = qpv.generation AND s.code_qp = qpv.code_qp) AS n_in
    FROM qpv
), commune AS (
    SELECT c.insee_com,
           (SELECT count(*) FROM src.bpe b WHERE b.insee_com = c.insee_com) AS n_com,
           (SELECT count(*) FROM src.bpe b WHERE b.insee_com = c.insee_com AND NOT EXISTS (
                SELECT 1 FROM ref.qpv_subdivided s WHERE s.generation = %(generation)s
                                                     AND ST_Intersects(b.geom, s.geom))) AS n_hors
    FROM (SELECT DISTINCT insee_com FROM qpv) c
), rows AS (
    SELECT 'q24_equipements_pour_1000_hab' AS indicator_id, qpv.code_qp, qpv.generation, i.scope, i.num, i.den,
           i.secret, ARRAY[qpv.qpv_run, r.run_id, i.pop_run] AS runs, i.pop_run
    FROM qpv
    JOIN inside USING (code_qp)
    JOIN commune USING (insee_com)
    LEFT JOIN com USING (code_qp)
    CROSS JOIN run r
    CROSS JOIN LATERAL (VALUES
        ('qpv', inside.n_in, qpv.pop_qp, coalesce(qpv.pop_secret, false), qpv.pop_run),
        ('commune', commune.n_com, com.pop_com, com.com_secret, com.com_run),
        ('commune_hors_qpv', commune.n_hors, com.pop_hors, com.com_secret, com.com_run)
    ) AS i (scope, num, den, secret, pop_run)
    WHERE i.den > 0 OR i.secret
)
SELECT indicator_id, code_qp, generation, scope,
       CASE WHEN secret THEN NULL ELSE round((1000.0 * num / den)::numeric, 2)::double precision END AS value,
       NULL::double precision AS numerator, NULL::double precision AS denominator,
       meta.millesime_of(runs[2]) || ' ; population : ' || meta.millesime_of(pop_run) AS millesime,
       runs AS source_run_ids, CASE WHEN secret THEN 'secret' END AS status
FROM rows
