//! Sharding algorithms (the ones ShardingSphere users know), compiled from table rules.
//!
//! An algorithm maps a sharding column value to a target among the data sources of a table
//! (database sharding) or the tables of one data source (table sharding):
//! - index algorithms (`mod`, `hash_mod`, `volume_range`, `boundary_range`) pick the n-th
//!   target in the order the data nodes list them;
//! - name algorithms (`inline`, `interval`) produce the target's name.

use std::fmt;

use serde::Deserialize;

use crate::inline::{Template, Value as InlineValue};
use crate::route::{crc32, parse_decimal};

/// A sharding column value taken from a statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Int(i64),
    Str(String),
    Null,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Str(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Value::Null => f.write_str("NULL"),
        }
    }
}

impl Value {
    /// The value as an integer, as MySQL compares a string with an integer column.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            Value::Str(s) => parse_decimal(s),
            Value::Null => None,
        }
    }
}

/// The algorithm part of a strategy as written in the rules file (`algorithm = "…"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "algorithm", rename_all = "snake_case", deny_unknown_fields)]
pub enum StrategySpec {
    /// `value mod count` (non-negative remainder). Integer values.
    #[serde(alias = "MOD")]
    Mod {
        column: String,
        /// Default: the number of targets. If given, must equal it.
        count: Option<u32>,
    },
    /// `CRC32(text of the value) mod count`. Any value.
    #[serde(alias = "HASH_MOD")]
    HashMod { column: String, count: Option<u32> },
    /// Target 0 below `lower`, then one target per `volume` up to `upper`, the last from `upper`
    /// on: `ceil((upper - lower) / volume) + 2` targets. Integer values.
    #[serde(alias = "VOLUME_RANGE")]
    VolumeRange {
        column: String,
        lower: i64,
        upper: i64,
        volume: i64,
    },
    /// Target `i` holds `boundaries[i-1] <= value < boundaries[i]`: `len + 1` targets.
    #[serde(alias = "BOUNDARY_RANGE")]
    BoundaryRange {
        column: String,
        boundaries: Vec<i64>,
    },
    /// Date/time values (`'YYYY-MM-DD[ HH:MM:SS]'`) from `lower` to `upper`, in steps of `amount`
    /// `unit`s; the target table is `<logical table>_<suffix>` with the step's first day
    /// formatted by `suffix` (`yyyy`, `MM`, `dd`; e.g. `yyyyMM` → `t_order_202403`). Tables only.
    #[serde(alias = "INTERVAL")]
    Interval {
        column: String,
        lower: String,
        upper: String,
        unit: IntervalUnit,
        #[serde(default = "one")]
        amount: u32,
        suffix: String,
    },
    /// A template naming the target, e.g. `t_order_${order_id % 8}`. One column.
    #[serde(alias = "INLINE")]
    Inline { expression: String },
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalUnit {
    #[serde(alias = "days", alias = "DAYS")]
    Day,
    #[serde(alias = "months", alias = "MONTHS")]
    Month,
    #[serde(alias = "years", alias = "YEARS")]
    Year,
}

/// A compiled strategy: the column it reads and how it maps a value to a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Strategy {
    /// Lower-case column name.
    pub column: String,
    pub algorithm: Algorithm,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Algorithm {
    Mod(u32),
    HashMod(u32),
    VolumeRange { lower: i64, upper: i64, volume: i64 },
    BoundaryRange(Vec<i64>),
    Interval(Interval),
    Inline(Template),
}

/// What an algorithm picks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pick {
    /// The n-th target.
    Index(usize),
    /// The target with this name (inline, interval).
    Name(String),
}

/// Why a value picks no target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{column} = {value}: {reason}")]
pub struct ShardError {
    pub column: String,
    pub value: String,
    pub reason: String,
}

