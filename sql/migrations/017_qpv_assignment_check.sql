-- INSEE's own QPV assignment of each BPE facility (QP2024, with its quality QUALI_QP2024) compared at every indicator
-- run with the hub's point-in-perimeter join: an independent check of the perimeters and of the facility
-- positions. The rate is kept run after run; the disagreeing facilities of the last run are listed for the
-- quality page.
SET LOCAL ROLE qpvhub_loader;

CREATE TABLE meta.qpv_assignment_check (
    computed_at    timestamptz NOT NULL DEFAULT now(),
    source_id      text NOT NULL,
    source_run_id  text NOT NULL,
    generation     smallint NOT NULL,
    departements   text[] NOT NULL,
    compared       integer NOT NULL,
    agreeing       integer NOT NULL,
    rate           double precision,
    by_quality     jsonb NOT NULL,
    PRIMARY KEY (computed_at, source_id, generation)
);
COMMENT ON TABLE meta.qpv_assignment_check IS 'Agreement of the hub''s point-in-QPV join with the publisher''s own QPV column (BPE: QP2024), one row per indicator run';
COMMENT ON COLUMN meta.qpv_assignment_check.computed_at IS 'When the indicator run compared them';
COMMENT ON COLUMN meta.qpv_assignment_check.source_id IS 'Source whose QPV column is compared (bpe)';
COMMENT ON COLUMN meta.qpv_assignment_check.source_run_id IS 'meta.source_runs.run_id of that source''s load';
COMMENT ON COLUMN meta.qpv_assignment_check.generation IS 'QPV list compared (2024)';
COMMENT ON COLUMN meta.qpv_assignment_check.departements IS 'Départements compared: those where the list''s perimeters are loaded';
COMMENT ON COLUMN meta.qpv_assignment_check.compared IS 'Geolocated facilities of those départements';
COMMENT ON COLUMN meta.qpv_assignment_check.agreeing IS 'Facilities both assign to the same QPV, or both to none';
COMMENT ON COLUMN meta.qpv_assignment_check.rate IS 'agreeing / compared (0–1); NULL when nothing was compared';
COMMENT ON COLUMN meta.qpv_assignment_check.by_quality IS 'Per value of the publisher''s quality flag (QUALI_QP2024: 1 sure, 2 probable, 3 random): {"compared": n, "agreeing": n}';

CREATE TABLE meta.qpv_assignment_disagreement (
    source_id     text NOT NULL,
    generation    smallint NOT NULL,
    insee_com     text,
    typequ        text,
    code_qp_publisher text,
    code_qp_hub   text,
    quality       text,
    qualite_xy    text,
    distance_m    double precision
);
COMMENT ON TABLE meta.qpv_assignment_disagreement IS 'Facilities of the last indicator run whose publisher QPV (QP2024) differs from the hub''s point-in-perimeter join';
COMMENT ON COLUMN meta.qpv_assignment_disagreement.source_id IS 'Source compared (bpe)';
COMMENT ON COLUMN meta.qpv_assignment_disagreement.generation IS 'QPV list compared';
COMMENT ON COLUMN meta.qpv_assignment_disagreement.insee_com IS 'Commune of the facility';
COMMENT ON COLUMN meta.qpv_assignment_disagreement.typequ IS 'Facility type (BPE nomenclature)';
COMMENT ON COLUMN meta.qpv_assignment_disagreement.code_qp_publisher IS 'QPV the publisher assigns (NULL: none)';
COMMENT ON COLUMN meta.qpv_assignment_disagreement.code_qp_hub IS 'QPV whose perimeter holds the point (NULL: none)';
COMMENT ON COLUMN meta.qpv_assignment_disagreement.quality IS 'Publisher''s quality of its assignment (QUALI_QP2024)';
COMMENT ON COLUMN meta.qpv_assignment_disagreement.qualite_xy IS 'Publisher''s quality of the position (QUALITE_XY)';
COMMENT ON COLUMN meta.qpv_assignment_disagreement.distance_m IS 'Distance from the point to the publisher''s QPV perimeter (m), when it names one';
GRANT SELECT ON meta.qpv_assignment_check, meta.qpv_assignment_disagreement TO qpvhub_analyst;
