-- ---
-- source: bpe
-- generation: 2024
-- requires: [src.bpe]
-- columns: {src.bpe: [qp2024, quali_qp2024, qualite_xy, typequ, insee_com, dep]}
-- ---
-- Each geolocated facility of the départements where the list's perimeters are loaded: the QPV INSEE assigns it
-- (QP2024; a value that is not a code of the list, as INSEE's markers for "no QPV", means none) and the QPV whose
-- perimeter holds its point in the hub. Parameters: %(generation)s, %(code_pattern)s (the list's code format).
SELECT b.insee_com, b.typequ, b.qualite_xy, b.source_run_id,
       coalesce(nullif(b.quali_qp2024, ''), '_Z') AS quality,
       CASE WHEN b.qp2024 ~ %(code_pattern)s THEN b.qp2024 END AS publisher,
       (SELECT s.code_qp FROM ref.qpv_subdivided s
         WHERE s.generation = %(generation)s AND ST_Intersects(b.geom, s.geom)
         ORDER BY s.code_qp LIMIT 1) AS hub,
       b.geom
FROM src.bpe b
WHERE b.geom IS NOT NULL
  AND b.dep IN (SELECT DISTINCT dep FROM ref.qpv WHERE generation = %(generation)s)
