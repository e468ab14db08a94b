//! PostgreSQL least privilege: the owner role migrates and seeds; the application role the origin serves
//! as can read and write `devops_api.users` (and what change capture needs), and nothing else. Logins
//! need a password over TCP; there is no trust and no Unix-socket login. (docs/security.md)

use std::time::Duration;

use aside_tests::harness::{Stack, TestEnv, wait_until};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn app(env: &TestEnv) -> Client {
    connect(&env.app_database_url)
        .await
        .expect("app role logs in")
}

/// Runs `sql` and expects PostgreSQL to refuse it for lack of privilege.
async fn refused(client: &Client, sql: &str) {
    let err = client
        .batch_execute(sql)
        .await
        .expect_err(&format!("the app role could run: {sql}"));
    assert_eq!(
        err.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{sql}: {err:?}"
    );
}

fn run_origin(args: &[&str], database_url: &str) -> std::process::Output {
    std::process::Command::new(aside_tests::harness::bin_dir().join("aside-origin"))
        .args(args)
        .env("ASIDE_DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run aside-origin")
}

#[tokio::test]
async fn the_app_role_can_do_the_four_statements_on_users_and_the_triggers_still_record_them() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(5).await.unwrap();
    let db = app(&env).await;

    let row = db
        .query_one(
            "INSERT INTO devops_api.users (full_name, gender, birth_date, department, email, username) \
             VALUES ('Rui Costa', 'M', '1990-03-04', 'Sales', 'rui@example.org', 'rui.costa') \
             RETURNING id, version",
            &[],
        )
        .await
        .unwrap();
    let (id, version): (i32, i64) = (row.get(0), row.get(1));
    assert_eq!(version, 1);
    let n = db
        .query("SELECT * FROM devops_api.users", &[])
        .await
        .unwrap()
        .len();
    assert_eq!(n, 6);
    let version: i64 = db
        .query_one(
            "UPDATE devops_api.users SET department = 'DevOps' WHERE id = $1 RETURNING version",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 2, "the version trigger runs for the app role");
    assert_eq!(
        db.execute("DELETE FROM devops_api.users WHERE id = $1", &[&id])
            .await
            .unwrap(),
        1
    );

    // The outbox triggers (run as the owner) recorded all three, though the app role cannot write it.
    let owner = connect(&env.database_url).await.unwrap();
    let ops: Vec<String> = owner
        .query(
            "SELECT op FROM devops_api.user_changes WHERE user_id = $1 ORDER BY id",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ops, ["I", "U", "D"]);

    // What change capture does, as the app role: read and prune the outbox, move the watermark, lock.
    db.batch_execute(
        "SELECT * FROM devops_api.user_changes;
         DELETE FROM devops_api.user_changes WHERE id < 0;
         UPDATE devops_api.change_watermark SET last_applied = last_applied WHERE consumer = 'redis';
         SELECT pg_try_advisory_lock(1), pg_advisory_unlock(1);
         LISTEN aside_user_changes;
         SELECT pg_current_snapshot();",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_app_role_cannot_change_the_schema_or_read_beyond_its_grants() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(3).await.unwrap();
    let owner = connect(&env.database_url).await.unwrap();
    owner
        .batch_execute(
            "CREATE TABLE devops_api.not_granted (secret text);
             INSERT INTO devops_api.not_granted VALUES ('owner only');",
        )
        .await
        .unwrap();
    let db = app(&env).await;

    for sql in [
        "DROP TABLE devops_api.users",
        "ALTER TABLE devops_api.users ADD COLUMN is_admin boolean",
        "ALTER TABLE devops_api.users DISABLE TRIGGER ALL",
        "TRUNCATE devops_api.users",
        "CREATE INDEX users_x ON devops_api.users (department)",
        "CREATE TABLE devops_api.mine (id int)",
        "CREATE TABLE public.mine (id int)",
        "CREATE TEMPORARY TABLE mine (id int)",
        "CREATE SCHEMA mine",
        "CREATE FUNCTION devops_api.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "DROP FUNCTION devops_api.users_record_changes()",
        "SELECT * FROM devops_api.not_granted",
        "SELECT * FROM devops_api.schema_migrations",
        "SELECT * FROM pg_authid",
        "CREATE ROLE intruder LOGIN PASSWORD 'x'",
        "ALTER ROLE aside_owner PASSWORD 'x'",
        "CREATE DATABASE mine",
        // The outbox is the triggers' to write, and ids and versions are the database's to set.
        "INSERT INTO devops_api.user_changes (user_id, op, version) VALUES (1, 'D', 99)",
        "UPDATE devops_api.user_changes SET version = 99",
        "UPDATE devops_api.users SET version = 99 WHERE id = 1",
        "UPDATE devops_api.users SET id = 100 WHERE id = 1",
        "INSERT INTO devops_api.users (id, full_name, gender, birth_date, department, email, username) \
         VALUES (50, 'A B', 'F', '1990-01-01', 'Sales', 'a@b.example', 'ab')",
        "DELETE FROM devops_api.change_watermark",
        "INSERT INTO devops_api.change_watermark (consumer, last_applied) VALUES ('x', 0)",
    ] {
        refused(&db, sql).await;
    }
    // Nothing changed.
    let n: i64 = owner
        .query_one("SELECT count(*) FROM devops_api.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
}

#[tokio::test]
async fn logins_need_the_right_password_over_tcp_and_the_socket_takes_none() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    let port = stack.postgres.port;
    let db = &env.database;

    let no_password = format!("postgres://aside_app@127.0.0.1:{port}/{db}");
    assert!(connect(&no_password).await.is_err());
    let wrong = format!("postgres://aside_app:not-the-password@127.0.0.1:{port}/{db}");
    let err = connect(&wrong).await.expect_err("a wrong password logs in");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err:?}");
    // The superuser too, through the Unix socket, even with its right password: no rule admits it.
    let socket = format!(
        "host={} port={port} user=aside_admin password={} dbname=postgres",
        stack.postgres.dir.display(),
        stack.postgres.password()
    );
    let err = connect(&socket).await.expect_err("a socket login works");
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{err:?}"
    );
    // And the right password over TCP works.
    app(&env).await.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn migrate_converges_the_grants_and_refuses_an_unsafe_app_role() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    let admin = stack.postgres.connect(&env.database).await.unwrap();
    // A privilege granted by hand is gone after the next migrate.
    admin
        .batch_execute("GRANT TRUNCATE ON devops_api.users TO aside_app")
        .await
        .unwrap();
    let out = run_origin(&["migrate", "--app-role", "aside_app"], &env.database_url);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("granted"));
    refused(&app(&env).await, "TRUNCATE devops_api.users").await;

    for (role, why) in [
        ("aside_admin", "SUPERUSER"),
        ("aside_owner", "the role running migrate"),
        ("nobody_here", "does not exist"),
        ("Robert'); DROP TABLE users; --", "lower-case"),
    ] {
        let out = run_origin(&["migrate", "--app-role", role], &env.database_url);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{role}: {stderr}");
        assert!(stderr.contains(why), "{role}: {stderr}");
    }
    // A refused migrate changed nothing: the app role still works.
    app(&env)
        .await
        .simple_query("SELECT count(*) FROM devops_api.users")
        .await
        .unwrap();
}

