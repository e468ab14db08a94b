//! The names of every setting, defined once: the edge's Spin variables and the origin's environment
//! variables. The edge reads [`EDGE_VARIABLES`]; the origin's command line reads [`ORIGIN_SETTINGS`]
//! (its `--help` lists them, and a test compares the two); the launchers of `cargo xtask up`, the
//! benchmark and the test harness (`xtask::launch`) refuse any other name; tests check that spin.toml,
//! the SpinApp and the Kubernetes Deployment use exactly these.

/// Every Spin variable the edge reads, as declared under `[component.aside-edge.variables]` in
/// spin.toml. Spin takes a variable's value from `SPIN_VARIABLE_<NAME in upper case>`.
pub const EDGE_VARIABLES: [&str; 43] = [
    "redis_address",
    "redis_mode",
    "redis_database",
    "redis_read_from",
    "redis_user",
    "redis_password",
    "origin_url",
    "origin_token",
    "l1_max_entries",
    "l1_max_bytes",
    "l1_ttl_ms",
    "redis_timeout_ms",
    "redis_backoff_ms",
    "origin_timeout_ms",
    "request_budget_ms",
    "redis_failure_threshold",
    "origin_failure_threshold",
    "origin_backoff_ms",
    "l1_stale_ms",
    "xfetch_beta",
    "redis_scheme",
    "auth",
    "auth_issuer",
    "auth_audience",
    "auth_leeway_s",
    "auth_user_claim",
    "auth_jwks",
    "auth_jwks_url",
    "auth_keys_min_refresh_s",
    "auth_keys_max_refresh_s",
    "auth_keys_max_stale_s",
    "auth_token_cache_entries",
    "auth_token_cache_s",
    "write_rate_per_min",
    "write_burst",
    "shared_tier_store",
    "shared_tier_slots",
    "origin_budget_per_s",
    "origin_budget_burst",
    "origin_budget_store",
    "redis_max_connections",
    "feed_poll_ms",
    "feed_max_lag_ms",
];

/// Spin variables spin.toml declares for its own templates (`allowed_outbound_hosts`) that the component
/// never reads: the identity provider's origin, which the edge may fetch keys from, and the cluster's nodes it may
/// reach with `redis_mode = cluster`.
pub const MANIFEST_VARIABLES: &[&str] = &["auth_provider_origin", "redis_cluster_hosts"];

