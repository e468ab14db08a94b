-- Least privilege (docs/security.md): the service's role may change devops_api.users, but it may not
-- write the outbox itself. The trigger functions that record changes therefore run as the schema's
-- owner (SECURITY DEFINER) instead of as whoever changed the row, with a fixed search_path so that no
-- object in a caller's schema or temporary schema can stand in for the ones they use.
ALTER FUNCTION devops_api.users_continue_version()
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION devops_api.users_record_changes()
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION devops_api.users_record_truncate()
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
