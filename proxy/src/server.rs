//! The client listener: one task per connection, bounded by a semaphore of
//! `proxy.max_connections` permits; a client over the limit gets error 1040 instead of a greeting.

use std::sync::Arc;
use std::time::Duration;

use shard_rules::{Config, RuleSet};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::error::ProxyError;
use crate::packet::PacketIo;
use crate::pool::Pools;
use crate::session::{Session, Shared};

/// Builds the shared state (pools are created lazily, nothing connects yet). The proxy serves
/// the data sources of its own room only; `config.proxy.room` must be a room of `rules`.
/// `rules_text` is the rules file's text as read from `rules_path`.
pub fn shared(
    config: Config,
    rules: RuleSet,
    rules_path: std::path::PathBuf,
    rules_text: String,
) -> Result<Arc<Shared>, String> {
    let timeout = Duration::from_millis(config.pool.connect_timeout_ms);
    let targets = crate::reload::local_targets(&rules, &config.proxy.room, timeout);
    let pools = Pools::new(targets, config.pool.clone());
    Shared::new(config, rules, pools, rules_path, rules_text).map(Arc::new)
}

/// Accepts clients until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let limit = shared.config.proxy.max_connections;
    let permits = Arc::new(Semaphore::new(limit));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            shared
                .stats
                .refused_limit
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let mut io = PacketIo::new(stream, crate::packet::CLIENT_CHUNK);
                let _ = io
                    .send(0, &ProxyError::TooManyConnections(limit).to_err_payload())
                    .await;
            });
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Some(session) = Session::accept(shared, stream, peer).await {
                session.run().await;
            }
            drop(permit);
        });
    }
    drop(listener);
    let open = limit - permits.available_permits();
    info!(
        open_sessions = open,
        "shutting down: no new connections, idle sessions close now"
    );
    shared.shutdown.send_replace(true);
    let grace = Duration::from_secs(shared.config.proxy.shutdown_timeout_s);
    let all = u32::try_from(limit).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(grace, permits.acquire_many(all)).await;
    match drained {
        Ok(_) => {
            // Nothing runs any more: ctl may stop counting this proxy.
            crate::cluster::deregister(&shared).await;
            let plans = shared.plans.stats();
            info!(
                foreign_reads = shared
                    .foreign_reads
                    .load(std::sync::atomic::Ordering::Relaxed),
                plan_cache_hits = plans.hits,
                plan_cache_misses = plans.misses,
                plan_cache_parsed = plans.parsed,
                plan_cache_entries = plans.entries,
                plan_cache_hit_rate = format!("{:.3}", plans.hit_rate()),
                "all sessions closed"
            )
        }
        Err(_) => warn!(
            open_sessions = limit - permits.available_permits(),
            "shutdown timeout: closing sessions still in a transaction (they roll back)"
        ),
    }
}
