-- ---
-- family: entreprises_qpv2024
-- sources: [insee_qpv24_side]
-- requires: [src.insee_qpv_side]
-- generation: 2024
-- absent_fr: "l'INSEE ne diffuse pas cette valeur pour ce quartier"
-- indicators:
--   - id: q24_etablissements
--     label_fr: Établissements actifs — quartiers 2024
--     unit: établissements
--     theme: emploi
--     method: >
--       Établissements actifs au 31 décembre implantés dans le quartier (liste 2024), selon le système
--       d'information sur la démographie des entreprises (SIDE) de l'INSEE (ETAB_TOT). Portée
--       « commune » : les établissements de la commune du quartier.
--     millesime: SIDE au 31 décembre (millésime de la source)
--     is_count: true
--     range: [0, 1000000]
-- ---
-- A count INSEE keeps secret (s) is a row without value and status 'secret', and so is a share computed on it;
-- ns / nd / so give no row (« non disponible »).
WITH p AS (
    SELECT code_qp, generation, scope,
           max(value) FILTER (WHERE variable = 'ETAB_TOT') AS n,
           coalesce(bool_or(status = 's' AND variable = 'ETAB_TOT'), false) AS n_s,
           min(source_run_id) AS run
    FROM src.insee_qpv_cells('side', %(release_insee_qpv24_side)s, %(generation)s)
    GROUP BY 1, 2, 3
), rows AS (
    SELECT 'q24_etablissements' AS indicator_id, code_qp, generation, scope, n AS value, n_s AS secret, run FROM p
)
SELECT indicator_id, code_qp, generation, scope, CASE WHEN secret THEN NULL ELSE value END AS value,
       NULL::double precision AS numerator, NULL::double precision AS denominator,
       meta.millesime_of(run) AS millesime, ARRAY[run] AS source_run_ids, CASE WHEN secret THEN 'secret' END AS status
FROM rows
WHERE value IS NOT NULL OR secret
