-- INSEE's statistics by quartier (« Données sur les quartiers »), every variable of every file, long: one row per
-- geographic unit, variable and value, with INSEE's status beside the value. One store for every dataset (a
-- partition each: population, revenus, defm…), each dataset kept per release (a partition of its own); loaded
-- through the archives' own dictionaries (qpvhub.ingest.readers.insee), so a variable a new release adds
-- needs no change here.
SET LOCAL ROLE qpvhub_loader;

CREATE TABLE src.insee_qpv (
    dataset       text,
    release       smallint,
    level         text,
    code_geo      text,
    lib_geo       text,
    variable      text,
    label         text,
    value         double precision,
    status        text,
    source_run_id text
) PARTITION BY LIST (dataset);
COMMENT ON TABLE src.insee_qpv IS 'INSEE, Données sur les quartiers (liste 2024 des QPV): every variable of every file, one row per unit, variable and release; a partition per dataset (src.insee_qpv_<dataset>), itself a partition per release';
COMMENT ON COLUMN src.insee_qpv.dataset IS 'Dataset: population, estimations, revenus, defm, caf, scolarisation, dnb, rpls, side…';
COMMENT ON COLUMN src.insee_qpv.release IS 'Release (millésime) of the dataset';
COMMENT ON COLUMN src.insee_qpv.level IS 'Geographic level of the row: qpv, commune, commune_hors_qpv (the commune outside its QPV), epci, ensemble_qpv, france';
COMMENT ON COLUMN src.insee_qpv.code_geo IS 'Code of the unit as INSEE gives it (CODGEO: a QPV code QN…, a commune code, an EPCI SIREN…)';
COMMENT ON COLUMN src.insee_qpv.lib_geo IS 'Name of the unit as INSEE gives it (LIBGEO)';
COMMENT ON COLUMN src.insee_qpv.variable IS 'INSEE''s variable code (its label in the label column, from the archive''s meta_ dictionary)';
COMMENT ON COLUMN src.insee_qpv.label IS 'Label of the variable in the archive''s dictionary';
COMMENT ON COLUMN src.insee_qpv.value IS 'Value; NULL whenever status says why (never 0 for a secret or missing value)';
COMMENT ON COLUMN src.insee_qpv.status IS 'NULL when the value is released; INSEE''s marker otherwise: s (statistical secrecy), ns (not significant), nd (not available), so (not applicable), blank (empty cell)';
COMMENT ON COLUMN src.insee_qpv.source_run_id IS 'meta.source_runs.run_id of the load';
GRANT SELECT ON src.insee_qpv TO qpvhub_analyst;

CREATE VIEW src.insee_qpv_labels AS
SELECT DISTINCT dataset, release, variable, label FROM src.insee_qpv;
COMMENT ON VIEW src.insee_qpv_labels IS 'Dictionary of src.insee_qpv: each variable of each release of each dataset, with its label (join on dataset, release, variable)';
COMMENT ON COLUMN src.insee_qpv_labels.dataset IS 'Dataset (src.insee_qpv.dataset)';
COMMENT ON COLUMN src.insee_qpv_labels.release IS 'Release (src.insee_qpv.release)';
COMMENT ON COLUMN src.insee_qpv_labels.variable IS 'INSEE''s variable code';
COMMENT ON COLUMN src.insee_qpv_labels.label IS 'Its label in the archive''s dictionary';
GRANT SELECT ON src.insee_qpv_labels TO qpvhub_analyst;

-- What the indicator families read: for each QPV of a list, the cells of a dataset's release at three scopes —
-- the QPV itself (level qpv), its main commune (level commune) and that commune outside its QPV (level
-- commune_hors_qpv) —, value and INSEE's status side by side. One join, written once.
CREATE FUNCTION src.insee_qpv_cells(p_dataset text, p_release integer, p_generation integer)
RETURNS TABLE (code_qp text, generation smallint, scope text, variable text, value double precision, status text,
               source_run_id text)
