//! The servers a test needs, shared by the test binary or dedicated to one test.

use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::OnceCell;

use super::origin::{Origin, OriginOptions, run_origin_command};
use super::postgres::{APP_ROLE, PostgresServer};
use super::redis_server::{RedisServer, RedisUser};

/// A Redis and a PostgreSQL server.
pub struct Stack {
    pub redis: RedisServer,
    pub postgres: PostgresServer,
}

static SHARED: OnceCell<Stack> = OnceCell::const_new();
static NEXT_ENV: AtomicU32 = AtomicU32::new(1);

impl Stack {
    /// The servers shared by every test of this test binary, started on first use.
    pub async fn shared() -> &'static Stack {
        SHARED
            .get_or_init(|| async {
                Stack::dedicated()
                    .await
                    .expect("start the shared Redis and PostgreSQL")
            })
            .await
    }

    /// Servers for one test alone (for tests that stop, restart or freeze them).
    pub async fn dedicated() -> anyhow::Result<Stack> {
        let (redis, postgres) = tokio::join!(RedisServer::start(), PostgresServer::start());
        Ok(Stack {
            redis: redis?,
            postgres: postgres?,
        })
    }

    /// A fresh, migrated database and an empty Redis logical database, for one test. The database is
    /// owned by the owner role, which migrates it and grants the application role its privileges, as
    /// in production: origins started from [`TestEnv::origin_options`] serve as the application role.
    pub async fn env(&self) -> anyhow::Result<TestEnv> {
        let n = NEXT_ENV.fetch_add(1, Ordering::SeqCst);
        let name = format!("aside_test_{n}");
        self.postgres.create_database(&name).await?;
        let database_url = self.postgres.owner_url(&name);
        let url = database_url.clone();
        tokio::task::spawn_blocking(move || {
            run_origin_command(&url, &["migrate", "--app-role", APP_ROLE])
        })
        .await??;
        Ok(TestEnv {
            app_database_url: self.postgres.app_url(&name),
            database: name,
            database_url,
            redis_db: n,
        })
    }
}

/// One test's slice of a [`Stack`].
#[derive(Debug, Clone)]
pub struct TestEnv {
    pub database: String,
    /// The owner role's URL: for `migrate`, `seed`, and tests that change the schema or the data.
    pub database_url: String,
    /// The application role's URL: what the origin serves with (least privilege).
    pub app_database_url: String,
    pub redis_db: u32,
}

impl TestEnv {
    /// Seeds `count` profiles with a fixed generator seed.
    pub async fn seed(&self, count: u64) -> anyhow::Result<()> {
        let url = self.database_url.clone();
        let count = count.to_string();
        tokio::task::spawn_blocking(move || {
            run_origin_command(&url, &["seed", "--count", &count, "--seed", "7"])
        })
        .await??;
        Ok(())
    }

    /// Waits (up to `timeout`) until change capture has applied every outbox row written so far (the
    /// seed's inserts, say), so that it does not rewrite keys behind a test's back. False on timeout.
    pub async fn change_capture_caught_up(
        &self,
        stack: &Stack,
        timeout: std::time::Duration,
    ) -> anyhow::Result<bool> {
        let db = stack.postgres.connect(&self.database).await?;
        Ok(super::wait_until(timeout, || async {
            db.query_one(
                "SELECT (SELECT last_applied FROM devops_api.change_watermark) >= \
                 (SELECT coalesce(max(id), 0) FROM devops_api.user_changes)",
                &[],
            )
            .await
            .is_ok_and(|row| row.get::<_, bool>(0))
        })
        .await)
    }

    /// Origin options for this env: its database as the application role, its Redis db as the
    /// `origin` ACL user.
    pub fn origin_options(&self, stack: &Stack) -> OriginOptions {
        OriginOptions::new(
            self.app_database_url.clone(),
            stack.redis.url(RedisUser::Origin, self.redis_db),
        )
    }

    /// Starts an origin for this env.
    pub async fn origin(&self, stack: &Stack) -> anyhow::Result<Origin> {
        Origin::start(self.origin_options(stack)).await
    }
}
