-- ---
-- family: scolarisation_qpv2024
-- sources: [insee_qpv24_scolarisation]
-- requires: [src.insee_qpv_scolarisation]
-- generation: 2024
-- absent_fr: "l'INSEE ne diffuse pas cette valeur pour ce quartier"
-- indicators:
--   - id: q24_eleves
--     label_fr: Élèves résidant dans le quartier — quartiers 2024
--     unit: élèves
--     theme: éducation
--     method: >
--       Élèves scolarisés résidant dans le quartier (liste 2024), année scolaire du millésime, tels que
--       l'INSEE les publie par quartier (ELEV_TOT, ministère de l'Éducation nationale). Portée
--       « commune » : les élèves de la commune du quartier.
--     millesime: année scolaire (année de la rentrée, millésime de la source)
--     is_count: true
--     range: [0, 1000000]
--     secrecy: count
-- ---
-- A count INSEE keeps secret (s) is a row without value and status 'secret', and so is a share computed on it;
-- ns / nd / so give no row (« non disponible »).
WITH p AS (
    SELECT code_qp, generation, scope,
           max(value) FILTER (WHERE variable = 'ELEV_TOT') AS n,
           coalesce(bool_or(status = 's' AND variable = 'ELEV_TOT'), false) AS n_s,
           min(source_run_id) AS run
    FROM src.insee_qpv_cells('scolarisation', %(release_insee_qpv24_scolarisation)s, %(generation)s)
    GROUP BY 1, 2, 3
), rows AS (
    SELECT 'q24_eleves' AS indicator_id, code_qp, generation, scope, n AS value, n_s AS secret, run FROM p
)
SELECT indicator_id, code_qp, generation, scope, CASE WHEN secret THEN NULL ELSE value END AS value,
       NULL::double precision AS numerator, NULL::double precision AS denominator,
       meta.millesime_of(run) AS millesime, ARRAY[run] AS source_run_ids, CASE WHEN secret THEN 'secret' END AS status
FROM rows
WHERE value IS NOT NULL OR secret
