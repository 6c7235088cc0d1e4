//! Statement digests (issue 7, step 1): one pass of a hand-written lexer turns a statement
//! (hint already stripped) into its *shape* — literals replaced by `?`, whitespace runs
//! collapsed to one space, comments dropped — and the literal values in order. Statements that
//! differ only in their values share a digest, so an analysis made once (by sqlparser) can be
//! cached under it and reused with the values of each new statement.
//!
//! What the lexer reads as MariaDB does with the default sql_mode: `'…'` and `"…"` strings with
//! backslash escapes and doubled quotes, `` `…` `` identifiers kept verbatim, `#`, `-- ` and
//! `/* */` comments, `X'…'`, `0x…`, `B'…'` and `0b…` literals, and numbers (integers, decimals,
//! exponents). A text the lexer cannot cache safely gives `None`: an executable comment
//! (`/*!…*/`, its meaning depends on the server version), an unterminated string, identifier or
//! comment. Word case is kept: table names are case-sensitive on Linux. Under sql_mode
//! ANSI_QUOTES (`"…"` names a column) or NO_BACKSLASH_ESCAPES the text reads differently: the
//! caller must not use a digest made for a session in either mode.

use std::ops::Range;

/// A literal taken out of the text, in order of appearance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Literal {
    /// Where it was in the text (quotes and prefixes included).
    pub span: Range<usize>,
    pub value: LiteralValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiteralValue {
    /// An integer that fits in `i64` (a leading `-` is an operator, not part of it).
    Int(i64),
    /// Any other number (`18446744073709551616`, `1.5`, `2e10`), as written.
    Number(String),
    /// A quoted string, escapes resolved (the bytes the server compares).
    Str(Vec<u8>),
    /// `X'…'`, `0x…`, `B'…'`, `0b…`, as written.
    Bits(String),
    /// A client placeholder `?` of a prepared statement.
    Placeholder,
}

