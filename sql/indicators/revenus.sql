-- ---
-- family: revenus
-- sources: [sigville_revn]
-- requires: [src.sigville_revn]
-- generation: 2015
-- absent_fr: "le fichier SIG Ville chargé ne donne pas cette valeur pour ce quartier"
-- indicators:
--   - id: taux_pauvrete
--     label_fr: Taux de pauvreté (seuil de 60 %)
--     unit: "%"
--     theme: socio-démographie
--     method: >
--       Part des personnes vivant sous le seuil de pauvreté (60 % du revenu disponible médian
--       métropolitain par unité de consommation), SIG Ville / Filosofi (TP60).
--     millesime: SIG Ville, données QPV
--     range: [0, 100]
--     secrecy: {rate_of: population}
--   - id: revenu_disponible_median
--     label_fr: Revenu disponible médian par unité de consommation
--     unit: €
--     theme: socio-démographie
--     method: Médiane du revenu disponible par unité de consommation (DISP_Q2, SIG Ville / Filosofi).
--     millesime: SIG Ville, données QPV
--     range: [1000, 60000]
--     secrecy: {rate_of: population}
-- ---
WITH r AS (
    SELECT s.*, meta.millesime_of(s.source_run_id) AS mil
    FROM src.sigville_revn s
    JOIN ref.qpv q ON q.generation = %(generation)s AND q.code_qp = s.code_qp
    WHERE s.release = %(release_sigville_revn)s
)
SELECT i.indicator_id, r.code_qp, %(generation)s::smallint AS generation, 'qpv' AS scope, i.value,
       NULL::double precision AS numerator, NULL::double precision AS denominator,
       r.mil AS millesime, ARRAY[r.source_run_id] AS source_run_ids
FROM r
CROSS JOIN LATERAL (VALUES
    ('taux_pauvrete', r.taux_pauvrete),
    ('revenu_disponible_median', r.revenu_disponible_median)
) AS i (indicator_id, value)
WHERE i.value IS NOT NULL
