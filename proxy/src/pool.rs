//! Backend connection pools: bb8 over [`BackendConn`], one pool per data source and client
//! capability profile (a profile is the client's choice of the capabilities that change the
//! wire format, see [`PROFILE_CAPS`]; most deployments see one or two).
//!
//! No ping on checkout: a connection that failed is marked broken by the code that saw the
//! failure, and bb8 drops it on return (`has_broken`). Pools are created lazily on first use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bb8::{ManageConnection, Pool, PooledConnection, RunError};
use mysql_common::constants::CapabilityFlags;
use shard_rules::config::PoolConfig;

use crate::backend::{BackendConn, BackendError, SharedTarget, PROFILE_CAPS};
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

/// All pools of this proxy.
pub struct Pools {
    targets: HashMap<String, SharedTarget>,
    config: PoolConfig,
    /// data source → capability profile bits → pool.
    pools: RwLock<HashMap<String, HashMap<u32, Arc<DsPool>>>>,
}

impl Pools {
    pub fn new(targets: HashMap<String, SharedTarget>, config: PoolConfig) -> Self {
        Pools {
            targets,
            config,
            pools: RwLock::new(HashMap::new()),
        }
    }

    pub fn target(&self, ds: &str) -> Option<&SharedTarget> {
        self.targets.get(ds)
    }

    fn pool(&self, ds: &str, profile: CapabilityFlags) -> Result<Arc<DsPool>, ProxyError> {
        let bits = (profile & PROFILE_CAPS).bits();
        if let Some(p) = self
            .pools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(ds)
            .and_then(|m| m.get(&bits))
        {
            return Ok(Arc::clone(p));
        }
        let target = self
            .targets
            .get(ds)
            .ok_or_else(|| ProxyError::BackendUnavailable {
                ds: ds.to_string(),
                room: "?".into(),
                reason: "no such data source in the configuration".into(),
            })?;
        let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
        let pool = pools
            .entry(ds.to_string())
            .or_default()
            .entry(bits)
            .or_insert_with(|| {
                let pool = Pool::builder()
                    .max_size(self.config.max_size)
                    .min_idle(Some(self.config.min_idle).filter(|n| *n > 0))
                    .test_on_check_out(false)
                    .retry_connection(false)
                    .connection_timeout(Duration::from_millis(self.config.checkout_timeout_ms))
                    .idle_timeout(
                        Some(Duration::from_secs(self.config.idle_timeout_s))
                            .filter(|d| !d.is_zero()),
                    )
                    .max_lifetime(
                        Some(Duration::from_secs(self.config.max_lifetime_s))
                            .filter(|d| !d.is_zero()),
                    )
                    .error_sink(Box::new(LogSink))
                    .build_unchecked(Manager {
                        target: Arc::clone(target),
                        profile: profile & PROFILE_CAPS,
                    });
                Arc::new(DsPool {
                    pool,
                    connecting: AtomicU32::new(0),
                })
            });
        Ok(Arc::clone(pool))
    }

    /// Checks out a connection to `ds` for a client with `profile` capabilities.
    pub async fn get(&self, ds: &str, profile: CapabilityFlags) -> Result<Conn, ProxyError> {
        let p = self.pool(ds, profile)?;
        let room = || {
            self.targets
                .get(ds)
                .map(|t| t.room.clone())
                .unwrap_or_default()
        };
        // bb8 reports connect failures only to its error sink and lets `get` run into its
        // timeout. When a new connection is needed anyway, open it here so a dead backend is
        // reported at once, with its cause.
        let state = p.pool.state();
        if state.idle_connections == 0 {
            let connecting = p.connecting.fetch_add(1, Ordering::AcqRel);
            let result = if state.connections + connecting < self.config.max_size {
                match self.targets.get(ds) {
                    Some(target) => {
                        Some(BackendConn::connect(target, profile & PROFILE_CAPS).await)
                    }
                    None => None,
                }
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
                    return Err(ProxyError::BackendUnavailable {
                        ds: ds.to_string(),
                        room: room(),
                        reason: e.to_string(),
                    })
                }
                None => {}
            }
        }
        p.pool.get_owned().await.map_err(|e| match e {
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
    }

    /// Opens a connection outside any pool (server version probe, health checks).
    pub async fn dedicated(&self, ds: &str) -> Result<BackendConn, BackendError> {
        let target = self
            .targets
            .get(ds)
            .ok_or_else(|| BackendError::Handshake(format!("unknown data source `{ds}`")))?;
        BackendConn::connect(target, CapabilityFlags::empty()).await
    }
}

#[derive(Debug, Clone, Copy)]
struct LogSink;

impl bb8::ErrorSink<BackendError> for LogSink {
    fn sink(&self, error: BackendError) {
        tracing::warn!(%error, "backend pool error");
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<BackendError>> {
        Box::new(*self)
    }
}
