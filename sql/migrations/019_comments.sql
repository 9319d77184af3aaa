-- Every table, view and column the analyst role reads says what it is (the analyst guide's promise; a test walks
-- the catalogue as qpvhub_analyst). Tables made at load time are commented by the code that makes them.
-- the migrator's own table (its owner, the administrator, runs this file): before the role changes
COMMENT ON TABLE meta.schema_migrations IS 'Migrations applied to this database (sql/migrations/), in order';
COMMENT ON COLUMN meta.schema_migrations.version IS 'Migration number (the file''s prefix)';
COMMENT ON COLUMN meta.schema_migrations.name IS 'Migration file name';
COMMENT ON COLUMN meta.schema_migrations.sha256 IS 'SHA-256 of the file applied (a changed file is refused)';
COMMENT ON COLUMN meta.schema_migrations.applied_at IS 'When it was applied';

SET LOCAL ROLE qpvhub_loader;

-- a column the database does not have (a migration left out by a test of an older layout) is passed over
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT * FROM (VALUES
        ('meta.source_runs', 'source_id', 'Catalogue entry (include/sources/<id>.yml)'),
        ('meta.source_runs', 'started_at', 'When the run started'),
        ('meta.source_runs', 'finished_at', 'When the run ended (NULL while running, or when it was killed)'),
        ('meta.source_runs', 'urls', 'Where the bytes came from (a local file as file://…/<name>; credentials never kept)'),
        ('meta.source_runs', 'etag', 'HTTP ETag of the file fetched (a conditional request next time)'),
        ('meta.source_runs', 'last_modified', 'HTTP Last-Modified of the file fetched'),
        ('meta.source_runs', 'bytes', 'Size of the raw bytes fetched'),
        ('meta.source_runs', 'target', 'Table loaded (schema.table, the partition for a release or feed)'),
        ('meta.source_runs', 'rows_read', 'Rows (features) read from the file'),
        ('meta.source_runs', 'rows_loaded', 'Rows loaded into the target'),
        ('meta.source_runs', 'rows_rejected', 'Rows not loaded, each in meta.rejected_rows with its reason'),
        ('meta.source_runs', 'error', 'Why the run failed, or why it had nothing to load (skipped)'),
        ('meta.source_runs', 'code_version', 'qpvhub version (and commit) that ran'),
        ('meta.validation_results', 'id', 'Row number'),
        ('meta.validation_results', 'run_id', 'meta.source_runs.run_id (or the indicator run) validated'),
        ('meta.validation_results', 'suite', 'Great Expectations suite (the source id, or mart_qpv_indicator)'),
        ('meta.validation_results', 'expectation', 'Expectation type, e.g. expect_column_values_to_match_regex'),
        ('meta.validation_results', 'column_name', 'Column checked (NULL for a table-level expectation)'),
        ('meta.validation_results', 'success', 'Whether the expectation held'),
        ('meta.validation_results', 'observed_value', 'What GX observed (a count, a value)'),
        ('meta.validation_results', 'unexpected_count', 'Rows that broke the expectation'),
        ('meta.validation_results', 'unexpected_percent', 'Their share of the rows checked (%)'),
        ('meta.validation_results', 'sample', 'A few unexpected values (never personal data: the sources are aggregates)'),
        ('meta.validation_results', 'created_at', 'When the expectation was evaluated'),
        ('meta.rejected_rows', 'run_id', 'meta.source_runs.run_id of the run that rejected the row'),
        ('meta.rejected_rows', 'source_id', 'Catalogue entry of that run'),
        ('meta.rejected_rows', 'reason', 'Why the row was not loaded'),
        ('meta.rejected_rows', 'record', 'The row''s attributes as read (geometry left out)'),
        ('meta.publications', 'id', 'Row number'),
        ('meta.publications', 'region', 'Region code (INSEE, text: 53, 93)'),
        ('meta.publications', 'product', 'Product published (qpv_profil, qpv_profil_dep35…)'),
        ('meta.publications', 'version', 'Version written (timestamp and content hash), or the unchanged one'),
        ('meta.publications', 'files', 'Files of the version: name, format, bytes, SHA-256'),
        ('meta.publications', 'manifest_key', 'Object-store key of the version''s datapackage.json'),
        ('meta.publications', 'published_at', 'When the attempt ended'),
        ('meta.publications', 'airflow_run_id', 'Airflow DAG run id, when run by Airflow'),
        ('meta.current_source', 'source_id', 'Catalogue entry'),
        ('meta.current_source', 'run_id', 'Its last successful run (meta.source_runs.run_id)'),
        ('meta.current_source', 'millesime', 'Millésime declared by the catalogue entry for that run'),
        ('meta.current_source', 'finished_at', 'When that run ended'),
        ('meta.current_source', 'target', 'Table it loaded'),
        ('meta.current_source', 'rows_loaded', 'Rows it loaded'),
        ('meta.current_source', 'sha256', 'SHA-256 of the raw file it loaded'),
        ('ref.commune', 'insee_com', 'INSEE code of the commune (text: 01001, 2A004)'),
        ('ref.commune', 'nom', 'Name of the commune'),
        ('ref.commune', 'dep', 'Département code (text: 35, 2A, 971)'),
        ('ref.commune', 'reg', 'Region code (text: 53, 93)'),
        ('ref.commune', 'source_run_id', 'meta.source_runs.run_id of the load'),
        ('ref.commune_contour', 'insee_com', 'INSEE code of the commune (text: 01001, 2A004)'),
        ('ref.commune_contour', 'nom', 'Name of the commune'),
        ('ref.commune_contour', 'population', 'Population municipale (INSEE), as published with the outline'),
        ('ref.commune_contour', 'dep', 'Département code (text: 35, 2A, 971)'),
        ('ref.commune_contour', 'reg', 'Region code (text: 53, 93)'),
        ('ref.commune_contour', 'siren_epci', 'SIREN of the commune''s EPCI à fiscalité propre'),
        ('ref.commune_contour', 'nom_epci', 'Name of that EPCI'),
        ('ref.commune_contour', 'source_run_id', 'meta.source_runs.run_id of the load'),
        ('ref.commune_contour', 'geom', 'Outline, MultiPolygon, EPSG:2154 (Lambert-93)'),
        ('ref.epci', 'siren_epci', 'SIREN of the EPCI (9 digits)'),
        ('ref.epci', 'nom_epci', 'Name of the EPCI'),
        ('ref.epci', 'n_communes', 'Member communes loaded'),
        ('ref.qpv_subdivided', 'generation', 'QPV list (its year: 2015 or 2024)'),
        ('ref.qpv_subdivided', 'code_qp', 'QPV code (ref.qpv)'),
        ('ref.qpv_commune', 'generation', 'QPV list (its year: 2015 or 2024)'),
        ('ref.qpv_commune', 'code_qp', 'QPV code (ref.qpv)'),
        ('ref.qpv_commune', 'insee_com', 'INSEE code of a commune the QPV overlaps'),
        ('ref.qpv_correspondence', 'code_qp_2015', 'QPV of the 2015 list (QP…)'),
        ('ref.qpv_correspondence', 'code_qp_2024', 'QPV of the 2024 list (QN…)'),
        ('ref.qpv_correspondence', 'area_m2', 'Area of their overlap (m², Lambert-93)'),
        ('mart.qpv_indicator_series', 'code_qp', 'QPV code (ref.qpv)'),
        ('mart.qpv_indicator_series', 'generation', 'QPV list (its year: 2015 or 2024)'),
        ('mart.qpv_indicator_evolution', 'code_qp', 'QPV code (ref.qpv)'),
        ('mart.qpv_indicator_evolution', 'generation', 'QPV list (its year: 2015 or 2024)')
    ) AS v(rel, col, txt)
    LOOP
        IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(c.rel) AND attname = c.col
                   AND NOT attisdropped) THEN
            EXECUTE format('COMMENT ON COLUMN %s.%I IS %L', c.rel, c.col, c.txt);
        END IF;
    END LOOP;
END $$;

-- partitions made here (a list's QPV, before any load) carry their parent's comments
DO $$
DECLARE r record;
BEGIN
    FOR r IN
        SELECT c.oid AS child, i.inhparent AS parent, n.nspname, c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('ref', 'mart', 'meta')
    LOOP
        IF obj_description(r.child, 'pg_class') IS NULL AND obj_description(r.parent, 'pg_class') IS NOT NULL THEN
            EXECUTE format('COMMENT ON TABLE %I.%I IS %L', r.nspname, r.relname,
                           obj_description(r.parent, 'pg_class') || ' — this partition: ' || r.relname);
        END IF;
        EXECUTE (SELECT coalesce(string_agg(format('COMMENT ON COLUMN %I.%I.%I IS %L', r.nspname, r.relname,
                                                   a.attname, col_description(r.parent, pa.attnum)), '; '), 'SELECT 1')
                 FROM pg_attribute a JOIN pg_attribute pa ON pa.attrelid = r.parent AND pa.attname = a.attname
                 WHERE a.attrelid = r.child AND a.attnum > 0 AND NOT a.attisdropped
                   AND col_description(r.child, a.attnum) IS NULL AND col_description(r.parent, pa.attnum) IS NOT NULL);
    END LOOP;
END $$;
