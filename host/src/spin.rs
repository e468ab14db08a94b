//! `spin:redis/redis@3.0.0` (on the `redis` crate's multiplexed tokio connection),
//! `spin:variables/variables@3.0.0`, `wasi:config/store@0.2.0-draft-2024-09-27` (the same variables,
//! all at once with `get-all`), `spin:key-value/key-value@3.0.0` and `wasi:keyvalue/store` and `atomics`
//! (`@0.2.0-draft2`), with the WIT copied from spin-sdk 6.0.0 into `wit/`.
//!
//! This host has no key-value store: opening any label answers `no-such-store`, as Spin does for a
//! label no runtime config defines, so a component that uses a store optionally (the edge's shared
//! tier, its process-wide origin budget) instantiates and runs without it.
//!
//! The functions are WIT `async func`s, so they are generated with access to the store through an
//! `Accessor`: the connection lives in the instance's resource table (a reused instance keeps its
//! connection) and is cloned out (a `MultiplexedConnection` clone is a cheap handle to the same
//! connection) so that the command runs without holding the store.

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands as _, Value};
use wasmtime::component::{Accessor, HasData, Linker, Resource};

use super::allowed::redact_url;
use super::manifest::validate_name;
use super::state::InstanceState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "src/wit",
        world: "aside:host/spin-imports",
        // `wasi:config/store` is a WASIp2 interface (sync functions): no access to the store across
        // await points, as a sync lowering needs.
        imports: {
            "wasi:config/store.get": async | trappable,
            "wasi:config/store.get-all": async | trappable,
            // `wasi:keyvalue` (draft 2) is sync too, and never reaches a store here.
            "wasi:keyvalue/store": trappable,
            "wasi:keyvalue/atomics": trappable,
            default: async | store | trappable,
        },
        with: {
            "spin:redis/redis.connection": super::RedisConnection,
            "spin:key-value/key-value.store": super::KeyValueStore,
            "wasi:keyvalue/store.bucket": super::Bucket,
            "wasi:keyvalue/atomics.cas": super::Cas,
        },
        trappable_error_type: {
            "spin:redis/redis.error" => super::RedisError,
            "spin:variables/variables.error" => super::VariablesError,
            "spin:key-value/key-value.error" => super::KeyValueError,
            "wasi:config/store.error" => super::ConfigError,
            "wasi:keyvalue/store.error" => super::BucketError,
        },
    });
}

use bindings::spin::key_value::key_value as kv;
use bindings::spin::redis::redis as r;
use bindings::spin::variables::variables as v;
use bindings::wasi::config::store as c;
use bindings::wasi::keyvalue::atomics as ka;
use bindings::wasi::keyvalue::store as ks;

pub(crate) type RedisError = r::Error;
pub(crate) type VariablesError = v::Error;
pub(crate) type KeyValueError = kv::Error;
pub(crate) type ConfigError = c::Error;
pub(crate) type BucketError = ks::Error;

/// A key-value store resource: never created, since this host has no store to open.
pub enum KeyValueStore {}

/// `wasi:keyvalue`'s bucket and compare-and-swap handle: never created either.
pub enum Bucket {}
pub enum Cas {}

/// A guest-opened Redis connection (a handle to a multiplexed connection).
pub struct RedisConnection {
    conn: MultiplexedConnection,
}

/// The `HasData` marker for the Spin interfaces.
pub(crate) struct Spin;

impl HasData for Spin {
    type Data<'a> = &'a mut InstanceState;
}

/// Adds `spin:redis`, `spin:variables`, `wasi:config/store` and `spin:key-value` to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    r::add_to_linker::<_, Spin>(linker, |s| s)?;
    v::add_to_linker::<_, Spin>(linker, |s| s)?;
    kv::add_to_linker::<_, Spin>(linker, |s| s)?;
    c::add_to_linker::<_, Spin>(linker, |s| s)?;
    ks::add_to_linker::<_, Spin>(linker, |s| s)?;
    ka::add_to_linker::<_, Spin>(linker, |s| s)?;
    Ok(())
}

fn other(e: impl std::fmt::Display) -> r::Error {
    r::Error::Other(e.to_string())
}

