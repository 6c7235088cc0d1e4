//! `rainbow-bridge compat`: the differential SQL compatibility suite (issue 10).
//!
//! Every case file runs four times from a freshly created database: directly against MariaDB and
//! through the proxy, each in the text protocol (COM_QUERY) and in the binary protocol
//! (COM_STMT_PREPARE + COM_STMT_EXECUTE). For every statement the two sides of one protocol are
//! compared: OK (affected rows, last insert id, warnings, info) or error (code, SQLSTATE,
//! message), the prepared statement's parameter and column counts, and every result set's
//! column definitions (name, original name, table, schema, type, flags, charset, length,
//! decimals) and rows. The case format is in `docs/compatibility.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Column, Conn, Opts, OptsBuilder, Row, Value};
use shard_rules::lex::{self, Quoting, TokenKind};

/// The two wire protocols a statement runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Text,
    Binary,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Text => "text",
            Protocol::Binary => "binary",
        }
    }
}

/// One statement of a case file and the directives written above it.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// 1-based line of the statement's first line in its file.
    pub line: usize,
    pub sql: String,
    /// The named connection it runs on (`-- compat: connection NAME`, sticky; `main` first).
    pub connection: String,
    /// Rows compared as a multiset.
    pub unordered: bool,
    /// Only column definitions compared (not rows: `SHOW PROCESSLIST`).
    pub columns_only: bool,
    /// Column definitions and the number of rows compared, not values (`NOW()`).
    pub row_count: bool,
    /// `None`: both protocols.
    pub only: Option<Protocol>,
    /// A difference expected and explained (reported, not failed).
    pub gap: Option<String>,
    /// `may-differ`: the gap depends on the setup (e.g. the privileges of the --direct account),
    /// so comparing equal is no news.
    pub may_differ: bool,
    /// Values for the `?` placeholders: bound in the binary protocol, inlined as literals in
    /// the text protocol.
    pub params: Option<Vec<Param>>,
}

/// A parameter value written in a `params` directive.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Int(i64),
    /// Numbers with a fraction or exponent are sent as their text, as drivers send decimals.
    Number(String),
    Str(Vec<u8>),
}

impl Param {
    fn value(&self) -> Value {
        match self {
            Param::Null => Value::NULL,
            Param::Int(i) => Value::Int(*i),
            Param::Number(s) => Value::Bytes(s.clone().into_bytes()),
            Param::Str(b) => Value::Bytes(b.clone()),
        }
    }

    fn literal(&self) -> String {
        match self {
            Param::Null => "NULL".into(),
            Param::Int(i) => i.to_string(),
            Param::Number(s) => s.clone(),
            Param::Str(b) => {
                if b.iter().all(|c| c.is_ascii_graphic() || *c == b' ')
                    || std::str::from_utf8(b).is_ok()
                {
                    let s = String::from_utf8_lossy(b);
                    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
                } else {
                    let mut s = String::from("X'");
                    for c in b {
                        let _ = write!(s, "{c:02X}");
                    }
                    s.push('\'');
                    s
                }
            }
        }
    }
}

/// A case file, parsed.
#[derive(Debug, Clone)]
pub struct Case {
    /// The file name without `.sql`.
    pub name: String,
    pub path: PathBuf,
    pub statements: Vec<Statement>,
}

/// Why a case file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
}

