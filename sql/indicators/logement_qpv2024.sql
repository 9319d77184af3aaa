-- ---
-- family: logement_qpv2024
-- sources: [insee_qpv24_rpls]
-- requires: [src.insee_qpv_rpls]
-- generation: 2024
-- absent_fr: "l'INSEE ne diffuse pas cette valeur pour ce quartier"
-- indicators:
--   - id: q24_logements_sociaux
--     label_fr: Logements sociaux — quartiers 2024
--     unit: logements
--     theme: logement
--     method: >
--       Logements du répertoire des logements locatifs des bailleurs sociaux (RPLS) au 1er janvier situés
--       dans le quartier (liste 2024), tels que l'INSEE les publie par quartier (LS_TOT). Portées
--       « commune » et « commune_hors_qpv » : la commune du quartier, entière et hors de ses quartiers.
--     millesime: RPLS au 1er janvier (millésime de la source)
--     is_count: true
--     range: [0, 1000000]
--   - id: q24_part_logement_social
--     label_fr: Part des logements sociaux parmi les résidences principales — quartiers 2024
--     unit: "%"
--     theme: logement
--     method: Logements sociaux (LS_TOT) pour 100 résidences principales (RP_TOT) du quartier.
--     millesime: RPLS au 1er janvier (millésime de la source)
--     range: [0, 100]
-- ---
-- A count INSEE keeps secret (s) is a row without value and status 'secret', and so is a share computed on it;
-- ns / nd / so give no row (« non disponible »).
WITH p AS (
    SELECT code_qp, generation, scope,
           max(value) FILTER (WHERE variable = 'LS_TOT') AS ls,
           coalesce(bool_or(status = 's' AND variable = 'LS_TOT'), false) AS ls_s,
           max(value) FILTER (WHERE variable = 'RP_TOT') AS rp,
           coalesce(bool_or(status = 's' AND variable = 'RP_TOT'), false) AS rp_s,
           min(source_run_id) AS run
    FROM src.insee_qpv_cells('rpls', %(release_insee_qpv24_rpls)s, %(generation)s)
    GROUP BY 1, 2, 3
), rows AS (
    SELECT 'q24_logements_sociaux' AS indicator_id, code_qp, generation, scope, ls AS value, ls_s AS secret, run FROM p
    UNION ALL
    SELECT 'q24_part_logement_social', code_qp, generation, scope,
           round((100.0 * ls / nullif(rp, 0))::numeric, 1)::double precision, ls_s OR rp_s, run FROM p
)
SELECT indicator_id, code_qp, generation, scope, CASE WHEN secret THEN NULL ELSE value END AS value,
       NULL::double precision AS numerator, NULL::double precision AS denominator,
       meta.millesime_of(run) AS millesime, ARRAY[run] AS source_run_ids, CASE WHEN secret THEN 'secret' END AS status
FROM rows
WHERE value IS NOT NULL OR secret
