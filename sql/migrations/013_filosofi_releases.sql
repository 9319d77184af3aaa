-- Filosofi by IRIS becomes a series (entry filosofi_iris): each release kept as a partition of
-- src.filosofi_iris, like the SIG Ville files (010). A table loaded before becomes the partition of the
-- release it was loaded as (its last run's millésime, 2019 for the bundled sample); lib_iris, no longer
-- loaded (the 2021 file's LIBIRIS is not confirmed), is dropped.
SET LOCAL ROLE qpvhub_loader;

DO $$
DECLARE
    rel smallint;
BEGIN
    IF to_regclass('src.filosofi_iris') IS NOT NULL
       AND (SELECT relkind FROM pg_class WHERE oid = to_regclass('src.filosofi_iris')) = 'r' THEN
        SELECT coalesce((SELECT r.millesime::smallint FROM meta.source_runs r
                         WHERE r.source_id = 'filosofi_iris' AND r.status = 'success' AND r.millesime ~ '^[0-9]{4}$'
                         ORDER BY r.finished_at DESC LIMIT 1), 2019) INTO rel;
        EXECUTE format('ALTER TABLE src.filosofi_iris ADD COLUMN release smallint NOT NULL DEFAULT %s', rel);
        ALTER TABLE src.filosofi_iris ALTER COLUMN release DROP DEFAULT;
        ALTER TABLE src.filosofi_iris DROP COLUMN IF EXISTS lib_iris CASCADE;
        ALTER TABLE src.filosofi_iris DROP CONSTRAINT IF EXISTS filosofi_iris_pkey;
        EXECUTE format('ALTER TABLE src.filosofi_iris RENAME TO %I', 'filosofi_iris_' || rel);
        EXECUTE format('CREATE TABLE src.filosofi_iris (LIKE src.%I) PARTITION BY LIST (release)', 'filosofi_iris_' || rel);
        EXECUTE format('ALTER TABLE src.filosofi_iris ATTACH PARTITION src.%I FOR VALUES IN (%s)', 'filosofi_iris_' || rel, rel);
        GRANT SELECT ON src.filosofi_iris TO qpvhub_analyst;
        UPDATE meta.source_runs SET part = rel::text WHERE source_id = 'filosofi_iris' AND status = 'success';
    END IF;
END $$;
