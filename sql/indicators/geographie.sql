-- ---
-- family: geographie
-- sources: [qpv_2015]
-- requires: [ref.qpv]
-- indicators:
--   - id: superficie_ha
--     label_fr: Superficie du quartier
--     unit: ha
--     theme: géographie
--     method: >
--       Aire du périmètre officiel du QPV en Lambert-93 (EPSG:2154, ST_Area), en hectares, arrondie
--       au centième. Lambert-93 déforme peu les surfaces en métropole (moins de 0,1 % en Bretagne).
--     millesime: périmètre du QPV (liste 2015 ou 2024)
--     is_count: false
--     range: [1, 2000]
-- ---
-- One row per QPV (both generations): the millésime is the QPV list the perimeter belongs to.
SELECT 'superficie_ha'                         AS indicator_id,
       q.code_qp,
       q.generation,
       'qpv'                                   AS scope,
       round((ST_Area(q.geom) / 10000)::numeric, 2)::double precision AS value,
       NULL::double precision                  AS numerator,
       NULL::double precision                  AS denominator,
       q.generation::text                      AS millesime,
       ARRAY[q.source_run_id]                  AS source_run_ids
FROM ref.qpv q
