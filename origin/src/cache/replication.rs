//! The primary's view of its replicas (`INFO replication`), for the replica-lag metrics.

use super::{CacheError, ProfileCache};

/// `INFO replication` of the node the origin writes to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replication {
    /// `role`: `master` on a primary (`slave` on a replica: the origin is on a demoted node).
    pub role: String,
    /// `master_repl_offset`: how far the primary's replication stream went.
    pub master_repl_offset: u64,
    /// The connected replicas (`slaveN:` lines).
    pub replicas: Vec<Replica>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    pub ip: String,
    pub port: u16,
    /// The replication offset the replica acknowledged.
    pub offset: u64,
    /// `lag`: seconds since the replica's last acknowledgement (it acknowledges every second).
    pub lag_secs: u64,
}

impl Replication {
    /// How far each replica trails, for [`crate::metrics::redis_replication`].
    pub fn lags(&self) -> Vec<crate::metrics::ReplicaLag> {
        self.replicas
            .iter()
            .map(|replica| crate::metrics::ReplicaLag {
                name: format!("{}:{}", replica.ip, replica.port),
                seconds: replica.lag_secs,
                bytes: self.master_repl_offset.saturating_sub(replica.offset),
            })
            .collect()
    }

    /// Reads the text of `INFO replication`. A `slaveN:` line looks like
    /// `slave0:ip=127.0.0.1,port=6380,state=online,offset=1234,lag=0`.
    pub fn parse(info: &str) -> Self {
        let mut r = Replication::default();
        for line in info.lines() {
            let Some((name, value)) = line.trim_end().split_once(':') else {
                continue;
            };
            match name {
                "role" => r.role = value.to_string(),
                "master_repl_offset" => r.master_repl_offset = value.parse().unwrap_or(0),
                _ if name.starts_with("slave") && name[5..].parse::<u32>().is_ok() => {
                    if let Some(replica) = Replica::parse(value) {
                        r.replicas.push(replica);
                    }
                }
                _ => {}
            }
        }
        r
    }
}

impl Replica {
    fn parse(fields: &str) -> Option<Self> {
        let (mut ip, mut port, mut offset, mut lag) = (None, None, 0, 0);
        for field in fields.split(',') {
            let (k, v) = field.split_once('=')?;
            match k {
                "ip" => ip = Some(v.to_string()),
                "port" => port = v.parse().ok(),
                "offset" => offset = v.parse().unwrap_or(0),
                "lag" => lag = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        Some(Self {
            ip: ip?,
            port: port?,
            offset,
            lag_secs: lag,
        })
    }
}

impl ProfileCache {
    /// `WAIT 1 <timeout>`: waits until a replica acknowledged the writes sent so far on the origin's
    /// connection (or the timeout passed). Returns how many replicas did. The command timeout is
    /// extended by the wait.
    pub async fn wait_for_replica(&self, timeout: std::time::Duration) -> Result<u64, CacheError> {
        let ms = timeout.as_millis() as u64;
        self.call_with_timeout("wait", self.command_timeout + timeout, |mut c| async move {
            redis::cmd("WAIT").arg(1).arg(ms).query_async(&mut c).await
        })
        .await
    }

    /// `INFO replication` of the node the origin writes to.
    pub async fn replication(&self) -> Result<Replication, CacheError> {
        let text: String = self
            .call("info", |mut c| async move {
                redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(Replication::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_and_offsets_are_read() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
                    slave0:ip=127.0.0.1,port=6380,state=online,offset=900,lag=1\r\n\
                    slave1:ip=10.0.0.2,port=6381,state=wait_bgsave,offset=0,lag=0\r\n\
                    master_failover_state:no-failover\r\nmaster_repl_offset:1000\r\n";
        let r = Replication::parse(info);
        assert_eq!(r.role, "master");
        assert_eq!(r.master_repl_offset, 1000);
        assert_eq!(r.replicas.len(), 2);
        assert_eq!(
            r.replicas[0],
            Replica {
                ip: "127.0.0.1".into(),
                port: 6380,
                offset: 900,
                lag_secs: 1
            }
        );
        assert_eq!(r.replicas[1].port, 6381);
    }

    #[test]
    fn a_replica_reports_no_replicas() {
        let r =
            Replication::parse("role:slave\r\nmaster_host:127.0.0.1\r\nslave_repl_offset:5\r\n");
        assert_eq!(r.role, "slave");
        assert!(r.replicas.is_empty());
    }
}
