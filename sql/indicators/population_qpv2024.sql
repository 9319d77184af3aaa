-- ---
-- family: population_qpv2024
-- sources: [insee_qpv24_population, insee_qpv24_population_communes, insee_qpv24_estimations]
-- requires: [src.insee_qpv_population, src.insee_qpv_population_communes, src.insee_qpv_estimations]
-- generation: 2024
-- absent_fr: "l'INSEE ne diffuse pas cette valeur pour ce quartier"
-- indicators:
--   - id: q24_population
--     label_fr: Population municipale — quartiers 2024
--     unit: habitants
--     theme: socio-démographie
--     method: >
--       Population municipale du quartier (liste 2024) au recensement, population de référence publiée
--       par l'INSEE pour les nouveaux périmètres (POPMUNI). Portée « commune » : population municipale
--       de la commune (POPMUNI_COM) ; « commune_hors_qpv » : population de la commune ne vivant dans
--       aucun de ses quartiers (POPMUNI_COM - POPMUNI_QP).
--     millesime: recensement, population de référence (millésime de la source)
--     is_count: true
--     range: [0, 3000000]
--     secrecy: count
--   - id: q24_part_moins_25
--     label_fr: Part des moins de 25 ans — quartiers 2024
--     unit: "%"
--     theme: socio-démographie
--     method: >
--       Part des habitants de moins de 25 ans dans la population estimée au 1er janvier (estimations
--       démographiques de l'INSEE par quartier, POP_0024 / POP_TOT).
--     millesime: estimations démographiques (millésime de la source)
--     range: [0, 100]
--     secrecy: {rate_of: q24_population}
--   - id: q24_part_60_plus
--     label_fr: Part des 60 ans et plus — quartiers 2024
--     unit: "%"
--     theme: socio-démographie
--     method: Part des habitants de 60 ans et plus dans la population estimée au 1er janvier (POP_60P / POP_TOT).
--     millesime: estimations démographiques (millésime de la source)
--     range: [0, 100]
--     secrecy: {rate_of: q24_population}
-- ---
-- Cells of the three files side by side per QPV and scope; a count INSEE keeps secret (s) is a row without value
-- and status 'secret', and so is a share computed on it.
WITH pop AS (
    SELECT code_qp, generation, scope, value, status, source_run_id
    FROM src.insee_qpv_cells('population', %(release_insee_qpv24_population)s, %(generation)s)
    WHERE variable = 'POPMUNI' AND scope = 'qpv'
), com AS (      -- the commune, whole and outside its QPV
    SELECT code_qp, generation,
           max(value) FILTER (WHERE variable = 'POPMUNI_COM') AS com,
           max(value) FILTER (WHERE variable = 'POPMUNI_QP') AS com_qp,
           bool_or(status = 's') AS secret, min(source_run_id) AS run
    FROM src.insee_qpv_cells('population_communes', %(release_insee_qpv24_population_communes)s, %(generation)s)
    WHERE scope = 'commune'
    GROUP BY 1, 2
), est AS (
    SELECT code_qp, generation, scope,
           max(value) FILTER (WHERE variable = 'POP_TOT') AS tot,
           max(value) FILTER (WHERE variable = 'POP_0024') AS moins_25,
           max(value) FILTER (WHERE variable = 'POP_60P') AS plus_60,
           bool_or(status = 's' AND variable IN ('POP_TOT', 'POP_0024')) AS s25,
           bool_or(status = 's' AND variable IN ('POP_TOT', 'POP_60P')) AS s60,
           min(source_run_id) AS run
    FROM src.insee_qpv_cells('estimations', %(release_insee_qpv24_estimations)s, %(generation)s)
    GROUP BY 1, 2, 3
), rows AS (
    SELECT 'q24_population' AS indicator_id, code_qp, generation, 'qpv' AS scope, value,
           status = 's' AS secret, source_run_id AS run FROM pop
    UNION ALL
    SELECT 'q24_population', code_qp, generation, 'commune', com, secret, run FROM com
    UNION ALL
    SELECT 'q24_population', code_qp, generation, 'commune_hors_qpv', com - com_qp, secret, run FROM com
    UNION ALL
    SELECT 'q24_part_moins_25', code_qp, generation, scope,
           round((100.0 * moins_25 / nullif(tot, 0))::numeric, 1)::double precision, s25, run FROM est
    UNION ALL
    SELECT 'q24_part_60_plus', code_qp, generation, scope,
           round((100.0 * plus_60 / nullif(tot, 0))::numeric, 1)::double precision, s60, run FROM est
)
SELECT indicator_id, code_qp, generation, scope, CASE WHEN secret THEN NULL ELSE value END AS value,
       NULL::double precision AS numerator, NULL::double precision AS denominator,
       meta.millesime_of(run) AS millesime, ARRAY[run] AS source_run_ids,
       CASE WHEN secret THEN 'secret' END AS status
FROM rows
WHERE value IS NOT NULL OR secret
