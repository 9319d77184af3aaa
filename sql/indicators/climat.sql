-- ---
-- family: climat
-- sources: [flood_zones]
-- requires: [src.flood_zones]
-- absent_fr: "la commune de ce quartier n'est pas couverte par la cartographie des surfaces inondables chargée"
-- indicators:
--   - id: part_surface_inondable
--     label_fr: Part de la surface en zone inondable (tous scénarios)
--     unit: "%"
--     theme: climat
--     method: >
--       Part de l'aire du QPV dans l'union des surfaces inondables chargées (TRI, tous types et tous
--       scénarios : 01For, 02Moy, 03Mcc, 04Fai — la zone du scénario de faible probabilité est la plus
--       étendue). Seuls les QPV dont la
--       commune principale est touchée par la couche ont une valeur (sans contours communaux chargés :
--       ceux dont un point intérieur est à moins de 1 km de l'enveloppe de la couche) ; 0 y signifie
--       « hors des surfaces cartographiées », pas « sans risque ». Portées
--       « commune » et « commune_hors_qpv » : même calcul sur la commune principale, entière et privée
--       de ses QPV.
--     millesime: cartographie du TRI chargée
--     range: [0, 100]
--   - id: part_surface_inondable_forte
--     label_fr: Part de la surface inondable en scénario de forte probabilité
--     unit: "%"
--     theme: climat
--     method: Comme part_surface_inondable, pour le seul scénario 01For (événement fréquent).
--     millesime: cartographie du TRI chargée
--     range: [0, 100]
--   - id: part_surface_inondable_moyenne
--     label_fr: Part de la surface inondable en scénario de probabilité moyenne
--     unit: "%"
--     theme: climat
--     method: Comme part_surface_inondable, pour le scénario 02Moy (événement centennal) et plus fréquent (01For).
--     millesime: cartographie du TRI chargée
--     range: [0, 100]
-- ---
WITH layer AS (
    SELECT min(source_run_id) AS run_id, ST_Buffer(ST_ConvexHull(ST_Collect(geom)), 1000) AS cover FROM src.flood_zones
), hazard AS (          -- one union per indicator, built once
    SELECT h.indicator_id, ST_Union(f.geom) AS g
    FROM (VALUES ('part_surface_inondable', NULL),   -- every scenario loaded (04Fai, the widest, included)
                 ('part_surface_inondable_forte', ARRAY['01For']),
                 ('part_surface_inondable_moyenne', ARRAY['01For', '02Moy'])) AS h (indicator_id, scenarios)
    LEFT JOIN src.flood_zones f ON h.scenarios IS NULL OR left(f.scenario, 5) = ANY (h.scenarios)
    GROUP BY h.indicator_id
), mapped AS (         -- communes the layer touches: the territory the TRI mapping covers
    SELECT c.insee_com FROM ref.commune_contour c, layer l
    WHERE ST_Intersects(c.geom, l.cover)
      AND EXISTS (SELECT 1 FROM src.flood_zones f WHERE ST_Intersects(f.geom, c.geom))
), qpv AS (
    SELECT q.generation, q.code_qp, q.insee_com, q.geom, q.source_run_id AS qpv_run
    FROM ref.qpv q, layer l
    WHERE q.insee_com IN (SELECT insee_com FROM mapped)
       OR (NOT EXISTS (SELECT 1 FROM ref.commune_contour) AND ST_Intersects(ST_PointOnSurface(q.geom), l.cover))
), areas AS (           -- the QPV, and its main commune whole and outside every QPV of the list
    SELECT qpv.generation, qpv.code_qp, qpv.qpv_run, 'qpv' AS scope, qpv.geom, NULL AS com_run FROM qpv
    UNION ALL
    SELECT qpv.generation, qpv.code_qp, qpv.qpv_run, z.scope, z.geom, c.source_run_id
    FROM qpv
    JOIN ref.commune_contour c ON c.insee_com = qpv.insee_com
    CROSS JOIN LATERAL (VALUES
        ('commune', c.geom),
        ('commune_hors_qpv', (SELECT h.geom FROM ref.commune_hors_qpv h
                              WHERE h.generation = qpv.generation AND h.insee_com = c.insee_com))
    ) AS z (scope, geom)
)
SELECT h.indicator_id, a.code_qp, a.generation, a.scope,
       round((100 * coalesce(ST_Area(ST_Intersection(a.geom, h.g)), 0) / ST_Area(a.geom))::numeric, 1)::double precision AS value,
       coalesce(ST_Area(ST_Intersection(a.geom, h.g)), 0) AS numerator, ST_Area(a.geom) AS denominator,
       meta.millesime_of(l.run_id) AS millesime,
       array_remove(ARRAY[a.qpv_run, l.run_id, a.com_run], NULL) AS source_run_ids
FROM areas a CROSS JOIN hazard h CROSS JOIN layer l
WHERE ST_Area(a.geom) > 0
