//! `rainbow-bridge lint`: what the proxy would do with each statement of a SQL file or a
//! MariaDB/MySQL general log, without running anything (issue 10). The verdicts are the
//! proxy's own: the same gate ([`crate::enforce::check_text`]) and decision, and the same node
//! queries for sharded tables, as a client's statement gets. [`assess`] is shared with the
//! admin interface's `PREVIEW`.

use std::fmt::Write as _;

use shard_rules::config::ConnectionMode;
use shard_rules::decide::{Decision, Layout, Refusal};
use shard_rules::plan::PlanCache;
use shard_rules::units::NodeQueries;
use shard_rules::{RoomId, RuleSet, ShardingKey};

use crate::enforce::{check_text, Ctx, Verdict};
use crate::error::ProxyError;

/// What the proxy would do with one statement.
pub struct Assessed {
    /// The hint as written, or why it is malformed.
    pub hint: Result<Option<sql_hint::Hint>, String>,
    /// The gate's verdict (sample keys stand in for generated ones).
    pub verdict: Result<Verdict, ProxyError>,
    /// The decision the gate made, or, where the gate forwards without deciding (reads of
    /// unsharded databases, refusals), the one made for information.
    pub decision: Option<Result<Decision, Box<Refusal>>>,
}

/// Runs `sql` through the proxy's checks for a session of `ctx`, executing nothing.
pub fn assess(ctx: &Ctx<'_>, sql: &[u8]) -> Assessed {
    let hint = sql_hint::parse_with(sql, ctx.backslash_escapes);
    let mut ids: Vec<i64> = Vec::new();
    let verdict = loop {
        match check_text(ctx, sql, &ids, false) {
            Ok(Verdict::NeedIds(g)) if ids.len() < g.len() => {
                ids = (1..=g.len() as i64).collect();
            }
            other => break other,
        }
    };
    let informational = || -> Option<Result<Decision, Box<Refusal>>> {
        let parsed = hint.as_ref().ok()?;
        let stripped = String::from_utf8_lossy(&parsed.sql);
        let facts = shard_rules::analyze::analyze(&stripped).ok()?;
        Some(shard_rules::decide::decide_with_sample_keys(
            ctx.rules,
            &facts,
            parsed.hint.as_ref(),
            &ctx.session(),
        ))
    };
    let decision = match &verdict {
        Ok(Verdict::Forward(Some(d))) => Some(Ok((**d).clone())),
        Ok(Verdict::SetSessionKey(_)) => None,
        _ => informational(),
    };
    Assessed {
        hint: hint
            .as_ref()
            .map(|p| p.hint.clone())
            .map_err(|e| e.to_string()),
        verdict,
        decision,
    }
}

/// The node queries of a decision that does not simply go to the database's default data
/// source under the written table names: `None` when it does; `Err` when the proxy refuses
/// it across nodes (ER_NOT_SUPPORTED_YET).
pub fn node_plan(
    rules: &RuleSet,
    database: &str,
    d: &Decision,
    sql: &[u8],
) -> Option<Result<NodeQueries, String>> {
    let default = rules
        .database(database)
        .map(|db| db.data_source_name(db.default_data_source).to_string());
    let plain = d.units.len() <= 1
        && d.units
            .iter()
            .all(|u| u.renames.is_empty() && Some(&*u.data_source) == default.as_deref());
    if plain {
        return None;
    }
    let stripped = sql_hint::parse(sql)
        .map(|h| h.sql.into_owned())
        .unwrap_or_else(|_| sql.to_vec());
    Some(
        shard_rules::units::node_queries(d, sql, &stripped, Default::default())
            .map_err(|e| format!("This version of Rainbow Bridge doesn't yet support {e}")),
    )
}

/// One statement read from an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// 1-based line where it starts.
    pub line: usize,
    pub sql: String,
    /// The general log's connection (thread) id.
    pub thread: Option<u64>,
    /// The database the general log says the connection was in.
    pub database: Option<String>,
}

