//! How a SELECT that reaches several data nodes runs (issue 9): what each node is sent and how
//! the proxy merges the node results into the one result the client would get from a single
//! database.
//!
//! The node SQL is the client's text, changed by token spans only: hidden columns appended to
//! the select list (sort keys, collation weights, the parts of AVG, aggregates HAVING needs),
//! HAVING cut (it is evaluated after the merge), LIMIT replaced (`LIMIT offset + count` per
//! node, or none when groups are merged). Strings compare by `WEIGHT_STRING()` of their
//! collation, computed by the backend itself, so the merge orders and groups `'a'` and `'A'`
//! as the server does. What cannot be merged correctly is refused with the construct named.

use std::fmt;

use sqlparser::ast::{
    self, BinaryOperator, DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, LimitClause, OrderByKind, OrderBySort, Query, SelectItem,
    SetExpr, Statement, UnaryOperator,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use crate::lex::{tokens, Quoting, Token};

/// A column of the node result: one of the client's select items, or a hidden column the
/// proxy appended (dropped before the client sees the row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Item(usize),
    Hidden(usize),
}

/// How a column of the node results becomes the column of the merged result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// A GROUP BY key (equal in every row of the group), or a plain column: the first value.
    First,
    Count,
    Sum,
    /// `weight`: the hidden `WEIGHT_STRING()` of the value, compared instead when not NULL.
    Min {
        weight: Option<Col>,
    },
    Max {
        weight: Option<Col>,
    },
    /// The node ran `AVG(x)` (for the column's type and name), `SUM(x)` and `COUNT(x)`.
    Avg {
        sum: Col,
        count: Col,
    },
    /// Set together with the column that owns it (a MIN/MAX weight).
    Carried,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    pub col: Col,
    pub weight: Option<Col>,
    pub desc: bool,
}

/// A HAVING condition over merged columns.
#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    And(Vec<Pred>),
    Or(Vec<Pred>),
    Not(Box<Pred>),
    Cmp(Operand, CmpOp, Operand),
    IsNull(Operand, bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Col(Col),
    /// A number as written. (String literals are refused: the merge cannot compare by the
    /// column's collation.)
    Number(String),
    Null,
}

/// Aggregation across nodes: groups, the merge of every column, HAVING.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// The group key columns (with their weights). Empty: one group (`SELECT COUNT(*) …`).
    pub keys: Vec<(Col, Option<Col>)>,
    /// Per select item.
    pub items: Vec<Merge>,
    /// Per hidden column.
    pub hidden: Vec<Merge>,
    pub having: Option<Pred>,
}

/// The plan of a scattered SELECT.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectPlan {
    /// What every node runs, with the logical table names (renamed per node afterwards).
    pub node_sql: String,
    /// Hidden columns at the end of each node row.
    pub hidden: usize,
    /// Items of the select list, when known (no `*`).
    pub items: Option<usize>,
    /// Set when rows must be grouped (aggregates, GROUP BY, DISTINCT): the merge reads every
    /// node result before answering. Otherwise rows stream.
    pub aggregate: Option<Aggregate>,
    pub order: Vec<SortKey>,
    pub limit: Option<u64>,
    pub offset: u64,
}

/// A construct the proxy cannot run correctly across nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotSupported(pub String);

impl fmt::Display for NotSupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn no<T>(what: impl Into<String>) -> Result<T, NotSupported> {
    Err(NotSupported(what.into()))
}

/// Plans a SELECT (hint stripped) that reaches several nodes.
pub fn plan_select(sql: &[u8], q: Quoting) -> Result<SelectPlan, NotSupported> {
    let text = std::str::from_utf8(sql)
        .map_err(|_| NotSupported("a statement that is not UTF-8".into()))?;
    let mut stmts = Parser::parse_sql(&MySqlDialect {}, text)
        .map_err(|e| NotSupported(format!("a statement the proxy cannot parse ({e})")))?;
    let Some(Statement::Query(query)) = stmts.pop().filter(|_| stmts.is_empty()) else {
        return no("this statement");
    };
    let toks = tokens(sql, q).map_err(|e| NotSupported(e.to_string()))?;
    Planner::default().plan(&query, sql, &toks)
}

