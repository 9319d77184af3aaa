-- ---
-- family: offres_emploi
-- sources: [rennes_job_offers]
-- requires: [src.rennes_job_offers]
-- absent_fr: "ce quartier est hors de la zone couverte par les offres d'emploi chargées"
-- indicators:
--   - id: offres_emploi_5km
--     label_fr: Offres d'emploi à moins de 5 km
--     unit: offres
--     theme: emploi
--     method: >
--       Nombre d'offres géolocalisées situées à moins de 5 km (distance euclidienne en Lambert-93) du
--       périmètre du QPV, ou à l'intérieur. Seuls les QPV dont un point intérieur est dans l'emprise
--       des offres chargées (enveloppe convexe élargie de 5 km) ont une valeur : ailleurs, absente.
--     millesime: date du fichier d'offres
--     is_count: true
--     range: [0, 1000000]
-- ---
WITH cover AS (
    SELECT ST_Buffer(ST_ConvexHull(ST_Collect(geom)), 5000) AS g, min(source_run_id) AS run_id
    FROM src.rennes_job_offers
), n AS (
    SELECT q.generation, q.code_qp, q.source_run_id AS qpv_run, cover.run_id,
           (SELECT count(*) FROM src.rennes_job_offers o WHERE ST_DWithin(o.geom, q.geom, 5000)) AS offres
    FROM ref.qpv q, cover
    WHERE ST_Intersects(ST_PointOnSurface(q.geom), cover.g)
)
SELECT 'offres_emploi_5km' AS indicator_id, n.code_qp, n.generation, 'qpv' AS scope,
       n.offres::double precision AS value, NULL::double precision AS numerator,
       NULL::double precision AS denominator, meta.millesime_of(n.run_id) AS millesime,
       ARRAY[n.qpv_run, n.run_id] AS source_run_ids
FROM n