/// Reads SQL text: statements separated by `;` outside strings and comments; a text without
/// any such `;` has one statement per non-empty line. `DELIMITER xx` lines (mysqldump, the
/// `mariadb` CLI) change the separator until the next one, for procedure and trigger bodies.
/// Line comments in front of a statement are dropped; block comments (hints) are kept.
pub fn read_sql(text: &str, q: shard_rules::lex::Quoting) -> Vec<Input> {
    // Regions between DELIMITER lines: (start, end, delimiter).
    let mut regions: Vec<(usize, usize, String)> = Vec::new();
    let mut delimiter = ";".to_string();
    let mut region_start = 0;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        let word = t.get(..10).unwrap_or("");
        if word.eq_ignore_ascii_case("delimiter ") && !t[10..].trim().is_empty() {
            regions.push((region_start, at, delimiter));
            delimiter = t[10..].trim().to_string();
            region_start = at + line.len();
        }
        at += line.len();
    }
    regions.push((region_start, text.len(), delimiter));
    let per_line = regions.len() == 1 && semicolon_cuts(text, q).is_empty();
    let mut out = Vec::new();
    for (start, end, delimiter) in regions {
        let region = &text[start..end];
        // (end of a statement, start of what follows), relative to the region.
        let cuts: Vec<(usize, usize)> = if per_line {
            region
                .match_indices('\n')
                .map(|(i, _)| (i, i + 1))
                .collect()
        } else if delimiter == ";" {
            semicolon_cuts(region, q)
                .into_iter()
                .map(|i| (i, i + 1))
                .collect()
        } else {
            let mut v = Vec::new();
            let mut from = 0;
            let mut pos = 0;
            for line in region.split_inclusive('\n') {
                let body = line.trim_end();
                if let Some(stripped) = body.strip_suffix(delimiter.as_str()) {
                    let cut = pos + stripped.len();
                    if shard_rules::lex::tokens(&region.as_bytes()[from..cut], q).is_ok() {
                        v.push((cut, cut + delimiter.len()));
                        from = cut + delimiter.len();
                    }
                }
                pos += line.len();
            }
            v
        };
        let mut from = 0;
        for (cut, next) in cuts
            .into_iter()
            .chain(std::iter::once((region.len(), region.len())))
        {
            if cut < from {
                continue;
            }
            if let Some(inp) = piece(text, start + from, start + cut) {
                out.push(inp);
            }
            from = next.min(region.len());
        }
    }
    out
}

/// Byte offsets of the `;` that end statements (outside strings and comments).
fn semicolon_cuts(text: &str, q: shard_rules::lex::Quoting) -> Vec<usize> {
    use shard_rules::lex::{tokens, TokenKind};
    match tokens(text.as_bytes(), q) {
        Ok(t) => t
            .iter()
            .filter(|t| t.kind == TokenKind::Punct(b';'))
            .map(|t| t.span.start)
            .collect(),
        // An unterminated string or comment: cut where `;` ends a line, the rest is one piece.
        Err(_) => text.match_indices(";\n").map(|(i, _)| i).collect(),
    }
}

/// One statement of `text[start..end]`: leading line comments dropped, `None` if nothing is
/// left but comments.
fn piece(text: &str, start: usize, end: usize) -> Option<Input> {
    let mut piece = &text[start..end];
    let mut from = start;
    loop {
        let t = piece.trim_start();
        if t.starts_with("--") || t.starts_with('#') {
            let skip = piece.len() - t.len() + t.find('\n').map_or(t.len(), |n| n + 1);
            piece = &piece[skip..];
            from += skip;
        } else {
            break;
        }
    }
    let lead = piece.len() - piece.trim_start().len();
    let line = 1 + text[..from + lead].matches('\n').count();
    let sql = piece.trim();
    if sql.is_empty() || !has_code(sql) {
        return None;
    }
    Some(Input {
        line,
        sql: sql.to_string(),
        thread: None,
        database: None,
    })
}

