-- ---
-- family: revenus_iris
-- sources: [filosofi_iris]
-- requires: [src.filosofi_iris]
-- absent_fr: "aucun IRIS de la commune n'a de valeur Filosofi chargée"
-- indicators:
--   - id: taux_pauvrete_iris_median
--     label_fr: Taux de pauvreté médian des IRIS de la commune
--     unit: "%"
--     theme: socio-démographie
--     method: >
--       Médiane, sur les IRIS de la commune principale du QPV publiés par Filosofi (IRIS sous le
--       secret statistique exclus), du taux de pauvreté de l'IRIS (DISP_TP60<AA>, AA l'année du
--       millésime). Repère du territoire environnant, non pondéré par la population : ce n'est pas le
--       taux de pauvreté de la commune.
--       Portée « commune » ; le nombre d'IRIS retenus est le dénominateur.
--     millesime: Filosofi (millésime de la source)
--     range: [0, 100]
--   - id: revenu_disponible_median_iris_median
--     label_fr: Revenu disponible médian des IRIS de la commune (médiane des IRIS)
--     unit: €
--     theme: socio-démographie
--     method: >
--       Médiane, sur les IRIS de la commune principale du QPV, du revenu disponible médian par UC de
--       l'IRIS (DISP_MED<AA>). Repère non pondéré ; portée « commune ».
--     millesime: Filosofi (millésime de la source)
--     range: [1000, 80000]
-- ---
WITH c AS (
    SELECT f.insee_com,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY f.taux_pauvrete) AS tp,
           count(f.taux_pauvrete) AS n_tp,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY f.revenu_disponible_median) AS med,
           count(f.revenu_disponible_median) AS n_med,
           min(f.source_run_id) AS run_id
    FROM src.filosofi_iris f
    WHERE f.release = %(release_filosofi_iris)s
    GROUP BY f.insee_com
)
SELECT i.indicator_id, q.code_qp, q.generation, 'commune' AS scope, round(i.value::numeric, 1)::double precision AS value,
       NULL::double precision AS numerator, i.n::double precision AS denominator,
       meta.millesime_of(c.run_id) AS millesime, ARRAY[c.run_id] AS source_run_ids
FROM ref.qpv q
JOIN c ON c.insee_com = q.insee_com
CROSS JOIN LATERAL (VALUES
    ('taux_pauvrete_iris_median', c.tp, c.n_tp),
    ('revenu_disponible_median_iris_median', c.med, c.n_med)
) AS i (indicator_id, value, n)
WHERE i.value IS NOT NULL