fn conn<T>(
    accessor: &Accessor<T, Spin>,
    self_: &Resource<RedisConnection>,
) -> Result<MultiplexedConnection, r::Error> {
    accessor.with(|mut access| {
        let state: &mut InstanceState = access.get();
        state
            .table
            .get(self_)
            .map(|c| c.conn.clone())
            .map_err(|_| r::Error::Other("unknown redis connection".into()))
    })
}

impl r::Host for InstanceState {
    fn convert_error(&mut self, err: r::Error) -> wasmtime::Result<r::Error> {
        Ok(err)
    }
}

impl r::HostConnection for InstanceState {}

impl r::HostConnectionWithStore for Spin {
    async fn open<T>(
        accessor: &Accessor<T, Self>,
        address: String,
    ) -> Result<Resource<RedisConnection>, r::Error> {
        let (component, tls) = accessor.with(|mut access| {
            let state = access.get();
            (state.component.clone(), state.redis_tls.clone())
        });
        if !component.allowed_hosts.allows(&address, "redis") {
            tracing::warn!(
                component = %component.id,
                address = %redact_url(&address, "redis"),
                "redis open refused: destination is not in allowed_outbound_hosts"
            );
            return Err(r::Error::InvalidAddress);
        }
        let client = tls.client(&address).map_err(|_| r::Error::InvalidAddress)?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(other)?;
        accessor.with(|mut access| {
            access
                .get()
                .table
                .push(RedisConnection { conn })
                .map_err(|_| r::Error::TooManyConnections)
        })
    }

    async fn publish<T>(
        accessor: &Accessor<T, Self>,
        self_: Resource<RedisConnection>,
        channel: String,
        payload: Vec<u8>,
    ) -> Result<(), r::Error> {
        let mut c = conn(accessor, &self_)?;
        let () = c.publish(&channel, &payload).await.map_err(other)?;
        Ok(())
    }

    async fn get<T>(
        accessor: &Accessor<T, Self>,
        self_: Resource<RedisConnection>,
        key: String,
    ) -> Result<Option<Vec<u8>>, r::Error> {
        let mut c = conn(accessor, &self_)?;
        c.get(&key).await.map_err(other)
    }

    async fn set<T>(
        accessor: &Accessor<T, Self>,
        self_: Resource<RedisConnection>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), r::Error> {
        let mut c = conn(accessor, &self_)?;
        let () = c.set(&key, &value).await.map_err(other)?;
        Ok(())
    }

    async fn incr<T>(
        accessor: &Accessor<T, Self>,
        self_: Resource<RedisConnection>,
        key: String,
    ) -> Result<i64, r::Error> {
        let mut c = conn(accessor, &self_)?;
        c.incr(&key, 1).await.map_err(type_or_other)
    }

    async fn del<T>(
        accessor: &Accessor<T, Self>,
        self_: Resource<RedisConnection>,
        keys: Vec<String>,
    ) -> Result<u32, r::Error> {
        let mut c = conn(accessor, &self_)?;
        c.del(&keys).await.map_err(other)
    }

