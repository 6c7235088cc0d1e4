//! What a statement does to session state, found with a small byte lexer (no SQL parser): the
//! statement boundaries of multi-statement text, `USE`, `SET` assignments to session
//! variables, and the constructs that tie a session to one backend connection.
//!
//! Quoted strings, quoted identifiers and comments are skipped exactly; the contents of MySQL's
//! executable comments (`/*! … */`, `/*M! … */`) are lexed as code, as the server runs them.
//! Works on bytes, so SQL in any character set (or invalid UTF-8) is handled.

/// Reasons a session keeps its backend connection between statements.
pub mod pin {
    pub const USER_VARIABLE: u8 = 1;
    pub const TEMPORARY_TABLE: u8 = 1 << 1;
    pub const TABLE_LOCK: u8 = 1 << 2;
    pub const NAMED_LOCK: u8 = 1 << 3;
    pub const SQL_PREPARE: u8 = 1 << 4;
    pub const NEXT_TRANSACTION: u8 = 1 << 5;
    pub const CURSOR: u8 = 1 << 6;
    pub const OTHER_STATE: u8 = 1 << 7;

    /// Human-readable names of the reasons set in `pins`.
    pub fn describe(pins: u8) -> String {
        const NAMES: [&str; 8] = [
            "user variables",
            "temporary tables",
            "LOCK TABLES",
            "named locks (GET_LOCK)",
            "SQL-level PREPARE",
            "SET TRANSACTION for the next transaction",
            "an open cursor",
            "session state that cannot be replayed",
        ];
        let v: Vec<&str> = (0..8)
            .filter(|i| pins & (1 << i) != 0)
            .map(|i| NAMES[i])
            .collect();
        v.join(", ")
    }
}

/// What the proxy must do itself for a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Nothing but whitespace and comments.
    Empty,
    /// `USE db`: the proxy resolves the logical database.
    Use(String),
    /// `SET PASSWORD`: would change the proxy's backend account.
    SetPassword,
    /// `KILL [HARD|SOFT] [CONNECTION|QUERY] id`: connection ids are the proxy's, not the
    /// backend's. `target` is `None` for the forms the proxy does not support (`KILL USER`,
    /// `KILL QUERY ID`) or an id that is not a number.
    Kill { query: bool, target: Option<u32> },
    /// Everything else: forwarded.
    Other,
}

/// The analysis of one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub kind: Kind,
    /// Union of [`pin`] reasons this statement creates.
    pub pins: u8,
    /// Session variables this statement may change (lowercase names), read back after it runs.
    pub sets_vars: Vec<String>,
    /// Calls `LAST_INSERT_ID()`: the backend must agree with the session's last insert id.
    pub reads_last_insert_id: bool,
    /// Calls `LAST_INSERT_ID(expr)`, which sets the value: read it back afterwards.
    pub sets_last_insert_id: bool,
    /// Reads the previous statement's diagnostics (SHOW WARNINGS, FOUND_ROWS(), ROW_COUNT()…).
    pub reads_previous: bool,
    /// `SQL_CALC_FOUND_ROWS`: keep the connection for a following `FOUND_ROWS()`.
    pub calc_found_rows: bool,
}

impl Statement {
    fn new() -> Self {
        Statement {
            kind: Kind::Empty,
            pins: 0,
            sets_vars: Vec::new(),
            reads_last_insert_id: false,
            sets_last_insert_id: false,
            reads_previous: false,
            calc_found_rows: false,
        }
    }

