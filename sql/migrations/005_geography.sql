-- Derived reference geography (rebuilt by the indicators runner from ref.qpv and ref.commune_contour,
-- see sql/derived/) and the millésime of each source run.
SET LOCAL ROLE qpvhub_loader;

ALTER TABLE meta.source_runs ADD COLUMN millesime text;
COMMENT ON COLUMN meta.source_runs.millesime IS 'Millésime (data year) declared in the source''s catalogue entry';

CREATE VIEW meta.current_source AS
SELECT DISTINCT ON (source_id) source_id, run_id, millesime, finished_at, target, rows_loaded, sha256
FROM meta.source_runs
WHERE status = 'success'
ORDER BY source_id, finished_at DESC;
COMMENT ON VIEW meta.current_source IS 'The run whose data each source table holds now (last successful load), with its millésime';

CREATE TABLE ref.qpv_subdivided (
    generation smallint NOT NULL,
    code_qp    text NOT NULL,
    geom       geometry(Polygon, 2154) NOT NULL
);
CREATE INDEX qpv_subdivided_geom_idx ON ref.qpv_subdivided USING gist (geom);
CREATE INDEX qpv_subdivided_code_idx ON ref.qpv_subdivided (generation, code_qp);
COMMENT ON TABLE ref.qpv_subdivided IS 'ref.qpv cut by ST_Subdivide (at most 64 vertices per piece): fast point-in-QPV joins over millions of points; the union of a QPV''s pieces is its perimeter';
COMMENT ON COLUMN ref.qpv_subdivided.geom IS 'Piece of the perimeter, Polygon, EPSG:2154';

CREATE TABLE ref.qpv_commune (
    generation    smallint NOT NULL,
    code_qp       text NOT NULL,
    insee_com     text NOT NULL,
    area_m2       double precision NOT NULL,
    share_of_qpv  double precision NOT NULL CHECK (share_of_qpv BETWEEN 0 AND 1),
    PRIMARY KEY (generation, code_qp, insee_com)
);
COMMENT ON TABLE ref.qpv_commune IS 'Share of each QPV''s area in each commune it overlaps (a QPV can span several communes); slivers under 0.5 % of the QPV, from outline generalisation, are left out';
COMMENT ON COLUMN ref.qpv_commune.area_m2 IS 'Area of the QPV inside the commune (m², Lambert-93)';
COMMENT ON COLUMN ref.qpv_commune.share_of_qpv IS 'area_m2 / area of the QPV (0–1)';

CREATE TABLE ref.qpv_correspondence (
    code_qp_2015   text NOT NULL,
    code_qp_2024   text NOT NULL,
    area_m2        double precision NOT NULL,
    share_of_2015  double precision NOT NULL CHECK (share_of_2015 BETWEEN 0 AND 1),
    share_of_2024  double precision NOT NULL CHECK (share_of_2024 BETWEEN 0 AND 1),
    PRIMARY KEY (code_qp_2015, code_qp_2024)
);
COMMENT ON TABLE ref.qpv_correspondence IS 'Overlap of 2015 and 2024 QPV perimeters (both generations must be loaded; nothing is inferred without geometry)';
COMMENT ON COLUMN ref.qpv_correspondence.share_of_2015 IS 'Share of the 2015 QPV''s area inside the 2024 QPV (0–1)';
COMMENT ON COLUMN ref.qpv_correspondence.share_of_2024 IS 'Share of the 2024 QPV''s area inside the 2015 QPV (0–1)';

CREATE TABLE ref.epci (
    siren_epci  text PRIMARY KEY CHECK (siren_epci ~ '^[0-9]{9}$'),
    nom_epci    text NOT NULL,
    n_communes  integer NOT NULL,
    population  bigint,
    geom        geometry(MultiPolygon, 2154)
);
CREATE INDEX epci_geom_idx ON ref.epci USING gist (geom);
COMMENT ON TABLE ref.epci IS 'EPCI à fiscalité propre: membership and outline dissolved from ref.commune_contour (COG membership)';
COMMENT ON COLUMN ref.epci.population IS 'Sum of the municipal population of the member communes loaded';
COMMENT ON COLUMN ref.epci.geom IS 'Union of the member communes'' outlines, EPSG:2154';

