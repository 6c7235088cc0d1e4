//! One client connection: handshake, then a loop of commands.
//!
//! A command runs as: analyse (classify.rs) → handle it in the proxy if it is `USE`, `SET
//! PASSWORD`, `KILL` or a prepared-statement bookkeeping command → acquire a backend connection
//! (the pinned one, or one from the pool brought to this session's schema and settings) → relay
//! the response → update the session (status, last insert id, pins, settings) → release the
//! backend connection unless the session is pinned.
//!
//! State ([`SessionState`]): idle (no backend), lingering (keeps the backend for one more
//! statement because the last one left warnings or SQL_CALC_FOUND_ROWS behind), pinned (state
//! that cannot be replayed) or in a transaction (the backend said so in its status flags).
//! Invariant: a backend connection leaves a session only when none of these hold, or broken.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use mysql_common::collations::{Collation, CollationId};
use mysql_common::constants::{CapabilityFlags, ColumnType};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, AuthSwitchRequest, HandshakeResponse};
use mysql_common::proto::MySerialize;
use shard_rules::config::{parse_password_hash, ConnectionMode, DataSource, RoomRole};
use shard_rules::Config;
use shard_rules::{RoomId, RuleSet};
use tracing::{debug, info, warn};

use crate::auth;
use crate::backend::{charset_vars, frame, frame_into, Response, RESULTS_COLLATION};
use crate::classify::{self, pin, Kind, Statement};
use crate::error::{ProxyError, SessionError};
use crate::packet::{Packet, PacketIo, PacketTooLarge};
use crate::pool::{Conn, Pools};
use crate::response::{
    ok_payload, Outcome, ResponseKind, STATUS_AUTOCOMMIT, STATUS_IN_TRANS, STATUS_MORE_RESULTS,
};

const COM_QUIT: u8 = 0x01;
const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;
const COM_FIELD_LIST: u8 = 0x04;
const COM_STATISTICS: u8 = 0x09;
const COM_PROCESS_KILL: u8 = 0x0C;
const COM_PING: u8 = 0x0E;
const COM_CHANGE_USER: u8 = 0x11;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;
const COM_STMT_RESET: u8 = 0x1A;
const COM_SET_OPTION: u8 = 0x1B;
const COM_STMT_FETCH: u8 = 0x1C;
const COM_RESET_CONNECTION: u8 = 0x1F;

/// State shared by all sessions of one proxy.
pub struct Shared {
    pub config: Config,
    /// The rules this proxy applies (rooms, databases, users, route codes, write-ban); swapped
    /// whole when the rules file is reloaded (SIGHUP). Each statement decides on one snapshot.
    pub rules: arc_swap::ArcSwap<RuleSet>,
    /// This proxy's room in `rules`.
    pub room: RoomId,
    /// Snowflake IDs for generated key columns: this room, `proxy.worker_id` (in cluster mode,
    /// the worker id leased from etcd).
    pub ids: id_gen::Generator,
    /// Cluster mode: writes of unit databases are held while the registration may have lapsed.
    pub write_fence: crate::cluster::WriteFence,
    /// Cluster mode: the lease of the worker id, checked before every snowflake key.
    pub worker_fence: std::sync::OnceLock<Arc<crate::cluster::WorkerFence>>,
    /// Segment keys from the rules' `[segments]` table, when there is one.
    pub segments: Option<id_gen::SegmentAllocator<crate::segments::CenterSegments>>,
    /// Reads whose (hinted) ShardingKey belongs to another room, served locally.
    pub foreign_reads: std::sync::atomic::AtomicU64,
    /// Statement analyses by digest, shared by all sessions.
    pub plans: shard_rules::plan::PlanCache,
    /// The last write-ban this proxy reported effective: its version and when.
    pub ban_effective: std::sync::Mutex<Option<(u64, std::time::SystemTime)>>,
    /// Cluster mode: whether etcd is reachable, and what was last heard from it.
    pub cluster: std::sync::Mutex<crate::cluster::Status>,
    pub pools: Pools,
    /// Commit decisions of XA transactions across data sources.
    pub xa: crate::xa::XaLog,
    version: RwLock<Option<String>>,
    /// When the last attempt to learn the version failed: logins do not retry for a while.
    version_failed_at: std::sync::Mutex<Option<std::time::Instant>>,
    next_connection_id: AtomicU32,
    /// Becomes `true` when the proxy shuts down: idle sessions close, others finish first.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Every logged-in session by connection id, for KILL.
    sessions: std::sync::Mutex<HashMap<u32, Arc<SessionHandle>>>,
    /// Route codes written by backend connections lost in the middle of a write, until their
    /// server thread is confirmed gone (a COMMIT the server received may still be finishing):
    /// a write-ban waits for these too.
    fences: std::sync::Mutex<HashMap<u64, std::collections::BTreeSet<u32>>>,
    next_fence: std::sync::atomic::AtomicU64,
    /// The counters behind `SHOW STATS` and the metrics.
    pub stats: crate::metrics::Stats,
    /// The rules file this proxy reloads and the admin interface writes back to.
    pub rules_path: std::path::PathBuf,
    /// Which rules are applied, since when, by whom.
    applied: std::sync::Mutex<crate::reload::Applied>,
    /// One rules change (reload, admin change) at a time.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// Bumped by every rules swap: sessions then look up their data source again.
    generation: std::sync::atomic::AtomicU64,
    started: std::time::SystemTime,
}

/// What other sessions may see of a session and do to it (KILL), and what `SHOW SESSIONS`
/// shows of it.
#[derive(Default)]
pub struct SessionHandle {
    /// Database, mode and client address: changed by USE and COM_CHANGE_USER only.
    info: std::sync::Mutex<SessionInfo>,
    /// [`SessionState`] after the last command, as a number.
    state: std::sync::atomic::AtomicU8,
    /// The first [`STATEMENT_SHOWN`] bytes of the current (or last) statement, in a buffer
    /// reused from statement to statement; `SHOW SESSIONS` shows its digest.
    statement: std::sync::Mutex<Vec<u8>>,
    user: std::sync::Mutex<String>,
    /// Data source and backend thread id serving the session right now; cleared when the
    /// backend connection leaves the session (see `Held`'s `Drop`).
    backend: std::sync::Mutex<Option<(String, u32)>>,
    /// The side connections the session holds now (sharded statements, transactions across
    /// data sources), by data source and backend thread id.
    sides: std::sync::Mutex<Vec<(String, u32)>>,
    killed: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
    /// Route codes this session writes in its current transaction (or its statement in flight):
    /// a write-ban on any of them is effective only once they are gone.
    writing: std::sync::Mutex<std::collections::BTreeSet<u32>>,
}

#[derive(Default, Clone)]
struct SessionInfo {
    database: Option<String>,
    mode: Option<ConnectionMode>,
    peer: Option<SocketAddr>,
    since: Option<std::time::SystemTime>,
}

/// How much of a statement a session keeps for `SHOW SESSIONS`.
const STATEMENT_SHOWN: usize = 1024;

/// One session as `SHOW SESSIONS` shows it.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub id: u32,
    pub user: String,
    pub peer: String,
    pub database: Option<String>,
    pub mode: Option<ConnectionMode>,
    pub state: SessionState,
    /// Data source and backend thread id serving the session now.
    pub backend: Option<(String, u32)>,
    /// Route codes its open transaction has written (a write-ban waits for these).
    pub writing: String,
    /// The current or last statement's digest (literals as `?`), cut at 1 KiB.
    pub digest: String,
    pub since: Option<std::time::SystemTime>,
}

