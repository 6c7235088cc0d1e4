//! The plan cache (issue 7): statements that differ only in their literal values share one
//! analysis. A statement's [`digest`](crate::digest) (its text with literals replaced by `?`)
//! keys a bounded LRU cache of [`Facts`] made by parsing the digest text once with sqlparser;
//! each statement then supplies its own literal values as the parameters of that analysis.
//!
//! The cache never trusts the digest blindly. On a miss the statement itself is parsed too, and
//! the template's facts with the statement's values bound in must equal the statement's own
//! facts; when they differ (a negative number, `X'…'`, a literal inside an expression the
//! analysis keeps as text, a `DECIMAL(10,2)` the template cannot parse…) the digest is marked
//! *parse always* and every statement of that shape is parsed in full, as without a cache.
//! The digest decides the statement's structure; the literal values only fill operands, so a
//! shape that verified once is right for every statement with that digest. Where the digest's
//! lexer and sqlparser could read one literal differently, the statement is parsed in full
//! instead, whatever the cache holds: a string with a backslash escape (the two unescape `\a`,
//! `\f`… differently), `X'…'` and `0b…` (kept as text by the analysis), `--` followed by
//! something other than ASCII whitespace (no digest). A shape is cached only if its template
//! numbers as many parameters as the digest has literals.
//!
//! Facts do not depend on the rules, so a rules reload keeps the cache. The digest assumes
//! MariaDB's default quoting; callers bypass the cache under sql_mode ANSI_QUOTES or
//! NO_BACKSLASH_ESCAPES.

use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::algorithm::Value;
use crate::analyze::{analyze, AnalyzeError, Cond, Facts, Operand};
use crate::digest::{digest, LiteralValue};

/// Digests longer than this are not cached (large multi-row INSERTs: their parse is small next
/// to their size, and they would crowd out the statements that repeat).
pub const MAX_CACHED_DIGEST: usize = 16 * 1024;

/// Independent LRU shards, so that sessions on several runtime threads rarely wait for each
/// other; each lookup holds one shard's lock for a hash-map probe, never across I/O.
const SHARDS: usize = 8;

/// Memory the cache may hold, estimated per entry (key, facts, bookkeeping): the least recently
/// used entries go first when a new one would exceed it, whatever the entry count.
pub const DEFAULT_BUDGET: usize = 64 * 1024 * 1024;

/// What one `Operand::Param(i)` of a statement's facts stands for.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    /// A literal of the statement text.
    Value(Value),
    /// The client's own parameter `j` (a `?` of a prepared statement).
    Param(usize),
}

/// How an analysis was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// From the cache: no parse.
    Hit,
    /// Parsed (statement and digest), verified and now cached.
    Miss,
    /// Parsed in full: no digest, a digest marked parse-always, a literal that cannot be a
    /// parameter value, or the cache is off.
    Parsed,
}

/// A statement's analysis: facts (shared with every statement of the same shape) and what their
/// parameters stand for in this statement.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub facts: Arc<Facts>,
    /// One entry per `Operand::Param(i)` of `facts`, in order.
    pub slots: Vec<Slot>,
    pub source: Source,
}

impl Analysis {
    /// A statement parsed in full: its parameters are the client's own, one to one.
    pub fn from_facts(facts: Facts) -> Self {
        let slots = (0..facts.params).map(Slot::Param).collect();
        Analysis {
            facts: Arc::new(facts),
            slots,
            source: Source::Parsed,
        }
    }

    /// The parameter values for deciding: literals of the text, and the client's values
    /// (`given`, a prepared statement's) for its own `?`s. Stops at the first client parameter
    /// not given, so that the decision reports it missing.
    pub fn params(&self, given: &[Value]) -> Vec<Value> {
        let mut out = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            match s {
                Slot::Value(v) => out.push(v.clone()),
                Slot::Param(j) => match given.get(*j) {
                    Some(v) => out.push(v.clone()),
                    None => break,
                },
            }
        }
        out
    }
}