/// Some token outside comments.
fn has_code(sql: &str) -> bool {
    match shard_rules::lex::tokens(sql.as_bytes(), Default::default()) {
        Ok(t) => !t.is_empty(),
        Err(_) => true,
    }
}

/// `true` when the text looks like a MariaDB or MySQL general query log: it starts with the
/// server's header (`…mariadbd, Version: … started with:`) or its first line is an entry.
pub fn is_general_log(text: &str) -> bool {
    let Some(first) = text.lines().find(|l| !l.trim().is_empty()) else {
        return false;
    };
    (first.contains(", Version: ") && first.trim_end().ends_with("started with:"))
        || general_entry(first).is_some()
}

/// An entry line of a general log: `(thread, command, argument)`. MariaDB writes
/// `YYMMDD HH:MM:SS\t    ID Command\tArgument` (the time only when it changed, else two
/// tabs); MySQL 5.7+ writes `2026-12-03T14:11:11.123456Z\t   ID Command\tArgument`.
fn general_entry(line: &str) -> Option<(u64, &str, &str)> {
    let rest = if let Some(r) = line.strip_prefix("\t\t") {
        r
    } else {
        let (stamp, r) = line.split_once('\t')?;
        let stamp = stamp.trim();
        let mariadb = stamp.len() >= 13
            && stamp.as_bytes()[..6].iter().all(u8::is_ascii_digit)
            && stamp.as_bytes()[6] == b' ';
        let mysql = stamp.len() >= 20 && stamp.as_bytes()[4] == b'-' && stamp.contains('T');
        if !mariadb && !mysql {
            return None;
        }
        r
    };
    let rest = rest.trim_start();
    let (id, rest) = rest.split_once(' ')?;
    let thread: u64 = id.parse().ok()?;
    let (command, arg) = rest.split_once('\t').unwrap_or((rest, ""));
    let command = command.trim();
    const COMMANDS: [&str; 12] = [
        "Query",
        "Connect",
        "Init DB",
        "Quit",
        "Prepare",
        "Execute",
        "Close stmt",
        "Reset stmt",
        "Field List",
        "Statistics",
        "Ping",
        "Change user",
    ];
    COMMANDS
        .contains(&command)
        .then_some((thread, command, arg))
}

/// Reads a general log: `Query` and `Execute` entries are statements (`Execute` carries the
/// bound values; `Prepare` is skipped, its executions are linted), continued over the lines
/// that follow them; `Connect … on DB` and `Init DB` set the connection's database, and a
/// `USE` query too.
pub fn read_general_log(text: &str) -> Vec<Input> {
    let mut out: Vec<Input> = Vec::new();
    let mut dbs: std::collections::HashMap<u64, String> = Default::default();
    // The statement being continued.
    let mut open = false;
    for (i, line) in text.lines().enumerate() {
        match general_entry(line) {
            Some((thread, command, arg)) => {
                open = false;
                match command {
                    "Query" | "Execute" => {
                        out.push(Input {
                            line: i + 1,
                            sql: arg.to_string(),
                            thread: Some(thread),
                            database: dbs.get(&thread).cloned(),
                        });
                        open = true;
                        // `USE db` changes the connection's database for what follows.
                        if let Some(db) = use_target(arg) {
                            dbs.insert(thread, db);
                        }
                    }
                    "Init DB" => {
                        dbs.insert(thread, arg.trim().to_string());
                    }
                    "Connect" => {
                        // `user@host as anonymous on db using TCP/IP` (MariaDB) or `user@host on
                        // db using Socket` (MySQL).
                        if let Some((_, after)) = arg.split_once(" on ") {
                            let db = after.split_whitespace().next().unwrap_or("");
                            if !db.is_empty() && db != "using" {
                                dbs.insert(thread, db.to_string());
                            }
                        }
                    }
                    "Change user" => {
                        // `user@host on db` (MariaDB writes the new account and database).
                        match arg
                            .split_once(" on ")
                            .map(|(_, d)| d.split_whitespace().next())
                        {
                            Some(Some(db)) if db != "using" => {
                                dbs.insert(thread, db.to_string());
                            }
                            _ => {
                                dbs.remove(&thread);
                            }
                        }
                    }
                    "Quit" => {
                        dbs.remove(&thread);
                    }
                    _ => {}
                }
            }
            None if open => {
                if let Some(last) = out.last_mut() {
                    last.sql.push('\n');
                    last.sql.push_str(line);
                }
            }
            None => {}
        }
    }
    for s in &mut out {
        s.sql = s.sql.trim().to_string();
    }
    out.retain(|s| !s.sql.is_empty());
    out
}

