//! Merging node results into one (issue 9): rows of text-protocol result sets, compared the way
//! the server compares them (numbers as numbers, strings by their collation's
//! `WEIGHT_STRING()`), grouped, aggregated, filtered by HAVING, sorted and cut by LIMIT.
//! Pure: the session reads the node results and writes the merged rows.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::ops::Range;
use std::str::FromStr;

use bytes::Bytes;
use mysql_common::constants::ColumnType;
use rust_decimal::{Decimal, RoundingStrategy};
use shard_rules::scatter::{Aggregate, CmpOp, Col, Merge, Operand, Pred, SelectPlan, SortKey};

/// What the merge needs of a column definition.
#[derive(Debug, Clone, Copy)]
pub struct ColumnInfo {
    pub ty: ColumnType,
    pub decimals: u8,
    /// ENUM or SET: the server orders these by their index, not their label.
    pub enum_or_set: bool,
}

/// [`column_info`], or a plain string column for a definition that does not parse.
pub fn column_info_or_text(def: &[u8]) -> ColumnInfo {
    column_info(def).unwrap_or(ColumnInfo {
        ty: ColumnType::MYSQL_TYPE_VAR_STRING,
        decimals: 0,
        enum_or_set: false,
    })
}

pub fn column_info(def: &[u8]) -> Option<ColumnInfo> {
    let c = crate::packet::column_def(def)?;
    let flags = c.flags();
    Some(ColumnInfo {
        ty: c.column_type(),
        decimals: c.decimals(),
        enum_or_set: flags.contains(mysql_common::constants::ColumnFlags::ENUM_FLAG)
            || flags.contains(mysql_common::constants::ColumnFlags::SET_FLAG)
            || matches!(
                c.column_type(),
                ColumnType::MYSQL_TYPE_ENUM | ColumnType::MYSQL_TYPE_SET
            ),
    })
}

fn is_numeric(t: ColumnType) -> bool {
    use ColumnType::*;
    matches!(
        t,
        MYSQL_TYPE_DECIMAL
            | MYSQL_TYPE_NEWDECIMAL
            | MYSQL_TYPE_TINY
            | MYSQL_TYPE_SHORT
            | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG
            | MYSQL_TYPE_INT24
            | MYSQL_TYPE_FLOAT
            | MYSQL_TYPE_DOUBLE
            | MYSQL_TYPE_YEAR
    )
}

fn is_temporal(t: ColumnType) -> bool {
    use ColumnType::*;
    matches!(
        t,
        MYSQL_TYPE_DATE
            | MYSQL_TYPE_NEWDATE
            | MYSQL_TYPE_DATETIME
            | MYSQL_TYPE_DATETIME2
            | MYSQL_TYPE_TIMESTAMP
            | MYSQL_TYPE_TIMESTAMP2
            | MYSQL_TYPE_TIME
            | MYSQL_TYPE_TIME2
    )
}

fn is_float(t: ColumnType) -> bool {
    matches!(
        t,
        ColumnType::MYSQL_TYPE_FLOAT | ColumnType::MYSQL_TYPE_DOUBLE
    )
}

/// One text-protocol row: the packet and where each value is in it (`None` for NULL).
#[derive(Debug, Clone)]
pub struct Row {
    pub raw: Bytes,
    vals: Vec<Option<Range<usize>>>,
    /// Where each value ends in `raw`.
    ends: Vec<usize>,
}

impl Row {
    /// Parses a row of `n` values; `None` if the packet is not one.
    pub fn parse(raw: Bytes, n: usize) -> Option<Row> {
        let mut vals = Vec::with_capacity(n);
        let mut ends = Vec::with_capacity(n);
        let mut at = 0;
        for _ in 0..n {
            if *raw.get(at)? == 0xFB {
                vals.push(None);
                at += 1;
                ends.push(at);
                continue;
            }
            let (len, used) = crate::packet::lenenc_int(&raw[at..])?;
            let start = at + used;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            if end > raw.len() {
                return None;
            }
            vals.push(Some(start..end));
            at = end;
            ends.push(at);
        }
        (at == raw.len()).then_some(Row { raw, vals, ends })
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.vals.get(i)?.as_ref().map(|r| &self.raw[r.clone()])
    }