impl Strategy {
    /// Compiles a spec; `targets` is the number of targets it chooses among, `logical` the
    /// logical table name (interval suffixes attach to it). Errors say which field is wrong.
    pub fn compile(
        spec: &StrategySpec,
        targets: usize,
        logical: &str,
        tables: bool,
    ) -> Result<Strategy, (&'static str, String)> {
        let count_matches = |count: Option<u32>, needed: usize, what: &str| match count {
            Some(c) if c as usize != targets => Err((
                "count",
                format!(
                    "{what} count {c} does not match the {targets} targets the data nodes list"
                ),
            )),
            _ if needed != targets => Err((
                "data_nodes",
                format!("the algorithm needs {needed} targets; the data nodes list {targets}"),
            )),
            _ => Ok(()),
        };
        let lower = |c: &str| c.trim().to_ascii_lowercase();
        Ok(match spec {
            StrategySpec::Mod { column, count } => {
                let n = count.unwrap_or(targets as u32);
                if n == 0 {
                    return Err(("count", "must be at least 1".into()));
                }
                count_matches(*count, n as usize, "mod")?;
                Strategy {
                    column: lower(column),
                    algorithm: Algorithm::Mod(n),
                }
            }
            StrategySpec::HashMod { column, count } => {
                let n = count.unwrap_or(targets as u32);
                if n == 0 {
                    return Err(("count", "must be at least 1".into()));
                }
                count_matches(*count, n as usize, "hash_mod")?;
                Strategy {
                    column: lower(column),
                    algorithm: Algorithm::HashMod(n),
                }
            }
            StrategySpec::VolumeRange {
                column,
                lower: lo,
                upper,
                volume,
            } => {
                if *volume <= 0 {
                    return Err(("volume", "must be at least 1".into()));
                }
                if upper <= lo {
                    return Err(("upper", format!("{upper} is not above lower {lo}")));
                }
                let span = (*upper as i128) - (*lo as i128);
                let needed = (span + *volume as i128 - 1) / *volume as i128 + 2;
                count_matches(None, needed.min(usize::MAX as i128) as usize, "")?;
                Strategy {
                    column: lower(column),
                    algorithm: Algorithm::VolumeRange {
                        lower: *lo,
                        upper: *upper,
                        volume: *volume,
                    },
                }
            }
            StrategySpec::BoundaryRange { column, boundaries } => {
                if boundaries.is_empty() || boundaries.windows(2).any(|w| w[0] >= w[1]) {
                    return Err((
                        "boundaries",
                        "must be a non-empty, strictly increasing list".into(),
                    ));
                }
                count_matches(None, boundaries.len() + 1, "")?;
                Strategy {
                    column: lower(column),
                    algorithm: Algorithm::BoundaryRange(boundaries.clone()),
                }
            }
            StrategySpec::Interval {
                column,
                lower: lo,
                upper,
                unit,
                amount,
                suffix,
            } => {
                if !tables {
                    return Err((
                        "algorithm",
                        "interval shards tables only, not data sources".into(),
                    ));
                }
                let lo_d = Date::parse(lo).ok_or(("lower", format!("`{lo}` is not a date")))?;
                let up_d =
                    Date::parse(upper).ok_or(("upper", format!("`{upper}` is not a date")))?;
                if up_d < lo_d {
                    return Err(("upper", format!("{upper} is before lower {lo}")));
                }
                if *amount == 0 {
                    return Err(("amount", "must be at least 1".into()));
                }
                if !suffix.contains("yyyy") {
                    return Err(("suffix", format!("`{suffix}` has no `yyyy`")));
                }
                let iv = Interval {
                    logical: logical.to_string(),
                    lower: lo_d,
                    upper: up_d,
                    unit: *unit,
                    amount: *amount,
                    suffix: suffix.clone(),
                };
                if iv.steps() > 100_000 {
                    return Err(("amount", "the interval has more than 100000 steps".into()));
                }
                Strategy {
                    column: lower(column),
                    algorithm: Algorithm::Interval(iv),
                }
            }
            StrategySpec::Inline { expression } => {
                let t = Template::parse(expression).map_err(|e| ("expression", e.to_string()))?;
                let cols = t.columns();
                if cols.len() != 1 {
                    return Err((
                        "expression",
                        format!(
                            "`{expression}` must read exactly one column (it reads {})",
                            if cols.is_empty() {
                                "none".to_string()
                            } else {
                                cols.iter().cloned().collect::<Vec<_>>().join(", ")
                            }
                        ),
                    ));
                }
                Strategy {
                    column: cols.into_iter().next().unwrap_or_default(),
                    algorithm: Algorithm::Inline(t),
                }
            }
        })
    }