/// The database of a `USE db` statement.
fn use_target(sql: &str) -> Option<String> {
    let mut w = sql.split_whitespace();
    if !w.next()?.eq_ignore_ascii_case("use") {
        return None;
    }
    let db = w.next()?.trim_end_matches(';').trim_matches('`');
    (!db.is_empty()).then(|| db.to_string())
}

/// How a statement would be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteKind {
    /// One backend: the database's data source (name given).
    SingleNode(String),
    /// Several nodes, results merged or writes split.
    Scatter(usize),
    /// Every copy of broadcast tables.
    Broadcast(usize),
    /// The proxy answers it itself.
    Proxy,
    /// Not decided (the verdict says why).
    None,
}

impl std::fmt::Display for RouteKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteKind::SingleNode(ds) => write!(f, "single node ({ds})"),
            RouteKind::Scatter(n) => write!(f, "scatter ({n} nodes)"),
            RouteKind::Broadcast(n) => write!(f, "broadcast ({n} copies)"),
            RouteKind::Proxy => f.write_str("answered by the proxy"),
            RouteKind::None => f.write_str("-"),
        }
    }
}

/// The linter's finding for one statement.
#[derive(Debug, Clone)]
pub struct Finding {
    pub n: usize,
    pub line: usize,
    pub database: String,
    pub sql: String,
    /// sqlparser understood it (a statement it cannot parse is still forwarded as-is to an
    /// unsharded database; MariaDB decides).
    pub parses: bool,
    pub parse_error: Option<String>,
    pub kind: Option<String>,
    pub tables: Vec<String>,
    pub route: RouteKind,
    pub route_code: Option<u32>,
    pub owner_room: Option<String>,
    /// `Some((code, SQLSTATE, message))` when the proxy would refuse it.
    pub refused: Option<(u16, String, String)>,
    /// Worth knowing, not refused: full scatter reads, foreign reads, parse failures.
    pub notes: Vec<String>,
}

/// Who the statements run as.
pub struct LintSession<'a> {
    pub rules: &'a RuleSet,
    pub room: RoomId,
    pub mode: ConnectionMode,
    /// For inputs that do not say (plain SQL files, log entries before `Init DB`).
    pub database: Option<&'a str>,
    /// How strings and quotes read under the application's sql_mode.
    pub quoting: shard_rules::lex::Quoting,
}

