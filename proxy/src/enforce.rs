//! Multi-active enforcement: the hint, the statement's analysis and the routing decision of
//! `shard-rules`, applied before a statement reaches a backend (DESIGN.md, statement pipeline
//! steps 2–4; `docs/multi-active.md`).
//!
//! Reads, transaction control and session statements take a fast path: the hint is parsed
//! (and a bad hint refused), nothing else. Everything that may change data in a unit or
//! center-unit database is analysed and decided against the rules; what cannot be parsed there
//! is refused, never guessed. The analysis comes from the plan cache
//! ([`shard_rules::plan`]): sqlparser runs once per statement shape, not per statement. Center
//! databases (served in the center room only) are not checked statement by statement.

use shard_rules::algorithm::Value;
use shard_rules::analyze::{analyze_statement, AnalyzeError, Facts, Kind, Operand};
use shard_rules::config::{ConnectionMode, DatabaseType};
use shard_rules::decide::{decide, Decision, Refusal, RouteError, SessionCtx};
use shard_rules::plan::{Analysis, PlanCache};
use shard_rules::{RoomId, RuleSet, ShardingKey};
use sql_hint::Hint;
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use crate::error::ProxyError;

/// Error codes of the rules (docs/errors.md).
pub mod code {
    pub const MODE_NOT_SERVED: u16 = 8020;
    pub const CENTER_DATABASE: u16 = 8021;
    pub const NO_SHARDING_KEY: u16 = 8030;
    pub const WRONG_ROOM: u16 = 8031;
    pub const BANNED: u16 = 8032;
    pub const READ_ONLY: u16 = 8033;
    pub const BAD_HINT: u16 = 8034;
    pub const REFUSED: u16 = 8035;
    pub const NEEDS_CENTER: u16 = 8036;
    /// MariaDB's ER_NOT_SUPPORTED_YET: a construct the proxy cannot run across data nodes.
    pub const NOT_SUPPORTED_YET: u16 = 1235;
}

/// What the session knows that the rules need.
pub struct Ctx<'a> {
    pub rules: &'a RuleSet,
    pub room: RoomId,
    pub mode: ConnectionMode,
    pub database: &'a str,
    pub session_key: Option<&'a ShardingKey>,
    /// The session's sql_mode lets `\` escape in strings (no NO_BACKSLASH_ESCAPES).
    pub backslash_escapes: bool,
    /// The session's sql_mode has ANSI_QUOTES (`"…"` is an identifier).
    pub ansi_quotes: bool,
    /// The client character set can hide a quote in a multi-byte character (big5, gbk, sjis,
    /// cp932).
    pub escape_unsafe_charset: bool,
    /// Parse reads of unit databases too, to count those of another room's keys
    /// (`proxy.count_foreign_reads`).
    pub count_foreign_reads: bool,
    /// The proxy's plan cache (analyses by statement digest).
    pub plans: &'a PlanCache,
    /// Cluster mode: this proxy's registration in etcd may have lapsed, so writes of unit
    /// databases (those with route codes) are held ([`crate::cluster::WriteFence`]).
    pub writes_held: bool,
}

impl<'a> Ctx<'a> {
    /// The session as the rules' decision sees it.
    pub fn session(&self) -> SessionCtx<'a> {
        SessionCtx {
            room: self.room,
            mode: self.mode,
            database: self.database,
            session_key: self.session_key,
            privileged: false,
        }
    }
}

/// What to do with a statement.
pub enum Verdict {
    /// Forward it (the decision, when one was made, says where it may go).
    Forward(Option<Box<Decision>>),
    /// A read whose hinted ShardingKey belongs to another room: served here, counted.
    ForeignRead { code: u32, owner: RoomId },
    /// Generate one key per entry (snowflake or segment, in this order) and check again with
    /// them.
    NeedIds(Vec<shard_rules::ruleset::KeyGenerator>),
    /// `SET @@rb_sharding_key = …`: the proxy answers it; `None` resets the key.
    SetSessionKey(Option<ShardingKey>),
}

/// The analysis of a statement text (one per statement of a multi-statement text) and its
/// hint, for deciding now or, prepared, at each execute.
#[derive(Clone)]
pub struct Analysed {
    pub plans: Vec<Analysis>,
    pub hint: Option<Hint>,
}

fn bad_hint(e: impl std::fmt::Display) -> ProxyError {
    ProxyError::Rule {
        code: code::BAD_HINT,
        state: *b"42000",
        message: format!("{e}"),
    }
}

/// The refusal as the client sees it: a documented code, and the message with the table,
/// route code, owner room and rules version.
pub fn refusal(r: &Refusal) -> ProxyError {
    let code = match &r.reason {
        RouteError::NoShardingKey { .. } => code::NO_SHARDING_KEY,
        RouteError::WrongRoom { .. } => code::WRONG_ROOM,
        RouteError::Banned { .. } => code::BANNED,
        RouteError::ReadOnlyRoom { .. } => code::READ_ONLY,
        RouteError::CenterModeOutsideCenter { .. } => code::MODE_NOT_SERVED,
        RouteError::CenterDatabaseOutsideCenter { .. } => code::CENTER_DATABASE,
        RouteError::HintNotAllowed { .. }
        | RouteError::BadHintKey { .. }
        | RouteError::HintRoom { .. }
        | RouteError::HintNode { .. } => code::BAD_HINT,
        RouteError::NeedsCenterConnection { .. } => code::NEEDS_CENTER,
        RouteError::NotSupportedAcrossNodes(_) => code::NOT_SUPPORTED_YET,
        _ => code::REFUSED,
    };
    ProxyError::Rule {
        code,
        state: if code == code::BAD_HINT || code == code::NOT_SUPPORTED_YET {
            *b"42000"
        } else {
            *b"HY000"
        },
        message: r.to_string(),
    }
}

/// A statement's first word, upper-cased, kept on the stack (no allocation per statement).
/// Words longer than 16 bytes are cut: none of them is a keyword the proxy looks for.
#[derive(Clone, Copy, Default)]
pub struct Keyword {
    buf: [u8; 16],
    len: usize,
}

impl std::ops::Deref for Keyword {
    type Target = str;
    fn deref(&self) -> &str {
        // Only ASCII letters and `_` are stored.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl PartialEq<&str> for Keyword {
    fn eq(&self, other: &&str) -> bool {
        &**self == *other
    }
}

impl std::fmt::Debug for Keyword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// The first keyword of a statement, upper-cased, skipping whitespace, comments and `(`.
pub fn first_keyword(sql: &[u8]) -> Keyword {
    let mut i = 0;
    while i < sql.len() {
        match sql[i] {
            b' ' | b'\t' | b'\r' | b'\n' | b'(' | b';' => i += 1,
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                // `/*!…*/` executable comments are code: stop at their body.
                if sql.get(i + 2) == Some(&b'!') {
                    i += 3;
                    while sql.get(i).is_some_and(|c| c.is_ascii_digit()) {
                        i += 1;
                    }
                    continue;
                }
                match sql[i + 2..].windows(2).position(|w| w == b"*/") {
                    Some(p) => i += p + 4,
                    None => return Keyword::default(),
                }
            }
            b'#' => match sql[i..].iter().position(|c| *c == b'\n') {
                Some(p) => i += p + 1,
                None => return Keyword::default(),
            },
            b'-' if sql.get(i + 1) == Some(&b'-') => {
                match sql[i..].iter().position(|c| *c == b'\n') {
                    Some(p) => i += p + 1,
                    None => return Keyword::default(),
                }
            }
            _ => break,
        }
    }
    let mut k = Keyword::default();
    for c in sql[i..]
        .iter()
        .take_while(|c| c.is_ascii_alphabetic() || **c == b'_')
        .take(k.buf.len())
    {
        k.buf[k.len] = c.to_ascii_uppercase();
        k.len += 1;
    }
    k
}

