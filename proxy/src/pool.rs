//! Backend connection pools: bb8 over [`BackendConn`], one pool per data source and client
//! capability profile (a profile is the client's choice of the capabilities that change the
//! wire format, see [`PROFILE_CAPS`]; most deployments see one or two).
//!
//! No ping on checkout: a connection that failed is marked broken by the code that saw the
//! failure, and bb8 drops it on return (`has_broken`). Pools are created lazily on first use.
//! A rules reload replaces the pools of changed data sources only ([`Pools::update`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use bb8::{ManageConnection, Pool, PooledConnection, RunError};
use mysql_common::constants::CapabilityFlags;
use shard_rules::config::PoolConfig;

use crate::backend::{BackendConn, BackendError, SharedTarget, Target, PROFILE_CAPS};
use crate::error::ProxyError;

pub struct Manager {
    target: SharedTarget,
    profile: CapabilityFlags,
}

impl ManageConnection for Manager {
    type Connection = BackendConn;
    type Error = BackendError;

    async fn connect(&self) -> Result<BackendConn, BackendError> {
        BackendConn::connect(&self.target, self.profile).await
    }

    async fn is_valid(&self, conn: &mut BackendConn) -> Result<(), BackendError> {
        conn.ping().await
    }

    fn has_broken(&self, conn: &mut BackendConn) -> bool {
        conn.broken
    }
}

pub type Conn = PooledConnection<'static, Manager>;

/// One bb8 pool and the connects the proxy is making for it.
struct DsPool {
    pool: Pool<Manager>,
    /// Connections being opened by [`Pools::get`] right now, so a burst of checkouts never
    /// opens more than `max_size` connections in total.
    connecting: AtomicU32,
}

/// One data source: where it is, its pools (one per capability profile) and its counters.
struct Source {
    target: SharedTarget,
    pools: RwLock<HashMap<u32, Arc<DsPool>>>,
    /// Statements waiting for a connection right now.
    waiters: AtomicU32,
    /// Connects refused or timed out, checkouts timed out, connections lost mid-statement.
    errors: AtomicU64,
    /// Failures are logged at most once a second per data source (shared with the pools'
    /// error sinks).
    failure_log: Arc<crate::metrics::LogLimiter>,
}

/// What `SHOW POOLS` and the pool metrics show of one data source (all its profiles).
#[derive(Debug, Clone)]
pub struct PoolStats {
    pub room: String,
    pub data_source: String,
    pub address: String,
    /// Capability profiles with a pool (0 until the first checkout).
    pub profiles: usize,
    pub max: u32,
    pub connections: u32,
    pub idle: u32,
    pub in_use: u32,
    pub waiters: u32,
    pub errors: u64,
}

/// All pools of this proxy. The set of data sources is swapped whole on a rules reload
/// ([`Pools::update`]); a session that holds a connection keeps it until it releases it.
pub struct Pools {
    config: PoolConfig,
    /// data source → its pools; replaced, never edited in place.
    sources: ArcSwap<HashMap<String, Arc<Source>>>,
    /// The data sources the last update removed or renamed, still lending: a session that
    /// resolved its data source on the rules being replaced checks out in the moment between
    /// the pools' swap and the rules' swap without an error; it moves at its next checkout.
    /// Replaced by the next update.
    retired: ArcSwap<HashMap<String, Arc<Source>>>,
}

fn source(target: SharedTarget) -> Arc<Source> {
    Arc::new(Source {
        target,
        pools: RwLock::new(HashMap::new()),
        waiters: AtomicU32::new(0),
        errors: AtomicU64::new(0),
        failure_log: Default::default(),
    })
}