/// Lints statements in order, tracking `USE` and `SET @@rb_sharding_key` per connection.
pub fn lint(s: &LintSession<'_>, inputs: &[Input]) -> Vec<Finding> {
    let plans = PlanCache::new(1024);
    let mut keys: std::collections::HashMap<u64, ShardingKey> = Default::default();
    let mut uses: std::collections::HashMap<u64, String> = Default::default();
    let mut out = Vec::with_capacity(inputs.len());
    for (i, inp) in inputs.iter().enumerate() {
        let thread = inp.thread.unwrap_or(0);
        // A USE is checked in the database it selects.
        let database = use_target(&inp.sql)
            .filter(|db| s.rules.database(db).is_some())
            .or_else(|| inp.database.clone())
            .or_else(|| uses.get(&thread).cloned())
            .or_else(|| s.database.map(str::to_string))
            .unwrap_or_default();
        if inp.thread.is_none() {
            if let Some(db) = use_target(&inp.sql).filter(|db| s.rules.database(db).is_some()) {
                uses.insert(0, db);
            }
        }
        let key = keys.get(&thread);
        let ctx = Ctx {
            rules: s.rules,
            room: s.room,
            mode: s.mode,
            database: &database,
            session_key: key,
            backslash_escapes: s.quoting.backslash_escapes,
            ansi_quotes: s.quoting.ansi_quotes,
            escape_unsafe_charset: false,
            count_foreign_reads: true,
            plans: &plans,
            writes_held: false,
        };
        let mut f = Finding {
            n: i + 1,
            line: inp.line,
            database: database.clone(),
            sql: inp.sql.clone(),
            parses: false,
            parse_error: None,
            kind: None,
            tables: Vec::new(),
            route: RouteKind::None,
            route_code: None,
            owner_room: None,
            refused: None,
            notes: Vec::new(),
        };
        let a = assess(&ctx, inp.sql.as_bytes());
        // The proxy answers USE itself: only databases of the rules (and information_schema).
        let unknown_use = use_target(&inp.sql).filter(|db| {
            s.rules.database(db).is_none() && !db.eq_ignore_ascii_case("information_schema")
        });
        if let Ok(p) = sql_hint::parse(inp.sql.as_bytes()) {
            match shard_rules::analyze::analyze(&String::from_utf8_lossy(&p.sql)) {
                Ok(facts) => {
                    f.parses = true;
                    f.kind = Some(kind_name(&facts.kind).to_string());
                    for t in &facts.tables {
                        let name = match &t.schema {
                            Some(sch) => format!("{sch}.{}", t.name),
                            None => t.name.clone(),
                        };
                        if !f.tables.contains(&name) {
                            f.tables.push(name);
                        }
                    }
                }
                Err(e) => f.parse_error = Some(e.to_string()),
            }
        }
        if let Some(db) = &unknown_use {
            let e = ProxyError::UnknownDatabase(db.clone());
            let (code, state) = e.code();
            f.refused = Some((
                code,
                String::from_utf8_lossy(state).into_owned(),
                e.to_string(),
            ));
        } else if database.is_empty() {
            f.notes
                .push("no database: give --database, or USE one first".into());
        } else if s.rules.database(&database).is_none()
            && !database.eq_ignore_ascii_case("information_schema")
        {
            // A general log's Connect/Init DB of a database the proxy does not serve: the
            // proxy refuses the connection or the USE.
            let e = ProxyError::UnknownDatabase(database.clone());
            let (code, state) = e.code();
            f.refused = Some((
                code,
                String::from_utf8_lossy(state).into_owned(),
                e.to_string(),
            ));
        }
        match &a.verdict {
            Err(e) => {
                let (code, state) = e.code();
                f.refused = Some((
                    code,
                    String::from_utf8_lossy(state).into_owned(),
                    e.to_string(),
                ));
            }
            Ok(Verdict::SetSessionKey(k)) => {
                f.route = RouteKind::Proxy;
                match k {
                    Some(k) => {
                        keys.insert(thread, k.clone());
                    }
                    None => {
                        keys.remove(&thread);
                    }
                }
            }
            Ok(Verdict::ForeignRead { code, owner }) => f.notes.push(format!(
                "reads route code {code}, owned by room {}: served here, counted as a foreign \
                 read",
                s.rules.room_name(*owner)
            )),
            Ok(_) => {}
        }
        match &a.decision {
            Some(Ok(d)) => {
                if let Some(r) = &d.route {
                    f.route_code = Some(r.code);
                    f.owner_room = Some(s.rules.room_name(r.owner).to_string());
                }
                if f.refused.is_none() {
                    f.route = route_of(s.rules, &database, d);
                    if let Some(Err(e)) = node_plan(s.rules, &database, d, inp.sql.as_bytes()) {
                        // Refused across nodes: the route stays, it says what was refused.
                        f.refused = Some((1235, "42000".into(), e));
                    }
                    if let Some(t) = d.tables.iter().find(|t| {
                        t.layout == Layout::Sharded && !t.conditioned && t.nodes.len() > 1
                    }) {
                        f.notes.push(format!(
                            "no sharding condition on `{}`: every one of its {} nodes is read",
                            t.table,
                            t.nodes.len()
                        ));
                    }
                }
            }
            Some(Err(r)) => {
                f.route_code = r.route_code;
                f.owner_room = r.owner_room.clone();
            }
            None => {}
        }
        if f.refused.is_none() && matches!(f.route, RouteKind::None) {
            if let Some(db) = s.rules.database(&database) {
                f.route = RouteKind::SingleNode(db.data_source_name(db.default_data_source).into());
            }
        }
        if let (false, Some(e)) = (f.parses, &f.parse_error) {
            if f.refused.is_none() {
                f.notes.push(format!(
                    "{e}: forwarded unchanged, MariaDB decides (not checked by the proxy)"
                ));
            }
        }
        out.push(f);
    }
    out
}

