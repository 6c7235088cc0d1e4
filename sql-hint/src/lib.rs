//! ShardingKey hints: find, parse and strip the hint comments applications put in their SQL.
//!
//! Two forms, one [`Hint`] (the grammar and the mapping are in `sql-hint/README.md`):
//! - native: `/* rb: sharding_key=10086, room='B' */`
//! - ShardingSphere: `/* SHARDINGSPHERE_HINT: SHARDING_DATABASE_VALUE=1, DATA_SOURCE_NAME=ds_0 */`
//!
//! [`parse`] scans the statement once, honouring string literals (`'…'`, `"…"`
//! with backslash and doubled-quote escapes), quoted identifiers (`` `…` ``), line comments
//! (`-- `, `#`) and block comments; only a block comment whose text starts with `rb:` or
//! `SHARDINGSPHERE_HINT:` is a hint. MySQL's `/*! … */` and `/*+ … */` comments are never hints.
//! The stripped SQL borrows from the input when the hint leads or trails the statement, so
//! statements that differ only in their hint strip to equal text without allocating.
//!
//! Invariants: [`parse`] is total (any bytes give a result or a [`HintError`], never a panic);
//! outside the hint comments the stripped SQL is the input, except the whitespace at a hint's
//! edges and the separator (a space, or `/**/` after a `-`) that keeps neighbouring tokens apart.
//! Only the bytes that can change the lexer's state (quotes, comment starts, the backslash) are
//! visited: SSE2 compares find them sixteen bytes at a time and a 64-bit mask per chunk hands
//! them out in order (a portable fallback does the same byte by byte on other targets).
//!
//! Measured cost (criterion, `cargo bench -p sql-hint`, 2-vCPU VM, four runs, quietest first):
//! a 200-byte statement parses in 24–31 ns without a hint, 136–178 ns with a leading hint and
//! 152–277 ns with a trailing one (`benches/README.md`).

use std::borrow::Cow;
use std::fmt;

/// The business key a statement belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ShardingKey {
    Int(i64),
    Str(String),
}

impl fmt::Display for ShardingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardingKey::Int(v) => write!(f, "{v}"),
            ShardingKey::Str(s) => write_quoted(f, s),
        }
    }
}

/// Which ShardingSphere sharding value a table-qualified entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// `t.SHARDING_DATABASE_VALUE`
    Database,
    /// `t.SHARDING_TABLE_VALUE` (or unqualified `SHARDING_TABLE_VALUE`, table `""`)
    Table,
}

/// Everything a hint can say. Empty fields were not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hint {
    /// `sharding_key` / `sk`; ShardingSphere `SHARDING_DATABASE_VALUE`.
    pub sharding_key: Option<ShardingKey>,
    /// `route_code`: skips the ShardingKey → route code function.
    pub route_code: Option<u32>,
    /// `room`: force a room (honoured for privileged users only).
    pub room: Option<String>,
    /// `node`: force a data node `ds.table` or a data source `ds`; ShardingSphere `DATA_SOURCE_NAME`.
    pub node: Option<String>,
    /// `trace`: log this statement's routing decision.
    pub trace: Option<bool>,
    /// ShardingSphere table-qualified values, in the order written.
    pub table_values: Vec<(String, ValueKind, ShardingKey)>,
    /// ShardingSphere `WRITE_ROUTE_ONLY`.
    pub write_route_only: Option<bool>,
    /// ShardingSphere `SKIP_SQL_REWRITE`.
    pub skip_sql_rewrite: Option<bool>,
}

/// Why a hint was refused: where (byte offset in the statement) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad SQL hint at byte {offset}: {kind}")]
pub struct HintError {
    pub offset: usize,
    pub kind: HintErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HintErrorKind {
    #[error("the comment is never closed with */")]
    Unterminated,
    #[error("unknown hint key `{key}` (known: {known})")]
    UnknownKey { key: String, known: &'static str },
    #[error("more than {0} table values in one statement")]
    TooManyTableValues(usize),
    #[error("hint key `{0}` is given twice")]
    DuplicateKey(String),
    #[error("expected `key=value`, found `{0}`")]
    Syntax(String),
    #[error("value of `{key}` is malformed: {why}")]
    BadValue { key: String, why: String },
    #[error("value of `{key}` is out of range: {why}")]
    OutOfRange { key: String, why: String },
}

/// A statement with its hint removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// The merged hint of every hint comment, `None` if there was none.
    pub hint: Option<Hint>,
    /// The SQL without hint comments; borrowed unless a hint stood between tokens.
    pub sql: Cow<'a, [u8]>,
}

/// Finds, parses and strips every hint comment of `sql`.
pub fn parse(sql: &[u8]) -> Result<Parsed<'_>, HintError> {
    parse_with(sql, true)
}

/// [`parse`] for a session whose sql_mode has NO_BACKSLASH_ESCAPES (`backslash_escapes =
/// false`): a backslash then ends nothing and escapes nothing in string literals.
pub fn parse_with(sql: &[u8], backslash_escapes: bool) -> Result<Parsed<'_>, HintError> {
    // Fast path: no block comment at all, nothing to do.
    if !has_block_comment(sql) {
        return Ok(Parsed {
            hint: None,
            sql: Cow::Borrowed(sql),
        });
    }
    let mut spans = Spans::default();
    let mut hint = Hint::default();
    let mut seen = Seen::default();
    let mut open_comment = None;
    let mut i = 0;
    let mut specials = Specials::new(sql);
    // Most bytes are none of the few that start a quote or a comment: only those are visited.
    while let Some(p) = specials.next(i) {
        i = p;
        match sql[i] {
            b'\'' | b'"' | b'`' => i = skip_quoted(&mut specials, i, backslash_escapes),
            b'#' => i = skip_line(sql, i),
            b'-' if sql.get(i + 1) == Some(&b'-') && sql.get(i + 2).is_none_or(|c| *c <= b' ') => {
                i = skip_line(sql, i)
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                let end = find_comment_end(sql, i + 2);
                let body_start = i + 2;
                if let Some(form) = hint_form(&sql[body_start..end.map_or(sql.len(), |e| e - 2)]) {
                    let Some(end) = end else {
                        return Err(HintError {
                            offset: i,
                            kind: HintErrorKind::Unterminated,
                        });
                    };
                    let (prefix_len, is_ss) = form;
                    let text_start = body_start + prefix_len;
                    parse_pairs(sql, text_start, end - 2, is_ss, &mut hint, &mut seen)?;
                    spans.push((i, end));
                    i = end;
                    // No `/` left means no comment left: the common single hint stops here.
                    if memchr::memchr(b'/', &sql[i..]).is_none() {
                        break;
                    }
                } else {
                    // An ordinary comment (or /*! */, /*+ */): skipped, kept in the SQL. One that
                    // never ends would hide any hint after it: refused after the loop.
                    if end.is_none() {
                        open_comment = Some(i);
                    }
                    i = end.unwrap_or(sql.len());
                }
            }
            _ => i += 1,
        }
    }
    if let Some(offset) = open_comment {
        return Err(HintError {
            offset,
            kind: HintErrorKind::Unterminated,
        });
    }
    let spans = spans.as_slice();
    if spans.is_empty() {
        return Ok(Parsed {
            hint: None,
            sql: Cow::Borrowed(sql),
        });
    }
    Ok(Parsed {
        hint: Some(hint),
        sql: strip(sql, spans),
    })
}

