//! XA transactions across data sources (issue 9, `transactions = "xa"` on a logical database).
//!
//! A transaction the client opens with BEGIN gets one XA branch per data source it touches
//! (`XA START 'gtrid','data source'`). At COMMIT every branch ends and prepares; the decision is
//! then written to this proxy's XA log and fsync'd; then every branch commits. One branch
//! commits in one phase. A proxy that crashes leaves branches *prepared* on the servers; at its
//! next start [`recover`] lists them (`XA RECOVER`) on every data source of its room and
//! commits those whose commit decision is in the log, rolls back the others (presumed abort:
//! no decision was written, so no branch committed). Transaction ids carry the proxy's room and
//! worker id (`rb-A-0-…`), so a proxy only ever resolves its own.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tracing::{info, warn};

use crate::session::Shared;

/// The commit decisions of this proxy, one line each: `commit <gtrid>` (fsync'd before any
/// branch commits) and `done <gtrid>` (after every branch committed).
pub struct XaLog {
    path: PathBuf,
    /// `rb-<room>-<identity>-`: the prefix of this proxy's transaction ids ([`prefix`]).
    prefix: String,
    file: Mutex<Option<std::fs::File>>,
    next: AtomicU64,
    started: u64,
}

impl XaLog {
    pub fn new(path: PathBuf, prefix: String) -> XaLog {
        XaLog {
            path,
            prefix,
            file: Mutex::new(None),
            next: AtomicU64::new(1),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// The prefix of the transaction ids of this process's run.
    pub fn current_run(&self) -> String {
        format!("{}{}-", self.prefix, self.started)
    }

    /// The prefix of this proxy's transaction ids, whatever the run.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new global transaction id: `rb-<room>-<worker>-<start>-<n>` (at most 64 bytes).
    pub fn gtrid(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}{}-{n}", self.prefix, self.started)
    }

    fn append(&self, line: &str, sync: bool) -> std::io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let f = guard
            .as_mut()
            .ok_or_else(|| std::io::Error::other("XA log not open"))?;
        f.write_all(line.as_bytes())?;
        if sync {
            f.sync_data()?;
        }
        Ok(())
    }

    /// Opens (creates) the log before the first branch prepares: its existence tells the next
    /// start that branches may be left prepared.
    pub fn open(&self) -> std::io::Result<()> {
        self.append("", true)
    }

    /// Whether this proxy ever prepared XA branches with this log.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Records the commit decision, durably, before the first branch commits.
    pub fn decided(&self, gtrid: &str) -> std::io::Result<()> {
        self.append(&format!("commit {gtrid}\n"), true)
    }

    /// Every branch committed: recovery has nothing to do for it.
    pub fn done(&self, gtrid: &str) -> std::io::Result<()> {
        self.append(&format!("done {gtrid}\n"), false)
    }

    /// Transactions decided but not known to be finished.
    pub fn pending(&self) -> std::io::Result<HashSet<String>> {
        let f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
            Err(e) => return Err(e),
        };
        let mut pending = HashSet::new();
        for line in std::io::BufReader::new(f).lines() {
            let line = line?;
            match line.split_once(' ') {
                Some(("commit", g)) => {
                    pending.insert(g.to_string());
                }
                Some(("done", g)) => {
                    pending.remove(g);
                }
                _ => {}
            }
        }
        Ok(pending)
    }

    /// Rewrites the log with only the still-pending decisions.
    fn compact(&self, keep: &HashSet<String>) -> std::io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        *guard = None;
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            for g in keep {
                writeln!(f, "commit {g}")?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
    }
}