fn kind_name(k: &shard_rules::analyze::Kind) -> &'static str {
    use shard_rules::analyze::Kind;
    match k {
        Kind::Read => "read",
        Kind::Write(_) => "write",
        Kind::Ddl => "ddl",
        Kind::Transaction => "transaction",
        Kind::Session => "session",
        Kind::Other => "other",
    }
}

fn route_of(rules: &RuleSet, database: &str, d: &Decision) -> RouteKind {
    let nodes: std::collections::BTreeSet<_> =
        d.tables.iter().flat_map(|t| t.nodes.iter()).collect();
    let all_broadcast =
        !d.tables.is_empty() && d.tables.iter().all(|t| t.layout == Layout::Broadcast);
    if d.units.len() > 1 {
        return if all_broadcast {
            RouteKind::Broadcast(d.units.len())
        } else {
            RouteKind::Scatter(d.units.len())
        };
    }
    match d.units.first() {
        Some(u) => RouteKind::SingleNode(u.data_source.to_string()),
        None if nodes.is_empty() && !d.tables.is_empty() => RouteKind::Scatter(0),
        None => rules.database(database).map_or(RouteKind::None, |db| {
            RouteKind::SingleNode(db.data_source_name(db.default_data_source).into())
        }),
    }
}

/// What makes the exit status 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailOn {
    pub refused: bool,
    pub unparsed: bool,
    pub scatter: bool,
}

impl FailOn {
    pub fn parse(s: &str) -> Result<FailOn, String> {
        let mut f = FailOn {
            refused: false,
            unparsed: false,
            scatter: false,
        };
        for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match w {
                "refused" => f.refused = true,
                "unparsed" => f.unparsed = true,
                "scatter" => f.scatter = true,
                "none" => {}
                other => {
                    return Err(format!(
                        "`{other}` is not one of refused, unparsed, scatter, none"
                    ))
                }
            }
        }
        Ok(f)
    }

    pub fn fails(&self, f: &Finding) -> bool {
        (self.refused && f.refused.is_some())
            || (self.unparsed && !f.parses)
            || (self.scatter && matches!(f.route, RouteKind::Scatter(_)))
    }
}

/// Totals for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub statements: usize,
    pub ok: usize,
    pub refused: usize,
    pub unparsed: usize,
    pub single: usize,
    pub scatter: usize,
    pub broadcast: usize,
}

pub fn summary(findings: &[Finding]) -> Summary {
    let mut s = Summary {
        statements: findings.len(),
        ..Default::default()
    };
    for f in findings {
        if f.refused.is_some() {
            s.refused += 1;
        } else {
            s.ok += 1;
        }
        if !f.parses {
            s.unparsed += 1;
        }
        match f.route {
            RouteKind::SingleNode(_) => s.single += 1,
            RouteKind::Scatter(_) => s.scatter += 1,
            RouteKind::Broadcast(_) => s.broadcast += 1,
            _ => {}
        }
    }
    s
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} statements: {} ok, {} refused, {} not parsed by the proxy; {} single node, {} \
             scatter, {} broadcast",
            self.statements,
            self.ok,
            self.refused,
            self.unparsed,
            self.single,
            self.scatter,
            self.broadcast
        )
    }
}

