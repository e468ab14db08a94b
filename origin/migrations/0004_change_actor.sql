-- Who made each change (docs/security.md, "Audit"): the outbox records an actor with every change.
--
-- The origin names the actor of an API write in the transaction-local setting `aside.actor` (set in the
-- write's own statement, so it can never leak to the next statement on a pooled connection): the
-- edge's verified client (`x-aside-caller`, the token's subject), or `origin-token` for a direct caller
-- of the origin. A change made any other way (psql, a bulk job) records `db:<the PostgreSQL login>`.
-- The service's role still may not write the outbox: the trigger functions run as the owner.
ALTER TABLE devops_api.user_changes ADD COLUMN actor TEXT;

CREATE FUNCTION devops_api.current_actor() RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(NULLIF(current_setting('aside.actor', true), ''), 'db:' || session_user)
$$;

-- As in 0002, plus the actor. (CREATE OR REPLACE keeps owner and grants but not SECURITY DEFINER and
-- the search_path of 0003, so they are given again.)
CREATE OR REPLACE FUNCTION devops_api.users_record_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    recorded BIGINT := 0;
    n BIGINT;
    who TEXT := devops_api.current_actor();
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO devops_api.user_changes (user_id, op, version, actor)
            SELECT id, 'I', version, who FROM new_rows ORDER BY id;
        GET DIAGNOSTICS recorded = ROW_COUNT;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO devops_api.user_changes (user_id, op, version, actor)
            SELECT id, 'U', version, who FROM new_rows ORDER BY id;
        GET DIAGNOSTICS recorded = ROW_COUNT;
        -- An UPDATE that changes a primary key removes the old id.
        INSERT INTO devops_api.user_changes (user_id, op, version, actor)
            SELECT o.id, 'D', o.version, who FROM old_rows o
            WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.id = o.id)
            ORDER BY o.id;
        GET DIAGNOSTICS n = ROW_COUNT;
        recorded := recorded + n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO devops_api.user_changes (user_id, op, version, actor)
            SELECT id, 'D', version, who FROM old_rows ORDER BY id;
        GET DIAGNOSTICS recorded = ROW_COUNT;
    END IF;
    IF recorded > 0 THEN
        PERFORM pg_notify('aside_user_changes', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION devops_api.users_record_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO devops_api.user_changes (user_id, op, version, actor)
        SELECT id, 'D', version, devops_api.current_actor() FROM devops_api.users ORDER BY id;
    IF FOUND THEN
        PERFORM pg_notify('aside_user_changes', '');
    END IF;
    RETURN NULL;
END;
$$;