/// What names this proxy's transactions and its XA log across restarts: `proxy.worker_id`, or
/// in cluster mode (where the worker id is leased anew at each start) a digest of the
/// instance name, which is unique per live proxy and stays the same.
pub fn identity(config: &shard_rules::config::Config) -> String {
    match config.cluster.as_ref().and_then(|c| c.instance.as_deref()) {
        Some(instance) => {
            use sha1::Digest;
            let d = sha1::Sha1::digest(instance.as_bytes());
            format!("i{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
        }
        None => config.proxy.worker_id.to_string(),
    }
}

/// The prefix of this proxy's transaction ids.
pub fn prefix(config: &shard_rules::config::Config) -> String {
    format!("rb-{}-{}-", config.proxy.room, identity(config))
}

/// `'gtrid','bqual'` for XA statements (both ASCII names of the proxy's making).
pub fn xid(gtrid: &str, bqual: &str) -> String {
    format!(
        "'{}','{}'",
        gtrid.replace('\'', "''"),
        bqual.replace('\'', "''")
    )
}

/// Test switch: `RB_XA_FAULT=after-prepare` or `after-decision` ends the process at that point
/// of a two-phase commit, as a crash would.
pub fn fault(point: &str) {
    if std::env::var("RB_XA_FAULT").is_ok_and(|v| v == point) {
        warn!(point, "RB_XA_FAULT: ending the process inside an XA commit");
        std::process::abort();
    }
}

/// Resolves this proxy's prepared branches on every data source of its room. Returns how many
/// were committed and rolled back, and the data sources that could not be asked.
///
/// `serving`: the proxy already serves clients (a retry), so branches of its own current run
/// are live transactions and are left alone, and the log is not rewritten.
pub async fn recover(shared: &Shared, serving: bool) -> (usize, usize, Vec<String>) {
    let log = &shared.xa;
    let prefix = log.prefix();
    let pending = match log.pending() {
        Ok(p) => p,
        Err(e) => {
            warn!(file = %log.path().display(), error = %e, "cannot read the XA log; prepared branches are left for the next start");
            return (0, 0, vec!["(xa log)".into()]);
        }
    };
    let (mut committed, mut rolled_back, mut unreachable) = (0, 0, Vec::new());
    let mut still_pending: HashSet<String> = HashSet::new();
    for ds in shared.pools.data_sources() {
        let mut conn = match shared.pools.dedicated(&ds).await {
            Ok(c) => c,
            Err(e) => {
                warn!(data_source = %ds, error = %e, "XA recovery: data source unreachable");
                unreachable.push(ds);
                continue;
            }
        };
        let rows = match conn.query("XA RECOVER").await {
            Ok(Ok(r)) => crate::session::rows_of(&r),
            Ok(Err(p)) => {
                warn!(data_source = %ds, error = %crate::backend::err_message(&p), "XA recovery: XA RECOVER refused");
                unreachable.push(ds);
                continue;
            }
            Err(e) => {
                warn!(data_source = %ds, error = %e, "XA recovery: data source unreachable");
                unreachable.push(ds);
                continue;
            }
        };
        for row in rows {
            // formatID, gtrid_length, bqual_length, data
            let (Some(gl), Some(data)) =
                (row.get(1).and_then(|v| v.parse::<usize>().ok()), row.get(3))
            else {
                continue;
            };
            if data.len() < gl || !data.starts_with(prefix) {
                continue;
            }
            if serving && data.starts_with(&log.current_run()) {
                continue;
            }
            let (gtrid, bqual) = data.split_at(gl);
            let commit = pending.contains(gtrid);
            let sql = format!(
                "XA {} {}",
                if commit { "COMMIT" } else { "ROLLBACK" },
                xid(gtrid, bqual)
            );
            match conn.query(&sql).await {
                Ok(Ok(_)) => {
                    info!(data_source = %ds, gtrid, branch = bqual, outcome = if commit { "committed" } else { "rolled back" }, "XA recovery: prepared branch resolved");
                    if commit {
                        committed += 1;
                    } else {
                        rolled_back += 1;
                    }
                }
                Ok(Err(p)) => {
                    warn!(data_source = %ds, gtrid, error = %crate::backend::err_message(&p), "XA recovery: cannot resolve a prepared branch");
                    if commit {
                        still_pending.insert(gtrid.to_string());
                    }
                }
                Err(e) => {
                    warn!(data_source = %ds, gtrid, error = %e, "XA recovery: data source lost");
                    if commit {
                        still_pending.insert(gtrid.to_string());
                    }
                }
            }
        }
    }
    // Decisions whose branches could not all be seen stay in the log for the next start.
    if unreachable.is_empty() && !serving {
        if let Err(e) = log.compact(&still_pending) {
            warn!(file = %log.path().display(), error = %e, "cannot compact the XA log");
        }
    }
    info!(committed, rolled_back, unreachable = ?unreachable, "XA recovery done");
    (committed, rolled_back, unreachable)
}

/// Recovery at start: once, and again every 10 s in the background while some data source
/// could not be asked.
pub async fn recover_at_start(shared: std::sync::Arc<Shared>) {
    if !shared.xa.exists() {
        return;
    }
    let (_, _, unreachable) = recover(&shared, false).await;
    if !unreachable.is_empty() {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                if recover(&shared, true).await.2.is_empty() {
                    break;
                }
            }
        });
    }
}