fn clip(s: &str, n: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > n {
        let c: String = one.chars().take(n.saturating_sub(3)).collect();
        format!("{c}...")
    } else {
        one
    }
}

/// The table for people: one row per statement, the reason of each refusal and note below
/// it, the summary last.
pub fn render_table(file: &str, findings: &[Finding]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>5}  {:<10} {:<6} {:<8} {:<11} {:<22} {:<24} statement",
        "line", "database", "parses", "verdict", "kind", "route", "tables"
    );
    for f in findings {
        let verdict = match &f.refused {
            Some((code, _, _)) => format!("ERR {code}"),
            None => "ok".to_string(),
        };
        let _ = writeln!(
            s,
            "{:>5}  {:<10} {:<6} {:<8} {:<11} {:<22} {:<24} {}",
            f.line,
            clip(
                if f.database.is_empty() {
                    "-"
                } else {
                    &f.database
                },
                10
            ),
            if f.parses { "yes" } else { "no" },
            verdict,
            f.kind.as_deref().unwrap_or("-"),
            f.route.to_string(),
            clip(&f.tables.join(","), 24),
            clip(&f.sql, 60)
        );
        if let Some((code, state, msg)) = &f.refused {
            let _ = writeln!(s, "       refused: {code} ({state}) {msg}");
        }
        for n in &f.notes {
            let _ = writeln!(s, "       note: {n}");
        }
    }
    let _ = writeln!(s, "{file}: {}", summary(findings));
    s
}

/// A summary as JSON.
pub fn summary_json(sm: &Summary) -> serde_json::Value {
    serde_json::json!({
        "statements": sm.statements, "ok": sm.ok, "refused": sm.refused,
        "unparsed": sm.unparsed, "single_node": sm.single, "scatter": sm.scatter,
        "broadcast": sm.broadcast,
    })
}

