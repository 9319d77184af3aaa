-- ---
-- table: ref.commune_hors_qpv
-- requires: [ref.qpv, ref.commune_contour]
-- ---
-- Main communes of the QPV, minus every QPV of the same list that touches them (computed once here for
-- all the "commune hors QPV" comparisons).
INSERT INTO ref.commune_hors_qpv (generation, insee_com, geom)
SELECT generation, insee_com, geom FROM (
    SELECT g.generation, c.insee_com,
           ST_Multi(ST_CollectionExtract(ST_Difference(c.geom, coalesce(
               (SELECT ST_Union(o.geom) FROM ref.qpv o WHERE o.generation = g.generation
                                                        AND ST_Intersects(o.geom, c.geom)),
               'SRID=2154;POLYGON EMPTY'::geometry)), 3)) AS geom
    FROM (SELECT DISTINCT generation, insee_com FROM ref.qpv) g
    JOIN ref.commune_contour c USING (insee_com)
) d
WHERE NOT ST_IsEmpty(geom)
