//! The bench's own Redis commands, as the `admin` ACL user: empty the cache before a miss scenario, count
//! keys after a fill, and time one `HGETALL` round trip (what an L2 hit is read against). A few lines of
//! RESP over a socket; the product's clients never do this.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::report::RoundTrip;

pub struct RedisAdmin {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// One RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, `:42` (as text).
    Line(String),
    /// A bulk string (`None`: the null bulk string).
    Bulk(Option<Vec<u8>>),
    /// An array (`None`: the null array).
    Array(Option<Vec<Reply>>),
}

impl RedisAdmin {
    /// Connects to `127.0.0.1:port` and logs in as `admin`.
    pub fn connect(port: u16, password: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).context("connect to Redis")?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        // One command at a time: nothing to coalesce, and a timed round trip must not wait for Nagle.
        stream.set_nodelay(true)?;
        let mut admin = Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        admin
            .command(&["AUTH", "admin", password])
            .context("AUTH as admin")?;
        Ok(admin)
    }

    /// Sends one command and returns its reply line (`+OK`, `:42`); an error reply is an error.
    pub fn command(&mut self, args: &[&str]) -> anyhow::Result<String> {
        match self.request(args)? {
            Reply::Line(line) => Ok(line),
            other => bail!("unexpected Redis reply to {}: {other:?}", args[0]),
        }
    }

    /// Sends one command and reads its whole reply; an error reply is an error.
    pub fn request(&mut self, args: &[&str]) -> anyhow::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.writer.write_all(out.as_bytes())?;
        self.reply()
            .with_context(|| format!("Redis refused {}", args[0]))
    }

    fn reply(&mut self) -> anyhow::Result<Reply> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let line = line.trim_end();
        let (kind, rest) = line.split_at(line.len().min(1));
        let len = || -> anyhow::Result<i64> {
            rest.parse()
                .with_context(|| format!("bad RESP length {line:?}"))
        };
        Ok(match kind {
            "+" | ":" => Reply::Line(rest.to_string()),
            "-" => bail!("{rest}"),
            "$" => match usize::try_from(len()?) {
                Err(_) => Reply::Bulk(None),
                Ok(n) => {
                    let mut bytes = vec![0; n + 2];
                    self.reader.read_exact(&mut bytes)?;
                    bytes.truncate(n);
                    Reply::Bulk(Some(bytes))
                }
            },
            "*" => match usize::try_from(len()?) {
                Err(_) => Reply::Array(None),
                Ok(n) => Reply::Array(Some(
                    (0..n).map(|_| self.reply()).collect::<Result<_, _>>()?,
                )),
            },
            _ => bail!("unexpected Redis reply {line:?}"),
        })
    }

    /// Empties every database (synchronously: the next scenario starts on an empty cache).
    pub fn flush_all(&mut self) -> anyhow::Result<()> {
        self.command(&["FLUSHALL", "SYNC"]).map(drop)
    }

    /// Keys in database 0.
    pub fn db_size(&mut self) -> anyhow::Result<u64> {
        Ok(self.command(&["DBSIZE"])?.parse()?)
    }

    /// Times `samples` sequential `HGETALL key` round trips (after a few untimed ones); the hash must
    /// exist, so that each reply is the full hash an L2 hit reads.
    pub fn time_hgetall(&mut self, key: &str, samples: usize) -> anyhow::Result<RoundTrip> {
        let args = ["HGETALL", key];
        let mut times = Vec::with_capacity(samples);
        for i in 0..samples + samples / 10 {
            let started = Instant::now();
            let reply = self.request(&args)?;
            let elapsed = started.elapsed();
            match reply {
                Reply::Array(Some(fields)) if !fields.is_empty() => {}
                other => bail!("HGETALL {key} found no hash: {other:?}"),
            }
            if i >= samples / 10 {
                times.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
            }
        }
        Ok(RoundTrip::from_samples(args.join(" "), times))
    }
}
