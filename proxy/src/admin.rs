//! The admin interface: the MySQL protocol on its own port (opensrv-mysql), for DBAs and
//! operators with the `mariadb` CLI or any driver. Its users come from the config file's
//! `[admin.users]`, never from the rules. Every answer is an ordinary result set or OK/ERR;
//! the statements are listed in `docs/operations.md` and parsed by [`parse`].
//!
//! Rule changes (`SET WRITE BAN`, `CLEAR WRITE BAN`, `RELOAD RULES`) go through
//! [`crate::reload`]: validated whole, written back to the rules file atomically, logged with
//! the admin user, address and statement. Users with `write = false` may only look.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use opensrv_mysql::{
    AsyncMysqlIntermediary, AsyncMysqlShim, Column, ColumnFlags, ColumnType, ErrorKind, InitWriter,
    OkResponse, ParamParser, QueryResultWriter, StatementMetaWriter,
};
use shard_rules::config::{AdminUser, ConnectionMode, DatabaseType};
use shard_rules::RuleSet;
use tokio::io::AsyncWrite;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::reload::BanChange;
use crate::session::Shared;

/// An admin statement, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    ShowRules,
    ShowTableRules {
        like: Option<String>,
    },
    ShowTrafficRule,
    ShowWriteBan,
    SetWriteBan(BanChange),
    ClearWriteBan {
        version: Option<u64>,
    },
    Preview {
        database: Option<String>,
        mode: Option<ConnectionMode>,
        sql: String,
    },
    ReloadRules,
    ShowPools,
    ShowSessions,
    ShowStats,
    ShowVersion,
    ShowCluster,
    ShowDatabases,
    ShowTables,
    Help,
    /// `SELECT @@version_comment` and the like, which clients send by themselves.
    Variable(String),
    /// `SET NAMES …`, `SET autocommit = …`: what drivers send at connect; nothing to do.
    SessionSetting,
}

/// The statements, for `HELP` and for the error on anything else.
const STATEMENTS: &[(&str, &str)] = &[
    (
        "SHOW RULES",
        "rules version, source file, applied at and by",
    ),
    (
        "SHOW TABLE RULES [LIKE 'pattern']",
        "every sharded and broadcast table",
    ),
    ("SHOW TRAFFIC RULE", "which room owns which route codes"),
    (
        "SHOW WRITE BAN",
        "banned route codes, version, effective time",
    ),
    (
        "SET WRITE BAN ROUTE_CODES 100-199,300 [VERSION n]",
        "ban writes (written to the rules file)",
    ),
    (
        "CLEAR WRITE BAN [VERSION n]",
        "lift the write-ban (written to the rules file)",
    ),
    (
        "PREVIEW [DATABASE db] [MODE unit|center] <sql>",
        "how this proxy would route or refuse a statement",
    ),
    ("RELOAD RULES", "re-read the rules file"),
    ("SHOW POOLS", "backend pools per room and data source"),
    ("SHOW SESSIONS", "client sessions"),
    ("SHOW STATS", "statement, refusal, ID and reload counters"),
    ("SHOW VERSION", "proxy and backend versions"),
    (
        "SHOW CLUSTER",
        "cluster mode: etcd reachable or not, the rules revision applied (docs/cutover.md)",
    ),
    (
        "SHOW HELP",
        "this list (HELP too, where the client does not take it)",
    ),
];

/// Why an admin statement was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

/// Whether `s` starts with the words `w` (case-insensitive); the rest after them.
fn after_words<'a>(s: &'a str, w: &[&str]) -> Option<&'a str> {
    let mut rest = s.trim_start();
    for word in w {
        let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
        if !rest[..end].eq_ignore_ascii_case(word) {
            return None;
        }
        rest = rest[end..].trim_start();
    }
    Some(rest)
}

fn unquote(s: &str) -> &str {
    let t = s.trim();
    for q in ['\'', '"'] {
        if let Some(inner) = t.strip_prefix(q).and_then(|x| x.strip_suffix(q)) {
            return inner;
        }
    }
    t
}

fn version_arg(rest: &str) -> Result<Option<u64>, ParseError> {
    let w = words(rest);
    match w.as_slice() {
        [] => Ok(None),
        [v, n] if v.eq_ignore_ascii_case("VERSION") => n
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ParseError(format!("VERSION needs a whole number, not `{n}`"))),
        _ => Err(ParseError(format!(
            "expected nothing or VERSION <n> here, not `{rest}`"
        ))),
    }
}

/// Route code ranges as typed (`100-199, 300` or `'100-199','300'`), one string each, checked
/// for shape (their bounds are checked with the rules).
fn code_list(s: &str) -> Result<Vec<String>, ParseError> {
    let mut out = Vec::new();
    for part in s.split(',').map(unquote).filter(|p| !p.is_empty()) {
        let ok = match part.split_once('-') {
            Some((a, b)) => a.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok(),
            None => part.parse::<u32>().is_ok(),
        };
        if !ok {
            return Err(ParseError(format!(
                "`{part}` is not a route code or range (like 100 or 100-199)"
            )));
        }
        out.push(part.replace(' ', ""));
    }
    if out.is_empty() {
        return Err(ParseError(
            "SET WRITE BAN ROUTE_CODES needs at least one code or range; CLEAR WRITE BAN lifts \
             the ban"
                .into(),
        ));
    }
    Ok(out)
}

