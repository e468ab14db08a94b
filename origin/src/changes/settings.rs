//! Change capture's settings.

use std::time::Duration;

use clap::Args;

/// Change capture: applying the `devops_api.user_changes` outbox to Redis.
#[derive(Debug, Clone, Args)]
pub struct ChangeCaptureArgs {
    /// Safety re-scan of the outbox when no notification came, in ms (notifications wake the origin at
    /// once; the re-scan catches up after Redis or the listening connection was away).
    #[arg(long, env = "ASIDE_CHANGE_RESCAN_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..))]
    pub change_rescan_ms: u64,

    /// How often an origin that is not applying changes tries to take over from the one that is, in ms.
    #[arg(long, env = "ASIDE_CHANGE_TAKEOVER_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..))]
    pub change_takeover_ms: u64,

    /// Applied outbox rows older than this are deleted, in seconds. At least the tombstone TTL: a row
    /// re-created with a deleted row's id continues that row's versions from the outbox.
    #[arg(long, env = "ASIDE_CHANGE_RETENTION_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub change_retention_secs: u64,

    /// Outbox rows read per batch.
    #[arg(long, env = "ASIDE_CHANGE_BATCH", default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub change_batch: i64,

    /// After a Redis failover, the outbox changes of this many seconds back are applied again onto the
    /// new primary (over the keys it holds), before the watermark moves on: with asynchronous
    /// replication the promoted replica may lack the old primary's last writes. Capped by
    /// ASIDE_CHANGE_RETENTION_SECS (what the outbox keeps).
    #[arg(long, env = "ASIDE_CHANGE_REPLAY_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub change_replay_secs: u64,
}

impl ChangeCaptureArgs {
    /// How far back a replay after a failover goes.
    pub fn replay_window(&self) -> Duration {
        Duration::from_secs(self.change_replay_secs.min(self.change_retention_secs))
    }

    pub fn rescan(&self) -> Duration {
        Duration::from_millis(self.change_rescan_ms)
    }

    pub fn takeover(&self) -> Duration {
        Duration::from_millis(self.change_takeover_ms)
    }

    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.change_retention_secs)
    }
}
