-- The OGC API's own layer: schema `pub` holds published-grade tables only (the extracts' rows, statistical
-- secrecy applied, written by each publication) and views of public point layers; role `qpvhub_api`, the
-- API server's login, reads `pub` and nothing else (not ref, src, mart, meta, staging).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'qpvhub_api') THEN
        CREATE ROLE qpvhub_api LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
    END IF;
    -- the server (tipg) creates its catalogue functions in pg_temp: TEMPORARY, never CREATE
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO qpvhub_api', current_database());
END
$$;
-- not read-only by default: tipg creates its functions in pg_temp; it has no privilege to write anything else
COMMENT ON ROLE qpvhub_api IS 'qpvhub: the OGC API server (tipg): reads the published-grade schema pub only';

CREATE SCHEMA IF NOT EXISTS pub AUTHORIZATION qpvhub_loader;
COMMENT ON SCHEMA pub IS 'qpvhub: published-grade layers (secrecy applied), served by the OGC API; rewritten by each publication';
GRANT USAGE ON SCHEMA pub TO qpvhub_api, qpvhub_analyst;
ALTER DEFAULT PRIVILEGES FOR ROLE qpvhub_loader IN SCHEMA pub GRANT SELECT ON TABLES TO qpvhub_api, qpvhub_analyst;