/// Parses one case file: statements end where a line ends with the delimiter (`;`, or what a
/// `DELIMITER` line set) outside strings and comments; comment lines between statements may
/// carry `-- compat:` directives for the next statement; `{{db}}` becomes `database`.
pub fn parse_case(path: &Path, text: &str, database: &str) -> Result<Case, CaseError> {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let err = |line: usize, message: String| CaseError::Syntax {
        path: path.display().to_string(),
        line,
        message,
    };
    let mut statements = Vec::new();
    let mut delimiter = ";".to_string();
    let mut connection = "main".to_string();
    let fresh = |connection: &str| Statement {
        line: 0,
        sql: String::new(),
        connection: connection.to_string(),
        unordered: false,
        columns_only: false,
        row_count: false,
        only: None,
        gap: None,
        may_differ: false,
        params: None,
    };
    let mut pending = fresh(&connection);
    let mut buf = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end();
        if buf.is_empty() {
            let t = line.trim_start();
            if t.is_empty() {
                continue;
            }
            if let Some(d) = t.strip_prefix("-- compat:") {
                let d = d.trim();
                let (word, rest) = d.split_once(char::is_whitespace).unwrap_or((d, ""));
                let rest = rest.trim();
                match word {
                    "unordered" => pending.unordered = true,
                    "columns-only" => pending.columns_only = true,
                    "row-count" => pending.row_count = true,
                    "text-only" => pending.only = Some(Protocol::Text),
                    "binary-only" => pending.only = Some(Protocol::Binary),
                    "gap" | "may-differ" if !rest.is_empty() => {
                        pending.gap = Some(rest.to_string());
                        pending.may_differ = word == "may-differ";
                    }
                    "gap" | "may-differ" => {
                        return Err(err(n, format!("`{word}` needs a reason")))
                    }
                    "connection" if !rest.is_empty() && !rest.contains(' ') => {
                        connection = rest.to_string();
                        pending.connection = connection.clone();
                    }
                    "connection" => return Err(err(n, "`connection` needs one name".into())),
                    "params" => {
                        pending.params = Some(parse_params(rest).map_err(|m| err(n, m))?);
                    }
                    other => {
                        return Err(err(
                            n,
                            format!(
                                "unknown directive `{other}` (unordered, row-count, \
                                 columns-only, text-only, binary-only, gap REASON, may-differ REASON, connection \
                                 NAME, params \
                                 VALUES)"
                            ),
                        ))
                    }
                }
                continue;
            }
            if t.starts_with("--") || t.starts_with('#') {
                continue;
            }
            if let Some(d) = t
                .strip_prefix("DELIMITER ")
                .or_else(|| t.strip_prefix("delimiter "))
            {
                let d = d.trim();
                if d.is_empty() {
                    return Err(err(n, "DELIMITER needs a delimiter".into()));
                }
                delimiter = d.to_string();
                continue;
            }
            start = n;
        }
        if !buf.is_empty() {
            buf.push('\n');
        }
        buf.push_str(line);
        if let Some(body) = buf.strip_suffix(delimiter.as_str()) {
            // Complete only if the delimiter is not inside a string or a comment.
            let body_ok = lex::tokens(body.as_bytes(), Quoting::default()).is_ok();
            let complete = body_ok
                && (delimiter != ";"
                    || matches!(lex::tokens(buf.as_bytes(), Quoting::default()),
                        Ok(t) if t.last().is_some_and(|t| t.kind == TokenKind::Punct(b';'))));
            if complete {
                let sql = body.trim().replace("{{db}}", database);
                let mut s = std::mem::replace(&mut pending, fresh(&connection));
                s.line = start;
                s.sql = sql;
                if let Some(p) = &s.params {
                    let holes = placeholders(&s.sql);
                    if holes.len() != p.len() {
                        return Err(err(
                            start,
                            format!("{} params for {} placeholders", p.len(), holes.len()),
                        ));
                    }
                }
                statements.push(s);
                buf.clear();
            }
        }
    }
    if !buf.trim().is_empty() {
        return Err(err(
            start,
            format!("statement not ended by `{delimiter}` at the end of a line"),
        ));
    }
    Ok(Case {
        name,
        path: path.to_path_buf(),
        statements,
    })
}

/// `1, -2.5, 'it''s', NULL, X'00FF'`.
fn parse_params(s: &str) -> Result<Vec<Param>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        if b[i] == b'\'' {
            let mut v = Vec::new();
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err("unterminated string in params".into()),
                    Some(b'\'') if b.get(i + 1) == Some(&b'\'') => {
                        v.push(b'\'');
                        i += 2;
                    }
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < b.len() => {
                        v.push(match b[i + 1] {
                            b'n' => b'\n',
                            b't' => b'\t',
                            b'0' => 0,
                            c => c,
                        });
                        i += 2;
                    }
                    Some(c) => {
                        v.push(*c);
                        i += 1;
                    }
                }
            }
            out.push(Param::Str(v));
        } else {
            let end = s[i..].find(',').map_or(s.len(), |e| i + e);
            let word = s[i..end].trim();
            i = end;
            let p = if word.eq_ignore_ascii_case("null") {
                Param::Null
            } else if let Some(hex) = word
                .strip_prefix("X'")
                .or_else(|| word.strip_prefix("x'"))
                .and_then(|h| h.strip_suffix('\''))
            {
                if hex.len() % 2 != 0 {
                    return Err(format!("odd hex digits in `{word}`"));
                }
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|k| u8::from_str_radix(&hex[k..k + 2], 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| format!("bad hex `{word}`"))?;
                Param::Str(bytes)
            } else if let Ok(n) = word.parse::<i64>() {
                Param::Int(n)
            } else if word.parse::<f64>().is_ok() {
                Param::Number(word.to_string())
            } else {
                return Err(format!(
                    "param `{word}` is not a number, 'string', X'hex' or NULL"
                ));
            };
            out.push(p);
        }
        skip_ws(&mut i);
        match b.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(_) => return Err(format!("expected `,` in params at `{}`", &s[i..])),
        }
    }
    Ok(out)
}

