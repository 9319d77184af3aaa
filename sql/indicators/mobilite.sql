-- ---
-- family: mobilite
-- sources: [gtfs]
-- requires: [src.gtfs_stops]
-- absent_fr: "aucun réseau de transport chargé ne dessert ce quartier"
-- indicators:
--   - id: arrets_dans_qpv
--     label_fr: Arrêts de transport en commun dans le quartier
--     unit: arrêts
--     theme: mobilité
--     method: >
--       Arrêts du GTFS (location_type vide ou 0 : pas les stations parentes) situés dans le périmètre
--       du QPV. Seuls les QPV dont un point intérieur est dans l'emprise du réseau (enveloppe convexe
--       des arrêts élargie de 300 m) ont une valeur : ailleurs, absente et non nulle.
--     millesime: validité du GTFS
--     is_count: true
--     range: [0, 10000]
--   - id: arrets_300m
--     label_fr: Arrêts de transport en commun à moins de 300 m
--     unit: arrêts
--     theme: mobilité
--     method: Arrêts du GTFS dans le QPV ou à moins de 300 m de son périmètre (Lambert-93).
--     millesime: validité du GTFS
--     is_count: true
--     range: [0, 10000]
--   - id: departs_jour_ouvre_300m
--     label_fr: Départs par jour ouvré aux arrêts à moins de 300 m
--     unit: départs par jour
--     theme: mobilité
--     method: >
--       Somme, sur les arrêts à moins de 300 m (y compris dans le QPV), du nombre moyen de départs
--       par jour du lundi au vendredi de la semaine de référence du GTFS (stop_times × trips ×
--       calendar/calendar_dates).
--     millesime: semaine de référence du GTFS
--     range: [0, 1000000]
--   - id: distance_arret_m
--     label_fr: Distance du quartier à l'arrêt le plus proche
--     unit: m
--     theme: mobilité
--     method: Distance euclidienne (Lambert-93) du périmètre du QPV à l'arrêt le plus proche ; 0 si un arrêt est dans le QPV.
--     millesime: validité du GTFS
--     range: [0, 50000]
--   - id: part_surface_300m_arret
--     label_fr: Part de la surface à moins de 300 m d'un arrêt
--     unit: "%"
--     theme: mobilité
--     method: >
--       Part de l'aire du QPV à moins de 300 m d'un arrêt (union des tampons de 300 m, 8 segments
--       par quart de cercle). Portée « commune » : même calcul sur la commune principale ;
--       « commune_hors_qpv » : sur la commune privée de tous les QPV de la même liste.
--     millesime: validité du GTFS
--     range: [0, 100]
--   - id: reseaux_300m
--     label_fr: Réseaux de transport en commun desservant le quartier
--     unit: réseaux
--     theme: mobilité
--     method: >
--       Nombre de flux GTFS (réseaux) ayant au moins un arrêt dans le QPV ou à moins de 300 m ; leurs
--       noms sont dans la vue mart.qpv_networks.
--     millesime: validité du GTFS
--     range: [0, 100]
-- ---
-- Set-based: stops near each QPV come from the subdivided perimeters through the GiST index; the
-- area within 300 m is the union of the buffers of those stops only, per QPV and per commune.
-- src.gtfs_stops is read directly (not through a CTE) so that every spatial join uses its GiST index.
-- Each feed (a partition) covers its own network's hull: a QPV has values when it lies in one of them.
WITH feeds AS (
    SELECT feed_id, min(source_run_id) AS run_id, ST_Buffer(ST_ConvexHull(ST_Collect(geom)), 300) AS cover
    FROM src.gtfs_stops WHERE coalesce(location_type, 0) = 0 GROUP BY feed_id
), meta_run AS (
    SELECT array_agg(run_id ORDER BY run_id) AS run_ids, ST_Union(cover) AS cover,
           string_agg(DISTINCT meta.millesime_of(run_id), ' ; ') AS mil
    FROM feeds
), qpv AS (
    SELECT q.generation, q.code_qp, q.insee_com, q.geom, q.source_run_id AS qpv_run
    FROM ref.qpv q, meta_run m
    WHERE ST_Intersects(ST_PointOnSurface(q.geom), m.cover)
), near AS (            -- stops within 300 m (inside included), once per QPV
    SELECT DISTINCT s.generation, s.code_qp, st.feed_id, st.stop_id
    FROM ref.qpv_subdivided s
    JOIN qpv USING (generation, code_qp)
    JOIN src.gtfs_stops st ON ST_DWithin(st.geom, s.geom, 300) AND coalesce(st.location_type, 0) = 0
), inside AS (
    SELECT DISTINCT s.generation, s.code_qp, st.feed_id, st.stop_id
    FROM ref.qpv_subdivided s
    JOIN qpv USING (generation, code_qp)
    JOIN src.gtfs_stops st ON ST_Intersects(st.geom, s.geom) AND coalesce(st.location_type, 0) = 0
), near_agg AS MATERIALIZED (  -- computed once: inlined, a misestimated plan re-ran it per QPV (137 s at national size)
    SELECT n.generation, n.code_qp, count(*) AS n_300, sum(st.departures_weekday_avg) AS dep_300,
           count(DISTINCT n.feed_id) AS n_feeds, ST_Union(ST_Buffer(st.geom, 300, 'quad_segs=8')) AS buf
    FROM near n JOIN src.gtfs_stops st USING (feed_id, stop_id)
    GROUP BY n.generation, n.code_qp
), inside_agg AS MATERIALIZED (
    SELECT generation, code_qp, count(*) AS n_in FROM inside GROUP BY 1, 2
), per_qpv AS (
    SELECT qpv.generation, qpv.code_qp, qpv.qpv_run,
           coalesce(ia.n_in, 0) AS n_in, coalesce(na.n_300, 0) AS n_300, coalesce(na.dep_300, 0) AS dep_300,
           coalesce(na.n_feeds, 0) AS n_feeds,
           (SELECT ST_Distance(qpv.geom, st.geom) FROM src.gtfs_stops st WHERE coalesce(st.location_type, 0) = 0
             ORDER BY st.geom <-> qpv.geom LIMIT 1) AS dist,
           coalesce(ST_Area(ST_Intersection(qpv.geom, na.buf)), 0) AS covered,
           ST_Area(qpv.geom) AS area
    FROM qpv
    LEFT JOIN near_agg na USING (generation, code_qp)
    LEFT JOIN inside_agg ia USING (generation, code_qp)
), commune_scope AS (   -- each main commune, whole and outside every QPV of the same list
    SELECT cm.generation, cm.insee_com, c.source_run_id AS com_run, z.scope, z.geom
    FROM (SELECT DISTINCT generation, insee_com FROM qpv) cm
    JOIN ref.commune_contour c USING (insee_com)
    CROSS JOIN LATERAL (VALUES
        ('commune', c.geom),
        ('commune_hors_qpv', (SELECT h.geom FROM ref.commune_hors_qpv h
                              WHERE h.generation = cm.generation AND h.insee_com = cm.insee_com))
    ) AS z (scope, geom)
), commune_cov AS (
    SELECT cs.*, ST_Area(cs.geom) AS area,
           coalesce((SELECT ST_Area(ST_Intersection(cs.geom, ST_Union(ST_Buffer(st.geom, 300, 'quad_segs=8'))))
                     FROM src.gtfs_stops st
                     WHERE ST_DWithin(st.geom, cs.geom, 300) AND coalesce(st.location_type, 0) = 0), 0) AS covered
    FROM commune_scope cs
)
SELECT i.indicator_id, p.code_qp, p.generation, i.scope, i.value, i.num AS numerator, i.den AS denominator,
       m.mil AS millesime, ARRAY[p.qpv_run] || m.run_ids AS source_run_ids