CREATE FUNCTION meta.millesime_of(p_run_id text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(millesime, 'non daté (chargé le ' || to_char(started_at, 'YYYY-MM-DD') || ')')
    FROM meta.source_runs WHERE run_id = p_run_id
$$;
COMMENT ON FUNCTION meta.millesime_of(text) IS 'Millésime of a source run, or its load date when the source declares none';

-- Created here, replaced whole by each load of the commune_contours source (same columns): indicator
-- SQL can always reference it; commune-scope values are absent until it is loaded.
CREATE TABLE ref.commune_contour (
    insee_com     text NOT NULL PRIMARY KEY CHECK (insee_com ~ '^([0-9]{5}|2[AB][0-9]{3})$'),
    nom           text NOT NULL,
    population    integer,
    dep           text NOT NULL,
    reg           text NOT NULL,
    siren_epci    text,
    nom_epci      text,
    source_run_id text,
    geom          geometry(MultiPolygon, 2154) NOT NULL
);
CREATE INDEX commune_contour_geom_idx ON ref.commune_contour USING gist (geom);
COMMENT ON TABLE ref.commune_contour IS 'Commune outlines (simplified) with their EPCI; geometric companion of ref.commune';

COMMENT ON COLUMN mart.qpv_indicator.code_qp IS 'QPV code (QP… 2015 list, QN… 2024 list)';
COMMENT ON COLUMN mart.qpv_indicator.generation IS 'QPV list: 2015 or 2024';
COMMENT ON COLUMN mart.qpv_indicator.indicator_id IS 'Indicator id, documented in mart.indicator_catalog';
COMMENT ON COLUMN mart.qpv_indicator.scope IS 'qpv (the neighbourhood), commune (its main commune, whole) or commune_hors_qpv (the commune outside all its QPV)';
COMMENT ON COLUMN mart.qpv_indicator.numerator IS 'Numerator of a rate or share, when the indicator is one (e.g. m² covered, jobseekers)';
COMMENT ON COLUMN mart.qpv_indicator.denominator IS 'Denominator of a rate or share (e.g. QPV area in m², inhabitants, IRIS counted)';
COMMENT ON COLUMN mart.qpv_indicator.computed_at IS 'When the indicators runner computed the value';
COMMENT ON COLUMN mart.indicator_catalog.indicator_id IS 'Indicator id (column name in mart.qpv_profile and the theme views)';
COMMENT ON COLUMN mart.indicator_catalog.label_fr IS 'Label in French';
COMMENT ON COLUMN mart.indicator_catalog.unit IS 'Unit of mart.qpv_indicator.value';
COMMENT ON COLUMN mart.indicator_catalog.theme IS 'Theme (socio-démographie, emploi, mobilité, services, climat, géographie); one mart.theme_* view each';
COMMENT ON COLUMN mart.indicator_catalog.sources IS 'Catalogue ids of the sources used (include/sources/<id>.yml)';
COMMENT ON COLUMN mart.indicator_catalog.method IS 'How the value is computed, in French';
COMMENT ON COLUMN mart.indicator_catalog.millesime IS 'Which data year the values carry (each value also has its own millésime)';
COMMENT ON COLUMN mart.indicator_catalog.is_count IS 'true for counts (subject to the statistical-secrecy threshold on publication)';
COMMENT ON COLUMN mart.indicator_catalog.sql_file IS 'sql/indicators/ file computing it';
COMMENT ON COLUMN mart.indicator_catalog.computed_at IS 'Last time the indicator was computed with its sources present';
