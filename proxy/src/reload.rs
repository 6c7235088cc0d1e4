//! Rule changes while the proxy serves: a reload of the rules file (SIGHUP, the admin
//! interface's `RELOAD RULES`) and the admin interface's write-ban changes, which are written
//! back to the rules file so a restart keeps them.
//!
//! Order, for every change: parse and validate the whole file → check what cannot change
//! while serving ([`check`]) → (admin changes) write the file atomically → swap the pools of
//! changed data sources and then the rules ([`apply`]). A refusal at any step changes nothing:
//! the old rules keep serving. One change runs at a time (`Shared::reload_lock`). A statement
//! already deciding keeps the snapshot it took; the next statement of every session sees the
//! new rules.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shard_rules::route::CodeSet;
use shard_rules::RuleSet;
use tracing::{info, warn};

use crate::backend::{SharedTarget, Target};
use crate::session::Shared;

/// The rules being applied: which, from where, since when, and who asked.
#[derive(Debug, Clone)]
pub struct Applied {
    pub version: u64,
    pub at: SystemTime,
    /// `start`, `SIGHUP`, or `admin <user>@<ip>: <statement>`.
    pub by: String,
    /// The text of the rules file as applied: an admin change is refused if the file has
    /// changed on disk since (the DBA's edit would be applied unreviewed with it).
    pub text: Arc<str>,
}

/// The backends of this proxy's room in `rules`, by data source name.
pub fn local_targets(
    rules: &RuleSet,
    room: &str,
    connect_timeout: Duration,
) -> HashMap<String, SharedTarget> {
    rules
        .data_sources()
        .iter()
        .filter(|(_, ds)| ds.room == room)
        .map(|(name, ds)| {
            let t = Target {
                ds: name.clone(),
                room: ds.room.clone(),
                host: ds.host.clone(),
                port: ds.port,
                schema: ds.schema.clone(),
                user: ds.user.clone(),
                password: ds.password.clone(),
                connect_timeout,
            };
            (name.clone(), Arc::new(t))
        })
        .collect()
}

/// What a serving proxy cannot take from new rules: this proxy's room leaving them, the
/// segment allocator's table or center data source, the snowflake settings, the route code
/// function, and a route code changing rooms without a write-ban on it in both rule sets.
pub fn check(shared: &Shared, new: &RuleSet) -> Result<(), String> {
    check_fixed(shared, new)?;
    check_moves(shared, new)
}

/// [`check`] without the route-code moves: what no running proxy can take at all.
pub fn check_fixed(shared: &Shared, new: &RuleSet) -> Result<(), String> {
    let old = shared.rules.load_full();
    let room = &shared.config.proxy.room;
    if new.room_id(room) != Some(shared.room) {
        return Err(format!(
            "room `{room}` moved or left the rules; restart the proxy for that"
        ));
    }
    if old.segments() != new.segments() {
        return Err(
            "the segment allocation table ([segments]) changed; restart the proxy for that".into(),
        );
    }
    // The segment allocator holds a connection target chosen at start.
    let source = |r: &RuleSet| crate::session::segment_source(r).map(|d| format!("{d:?}"));
    if source(&old) != source(new) {
        return Err(
            "the center data source of the segment allocation table changed; restart the proxy \
             for that"
                .into(),
        );
    }
    if old.ids() != new.ids() {
        return Err(
            "the snowflake ID settings ([ids]) changed; restart every proxy for that".into(),
        );
    }
    let (old_route, new_route) = (old.route(), new.route());
    if old_route.count != new_route.count || old_route.key != new_route.key {
        return Err(
            "the route code function ([route_codes] count or key) changed; that moves every \
             user, and needs a restart of every proxy with all writes stopped"
                .into(),
        );
    }
    Ok(())
}

/// Cluster mode: the versions the acknowledgements are read by never go down, and go up with
/// what they version: a write-ban reported effective for version N is the ban of version N, and a
/// traffic rule acknowledged as version N is the traffic rule of version N.
pub fn check_versions(old: &RuleSet, new: &RuleSet) -> Result<(), String> {
    if new.ban_version() < old.ban_version()
        || (new.ban_version() == old.ban_version() && new.banned_codes() != old.banned_codes())
    {
        return Err(format!(
            "the write-ban changes from version {} (route codes {}) to version {} (route codes \
             {}): a changed write-ban needs a higher version",
            old.ban_version(),
            old.banned_codes(),
            new.ban_version(),
            new.banned_codes()
        ));
    }
    let moved = moved_codes(old, new);
    if new.traffic_version() < old.traffic_version()
        || (new.traffic_version() == old.traffic_version() && !moved.is_empty())
    {
        return Err(format!(
            "the traffic rule changes from version {} to version {}{}: a changed traffic rule \
             needs a higher version",
            old.traffic_version(),
            new.traffic_version(),
            moved
                .first()
                .map(|c| format!(" (route code {c} changes rooms)"))
                .unwrap_or_default()
        ));
    }
    Ok(())
}

