-- ---
-- family: services_par_habitant
-- sources: [bpe, sigville_demo]
-- requires: [src.bpe, src.sigville_demo]
-- generation: 2015
-- absent_fr: "les équipements ou la population ne sont pas disponibles pour ce quartier"
-- indicators:
--   - id: equipements_pour_1000_hab
--     label_fr: Équipements pour 1 000 habitants
--     unit: équipements pour 1 000 habitants
--     theme: services
--     method: >
--       Équipements géolocalisés de la BPE situés dans le périmètre du QPV, pour 1 000 habitants du QPV
--       (population SIG Ville). Portée « commune » : équipements de la commune (DEPCOM) pour 1 000
--       habitants de la commune ; « commune_hors_qpv » : équipements de la commune hors de tous ses
--       QPV, pour 1 000 habitants hors QPV. Numérateur (équipements) et dénominateur (habitants) donnés.
--     millesime: BPE et SIG Ville
--     range: [0, 100000]
--     secrecy: {rate_of: population}
--   - id: equipements_500m_pour_1000_hab
--     label_fr: Équipements à moins de 500 m pour 1 000 habitants
--     unit: équipements pour 1 000 habitants
--     theme: services
--     method: Équipements dans le QPV ou à moins de 500 m (equipements_500m) pour 1 000 habitants du QPV.
--     millesime: BPE et SIG Ville
--     range: [0, 100000]
--     secrecy: {rate_of: population, numerator: equipements_500m, denominator: population, per: 1000}
-- ---
WITH run AS (
    SELECT min(source_run_id) AS run_id, array_agg(DISTINCT dep) AS deps FROM src.bpe
), qpv AS (
    SELECT q.generation, q.code_qp, q.insee_com, q.geom, q.source_run_id AS qpv_run,
           d.pop_qp, d.pop_com, d.pop_com - d.pop_com_qp AS pop_hors, d.source_run_id AS demo_run
    FROM ref.qpv q
    JOIN src.sigville_demo d ON q.generation = %(generation)s AND d.code_qp = q.code_qp
                            AND d.release = %(release_sigville_demo)s
    WHERE q.dep = ANY ((SELECT deps FROM run)::text[])
), inside AS (
    SELECT qpv.generation, qpv.code_qp,
           (SELECT count(DISTINCT b.ctid) FROM ref.qpv_subdivided s JOIN src.bpe b ON ST_Intersects(b.geom, s.geom)
             WHERE s.generation = qpv.generation AND s.code_qp = qpv.code_qp) AS n_in,
           (SELECT count(DISTINCT b.ctid) FROM ref.qpv_subdivided s JOIN src.bpe b ON ST_DWithin(b.geom, s.geom, 500)
             WHERE s.generation = qpv.generation AND s.code_qp = qpv.code_qp) AS n_500
    FROM qpv
), commune AS (         -- per commune: all its facilities, and those outside every QPV of the list
    SELECT c.generation, c.insee_com,
           (SELECT count(*) FROM src.bpe b WHERE b.insee_com = c.insee_com) AS n_com,
           (SELECT count(*) FROM src.bpe b WHERE b.insee_com = c.insee_com AND NOT EXISTS (
                SELECT 1 FROM ref.qpv_subdivided s WHERE s.generation = c.generation
                                                     AND ST_Intersects(b.geom, s.geom))) AS n_hors
    FROM (SELECT DISTINCT generation, insee_com FROM qpv) c
)
SELECT i.indicator_id, qpv.code_qp, qpv.generation, i.scope,
       round((1000.0 * i.num / i.den)::numeric, 2)::double precision AS value,
       i.num::double precision AS numerator, i.den::double precision AS denominator,
       meta.millesime_of(r.run_id) || ' ; population : ' || meta.millesime_of(qpv.demo_run) AS millesime,
       ARRAY[qpv.qpv_run, r.run_id, qpv.demo_run] AS source_run_ids
FROM qpv
JOIN inside USING (generation, code_qp)
JOIN commune USING (generation, insee_com)
CROSS JOIN run r
CROSS JOIN LATERAL (VALUES
    ('equipements_pour_1000_hab', 'qpv', inside.n_in, qpv.pop_qp),
    ('equipements_500m_pour_1000_hab', 'qpv', inside.n_500, qpv.pop_qp),
    ('equipements_pour_1000_hab', 'commune', commune.n_com, qpv.pop_com),
    ('equipements_pour_1000_hab', 'commune_hors_qpv', commune.n_hors, qpv.pop_hors)
) AS i (indicator_id, scope, num, den)
WHERE i.den > 0
