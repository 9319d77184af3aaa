-- « Is this address in a QPV? » (qpvhub.locate): what is kept of a partner's lookup is counts, never an address, a
-- coordinate or a file name. And the perimeters the OGC API's /locate answers from, for its read-only role.
SET LOCAL ROLE qpvhub_loader;

CREATE TABLE meta.locate_runs (
    run_id            text PRIMARY KEY,
    partner           text NOT NULL,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL,
    status            text NOT NULL CHECK (status IN ('success', 'failed')),
    rows              integer,
    statuts           jsonb,
    geocoder_requests integer,
    error             text
);
COMMENT ON TABLE meta.locate_runs IS 'Each file a partner dropped in its inbox, located (qpvhub_locate DAG): counts only, no address, coordinate or file name';
COMMENT ON COLUMN meta.locate_runs.run_id IS 'Identifier of the run (locate-<time>-<random>)';
COMMENT ON COLUMN meta.locate_runs.partner IS 'Partner id (its store prefix partners/<id>/)';
COMMENT ON COLUMN meta.locate_runs.started_at IS 'When the file was taken from the inbox';
COMMENT ON COLUMN meta.locate_runs.finished_at IS 'When its result was written (or the run failed)';
COMMENT ON COLUMN meta.locate_runs.status IS 'success, or failed (the file stays in the inbox)';
COMMENT ON COLUMN meta.locate_runs.rows IS 'Rows of the file';
COMMENT ON COLUMN meta.locate_runs.statuts IS 'Rows per statut: dans_qpv, hors_qpv, a_verifier, non_localise';
COMMENT ON COLUMN meta.locate_runs.geocoder_requests IS 'Requests made to the geocoder (retries included)';
COMMENT ON COLUMN meta.locate_runs.error IS 'Why it failed (names columns and lines, never values)';
GRANT SELECT ON meta.locate_runs TO qpvhub_analyst;

-- The QPV perimeters of every list, for point lookups over HTTP: open data already, readable by the API's role,
-- indexed (the GiST index of ref.qpv answers a point's query; nothing is scanned).
CREATE VIEW pub.qpv_perimetre AS
SELECT generation, code_qp, lib_qp, insee_com, geom FROM ref.qpv;
COMMENT ON VIEW pub.qpv_perimetre IS 'Périmètres des quartiers prioritaires de chaque liste (2015, 2024), pour la localisation d''un point (EPSG:2154)';
COMMENT ON COLUMN pub.qpv_perimetre.generation IS 'Liste des QPV (son année)';
COMMENT ON COLUMN pub.qpv_perimetre.code_qp IS 'Code du QPV';
COMMENT ON COLUMN pub.qpv_perimetre.lib_qp IS 'Nom du QPV';
COMMENT ON COLUMN pub.qpv_perimetre.insee_com IS 'Code INSEE de la commune principale';
COMMENT ON COLUMN pub.qpv_perimetre.geom IS 'Périmètre, EPSG:2154 (Lambert-93)';
GRANT SELECT ON pub.qpv_perimetre TO qpvhub_analyst;
