-- Partitioned entries: statistics sources keep every release as a partition (GTFS collections every feed), the mart keeps
-- every release's values (mart.qpv_indicator stays "latest") and the evolutions between them.
SET LOCAL ROLE qpvhub_loader;

ALTER TABLE meta.source_runs ADD COLUMN part text;
COMMENT ON COLUMN meta.source_runs.part IS 'Partition the run loaded, for a partitioned entry: the release of a series (SIG Ville files, ''2019''), the feed of a collection (GTFS, ''star''); NULL otherwise';

-- SIG Ville tables loaded before releases were kept become the partition of the release they were
-- loaded as (the catalogue's millésime of their last run, 2022 for the bundled samples).
DO $$
DECLARE
    t text;
    rel smallint;
BEGIN
    FOREACH t IN ARRAY ARRAY['sigville_demo', 'sigville_ipro', 'sigville_revn'] LOOP
        IF to_regclass('src.' || t) IS NOT NULL
           AND (SELECT relkind FROM pg_class WHERE oid = to_regclass('src.' || t)) = 'r' THEN
            SELECT coalesce((SELECT r.millesime::smallint FROM meta.source_runs r
                             WHERE r.source_id = t AND r.status = 'success' AND r.millesime ~ '^[0-9]{4}$'
                             ORDER BY r.finished_at DESC LIMIT 1), 2022) INTO rel;
            EXECUTE format('ALTER TABLE src.%I ADD COLUMN release smallint NOT NULL DEFAULT %s', t, rel);
            EXECUTE format('ALTER TABLE src.%I ALTER COLUMN release DROP DEFAULT', t);
            EXECUTE format('ALTER TABLE src.%I DROP CONSTRAINT IF EXISTS %I', t, t || '_pkey');
            EXECUTE format('ALTER TABLE src.%I RENAME TO %I', t, t || '_' || rel);
            EXECUTE format('CREATE TABLE src.%I (LIKE src.%I) PARTITION BY LIST (release)', t, t || '_' || rel);
            EXECUTE format('ALTER TABLE src.%I ATTACH PARTITION src.%I FOR VALUES IN (%s)', t, t || '_' || rel, rel);
            EXECUTE format('GRANT SELECT ON src.%I TO qpvhub_analyst', t);
            UPDATE meta.source_runs SET part = rel::text WHERE source_id = t AND status = 'success';
        END IF;
    END LOOP;
END $$;

-- The STAR feed loaded by the former entry `gtfs_star` becomes feed `star` of the collection `gtfs`.
DO $$
BEGIN
    IF to_regclass('src.gtfs_stops') IS NOT NULL
       AND (SELECT relkind FROM pg_class WHERE oid = to_regclass('src.gtfs_stops')) = 'r' THEN
        ALTER TABLE src.gtfs_stops ADD COLUMN feed_id text NOT NULL DEFAULT 'star';
        ALTER TABLE src.gtfs_stops ADD COLUMN network text NOT NULL DEFAULT 'STAR (Rennes Métropole)';
        ALTER TABLE src.gtfs_stops ALTER COLUMN feed_id DROP DEFAULT, ALTER COLUMN network DROP DEFAULT;
        ALTER TABLE src.gtfs_stops DROP CONSTRAINT IF EXISTS gtfs_stops_pkey;
        ALTER TABLE src.gtfs_stops RENAME TO gtfs_stops_star;
        CREATE TABLE src.gtfs_stops (LIKE src.gtfs_stops_star) PARTITION BY LIST (feed_id);
        ALTER TABLE src.gtfs_stops ATTACH PARTITION src.gtfs_stops_star FOR VALUES IN ('star');
        GRANT SELECT ON src.gtfs_stops TO qpvhub_analyst;
    END IF;
    UPDATE meta.source_runs SET source_id = 'gtfs', part = 'star' WHERE source_id = 'gtfs_star';
END $$;

CREATE TABLE mart.qpv_indicator_series (
    code_qp        text NOT NULL,
    generation     smallint NOT NULL,
    indicator_id   text NOT NULL REFERENCES mart.indicator_catalog (indicator_id),
    scope          text NOT NULL DEFAULT 'qpv' CHECK (scope IN ('qpv', 'commune', 'commune_hors_qpv')),
    release        smallint NOT NULL,
    releases       smallint[] NOT NULL,
    millesime      text NOT NULL,
    value          double precision,
    numerator      double precision,
    denominator    double precision,
    source_run_ids text[] NOT NULL DEFAULT '{}',
    computed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (generation, code_qp, indicator_id, scope, release)
);
CREATE INDEX qpv_indicator_series_indicator_idx ON mart.qpv_indicator_series (indicator_id, release);
COMMENT ON TABLE mart.qpv_indicator_series IS 'Every loaded release of the series indicators (SIG Ville files): one row per QPV, indicator, scope and distinct figure; mart.qpv_indicator holds the latest release';
COMMENT ON COLUMN mart.qpv_indicator_series.release IS 'First release carrying this figure';
COMMENT ON COLUMN mart.qpv_indicator_series.releases IS 'Every release carrying the same figure: when a release repeats the previous release''s figures for an indicator (all QPV identical), it is stored once with both releases named, not as "no change"';
COMMENT ON COLUMN mart.qpv_indicator_series.millesime IS 'Millésime of the value as its run records it (the release, for SIG Ville: the underlying data year is not stated)';

CREATE TABLE mart.qpv_indicator_evolution (
    code_qp        text NOT NULL,
    generation     smallint NOT NULL,
    indicator_id   text NOT NULL REFERENCES mart.indicator_catalog (indicator_id),
    scope          text NOT NULL DEFAULT 'qpv',
    release_from   smallint NOT NULL,
    release_to     smallint NOT NULL,
    value_from     double precision,
    value_to       double precision,
    evolution      double precision,
    unit           text NOT NULL CHECK (unit IN ('points', '%')),
    reason         text,
    computed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (generation, code_qp, indicator_id, scope, release_from, release_to),
    CHECK ((evolution IS NULL) = (reason IS NOT NULL))
);
COMMENT ON TABLE mart.qpv_indicator_evolution IS 'Evolution of each series indicator between consecutive distinct figures: difference in points for rates, % for counts and amounts; no value where not comparable, with the reason';
COMMENT ON COLUMN mart.qpv_indicator_evolution.evolution IS 'value_to − value_from (points) for rates, 100 × (value_to − value_from) / value_from (%) otherwise; NULL when not comparable';
COMMENT ON COLUMN mart.qpv_indicator_evolution.reason IS 'Why no evolution is given (definition changed between the releases, a value missing…); NULL when given';

COMMENT ON COLUMN mart.qpv_indicator_series.indicator_id IS 'Indicator id, documented in mart.indicator_catalog';
COMMENT ON COLUMN mart.qpv_indicator_series.scope IS 'qpv (the QPV), commune (its main commune), commune_hors_qpv (the commune outside its QPV)';
COMMENT ON COLUMN mart.qpv_indicator_series.value IS 'Indicator value in the unit of mart.indicator_catalog, in these releases';
COMMENT ON COLUMN mart.qpv_indicator_series.numerator IS 'Numerator of a ratio, when the family gives it';
COMMENT ON COLUMN mart.qpv_indicator_series.denominator IS 'Denominator of a ratio, when the family gives it';
COMMENT ON COLUMN mart.qpv_indicator_series.source_run_ids IS 'meta.source_runs.run_id of the inputs (of the first release carrying the figure)';
COMMENT ON COLUMN mart.qpv_indicator_series.computed_at IS 'When the indicators runner wrote the row';
COMMENT ON COLUMN mart.qpv_indicator_evolution.indicator_id IS 'Indicator id, documented in mart.indicator_catalog';
COMMENT ON COLUMN mart.qpv_indicator_evolution.scope IS 'qpv, commune or commune_hors_qpv';
COMMENT ON COLUMN mart.qpv_indicator_evolution.release_from IS 'Release of the previous distinct figure';
COMMENT ON COLUMN mart.qpv_indicator_evolution.release_to IS 'Release of the figure (first release carrying it)';
COMMENT ON COLUMN mart.qpv_indicator_evolution.value_from IS 'Value in release_from';
COMMENT ON COLUMN mart.qpv_indicator_evolution.value_to IS 'Value in release_to';
COMMENT ON COLUMN mart.qpv_indicator_evolution.unit IS 'points (difference of two rates) or % (relative change of a count or an amount)';
COMMENT ON COLUMN mart.qpv_indicator_evolution.computed_at IS 'When the indicators runner wrote the row';
