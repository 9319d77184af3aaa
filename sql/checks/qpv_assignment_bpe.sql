-- ---
-- source: bpe
-- generation: 2024
-- requires: [src.bpe]
-- columns: {src.bpe: [qp2024, quali_qp2024, qualite_xy, typequ, insee_com, dep]}
-- ---
-- Each geolocated facility of the départements where the list's perimeters are loaded: the QPV INSEE assigns it
-- (QP2024; a value that is not a code of the list, as INSEE's markers for "no QPV", means none) and the QPV whose
-- perimeter holds its point in the hub (the first code when two do). Parameters: %(generation)s, %(code_pattern)s
-- (the list's code format).
-- The perimeters' pieces probe the facilities' GiST index (some thousands of probes) instead of each facility
-- probing the perimeters' (2.9 M national rows: 90 s a scan); a facility no piece holds has no QPV.
WITH hub AS MATERIALIZED (
    SELECT b.ctid AS row_id, min(s.code_qp) AS code_qp
    FROM ref.qpv_subdivided s
    JOIN src.bpe b ON ST_Intersects(b.geom, s.geom)
    WHERE s.generation = %(generation)s
    GROUP BY b.ctid
)
SELECT b.insee_com, b.typequ, b.qualite_xy, b.source_run_id,
       coalesce(nullif(b.quali_qp2024, ''), '_Z') AS quality,
       CASE WHEN b.qp2024 ~ %(code_pattern)s THEN b.qp2024 END AS publisher,
       h.code_qp AS hub,
       b.geom
FROM src.bpe b
LEFT JOIN hub h ON h.row_id = b.ctid
WHERE b.geom IS NOT NULL
  AND b.dep IN (SELECT DISTINCT dep FROM ref.qpv WHERE generation = %(generation)s)