/// Bit `k` set where `block[k]` (sixteen bytes) is one of `needles`: SSE2, one compare per
/// needle, OR-ed, then the byte mask. This holds the workspace's only `unsafe`: calling an SSE2
/// function, which every x86_64 CPU has (the `cfg` checks that the target enables it); no
/// pointer is involved, the bytes are loaded through safe slice reads.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
#[allow(unsafe_code)]
fn block_mask(block: &[u8], needles: &[u8]) -> u16 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm_set_epi64x,
        _mm_setzero_si128,
    };
    #[inline]
    #[target_feature(enable = "sse2")]
    fn hits(b: &[u8], needles: &[u8]) -> u16 {
        let lo = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
        let hi = u64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
        let v = _mm_set_epi64x(hi as i64, lo as i64);
        let mut m = _mm_setzero_si128();
        for &n in needles {
            m = _mm_or_si128(m, _mm_cmpeq_epi8(v, _mm_set1_epi8(n as i8)));
        }
        _mm_movemask_epi8(m) as u16
    }
    // SAFETY: SSE2 is enabled for this target (the `cfg` on this function).
    unsafe { hits(block, needles) }
}

/// Index of the first byte at or after `from` that is one of `needles`.
///
/// On x86_64, sixteen bytes at a time ([`block_mask`]); the lowest bit of the mask is the hit.
/// The last partial block is the statement's last sixteen bytes with the already searched ones
/// shifted out; statements under sixteen bytes go byte by byte.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn find_any(s: &[u8], from: usize, needles: &[u8]) -> Option<usize> {
    let mut i = from;
    while i + 16 <= s.len() {
        let mask = block_mask(&s[i..i + 16], needles);
        if mask != 0 {
            return Some(i + mask.trailing_zeros() as usize);
        }
        i += 16;
    }
    if i >= s.len() {
        return None;
    }
    if s.len() < 16 {
        return s[i..]
            .iter()
            .position(|b| needles.contains(b))
            .map(|p| i + p);
    }
    // The last sixteen bytes, overlapping what was searched already: drop the bits before `i`.
    let start = s.len() - 16;
    let mask = block_mask(&s[start..], needles) >> (i - start);
    (mask != 0).then(|| i + mask.trailing_zeros() as usize)
}

/// Index of the first byte at or after `from` that is one of `needles`, eight bytes at a time.
///
/// For each needle `n` the word `w ^ n·0x01…01` has a zero byte exactly where `w` has `n`; the
/// classic `(x - 0x01…01) & !x & 0x80…80` marks zero bytes, and its lowest set bit is always a
/// true match (false positives can only appear above a true one).
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn find_any(s: &[u8], from: usize, needles: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while i + 8 <= s.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&s[i..i + 8]);
        let w = u64::from_le_bytes(word);
        let mut mask = 0;
        for &n in needles {
            let x = w ^ (LO * n as u64);
            mask |= x.wrapping_sub(LO) & !x & HI;
        }
        if mask != 0 {
            return Some(i + (mask.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s.get(i..)?
        .iter()
        .position(|b| needles.contains(b))
        .map(|p| i + p)
}

/// The bytes that can change the lexer's state: quotes, comment starts and the backslash.
const SPECIAL: &[u8] = b"'\"`#-/\\";

/// The positions of [`SPECIAL`] bytes, found sixty-four bytes at a time and handed out in order,
/// so the lexer visits only them and never searches the same bytes twice.
struct Specials<'a> {
    sql: &'a [u8],
    /// Start of the current chunk; bit `k` of `bits` is the byte at `base + k`.
    base: usize,
    bits: u64,
}

impl<'a> Specials<'a> {
    fn new(sql: &'a [u8]) -> Self {
        Specials {
            sql,
            base: 0,
            bits: chunk_mask(sql, 0),
        }
    }

    /// The first special byte at or after `i` (which never goes backwards between calls).
    #[inline]
    fn next(&mut self, i: usize) -> Option<usize> {
        if i >= self.base + 64 {
            self.base = i;
            self.bits = chunk_mask(self.sql, i);
        } else if i > self.base {
            self.bits &= !0u64 << (i - self.base);
        }
        loop {
            if self.bits != 0 {
                return Some(self.base + self.bits.trailing_zeros() as usize);
            }
            self.base += 64;
            if self.base >= self.sql.len() {
                return None;
            }
            self.bits = chunk_mask(self.sql, self.base);
        }
    }
}

/// Bit `k` set where `sql[base + k]` is a [`SPECIAL`] byte, for the up to 64 bytes from `base`.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn chunk_mask(sql: &[u8], base: usize) -> u64 {
    let len = sql.len();
    if len < 16 {
        return byte_mask(sql, base);
    }
    let mut mask = 0u64;
    for k in 0..4 {
        let off = base + 16 * k;
        if off + 16 <= len {
            mask |= u64::from(block_mask(&sql[off..off + 16], SPECIAL)) << (16 * k);
        } else {
            if off < len {
                // The statement's last sixteen bytes, with those before `off` shifted out.
                let last = block_mask(&sql[len - 16..], SPECIAL) >> (off + 16 - len);
                mask |= u64::from(last) << (16 * k);
            }
            break;
        }
    }
    mask
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn chunk_mask(sql: &[u8], base: usize) -> u64 {
    byte_mask(sql, base)
}

/// [`chunk_mask`] one byte at a time.
fn byte_mask(sql: &[u8], base: usize) -> u64 {
    let chunk = sql.get(base..).unwrap_or_default();
    chunk
        .iter()
        .take(64)
        .enumerate()
        .filter(|(_, b)| SPECIAL.contains(b))
        .fold(0, |m, (k, _)| m | 1 << k)
}

#[inline]
fn has_block_comment(sql: &[u8]) -> bool {
    // `contains` on bytes is core's word-at-a-time memchr: most statements have no `/` at all.
    // A `/` without `*` (division) is rare; the full scan sorts it out.
    memchr::memchr(b'/', sql).is_some()
}

/// Keys already given in this statement (a repeated key is an error).
#[derive(Default)]
struct Seen(u8);

impl Seen {
    fn once(&mut self, bit: u8, name: &str) -> Result<(), HintErrorKind> {
        if self.0 & bit != 0 {
            return Err(HintErrorKind::DuplicateKey(name.to_string()));
        }
        self.0 |= bit;
        Ok(())
    }
}

/// Index just past the closing quote of the literal or identifier starting at `i`.
#[inline]
fn skip_quoted(specials: &mut Specials<'_>, i: usize, backslash: bool) -> usize {
    let sql = specials.sql;
    let q = sql[i];
    let backslash = backslash && q != b'`';
    let mut j = i + 1;
    while let Some(p) = specials.next(j) {
        let b = sql[p];
        if b == b'\\' && backslash {
            j = p + 2;
        } else if b == q {
            if sql.get(p + 1) == Some(&q) {
                j = p + 2;
            } else {
                return p + 1;
            }
        } else {
            j = p + 1;
        }
    }
    sql.len()
}

fn skip_line(sql: &[u8], i: usize) -> usize {
    memchr::memchr(b'\n', &sql[i..]).map_or(sql.len(), |p| i + p + 1)
}

/// Index just past `*/`, searching from `from`; `None` if the comment never ends.
#[inline]
fn find_comment_end(sql: &[u8], from: usize) -> Option<usize> {
    let mut j = from;
    while let Some(star) = find_any(sql, j, b"*") {
        if sql.get(star + 1) == Some(&b'/') {
            return Some(star + 2);
        }
        j = star + 1;
    }
    None
}

/// The hint comments found, without a heap allocation for the usual one or two.
#[derive(Default)]
struct Spans {
    inline: [(usize, usize); 4],
    len: usize,
    more: Vec<(usize, usize)>,
}

impl Spans {
    fn push(&mut self, span: (usize, usize)) {
        if self.len < self.inline.len() {
            self.inline[self.len] = span;
            self.len += 1;
        } else {
            if self.more.is_empty() {
                self.more.extend_from_slice(&self.inline);
            }
            self.more.push(span);
        }
    }

    fn as_slice(&self) -> &[(usize, usize)] {
        if self.more.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.more
        }
    }
}