/// A statement's shape and its literals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// The normalised text: what the plan cache is keyed by.
    pub text: String,
    pub literals: Vec<Literal>,
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// The digest of `sql`, or `None` when the text must not be cached (see the module docs).
pub fn digest(sql: &[u8]) -> Option<Digest> {
    let mut text: Vec<u8> = Vec::with_capacity(sql.len());
    let mut literals = Vec::new();
    let mut i = 0;
    // Tokens are separated by exactly one space, whatever the text had between them.
    let push_token = |text: &mut Vec<u8>, token: &[u8]| {
        if !text.is_empty() {
            text.push(b' ');
        }
        text.extend_from_slice(token);
    };
    while i < sql.len() {
        let c = sql[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c => i += 1,
            b'#' => {
                i = sql[i..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(sql.len(), |p| i + p + 1);
            }
            b'-' if sql.get(i + 1) == Some(&b'-')
                && sql
                    .get(i + 2)
                    .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')) =>
            {
                i = sql[i..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(sql.len(), |p| i + p + 1);
            }
            // MariaDB reads `--` followed by whitespace, a control character or the end as a
            // comment; sqlparser only `--` followed by whitespace (Unicode whitespace too). Where
            // the two disagree, no digest: the statement is parsed in full, so its analysis
            // never depends on whether the cache held its shape.
            b'-' if sql.get(i + 1) == Some(&b'-')
                && sql
                    .get(i + 2)
                    .is_none_or(|c| c.is_ascii_control() || *c >= 0x80) =>
            {
                return None;
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                if sql.get(i + 2) == Some(&b'!')
                    || (sql.get(i + 2) == Some(&b'M') && sql.get(i + 3) == Some(&b'!'))
                {
                    return None;
                }
                let end = sql[i + 2..].windows(2).position(|w| w == b"*/")?;
                i += end + 4;
            }
            b'\'' | b'"' => {
                let (value, end) = quoted(sql, i)?;
                literals.push(Literal {
                    span: i..end,
                    value: LiteralValue::Str(value),
                });
                push_token(&mut text, b"?");
                i = end;
            }
            b'`' => {
                let mut j = i + 1;
                loop {
                    match sql.get(j) {
                        None => return None,
                        Some(b'`') if sql.get(j + 1) == Some(&b'`') => j += 2,
                        Some(b'`') => break,
                        Some(_) => j += 1,
                    }
                }
                push_token(&mut text, &sql[i..=j]);
                i = j + 1;
            }
            b'?' => {
                literals.push(Literal {
                    span: i..i + 1,
                    value: LiteralValue::Placeholder,
                });
                push_token(&mut text, b"?");
                i += 1;
            }
            // X'…' / B'…': hex and bit strings.
            b'x' | b'X' | b'b' | b'B' if sql.get(i + 1) == Some(&b'\'') => {
                let close = sql[i + 2..].iter().position(|b| *b == b'\'')? + i + 2;
                literals.push(Literal {
                    span: i..close + 1,
                    value: LiteralValue::Bits(String::from_utf8_lossy(&sql[i..=close]).into()),
                });
                push_token(&mut text, b"?");
                i = close + 1;
            }
            b'0'..=b'9' => {
                let end = number_end(sql, i);
                let raw = &sql[i..end];
                // `1abc` is an identifier in MariaDB; `0x1F`, `0b01` are literals.
                if end < sql.len() && is_word_byte(sql[end]) {
                    let word_end = i + sql[i..].iter().take_while(|b| is_word_byte(**b)).count();
                    push_token(&mut text, &sql[i..word_end]);
                    i = word_end;
                    continue;
                }
                let s = std::str::from_utf8(raw).ok()?;
                let value = if s.len() > 2 && (s.starts_with("0x") || s.starts_with("0b")) {
                    LiteralValue::Bits(s.to_string())
                } else if let Ok(v) = s.parse::<i64>() {
                    LiteralValue::Int(v)
                } else {
                    LiteralValue::Number(s.to_string())
                };
                literals.push(Literal {
                    span: i..end,
                    value,
                });
                push_token(&mut text, b"?");
                i = end;
            }
            b'.' if sql.get(i + 1).is_some_and(|c| c.is_ascii_digit())
                && !(i > 0 && (is_word_byte(sql[i - 1]) || sql[i - 1] == b'`')) =>
            {
                // `.5` is a number; `t.5` (after a word) is a qualified name.
                let end = number_end(sql, i);
                literals.push(Literal {
                    span: i..end,
                    value: LiteralValue::Number(String::from_utf8_lossy(&sql[i..end]).into()),
                });
                push_token(&mut text, b"?");
                i = end;
            }
            c if is_word_byte(c) => {
                let end = i + sql[i..].iter().take_while(|b| is_word_byte(**b)).count();
                push_token(&mut text, &sql[i..end]);
                i = end;
            }
            // Operators of several characters are one token (`<=` is not `< =`).
            b'<' | b'>' | b'=' | b'!' | b':' | b'|' | b'&' => {
                let n = sql[i..]
                    .iter()
                    .take(3)
                    .take_while(|b| matches!(b, b'<' | b'>' | b'=' | b'!' | b':' | b'|' | b'&'))
                    .count();
                push_token(&mut text, &sql[i..i + n]);
                i += n;
            }
            _ => {
                push_token(&mut text, &sql[i..i + 1]);
                i += 1;
            }
        }
    }
    Some(Digest {
        text: String::from_utf8(text).ok()?,
        literals,
    })
}

/// The end of a number starting at `i`: digits, one `.`, an exponent with its sign; `0x`/`0b`
/// followed by their digits.
fn number_end(sql: &[u8], i: usize) -> usize {
    if sql[i] == b'0' && matches!(sql.get(i + 1), Some(b'x' | b'b')) {
        let radix_digit = |c: &u8| {
            if sql[i + 1] == b'x' {
                c.is_ascii_hexdigit()
            } else {
                *c == b'0' || *c == b'1'
            }
        };
        let n = sql[i + 2..].iter().take_while(|c| radix_digit(c)).count();
        if n > 0 {
            return i + 2 + n;
        }
    }
    let mut j = i;
    while j < sql.len() && sql[j].is_ascii_digit() {
        j += 1;
    }
    if sql.get(j) == Some(&b'.') {
        j += 1;
        while j < sql.len() && sql[j].is_ascii_digit() {
            j += 1;
        }
    }
    if matches!(sql.get(j), Some(b'e' | b'E')) {
        let mut k = j + 1;
        if matches!(sql.get(k), Some(b'+' | b'-')) {
            k += 1;
        }
        if sql.get(k).is_some_and(|c| c.is_ascii_digit()) {
            while k < sql.len() && sql[k].is_ascii_digit() {
                k += 1;
            }
            j = k;
        }
    }
    j
}

/// A quoted string at `i`: its value with escapes resolved, and the index after the closing quote.
fn quoted(sql: &[u8], i: usize) -> Option<(Vec<u8>, usize)> {
    let q = sql[i];
    let mut value = Vec::new();
    let mut j = i + 1;
    loop {
        let c = *sql.get(j)?;
        if c == b'\\' {
            let e = *sql.get(j + 1)?;
            value.push(match e {
                b'0' => 0,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'b' => 0x08,
                b'Z' => 0x1a,
                // `\%` and `\_` keep their backslash (LIKE patterns).
                b'%' | b'_' => {
                    value.extend_from_slice(&[b'\\', e]);
                    j += 2;
                    continue;
                }
                other => other,
            });
            j += 2;
        } else if c == q {
            if sql.get(j + 1) == Some(&q) {
                value.push(q);
                j += 2;
            } else {
                return Some((value, j + 1));
            }
        } else {
            value.push(c);
            j += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(sql: &str) -> Digest {
        digest(sql.as_bytes()).unwrap()
    }

    #[test]
    fn literals_become_placeholders_and_keep_their_values() {
        let sql = "SELECT  c FROM sbtest1\n WHERE id = 42 AND name = 'o''k\\n' -- note\n";
        let g = d(sql);
        assert_eq!(g.text, "SELECT c FROM sbtest1 WHERE id = ? AND name = ?");
        assert_eq!(g.literals[0].value, LiteralValue::Int(42));
        let at = sql.find("42").unwrap();
        assert_eq!(g.literals[0].span, at..at + 2);
        assert_eq!(g.literals[1].value, LiteralValue::Str(b"o'k\n".to_vec()));
    }

    #[test]
    fn statements_differing_only_in_values_and_spacing_share_a_digest() {
        let a = d("INSERT INTO t_order (order_id, buyer_id, note) VALUES (1, 1001, 'a')");
        let b = d("INSERT  INTO t_order(order_id,buyer_id,note)VALUES(77,5001,\"b c\")");
        assert_eq!(
            a.text,
            "INSERT INTO t_order ( order_id , buyer_id , note ) VALUES ( ? , ? , ? )"
        );
        assert_eq!(a.text, b.text);
        assert_eq!(b.literals[2].value, LiteralValue::Str(b"b c".to_vec()));
        // Other names or operators: other digests.
        assert_ne!(
            d("SELECT a FROM t WHERE a <= 1").text,
            d("SELECT a FROM t WHERE a < = 1").text
        );
        assert_ne!(d("SELECT a FROM T").text, d("SELECT a FROM t").text);
    }

    #[test]
    fn numbers_of_every_form() {
        let g = d("SELECT 1.5, .5, 2e10, 1E-3, 18446744073709551616, 0x1F, X'0a', b'01', 0b11, -7");
        assert_eq!(g.text, "SELECT ? , ? , ? , ? , ? , ? , ? , ? , ? , - ?");
        let values: Vec<_> = g.literals.iter().map(|l| l.value.clone()).collect();
        assert_eq!(
            values,
            [
                LiteralValue::Number("1.5".into()),
                LiteralValue::Number(".5".into()),
                LiteralValue::Number("2e10".into()),
                LiteralValue::Number("1E-3".into()),
                LiteralValue::Number("18446744073709551616".into()),
                LiteralValue::Bits("0x1F".into()),
                LiteralValue::Bits("X'0a'".into()),
                LiteralValue::Bits("b'01'".into()),
                LiteralValue::Bits("0b11".into()),
                LiteralValue::Int(7),
            ]
        );
    }

    #[test]
    fn names_that_look_like_numbers_stay_names() {
        let g = d("SELECT t.5x, 1abc, `a``b 1`, db1.t2 FROM x");
        assert_eq!(g.text, "SELECT t . 5x , 1abc , `a``b 1` , db1 . t2 FROM x");
        assert_eq!(d("SELECT .5").literals.len(), 1);
        assert!(g.literals.is_empty());
    }

    #[test]
    fn placeholders_and_comments() {
        let g = d("/* c */ UPDATE t SET a = ? # x\n WHERE id = ?");
        assert_eq!(g.text, "UPDATE t SET a = ? WHERE id = ?");
        assert_eq!(g.literals.len(), 2);
        assert!(g
            .literals
            .iter()
            .all(|l| l.value == LiteralValue::Placeholder));
        // `--x` is two minus signs.
        assert_eq!(d("SELECT 1--1").text, "SELECT ? - - ?");
    }

    #[test]
    fn texts_that_are_not_cached() {
        for sql in [
            "SELECT /*!50000 1 */",
            "SELECT /*M!100100 1 */",
            "SELECT 'open",
            "SELECT `open",
            "SELECT 1 /* open",
        ] {
            assert!(digest(sql.as_bytes()).is_none(), "{sql}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The values of a point select never change its digest, and come back exactly.
        #[test]
        fn values_do_not_change_the_digest(id in any::<i64>(), s in "[ -~]{0,20}") {
            let esc = s.replace('\\', "\\\\").replace('\'', "''");
            let sql = format!("SELECT c FROM t WHERE id = {} AND k = '{esc}'", id.unsigned_abs());
            let g = digest(sql.as_bytes()).unwrap();
            prop_assert_eq!(&g.text, "SELECT c FROM t WHERE id = ? AND k = ?");
            prop_assert_eq!(&g.literals[1].value, &LiteralValue::Str(s.into_bytes()));
        }

        /// Total: any bytes give a digest or `None`, never a panic; every span is in bounds
        /// and the spans are in order without overlap.
        #[test]
        fn total_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(g) = digest(&bytes) {
                let mut at = 0;
                for l in &g.literals {
                    prop_assert!(l.span.start >= at && l.span.end <= bytes.len());
                    at = l.span.end;
                }
            }
        }
    }
}
