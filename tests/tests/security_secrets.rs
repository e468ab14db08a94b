//! Secrets never leak: the origin is started with known secret values (two origin tokens, the
//! PostgreSQL password, a Redis password Redis refuses), driven through good and bad tokens, Redis
//! failures, PostgreSQL going away and back, and the secrets are looked for in everything it said: its
//! log (at `debug`), every response's status line, headers and body, and the command line's errors and
//! `--help`. (docs/security.md)

use std::process::{Command, Output};
use std::time::Duration;

use aside_tests::harness::{
    Origin, RedisUser, Stack, bin_dir, free_port, generate_secret, http_client, wait_until,
};

/// Everything the test saw, to search for secrets at the end.
#[derive(Default)]
struct Transcript(String);

impl Transcript {
    async fn send(&mut self, request: reqwest::RequestBuilder) -> u16 {
        let response = request.send().await.expect("the origin answers");
        let status = response.status().as_u16();
        self.0.push_str(&format!("{status}\n"));
        for (name, value) in response.headers() {
            self.0.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        self.0.push_str(&response.text().await.unwrap_or_default());
        self.0.push('\n');
        status
    }

    fn output(&mut self, what: &str, output: &Output) {
        self.0.push_str(&format!(
            "--- {what}\n{}\n{}\n",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
}

fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "a secret ({}...) appears in {what}:\n{text}",
            &secret[..6]
        );
    }
}

fn origin_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(bin_dir().join("aside-origin"));
    command.args(args).env("RUST_LOG", "debug");
    for var in [
        "ASIDE_DATABASE_URL",
        "ASIDE_REDIS_URL",
        "ASIDE_ORIGIN_TOKENS",
        "ASIDE_APP_ROLE",
    ] {
        command.env_remove(var);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run aside-origin")
}

#[tokio::test]
async fn no_secret_reaches_logs_responses_or_the_command_line() {
    let mut stack = Stack::dedicated().await.unwrap();
    let env = stack.env().await.unwrap();
    env.seed(10).await.unwrap();

    let token_a = format!("token-a-{}", generate_secret());
    let token_b = format!("token-b-{}", generate_secret());
    let wrong_redis_password = format!("redis-pw-{}", generate_secret());
    let app_password = stack.postgres.app_password().to_string();
    let owner_password = stack.postgres.owner_password().to_string();
    let admin_password = stack.postgres.password().to_string();
    let redis_origin_password = stack.redis.password(RedisUser::Origin).to_string();
    let secrets = [
        token_a.as_str(),
        token_b.as_str(),
        wrong_redis_password.as_str(),
        app_password.as_str(),
        owner_password.as_str(),
        admin_password.as_str(),
        redis_origin_password.as_str(),
    ];

    let mut options = env.origin_options(&stack).env("RUST_LOG", "debug");
    options.tokens = vec![token_a.clone(), token_b.clone()];
    options.redis_url = format!(
        "redis://origin:{wrong_redis_password}@127.0.0.1:{}/{}",
        stack.redis.port, env.redis_db
    );
    let origin = Origin::start(options).await.unwrap();
    let http = http_client();
    let base = origin.url();
    let mut seen = Transcript::default();

    // Redis refuses the password: reads still work, from PostgreSQL, with either token.
    for token in [&token_a, &token_b] {
        let get = http.get(format!("{base}/users/1")).bearer_auth(token);
        assert_eq!(seen.send(get).await, 200);
    }
    // Wrong, truncated, extended and missing tokens.
    for presented in [
        "wrong-token-0123456789".to_string(),
        token_a[..token_a.len() - 1].to_string(),
        format!("{token_a}x"),
        token_b.to_uppercase(),
    ] {
        let get = http.get(format!("{base}/users/1")).bearer_auth(presented);
        assert_eq!(seen.send(get).await, 401);
    }
    assert_eq!(seen.send(http.get(format!("{base}/users/1"))).await, 401);
    let basic = http
        .get(format!("{base}/users/1"))
        .basic_auth("edge", Some(&token_a));
    assert_eq!(seen.send(basic).await, 401);
    // Errors of every kind, with a good token.
    let bad_body = http
        .post(format!("{base}/users"))
        .bearer_auth(&token_a)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"full_name":"{token_b}","password":"{token_a}"}}"#
        ));
    assert_eq!(seen.send(bad_body).await, 400);
    let write = http
        .patch(format!("{base}/users/3"))
        .bearer_auth(&token_a)
        .header("content-type", "application/json")
        .body(r#"{"department":"Security"}"#);
    assert_eq!(
        seen.send(write).await,
        200,
        "writes work while Redis refuses us"
    );
    assert_eq!(seen.send(http.get(format!("{base}/readyz"))).await, 200);
    assert_eq!(seen.send(http.get(format!("{base}/metrics"))).await, 200);

    // PostgreSQL goes away: 503s, and change capture and the pool fail to reconnect for a while.
    stack.postgres.stop();
    for id in [4, 5] {
        let get = http.get(format!("{base}/users/{id}")).bearer_auth(&token_b);
        assert_eq!(seen.send(get).await, 503);
    }
    let write = http
        .put(format!("{base}/users/4"))
        .bearer_auth(&token_a)
        .header("content-type", "application/json")
        .body(
            r#"{"full_name":"Ana Silva","gender":"F","birth_date":"1990-01-01",
                "department":"Sales","email":"ana@example.org","username":"ana.silva"}"#,
        );
    assert_eq!(seen.send(write).await, 503);
    assert_eq!(seen.send(http.get(format!("{base}/readyz"))).await, 503);
    let reconnect_failed = wait_until(Duration::from_secs(10), || async {
        origin.log().contains("change capture interrupted")
    })
    .await;
    assert!(reconnect_failed, "{}", origin.log());

    // The command line while PostgreSQL is down, and with bad settings.
    let owner_url = env.database_url.clone();
    let app_url = env.app_database_url.clone();
    let redis_url = format!("redis://origin:{wrong_redis_password}@127.0.0.1:1/0");
    let tokens = format!("{token_a},{token_b}");
    let out = origin_cli(
        &["migrate", "--app-role", "aside_app"],
        &[("ASIDE_DATABASE_URL", &owner_url)],
    );
    assert!(!out.status.success());
    seen.output("migrate, PostgreSQL down", &out);
    let out = origin_cli(
        &["seed", "--count", "5"],
        &[("ASIDE_DATABASE_URL", &app_url)],
    );
    assert!(!out.status.success());
    seen.output("seed, PostgreSQL down", &out);
    let bad_url = format!("postgres://aside_app:{app_password}@[::1:5432/x");
    let listen = format!("127.0.0.1:{}", free_port());
    let bad_redis_url = format!("redis://o:{token_b}@h:notaport");
    for (what, env) in [
        (
            "serve, unparsable database URL",
            vec![
                ("ASIDE_DATABASE_URL", bad_url.as_str()),
                ("ASIDE_REDIS_URL", redis_url.as_str()),
                ("ASIDE_LISTEN", listen.as_str()),
            ],
        ),
        (
            "serve, unparsable Redis URL",
            vec![
                ("ASIDE_DATABASE_URL", app_url.as_str()),
                ("ASIDE_REDIS_URL", bad_redis_url.as_str()),
                ("ASIDE_LISTEN", listen.as_str()),
            ],
        ),
        (
            "serve, a token too short",
            vec![
                ("ASIDE_DATABASE_URL", app_url.as_str()),
                ("ASIDE_REDIS_URL", redis_url.as_str()),
                ("ASIDE_ORIGIN_TOKENS", &token_a[..12]),
                ("ASIDE_LISTEN", listen.as_str()),
            ],
        ),
        (
            "serve, a bad listen address",
            vec![
                ("ASIDE_DATABASE_URL", app_url.as_str()),
                ("ASIDE_REDIS_URL", redis_url.as_str()),
                ("ASIDE_ORIGIN_TOKENS", tokens.as_str()),
                ("ASIDE_LISTEN", "not-an-address"),
            ],
        ),
    ] {
        let out = origin_cli(&["serve"], &env);
        assert!(!out.status.success(), "{what}");
        seen.output(what, &out);
    }
    let all_set = [
        ("ASIDE_DATABASE_URL", app_url.as_str()),
        ("ASIDE_REDIS_URL", redis_url.as_str()),
        ("ASIDE_ORIGIN_TOKENS", tokens.as_str()),
    ];
    for args in [
        &["serve", "--help"][..],
        &["migrate", "--help"],
        &["seed", "--help"],
        &["serve", "--no-such-flag"],
        &["serve", "--token"],
    ] {
        let out = origin_cli(args, &all_set);
        seen.output(&args.join(" "), &out);
    }
    // Secrets given as flags (which is discouraged) are not echoed by a usage error either.
    let out = origin_cli(
        &[
            "serve",
            "--token",
            &token_a,
            "--database-url",
            &app_url,
            "--bogus",
        ],
        &[],
    );
    assert!(!out.status.success());
    seen.output("serve with secret flags and a bad one", &out);

    // PostgreSQL back: a wrong password is refused without echoing it.
    stack.postgres.restart().await.unwrap();
    let wrong_url = owner_url.replace(&owner_password, &token_b);
    let out = origin_cli(&["migrate"], &[("ASIDE_DATABASE_URL", &wrong_url)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password authentication failed"),
        "{out:?}"
    );
    seen.output("migrate, wrong password", &out);
    let recovered = wait_until(Duration::from_secs(15), || {
        let get = http.get(format!("{base}/users/6")).bearer_auth(&token_a);
        async move { get.send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    assert!(recovered, "{}", origin.log());

    let log = origin.log();
    // The log did record the failures (so the search below looked at the right things).
    assert!(log.contains("WRONGPASS") || log.contains("Redis"), "{log}");
    assert!(log.contains("PostgreSQL"), "{log}");
    assert_no_secret("the origin's log", &log, &secrets);
    assert_no_secret("the responses and the command line", &seen.0, &secrets);
    // The command-line transcript is not empty: it holds the errors that were looked at.
    assert!(
        seen.0.contains("cannot connect to PostgreSQL"),
        "{}",
        seen.0
    );
    assert!(seen.0.contains("[env: ASIDE_DATABASE_URL]"), "{}", seen.0);
}
