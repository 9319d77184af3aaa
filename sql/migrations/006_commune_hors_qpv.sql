-- The commune outside its QPV, as a geometry: shared by every indicator with a commune_hors_qpv scope.
SET LOCAL ROLE qpvhub_loader;

CREATE TABLE ref.commune_hors_qpv (
    generation smallint NOT NULL,
    insee_com  text NOT NULL,
    geom       geometry(MultiPolygon, 2154) NOT NULL,
    PRIMARY KEY (generation, insee_com)
);
COMMENT ON TABLE ref.commune_hors_qpv IS 'Each commune that is the main commune of a QPV, minus every QPV of the same list (rebuilt with the indicators from ref.commune_contour and ref.qpv)';
COMMENT ON COLUMN ref.commune_hors_qpv.generation IS 'QPV list whose perimeters are removed: 2015 or 2024';
COMMENT ON COLUMN ref.commune_hors_qpv.insee_com IS 'INSEE code of the commune';
COMMENT ON COLUMN ref.commune_hors_qpv.geom IS 'Commune outline minus the QPV, MultiPolygon, EPSG:2154';
