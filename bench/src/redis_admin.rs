//! The bench's own Redis commands, as the `admin` ACL user: empty the cache before a miss scenario and
//! count keys after a fill. A few lines of RESP over a socket; the product's clients never do this.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context as _, bail};

pub struct RedisAdmin {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RedisAdmin {
    /// Connects to `127.0.0.1:port` and logs in as `admin`.
    pub fn connect(port: u16, password: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).context("connect to Redis")?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
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
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.writer.write_all(out.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let line = line.trim_end().to_string();
        match line.chars().next() {
            Some('+') | Some(':') => Ok(line[1..].to_string()),
            Some('-') => bail!("Redis refused {}: {}", args[0], &line[1..]),
            _ => bail!("unexpected Redis reply to {}: {line:?}", args[0]),
        }
    }

    /// Empties every database (synchronously: the next scenario starts on an empty cache).
    pub fn flush_all(&mut self) -> anyhow::Result<()> {
        self.command(&["FLUSHALL", "SYNC"]).map(drop)
    }

    /// Keys in database 0.
    pub fn db_size(&mut self) -> anyhow::Result<u64> {
        Ok(self.command(&["DBSIZE"])?.parse()?)
    }
}