    async fn sadd<T>(
        accessor: &Accessor<T, Self>,
        self_: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> Result<u32, r::Error> {
        let mut c = conn(accessor, &self_)?;
        c.sadd(&key, &values).await.map_err(type_or_other)
    }

    async fn smembers<T>(
        accessor: &Accessor<T, Self>,
        self_: Resource<RedisConnection>,
        key: String,
    ) -> Result<Vec<String>, r::Error> {
        let mut c = conn(accessor, &self_)?;
        c.smembers(&key).await.map_err(type_or_other)
    }

    async fn srem<T>(
        accessor: &Accessor<T, Self>,
        self_: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> Result<u32, r::Error> {
        let mut c = conn(accessor, &self_)?;
        c.srem(&key, &values).await.map_err(type_or_other)
    }

    async fn execute<T>(
        accessor: &Accessor<T, Self>,
        self_: Resource<RedisConnection>,
        command: String,
        arguments: Vec<r::RedisParameter>,
    ) -> Result<Vec<r::RedisResult>, r::Error> {
        let mut c = conn(accessor, &self_)?;
        let mut cmd = redis::cmd(&command);
        for a in arguments {
            match a {
                r::RedisParameter::Int64(i) => cmd.arg(i),
                r::RedisParameter::Binary(b) => cmd.arg(b),
            };
        }
        let value: Value = cmd.query_async(&mut c).await.map_err(other)?;
        let mut out = Vec::new();
        flatten(&value, &mut out)?;
        Ok(out)
    }

    async fn drop<T>(
        accessor: &Accessor<T, Self>,
        rep: Resource<RedisConnection>,
    ) -> wasmtime::Result<()> {
        accessor.with(|mut access| access.get().table.delete(rep))?;
        Ok(())
    }
}

fn type_or_other(e: redis::RedisError) -> r::Error {
    if e.kind() == redis::ErrorKind::UnexpectedReturnType
        || e.code() == Some("WRONGTYPE")
        || e.to_string().contains("not an integer")
    {
        r::Error::TypeError
    } else {
        other(e)
    }
}

/// Maps a reply the way Spin does: arrays and sets are flattened, OK becomes status "OK",
/// doubles and big numbers become their text, booleans 0/1; maps, verbatim strings, attributes and
/// pushes are refused with a type error.
fn flatten(value: &Value, out: &mut Vec<r::RedisResult>) -> Result<(), r::Error> {
    match value {
        Value::Nil => out.push(r::RedisResult::Nil),
        Value::Int(i) => out.push(r::RedisResult::Int64(*i)),
        Value::BulkString(b) => out.push(r::RedisResult::Binary(b.clone())),
        Value::SimpleString(s) => out.push(r::RedisResult::Status(s.clone())),
        Value::Okay => out.push(r::RedisResult::Status("OK".into())),
        Value::Array(items) | Value::Set(items) => {
            for item in items {
                flatten(item, out)?;
            }
        }
        Value::Double(d) => out.push(r::RedisResult::Binary(d.to_string().into_bytes())),
        Value::Boolean(b) => out.push(r::RedisResult::Int64(i64::from(*b))),
        Value::BigNumber(n) => out.push(r::RedisResult::Binary(n.clone())),
        Value::ServerError(e) => return Err(r::Error::Other(format!("{e:?}"))),
        Value::Map(_) => return Err(other("Redis Map type is not supported")),
        Value::Attribute { .. } => return Err(other("Redis Attribute type is not supported")),
        Value::VerbatimString { .. } => {
            return Err(other("Redis string with format attribute is not supported"));
        }
        Value::Push { .. } => return Err(other("Redis Pub/Sub types are not supported")),
        _ => return Err(other("unsupported Redis reply type")),
    }
    Ok(())
}

impl v::Host for InstanceState {
    fn convert_error(&mut self, err: v::Error) -> wasmtime::Result<v::Error> {
        Ok(err)
    }
}

impl v::HostWithStore for Spin {
    async fn get<T>(accessor: &Accessor<T, Self>, name: String) -> Result<String, v::Error> {
        if let Err(e) = validate_name(&name) {
            return Err(v::Error::InvalidName(format!("{name:?}: {e}")));
        }
        accessor.with(|mut access| {
            access
                .get()
                .component
                .variables
                .get(&name)
                .map(|v| v.value.clone())
                .ok_or_else(|| v::Error::Undefined(format!("no variable for {name:?}")))
        })
    }
}

/// As Spin: `get` is `spin:variables`' `get` with "not set" and a bad name as `none`; `get-all` is every
/// variable of the component.
impl c::Host for InstanceState {
    async fn get(&mut self, name: String) -> Result<Option<String>, c::Error> {
        if validate_name(&name).is_err() {
            return Ok(None);
        }
        Ok(self.component.variables.get(&name).map(|v| v.value.clone()))
    }

    async fn get_all(&mut self) -> Result<Vec<(String, String)>, c::Error> {
        Ok(self
            .component
            .variables
            .iter()
            .map(|(name, v)| (name.clone(), v.value.clone()))
            .collect())
    }

    fn convert_error(&mut self, err: c::Error) -> wasmtime::Result<c::Error> {
        Ok(err)
    }
}

impl kv::Host for InstanceState {
    fn convert_error(&mut self, err: kv::Error) -> wasmtime::Result<kv::Error> {
        Ok(err)
    }
}

impl kv::HostStore for InstanceState {}

impl kv::HostStoreWithStore for Spin {
    async fn open<T>(
        _accessor: &Accessor<T, Self>,
        _label: String,
    ) -> Result<Resource<KeyValueStore>, kv::Error> {
        Err(kv::Error::NoSuchStore)
    }

    async fn get<T>(
        _accessor: &Accessor<T, Self>,
        self_: Resource<KeyValueStore>,
        _key: String,
    ) -> Result<Option<Vec<u8>>, kv::Error> {
        no_store(self_)
    }

    async fn set<T>(
        _accessor: &Accessor<T, Self>,
        self_: Resource<KeyValueStore>,
        _key: String,
        _value: Vec<u8>,
    ) -> Result<(), kv::Error> {
        no_store(self_)
    }

    async fn delete<T>(
        _accessor: &Accessor<T, Self>,
        self_: Resource<KeyValueStore>,
        _key: String,
    ) -> Result<(), kv::Error> {
        no_store(self_)
    }

    async fn exists<T>(
        _accessor: &Accessor<T, Self>,
        self_: Resource<KeyValueStore>,
        _key: String,
    ) -> Result<bool, kv::Error> {
        no_store(self_)
    }

    async fn get_keys<T>(
        _accessor: &Accessor<T, Self>,
        _self_: Resource<KeyValueStore>,
    ) -> wasmtime::Result<(
        wasmtime::component::StreamReader<String>,
        wasmtime::component::FutureReader<Result<(), kv::Error>>,
    )> {
        wasmtime::bail!("this host has no key-value store")
    }

    async fn drop<T>(
        _accessor: &Accessor<T, Self>,
        _rep: Resource<KeyValueStore>,
    ) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// No store is ever opened, so no store resource can reach a method.
fn no_store<V>(_store: Resource<KeyValueStore>) -> Result<V, kv::Error> {
    Err(kv::Error::Other("this host has no key-value store".into()))
}

/// `wasi:keyvalue/store` as `spin:key-value` above: no store to open (`no-such-store`, as Spin answers for
/// a label no runtime config defines), so the edge's process-wide origin budget falls back to its
/// instance's bucket here.
impl ks::Host for InstanceState {
    fn open(&mut self, _identifier: String) -> Result<Resource<Bucket>, ks::Error> {
        Err(ks::Error::NoSuchStore)
    }

    fn convert_error(&mut self, err: ks::Error) -> wasmtime::Result<ks::Error> {
        Ok(err)
    }
}

impl ks::HostBucket for InstanceState {
    fn get(&mut self, b: Resource<Bucket>, _key: String) -> Result<Option<Vec<u8>>, ks::Error> {
        no_bucket(b)
    }

    fn set(&mut self, b: Resource<Bucket>, _key: String, _value: Vec<u8>) -> Result<(), ks::Error> {
        no_bucket(b)
    }

    fn delete(&mut self, b: Resource<Bucket>, _key: String) -> Result<(), ks::Error> {
        no_bucket(b)
    }

    fn exists(&mut self, b: Resource<Bucket>, _key: String) -> Result<bool, ks::Error> {
        no_bucket(b)
    }

    fn list_keys(
        &mut self,
        b: Resource<Bucket>,
        _cursor: Option<String>,
    ) -> Result<ks::KeyResponse, ks::Error> {
        no_bucket(b)
    }

    fn drop(&mut self, _rep: Resource<Bucket>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl ka::Host for InstanceState {
    fn increment(
        &mut self,
        b: Resource<Bucket>,
        _key: String,
        _delta: i64,
    ) -> Result<i64, ks::Error> {
        no_bucket(b)
    }

    fn swap(
        &mut self,
        _cas: Resource<Cas>,
        _value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), ka::CasError>> {
        Ok(Err(ka::CasError::StoreError(ks::Error::Other(
            "this host has no key-value store".into(),
        ))))
    }
}

impl ka::HostCas for InstanceState {
    fn new(&mut self, b: Resource<Bucket>, _key: String) -> Result<Resource<Cas>, ks::Error> {
        no_bucket(b)
    }

    fn current(&mut self, _cas: Resource<Cas>) -> Result<Option<Vec<u8>>, ks::Error> {
        Err(ks::Error::Other("this host has no key-value store".into()))
    }

    fn drop(&mut self, _rep: Resource<Cas>) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// No bucket is ever opened, so none can reach a method.
fn no_bucket<V>(_bucket: Resource<Bucket>) -> Result<V, ks::Error> {
    Err(ks::Error::Other("this host has no key-value store".into()))
}
