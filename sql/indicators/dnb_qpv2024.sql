-- ---
-- family: dnb_qpv2024
-- sources: [insee_qpv24_dnb]
-- requires: [src.insee_qpv_dnb]
-- generation: 2024
-- absent_fr: "l'INSEE ne diffuse pas cette valeur pour ce quartier"
-- indicators:
--   - id: q24_candidats_dnb
--     label_fr: Candidats présents au diplôme national du brevet — quartiers 2024
--     unit: candidats
--     theme: éducation
--     method: Candidats présents au DNB résidant dans le quartier (liste 2024), session du millésime (DNB_PRES).
--     millesime: session du brevet (millésime de la source)
--     is_count: true
--     range: [0, 100000]
--     secrecy: count
--   - id: q24_taux_reussite_dnb
--     label_fr: Taux de réussite au diplôme national du brevet — quartiers 2024
--     unit: "%"
--     theme: éducation
--     method: >
--       Candidats admis au DNB pour 100 candidats présents résidant dans le quartier (DNB_ADMIS /
--       DNB_PRES). Portée « commune » : les candidats de la commune du quartier.
--     millesime: session du brevet (millésime de la source)
--     range: [0, 100]
--     secrecy: {rate_of: q24_candidats_dnb}
-- ---
-- A count INSEE keeps secret (s) is a row without value and status 'secret', and so is a share computed on it;
-- ns / nd / so give no row (« non disponible »).
WITH p AS (
    SELECT code_qp, generation, scope,
           max(value) FILTER (WHERE variable = 'DNB_PRES') AS pres,
           coalesce(bool_or(status = 's' AND variable = 'DNB_PRES'), false) AS pres_s,
           max(value) FILTER (WHERE variable = 'DNB_ADMIS') AS admis,
           coalesce(bool_or(status = 's' AND variable = 'DNB_ADMIS'), false) AS admis_s,
           min(source_run_id) AS run
    FROM src.insee_qpv_cells('dnb', %(release_insee_qpv24_dnb)s, %(generation)s)
    GROUP BY 1, 2, 3
), rows AS (
    SELECT 'q24_candidats_dnb' AS indicator_id, code_qp, generation, scope, pres AS value, pres_s AS secret, run FROM p
    UNION ALL
    SELECT 'q24_taux_reussite_dnb', code_qp, generation, scope,
           round((100.0 * admis / nullif(pres, 0))::numeric, 1)::double precision, pres_s OR admis_s, run FROM p
)
SELECT indicator_id, code_qp, generation, scope, CASE WHEN secret THEN NULL ELSE value END AS value,
       NULL::double precision AS numerator, NULL::double precision AS denominator,
       meta.millesime_of(run) AS millesime, ARRAY[run] AS source_run_ids, CASE WHEN secret THEN 'secret' END AS status
FROM rows
WHERE value IS NOT NULL OR secret