/// Parses one admin statement (a trailing `;` allowed).
pub fn parse(text: &str) -> Result<Command, ParseError> {
    let s = text.trim().trim_end_matches(';').trim();
    let w = words(s);
    let upper: Vec<String> = w.iter().take(4).map(|x| x.to_ascii_uppercase()).collect();
    let head: Vec<&str> = upper.iter().map(|x| x.as_str()).collect();
    let exact = |cmd: Command| {
        if w.len() == head.len() {
            Ok(cmd)
        } else {
            Err(ParseError(format!(
                "unexpected words after `{}`",
                head.join(" ")
            )))
        }
    };
    match head.as_slice() {
        ["SHOW", "RULES"] => Ok(Command::ShowRules),
        ["SHOW", "TABLE", "RULES", ..] => {
            let rest = after_words(s, &["SHOW", "TABLE", "RULES"]).unwrap_or("");
            if rest.is_empty() {
                return Ok(Command::ShowTableRules { like: None });
            }
            match after_words(rest, &["LIKE"]) {
                Some(p) if !p.is_empty() => Ok(Command::ShowTableRules {
                    like: Some(unquote(p).to_string()),
                }),
                _ => Err(ParseError("SHOW TABLE RULES [LIKE 'pattern']".into())),
            }
        }
        ["SHOW", "TRAFFIC", "RULE" | "RULES"] => exact(Command::ShowTrafficRule),
        ["SHOW", "WRITE", "BAN"] => exact(Command::ShowWriteBan),
        ["SET", "WRITE", "BAN", ..] => {
            let rest = after_words(s, &["SET", "WRITE", "BAN"]).unwrap_or("");
            let Some(rest) = after_words(rest, &["ROUTE_CODES"]) else {
                return Err(ParseError(
                    "SET WRITE BAN ROUTE_CODES <codes and ranges> [VERSION n]".into(),
                ));
            };
            // `VERSION n` at the end, if present.
            let (codes, version) = match rest.to_ascii_uppercase().rfind("VERSION") {
                Some(at) => (&rest[..at], version_arg(&rest[at..])?),
                None => (rest, None),
            };
            Ok(Command::SetWriteBan(BanChange {
                codes: code_list(codes)?,
                version,
            }))
        }
        ["CLEAR", "WRITE", "BAN", ..] => Ok(Command::ClearWriteBan {
            version: version_arg(after_words(s, &["CLEAR", "WRITE", "BAN"]).unwrap_or(""))?,
        }),
        ["PREVIEW", ..] => {
            let mut rest = after_words(s, &["PREVIEW"]).unwrap_or("");
            let (mut database, mut mode) = (None, None);
            loop {
                let w = words(rest);
                match w.first().map(|x| x.to_ascii_uppercase()).as_deref() {
                    Some("DATABASE") if w.len() > 1 => {
                        database = Some(unquote(w[1]).trim_matches('`').to_string());
                        rest = after_words(rest, &[w[0], w[1]]).unwrap_or("");
                    }
                    Some("MODE") if w.len() > 1 => {
                        mode = Some(match w[1].to_ascii_lowercase().as_str() {
                            "unit" => ConnectionMode::Unit,
                            "center" => ConnectionMode::Center,
                            other => {
                                return Err(ParseError(format!(
                                    "MODE is `unit` or `center`, not `{other}`"
                                )))
                            }
                        });
                        rest = after_words(rest, &[w[0], w[1]]).unwrap_or("");
                    }
                    _ => break,
                }
            }
            // The statement as typed (its own `;` stays off).
            let sql = rest.trim().to_string();
            if sql.is_empty() {
                return Err(ParseError(
                    "PREVIEW [DATABASE db] [MODE unit|center] <statement>".into(),
                ));
            }
            Ok(Command::Preview {
                database,
                mode,
                sql,
            })
        }
        ["RELOAD", "RULES"] => Ok(Command::ReloadRules),
        ["SHOW", "POOLS"] => Ok(Command::ShowPools),
        ["SHOW", "SESSIONS"] | ["SHOW", "PROCESSLIST"] | ["SHOW", "FULL", "PROCESSLIST"] => {
            Ok(Command::ShowSessions)
        }
        ["SHOW", "STATS"] => Ok(Command::ShowStats),
        ["SHOW", "VERSION"] => Ok(Command::ShowVersion),
        ["SHOW", "CLUSTER"] => exact(Command::ShowCluster),
        ["SHOW", "DATABASES" | "SCHEMAS"] => Ok(Command::ShowDatabases),
        ["SHOW", "TABLES"] => Ok(Command::ShowTables),
        ["HELP"] | ["SHOW", "HELP"] => Ok(Command::Help),
        ["SELECT", var, ..] if var.starts_with("@@") || var.starts_with("DATABASE(") => {
            Ok(Command::Variable(w[1].to_ascii_lowercase()))
        }
        ["SET", next, ..]
            if [
                "NAMES",
                "AUTOCOMMIT",
                "CHARACTER",
                "SQL_MODE",
                "SESSION",
                "@@SESSION.AUTOCOMMIT",
            ]
            .iter()
            .any(|k| next.starts_with(k)) =>
        {
            Ok(Command::SessionSetting)
        }
        _ => Err(ParseError(format!(
            "not an admin statement: `{}`; the admin interface knows: {}",
            w.iter().take(6).copied().collect::<Vec<_>>().join(" "),
            STATEMENTS
                .iter()
                .map(|(s, _)| *s)
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
}

/// SQL `LIKE` with `%` and `_` (and `\\` escaping the next character), case-insensitive
/// (table names). Iterative, at most pattern × name steps: any pattern an admin user types is
/// safe.
pub fn like(pattern: &str, s: &str) -> bool {
    #[derive(Clone, Copy)]
    enum Tok {
        Any,
        One,
        Lit(u8),
    }
    let mut p = Vec::with_capacity(pattern.len());
    let mut bytes = pattern.bytes();
    while let Some(c) = bytes.next() {
        p.push(match c {
            b'%' => Tok::Any,
            b'_' => Tok::One,
            b'\\' => Tok::Lit(bytes.next().unwrap_or(b'\\')),
            c => Tok::Lit(c),
        });
    }
    let s = s.as_bytes();
    let (mut i, mut j) = (0, 0);
    // The last `%` seen and the name position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while j < s.len() {
        match p.get(i) {
            Some(Tok::Any) => {
                star = Some((i, j));
                i += 1;
            }
            Some(Tok::One) => {
                i += 1;
                j += 1;
            }
            Some(Tok::Lit(c)) if c.eq_ignore_ascii_case(&s[j]) => {
                i += 1;
                j += 1;
            }
            _ => match star {
                // Let the last `%` take one more character and try again from there.
                Some((si, sj)) => {
                    star = Some((si, sj + 1));
                    i = si + 1;
                    j = sj + 1;
                }
                None => return false,
            },
        }
    }
    p[i..].iter().all(|t| matches!(t, Tok::Any))
}

/// A result set: column names and rows of text (NULL as `None`).
pub struct Table {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    fn new(columns: &[&'static str]) -> Self {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }
    fn row<I: IntoIterator<Item = Option<String>>>(&mut self, values: I) {
        self.rows.push(values.into_iter().collect());
    }
}

fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-12-02T19:04:05.123Z`.
pub fn timestamp(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn db_type(t: DatabaseType) -> &'static str {
    match t {
        DatabaseType::Unit => "unit",
        DatabaseType::Center => "center",
        DatabaseType::CenterUnit => "center-unit",
    }
}

fn mode_name(m: ConnectionMode) -> &'static str {
    match m {
        ConnectionMode::Unit => "unit",
        ConnectionMode::Center => "center",
    }
}

/// `SHOW RULES`.
pub fn show_rules(shared: &Shared) -> Table {
    let rules = shared.rules.load();
    let applied = shared.applied();
    let mut t = Table::new(&[
        "version",
        "traffic_version",
        "write_ban_version",
        "source",
        "applied_at",
        "applied_by",
        "room",
        "rooms",
        "databases",
        "users",
    ]);
    let mut dbs: Vec<String> = rules
        .databases()
        .map(|d| format!("{} ({})", d.name, db_type(d.db_type)))
        .collect();
    dbs.sort();
    t.row([
        s(rules.version()),
        s(rules.traffic_version()),
        s(rules.ban_version()),
        s(shared.rules_path.display()),
        s(timestamp(applied.at)),
        s(applied.by),
        s(&shared.config.proxy.room),
        s(rules
            .rooms()
            .iter()
            .map(|(n, r)| {
                format!(
                    "{n} ({})",
                    if *r == shard_rules::config::RoomRole::Center {
                        "center"
                    } else {
                        "unit"
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")),
        s(dbs.join(", ")),
        s(rules.users().len()),
    ]);
    t
}

fn strategy(st: &Option<shard_rules::algorithm::Strategy>) -> Option<String> {
    use shard_rules::algorithm::Algorithm;
    let st = st.as_ref()?;
    let alg = match &st.algorithm {
        Algorithm::Mod(n) => format!("MOD({n})"),
        Algorithm::HashMod(n) => format!("HASH_MOD({n})"),
        Algorithm::VolumeRange {
            lower,
            upper,
            volume,
        } => format!("VOLUME_RANGE({lower}..{upper} by {volume})"),
        Algorithm::BoundaryRange(b) => format!("BOUNDARY_RANGE({b:?})"),
        Algorithm::Interval(_) => "INTERVAL".to_string(),
        Algorithm::Inline(_) => "INLINE".to_string(),
    };
    Some(format!("{} {alg}", st.column))
}

/// `SHOW TABLE RULES [LIKE …]`: sharded and broadcast tables of every database.
pub fn show_table_rules(rules: &RuleSet, like_pattern: Option<&str>) -> Table {
    let mut t = Table::new(&[
        "database",
        "database_type",
        "table",
        "layout",
        "sharding_key",
        "data_nodes",
        "database_sharding",
        "table_sharding",
        "key_generator",
        "binding_group",
    ]);
    let mut dbs: Vec<_> = rules.databases().collect();
    dbs.sort_by(|a, b| a.name.cmp(&b.name));
    for db in dbs {
        let mut tables: Vec<_> = db.sharded_tables().collect();
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        for tr in tables {
            if like_pattern.is_some_and(|p| !like(p, &tr.name)) {
                continue;
            }
            let nodes: Vec<String> = tr
                .nodes
                .iter()
                .map(|n| format!("{}.{}", db.data_source_name(n.data_source), n.table))
                .collect();
            t.row([
                s(&db.name),
                s(db_type(db.db_type)),
                s(&tr.name),
                s("sharded"),
                tr.sharding_key.clone(),
                s(nodes.join(", ")),
                strategy(&tr.database),
                strategy(&tr.table),
                tr.key_generator
                    .as_ref()
                    .map(|g| format!("{} {:?}", g.column, g.kind).to_lowercase()),
                db.binding_group(&tr.name).map(|g| g.to_string()),
            ]);
        }
        let mut broadcast: Vec<&str> = db.broadcast_tables().collect();
        broadcast.sort();
        for b in broadcast {
            if like_pattern.is_some_and(|p| !like(p, b)) {
                continue;
            }
            let nodes: Vec<String> = db
                .data_sources
                .iter()
                .map(|d| format!("{}.{b}", d.name))
                .collect();
            t.row([
                s(&db.name),
                s(db_type(db.db_type)),
                s(b),
                s("broadcast"),
                None,
                s(nodes.join(", ")),
                None,
                None,
                None,
                None,
            ]);
        }
    }
    t
}

/// `SHOW TRAFFIC RULE`.
pub fn show_traffic(rules: &RuleSet) -> Table {
    let mut t = Table::new(&[
        "traffic_version",
        "room",
        "role",
        "route_codes",
        "count",
        "banned_here",
    ]);
    for (i, (name, role)) in rules.rooms().iter().enumerate() {
        let owned = rules.owned_codes(i as shard_rules::RoomId);
        let banned = owned.iter().filter(|c| rules.is_banned(*c)).count();
        t.row([
            s(rules.traffic_version()),
            s(name),
            s(if *role == shard_rules::config::RoomRole::Center {
                "center"
            } else {
                "unit"
            }),
            s(owned),
            s(owned.len()),
            s(banned),
        ]);
    }
    t
}

/// `SHOW WRITE BAN`.
pub fn show_write_ban(shared: &Shared) -> Table {
    let rules = shared.rules.load();
    let mut t = Table::new(&[
        "write_ban_version",
        "route_codes",
        "count",
        "state",
        "effective_at",
        "waited_ms",
        "rules_version",
    ]);
    let effective = shared
        .ban_effective_at()
        .filter(|(v, _)| *v == rules.ban_version());
    t.row([
        s(rules.ban_version()),
        s(rules.banned_codes()),
        s(rules.banned_codes().len()),
        s(if effective.is_some() {
            "effective"
        } else {
            "pending"
        }),
        effective.map(|(_, at)| timestamp(at)),
        effective.map(|_| {
            shared
                .stats
                .ban_wait_ms
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_string()
        }),
        s(rules.version()),
    ]);
    t
}

/// `SHOW POOLS`.
pub fn show_pools(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        "room",
        "data_source",
        "address",
        "profiles",
        "max_size",
        "connections",
        "idle",
        "in_use",
        "waiters",
        "errors",
    ]);
    for p in shared.pools.stats() {
        t.row([
            s(p.room),
            s(p.data_source),
            s(p.address),
            s(p.profiles),
            s(p.max),
            s(p.connections),
            s(p.idle),
            s(p.in_use),
            s(p.waiters),
            s(p.errors),
        ]);
    }
    t
}

/// `SHOW SESSIONS`.
pub fn show_sessions(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        "id",
        "user",
        "client",
        "database",
        "mode",
        "state",
        "backend",
        "writing_route_codes",
        "statement_digest",
        "since",
    ]);
    for v in shared.sessions() {
        t.row([
            s(v.id),
            s(v.user),
            s(v.peer),
            v.database,
            v.mode.map(|m| mode_name(m).to_string()),
            s(v.state.label()),
            v.backend
                .map(|(ds, thread)| format!("{ds} thread {thread}")),
            Some(v.writing).filter(|w| w != "none"),
            Some(v.digest).filter(|d| !d.is_empty()),
            v.since.map(timestamp),
        ]);
    }
    t
}

/// `SHOW STATS`: one row per counter.
pub fn show_stats(shared: &Shared) -> Table {
    use crate::metrics::{Outcome, StmtKind, REFUSAL_REASONS};
    use std::sync::atomic::Ordering::Relaxed;
    let st = &shared.stats;
    let mut t = Table::new(&["name", "value"]);
    let mut put = |name: String, v: String| t.row([Some(name), Some(v)]);
    put(
        "client_connections".into(),
        shared.session_count().to_string(),
    );
    put("logins".into(), st.logged_in.load(Relaxed).to_string());
    put(
        "failed_logins".into(),
        st.failed_login.load(Relaxed).to_string(),
    );
    put(
        "refused_connection_limit".into(),
        st.refused_limit.load(Relaxed).to_string(),
    );
    for k in StmtKind::ALL {
        let total: u64 = Outcome::ALL.iter().map(|o| st.statements(k, *o)).sum();
        if total == 0 {
            continue;
        }
        for o in Outcome::ALL {
            let n = st.statements(k, o);
            if n > 0 {
                put(
                    format!("statements.{}.{}", k.label(), o.label()),
                    n.to_string(),
                );
            }
        }
        put(
            format!("statements.{}.mean_latency_us", k.label()),
            st.mean_latency_us(k).to_string(),
        );
    }
    for (code, reason) in REFUSAL_REASONS {
        put(format!("refusals.{reason}"), st.refusals(code).to_string());
    }
    put(
        "ids.snowflake".into(),
        st.ids_snowflake.load(Relaxed).to_string(),
    );
    put(
        "ids.segment".into(),
        st.ids_segment.load(Relaxed).to_string(),
    );
    put(
        "foreign_reads".into(),
        shared.foreign_reads.load(Relaxed).to_string(),
    );
    let plans = shared.plans.stats();
    put("plan_cache.hits".into(), plans.hits.to_string());
    put("plan_cache.misses".into(), plans.misses.to_string());
    put("plan_cache.entries".into(), plans.entries.to_string());
    put(
        "plan_cache.hit_rate".into(),
        format!("{:.3}", plans.hit_rate()),
    );
    put(
        "rules.reloads_applied".into(),
        st.reloads_applied.load(Relaxed).to_string(),
    );
    put(
        "rules.reloads_refused".into(),
        st.reloads_refused.load(Relaxed).to_string(),
    );
    put(
        "write_ban.last_wait_ms".into(),
        st.ban_wait_ms.load(Relaxed).to_string(),
    );
    t
}

/// `SHOW VERSION`.
/// `SHOW CLUSTER`: cluster mode's state, one row per item.
pub fn show_cluster(shared: &Shared) -> Table {
    let st = shared
        .cluster
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut t = Table::new(&["item", "value"]);
    let mut put = |k: &str, v: String| t.row([s(k), Some(v)]);
    if !st.enabled {
        put("cluster mode", "off (the rules file alone)".into());
        return t;
    }
    put("cluster mode", "on".into());
    put("url", st.url);
    put("instance", st.instance);
    put(
        "etcd",
        if st.connected {
            "connected".into()
        } else {
            "UNREACHABLE: serving the last rules applied".into()
        },
    );
    put(
        "writes",
        if shared.write_fence.stale() {
            "HELD (8032): it refused the rules it (re)joined etcd on, which may miss a cut-over; \
             reads go on"
                .into()
        } else if shared.write_fence.held() {
            "HELD (8032): the registration in etcd may have lapsed; reads go on".into()
        } else {
            "allowed (registered)".into()
        },
    );
    put("last error", st.last_error.unwrap_or_else(|| "-".into()));
    put(
        "last contact",
        st.last_contact.map_or("never".into(), timestamp),
    );
    put(
        "rules revision",
        if st.rules_revision == 0 {
            "none from etcd yet (the rules file)".into()
        } else {
            st.rules_revision.to_string()
        },
    );
    put("refused", st.refused.unwrap_or_else(|| "-".into()));
    put(
        "snowflake worker id",
        match shared.worker_fence.get() {
            Some(f) => match f.check() {
                Ok(()) => format!("{} (leased from etcd)", f.worker),
                Err(e) => format!("{}, not usable: {e}", f.worker),
            },
            None => "not leased".into(),
        },
    );
    t
}

pub fn show_version(shared: &Shared, backend: String) -> Table {
    let mut t = Table::new(&[
        "rainbow_bridge",
        "backend_version",
        "room",
        "rules_version",
        "started_at",
    ]);
    t.row([
        s(env!("CARGO_PKG_VERSION")),
        s(backend),
        s(&shared.config.proxy.room),
        s(shared.rules.load().version()),
        s(timestamp(shared.started())),
    ]);
    t
}

fn key_source(s: shard_rules::decide::KeySource) -> &'static str {
    use shard_rules::decide::KeySource;
    match s {
        KeySource::HintRouteCode => "the hint's route code",
        KeySource::HintKey => "the hint",
        KeySource::Column => "the sharding column",
        KeySource::Session => "the session ShardingKey",
    }
}

/// The physical data source serving logical database `db` in this proxy's room.
fn local_backend(shared: &Shared, rules: &RuleSet, db: &str) -> Option<String> {
    let database = rules.database(db)?;
    let logical = database.data_sources.get(database.default_data_source)?;
    let name = logical.physical.get(shared.room as usize)?.as_deref()?;
    let ds = rules.data_sources().get(name)?;
    Some(format!(
        "{name} ({}:{}/{}) in room {}",
        ds.host, ds.port, ds.schema, ds.room
    ))
}

/// `PREVIEW`: what this proxy would do with `sql` from a session in `database` with `mode`:
/// the same checks a client's statement goes through (hint, gate, analysis, decision), then
/// the route facts, the data nodes, the backend and the exact text it would receive. Nothing
/// is executed and no key is generated (sample keys stand in).
pub fn preview(shared: &Shared, database: &str, mode: ConnectionMode, sql: &str) -> Table {
    use crate::enforce::{Ctx, Verdict};
    let rules = shared.rules.load_full();
    let mut t = Table::new(&["item", "value"]);
    let mut put = |k: &str, v: String| t.row([s(k), Some(v)]);
    let db_type_name = rules
        .database(database)
        .map_or("not a database of the rules", |d| db_type(d.db_type));
    put("database", format!("{database} ({db_type_name})"));
    put(
        "session",
        format!(
            "room {} ({}), mode {}, rules version {}",
            shared.config.proxy.room,
            if rules.room_role(shared.room) == shard_rules::config::RoomRole::Center {
                "center"
            } else {
                "unit"
            },
            mode_name(mode),
            rules.version()
        ),
    );
    let ctx = Ctx {
        rules: &rules,
        room: shared.room,
        mode,
        database,
        session_key: None,
        backslash_escapes: true,
        ansi_quotes: false,
        escape_unsafe_charset: false,
        count_foreign_reads: true,
        plans: &shared.plans,
        writes_held: false,
    };
    let assessed = crate::lint::assess(&ctx, sql.as_bytes());
    put(
        "hint",
        match &assessed.hint {
            Ok(h) => h.as_ref().map_or("none".into(), |h| h.to_string()),
            Err(e) => format!("malformed: {e}"),
        },
    );
    let crate::lint::Assessed {
        verdict,
        decision: informational,
        ..
    } = assessed;
    let (decision, outcome) = match verdict {
        Err(e) => {
            let (code, state) = e.code();
            put("decision", "refused".into());
            put(
                "error",
                format!("{code} ({}) {e}", String::from_utf8_lossy(state)),
            );
            // What the refusal knows of the route: the table, key, route code and owner room.
            if let Some(Err(r)) = informational {
                use shard_rules::decide::RouteError;
                if let Some(table) = &r.table {
                    put("table", table.clone());
                }
                if let RouteError::WrongRoom { key, .. } | RouteError::Banned { key, .. } =
                    &r.reason
                {
                    put("sharding key", key.clone());
                }
                if let Some(c) = r.route_code {
                    put("route code", c.to_string());
                    if let Some(o) = &r.owner_room {
                        put("owner room", o.clone());
                    }
                    put(
                        "write-ban",
                        format!(
                            "{} (write-ban version {})",
                            if rules.is_banned(c) {
                                "banned"
                            } else {
                                "not banned"
                            },
                            rules.ban_version()
                        ),
                    );
                }
            }
            return t;
        }
        Ok(Verdict::SetSessionKey(k)) => {
            put("decision", "answered by the proxy".into());
            put(
                "effect",
                k.map_or("the session ShardingKey is reset".into(), |k| {
                    format!("the session ShardingKey becomes {k}")
                }),
            );
            return t;
        }
        Ok(Verdict::ForeignRead { code, owner }) => (
            informational.and_then(Result::ok),
            format!(
                "forwarded: a read of route code {code}, owned by room {}, served here and \
                 counted as a foreign read",
                rules.room_name(owner)
            ),
        ),
        Ok(Verdict::Forward(Some(d))) => (Some(*d), "forwarded: checked and allowed".into()),
        Ok(Verdict::Forward(None)) => (
            informational.and_then(Result::ok),
            "forwarded: reads and session statements are not checked statement by statement".into(),
        ),
        Ok(Verdict::NeedIds(_)) => (None, "forwarded".into()),
    };
    put("decision", outcome);
    if let Some(d) = &decision {
        put("statement kind", format!("{:?}", d.kind));
        match &d.route {
            Some(r) => {
                put(
                    "sharding key",
                    match &r.key {
                        Some(k) => format!("{k} (from {})", key_source(r.source)),
                        None => "none (the hint gave the route code)".into(),
                    },
                );
                put("route code", r.code.to_string());
                put("owner room", rules.room_name(r.owner).to_string());
                put(
                    "write-ban",
                    if r.banned {
                        format!("banned (write-ban version {})", rules.ban_version())
                    } else {
                        format!("not banned (write-ban version {})", rules.ban_version())
                    },
                );
            }
            None => put("sharding key", "none".into()),
        }
        for tr in &d.tables {
            let nodes: Vec<String> = tr.nodes.iter().map(|n| n.to_string()).collect();
            put(
                "data nodes",
                format!(
                    "{} ({}): {}",
                    tr.table,
                    format!("{:?}", tr.layout).to_lowercase(),
                    if nodes.is_empty() {
                        "none (no row can match)".into()
                    } else {
                        nodes.join(", ")
                    }
                ),
            );
        }
        for g in &d.generated {
            put(
                "generated key",
                format!(
                    "{}.{} ({:?}), sample values below",
                    g.table, g.generator.column, g.generator.kind
                )
                .to_lowercase(),
            );
        }
    }
    put(
        "backend",
        local_backend(shared, &rules, database)
            .unwrap_or_else(|| format!("none: `{database}` has no data source in this room")),
    );
    let sent = match decision.as_ref().and_then(|d| d.generated.first()) {
        Some(g) => {
            crate::enforce::add_generated_column(sql.as_bytes(), &g.generator.column, &g.values)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|| sql.to_string())
        }
        None => sql.to_string(),
    };
    put("sql", sent.clone());
    // Sharded: what each node runs, and how the results are merged.
    if let Some(plan) = decision
        .as_ref()
        .and_then(|d| crate::lint::node_plan(&rules, database, d, sent.as_bytes()))
    {
        match plan {
            Ok(nq) => {
                for (ds, q) in &nq.queries {
                    put(
                        "node query",
                        format!("{ds}: {}", String::from_utf8_lossy(q)),
                    );
                }
                if let Some(plan) = &nq.select {
                    put("merge", plan.describe());
                }
            }
            Err(e) => put("node query", format!("refused (ER_NOT_SUPPORTED_YET): {e}")),
        }
    }
    t
}

/// Serves the admin port until the process ends.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, users: BTreeMap<String, AdminUser>) {
    let users = Arc::new(users);
    let next = std::sync::atomic::AtomicU32::new(1);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shim = AdminSession {
            shared: Arc::clone(&shared),
            users: Arc::clone(&users),
            peer,
            id: next.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            salt: crate::auth::new_salt(),
            user: std::sync::Mutex::new(None),
            database: None,
        };
        tokio::spawn(async move {
            let (r, w) = stream.into_split();
            if let Err(e) = AsyncMysqlIntermediary::run_on(shim, r, w).await {
                info!(peer = %peer, error = %e, "admin connection ended");
            }
        });
    }
}

/// One admin connection.
struct AdminSession {
    shared: Arc<Shared>,
    users: Arc<BTreeMap<String, AdminUser>>,
    peer: SocketAddr,
    id: u32,
    salt: [u8; 20],
    /// The authenticated user and whether it may change rules.
    user: std::sync::Mutex<Option<(String, bool)>>,
    /// For `PREVIEW` without `DATABASE`.
    database: Option<String>,
}

async fn write_table<W: AsyncWrite + Send + Unpin>(
    results: QueryResultWriter<'_, W>,
    t: Table,
) -> std::io::Result<()> {
    let columns: Vec<Column> = t
        .columns
        .iter()
        .map(|c| Column {
            table: String::new(),
            column: (*c).to_string(),
            coltype: ColumnType::MYSQL_TYPE_VAR_STRING,
            colflags: ColumnFlags::empty(),
        })
        .collect();
    let mut w = results.start(&columns).await?;
    for row in t.rows {
        for v in row {
            w.write_col(v)?;
        }
        w.end_row().await?;
    }
    w.finish().await
}

impl AdminSession {
    fn who(&self) -> (String, bool) {
        self.user
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }

    fn by(&self, statement: &str) -> String {
        format!("admin {}@{}: {statement}", self.who().0, self.peer.ip())
    }
}

#[async_trait::async_trait]
impl<W: AsyncWrite + Send + Unpin> AsyncMysqlShim<W> for AdminSession {
    type Error = std::io::Error;

    fn version(&self) -> String {
        format!(
            "5.5.5-10.11.0-rainbow-bridge-admin-{}",
            env!("CARGO_PKG_VERSION")
        )
    }

    fn connect_id(&self) -> u32 {
        self.id
    }

    fn salt(&self) -> [u8; 20] {
        self.salt
    }

    async fn authenticate(
        &self,
        _plugin: &str,
        username: &[u8],
        salt: &[u8],
        auth_data: &[u8],
    ) -> bool {
        let name = String::from_utf8_lossy(username).into_owned();
        let ok = self.users.get(&name).is_some_and(|u| {
            shard_rules::config::parse_password_hash(&u.password_hash)
                .is_some_and(|stage2| crate::auth::verify_native(salt, auth_data, &stage2))
        });
        if ok {
            let write = self.users.get(&name).is_some_and(|u| u.write);
            *self.user.lock().unwrap_or_else(|e| e.into_inner()) = Some((name.clone(), write));
            info!(admin_user = %name, peer = %self.peer, "admin login");
        } else {
            warn!(admin_user = %name, peer = %self.peer, "admin login refused");
        }
        ok
    }

    async fn on_prepare<'a>(
        &'a mut self,
        _query: &'a str,
        info: StatementMetaWriter<'a, W>,
    ) -> std::io::Result<()> {
        info.error(
            ErrorKind::ER_UNSUPPORTED_PS,
            b"the admin interface takes text statements only (no server-side prepared statements)",
        )
        .await
    }

    async fn on_execute<'a>(
        &'a mut self,
        _id: u32,
        _params: ParamParser<'a>,
        results: QueryResultWriter<'a, W>,
    ) -> std::io::Result<()> {
        results
            .error(ErrorKind::ER_UNSUPPORTED_PS, b"no prepared statements here")
            .await
    }

    async fn on_close<'a>(&'a mut self, _stmt: u32)
    where
        W: 'async_trait,
    {
    }

    async fn on_init<'a>(
        &'a mut self,
        db: &'a str,
        writer: InitWriter<'a, W>,
    ) -> std::io::Result<()> {
        let db = db.trim().trim_matches('`');
        if self.shared.rules.load().database(db).is_some() {
            self.database = Some(db.to_string());
            writer.ok().await
        } else {
            writer
                .error(
                    ErrorKind::ER_BAD_DB_ERROR,
                    format!("`{db}` is not a database of the rules (SHOW DATABASES)").as_bytes(),
                )
                .await
        }
    }

    async fn on_query<'a>(
        &'a mut self,
        query: &'a str,
        results: QueryResultWriter<'a, W>,
    ) -> std::io::Result<()> {
        let cmd = match parse(query) {
            Ok(c) => c,
            Err(e) => {
                return results
                    .error(ErrorKind::ER_PARSE_ERROR, e.to_string().as_bytes())
                    .await
            }
        };
        let changes = matches!(
            cmd,
            Command::SetWriteBan(_) | Command::ClearWriteBan { .. } | Command::ReloadRules
        );
        let (user, write) = self.who();
        if changes && !write {
            warn!(admin_user = %user, peer = %self.peer, statement = %query.trim(), "admin change refused: read-only admin user");
            return results
                .error(
                    ErrorKind::ER_SPECIFIC_ACCESS_DENIED_ERROR,
                    format!(
                        "admin user `{user}` may not change rules (admin.users.{user}.write = false)"
                    )
                    .as_bytes(),
                )
                .await;
        }
        let clustered = self
            .shared
            .cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .enabled;
        if changes && clustered {
            // In cluster mode the rules live in etcd: a change made here would be served unseen
            // by the other proxies and by ctl, and overwritten by the next change.
            return results
                .error(
                    ErrorKind::ER_NOT_SUPPORTED_YET,
                    b"cluster mode: the rules live in etcd; change them with rainbow-bridge ctl \
                      (put-rules, ban, unban, cutover), see docs/cutover.md",
                )
                .await;
        }
        let shared = Arc::clone(&self.shared);
        match cmd {
            Command::ShowRules => write_table(results, show_rules(&shared)).await,
            Command::ShowTableRules { like } => {
                write_table(
                    results,
                    show_table_rules(&shared.rules.load(), like.as_deref()),
                )
                .await
            }
            Command::ShowTrafficRule => {
                write_table(results, show_traffic(&shared.rules.load())).await
            }
            Command::ShowWriteBan => write_table(results, show_write_ban(&shared)).await,
            Command::ShowPools => write_table(results, show_pools(&shared)).await,
            Command::ShowSessions => write_table(results, show_sessions(&shared)).await,
            Command::ShowStats => write_table(results, show_stats(&shared)).await,
            Command::ShowCluster => write_table(results, show_cluster(&shared)).await,
            Command::ShowVersion => {
                let backend = shared.server_version().await;
                write_table(results, show_version(&shared, backend)).await
            }
            Command::ShowDatabases => {
                let mut t = Table::new(&["Database"]);
                let mut names: Vec<String> = shared
                    .rules
                    .load()
                    .databases()
                    .map(|d| d.name.clone())
                    .collect();
                names.sort();
                for n in names {
                    t.row([Some(n)]);
                }
                write_table(results, t).await
            }
            Command::ShowTables => write_table(results, Table::new(&["Tables"])).await,
            Command::Help => {
                let mut t = Table::new(&["statement", "what"]);
                for (st, what) in STATEMENTS {
                    t.row([s(st), s(what)]);
                }
                write_table(results, t).await
            }
            Command::Variable(v) => {
                let value = match v.as_str() {
                    x if x.starts_with("@@version_comment") => {
                        Some("Rainbow Bridge admin interface".to_string())
                    }
                    x if x.starts_with("@@version") => Some(self.version_string()),
                    x if x.starts_with("database(") => self.database.clone(),
                    _ => None,
                };
                let mut t = Table::new(&["value"]);
                t.columns = vec![column_name(&v)];
                t.row([value]);
                write_table(results, t).await
            }
            Command::SessionSetting => results.completed(OkResponse::default()).await,
            Command::Preview {
                database,
                mode,
                sql,
            } => {
                let Some(db) = database.or_else(|| self.database.clone()) else {
                    return results
                        .error(
                            ErrorKind::ER_WRONG_ARGUMENTS,
                            b"PREVIEW needs a database: PREVIEW DATABASE <db> <sql>, or USE <db> first",
                        )
                        .await;
                };
                let mode = mode.unwrap_or(ConnectionMode::Unit);
                write_table(results, preview(&shared, &db, mode, &sql)).await
            }
            Command::ReloadRules => {
                let by = self.by("RELOAD RULES");
                match crate::reload::reload_file(&shared, &by).await {
                    Ok(r) => {
                        results
                            .completed(OkResponse {
                                info: format!(
                                    "rules version {} applied (traffic version {}, write-ban version {} on {})",
                                    r.version(),
                                    r.traffic_version(),
                                    r.ban_version(),
                                    r.banned_codes()
                                ),
                                ..Default::default()
                            })
                            .await
                    }
                    Err(e) => {
                        results
                            .error(
                                ErrorKind::ER_UNKNOWN_ERROR,
                                format!("rules refused, the old rules keep serving: {e}").as_bytes(),
                            )
                            .await
                    }
                }
            }
            Command::SetWriteBan(change) => self.ban(results, &change, query).await,
            Command::ClearWriteBan { version } => {
                let change = BanChange {
                    codes: Vec::new(),
                    version,
                };
                self.ban(results, &change, query).await
            }
        }
    }
}

/// A column name for `SELECT @@x`: the expression as typed, as MariaDB names it.
fn column_name(v: &str) -> &'static str {
    match v {
        x if x.starts_with("@@version_comment") => "@@version_comment",
        x if x.starts_with("@@version") => "@@version",
        x if x.starts_with("database(") => "DATABASE()",
        _ => "value",
    }
}

impl AdminSession {
    fn version_string(&self) -> String {
        <Self as AsyncMysqlShim<tokio::net::tcp::OwnedWriteHalf>>::version(self)
    }

    async fn ban<W: AsyncWrite + Send + Unpin>(
        &self,
        results: QueryResultWriter<'_, W>,
        change: &BanChange,
        query: &str,
    ) -> std::io::Result<()> {
        let by = self.by(query.trim());
        match crate::reload::set_write_ban(&self.shared, change, &by).await {
            Ok(b) => {
                let when = match b.effective {
                    Some(at) => format!(
                        "effective on this proxy at {} (waited {} ms)",
                        timestamp(at),
                        b.waited.as_millis()
                    ),
                    None => "superseded by a newer write-ban before it took effect".into(),
                };
                results
                    .completed(OkResponse {
                        info: format!(
                            "write-ban version {} on route codes {} (rules version {}, written to {}); {when}",
                            b.ban_version,
                            b.banned,
                            b.rules_version,
                            self.shared.rules_path.display()
                        ),
                        ..Default::default()
                    })
                    .await
            }
            Err(e) => {
                results
                    .error(
                        ErrorKind::ER_UNKNOWN_ERROR,
                        format!("write-ban refused, the old rules keep serving: {e}").as_bytes(),
                    )
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_statements_parse_case_insensitively() {
        assert_eq!(parse("show rules;"), Ok(Command::ShowRules));
        assert_eq!(parse("  SHOW  Write BAN "), Ok(Command::ShowWriteBan));
        assert_eq!(
            parse("show table rules like 't\\_order%'"),
            Ok(Command::ShowTableRules {
                like: Some("t\\_order%".into())
            })
        );
        assert_eq!(
            parse("SET WRITE BAN ROUTE_CODES 100-199, 300 VERSION 7"),
            Ok(Command::SetWriteBan(BanChange {
                codes: vec!["100-199".into(), "300".into()],
                version: Some(7)
            }))
        );
        assert_eq!(
            parse("set write ban route_codes '5000 - 5099'"),
            Ok(Command::SetWriteBan(BanChange {
                codes: vec!["5000-5099".into()],
                version: None
            }))
        );
        assert_eq!(
            parse("CLEAR WRITE BAN"),
            Ok(Command::ClearWriteBan { version: None })
        );
        assert_eq!(
            parse("PREVIEW DATABASE shop MODE center UPDATE t SET a = 1 WHERE id = 2;"),
            Ok(Command::Preview {
                database: Some("shop".into()),
                mode: Some(ConnectionMode::Center),
                sql: "UPDATE t SET a = 1 WHERE id = 2".into()
            })
        );
        assert_eq!(
            parse("preview /* rb: sharding_key=7 */ select 1"),
            Ok(Command::Preview {
                database: None,
                mode: None,
                sql: "/* rb: sharding_key=7 */ select 1".into()
            })
        );
        assert_eq!(
            parse("select @@version_comment limit 1"),
            Ok(Command::Variable("@@version_comment".into()))
        );
    }

    #[test]
    fn malformed_admin_statements_say_what_was_expected() {
        for bad in [
            "SET WRITE BAN 1-2",
            "SET WRITE BAN ROUTE_CODES",
            "SET WRITE BAN ROUTE_CODES a-b",
            "SET WRITE BAN ROUTE_CODES 1 VERSION x",
            "CLEAR WRITE BAN NOW",
            "PREVIEW",
            "PREVIEW MODE sideways SELECT 1",
            "SHOW RULES PLEASE",
            "DROP TABLE t",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(!e.0.is_empty(), "{bad}");
        }
        assert!(parse("DROP TABLE t").unwrap_err().0.contains("SHOW RULES"));
        assert!(parse("SHOW RULES PLEASE").is_err());
    }

    #[test]
    fn like_patterns_match_as_in_sql() {
        assert!(like("t_order%", "t_order_item"));
        assert!(like("T_ORDER", "t_order"));
        assert!(like("%item", "t_order_item"));
        assert!(!like("t\\_order", "txorder"));
        assert!(like("t\\_order", "t_order"));
        assert!(!like("t_order", "t_order_item"));
        assert!(like("%", ""));
        assert!(like("%o%_i%m", "t_order_item"));
        assert!(!like("%o%_x%m", "t_order_item"));
        assert!(like("t%%r", "t_order"));
        // Any pattern is safe: no recursion to overflow, no exponential backtracking.
        let long = "%a".repeat(20_000);
        assert!(!like(&long, &"a".repeat(19_999)));
        assert!(like(&long, &"a".repeat(20_000)));
        assert!(!like(&"%a".repeat(30), &format!("{}b", "a".repeat(60))));
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(951_782_400_123);
        assert_eq!(timestamp(t), "2000-02-29T00:00:00.123Z");
    }
}