    /// The packet without its last `hidden` values: what the client gets.
    pub fn visible(&self, hidden: usize) -> Bytes {
        if hidden == 0 {
            return self.raw.clone();
        }
        let keep = self.vals.len().saturating_sub(hidden);
        let end = if keep == 0 { 0 } else { self.ends[keep - 1] };
        self.raw.slice(..end)
    }
}

/// Builds a text row from values.
pub fn encode_row(values: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        match v {
            None => out.push(0xFB),
            Some(b) => {
                crate::packet::put_lenenc_int(&mut out, b.len() as u64);
                out.extend_from_slice(b);
            }
        }
    }
    out
}

/// The first `visible` values of a text row as a binary-protocol row (COM_STMT_EXECUTE
/// results), each converted to its column's binary form; `None` if a value does not read as
/// its type.
pub fn binary_row(row: &Row, cols: &[ColumnInfo], visible: usize) -> Option<Vec<u8>> {
    use mysql_common::value::Value as V;
    use ColumnType::*;
    let bitmap = (visible + 7 + 2) / 8;
    let mut out = vec![0u8; 1 + bitmap];
    for i in 0..visible {
        let Some(v) = row.get(i) else {
            let bit = i + 2;
            out[1 + bit / 8] |= 1 << (bit % 8);
            continue;
        };
        let ty = cols.get(i).map_or(MYSQL_TYPE_VAR_STRING, |c| c.ty);
        let text = std::str::from_utf8(v).ok();
        let int = || text?.parse::<i128>().ok();
        match ty {
            MYSQL_TYPE_TINY => out.push(int()? as i8 as u8),
            MYSQL_TYPE_SHORT | MYSQL_TYPE_YEAR => {
                out.extend_from_slice(&(int()? as i16).to_le_bytes())
            }
            MYSQL_TYPE_LONG | MYSQL_TYPE_INT24 => {
                out.extend_from_slice(&(int()? as i32).to_le_bytes())
            }
            MYSQL_TYPE_LONGLONG => out.extend_from_slice(&(int()? as i64).to_le_bytes()),
            MYSQL_TYPE_FLOAT => out.extend_from_slice(&text?.parse::<f32>().ok()?.to_le_bytes()),
            MYSQL_TYPE_DOUBLE => out.extend_from_slice(&text?.parse::<f64>().ok()?.to_le_bytes()),
            MYSQL_TYPE_DATE
            | MYSQL_TYPE_DATETIME
            | MYSQL_TYPE_TIMESTAMP
            | MYSQL_TYPE_DATETIME2
            | MYSQL_TYPE_TIMESTAMP2
            | MYSQL_TYPE_NEWDATE => {
                let d = parse_datetime(text?)?;
                let mut b = Vec::new();
                mysql_common::proto::MySerialize::serialize(&d, &mut b);
                out.extend_from_slice(&b);
            }
            MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => {
                let t = parse_time(text?)?;
                let mut b = Vec::new();
                mysql_common::proto::MySerialize::serialize(&t, &mut b);
                out.extend_from_slice(&b);
            }
            _ => {
                let _ = V::NULL;
                crate::packet::put_lenenc_int(&mut out, v.len() as u64);
                out.extend_from_slice(v);
            }
        }
    }
    Some(out)
}

fn parse_datetime(s: &str) -> Option<mysql_common::value::Value> {
    let (date, time) = s.split_once(' ').unwrap_or((s, ""));
    let mut d = date.split('-');
    let (y, m, dd) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (mut h, mut mi, mut sec, mut us) = (0u8, 0u8, 0u8, 0u32);
    if !time.is_empty() {
        let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
        let mut t = hms.split(':');
        h = t.next()?.parse().ok()?;
        mi = t.next()?.parse().ok()?;
        sec = t.next()?.parse().ok()?;
        us = micros(frac)?;
    }
    Some(mysql_common::value::Value::Date(y, m, dd, h, mi, sec, us))
}

