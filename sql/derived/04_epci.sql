-- ---
-- table: ref.epci
-- requires: [ref.commune_contour]
-- ---
INSERT INTO ref.epci (siren_epci, nom_epci, n_communes, population, geom)
SELECT siren_epci, min(nom_epci), count(*), sum(population),
       ST_Multi(ST_CollectionExtract(ST_MakeValid(ST_Union(geom)), 3))
FROM ref.commune_contour
WHERE siren_epci IS NOT NULL
GROUP BY siren_epci