#[tokio::test]
async fn the_origin_serves_and_captures_changes_as_the_app_role() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    env.seed(5).await.unwrap();
    let origin = env.origin(stack).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/users/2", origin.url());
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    let patched = http
        .patch(&url)
        .header("content-type", "application/json")
        .body(r#"{"department":"Security"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);

    // A change made straight in PostgreSQL (by the owner) reaches Redis through change capture, which
    // runs as the app role.
    let owner = connect(&env.database_url).await.unwrap();
    owner
        .execute(
            "UPDATE devops_api.users SET department = 'Marketing' WHERE id = 2",
            &[],
        )
        .await
        .unwrap();
    let seen = wait_until(Duration::from_secs(10), || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let response = http.get(&url).send().await.unwrap();
            let hit = response
                .headers()
                .get("x-cache")
                .is_some_and(|v| v == "HIT");
            let body: serde_json::Value = response.json().await.unwrap();
            hit && body["department"] == "Marketing"
        }
    })
    .await;
    assert!(
        seen,
        "change capture did not apply the change:\n{}",
        origin.log()
    );
    let log = origin.log();
    assert!(!log.contains("permission denied"), "{log}");
    assert!(!log.contains("can change the schema"), "{log}");
}

#[tokio::test]
async fn the_origin_warns_when_it_serves_as_the_owner() {
    let stack = Stack::shared().await;
    let env = stack.env().await.unwrap();
    let mut options = env.origin_options(stack);
    options.database_url = env.database_url.clone();
    let origin = aside_tests::harness::Origin::start(options).await.unwrap();
    let warned = wait_until(Duration::from_secs(10), || async {
        origin.log().contains("can change the schema")
    })
    .await;
    assert!(warned, "{}", origin.log());
}