    fn err(&self, value: &Value, reason: impl Into<String>) -> ShardError {
        ShardError {
            column: self.column.clone(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    fn int(&self, value: &Value) -> Result<i64, ShardError> {
        value
            .as_int()
            .ok_or_else(|| self.err(value, "the algorithm needs an integer"))
    }

    /// The target for one value.
    pub fn pick(&self, value: &Value) -> Result<Pick, ShardError> {
        if *value == Value::Null {
            return Err(self.err(value, "a sharding column cannot be NULL"));
        }
        Ok(match &self.algorithm {
            Algorithm::Mod(n) => Pick::Index(self.int(value)?.rem_euclid(i64::from(*n)) as usize),
            Algorithm::HashMod(n) => {
                let text = match value {
                    Value::Int(v) => v.to_string(),
                    Value::Str(s) => s.clone(),
                    Value::Null => String::new(),
                };
                Pick::Index((crc32(text.as_bytes()) % n) as usize)
            }
            Algorithm::VolumeRange {
                lower,
                upper,
                volume,
            } => {
                let v = self.int(value)?;
                Pick::Index(if v < *lower {
                    0
                } else if v >= *upper {
                    ((*upper as i128 - *lower as i128 + *volume as i128 - 1) / *volume as i128 + 1)
                        as usize
                } else {
                    ((v as i128 - *lower as i128) / *volume as i128 + 1) as usize
                })
            }
            Algorithm::BoundaryRange(b) => {
                let v = self.int(value)?;
                Pick::Index(b.partition_point(|x| *x <= v))
            }
            Algorithm::Interval(iv) => {
                let Value::Str(s) = value else {
                    return Err(self.err(value, "interval sharding needs a date"));
                };
                let d = Date::parse(s).ok_or_else(|| self.err(value, "not a date"))?;
                Pick::Name(iv.name_for(d).ok_or_else(|| {
                    self.err(
                        value,
                        format!(
                            "outside the interval {} – {}",
                            iv.lower.show(),
                            iv.upper.show()
                        ),
                    )
                })?)
            }
            Algorithm::Inline(t) => {
                // A string stays a string (`'01'` names `t_01`) unless the template computes with
                // it, as MySQL would convert it for an integer column.
                let v = match value {
                    Value::Int(i) => InlineValue::Int(*i),
                    Value::Str(s) if t.computes() => match parse_decimal(s) {
                        Some(i) => InlineValue::Int(i),
                        None => InlineValue::Str(s.clone()),
                    },
                    Value::Str(s) => InlineValue::Str(s.clone()),
                    Value::Null => InlineValue::Str(String::new()),
                };
                Pick::Name(
                    t.eval(&|_| Ok(v.clone()))
                        .map_err(|e| self.err(value, e.reason))?,
                )
            }
        })
    }

    /// The targets for `low <= value <= high` (either end open), or `None` when every target
    /// may hold such values.
    pub fn pick_range(&self, low: Option<&Value>, high: Option<&Value>) -> Option<Vec<Pick>> {
        match &self.algorithm {
            Algorithm::VolumeRange { .. } | Algorithm::BoundaryRange(_) => {
                let lo = match low {
                    Some(v) => self.pick(v).ok()?,
                    None => Pick::Index(0),
                };
                let hi = match high {
                    Some(v) => self.pick(v).ok()?,
                    None => return None,
                };
                match (lo, hi) {
                    (Pick::Index(a), Pick::Index(b)) if a <= b => {
                        Some((a..=b).map(Pick::Index).collect())
                    }
                    (Pick::Index(_), Pick::Index(_)) => Some(Vec::new()),
                    _ => None,
                }
            }
            Algorithm::Interval(iv) => {
                let d = |v: Option<&Value>| match v {
                    Some(Value::Str(s)) => Date::parse(s),
                    _ => None,
                };
                let lo = d(low).unwrap_or(iv.lower).max(iv.lower);
                let hi = d(high)?.min(iv.upper);
                Some(
                    iv.names_between(lo, hi)
                        .into_iter()
                        .map(Pick::Name)
                        .collect(),
                )
            }
            // A short integer range is listed value by value; anything else reaches every target.
            _ => {
                let (a, b) = (low?.as_int()?, high?.as_int()?);
                if b < a {
                    return Some(Vec::new());
                }
                if a.abs_diff(b) > 64 {
                    return None;
                }
                let mut picks: Vec<Pick> = (a..=b)
                    .map(|v| self.pick(&Value::Int(v)))
                    .collect::<Result<_, _>>()
                    .ok()?;
                picks.sort();
                picks.dedup();
                Some(picks)
            }
        }
    }

    /// Every name an interval or fixed strategy can produce, when it can be listed (interval);
    /// used to check the data nodes.
    pub fn interval_names(&self) -> Option<Vec<String>> {
        match &self.algorithm {
            Algorithm::Interval(iv) => Some(iv.names_between(iv.lower, iv.upper)),
            _ => None,
        }
    }

    /// A description for SHOW TABLE RULES and error messages.
    pub fn describe(&self) -> String {
        match &self.algorithm {
            Algorithm::Mod(n) => format!("mod({}, {n})", self.column),
            Algorithm::HashMod(n) => format!("hash_mod({}, {n})", self.column),
            Algorithm::VolumeRange {
                lower,
                upper,
                volume,
            } => format!(
                "volume_range({}, {lower}..{upper} by {volume})",
                self.column
            ),
            Algorithm::BoundaryRange(b) => format!("boundary_range({}, {b:?})", self.column),
            Algorithm::Interval(iv) => format!(
                "interval({}, {} – {}, every {} {:?}, {})",
                self.column,
                iv.lower.show(),
                iv.upper.show(),
                iv.amount,
                iv.unit,
                iv.suffix
            ),
            Algorithm::Inline(t) => format!("inline({})", t.source()),
        }
    }

    /// Two strategies shard alike (binding tables): same algorithm and parameters; inline
    /// templates compare by their expressions, not their text around them.
    pub fn same_shape(&self, other: &Strategy) -> bool {
        match (&self.algorithm, &other.algorithm) {
            (Algorithm::Inline(a), Algorithm::Inline(b)) => a.same_expressions(b),
            (Algorithm::Interval(a), Algorithm::Interval(b)) => {
                (a.lower, a.upper, a.unit, a.amount, &a.suffix)
                    == (b.lower, b.upper, b.unit, b.amount, &b.suffix)
                    && self.column == other.column
            }
            (a, b) => a == b && self.column == other.column,
        }
    }
}

/// A calendar date (time of day ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub y: i32,
    pub m: u32,
    pub d: u32,
}

impl Date {
    /// `YYYY-MM-DD`, optionally followed by a time (`T` or space).
    pub fn parse(s: &str) -> Option<Date> {
        let s = s.trim();
        let date = s.get(..10)?;
        let rest = &s[10..];
        if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('T')) {
            return None;
        }
        let b = date.as_bytes();
        if b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let t = date.get(r)?;
            t.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| t.parse().ok())?
        };
        let (y, m, d) = (num(0..4)? as i32, num(5..7)?, num(8..10)?);
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
            return None;
        }
        Some(Date { y, m, d })
    }

    fn show(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.y, self.m, self.d)
    }

    /// Days since 1970-01-01 (proleptic Gregorian).
    fn days(&self) -> i64 {
        let y = i64::from(self.y) - i64::from(self.m <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.m);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    fn from_days(z: i64) -> Date {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
        Date { y, m, d }
    }
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    logical: String,
    lower: Date,
    upper: Date,
    unit: IntervalUnit,
    amount: u32,
    suffix: String,
}

