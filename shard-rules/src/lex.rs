//! A token scanner for rewriting statement text by spans (issue 9): table names are replaced
//! and clauses cut or added at token boundaries, so everything else reaches the backend exactly
//! as the client wrote it — constructs sqlparser does not model included.
//!
//! It reads what MariaDB reads: `'…'` strings (and `"…"` unless ANSI_QUOTES), backslash escapes
//! unless NO_BACKSLASH_ESCAPES, `` `…` `` identifiers, `#`, `-- ` and `/* */` comments (skipped),
//! and executable comments `/*!…*/` / `/*M!…*/`, whose content is code and is scanned.

use std::ops::Range;

/// How the session's sql_mode makes the text read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoting {
    pub backslash_escapes: bool,
    pub ansi_quotes: bool,
}

impl Default for Quoting {
    fn default() -> Self {
        Quoting {
            backslash_escapes: true,
            ansi_quotes: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An unquoted word: keyword or name.
    Word,
    /// `` `name` `` (or `"name"` under ANSI_QUOTES).
    QuotedIdent,
    Str,
    Number,
    /// `@name`, `@@name`, `@'…'`.
    Variable,
    Placeholder,
    /// Any other single byte (`(`, `)`, `,`, `.`, operators).
    Punct(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Range<usize>,
    /// Parenthesis depth the token is at (`(` and `)` themselves at the outer depth).
    pub depth: u32,
}

impl Token {
    /// The text of a word, or the name inside quotes of a quoted identifier (doubled quotes
    /// resolved).
    pub fn name(&self, sql: &[u8]) -> Option<String> {
        let raw = &sql[self.span.clone()];
        match self.kind {
            TokenKind::Word => Some(String::from_utf8_lossy(raw).into_owned()),
            TokenKind::QuotedIdent if raw.len() >= 2 => {
                let q = raw[0];
                let inner = &raw[1..raw.len() - 1];
                let mut out = Vec::with_capacity(inner.len());
                let mut i = 0;
                while i < inner.len() {
                    out.push(inner[i]);
                    i += if inner[i] == q && inner.get(i + 1) == Some(&q) {
                        2
                    } else {
                        1
                    };
                }
                Some(String::from_utf8_lossy(&out).into_owned())
            }
            _ => None,
        }
    }

    /// A word equal to `kw` (ASCII, any case).
    pub fn is_keyword(&self, sql: &[u8], kw: &str) -> bool {
        self.kind == TokenKind::Word && sql[self.span.clone()].eq_ignore_ascii_case(kw.as_bytes())
    }
}

/// Why a text cannot be scanned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unterminated {0} in the statement")]
pub struct Unterminated(pub &'static str);

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// Every token of `sql`, comments left out.
pub fn tokens(sql: &[u8], q: Quoting) -> Result<Vec<Token>, Unterminated> {
    let mut out = Vec::new();
    let mut depth = 0u32;
    let mut i = 0;
    // Inside an executable comment: its closing `*/` ends it.
    let mut in_exec = false;
    while i < sql.len() {
        let c = sql[i];
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c => {
                i += 1;
                continue;
            }
            b'#' => {
                i = line_end(sql, i);
                continue;
            }
            b'-' if sql.get(i + 1) == Some(&b'-')
                && sql.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                i = line_end(sql, i);
                continue;
            }
            b'*' if in_exec && sql.get(i + 1) == Some(&b'/') => {
                in_exec = false;
                i += 2;
                continue;
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                let exec = match sql.get(i + 2) {
                    Some(b'!') => Some(i + 3),
                    Some(b'M') if sql.get(i + 3) == Some(&b'!') => Some(i + 4),
                    _ => None,
                };
                if let Some(mut j) = exec.filter(|_| !in_exec) {
                    // The optional version number belongs to the comment, not the code.
                    while j < sql.len() && sql[j].is_ascii_digit() {
                        j += 1;
                    }
                    in_exec = true;
                    i = j;
                } else {
                    let end = find(sql, i + 2, b"*/").ok_or(Unterminated("comment"))?;
                    i = end + 2;
                }
                continue;
            }
            b'\'' => {
                i = quoted_end(sql, i, q.backslash_escapes).ok_or(Unterminated("string"))?;
                TokenKind::Str
            }
            b'"' if q.ansi_quotes => {
                i = quoted_end(sql, i, false).ok_or(Unterminated("identifier"))?;
                TokenKind::QuotedIdent
            }
            b'"' => {
                i = quoted_end(sql, i, q.backslash_escapes).ok_or(Unterminated("string"))?;
                TokenKind::Str
            }
            b'`' => {
                i = quoted_end(sql, i, false).ok_or(Unterminated("identifier"))?;
                TokenKind::QuotedIdent
            }
            b'@' => {
                i += 1;
                if sql.get(i) == Some(&b'@') {
                    i += 1;
                }
                match sql.get(i) {
                    Some(b'\'') | Some(b'"') | Some(b'`') => {
                        i = quoted_end(sql, i, q.backslash_escapes && sql[i] != b'`')
                            .ok_or(Unterminated("variable name"))?;
                    }
                    _ => {
                        while i < sql.len() && (is_word_byte(sql[i]) || sql[i] == b'.') {
                            i += 1;
                        }
                    }
                }
                TokenKind::Variable
            }
            b'?' => {
                i += 1;
                TokenKind::Placeholder
            }
            b'0'..=b'9' => {
                // A word that starts with digits (`1abc`, `0x1F`) is one token either way.
                while i < sql.len()
                    && (is_word_byte(sql[i])
                        || (sql[i] == b'.' && sql.get(i + 1).is_some_and(u8::is_ascii_digit))
                        || ((sql[i] == b'+' || sql[i] == b'-')
                            && matches!(sql[i - 1], b'e' | b'E')
                            && sql[start..i]
                                .iter()
                                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E'))))
                {
                    i += 1;
                }
                if sql[start..i]
                    .iter()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
                {
                    TokenKind::Number
                } else {
                    TokenKind::Word
                }
            }
            b'.' if sql.get(i + 1).is_some_and(u8::is_ascii_digit)
                && !matches!(
                    out.last(),
                    Some(Token {
                        kind: TokenKind::Word | TokenKind::QuotedIdent,
                        ..
                    })
                ) =>
            {
                i += 1;
                while i < sql.len() && sql[i].is_ascii_digit() {
                    i += 1;
                }
                TokenKind::Number
            }
            c if is_word_byte(c) => {
                while i < sql.len() && is_word_byte(sql[i]) {
                    i += 1;
                }
                // `X'…'`, `B'…'`, `N'…'`, `_utf8mb4'…'`: a prefixed string is one literal.
                if sql.get(i) == Some(&b'\'') {
                    i = quoted_end(sql, i, q.backslash_escapes).ok_or(Unterminated("string"))?;
                    TokenKind::Str
                } else {
                    TokenKind::Word
                }
            }
            c => {
                i += 1;
                if c == b')' {
                    depth = depth.saturating_sub(1);
                }
                let t = Token {
                    kind: TokenKind::Punct(c),
                    span: start..i,
                    depth,
                };
                if c == b'(' {
                    depth += 1;
                }
                out.push(t);
                continue;
            }
        };
        out.push(Token {
            kind,
            span: start..i,
            depth,
        });
    }
    Ok(out)
}

fn line_end(sql: &[u8], i: usize) -> usize {
    sql[i..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(sql.len(), |p| i + p + 1)
}

fn find(sql: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    sql.get(from..)?
        .windows(pat.len())
        .position(|w| w == pat)
        .map(|p| from + p)
}

/// End (exclusive) of the quoted text starting at `i`, doubled quotes and (when `escapes`)
/// backslash escapes included.
fn quoted_end(sql: &[u8], i: usize, escapes: bool) -> Option<usize> {
    let q = sql[i];
    let mut j = i + 1;
    while j < sql.len() {
        let c = sql[j];
        if escapes && c == b'\\' {
            j += 2;
            continue;
        }
        if c == q {
            if sql.get(j + 1) == Some(&q) {
                j += 2;
                continue;
            }
            return Some(j + 1);
        }
        j += 1;
    }
    None
}

/// A table name to replace: the logical name (any case) and the physical one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    pub logical: String,
    pub physical: String,
}

/// `sql` with every reference to a renamed table replaced: the table itself and qualifiers
/// (`t_order.amount`, `shop.t_order`), quoted or not. Left alone: names after `AS` (aliases),
/// names qualified by one of the statement's tables or aliases
/// (a column), variables, strings and comments. A column named like a renamed table cannot be
/// told apart from the table by its tokens: the caller refuses such statements (see
/// [`crate::analyze::Facts::columns_like_tables`]).
pub fn rename_tables(sql: &[u8], renames: &[Rename], q: Quoting) -> Result<Vec<u8>, Unterminated> {
    if renames.is_empty() {
        return Ok(sql.to_vec());
    }
    let toks = tokens(sql, q)?;
    let find = |t: &Token| -> Option<&Rename> {
        let name = t.name(sql)?;
        renames
            .iter()
            .find(|r| r.logical.eq_ignore_ascii_case(&name))
    };
    let mut out = Vec::with_capacity(sql.len() + 16 * renames.len());
    let mut at = 0;
    for (k, t) in toks.iter().enumerate() {
        let Some(r) = find(t) else { continue };
        let prev = k.checked_sub(1).map(|p| &toks[p]);
        let next = toks.get(k + 1);
        if prev.is_some_and(|p| p.is_keyword(sql, "AS")) {
            continue;
        }
        if prev.is_some_and(|p| p.kind == TokenKind::Punct(b'.')) {
            // `x.name`: a table in schema `x` unless `x` is itself a renamed table (then
            // `name` is its column) — `schema.table.column` has a second dot after it.
            let qualifier = k.checked_sub(2).map(|p| &toks[p]);
            let second_dot = next.is_some_and(|n| n.kind == TokenKind::Punct(b'.'));
            if !second_dot && qualifier.is_some_and(|x| find(x).is_some()) {
                continue;
            }
        }
        out.extend_from_slice(&sql[at..t.span.start]);
        if t.kind == TokenKind::QuotedIdent {
            out.push(b'`');
            out.extend_from_slice(r.physical.replace('`', "``").as_bytes());
            out.push(b'`');
        } else {
            out.extend_from_slice(r.physical.as_bytes());
        }
        at = t.span.end;
    }
    out.extend_from_slice(&sql[at..]);
    Ok(out)
}

/// The VALUES rows of an INSERT, by byte span, to send each node its own rows.
pub struct InsertRows {
    /// Text before the first row (`INSERT INTO t (…) VALUES `).
    head: std::ops::Range<usize>,
    rows: Vec<std::ops::Range<usize>>,
    /// Text after the last row (` ON DUPLICATE KEY UPDATE …`).
    tail: std::ops::Range<usize>,
}

impl InsertRows {
    pub fn only(&self, sql: &[u8], rows: &[usize]) -> Vec<u8> {
        let mut out = Vec::with_capacity(sql.len());
        out.extend_from_slice(&sql[self.head.clone()]);
        for (k, r) in rows.iter().enumerate() {
            if k > 0 {
                out.extend_from_slice(b", ");
            }
            if let Some(span) = self.rows.get(*r) {
                out.extend_from_slice(&sql[span.clone()]);
            }
        }
        out.extend_from_slice(&sql[self.tail.clone()]);
        out
    }
}

pub fn insert_rows(sql: &[u8], q: Quoting) -> Option<InsertRows> {
    let toks = tokens(sql, q).ok()?;
    let v = toks.iter().position(|t| {
        t.depth == 0 && (t.is_keyword(sql, "VALUES") || t.is_keyword(sql, "VALUE"))
    })?;
    let mut rows = Vec::new();
    let mut k = v + 1;
    let mut tail_start = sql.len();
    while k < toks.len() {
        let t = &toks[k];
        if t.kind == TokenKind::Punct(b'(') && t.depth == 0 {
            let close = toks[k + 1..]
                .iter()
                .position(|x| x.kind == TokenKind::Punct(b')') && x.depth == 0)?
                + k
                + 1;
            rows.push(t.span.start..toks[close].span.end);
            tail_start = toks[close].span.end;
            k = close + 1;
            match toks.get(k) {
                Some(x) if x.kind == TokenKind::Punct(b',') => k += 1,
                _ => break,
            }
        } else {
            return None;
        }
    }
    let head_end = rows.first()?.start;
    Some(InsertRows {
        head: 0..head_end,
        rows,
        tail: tail_start..sql.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(pairs: &[(&str, &str)]) -> Vec<Rename> {
        pairs
            .iter()
            .map(|(l, p)| Rename {
                logical: l.to_string(),
                physical: p.to_string(),
            })
            .collect()
    }

    fn rename(sql: &str, pairs: &[(&str, &str)]) -> String {
        String::from_utf8(rename_tables(sql.as_bytes(), &r(pairs), Quoting::default()).unwrap())
            .unwrap()
    }

    #[test]
    fn table_names_and_qualifiers_are_replaced_and_nothing_else() {
        assert_eq!(
            rename(
                "SELECT t_order.amount, 't_order' /* t_order */ FROM `t_order` WHERE id = 1 -- t_order\n",
                &[("t_order", "t_order_3")]
            ),
            "SELECT t_order_3.amount, 't_order' /* t_order */ FROM `t_order_3` WHERE id = 1 -- t_order\n"
        );
        assert_eq!(
            rename(
                "select o.id, i.qty from T_ORDER o join t_order_item AS i on i.order_id=o.id",
                &[("t_order", "t_order_1"), ("t_order_item", "t_order_item_1")]
            ),
            "select o.id, i.qty from t_order_1 o join t_order_item_1 AS i on i.order_id=o.id"
        );
        // A schema-qualified table, an alias named like the table, a variable.
        assert_eq!(
            rename(
                "SELECT shop.t_order.id, count(*) AS t_order, @t_order FROM shop.t_order",
                &[("t_order", "t_order_0")]
            ),
            "SELECT shop.t_order_0.id, count(*) AS t_order, @t_order FROM shop.t_order_0"
        );
        // Executable comments are code.
        assert_eq!(
            rename(
                "SELECT /*!50000 SQL_NO_CACHE */ * FROM /*!t_order*/",
                &[("t_order", "t_order_2")]
            ),
            "SELECT /*!50000 SQL_NO_CACHE */ * FROM /*!t_order_2*/"
        );
    }

    #[test]
    fn insert_rows_are_split_by_span() {
        let sql = b"INSERT INTO t (a, b) VALUES (1, 'x,)'), (2, f(3)),(3,4) ON DUPLICATE KEY UPDATE b = VALUES(b)";
        let r = insert_rows(sql, Quoting::default()).unwrap();
        assert_eq!(r.rows.len(), 3);
        assert_eq!(
            String::from_utf8(r.only(sql, &[0, 2])).unwrap(),
            "INSERT INTO t (a, b) VALUES (1, 'x,)'), (3,4) ON DUPLICATE KEY UPDATE b = VALUES(b)"
        );
        assert!(insert_rows(b"INSERT INTO t SELECT 1", Quoting::default()).is_none());
    }

    #[test]
    fn a_column_list_right_after_the_table_name() {
        assert_eq!(
            rename(
                "INSERT INTO t_order(a, b) VALUES (1, 2)",
                &[("t_order", "t_order_1")]
            ),
            "INSERT INTO t_order_1(a, b) VALUES (1, 2)"
        );
    }

    #[test]
    fn columns_qualified_by_a_renamed_table_stay() {
        assert_eq!(
            rename("UPDATE t SET t.t = 1 WHERE t.id = 2", &[("t", "t_1")]),
            "UPDATE t_1 SET t_1.t = 1 WHERE t_1.id = 2"
        );
    }

    #[test]
    fn strings_with_escapes_and_unterminated_text() {
        assert_eq!(
            rename(r"SELECT 'it\'s t', t FROM t", &[("t", "t_9")]),
            r"SELECT 'it\'s t', t_9 FROM t_9"
        );
        assert!(rename_tables(b"SELECT 'x FROM t", &r(&[("t", "u")]), Quoting::default()).is_err());
        let ansi = Quoting {
            backslash_escapes: false,
            ansi_quotes: true,
        };
        assert_eq!(
            rename_tables(br#"SELECT 'a\' FROM "t""#, &r(&[("t", "t_1")]), ansi).unwrap(),
            br#"SELECT 'a\' FROM `t_1`"#.to_vec()
        );
    }

    #[test]
    fn depth_and_numbers() {
        let t = tokens(b"SELECT f(a, (b)) , 1.5e-3, .5, x.5", Quoting::default()).unwrap();
        let depth: Vec<u32> = t.iter().map(|t| t.depth).collect();
        assert_eq!(
            depth,
            vec![0, 0, 0, 1, 1, 1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(t[10].kind, TokenKind::Number);
        assert_eq!(t[12].kind, TokenKind::Number);
    }

    proptest::proptest! {
        #[test]
        fn total_on_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = rename_tables(&bytes, &r(&[("t", "t_1")]), Quoting::default());
        }
    }
}
