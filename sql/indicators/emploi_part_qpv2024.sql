-- ---
-- family: emploi_part_qpv2024
-- sources: [insee_qpv24_defm, insee_qpv24_estimations]
-- requires: [src.insee_qpv_defm, src.insee_qpv_estimations]
-- generation: 2024
-- absent_fr: "les demandeurs d'emploi ou la population de 15 à 64 ans ne sont pas diffusés pour ce quartier"
-- indicators:
--   - id: q24_part_demandeurs_1564
--     label_fr: Demandeurs d'emploi (A, B, C) pour 100 habitants de 15 à 64 ans — quartiers 2024
--     unit: "%"
--     theme: emploi
--     method: >
--       Demandeurs d'emploi de catégories A, B, C au 31 décembre (DEFM_ABC) rapportés à la population
--       de 15 à 64 ans estimée par l'INSEE (POP_1564, estimations démographiques). Les deux millésimes
--       diffèrent : un indicateur de pression, pas un taux de chômage.
--     millesime: DEFM et estimations démographiques (millésimes des sources)
--     range: [0, 100]
--     secrecy: {rate_of: q24_demandeurs_emploi_abc}
-- ---
-- A count INSEE keeps secret (s) is a row without value and status 'secret', and so is a share computed on it;
-- ns / nd / so give no row (« non disponible »).
WITH d AS (
    SELECT code_qp, generation, scope,
           max(value) FILTER (WHERE variable = 'DEFM_ABC') AS abc,
           coalesce(bool_or(status = 's' AND variable = 'DEFM_ABC'), false) AS abc_s,
           min(source_run_id) AS run
    FROM src.insee_qpv_cells('defm', %(release_insee_qpv24_defm)s, %(generation)s)
    GROUP BY 1, 2, 3
), e AS (
    SELECT code_qp, generation, scope,
           max(value) FILTER (WHERE variable = 'POP_1564') AS p1564,
           coalesce(bool_or(status = 's' AND variable = 'POP_1564'), false) AS p1564_s,
           min(source_run_id) AS run
    FROM src.insee_qpv_cells('estimations', %(release_insee_qpv24_estimations)s, %(generation)s)
    GROUP BY 1, 2, 3
), rows AS (
    SELECT 'q24_part_demandeurs_1564' AS indicator_id, d.code_qp, d.generation, d.scope,
           round((100.0 * d.abc / nullif(e.p1564, 0))::numeric, 1)::double precision AS value,
           d.abc_s OR e.p1564_s AS secret, d.run, e.run AS run_e
    FROM d JOIN e USING (code_qp, generation, scope)
)
SELECT indicator_id, code_qp, generation, scope, CASE WHEN secret THEN NULL ELSE value END AS value,
       NULL::double precision AS numerator, NULL::double precision AS denominator,
       meta.millesime_of(run) || ' ; population : ' || meta.millesime_of(run_e) AS millesime,
       ARRAY[run, run_e] AS source_run_ids, CASE WHEN secret THEN 'secret' END AS status
FROM rows
WHERE value IS NOT NULL OR secret