/// If a comment body is a hint: the length of its prefix (whitespace and the marker) and
/// whether it is the ShardingSphere form.
fn hint_form(body: &[u8]) -> Option<(usize, bool)> {
    if matches!(body.first(), Some(b'!' | b'+')) {
        return None; // MySQL executable comments and optimizer hints
    }
    let ws = body.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let rest = &body[ws..];
    const NATIVE: &[u8] = b"rb:";
    const SS: &[u8] = b"SHARDINGSPHERE_HINT:";
    if rest.len() >= NATIVE.len() && rest[..NATIVE.len()].eq_ignore_ascii_case(NATIVE) {
        Some((ws + NATIVE.len(), false))
    } else if rest.len() >= SS.len() && rest[..SS.len()].eq_ignore_ascii_case(SS) {
        Some((ws + SS.len(), true))
    } else {
        None
    }
}

/// Parses `key=value` pairs in `sql[from..to]` into `hint`.
///
/// Keys and values stay bytes: only a value that becomes text (a quoted ShardingKey, a name) is
/// checked for UTF-8, so the common `sharding_key=10086` costs no conversion at all.
fn parse_pairs(
    sql: &[u8],
    from: usize,
    to: usize,
    shardingsphere: bool,
    hint: &mut Hint,
    seen: &mut Seen,
) -> Result<(), HintError> {
    let mut i = from;
    let err = |offset: usize, kind| HintError { offset, kind };
    let is_sep = |b: u8| b.is_ascii_whitespace() || b == b',';
    loop {
        while i < to && is_sep(sql[i]) {
            i += 1;
        }
        if i >= to {
            return Ok(());
        }
        let key_start = i;
        while i < to && (sql[i].is_ascii_alphanumeric() || matches!(sql[i], b'_' | b'.' | b'$')) {
            i += 1;
        }
        let key = &sql[key_start..i];
        while i < to && sql[i].is_ascii_whitespace() {
            i += 1;
        }
        if key.is_empty() || i >= to || sql[i] != b'=' {
            let end = (key_start + 20).min(to);
            return Err(err(
                key_start,
                HintErrorKind::Syntax(lossy(&sql[key_start..end])),
            ));
        }
        i += 1;
        while i < to && sql[i].is_ascii_whitespace() {
            i += 1;
        }
        let value_start = i;
        let (value, quoted, next) = read_value(sql, i, to).map_err(|why| {
            err(
                value_start,
                HintErrorKind::BadValue {
                    key: lossy(key),
                    why,
                },
            )
        })?;
        i = next;
        if i < to && !is_sep(sql[i]) {
            return Err(err(
                i,
                HintErrorKind::Syntax(lossy(&sql[value_start..(i + 1).min(to)])),
            ));
        }
        let v = Value {
            bytes: &value,
            quoted,
        };
        let apply = if shardingsphere {
            apply_shardingsphere(hint, key, v, seen)
        } else {
            apply_native(hint, key, v, seen)
        };
        apply.map_err(|kind| {
            err(
                if matches!(
                    kind,
                    HintErrorKind::BadValue { .. } | HintErrorKind::OutOfRange { .. }
                ) {
                    value_start
                } else {
                    key_start
                },
                kind,
            )
        })?;
    }
}