fn parse_time(s: &str) -> Option<mysql_common::value::Value> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut t = hms.split(':');
    let hours: u32 = t.next()?.parse().ok()?;
    let (mi, sec): (u8, u8) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    Some(mysql_common::value::Value::Time(
        neg,
        hours / 24,
        (hours % 24) as u8,
        mi,
        sec,
        micros(frac)?,
    ))
}

fn micros(frac: &str) -> Option<u32> {
    if frac.is_empty() {
        return Some(0);
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
    digits.parse().ok()
}

/// Column positions of a plan in the node rows.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Values per node row.
    pub width: usize,
    pub hidden: usize,
}

impl Layout {
    pub fn index(&self, c: Col) -> usize {
        match c {
            Col::Item(i) => i,
            Col::Hidden(h) => self.width - self.hidden + h,
        }
    }
}

/// Compares two values of one column as the server orders them: NULL first, then by the
/// collation weight when both have one, else as numbers for numeric types, else by bytes.
pub fn cmp_values(
    a: Option<&[u8]>,
    aw: Option<&[u8]>,
    b: Option<&[u8]>,
    bw: Option<&[u8]>,
    ty: ColumnType,
) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => {
            // Collation weights decide for strings only (WEIGHT_STRING() of a TIME or a date
            // is its text, which does not order negative or long durations).
            if let (Some(xw), Some(yw), false) = (aw, bw, is_numeric(ty) || is_temporal(ty)) {
                return xw.cmp(yw);
            }
            if is_numeric(ty) {
                cmp_numbers(x, y)
            } else if matches!(
                ty,
                ColumnType::MYSQL_TYPE_TIME | ColumnType::MYSQL_TYPE_TIME2
            ) {
                // `-01:00:00` < `00:30:00` < `100:00:00`: as signed durations, not as text.
                match (time_micros(x), time_micros(y)) {
                    (Some(a), Some(b)) => a.cmp(&b),
                    _ => x.cmp(y),
                }
            } else {
                x.cmp(y)
            }
        }
    }
}

fn time_micros(v: &[u8]) -> Option<i64> {
    match parse_time(std::str::from_utf8(v).ok()?)? {
        mysql_common::value::Value::Time(neg, d, h, m, s, us) => {
            let t = ((i64::from(d) * 24 + i64::from(h)) * 3600 + i64::from(m) * 60 + i64::from(s))
                * 1_000_000
                + i64::from(us);
            Some(if neg { -t } else { t })
        }
        _ => None,
    }
}