/// Byte offsets of the `?` placeholders of a statement.
fn placeholders(sql: &str) -> Vec<usize> {
    lex::tokens(sql.as_bytes(), Quoting::default())
        .map(|t| {
            t.iter()
                .filter(|t| t.kind == TokenKind::Placeholder)
                .map(|t| t.span.start)
                .collect()
        })
        .unwrap_or_default()
}

/// The statement's text for the text protocol: placeholders replaced by literals.
fn inlined(s: &Statement) -> String {
    let Some(params) = &s.params else {
        return s.sql.clone();
    };
    let mut out = String::with_capacity(s.sql.len() + 16);
    let mut last = 0;
    for (at, p) in placeholders(&s.sql).into_iter().zip(params) {
        out.push_str(&s.sql[last..at]);
        out.push_str(&p.literal());
        last = at + 1;
    }
    out.push_str(&s.sql[last..]);
    out
}

/// Reads every `*.sql` file of the given files and directories (directories not recursed), in
/// name order.
pub fn load_cases(paths: &[PathBuf], database: &str) -> Result<Vec<Case>, CaseError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|e| CaseError::Io(p.display().to_string(), e))?;
            let mut v: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sql"))
                .collect();
            v.sort();
            files.extend(v);
        } else {
            files.push(p.clone());
        }
    }
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f)
                .map_err(|e| CaseError::Io(f.display().to_string(), e))?;
            parse_case(f, &text, database)
        })
        .collect()
}

/// One result set (or OK) of a statement, as compared.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok {
        affected_rows: u64,
        last_insert_id: Option<u64>,
        warnings: u16,
        info: String,
    },
    Rows {
        columns: Vec<ColumnDef>,
        rows: Vec<Vec<Value>>,
        /// The warning count of the EOF/OK that ends the last result set (known only for the
        /// last one: reading the next set's header replaces it).
        warnings: Option<u16>,
    },
    Error {
        code: u16,
        state: String,
        message: String,
    },
    /// Not a server error: the connection broke, the statement timed out, a packet was bad.
    Failure(String),
}

/// What is compared of a column definition.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    pub name: String,
    pub org_name: String,
    pub table: String,
    pub org_table: String,
    pub schema: String,
    pub column_type: String,
    pub flags: u16,
    pub charset: u16,
    pub length: u32,
    pub decimals: u8,
}

impl ColumnDef {
    fn of(c: &Column) -> ColumnDef {
        ColumnDef {
            name: c.name_str().into_owned(),
            org_name: c.org_name_str().into_owned(),
            table: c.table_str().into_owned(),
            org_table: c.org_table_str().into_owned(),
            schema: c.schema_str().into_owned(),
            column_type: format!("{:?}", c.column_type()),
            flags: c.flags().bits(),
            charset: c.character_set(),
            length: c.column_length(),
            decimals: c.decimals(),
        }
    }
}

/// Everything one side saw for one statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Parameter and column counts of the prepared statement (binary protocol only).
    pub prepared: Option<(u16, usize)>,
    pub outcomes: Vec<Outcome>,
}

/// Connection targets and knobs of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// MariaDB directly (the oracle).
    pub direct: Opts,
    /// The proxy.
    pub proxy: Opts,
    /// Where the case database is dropped and created before each run of a case (an account
    /// on the server behind the proxy); `None`: the case database is not reset.
    pub reset: Option<Opts>,
    /// The database the cases run in (`{{db}}` in case files).
    pub database: String,
    pub protocols: Vec<Protocol>,
    /// Per statement.
    pub timeout: Duration,
}

/// How one statement compared in one protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Equal,
    /// Differs, and the case says why (`gap`).
    KnownGap(String),
    /// Differs, unexplained: a failure.
    Differs {
        direct: Observed,
        proxy: Observed,
    },
}

#[derive(Debug, Clone)]
pub struct StatementResult {
    pub line: usize,
    pub sql: String,
    pub protocol: Protocol,
    pub verdict: Verdict,
    /// A `gap` statement that now compares equal.
    pub gap_closed: bool,
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub results: Vec<StatementResult>,
    /// A run that could not start (connection refused, reset failed).
    pub setup_error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub cases: Vec<CaseResult>,
}

/// Counts per protocol: (equal, known gaps, differ).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub equal: usize,
    pub gaps: usize,
    pub differ: usize,
}

impl Report {
    pub fn counts(&self, p: Protocol) -> Counts {
        let mut c = Counts::default();
        for r in self.cases.iter().flat_map(|c| &c.results) {
            if r.protocol != p {
                continue;
            }
            match r.verdict {
                Verdict::Equal => c.equal += 1,
                Verdict::KnownGap(_) => c.gaps += 1,
                Verdict::Differs { .. } => c.differ += 1,
            }
        }
        c
    }