/// Statements that never change data: no decision needed.
fn is_read_only(keyword: &str, sql: &[u8]) -> bool {
    match keyword {
        "SELECT" | "SHOW" | "DESC" | "DESCRIBE" | "BEGIN" | "START" | "COMMIT" | "ROLLBACK"
        | "SAVEPOINT" | "RELEASE" | "USE" | "HELP" | "DO" | "VALUES" | "TABLE" => true,
        // EXPLAIN runs nothing, unless it is EXPLAIN ANALYZE.
        "EXPLAIN" => !contains_word(sql, b"ANALYZE"),
        // SET changes session settings only; the proxy's own session key is handled here.
        // MariaDB's `SET STATEMENT var = … FOR <statement>` runs the statement.
        "SET" => !contains_word(sql, b"RB_SHARDING_KEY") && !contains_word(sql, b"STATEMENT"),
        _ => false,
    }
}

fn contains_word(sql: &[u8], word: &[u8]) -> bool {
    sql.windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word))
}

fn refused(ctx: &Ctx<'_>, state: [u8; 5], why: String) -> ProxyError {
    ProxyError::Rule {
        code: code::REFUSED,
        state,
        message: format!(
            "{why} (database `{}`, rules version {})",
            ctx.database,
            ctx.rules.version()
        ),
    }
}

/// Whether `sql` has an executable comment with a version (`/*!50000 …`, `/*M!100101 …`):
/// whether the server runs its text depends on the server's version.
fn has_versioned_comment(sql: &[u8]) -> bool {
    sql.windows(4)
        .any(|w| w.starts_with(b"/*!") && w[3].is_ascii_digit())
        || sql
            .windows(5)
            .any(|w| w.starts_with(b"/*M!") && w[4].is_ascii_digit())
}

/// Blanks every executable comment with its content: the text as a server that skips them
/// reads it.
fn drop_executable_comments(sql: &[u8]) -> Vec<u8> {
    let opened = open_executable_comments(sql);
    let mut out = sql.to_vec();
    let mut i = 0;
    let mut depth = 0usize;
    while i < sql.len() {
        let was_marker = sql[i] != opened[i];
        if was_marker && (sql[i..].starts_with(b"/*!") || sql[i..].starts_with(b"/*M!")) {
            depth += 1;
        } else if was_marker && sql[i..].starts_with(b"*/") {
            out[i] = b' ';
            out[i + 1] = b' ';
            depth = depth.saturating_sub(1);
            i += 2;
            continue;
        }
        if depth > 0 {
            out[i] = b' ';
        }
        i += 1;
    }
    out
}

/// What the proxy does with a statement before any decision.
enum Gate {
    /// Nothing that changes data: forward as is.
    Read,
    /// Needs the analysis and the decision.
    Decide,
}

/// The checks every statement text passes, text or prepared: the database, the read fast
/// path, and the texts the proxy refuses rather than misreads.
fn gate(ctx: &Ctx<'_>, stripped: &[u8], several: bool) -> Result<Gate, ProxyError> {
    let versioned = has_versioned_comment(stripped);
    let opened = open_executable_comments(stripped);
    // The text as a server that skips versioned comments reads it (without any, the same).
    let dropped = versioned.then(|| drop_executable_comments(stripped));
    let dropped: &[u8] = dropped.as_deref().unwrap_or(&opened);
    let (keyword, keyword_dropped) = (first_keyword(&opened), first_keyword(dropped));
    // Read only as the server reads it whatever its version: executable comments run or not.
    let read_only =
        !several && is_read_only(&keyword, &opened) && is_read_only(&keyword_dropped, dropped);
    // An XA transaction outlives its session once prepared (XA PREPARE), so a write-ban
    // could not wait for it: XA is for center databases only.
    if keyword == "XA" || keyword_dropped == "XA" {
        let center = ctx
            .rules
            .database(ctx.database)
            .is_some_and(|d| d.db_type == DatabaseType::Center);
        if several || !center {
            return Err(refused(
                ctx,
                *b"0A000",
                "XA transactions are allowed only alone and with a center database selected: a \
                 prepared XA transaction outlives its session, so a write-ban could not wait for \
                 it"
                .into(),
            ));
        }
        return Ok(Gate::Read);
    }
    let Some(db) = ctx.rules.database(ctx.database) else {
        // information_schema, or no database: nothing of the rules can be written from here.
        if read_only {
            return Ok(Gate::Read);
        }
        return Err(refused(
            ctx,
            *b"HY000",
            "statements that may change data need a database of the rules selected (USE one)"
                .into(),
        ));
    };
    // Reads too: a session that logged in or chose the database before a reload made the user
    // a center user or the database a center database is stopped here, in a unit room.
    let unit_room = ctx.rules.room_role(ctx.room) != shard_rules::config::RoomRole::Center;
    // The same refusals as `decide` gives writes.
    let outside_center = |reason: RouteError| {
        refusal(&Refusal {
            reason,
            rule_version: ctx.rules.version(),
            table: None,
            route_code: None,
            owner_room: None,
        })
    };
    let room = || ctx.rules.room_name(ctx.room).to_string();
    let center = || ctx.rules.room_name(ctx.rules.center()).to_string();
    if unit_room && ctx.mode == ConnectionMode::Center {
        return Err(outside_center(RouteError::CenterModeOutsideCenter {
            room: room(),
            center: center(),
        }));
    }
    if db.db_type == DatabaseType::Center {
        if unit_room {
            return Err(outside_center(RouteError::CenterDatabaseOutsideCenter {
                database: db.name.clone(),
                room: room(),
                center: center(),
            }));
        }
        if read_only {
            return Ok(Gate::Read);
        }
        // The center room's own database: free, but not a way into the others.
        let lower = String::from_utf8_lossy(stripped).to_ascii_lowercase();
        for other in ctx
            .rules
            .databases()
            .filter(|d| d.db_type != DatabaseType::Center)
        {
            let name = other.name.to_ascii_lowercase();
            if lower.contains(&format!("{name}.")) || lower.contains(&format!("`{name}`.")) {
                return Err(refused(
                    ctx,
                    *b"HY000",
                    format!(
                        "a statement on center database `{}` names database `{}`; use `{}` to \
                         write it",
                        db.name, other.name, other.name
                    ),
                ));
            }
        }
        return Ok(Gate::Read);
    }
    if read_only {
        return Ok(Gate::Read);
    }
    if versioned {
        return Err(refused(
            ctx,
            *b"HY000",
            "a statement that may change data has a versioned executable comment \
             (`/*!NNNNN …*/`), whose meaning depends on the server version; write it without"
                .into(),
        ));
    }
    if !ctx.backslash_escapes || ctx.ansi_quotes {
        return Err(refused(
            ctx,
            *b"HY000",
            "with sql_mode NO_BACKSLASH_ESCAPES or ANSI_QUOTES the proxy cannot read the \
             strings of a statement that may change data the way the server does; reset \
             sql_mode for writes"
                .into(),
        ));
    }
    if ctx.escape_unsafe_charset && !stripped.is_ascii() {
        return Err(refused(
            ctx,
            *b"HY000",
            "in this client character set a multi-byte character can hide a quote: a \
             statement that may change data must be ASCII (or use utf8mb4)"
                .into(),
        ));
    }
    if matches!(
        &*first_keyword(stripped),
        "PREPARE" | "EXECUTE" | "DEALLOCATE"
    ) {
        return Err(refused(
            ctx,
            *b"0A000",
            "SQL-level PREPARE/EXECUTE hides the statement from the proxy; use the protocol's \
             prepared statements"
                .into(),
        ));
    }
    Ok(Gate::Decide)
}

