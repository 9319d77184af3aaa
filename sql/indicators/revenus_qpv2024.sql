-- ---
-- family: revenus_qpv2024
-- sources: [filosofi_qpv]
-- requires: [src.filosofi_qpv]
-- generation: 2024
-- absent_fr: "l'INSEE ne diffuse pas cette valeur pour ce quartier (secret statistique ou trop peu de ménages)"
-- indicators:
--   - id: filosofi_taux_pauvrete
--     label_fr: Taux de pauvreté (seuil de 60 %) — quartiers 2024
--     unit: "%"
--     theme: socio-démographie
--     method: >
--       Part des personnes du quartier (liste 2024) vivant sous le seuil de pauvreté, 60 % du revenu
--       disponible médian métropolitain par unité de consommation, telle que l'INSEE la publie par
--       quartier (Filosofi, DISP_TP60_A<AA>). Valeur non diffusée par l'INSEE : absente, jamais 0.
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
SELECT i.indicator_id, q.code_qp, q.generation, 'qpv' AS scope, i.value,
       NULL::double precision AS numerator, NULL::double precision AS denominator,
       meta.millesime_of(f.source_run_id) AS millesime, ARRAY[f.source_run_id] AS source_run_ids
FROM src.filosofi_qpv f
JOIN ref.qpv q ON q.code_qp = f.code_qp
CROSS JOIN LATERAL (VALUES
    ('filosofi_taux_pauvrete', f.taux_pauvrete),
    ('filosofi_revenu_disponible_median', f.revenu_disponible_median),
    ('filosofi_part_prestations_sociales', f.part_prestations_sociales),
    ('filosofi_rapport_interdecile', f.rapport_interdecile)
) AS i (indicator_id, value)
WHERE i.value IS NOT NULL