FROM per_qpv p, meta_run m
CROSS JOIN LATERAL (VALUES
    ('arrets_dans_qpv', 'qpv', p.n_in::double precision, NULL::double precision, NULL::double precision),
    ('arrets_300m', 'qpv', p.n_300::double precision, NULL, NULL),
    ('reseaux_300m', 'qpv', p.n_feeds::double precision, NULL, NULL),
    ('departs_jour_ouvre_300m', 'qpv', round(p.dep_300::numeric, 1)::double precision, NULL, NULL),
    ('distance_arret_m', 'qpv', CASE WHEN p.n_in > 0 THEN 0 ELSE round(p.dist::numeric) END::double precision, NULL, NULL),
    ('part_surface_300m_arret', 'qpv', round((100 * p.covered / p.area)::numeric, 1)::double precision,
        p.covered, p.area)
) AS i (indicator_id, scope, value, num, den)
UNION ALL
SELECT 'part_surface_300m_arret', qpv.code_qp, qpv.generation, cc.scope,
       round((100 * cc.covered / cc.area)::numeric, 1)::double precision, cc.covered, cc.area,
       m.mil, ARRAY[qpv.qpv_run, cc.com_run] || m.run_ids
FROM qpv
JOIN commune_cov cc USING (generation, insee_com)
CROSS JOIN meta_run m
WHERE cc.area > 0
