-- ---
-- table: ref.qpv_commune
-- requires: [ref.qpv, ref.commune_contour]
-- ---
-- Commune outlines are generalised: overlaps under 0.5 % of the QPV are slivers of that, not a commune
-- the QPV spans. A QPV whose overlaps are all slivers keeps its largest one.
WITH o AS (
    SELECT q.generation, q.code_qp, c.insee_com,
           ST_Area(ST_Intersection(q.geom, c.geom)) AS area_m2,
           ST_Area(q.geom) AS qpv_area
    FROM ref.qpv q
    JOIN ref.commune_contour c ON ST_Intersects(q.geom, c.geom)
), ranked AS (
    SELECT o.*, row_number() OVER (PARTITION BY generation, code_qp ORDER BY area_m2 DESC) AS rk
    FROM o WHERE area_m2 > 0
)
INSERT INTO ref.qpv_commune (generation, code_qp, insee_com, area_m2, share_of_qpv)
SELECT generation, code_qp, insee_com, area_m2, least(1.0, area_m2 / qpv_area)
FROM ranked
WHERE area_m2 / qpv_area >= 0.005 OR rk = 1