impl Interval {
    /// Index of the step holding `d` (counted from `lower`), if `d` is in range.
    fn step_of(&self, d: Date) -> Option<i64> {
        if d < self.lower || d > self.upper {
            return None;
        }
        let n = match self.unit {
            IntervalUnit::Day => d.days() - self.lower.days(),
            IntervalUnit::Month => {
                let months = (i64::from(d.y) * 12 + i64::from(d.m))
                    - (i64::from(self.lower.y) * 12 + i64::from(self.lower.m));
                months - i64::from(d.d < self.lower.d)
            }
            IntervalUnit::Year => {
                i64::from(d.y - self.lower.y) - i64::from((d.m, d.d) < (self.lower.m, self.lower.d))
            }
        };
        Some(n / i64::from(self.amount))
    }

    fn step_start(&self, step: i64) -> Date {
        let k = step * i64::from(self.amount);
        match self.unit {
            IntervalUnit::Day => Date::from_days(self.lower.days() + k),
            IntervalUnit::Month => {
                let total = i64::from(self.lower.y) * 12 + i64::from(self.lower.m) - 1 + k;
                let (y, m) = (
                    total.div_euclid(12) as i32,
                    (total.rem_euclid(12) + 1) as u32,
                );
                Date {
                    y,
                    m,
                    d: self.lower.d.min(days_in_month(y, m)),
                }
            }
            IntervalUnit::Year => {
                let y = self.lower.y + k as i32;
                Date {
                    y,
                    m: self.lower.m,
                    d: self.lower.d.min(days_in_month(y, self.lower.m)),
                }
            }
        }
    }