/// Checks one statement text (a COM_QUERY payload, hint included). `ids` are snowflake IDs
/// generated for it after a [`Verdict::NeedIds`]; `several` says the text holds several
/// statements.
pub fn check_text(
    ctx: &Ctx<'_>,
    sql: &[u8],
    ids: &[i64],
    several: bool,
) -> Result<Verdict, ProxyError> {
    let parsed = sql_hint::parse_with(sql, ctx.backslash_escapes).map_err(bad_hint)?;
    let hint = parsed.hint;
    // The proxy's own session variable, on any database.
    if !several
        && first_keyword(&parsed.sql) == "SET"
        && contains_word(&parsed.sql, b"RB_SHARDING_KEY")
    {
        let text = String::from_utf8_lossy(&parsed.sql);
        return match shard_rules::analyze::analyze(&text) {
            Ok(f) if f.session_key.is_some() => {
                session_key(f.session_key.as_ref().and_then(|k| k.as_ref()))
            }
            _ => Err(ProxyError::Rule {
                code: code::BAD_HINT,
                state: *b"42000",
                message: "SET @@rb_sharding_key = <integer | 'string' | DEFAULT | NULL>, alone"
                    .into(),
            }),
        };
    }
    // Several statements in one text are not split across data nodes.
    if several && sharded_database(ctx) {
        if let Some(t) = names_sharded_table(ctx, &parsed.sql) {
            return Err(ProxyError::NotSupportedAcrossNodes(format!(
                "a multi-statement text naming the sharded table `{t}`; send its statements one \
                 at a time"
            )));
        }
    }
    match gate(ctx, &parsed.sql, several)? {
        // A read of a database with sharded or broadcast tables: routed by its decision.
        Gate::Read if !several && sharded_database(ctx) => {
            match analyse_one(ctx, &parsed.sql) {
                Ok(a) => match decide_one_raw(ctx, &a, hint.as_ref()) {
                    Ok(d) => Ok(Verdict::Forward(Some(Box::new(d)))),
                    // A read of another schema (information_schema, mysql…) is not the rules'
                    // business: the default data source answers it, as everywhere.
                    Err(r)
                        if matches!(r.reason, RouteError::OtherDatabase { .. })
                            && names_laid_out_table(ctx, &parsed.sql).is_none() =>
                    {
                        Ok(Verdict::Forward(None))
                    }
                    Err(r) => Err(refusal(&r)),
                },
                Err(e) => match names_laid_out_table(ctx, &parsed.sql) {
                    Some(t) => Err(refused(
                        ctx,
                        *b"42000",
                        format!(
                            "the statement names the sharded or broadcast table `{t}`, but the \
                             proxy cannot analyse it to route it: {e}"
                        ),
                    )),
                    // Nothing laid out by the rules: the default data source answers it.
                    None => Ok(Verdict::Forward(None)),
                },
            }
        }
        Gate::Read => {
            // A hint is still checked for what it asks (a room, a node) when it asks something.
            if let Some(h) = &hint {
                if h.room.is_some() || h.node.is_some() {
                    if let Ok(a) = analyse_one(ctx, &parsed.sql) {
                        return decide_one(ctx, &a, Some(h))
                            .map(|d| Verdict::Forward(Some(Box::new(d))));
                    }
                }
            }
            // A read hinted with another room's key is served locally and counted (without a
            // hint, only with `count_foreign_reads`: see below).
            // Only unit databases have rows that belong to one room.
            let unit = ctx
                .rules
                .database(ctx.database)
                .is_some_and(|d| d.db_type == DatabaseType::Unit);
            if let Some(h) = hint.as_ref().filter(|_| unit) {
                let code = match (&h.route_code, &h.sharding_key) {
                    (Some(c), _) => Some(*c),
                    (None, Some(k)) => ctx.rules.route().route_code(k).ok(),
                    _ => None,
                };
                // A route code out of range names no room's data: not counted.
                if let Some(code) = code.filter(|c| *c < ctx.rules.route().count) {
                    let owner = ctx.rules.owner(code);
                    if owner != ctx.room {
                        return Ok(Verdict::ForeignRead { code, owner });
                    }
                    return Ok(Verdict::Forward(None));
                }
            }
            // Without a hint, the key of a read is in its WHERE: analysed only when asked for.
            if ctx.count_foreign_reads && unit && !several {
                if let Ok(a) = analyse_one(ctx, &parsed.sql) {
                    if let Ok(d) = decide_one(ctx, &a, None) {
                        if let (true, Some(r)) = (d.foreign_read, &d.route) {
                            return Ok(Verdict::ForeignRead {
                                code: r.code,
                                owner: r.owner,
                            });
                        }
                    }
                }
            }
            Ok(Verdict::Forward(None))
        }
        Gate::Decide => {
            let analysed = analyse(&parsed.sql, hint, ctx, several)?;
            let needed = keys_needed(ctx, &analysed)?;
            if !needed.is_empty() && analysed.plans.len() > 1 {
                return Err(refused(
                    ctx,
                    *b"0A000",
                    "an INSERT that needs generated keys must be sent alone, not in a \
                     multi-statement text"
                        .into(),
                ));
            }
            if needed.len() > ids.len() {
                return Ok(Verdict::NeedIds(needed));
            }
            decide_all_with(ctx, &analysed, &[], ids).map(|d| Verdict::Forward(d.map(Box::new)))
        }
    }
}

/// The key generators (snowflake or segment) the statements' INSERTs need, one per row that
/// leaves out a generated key column, in the order `decide` asks for the keys.
pub fn keys_needed(
    ctx: &Ctx<'_>,
    a: &Analysed,
) -> Result<Vec<shard_rules::ruleset::KeyGenerator>, ProxyError> {
    use shard_rules::analyze::WriteKind;
    let Some(db) = ctx.rules.database(ctx.database) else {
        return Ok(Vec::new());
    };
    let mut n = Vec::new();
    for facts in a.plans.iter().map(|p| &*p.facts) {
        let Some(ins) = &facts.insert else { continue };
        if !matches!(
            facts.kind,
            Kind::Write(WriteKind::Insert | WriteKind::Replace)
        ) {
            continue;
        }
        let shard_rules::TableKind::Sharded(t) = db.table(&ins.table) else {
            continue;
        };
        let Some(g) = &t.key_generator else { continue };
        if ins.columns.contains(&g.column) {
            continue;
        }
        if ins.columns.is_empty() || !facts.unknowns.is_empty() {
            return Err(ProxyError::Rule {
                code: code::REFUSED,
                state: *b"HY000",
                message: format!(
                    "`{}` generates `{}`: an INSERT that leaves the column out must list its \
                     columns and rows (INSERT … SELECT and INSERT without a column list are \
                     refused) (rules version {})",
                    t.name,
                    g.column,
                    ctx.rules.version()
                ),
            });
        }
        if g.kind == shard_rules::rules::KeyGeneratorKind::Segment && ctx.rules.segments().is_none()
        {
            return Err(refused(
                ctx,
                *b"HY000",
                format!(
                    "`{}`.`{}` uses segment keys but the rules have no [segments]",
                    t.name, g.column
                ),
            ));
        }
        for _ in &ins.rows {
            n.push(g.clone());
        }
    }
    Ok(n)
}