/// The center room's data source of the rules' `[segments]` database, where segment blocks
/// are taken; `None` without `[segments]`.
pub fn segment_source(rules: &RuleSet) -> Result<Option<DataSource>, String> {
    let Some(seg) = rules.segments() else {
        return Ok(None);
    };
    let db = rules
        .database(&seg.database)
        .ok_or_else(|| format!("segments: no database `{}`", seg.database))?;
    let physical = db
        .data_sources
        .get(db.default_data_source)
        .and_then(|l| l.physical.get(rules.center() as usize).cloned().flatten())
        .ok_or_else(|| {
            format!(
                "segments: `{}` has no data source in the center room",
                seg.database
            )
        })?;
    rules
        .data_sources()
        .get(&physical)
        .cloned()
        .map(Some)
        .ok_or_else(|| format!("segments: no data source `{physical}`"))
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a connection kept for the last statement's diagnostics (warnings, errors,
/// SQL_CALC_FOUND_ROWS) waits for the client's next statement before it returns to the pool.
const LINGER: Duration = Duration::from_secs(1);

/// Used when no backend could be reached to learn its version.
const FALLBACK_VERSION: &str = "5.5.5-10.11.0-MariaDB-rainbow-bridge";

impl Shared {
    /// `config.proxy.room` must be a room of `rules` (checked when the files are loaded); the
    /// ID generator must be valid for this room and `proxy.worker_id`.
    pub fn new(
        config: Config,
        rules: RuleSet,
        pools: Pools,
        rules_path: std::path::PathBuf,
        rules_text: String,
    ) -> Result<Self, String> {
        let room = rules
            .room_id(&config.proxy.room)
            .ok_or_else(|| format!("room `{}` is not a room of the rules", config.proxy.room))?;
        let ids = id_gen::Generator::new(rules.ids(), u32::from(room), config.proxy.worker_id)
            .map_err(|e| format!("snowflake IDs (rules `ids`, proxy.worker_id): {e}"))?;
        let segments = match (rules.segments(), segment_source(&rules)?) {
            (Some(seg), Some(ds)) => Some(id_gen::SegmentAllocator::new(
                crate::segments::CenterSegments::new(&ds, &seg.table, seg.step),
                id_gen::SegmentConfig::default(),
            )),
            _ => None,
        };
        let now = std::time::SystemTime::now();
        let xa_path = match &config.proxy.xa_log {
            Some(p) => std::path::PathBuf::from(p),
            None => rules_path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(format!(
                    "rainbow-bridge-xa-{}-{}.log",
                    config.proxy.room,
                    crate::xa::identity(&config)
                )),
        };
        let xa_prefix = crate::xa::prefix(&config);
        Ok(Shared {
            stats: crate::metrics::Stats::new(config.metrics.is_some()),
            applied: std::sync::Mutex::new(crate::reload::Applied {
                version: rules.version(),
                at: now,
                by: "start".into(),
                text: rules_text.into(),
            }),
            rules_path,
            reload_lock: tokio::sync::Mutex::new(()),
            generation: std::sync::atomic::AtomicU64::new(0),
            started: now,
            plans: shard_rules::plan::PlanCache::new(config.proxy.plan_cache_size),
            config,
            foreign_reads: std::sync::atomic::AtomicU64::new(0),
            ban_effective: std::sync::Mutex::new(Some((
                rules.ban_version(),
                std::time::SystemTime::now(),
            ))),
            cluster: std::sync::Mutex::new(crate::cluster::Status::default()),
            worker_fence: std::sync::OnceLock::new(),
            write_fence: crate::cluster::WriteFence::default(),
            rules: arc_swap::ArcSwap::from_pointee(rules),
            room,
            ids,
            segments,
            pools,
            xa: crate::xa::XaLog::new(xa_path, xa_prefix),
            version: RwLock::new(None),
            version_failed_at: std::sync::Mutex::new(None),
            next_connection_id: AtomicU32::new(1),
            shutdown: tokio::sync::watch::Sender::new(false),
            sessions: std::sync::Mutex::new(HashMap::new()),
            fences: std::sync::Mutex::new(HashMap::new()),
            next_fence: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Waits until a write-ban just swapped in is effective — no session still writes, in a
    /// statement in flight or an open transaction, to a code it bans — and reports when. A
    /// session still writing to a banned code after `timeout` is killed (its transaction is
    /// rolled back). "Effective" means no write to a banned code commits after that time.
    /// `None`: a newer write-ban was swapped in first, and its own waiter reports instead.
    pub async fn ban_effective(
        &self,
        rules: &RuleSet,
        timeout: Duration,
    ) -> Option<std::time::SystemTime> {
        let start = std::time::Instant::now();
        let superseded = || {
            let current = self.rules.load();
            current.ban_version() != rules.ban_version()
                || current.banned_codes() != rules.banned_codes()
        };
        let Some((waited, aborted)) = self
            .drain_writers(|c| rules.is_banned(c), timeout, superseded)
            .await
        else {
            info!(
                ban_version = rules.ban_version(),
                newer_ban_version = self.rules.load().ban_version(),
                "write-ban superseded before it took effect; the newer one is awaited instead"
            );
            return None;
        };
        let at = std::time::SystemTime::now();
        self.stats
            .ban_wait_ms
            .store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        let ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        *lock(&self.ban_effective) = Some((rules.ban_version(), at));
        info!(
            ban_version = rules.ban_version(),
            banned = %rules.banned_codes(),
            effective_ms = ms as u64,
            waited_for = waited.len(),
            connections = ?waited,
            aborted,
            "write-ban effective"
        );
        Some(at)
    }

    /// Waits until no session writes — in a statement in flight or an open transaction — to a
    /// route code `hit` selects; a session still writing one after `timeout` is killed (its
    /// transaction is rolled back) and waited for. Returns the connection ids waited for and
    /// how many were killed; `None` as soon as `moot()` says the wait no longer matters.
    pub async fn drain_writers(
        &self,
        hit: impl Fn(u32) -> bool,
        timeout: Duration,
        moot: impl Fn() -> bool,
    ) -> Option<(Vec<u32>, usize)> {
        let writes = |codes: &std::collections::BTreeSet<u32>| codes.iter().any(|c| hit(*c));
        let holders = || -> Vec<(u32, Arc<SessionHandle>)> {
            lock(&self.sessions)
                .iter()
                .filter(|(_, h)| writes(&lock(&h.writing)))
                .map(|(id, h)| (*id, h.clone()))
                .collect()
        };
        let start = std::time::Instant::now();
        // Which sessions are waited for, by connection id (as KILL and the log name them).
        let waited: Vec<u32> = holders().iter().map(|(id, _)| *id).collect();
        let mut aborted = 0;
        loop {
            if moot() {
                return None;
            }
            let now = holders();
            let fenced = lock(&self.fences).values().any(writes);
            if now.is_empty() && !fenced {
                return Some((waited, aborted));
            }
            if start.elapsed() >= timeout {
                for (id, h) in &now {
                    if !h.killed.swap(true, Ordering::AcqRel) {
                        aborted += 1;
                        warn!(
                            connection_id = id,
                            "aborting a transaction still writing route codes that are banned \
                             or moving"
                        );
                        // A statement running on the server (a lock wait, a long UPDATE) is
                        // stopped too; the session then keeps its codes claimed until the
                        // server thread is gone.
                        self.kill_backends(h).await;
                    }
                    h.wake.notify_waiters();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cluster mode, while writes are held: a statement still running that writes route codes
    /// is stopped (its backend thread killed, the session closed and its transaction rolled
    /// back), so nothing it does commits after this proxy's lease may have expired. A
    /// transaction that wrote route codes and waits for its client is refused at its next
    /// statement instead, with a message saying why. Returns how many were stopped.
    pub async fn abort_running_writes(&self) -> usize {
        let running: Vec<(u32, Arc<SessionHandle>)> = lock(&self.sessions)
            .iter()
            .filter(|(_, h)| {
                h.state.load(Ordering::Relaxed) == SessionState::Running as u8
                    && !lock(&h.writing).is_empty()
            })
            .map(|(id, h)| (*id, h.clone()))
            .collect();
        let mut stopped = 0;
        for (id, h) in running {
            if h.killed.swap(true, Ordering::AcqRel) {
                continue;
            }
            stopped += 1;
            let codes = shard_rules::route::CodeSet::from_ranges(
                lock(&h.writing).iter().map(|c| (*c, *c)).collect(),
            );
            warn!(
                connection_id = id,
                codes = %codes,
                "writes are held (this proxy's registration in etcd may have lapsed): stopping a \
                 running statement that writes route codes"
            );
            self.kill_backends(&h).await;
            h.wake.notify_waiters();
        }
        stopped
    }

    /// Kills every backend connection a session holds now: its own and its side connections
    /// (a write over several nodes or data sources). Each KILL is given 2 s.
    async fn kill_backends(&self, h: &SessionHandle) {
        let mut threads: Vec<(String, u32)> = lock(&h.sides).clone();
        threads.extend(lock(&h.backend).clone());
        for (ds, thread) in threads {
            let kill = self.kill_backend_thread(&ds, thread, false);
            if tokio::time::timeout(Duration::from_secs(2), kill)
                .await
                .is_err()
            {
                warn!(data_source = %ds, backend_thread = thread, "KILL not answered within 2 s");
            }
        }
    }

    /// `KILL [QUERY] thread` on data source `ds`, sent from a new connection: the server's
    /// answer (`Err(packet)` for an ERR), or why the server could not be asked.
    pub async fn kill_backend_thread(
        &self,
        ds: &str,
        thread: u32,
        query_only: bool,
    ) -> Result<Result<(), Bytes>, String> {
        let mut conn = self.pools.dedicated(ds).await.map_err(|e| e.to_string())?;
        let sql = if query_only {
            format!("KILL QUERY {thread}")
        } else {
            format!("KILL {thread}")
        };
        conn.query(&sql)
            .await
            .map(|r| r.map(|_| ()))
            .map_err(|e| e.to_string())
    }

    /// Keeps `codes` claimed until backend thread `thread` of data source `ds` — whose
    /// connection was lost in the middle of a write — is gone from the server: it is killed and
    /// `KILL` is repeated until the server answers "unknown thread" (1094). While the server
    /// cannot be reached the claims stay, so a write-ban on them is not reported effective.
    pub fn fence_lost_backend(
        self: &Arc<Self>,
        ds: String,
        thread: u32,
        codes: std::collections::BTreeSet<u32>,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            warn!(data_source = %ds, backend_thread = thread, "no runtime to confirm a lost backend thread gone");
            return;
        };
        let id = self.next_fence.fetch_add(1, Ordering::Relaxed);
        lock(&self.fences).insert(id, codes);
        let shared = Arc::clone(self);
        runtime.spawn(async move {
            let start = std::time::Instant::now();
            let mut warned = false;
            loop {
                let gone = matches!(
                    shared.kill_backend_thread(&ds, thread, false).await,
                    Ok(Err(err)) if err.get(1..3) == Some(&1094u16.to_le_bytes()[..])
                );
                if gone {
                    break;
                }
                if !warned && start.elapsed() > Duration::from_secs(5) {
                    warned = true;
                    warn!(
                        data_source = %ds,
                        backend_thread = thread,
                        "a backend connection lost during a write is not confirmed gone yet; \
                         write-bans on its route codes wait for it"
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            lock(&shared.fences).remove(&id);
            info!(
                data_source = %ds,
                backend_thread = thread,
                waited_ms = start.elapsed().as_millis() as u64,
                "backend thread of a connection lost during a write is gone; its route codes are released"
            );
        });
    }

    /// The server version clients see: the backend's, with MariaDB's `5.5.5-` prefix.
    pub async fn server_version(&self) -> String {
        if let Some(v) = self
            .version
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return v;
        }
        let recently_failed = self
            .version_failed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10));
        if recently_failed {
            return FALLBACK_VERSION.to_string();
        }
        let local: Vec<String> = self
            .rules
            .load()
            .data_sources()
            .iter()
            .filter(|(_, ds)| ds.room == self.config.proxy.room)
            .map(|(n, _)| n.clone())
            .collect();
        for ds in local {
            match self.pools.dedicated(&ds).await {
                Ok(conn) => {
                    let v = if conn.server_version.starts_with("5.5.5-") {
                        conn.server_version.clone()
                    } else {
                        format!("5.5.5-{}", conn.server_version)
                    };
                    *self.version.write().unwrap_or_else(|e| e.into_inner()) = Some(v.clone());
                    return v;
                }
                Err(e) => {
                    warn!(data_source = %ds, error = %e, "cannot reach backend to learn its version")
                }
            }
        }
        *self
            .version_failed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
        FALLBACK_VERSION.to_string()
    }

    /// The rules swap count (see `generation`).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
    pub(crate) fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
    /// Which rules are applied, since when and by whom.
    pub fn applied(&self) -> crate::reload::Applied {
        lock(&self.applied).clone()
    }
    pub(crate) fn set_applied(&self, a: crate::reload::Applied) {
        *lock(&self.applied) = a;
    }
    /// The last write-ban this proxy reported effective: its version and when.
    pub fn ban_effective_at(&self) -> Option<(u64, std::time::SystemTime)> {
        *lock(&self.ban_effective)
    }
    /// When this proxy started.
    pub fn started(&self) -> std::time::SystemTime {
        self.started
    }
    /// Logged-in client sessions.
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }
    /// Whether connection `id` is still logged in.
    pub fn has_session(&self, id: u32) -> bool {
        lock(&self.sessions).contains_key(&id)
    }
    /// Every logged-in session, by connection id.
    pub fn sessions(&self) -> Vec<SessionView> {
        let handles: Vec<(u32, Arc<SessionHandle>)> = lock(&self.sessions)
            .iter()
            .map(|(id, h)| (*id, Arc::clone(h)))
            .collect();
        let mut out: Vec<SessionView> = handles
            .into_iter()
            .map(|(id, h)| {
                let info = lock(&h.info).clone();
                let text = lock(&h.statement).clone();
                let digest = match shard_rules::digest::digest(&text) {
                    Some(d) => d.text,
                    // Cut inside a string or comment: the text up to the cut, literals and all
                    // would leak values, so only its first word.
                    None => String::from_utf8_lossy(&text)
                        .split_whitespace()
                        .next()
                        .map(|w| format!("{w} …"))
                        .unwrap_or_default(),
                };
                SessionView {
                    id,
                    user: lock(&h.user).clone(),
                    peer: info.peer.map(|p| p.to_string()).unwrap_or_default(),
                    database: info.database,
                    mode: info.mode,
                    state: SessionState::from_u8(h.state.load(Ordering::Relaxed)),
                    backend: lock(&h.backend).clone(),
                    writing: shard_rules::route::CodeSet::from_ranges(
                        lock(&h.writing).iter().map(|c| (*c, *c)).collect(),
                    )
                    .to_string(),
                    digest,
                    since: info.since,
                }
            })
            .collect();
        out.sort_by_key(|v| v.id);
        out
    }

    pub fn next_connection_id(&self) -> u32 {
        // Wraps after 4 billion connections; 0 is skipped because clients treat it as "none".
        loop {
            let id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }
}

/// A session's backend connection and where it points.
struct Held {
    conn: Conn,
    ds: String,
    /// The data source the connection was opened to (a reload may since have changed it).
    target: crate::backend::SharedTarget,
    /// Makes the connection KILL's target while it is held.
    _kill_target: KillTarget,
}

/// While alive, `SessionHandle::backend` names the held connection.
struct KillTarget(Arc<SessionHandle>);

impl Drop for KillTarget {
    fn drop(&mut self) {
        // The connection goes back to the pool (or is closed): KILL must not reach it any more.
        *lock(&self.0.backend) = None;
    }
}

impl Held {
    fn new(
        conn: Conn,
        ds: String,
        target: crate::backend::SharedTarget,
        handle: &Arc<SessionHandle>,
    ) -> Held {
        *lock(&handle.backend) = Some((ds.clone(), conn.thread_id));
        Held {
            conn,
            ds,
            target,
            _kill_target: KillTarget(Arc::clone(handle)),
        }
    }

    /// The connection and its target, no longer KILL's target.
    fn into_parts(self) -> (Conn, String, crate::backend::SharedTarget) {
        (self.conn, self.ds, self.target)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Every end of a session, a panic included: the registry forgets it and its claims are
        // released — to a fence while a backend it still holds (only after a panic; `close`
        // fences its own) may be finishing a write (`Held`'s drop closes it).
        lock(&self.shared.sessions).remove(&self.connection_id);
        // A panic mid-statement may leave a response unread: the pool must not get it back.
        if std::thread::panicking() {
            if let Some(h) = self.held.as_mut() {
                h.conn.broken = true;
            }
            for s in self.side.values_mut() {
                s.conn.broken = true;
            }
        }
        let claims = std::mem::take(&mut *lock(&self.handle.writing));
        if let Some(h) = self.held.as_ref().filter(|_| !claims.is_empty()) {
            self.shared
                .fence_lost_backend(h.ds.clone(), h.conn.thread_id, claims);
        }
    }
}

/// What the admin interface shows for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Idle,
    Lingering,
    Pinned,
    InTransaction,
    /// A command is being served (what `SHOW SESSIONS` shows meanwhile).
    Running,
}

impl SessionState {
    fn from_u8(v: u8) -> SessionState {
        match v {
            1 => SessionState::Lingering,
            2 => SessionState::Pinned,
            3 => SessionState::InTransaction,
            4 => SessionState::Running,
            _ => SessionState::Idle,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            SessionState::Idle => "idle",
            SessionState::Lingering => "lingering",
            SessionState::Pinned => "pinned",
            SessionState::InTransaction => "in transaction",
            SessionState::Running => "running",
        }
    }
}

/// A statement prepared by the client, owned by the proxy.
struct Prepared {
    sql: Bytes,
    params: u16,
    info: Statement,
    /// The statement's analysis when it may change data in a unit or center-unit database:
    /// decided again at every execute, with the bound values.
    rules: Option<Arc<crate::enforce::PreparedRules>>,
    /// The database the analysis was made for: a later `USE` means analysing again.
    rules_db: Option<String>,
    /// The rules version the analysis was made with: a statement that needed no checks then
    /// (say, in a database that was a center database) is analysed again after a reload.
    rules_version: u64,
    /// For each generated key parameter the proxy added, how many client parameters precede
    /// it in the backend's statement.
    key_slots: Vec<usize>,
    /// Parameter types from the last execute that sent them (2 bytes per parameter).
    types: Option<Bytes>,
    /// COM_STMT_SEND_LONG_DATA payloads since the last execute or reset, replayed on execute.
    long_data: Vec<Bytes>,
    /// Bytes in `long_data`; past `max_allowed_packet` the data is dropped and execute fails.
    long_data_bytes: usize,
    long_data_overflow: bool,
}

enum Flow {
    Continue,
    Quit,
}

pub struct Session {
    shared: Arc<Shared>,
    handle: Arc<SessionHandle>,
    client: PacketIo,
    /// Reused to frame each command for its backend.
    framed: Vec<u8>,
    peer: SocketAddr,
    connection_id: u32,
    salt: [u8; 20],
    caps: CapabilityFlags,
    /// The collation the client asked for at login (or COM_CHANGE_USER); a reset returns to it.
    handshake_collation: u16,
    user: String,
    /// Current logical database as the client named it.
    db: Option<String>,
    /// Physical schema of the current database.
    schema: Option<String>,
    /// Data source serving the session now.
    ds: Option<String>,
    /// Session variables the client set: name → SQL literal. Applied to every backend used.
    vars: BTreeMap<String, String>,
    /// Status flags of the last response, for the proxy's own OK packets.
    status: u16,
    last_insert_id: u64,
    /// `SET @@rb_sharding_key`: the ShardingKey of writes that carry none themselves.
    session_key: Option<shard_rules::ShardingKey>,
    /// The user's connection mode (from the rules).
    mode: ConnectionMode,
    held: Option<Held>,
    /// Connections to the database's other data sources, kept while a transaction spans them
    /// (sharded execution, issue 9).
    side: BTreeMap<String, sharded::Side>,
    /// The open XA transaction (`transactions = "xa"`).
    xa: Option<xa_tx::XaTx>,
    /// Set while a merged result is being sent: the sequence id an error must take.
    err_seq: Option<u8>,
    pins: u8,
    linger: bool,
    stmts: HashMap<u32, Prepared>,
    next_stmt_id: u32,
    /// The last command got an error from the backend (for the counters).
    backend_failed: bool,
    /// [`Shared::generation`] when `ds` was last looked up.
    ds_generation: u64,
}

type Result<T, E = SessionError> = std::result::Result<T, E>;

mod sharded;
mod xa_tx;

impl Session {
    /// Runs the handshake; on success the session is ready for [`Session::run`].
    pub async fn accept(
        shared: Arc<Shared>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
    ) -> Option<Session> {
        let _ = stream.set_nodelay(true);
        let connection_id = shared.next_connection_id();
        let timeout = Duration::from_secs(shared.config.proxy.handshake_timeout_s);
        let mut session = Session {
            client: PacketIo::new(stream, crate::packet::CLIENT_CHUNK),
            framed: Vec::new(),
            peer,
            connection_id,
            salt: auth::new_salt(),
            caps: CapabilityFlags::empty(),
            handshake_collation: 45,
            user: String::new(),
            db: None,
            schema: None,
            ds: None,
            vars: BTreeMap::new(),
            status: STATUS_AUTOCOMMIT,
            last_insert_id: 0,
            session_key: None,
            mode: ConnectionMode::Unit,
            held: None,
            side: BTreeMap::new(),
            xa: None,
            err_seq: None,
            pins: 0,
            linger: false,
            stmts: HashMap::new(),
            next_stmt_id: 1,
            backend_failed: false,
            ds_generation: shared.generation(),
            handle: Arc::new(SessionHandle::default()),
            shared,
        };
        match tokio::time::timeout(timeout, session.handshake()).await {
            Ok(Ok(())) => {
                *lock(&session.handle.user) = session.user.clone();
                session.publish_info();
                lock(&session.shared.sessions).insert(connection_id, Arc::clone(&session.handle));
                session
                    .shared
                    .stats
                    .logged_in
                    .fetch_add(1, Ordering::Relaxed);
                Some(session)
            }
            Ok(Err(e)) => {
                session
                    .shared
                    .stats
                    .failed_login
                    .fetch_add(1, Ordering::Relaxed);
                // A login the multi-active rules refuse (8020, 8021) is a refusal too.
                if let SessionError::Client(p) | SessionError::Fatal(p) = &e {
                    if let Some(code) = p.refusal_code() {
                        let _ = session.shared.stats.refusal(code);
                    }
                }
                info!(peer = %peer, connection_id, error = %e, "login refused");
                None
            }
            Err(_) => {
                session
                    .shared
                    .stats
                    .failed_login
                    .fetch_add(1, Ordering::Relaxed);
                info!(peer = %peer, connection_id, "handshake timed out");
                None
            }
        }
    }

    async fn handshake(&mut self) -> Result<()> {
        let version = self.shared.server_version().await;
        let greeting = auth::greeting(&version, self.connection_id, &self.salt);
        self.client
            .send(0, &greeting)
            .await
            .map_err(SessionError::ClientIo)?;
        let p = self
            .read_client()
            .await?
            .ok_or_else(|| eof("client left during the handshake"))?;
        let resp: HandshakeResponse<'_> = match ParseBuf(&p.payload).parse(()) {
            Ok(r) => r,
            Err(_) if p.payload.len() == 32 => {
                return self
                    .refuse(
                        p.seq.wrapping_add(1),
                        ProxyError::Unsupported("TLS (SSL request)".into()),
                    )
                    .await;
            }
            Err(_) => {
                return self
                    .refuse(
                        p.seq.wrapping_add(1),
                        ProxyError::Malformed("bad handshake response"),
                    )
                    .await
            }
        };
        self.caps = resp.capabilities() & auth::SERVER_CAPS;
        // A MariaDB client (bit 0 cleared) that wants extended column metadata.
        if !resp
            .capabilities()
            .contains(CapabilityFlags::CLIENT_LONG_PASSWORD)
            && resp.mariadb_ext_capabilities().contains(
                mysql_common::constants::MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA,
            )
        {
            self.caps |= auth::EXT_METADATA;
        }
        if !self.caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
            return self
                .refuse(
                    p.seq.wrapping_add(1),
                    ProxyError::Unsupported("the pre-4.1 client protocol".into()),
                )
                .await;
        }
        let user = String::from_utf8_lossy(resp.user()).into_owned();
        let db = resp
            .db_name()
            .filter(|d| !d.is_empty())
            .map(|d| String::from_utf8_lossy(d).into_owned());
        let collation = resp.collation();
        let plugin_native = match resp.auth_plugin() {
            None => true,
            Some(p) => matches!(p, AuthPlugin::MysqlNativePassword),
        };
        let mut token = resp.scramble_buf().to_vec();
        let mut seq = p.seq.wrapping_add(1);
        if !plugin_native {
            // caching_sha2_password and others: ask for mysql_native_password with our salt.
            let mut data = self.salt.to_vec();
            data.push(0);
            let mut buf = Vec::new();
            AuthSwitchRequest::new(auth::NATIVE, data).serialize(&mut buf);
            self.client
                .send(seq, &buf)
                .await
                .map_err(SessionError::ClientIo)?;
            let p = self
                .read_client()
                .await?
                .ok_or_else(|| eof("client left during the auth switch"))?;
            token = p.payload.to_vec();
            seq = p.seq.wrapping_add(1);
        }
        if let Err(e) = self.authenticate(&user, &token, db.as_deref()) {
            return self.refuse(seq, e).await;
        }
        self.mode = self
            .shared
            .rules
            .load()
            .users()
            .get(&user)
            .map_or(ConnectionMode::Unit, |u| u.mode);
        self.session_key = None;
        self.user = user;
        self.handshake_collation = collation as u16;
        self.set_charset(collation as u16);
        if let Some(db) = db {
            if let Err(e) = self.switch_db(&db) {
                return self.refuse(seq, e).await;
            }
        } else {
            self.ds = self.default_ds();
        }
        self.send_ok(seq).await?;
        debug!(connection_id = self.connection_id, user = %self.user, db = ?self.db, "login");
        Ok(())
    }

    async fn refuse(&mut self, seq: u8, e: ProxyError) -> Result<()> {
        let _ = self.client.send(seq, &e.to_err_payload()).await;
        Err(SessionError::Client(e))
    }

    /// Checks the user's password and connection mode.
    fn authenticate(&self, user: &str, token: &[u8], db: Option<&str>) -> Result<(), ProxyError> {
        let rules = self.shared.rules.load();
        let denied = || ProxyError::AccessDenied {
            user: user.to_string(),
            host: self.peer.ip().to_string(),
            using_password: !token.is_empty(),
        };
        let u = rules.users().get(user).ok_or_else(denied)?;
        let stage2 = parse_password_hash(&u.password_hash).ok_or_else(denied)?;
        if !auth::verify_native(&self.salt, token, &stage2) {
            return Err(denied());
        }
        if u.mode == ConnectionMode::Center && rules.room_role(self.shared.room) == RoomRole::Unit {
            return Err(ProxyError::CenterModeInUnitRoom {
                room: self.shared.config.proxy.room.clone(),
                center: center_room(&rules),
            });
        }
        let _ = db;
        Ok(())
    }

    fn set_charset(&mut self, collation: u16) {
        let c = Collation::resolve(CollationId::from(collation));
        // MySQL 8's `_0900_` collations (libmysqlclient logs in with utf8mb4_0900_ai_ci, 255)
        // do not exist in MariaDB: replaying them would fail every statement with 1273.
        let c = if c.id() == CollationId::UNKNOWN_COLLATION_ID || c.collation().contains("_0900_") {
            Collation::resolve(CollationId::UTF8MB4_GENERAL_CI)
        } else {
            c
        };
        for (k, v) in charset_vars(c.charset(), c.collation()) {
            self.vars.insert(k, v);
        }
    }

    fn default_ds(&self) -> Option<String> {
        default_ds(&self.shared, &self.user)
    }

    /// The data source and schema serving logical database `db` for `user` in this room;
    /// checks existence and permission, changes nothing.
    fn resolve_db(&self, user: &str, db: &str) -> Result<(String, String), ProxyError> {
        let rules = self.shared.rules.load();
        if db.eq_ignore_ascii_case("information_schema") {
            let ds = self
                .ds
                .clone()
                .or_else(|| default_ds(&self.shared, user))
                .ok_or(ProxyError::UnknownDatabase(db.to_string()))?;
            return Ok((ds, "information_schema".to_string()));
        }
        if rules.database(db).is_none() {
            return Err(ProxyError::UnknownDatabase(db.to_string()));
        }
        let allowed = rules
            .users()
            .get(user)
            .is_some_and(|u| u.databases.iter().any(|d| d == db));
        if !allowed {
            return Err(ProxyError::DbAccessDenied {
                user: user.to_string(),
                host: self.peer.ip().to_string(),
                db: db.to_string(),
            });
        }
        match local_data_source(&self.shared, db) {
            Some((ds, source)) => Ok((ds, source.schema)),
            None => Err(ProxyError::CenterDatabaseInUnitRoom {
                db: db.to_string(),
                room: self.shared.config.proxy.room.clone(),
                center: center_room(&rules),
            }),
        }
    }

    /// Shows the session's database and mode to `SHOW SESSIONS` (after login, USE, change user).
    fn publish_info(&self) {
        let mut info = lock(&self.handle.info);
        info.database = self.db.clone();
        info.mode = Some(self.mode);
        info.peer = Some(self.peer);
        info.since.get_or_insert_with(std::time::SystemTime::now);
    }

    /// After a rules reload, a session between statements serves its database from the data
    /// source the new rules name for it in this room (a moved or replaced data source).
    fn follow_reload(&mut self) {
        let generation = self.shared.generation();
        if generation == self.ds_generation {
            return;
        }
        self.ds_generation = generation;
        let schema_only = self
            .schema
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("information_schema"));
        let found = match self.db.as_deref() {
            Some(db) if !schema_only => {
                local_data_source(&self.shared, db).map(|(n, d)| (n, Some(d.schema)))
            }
            Some(_) => None,
            None => default_ds(&self.shared, &self.user).map(|n| (n, None)),
        };
        if let Some((ds, schema)) = found {
            if self.ds.as_deref() != Some(ds.as_str()) {
                debug!(connection_id = self.connection_id, data_source = %ds, "session follows the reloaded rules to another data source");
            }
            self.ds = Some(ds);
            if let Some(schema) = schema {
                self.schema = Some(schema);
            }
        }
    }

    /// Makes `db` the current database in the proxy (the backend follows on next use).
    fn switch_db(&mut self, db: &str) -> Result<(), ProxyError> {
        let (ds, schema) = self.resolve_db(&self.user, db)?;
        if let Some(h) = &self.held {
            if h.ds != ds {
                if self.must_keep() {
                    let reason = if self.in_transaction() {
                        "an open transaction"
                    } else {
                        "session state"
                    };
                    return Err(ProxyError::PinnedElsewhere {
                        db: db.to_string(),
                        pinned: h.ds.clone(),
                        reason,
                    });
                }
                self.held = None;
            }
        }
        self.db = Some(db.to_string());
        self.schema = Some(schema);
        self.ds = Some(ds);
        self.ds_generation = self.shared.generation();
        self.publish_info();
        Ok(())
    }

    pub fn state(&self) -> SessionState {
        if self.in_transaction() {
            SessionState::InTransaction
        } else if self.pins != 0 {
            SessionState::Pinned
        } else if self.held.is_some() {
            SessionState::Lingering
        } else {
            SessionState::Idle
        }
    }

    /// Sends the proxy's own OK packet, carrying the session's current status flags.
    async fn send_ok(&mut self, seq: u8) -> Result<()> {
        let ok = ok_payload(0, 0, self.status, 0);
        self.client
            .send(seq, &ok)
            .await
            .map_err(SessionError::ClientIo)?;
        Ok(())
    }

    /// The statement id of a COM_STMT_* packet; MariaDB's 0xFFFFFFFF means "the statement
    /// prepared last" (Connector/C's `mariadb_stmt_execute_direct` pipelines with it).
    fn statement_id(&self, payload: &[u8]) -> Option<u32> {
        stmt_id(payload).map(|id| {
            if id == u32::MAX {
                self.next_stmt_id.wrapping_sub(1)
            } else {
                id
            }
        })
    }

    /// How the session's sql_mode makes the server read quotes.
    fn syntax(&self) -> classify::Syntax {
        self.vars
            .get("sql_mode")
            .map(|m| classify::Syntax::from_sql_mode(m))
            .unwrap_or_default()
    }

    /// The client character set if it is one where the second byte of a character can be `\`
    /// (0x5C), which a byte lexer would take for an escape.
    fn escape_unsafe_charset(&self) -> Option<String> {
        let cs = self
            .vars
            .get("character_set_client")?
            .trim_matches('\'')
            .to_ascii_lowercase();
        ["big5", "gbk", "sjis", "cp932"]
            .contains(&cs.as_str())
            .then_some(cs)
    }

    fn in_transaction(&self) -> bool {
        // Side connections joined to a transaction (autocommit off) keep it open even when the
        // session's own connection has none.
        self.status & STATUS_IN_TRANS != 0
            || self.xa.is_some()
            || self.side.values().any(|s| s.joined)
    }

    fn must_keep(&self) -> bool {
        self.in_transaction() || self.pins != 0
    }

    /// Cluster mode: a transaction that wrote route codes must not go on — and commit — once
    /// this proxy's registration may have lapsed, since a cut-over may be moving those codes
    /// without it. Any command but a rollback (or ping, quit) then ends the session with this
    /// error; the closed backend connections roll the transaction back.
    fn lapsed_transaction(&self, payload: &[u8]) -> Option<ProxyError> {
        if !self.in_transaction() || !self.shared.write_fence.held() {
            return None;
        }
        let codes = {
            let writing = lock(&self.handle.writing);
            if writing.is_empty() {
                return None;
            }
            shard_rules::route::CodeSet::from_ranges(writing.iter().map(|c| (*c, *c)).collect())
        };
        match payload.split_first() {
            Some((&(COM_QUIT | COM_PING), _)) | None => return None,
            Some((&COM_QUERY, sql)) if crate::enforce::first_keyword(sql) == "ROLLBACK" => {
                return None
            }
            _ => {}
        }
        warn!(
            connection_id = self.connection_id,
            codes = %codes,
            "closing a transaction that wrote route codes: this proxy's registration in etcd may \
             have lapsed"
        );
        Some(ProxyError::Rule {
            code: crate::enforce::code::BANNED,
            state: *b"HY000",
            message: format!(
                "writes are held: this proxy has not renewed its registration in etcd within its \
                 lease while this transaction had written route codes {codes}, so a cut-over \
                 could be moving them; the transaction is rolled back and the connection closed, \
                 retry it (rules version {})",
                self.shared.rules.load().version()
            ),
        })
    }

    /// Serves commands until the client quits or the connection fails.
    pub async fn run(mut self) {
        let mut shutdown = self.shared.shutdown.subscribe();
        let handle = Arc::clone(&self.handle);
        loop {
            // At shutdown a session closes between statements unless a transaction or pinned
            // state is open; those finish first (or the shutdown timeout ends them).
            let stopping = *shutdown.borrow_and_update();
            if stopping && !self.must_keep() {
                break;
            }
            // A lingering connection (kept for the previous statement's diagnostics) goes back
            // to the pool if the client stays silent: idle clients never hold backends.
            let lingering = self.linger && !self.must_keep();
            if self.handle.killed.load(Ordering::Acquire) {
                break;
            }
            self.client.shrink_idle();
            let read = tokio::select! {
                r = self.read_client() => r,
                _ = handle.wake.notified() => continue,
                _ = shutdown.changed(), if !stopping => continue,
                _ = tokio::time::sleep(LINGER), if lingering => {
                    self.linger = false;
                    self.held = None;
                    continue;
                }
            };
            let p = match read {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(SessionError::Client(e)) => {
                    // Too large: MariaDB answers 1153 and closes.
                    let _ = self.client.send(0, &e.to_err_payload()).await;
                    break;
                }
                Err(_) => break,
            };
            let seq = p.last_seq.wrapping_add(1);
            let started = std::time::Instant::now();
            let kind = self.note_statement(&p.payload);
            self.backend_failed = false;
            self.err_seq = None;
            self.handle
                .state
                .store(SessionState::Running as u8, Ordering::Relaxed);
            if let Some(e) = self.lapsed_transaction(&p.payload) {
                // Closing the connection rolls the transaction back on its backends.
                let _ = self.client.send(seq, &e.to_err_payload()).await;
                break;
            }
            let flow = self.command(p).await;
            if let Some(kind) = kind {
                self.count(kind, &flow, started.elapsed());
            }
            // A merged result cut short after its header went out: the error takes the next
            // sequence id of that result, not the command's.
            let seq = self.err_seq.take().unwrap_or(seq);
            let fatal = match flow {
                Ok(Flow::Continue) => None,
                Ok(Flow::Quit) => break,
                Err(SessionError::Client(e)) => self.send_err(seq, &e.to_err_payload()).await.err(),
                Err(SessionError::Server(p)) => self.send_err(seq, &p).await.err(),
                Err(SessionError::Fatal(e)) => {
                    warn!(connection_id = self.connection_id, error = %e, "closing client connection");
                    let _ = self.client.send(seq, &e.to_err_payload()).await;
                    Some(())
                }
                Err(SessionError::ClientIo(_)) => Some(()),
            };
            if fatal.is_some() {
                break;
            }
            if !self.in_transaction() {
                lock(&self.handle.writing).clear();
            }
            self.handle
                .state
                .store(self.state() as u8, Ordering::Relaxed);
        }
        // Dropping the session then leaves the registry and releases its claims.
        self.close();
    }

    /// Keeps the statement's first bytes for `SHOW SESSIONS` and says what kind it is for the
    /// counters; `None` for commands that get no answer (nothing to count).
    fn note_statement(&self, payload: &[u8]) -> Option<crate::metrics::StmtKind> {
        use crate::metrics::StmtKind;
        let (&cmd, rest) = payload.split_first()?;
        let text: &[u8] = match cmd {
            COM_QUERY | COM_STMT_PREPARE => rest,
            COM_STMT_EXECUTE => self
                .statement_id(payload)
                .and_then(|id| self.stmts.get(&id))
                .map_or(&[][..], |s| &s.sql[..]),
            COM_QUIT | COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA => return None,
            _ => return Some(StmtKind::Other),
        };
        let mut shown = lock(&self.handle.statement);
        shown.clear();
        shown.extend_from_slice(&text[..text.len().min(STATEMENT_SHOWN)]);
        drop(shown);
        if cmd == COM_STMT_PREPARE {
            return Some(StmtKind::Prepare);
        }
        Some(StmtKind::of_keyword(&crate::enforce::first_keyword(text)))
    }

    /// Counts a finished command, and logs a refusal (at most a line per reason and second).
    fn count(
        &self,
        kind: crate::metrics::StmtKind,
        flow: &Result<Flow>,
        took: std::time::Duration,
    ) {
        use crate::metrics::Outcome;
        let outcome = match flow {
            Ok(_) if self.backend_failed => Outcome::BackendError,
            Ok(_) => Outcome::Ok,
            Err(SessionError::Server(_)) => Outcome::BackendError,
            Err(SessionError::Client(e)) if e.refusal_code().is_some() => {
                let code = e.code().0;
                if let Some(left_out) = self.shared.stats.refusal(code) {
                    info!(
                        connection_id = self.connection_id,
                        user = %self.user,
                        code,
                        left_out,
                        "statement refused: {e}"
                    );
                }
                Outcome::Refused
            }
            Err(_) => Outcome::Error,
        };
        self.shared.stats.statement(kind, outcome, took);
    }

    /// Records the route codes a write is about to touch, then checks the current write-ban
    /// once more: a ban swapped in after the decision was made either sees these codes (and
    /// waits for this session) or is seen here (and the write is refused).
    fn claim_codes(&self, d: &shard_rules::decide::Decision) -> Result<(), ProxyError> {
        let codes = &d.write_codes;
        if codes.is_empty() {
            return Ok(());
        }
        let added: Vec<u32> = {
            let mut writing = lock(&self.handle.writing);
            codes
                .iter()
                .copied()
                .filter(|c| writing.insert(*c))
                .collect()
        };
        let rules = self.shared.rules.load();
        if let Some(code) = codes.iter().find(|c| rules.is_banned(**c)) {
            // The write does not run: only what the transaction already wrote stays claimed.
            let mut writing = lock(&self.handle.writing);
            for c in &added {
                writing.remove(c);
            }
            drop(writing);
            return Err(ProxyError::Rule {
                code: crate::enforce::code::BANNED,
                state: *b"HY000",
                message: format!(
                    "write to `{}`{} with route code {code} (owner room `{}`) was banned while it \
                     was being decided (write-ban version {}); retry later (rules version {})",
                    d.tables.first().map_or("?", |t| t.table.as_str()),
                    d.route
                        .as_ref()
                        .filter(|r| r.code == *code)
                        .and_then(|r| r.key.as_ref())
                        .map(|k| format!(" with ShardingKey {k}"))
                        .unwrap_or_default(),
                    rules.room_name(rules.owner(*code)),
                    rules.ban_version(),
                    rules.version()
                ),
            });
        }
        Ok(())
    }

    async fn send_err(&mut self, seq: u8, payload: &[u8]) -> Result<(), ()> {
        self.client
            .send(seq, payload)
            .await
            .map(|_| ())
            .map_err(|_| ())
    }

    /// Ends the session: a backend in a transaction or holding session state is closed, which
    /// rolls the transaction back; a clean one returns to its pool.
    fn close(&mut self) {
        // Connections joined to an open transaction are closed, which rolls their part back.
        let keep = self.must_keep();
        for (_, mut s) in std::mem::take(&mut self.side) {
            if keep {
                s.conn.broken = true;
            }
        }
        if self.xa.is_some() {
            info!(
                connection_id = self.connection_id,
                "client left inside an XA transaction; its branches are rolled back"
            );
        }
        if let Some(mut h) = self.held.take() {
            // A killed session's backend thread may have been killed too: never reuse it.
            if self.must_keep() || self.handle.killed.load(Ordering::Acquire) {
                h.conn.broken = true;
                if self.in_transaction() {
                    info!(
                        connection_id = self.connection_id,
                        "client left inside a transaction; rolled back"
                    );
                }
            }
            // A connection closed rather than returned may have a write still running on
            // the server: its codes stay claimed until its thread is gone.
            let claims = lock(&self.handle.writing).clone();
            if h.conn.broken && !claims.is_empty() {
                self.shared
                    .fence_lost_backend(h.ds.clone(), h.conn.thread_id, claims);
            }
        }
        debug!(connection_id = self.connection_id, "session closed");
    }

    async fn read_client(&mut self) -> Result<Option<Packet>> {
        let max = self.shared.config.proxy.max_allowed_packet;
        self.client.read_packet(max).await.map_err(|e| {
            match e.get_ref().and_then(|r| r.downcast_ref::<PacketTooLarge>()) {
                Some(t) => SessionError::Client(ProxyError::PacketTooLarge(t.len, t.max)),
                None => SessionError::ClientIo(e),
            }
        })
    }

    async fn command(&mut self, p: Packet) -> Result<Flow> {
        let Some(&cmd) = p.payload.first() else {
            return Err(ProxyError::Malformed("empty command packet").into());
        };
        match cmd {
            COM_QUIT => return Ok(Flow::Quit),
            COM_QUERY => self.query(p).await?,
            COM_INIT_DB => {
                let db = String::from_utf8_lossy(&p.payload[1..]).into_owned();
                self.use_db(&db, p.last_seq.wrapping_add(1)).await?
            }
            COM_PING => {
                self.acquire(&Statement::passive()).await?;
                let o = self.relay(&p, ResponseKind::OkOrErr).await?;
                self.finish(&o, &Statement::passive()).await?;
            }
            COM_FIELD_LIST | COM_STATISTICS => {
                let kind = if cmd == COM_FIELD_LIST {
                    ResponseKind::FieldList
                } else {
                    ResponseKind::Single
                };
                self.acquire(&Statement::passive()).await?;
                self.relay(&p, kind).await?;
                self.release_unless_kept();
            }
            COM_STMT_PREPARE => self.prepare(p).await?,
            COM_STMT_EXECUTE => self.execute(p).await?,
            COM_STMT_SEND_LONG_DATA => {
                let max = self.shared.config.proxy.max_allowed_packet;
                let id = self.statement_id(&p.payload);
                if let Some(s) = id.and_then(|id| self.stmts.get_mut(&id)) {
                    s.long_data_bytes += p.payload.len();
                    if s.long_data_bytes > max {
                        s.long_data.clear();
                        s.long_data_overflow = true;
                    } else if !s.long_data_overflow {
                        s.long_data.push(p.payload.clone());
                    }
                }
                // No response, by protocol; an unknown id surfaces at execute, as in MariaDB.
            }
            COM_STMT_CLOSE => {
                if let Some(id) = stmt_id(&p.payload) {
                    self.stmts.remove(&id);
                }
            }
            COM_STMT_RESET => self.stmt_reset(p).await?,
            COM_STMT_FETCH => self.fetch(p).await?,
            COM_CHANGE_USER => self.change_user(p).await?,
            COM_RESET_CONNECTION => {
                self.reset();
                self.send_ok(p.last_seq.wrapping_add(1)).await?;
            }
            COM_PROCESS_KILL => {
                let id =
                    stmt_id(&p.payload).ok_or(ProxyError::Malformed("short COM_PROCESS_KILL"))?;
                self.kill(id, false, p.last_seq.wrapping_add(1)).await?
            }
            COM_SET_OPTION => {
                return Err(ProxyError::Unsupported(
                    "COM_SET_OPTION; connect with CLIENT_MULTI_STATEMENTS instead".into(),
                )
                .into())
            }
            other => return Err(ProxyError::UnknownCommand(other, command_name(other)).into()),
        }
        Ok(Flow::Continue)
    }

    async fn query(&mut self, p: Packet) -> Result<()> {
        let sql = &p.payload[1..];
        let mut stmts = classify::analyse_with(sql, self.syntax());
        let several = stmts.len() > 1;
        let multi = self.caps.contains(CapabilityFlags::CLIENT_MULTI_STATEMENTS);
        let mut st = match stmts.len() {
            0 => Statement::passive(),
            1 => stmts.pop().unwrap_or_else(Statement::passive),
            // Without the capability the server refuses the whole text as a syntax error and
            // runs none of it: forward it untouched, handle nothing in the proxy.
            _ if !multi => Statement::passive(),
            _ => {
                if let Some(cs) = self.escape_unsafe_charset() {
                    return Err(ProxyError::MultiStatement(format!(
                        "in character set {cs} a multi-byte character can hide a quote, so the text cannot be split safely; send statements one at a time"
                    ))
                    .into());
                }
                merge_multi(stmts)?
            }
        };
        match &st.kind {
            Kind::Use(db) => return self.use_db(&db.clone(), p.last_seq.wrapping_add(1)).await,
            Kind::SetPassword => {
                return Err(ProxyError::Unsupported(
                    "SET PASSWORD (proxy users and passwords live in the configuration file)"
                        .into(),
                )
                .into())
            }
            Kind::Kill { query, target } => {
                let (query, seq) = (*query, p.last_seq.wrapping_add(1));
                return match target {
                    Some(id) => self.kill(*id, query, seq).await,
                    None => Err(ProxyError::Unsupported("KILL USER / KILL QUERY ID".into()).into()),
                };
            }
            Kind::Empty | Kind::Other => {}
        }
        // The proxy ends a transaction that spans data sources on the words it sees; a text of
        // several statements could hide them.
        if several && (!self.side.is_empty() || self.xa.is_some()) {
            return Err(ProxyError::NotSupportedAcrossNodes(
                "a multi-statement text inside a transaction that spans data sources; send the statements one at a time".into(),
            )
            .into());
        }
        // BEGIN / COMMIT / ROLLBACK of an XA transaction are the proxy's.
        if !several && self.xa_statement(sql, p.last_seq.wrapping_add(1)).await? {
            return Ok(());
        }
        let mut ids: Vec<i64> = Vec::new();
        let decision = loop {
            match self.enforce_text(sql, &ids, several)? {
                crate::enforce::Verdict::Forward(d) => break d,
                crate::enforce::Verdict::ForeignRead { code, owner } => {
                    self.count_foreign_read(code, owner);
                    break None;
                }
                crate::enforce::Verdict::NeedIds(g) => ids = self.next_ids(&g).await?,
                crate::enforce::Verdict::SetSessionKey(key) => {
                    debug!(connection_id = self.connection_id, key = ?key, "session ShardingKey");
                    self.session_key = key;
                    return self.send_ok(p.last_seq.wrapping_add(1)).await;
                }
            }
        };
        if let Some(d) = &decision {
            self.claim_codes(d)?;
        }
        // Generated keys: the INSERT gets the column and one value per row.
        let p = match decision.as_deref().and_then(|d| d.generated.first()) {
            None => p,
            Some(g) => {
                if p.seq != p.last_seq {
                    return Err(ProxyError::Unsupported(
                        "a 16 MiB or larger INSERT that needs generated keys".into(),
                    )
                    .into());
                }
                let rewritten =
                    crate::enforce::add_generated_column(sql, &g.generator.column, &g.values)
                        .ok_or_else(|| ProxyError::Rule {
                            code: crate::enforce::code::REFUSED,
                            state: *b"0A000",
                            message: format!(
                                "cannot add the generated column `{}` to this INSERT: write it as \
                                 INSERT INTO t (columns) VALUES (…), (…), or give the column a \
                                 value (rules version {})",
                                g.generator.column,
                                self.shared.rules.load().version()
                            ),
                        })?;
                let mut payload = Vec::with_capacity(rewritten.len() + 1);
                payload.push(p.payload[0]);
                payload.extend_from_slice(&rewritten);
                if payload.len() >= crate::packet::MAX_PAYLOAD {
                    return Err(ProxyError::Unsupported(
                        "a 16 MiB or larger INSERT that needs generated keys".into(),
                    )
                    .into());
                }
                // LAST_INSERT_ID(id) sets the connection's value even if the row then fails:
                // read it back after the statement, like any statement that sets it.
                st.sets_last_insert_id = true;
                Packet {
                    seq: p.seq,
                    last_seq: p.last_seq,
                    payload: Bytes::from(payload),
                }
            }
        };
        // COMMIT / ROLLBACK of a transaction that spans data sources: theirs first; a
        // statement that commits implicitly (BEGIN, DDL, SET autocommit=1…) commits them too.
        if !self.side.is_empty() {
            let word = sharded::tx_word(&p.payload[1..]);
            if word != sharded::TxWord::Other {
                self.end_sides(word).await?;
            } else if sharded::commits_implicitly(
                &p.payload[1..],
                self.status & STATUS_AUTOCOMMIT == 0,
            ) {
                if self.xa.is_some() {
                    // The XA transaction commits first, as a plain one would.
                    self.xa_commit().await?;
                } else {
                    self.end_sides(sharded::TxWord::Commit).await?;
                }
            }
        }
        if let Some(d) = decision.as_deref().filter(|d| self.needs_sharding(d)) {
            return self.sharded_query(&p, &st, d).await;
        }
        self.acquire(&st).await?;
        let o = self.relay(&p, ResponseKind::ResultSets).await?;
        self.finish(&o, &st).await
    }

    /// `n` snowflake IDs from the proxy's generator, sleeping (not blocking the runtime) through
    /// a used-up millisecond or a small clock step back.
    async fn next_ids(
        &self,
        wanted: &[shard_rules::ruleset::KeyGenerator],
    ) -> Result<Vec<i64>, ProxyError> {
        let failed = |e: String| ProxyError::Rule {
            code: crate::enforce::code::REFUSED,
            state: *b"HY000",
            message: format!("cannot generate a key: {e}"),
        };
        let mut out = Vec::with_capacity(wanted.len());
        for g in wanted {
            let id = match g.kind {
                shard_rules::rules::KeyGeneratorKind::Snowflake => {
                    if let Some(f) = self.shared.worker_fence.get() {
                        f.check().map_err(failed)?;
                    }
                    let id = self
                        .shared
                        .ids
                        .next_with(tokio::time::sleep)
                        .await
                        .map_err(|e| failed(e.to_string()))?;
                    self.shared
                        .stats
                        .ids_snowflake
                        .fetch_add(1, Ordering::Relaxed);
                    id
                }
                shard_rules::rules::KeyGeneratorKind::Segment => match &self.shared.segments {
                    Some(s) => {
                        let id = s.next_id(&g.tag).await.map_err(|e| failed(e.to_string()))?;
                        self.shared
                            .stats
                            .ids_segment
                            .fetch_add(1, Ordering::Relaxed);
                        id
                    }
                    None => return Err(failed("the rules have no [segments]".into())),
                },
            };
            out.push(id);
        }
        Ok(out)
    }

    /// The database the rules judge the session's statements against: the current one, or the
    /// one a session without a database falls back to.
    fn rules_database(&self) -> Option<std::borrow::Cow<'_, str>> {
        if let Some(db) = self.db.as_deref() {
            return Some(std::borrow::Cow::Borrowed(db));
        }
        let rules = self.shared.rules.load();
        let user = rules.users().get(&self.user)?;
        user.databases
            .iter()
            .find(|d| local_data_source(&self.shared, d).is_some())
            .map(|d| std::borrow::Cow::Owned(d.clone()))
    }

    /// What the multi-active checks need to know of this session.
    fn rules_ctx<'a>(&'a self, rules: &'a RuleSet, database: &'a str) -> crate::enforce::Ctx<'a> {
        let syntax = self.syntax();
        crate::enforce::Ctx {
            rules,
            room: self.shared.room,
            // The user's mode in the rules serving now: a reload that changes it applies to
            // open sessions at their next statement.
            mode: rules.users().get(&self.user).map_or(self.mode, |u| u.mode),
            database,
            session_key: self.session_key.as_ref(),
            backslash_escapes: syntax.backslash_escapes,
            ansi_quotes: syntax.ansi_quotes,
            escape_unsafe_charset: self.escape_unsafe_charset().is_some(),
            count_foreign_reads: self.shared.config.proxy.count_foreign_reads,
            plans: &self.shared.plans,
            writes_held: self.shared.write_fence.held(),
        }
    }

    /// Multi-active checks of a text statement (hint, room, write-ban, database type).
    fn enforce_text(
        &self,
        sql: &[u8],
        ids: &[i64],
        several: bool,
    ) -> Result<crate::enforce::Verdict, ProxyError> {
        let Some(database) = self.rules_database() else {
            return Ok(crate::enforce::Verdict::Forward(None));
        };
        let rules = self.shared.rules.load_full();
        let ctx = self.rules_ctx(&rules, &database);
        let verdict = crate::enforce::check_text(&ctx, sql, ids, several)?;
        if let crate::enforce::Verdict::Forward(Some(d)) = &verdict {
            // A read with a room or node hint is decided in full; counted like the others.
            if let (true, Some(r)) = (d.foreign_read, &d.route) {
                self.count_foreign_read(r.code, r.owner);
            }
        }
        Ok(verdict)
    }

    /// A read whose key belongs to another room, served locally: counted and logged.
    fn count_foreign_read(&self, code: u32, owner: RoomId) {
        let n = self.shared.foreign_reads.fetch_add(1, Ordering::Relaxed) + 1;
        debug!(
            connection_id = self.connection_id,
            route_code = code,
            owner = %self.shared.rules.load().room_name(owner),
            foreign_reads = n,
            "read of another room's data, served locally"
        );
    }

    /// `USE db` and COM_INIT_DB: resolve in the proxy, then select the schema on the backend and
    /// answer with the backend's own OK or error.
    async fn use_db(&mut self, db: &str, seq: u8) -> Result<()> {
        let (old_db, old_schema, old_ds) = (self.db.clone(), self.schema.clone(), self.ds.clone());
        self.switch_db(db)?;
        let r = self.acquire(&Statement::passive()).await;
        if let Err(e) = r {
            // The schema could not be selected: the session stays where it was.
            self.db = old_db;
            self.schema = old_schema;
            self.ds = old_ds;
            return Err(e);
        }
        self.release_unless_kept();
        self.send_ok(seq).await?;
        Ok(())
    }

    /// Gets the backend connection for the next statement and brings it to the session's
    /// schema, settings and last insert id.
    async fn acquire(&mut self, st: &Statement) -> Result<()> {
        if self.held.is_some() && self.linger && !st.reads_previous && !self.must_keep() {
            self.held = None;
        }
        self.linger = false;
        // Killed (KILL, or the cluster fence) while the statement was on its way: nothing more
        // is sent for it.
        if self.handle.killed.load(Ordering::Acquire) {
            return Err(SessionError::Fatal(ProxyError::ConnectionKilled));
        }
        if self.held.is_none() {
            self.follow_reload();
            let ds = self.ds.clone().ok_or(ProxyError::NoDatabase)?;
            let (conn, target) = self.shared.pools.get(&ds, self.caps).await?;
            self.held = Some(Held::new(conn, ds, target, &self.handle));
            if self.handle.killed.load(Ordering::Acquire) {
                return Err(SessionError::Fatal(ProxyError::ConnectionKilled));
            }
        }
        let Some(h) = self.held.as_mut() else {
            return Ok(());
        };
        // Borrowed from the held connection: no allocation on this per-statement path.
        let default_schema = h.target.schema.as_str();
        let conn = &mut h.conn;
        let synced: Result<Result<(), Bytes>, crate::backend::BackendError> = async {
            // A session without a database still gets the data source's own schema, never the
            // one another session left on the connection.
            let schema = self.schema.as_deref().unwrap_or(default_schema);
            if conn.schema != schema {
                if let Err(p) = conn.init_db(schema).await? {
                    return Ok(Err(p));
                }
            }
            if let Err(p) = conn.set_vars(&self.vars).await? {
                return Ok(Err(p));
            }
            if st.reads_last_insert_id && conn.last_insert_id != self.last_insert_id {
                if let Err(p) = conn
                    .query(&format!("SELECT LAST_INSERT_ID({})", self.last_insert_id))
                    .await?
                {
                    return Ok(Err(p));
                }
                conn.last_insert_id = self.last_insert_id;
            }
            Ok(Ok(()))
        }
        .await;
        // A connection joining an XA transaction starts its branch.
        let synced = match (synced, self.held.as_mut()) {
            (Ok(Ok(())), Some(h)) if self.xa.is_some() => {
                xa_tx::join(&mut self.xa, &mut h.conn, &h.ds).await
            }
            (other, _) => other,
        };
        match synced {
            Ok(Ok(())) => Ok(()),
            Ok(Err(packet)) => {
                self.release_unless_kept();
                Err(SessionError::Server(packet))
            }
            Err(e) => Err(self.backend_lost(e.to_string(), false)),
        }
    }

    /// The backend failed: drop it and decide whether the client may go on.
    fn backend_lost(&mut self, why: String, sent: bool) -> SessionError {
        let held = self.held.take();
        // The server may still be committing what this connection wrote: its codes stay
        // claimed until its thread is gone.
        let claims = lock(&self.handle.writing).clone();
        if let Some(h) = held.as_ref().filter(|_| !claims.is_empty()) {
            self.shared
                .fence_lost_backend(h.ds.clone(), h.conn.thread_id, claims);
        }
        let ds = held.as_ref().map(|h| h.ds.clone()).unwrap_or_default();
        let room = held
            .as_ref()
            .map(|h| h.target.room.clone())
            .unwrap_or_default();
        self.shared.pools.count_error(&ds);
        let kept = self.must_keep();
        warn!(connection_id = self.connection_id, data_source = %ds, error = %why, "backend connection lost");
        let err = ProxyError::BackendLost {
            ds,
            room,
            in_transaction: self.in_transaction(),
        };
        self.pins = 0;
        self.status &= !STATUS_IN_TRANS;
        if sent || kept {
            SessionError::Fatal(err)
        } else {
            SessionError::Client(err)
        }
    }

    async fn relay(&mut self, p: &Packet, kind: ResponseKind) -> Result<Outcome> {
        // The session's framing buffer, reused: no allocation per statement.
        let mut framed = std::mem::take(&mut self.framed);
        framed.clear();
        frame_into(&mut framed, p.seq, &p.payload);
        let r = self.relay_framed(&framed, kind, 0).await;
        if framed.capacity() <= 4 * crate::packet::CLIENT_CHUNK {
            self.framed = framed;
        }
        r
    }

    async fn relay_framed(
        &mut self,
        framed: &[u8],
        kind: ResponseKind,
        seq_shift: u8,
    ) -> Result<Outcome> {
        let Some(h) = self.held.as_mut() else {
            return Err(ProxyError::NoDatabase.into());
        };
        match h
            .conn
            .relay(framed, kind, &mut self.client, seq_shift)
            .await
        {
            Ok(o) => Ok(o),
            Err(crate::backend::RelayError::Client(e)) => Err(SessionError::ClientIo(e)),
            Err(crate::backend::RelayError::Backend { sent, source }) => {
                Err(self.backend_lost(source.to_string(), sent))
            }
        }
    }

    /// Updates the session after a relayed statement and releases the backend if allowed.
    async fn finish(&mut self, o: &Outcome, st: &Statement) -> Result<()> {
        self.backend_failed |= o.error.is_some();
        if o.error.is_none() {
            self.status = o.status & !STATUS_MORE_RESULTS;
        }
        if o.last_insert_id != 0 {
            self.last_insert_id = o.last_insert_id;
        }
        self.pins |= st.pins;
        if o.error.is_some() || st.sets_last_insert_id {
            // An ERR packet carries no status flags, yet the failed command may have opened a
            // transaction (autocommit=0, multi-statement text, a procedure) or ended one (a
            // deadlock rolls back). Ask, so the connection is never released inside one.
            let (in_trans, last_id) = self.probe_state().await?;
            self.status =
                (self.status & !STATUS_IN_TRANS) | if in_trans { STATUS_IN_TRANS } else { 0 };
            if st.sets_last_insert_id {
                self.last_insert_id = last_id;
                if let Some(h) = self.held.as_mut() {
                    h.conn.last_insert_id = last_id;
                }
            }
        }
        if !st.sets_vars.is_empty() {
            self.read_back(&st.sets_vars).await?;
        }
        // Keep the connection briefly for SHOW WARNINGS / GET DIAGNOSTICS / FOUND_ROWS().
        self.linger = o.warnings > 0 || o.error.is_some() || st.calc_found_rows;
        self.release_unless_kept();
        Ok(())
    }

    /// `@@in_transaction` and `LAST_INSERT_ID()` of the held backend connection.
    async fn probe_state(&mut self) -> Result<(bool, u64)> {
        let Some(h) = self.held.as_mut() else {
            return Ok((false, self.last_insert_id));
        };
        match h
            .conn
            .query("SELECT @@in_transaction, LAST_INSERT_ID()")
            .await
        {
            Ok(Ok(r)) => {
                let v = row_literals(&r);
                let in_trans = v.first().is_some_and(|x| x != "0");
                let id = v
                    .get(1)
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(self.last_insert_id);
                Ok((in_trans, id))
            }
            // The server refused even this: assume the worst and keep the connection.
            Ok(Err(_)) => Ok((true, self.last_insert_id)),
            Err(e) => Err(self.backend_lost(e.to_string(), false)),
        }
    }

    fn release_unless_kept(&mut self) {
        if !self.must_keep() && !self.linger {
            self.held = None;
        }
        if !self.must_keep() {
            self.clear_sides();
        }
    }

    /// Reads the values of variables a SET may have changed, so they can be applied to other
    /// backend connections later. Runs even when the SET failed: it reports what the server has.
    async fn read_back(&mut self, names: &[String]) -> Result<()> {
        let Some(h) = self.held.as_mut() else {
            return Ok(());
        };
        let select = |names: &[String]| {
            let cols: Vec<String> = names.iter().map(|n| format!("@@session.{n}")).collect();
            format!("SELECT {}", cols.join(", "))
        };
        let mut values = Vec::new();
        let mut last_response = None;
        match h.conn.query(&select(names)).await {
            Ok(Ok(r)) => {
                values.extend(names.iter().cloned().zip(row_literals(&r)));
                last_response = Some(r);
            }
            Ok(Err(_)) => {
                // One of the names is not a session variable; read the others one at a time.
                for n in names {
                    if let Ok(Ok(r)) = h.conn.query(&select(std::slice::from_ref(n))).await {
                        values.extend(std::iter::once(n.clone()).zip(row_literals(&r)));
                    }
                }
            }
            Err(e) => return Err(self.backend_lost(e.to_string(), false)),
        }
        // The results collation: what the server labelled the character_set_results column
        // with (read in the same query when it was read).
        let rc = names
            .iter()
            .position(|n| n == "character_set_results")
            .map(|i| (i, values.iter().find(|(n, _)| n == "character_set_results")));
        let results_collation = match rc {
            Some((_, Some((_, lit)))) if lit == "NULL" => Some(None),
            Some((i, Some(_))) if values.len() == names.len() => {
                column_collation(&last_response, i).map(|c| Some(format!("'{c}'")))
            }
            _ => None,
        };
        for (name, lit) in values {
            h.conn.vars.insert(name.clone(), lit.clone());
            self.vars.insert(name, lit);
        }
        match results_collation {
            Some(Some(c)) => {
                h.conn.vars.insert(RESULTS_COLLATION.into(), c.clone());
                self.vars.insert(RESULTS_COLLATION.into(), c);
            }
            Some(None) => {
                h.conn.vars.remove(RESULTS_COLLATION);
                self.vars.remove(RESULTS_COLLATION);
            }
            None => {}
        }
        Ok(())
    }

    async fn prepare(&mut self, p: Packet) -> Result<()> {
        let sql = p.payload.slice(1..);
        let mut analysed = classify::analyse_with(&sql, self.syntax());
        let info = if analysed.len() == 1 {
            analysed.pop().unwrap_or_else(Statement::passive)
        } else {
            Statement::passive()
        };
        // What the proxy handles itself in text must not reach the shared backend account
        // through a prepared statement either.
        let refused = match info.kind {
            Kind::Use(_) => Some("USE as a prepared statement (use COM_INIT_DB or a text USE)"),
            Kind::SetPassword => {
                Some("SET PASSWORD (proxy users and passwords live in the configuration file)")
            }
            Kind::Kill { .. } => Some("KILL as a prepared statement (send it as text)"),
            _ => None,
        };
        if let Some(what) = refused {
            return Err(ProxyError::Unsupported(what.into()).into());
        }
        let analysed_rules = self.analyse_prepared(&sql)?;
        // An INSERT that leaves out a generated key column is prepared with one more `?` per
        // row; each execute binds them to new keys. The client sees its own parameters only.
        let extra = analysed_rules.as_ref().map_or(0, |r| r.keys.len());
        let (sql, payload, key_slots) = match analysed_rules.as_ref().and_then(|r| r.keys.first()) {
            None => (sql, p.payload.clone(), Vec::new()),
            Some(g) => {
                let (rewritten, slots) = crate::enforce::add_generated_placeholders(
                    &sql, &g.column, extra,
                )
                .ok_or_else(|| ProxyError::Rule {
                    code: crate::enforce::code::REFUSED,
                    state: *b"0A000",
                    message: format!(
                        "cannot add the generated column `{}` to this prepared INSERT: \
                                 write it as INSERT INTO t (columns) VALUES (…), or give the \
                                 column a value",
                        g.column
                    ),
                })?;
                let mut payload = Vec::with_capacity(rewritten.len() + 1);
                payload.push(p.payload[0]);
                payload.extend_from_slice(&rewritten);
                (Bytes::from(rewritten), Bytes::from(payload), slots)
            }
        };
        // On a sharded table: prepared on the first node, for its metadata; each execute runs
        // where its bound values route it.
        let first = analysed_rules
            .as_ref()
            .and_then(|a| self.first_node_of(&a.analysed));
        let (prep_sql, prep_payload, side_ds) = match first {
            None => (sql.clone(), payload.clone(), None),
            Some((ds, renames)) => {
                let renamed = shard_rules::lex::rename_tables(&sql, &renames, self.quoting())
                    .map_err(|e| ProxyError::NotSupportedAcrossNodes(e.to_string()))?;
                let mut p2 = Vec::with_capacity(renamed.len() + 1);
                p2.push(COM_STMT_PREPARE);
                p2.extend_from_slice(&renamed);
                let side = (Some(&ds) != self.ds.as_ref()).then_some(ds);
                (Bytes::from(renamed), Bytes::from(p2), side)
            }
        };
        let mut side = match &side_ds {
            Some(ds) => Some(self.side_conn(ds).await?),
            None => {
                self.acquire(&info).await?;
                None
            }
        };
        let deprecate_eof = self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        let exchanged = {
            let conn = match side.as_mut() {
                Some(s) => &mut s.conn,
                None => match self.held.as_mut() {
                    Some(h) => &mut h.conn,
                    None => return Ok(()),
                },
            };
            match conn.exchange(&prep_payload, ResponseKind::Prepare).await {
                Ok(r) => match r.outcome.prepared {
                    Some((backend_id, _, params)) => {
                        let stmt = crate::backend::BackendStmt {
                            id: backend_id,
                            params,
                        };
                        conn.remember_statement(prep_sql.clone(), stmt)
                            .await
                            .map(|_| r)
                    }
                    None => Ok(r),
                },
                Err(e) => Err(e),
            }
        };
        let r = match exchanged {
            Ok(r) => r,
            Err(e) => {
                return Err(match &side_ds {
                    Some(ds) => self.side_lost(ds, e.to_string(), false),
                    None => self.backend_lost(e.to_string(), false),
                })
            }
        };
        if let Some(s) = side.take() {
            self.keep_side(s, false);
        }
        let mut seq = p.last_seq.wrapping_add(1);
        if let Some((_, _, params)) = r.outcome.prepared {
            let id = self.next_stmt_id;
            self.next_stmt_id = self.next_stmt_id.wrapping_add(1).max(1);
            let client_params = params.saturating_sub(extra as u16);
            self.stmts.insert(
                id,
                Prepared {
                    sql,
                    params: client_params,
                    info,
                    rules: analysed_rules.map(Arc::new),
                    rules_db: self.rules_database().map(|d| d.into_owned()),
                    rules_version: self.shared.rules.load().version(),
                    key_slots,
                    types: None,
                    long_data: Vec::new(),
                    long_data_bytes: 0,
                    long_data_overflow: false,
                },
            );
            // The generated keys' parameter definitions (the last ones) are the proxy's own.
            let (n, k) = (client_params as usize, extra);
            let hidden = |i: usize| {
                k > 0 && ((i > n && i <= n + k) || (n == 0 && !deprecate_eof && i == 1 + n + k))
            };
            for (i, packet) in r.packets.iter().enumerate() {
                if i == 0 {
                    let mut first = packet.to_vec();
                    first[1..5].copy_from_slice(&id.to_le_bytes());
                    if first.len() >= 9 {
                        first[7..9].copy_from_slice(&client_params.to_le_bytes());
                    }
                    seq = self.client.queue(seq, &first);
                } else if !hidden(i) {
                    seq = self.client.queue(seq, packet);
                }
            }
        } else {
            for packet in &r.packets {
                seq = self.client.queue(seq, packet);
            }
        }
        self.client.flush().await.map_err(SessionError::ClientIo)?;
        self.linger = r.outcome.warnings > 0;
        self.release_unless_kept();
        Ok(())
    }

    /// At prepare: the analysis of a statement that may change data in a unit or center-unit
    /// database (decided at each execute), `None` for the rest.
    fn analyse_prepared(
        &self,
        sql: &[u8],
    ) -> Result<Option<crate::enforce::PreparedRules>, ProxyError> {
        let Some(database) = self.rules_database() else {
            return Ok(None);
        };
        let rules = self.shared.rules.load_full();
        let ctx = self.rules_ctx(&rules, &database);
        crate::enforce::prepare(&ctx, sql)
    }

    /// The multi-active decision of a prepared statement's execute, with its bound values.
    fn enforce_prepared(
        &self,
        a: &crate::enforce::Analysed,
        values: &[shard_rules::algorithm::Value],
        ids: &[i64],
    ) -> Result<Option<shard_rules::decide::Decision>, ProxyError> {
        let Some(database) = self.rules_database() else {
            return Ok(None);
        };
        let rules = self.shared.rules.load_full();
        let ctx = self.rules_ctx(&rules, &database);
        let d = crate::enforce::decide_all(&ctx, a, values, ids)?;
        if let Some(d) = &d {
            self.claim_codes(d)?;
        }
        Ok(d)
    }

    async fn execute(&mut self, p: Packet) -> Result<()> {
        let payload = &p.payload;
        let id = self
            .statement_id(payload)
            .ok_or(ProxyError::Malformed("short COM_STMT_EXECUTE"))?;
        let Some(stmt) = self.stmts.get_mut(&id) else {
            return Err(ProxyError::UnknownStatement {
                id,
                func: "mysqld_stmt_execute",
            }
            .into());
        };
        // Remember parameter types: a later execute may omit them, and it may run on another
        // backend connection that never saw them.
        let n = stmt.params as usize;
        let bitmap = n.div_ceil(8);
        let bound_at = 10 + bitmap;
        let flags = payload.get(5).copied().unwrap_or(0);
        if n > 0 {
            let bound = *payload
                .get(bound_at)
                .ok_or(ProxyError::Malformed("short COM_STMT_EXECUTE"))?;
            if bound == 1 {
                let types = payload
                    .get(bound_at + 1..bound_at + 1 + 2 * n)
                    .ok_or(ProxyError::Malformed("short parameter types"))?;
                stmt.types = Some(Bytes::copy_from_slice(types));
            }
        }
        let mut st = stmt.info.clone();
        let sql = stmt.sql.clone();
        let long_data = std::mem::take(&mut stmt.long_data);
        let long_bytes = std::mem::take(&mut stmt.long_data_bytes);
        if std::mem::take(&mut stmt.long_data_overflow) {
            let max = self.shared.config.proxy.max_allowed_packet;
            return Err(ProxyError::PacketTooLarge(long_bytes, max).into());
        }
        let types = stmt.types.clone();
        let rules = stmt.rules.clone();
        let prepared_db = stmt.rules_db.clone();
        let unchecked_under_old_rules =
            stmt.rules.is_none() && stmt.rules_version != self.shared.rules.load().version();
        let extra = stmt.rules.as_ref().map_or(0, |r| r.keys.len());
        let key_slots = stmt.key_slots.clone();
        // Long data for a parameter the statement does not have still counts as long data:
        // the checks below must not miss it.
        let stray_long_data = long_data.iter().any(|ld| {
            ld.get(5..7)
                .is_none_or(|b| u16::from_le_bytes([b[0], b[1]]) as usize >= n)
        });
        let long_data_params: Vec<bool> = {
            let mut v = vec![false; n];
            for ld in &long_data {
                if let Some(k) = ld
                    .get(5..7)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
                {
                    if k < n {
                        v[k] = true;
                    }
                }
            }
            v
        };
        // Prepared under another database, or unchecked under older rules: judge it as it
        // runs now.
        let rules = if self.rules_database().as_deref() != prepared_db.as_deref()
            || unchecked_under_old_rules
        {
            if extra > 0 {
                return Err(ProxyError::Rule {
                    code: crate::enforce::code::REFUSED,
                    state: *b"HY000",
                    message: "a prepared INSERT with generated keys must be prepared again after \
                              changing the database"
                        .into(),
                }
                .into());
            }
            let fresh = self.analyse_prepared(&sql)?;
            if fresh.as_ref().is_some_and(|r| !r.keys.is_empty()) {
                return Err(ProxyError::Rule {
                    code: crate::enforce::code::REFUSED,
                    state: *b"HY000",
                    message: "this prepared INSERT needs generated keys under the rules serving \
                              now; prepare it again"
                        .into(),
                }
                .into());
            }
            fresh.map(Arc::new)
        } else {
            rules
        };
        let mut generated: Vec<i64> = Vec::new();
        let mut decision: Option<shard_rules::decide::Decision> = None;
        if let Some(a) = rules {
            if stray_long_data || long_data_params.iter().any(|l| *l) {
                return Err(ProxyError::Rule {
                    code: crate::enforce::code::REFUSED,
                    state: *b"0A000",
                    message: "a parameter sent as long data (COM_STMT_SEND_LONG_DATA) in a \
                              statement that may change data in a unit or center-unit database \
                              cannot be checked; bind it as an ordinary value"
                        .into(),
                }
                .into());
            }
            // Decide with the bound values, as a text statement would be.
            let values = if n == 0 {
                Vec::new()
            } else {
                let types = types
                    .as_deref()
                    .ok_or(ProxyError::Malformed("parameters without types"))?;
                let bound = payload[bound_at];
                let start = bound_at + 1 + if bound == 1 { 2 * n } else { 0 };
                crate::enforce::decode_params(
                    &payload[10..10 + bitmap],
                    types,
                    payload.get(start..).unwrap_or_default(),
                    &long_data_params,
                )?
            };
            if !a.keys.is_empty() {
                generated = self.next_ids(&a.keys).await?;
            }
            decision = self.enforce_prepared(&a.analysed, &values, &generated)?;
        }
        // Sharded: on the session's own data source with the node's table names, or anywhere
        // else (several nodes, another data source) as text with the values bound in, the
        // result converted to the binary protocol.
        let mut sql = sql;
        // One node on another data source: prepared and executed natively there.
        let mut side_target: Option<String> = None;
        if let Some(d) = decision.as_ref().filter(|d| self.needs_sharding(d)) {
            let plain =
                flags & 0x07 == 0 && !stray_long_data && !long_data_params.iter().any(|l| *l);
            let one = match d.units.as_slice() {
                [u] => self
                    .physical_ds(&u.data_source)
                    .filter(|ds| Some(ds) == self.ds.as_ref() || plain)
                    .map(|ds| (ds, u.renames.clone())),
                _ => None,
            };
            match one {
                Some((ds, renames)) => {
                    sql = Bytes::from(
                        shard_rules::lex::rename_tables(&sql, &renames, self.quoting())
                            .map_err(|e| ProxyError::NotSupportedAcrossNodes(e.to_string()))?,
                    );
                    if Some(&ds) != self.ds.as_ref() {
                        if st.reads_last_insert_id
                            || sharded::uses_user_variables(&sql, self.quoting())
                        {
                            return Err(ProxyError::NotSupportedAcrossNodes(
                                "user variables or LAST_INSERT_ID() in a statement on another data source than the session's; bind the value instead".into(),
                            )
                            .into());
                        }
                        side_target = Some(ds);
                    }
                }
                None => {
                    if flags & 0x07 != 0 {
                        return Err(ProxyError::NotSupportedAcrossNodes(
                            "a cursor (COM_STMT_EXECUTE with a cursor flag) on several data nodes or another data source".into(),
                        )
                        .into());
                    }
                    if stray_long_data || long_data_params.iter().any(|l| *l) {
                        return Err(ProxyError::NotSupportedAcrossNodes(
                            "parameters sent as long data on several data nodes or another data source".into(),
                        )
                        .into());
                    }
                    let literals = crate::enforce::param_literals(
                        payload,
                        n,
                        types.as_deref(),
                        &generated,
                        &key_slots,
                        self.syntax().backslash_escapes,
                    )?;
                    let text = sharded::bind_literals(&sql, &literals, self.quoting()).ok_or(
                        ProxyError::Malformed("parameter count does not match the statement"),
                    )?;
                    let mut q = Vec::with_capacity(text.len() + 1);
                    q.push(0x03);
                    q.extend_from_slice(&text);
                    let packet = Packet {
                        seq: p.seq,
                        last_seq: p.last_seq,
                        payload: Bytes::from(q),
                    };
                    return self.sharded_query_as(&packet, &st, d, true).await;
                }
            }
        }
        // Transaction words as prepared statements: as in text, a transaction that spans data
        // sources ends on every one of them.
        if !self.side.is_empty() || self.xa.is_some() || self.xa_mode() {
            let word = sharded::tx_word(&sql);
            if word != sharded::TxWord::Other && (self.xa.is_some() || self.xa_mode()) {
                return Err(ProxyError::Unsupported(
                    "BEGIN, COMMIT or ROLLBACK as a prepared statement in an XA database (send them as text)".into(),
                )
                .into());
            }
            match word {
                sharded::TxWord::Other => {
                    if sharded::commits_implicitly(&sql, self.status & STATUS_AUTOCOMMIT == 0) {
                        self.end_sides(sharded::TxWord::Commit).await?;
                    }
                }
                word => self.end_sides(word).await?,
            }
        }
        if flags & 0x07 != 0 {
            st.pins |= pin::CURSOR;
        }
        let mut side: Option<sharded::Side> = None;
        let backend_id = if let Some(ds) = &side_target {
            let mut s = self.side_conn(ds).await?;
            match self
                .side_statement(&mut s, &sql, p.last_seq.wrapping_add(1))
                .await
            {
                Ok(Some(id)) => {
                    side = Some(s);
                    id
                }
                Ok(None) => {
                    self.keep_side(s, false);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        } else {
            self.acquire(&st).await?;
            let id = match self
                .backend_statement(&sql, p.last_seq.wrapping_add(1))
                .await?
            {
                Some(id) => id,
                None => return Ok(()),
            };
            let Some(h) = self.held.as_mut() else {
                return Ok(());
            };
            for ld in long_data {
                let mut ld = ld.to_vec();
                ld[1..5].copy_from_slice(&id.to_le_bytes());
                if let Err(e) = h.conn.send_only(&ld).await {
                    return Err(self.backend_lost(e.to_string(), false));
                }
            }
            id
        };
        let mut out = Vec::with_capacity(payload.len() + 2 * n + 10 * generated.len());
        out.push(COM_STMT_EXECUTE);
        out.extend_from_slice(&backend_id.to_le_bytes());
        if !generated.is_empty() {
            // The client's parameters and the generated keys (LONGLONG), in the backend's order.
            let k = generated.len();
            out.extend_from_slice(
                payload
                    .get(5..10)
                    .ok_or(ProxyError::Malformed("short COM_STMT_EXECUTE"))?,
            );
            let (client_types, values_at): (&[u8], usize) = if n == 0 {
                (&[], 10)
            } else if payload[bound_at] == 1 {
                (
                    &payload[bound_at + 1..bound_at + 1 + 2 * n],
                    bound_at + 1 + 2 * n,
                )
            } else {
                (
                    types
                        .as_deref()
                        .ok_or(ProxyError::Malformed("parameters without types"))?,
                    bound_at + 1,
                )
            };
            // Backend parameter order: each generated key goes after the client parameters that
            // precede its `?` in the rewritten text.
            let client_values = payload.get(values_at..).unwrap_or_default();
            let lengths = if n == 0 {
                Vec::new()
            } else {
                crate::enforce::param_lengths(
                    &payload[10..10 + bitmap],
                    client_types,
                    client_values,
                    &long_data_params,
                )?
            };
            let mut order: Vec<Option<usize>> = Vec::with_capacity(n + k); // Some(client) / None
            let mut j = 0;
            for i in 0..=n {
                while j < k && key_slots.get(j).copied().unwrap_or(n) == i {
                    order.push(None);
                    j += 1;
                }
                if i < n {
                    order.push(Some(i));
                }
            }
            while order.len() < n + k {
                order.push(None);
            }
            // Null bitmap in backend order.
            let mut bm = vec![0u8; (n + k).div_ceil(8)];
            for (pos, o) in order.iter().enumerate() {
                if let Some(i) = o {
                    if payload[10 + i / 8] & (1 << (i % 8)) != 0 {
                        bm[pos / 8] |= 1 << (pos % 8);
                    }
                }
            }
            out.extend_from_slice(&bm);
            out.push(1);
            for o in &order {
                match o {
                    Some(i) => out.extend_from_slice(&client_types[2 * i..2 * i + 2]),
                    None => out.extend_from_slice(&[0x08, 0x00]),
                }
            }
            let mut starts = Vec::with_capacity(n);
            let mut at = 0;
            for l in &lengths {
                starts.push(at);
                at += l;
            }
            let mut gen = generated.iter();
            for o in &order {
                match o {
                    Some(i) => {
                        out.extend_from_slice(&client_values[starts[*i]..starts[*i] + lengths[*i]])
                    }
                    None => {
                        if let Some(id) = gen.next() {
                            out.extend_from_slice(&id.to_le_bytes());
                        }
                    }
                }
            }
            // LAST_INSERT_ID(?) set the connection's value: read it back.
            st.sets_last_insert_id = true;
        } else if n > 0 && payload[bound_at] == 0 {
            if let Some(types) = &types {
                out.extend_from_slice(&payload[5..bound_at]);
                out.push(1);
                out.extend_from_slice(types);
                out.extend_from_slice(&payload[bound_at + 1..]);
            } else {
                out.extend_from_slice(&payload[5..]);
            }
        } else {
            out.extend_from_slice(&payload[5..]);
        }
        let framed = frame(p.seq, &out);
        // Adding parameter types can push the payload over a 16 MiB packet boundary.
        let sent_packets = (out.len() / crate::packet::MAX_PAYLOAD + 1) as u8;
        let shift = p
            .last_seq
            .wrapping_sub(p.seq.wrapping_add(sent_packets).wrapping_sub(1));
        if let Some(mut s) = side {
            let r = s
                .conn
                .relay(&framed, ResponseKind::ResultSets, &mut self.client, shift)
                .await;
            return match r {
                Ok(o) => {
                    self.finish_side(s, &o, &st);
                    Ok(())
                }
                Err(crate::backend::RelayError::Client(e)) => Err(SessionError::ClientIo(e)),
                Err(crate::backend::RelayError::Backend { sent, source }) => {
                    let ds = s.ds.clone();
                    Err(self.side_lost(&ds, source.to_string(), sent))
                }
            };
        }
        let o = self
            .relay_framed(&framed, ResponseKind::ResultSets, shift)
            .await?;
        self.finish(&o, &st).await
    }

    /// The id of `sql` on the held backend connection, preparing it there first if needed.
    /// `None` means the server refused to prepare it and its error was sent to the client.
    async fn backend_statement(&mut self, sql: &Bytes, seq: u8) -> Result<Option<u32>> {
        let Some(h) = self.held.as_mut() else {
            return Ok(None);
        };
        match h.conn.statement_id(sql).await {
            Ok(Ok(id)) => Ok(Some(id)),
            Ok(Err(err)) => {
                self.client
                    .send(seq, &err)
                    .await
                    .map_err(SessionError::ClientIo)?;
                self.release_unless_kept();
                Ok(None)
            }
            Err(e) => Err(self.backend_lost(e.to_string(), false)),
        }
    }

    async fn stmt_reset(&mut self, p: Packet) -> Result<()> {
        let id = stmt_id(&p.payload).ok_or(ProxyError::Malformed("short COM_STMT_RESET"))?;
        let Some(stmt) = self.stmts.get_mut(&id) else {
            return Err(ProxyError::UnknownStatement {
                id,
                func: "mysqld_stmt_reset",
            }
            .into());
        };
        stmt.long_data.clear();
        stmt.long_data_bytes = 0;
        stmt.long_data_overflow = false;
        let sql = stmt.sql.clone();
        // An open cursor lives on the pinned backend: reset it there.
        if self.pins & pin::CURSOR != 0 {
            if let Some(backend_id) = self
                .held
                .as_ref()
                .and_then(|h| h.conn.stmts.get(&sql))
                .map(|s| s.id)
            {
                let mut cmd = vec![COM_STMT_RESET];
                cmd.extend_from_slice(&backend_id.to_le_bytes());
                let framed = frame(p.seq, &cmd);
                self.relay_framed(&framed, ResponseKind::OkOrErr, 0).await?;
                return Ok(());
            }
        }
        self.send_ok(p.last_seq.wrapping_add(1)).await?;
        Ok(())
    }

    async fn fetch(&mut self, p: Packet) -> Result<()> {
        let id = stmt_id(&p.payload).ok_or(ProxyError::Malformed("short COM_STMT_FETCH"))?;
        let sql = self.stmts.get(&id).map(|s| s.sql.clone());
        let backend_id = sql
            .as_ref()
            .and_then(|sql| self.held.as_ref().and_then(|h| h.conn.stmts.get(sql)))
            .map(|s| s.id)
            .ok_or(ProxyError::UnknownStatement {
                id,
                func: "mysqld_stmt_fetch",
            })?;
        let mut cmd = p.payload.to_vec();
        cmd[1..5].copy_from_slice(&backend_id.to_le_bytes());
        let framed = frame(p.seq, &cmd);
        let o = self.relay_framed(&framed, ResponseKind::Rows, 0).await?;
        if o.error.is_none() {
            self.status = o.status;
        }
        Ok(())
    }

    /// `KILL [QUERY] id` and COM_PROCESS_KILL, with the proxy's connection ids: the statement
    /// running for session `id` is killed on its backend (`KILL QUERY <backend thread>` over a
    /// separate connection); for a connection kill the backend connection is killed too and the
    /// session closes. Only the session's own user may kill it (MariaDB's 1095 otherwise).
    async fn kill(&mut self, id: u32, query_only: bool, seq: u8) -> Result<()> {
        let Some(target) = lock(&self.shared.sessions).get(&id).cloned() else {
            return Err(ProxyError::NoSuchThread(id).into());
        };
        if *lock(&target.user) != self.user {
            return Err(ProxyError::KillDenied(id).into());
        }
        if id == self.connection_id && !query_only {
            return Err(SessionError::Fatal(ProxyError::ConnectionKilled));
        }
        let backend = lock(&target.backend).clone();
        if let Some((ds, thread)) = backend {
            let room = || {
                self.shared
                    .pools
                    .target(&ds)
                    .map(|t| t.room.clone())
                    .unwrap_or_default()
            };
            // An ERR here means the backend statement already ended: nothing left to kill.
            if let Err(reason) = self
                .shared
                .kill_backend_thread(&ds, thread, query_only)
                .await
            {
                return Err(ProxyError::BackendUnavailable {
                    ds: ds.clone(),
                    room: room(),
                    reason,
                }
                .into());
            }
            info!(
                connection_id = self.connection_id,
                target = id,
                backend_thread = thread,
                query_only,
                "kill"
            );
        }
        if !query_only {
            target.killed.store(true, Ordering::Release);
            target.wake.notify_one();
        }
        self.send_ok(seq).await?;
        Ok(())
    }

    /// COM_CHANGE_USER: authenticate the new user against the salt of this connection, then
    /// reset the session as a new login would. A failed attempt leaves the old session intact.
    async fn change_user(&mut self, p: Packet) -> Result<()> {
        let parsed = parse_change_user(&p.payload, self.caps)
            .ok_or(ProxyError::Malformed("bad COM_CHANGE_USER"))?;
        let mut token = parsed.auth.clone();
        let mut seq = p.last_seq.wrapping_add(1);
        if parsed
            .plugin
            .as_deref()
            .is_some_and(|pl| pl != auth::NATIVE)
        {
            let mut data = self.salt.to_vec();
            data.push(0);
            let mut buf = Vec::new();
            AuthSwitchRequest::new(auth::NATIVE, data).serialize(&mut buf);
            self.client
                .send(seq, &buf)
                .await
                .map_err(SessionError::ClientIo)?;
            let r = self
                .read_client()
                .await?
                .ok_or_else(|| eof("client left during the auth switch"))?;
            token = r.payload.to_vec();
            seq = r.last_seq.wrapping_add(1);
        }
        if let Err(e) = self.authenticate(&parsed.user, &token, parsed.db.as_deref()) {
            self.client
                .send(seq, &e.to_err_payload())
                .await
                .map_err(SessionError::ClientIo)?;
            return Ok(());
        }
        // Check the new database before touching anything: a refused change leaves the old
        // session exactly as it was.
        let target = match parsed
            .db
            .as_deref()
            .map(|db| self.resolve_db(&parsed.user, db))
        {
            Some(Err(e)) => {
                self.client
                    .send(seq, &e.to_err_payload())
                    .await
                    .map_err(SessionError::ClientIo)?;
                return Ok(());
            }
            Some(Ok(t)) => Some(t),
            None => None,
        };
        self.user = parsed.user.clone();
        self.mode = self
            .shared
            .rules
            .load()
            .users()
            .get(&self.user)
            .map_or(ConnectionMode::Unit, |u| u.mode);
        self.session_key = None;
        self.reset();
        self.handshake_collation = parsed.charset.unwrap_or(45);
        self.vars.clear();
        self.set_charset(self.handshake_collation);
        self.db = parsed.db.clone().filter(|_| target.is_some());
        (self.ds, self.schema) = match target {
            Some((ds, schema)) => (Some(ds), Some(schema)),
            None => (self.default_ds(), None),
        };
        self.ds_generation = self.shared.generation();
        *lock(&self.handle.user) = self.user.clone();
        self.publish_info();
        self.send_ok(seq).await?;
        Ok(())
    }

    /// COM_RESET_CONNECTION (and the reset part of COM_CHANGE_USER): roll back, forget user
    /// variables, temporary tables, locks and prepared statements, restore session variables
    /// to the server defaults (keeping the handshake character set) and the last insert id to 0.
    fn reset(&mut self) {
        let keep = self.must_keep();
        if let Some(mut h) = self.held.take() {
            if keep {
                // The server-side state goes with the connection; a fresh one is clean.
                h.conn.broken = true;
            }
        }
        for (_, mut s) in std::mem::take(&mut self.side) {
            if keep {
                s.conn.broken = true;
            }
        }
        self.xa = None;
        // Session variables return to the server defaults; the character set to the handshake's.
        self.vars.clear();
        self.set_charset(self.handshake_collation);
        self.pins = 0;
        self.linger = false;
        self.status = STATUS_AUTOCOMMIT;
        self.last_insert_id = 0;
        self.session_key = None;
        self.stmts.clear();
    }
}

/// Combines the analyses of multi-statement text; refuses what the proxy must handle itself.
fn merge_multi(stmts: Vec<Statement>) -> Result<Statement, ProxyError> {
    let mut out = Statement::passive();
    let last = stmts.len().saturating_sub(1);
    for (i, st) in stmts.into_iter().enumerate() {
        // The server reads each statement with the settings the previous ones left: one that
        // changes quoting or the character set would make the proxy's split of the rest wrong.
        let reshapes = st.sets_vars.iter().any(|v| {
            v == "sql_mode" || v == "character_set_client" || v == "character_set_connection"
        });
        if reshapes && i < last {
            return Err(ProxyError::MultiStatement(format!(
                "statement {} changes sql_mode or the character set, which changes how the rest of the text is read; send it on its own",
                i + 1
            )));
        }
        let what = match st.kind {
            Kind::Use(_) => Some("USE"),
            Kind::SetPassword => Some("SET PASSWORD"),
            Kind::Kill { .. } => Some("KILL"),
            _ => None,
        };
        if let Some(what) = what {
            return Err(ProxyError::MultiStatement(format!(
                "statement {} is {what}, which the proxy handles itself; send it on its own",
                i + 1
            )));
        }
        out.pins |= st.pins;
        out.reads_last_insert_id |= st.reads_last_insert_id;
        out.sets_last_insert_id |= st.sets_last_insert_id;
        out.reads_previous |= st.reads_previous;
        out.calc_found_rows |= st.calc_found_rows;
        for v in st.sets_vars {
            if !out.sets_vars.contains(&v) {
                out.sets_vars.push(v);
            }
        }
    }
    Ok(out)
}

/// The data source for a session without a current database: the first of the user's
/// databases served in this room.
fn default_ds(shared: &Shared, user: &str) -> Option<String> {
    let rules = shared.rules.load();
    let user = rules.users().get(user)?;
    user.databases
        .iter()
        .find_map(|db| local_data_source(shared, db).map(|(n, _)| n))
}

/// The physical data source serving logical database `db`'s default data source in this
/// proxy's room, if the database is served here.
fn local_data_source(shared: &Shared, db: &str) -> Option<(String, DataSource)> {
    let rules = shared.rules.load();
    let database = rules.database(db)?;
    let logical = database.data_sources.get(database.default_data_source)?;
    let name = logical.physical.get(shared.room as usize)?.as_deref()?;
    rules
        .data_sources()
        .get_key_value(name)
        .map(|(n, d)| (n.clone(), d.clone()))
}

fn center_room(rules: &RuleSet) -> String {
    rules.room_name(rules.center()).to_string()
}

fn stmt_id(payload: &[u8]) -> Option<u32> {
    payload
        .get(1..5)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn eof(what: &'static str) -> SessionError {
    SessionError::ClientIo(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what))
}

fn command_name(cmd: u8) -> &'static str {
    match cmd {
        0x00 => "COM_SLEEP",
        0x05 => "COM_CREATE_DB",
        0x06 => "COM_DROP_DB",
        0x07 => "COM_REFRESH",
        0x08 => "COM_SHUTDOWN",
        0x0A => "COM_PROCESS_INFO",
        0x0B => "COM_CONNECT",
        0x0D => "COM_DEBUG",
        0x0F => "COM_TIME",
        0x10 => "COM_DELAYED_INSERT",
        0x12 => "COM_BINLOG_DUMP",
        0x13 => "COM_TABLE_DUMP",
        0x14 => "COM_CONNECT_OUT",
        0x15 => "COM_REGISTER_SLAVE",
        0x1D => "COM_DAEMON",
        0x1E => "COM_BINLOG_DUMP_GTID",
        0xFA => "COM_STMT_BULK_EXECUTE",
        _ => "not a MySQL command",
    }
}

struct ChangeUser {
    user: String,
    auth: Vec<u8>,
    db: Option<String>,
    charset: Option<u16>,
    plugin: Option<Vec<u8>>,
}

/// COM_CHANGE_USER: user NUL, auth (u8 length), database NUL, [charset u16, plugin NUL, attrs].
fn parse_change_user(payload: &[u8], caps: CapabilityFlags) -> Option<ChangeUser> {
    let mut rest = payload.get(1..)?;
    let nul = |r: &mut &[u8]| -> Option<Vec<u8>> {
        let i = r.iter().position(|b| *b == 0)?;
        let v = r[..i].to_vec();
        *r = &r[i + 1..];
        Some(v)
    };
    let user = String::from_utf8_lossy(&nul(&mut rest)?).into_owned();
    let auth = if caps.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
        let n = *rest.first()? as usize;
        let a = rest.get(1..1 + n)?.to_vec();
        rest = &rest[1 + n..];
        a
    } else {
        nul(&mut rest)?
    };
    let db = nul(&mut rest).unwrap_or_default();
    let db = (!db.is_empty()).then(|| String::from_utf8_lossy(&db).into_owned());
    let charset = rest.get(..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let plugin = if charset.is_some() && caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) {
        let mut r = &rest[2..];
        nul(&mut r)
    } else {
        None
    };
    Some(ChangeUser {
        user,
        auth,
        db,
        charset,
        plugin,
    })
}