    /// Cases whose every statement compared equal or as a known gap, per protocol.
    pub fn cases_passed(&self, p: Protocol) -> usize {
        self.cases
            .iter()
            .filter(|c| {
                c.setup_error.is_none()
                    && c.results
                        .iter()
                        .filter(|r| r.protocol == p)
                        .all(|r| !matches!(r.verdict, Verdict::Differs { .. }))
            })
            .count()
    }

    pub fn failed(&self) -> bool {
        self.cases.iter().any(|c| {
            c.setup_error.is_some()
                || c.results
                    .iter()
                    .any(|r| matches!(r.verdict, Verdict::Differs { .. }))
        })
    }

    /// The human report: one line per case, every difference in full, every known gap, a
    /// summary.
    pub fn render(&self, protocols: &[Protocol]) -> String {
        let mut s = String::new();
        for c in &self.cases {
            let _ = write!(s, "{:<40}", c.name);
            if let Some(e) = &c.setup_error {
                let _ = writeln!(s, " SETUP FAILED: {e}");
                continue;
            }
            for &p in protocols {
                let rs: Vec<&StatementResult> =
                    c.results.iter().filter(|r| r.protocol == p).collect();
                let ok = rs
                    .iter()
                    .filter(|r| !matches!(r.verdict, Verdict::Differs { .. }))
                    .count();
                let gaps = rs
                    .iter()
                    .filter(|r| matches!(r.verdict, Verdict::KnownGap(_)))
                    .count();
                let _ = write!(s, "  {} {ok}/{}", p.name(), rs.len());
                if gaps > 0 {
                    let _ = write!(s, " ({gaps} gap{})", if gaps == 1 { "" } else { "s" });
                }
            }
            s.push('\n');
        }
        for c in &self.cases {
            for r in &c.results {
                match &r.verdict {
                    Verdict::Differs { direct, proxy } => {
                        let _ = writeln!(
                            s,
                            "\nDIFFERS {}:{} ({}): {}\n  direct: {}\n  proxy:  {}",
                            c.name,
                            r.line,
                            r.protocol.name(),
                            one_line(&r.sql),
                            describe(direct),
                            describe(proxy)
                        );
                    }
                    Verdict::KnownGap(why) => {
                        let _ = writeln!(
                            s,
                            "known gap {}:{} ({}): {} — {why}",
                            c.name,
                            r.line,
                            r.protocol.name(),
                            one_line(&r.sql)
                        );
                    }
                    Verdict::Equal if r.gap_closed => {
                        let _ = writeln!(
                            s,
                            "gap closed {}:{} ({}): {} now compares equal; remove its `gap` \
                             directive",
                            c.name,
                            r.line,
                            r.protocol.name(),
                            one_line(&r.sql)
                        );
                    }
                    Verdict::Equal => {}
                }
            }
        }
        let _ = write!(s, "\ncompat: {} cases", self.cases.len());
        for &p in protocols {
            let n = self.counts(p);
            let _ = write!(
                s,
                "; {}: {}/{} cases, {} statements equal, {} known gaps, {} differ",
                p.name(),
                self.cases_passed(p),
                self.cases.len(),
                n.equal,
                n.gaps,
                n.differ
            );
        }
        let _ = writeln!(s, " — {}", if self.failed() { "FAILED" } else { "passed" });
        s
    }

    /// The machine report.
    pub fn json(&self, protocols: &[Protocol]) -> String {
        let mut per = serde_json::Map::new();
        for &p in protocols {
            let n = self.counts(p);
            per.insert(
                p.name().into(),
                serde_json::json!({
                    "cases_passed": self.cases_passed(p),
                    "equal": n.equal, "known_gaps": n.gaps, "differ": n.differ,
                }),
            );
        }
        let cases: Vec<serde_json::Value> = self
            .cases
            .iter()
            .map(|c| {
                let items: Vec<serde_json::Value> = c
                    .results
                    .iter()
                    .filter(|r| !matches!(r.verdict, Verdict::Equal) || r.gap_closed)
                    .map(|r| {
                        let mut o = serde_json::json!({
                            "line": r.line, "protocol": r.protocol.name(), "sql": r.sql,
                        });
                        match &r.verdict {
                            Verdict::Differs { direct, proxy } => {
                                o["verdict"] = "differs".into();
                                o["direct"] = describe(direct).into();
                                o["proxy"] = describe(proxy).into();
                            }
                            Verdict::KnownGap(why) => {
                                o["verdict"] = "known_gap".into();
                                o["reason"] = why.clone().into();
                            }
                            Verdict::Equal => o["verdict"] = "gap_closed".into(),
                        }
                        o
                    })
                    .collect();
                serde_json::json!({
                    "name": c.name,
                    "statements": c.results.len(),
                    "setup_error": c.setup_error,
                    "not_equal": items,
                })
            })
            .collect();
        serde_json::to_string_pretty(&serde_json::json!({
            "passed": !self.failed(),
            "protocols": per,
            "cases": cases,
        }))
        .unwrap_or_default()
    }
}