LANGUAGE sql STABLE AS $$
    SELECT q.code_qp, q.generation, s.scope, i.variable, i.value, i.status, i.source_run_id
    FROM ref.qpv q
    CROSS JOIN LATERAL (VALUES ('qpv', q.code_qp), ('commune', q.insee_com), ('commune_hors_qpv', q.insee_com))
        AS s (scope, code)
    JOIN src.insee_qpv i ON i.dataset = p_dataset AND i.release = p_release AND i.level = s.scope
                        AND i.code_geo = s.code
    WHERE q.generation = p_generation
$$;
COMMENT ON FUNCTION src.insee_qpv_cells(text, integer, integer) IS 'Cells of one release of one INSEE dataset for every QPV of a list: the QPV (scope qpv), its main commune (commune), the commune outside its QPV (commune_hors_qpv)';
GRANT EXECUTE ON FUNCTION src.insee_qpv_cells(text, integer, integer) TO qpvhub_analyst;

-- A value the source itself keeps secret (INSEE's s) is a row of the mart with no value and status 'secret':
-- published as « secret statistique », never as 0 and never as « non disponible ».
ALTER TABLE mart.qpv_indicator ADD COLUMN status text CHECK (status IN ('secret'));
COMMENT ON COLUMN mart.qpv_indicator.status IS 'secret: the source keeps the value secret (INSEE''s s); NULL when the value is given';

-- A deployment that loaded Filosofi by QPV of the 2024 list before this store (src.filosofi_qpv, one column per
-- variable) keeps its releases: each becomes the release's partition of src.insee_qpv_revenus, one row per
-- variable under INSEE's own code (DISP_<…>_A<yy>). The old load had turned every marker into NULL: those cells
-- get status 'nd' until the release is loaded again (`qpvhub ingest filosofi_qpv --force`), which restores
-- INSEE's own s / ns / nd.
DO $$
DECLARE
    rel smallint;
    leaf text;
BEGIN
    IF to_regclass('src.filosofi_qpv') IS NULL THEN
        RETURN;
    END IF;
    CREATE TABLE src.insee_qpv_revenus (LIKE src.insee_qpv) PARTITION BY LIST (release);
    ALTER TABLE src.insee_qpv ATTACH PARTITION src.insee_qpv_revenus FOR VALUES IN ('revenus');
    GRANT SELECT ON src.insee_qpv_revenus TO qpvhub_analyst;
    FOR rel IN SELECT DISTINCT release FROM src.filosofi_qpv ORDER BY 1 LOOP
        leaf := 'insee_qpv_revenus_' || rel;
        EXECUTE format('CREATE TABLE src.%I (LIKE src.insee_qpv)', leaf);
        EXECUTE format($q$
            INSERT INTO src.%I
            SELECT 'revenus', f.release, 'qpv', f.code_qp, NULL, v.variable, NULL, v.value,
                   CASE WHEN v.value IS NULL THEN 'nd' END, f.source_run_id
            FROM src.filosofi_qpv f
            CROSS JOIN LATERAL (VALUES
                ('DISP_MED_A' || right(f.release::text, 2), f.revenu_disponible_median),
                ('DISP_TP60_A' || right(f.release::text, 2), f.taux_pauvrete),
                ('DISP_PPSOC_A' || right(f.release::text, 2), f.part_prestations_sociales),
                ('DISP_D1_A' || right(f.release::text, 2), f.revenu_disponible_d1),
                ('DISP_D9_A' || right(f.release::text, 2), f.revenu_disponible_d9),
                ('DISP_RD_A' || right(f.release::text, 2), f.rapport_interdecile)) AS v (variable, value)
            WHERE f.release = %s$q$, leaf, rel);
        EXECUTE format('ALTER TABLE src.insee_qpv_revenus ATTACH PARTITION src.%I FOR VALUES IN (%s)', leaf, rel);
        EXECUTE format('GRANT SELECT ON src.%I TO qpvhub_analyst', leaf);
    END LOOP;
    DROP TABLE src.filosofi_qpv CASCADE;
END $$;