enum Entry {
    Template(Arc<Facts>),
    /// The digest's template does not reproduce the statement's analysis: parse in full.
    ParseAlways,
}

/// Counters of a [`PlanCache`], for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Statements parsed in full (see [`Source::Parsed`]).
    pub parsed: u64,
    /// Entries held now.
    pub entries: u64,
    pub capacity: u64,
    /// Estimated bytes held now, and the budget.
    pub bytes: u64,
    pub budget: u64,
}

impl CacheStats {
    /// Hits over all lookups (0 before the first).
    pub fn hit_rate(&self) -> f64 {
        let all = self.hits + self.misses + self.parsed;
        if all == 0 {
            0.0
        } else {
            self.hits as f64 / all as f64
        }
    }
}

struct Shard {
    lru: LruCache<Box<str>, (Entry, usize), foldhash::fast::FixedState>,
    /// Sum of the entries' estimated sizes.
    bytes: usize,
}

impl Shard {
    fn put(&mut self, key: Box<str>, entry: Entry, budget: usize) {
        let cost = key.len()
            + 96
            + match &entry {
                Entry::Template(f) => facts_cost(f),
                Entry::ParseAlways => 0,
            };
        if cost > budget {
            return;
        }
        if let Some((_, old)) = self.lru.pop(&key) {
            self.bytes -= old;
        }
        while self.bytes + cost > budget || self.lru.len() == self.lru.cap().get() {
            match self.lru.pop_lru() {
                Some((_, (_, c))) => self.bytes -= c,
                None => break,
            }
        }
        self.bytes += cost;
        self.lru.put(key, (entry, cost));
    }
}

/// An estimate of the heap a cached analysis holds.
fn facts_cost(f: &Facts) -> usize {
    fn cond(c: &Cond) -> usize {
        match c {
            Cond::And(cs) | Cond::Or(cs) => 32 + cs.iter().map(cond).sum::<usize>(),
            Cond::In { column, values } => 96 + column.name.len() + 40 * values.len(),
            Cond::Range { column, .. } => 176 + column.name.len(),
            Cond::Other => 32,
        }
    }
    std::mem::size_of::<Facts>()
        + f.tables.iter().map(|t| 96 + t.name.len()).sum::<usize>()
        + f.condition.as_ref().map_or(0, cond)
        + f.insert.as_ref().map_or(0, |i| {
            64 + i.columns.iter().map(|c| 24 + c.len()).sum::<usize>()
                + i.rows.iter().map(|r| 24 + 40 * r.len()).sum::<usize>()
        })
        + f.assigned.len() * 64
        + f.unknowns.iter().map(|u| 24 + u.len()).sum::<usize>()
}