/// The number of columns of a text result the proxy read for itself.
fn column_count(r: &Response) -> Option<usize> {
    r.packets
        .first()
        .and_then(|p| crate::packet::lenenc_int(p))
        .map(|(n, _)| n as usize)
}

/// Every row of a text result the proxy read for itself, as plain text values (`NULL` for
/// NULL).
pub(crate) fn rows_of(r: &Response) -> Vec<Vec<String>> {
    let Some(count) = column_count(r) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in r.packets.iter().skip(1 + count) {
        if matches!(p.first(), Some(0xFE) if p.len() < 9) || p.first() == Some(&0xFF) {
            continue;
        }
        let Some(row) = crate::merge::Row::parse(p.clone(), count) else {
            continue;
        };
        out.push(
            (0..count)
                .map(|i| {
                    row.get(i).map_or("NULL".to_string(), |v| {
                        String::from_utf8_lossy(v).into_owned()
                    })
                })
                .collect(),
        );
    }
    out
}

/// The collation name the `i`-th column definition of a result is labelled with.
fn column_collation(r: &Option<Response>, i: usize) -> Option<String> {
    let r = r.as_ref()?;
    let p = r.packets.get(1 + i)?;
    let c = crate::packet::column_def(p)?;
    let co = Collation::resolve(CollationId::from(c.character_set()));
    (co.id() != CollationId::UNKNOWN_COLLATION_ID).then(|| co.collation().to_string())
}