fn one_line(sql: &str) -> String {
    let s: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 120 {
        let cut: String = s.chars().take(117).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// A short text of what a side saw, for reports.
pub fn describe(o: &Observed) -> String {
    let mut parts = Vec::new();
    if let Some((p, c)) = o.prepared {
        parts.push(format!("prepared ({p} params, {c} columns)"));
    }
    for out in &o.outcomes {
        parts.push(match out {
            Outcome::Ok {
                affected_rows,
                last_insert_id,
                warnings,
                info,
            } => format!(
                "OK affected={affected_rows} last_insert_id={last_insert_id:?} \
                 warnings={warnings} info={info:?}"
            ),
            Outcome::Error {
                code,
                state,
                message,
            } => format!("ERROR {code} ({state}): {message}"),
            Outcome::Failure(f) => format!("FAILURE {f}"),
            Outcome::Rows {
                columns,
                rows,
                warnings,
            } => {
                let cols: Vec<String> = columns
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {} flags={:#x} cs={} len={} dec={} org={}.{}.{}",
                            c.name,
                            c.column_type,
                            c.flags,
                            c.charset,
                            c.length,
                            c.decimals,
                            c.schema,
                            c.org_table,
                            c.org_name
                        )
                    })
                    .collect();
                let shown: Vec<String> = rows.iter().take(3).map(|r| row_text(r)).collect();
                format!(
                    "{} rows{} [{}] {}{}",
                    rows.len(),
                    warnings.map_or(String::new(), |w| format!(" warnings={w}")),
                    cols.join(", "),
                    shown.join(" "),
                    if rows.len() > 3 { " ..." } else { "" }
                )
            }
        });
    }
    parts.join("; ")
}

fn row_text(r: &[Value]) -> String {
    let v: Vec<String> = r.iter().map(|v| v.as_sql(false)).collect();
    format!("({})", v.join(", "))
}

/// The session state of one side of one run: named connections, opened on first use.
struct Side {
    opts: Opts,
    conns: BTreeMap<String, Conn>,
}

impl Side {
    async fn conn(&mut self, name: &str, timeout: Duration) -> Result<&mut Conn, String> {
        if !self.conns.contains_key(name) {
            let c = tokio::time::timeout(timeout, Conn::new(self.opts.clone()))
                .await
                .map_err(|_| format!("connecting timed out after {timeout:?}"))?
                .map_err(|e| format!("cannot connect: {e}"))?;
            self.conns.insert(name.to_string(), c);
        }
        Ok(self.conns.get_mut(name).expect("inserted above"))
    }

    async fn close(self) {
        for (_, c) in self.conns {
            let _ = c.disconnect().await;
        }
    }
}

fn outcome_of_error(e: mysql_async::Error) -> Outcome {
    match e {
        mysql_async::Error::Server(s) => Outcome::Error {
            code: s.code,
            state: s.state,
            message: s.message,
        },
        other => Outcome::Failure(other.to_string()),
    }
}

/// Reads every result set of a query result.
async fn read_all<P: mysql_async::prelude::Protocol>(
    mut r: mysql_async::QueryResult<'_, '_, P>,
    out: &mut Vec<Outcome>,
) {
    loop {
        let columns = r.columns();
        match columns {
            Some(cols) if !cols.is_empty() => {
                let defs: Vec<ColumnDef> = cols.iter().map(ColumnDef::of).collect();
                match r.collect::<Row>().await {
                    Ok(rows) => out.push(Outcome::Rows {
                        columns: defs,
                        rows: rows.into_iter().map(Row::unwrap).collect(),
                        warnings: r.is_empty().then(|| r.warnings()),
                    }),
                    Err(e) => {
                        out.push(outcome_of_error(e));
                        return;
                    }
                }
            }
            _ => {
                out.push(Outcome::Ok {
                    affected_rows: r.affected_rows(),
                    last_insert_id: r.last_insert_id(),
                    warnings: r.warnings(),
                    info: r.info().into_owned(),
                });
                if let Err(e) = r.collect::<Row>().await {
                    out.push(outcome_of_error(e));
                    return;
                }
            }
        }
        if r.is_empty() {
            return;
        }
    }
}