    /// A statement with no effect on session state (pings, field lists, USE, text the server
    /// will refuse whole).
    pub fn passive() -> Self {
        Statement {
            kind: Kind::Other,
            ..Statement::new()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a [u8]),
    /// `'…'` or `"…"`, without the quotes (escapes left as written).
    Str(&'a [u8]),
    /// `` `…` `` without the backquotes.
    Quoted(&'a [u8]),
    /// `@name` or `@'name'`.
    UserVar,
    /// `@@name`, `@@session.name`… (the text after `@@`).
    SysVar(&'a [u8]),
    Semi,
    Punct(u8),
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    /// `\\` escapes the next character in strings (false under sql_mode NO_BACKSLASH_ESCAPES).
    backslash: bool,
    /// `"` quotes identifiers, not strings (sql_mode ANSI_QUOTES).
    ansi_quotes: bool,
    /// Inside an executable comment `/*! … */`: its `*/` is skipped like whitespace.
    exec_comment: bool,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

impl<'a> Lexer<'a> {
    fn new(s: &'a [u8], syntax: Syntax) -> Self {
        Lexer {
            s,
            i: 0,
            backslash: syntax.backslash_escapes,
            ansi_quotes: syntax.ansi_quotes,
            exec_comment: false,
        }
    }

    fn skip_trivia(&mut self) {
        let s = self.s;
        while self.i < s.len() {
            let b = s[self.i];
            let next = s.get(self.i + 1).copied();
            if b.is_ascii_whitespace() {
                self.i += 1;
            } else if b == b'#'
                || (b == b'-' && next == Some(b'-') && s.get(self.i + 2).is_none_or(|c| *c <= b' '))
            {
                while self.i < s.len() && s[self.i] != b'\n' {
                    self.i += 1;
                }
            } else if b == b'*' && next == Some(b'/') && self.exec_comment {
                self.exec_comment = false;
                self.i += 2;
            } else if b == b'/' && next == Some(b'*') {
                let exec = match s.get(self.i + 2) {
                    Some(b'!') => Some(3),
                    Some(b'M') if s.get(self.i + 3) == Some(&b'!') => Some(4),
                    _ => None,
                };
                match exec {
                    Some(skip) if !self.exec_comment => {
                        self.i += skip;
                        while self.i < s.len() && s[self.i].is_ascii_digit() {
                            self.i += 1;
                        }
                        self.exec_comment = true;
                    }
                    _ => {
                        self.i += 2;
                        while self.i < s.len()
                            && !(s[self.i] == b'*' && s.get(self.i + 1) == Some(&b'/'))
                        {
                            self.i += 1;
                        }
                        self.i = (self.i + 2).min(s.len());
                    }
                }
            } else {
                return;
            }
        }
    }

    /// Index just past the closing `quote`, honouring doubled quotes and (for strings) backslashes.
    fn close(&self, from: usize, quote: u8, backslash: bool) -> usize {
        let s = self.s;
        let mut j = from;
        while j < s.len() {
            if backslash && s[j] == b'\\' {
                j += 2;
            } else if s[j] == quote {
                if s.get(j + 1) == Some(&quote) {
                    j += 2;
                } else {
                    return j + 1;
                }
            } else {
                j += 1;
            }
        }
        s.len()
    }

    fn next(&mut self) -> Option<Tok<'a>> {
        self.skip_trivia();
        let s = self.s;
        let start = self.i;
        let b = *s.get(start)?;
        let tok = match b {
            b'"' if self.ansi_quotes => {
                self.i = self.close(start + 1, b'"', false);
                Tok::Quoted(&s[start + 1..self.i.saturating_sub(1).max(start + 1)])
            }
            b'\'' | b'"' => {
                self.i = self.close(start + 1, b, self.backslash);
                Tok::Str(&s[start + 1..self.i.saturating_sub(1).max(start + 1)])
            }
            b'`' => {
                self.i = self.close(start + 1, b'`', false);
                Tok::Quoted(&s[start + 1..self.i.saturating_sub(1).max(start + 1)])
            }
            b'@' if s.get(start + 1) == Some(&b'@') => {
                let mut j = start + 2;
                while j < s.len() && (is_word(s[j]) || s[j] == b'.') {
                    j += 1;
                }
                self.i = j;
                Tok::SysVar(&s[start + 2..j])
            }
            b'@' => {
                let j = match s.get(start + 1) {
                    Some(&q @ (b'\'' | b'"' | b'`')) => {
                        self.close(start + 2, q, q != b'`' && self.backslash)
                    }
                    _ => {
                        let mut j = start + 1;
                        while j < s.len() && (is_word(s[j]) || s[j] == b'.') {
                            j += 1;
                        }
                        j
                    }
                };
                self.i = j;
                Tok::UserVar
            }
            b';' => {
                self.i += 1;
                Tok::Semi
            }
            _ if is_word(b) => {
                let mut j = start;
                while j < s.len() && is_word(s[j]) {
                    j += 1;
                }
                self.i = j;
                Tok::Word(&s[start..j])
            }
            _ => {
                self.i += 1;
                Tok::Punct(b)
            }
        };
        Some(tok)
    }
}

fn is(tok: Option<&Tok<'_>>, kw: &str) -> bool {
    matches!(tok, Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw.as_bytes()))
}

/// Session variables whose value only matters for the next statement or that the server manages
/// per connection: replaying them on another connection would be wrong, so they pin instead.
/// `timestamp` is here because `SET timestamp = DEFAULT` reads back as a fixed value.
const UNREPLAYABLE: [&str; 7] = [
    "insert_id",
    "last_insert_id",
    "identity",
    "rand_seed1",
    "rand_seed2",
    "pseudo_thread_id",
    "timestamp",
];

const CHARSET_VARS: [&str; 4] = [
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
];

/// Splits SQL text into statements and analyses each. Empty statements (stray `;`) are dropped,
/// so the result is empty only for text with no statement at all.
pub fn analyse(sql: &[u8]) -> Vec<Statement> {
    analyse_with(sql, Syntax::default())
}

/// The parts of the session's sql_mode that change where strings and statements end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syntax {
    /// False under NO_BACKSLASH_ESCAPES.
    pub backslash_escapes: bool,
    /// True under ANSI_QUOTES (also part of ANSI).
    pub ansi_quotes: bool,
}

impl Default for Syntax {
    fn default() -> Self {
        Syntax {
            backslash_escapes: true,
            ansi_quotes: false,
        }
    }
}

impl Syntax {
    /// From a sql_mode value (as set or read back, quoted or not).
    pub fn from_sql_mode(mode: &str) -> Syntax {
        let has = |flag: &str| {
            mode.split([',', '\''])
                .any(|m| m.trim().eq_ignore_ascii_case(flag))
        };
        Syntax {
            backslash_escapes: !has("NO_BACKSLASH_ESCAPES"),
            ansi_quotes: has("ANSI_QUOTES") || has("ANSI"),
        }
    }
}

/// [`analyse`] with the session's string syntax, so statement boundaries are found exactly as
/// the server finds them.
pub fn analyse_with(sql: &[u8], syntax: Syntax) -> Vec<Statement> {
    let mut lexer = Lexer::new(sql, syntax);
    let mut out = Vec::new();
    let mut toks: Vec<Tok<'_>> = Vec::with_capacity(32);
    loop {
        let t = lexer.next();
        match t {
            Some(Tok::Semi) | None => {
                if !toks.is_empty() {
                    out.push(statement(&toks));
                    toks.clear();
                }
                if t.is_none() {
                    return out;
                }
            }
            Some(t) => toks.push(t),
        }
    }
}

fn statement(toks: &[Tok<'_>]) -> Statement {
    let mut st = Statement::new();
    st.kind = Kind::Other;
    for (i, t) in toks.iter().enumerate() {
        let next = toks.get(i + 1);
        match t {
            // A user variable is session state once written: `@x := …` or `… INTO @x`. Reading
            // one that this session never wrote gives NULL on any connection, as it should.
            Tok::UserVar
                if next == Some(&Tok::Punct(b':'))
                    && toks.get(i + 2) == Some(&Tok::Punct(b'=')) =>
            {
                st.pins |= pin::USER_VARIABLE;
            }
            Tok::Word(w) if w.eq_ignore_ascii_case(b"INTO") && next == Some(&Tok::UserVar) => {
                st.pins |= pin::USER_VARIABLE;
            }
            Tok::Word(w) => {
                let call = next == Some(&Tok::Punct(b'('));
                if call
                    && (w.eq_ignore_ascii_case(b"GET_LOCK")
                        || w.eq_ignore_ascii_case(b"RELEASE_LOCK"))
                {
                    st.pins |= pin::NAMED_LOCK;
                } else if call && w.eq_ignore_ascii_case(b"LAST_INSERT_ID") {
                    st.reads_last_insert_id = true;
                    if toks.get(i + 2) != Some(&Tok::Punct(b')')) {
                        st.sets_last_insert_id = true;
                    }
                } else if call
                    && (w.eq_ignore_ascii_case(b"FOUND_ROWS")
                        || w.eq_ignore_ascii_case(b"ROW_COUNT"))
                {
                    st.reads_previous = true;
                } else if w.eq_ignore_ascii_case(b"SQL_CALC_FOUND_ROWS") {
                    st.calc_found_rows = true;
                }
            }
            _ => {}
        }
    }
    let first = toks.first();
    let second = toks.get(1);
    if is(first, "USE") {
        if let Some(Tok::Word(db) | Tok::Quoted(db) | Tok::Str(db)) = second {
            st.kind = Kind::Use(String::from_utf8_lossy(db).into_owned());
        }
    } else if is(first, "SET") {
        set_statement(&toks[1..], &mut st);
    } else if is(first, "KILL") {
        let mut rest = toks[1..].iter().peekable();
        while rest
            .peek()
            .is_some_and(|t| is(Some(t), "HARD") || is(Some(t), "SOFT"))
        {
            rest.next();
        }
        let query = rest.peek().is_some_and(|t| is(Some(t), "QUERY"));
        if query || rest.peek().is_some_and(|t| is(Some(t), "CONNECTION")) {
            rest.next();
        }
        let target = match (rest.next(), rest.next()) {
            (Some(Tok::Word(w)), None) => std::str::from_utf8(w).ok().and_then(|s| s.parse().ok()),
            _ => None,
        };
        st.kind = Kind::Kill { query, target };
    } else if is(first, "LOCK") {
        st.pins |= pin::TABLE_LOCK;
    } else if is(first, "PREPARE") || is(first, "EXECUTE") || is(first, "DEALLOCATE") {
        st.pins |= pin::SQL_PREPARE;
    } else if is(first, "HANDLER") || is(first, "XA") || is(first, "CALL") {
        // A procedure may set variables, create temporary tables or lock: assume it does.
        st.pins |= pin::OTHER_STATE;
    } else if (is(first, "FLUSH")
        && toks
            .iter()
            .any(|t| is(Some(t), "LOCK") || is(Some(t), "EXPORT")))
        || (is(first, "BACKUP") && is(second, "LOCK"))
    {
        st.pins |= pin::TABLE_LOCK;
    } else if is(first, "CREATE") && toks.iter().take(4).any(|t| is(Some(t), "TEMPORARY")) {
        st.pins |= pin::TEMPORARY_TABLE;
    } else if (is(first, "SHOW")
        && (is(second, "WARNINGS") || is(second, "ERRORS") || is(second, "COUNT")))
        || (is(first, "GET") && toks.iter().take(3).any(|t| is(Some(t), "DIAGNOSTICS")))
    {
        st.reads_previous = true;
    }
    st
}

/// `SET` assignments: records the session variables to read back, and pins for the rest.
fn set_statement(toks: &[Tok<'_>], st: &mut Statement) {
    if is(toks.first(), "PASSWORD") {
        st.kind = Kind::SetPassword;
        return;
    }
    if is(toks.first(), "STATEMENT") {
        return; // SET STATEMENT … FOR …: applies to one statement only
    }
    if is(toks.first(), "TRANSACTION") {
        st.pins |= pin::NEXT_TRANSACTION;
        return;
    }
    if is(toks.first(), "ROLE") {
        st.pins |= pin::OTHER_STATE;
        return;
    }
    // Assignments are separated by commas at parenthesis depth 0.
    let mut depth = 0i32;
    let mut start = 0;
    for i in 0..=toks.len() {
        let t = toks.get(i);
        match t {
            Some(Tok::Punct(b'(')) => depth += 1,
            Some(Tok::Punct(b')')) => depth -= 1,
            Some(Tok::Punct(b',')) | None if depth == 0 => {
                assignment(&toks[start..i], st);
                start = i + 1;
            }
            _ => {}
        }
    }
}

fn assignment(a: &[Tok<'_>], st: &mut Statement) {
    let mut push = |name: &str| {
        let name = name.to_ascii_lowercase();
        if UNREPLAYABLE.contains(&name.as_str()) {
            st.pins |= pin::OTHER_STATE;
        } else if !st.sets_vars.contains(&name) {
            st.sets_vars.push(name);
        }
    };
    let word = |t: Option<&Tok<'_>>| match t {
        Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => Some(String::from_utf8_lossy(w).into_owned()),
        _ => None,
    };
    match a.first() {
        None => {}
        Some(Tok::UserVar) => st.pins |= pin::USER_VARIABLE,
        Some(Tok::SysVar(v)) => {
            let v = String::from_utf8_lossy(v).to_ascii_lowercase();
            if v.starts_with("global.") {
                return;
            }
            let name = v
                .strip_prefix("session.")
                .or_else(|| v.strip_prefix("local."))
                .unwrap_or(&v);
            // `@@session.x` may be followed by `.y` for structured variables; keep the whole name.
            push(name);
        }
        Some(t)
            if is(Some(t), "GLOBAL") || is(Some(t), "PERSIST") || is(Some(t), "PERSIST_ONLY") => {}
        Some(t)
            if is(Some(t), "NAMES")
                || is(Some(t), "CHARSET")
                || (is(Some(t), "CHARACTER") && is(a.get(1), "SET")) =>
        {
            CHARSET_VARS.iter().for_each(|v| push(v));
        }
        Some(t) if is(Some(t), "SESSION") || is(Some(t), "LOCAL") => {
            if is(a.get(1), "TRANSACTION") {
                // SET SESSION TRANSACTION ISOLATION LEVEL … / READ ONLY|WRITE
                push("tx_isolation");
                push("tx_read_only");
            } else if let Some(name) = word(a.get(1)) {
                push(&name);
            }
        }
        Some(t) => {
            if let Some(name) = word(Some(t)) {
                push(&name);
            } else {
                st.pins |= pin::OTHER_STATE;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        let mut v = analyse(sql.as_bytes());
        assert_eq!(v.len(), 1, "{sql}: {v:?}");
        v.pop().unwrap()
    }

    #[test]
    fn statements_are_split_on_semicolons_outside_quotes_and_comments() {
        let v = analyse(b"SELECT ';', \"a;b\", `c;d` /* ; */ -- ;\n; # ;\n DELETE FROM t;;");
        assert_eq!(v.len(), 2);
        assert_eq!(analyse(b"  /* only a comment */ ; ").len(), 0);
        assert_eq!(analyse(b"SELECT 'it''s;' ; SELECT 'a\\';b'").len(), 2);
    }

    #[test]
    fn use_names_the_database_quoted_or_not() {
        assert_eq!(one("USE shop").kind, Kind::Use("shop".into()));
        assert_eq!(one("use `my db`;").kind, Kind::Use("my db".into()));
    }

    #[test]
    fn session_variable_assignments_are_collected_and_global_ones_ignored() {
        let st = one("SET sql_mode='ANSI', @@session.time_zone = '+08:00', SESSION autocommit=0, @@GLOBAL.x=1, GLOBAL y=2");
        assert_eq!(st.sets_vars, ["sql_mode", "time_zone", "autocommit"]);
        assert_eq!(st.pins, 0);
        assert_eq!(
            one("SET NAMES utf8mb4 COLLATE utf8mb4_bin").sets_vars,
            CHARSET_VARS
        );
        assert_eq!(one("SET character set latin1").sets_vars, CHARSET_VARS);
        assert_eq!(
            one("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").sets_vars,
            ["tx_isolation", "tx_read_only"]
        );
        assert_eq!(
            one("SET sql_mode = CONCAT(@@sql_mode, ',ANSI'), wait_timeout = 10").sets_vars,
            ["sql_mode", "wait_timeout"]
        );
    }

    #[test]
    fn mysqldump_executable_comments_are_seen_as_code() {
        let st = one("/*!40101 SET NAMES utf8 */");
        assert_eq!(st.sets_vars, CHARSET_VARS);
        let st = one("/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE */");
        assert_eq!(st.pins, pin::USER_VARIABLE);
    }

    #[test]
    fn state_that_cannot_be_replayed_pins_the_session() {
        assert_eq!(one("SET @a = 1").pins, pin::USER_VARIABLE);
        assert_eq!(one("SELECT id INTO @x FROM t").pins, pin::USER_VARIABLE);
        assert_eq!(one("select '@notavar', \"@@x\"").pins, 0);
        assert_eq!(
            one("SELECT @never_written").pins,
            0,
            "reading a user variable is not state"
        );
        assert_eq!(one("SELECT @n := @n + 1 FROM t").pins, pin::USER_VARIABLE);
        assert_eq!(one("CALL p(1)").pins, pin::OTHER_STATE);
        assert_eq!(one("FLUSH TABLES WITH READ LOCK").pins, pin::TABLE_LOCK);
        assert_eq!(one("flush tables t for export").pins, pin::TABLE_LOCK);
        assert_eq!(one("BACKUP LOCK t").pins, pin::TABLE_LOCK);
        assert_eq!(one("SET timestamp = 1").pins, pin::OTHER_STATE);
        assert_eq!(
            one("CREATE TEMPORARY TABLE t (a int)").pins,
            pin::TEMPORARY_TABLE
        );
        assert_eq!(
            one("create or replace temporary table t (a int)").pins,
            pin::TEMPORARY_TABLE
        );
        assert_eq!(one("LOCK TABLES t WRITE").pins, pin::TABLE_LOCK);
        assert_eq!(one("SELECT GET_LOCK('x', 1)").pins, pin::NAMED_LOCK);
        assert_eq!(one("PREPARE s FROM 'SELECT 1'").pins, pin::SQL_PREPARE);
        assert_eq!(
            one("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").pins,
            pin::NEXT_TRANSACTION
        );
        assert_eq!(one("SET insert_id = 5").pins, pin::OTHER_STATE);
        assert_eq!(one("SELECT get_lock_count FROM t").pins, 0);
    }

    #[test]
    fn diagnostics_and_last_insert_id_readers_are_flagged() {
        assert!(one("SHOW WARNINGS").reads_previous);
        assert!(one("show count(*) errors").reads_previous);
        assert!(one("SELECT FOUND_ROWS()").reads_previous);
        assert!(one("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1").calc_found_rows);
        assert!(one("SELECT LAST_INSERT_ID()").reads_last_insert_id);
        assert!(!one("SELECT last_insert_id FROM t").reads_last_insert_id);
        assert!(!one("SELECT LAST_INSERT_ID()").sets_last_insert_id);
        assert!(one("UPDATE t SET id = LAST_INSERT_ID(id + 1)").sets_last_insert_id);
    }

    #[test]
    fn proxy_handled_statements_are_recognised() {
        assert_eq!(one("SET PASSWORD = PASSWORD('x')").kind, Kind::SetPassword);
        assert_eq!(
            one("KILL QUERY 5").kind,
            Kind::Kill {
                query: true,
                target: Some(5)
            }
        );
        assert_eq!(
            one("kill 7").kind,
            Kind::Kill {
                query: false,
                target: Some(7)
            }
        );
        assert_eq!(
            one("KILL HARD CONNECTION 8").kind,
            Kind::Kill {
                query: false,
                target: Some(8)
            }
        );
        assert_eq!(
            one("KILL QUERY ID 9").kind,
            Kind::Kill {
                query: true,
                target: None
            }
        );
        assert_eq!(
            one("KILL USER bob").kind,
            Kind::Kill {
                query: false,
                target: None
            }
        );
        assert_eq!(one("SELECT 1").kind, Kind::Other);
    }

    #[test]
    fn no_backslash_escapes_changes_where_strings_end() {
        let sql = b"SELECT 'a\\'; USE x; SELECT '";
        assert_eq!(
            analyse(sql).len(),
            1,
            "with backslash escapes the quote is escaped"
        );
        let v = analyse_with(
            sql,
            Syntax {
                backslash_escapes: false,
                ansi_quotes: false,
            },
        );
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].kind, Kind::Use("x".into()));
    }

    #[test]
    fn ansi_quotes_make_double_quotes_identifiers() {
        let sql = br#"SELECT 1 AS "a\"; SET @x=1; SELECT 2 AS "b""#;
        assert_eq!(
            analyse(sql).len(),
            1,
            "as strings, the backslash escapes the quote"
        );
        let v = analyse_with(
            sql,
            Syntax::from_sql_mode("'ANSI_QUOTES,STRICT_TRANS_TABLES'"),
        );
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].pins, pin::USER_VARIABLE);
        assert!(
            Syntax::from_sql_mode("'REAL_AS_FLOAT,PIPES_AS_CONCAT,ANSI_QUOTES,IGNORE_SPACE,ANSI'")
                .ansi_quotes
        );
        assert!(
            !Syntax::from_sql_mode("'STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES'").backslash_escapes
        );
        assert_eq!(Syntax::from_sql_mode("''"), Syntax::default());
    }

    #[test]
    fn invalid_utf8_and_unterminated_quotes_do_not_panic() {
        assert_eq!(analyse(b"SELECT '\xff\xfe").len(), 1);
        assert_eq!(analyse(b"SELECT `abc").len(), 1);
        assert_eq!(analyse(b"/* never closed").len(), 0);
        assert_eq!(analyse(b"SELECT @").len(), 1);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes, valid SQL or not, are analysed without panicking, into at most one statement
        /// per `;` plus one.
        #[test]
        fn analysis_is_total(sql in proptest::collection::vec(any::<u8>(), 0..200), nbe in any::<bool>()) {
            let v = analyse_with(&sql, Syntax { backslash_escapes: !nbe, ansi_quotes: nbe });
            prop_assert!(v.len() <= sql.iter().filter(|b| **b == b';').count() + 1);
        }

        /// SQL-ish text built from the tricky pieces (quotes, comments, `;`, `@`) too.
        #[test]
        fn analysis_is_total_on_sql_like_text(parts in proptest::collection::vec(
            prop_oneof![Just("'"), Just("\""), Just("`"), Just("/*"), Just("*/"), Just("/*!"), Just("--"), Just("#"),
                        Just("\n"), Just(";"), Just("@"), Just("@@"), Just("SET "), Just("USE "), Just("x"), Just("\\"),
                        Just(":="), Just("INTO "), Just("("), Just(")"), Just(",")], 0..40)) {
            let sql: String = parts.concat();
            let _ = analyse(sql.as_bytes());
        }
    }
}
