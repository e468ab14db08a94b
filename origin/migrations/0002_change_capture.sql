-- Change capture: every change to devops_api.users, whoever makes it (the API, a psql session, a bulk
-- job), is recorded in an outbox in the same transaction, and the origin is woken with NOTIFY to apply it
-- to Redis. The outbox is durable, so changes made while no origin (or no Redis) was running are applied
-- when one is back; the watermark says how far the outbox has been applied.

-- One row per changed user per statement. `version` is the row's version after an insert or update and
-- its last version before a delete. `at` is the changing transaction's start time.
CREATE TABLE devops_api.user_changes (
    id       BIGSERIAL   PRIMARY KEY,
    user_id  INTEGER     NOT NULL,
    op       CHAR(1)     NOT NULL CHECK (op IN ('I', 'U', 'D')),
    version  BIGINT      NOT NULL,
    at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- For the version of a re-created id (below) and for pruning by age.
CREATE INDEX user_changes_user_id_version ON devops_api.user_changes (user_id, version);
CREATE INDEX user_changes_at ON devops_api.user_changes (at);

-- How far the outbox has been applied, per consumer (one: 'redis'). Only the origin holding the
-- change-capture advisory lock moves it, after the changes up to it are in Redis.
CREATE TABLE devops_api.change_watermark (
    consumer      TEXT        PRIMARY KEY,
    last_applied  BIGINT      NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

INSERT INTO devops_api.change_watermark (consumer, last_applied) VALUES ('redis', 0);

-- A row inserted with the id of a deleted row (an explicit id in psql) continues that id's versions
-- instead of starting again at 1, so that the new row wins over the deleted row's tombstone in Redis.
-- Ids the outbox has never seen (every SERIAL id) keep version 1.
CREATE FUNCTION devops_api.users_continue_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    previous BIGINT;
BEGIN
    SELECT max(version) INTO previous FROM devops_api.user_changes WHERE user_id = NEW.id;
    IF previous IS NOT NULL AND NEW.version <= previous THEN
        NEW.version := previous + 1;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER users_continue_version
    BEFORE INSERT ON devops_api.users
    FOR EACH ROW EXECUTE FUNCTION devops_api.users_continue_version();

-- Records a statement's changes in the outbox (set-based, one INSERT per statement however many rows it
-- touched) and wakes the origin. NOTIFY is delivered at commit and only if the transaction commits.
CREATE FUNCTION devops_api.users_record_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    recorded BIGINT := 0;
    n BIGINT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO devops_api.user_changes (user_id, op, version)
            SELECT id, 'I', version FROM new_rows ORDER BY id;
        GET DIAGNOSTICS recorded = ROW_COUNT;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO devops_api.user_changes (user_id, op, version)
            SELECT id, 'U', version FROM new_rows ORDER BY id;
        GET DIAGNOSTICS recorded = ROW_COUNT;
        -- An UPDATE that changes a primary key removes the old id.
        INSERT INTO devops_api.user_changes (user_id, op, version)
            SELECT o.id, 'D', o.version FROM old_rows o
            WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.id = o.id)
            ORDER BY o.id;
        GET DIAGNOSTICS n = ROW_COUNT;
        recorded := recorded + n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO devops_api.user_changes (user_id, op, version)
            SELECT id, 'D', version FROM old_rows ORDER BY id;
        GET DIAGNOSTICS recorded = ROW_COUNT;
    END IF;
    IF recorded > 0 THEN
        PERFORM pg_notify('aside_user_changes', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_record_inserts
    AFTER INSERT ON devops_api.users
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION devops_api.users_record_changes();

CREATE TRIGGER users_record_updates
    AFTER UPDATE ON devops_api.users
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION devops_api.users_record_changes();

CREATE TRIGGER users_record_deletes
    AFTER DELETE ON devops_api.users
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION devops_api.users_record_changes();

-- TRUNCATE fires no row triggers: record every row it removes as a delete, before it goes.
CREATE FUNCTION devops_api.users_record_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO devops_api.user_changes (user_id, op, version)
        SELECT id, 'D', version FROM devops_api.users ORDER BY id;
    IF FOUND THEN
        PERFORM pg_notify('aside_user_changes', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_record_truncate
    BEFORE TRUNCATE ON devops_api.users
    FOR EACH STATEMENT EXECUTE FUNCTION devops_api.users_record_truncate();
