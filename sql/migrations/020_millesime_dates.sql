-- What a value's date is, said as partners read it on the fiches: a GTFS feed's timetable period (and « expirés »
-- when it ended before the indicators were computed), else the millésime the catalogue declares, else that the
-- source states none — never the load date passed off as the data's (the fiche's sources give it as such).
SET LOCAL ROLE qpvhub_loader;

CREATE OR REPLACE FUNCTION meta.millesime_of(p_run_id text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN data_from IS NOT NULL AND data_until IS NOT NULL THEN
            'horaires du ' || to_char(data_from, 'DD/MM/YYYY') || ' au ' || to_char(data_until, 'DD/MM/YYYY')
            || CASE WHEN data_until < current_date THEN ', expirés' ELSE '' END
        WHEN millesime IS NOT NULL THEN millesime
        WHEN data_until IS NOT NULL THEN 'valables jusqu''au ' || to_char(data_until, 'DD/MM/YYYY')
            || CASE WHEN data_until < current_date THEN ', expirées' ELSE '' END
        ELSE 'non indiqué par la source'
    END
    FROM meta.source_runs WHERE run_id = p_run_id
$$;
COMMENT ON FUNCTION meta.millesime_of(text) IS 'What a source run''s data is dated by, in French for the fiches: a GTFS timetable''s period (« expirés » when past), the catalogue''s millésime, else « non indiqué par la source » (never the load date)';