async fn run_one(conn: &mut Conn, s: &Statement, p: Protocol) -> Observed {
    let mut outcomes = Vec::new();
    match p {
        Protocol::Text => match conn.query_iter(inlined(s)).await {
            Ok(r) => read_all(r, &mut outcomes).await,
            Err(e) => outcomes.push(outcome_of_error(e)),
        },
        Protocol::Binary => {
            let stmt = match conn.prep(s.sql.as_str()).await {
                Ok(st) => st,
                Err(e) => {
                    return Observed {
                        prepared: None,
                        outcomes: vec![outcome_of_error(e)],
                    }
                }
            };
            let prepared = Some((stmt.num_params(), stmt.columns().len()));
            let params: Vec<Value> = s
                .params
                .as_ref()
                .map(|v| v.iter().map(Param::value).collect())
                .unwrap_or_default();
            let params = if params.is_empty() {
                mysql_async::Params::Empty
            } else {
                mysql_async::Params::Positional(params)
            };
            match conn.exec_iter(&stmt, params).await {
                Ok(r) => read_all(r, &mut outcomes).await,
                Err(e) => outcomes.push(outcome_of_error(e)),
            }
            // mysql_async reads what is left of the response when the statement closes: a
            // server error there (a procedure failing after its first result set) is the
            // statement's own.
            if let Err(e) = conn.close(stmt).await {
                outcomes.push(match e {
                    mysql_async::Error::Server(_) => outcome_of_error(e),
                    other => Outcome::Failure(format!("closing the statement: {other}")),
                });
            }
            return Observed { prepared, outcomes };
        }
    }
    Observed {
        prepared: None,
        outcomes,
    }
}

/// Runs a statement on a side, bounded by the timeout; a broken or timed-out connection is
/// dropped so the next statement opens a new one.
async fn run_on(side: &mut Side, s: &Statement, p: Protocol, timeout: Duration) -> Observed {
    let conn = match side.conn(&s.connection, timeout).await {
        Ok(c) => c,
        Err(e) => {
            return Observed {
                prepared: None,
                outcomes: vec![Outcome::Failure(e)],
            }
        }
    };
    match tokio::time::timeout(timeout, run_one(conn, s, p)).await {
        Ok(o) => {
            if o.outcomes.iter().any(|x| matches!(x, Outcome::Failure(_))) {
                side.conns.remove(&s.connection);
            }
            o
        }
        Err(_) => {
            side.conns.remove(&s.connection);
            Observed {
                prepared: None,
                outcomes: vec![Outcome::Failure(format!("no answer within {timeout:?}"))],
            }
        }
    }
}

/// What is compared, after the statement's directives.
fn normalised(mut o: Observed, s: &Statement) -> Observed {
    for out in &mut o.outcomes {
        if let Outcome::Rows { rows, .. } = out {
            if s.columns_only {
                rows.clear();
            } else if s.row_count {
                for r in rows.iter_mut() {
                    for v in r.iter_mut() {
                        *v = Value::NULL;
                    }
                }
            } else if s.unordered {
                rows.sort_by_key(|r| row_text(r));
            }
        }
    }
    o
}

async fn reset(opts: &Opts, database: &str) -> Result<(), String> {
    let mut c = Conn::new(opts.clone())
        .await
        .map_err(|e| format!("cannot connect to reset `{database}`: {e}"))?;
    let q = database.replace('`', "``");
    c.query_drop(format!("DROP DATABASE IF EXISTS `{q}`"))
        .await
        .map_err(|e| format!("DROP DATABASE `{database}`: {e}"))?;
    c.query_drop(format!("CREATE DATABASE `{q}`"))
        .await
        .map_err(|e| format!("CREATE DATABASE `{database}`: {e}"))?;
    let _ = c.disconnect().await;
    Ok(())
}

fn with_db(opts: &Opts, db: &str) -> Opts {
    OptsBuilder::from_opts(opts.clone())
        .db_name(Some(db))
        .stmt_cache_size(0)
        .prefer_socket(false)
        .into()
}

/// Runs one side of one protocol of a case from a fresh database.
async fn run_side(
    case: &Case,
    opts: &Opts,
    o: &RunOptions,
    p: Protocol,
) -> Result<Vec<Observed>, String> {
    if let Some(r) = &o.reset {
        reset(r, &o.database).await?;
    }
    let mut side = Side {
        opts: with_db(opts, &o.database),
        conns: BTreeMap::new(),
    };
    let mut out = Vec::new();
    for s in &case.statements {
        if s.only.is_some_and(|only| only != p) {
            continue;
        }
        out.push(normalised(run_on(&mut side, s, p, o.timeout).await, s));
    }
    side.close().await;
    Ok(out)
}

