-- The profile table of the original design, plus what consistency needs:
-- `version` grows on every change (the cache compares it), `updated_at` says when.
CREATE SCHEMA IF NOT EXISTS devops_api;

CREATE TABLE devops_api.users (
    id          SERIAL PRIMARY KEY,
    full_name   VARCHAR(100) NOT NULL,
    gender      CHAR(1)      NOT NULL CHECK (gender IN ('M', 'F')),
    birth_date  DATE         NOT NULL,
    department  VARCHAR(100) NOT NULL,
    email       VARCHAR(100) NOT NULL,
    username    VARCHAR(100) NOT NULL,
    version     BIGINT       NOT NULL DEFAULT 1,
    updated_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT users_username_key UNIQUE (username),
    CONSTRAINT users_email_key UNIQUE (email)
);

-- Every UPDATE bumps the version and the timestamp, whoever issues it (the API or a psql session),
-- so a cached copy can always tell whether it is older than the row.
CREATE FUNCTION devops_api.users_bump_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER users_bump_version
    BEFORE UPDATE ON devops_api.users
    FOR EACH ROW EXECUTE FUNCTION devops_api.users_bump_version();