/// A value: quoted (with `\` escapes and doubled quotes) or a bare token. Returns its bytes
/// (borrowed unless it had escapes), whether it was quoted, and the index after it.
fn read_value(sql: &[u8], i: usize, to: usize) -> Result<(Cow<'_, [u8]>, bool, usize), String> {
    if i >= to {
        return Err("missing value".into());
    }
    let q = sql[i];
    if q == b'\'' || q == b'"' {
        // Without escapes the value is a slice of the statement: no allocation.
        if let Some(len) = sql[i + 1..to].iter().position(|b| *b == q || *b == b'\\') {
            let end = i + 1 + len;
            if sql[end] == q && sql.get(end + 1).is_none_or(|b| *b != q || end + 1 >= to) {
                return Ok((Cow::Borrowed(&sql[i + 1..end]), true, end + 1));
            }
        }
        let mut out = Vec::new();
        let mut j = i + 1;
        while j < to {
            let b = sql[j];
            if b == b'\\' {
                let Some(&e) = sql.get(j + 1).filter(|_| j + 1 < to) else {
                    return Err("a backslash ends the value".into());
                };
                out.push(match e {
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'0' => 0,
                    other => other,
                });
                j += 2;
            } else if b == q {
                if j + 1 < to && sql[j + 1] == q {
                    out.push(q);
                    j += 2;
                } else {
                    return Ok((Cow::Owned(out), true, j + 1));
                }
            } else {
                out.push(b);
                j += 1;
            }
        }
        return Err("the quoted value is never closed".into());
    }
    let mut j = i;
    while j < to && !(sql[j].is_ascii_whitespace() || sql[j] == b',') {
        j += 1;
    }
    if j == i {
        return Err("missing value".into());
    }
    Ok((Cow::Borrowed(&sql[i..j]), false, j))
}

/// A hint value as written: its bytes (unescaped) and whether it was quoted.
#[derive(Clone, Copy)]
struct Value<'v> {
    bytes: &'v [u8],
    quoted: bool,
}

impl Value<'_> {
    fn shown(&self) -> String {
        lossy(self.bytes)
    }

    fn text(&self, key: &[u8]) -> Result<&str, HintErrorKind> {
        std::str::from_utf8(self.bytes).map_err(|_| bad(key, "the value is not UTF-8"))
    }

    /// The value as an unquoted run of ASCII digits, if it is one.
    fn digits(&self) -> Option<&[u8]> {
        let d = self.bytes;
        (!self.quoted && !d.is_empty() && d.iter().all(u8::is_ascii_digit)).then_some(d)
    }
}

/// Accumulates decimal digits as a negative number (so `i64::MIN` fits); `None` on overflow.
fn negative_decimal(digits: &[u8]) -> Option<i64> {
    digits.iter().try_fold(0i64, |n, d| {
        n.checked_mul(10)?.checked_sub(i64::from(d - b'0'))
    })
}

const SHARDING_KEY: u8 = 1;
const ROUTE_CODE: u8 = 1 << 1;
const ROOM: u8 = 1 << 2;
const NODE: u8 = 1 << 3;
const TRACE: u8 = 1 << 4;
const WRITE_ROUTE_ONLY: u8 = 1 << 5;
const SKIP_SQL_REWRITE: u8 = 1 << 6;

fn bad(key: &[u8], why: impl Into<String>) -> HintErrorKind {
    HintErrorKind::BadValue {
        key: lossy(key),
        why: why.into(),
    }
}

fn sharding_key(key: &[u8], v: Value<'_>) -> Result<ShardingKey, HintErrorKind> {
    if v.quoted {
        return Ok(ShardingKey::Str(v.text(key)?.to_string()));
    }
    let (negative, digits) = match v.bytes {
        [b'-', rest @ ..] => (true, rest),
        all => (false, all),
    };
    let digits = Value {
        bytes: digits,
        quoted: false,
    };
    let Some(digits) = digits.digits() else {
        return Err(bad(
            key,
            format!("`{}` is neither an integer nor a quoted string", v.shown()),
        ));
    };
    negative_decimal(digits)
        .and_then(|n| if negative { Some(n) } else { n.checked_neg() })
        .map(ShardingKey::Int)
        .ok_or_else(|| HintErrorKind::OutOfRange {
            key: lossy(key),
            why: format!(
                "{} does not fit a 64-bit signed integer (quote it to use it as a string)",
                v.shown()
            ),
        })
}

fn route_code(key: &[u8], v: Value<'_>) -> Result<u32, HintErrorKind> {
    let Some(digits) = v.digits() else {
        return Err(bad(
            key,
            format!("`{}` is not a non-negative integer", v.shown()),
        ));
    };
    negative_decimal(digits)
        .and_then(|n| u32::try_from(n.checked_neg()?).ok())
        .ok_or_else(|| HintErrorKind::OutOfRange {
            key: lossy(key),
            why: format!("{} exceeds {}", v.shown(), u32::MAX),
        })
}

fn boolean(key: &[u8], v: Value<'_>) -> Result<bool, HintErrorKind> {
    let is = |w: &str| v.bytes.eq_ignore_ascii_case(w.as_bytes());
    if is("true") || is("1") || is("on") || is("yes") {
        Ok(true)
    } else if is("false") || is("0") || is("off") || is("no") {
        Ok(false)
    } else {
        Err(bad(
            key,
            format!("`{}` is not a boolean (true/false)", v.shown()),
        ))
    }
}

fn name(key: &[u8], value: &[u8], allow_dot: bool) -> Result<String, HintErrorKind> {
    let ok_part = |p: &[u8]| {
        !p.is_empty()
            && p.iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'-'))
    };
    let parts = value.split(|b| *b == b'.').count();
    if parts > if allow_dot { 2 } else { 1 } || !value.split(|b| *b == b'.').all(ok_part) {
        let shape = if allow_dot {
            "`ds` or `ds.table`"
        } else {
            "a name"
        };
        return Err(bad(
            key,
            format!(
                "`{}` is not {shape} (letters, digits, `_`, `$`, `-`)",
                lossy(value)
            ),
        ));
    }
    // ASCII by the check above, so nothing is replaced.
    Ok(lossy(value))
}

fn apply_native(
    h: &mut Hint,
    key: &[u8],
    v: Value<'_>,
    seen: &mut Seen,
) -> Result<(), HintErrorKind> {
    let is = |k: &str| key.eq_ignore_ascii_case(k.as_bytes());
    if is("sharding_key") || is("sk") {
        seen.once(SHARDING_KEY, "sharding_key")?;
        h.sharding_key = Some(sharding_key(key, v)?);
    } else if is("route_code") {
        seen.once(ROUTE_CODE, "route_code")?;
        h.route_code = Some(route_code(key, v)?);
    } else if is("room") {
        seen.once(ROOM, "room")?;
        h.room = Some(name(key, v.bytes, false)?);
    } else if is("node") {
        seen.once(NODE, "node")?;
        h.node = Some(name(key, v.bytes, true)?);
    } else if is("trace") {
        seen.once(TRACE, "trace")?;
        h.trace = Some(boolean(key, v)?);
    } else {
        return Err(HintErrorKind::UnknownKey {
            key: lossy(key),
            known: NATIVE_KEYS,
        });
    }
    Ok(())
}

