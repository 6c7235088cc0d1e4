//! INLINE expressions, the Groovy-like templates ShardingSphere users write:
//! `t_order_${order_id % 8}` (pick a target from a column value) and
//! `ds_${0..1}.t_order_${0..7}` (list data nodes: ranges and lists multiply out).
//!
//! Grammar (`$->{ … }` is accepted for `${ … }`):
//! ```text
//! template := ( text | '${' segment '}' )*
//! segment  := expr ( '..' expr )?            -- a range only when listing nodes
//! expr     := term ( ('+' | '-') term )*
//! term     := unary ( ('*' | '/' | '%') unary )*
//! unary    := '-' unary | atom
//! atom     := integer | 'string' | "string" | column | '(' expr ')' | '[' expr (',' expr)* ']'
//! ```
//! Integers are 64-bit; `/` is integer division (truncating, like Groovy's `intdiv`) and `%` keeps
//! the dividend's sign, as in Java
//! (so a negative value gives a name like `t_order_-3`, which matches no node and is refused).
//! `+` with a string concatenates. Overflow and division by zero are errors.

use std::collections::BTreeSet;
use std::fmt;

/// A value inside an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Str(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("INLINE expression `{expression}`: {reason}")]
pub struct InlineError {
    pub expression: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Int(i64),
    Str(String),
    Column(String),
    Neg(Box<Expr>),
    Bin(Box<Expr>, u8, Box<Expr>),
    List(Vec<Expr>),
    Range(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Expr(Expr),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// Most nodes one expression may list.
pub const MAX_NODES: usize = 65_536;

impl Template {
    pub fn parse(source: &str) -> Result<Template, InlineError> {
        let err = |reason: String| InlineError {
            expression: source.to_string(),
            reason,
        };
        let mut parts = Vec::new();
        let mut text = String::new();
        let bytes = source.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let open = if source[i..].starts_with("${") {
                2
            } else if source[i..].starts_with("$->{") {
                4
            } else {
                0
            };
            if open == 0 {
                let c = source[i..].chars().next().unwrap_or_default();
                if c == '}' {
                    return Err(err(format!("`}}` without `${{` at byte {i}")));
                }
                text.push(c);
                i += c.len_utf8();
                continue;
            }
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            let start = i + open;
            let mut p = Parser {
                s: source.as_bytes(),
                i: start,
            };
            let e = p
                .segment()
                .map_err(|r| err(format!("{r} at byte {}", p.i)))?;
            p.ws();
            if p.peek() != Some(b'}') {
                return Err(err(match p.peek() {
                    None => format!("`${{` at byte {} is never closed", i),
                    Some(c) => format!("unexpected `{}` at byte {}", c as char, p.i),
                }));
            }
            parts.push(Part::Expr(e));
            i = p.i + 1;
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    fn err(&self, reason: impl Into<String>) -> InlineError {
        InlineError {
            expression: self.source.clone(),
            reason: reason.into(),
        }
    }

    /// Whether two templates compute the same values (their `${ … }` parts are equal; the text
    /// around them may differ): `t_order_${id % 8}` and `t_item_${id % 8}`.
    pub fn same_expressions(&self, other: &Template) -> bool {
        let exprs = |t: &Template| -> Vec<Expr> {
            t.parts
                .iter()
                .filter_map(|p| match p {
                    Part::Expr(e) => Some(e.clone()),
                    Part::Text(_) => None,
                })
                .collect()
        };
        exprs(self) == exprs(other)
    }

    /// Whether any `${ … }` part computes (arithmetic), rather than naming a value as is.
    pub fn computes(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Expr(Expr::Bin(..) | Expr::Neg(_))))
    }

    /// The columns the template reads, in name order.
    pub fn columns(&self) -> BTreeSet<String> {
        fn walk(e: &Expr, out: &mut BTreeSet<String>) {
            match e {
                Expr::Column(c) => {
                    out.insert(c.clone());
                }
                Expr::Neg(a) => walk(a, out),
                Expr::Bin(a, _, b) | Expr::Range(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                Expr::List(items) => items.iter().for_each(|x| walk(x, out)),
                Expr::Int(_) | Expr::Str(_) => {}
            }
        }
        let mut out = BTreeSet::new();
        for p in &self.parts {
            if let Part::Expr(e) = p {
                walk(e, &mut out);
            }
        }
        out
    }

    /// Every string the template lists: ranges and lists multiply out, left to right
    /// (`ds_${0..1}.t_${0..1}` → `ds_0.t_0, ds_0.t_1, ds_1.t_0, ds_1.t_1`). No columns allowed.
    pub fn expand(&self) -> Result<Vec<String>, InlineError> {
        let mut out = vec![String::new()];
        for p in &self.parts {
            let choices: Vec<String> = match p {
                Part::Text(t) => vec![t.clone()],
                Part::Expr(e) => self
                    .choices(e)?
                    .into_iter()
                    .map(|v| v.to_string())
                    .collect(),
            };
            if out.len().saturating_mul(choices.len()) > MAX_NODES {
                return Err(self.err(format!("lists more than {MAX_NODES} names")));
            }
            out = out
                .iter()
                .flat_map(|prefix| choices.iter().map(move |c| format!("{prefix}{c}")))
                .collect();
        }
        Ok(out)
    }

    fn choices(&self, e: &Expr) -> Result<Vec<Value>, InlineError> {
        match e {
            Expr::Range(a, b) => {
                let (a, b) = (self.eval_const(a)?, self.eval_const(b)?);
                match (a, b) {
                    (Value::Int(a), Value::Int(b)) if a <= b => {
                        if a.abs_diff(b) >= MAX_NODES as u64 {
                            return Err(self.err(format!("range {a}..{b} is too long")));
                        }
                        Ok((a..=b).map(Value::Int).collect())
                    }
                    (Value::Int(a), Value::Int(b)) => {
                        Err(self.err(format!("range {a}..{b} goes backwards")))
                    }
                    _ => Err(self.err("a range needs integer ends")),
                }
            }
            Expr::List(items) => items.iter().map(|x| self.eval_const(x)).collect(),
            other => Ok(vec![self.eval_const(other)?]),
        }
    }

    fn eval_const(&self, e: &Expr) -> Result<Value, InlineError> {
        self.eval_expr(e, &|c: &str| {
            Err(format!(
                "column `{c}` cannot be used where nodes are listed"
            ))
        })
    }

    /// The string for one row: `lookup(column)` gives each column's value.
    pub fn eval(
        &self,
        lookup: &dyn Fn(&str) -> Result<Value, String>,
    ) -> Result<String, InlineError> {
        use std::fmt::Write;
        let mut out = String::with_capacity(self.source.len() + 8);
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Expr(e) => {
                    let v = self.eval_expr(e, lookup)?;
                    let _ = write!(out, "{v}");
                }
            }
        }
        Ok(out)
    }

