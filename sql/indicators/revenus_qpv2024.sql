-- ---
-- family: revenus_qpv2024
-- sources: [filosofi_qpv]
-- requires: [src.insee_qpv_revenus]
-- generation: 2024
-- absent_fr: "l'INSEE ne diffuse pas cette valeur pour ce quartier (non significatif, non disponible, ou quartier d'outre-mer)"
-- indicators:
--   - id: filosofi_taux_pauvrete
--     label_fr: Taux de pauvreté (seuil de 60 %) — quartiers 2024
--     unit: "%"
--     theme: socio-démographie
--     method: >
--       Part des personnes du quartier (liste 2024) vivant sous le seuil de pauvreté, 60 % du revenu
--       disponible médian métropolitain par unité de consommation, telle que l'INSEE la publie par
--       quartier (Filosofi, DISP_TP60_A<AA>). Valeur couverte par le secret de l'INSEE : « secret
--       statistique », jamais 0.
--     millesime: Filosofi (millésime de la source)
--     range: [0, 100]
--   - id: filosofi_revenu_disponible_median
--     label_fr: Revenu disponible médian par unité de consommation — quartiers 2024
--     unit: €
--     theme: socio-démographie
--     method: Médiane du revenu disponible par unité de consommation du quartier (Filosofi, DISP_MED_A<AA>).
--     millesime: Filosofi (millésime de la source)
--     range: [1000, 60000]
--   - id: filosofi_part_prestations_sociales
--     label_fr: Part des prestations sociales dans le revenu disponible — quartiers 2024
--     unit: "%"
--     theme: socio-démographie
--     method: Part des prestations sociales dans le revenu disponible des ménages du quartier (Filosofi, DISP_PPSOC_A<AA>).
--     millesime: Filosofi (millésime de la source)
--     range: [0, 100]
--   - id: filosofi_rapport_interdecile
--     label_fr: Rapport interdécile du revenu disponible (D9/D1) — quartiers 2024
--     unit: ratio
--     theme: socio-démographie
--     method: Rapport entre le 9e et le 1er décile du revenu disponible par unité de consommation (Filosofi, DISP_RD_A<AA>).
--     millesime: Filosofi (millésime de la source)
--     range: [1, 30]
-- ---
-- INSEE's variables end with the release's year (DISP_TP60_A21): matched by pattern, a new release needs no change.
-- A cell INSEE keeps secret (s) is a row without value, status 'secret'; ns / nd / so give no row.
SELECT i.indicator_id, c.code_qp, c.generation, c.scope, c.value,
       NULL::double precision AS numerator, NULL::double precision AS denominator,
       meta.millesime_of(c.source_run_id) AS millesime, ARRAY[c.source_run_id] AS source_run_ids,
       CASE WHEN c.status = 's' THEN 'secret' END AS status
FROM src.insee_qpv_cells('revenus', %(release_filosofi_qpv)s, %(generation)s) c
JOIN (VALUES
    ('filosofi_taux_pauvrete', 'DISP\_TP60\_A__'),
    ('filosofi_revenu_disponible_median', 'DISP\_MED\_A__'),
    ('filosofi_part_prestations_sociales', 'DISP\_PPSOC\_A__'),
    ('filosofi_rapport_interdecile', 'DISP\_RD\_A__')
) AS i (indicator_id, pattern) ON c.variable LIKE i.pattern
WHERE c.value IS NOT NULL OR c.status = 's'