#[tokio::test]
async fn a_database_the_superuser_made_is_adopted_by_the_owner_as_cargo_xtask_up_does() {
    // Older `cargo xtask up` created and migrated its database as the cluster superuser.
    let stack = Stack::shared().await;
    let name = "legacy_superuser_db";
    stack
        .postgres
        .connect("postgres")
        .await
        .unwrap()
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let superuser_url = stack.postgres.url(name);
    for args in [&["migrate"][..], &["seed", "--count", "3"]] {
        let out = run_origin(args, &superuser_url);
        assert!(out.status.success(), "{out:?}");
    }
    let admin = stack.postgres.connect(name).await.unwrap();
    admin
        .batch_execute(&xtask::local::adopt_database_sql(name))
        .await
        .unwrap();
    let not_owned: i64 = admin
        .query_one(
            "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = 'devops_api' AND c.relowner <> 'aside_owner'::regrole) \
                  + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                     WHERE n.nspname = 'devops_api' AND p.proowner <> 'aside_owner'::regrole)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        not_owned, 0,
        "everything in devops_api belongs to the owner"
    );

    let out = run_origin(
        &["migrate", "--app-role", "aside_app"],
        &stack.postgres.owner_url(name),
    );
    assert!(out.status.success(), "{out:?}");
    let db = connect(&stack.postgres.app_url(name)).await.unwrap();
    db.execute(
        "UPDATE devops_api.users SET department = 'DevOps' WHERE id = 1",
        &[],
    )
    .await
    .unwrap();
    refused(&db, "TRUNCATE devops_api.users").await;
    // The adopted triggers record the change, running as the owner now.
    let recorded: i64 = admin
        .query_one(
            "SELECT count(*) FROM devops_api.user_changes WHERE user_id = 1 AND op = 'U'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, 1);
}

#[tokio::test]
async fn cargo_xtask_up_provisioning_is_idempotent_and_gives_least_privilege() {
    let stack = Stack::shared().await;
    let pg_bin = xtask::local::pg_bin_dir().expect("the PostgreSQL binaries");
    let provisioning = xtask::local::Provisioning {
        pg_bin: &pg_bin,
        port: stack.postgres.port,
        superuser: "aside_admin",
        superuser_password: stack.postgres.password(),
        // The harness's own passwords: setting them again changes nothing for the other tests.
        owner_password: stack.postgres.owner_password(),
        app_password: stack.postgres.app_password(),
    };
    let name = "provisioned_like_up";
    // Twice: the second run finds the roles and the database and changes nothing.
    for _ in 0..2 {
        xtask::local::provision_postgres(&provisioning, name).unwrap();
        let out = run_origin(
            &["migrate", "--app-role", "aside_app"],
            &stack.postgres.owner_url(name),
        );
        assert!(out.status.success(), "{out:?}");
    }
    let admin = stack.postgres.connect(name).await.unwrap();
    let (owner, public_connect): (String, bool) = {
        let row = admin
            .query_one(
                "SELECT pg_get_userbyid(datdba)::text, has_database_privilege('public', datname, 'CONNECT') \
                 FROM pg_database WHERE datname = current_database()",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((owner.as_str(), public_connect), ("aside_owner", false));
    let db = connect(&stack.postgres.app_url(name)).await.unwrap();
    db.simple_query("SELECT count(*) FROM devops_api.users")
        .await
        .unwrap();
    refused(&db, "CREATE TABLE devops_api.mine (id int)").await;
    assert!(
        xtask::local::provision_postgres(&provisioning, "Bad-Name").is_err(),
        "database names are checked"
    );
}