/// Counts a waiter for as long as it lives.
struct Waiting<'a>(&'a AtomicU32);
impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pools {
    pub fn new(targets: HashMap<String, SharedTarget>, config: PoolConfig) -> Self {
        Pools {
            config,
            sources: ArcSwap::from_pointee(
                targets.into_iter().map(|(n, t)| (n, source(t))).collect(),
            ),
            retired: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// Takes a new set of data sources: an unchanged one keeps its pools (and connections);
    /// a changed one gets new, empty pools, and the old ones drain — connections in use finish
    /// their statement or transaction on the old server and are closed when given back; an
    /// added one is created, a removed one forgotten the same way. Returns the names of the
    /// data sources that changed, were added or were removed.
    pub fn update(&self, targets: HashMap<String, SharedTarget>) -> Vec<String> {
        let old = self.sources.load_full();
        let mut changed = Vec::new();
        let mut next = HashMap::with_capacity(targets.len());
        for (name, t) in targets {
            match old.get(&name) {
                Some(s) if same_target(&s.target, &t) => {
                    next.insert(name, Arc::clone(s));
                }
                _ => {
                    changed.push(name.clone());
                    next.insert(name, source(t));
                }
            }
        }
        let removed: HashMap<String, Arc<Source>> = old
            .iter()
            .filter(|(n, _)| !next.contains_key(*n))
            .map(|(n, s)| (n.clone(), Arc::clone(s)))
            .collect();
        changed.extend(removed.keys().cloned());
        changed.sort();
        self.retired.store(Arc::new(removed));
        self.sources.store(Arc::new(next));
        changed
    }

    pub fn target(&self, ds: &str) -> Option<SharedTarget> {
        self.sources.load().get(ds).map(|s| Arc::clone(&s.target))
    }

    /// Counts a backend failure seen outside the pool (a connection lost mid-statement).
    pub fn count_error(&self, ds: &str) {
        if let Some(s) = self.sources.load().get(ds) {
            s.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every data source's pools, summed over profiles, in name order.
    /// Whether one more connection of `ds` can be had without waiting for another session's:
    /// an idle one, or room to open one while at most half the pool is in use. Scattered
    /// reads take one connection per node query only then, so that concurrent sessions do not
    /// hold part of a pool each while waiting for the rest.
    pub fn spare(&self, ds: &str, profile: CapabilityFlags) -> bool {
        let Ok(src) = self.source(ds) else {
            return false;
        };
        let st = self.pool(&src, profile).pool.state();
        st.idle_connections > 0 || st.connections < self.config.max_size / 2
    }

    /// The names of the data sources served (this room's).
    pub fn data_sources(&self) -> Vec<String> {
        let mut v: Vec<String> = self.sources.load().keys().cloned().collect();
        v.sort();
        v
    }

    pub fn stats(&self) -> Vec<PoolStats> {
        let sources = self.sources.load();
        let mut out: Vec<PoolStats> = sources
            .iter()
            .map(|(name, s)| {
                let pools = s.pools.read().unwrap_or_else(|e| e.into_inner());
                let (mut connections, mut idle) = (0, 0);
                for p in pools.values() {
                    let st = p.pool.state();
                    connections += st.connections;
                    idle += st.idle_connections;
                }
                PoolStats {
                    room: s.target.room.clone(),
                    data_source: name.clone(),
                    address: format!("{}:{}/{}", s.target.host, s.target.port, s.target.schema),
                    profiles: pools.len(),
                    max: self.config.max_size,
                    connections,
                    idle,
                    in_use: connections - idle,
                    waiters: s.waiters.load(Ordering::Relaxed),
                    errors: s.errors.load(Ordering::Relaxed),
                }
            })
            .collect();
        out.sort_by(|a, b| a.data_source.cmp(&b.data_source));
        out
    }

    fn source(&self, ds: &str) -> Result<Arc<Source>, ProxyError> {
        let current = self.sources.load().get(ds).cloned();
        current
            .or_else(|| self.retired.load().get(ds).cloned())
            .ok_or_else(|| ProxyError::BackendUnavailable {
                ds: ds.to_string(),
                room: "?".into(),
                reason: "no such data source in the rules this proxy applies".into(),
            })
    }

    fn pool(&self, src: &Source, profile: CapabilityFlags) -> Arc<DsPool> {
        let bits = (profile & PROFILE_CAPS).bits();
        if let Some(p) = src
            .pools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&bits)
        {
            return Arc::clone(p);
        }
        let mut pools = src.pools.write().unwrap_or_else(|e| e.into_inner());
        let pool = pools.entry(bits).or_insert_with(|| {
            let pool = Pool::builder()
                .max_size(self.config.max_size)
                .min_idle(Some(self.config.min_idle).filter(|n| *n > 0))
                .test_on_check_out(false)
                .retry_connection(false)
                .connection_timeout(Duration::from_millis(self.config.checkout_timeout_ms))
                .idle_timeout(
                    Some(Duration::from_secs(self.config.idle_timeout_s)).filter(|d| !d.is_zero()),
                )
                .max_lifetime(
                    Some(Duration::from_secs(self.config.max_lifetime_s)).filter(|d| !d.is_zero()),
                )
                .error_sink(Box::new(LogSink {
                    data_source: src.target.ds.clone().into(),
                    room: src.target.room.clone().into(),
                    log: Arc::clone(&src.failure_log),
                }))
                .build_unchecked(Manager {
                    target: Arc::clone(&src.target),
                    profile: profile & PROFILE_CAPS,
                });
            Arc::new(DsPool {
                pool,
                connecting: AtomicU32::new(0),
            })
        });
        Arc::clone(pool)
    }

    /// Checks out a connection to `ds` for a client with `profile` capabilities, with the
    /// data source it was taken for.
    pub async fn get(
        &self,
        ds: &str,
        profile: CapabilityFlags,
    ) -> Result<(Conn, SharedTarget), ProxyError> {
        let src = self.source(ds)?;
        let p = self.pool(&src, profile);
        let room = || src.target.room.clone();
        let failed = |e: ProxyError| {
            src.errors.fetch_add(1, Ordering::Relaxed);
            if let Some(left_out) = src.failure_log.allow() {
                tracing::warn!(
                    data_source = %ds,
                    room = %src.target.room,
                    code = e.code().0,
                    left_out,
                    "backend checkout failed: {e}"
                );
            }
            e
        };
        // bb8 reports connect failures only to its error sink and lets `get` run into its
        // timeout. When a new connection is needed anyway, open it here so a dead backend is
        // reported at once, with its cause.
        let state = p.pool.state();
        if state.idle_connections == 0 {
            let connecting = p.connecting.fetch_add(1, Ordering::AcqRel);
            let result = if state.connections + connecting < self.config.max_size {
                Some(BackendConn::connect(&src.target, profile & PROFILE_CAPS).await)
            } else {
                None
            };
            p.connecting.fetch_sub(1, Ordering::AcqRel);
            match result {
                // Fails only when the pool filled up meanwhile; the spare is then closed.
                Some(Ok(conn)) => {
                    let _ = p.pool.add(conn);
                }
                Some(Err(e)) => {
                    return Err(failed(ProxyError::BackendUnavailable {
                        ds: ds.to_string(),
                        room: room(),
                        reason: e.to_string(),
                    }))
                }
                None => {}
            }
        }
        src.waiters.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(&src.waiters);
        let got = p.pool.get_owned().await;
        drop(waiting);
        let conn = got.map_err(|e| {
            failed(match e {
                RunError::TimedOut => ProxyError::PoolTimeout {
                    ds: ds.to_string(),
                    room: room(),
                    ms: self.config.checkout_timeout_ms,
                    max: self.config.max_size,
                },
                RunError::User(e) => ProxyError::BackendUnavailable {
                    ds: ds.to_string(),
                    room: room(),
                    reason: e.to_string(),
                },
            })
        })?;
        Ok((conn, Arc::clone(&src.target)))
    }

    /// Opens a connection outside any pool (server version probe, KILL).
    pub async fn dedicated(&self, ds: &str) -> Result<BackendConn, BackendError> {
        let target = self
            .target(ds)
            .ok_or_else(|| BackendError::Handshake(format!("unknown data source `{ds}`")))?;
        BackendConn::connect(&target, CapabilityFlags::empty()).await
    }
}

/// Whether two targets connect to the same server as the same account.
fn same_target(a: &Target, b: &Target) -> bool {
    (
        &a.room,
        &a.host,
        a.port,
        &a.schema,
        &a.user,
        &a.password,
        a.connect_timeout,
    ) == (
        &b.room,
        &b.host,
        b.port,
        &b.schema,
        &b.user,
        &b.password,
        b.connect_timeout,
    )
}

/// Failures bb8 sees by itself (keeping `min_idle` connections open), logged through the
/// data source's limiter like checkout failures.
#[derive(Debug, Clone)]
struct LogSink {
    data_source: Arc<str>,
    room: Arc<str>,
    log: Arc<crate::metrics::LogLimiter>,
}

impl bb8::ErrorSink<BackendError> for LogSink {
    fn sink(&self, error: BackendError) {
        if let Some(left_out) = self.log.allow() {
            tracing::warn!(data_source = %self.data_source, room = %self.room, left_out, "backend pool error: {error}");
        }
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<BackendError>> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(ds: &str, port: u16) -> (String, SharedTarget) {
        let t = Target {
            ds: ds.into(),
            room: "B".into(),
            host: "127.0.0.1".into(),
            port,
            schema: "shop".into(),
            user: "rb".into(),
            password: "rb".into(),
            connect_timeout: Duration::from_millis(100),
        };
        (ds.to_string(), Arc::new(t))
    }

    #[test]
    fn an_update_keeps_unchanged_sources_and_retires_removed_ones_for_one_update() {
        let pools = Pools::new(
            HashMap::from([target("a", 1), target("b", 2)]),
            PoolConfig::default(),
        );
        let a = pools.source("a").unwrap();
        // `a` unchanged, `b` renamed to `c`.
        let changed = pools.update(HashMap::from([target("a", 1), target("c", 2)]));
        assert_eq!(changed, ["b", "c"]);
        assert!(
            Arc::ptr_eq(&a, &pools.source("a").unwrap()),
            "a kept its pools"
        );
        // A session that resolved `b` on the rules being replaced still gets its pools…
        assert!(pools.source("b").is_ok());
        assert!(pools.stats().iter().all(|s| s.data_source != "b"));
        // … until the next update.
        let changed = pools.update(HashMap::from([target("a", 3), target("c", 2)]));
        assert_eq!(changed, ["a"]);
        assert!(pools.source("b").is_err());
        assert!(
            !Arc::ptr_eq(&a, &pools.source("a").unwrap()),
            "a changed: new pools"
        );
    }
}
