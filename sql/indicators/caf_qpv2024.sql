-- ---
-- family: caf_qpv2024
-- sources: [insee_qpv24_caf]
-- requires: [src.insee_qpv_caf]
-- generation: 2024
-- absent_fr: "l'INSEE ne diffuse pas cette valeur pour ce quartier"
-- indicators:
--   - id: q24_allocataires_caf
--     label_fr: Allocataires CAF — quartiers 2024
--     unit: allocataires
--     theme: socio-démographie
--     method: >
--       Foyers allocataires d'une caisse d'allocations familiales au 31 décembre résidant dans le quartier
--       (liste 2024), tels que l'INSEE les publie par quartier (ALLOC). Portées « commune » et
--       « commune_hors_qpv » : la commune du quartier, entière et hors de ses quartiers.
--     millesime: Cnaf, allocataires au 31 décembre (millésime de la source)
--     is_count: true
--     range: [0, 1000000]
--     secrecy: count
--   - id: q24_part_allocataires_dependants
--     label_fr: Part des allocataires dont les ressources dépendent au moins pour moitié des prestations — quartiers 2024
--     unit: "%"
--     theme: socio-démographie
--     method: >
--       Allocataires dont les prestations CAF font au moins 50 % des ressources (ALLOC_DEP50), pour 100
--       allocataires (ALLOC).
--     millesime: Cnaf, allocataires au 31 décembre (millésime de la source)
--     range: [0, 100]
--     secrecy: {rate_of: q24_allocataires_caf}
-- ---
-- A count INSEE keeps secret (s) is a row without value and status 'secret', and so is a share computed on it;
-- ns / nd / so give no row (« non disponible »).
WITH p AS (
    SELECT code_qp, generation, scope,
           max(value) FILTER (WHERE variable = 'ALLOC') AS n,
           coalesce(bool_or(status = 's' AND variable = 'ALLOC'), false) AS n_s,
           max(value) FILTER (WHERE variable = 'ALLOC_DEP50') AS dep,
           coalesce(bool_or(status = 's' AND variable = 'ALLOC_DEP50'), false) AS dep_s,
           min(source_run_id) AS run
    FROM src.insee_qpv_cells('caf', %(release_insee_qpv24_caf)s, %(generation)s)
    GROUP BY 1, 2, 3
), rows AS (
    SELECT 'q24_allocataires_caf' AS indicator_id, code_qp, generation, scope, n AS value, n_s AS secret, run FROM p
    UNION ALL
    SELECT 'q24_part_allocataires_dependants', code_qp, generation, scope,
           round((100.0 * dep / nullif(n, 0))::numeric, 1)::double precision, n_s OR dep_s, run FROM p
)
SELECT indicator_id, code_qp, generation, scope, CASE WHEN secret THEN NULL ELSE value END AS value,
       NULL::double precision AS numerator, NULL::double precision AS denominator,
       meta.millesime_of(run) AS millesime, ARRAY[run] AS source_run_ids, CASE WHEN secret THEN 'secret' END AS status
FROM rows
WHERE value IS NOT NULL OR secret
