-- The OGC API's role is bounded in the database itself, whatever the server in front of it lets through:
-- a statement cannot run more than 5 s (a filter built to sleep held requests 24 s and stalled every other
-- client), an idle transaction is closed, the role has at most 20 connections. And it does not see the
-- activity statistics of the database (pg_stat_user_tables gave every table's row count in mart, src and
-- meta to anyone who could run a function): those views are readable by the pipeline and the analysts only.
ALTER ROLE qpvhub_api SET statement_timeout = '5s';
ALTER ROLE qpvhub_api SET idle_in_transaction_session_timeout = '10s';
ALTER ROLE qpvhub_api SET lock_timeout = '2s';
ALTER ROLE qpvhub_api CONNECTION LIMIT 20;

DO $$
DECLARE
    v text;
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE WARNING 'qpvhub: not a superuser, the statistics views stay readable by every role: run '
                      'sql/migrations/015_api_bounds.sql''s REVOKE as a superuser to hide them from qpvhub_api';
        RETURN;
    END IF;
    FOREACH v IN ARRAY ARRAY['pg_stat_all_tables', 'pg_stat_user_tables', 'pg_stat_sys_tables',
                             'pg_stat_xact_all_tables', 'pg_stat_xact_user_tables', 'pg_stat_xact_sys_tables',
                             'pg_statio_all_tables', 'pg_statio_user_tables', 'pg_statio_sys_tables',
                             'pg_stat_all_indexes', 'pg_stat_user_indexes', 'pg_stat_sys_indexes',
                             'pg_statio_all_indexes', 'pg_statio_user_indexes', 'pg_statio_sys_indexes',
                             'pg_statio_all_sequences', 'pg_statio_user_sequences', 'pg_stat_user_functions',
                             'pg_stat_xact_user_functions', 'pg_stat_database']
    LOOP
        EXECUTE format('REVOKE SELECT ON pg_catalog.%I FROM PUBLIC', v);
        EXECUTE format('GRANT SELECT ON pg_catalog.%I TO qpvhub_loader, qpvhub_analyst', v);
    END LOOP;
END
$$;