/// A select item: its expression text and alias (lower case), and its aggregate.
type ItemInfo = (
    Option<String>,
    Option<String>,
    Option<(&'static str, String)>,
);

#[derive(Default)]
struct Planner {
    /// Hidden column expressions (SQL text) and their merges.
    hidden: Vec<(String, Merge)>,
}

fn lower(e: &impl fmt::Display) -> String {
    e.to_string().to_ascii_lowercase()
}

/// `COUNT`, `SUM`, `MIN`, `MAX`, `AVG` with one argument (or `*`), or a refusal for other
/// aggregates and modifiers. `None` for a non-aggregate expression.
fn aggregate_of(e: &Expr) -> Result<Option<(&'static str, String)>, NotSupported> {
    let Expr::Function(f) = e else {
        return Ok(None);
    };
    let name = lower(&f.name);
    let agg = match name.as_str() {
        "count" => "count",
        "sum" => "sum",
        "min" => "min",
        "max" => "max",
        "avg" => "avg",
        "group_concat" | "std" | "stddev" | "stddev_pop" | "stddev_samp" | "variance"
        | "var_pop" | "var_samp" | "bit_and" | "bit_or" | "bit_xor" | "json_arrayagg"
        | "json_objectagg" => {
            return no(format!(
                "the aggregate {} across nodes",
                name.to_uppercase()
            ))
        }
        _ => return Ok(None),
    };
    if f.over.is_some() {
        return no(format!("the window function {}", e));
    }
    let FunctionArguments::List(list) = &f.args else {
        return no(format!("{e}"));
    };
    if list.duplicate_treatment == Some(DuplicateTreatment::Distinct) {
        return no(format!("{}(DISTINCT …) across nodes", agg.to_uppercase()));
    }
    if list.args.len() != 1 || !list.clauses.is_empty() || f.filter.is_some() {
        return no(format!("{e}"));
    }
    let arg = match &list.args[0] {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => {
            if contains_aggregate(x)? {
                return no(format!("a nested aggregate ({e})"));
            }
            x.to_string()
        }
        FunctionArg::Unnamed(FunctionArgExpr::Wildcard) if agg == "count" => "*".to_string(),
        _ => return no(format!("{e}")),
    };
    Ok(Some((agg, arg)))
}

/// Whether an expression has an aggregate anywhere inside (or a window function, refused).
fn contains_aggregate(e: &Expr) -> Result<bool, NotSupported> {
    let mut found: Result<bool, NotSupported> = Ok(false);
    let _ = ast::visit_expressions(e, |x: &Expr| {
        match aggregate_of(x) {
            Ok(Some(_)) => found = Ok(true),
            Ok(None) => {
                if let Expr::Function(f) = x {
                    if f.over.is_some() {
                        found = no(format!("the window function {x}"));
                        return std::ops::ControlFlow::Break(());
                    }
                }
                if matches!(
                    x,
                    Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. }
                ) {
                    found = no(format!(
                        "a subquery in the select list or HAVING ({x}) across nodes"
                    ));
                    return std::ops::ControlFlow::Break(());
                }
            }
            Err(err) => {
                found = Err(err);
                return std::ops::ControlFlow::Break(());
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    found
}

fn literal_u64(e: &Expr, what: &str) -> Result<u64, NotSupported> {
    match e {
        Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n
                .to_string()
                .parse()
                .map_err(|_| NotSupported(format!("{what} {n}"))),
            ast::Value::Placeholder(_) => no(format!("a `?` parameter in {what} across nodes")),
            _ => no(format!("{what} {e}")),
        },
        _ => no(format!("{what} {e}")),
    }
}

/// Top-level clause keywords that end the one before them.
const CLAUSES: &[&str] = &[
    "FROM",
    "WHERE",
    "GROUP",
    "HAVING",
    "WINDOW",
    "ORDER",
    "LIMIT",
    "FOR",
    "LOCK",
    "INTO",
    "PROCEDURE",
    "UNION",
    "EXCEPT",
    "INTERSECT",
];

fn top_level<'t>(toks: &'t [Token], sql: &[u8], kw: &str) -> Option<(usize, &'t Token)> {
    toks.iter()
        .enumerate()
        .find(|(_, t)| t.depth == 0 && t.is_keyword(sql, kw))
}

/// Byte range of the top-level clause starting with `kw`, to the next clause or the end.
fn clause_span(toks: &[Token], sql: &[u8], kw: &str) -> Option<std::ops::Range<usize>> {
    let (k, t) = top_level(toks, sql, kw)?;
    let end = toks[k + 1..]
        .iter()
        .find(|t| t.depth == 0 && CLAUSES.iter().any(|c| t.is_keyword(sql, c)))
        .map_or(sql.len(), |t| t.span.start);
    Some(t.span.start..end)
}

impl Planner {
    fn add_hidden(&mut self, sql: String, merge: Merge) -> Col {
        self.hidden.push((sql, merge));
        Col::Hidden(self.hidden.len() - 1)
    }

    /// The collation weight of a group key or sort key: equal in every row of a group.
    fn weight(&mut self, expr: &str) -> Col {
        self.add_hidden(format!("WEIGHT_STRING({expr})"), Merge::First)
    }

    fn plan(
        mut self,
        query: &Query,
        sql: &[u8],
        toks: &[Token],
    ) -> Result<SelectPlan, NotSupported> {
        if query.with.is_some() {
            return no("WITH (common table expressions) across nodes");
        }
        let SetExpr::Select(select) = query.body.as_ref() else {
            return no(match query.body.as_ref() {
                SetExpr::SetOperation { op, .. } => format!("{op} across nodes"),
                _ => "a parenthesised query across nodes".into(),
            });
        };
        if query.fetch.is_some() || query.for_clause.is_some() {
            return no("FETCH / FOR XML|JSON across nodes");
        }
        if select.into.is_some() {
            return no("SELECT … INTO across nodes");
        }
        if select
            .select_modifiers
            .as_ref()
            .is_some_and(|m| m.sql_calc_found_rows)
        {
            return no("SQL_CALC_FOUND_ROWS across nodes");
        }
        if !select.named_window.is_empty() || select.qualify.is_some() {
            return no("WINDOW clauses across nodes");
        }
        // The client's text must be where the AST says: one SELECT at the top.
        if toks.first().is_none_or(|t| !t.is_keyword(sql, "SELECT")) {
            return no("a query that does not start with SELECT across nodes");
        }
        let wildcard = select.projection.iter().any(|i| {
            matches!(
                i,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        });
        // (expression text lower case, alias lower case) per item, and its aggregate.
        let mut items: Vec<ItemInfo> = Vec::new();
        for it in &select.projection {
            items.push(match it {
                SelectItem::UnnamedExpr(e) => (Some(lower(e)), None, self.item_aggregate(e)?),
                SelectItem::ExprWithAlias { expr, alias } => (
                    Some(lower(expr)),
                    Some(alias.value.to_ascii_lowercase()),
                    self.item_aggregate(expr)?,
                ),
                _ => (None, None, None),
            });
        }
        let group: Vec<&Expr> = match &select.group_by {
            GroupByExpr::Expressions(exprs, mods) => {
                if !mods.is_empty() {
                    return no("GROUP BY … WITH ROLLUP across nodes");
                }
                exprs.iter().collect()
            }
            GroupByExpr::All(_) => return no("GROUP BY ALL"),
        };
        let distinct = match &select.distinct {
            Some(ast::Distinct::Distinct) => true,
            Some(ast::Distinct::On(_)) => return no("DISTINCT ON"),
            _ => false,
        };
        let aggregated = items.iter().any(|i| i.2.is_some()) || !group.is_empty() || distinct;
        if distinct && items.iter().any(|i| i.2.is_some()) {
            return no("DISTINCT with aggregates across nodes");
        }
        if aggregated && wildcard {
            return no("`*` with aggregates, GROUP BY or DISTINCT across nodes");
        }
        if select.having.is_some() && !aggregated {
            return no("HAVING without aggregates or GROUP BY across nodes");
        }
        let n_items = (!wildcard).then_some(items.len());
        // Resolves an expression of ORDER BY / HAVING / GROUP BY to a select item.
        let find_item = |e: &Expr| -> Option<usize> {
            if let Expr::Identifier(id) = e {
                let name = id.value.to_ascii_lowercase();
                if let Some(i) = items
                    .iter()
                    .position(|it| it.1.as_deref() == Some(name.as_str()))
                {
                    return Some(i);
                }
            }
            let text = lower(e);
            items
                .iter()
                .position(|it| it.0.as_deref() == Some(text.as_str()))
        };

        let mut aggregate = None;
        if aggregated {
            let mut merges = Vec::with_capacity(items.len());
            for (k, it) in items.iter().enumerate() {
                let expr = item_expr(&select.projection[k]);
                merges.push(match &it.2 {
                    None => Merge::First,
                    Some((agg, arg)) => self.merge_of(agg, arg, &expr),
                });
            }
            let mut keys = Vec::new();
            if distinct {
                for (k, _) in items.iter().enumerate() {
                    let w = self.weight(&item_expr(&select.projection[k]));
                    keys.push((Col::Item(k), Some(w)));
                }
            }
            for g in &group {
                let col = match positional(g, items.len())? {
                    Some(i) => Col::Item(i),
                    None => match find_item(g) {
                        Some(i) => Col::Item(i),
                        None => self.add_hidden(g.to_string(), Merge::First),
                    },
                };
                let text = match col {
                    Col::Item(i) => item_expr(&select.projection[i]),
                    Col::Hidden(_) => g.to_string(),
                };
                if let Col::Item(i) = col {
                    if !matches!(merges[i], Merge::First) {
                        return no("GROUP BY an aggregate");
                    }
                }
                let w = self.weight(&text);
                keys.push((col, Some(w)));
            }
            let having = match &select.having {
                Some(h) => Some(self.pred(h, &find_item)?),
                None => None,
            };
            aggregate = Some((keys, merges, having));
        }

        let mut order = Vec::new();
        if let Some(ob) = &query.order_by {
            let OrderByKind::Expressions(exprs) = &ob.kind else {
                return no("ORDER BY ALL");
            };
            for o in exprs {
                let desc = match o.options.sort {
                    Some(OrderBySort::Desc) => true,
                    Some(OrderBySort::Using(_)) => return no("ORDER BY … USING"),
                    _ => false,
                };
                if o.options.nulls_first.is_some() {
                    return no("NULLS FIRST / LAST");
                }
                let pos = positional(&o.expr, items.len())?;
                if pos.is_some() && wildcard {
                    return no("ORDER BY a column position with `*` across nodes");
                }
                let target = pos.or_else(|| find_item(&o.expr));
                if distinct && target.is_none() {
                    return no(
                        "DISTINCT with ORDER BY on a column outside the select list across nodes",
                    );
                }
                let (col, weight) = if aggregate.is_some() {
                    let (col, text) = match target {
                        Some(i) => (Col::Item(i), item_expr(&select.projection[i])),
                        None => {
                            if contains_aggregate(&o.expr)? {
                                match aggregate_of(&o.expr)? {
                                    Some((agg, arg)) => {
                                        let m = self.merge_of(agg, &arg, &o.expr);
                                        (self.add_hidden(o.expr.to_string(), m), o.expr.to_string())
                                    }
                                    None => {
                                        return no(format!(
                                        "ORDER BY an expression over aggregates ({}) across nodes",
                                        o.expr
                                    ))
                                    }
                                }
                            } else {
                                (
                                    self.add_hidden(o.expr.to_string(), Merge::First),
                                    o.expr.to_string(),
                                )
                            }
                        }
                    };
                    // Aggregates other than MIN/MAX are numbers; MIN/MAX carry their own weight.
                    let merges = &aggregate.as_ref().map(|a| a.1.clone()).unwrap_or_default();
                    let m = match col {
                        Col::Item(i) => merges[i],
                        Col::Hidden(h) => self.hidden[h].1,
                    };
                    let weight = match m {
                        Merge::First => Some(self.weight(&text)),
                        Merge::Min { weight } | Merge::Max { weight } => weight,
                        _ => None,
                    };
                    (col, weight)
                } else {
                    if distinct {
                        return no("DISTINCT with ORDER BY across nodes");
                    }
                    let text = match target {
                        Some(i) => item_expr(&select.projection[i]),
                        None => o.expr.to_string(),
                    };
                    let col = self.add_hidden(text.clone(), Merge::First);
                    (col, Some(self.weight(&text)))
                };
                order.push(SortKey { col, weight, desc });
            }
        }

        let (mut limit, mut offset) = (None, 0);
        match &query.limit_clause {
            None => {}
            Some(LimitClause::LimitOffset {
                limit: l,
                offset: o,
                limit_by,
            }) => {
                if !limit_by.is_empty() {
                    return no("LIMIT BY");
                }
                if let Some(l) = l {
                    limit = Some(literal_u64(l, "LIMIT")?);
                }
                if let Some(o) = o {
                    offset = literal_u64(&o.value, "OFFSET")?;
                }
            }
            Some(LimitClause::OffsetCommaLimit {
                offset: o,
                limit: l,
            }) => {
                offset = literal_u64(o, "OFFSET")?;
                limit = Some(literal_u64(l, "LIMIT")?);
            }
        }

        // The node SQL: the client's text with the select list extended, HAVING cut, LIMIT
        // rewritten.
        let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
        if !self.hidden.is_empty() {
            let at = toks
                .iter()
                .skip(1)
                .find(|t| t.depth == 0 && CLAUSES.iter().any(|c| t.is_keyword(sql, c)))
                .map_or(trimmed_end(sql), |t| t.span.start);
            let mut add = String::new();
            for (k, (e, _)) in self.hidden.iter().enumerate() {
                add.push_str(&format!(", {e} AS `__rb_{k}`"));
            }
            add.push(' ');
            edits.push((at..at, add));
        }
        if aggregate.is_some() {
            if let Some(span) = clause_span(toks, sql, "HAVING") {
                edits.push((span, " ".into()));
            }
        }
        if let Some(span) = clause_span(toks, sql, "LIMIT") {
            let per_node = match (limit, aggregate.is_some()) {
                (Some(l), false) => format!("LIMIT {} ", l.saturating_add(offset)),
                _ => " ".into(),
            };
            edits.push((span, per_node));
        }
        edits.sort_by_key(|e| e.0.start);
        let mut node_sql = Vec::with_capacity(sql.len() + 64);
        let mut at = 0;
        for (span, text) in edits {
            node_sql.extend_from_slice(&sql[at..span.start]);
            node_sql.extend_from_slice(text.as_bytes());
            at = span.end;
        }
        node_sql.extend_from_slice(&sql[at..]);
        let hidden = self.hidden.len();
        Ok(SelectPlan {
            node_sql: String::from_utf8_lossy(&node_sql).into_owned(),
            hidden,
            items: n_items,
            aggregate: aggregate.map(|(keys, items, having)| Aggregate {
                keys,
                items,
                hidden: self.hidden.iter().map(|h| h.1).collect(),
                having,
            }),
            order,
            limit,
            offset,
        })
    }

    fn item_aggregate(&self, e: &Expr) -> Result<Option<(&'static str, String)>, NotSupported> {
        match aggregate_of(e)? {
            Some(a) => Ok(Some(a)),
            None if contains_aggregate(e)? => {
                no(format!("an expression over aggregates ({e}) across nodes; select the aggregates and compute it in the application"))
            }
            None => Ok(None),
        }
    }

    /// The merge of an aggregate, adding the hidden columns it needs.
    fn merge_of(&mut self, agg: &str, arg: &str, expr: &dyn fmt::Display) -> Merge {
        match agg {
            "count" => Merge::Count,
            "sum" => Merge::Sum,
            // The winner's weight goes with it.
            "min" => Merge::Min {
                weight: Some(self.add_hidden(format!("WEIGHT_STRING({expr})"), Merge::Carried)),
            },
            "max" => Merge::Max {
                weight: Some(self.add_hidden(format!("WEIGHT_STRING({expr})"), Merge::Carried)),
            },
            _ => {
                let sum = self.add_hidden(format!("SUM({arg})"), Merge::Sum);
                let count = self.add_hidden(format!("COUNT({arg})"), Merge::Count);
                Merge::Avg { sum, count }
            }
        }
    }

    fn pred(
        &mut self,
        e: &Expr,
        find_item: &dyn Fn(&Expr) -> Option<usize>,
    ) -> Result<Pred, NotSupported> {
        Ok(match e {
            Expr::Nested(x) => self.pred(x, find_item)?,
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And => Pred::And(vec![
                    self.pred(left, find_item)?,
                    self.pred(right, find_item)?,
                ]),
                BinaryOperator::Or => Pred::Or(vec![
                    self.pred(left, find_item)?,
                    self.pred(right, find_item)?,
                ]),
                _ => {
                    let op = match op {
                        BinaryOperator::Eq => CmpOp::Eq,
                        BinaryOperator::NotEq => CmpOp::Ne,
                        BinaryOperator::Lt => CmpOp::Lt,
                        BinaryOperator::LtEq => CmpOp::Le,
                        BinaryOperator::Gt => CmpOp::Gt,
                        BinaryOperator::GtEq => CmpOp::Ge,
                        _ => return no(format!("HAVING {e} across nodes (comparisons, AND, OR, NOT and IS NULL are supported)")),
                    };
                    Pred::Cmp(
                        self.operand(left, find_item)?,
                        op,
                        self.operand(right, find_item)?,
                    )
                }
            },
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Pred::Not(Box::new(self.pred(expr, find_item)?)),
            Expr::IsNull(x) => Pred::IsNull(self.operand(x, find_item)?, true),
            Expr::IsNotNull(x) => Pred::IsNull(self.operand(x, find_item)?, false),
            _ => {
                return no(format!(
                    "HAVING {e} across nodes (comparisons, AND, OR, NOT and IS NULL are supported)"
                ))
            }
        })
    }

    fn operand(
        &mut self,
        e: &Expr,
        find_item: &dyn Fn(&Expr) -> Option<usize>,
    ) -> Result<Operand, NotSupported> {
        if let Some(i) = find_item(e) {
            return Ok(Operand::Col(Col::Item(i)));
        }
        match e {
            Expr::Nested(x) => self.operand(x, find_item),
            Expr::Value(v) => match &v.value {
                ast::Value::Number(n, _) => Ok(Operand::Number(n.to_string())),
                ast::Value::SingleQuotedString(_) | ast::Value::DoubleQuotedString(_) => {
                    // The merge cannot compare strings by the column's collation.
                    no(format!("HAVING comparing strings ({e}) across nodes"))
                }
                ast::Value::Null => Ok(Operand::Null),
                _ => no(format!("HAVING with {e} across nodes")),
            },
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => match self.operand(expr, find_item)? {
                Operand::Number(n) => Ok(Operand::Number(format!("-{n}"))),
                _ => no(format!("HAVING with {e} across nodes")),
            },
            _ => match aggregate_of(e)? {
                Some((agg, arg)) => {
                    let m = self.merge_of(agg, &arg, e);
                    Ok(Operand::Col(self.add_hidden(e.to_string(), m)))
                }
                None if contains_aggregate(e)? => no(format!(
                    "HAVING with an expression over aggregates ({e}) across nodes"
                )),
                // A GROUP BY column not in the select list.
                None => Ok(Operand::Col(self.add_hidden(e.to_string(), Merge::First))),
            },
        }
    }
}

/// The SQL text of a select item's expression (wildcards are refused before this is asked).
fn item_expr(it: &SelectItem) -> String {
    match it {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e.to_string(),
        SelectItem::ExprWithAliases { expr, .. } => expr.to_string(),
        other => other.to_string(),
    }
}

/// `ORDER BY 2` / `GROUP BY 1`: the select item at that position.
fn positional(e: &Expr, items: usize) -> Result<Option<usize>, NotSupported> {
    if let Expr::Value(v) = e {
        if let ast::Value::Number(n, _) = &v.value {
            return match n.to_string().parse::<usize>() {
                Ok(p) if p >= 1 && p <= items => Ok(Some(p - 1)),
                _ => no(format!("column position {n}")),
            };
        }
    }
    Ok(None)
}

fn trimmed_end(sql: &[u8]) -> usize {
    let mut end = sql.len();
    while end > 0 && (sql[end - 1].is_ascii_whitespace() || sql[end - 1] == b';') {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(sql: &str) -> Result<SelectPlan, NotSupported> {
        plan_select(sql.as_bytes(), Quoting::default())
    }

    #[test]
    fn order_by_and_limit_become_hidden_sort_keys_and_a_wider_limit() {
        let p = plan(
            "SELECT id, amount FROM t_order WHERE amount > 5 ORDER BY amount DESC, id LIMIT 10, 5",
        )
        .unwrap();
        assert_eq!(
            p.node_sql,
            "SELECT id, amount , amount AS `__rb_0`, WEIGHT_STRING(amount) AS `__rb_1`, id AS `__rb_2`, WEIGHT_STRING(id) AS `__rb_3` FROM t_order WHERE amount > 5 ORDER BY amount DESC, id LIMIT 15 "
        );
        assert_eq!(p.hidden, 4);
        assert_eq!((p.limit, p.offset), (Some(5), 10));
        assert_eq!(
            p.order,
            vec![
                SortKey {
                    col: Col::Hidden(0),
                    weight: Some(Col::Hidden(1)),
                    desc: true
                },
                SortKey {
                    col: Col::Hidden(2),
                    weight: Some(Col::Hidden(3)),
                    desc: false
                },
            ]
        );
        assert!(p.aggregate.is_none());
    }

    #[test]
    fn avg_is_sent_with_its_sum_and_count_and_having_is_cut() {
        let p = plan("select buyer_id, avg(amount) a, count(*) from t_order group by buyer_id having a > 2 order by 3 desc limit 3").unwrap();
        assert_eq!(
            p.node_sql,
            "select buyer_id, avg(amount) a, count(*) , SUM(amount) AS `__rb_0`, COUNT(amount) AS `__rb_1`, WEIGHT_STRING(buyer_id) AS `__rb_2` from t_order group by buyer_id  order by 3 desc  "
        );
        let a = p.aggregate.unwrap();
        assert_eq!(
            a.items,
            vec![
                Merge::First,
                Merge::Avg {
                    sum: Col::Hidden(0),
                    count: Col::Hidden(1)
                },
                Merge::Count
            ]
        );
        assert_eq!(a.keys, vec![(Col::Item(0), Some(Col::Hidden(2)))]);
        assert_eq!(
            a.having,
            Some(Pred::Cmp(
                Operand::Col(Col::Item(1)),
                CmpOp::Gt,
                Operand::Number("2".into())
            ))
        );
        assert_eq!(
            p.order,
            vec![SortKey {
                col: Col::Item(2),
                weight: None,
                desc: true
            }]
        );
        assert_eq!((p.limit, p.offset), (Some(3), 0));
    }

    #[test]
    fn what_cannot_be_merged_is_refused_by_name() {
        for (sql, says) in [
            ("SELECT COUNT(DISTINCT buyer_id) FROM t", "COUNT(DISTINCT"),
            ("SELECT SUM(a) + 1 FROM t", "expression over aggregates"),
            ("SELECT GROUP_CONCAT(a) FROM t", "GROUP_CONCAT"),
            ("SELECT a FROM t UNION SELECT a FROM u", "UNION"),
            ("SELECT *, COUNT(*) FROM t GROUP BY a", "`*`"),
            ("SELECT a FROM t LIMIT ?", "`?`"),
            ("SELECT a, ROW_NUMBER() OVER (ORDER BY a) FROM t", "window"),
            ("SELECT a FROM t GROUP BY a WITH ROLLUP", "ROLLUP"),
            ("SELECT a, (SELECT MAX(b) FROM u) FROM t", "subquery"),
            (
                "SELECT DISTINCT a FROM t ORDER BY b",
                "ORDER BY on a column outside",
            ),
            (
                "SELECT DISTINCT COUNT(*) FROM t",
                "DISTINCT with aggregates",
            ),
            (
                "SELECT a, COUNT(*) FROM t GROUP BY a HAVING a = 'x'",
                "HAVING comparing strings",
            ),
        ] {
            let e = plan(sql).unwrap_err();
            assert!(e.0.contains(says), "{sql}: {e}");
        }
    }

    #[test]
    fn distinct_groups_by_every_item() {
        let p = plan("SELECT DISTINCT status FROM t_order").unwrap();
        let a = p.aggregate.unwrap();
        assert_eq!(a.keys, vec![(Col::Item(0), Some(Col::Hidden(0)))]);
        assert_eq!(
            p.node_sql,
            "SELECT DISTINCT status , WEIGHT_STRING(status) AS `__rb_0` FROM t_order"
        );
    }
}
