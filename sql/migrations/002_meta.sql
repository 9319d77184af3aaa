-- Run records: one row per source run (lineage), validation results, publications.
SET LOCAL ROLE qpvhub_loader;

CREATE TABLE meta.source_runs (
    run_id          text PRIMARY KEY,
    source_id       text NOT NULL,
    airflow_run_id  text,
    status          text NOT NULL CHECK (status IN ('running', 'success', 'failed', 'skipped')),
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    urls            text[] NOT NULL DEFAULT '{}',
    etag            text,
    last_modified   text,
    sha256          text,
    bytes           bigint,
    raw_key         text,
    target          text,
    rows_read       bigint,
    rows_loaded     bigint,
    rows_rejected   bigint,
    rows_repaired   bigint,
    validation      jsonb,
    timings         jsonb NOT NULL DEFAULT '{}',
    error           text,
    code_version    text
);
CREATE INDEX source_runs_source_idx ON meta.source_runs (source_id, started_at DESC);
COMMENT ON TABLE meta.source_runs IS 'One row per ingestion run of a source: where the bytes came from, what was loaded, how it went';
COMMENT ON COLUMN meta.source_runs.run_id IS 'qpvhub run id (also the raw archive folder name)';
COMMENT ON COLUMN meta.source_runs.airflow_run_id IS 'Airflow DAG run id, when run by Airflow';
COMMENT ON COLUMN meta.source_runs.status IS 'running, success, failed, or skipped (source unchanged since the last success)';
COMMENT ON COLUMN meta.source_runs.sha256 IS 'SHA-256 of the raw bytes fetched';
COMMENT ON COLUMN meta.source_runs.raw_key IS 'Object-store key of the archived raw bytes';
COMMENT ON COLUMN meta.source_runs.rows_repaired IS 'Geometries made valid by ST_MakeValid';
COMMENT ON COLUMN meta.source_runs.validation IS 'Great Expectations summary: success, counts, failed expectations';
COMMENT ON COLUMN meta.source_runs.timings IS 'Seconds spent in each step';

CREATE TABLE meta.validation_results (
    id               bigserial PRIMARY KEY,
    run_id           text NOT NULL,
    suite            text NOT NULL,
    expectation      text NOT NULL,
    column_name      text,
    success          boolean NOT NULL,
    observed_value   text,
    unexpected_count bigint,
    unexpected_percent double precision,
    sample           jsonb,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX validation_results_run_idx ON meta.validation_results (run_id);
COMMENT ON TABLE meta.validation_results IS 'One row per expectation evaluated in a run';

CREATE TABLE meta.rejected_rows (
    run_id    text NOT NULL,
    source_id text NOT NULL,
    feature   bigint NOT NULL,
    reason    text NOT NULL,
    record    jsonb,
    PRIMARY KEY (run_id, feature)
);
COMMENT ON TABLE meta.rejected_rows IS 'Rows a run could not load (e.g. empty geometry after repair), with the reason: nothing is dropped silently';
COMMENT ON COLUMN meta.rejected_rows.feature IS 'Feature number (vector formats) or data line number (CSV) in the source file';

CREATE TABLE meta.publications (
    id           bigserial PRIMARY KEY,
    region       text NOT NULL,
    product      text NOT NULL,
    version      text NOT NULL,
    status       text NOT NULL CHECK (status IN ('published', 'unchanged', 'failed')),
    files        jsonb NOT NULL DEFAULT '[]',
    manifest_key text,
    published_at timestamptz NOT NULL DEFAULT now(),
    airflow_run_id text
);
CREATE INDEX publications_product_idx ON meta.publications (region, product, published_at DESC);
COMMENT ON TABLE meta.publications IS 'Each publication attempt: a new version written, or unchanged data (no new version)';