    fn steps(&self) -> i64 {
        self.step_of(self.upper).unwrap_or(0) + 1
    }

    fn format(&self, d: Date) -> String {
        let s = self
            .suffix
            .replace("yyyy", &format!("{:04}", d.y))
            .replace("MM", &format!("{:02}", d.m))
            .replace("dd", &format!("{:02}", d.d));
        format!("{}_{s}", self.logical)
    }

    fn name_for(&self, d: Date) -> Option<String> {
        Some(self.format(self.step_start(self.step_of(d)?)))
    }

    fn names_between(&self, lo: Date, hi: Date) -> Vec<String> {
        match (self.step_of(lo), self.step_of(hi)) {
            (Some(a), Some(b)) => (a..=b).map(|s| self.format(self.step_start(s))).collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(spec: &str, targets: usize) -> Result<Strategy, (&'static str, String)> {
        let spec: StrategySpec = toml::from_str(spec).unwrap();
        Strategy::compile(&spec, targets, "t_order", true)
    }

    fn idx(s: &Strategy, v: Value) -> usize {
        match s.pick(&v).unwrap() {
            Pick::Index(i) => i,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mod_and_hash_mod() {
        let m = compile("algorithm = 'MOD'\ncolumn = 'Order_Id'", 8).unwrap();
        assert_eq!(m.column, "order_id");
        assert_eq!(idx(&m, Value::Int(13)), 5);
        assert_eq!(idx(&m, Value::Int(-3)), 5);
        assert_eq!(idx(&m, Value::Str("21".into())), 5);
        assert!(m.pick(&Value::Str("x".into())).is_err());
        assert!(m.pick(&Value::Null).unwrap_err().reason.contains("NULL"));
        let e = compile("algorithm = 'mod'\ncolumn = 'a'\ncount = 4", 8).unwrap_err();
        assert_eq!(e.0, "count");
        // CRC32('alice') = 663665735 (MariaDB), % 8 = 7.
        let h = compile("algorithm = 'hash_mod'\ncolumn = 'a'", 8).unwrap();
        assert_eq!(idx(&h, Value::Str("alice".into())), 7);
    }

    #[test]
    fn volume_and_boundary_ranges() {
        // (-inf,10) [10,20) [20,30) [30,40) [40,45) [45,inf): 6 targets.
        let v = compile(
            "algorithm = 'volume_range'\ncolumn = 'a'\nlower = 10\nupper = 45\nvolume = 10",
            6,
        )
        .unwrap();
        let got: Vec<usize> = [9, 10, 19, 20, 44, 45, 1000]
            .iter()
            .map(|x| idx(&v, Value::Int(*x)))
            .collect();
        assert_eq!(got, [0, 1, 1, 2, 4, 5, 5]);
        let e = compile(
            "algorithm = 'volume_range'\ncolumn = 'a'\nlower = 10\nupper = 45\nvolume = 10",
            4,
        )
        .unwrap_err();
        assert_eq!(
            e,
            (
                "data_nodes",
                "the algorithm needs 6 targets; the data nodes list 4".into()
            )
        );
        let b = compile(
            "algorithm = 'boundary_range'\ncolumn = 'a'\nboundaries = [1, 5, 10]",
            4,
        )
        .unwrap();
        let got: Vec<usize> = [0, 1, 4, 5, 9, 10, 99]
            .iter()
            .map(|x| idx(&b, Value::Int(*x)))
            .collect();
        assert_eq!(got, [0, 1, 1, 2, 2, 3, 3]);
        let r = b
            .pick_range(Some(&Value::Int(2)), Some(&Value::Int(7)))
            .unwrap();
        assert_eq!(r, [Pick::Index(1), Pick::Index(2)]);
        assert!(compile(
            "algorithm = 'boundary_range'\ncolumn = 'a'\nboundaries = [5, 1]",
            3
        )
        .is_err());
    }

    #[test]
    fn monthly_interval_tables() {
        let i = compile(
            "algorithm = 'interval'\ncolumn = 'created_at'\nlower = '2024-01-01'\nupper = '2024-12-31'\nunit = 'month'\nsuffix = 'yyyyMM'",
            12,
        )
        .unwrap();
        assert_eq!(
            i.pick(&Value::Str("2024-03-15 10:00:00".into())).unwrap(),
            Pick::Name("t_order_202403".into())
        );
        assert_eq!(
            i.pick(&Value::Str("2024-12-31".into())).unwrap(),
            Pick::Name("t_order_202412".into())
        );
        let e = i.pick(&Value::Str("2025-01-01".into())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "created_at = '2025-01-01': outside the interval 2024-01-01 – 2024-12-31"
        );
        assert_eq!(i.interval_names().unwrap().len(), 12);
        let r = i
            .pick_range(
                Some(&Value::Str("2024-02-10".into())),
                Some(&Value::Str("2024-04-01".into())),
            )
            .unwrap();
        assert_eq!(
            r,
            ["t_order_202402", "t_order_202403", "t_order_202404"].map(|s| Pick::Name(s.into()))
        );
        // Every two days, across a leap day.
        let d = compile(
            "algorithm = 'interval'\ncolumn = 'd'\nlower = '2024-02-27'\nupper = '2024-03-04'\nunit = 'day'\namount = 2\nsuffix = 'yyyyMMdd'",
            4,
        )
        .unwrap();
        assert_eq!(
            d.interval_names().unwrap(),
            [
                "t_order_20240227",
                "t_order_20240229",
                "t_order_20240302",
                "t_order_20240304"
            ]
        );
        assert_eq!(
            d.pick(&Value::Str("2024-03-01".into())).unwrap(),
            Pick::Name("t_order_20240229".into())
        );
        assert!(Date::parse("2023-02-29").is_none());
        assert_eq!(
            Date::from_days(Date::parse("2000-03-01").unwrap().days()).d,
            1
        );
    }

    #[test]
    fn inline_names_the_target() {
        let s = compile(
            "algorithm = 'inline'\nexpression = 't_order_${order_id % 8}'",
            8,
        )
        .unwrap();
        assert_eq!(s.column, "order_id");
        assert_eq!(
            s.pick(&Value::Int(13)).unwrap(),
            Pick::Name("t_order_5".into())
        );
        let e = compile("algorithm = 'inline'\nexpression = 't_${a + b}'", 8).unwrap_err();
        assert_eq!(e.0, "expression");
        assert!(
            e.1.contains("exactly one column (it reads a, b)"),
            "{}",
            e.1
        );
    }
}
