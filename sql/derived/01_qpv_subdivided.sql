-- ---
-- table: ref.qpv_subdivided
-- requires: [ref.qpv]
-- ---
-- Pieces of at most 64 vertices: a GiST lookup then hits small boxes and cheap point-in-polygon tests.
INSERT INTO ref.qpv_subdivided (generation, code_qp, geom)
SELECT q.generation, q.code_qp, ST_Subdivide(q.geom, 64)
FROM ref.qpv q