/// A bounded, shared cache of statement analyses keyed by digest.
pub struct PlanCache {
    shards: Vec<Mutex<Shard>>,
    hasher: foldhash::fast::FixedState,
    capacity: usize,
    /// Per shard.
    budget: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    parsed: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing in a shard can be left half-updated by a panic (an LRU insert or probe).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PlanCache {
    /// A cache of about `capacity` digests (rounded up to a multiple of the 8 shards) within
    /// [`DEFAULT_BUDGET`] bytes; 0 turns caching off (every statement is parsed).
    pub fn new(capacity: usize) -> Self {
        Self::with_budget(capacity, DEFAULT_BUDGET)
    }

    /// [`PlanCache::new`] with a memory budget of `bytes` (estimated) in all.
    pub fn with_budget(capacity: usize, bytes: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS);
        let shards = match NonZeroUsize::new(per_shard) {
            Some(n) => (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        lru: LruCache::with_hasher(n, foldhash::fast::FixedState::with_seed(0)),
                        bytes: 0,
                    })
                })
                .collect(),
            None => Vec::new(),
        };
        PlanCache {
            shards,
            hasher: foldhash::fast::FixedState::with_seed(0x5eed),
            capacity: per_shard * SHARDS,
            budget: bytes / SHARDS,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            parsed: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            parsed: self.parsed.load(Ordering::Relaxed),
            entries: self.shards.iter().map(|s| lock(s).lru.len() as u64).sum(),
            capacity: self.capacity as u64,
            bytes: self.shards.iter().map(|s| lock(s).bytes as u64).sum(),
            budget: (self.budget * self.shards.len()) as u64,
        }
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(key) as usize) % self.shards.len()]
    }

    /// The analysis of one statement (hint already stripped; default sql_mode quoting).
    pub fn analyze(&self, sql: &[u8]) -> Result<Analysis, AnalyzeError> {
        let full = |sql: &[u8]| {
            self.parsed.fetch_add(1, Ordering::Relaxed);
            analyze(&String::from_utf8_lossy(sql)).map(Analysis::from_facts)
        };
        if self.shards.is_empty() {
            return full(sql);
        }
        let Some(d) = digest(sql) else {
            return full(sql);
        };
        if d.text.len() > MAX_CACHED_DIGEST {
            return full(sql);
        }
        // What each `?` of the digest stands for in this statement.
        let mut slots = Vec::with_capacity(d.literals.len());
        let mut own = 0usize;
        let mut bindable = true;
        for l in d.literals {
            // sqlparser and MariaDB unescape some sequences differently (`\a`, `\f`): the
            // statement's value must come from the parse every other path uses.
            if matches!(l.value, LiteralValue::Str(_)) && sql[l.span.clone()].contains(&b'\\') {
                bindable = false;
            }
            slots.push(match l.value {
                LiteralValue::Int(i) => Slot::Value(Value::Int(i)),
                LiteralValue::Number(n) => Slot::Value(Value::Str(n)),
                LiteralValue::Str(b) => Slot::Value(Value::Str(match String::from_utf8(b) {
                    Ok(s) => s,
                    Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
                })),
                LiteralValue::Placeholder => {
                    own += 1;
                    Slot::Param(own - 1)
                }
                // The analysis keeps hex and bit literals as text, not as a value.
                LiteralValue::Bits(_) => {
                    bindable = false;
                    Slot::Param(usize::MAX)
                }
            });
        }
        let shard = self.shard(&d.text);
        let cached = match lock(shard).lru.get(d.text.as_str()) {
            Some((Entry::Template(t), _)) => Some(Some(Arc::clone(t))),
            Some((Entry::ParseAlways, _)) => Some(None),
            None => None,
        };
        match cached {
            Some(Some(facts)) if bindable => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Ok(Analysis {
                    facts,
                    slots,
                    source: Source::Hit,
                })
            }
            Some(_) => full(sql),
            None => {
                let own_facts = analyze(&String::from_utf8_lossy(sql))?;
                self.misses.fetch_add(1, Ordering::Relaxed);
                let verified = bindable
                    .then(|| analyze(&d.text).ok())
                    .flatten()
                    // Every literal must be a parameter of the template, numbered in text order.
                    .filter(|t| t.params == slots.len() && bind(t, &slots) == own_facts);
                match verified {
                    Some(t) => {
                        let t = Arc::new(t);
                        lock(shard).put(
                            d.text.into_boxed_str(),
                            Entry::Template(Arc::clone(&t)),
                            self.budget,
                        );
                        Ok(Analysis {
                            facts: t,
                            slots,
                            source: Source::Miss,
                        })
                    }
                    None => {
                        // A statement with an unbindable literal says nothing about the others
                        // of its shape: only a failed verification marks the digest.
                        if bindable {
                            lock(shard).put(
                                d.text.into_boxed_str(),
                                Entry::ParseAlways,
                                self.budget,
                            );
                        }
                        let mut a = Analysis::from_facts(own_facts);
                        a.source = Source::Miss;
                        Ok(a)
                    }
                }
            }
        }
    }
}