    fn eval_expr(
        &self,
        e: &Expr,
        lookup: &dyn Fn(&str) -> Result<Value, String>,
    ) -> Result<Value, InlineError> {
        Ok(match e {
            Expr::Int(v) => Value::Int(*v),
            Expr::Str(s) => Value::Str(s.clone()),
            Expr::Column(c) => lookup(c).map_err(|r| self.err(r))?,
            Expr::Neg(a) => match self.eval_expr(a, lookup)? {
                Value::Int(v) => Value::Int(
                    v.checked_neg()
                        .ok_or_else(|| self.err("integer overflow"))?,
                ),
                Value::Str(s) => return Err(self.err(format!("cannot negate the string `{s}`"))),
            },
            Expr::Bin(a, op, b) => {
                let (a, b) = (self.eval_expr(a, lookup)?, self.eval_expr(b, lookup)?);
                match (a, b) {
                    (Value::Int(x), Value::Int(y)) => {
                        let r = match op {
                            b'+' => x.checked_add(y),
                            b'-' => x.checked_sub(y),
                            b'*' => x.checked_mul(y),
                            b'/' | b'%' if y == 0 => {
                                return Err(self.err("division by zero"));
                            }
                            b'/' => x.checked_div(y),
                            _ => x.checked_rem(y),
                        };
                        Value::Int(r.ok_or_else(|| self.err("integer overflow"))?)
                    }
                    (a, b) if *op == b'+' => Value::Str(format!("{a}{b}")),
                    (a, b) => {
                        return Err(self.err(format!(
                            "`{}` needs integers, got `{a}` and `{b}`",
                            *op as char
                        )))
                    }
                }
            }
            Expr::List(_) | Expr::Range(..) => {
                return Err(self.err("a list or range picks no single value"));
            }
        })
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn segment(&mut self) -> Result<Expr, String> {
        let a = self.expr()?;
        self.ws();
        if self.s[self.i..].starts_with(b"..") {
            self.i += 2;
            let b = self.expr()?;
            return Ok(Expr::Range(Box::new(a), Box::new(b)));
        }
        Ok(a)
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut a = self.term()?;
        loop {
            self.ws();
            match self.peek() {
                Some(op @ (b'+' | b'-')) => {
                    self.i += 1;
                    let b = self.term()?;
                    a = Expr::Bin(Box::new(a), op, Box::new(b));
                }
                _ => return Ok(a),
            }
        }
    }

    fn term(&mut self) -> Result<Expr, String> {
        let mut a = self.unary()?;
        loop {
            self.ws();
            match self.peek() {
                Some(op @ (b'*' | b'/' | b'%')) => {
                    self.i += 1;
                    let b = self.unary()?;
                    a = Expr::Bin(Box::new(a), op, Box::new(b));
                }
                _ => return Ok(a),
            }
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.ws();
        if self.peek() == Some(b'-') {
            self.i += 1;
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, String> {
        self.ws();
        let start = self.i;
        match self.peek() {
            None => Err("the expression ends early".into()),
            Some(b'(') => {
                self.i += 1;
                let e = self.expr()?;
                self.ws();
                if self.peek() != Some(b')') {
                    return Err("`(` is never closed".into());
                }
                self.i += 1;
                Ok(e)
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    items.push(self.expr()?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Expr::List(items));
                        }
                        _ => return Err("`[` is never closed".into()),
                    }
                }
            }
            Some(q @ (b'\'' | b'"')) => {
                self.i += 1;
                let from = self.i;
                while self.peek().is_some_and(|c| c != q) {
                    self.i += 1;
                }
                if self.peek().is_none() {
                    return Err("a string is never closed".into());
                }
                let s = String::from_utf8_lossy(&self.s[from..self.i]).into_owned();
                self.i += 1;
                Ok(Expr::Str(s))
            }
            Some(c) if c.is_ascii_digit() => {
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
                text.parse()
                    .map(Expr::Int)
                    .map_err(|_| format!("{text} does not fit a 64-bit integer"))
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$')
                {
                    self.i += 1;
                }
                let name = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
                Ok(Expr::Column(name.to_ascii_lowercase()))
            }
            Some(c) => Err(format!("unexpected `{}`", c as char)),
        }
    }
}

/// Splits a node list at the commas outside `${ … }`.
pub fn split_top_level(source: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in source.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(source[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(source[start..].trim());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(s: &str) -> Vec<String> {
        Template::parse(s).unwrap().expand().unwrap()
    }

    fn eval(s: &str, col: &str, v: Value) -> Result<String, InlineError> {
        let c = col.to_string();
        Template::parse(s).unwrap().eval(&move |name| {
            if name == c {
                Ok(v.clone())
            } else {
                Err(format!("no value for `{name}`"))
            }
        })
    }

    #[test]
    fn ranges_and_lists_multiply_out_left_to_right() {
        assert_eq!(
            expand("ds_${0..1}.t_order_${0..2}"),
            [
                "ds_0.t_order_0",
                "ds_0.t_order_1",
                "ds_0.t_order_2",
                "ds_1.t_order_0",
                "ds_1.t_order_1",
                "ds_1.t_order_2"
            ]
        );
        assert_eq!(expand("t_$->{['a', \"b\"]}_${2*3}"), ["t_a_6", "t_b_6"]);
        assert_eq!(expand("plain"), ["plain"]);
        assert_eq!(
            split_top_level("ds_0.t_${0..1}, ds_1.t_${[2,3]}"),
            ["ds_0.t_${0..1}", "ds_1.t_${[2,3]}"]
        );
    }

    #[test]
    fn expressions_pick_one_target_with_java_arithmetic() {
        assert_eq!(
            eval("t_order_${order_id % 8}", "order_id", Value::Int(13)).unwrap(),
            "t_order_5"
        );
        assert_eq!(
            eval("t_${(ORDER_ID / 2) % 4}", "order_id", Value::Int(13)).unwrap(),
            "t_2"
        );
        assert_eq!(eval("t_${id % 8}", "id", Value::Int(-3)).unwrap(), "t_-3");
        assert_eq!(
            eval("t_${region}", "region", Value::Str("eu".into())).unwrap(),
            "t_eu"
        );
        assert_eq!(
            eval("t_${region + '_x'}", "region", Value::Str("eu".into())).unwrap(),
            "t_eu_x"
        );
        let cols = Template::parse("ds_${(a + b) % 2}").unwrap().columns();
        assert_eq!(cols.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn malformed_expressions_and_bad_values_are_errors_that_say_why() {
        let cases = [
            ("t_${id % }", "unexpected `}` at byte 9"),
            ("t_${id %", "the expression ends early at byte 8"),
            ("t_${id % 8", "`${` at byte 2 is never closed"),
            ("t_${(id % 8}", "`(` is never closed at byte 11"),
            ("t_${id # 8}", "unexpected `#` at byte 7"),
            ("t_}", "`}` without `${` at byte 2"),
            ("t_${'x}", "a string is never closed at byte 7"),
        ];
        for (src, why) in cases {
            let e = Template::parse(src).unwrap_err();
            assert_eq!(e.reason, why, "{src}");
            assert_eq!(e.expression, src);
        }
        let e = eval("t_${id % 0}", "id", Value::Int(1)).unwrap_err();
        assert_eq!(e.reason, "division by zero");
        let e = eval("t_${id * 4}", "id", Value::Int(i64::MAX)).unwrap_err();
        assert_eq!(e.reason, "integer overflow");
        let e = eval("t_${id % 8}", "id", Value::Str("x".into())).unwrap_err();
        assert_eq!(e.reason, "`%` needs integers, got `x` and `8`");
        let e = Template::parse("t_${id}").unwrap().expand().unwrap_err();
        assert_eq!(
            e.reason,
            "column `id` cannot be used where nodes are listed"
        );
        let e = Template::parse("t_${3..1}").unwrap().expand().unwrap_err();
        assert_eq!(e.reason, "range 3..1 goes backwards");
        let e = Template::parse("t_${0..99999}_${0..9}")
            .unwrap()
            .expand()
            .unwrap_err();
        assert!(e.reason.contains("too long") || e.reason.contains("more than"));
    }
}