/// Whether `key` is ShardingSphere's `name` in upper snake case or camelCase (any case).
fn ss_key(key: &[u8], name: &str) -> bool {
    let mut k = key.iter().filter(|b| **b != b'_');
    let mut n = name.bytes().filter(|b| *b != b'_');
    loop {
        match (k.next(), n.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(&b) => {}
            _ => return false,
        }
    }
}

/// ShardingSphere keys, upper snake case or camelCase, case-insensitive.
fn apply_shardingsphere(
    h: &mut Hint,
    key: &[u8],
    v: Value<'_>,
    seen: &mut Seen,
) -> Result<(), HintErrorKind> {
    let (table, bare) = match key.iter().rposition(|b| *b == b'.') {
        Some(dot) => (Some(&key[..dot]), &key[dot + 1..]),
        None => (None, key),
    };
    if ss_key(bare, "SHARDING_DATABASE_VALUE") {
        let value = sharding_key(key, v)?;
        match table {
            None => {
                seen.once(SHARDING_KEY, "sharding_key")?;
                h.sharding_key = Some(value);
            }
            Some(t) => {
                push_table_value(h, key, (name(key, t, false)?, ValueKind::Database, value))?
            }
        }
    } else if ss_key(bare, "SHARDING_TABLE_VALUE") {
        let t = match table {
            Some(t) => name(key, t, false)?,
            None => String::new(),
        };
        let value = sharding_key(key, v)?;
        push_table_value(h, key, (t, ValueKind::Table, value))?;
    } else if table.is_none() && ss_key(bare, "DATA_SOURCE_NAME") {
        seen.once(NODE, "node")?;
        h.node = Some(name(key, v.bytes, true)?);
    } else if table.is_none() && ss_key(bare, "WRITE_ROUTE_ONLY") {
        seen.once(WRITE_ROUTE_ONLY, "write_route_only")?;
        h.write_route_only = Some(boolean(key, v)?);
    } else if table.is_none() && ss_key(bare, "SKIP_SQL_REWRITE") {
        seen.once(SKIP_SQL_REWRITE, "skip_sql_rewrite")?;
        h.skip_sql_rewrite = Some(boolean(key, v)?);
    } else {
        return Err(HintErrorKind::UnknownKey {
            key: lossy(key),
            known: SS_KEYS,
        });
    }
    Ok(())
}

const NATIVE_KEYS: &str = "sharding_key, sk, route_code, room, node, trace";
const SS_KEYS: &str =
    "SHARDING_DATABASE_VALUE, [table.]SHARDING_DATABASE_VALUE, [table.]SHARDING_TABLE_VALUE, \
                       DATA_SOURCE_NAME, WRITE_ROUTE_ONLY, SKIP_SQL_REWRITE (or camelCase)";

/// Bound on ShardingSphere table values per statement (each is checked against the others).
const MAX_TABLE_VALUES: usize = 64;

fn push_table_value(
    h: &mut Hint,
    key: &[u8],
    entry: (String, ValueKind, ShardingKey),
) -> Result<(), HintErrorKind> {
    if h.table_values.len() >= MAX_TABLE_VALUES {
        return Err(HintErrorKind::TooManyTableValues(MAX_TABLE_VALUES));
    }
    if h.table_values
        .iter()
        .any(|(t, k, _)| *t == entry.0 && *k == entry.1)
    {
        return Err(HintErrorKind::DuplicateKey(lossy(key)));
    }
    h.table_values.push(entry);
    Ok(())
}

