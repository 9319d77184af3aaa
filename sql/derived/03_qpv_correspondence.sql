-- ---
-- table: ref.qpv_correspondence
-- requires: [ref.qpv_2015, ref.qpv_2024]
-- ---
-- Only from geometry: a pair exists when the perimeters overlap by more than 1 m².
INSERT INTO ref.qpv_correspondence (code_qp_2015, code_qp_2024, area_m2, share_of_2015, share_of_2024)
SELECT a.code_qp, b.code_qp, i.area,
       least(1.0, i.area / ST_Area(a.geom)), least(1.0, i.area / ST_Area(b.geom))
FROM ref.qpv_2015 a
JOIN ref.qpv_2024 b ON ST_Intersects(a.geom, b.geom)
CROSS JOIN LATERAL (SELECT ST_Area(ST_Intersection(a.geom, b.geom)) AS area) i
WHERE i.area > 1