/// The route codes whose owner room differs between `old` and `new`.
pub fn moved_codes(old: &RuleSet, new: &RuleSet) -> Vec<u32> {
    (0..new.route().count.min(old.route().count))
        .filter(|c| old.room_name(old.owner(*c)) != new.room_name(new.owner(*c)))
        .collect()
}

/// The cut-over's invariant: a route code changes rooms only while it is banned, in the rules
/// being replaced and in the new ones, so no write runs on either side of the move.
fn check_moves(shared: &Shared, new: &RuleSet) -> Result<(), String> {
    check_moves_between(&shared.rules.load_full(), new)
}

/// [`check_moves`] between two rule sets: `ctl put-rules` runs it against the rules in etcd
/// before writing, so a text every proxy would refuse is not written.
pub fn check_moves_between(old: &RuleSet, new: &RuleSet) -> Result<(), String> {
    let moved: Vec<u32> = moved_codes(old, new)
        .into_iter()
        .filter(|c| !(old.is_banned(*c) && new.is_banned(*c)))
        .collect();
    if let Some(first) = moved.first() {
        return Err(format!(
            "the traffic rule moves route code {first} from room `{}` to room `{}` ({} code(s) \
             in all) without a write-ban on it in both the serving rules (ban version {}) and \
             the new ones (ban version {}); ban the codes first, then move them",
            old.room_name(old.owner(*first)),
            new.room_name(new.owner(*first)),
            moved.len(),
            old.ban_version(),
            new.ban_version()
        ));
    }
    Ok(())
}

/// Swaps checked rules in: the pools of changed data sources first (so the first statement
/// on the new rules finds its backend), then the rules. A changed write-ban gets a waiter
/// that reports when it is effective; its handle is returned.
pub fn apply(
    shared: &Arc<Shared>,
    new: RuleSet,
    text: Arc<str>,
    by: String,
) -> (
    Arc<RuleSet>,
    Option<tokio::task::JoinHandle<Option<SystemTime>>>,
) {
    let old = shared.rules.load_full();
    let timeout = Duration::from_millis(shared.config.pool.connect_timeout_ms);
    let changed = shared
        .pools
        .update(local_targets(&new, &shared.config.proxy.room, timeout));
    let new = Arc::new(new);
    shared.rules.store(Arc::clone(&new));
    shared.bump_generation();
    shared.set_applied(Applied {
        version: new.version(),
        at: SystemTime::now(),
        by: by.clone(),
        text,
    });
    shared.stats.reloads_applied.fetch_add(1, Ordering::Relaxed);
    info!(
        rules_version = new.version(),
        traffic_version = new.traffic_version(),
        ban_version = new.ban_version(),
        banned = %new.banned_codes(),
        new_pools = ?changed,
        by = %by,
        "rules reloaded"
    );
    let waiter = (new.banned_codes() != old.banned_codes()
        || new.ban_version() != old.ban_version())
    .then(|| {
        let shared = Arc::clone(shared);
        let rules = Arc::clone(&new);
        let timeout = Duration::from_secs(shared.config.proxy.ban_wait_timeout_s);
        tokio::spawn(async move { shared.ban_effective(&rules, timeout).await })
    });
    (new, waiter)
}

/// Counts and logs a refused change; returns the message.
fn refused(shared: &Shared, path: &Path, by: &str, why: String) -> String {
    shared.stats.reloads_refused.fetch_add(1, Ordering::Relaxed);
    let msg = format!("{}: {why}", path.display());
    // One log line: the problems of a multi-line message joined.
    let line = msg.replace("\n  - ", " | ").replace('\n', " ");
    tracing::error!(by = %by, "rules reload refused, the old rules keep serving: {line}");
    msg
}