/// Removes the hint spans. Whitespace at a span's edge goes with it; a span between two tokens
/// leaves one space so they stay apart. Borrows when every span touches the start or the end.
fn strip<'a>(sql: &'a [u8], spans: &[(usize, usize)]) -> Cow<'a, [u8]> {
    let ws = |b: &u8| b.is_ascii_whitespace();
    // Leading hints (only whitespace before and between them) and trailing ones.
    let mut lead = 0;
    let mut k = 0;
    while k < spans.len() && sql[lead..spans[k].0].iter().all(ws) {
        lead = spans[k].1;
        k += 1;
    }
    let mut trail = sql.len();
    let mut m = spans.len();
    // A hint right after `-` stays in the middle path, which keeps `--` from becoming a comment.
    while m > k
        && sql[spans[m - 1].1..trail].iter().all(ws)
        && sql[..spans[m - 1].0].last() != Some(&b'-')
    {
        trail = spans[m - 1].0;
        m -= 1;
    }
    let trim = |s: &'a [u8]| -> &'a [u8] {
        let a = s.iter().position(|b| !ws(b)).unwrap_or(s.len());
        let b = s.iter().rposition(|b| !ws(b)).map_or(a, |p| p + 1);
        &s[a..b.max(a)]
    };
    let (inner_from, inner_to) = (
        if k > 0 { lead } else { 0 },
        if m < spans.len() { trail } else { sql.len() },
    );
    if k == m {
        // No hint in the middle: a slice of the input.
        let s = &sql[inner_from..inner_to];
        return Cow::Borrowed(match (k > 0, m < spans.len()) {
            (true, true) => trim(s),
            (true, false) => &s[s.iter().position(|b| !ws(b)).unwrap_or(s.len())..],
            (false, true) => &s[..s.iter().rposition(|b| !ws(b)).map_or(0, |p| p + 1)],
            (false, false) => s,
        });
    }
    let mut out = Vec::with_capacity(inner_to - inner_from);
    let mut at = inner_from;
    for &(a, b) in &spans[k..m] {
        out.extend_from_slice(&sql[at..a]);
        let left_ws = out.last().is_none_or(ws);
        at = b;
        if out.last() == Some(&b'-') {
            // `1--/* hint */ 2` is `1 - -2`; dropping the comment would make `-- ` a line
            // comment and change the statement. An empty comment keeps the tokens apart.
            out.extend_from_slice(b"/**/");
        } else if left_ws {
            // `x /* hint */ y` becomes `x y`, as if the hint had never been written.
            while sql.get(at).is_some_and(ws) && at < inner_to {
                at += 1;
            }
        } else if sql.get(b).is_some_and(|c| !ws(c)) {
            out.push(b' ');
        }
    }
    out.extend_from_slice(&sql[at..inner_to]);
    let start = if k > 0 {
        out.iter().position(|b| !ws(b)).unwrap_or(out.len())
    } else {
        0
    };
    let end = if m < spans.len() {
        out.iter().rposition(|b| !ws(b)).map_or(start, |p| p + 1)
    } else {
        out.len()
    };
    Cow::Owned(out[start..end.max(start)].to_vec())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("'")?;
    for c in s.chars() {
        match c {
            '\'' => f.write_str("\\'")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            '\0' => f.write_str("\\0")?,
            // `*/` inside a value would end the comment: escape the slash.
            '/' => f.write_str("\\/")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("'")
}

impl fmt::Display for Hint {
    /// The native form, e.g. `/* rb: sharding_key=10086, room='B' */`. ShardingSphere-only
    /// fields are not rendered (the native language has no keys for them).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("/* rb:")?;
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            let s = if first { " " } else { ", " };
            first = false;
            f.write_str(s)
        };
        if let Some(k) = &self.sharding_key {
            sep(f)?;
            write!(f, "sharding_key={k}")?;
        }
        if let Some(r) = self.route_code {
            sep(f)?;
            write!(f, "route_code={r}")?;
        }
        if let Some(r) = &self.room {
            sep(f)?;
            f.write_str("room=")?;
            write_quoted(f, r)?;
        }
        if let Some(n) = &self.node {
            sep(f)?;
            f.write_str("node=")?;
            write_quoted(f, n)?;
        }
        if let Some(t) = self.trace {
            sep(f)?;
            write!(f, "trace={t}")?;
        }
        f.write_str(" */")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(sql: &str) -> (Option<Hint>, String) {
        let p = parse(sql.as_bytes()).unwrap_or_else(|e| panic!("{sql}: {e}"));
        (p.hint, String::from_utf8(p.sql.into_owned()).unwrap())
    }

    fn err(sql: &str) -> HintError {
        parse(sql.as_bytes()).expect_err(sql)
    }

    fn key(v: i64) -> Option<ShardingKey> {
        Some(ShardingKey::Int(v))
    }

    #[test]
    fn a_leading_hint_is_parsed_and_stripped_without_copying() {
        let sql = b"/* rb: sharding_key=10086 */ UPDATE t_order SET s = 1";
        let p = parse(sql).unwrap();
        assert_eq!(p.hint.unwrap().sharding_key, key(10086));
        assert!(matches!(p.sql, Cow::Borrowed(_)));
        assert_eq!(&*p.sql, b"UPDATE t_order SET s = 1");
    }

    #[test]
    fn a_trailing_hint_is_stripped_without_copying() {
        let p = parse(b"SELECT 1 /* RB: sk='abc', trace=true */  ").unwrap();
        let h = p.hint.unwrap();
        assert_eq!(
            (h.sharding_key, h.trace),
            (Some(ShardingKey::Str("abc".into())), Some(true))
        );
        assert!(matches!(p.sql, Cow::Borrowed(_)));
        assert_eq!(&*p.sql, b"SELECT 1");
    }

    #[test]
    fn statements_differing_only_in_their_hint_strip_to_the_same_text() {
        let a = ok("/* rb: sk=1 */ SELECT * FROM t WHERE id = ?").1;
        let b = ok("/*rb:sk=2*/SELECT * FROM t WHERE id = ?").1;
        let c = ok("SELECT * FROM t WHERE id = ?").1;
        assert_eq!((a.as_str(), b.as_str()), (c.as_str(), c.as_str()));
    }

    #[test]
    fn a_hint_between_tokens_leaves_one_space() {
        let (h, sql) = ok("SELECT/* rb: route_code=42 */1 FROM t");
        assert_eq!(h.unwrap().route_code, Some(42));
        assert_eq!(sql, "SELECT 1 FROM t");
        assert_eq!(ok("SELECT /* rb: sk=1 */ 1").1, "SELECT 1");
    }

    #[test]
    fn all_native_keys_with_comma_or_space_separators_and_quoting() {
        let (h, _) = ok(
            r#"/* rb: sk = "a\"b", route_code=7 room=B node='ds_1.t_order_05' trace=off */ SELECT 1"#,
        );
        let h = h.unwrap();
        assert_eq!(h.sharding_key, Some(ShardingKey::Str("a\"b".into())));
        assert_eq!(h.route_code, Some(7));
        assert_eq!(h.room.as_deref(), Some("B"));
        assert_eq!(h.node.as_deref(), Some("ds_1.t_order_05"));
        assert_eq!(h.trace, Some(false));
        let (h, _) = ok("/* rb: sharding_key='it''s' */ SELECT 1");
        assert_eq!(
            h.unwrap().sharding_key,
            Some(ShardingKey::Str("it's".into()))
        );
    }

    #[test]
    fn hints_inside_strings_identifiers_and_other_comments_are_not_hints() {
        for sql in [
            "SELECT '/* rb: sk=1 */'",
            "SELECT \"/* rb: sk=1 */\"",
            "SELECT `/* rb: sk=1 */`",
            "SELECT 'it\\'s /* rb: sk=1 */'",
            "SELECT 'it''s /* rb: sk=1 */'",
            "SELECT 1 -- /* rb: sk=1 */",
            "SELECT 1 # /* rb: sk=1 */",
            "SELECT 1 /* not a hint /* rb: sk=1 */",
            "SELECT /*! rb: sk=1 */ 1",
            "SELECT /*+ rb: sk=1 */ 1",
        ] {
            let p = parse(sql.as_bytes()).unwrap();
            assert_eq!(p.hint, None, "{sql}");
            assert_eq!(&*p.sql, sql.as_bytes(), "{sql} must stay untouched");
        }
    }

    #[test]
    fn nested_looking_comments_end_at_the_first_close() {
        // MySQL comments do not nest: the hint ends at the first */.
        let (h, sql) = ok("/* rb: sk=5 */ SELECT /* x /* y */ 1");
        assert_eq!(h.unwrap().sharding_key, key(5));
        assert_eq!(sql, "SELECT /* x /* y */ 1");
    }

    #[test]
    fn multibyte_utf8_around_the_hint_is_kept_intact() {
        let (h, sql) = ok("SELECT '雪' /* rb: sk='買家', room=B */ FROM 表");
        let h = h.unwrap();
        assert_eq!(h.sharding_key, Some(ShardingKey::Str("買家".into())));
        assert_eq!(sql, "SELECT '雪' FROM 表");
    }

    #[test]
    fn removing_a_hint_never_turns_a_double_minus_into_a_comment() {
        let (h, sql) = ok("SELECT 1--/* rb: sk=1 */ 2");
        assert_eq!(h.unwrap().sharding_key, key(1));
        assert_eq!(sql, "SELECT 1--/**/ 2");
    }

    #[test]
    fn a_double_minus_before_any_control_character_starts_a_line_comment() {
        for sql in [
            "SELECT 1 --\x01/* rb: sk=1 */ x",
            "SELECT 1 --\x0b/* rb: sk=1 */ x",
            "SELECT 1 --\t/* rb: sk=1 */",
        ] {
            let p = parse(sql.as_bytes()).unwrap();
            assert_eq!((p.hint, &*p.sql), (None, sql.as_bytes()), "{sql:?}");
        }
    }

    #[test]
    fn a_trailing_hint_after_a_minus_keeps_the_tokens_apart() {
        assert_eq!(
            ok("UPDATE t SET a=1--/* rb: sk=1 */").1,
            "UPDATE t SET a=1--/**/"
        );
        assert_eq!(ok("SELECT 'a'/* rb: sk=1 */'b'").1, "SELECT 'a' 'b'");
        assert_eq!(ok("SELECT 4//* rb: sk=1 */*2").1, "SELECT 4/ *2");
    }

    #[test]
    fn no_backslash_escapes_changes_where_strings_end() {
        let sql = b"SELECT '\\' /* rb: sk=1 */ 1";
        assert_eq!(
            parse(sql).unwrap().hint,
            None,
            "with escapes the hint is inside the string"
        );
        let p = parse_with(sql, false).unwrap();
        assert_eq!(p.hint.unwrap().sharding_key, key(1));
        assert_eq!(&*p.sql, b"SELECT '\\' 1");
    }

    #[test]
    fn an_unterminated_ordinary_comment_is_an_error_too() {
        let e = err("SELECT 1 /* just a comment");
        assert_eq!((e.offset, e.kind), (9, HintErrorKind::Unterminated));
    }

    #[test]
    fn shardingsphere_table_values_are_bounded() {
        let many: Vec<String> = (0..65)
            .map(|i| format!("t{i}.SHARDING_TABLE_VALUE={i}"))
            .collect();
        let sql = format!("/* SHARDINGSPHERE_HINT: {} */ SELECT 1", many.join(", "));
        assert_eq!(err(&sql).kind, HintErrorKind::TooManyTableValues(64));
        let e = err("/* SHARDINGSPHERE_HINT: NOPE=1 */ SELECT 1");
        assert!(e.to_string().contains("DATA_SOURCE_NAME"), "{e}");
    }

    #[test]
    fn a_statement_that_is_only_a_hint_strips_to_nothing() {
        let (h, sql) = ok("  /* rb: sk=1 */  ");
        assert_eq!(h.unwrap().sharding_key, key(1));
        assert_eq!(sql, "");
    }

    #[test]
    fn several_hints_merge_and_a_repeated_key_is_refused() {
        let (h, sql) = ok("/* rb: sk=1 */ SELECT 1 /* rb: trace=1 */");
        let h = h.unwrap();
        assert_eq!((h.sharding_key, h.trace), (key(1), Some(true)));
        assert_eq!(sql, "SELECT 1");
        let e = err("/* rb: sk=1 */ SELECT 1 /* rb: sharding_key=2 */");
        assert_eq!(e.kind, HintErrorKind::DuplicateKey("sharding_key".into()));
        assert_eq!(e.offset, 31);
    }

    #[test]
    fn errors_name_the_offset_and_the_problem() {
        let e = err("SELECT 1 /* rb: sk=1");
        assert_eq!((e.offset, e.kind), (9, HintErrorKind::Unterminated));
        let e = err("/* rb: shard=1 */ SELECT 1");
        assert_eq!(
            (e.offset, e.kind.clone()),
            (
                7,
                HintErrorKind::UnknownKey {
                    key: "shard".into(),
                    known: NATIVE_KEYS
                }
            )
        );
        assert!(
            e.to_string()
                .starts_with("bad SQL hint at byte 7: unknown hint key `shard`"),
            "{e}"
        );
        assert!(matches!(
            err("/* rb: sk */ SELECT 1").kind,
            HintErrorKind::Syntax(_)
        ));
        assert!(matches!(
            err("/* rb: sk=abc */ SELECT 1").kind,
            HintErrorKind::BadValue { .. }
        ));
        assert!(matches!(
            err("/* rb: sk='abc */ SELECT 1").kind,
            HintErrorKind::BadValue { .. }
        ));
        assert!(matches!(
            err("/* rb: trace=maybe */ SELECT 1").kind,
            HintErrorKind::BadValue { .. }
        ));
        assert!(matches!(
            err("/* rb: node=a.b.c */ SELECT 1").kind,
            HintErrorKind::BadValue { .. }
        ));
        assert!(matches!(
            err("/* rb: route_code=-1 */ SELECT 1").kind,
            HintErrorKind::BadValue { .. }
        ));
        let e = err("/* rb: route_code=4294967296 */ SELECT 1");
        assert_eq!(
            (e.offset, matches!(e.kind, HintErrorKind::OutOfRange { .. })),
            (18, true)
        );
        assert!(matches!(
            err("/* rb: sk=99999999999999999999 */ SELECT 1").kind,
            HintErrorKind::OutOfRange { .. }
        ));
        assert!(matches!(
            err("/* rb: sk=1x=2 */ SELECT 1").kind,
            HintErrorKind::BadValue { .. }
        ));
        assert!(matches!(
            err("/* rb: sk='a'b */ SELECT 1").kind,
            HintErrorKind::Syntax(_)
        ));
    }

    #[test]
    fn the_shardingsphere_form_maps_onto_the_same_hint() {
        let (h, sql) = ok("/* SHARDINGSPHERE_HINT: SHARDING_DATABASE_VALUE=1, t_order.SHARDING_TABLE_VALUE=2, DATA_SOURCE_NAME=ds_0, WRITE_ROUTE_ONLY=true, SKIP_SQL_REWRITE=true */ SELECT 1");
        let h = h.unwrap();
        assert_eq!(h.sharding_key, key(1));
        assert_eq!(
            h.table_values,
            vec![("t_order".to_string(), ValueKind::Table, ShardingKey::Int(2))]
        );
        assert_eq!(h.node.as_deref(), Some("ds_0"));
        assert_eq!(
            (h.write_route_only, h.skip_sql_rewrite),
            (Some(true), Some(true))
        );
        assert_eq!(sql, "SELECT 1");
        let (h, _) = ok("/* shardingsphere_hint: shardingDatabaseValue=7, t_user.shardingDatabaseValue='x', dataSourceName=ds_1, writeRouteOnly=false */ SELECT 1");
        let h = h.unwrap();
        assert_eq!(h.sharding_key, key(7));
        assert_eq!(
            h.table_values,
            vec![(
                "t_user".to_string(),
                ValueKind::Database,
                ShardingKey::Str("x".into())
            )]
        );
        assert_eq!(
            (h.node.as_deref(), h.write_route_only),
            (Some("ds_1"), Some(false))
        );
        let e = err("/* SHARDINGSPHERE_HINT: t.SHARDING_TABLE_VALUE=1, t.SHARDING_TABLE_VALUE=2 */ SELECT 1");
        assert!(matches!(e.kind, HintErrorKind::DuplicateKey(_)), "{e}");
        assert!(matches!(
            err("/* SHARDINGSPHERE_HINT: NOPE=1 */ SELECT 1").kind,
            HintErrorKind::UnknownKey { known: SS_KEYS, .. }
        ));
    }

    #[test]
    fn rendering_gives_text_that_parses_back() {
        let h = Hint {
            sharding_key: Some(ShardingKey::Str("a'b\\c*/d".into())),
            route_code: Some(9),
            room: Some("B".into()),
            node: Some("ds_1.t_2".into()),
            trace: Some(true),
            ..Hint::default()
        };
        let text = format!("{h} SELECT 1");
        assert_eq!(ok(&text), (Some(h), "SELECT 1".to_string()));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn word() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_$-]{1,12}"
    }

    fn native_hint() -> impl Strategy<Value = Hint> {
        (
            proptest::option::of(prop_oneof![
                any::<i64>().prop_map(ShardingKey::Int),
                any::<String>().prop_map(ShardingKey::Str)
            ]),
            proptest::option::of(any::<u32>()),
            proptest::option::of(word()),
            proptest::option::of((word(), proptest::option::of(word())).prop_map(
                |(a, b)| match b {
                    Some(b) => format!("{a}.{b}"),
                    None => a,
                },
            )),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(|(sharding_key, route_code, room, node, trace)| Hint {
                sharding_key,
                route_code,
                room,
                node,
                trace,
                ..Hint::default()
            })
    }

    proptest! {
        /// The SIMD chunk masks and the specials iterator agree with a byte-by-byte search,
        /// at every start, across chunk and block edges and in the short last block.
        #[test]
        fn special_byte_search_matches_a_plain_scan(
            sql in proptest::collection::vec(prop_oneof![
                4 => any::<u8>(),
                1 => proptest::sample::select(SPECIAL.to_vec()),
            ], 0..300),
            starts in proptest::collection::vec(0usize..320, 1..8),
        ) {
            for &base in &starts {
                prop_assert_eq!(chunk_mask(&sql, base), byte_mask(&sql, base), "base {}", base);
            }
            let mut sorted = starts.clone();
            sorted.sort_unstable();
            let mut specials = Specials::new(&sql);
            for i in sorted {
                let plain = sql.iter().enumerate().skip(i).find(|(_, b)| SPECIAL.contains(b));
                prop_assert_eq!(specials.next(i), plain.map(|(p, _)| p), "from {}", i);
            }
            for &from in &starts {
                let plain = sql.iter().enumerate().skip(from).find(|(_, b)| b"'/".contains(b));
                prop_assert_eq!(find_any(&sql, from, b"'/"), plain.map(|(p, _)| p));
            }
        }

        /// Rendering a hint and parsing it back gives the same hint.
        #[test]
        fn render_then_parse_round_trips(h in native_hint(), sql in "[a-zA-Z0-9 =,()*]{0,40}") {
            let text = format!("{h} {sql}");
            let p = parse(text.as_bytes()).unwrap();
            prop_assert_eq!(p.hint, Some(h));
            prop_assert_eq!(&*p.sql, sql.trim_start().as_bytes());
        }

        /// Stripping removes the hint comment and nothing else: the SQL around it is unchanged
        /// apart from whitespace at the hint's edges and the separator (a space, or `/**/` after
        /// a `-`) that keeps the neighbouring tokens apart.
        #[test]
        fn stripping_keeps_everything_outside_the_hint(
            before in "[a-zA-Z0-9 ,=()'\"#*/\\\n-]{0,30}",
            after in "[a-zA-Z0-9 ,=()'\"#*/\\\n-]{0,30}",
            h in native_hint(),
        ) {
            let text = format!("{before}{h}{after}");
            let Ok(p) = parse(text.as_bytes()) else { return Ok(()) };
            // Only when our hint is the one found (not swallowed by a string or a comment in
            // `before`, and no other hint-shaped text around).
            prop_assume!(p.hint.as_ref() == Some(&h));
            let squash = |s: &[u8]| {
                let s = String::from_utf8_lossy(s).replace("/**/", "");
                s.bytes().filter(|b| !b.is_ascii_whitespace()).collect::<Vec<u8>>()
            };
            prop_assert_eq!(squash(&p.sql), squash(format!("{before}{after}").as_bytes()));
        }

        /// Any bytes at all: a result or an error, never a panic.
        #[test]
        fn parsing_is_total(sql in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&sql);
        }

        /// Hint-shaped noise too.
        #[test]
        fn parsing_is_total_on_hint_like_text(parts in proptest::collection::vec(prop_oneof![
            Just("/*"), Just("*/"), Just(" rb:"), Just("SHARDINGSPHERE_HINT:"), Just("sk="), Just("'"), Just("\""),
            Just("\\"), Just(","), Just("="), Just("1"), Just("x"), Just("`"), Just("--"), Just("#"), Just("\n"),
            Just("t."), Just("/*!"), Just(" ")], 0..30)) {
            let _ = parse(parts.concat().as_bytes());
        }
    }
}

#[cfg(test)]
mod many_hints {
    use super::*;

    #[test]
    fn more_hints_than_the_inline_span_storage_are_all_stripped() {
        let sql = "/* rb: sk=1 */ SELECT /* rb: trace=1 */ 1, /* rb: room=B */ 2, /* rb: node=ds */ 3, /* rb: route_code=4 */ 4 /* rb: */";
        let p = parse(sql.as_bytes()).unwrap();
        let h = p.hint.unwrap();
        assert_eq!((h.route_code, h.node.as_deref()), (Some(4), Some("ds")));
        assert_eq!(&*p.sql, b"SELECT 1, 2, 3, 4");
    }
}

#[cfg(test)]
mod fuzz_regressions {
    /// The first input cargo fuzz found (sql-hint/fuzz/regressions/): stripping a hint after
    /// `--` turned it into a line comment and uncovered a hint that had been inside a string.
    #[test]
    fn crash_fd9cc963_strips_to_sql_without_hints() {
        let input = include_bytes!("../fuzz/regressions/crash-fd9cc963");
        if let Ok(p) = super::parse(input) {
            if p.hint.is_some() {
                if let Ok(again) = super::parse(&p.sql) {
                    assert!(again.hint.is_none());
                }
            }
        }
    }
}