/// The JSON report of one file.
pub fn to_json(file: &str, findings: &[Finding]) -> serde_json::Value {
    serde_json::json!({
        "file": file,
        "summary": summary_json(&summary(findings)),
        "statements": findings.iter().map(|f| {
            let (route, nodes, data_source) = match &f.route {
                RouteKind::SingleNode(ds) => ("single_node", 1, Some(ds.as_str())),
                RouteKind::Scatter(n) => ("scatter", *n, None),
                RouteKind::Broadcast(n) => ("broadcast", *n, None),
                RouteKind::Proxy => ("proxy", 0, None),
                RouteKind::None => ("none", 0, None),
            };
            serde_json::json!({
                "n": f.n, "line": f.line, "database": f.database, "sql": f.sql,
                "parses": f.parses, "parse_error": f.parse_error, "kind": f.kind,
                "tables": f.tables, "route": route, "nodes": nodes, "data_source": data_source,
                "route_code": f.route_code, "owner_room": f.owner_room,
                "verdict": if f.refused.is_some() { "refused" } else { "ok" },
                "error": f.refused.as_ref().map(|(c, st, m)| serde_json::json!({
                    "code": c, "sqlstate": st, "message": m
                })),
                "notes": f.notes,
            })
        }).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_files_split_on_semicolons_outside_strings_or_one_statement_per_line() {
        let v = read_sql(
            "-- header\nSELECT 1;\nSELECT ';'\n  FROM t; /* only a comment */;\n",
            Default::default(),
        );
        let s: Vec<(usize, &str)> = v.iter().map(|i| (i.line, i.sql.as_str())).collect();
        assert_eq!(s, [(2, "SELECT 1"), (3, "SELECT ';'\n  FROM t")]);
        let v = read_sql(
            "SELECT 1\n\nUPDATE t SET a = 2 WHERE id = 3\n",
            Default::default(),
        );
        let s: Vec<(usize, &str)> = v.iter().map(|i| (i.line, i.sql.as_str())).collect();
        assert_eq!(s, [(1, "SELECT 1"), (3, "UPDATE t SET a = 2 WHERE id = 3")]);
    }

    #[test]
    fn delimiter_lines_keep_procedure_bodies_whole() {
        let v = read_sql(
            "SELECT 1;\nDELIMITER ;;\nCREATE PROCEDURE p()\nBEGIN\n  SELECT 1;\n  SELECT ';;';\nEND;;\nDELIMITER ;\nSELECT 2;\n",
            Default::default(),
        );
        let s: Vec<(usize, &str)> = v.iter().map(|i| (i.line, i.sql.as_str())).collect();
        assert_eq!(
            s,
            [
                (1, "SELECT 1"),
                (
                    3,
                    "CREATE PROCEDURE p()\nBEGIN\n  SELECT 1;\n  SELECT ';;';\nEND"
                ),
                (9, "SELECT 2")
            ]
        );
    }

    #[test]
    fn general_logs_of_mariadb_and_mysql_are_read_with_each_connections_database() {
        let maria = "/usr/sbin/mariadbd, Version: 10.11.6-MariaDB-0+deb12u1-log (Debian 12). started with:\n\
Tcp port: 3306  Unix socket: /run/mysqld/mysqld.sock\n\
Time\t\t    Id Command\tArgument\n\
261203 14:11:11\t     7 Connect\tapp@localhost as anonymous on shop\n\
\t\t     7 Query\tSELECT *\n  FROM t_order\n  WHERE user_id = 1\n\
\t\t     8 Connect\tapp@localhost as anonymous on \n\
\t\t     8 Init DB\tmall\n\
\t\t     8 Prepare\tSELECT ? FROM t\n\
\t\t     8 Execute\tSELECT 5 FROM t\n\
261203 14:11:12\t     7 Query\tUSE mall\n\
\t\t     7 Query\tSELECT 2\n\
\t\t     8 Change user\tother@localhost on shop\n\
\t\t     8 Query\tSELECT 3\n\
\t\t     7 Quit\t\n";
        assert!(is_general_log(maria));
        let v = read_general_log(maria);
        let s: Vec<(usize, u64, Option<&str>, &str)> = v
            .iter()
            .map(|i| {
                (
                    i.line,
                    i.thread.unwrap(),
                    i.database.as_deref(),
                    i.sql.as_str(),
                )
            })
            .collect();
        assert_eq!(
            s,
            [
                (
                    5,
                    7,
                    Some("shop"),
                    "SELECT *\n  FROM t_order\n  WHERE user_id = 1"
                ),
                (11, 8, Some("mall"), "SELECT 5 FROM t"),
                (12, 7, Some("shop"), "USE mall"),
                (13, 7, Some("mall"), "SELECT 2"),
                (15, 8, Some("shop"), "SELECT 3"),
            ]
        );
        let mysql =
            "2026-12-03T14:11:11.123456Z\t   12 Connect\tapp@localhost on shop using TCP/IP\n\
2026-12-03T14:11:11.223456Z\t   12 Query\tSELECT 1\n";
        assert!(is_general_log(mysql));
        let v = read_general_log(mysql);
        assert_eq!(v.len(), 1);
        assert_eq!(
            (v[0].database.as_deref(), v[0].sql.as_str()),
            (Some("shop"), "SELECT 1")
        );
        assert!(!is_general_log("SELECT 1;\nSELECT 2;\n"));
        assert!(!is_general_log("INSERT INTO t VALUES ('x, Version: 2');\n"));
    }

    #[test]
    fn fail_on_lists_are_checked() {
        let f = FailOn::parse("refused,scatter").unwrap();
        assert!(f.refused && f.scatter && !f.unparsed);
        assert!(FailOn::parse("sideways").unwrap_err().contains("sideways"));
        assert_eq!(
            FailOn::parse("none").unwrap(),
            FailOn {
                refused: false,
                unparsed: false,
                scatter: false
            }
        );
    }
}