/// Every environment variable the origin reads (`aside-origin serve` and its other commands). A
/// `..._FILE` twin reads a secret from a file instead.
pub const ORIGIN_SETTINGS: &[&str] = &[
    "ASIDE_ADMIN_TOKENS",
    "ASIDE_ADMIN_TOKENS_FILE",
    "ASIDE_APP_ROLE",
    "ASIDE_CACHE",
    "ASIDE_CACHE_STALE_TTL_SECS",
    "ASIDE_CACHE_TTL_JITTER_PERCENT",
    "ASIDE_CACHE_TTL_SECS",
    "ASIDE_CHANGE_BATCH",
    "ASIDE_CHANGE_REPLAY_SECS",
    "ASIDE_CHANGE_RESCAN_MS",
    "ASIDE_CHANGE_RETENTION_SECS",
    "ASIDE_CHANGE_TAKEOVER_MS",
    "ASIDE_DATABASE_URL",
    "ASIDE_DATABASE_URL_FILE",
    "ASIDE_DB_BACKOFF_MAX_MS",
    "ASIDE_DB_BACKOFF_MS",
    "ASIDE_DB_BREAKER_FAILURES",
    "ASIDE_DB_POOL_SIZE",
    "ASIDE_DB_POOL_TIMEOUT_MS",
    "ASIDE_DB_STATEMENT_TIMEOUT_MS",
    "ASIDE_FEED_HEARTBEAT_MS",
    "ASIDE_FEED_MAXLEN",
    "ASIDE_HEADER_READ_TIMEOUT_MS",
    "ASIDE_LEASE_POLL_MS",
    "ASIDE_LEASE_TTL_MS",
    "ASIDE_LEASE_WAIT_MS",
    "ASIDE_LISTEN",
    "ASIDE_LOG_FORMAT",
    "ASIDE_MAX_BODY_BYTES",
    "ASIDE_MAX_HEADERS",
    "ASIDE_MAX_HEADER_BYTES",
    "ASIDE_MISSING_TTL_SECS",
    "ASIDE_ORIGIN_TOKENS",
    "ASIDE_ORIGIN_TOKENS_FILE",
    "ASIDE_REDIS_BACKOFF_MAX_MS",
    "ASIDE_REDIS_BACKOFF_MS",
    "ASIDE_REDIS_BREAKER_FAILURES",
    "ASIDE_REDIS_CA_FILE",
    "ASIDE_REDIS_CLIENT_CERT_FILE",
    "ASIDE_REDIS_CLIENT_KEY_FILE",
    "ASIDE_REDIS_CLUSTER_NODES",
    "ASIDE_REDIS_CLUSTER_POLL_MS",
    "ASIDE_REDIS_COMMAND_TIMEOUT_MS",
    "ASIDE_REDIS_CONNECT_TIMEOUT_MS",
    "ASIDE_REDIS_DB",
    "ASIDE_REDIS_PASSWORD",
    "ASIDE_REDIS_PASSWORD_FILE",
    "ASIDE_REDIS_SENTINELS",
    "ASIDE_REDIS_SENTINEL_MASTER",
    "ASIDE_REDIS_SENTINEL_PASSWORD",
    "ASIDE_REDIS_SENTINEL_PASSWORD_FILE",
    "ASIDE_REDIS_SENTINEL_POLL_MS",
    "ASIDE_REDIS_SENTINEL_USERNAME",
    "ASIDE_REDIS_URL",
    "ASIDE_REDIS_URL_FILE",
    "ASIDE_REDIS_USERNAME",
    "ASIDE_REDIS_WAIT_REPLICAS_MS",
    "ASIDE_REFRESH_WAIT_MS",
    "ASIDE_REQUEST_TIMEOUT_MS",
    "ASIDE_TOMBSTONE_TTL_SECS",
    "ASIDE_XFETCH_BETA",
];

/// Whether spin.toml declares a Spin variable of this name for the edge: one it reads, or one of its
/// manifest's templates.
pub fn is_edge_variable(name: &str) -> bool {
    EDGE_VARIABLES.contains(&name) || MANIFEST_VARIABLES.contains(&name)
}

/// Whether the origin reads an environment variable of this name.
pub fn is_origin_setting(name: &str) -> bool {
    ORIGIN_SETTINGS.contains(&name)
}

/// The environment variable Spin reads an application variable from: `SPIN_VARIABLE_` and the name in
/// upper case.
pub fn spin_variable_env(name: &str) -> String {
    format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        for list in [
            &[&EDGE_VARIABLES[..], MANIFEST_VARIABLES].concat()[..],
            ORIGIN_SETTINGS,
        ] {
            let mut sorted = list.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), list.len(), "a name is listed twice");
        }
        assert!(EDGE_VARIABLES.iter().all(|n| {
            n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }));
        assert!(ORIGIN_SETTINGS.iter().all(|n| {
            n.starts_with("ASIDE_")
                && n.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        }));
        assert_eq!(
            spin_variable_env("redis_address"),
            "SPIN_VARIABLE_REDIS_ADDRESS"
        );
        assert!(is_edge_variable("feed_poll_ms") && !is_edge_variable("feed_pol_ms"));
        assert!(is_edge_variable("auth_provider_origin"));
        assert!(is_origin_setting("ASIDE_REDIS_URL") && !is_origin_setting("ASIDE_REDIS_URI"));
    }
}
