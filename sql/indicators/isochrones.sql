-- ---
-- family: isochrones
-- sources: [isochrones, rennes_job_offers]
-- requires: [src.isochrones, src.rennes_job_offers]
-- generation: 2015
-- absent_fr: "aucune isochrone de transport chargée ne part de ce quartier"
-- indicators:
--   - id: offres_emploi_tc_30min
--     label_fr: Offres d'emploi accessibles en 30 minutes en transports en commun
--     unit: offres
--     theme: emploi
--     method: >
--       Nombre d'offres géolocalisées situées dans l'isochrone « 30 minutes en transports en commun »
--       du QPV (couche d'isochrones chargée, mode TC). Absent pour les QPV sans isochrone.
--     millesime: isochrones et fichier d'offres
--     is_count: true
--     range: [0, 1000000]
--   - id: part_offres_tc_30min
--     label_fr: Part des offres à moins de 5 km accessibles en 30 minutes en transports en commun
--     unit: "%"
--     theme: emploi
--     method: >
--       Parmi les offres à moins de 5 km du QPV, part de celles situées dans son isochrone TC
--       30 minutes, en %. Les deux comptes sont donnés (numérateur, dénominateur).
--     millesime: isochrones et fichier d'offres
--     range: [0, 100]
-- ---
WITH iso AS (
    SELECT i.code_qp, ST_Union(i.geom) AS geom, min(i.source_run_id) AS iso_run
    FROM src.isochrones i
    WHERE i.mode = 'TC' AND i.minutes = 30
    GROUP BY i.code_qp
), n AS (
    SELECT q.generation, q.code_qp, q.source_run_id AS qpv_run, iso.iso_run,
           (SELECT min(o.source_run_id) FROM src.rennes_job_offers o) AS off_run,
           (SELECT count(*) FROM src.rennes_job_offers o WHERE ST_Intersects(o.geom, iso.geom)) AS in_iso,
           (SELECT count(*) FROM src.rennes_job_offers o WHERE ST_DWithin(o.geom, q.geom, 5000)) AS near,
           (SELECT count(*) FROM src.rennes_job_offers o
             WHERE ST_DWithin(o.geom, q.geom, 5000) AND ST_Intersects(o.geom, iso.geom)) AS near_in_iso
    FROM iso JOIN ref.qpv q ON q.generation = %(generation)s AND q.code_qp = iso.code_qp
)
SELECT 'offres_emploi_tc_30min' AS indicator_id, code_qp, generation, 'qpv' AS scope,
       in_iso::double precision AS value, NULL::double precision AS numerator, NULL::double precision AS denominator,
       meta.millesime_of(iso_run) || ' ; offres : ' || meta.millesime_of(off_run) AS millesime,
       ARRAY[qpv_run, iso_run, off_run] AS source_run_ids
FROM n
UNION ALL
SELECT 'part_offres_tc_30min', code_qp, generation, 'qpv',
       round((100.0 * near_in_iso / near)::numeric, 1)::double precision, near_in_iso, near,
       meta.millesime_of(iso_run) || ' ; offres : ' || meta.millesime_of(off_run),
       ARRAY[qpv_run, iso_run, off_run]
FROM n
WHERE near > 0