/// Re-reads the rules file and applies it. A file that does not parse or validate is refused
/// with every problem, and the old rules keep serving.
pub async fn reload_file(shared: &Arc<Shared>, by: &str) -> Result<Arc<RuleSet>, String> {
    let _one = shared.reload_lock.lock().await;
    let path = shared.rules_path.clone();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => return Err(refused(shared, &path, by, format!("cannot read it: {e}"))),
    };
    let new = match RuleSet::parse(&text) {
        Ok(r) => r,
        Err(e) => return Err(refused(shared, &path, by, e.to_string())),
    };
    if let Err(e) = check(shared, &new) {
        return Err(refused(shared, &path, by, e));
    }
    Ok(apply(shared, new, text.into(), by.to_string()).0)
}

/// What the admin interface asked of the write-ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanChange {
    /// Route codes as the rules file writes them (`"100-199"`, `"7"`); empty = clear.
    pub codes: Vec<String>,
    /// The new write-ban version; `None` = the serving one + 1.
    pub version: Option<u64>,
}

/// A write-ban change applied.
#[derive(Debug, Clone)]
pub struct BanApplied {
    pub rules_version: u64,
    pub ban_version: u64,
    pub banned: CodeSet,
    /// When the ban took effect on this proxy; `None` if a newer ban superseded it first.
    pub effective: Option<SystemTime>,
    pub waited: Duration,
}

/// Sets (or, with no codes, clears) the write-ban: the rules file is edited (`[write_ban]`
/// and the rules `version`, comments and layout kept), validated and checked as a reload
/// would be, written atomically, applied, and then awaited until the ban is effective on
/// this proxy. Logged with who asked.
pub async fn set_write_ban(
    shared: &Arc<Shared>,
    change: &BanChange,
    by: &str,
) -> Result<BanApplied, String> {
    let path = shared.rules_path.clone();
    let waiter = {
        let _one = shared.reload_lock.lock().await;
        let serving = shared.rules.load_full();
        let applied = shared.applied();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| refused(shared, &path, by, format!("cannot read it: {e}")))?;
        if *text != *applied.text {
            return Err(refused(
                shared,
                &path,
                by,
                format!(
                    "the file has changed since rules version {} was applied ({}); apply the \
                     edit first (RELOAD RULES) or undo it, then change the write-ban",
                    applied.version, applied.by
                ),
            ));
        }
        let version = change.version.unwrap_or(serving.ban_version() + 1);
        if version <= serving.ban_version() {
            return Err(refused(
                shared,
                &path,
                by,
                format!(
                    "write-ban version {version} is not above the serving version {}",
                    serving.ban_version()
                ),
            ));
        }
        let edited = edit_write_ban(&text, &change.codes, version, serving.version() + 1)
            .map_err(|e| refused(shared, &path, by, e))?;
        let new = RuleSet::parse(&edited).map_err(|e| refused(shared, &path, by, e.to_string()))?;
        check(shared, &new).map_err(|e| refused(shared, &path, by, e))?;
        write_atomically(&path, &edited).map_err(|e| {
            refused(
                shared,
                &path,
                by,
                format!("cannot write it (nothing changed): {e}"),
            )
        })?;
        info!(
            by = %by,
            file = %path.display(),
            old_rules_version = serving.version(),
            rules_version = new.version(),
            old_ban_version = serving.ban_version(),
            ban_version = new.ban_version(),
            old_banned = %serving.banned_codes(),
            banned = %new.banned_codes(),
            "write-ban changed through the admin interface; rules file rewritten"
        );
        apply(shared, new, edited.into(), by.to_string()).1
    };
    let start = std::time::Instant::now();
    let serving = shared.rules.load_full();
    let effective = match waiter {
        Some(w) => w.await.unwrap_or_else(|e| {
            warn!(error = %e, "write-ban waiter failed");
            None
        }),
        None => shared.ban_effective_at().map(|(_, t)| t),
    };
    Ok(BanApplied {
        rules_version: serving.version(),
        ban_version: serving.ban_version(),
        banned: serving.banned_codes().clone(),
        effective,
        waited: start.elapsed(),
    })
}