/// The template's facts with each parameter replaced by what it stands for.
pub fn bind(template: &Facts, slots: &[Slot]) -> Facts {
    let mut f = template.clone();
    let operand = |o: &mut Operand| {
        if let Operand::Param(i) = o {
            *o = match slots.get(*i) {
                Some(Slot::Value(v)) => Operand::Value(v.clone()),
                Some(Slot::Param(j)) => Operand::Param(*j),
                None => Operand::Other("?".into()),
            };
        }
    };
    fn walk(c: &mut Cond, f: &dyn Fn(&mut Operand)) {
        match c {
            Cond::And(cs) | Cond::Or(cs) => cs.iter_mut().for_each(|c| walk(c, f)),
            Cond::In { values, .. } => values.iter_mut().for_each(f),
            Cond::Range { low, high, .. } => {
                low.iter_mut().for_each(f);
                high.iter_mut().for_each(f);
            }
            Cond::Other => {}
        }
    }
    if let Some(c) = f.condition.as_mut() {
        walk(c, &operand);
    }
    if let Some(ins) = f.insert.as_mut() {
        ins.rows.iter_mut().flatten().for_each(operand);
    }
    if let Some(Some(o)) = f.session_key.as_mut() {
        operand(o);
    }
    f.params = slots.iter().filter(|s| matches!(s, Slot::Param(_))).count();
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(sql: &str) -> Facts {
        analyze(sql).unwrap()
    }

    /// The cached analysis with its values bound in, as the decision sees it.
    fn seen(c: &PlanCache, sql: &str) -> (Facts, Source) {
        let a = c.analyze(sql.as_bytes()).unwrap();
        (bind(&a.facts, &a.slots), a.source)
    }

    #[test]
    fn statements_of_one_shape_share_an_analysis_with_their_own_values() {
        let c = PlanCache::new(64);
        for (i, sql) in [
            "SELECT c FROM sbtest1 WHERE id=5013",
            "select c from sbtest1 where id = 7",
            "SELECT c FROM sbtest1 WHERE id=5013",
        ]
        .iter()
        .enumerate()
        {
            let (f, source) = seen(&c, sql);
            assert_eq!(f, facts(sql), "{sql}");
            // The second one differs in case: another digest, another miss.
            assert_eq!(source, if i == 2 { Source::Hit } else { Source::Miss });
        }
        let sql = "SELECT c FROM sbtest1 WHERE id=-- x\n 99";
        assert_eq!(seen(&c, sql), (facts(sql), Source::Hit));
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.parsed, s.entries), (2, 2, 0, 2));
    }

    #[test]
    fn inserts_updates_and_strings_bind_every_value() {
        let c = PlanCache::new(64);
        for sql in [
            "INSERT INTO t_order (order_id, buyer_id, note) VALUES (1, 2, 'a''b'), (3, 4, \"c\\nd\")",
            "INSERT INTO t_order (order_id, buyer_id, note) VALUES (5, 6, ''), (7, 8, 'x')",
            "UPDATE t_order SET note = 'z' WHERE order_id IN (1, 2, 3) AND buyer_id BETWEEN 10 AND 20",
            "UPDATE t_order SET note = 'y' WHERE order_id IN (4, 5, 6) AND buyer_id BETWEEN 0 AND 1",
            "DELETE FROM t_order WHERE buyer_id = 18446744073709551616",
            "DELETE FROM t_order WHERE buyer_id = 1.5",
        ] {
            assert_eq!(seen(&c, sql).0, facts(sql), "{sql}");
        }
        // The first INSERT has an escape (parsed in full, not cached): the second one caches
        // the shape; the UPDATE and DELETE pairs hit.
        assert_eq!((c.stats().hits, c.stats().misses), (2, 4));
    }

    #[test]
    fn prepared_placeholders_keep_their_own_numbers_among_literals() {
        let c = PlanCache::new(64);
        let sql = "UPDATE t SET a = ? WHERE k = 5 AND id = ?";
        let a = c.analyze(sql.as_bytes()).unwrap();
        assert_eq!(
            a.slots,
            vec![Slot::Param(0), Slot::Value(Value::Int(5)), Slot::Param(1)]
        );
        assert_eq!(bind(&a.facts, &a.slots), facts(sql));
        assert_eq!(
            a.params(&[Value::Str("v".into()), Value::Int(9)]),
            vec![Value::Str("v".into()), Value::Int(5), Value::Int(9)]
        );
        // A parameter not given stops the list: the decision reports it missing.
        assert_eq!(a.params(&[Value::Null]), vec![Value::Null, Value::Int(5)]);
    }

    #[test]
    fn shapes_the_template_cannot_reproduce_are_parsed_every_time() {
        let c = PlanCache::new(64);
        // `- ?` is an expression in the template, a value in the statement.
        for sql in ["DELETE FROM t WHERE k = -5", "DELETE FROM t WHERE k = -6"] {
            assert_eq!(seen(&c, sql).0, facts(sql));
        }
        // A literal inside an expression kept as text.
        for sql in [
            "INSERT INTO t (a, b) VALUES (1, 2 + 3)",
            "INSERT INTO t (a, b) VALUES (1, 4 + 5)",
        ] {
            assert_eq!(seen(&c, sql).0, facts(sql));
        }
        // The template does not parse at all.
        for sql in [
            "SELECT CAST(a AS DECIMAL(10,2)) FROM t WHERE k = 1",
            "SELECT CAST(a AS DECIMAL(10,2)) FROM t WHERE k = 2",
        ] {
            assert_eq!(seen(&c, sql).0, facts(sql));
        }
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.parsed), (0, 3, 3));
    }

    #[test]
    fn unbindable_literals_and_uncacheable_texts_are_parsed_in_full() {
        let c = PlanCache::new(64);
        let (a, b) = (
            "SELECT * FROM t WHERE k = 5",
            "SELECT * FROM t WHERE k = X'05'",
        );
        assert_eq!(seen(&c, a).1, Source::Miss);
        assert_eq!(seen(&c, b), (facts(b), Source::Parsed));
        // The hex literal did not spoil the shape for integers.
        assert_eq!(seen(&c, a).1, Source::Hit);
        let x = "SELECT /*!100000 1, */ k FROM t WHERE k = 1";
        assert_eq!(seen(&c, x), (facts(x), Source::Parsed));
        let off = PlanCache::new(0);
        assert_eq!(seen(&off, a), (facts(a), Source::Parsed));
        assert!(c.analyze(b"SELECT FROM WHERE").is_err());
        assert!(c.analyze(b"SELECT 1; SELECT 2").is_err());
    }

    #[test]
    fn a_placeholder_outside_expressions_keeps_the_numbering_right() {
        // `AGAINST (…)` holds a bare value, not an expression: its `?` still takes the first
        // client parameter, so `k = ?` is the second.
        let f = facts("SELECT a FROM t WHERE MATCH (a) AGAINST (?) AND k = ?");
        assert_eq!(f.params, 2);
        assert_eq!(
            f.condition,
            Some(Cond::And(vec![
                Cond::Other,
                Cond::In {
                    column: crate::analyze::ColumnRef {
                        qualifier: None,
                        name: "k".into()
                    },
                    values: vec![Operand::Param(1)]
                }
            ]))
        );
        // Cached: the key is the value compared with `k`, not the search text.
        let c = PlanCache::new(64);
        for sql in [
            "SELECT a FROM t WHERE MATCH (a) AGAINST ('x') AND k = 'x'",
            "SELECT a FROM t WHERE MATCH (a) AGAINST ('y') AND k = 'z'",
        ] {
            assert_eq!(seen(&c, sql).0, facts(sql), "{sql}");
        }
    }

    #[test]
    fn literals_the_two_lexers_could_read_differently_are_parsed_in_full() {
        let c = PlanCache::new(64);
        assert_eq!(seen(&c, "DELETE FROM t WHERE k = 'ab'").1, Source::Miss);
        // sqlparser reads `\f` as a form feed, MariaDB as `f`: every path takes sqlparser's.
        let esc = "DELETE FROM t WHERE k = 'a\\fb'";
        assert_eq!(seen(&c, esc), (facts(esc), Source::Parsed));
        assert_eq!(seen(&c, "DELETE FROM t WHERE k = 'cd'").1, Source::Hit);
        // `--` then a control character or the end: a comment for MariaDB, not for sqlparser.
        for sql in [
            "DELETE FROM t WHERE k = 1 --",
            "DELETE FROM t WHERE k = 1 --\x01x",
        ] {
            assert_eq!(digest(sql.as_bytes()), None, "{sql}");
            // Whatever sqlparser makes of it (here: a syntax error), never a cached shape.
            if let Ok(a) = c.analyze(sql.as_bytes()) {
                assert_eq!(a.source, Source::Parsed, "{sql}");
            }
        }
        // With a space after `--`, both read a comment: the cached shape serves.
        assert_eq!(seen(&c, "DELETE FROM t WHERE k = 2 -- x").1, Source::Hit);
    }

    #[test]
    fn the_cache_stays_within_its_memory_budget() {
        let c = PlanCache::with_budget(4096, 64 * 1024);
        for i in 0..100 {
            let rows = vec!["(?, 'x', 3)"; 20 + i].join(", ");
            c.analyze(format!("INSERT INTO t{i} (a, b, c) VALUES {rows}").as_bytes())
                .unwrap();
        }
        let s = c.stats();
        assert!(s.bytes <= s.budget, "{s:?}");
        assert!(s.entries > 0 && s.entries < 100, "{s:?}");
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_the_least_recently_used() {
        let c = PlanCache::new(16);
        for i in 0..200 {
            c.analyze(format!("SELECT c{i} FROM t WHERE id = {i}").as_bytes())
                .unwrap();
        }
        let s = c.stats();
        assert_eq!((s.entries, s.capacity, s.misses), (16, 16, 200));
    }

    fn sql_string(s: &str, double: bool) -> String {
        let q = if double { '"' } else { '\'' };
        let mut out = String::from(q);
        for ch in s.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\u{7}' => out.push_str("\\a"),
                '\u{c}' => out.push_str("\\f"),
                '%' => out.push_str("\\%"),
                c if c == q => {
                    out.push(c);
                    out.push(c)
                }
                c => out.push(c),
            }
        }
        out.push(q);
        out
    }

    proptest::proptest! {
        /// Whatever the values, a cached statement decides on exactly what a full parse gives:
        /// the shape is verified with one set of values and then used with another.
        #[test]
        fn cached_analyses_equal_full_parses(
            ints in proptest::collection::vec(proptest::prop_oneof![0i64..100, 0i64..i64::MAX], 8),
            strs in proptest::collection::vec("[a-z'\"\\\\\n\t\r%_\u{7}\u{c}é]{0,8}", 4),
            double in proptest::bool::ANY,
            spaces in "[ \n\t]{1,3}",
        ) {
            let c = PlanCache::new(64);
            let texts = |v: usize| {
                let (i, s0, s1) = (&ints[4 * v..], sql_string(&strs[2 * v], double), sql_string(&strs[2 * v + 1], !double));
                [
                    format!("SELECT c FROM t WHERE id ={spaces}{}", i[0]),
                    format!("INSERT INTO t (a, b, c) VALUES ({}, {s0}, {}),{spaces}({}, {s1}, NULL)", i[0], i[1], i[2]),
                    format!("UPDATE t SET c = {s0} WHERE id IN ({}, {}) AND k >= {}", i[1], i[2], i[3]),
                    format!("DELETE FROM t WHERE name = {s1} AND id BETWEEN {} AND {}", i[0], i[3]),
                ]
            };
            for v in 0..2 {
                for sql in &texts(v) {
                    let (f, _) = seen(&c, sql);
                    proptest::prop_assert_eq!(f, facts(sql), "{}", sql);
                }
            }
        }
    }
}