fn cmp_numbers(x: &[u8], y: &[u8]) -> Ordering {
    let (xs, ys) = (String::from_utf8_lossy(x), String::from_utf8_lossy(y));
    match (Decimal::from_str(&xs), Decimal::from_str(&ys)) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        _ => match (xs.parse::<f64>(), ys.parse::<f64>()) {
            (Ok(a), Ok(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
            _ => x.cmp(y),
        },
    }
}

/// Orders rows by the plan's sort keys.
pub fn cmp_rows(
    a: &Row,
    b: &Row,
    keys: &[SortKey],
    layout: Layout,
    cols: &[ColumnInfo],
) -> Ordering {
    for k in keys {
        let i = layout.index(k.col);
        let w = k.weight.map(|w| layout.index(w));
        let ty = cols
            .get(i)
            .map_or(ColumnType::MYSQL_TYPE_VAR_STRING, |c| c.ty);
        let o = cmp_values(
            a.get(i),
            w.and_then(|w| a.get(w)),
            b.get(i),
            w.and_then(|w| b.get(w)),
            ty,
        );
        let o = if k.desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// Why a merge failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("the merged result needs more than {limit} bytes of proxy memory (proxy.merge_memory_mb); narrow the query with its sharding column or a LIMIT")]
    TooLarge { limit: usize },
    #[error("cannot merge the value `{value}` of column {column}: {why}")]
    Value {
        column: usize,
        value: String,
        why: &'static str,
    },
}

/// One group's running state, per node column.
#[derive(Debug, Clone)]
enum Acc {
    First(Option<Vec<u8>>),
    Count(i64),
    SumDec(Option<Decimal>),
    SumFloat(Option<f64>),
    /// Value and its weight.
    Pick(Option<Vec<u8>>, Option<Vec<u8>>),
    /// Filled by its owner, or unused.
    Carried(Option<Vec<u8>>),
}

/// Merges grouped rows: every node row is folded into its group.
pub struct Grouper<'p> {
    agg: &'p Aggregate,
    layout: Layout,
    cols: Vec<ColumnInfo>,
    groups: HashMap<Vec<u8>, usize>,
    states: Vec<Vec<Acc>>,
    bytes: usize,
    limit: usize,
}

impl<'p> Grouper<'p> {
    pub fn new(agg: &'p Aggregate, layout: Layout, cols: Vec<ColumnInfo>, limit: usize) -> Self {
        Grouper {
            agg,
            layout,
            cols,
            groups: HashMap::new(),
            states: Vec::new(),
            bytes: 0,
            limit,
        }
    }

    fn merge_of(&self, i: usize) -> Merge {
        let visible = self.layout.width - self.layout.hidden;
        if i < visible {
            self.agg.items.get(i).copied().unwrap_or(Merge::First)
        } else {
            self.agg
                .hidden
                .get(i - visible)
                .copied()
                .unwrap_or(Merge::First)
        }
    }

    pub fn add(&mut self, row: &Row) -> Result<(), MergeError> {
        let mut key = Vec::new();
        for (c, w) in &self.agg.keys {
            let i = self.layout.index(*c);
            let v = w
                .and_then(|w| row.get(self.layout.index(w)))
                .or_else(|| row.get(i));
            match v {
                None => key.push(0),
                Some(b) => {
                    key.push(1);
                    key.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    key.extend_from_slice(b);
                }
            }
        }
        let g = match self.groups.get(&key) {
            Some(g) => *g,
            None => {
                self.bytes += key.len() * 2 + row.raw.len() + 64;
                if self.bytes > self.limit {
                    return Err(MergeError::TooLarge { limit: self.limit });
                }
                let init: Vec<Acc> = (0..self.layout.width)
                    .map(|i| match self.merge_of(i) {
                        Merge::First => Acc::First(None),
                        Merge::Count => Acc::Count(0),
                        Merge::Sum if self.cols.get(i).is_some_and(|c| is_float(c.ty)) => {
                            Acc::SumFloat(None)
                        }
                        Merge::Sum => Acc::SumDec(None),
                        Merge::Min { .. } | Merge::Max { .. } => Acc::Pick(None, None),
                        Merge::Avg { .. } | Merge::Carried => Acc::Carried(None),
                    })
                    .collect();
                self.states.push(init);
                self.groups.insert(key, self.states.len() - 1);
                // The first row of a group sets every First value.
                let g = self.states.len() - 1;
                for i in 0..self.layout.width {
                    if let Acc::First(slot) = &mut self.states[g][i] {
                        *slot = row.get(i).map(<[u8]>::to_vec);
                    }
                }
                g
            }
        };
        for i in 0..self.layout.width {
            let merge = self.merge_of(i);
            let v = row.get(i);
            let ty = self
                .cols
                .get(i)
                .map_or(ColumnType::MYSQL_TYPE_NULL, |c| c.ty);
            let err = |why| value_err(i, v.unwrap_or_default(), why);
            let e: Option<MergeError> = match (&mut self.states[g][i], merge) {
                (Acc::Count(n), _) => match v.map(|b| {
                    std::str::from_utf8(b)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                }) {
                    None => None,
                    Some(Some(x)) => {
                        *n = n.saturating_add(x);
                        None
                    }
                    Some(None) => Some(err("not a count")),
                },
                (Acc::SumDec(s), _) => match v {
                    None => None,
                    Some(b) => match std::str::from_utf8(b)
                        .ok()
                        .and_then(|t| Decimal::from_str(t).ok())
                    {
                        Some(x) => match s.unwrap_or(Decimal::ZERO).checked_add(x) {
                            Some(t) => {
                                *s = Some(t);
                                None
                            }
                            None => Some(err("the sum overflows 28 digits")),
                        },
                        None => Some(err("not a decimal of at most 28 digits")),
                    },
                },
                (Acc::SumFloat(s), _) => match v {
                    None => None,
                    Some(b) => match std::str::from_utf8(b)
                        .ok()
                        .and_then(|t| t.parse::<f64>().ok())
                    {
                        Some(x) => {
                            *s = Some(s.unwrap_or(0.0) + x);
                            None
                        }
                        None => Some(err("not a number")),
                    },
                },
                (Acc::Pick(cur, cur_w), Merge::Min { weight } | Merge::Max { weight }) => {
                    let wi = weight.map(|w| self.layout.index(w));
                    let nw = wi.and_then(|w| row.get(w));
                    let better = match (v, cur.as_deref()) {
                        (None, _) => false,
                        (Some(_), None) => true,
                        (Some(new), Some(old)) => {
                            let o = cmp_values(Some(new), nw, Some(old), cur_w.as_deref(), ty);
                            if matches!(merge, Merge::Min { .. }) {
                                o == Ordering::Less
                            } else {
                                o == Ordering::Greater
                            }
                        }
                    };
                    if better {
                        *cur = v.map(<[u8]>::to_vec);
                        *cur_w = nw.map(<[u8]>::to_vec);
                    }
                    None
                }
                _ => None,
            };
            if let Some(e) = e {
                return Err(e);
            }
        }
        Ok(())
    }

    /// The merged rows (every node column, hidden ones included), HAVING applied, in group
    /// order (sorted later by the caller).
    pub fn finish(self) -> Result<Vec<Row>, MergeError> {
        let width = self.layout.width;
        let mut out = Vec::with_capacity(self.states.len());
        for st in &self.states {
            let mut vals: Vec<Option<Vec<u8>>> = vec![None; width];
            for (i, acc) in st.iter().enumerate().take(width) {
                vals[i] = match acc {
                    Acc::First(v) | Acc::Carried(v) => v.clone(),
                    Acc::Count(n) => Some(n.to_string().into_bytes()),
                    Acc::SumDec(s) => s.map(|d| d.to_string().into_bytes()),
                    Acc::SumFloat(s) => s.map(|f| format_float(f).into_bytes()),
                    Acc::Pick(v, _) => v.clone(),
                };
            }
            // MIN/MAX weights: the winner's.
            for (i, acc) in st.iter().enumerate().take(width) {
                if let (
                    Merge::Min { weight: Some(w) } | Merge::Max { weight: Some(w) },
                    Acc::Pick(_, wv),
                ) = (self.merge_of(i), acc)
                {
                    vals[self.layout.index(w)] = wv.clone();
                }
            }
            // AVG = SUM / COUNT, to the AVG column's own decimals.
            for i in 0..width {
                if let Merge::Avg { sum, count } = self.merge_of(i) {
                    let (si, ci) = (self.layout.index(sum), self.layout.index(count));
                    let n: i64 = vals[ci]
                        .as_deref()
                        .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
                        .unwrap_or(0);
                    let info = self.cols.get(i).copied();
                    vals[i] = match (&vals[si], n) {
                        (None, _) | (_, 0) => None,
                        (Some(s), n) => Some(avg(s, n, info).ok_or_else(|| MergeError::Value {
                            column: i,
                            value: String::from_utf8_lossy(s).into_owned(),
                            why: "cannot divide for AVG",
                        })?),
                    };
                }
            }
            let row =
                Row::parse(Bytes::from(encode_row(&vals)), width).ok_or(MergeError::Value {
                    column: 0,
                    value: String::new(),
                    why: "internal: merged row",
                })?;
            if let Some(h) = &self.agg.having {
                if eval(h, &row, self.layout, &self.cols) != Some(true) {
                    continue;
                }
            }
            out.push(row);
        }
        Ok(out)
    }
}

fn value_err(column: usize, v: &[u8], why: &'static str) -> MergeError {
    MergeError::Value {
        column,
        value: String::from_utf8_lossy(v).into_owned(),
        why,
    }
}

fn format_float(f: f64) -> String {
    if f.is_finite() && f == f.trunc() && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

fn avg(sum: &[u8], n: i64, info: Option<ColumnInfo>) -> Option<Vec<u8>> {
    let s = std::str::from_utf8(sum).ok()?;
    match info {
        Some(c) if is_float(c.ty) => {
            Some(format_float(s.parse::<f64>().ok()? / n as f64).into_bytes())
        }
        _ => {
            let d = Decimal::from_str(s).ok()?;
            let scale = info.map_or(4, |c| c.decimals as u32).min(28);
            let mut q = d
                .checked_div(Decimal::from(n))?
                .round_dp_with_strategy(scale, RoundingStrategy::MidpointAwayFromZero);
            q.rescale(scale);
            Some(q.to_string().into_bytes())
        }
    }
}

/// Three-valued evaluation of HAVING over a merged row.
fn eval(p: &Pred, row: &Row, layout: Layout, cols: &[ColumnInfo]) -> Option<bool> {
    match p {
        Pred::And(ps) => {
            let mut out = Some(true);
            for p in ps {
                match eval(p, row, layout, cols) {
                    Some(false) => return Some(false),
                    None => out = None,
                    Some(true) => {}
                }
            }
            out
        }
        Pred::Or(ps) => {
            let mut out = Some(false);
            for p in ps {
                match eval(p, row, layout, cols) {
                    Some(true) => return Some(true),
                    None => out = None,
                    Some(false) => {}
                }
            }
            out
        }
        Pred::Not(p) => eval(p, row, layout, cols).map(|b| !b),
        Pred::IsNull(o, is) => {
            let v = operand(o, row, layout);
            Some(v.is_none() == *is)
        }
        Pred::Cmp(l, op, r) => {
            let (a, b) = (operand(l, row, layout)?, operand(r, row, layout)?);
            let numeric = |o: &Operand| match o {
                Operand::Col(c) => cols.get(layout.index(*c)).is_some_and(|c| is_numeric(c.ty)),
                Operand::Number(_) => true,
                _ => false,
            };
            let o = if numeric(l) || numeric(r) {
                cmp_numbers(&a, &b)
            } else {
                a.cmp(&b)
            };
            Some(match op {
                CmpOp::Eq => o == Ordering::Equal,
                CmpOp::Ne => o != Ordering::Equal,
                CmpOp::Lt => o == Ordering::Less,
                CmpOp::Le => o != Ordering::Greater,
                CmpOp::Gt => o == Ordering::Greater,
                CmpOp::Ge => o != Ordering::Less,
            })
        }
    }
}

fn operand(o: &Operand, row: &Row, layout: Layout) -> Option<Vec<u8>> {
    match o {
        Operand::Col(c) => row.get(layout.index(*c)).map(<[u8]>::to_vec),
        Operand::Number(n) => Some(n.clone().into_bytes()),
        Operand::Null => None,
    }
}

/// Sort, offset and limit over merged rows (aggregated results).
pub fn finish_rows(
    mut rows: Vec<Row>,
    plan: &SelectPlan,
    layout: Layout,
    cols: &[ColumnInfo],
) -> Vec<Row> {
    let keys: Vec<SortKey> = if !plan.order.is_empty() {
        plan.order.clone()
    } else {
        // MariaDB returns GROUP BY results in key order when there is no ORDER BY.
        plan.aggregate
            .as_ref()
            .map(|a| {
                a.keys
                    .iter()
                    .map(|(c, w)| SortKey {
                        col: *c,
                        weight: *w,
                        desc: false,
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    if !keys.is_empty() {
        rows.sort_by(|a, b| cmp_rows(a, b, &keys, layout, cols));
    }
    let skip = usize::try_from(plan.offset).unwrap_or(usize::MAX);
    let take = plan
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    rows.into_iter().skip(skip).take(take).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shard_rules::lex::Quoting;
    use shard_rules::scatter::plan_select;

    fn row(vals: &[Option<&str>]) -> Row {
        let v: Vec<Option<Vec<u8>>> = vals
            .iter()
            .map(|x| x.map(|s| s.as_bytes().to_vec()))
            .collect();
        Row::parse(Bytes::from(encode_row(&v)), vals.len()).unwrap()
    }

    fn info(ty: ColumnType, decimals: u8) -> ColumnInfo {
        ColumnInfo {
            ty,
            decimals,
            enum_or_set: false,
        }
    }

    #[test]
    fn rows_parse_and_drop_their_hidden_tail() {
        let r = row(&[Some("1"), None, Some("abc"), None]);
        assert_eq!(r.get(0), Some(&b"1"[..]));
        assert_eq!(r.get(1), None);
        assert_eq!(
            r.visible(2).as_ref(),
            &encode_row(&[Some(b"1".to_vec()), None])[..]
        );
        assert_eq!(
            r.visible(1).as_ref(),
            &encode_row(&[Some(b"1".to_vec()), None, Some(b"abc".to_vec())])[..]
        );
        assert!(Row::parse(Bytes::from_static(b"\x05ab"), 1).is_none());
    }

    #[test]
    fn text_rows_become_binary_rows_by_column_type() {
        let r = row(&[
            Some("-3"),
            None,
            Some("2024-02-03 04:05:06.5"),
            Some("-25:00:01"),
            Some("x"),
            Some("1.5"),
        ]);
        let cols = [
            info(ColumnType::MYSQL_TYPE_LONG, 0),
            info(ColumnType::MYSQL_TYPE_LONGLONG, 0),
            info(ColumnType::MYSQL_TYPE_DATETIME, 1),
            info(ColumnType::MYSQL_TYPE_TIME, 0),
            info(ColumnType::MYSQL_TYPE_VAR_STRING, 0),
            info(ColumnType::MYSQL_TYPE_DOUBLE, 31),
        ];
        let b = binary_row(&r, &cols, 6).unwrap();
        let mut want = vec![0x00, 0b0000_1000];
        want.extend_from_slice(&(-3i32).to_le_bytes());
        want.extend_from_slice(&[11, 0xE8, 0x07, 2, 3, 4, 5, 6]);
        want.extend_from_slice(&500_000u32.to_le_bytes());
        want.extend_from_slice(&[8, 1, 1, 0, 0, 0, 1, 0, 1]);
        want.extend_from_slice(&[1, b'x']);
        want.extend_from_slice(&1.5f64.to_le_bytes());
        assert_eq!(b, want);
        assert!(binary_row(&row(&[Some("abc")]), &cols[..1], 1).is_none());
    }

    #[test]
    fn numbers_compare_as_numbers_strings_by_weight_and_null_first() {
        let t = ColumnType::MYSQL_TYPE_NEWDECIMAL;
        assert_eq!(
            cmp_values(Some(b"9.5"), None, Some(b"10"), None, t),
            Ordering::Less
        );
        assert_eq!(
            cmp_values(
                Some(b"-2"),
                None,
                Some(b"-10"),
                None,
                ColumnType::MYSQL_TYPE_LONG
            ),
            Ordering::Greater
        );
        let s = ColumnType::MYSQL_TYPE_VAR_STRING;
        assert_eq!(
            cmp_values(Some(b"a"), Some(b"\x00A"), Some(b"A"), Some(b"\x00A"), s),
            Ordering::Equal
        );
        assert_eq!(cmp_values(None, None, Some(b""), None, s), Ordering::Less);
        let t = ColumnType::MYSQL_TYPE_TIME;
        assert_eq!(
            cmp_values(Some(b"-01:00:00"), None, Some(b"00:30:00"), None, t),
            Ordering::Less
        );
        assert_eq!(
            cmp_values(Some(b"100:00:00"), None, Some(b"99:59:59.5"), None, t),
            Ordering::Greater
        );
    }

    #[test]
    fn groups_merge_count_sum_min_max_avg_and_having() {
        let plan = plan_select(
            b"SELECT g, COUNT(*), SUM(x), MIN(x), MAX(x), AVG(x) AS a FROM t GROUP BY g HAVING COUNT(*) > 1",
            Quoting::default(),
        )
        .unwrap();
        let agg = plan.aggregate.clone().unwrap();
        // g, count, sum, min, max, avg | sum, count (avg), weights of min, max, g; then hidden count for HAVING
        let width = 6 + plan.hidden;
        let layout = Layout {
            width,
            hidden: plan.hidden,
        };
        let mut cols = vec![info(ColumnType::MYSQL_TYPE_NEWDECIMAL, 0); width];
        cols[0] = info(ColumnType::MYSQL_TYPE_VAR_STRING, 0);
        cols[5] = info(ColumnType::MYSQL_TYPE_NEWDECIMAL, 4);
        let mk = |g: &str, n: &str, s: &str, mn: &str, mx: &str, av: &str, sc: &str| {
            let mut v = vec![Some(g), Some(n), Some(s), Some(mn), Some(mx), Some(av)];
            // hidden, in plan order: weight(min), weight(max)? follow the plan's hidden list
            for m in &agg.hidden {
                v.push(match m {
                    Merge::Sum => Some(s),
                    Merge::Count => Some(sc),
                    Merge::Carried => None,
                    // The weight of the group key.
                    _ => Some(g),
                });
            }
            row(&v)
        };
        let mut gr = Grouper::new(&agg, layout, cols.clone(), 1 << 20);
        gr.add(&mk("a", "2", "3", "1", "2", "1.5000", "2")).unwrap();
        gr.add(&mk("a", "1", "4", "4", "4", "4.0000", "1")).unwrap();
        gr.add(&mk("b", "1", "7", "7", "7", "7.0000", "1")).unwrap();
        let rows = finish_rows(gr.finish().unwrap(), &plan, layout, &cols);
        assert_eq!(rows.len(), 1, "HAVING COUNT(*) > 1 keeps group a only");
        let r = &rows[0];
        let got: Vec<Option<&[u8]>> = (0..6).map(|i| r.get(i)).collect();
        assert_eq!(
            got,
            vec![
                Some(&b"a"[..]),
                Some(b"3"),
                Some(b"7"),
                Some(b"1"),
                Some(b"4"),
                Some(b"2.3333")
            ]
        );
    }

    #[test]
    fn the_memory_bound_refuses_instead_of_growing() {
        let plan = plan_select(b"SELECT DISTINCT a FROM t", Quoting::default()).unwrap();
        let agg = plan.aggregate.clone().unwrap();
        let layout = Layout {
            width: 2,
            hidden: 1,
        };
        let cols = vec![info(ColumnType::MYSQL_TYPE_LONG, 0); 2];
        let mut g = Grouper::new(&agg, layout, cols, 1000);
        let mut failed = None;
        for i in 0..100 {
            if let Err(e) = g.add(&row(&[Some(&i.to_string()), None])) {
                failed = Some(e);
                break;
            }
        }
        assert_eq!(failed, Some(MergeError::TooLarge { limit: 1000 }));
    }
}