/// The single row of a proxy-issued `SELECT`, each value as an SQL literal.
fn row_literals(r: &Response) -> Vec<String> {
    let Some(count) = column_count(r) else {
        return Vec::new();
    };
    let types: Vec<ColumnType> = r.packets[1..=count.min(r.packets.len() - 1)]
        .iter()
        .map(|p| {
            crate::packet::column_def(p)
                .map(|c| c.column_type())
                .unwrap_or(ColumnType::MYSQL_TYPE_STRING)
        })
        .collect();
    // The row follows the definitions (and the EOF packet in the classic framing).
    let row = r
        .packets
        .iter()
        .skip(1 + count)
        .find(|p| p.first() != Some(&0xFE) || p.len() >= 9);
    let Some(row) = row else { return Vec::new() };
    let mut at = 0;
    let mut out = Vec::with_capacity(count);
    for t in types {
        if row.get(at) == Some(&0xFB) {
            at += 1;
            out.push("NULL".to_string());
            continue;
        }
        let Some((len, n)) = row.get(at..).and_then(crate::packet::lenenc_int) else {
            break;
        };
        let end = at
            .saturating_add(n)
            .saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
        let Some(v) = row.get(at + n..end) else { break };
        at = end;
        out.push(literal(t, v));
    }
    out
}