/// Analyses a statement text (hint stripped) that may change data: one statement through the
/// plan cache, several (`several`) parsed together.
pub fn analyse(
    sql: &[u8],
    hint: Option<Hint>,
    ctx: &Ctx<'_>,
    several: bool,
) -> Result<Analysed, ProxyError> {
    let opened = open_executable_comments(sql);
    // What cannot be read cannot be checked: refused, never guessed.
    let unparsable = |e: &dyn std::fmt::Display| ProxyError::Rule {
        code: code::REFUSED,
        state: *b"HY000",
        message: format!(
            "the proxy cannot parse this statement, so it cannot check which room it may write \
             in ({e}); database `{}` (rules version {})",
            ctx.database,
            ctx.rules.version()
        ),
    };
    if !several {
        match analyse_one(ctx, &opened) {
            Ok(a) => {
                return Ok(Analysed {
                    plans: vec![a],
                    hint,
                })
            }
            Err(AnalyzeError::Parse(e)) => return Err(unparsable(&e)),
            // Statements the splitter did not see (`SELECT 1;;`): parsed together below.
            Err(AnalyzeError::Several(_) | AnalyzeError::Empty) => {}
        }
    }
    let text = String::from_utf8_lossy(&opened);
    let statements = Parser::parse_sql(&MySqlDialect {}, &text).map_err(|e| unparsable(&e))?;
    Ok(Analysed {
        plans: statements
            .iter()
            .map(|s| Analysis::from_facts(analyze_statement(s)))
            .collect(),
        hint,
    })
}

/// Where a prepared statement on sharded tables is prepared (for its parameter and column
/// metadata): the first node of its first sharded table, every sharded table renamed to its
/// first node. `None` when it names no sharded table.
pub fn first_node(ctx: &Ctx<'_>, a: &Analysed) -> Option<(String, Vec<shard_rules::lex::Rename>)> {
    let db = ctx.rules.database(ctx.database)?;
    let facts = &a.plans.first()?.facts;
    let mut ds = None;
    let mut renames: Vec<shard_rules::lex::Rename> = Vec::new();
    for t in &facts.tables {
        if let shard_rules::TableKind::Sharded(r) = db.table(&t.name) {
            let n = r.nodes.first()?;
            ds.get_or_insert_with(|| db.data_source_name(n.data_source).to_string());
            if !renames
                .iter()
                .any(|x| x.logical.eq_ignore_ascii_case(&r.name))
            {
                renames.push(shard_rules::lex::Rename {
                    logical: r.name.clone(),
                    physical: n.table.to_string(),
                });
            }
        }
    }
    ds.map(|d| (d, renames))
}

/// The session's database has sharded or broadcast tables, or several data sources.
fn sharded_database(ctx: &Ctx<'_>) -> bool {
    ctx.rules
        .database(ctx.database)
        .is_some_and(|d| d.is_laid_out())
}

/// The first sharded table (several nodes) a text names, by its tokens.
fn names_sharded_table(ctx: &Ctx<'_>, sql: &[u8]) -> Option<String> {
    first_table_named(
        ctx,
        sql,
        |k| matches!(k, shard_rules::TableKind::Sharded(r) if r.nodes.len() > 1),
    )
}

/// The first sharded or broadcast table a text names (by its tokens).
fn names_laid_out_table(ctx: &Ctx<'_>, sql: &[u8]) -> Option<String> {
    first_table_named(ctx, sql, |k| !matches!(k, shard_rules::TableKind::Single))
}