/// The rules text with `[write_ban]` set to `codes` and `version`, and the top-level `version`
/// set to `rules_version`; everything else (comments, order, formatting) as it was.
pub fn edit_write_ban(
    text: &str,
    codes: &[String],
    version: u64,
    rules_version: u64,
) -> Result<String, String> {
    use toml_edit::{Array, DocumentMut, Item, Table, Value};
    // Replaces a value in place: the key's comments and the value's trailing comment stay.
    fn set(t: &mut dyn toml_edit::TableLike, key: &str, mut v: Value) {
        match t.get_mut(key) {
            Some(Item::Value(old)) => {
                *v.decor_mut() = old.decor().clone();
                *old = v;
            }
            Some(item) => *item = Item::Value(v),
            None => {
                t.insert(key, Item::Value(v));
            }
        }
    }
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| format!("is not valid TOML: {e}"))?;
    let to_i64 = |v: u64| i64::try_from(v).map_err(|_| format!("version {v} is too large"));
    set(
        doc.as_table_mut(),
        "version",
        Value::from(to_i64(rules_version)?),
    );
    if !doc.contains_key("write_ban") {
        doc["write_ban"] = Item::Table(Table::new());
    }
    let ban = doc["write_ban"]
        .as_table_like_mut()
        .ok_or("`write_ban` is not a table")?;
    set(ban, "version", Value::from(to_i64(version)?));
    let mut list = Array::new();
    for c in codes {
        list.push(c.as_str());
    }
    set(ban, "route_codes", Value::Array(list));
    Ok(doc.to_string())
}

/// The rules text with `[traffic] owners.<room>` set for every room given, the traffic
/// `version` and the top-level `version` set; everything else as it was.
pub fn edit_traffic(
    text: &str,
    owners: &[(String, Vec<String>)],
    traffic_version: u64,
    rules_version: u64,
) -> Result<String, String> {
    use toml_edit::{Array, DocumentMut, Item, Table, Value};
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| format!("is not valid TOML: {e}"))?;
    let to_i64 = |v: u64| i64::try_from(v).map_err(|_| format!("version {v} is too large"));
    doc["version"] = toml_edit::value(to_i64(rules_version)?);
    if !doc.contains_key("traffic") {
        doc["traffic"] = Item::Table(Table::new());
    }
    let traffic = doc["traffic"]
        .as_table_like_mut()
        .ok_or("`traffic` is not a table")?;
    traffic.insert("version", toml_edit::value(to_i64(traffic_version)?));
    if traffic.get("owners").is_none() {
        let mut t = Table::new();
        t.set_dotted(true);
        traffic.insert("owners", Item::Table(t));
    }
    let table = traffic
        .get_mut("owners")
        .and_then(Item::as_table_like_mut)
        .ok_or("`traffic.owners` is not a table")?;
    for (room, codes) in owners {
        let mut list = Array::new();
        for c in codes {
            list.push(c.as_str());
        }
        table.insert(room, Item::Value(Value::Array(list)));
    }
    Ok(doc.to_string())
}

/// Writes `text` to `path` so that readers see the old file or the new one, never a part:
/// a temporary file in the same directory, flushed to disk, renamed over `path`.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "rules".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.rb-{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself reaches the disk with the directory.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str =
        "# the DBA's comment\nversion = 4 # bump me\n\n[rooms.A]\nrole = \"center\"\n\n\
                         [write_ban]\n# why it is banned\nversion = 2\nroute_codes = [\"1\"]\n";

    #[test]
    fn a_write_ban_edit_keeps_comments_and_bumps_the_rules_version() {
        let out = edit_write_ban(RULES, &["100-199".into(), "7".into()], 3, 5).unwrap();
        assert!(
            out.starts_with("# the DBA's comment\nversion = 5 # bump me\n"),
            "{out}"
        );
        assert!(out.contains("# why it is banned\nversion = 3\n"), "{out}");
        assert!(out.contains("route_codes = [\"100-199\", \"7\"]"), "{out}");
        assert!(out.contains("[rooms.A]\nrole = \"center\""), "{out}");
    }

    #[test]
    fn a_write_ban_edit_adds_the_section_when_missing_and_clears_with_no_codes() {
        let out = edit_write_ban("version = 1\n", &[], 1, 2).unwrap();
        let v: toml_edit::DocumentMut = out.parse().unwrap();
        assert_eq!(v["version"].as_integer(), Some(2));
        assert_eq!(v["write_ban"]["version"].as_integer(), Some(1));
        assert_eq!(
            v["write_ban"]["route_codes"].as_array().map(|a| a.len()),
            Some(0)
        );
        assert!(edit_write_ban("version = [", &[], 1, 2).is_err());
        assert!(edit_write_ban("write_ban = 3\nversion = 1\n", &[], 1, 2).is_err());
    }

    #[test]
    fn atomic_writes_replace_the_file_and_leave_no_temporary_behind() {
        let dir = std::env::temp_dir().join(format!("rb-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rules.toml");
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1);
        // A directory that does not exist: an error, never a panic.
        assert!(write_atomically(&dir.join("no/such/rules.toml"), "x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
