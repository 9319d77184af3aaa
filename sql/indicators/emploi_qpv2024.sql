-- ---
-- family: emploi_qpv2024
-- sources: [insee_qpv24_defm]
-- requires: [src.insee_qpv_defm]
-- generation: 2024
-- absent_fr: "l'INSEE ne diffuse pas cette valeur pour ce quartier"
-- indicators:
--   - id: q24_demandeurs_emploi_abc
--     label_fr: Demandeurs d'emploi (catégories A, B, C) — quartiers 2024
--     unit: demandeurs d'emploi
--     theme: emploi
--     method: >
--       Demandeurs d'emploi inscrits à France Travail en catégories A, B, C au 31 décembre, résidant
--       dans le quartier (liste 2024), tels que l'INSEE les publie par quartier (DEFM_ABC). Portées
--       « commune » et « commune_hors_qpv » : la commune du quartier, entière et hors de ses quartiers.
--     millesime: France Travail, DEFM au 31 décembre (millésime de la source)
--     is_count: true
--     range: [0, 1000000]
--     secrecy: count
-- ---
-- A count INSEE keeps secret (s) is a row without value and status 'secret', and so is a share computed on it;
-- ns / nd / so give no row (« non disponible »).
WITH p AS (
    SELECT code_qp, generation, scope,
           max(value) FILTER (WHERE variable = 'DEFM_ABC') AS abc,
           coalesce(bool_or(status = 's' AND variable = 'DEFM_ABC'), false) AS abc_s,
           min(source_run_id) AS run
    FROM src.insee_qpv_cells('defm', %(release_insee_qpv24_defm)s, %(generation)s)
    GROUP BY 1, 2, 3
), rows AS (
    SELECT 'q24_demandeurs_emploi_abc' AS indicator_id, code_qp, generation, scope, abc AS value, abc_s AS secret, run
    FROM p
)
SELECT indicator_id, code_qp, generation, scope, CASE WHEN secret THEN NULL ELSE value END AS value,
       NULL::double precision AS numerator, NULL::double precision AS denominator,
       meta.millesime_of(run) AS millesime, ARRAY[run] AS source_run_ids, CASE WHEN secret THEN 'secret' END AS status
FROM rows
WHERE value IS NOT NULL OR secret