/// Runs every case in every protocol, direct then through the proxy, and compares.
pub async fn run(cases: &[Case], o: &RunOptions) -> Report {
    let mut report = Report::default();
    for case in cases {
        let mut res = CaseResult {
            name: case.name.clone(),
            results: Vec::new(),
            setup_error: None,
        };
        for &p in &o.protocols {
            let direct = match run_side(case, &o.direct, o, p).await {
                Ok(d) => d,
                Err(e) => {
                    res.setup_error = Some(format!("direct, {}: {e}", p.name()));
                    break;
                }
            };
            let proxy = match run_side(case, &o.proxy, o, p).await {
                Ok(d) => d,
                Err(e) => {
                    res.setup_error = Some(format!("proxy, {}: {e}", p.name()));
                    break;
                }
            };
            let stmts = case
                .statements
                .iter()
                .filter(|s| s.only.is_none_or(|x| x == p));
            for ((s, d), x) in stmts.zip(direct).zip(proxy) {
                // A hang or broken connection on both sides is no agreement.
                let failure =
                    |o: &Observed| o.outcomes.iter().any(|x| matches!(x, Outcome::Failure(_)));
                let equal = d == x && !failure(&d);
                let verdict = match (&s.gap, equal) {
                    (_, true) => Verdict::Equal,
                    (Some(why), false) => Verdict::KnownGap(why.clone()),
                    (None, false) => Verdict::Differs {
                        direct: d,
                        proxy: x,
                    },
                };
                res.results.push(StatementResult {
                    line: s.line,
                    sql: s.sql.clone(),
                    protocol: p,
                    verdict,
                    gap_closed: equal && s.gap.is_some() && !s.may_differ,
                });
            }
        }
        report.cases.push(res);
    }
    if let Some(r) = &o.reset {
        // Leave nothing behind but an empty database.
        let _ = reset(r, &o.database).await;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(text: &str) -> Result<Case, CaseError> {
        parse_case(Path::new("010-x.sql"), text, "cdb")
    }

    #[test]
    fn statements_end_at_a_delimiter_ending_a_line_outside_strings_and_comments() {
        let c = case(
            "-- a comment\nSELECT 1;\nSELECT 'a;\nb';\nSELECT 2 /* ; */ ;\n\
             SELECT 3; SELECT 4;\n# hash comment\nSELECT\n  5\n;\n",
        )
        .unwrap();
        let sqls: Vec<&str> = c.statements.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(
            sqls,
            [
                "SELECT 1",
                "SELECT 'a;\nb'",
                "SELECT 2 /* ; */",
                "SELECT 3; SELECT 4",
                "SELECT\n  5"
            ]
        );
        assert_eq!(c.statements[1].line, 3);
        assert_eq!(c.statements[4].line, 8);
        assert_eq!(c.name, "010-x");
    }

    #[test]
    fn delimiter_lines_allow_bodies_with_semicolons() {
        let c = case(
            "DELIMITER //\nCREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END//\nDELIMITER ;\nCALL p();\n",
        )
        .unwrap();
        assert_eq!(c.statements.len(), 2);
        assert_eq!(
            c.statements[0].sql,
            "CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END"
        );
        assert_eq!(c.statements[1].sql, "CALL p()");
    }

    #[test]
    fn directives_apply_to_the_next_statement_and_connection_sticks() {
        let c = case(
            "-- compat: unordered\n-- compat: gap the proxy answers this itself\nSELECT 1;\n\
             -- compat: connection b\nSELECT 2;\n-- compat: columns-only\n-- compat: text-only\n\
             SELECT NOW();\n-- compat: params 7, 'it''s', NULL, X'00FF', 2.50\n\
             SELECT ?, ?, ?, ?, ?;\nSELECT {{db}};\n",
        )
        .unwrap();
        let s = &c.statements;
        assert!(s[0].unordered && s[0].gap.as_deref() == Some("the proxy answers this itself"));
        assert_eq!(s[0].connection, "main");
        assert!(!s[1].unordered && s[1].gap.is_none());
        assert_eq!(s[1].connection, "b");
        assert_eq!(s[2].connection, "b");
        assert!(s[2].columns_only && s[2].only == Some(Protocol::Text));
        assert_eq!(
            s[3].params.as_ref().unwrap(),
            &[
                Param::Int(7),
                Param::Str(b"it's".to_vec()),
                Param::Null,
                Param::Str(vec![0, 255]),
                Param::Number("2.50".into())
            ]
        );
        assert_eq!(inlined(&s[3]), "SELECT 7, 'it''s', NULL, X'00FF', 2.50");
        assert_eq!(s[4].sql, "SELECT cdb");
    }

    #[test]
    fn bad_case_files_name_the_line() {
        let e = case("SELECT 1;\n-- compat: sideways\nSELECT 2;\n").unwrap_err();
        assert_eq!(
            e.to_string().split(" (").next().unwrap(),
            "010-x.sql:2: unknown directive `sideways`"
        );
        let e = case("-- compat: params 1\nSELECT ?, ?;\n").unwrap_err();
        assert_eq!(e.to_string(), "010-x.sql:2: 1 params for 2 placeholders");
        let e = case("SELECT 1;\nSELECT 'open;\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "010-x.sql:2: statement not ended by `;` at the end of a line"
        );
    }

    fn rows(columns: usize, values: &[&[i64]]) -> Observed {
        let def = ColumnDef {
            name: "c".into(),
            org_name: String::new(),
            table: String::new(),
            org_table: String::new(),
            schema: String::new(),
            column_type: "MYSQL_TYPE_LONG".into(),
            flags: 0,
            charset: 63,
            length: 11,
            decimals: 0,
        };
        Observed {
            prepared: None,
            outcomes: vec![Outcome::Rows {
                columns: vec![def; columns],
                rows: values
                    .iter()
                    .map(|r| r.iter().map(|v| Value::Int(*v)).collect())
                    .collect(),
                warnings: Some(0),
            }],
        }
    }

    #[test]
    fn directives_decide_what_of_a_result_is_compared() {
        let c = case(
            "SELECT 1;\n-- compat: unordered\nSELECT 1;\n-- compat: row-count\nSELECT 1;\n\
             -- compat: columns-only\nSELECT 1;\n",
        )
        .unwrap();
        let s = &c.statements;
        let a = rows(1, &[&[1], &[2]]);
        let b = rows(1, &[&[2], &[1]]);
        let three = rows(1, &[&[7], &[8], &[9]]);
        // Plain: order and values count.
        assert_ne!(normalised(a.clone(), &s[0]), normalised(b.clone(), &s[0]));
        // unordered: the same multiset is equal, another is not.
        assert_eq!(normalised(a.clone(), &s[1]), normalised(b.clone(), &s[1]));
        assert_ne!(
            normalised(a.clone(), &s[1]),
            normalised(rows(1, &[&[1], &[3]]), &s[1])
        );
        // row-count: values ignored, the number of rows still compared.
        assert_eq!(
            normalised(a.clone(), &s[2]),
            normalised(rows(1, &[&[5], &[6]]), &s[2])
        );
        assert_ne!(
            normalised(a.clone(), &s[2]),
            normalised(three.clone(), &s[2])
        );
        // columns-only: rows ignored, column definitions still compared.
        assert_eq!(normalised(a.clone(), &s[3]), normalised(three, &s[3]));
        assert_ne!(normalised(a, &s[3]), normalised(rows(2, &[&[1, 1]]), &s[3]));
    }

    #[test]
    fn may_differ_is_a_gap_that_reports_nothing_when_equal() {
        let c = case("-- compat: may-differ depends on the account\nUSE x;\n").unwrap();
        assert!(c.statements[0].may_differ);
        assert_eq!(
            c.statements[0].gap.as_deref(),
            Some("depends on the account")
        );
        let e = case("-- compat: may-differ\nUSE x;\n").unwrap_err();
        assert_eq!(e.to_string(), "010-x.sql:1: `may-differ` needs a reason");
    }

    #[test]
    fn a_report_counts_per_protocol_and_fails_on_a_difference_only() {
        let ok = |p| StatementResult {
            line: 1,
            sql: "SELECT 1".into(),
            protocol: p,
            verdict: Verdict::Equal,
            gap_closed: false,
        };
        let mut r = Report {
            cases: vec![CaseResult {
                name: "001-a".into(),
                results: vec![
                    ok(Protocol::Text),
                    ok(Protocol::Binary),
                    StatementResult {
                        verdict: Verdict::KnownGap("why".into()),
                        ..ok(Protocol::Binary)
                    },
                ],
                setup_error: None,
            }],
        };
        assert!(!r.failed());
        assert_eq!(
            r.counts(Protocol::Binary),
            Counts {
                equal: 1,
                gaps: 1,
                differ: 0
            }
        );
        let both = [Protocol::Text, Protocol::Binary];
        assert!(r.render(&both).contains("binary 2/2 (1 gap)"));
        let o = Observed {
            prepared: None,
            outcomes: vec![Outcome::Error {
                code: 1146,
                state: "42S02".into(),
                message: "Table 'x' doesn't exist".into(),
            }],
        };
        r.cases[0].results.push(StatementResult {
            verdict: Verdict::Differs {
                direct: o.clone(),
                proxy: Observed {
                    prepared: None,
                    outcomes: vec![],
                },
            },
            ..ok(Protocol::Text)
        });
        assert!(r.failed());
        assert_eq!(r.cases_passed(Protocol::Text), 0);
        assert_eq!(r.cases_passed(Protocol::Binary), 1);
        let text = r.render(&both);
        assert!(text.contains("DIFFERS 001-a:1 (text): SELECT 1"), "{text}");
        assert!(text.contains("ERROR 1146 (42S02)"), "{text}");
        assert!(text.ends_with("— FAILED\n"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&r.json(&both)).unwrap();
        assert_eq!(json["passed"], false);
        assert_eq!(json["protocols"]["text"]["differ"], 1);
    }
}