fn literal(t: ColumnType, v: &[u8]) -> String {
    use ColumnType::*;
    let numeric = matches!(
        t,
        MYSQL_TYPE_TINY
            | MYSQL_TYPE_SHORT
            | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG
            | MYSQL_TYPE_INT24
            | MYSQL_TYPE_DECIMAL
            | MYSQL_TYPE_NEWDECIMAL
            | MYSQL_TYPE_FLOAT
            | MYSQL_TYPE_DOUBLE
            | MYSQL_TYPE_YEAR
    );
    if numeric
        && v.iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'e' | b'E' | b'+'))
    {
        return String::from_utf8_lossy(v).into_owned();
    }
    if v.iter()
        .all(|b| *b != b'\\' && *b != b'\'' && (0x20..0x7F).contains(b))
    {
        return format!("'{}'", String::from_utf8_lossy(v));
    }
    // Anything else as a hex literal: exact whatever sql_mode (NO_BACKSLASH_ESCAPES) says.
    let mut s = String::with_capacity(3 + 2 * v.len());
    s.push_str("X'");
    for b in v {
        s.push_str(&format!("{b:02X}"));
    }
    s.push('\'');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_user_packets_are_parsed_with_and_without_the_optional_tail() {
        let caps = CapabilityFlags::CLIENT_SECURE_CONNECTION | CapabilityFlags::CLIENT_PLUGIN_AUTH;
        let mut p = vec![0x11];
        p.extend_from_slice(b"demo\0");
        p.push(3);
        p.extend_from_slice(b"abc");
        p.extend_from_slice(b"shop\0");
        p.extend_from_slice(&45u16.to_le_bytes());
        p.extend_from_slice(b"mysql_native_password\0");
        let c = parse_change_user(&p, caps).unwrap();
        assert_eq!(
            (c.user.as_str(), c.auth.as_slice(), c.db.as_deref()),
            ("demo", &b"abc"[..], Some("shop"))
        );
        assert_eq!(c.charset, Some(45));
        assert_eq!(c.plugin.as_deref(), Some(&b"mysql_native_password"[..]));
        let short = [0x11, b'u', 0, 0, 0];
        let c = parse_change_user(&short, caps).unwrap();
        assert_eq!((c.user.as_str(), c.db, c.charset), ("u", None, None));
        assert!(parse_change_user(&[0x11, b'u'], caps).is_none());
    }

    #[test]
    fn literals_are_exact_for_numbers_plain_strings_and_odd_bytes() {
        assert_eq!(literal(ColumnType::MYSQL_TYPE_LONGLONG, b"28800"), "28800");
        assert_eq!(
            literal(ColumnType::MYSQL_TYPE_VAR_STRING, b"STRICT_TRANS_TABLES"),
            "'STRICT_TRANS_TABLES'"
        );
        assert_eq!(
            literal(ColumnType::MYSQL_TYPE_VAR_STRING, b"it's"),
            "X'69742773'"
        );
        // Not a number although the column says so: quoted, never spliced in bare.
        assert_eq!(
            literal(ColumnType::MYSQL_TYPE_LONGLONG, b"1; DROP"),
            "'1; DROP'"
        );
        assert_eq!(
            literal(ColumnType::MYSQL_TYPE_VAR_STRING, b"a\\b"),
            "X'615C62'"
        );
    }

    #[test]
    fn multi_statement_text_with_use_is_refused_and_the_rest_is_merged() {
        let err = merge_multi(classify::analyse(b"SELECT 1; USE x")).unwrap_err();
        assert!(err.to_string().contains("statement 2 is USE"), "{err}");
        let st = merge_multi(classify::analyse(
            b"SET time_zone='+01:00'; SET @a=1; SET sql_mode=''",
        ))
        .unwrap();
        assert_eq!(st.sets_vars, ["time_zone", "sql_mode"]);
        assert_eq!(st.pins, pin::USER_VARIABLE);
        let err =
            merge_multi(classify::analyse(b"SET sql_mode='ANSI'; SELECT \"a;b\"")).unwrap_err();
        assert!(
            err.to_string().contains("statement 1 changes sql_mode"),
            "{err}"
        );
        let err = merge_multi(classify::analyse(b"SET NAMES gbk; SELECT 1")).unwrap_err();
        assert!(err.to_string().contains("character set"), "{err}");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// COM_CHANGE_USER payloads from a client are parsed or refused, never a panic.
        #[test]
        fn change_user_parsing_is_total(p in proptest::collection::vec(any::<u8>(), 0..80), caps in any::<u32>()) {
            let _ = parse_change_user(&p, CapabilityFlags::from_bits_truncate(caps));
        }

        /// Rows read back from a backend are rendered or skipped, never a panic.
        #[test]
        fn row_literals_are_total(packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 1..6)) {
            let r = Response { packets: packets.into_iter().map(Bytes::from).collect(), outcome: Outcome::default() };
            let _ = row_literals(&r);
        }
    }
}
