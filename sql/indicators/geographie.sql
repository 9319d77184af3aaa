-- ---
-- family: geographie
-- sources: [qpv_2015, commune_contours]
-- requires: [ref.qpv]
-- absent_fr: "les contours communaux ne sont pas chargés"
-- indicators:
--   - id: superficie_ha
--     label_fr: Superficie du quartier
--     unit: ha
--     theme: géographie
--     method: >
--       Aire du périmètre officiel du QPV en Lambert-93 (EPSG:2154, ST_Area), en hectares, arrondie
--       au centième. Lambert-93 déforme peu les surfaces en métropole (moins de 0,1 % en Bretagne).
--     millesime: périmètre du QPV (liste 2015 ou 2024)
--     range: [1, 2000]
--   - id: nb_communes
--     label_fr: Nombre de communes couvertes par le quartier
--     unit: communes
--     theme: géographie
--     method: >
--       Nombre de communes dont le contour recouvre au moins 0,5 % de l'aire du QPV (ref.qpv_commune ;
--       en deçà, il s'agit d'écarts de généralisation des contours communaux). Absent tant que les
--       contours des communes ne sont pas chargés.
--     millesime: périmètre du QPV et contours communaux
--     is_count: true
--     range: [1, 10]
-- ---
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
UNION ALL
SELECT 'nb_communes', q.code_qp, q.generation, 'qpv', count(*)::double precision, NULL, NULL,
       q.generation::text || ' ; contours ' || meta.millesime_of(min(c.source_run_id)),
       ARRAY[q.source_run_id, min(c.source_run_id)]
FROM ref.qpv q
JOIN ref.qpv_commune qc USING (generation, code_qp)
JOIN ref.commune_contour c ON c.insee_com = qc.insee_com
GROUP BY q.generation, q.code_qp, q.source_run_id