/// The first name among the text's tokens whose table layout `pick` accepts.
fn first_table_named(
    ctx: &Ctx<'_>,
    sql: &[u8],
    pick: impl Fn(shard_rules::TableKind<'_>) -> bool,
) -> Option<String> {
    let db = ctx.rules.database(ctx.database)?;
    let q = shard_rules::lex::Quoting {
        backslash_escapes: ctx.backslash_escapes,
        ansi_quotes: ctx.ansi_quotes,
    };
    let toks = shard_rules::lex::tokens(sql, q).ok()?;
    toks.iter()
        .filter_map(|t| t.name(sql))
        .find(|n| pick(db.table(n)))
}

/// The analysis of one statement (hint stripped), from the plan cache when the session's
/// sql_mode reads quotes as the digest does.
fn analyse_one(ctx: &Ctx<'_>, sql: &[u8]) -> Result<Analysis, AnalyzeError> {
    // In big5, gbk, sjis or cp932 a multi-byte character can hide a quote from the lexer.
    let charset_safe = !ctx.escape_unsafe_charset || sql.is_ascii();
    if ctx.backslash_escapes && !ctx.ansi_quotes && charset_safe {
        ctx.plans.analyze(sql)
    } else {
        shard_rules::analyze::analyze(&String::from_utf8_lossy(sql)).map(Analysis::from_facts)
    }
}

/// MySQL runs the text of `/*!NNNNN … */` and MariaDB also of `/*M!NNNNNN … */`: their markers
/// become spaces so that the parser sees the code the server will run.
fn open_executable_comments(sql: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !sql.windows(3).any(|w| w == b"/*!") && !sql.windows(4).any(|w| w == b"/*M!") {
        return std::borrow::Cow::Borrowed(sql);
    }
    let mut out = sql.to_vec();
    let mut i = 0;
    let mut open = 0usize;
    while i < out.len() {
        let quote = out[i];
        if matches!(quote, b'\'' | b'"' | b'`') {
            i += 1;
            while i < out.len() && out[i] != quote {
                i += if out[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        let marker = if out[i..].starts_with(b"/*!") {
            3
        } else if out[i..].starts_with(b"/*M!") {
            4
        } else {
            0
        };
        if marker > 0 {
            let mut j = i + marker;
            while j < out.len() && out[j].is_ascii_digit() {
                j += 1;
            }
            out[i..j].fill(b' ');
            open += 1;
            i = j;
            continue;
        }
        if open > 0 && out[i..].starts_with(b"*/") {
            out[i..i + 2].fill(b' ');
            open -= 1;
            i += 2;
            continue;
        }
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

fn session_key(op: Option<&Operand>) -> Result<Verdict, ProxyError> {
    let key = match op {
        None => None,
        Some(Operand::Value(Value::Int(i))) => Some(ShardingKey::Int(*i)),
        Some(Operand::Value(Value::Str(s))) => Some(ShardingKey::Str(s.clone())),
        Some(Operand::Value(Value::Null)) => None,
        Some(other) => {
            return Err(bad_hint(format!(
                "SET @@rb_sharding_key needs an integer or a quoted string, not `{other:?}`"
            )))
        }
    };
    Ok(Verdict::SetSessionKey(key))
}

/// Decides every statement of an analysed text; the last decision is returned, carrying
/// the write codes of all of them.
pub fn decide_all(
    ctx: &Ctx<'_>,
    a: &Analysed,
    params: &[Value],
    ids: &[i64],
) -> Result<Option<Decision>, ProxyError> {
    decide_all_with(ctx, a, params, ids)
}

fn decide_all_with(
    ctx: &Ctx<'_>,
    a: &Analysed,
    params: &[Value],
    ids: &[i64],
) -> Result<Option<Decision>, ProxyError> {
    let mut ids = ids.iter().copied();
    let mut last: Option<Decision> = None;
    // Every statement's codes are claimed, not only the last one's.
    let mut codes: Vec<u32> = Vec::new();
    for plan in &a.plans {
        let facts = &*plan.facts;
        if facts.session_key.is_some() {
            return Err(ProxyError::Unsupported(
                "SET @@rb_sharding_key together with other statements or as a prepared statement (send it alone, as text)".into(),
            ));
        }
        let params = plan.params(params);
        let d =
            decide_raw(ctx, facts, a.hint.as_ref(), &params, &mut ids).map_err(|r| refusal(&r))?;
        if ctx.writes_held && !d.write_codes.is_empty() {
            return Err(ProxyError::Rule {
                code: code::BANNED,
                state: *b"HY000",
                message: format!(
                    "writes are held: this proxy has not renewed its registration in etcd within \
                     its lease, or refused the rules it rejoined on, so a cut-over could be \
                     running without it; retry later (SHOW CLUSTER) (rules version {})",
                    ctx.rules.version()
                ),
            });
        }
        for c in &d.write_codes {
            if !codes.contains(c) {
                codes.push(*c);
            }
        }
        last = Some(d);
    }
    Ok(last.map(|mut d| {
        d.write_codes = codes;
        d
    }))
}

fn decide_one_raw(
    ctx: &Ctx<'_>,
    a: &Analysis,
    hint: Option<&Hint>,
) -> Result<Decision, Box<Refusal>> {
    decide_raw(ctx, &a.facts, hint, &a.params(&[]), &mut std::iter::empty())
}

fn decide_one(ctx: &Ctx<'_>, a: &Analysis, hint: Option<&Hint>) -> Result<Decision, ProxyError> {
    decide_raw(ctx, &a.facts, hint, &a.params(&[]), &mut std::iter::empty())
        .map_err(|r| refusal(&r))
}

fn decide_raw(
    ctx: &Ctx<'_>,
    facts: &Facts,
    hint: Option<&Hint>,
    params: &[Value],
    ids: &mut dyn Iterator<Item = i64>,
) -> Result<Decision, Box<Refusal>> {
    let session = ctx.session();
    // Keys come in the order decide asks for them (statements, then rows), whatever their kind.
    decide(ctx.rules, facts, hint, &session, params, &mut |_| {
        ids.next()
            .ok_or_else(|| "no key was generated for this row".to_string())
    })
}

/// At COM_STMT_PREPARE: the analysis of a statement that may change data in a unit or
/// center-unit database, decided again at each execute with the bound values; `None` for
/// statements that need no decision. Refusals that do not depend on the values come here.
/// What a prepared statement needs at execute: its analysis and the keys each execute generates.
#[derive(Clone)]
pub struct PreparedRules {
    pub analysed: Analysed,
    /// One generator per INSERT row that leaves out a generated key column (same column).
    pub keys: Vec<shard_rules::ruleset::KeyGenerator>,
}

pub fn prepare(ctx: &Ctx<'_>, sql: &[u8]) -> Result<Option<PreparedRules>, ProxyError> {
    let parsed = sql_hint::parse_with(sql, ctx.backslash_escapes).map_err(bad_hint)?;
    let keyword = first_keyword(&parsed.sql);
    if keyword == "SET" && contains_word(&parsed.sql, b"RB_SHARDING_KEY") {
        return Err(ProxyError::Unsupported(
            "SET @@rb_sharding_key as a prepared statement (send it as text)".into(),
        ));
    }
    let gated_read = matches!(gate(ctx, &parsed.sql, false)?, Gate::Read);
    let a = if gated_read {
        // Reads of laid-out databases are routed at each execute, by their bound values.
        if !sharded_database(ctx) {
            return Ok(None);
        }
        match analyse(&parsed.sql, parsed.hint, ctx, false) {
            Ok(a) => a,
            Err(e) => {
                return match names_laid_out_table(ctx, &parsed.sql) {
                    Some(t) => Err(refused(
                        ctx,
                        *b"42000",
                        format!(
                            "the statement names the sharded or broadcast table `{t}`, but the \
                             proxy cannot analyse it to route it: {e}"
                        ),
                    )),
                    None => Ok(None),
                }
            }
        }
    } else {
        analyse(&parsed.sql, parsed.hint, ctx, false)?
    };
    let keys = keys_needed(ctx, &a)?;
    if !keys.is_empty() && keys.iter().any(|k| k.column != keys[0].column) {
        return Err(refused(
            ctx,
            *b"0A000",
            "a prepared INSERT may generate one key column only".into(),
        ));
    }
    for plan in &a.plans {
        // The literals bound in, the client's `?` left as parameters: what depends only on
        // the literals is decided (or refused) now, the rest at each execute.
        let facts = shard_rules::plan::bind(&plan.facts, &plan.slots);
        match decide_raw(ctx, &facts, a.hint.as_ref(), &[], &mut std::iter::empty()) {
            Ok(_) => {}
            // Decided at execute: the values, or the session key set after the prepare.
            Err(r)
                if matches!(
                    r.reason,
                    RouteError::MissingParameter { .. } | RouteError::NoShardingKey { .. }
                ) => {}
            Err(r) if matches!(r.reason, RouteError::KeyGeneration { .. }) && !keys.is_empty() => {}
            // A read of another schema: forwarded as in any database.
            Err(r)
                if gated_read
                    && matches!(r.reason, RouteError::OtherDatabase { .. })
                    && names_laid_out_table(ctx, &parsed.sql).is_none() =>
            {
                return Ok(None)
            }
            Err(r) => return Err(refusal(&r)),
        }
    }
    Ok(Some(PreparedRules { analysed: a, keys }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_comments_are_opened_for_the_parser() {
        assert_eq!(
            &*open_executable_comments(b"/*!50000 DELETE FROM t */ WHERE 1"),
            b"         DELETE FROM t    WHERE 1"
        );
        assert_eq!(
            &*open_executable_comments(b"SELECT '/*!1 x */' /*M!100101 , 2 */"),
            b"SELECT '/*!1 x */'            , 2   "
        );
        assert_eq!(&*open_executable_comments(b"SELECT 1"), b"SELECT 1");
    }

    #[test]
    fn first_keywords_skip_comments_and_parentheses() {
        assert_eq!(first_keyword(b"  /* x */ (select 1)"), "SELECT");
        assert_eq!(first_keyword(b"-- c\n# d\nUPDATE t SET a=1"), "UPDATE");
        assert_eq!(first_keyword(b"/*!40101 SET NAMES utf8 */"), "SET");
        assert_eq!(first_keyword(b"/* never closed"), "");
        assert!(is_read_only("SET", b"SET NAMES utf8mb4"));
        assert!(!is_read_only("SET", b"SET @@rb_sharding_key = 1"));
        assert!(!is_read_only("EXPLAIN", b"EXPLAIN ANALYZE DELETE FROM t"));
        assert!(!is_read_only("WITH", b"WITH c AS (SELECT 1) DELETE FROM t"));
    }
}

/// The values of a COM_STMT_EXECUTE's parameters, as the rules read them: integers, and the
/// text of strings, decimals, dates and floats. `values` is the payload after the null bitmap,
/// bound flag and types; `long_data` marks parameters sent with COM_STMT_SEND_LONG_DATA.
pub fn decode_params(
    null_bitmap: &[u8],
    types: &[u8],
    mut values: &[u8],
    long_data: &[bool],
) -> Result<Vec<Value>, ProxyError> {
    let n = types.len() / 2;
    let bad = |i: usize| {
        ProxyError::Malformed(if i == usize::MAX {
            "short parameter value"
        } else {
            "bad parameter value"
        })
    };
    let mut out = Vec::with_capacity(n);
    let take = |values: &mut &[u8], k: usize| -> Result<Vec<u8>, ProxyError> {
        if values.len() < k {
            return Err(bad(usize::MAX));
        }
        let (a, b) = values.split_at(k);
        *values = b;
        Ok(a.to_vec())
    };
    for i in 0..n {
        let null = null_bitmap
            .get(i / 8)
            .is_some_and(|b| b & (1 << (i % 8)) != 0);
        if null {
            out.push(Value::Null);
            continue;
        }
        if long_data.get(i).copied().unwrap_or(false) {
            // Sent in pieces beforehand: not a value the rules can use.
            out.push(Value::Str(String::new()));
            continue;
        }
        let (t, unsigned) = (types[2 * i], types[2 * i + 1] & 0x80 != 0);
        let int = |b: Vec<u8>| -> i128 {
            let mut buf = [0u8; 16];
            buf[..b.len()].copy_from_slice(&b);
            if !unsigned && b.last().is_some_and(|x| x & 0x80 != 0) {
                for x in &mut buf[b.len()..] {
                    *x = 0xFF;
                }
            }
            i128::from_le_bytes(buf)
        };
        let v = match t {
            0x01 => int(take(&mut values, 1)?),        // TINY
            0x02 | 0x0d => int(take(&mut values, 2)?), // SHORT, YEAR
            0x03 | 0x09 => int(take(&mut values, 4)?), // LONG, INT24
            0x08 => int(take(&mut values, 8)?),        // LONGLONG
            0x04 => {
                let b = take(&mut values, 4)?;
                out.push(Value::Str(
                    f32::from_le_bytes(b.try_into().map_err(|_| bad(i))?).to_string(),
                ));
                continue;
            }
            0x05 => {
                let b = take(&mut values, 8)?;
                out.push(Value::Str(
                    f64::from_le_bytes(b.try_into().map_err(|_| bad(i))?).to_string(),
                ));
                continue;
            }
            0x06 => {
                out.push(Value::Null);
                continue;
            }
            0x07 | 0x0a | 0x0c => {
                // TIMESTAMP, DATE, DATETIME: length, then y m d [h mi s [µs]].
                let len = take(&mut values, 1)?[0] as usize;
                let b = take(&mut values, len)?;
                let text = if b.len() >= 4 {
                    let y = u16::from_le_bytes([b[0], b[1]]);
                    let mut t = format!("{y:04}-{:02}-{:02}", b[2], b[3]);
                    if b.len() >= 7 {
                        t += &format!(" {:02}:{:02}:{:02}", b[4], b[5], b[6]);
                    }
                    t
                } else {
                    "0000-00-00".to_string()
                };
                out.push(Value::Str(text));
                continue;
            }
            0x0b => {
                // TIME: the rules never shard on it; skip its bytes.
                let len = take(&mut values, 1)?[0] as usize;
                take(&mut values, len)?;
                out.push(Value::Str(String::new()));
                continue;
            }
            _ => {
                // Strings, decimals, blobs, JSON, enums, bit: length-encoded bytes.
                let first = take(&mut values, 1)?[0];
                let len =
                    match first {
                        0xfc => u16::from_le_bytes(
                            take(&mut values, 2)?.try_into().map_err(|_| bad(i))?,
                        ) as usize,
                        0xfd => {
                            let b = take(&mut values, 3)?;
                            u32::from_le_bytes([b[0], b[1], b[2], 0]) as usize
                        }
                        0xfe => u64::from_le_bytes(
                            take(&mut values, 8)?.try_into().map_err(|_| bad(i))?,
                        ) as usize,
                        x => x as usize,
                    };
                let b = take(&mut values, len)?;
                out.push(Value::Str(String::from_utf8_lossy(&b).into_owned()));
                continue;
            }
        };
        out.push(match i64::try_from(v) {
            Ok(x) => Value::Int(x),
            Err(_) => Value::Str(v.to_string()),
        });
    }
    Ok(out)
}

/// The byte length of each parameter value in a COM_STMT_EXECUTE's value area (0 for NULL and
/// long-data parameters), to re-order parameters without decoding them.
/// The SQL literals of a COM_STMT_EXECUTE's parameters, and of the generated keys the proxy
/// added (`key_slots[j]`: client parameters before generated key `j`), in the statement's
/// `?` order: for running the statement as text where a prepared one cannot go (several data
/// nodes, another data source). Strings that are not UTF-8 become `X'…'`.
pub fn param_literals(
    payload: &[u8],
    n: usize,
    types: Option<&[u8]>,
    generated: &[i64],
    key_slots: &[usize],
    backslash_escapes: bool,
) -> Result<Vec<String>, ProxyError> {
    let mut client = Vec::with_capacity(n);
    if n > 0 {
        let types_saved = types.ok_or(ProxyError::Malformed("parameters without types"))?;
        let bitmap = n.div_ceil(8);
        let bound_at = 10 + bitmap;
        let short = || ProxyError::Malformed("short COM_STMT_EXECUTE");
        let nulls = payload.get(10..bound_at).ok_or_else(short)?;
        let bound = *payload.get(bound_at).ok_or_else(short)?;
        let start = bound_at + 1 + if bound == 1 { 2 * n } else { 0 };
        let types: &[u8] = if bound == 1 {
            payload.get(bound_at + 1..start).ok_or_else(short)?
        } else {
            types_saved
        };
        let values = payload.get(start..).unwrap_or_default();
        let lengths = param_lengths(nulls, types, values, &vec![false; n])?;
        let mut at = 0;
        for i in 0..n {
            let null = nulls[i / 8] & (1 << (i % 8)) != 0;
            let v = &values[at..at + lengths[i]];
            at += lengths[i];
            client.push(if null {
                "NULL".to_string()
            } else {
                literal(
                    types[2 * i],
                    types[2 * i + 1] & 0x80 != 0,
                    v,
                    backslash_escapes,
                )?
            });
        }
    }
    let mut out = Vec::with_capacity(n + generated.len());
    let mut g = 0;
    for (i, lit) in client.into_iter().enumerate() {
        while g < generated.len() && key_slots.get(g).copied().unwrap_or(n) == i {
            out.push(generated[g].to_string());
            g += 1;
        }
        out.push(lit);
    }
    while g < generated.len() {
        out.push(generated[g].to_string());
        g += 1;
    }
    Ok(out)
}

/// One binary-protocol parameter value as an SQL literal.
fn literal(
    ty: u8,
    unsigned: bool,
    v: &[u8],
    backslash_escapes: bool,
) -> Result<String, ProxyError> {
    let bad = || ProxyError::Malformed("parameter value does not match its type");
    let int = |n: usize| -> Result<i128, ProxyError> {
        let b = v.get(..n).ok_or_else(bad)?;
        let mut buf = [0u8; 8];
        buf[..n].copy_from_slice(b);
        let u = u64::from_le_bytes(buf);
        Ok(if unsigned {
            u as i128
        } else {
            // Sign-extend from n bytes.
            let shift = 64 - 8 * n as u32;
            (((u << shift) as i64) >> shift) as i128
        })
    };
    Ok(match ty {
        0x01 => int(1)?.to_string(),
        0x02 | 0x0d => int(2)?.to_string(),
        0x03 | 0x09 => int(4)?.to_string(),
        0x08 => int(8)?.to_string(),
        0x04 => format!(
            "{:e}",
            f32::from_le_bytes(v.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?)
        ),
        0x05 => format!(
            "{:e}",
            f64::from_le_bytes(v.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?)
        ),
        0x06 => "NULL".into(),
        0x07 | 0x0a | 0x0c => {
            let b = v.get(1..).unwrap_or_default();
            let g = |k: usize| b.get(k).copied().unwrap_or(0);
            let year = u16::from_le_bytes([g(0), g(1)]);
            let us = if b.len() >= 11 {
                u32::from_le_bytes([g(7), g(8), g(9), g(10)])
            } else {
                0
            };
            if ty == 0x0a && b.len() <= 4 {
                format!("'{year:04}-{:02}-{:02}'", g(2), g(3))
            } else {
                format!(
                    "'{year:04}-{:02}-{:02} {:02}:{:02}:{:02}.{us:06}'",
                    g(2),
                    g(3),
                    g(4),
                    g(5),
                    g(6)
                )
            }
        }
        0x0b => {
            let b = v.get(1..).unwrap_or_default();
            let g = |k: usize| b.get(k).copied().unwrap_or(0);
            let days = u32::from_le_bytes([g(1), g(2), g(3), g(4)]);
            let us = if b.len() >= 12 {
                u32::from_le_bytes([g(8), g(9), g(10), g(11)])
            } else {
                0
            };
            format!(
                "'{}{:02}:{:02}:{:02}.{us:06}'",
                if g(0) == 1 { "-" } else { "" },
                days * 24 + u32::from(g(5)),
                g(6),
                g(7)
            )
        }
        _ => {
            let (len, used) = crate::packet::lenenc_int(v).ok_or_else(bad)?;
            let bytes = v.get(used..used + len as usize).ok_or_else(bad)?;
            match std::str::from_utf8(bytes) {
                Ok(t) => {
                    let mut out = String::with_capacity(t.len() + 2);
                    out.push('\'');
                    for c in t.chars() {
                        match c {
                            '\'' => out.push_str("''"),
                            // Under NO_BACKSLASH_ESCAPES a backslash is itself.
                            '\\' if backslash_escapes => out.push_str("\\\\"),
                            '\0' if backslash_escapes => out.push_str("\\0"),
                            c => out.push(c),
                        }
                    }
                    out.push('\'');
                    out
                }
                Err(_) => {
                    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
                    format!("X'{hex}'")
                }
            }
        }
    })
}

pub fn param_lengths(
    null_bitmap: &[u8],
    types: &[u8],
    values: &[u8],
    long_data: &[bool],
) -> Result<Vec<usize>, ProxyError> {
    let n = types.len() / 2;
    let short = || ProxyError::Malformed("short parameter value");
    let byte = |k: usize| values.get(k).copied().ok_or_else(short);
    let mut at = 0usize;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let null = null_bitmap
            .get(i / 8)
            .is_some_and(|b| b & (1 << (i % 8)) != 0);
        if null || long_data.get(i).copied().unwrap_or(false) {
            out.push(0);
            continue;
        }
        let len = match types[2 * i] {
            0x01 => 1,
            0x02 | 0x0d => 2,
            0x03 | 0x09 | 0x04 => 4,
            0x08 | 0x05 => 8,
            0x06 => 0,
            0x07 | 0x0a | 0x0c | 0x0b => 1 + byte(at)? as usize,
            _ => match byte(at)? {
                0xfc => 3 + u16::from_le_bytes([byte(at + 1)?, byte(at + 2)?]) as usize,
                0xfd => {
                    4 + u32::from_le_bytes([byte(at + 1)?, byte(at + 2)?, byte(at + 3)?, 0])
                        as usize
                }
                0xfe => {
                    let b = values.get(at + 1..at + 9).ok_or_else(short)?;
                    9 + u64::from_le_bytes(b.try_into().map_err(|_| short())?) as usize
                }
                x => 1 + x as usize,
            },
        };
        if at + len > values.len() {
            return Err(short());
        }
        out.push(len);
        at += len;
    }
    Ok(out)
}

#[cfg(test)]
mod param_tests {
    use super::*;

    #[test]
    fn execute_parameters_decode_to_rule_values() {
        // 4 params: LONGLONG 10086, VAR_STRING 'paid', NULL, unsigned TINY 200.
        let types = [0x08, 0x00, 0xfd, 0x00, 0x08, 0x00, 0x01, 0x80];
        let bitmap = [0b0000_0100];
        let mut values = 10086i64.to_le_bytes().to_vec();
        values.extend_from_slice(&[4, b'p', b'a', b'i', b'd', 200]);
        let v = decode_params(&bitmap, &types, &values, &[]).unwrap();
        assert_eq!(
            v,
            [
                Value::Int(10086),
                Value::Str("paid".into()),
                Value::Null,
                Value::Int(200)
            ]
        );
        // A negative signed SHORT and a DATETIME.
        let types = [0x02, 0x00, 0x0c, 0x00];
        let mut values = (-7i16).to_le_bytes().to_vec();
        values.extend_from_slice(&[7, 0xe8, 0x07, 3, 15, 10, 0, 0]);
        let v = decode_params(&[0], &types, &values, &[]).unwrap();
        assert_eq!(
            v,
            [Value::Int(-7), Value::Str("2024-03-15 10:00:00".into())]
        );
        assert!(decode_params(&[0], &[0x08, 0x00], &[1, 2], &[]).is_err());
    }
}

/// Adds a generated key column to an `INSERT … (columns) VALUES (…), (…)` text: `` `column` ``
/// at the end of the column list and one value at the end of each row, the first as
/// `LAST_INSERT_ID(id)` so that the OK packet's last insert id and `LAST_INSERT_ID()` give the
/// first generated id, as with AUTO_INCREMENT. Everything else is kept byte for byte. `None`
/// when the text does not have that shape (the caller refuses the statement).
pub fn add_generated_column(sql: &[u8], column: &str, ids: &[i64]) -> Option<Vec<u8>> {
    let values: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(k, id)| {
            if k == 0 {
                format!("LAST_INSERT_ID({id})")
            } else {
                id.to_string()
            }
        })
        .collect();
    add_column_values(sql, column, &values).map(|(out, _)| out)
}

/// [`add_generated_column`] for a prepared INSERT: one `?` per row (the first as
/// `LAST_INSERT_ID(?)`), bound at each execute with newly generated keys.
pub fn add_generated_placeholders(
    sql: &[u8],
    column: &str,
    rows: usize,
) -> Option<(Vec<u8>, Vec<usize>)> {
    let values: Vec<String> = (0..rows)
        .map(|k| {
            if k == 0 {
                "LAST_INSERT_ID(?)".into()
            } else {
                "?".into()
            }
        })
        .collect();
    add_column_values(sql, column, &values)
}

fn add_column_values(sql: &[u8], column: &str, ids: &[String]) -> Option<(Vec<u8>, Vec<usize>)> {
    // Top-level ( and ) positions, and where VALUE(S) ends, skipping strings and comments.
    let mut parens: Vec<(usize, usize)> = Vec::new(); // (open, close) at depth 0
    let mut values_kw: Option<usize> = None;
    let (mut i, mut depth, mut open) = (0usize, 0usize, 0usize);
    let mut marks: Vec<usize> = Vec::new(); // positions of `?` placeholders
    while i < sql.len() {
        let c = sql[i];
        match c {
            b'?' => marks.push(i),
            b'\'' | b'"' | b'`' => {
                let q = c;
                i += 1;
                while i < sql.len() {
                    if sql[i] == b'\\' && q != b'`' {
                        i += 2;
                        continue;
                    }
                    if sql[i] == q {
                        if sql.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                // An executable comment (`/*!…*/`, `/*M!…*/`) is code to the server: its `?`s
                // and parentheses count, so the text is not rewritten (the caller refuses it).
                if matches!(sql.get(i + 2), Some(b'!'))
                    || (matches!(sql.get(i + 2), Some(b'M')) && sql.get(i + 3) == Some(&b'!'))
                {
                    return None;
                }
                let end = sql[i + 2..].windows(2).position(|w| w == b"*/")?;
                i += end + 3;
            }
            b'#' => {
                i += sql[i..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .unwrap_or(sql.len() - i);
            }
            b'-' if sql.get(i + 1) == Some(&b'-')
                && sql
                    .get(i + 2)
                    .is_none_or(|c| c.is_ascii_whitespace() || c.is_ascii_control()) =>
            {
                i += sql[i..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .unwrap_or(sql.len() - i);
            }
            b'(' => {
                if depth == 0 {
                    open = i;
                }
                depth += 1;
            }
            b')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    parens.push((open, i));
                }
            }
            b'v' | b'V' if depth == 0 && values_kw.is_none() => {
                let word: Vec<u8> = sql[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphabetic())
                    .map(|b| b.to_ascii_uppercase())
                    .collect();
                let before_ok = i == 0 || !sql[i - 1].is_ascii_alphanumeric() && sql[i - 1] != b'_';
                if before_ok && (word == b"VALUES" || word == b"VALUE") {
                    values_kw = Some(i);
                }
                i += word.len().max(1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let values_at = values_kw?;
    let (cols_open, cols_close) = *parens.first()?;
    if cols_close > values_at || cols_open == 0 {
        return None;
    }
    // The row tuples: consecutive parenthesised groups after VALUES with only commas and
    // whitespace between them (an `ON DUPLICATE KEY UPDATE … VALUES(x)` ends the list).
    let after: Vec<(usize, usize)> = parens
        .iter()
        .copied()
        .filter(|(o, _)| *o > values_at)
        .collect();
    let mut rows: Vec<usize> = Vec::new();
    for (k, (o, c)) in after.iter().enumerate() {
        let gap = if k == 0 {
            &sql[values_at..*o]
        } else {
            &sql[after[k - 1].1 + 1..*o]
        };
        let ok = if k == 0 {
            gap.iter()
                .skip_while(|b| b.is_ascii_alphabetic())
                .all(|b| b.is_ascii_whitespace())
        } else {
            gap.iter().all(|b| b.is_ascii_whitespace() || *b == b',')
                && gap.iter().filter(|b| **b == b',').count() == 1
        };
        if !ok {
            break;
        }
        rows.push(*c);
    }
    if rows.len() != ids.len() {
        return None;
    }
    let mut out = Vec::with_capacity(sql.len() + 24 * (ids.len() + 1));
    let mut at = 0;
    let col = format!(", `{}`", column.replace('`', "``"));
    out.extend_from_slice(&sql[at..cols_close]);
    out.extend_from_slice(col.as_bytes());
    at = cols_close;
    for (k, close) in rows.iter().enumerate() {
        out.extend_from_slice(&sql[at..*close]);
        out.extend_from_slice(format!(", {}", ids[k]).as_bytes());
        at = *close;
    }
    out.extend_from_slice(&sql[at..]);
    let before = rows
        .iter()
        .map(|close| marks.iter().filter(|m| *m < close).count())
        .collect();
    Some((out, before))
}

#[cfg(test)]
mod rewrite_tests {
    use super::*;

    #[test]
    fn generated_columns_are_added_to_the_list_and_every_row() {
        let sql = b"/* rb: sk=1 */ INSERT INTO t_order (buyer_id, note) VALUES (1001, 'a,(b)'), (1002, \"c)\") ON DUPLICATE KEY UPDATE note = VALUES(note)";
        let out = add_generated_column(sql, "order_id", &[7, 8]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "/* rb: sk=1 */ INSERT INTO t_order (buyer_id, note, `order_id`) VALUES (1001, 'a,(b)', LAST_INSERT_ID(7)), (1002, \"c)\", 8) ON DUPLICATE KEY UPDATE note = VALUES(note)"
        );
        let (out, before) =
            add_generated_placeholders(b"INSERT INTO t (a, b) VALUES (?, 'q?'), (?, 1)", "id", 2)
                .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "INSERT INTO t (a, b, `id`) VALUES (?, 'q?', LAST_INSERT_ID(?)), (?, 1, ?)"
        );
        assert_eq!(before, [1, 2]);
        let out = add_generated_column(b"insert into t(a) value(1)", "id", &[5]).unwrap();
        assert_eq!(out, b"insert into t(a, `id`) value(1, LAST_INSERT_ID(5))");
        // Shapes it does not rewrite.
        assert!(add_generated_column(b"INSERT INTO t SET a = 1", "id", &[1]).is_none());
        assert!(add_generated_column(b"INSERT INTO t (a) VALUES (1), (2)", "id", &[1]).is_none());
        assert!(add_generated_column(b"INSERT INTO t (a) VALUES (1)", "id", &[1, 2]).is_none());
        assert!(add_generated_column(b"INSERT INTO t (a) SELECT 1", "id", &[1]).is_none());
        // Executable comments are code: never rewritten around.
        assert!(
            add_generated_column(b"INSERT INTO t (a) VALUES (1 /*!, 2*/)", "id", &[1]).is_none()
        );
        // `--` without a following space is two minus signs, not a comment.
        let (out, slots) =
            add_generated_placeholders(b"INSERT INTO t (a, b) VALUES (1--?, ?)", "id", 1).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "INSERT INTO t (a, b, `id`) VALUES (1--?, ?, LAST_INSERT_ID(?))"
        );
        assert_eq!(slots, [2]);
    }
}
