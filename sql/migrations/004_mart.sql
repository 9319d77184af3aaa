-- Indicators: long table, catalogue; the wide view mart.qpv_profile is rebuilt by the runner.
SET LOCAL ROLE qpvhub_loader;

CREATE TABLE mart.indicator_catalog (
    indicator_id text PRIMARY KEY CHECK (indicator_id ~ '^[a-z][a-z0-9_]*$'),
    label_fr     text NOT NULL,
    unit         text NOT NULL,
    theme        text NOT NULL,
    sources      text[] NOT NULL,
    method       text NOT NULL,
    millesime    text NOT NULL,
    is_count     boolean NOT NULL DEFAULT false,
    sql_file     text NOT NULL,
    computed_at  timestamptz
);
COMMENT ON TABLE mart.indicator_catalog IS 'One row per indicator: label, unit, theme, sources, method, millésime';

CREATE TABLE mart.qpv_indicator (
    code_qp        text NOT NULL,
    generation     smallint NOT NULL,
    indicator_id   text NOT NULL REFERENCES mart.indicator_catalog (indicator_id),
    scope          text NOT NULL DEFAULT 'qpv' CHECK (scope IN ('qpv', 'commune', 'commune_hors_qpv')),
    value          double precision,
    numerator      double precision,
    denominator    double precision,
    millesime      text NOT NULL,
    source_run_ids text[] NOT NULL DEFAULT '{}',
    computed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (generation, code_qp, indicator_id, scope)
);
CREATE INDEX qpv_indicator_indicator_idx ON mart.qpv_indicator (indicator_id);
COMMENT ON TABLE mart.qpv_indicator IS 'QPV indicators, long format: one row per QPV, indicator and scope';
COMMENT ON COLUMN mart.qpv_indicator.value IS 'Indicator value in the unit of mart.indicator_catalog';
COMMENT ON COLUMN mart.qpv_indicator.millesime IS 'Year of the data the value comes from (do not compare consecutive millésimes at infra-communal level)';
COMMENT ON COLUMN mart.qpv_indicator.source_run_ids IS 'meta.source_runs.run_id of the inputs';
