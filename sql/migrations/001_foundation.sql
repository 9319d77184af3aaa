-- Foundation: PostGIS, the two roles and the five schemas (DESIGN.md §4).
-- Runs as the connecting (administrator) user; every later migration acts as qpvhub_loader.
CREATE EXTENSION IF NOT EXISTS postgis;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'qpvhub_loader') THEN
        CREATE ROLE qpvhub_loader NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'qpvhub_analyst') THEN
        CREATE ROLE qpvhub_analyst LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
    END IF;
END
$$;

-- The pipeline connects as an administrator or a login member of qpvhub_loader, then SET ROLE.
GRANT qpvhub_loader TO CURRENT_USER;
ALTER ROLE qpvhub_analyst SET default_transaction_read_only = on;
COMMENT ON ROLE qpvhub_loader IS 'qpvhub: owns and writes the meta, staging, ref, src and mart schemas';
COMMENT ON ROLE qpvhub_analyst IS 'qpvhub: read-only access to ref, src, mart and meta (psql, QGIS)';

-- meta may already exist (the migration runner creates it to record itself).
CREATE SCHEMA IF NOT EXISTS meta;
ALTER SCHEMA meta OWNER TO qpvhub_loader;
ALTER TABLE meta.schema_migrations OWNER TO qpvhub_loader;
CREATE SCHEMA IF NOT EXISTS staging AUTHORIZATION qpvhub_loader;
CREATE SCHEMA IF NOT EXISTS ref AUTHORIZATION qpvhub_loader;
CREATE SCHEMA IF NOT EXISTS src AUTHORIZATION qpvhub_loader;
CREATE SCHEMA IF NOT EXISTS mart AUTHORIZATION qpvhub_loader;
COMMENT ON SCHEMA meta IS 'qpvhub: runs, validations, publications, migrations';
COMMENT ON SCHEMA staging IS 'qpvhub: per-run loading tables, dropped after promotion (not for analysts)';
COMMENT ON SCHEMA ref IS 'qpvhub: reference geography (QPV of both generations, communes)';
COMMENT ON SCHEMA src IS 'qpvhub: one table per source, as last promoted';
COMMENT ON SCHEMA mart IS 'qpvhub: QPV-level indicators';

-- Analysts read ref, src, mart and meta; never staging; never write.
REVOKE ALL ON SCHEMA staging FROM PUBLIC;
GRANT USAGE ON SCHEMA meta, ref, src, mart TO qpvhub_analyst;
GRANT SELECT ON ALL TABLES IN SCHEMA meta, ref, src, mart TO qpvhub_analyst;
ALTER DEFAULT PRIVILEGES FOR ROLE qpvhub_loader IN SCHEMA meta, ref, src, mart
    GRANT SELECT ON TABLES TO qpvhub_analyst;

DO $$
BEGIN
    EXECUTE format('REVOKE CREATE, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO qpvhub_loader', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO qpvhub_analyst', current_database());
END
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
