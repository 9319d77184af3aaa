-- Reference geography. ref.qpv keeps both QPV generations side by side, one partition each, so a
-- source replaces its generation atomically (DETACH/ATTACH) without touching the other.
SET LOCAL ROLE qpvhub_loader;

CREATE TABLE ref.qpv (
    code_qp       text NOT NULL,
    lib_qp        text NOT NULL,
    generation    smallint NOT NULL,
    insee_com     text,
    lib_com       text,
    dep           text NOT NULL,
    geom          geometry(MultiPolygon, 2154) NOT NULL,
    source_run_id text,
    CONSTRAINT qpv_code_format CHECK (
        (generation = 2015 AND code_qp ~ '^QP([0-9]{3}|02[AB])[0-9]{3}$')
        OR (generation = 2024 AND code_qp ~ '^QN([0-9]{3}|02[AB])[0-9]{2}[A-Z]$')),
    CONSTRAINT qpv_insee_com_format CHECK (insee_com ~ '^([0-9]{5}|2[AB][0-9]{3})$'),
    PRIMARY KEY (generation, code_qp)
) PARTITION BY LIST (generation);
CREATE TABLE ref.qpv_2015 PARTITION OF ref.qpv FOR VALUES IN (2015);
CREATE TABLE ref.qpv_2024 PARTITION OF ref.qpv FOR VALUES IN (2024);
CREATE INDEX qpv_geom_idx ON ref.qpv USING gist (geom);
COMMENT ON TABLE ref.qpv IS 'Quartiers prioritaires de la politique de la ville, both generations (2015 list QP…, 2024 list QN…), Lambert-93';
COMMENT ON COLUMN ref.qpv.code_qp IS 'QPV code: QP + département (3 characters) + 3 digits (2015), QN + département + 2 digits + letter (2024)';
COMMENT ON COLUMN ref.qpv.lib_qp IS 'QPV name';
COMMENT ON COLUMN ref.qpv.generation IS 'QPV list: 2015 or 2024';
COMMENT ON COLUMN ref.qpv.insee_com IS 'INSEE code of the main commune (text: 01001, 2A004)';
COMMENT ON COLUMN ref.qpv.lib_com IS 'Name of the main commune, as published with the QPV';
COMMENT ON COLUMN ref.qpv.dep IS 'Département code (text: 35, 2A, 971)';
COMMENT ON COLUMN ref.qpv.geom IS 'Perimeter, MultiPolygon, EPSG:2154 (Lambert-93)';
COMMENT ON COLUMN ref.qpv.source_run_id IS 'meta.source_runs.run_id of the load';

CREATE TABLE ref.commune (
    insee_com     text PRIMARY KEY CHECK (insee_com ~ '^([0-9]{5}|2[AB][0-9]{3})$'),
    nom           text NOT NULL,
    dep           text NOT NULL,
    reg           text NOT NULL,
    population    integer,
    source_run_id text
);
COMMENT ON COLUMN ref.commune.population IS 'Population municipale (INSEE)';
COMMENT ON TABLE ref.commune IS 'Current communes (INSEE COG); replaced whole by each load, indexes from the catalogue';
