//! The bench's own Redis commands, as the `admin` ACL user: empty the cache before a miss scenario, count
//! keys after a fill, and time one `HGETALL` round trip (what an L2 hit is read against). One blocking
//! connection of the `redis` crate; the product's clients never do this.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use redis::IntoConnectionInfo as _;
use redis::io::tcp::TcpSettings;

use crate::report::RoundTrip;

pub struct RedisAdmin {
    connection: redis::Connection,
    port: u16,
    password: String,
}

impl RedisAdmin {
    /// Connects to `127.0.0.1:port` and logs in as `admin`.
    pub fn connect(port: u16, password: &str) -> anyhow::Result<Self> {
        Ok(Self {
            connection: Self::open(port, password)?,
            port,
            password: password.to_string(),
        })
    }

    fn open(port: u16, password: &str) -> anyhow::Result<redis::Connection> {
        let settings = redis::RedisConnectionInfo::default()
            .set_username("admin")
            .set_password(password);
        let info = ("127.0.0.1", port)
            .into_connection_info()?
            .set_redis_settings(settings)
            // One command at a time: nothing to coalesce, and a timed round trip must not wait for Nagle.
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let connection = redis::Client::open(info)?
            .get_connection()
            .context("connect to Redis as admin")?;
        connection.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(connection)
    }

    /// Runs `command`; a connection the server has dropped in the meantime (deploy/redis.conf closes
    /// clients idle for 300 s, and a slow topology run leaves this one idle longer) is replaced once.
    fn query<T: redis::FromRedisValue>(&mut self, command: &redis::Cmd) -> redis::RedisResult<T> {
        match command.query(&mut self.connection) {
            Err(e) if e.is_connection_dropped() || e.is_unrecoverable_error() => {
                match Self::open(self.port, &self.password) {
                    Ok(connection) => self.connection = connection,
                    Err(_) => return Err(e),
                }
                command.query(&mut self.connection)
            }
            answer => answer,
        }
    }

    /// Empties every database (synchronously: the next scenario starts on an empty cache).
    pub fn flush_all(&mut self) -> anyhow::Result<()> {
        self.query::<()>(redis::cmd("FLUSHALL").arg("SYNC"))
            .context("Redis refused FLUSHALL")
    }

    /// Keys in database 0.
    pub fn db_size(&mut self) -> anyhow::Result<u64> {
        self.query(&redis::cmd("DBSIZE"))
            .context("Redis refused DBSIZE")
    }

    /// Times `samples` sequential `HGETALL key` round trips (after a few untimed ones); the hash must
    /// exist, so that each reply is the full hash an L2 hit reads.
    pub fn time_hgetall(&mut self, key: &str, samples: usize) -> anyhow::Result<RoundTrip> {
        let command = redis::cmd("HGETALL").arg(key).to_owned();
        let mut times = Vec::with_capacity(samples);
        for i in 0..samples + samples / 10 {
            let started = Instant::now();
            let reply: redis::Value = self
                .query(&command)
                .with_context(|| format!("Redis refused HGETALL {key}"))?;
            let elapsed = started.elapsed();
            let found = match &reply {
                redis::Value::Map(fields) => !fields.is_empty(),
                redis::Value::Array(fields) => !fields.is_empty(),
                _ => false,
            };
            if !found {
                bail!("HGETALL {key} found no hash: {reply:?}");
            }
            if i >= samples / 10 {
                times.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
            }
        }
        Ok(RoundTrip::from_samples(format!("HGETALL {key}"), times))
    }

    /// Calls per command since Redis started (`INFO commandstats`: `cmdstat_<name>:calls=N,...`),
    /// lower-case names; `info` itself left out (these calls are the bench's own).
    pub fn command_calls(&mut self) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
        let text: String = self
            .query(redis::cmd("INFO").arg("commandstats"))
            .context("Redis refused INFO commandstats")?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                Some((name.to_ascii_lowercase(), calls))
            })
            .filter(|(name, _)| name != "info")
            .collect())
    }

    /// Error replies sent since Redis started, by their first word (`INFO errorstats`:
    /// `errorstat_MOVED:count=N`): e.g. how many `MOVED` and `ASK` redirections a resharding caused.
    pub fn error_counts(&mut self) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
        let text: String = self
            .query(redis::cmd("INFO").arg("errorstats"))
            .context("Redis refused INFO errorstats")?;
        Ok(parse_error_counts(&text))
    }
}

/// `errorstat_<PREFIX>:count=N` lines of `INFO errorstats`, by prefix.
fn parse_error_counts(text: &str) -> std::collections::BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, stats) = line.trim().strip_prefix("errorstat_")?.split_once(':')?;
            let count = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("count="))?
                .parse()
                .ok()?;
            Some((name.to_string(), count))
        })
        .collect()
}

/// The commands run between two [`RedisAdmin::command_calls`] readings, by name (those that ran).
pub fn calls_since(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    after
        .iter()
        .map(|(name, n)| {
            (
                name.clone(),
                n.saturating_sub(before.get(name).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_counts_are_read_by_prefix_and_other_lines_are_skipped() {
        let text = "# Errorstats\r\nerrorstat_ASK:count=12\r\nerrorstat_MOVED:count=3405\r\n\
                    errorstat_NOPERM:count=x\r\n";
        let counts = super::parse_error_counts(text);
        assert_eq!(
            counts,
            std::collections::BTreeMap::from([("ASK".into(), 12), ("MOVED".into(), 3405)])
        );
    }
}
