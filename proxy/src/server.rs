//! The client listener: one task per connection, bounded by a semaphore of
//! `proxy.max_connections` permits; a client over the limit gets error 1040 instead of a greeting.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shard_rules::{Config, RuleSet};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::backend::Target;
use crate::error::ProxyError;
use crate::packet::PacketIo;
use crate::pool::Pools;
use crate::session::{Session, Shared};

/// Builds the shared state (pools are created lazily, nothing connects yet). The proxy serves
/// the data sources of its own room only; `config.proxy.room` must be a room of `rules`.
pub fn shared(config: Config, rules: RuleSet) -> Result<Arc<Shared>, String> {
    let timeout = Duration::from_millis(config.pool.connect_timeout_ms);
    let targets: HashMap<String, Arc<Target>> = rules
        .data_sources()
        .iter()
        .filter(|(_, ds)| ds.room == config.proxy.room)
        .map(|(name, ds)| {
            let t = Target {
                ds: name.clone(),
                room: ds.room.clone(),
                host: ds.host.clone(),
                port: ds.port,
                schema: ds.schema.clone(),
                user: ds.user.clone(),
                password: ds.password.clone(),
                connect_timeout: timeout,
            };
            (name.clone(), Arc::new(t))
        })
        .collect();
    let pools = Pools::new(targets, config.pool.clone());
    Shared::new(config, rules, pools).map(Arc::new)
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

/// Re-reads the rules file and swaps the new rules in atomically: statements already deciding
/// keep the snapshot they took; the next statement of every session sees the new rules (a new
/// write-ban refuses the next write to a banned code, also inside an open transaction). A file
/// that does not parse or validate is refused with every problem, and the old rules keep
/// serving. Changes that need a restart are refused too: this proxy's room leaving the rules,
/// its data sources (pools are built at start), or the snowflake ID settings.
pub fn reload(shared: &Shared, path: &std::path::Path) -> Result<Arc<RuleSet>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the rules file {}: {e}", path.display()))?;
    let new = RuleSet::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let old = shared.rules.load_full();
    let room = &shared.config.proxy.room;
    if new.room_id(room) != Some(shared.room) {
        return Err(format!(
            "{}: room `{room}` moved or left the rules; restart the proxy for that",
            path.display()
        ));
    }
    let local = |r: &RuleSet| -> Vec<(String, String)> {
        r.data_sources()
            .iter()
            .filter(|(_, ds)| &ds.room == room)
            .map(|(n, ds)| (n.clone(), format!("{ds:?}")))
            .collect()
    };
    if local(&old) != local(&new) {
        return Err(format!(
            "{}: the data sources of room `{room}` changed; restart the proxy for that (pools \
             are built at start)",
            path.display()
        ));
    }
    if old.segments() != new.segments() {
        return Err(format!(
            "{}: the segment allocation table ([segments]) changed; restart the proxy for that",
            path.display()
        ));
    }
    // The segment allocator holds a connection target chosen at start.
    let source = |r: &RuleSet| crate::session::segment_source(r).map(|d| format!("{d:?}"));
    if source(&old) != source(&new) {
        return Err(format!(
            "{}: the center data source of the segment allocation table changed; restart the \
             proxy for that",
            path.display()
        ));
    }
    if old.ids() != new.ids() {
        return Err(format!(
            "{}: the snowflake ID settings ([ids]) changed; restart every proxy for that",
            path.display()
        ));
    }
    // The cut-over's invariant: a route code changes rooms only while it is banned, in the
    // rules being replaced and in the new ones, so no write runs on either side of the move.
    let (old_route, new_route) = (old.route(), new.route());
    if old_route.count != new_route.count || old_route.key != new_route.key {
        return Err(format!(
            "{}: the route code function ([route_codes] count or key) changed; that moves \
             every user, and needs a restart of every proxy with all writes stopped",
            path.display()
        ));
    }
    let moved: Vec<u32> = (0..new_route.count)
        .filter(|c| old.room_name(old.owner(*c)) != new.room_name(new.owner(*c)))
        .filter(|c| !(old.is_banned(*c) && new.is_banned(*c)))
        .collect();
    if let Some(first) = moved.first() {
        return Err(format!(
            "{}: the traffic rule moves route code {first} from room `{}` to room `{}` ({} \
             code(s) in all) without a write-ban on it in both the serving rules (ban version \
             {}) and the new ones (ban version {}); ban the codes first, then move them",
            path.display(),
            old.room_name(old.owner(*first)),
            new.room_name(new.owner(*first)),
            moved.len(),
            old.ban_version(),
            new.ban_version()
        ));
    }
    let new = Arc::new(new);
    shared.rules.store(new.clone());
    Ok(new)
}
