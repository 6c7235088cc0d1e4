//! What a statement does, for routing: its kind, the tables it touches, the conditions on
//! columns in its WHERE clause, the columns and rows of an INSERT, the columns an UPDATE sets,
//! and what the analysis could not understand (reported, never guessed). Built on the
//! sqlparser AST (MySQL dialect); independent of the rules, so it can be cached per statement
//! text and decided against any rule set.

use std::collections::HashMap;
use std::ops::ControlFlow;

use sqlparser::ast::{
    self, AssignmentTarget, BinaryOperator, Expr, FromTable, ObjectName, OnInsert, Query, SetExpr,
    Statement, TableFactor, TableObject, TableWithJoins, UnaryOperator,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use crate::algorithm::Value;

/// The statement kinds routing cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SELECT, SHOW, EXPLAIN, DESCRIBE.
    Read,
    /// INSERT, REPLACE, UPDATE, DELETE, LOAD DATA.
    Write(WriteKind),
    /// CREATE, ALTER, DROP, TRUNCATE, RENAME.
    Ddl,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT.
    Transaction,
    /// SET, USE.
    Session,
    /// Anything else (LOCK TABLES, GRANT, FLUSH, KILL…).
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Insert,
    Replace,
    Update,
    Delete,
    LoadData,
}

/// A value in a statement: a literal, a `?` parameter (0-based, in text order), or an
/// expression the analysis does not evaluate (`NOW()`, `a + 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    Value(Value),
    Param(usize),
    Other(String),
}

/// `qualifier.column`, lower case; the qualifier is a table name or alias as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnRef {
    pub qualifier: Option<String>,
    pub name: String,
}

/// A condition tree over column predicates.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    And(Vec<Cond>),
    Or(Vec<Cond>),
    /// `column = v` or `column IN (v, …)`.
    In {
        column: ColumnRef,
        values: Vec<Operand>,
    },
    /// `column BETWEEN low AND high`, `column >= low`, `column < high`… (bounds inclusive: a
    /// superset of the rows).
    Range {
        column: ColumnRef,
        low: Option<Operand>,
        high: Option<Operand>,
    },
    /// A predicate that says nothing routing can use.
    Other,
}

/// A table the statement touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    /// Schema qualifier as written (`shop.t_order` → `shop`).
    pub schema: Option<String>,
    pub name: String,
    pub alias: Option<String>,
    /// In the statement's own FROM / JOIN / target: the top-level WHERE can narrow it. Tables
    /// of subqueries and CTEs are reached in full.
    pub top: bool,
    /// Also read by a subquery, derived table or CTE (a table can be both: `… FROM t WHERE x >
    /// (SELECT AVG(x) FROM t)`).
    pub nested: bool,
}

/// An INSERT's columns and rows.
#[derive(Debug, Clone, PartialEq)]
pub struct InsertFacts {
    pub table: String,
    /// Lower case; empty when the statement lists no columns.
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Operand>>,
}

/// What routing needs to know about a statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub kind: Kind,
    /// Every table, in order of appearance (also in subqueries and joins).
    pub tables: Vec<TableRef>,
    /// The top-level WHERE (SELECT, UPDATE, DELETE).
    pub condition: Option<Cond>,
    pub insert: Option<InsertFacts>,
    /// Columns an UPDATE or `ON DUPLICATE KEY UPDATE` sets.
    pub assigned: Vec<ColumnRef>,
    /// Number of `?` parameters.
    pub params: usize,
    /// What could not be understood, in words (e.g. "INSERT … SELECT rows").
    pub unknowns: Vec<String>,
    /// `SELECT … FOR UPDATE / LOCK IN SHARE MODE`.
    pub locks: bool,
    /// `SET @@rb_sharding_key = v` (`Some(Some(v))`) or `= DEFAULT` / `NULL` (`Some(None)`): the
    /// session ShardingKey for clients that strip comments. The proxy answers it itself.
    pub session_key: Option<Option<Operand>>,
    /// Column names (lower case) that are also the name of one of the statement's tables
    /// (`SELECT t FROM t`): a rename by tokens could not tell them apart, so sharded
    /// execution refuses the statement.
    pub columns_like_tables: Vec<String>,
    /// The kinds of outer join in the statement's own FROM.
    pub joins: Joins,
    /// `UNION`, `EXCEPT` or `INTERSECT` at the top of a query.
    pub compound: Option<String>,
}

/// Outer joins of the statement's own FROM: a scatter may only add rows of unmatched sharded
/// rows, never repeat rows of a table every node has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Joins {
    pub left: bool,
    pub right_or_full: bool,
}

/// Why a statement could not be analysed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalyzeError {
    #[error("SQL syntax the proxy cannot parse: {0}")]
    Parse(String),
    #[error("{0} statements in one text: send them one at a time")]
    Several(usize),
    #[error("an empty statement")]
    Empty,
}

/// Parses one statement (hint already stripped) and analyses it.
pub fn analyze(sql: &str) -> Result<Facts, AnalyzeError> {
    let mut statements =
        Parser::parse_sql(&MySqlDialect {}, sql).map_err(|e| AnalyzeError::Parse(e.to_string()))?;
    match statements.len() {
        0 => Err(AnalyzeError::Empty),
        1 => Ok(analyze_statement(&statements.remove(0))),
        n => Err(AnalyzeError::Several(n)),
    }
}

/// Analyses a parsed statement.
pub fn analyze_statement(stmt: &Statement) -> Facts {
    let mut a = Analyzer {
        params: param_order(stmt),
        facts: Facts {
            kind: Kind::Other,
            tables: Vec::new(),
            condition: None,
            insert: None,
            assigned: Vec::new(),
            params: 0,
            unknowns: Vec::new(),
            locks: false,
            session_key: None,
            columns_like_tables: Vec::new(),
            joins: Joins::default(),
            compound: None,
        },
    };
    a.facts.params = a.params.len();
    a.statement(stmt);
    a.facts.columns_like_tables = columns_like_tables(stmt, &a.facts.tables);
    a.facts
}

/// Column names that equal a table name of the statement.
fn columns_like_tables(stmt: &Statement, tables: &[TableRef]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut note = |name: &str| {
        if tables.iter().any(|t| t.name.eq_ignore_ascii_case(name))
            && !out.iter().any(|o| o.eq_ignore_ascii_case(name))
        {
            out.push(lower(name));
        }
    };
    let _ = ast::visit_expressions(stmt, |e: &Expr| {
        match e {
            Expr::Identifier(i) => note(&i.value),
            Expr::CompoundIdentifier(parts) => {
                if let Some(last) = parts.last() {
                    note(&last.value);
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

/// The text-order index of every `?`, keyed by its position (line, column). Every value of the
/// statement is visited, not only expressions: a `?` can also stand where the grammar keeps a
/// bare value (`MATCH (a) AGAINST (?)`), and it takes a client parameter all the same.
fn param_order(stmt: &Statement) -> HashMap<(u64, u64), usize> {
    struct Placeholders(Vec<(u64, u64)>);
    impl ast::Visitor for Placeholders {
        type Break = ();
        fn pre_visit_value(&mut self, v: &ast::ValueWithSpan) -> ControlFlow<()> {
            if matches!(v.value, ast::Value::Placeholder(_)) {
                self.0.push((v.span.start.line, v.span.start.column));
            }
            ControlFlow::Continue(())
        }
    }
    let mut p = Placeholders(Vec::new());
    let _ = ast::Visit::visit(stmt, &mut p);
    let mut spans = p.0;
    spans.sort_unstable();
    spans.dedup();
    spans.into_iter().enumerate().map(|(i, s)| (s, i)).collect()
}

struct Analyzer {
    params: HashMap<(u64, u64), usize>,
    facts: Facts,
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn last_part(name: &ObjectName) -> (Option<String>, String) {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| {
            p.as_ident()
                .map_or_else(|| p.to_string(), |i| i.value.clone())
        })
        .collect();
    match parts.as_slice() {
        [] => (None, String::new()),
        [t] => (None, t.clone()),
        [.., s, t] => (Some(s.clone()), t.clone()),
    }
}

impl Analyzer {
    fn statement(&mut self, stmt: &Statement) {
        use Statement as S;
        self.facts.kind = match stmt {
            S::Query(q) => match q.body.as_ref() {
                // `WITH … UPDATE/DELETE/INSERT`: a write, whose rows the CTE may feed.
                SetExpr::Insert(inner) | SetExpr::Update(inner) | SetExpr::Delete(inner) => {
                    self.statement(inner);
                    self.facts
                        .unknowns
                        .push("a data-changing statement inside WITH".into());
                    self.facts.kind
                }
                SetExpr::Merge(_) => {
                    self.facts.unknowns.push("MERGE".into());
                    Kind::Write(WriteKind::Update)
                }
                _ => {
                    self.query(q, true);
                    Kind::Read
                }
            },
            S::Explain {
                analyze: true,
                statement,
                ..
            } => {
                // EXPLAIN ANALYZE runs the statement.
                self.statement(statement);
                if matches!(self.facts.kind, Kind::Write(_)) {
                    self.facts
                        .unknowns
                        .push("EXPLAIN ANALYZE of a write".into());
                }
                self.facts.kind
            }
            S::Insert(ins) => {
                self.insert(ins);
                Kind::Write(if ins.replace_into {
                    WriteKind::Replace
                } else {
                    WriteKind::Insert
                })
            }
            S::Update(u) => {
                self.from(std::slice::from_ref(&u.table), true);
                if !u.table.joins.is_empty() {
                    self.facts.unknowns.push("multi-table UPDATE".into());
                }
                for asg in &u.assignments {
                    self.assigned(&asg.target);
                }
                if u.from.is_some() {
                    self.facts.unknowns.push("UPDATE … FROM".into());
                }
                self.facts.condition = u.selection.as_ref().map(|e| self.cond(e));
                // Tables of subqueries in the WHERE and the new values.
                let mut names = Vec::new();
                let _ = ast::visit_relations(&u.selection, |n| {
                    names.push(n.clone());
                    ControlFlow::<()>::Continue(())
                });
                let _ = ast::visit_relations(&u.assignments, |n| {
                    names.push(n.clone());
                    ControlFlow::<()>::Continue(())
                });
                for n in names {
                    self.nested_table(&n, None);
                }
                Kind::Write(WriteKind::Update)
            }
            S::Delete(d) => {
                let from = match &d.from {
                    FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
                };
                self.from(from, true);
                if let Some(using) = &d.using {
                    self.from(using, true);
                }
                if !d.tables.is_empty()
                    || d.using.is_some()
                    || from.len() > 1
                    || from.iter().any(|t| !t.joins.is_empty())
                {
                    self.facts.unknowns.push("multi-table DELETE".into());
                }
                self.facts.condition = d.selection.as_ref().map(|e| self.cond(e));
                let mut names = Vec::new();
                let _ = ast::visit_relations(&d.selection, |n| {
                    names.push(n.clone());
                    ControlFlow::<()>::Continue(())
                });
                for n in names {
                    self.nested_table(&n, None);
                }
                Kind::Write(WriteKind::Delete)
            }
            S::LoadData { table_name, .. } => {
                self.table(table_name, None, true);
                self.facts.unknowns.push("LOAD DATA rows".into());
                Kind::Write(WriteKind::LoadData)
            }
            S::CreateTable(_)
            | S::CreateIndex(_)
            | S::AlterTable(_)
            | S::Drop { .. }
            | S::Truncate(_)
            | S::RenameTable(_)
            | S::CreateView { .. }
            | S::CreateDatabase { .. }
            | S::CreateSchema { .. } => {
                self.relations(stmt);
                Kind::Ddl
            }
            S::StartTransaction { .. }
            | S::Commit { .. }
            | S::Rollback { .. }
            | S::Savepoint { .. }
            | S::ReleaseSavepoint { .. } => Kind::Transaction,
            S::Set(set) => {
                self.session_key(set);
                Kind::Session
            }
            S::Use(_) => Kind::Session,
            S::ShowTables { .. }
            | S::ShowColumns { .. }
            | S::ShowCreate { .. }
            | S::ShowVariables { .. }
            | S::ShowVariable { .. }
            | S::ShowStatus { .. }
            | S::ShowDatabases { .. }
            | S::ShowProcessList { .. }
            | S::ShowCollation { .. }
            | S::ShowCharset(_)
            | S::ShowFunctions { .. }
            | S::ExplainTable { .. }
            | S::Explain { .. } => {
                self.relations(stmt);
                Kind::Read
            }
            other => {
                self.relations(stmt);
                // Any other SHOW / DESCRIBE form reads; everything else may write.
                let text = other.to_string();
                let first = text.split_whitespace().next().unwrap_or_default();
                if ["SHOW", "DESCRIBE", "DESC", "EXPLAIN"]
                    .iter()
                    .any(|k| first.eq_ignore_ascii_case(k))
                {
                    Kind::Read
                } else {
                    Kind::Other
                }
            }
        };
        // Tables anywhere (subqueries in ON, SET, HAVING…) count too, so that no database or
        // table escapes the checks; conditions apply only to the top level's own tables.
        self.relations(stmt);
    }

    /// `SET [@@[session.]]rb_sharding_key = value | DEFAULT | NULL`.
    fn session_key(&mut self, set: &ast::Set) {
        if let ast::Set::SingleAssignment {
            variable, values, ..
        } = set
        {
            let name = variable.to_string().to_ascii_lowercase();
            let bare = name
                .trim_start_matches("@@")
                .trim_start_matches("session.")
                .trim_start_matches("local.");
            if bare == "rb_sharding_key" {
                self.facts.session_key = Some(match values.as_slice() {
                    [Expr::Identifier(i)] if i.value.eq_ignore_ascii_case("default") => None,
                    [e] => match self.operand(e) {
                        Operand::Value(Value::Null) => None,
                        op => Some(op),
                    },
                    _ => None,
                });
            }
        }
    }

    /// Every relation anywhere in the statement.
    fn relations(&mut self, stmt: &Statement) {
        let mut names = Vec::new();
        let _ = ast::visit_relations(stmt, |n| {
            names.push(n.clone());
            ControlFlow::<()>::Continue(())
        });
        for n in names {
            self.table(&n, None, false);
        }
    }

    fn table(&mut self, name: &ObjectName, alias: Option<String>, top: bool) {
        self.table_in(name, alias, top, false)
    }

    /// A table of a subquery, derived table or CTE.
    fn nested_table(&mut self, name: &ObjectName, alias: Option<String>) {
        self.table_in(name, alias, false, true)
    }

    fn table_in(&mut self, name: &ObjectName, alias: Option<String>, top: bool, nested: bool) {
        let (schema, name) = last_part(name);
        let same = |t: &TableRef| t.schema == schema && t.name == name;
        if let Some(t) = self
            .facts
            .tables
            .iter_mut()
            .find(|t| same(t) && (t.alias == alias || alias.is_none()))
        {
            t.top |= top;
            t.nested |= nested;
            return;
        }
        self.facts.tables.push(TableRef {
            schema,
            name,
            alias,
            top,
            nested,
        });
    }

    fn from(&mut self, items: &[TableWithJoins], top: bool) {
        for twj in items {
            self.factor(&twj.relation, top);
            for j in &twj.joins {
                if top {
                    use ast::JoinOperator as J;
                    match j.join_operator {
                        J::Left(_) | J::LeftOuter(_) => self.facts.joins.left = true,
                        J::Right(_) | J::RightOuter(_) | J::FullOuter(_) => {
                            self.facts.joins.right_or_full = true
                        }
                        _ => {}
                    }
                }
                self.factor(&j.relation, top);
            }
        }
    }

    fn factor(&mut self, f: &TableFactor, top: bool) {
        match f {
            TableFactor::Table { name, alias, .. } => {
                let alias = alias.as_ref().map(|a| a.name.value.clone());
                if top {
                    self.table(name, alias, true)
                } else {
                    self.nested_table(name, alias)
                }
            }
            TableFactor::Derived { subquery, .. } => self.query(subquery, false),
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.from(std::slice::from_ref(table_with_joins), top),
            other => self.facts.unknowns.push(format!("table factor `{other}`")),
        }
    }

    fn query(&mut self, q: &Query, top: bool) {
        if top && !q.locks.is_empty() {
            self.facts.locks = true;
        }
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                self.query(&cte.query, false);
            }
        }
        self.set_expr(&q.body, top);
    }

    fn set_expr(&mut self, body: &SetExpr, top: bool) {
        match body {
            SetExpr::Select(s) => {
                self.from(&s.from, top);
                if top {
                    self.facts.condition = s.selection.as_ref().map(|e| self.cond(e));
                }
                // Tables in subqueries of the select list or WHERE.
                let mut names = Vec::new();
                let _ = ast::visit_relations(&s.projection, |n| {
                    names.push(n.clone());
                    ControlFlow::<()>::Continue(())
                });
                if let Some(sel) = &s.selection {
                    let _ = ast::visit_relations(sel, |n| {
                        names.push(n.clone());
                        ControlFlow::<()>::Continue(())
                    });
                }
                for n in names {
                    self.nested_table(&n, None);
                }
            }
            SetExpr::Query(q) => self.query(q, top),
            SetExpr::SetOperation {
                left, right, op, ..
            } => {
                if top {
                    self.facts.compound = Some(op.to_string());
                }
                // A UNION has no single WHERE: its tables count, its conditions do not.
                self.set_expr(left, false);
                self.set_expr(right, false);
            }
            SetExpr::Values(_) => {}
            other => self.facts.unknowns.push(format!("query body `{other}`")),
        }
    }

    fn insert(&mut self, ins: &ast::Insert) {
        let name = match &ins.table {
            TableObject::TableName(n) => n.clone(),
            other => {
                self.facts.unknowns.push(format!("INSERT into `{other}`"));
                return;
            }
        };
        self.table(&name, None, true);
        let (_, table) = last_part(&name);
        let mut columns: Vec<String> = ins.columns.iter().map(|c| lower(&last_part(c).1)).collect();
        let mut rows = Vec::new();
        if !ins.assignments.is_empty() {
            // INSERT … SET a = 1, b = 2
            let mut row = Vec::new();
            columns.clear();
            for asg in &ins.assignments {
                match &asg.target {
                    AssignmentTarget::ColumnName(c) => {
                        columns.push(lower(&last_part(c).1));
                        row.push(self.operand(&asg.value));
                    }
                    AssignmentTarget::Tuple(_) => {
                        self.facts.unknowns.push("tuple assignment".into())
                    }
                }
            }
            rows.push(row);
        } else if let Some(source) = &ins.source {
            match source.body.as_ref() {
                SetExpr::Values(v) => {
                    for r in &v.rows {
                        rows.push(r.iter().map(|e| self.operand(e)).collect());
                    }
                }
                _ => {
                    self.facts.unknowns.push("INSERT … SELECT rows".into());
                    self.query(source, false);
                }
            }
        }
        if columns.is_empty() && !rows.is_empty() {
            self.facts
                .unknowns
                .push("INSERT without a column list".into());
        }
        if let Some(OnInsert::DuplicateKeyUpdate(asgs)) = &ins.on {
            for asg in asgs {
                self.assigned(&asg.target);
            }
        }
        self.facts.insert = Some(InsertFacts {
            table,
            columns,
            rows,
        });
    }

    fn assigned(&mut self, target: &AssignmentTarget) {
        let names = match target {
            AssignmentTarget::ColumnName(c) => vec![c],
            AssignmentTarget::Tuple(cs) => cs.iter().collect(),
        };
        for n in names {
            let (q, c) = last_part(n);
            self.facts.assigned.push(ColumnRef {
                qualifier: q.map(|s| lower(&s)),
                name: lower(&c),
            });
        }
    }

    fn column(e: &Expr) -> Option<ColumnRef> {
        match e {
            Expr::Identifier(i) => Some(ColumnRef {
                qualifier: None,
                name: lower(&i.value),
            }),
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => Some(ColumnRef {
                qualifier: Some(lower(&parts[parts.len() - 2].value)),
                name: lower(&parts[parts.len() - 1].value),
            }),
            Expr::Nested(inner) => Self::column(inner),
            _ => None,
        }
    }

    fn operand(&self, e: &Expr) -> Operand {
        match e {
            Expr::Value(v) => match &v.value {
                ast::Value::Number(n, _) => match n.parse::<i64>() {
                    Ok(i) => Operand::Value(Value::Int(i)),
                    Err(_) => Operand::Value(Value::Str(n.clone())),
                },
                ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => {
                    Operand::Value(Value::Str(s.clone()))
                }
                ast::Value::Boolean(b) => Operand::Value(Value::Int(i64::from(*b))),
                ast::Value::Null => Operand::Value(Value::Null),
                ast::Value::Placeholder(_) => self
                    .params
                    .get(&(v.span.start.line, v.span.start.column))
                    .map_or_else(|| Operand::Other(e.to_string()), |i| Operand::Param(*i)),
                _ => Operand::Other(e.to_string()),
            },
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => match self.operand(expr) {
                Operand::Value(Value::Int(i)) => match i.checked_neg() {
                    Some(n) => Operand::Value(Value::Int(n)),
                    None => Operand::Other(e.to_string()),
                },
                _ => Operand::Other(e.to_string()),
            },
            Expr::Nested(inner) => self.operand(inner),
            _ => Operand::Other(e.to_string()),
        }
    }

    fn cond(&self, e: &Expr) -> Cond {
        match e {
            Expr::Nested(inner) => self.cond(inner),
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And => flatten(true, vec![self.cond(left), self.cond(right)]),
                BinaryOperator::Or => flatten(false, vec![self.cond(left), self.cond(right)]),
                BinaryOperator::Eq => match (Self::column(left), Self::column(right)) {
                    (Some(c), None) => Cond::In {
                        column: c,
                        values: vec![self.operand(right)],
                    },
                    (None, Some(c)) => Cond::In {
                        column: c,
                        values: vec![self.operand(left)],
                    },
                    _ => Cond::Other,
                },
                BinaryOperator::Gt
                | BinaryOperator::GtEq
                | BinaryOperator::Lt
                | BinaryOperator::LtEq => {
                    let (col, val, col_is_left) = match (Self::column(left), Self::column(right)) {
                        (Some(c), None) => (c, self.operand(right), true),
                        (None, Some(c)) => (c, self.operand(left), false),
                        _ => return Cond::Other,
                    };
                    // `col > v` and `v < col` bound the column from below.
                    let below =
                        matches!(op, BinaryOperator::Gt | BinaryOperator::GtEq) == col_is_left;
                    if below {
                        Cond::Range {
                            column: col,
                            low: Some(val),
                            high: None,
                        }
                    } else {
                        Cond::Range {
                            column: col,
                            low: None,
                            high: Some(val),
                        }
                    }
                }
                _ => Cond::Other,
            },
            Expr::InList {
                expr,
                list,
                negated: false,
            } => match Self::column(expr) {
                Some(c) => Cond::In {
                    column: c,
                    values: list.iter().map(|v| self.operand(v)).collect(),
                },
                None => Cond::Other,
            },
            Expr::Between {
                expr,
                negated: false,
                low,
                high,
            } => match Self::column(expr) {
                Some(c) => Cond::Range {
                    column: c,
                    low: Some(self.operand(low)),
                    high: Some(self.operand(high)),
                },
                None => Cond::Other,
            },
            _ => Cond::Other,
        }
    }
}

fn flatten(and: bool, parts: Vec<Cond>) -> Cond {
    let mut out = Vec::new();
    for p in parts {
        match (and, p) {
            (true, Cond::And(inner)) => out.extend(inner),
            (false, Cond::Or(inner)) => out.extend(inner),
            (_, p) => out.push(p),
        }
    }
    if and {
        Cond::And(out)
    } else {
        Cond::Or(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(q: Option<&str>, n: &str) -> ColumnRef {
        ColumnRef {
            qualifier: q.map(String::from),
            name: n.into(),
        }
    }
    fn int(i: i64) -> Operand {
        Operand::Value(Value::Int(i))
    }

    #[test]
    fn kinds() {
        let k = |sql: &str| analyze(sql).unwrap().kind;
        assert_eq!(k("SELECT 1"), Kind::Read);
        assert_eq!(k("SHOW TABLES"), Kind::Read);
        assert_eq!(
            k("INSERT INTO t (a) VALUES (1)"),
            Kind::Write(WriteKind::Insert)
        );
        assert_eq!(
            k("REPLACE INTO t (a) VALUES (1)"),
            Kind::Write(WriteKind::Replace)
        );
        assert_eq!(k("UPDATE t SET a = 1"), Kind::Write(WriteKind::Update));
        assert_eq!(
            k("DELETE FROM t WHERE a = 1"),
            Kind::Write(WriteKind::Delete)
        );
        assert_eq!(k("CREATE TABLE t (a INT)"), Kind::Ddl);
        assert_eq!(k("TRUNCATE TABLE t"), Kind::Ddl);
        assert_eq!(k("BEGIN"), Kind::Transaction);
        assert_eq!(k("COMMIT"), Kind::Transaction);
        assert_eq!(k("SET autocommit = 0"), Kind::Session);
        assert_eq!(k("USE shop"), Kind::Session);
        assert!(matches!(analyze("SELEKT 1"), Err(AnalyzeError::Parse(_))));
        assert_eq!(analyze("SELECT 1; SELECT 2"), Err(AnalyzeError::Several(2)));
    }

    #[test]
    fn where_conditions_with_and_or_in_between_and_parameters() {
        let f = analyze(
            "SELECT * FROM t_order o WHERE (o.buyer_id = ? AND status IN ('new', 'paid')) \
             OR buyer_id BETWEEN 10 AND -20 OR 5 < o.order_id",
        )
        .unwrap();
        assert_eq!(
            f.tables,
            [TableRef {
                schema: None,
                name: "t_order".into(),
                alias: Some("o".into()),
                top: true,
                nested: false,
            }]
        );
        assert_eq!(f.params, 1);
        assert_eq!(
            f.condition.unwrap(),
            Cond::Or(vec![
                Cond::And(vec![
                    Cond::In {
                        column: col(Some("o"), "buyer_id"),
                        values: vec![Operand::Param(0)]
                    },
                    Cond::In {
                        column: col(None, "status"),
                        values: vec![
                            Operand::Value(Value::Str("new".into())),
                            Operand::Value(Value::Str("paid".into()))
                        ]
                    },
                ]),
                Cond::Range {
                    column: col(None, "buyer_id"),
                    low: Some(int(10)),
                    high: Some(int(-20))
                },
                Cond::Range {
                    column: col(Some("o"), "order_id"),
                    low: Some(int(5)),
                    high: None
                },
            ])
        );
    }

    #[test]
    fn parameters_are_numbered_in_text_order() {
        let f = analyze("UPDATE t SET a = ?, b = NOW() WHERE id = ? AND k IN (?, 3)").unwrap();
        assert_eq!(f.params, 3);
        assert_eq!(
            f.condition.unwrap(),
            Cond::And(vec![
                Cond::In {
                    column: col(None, "id"),
                    values: vec![Operand::Param(1)]
                },
                Cond::In {
                    column: col(None, "k"),
                    values: vec![Operand::Param(2), int(3)]
                },
            ])
        );
        assert_eq!(f.assigned, [col(None, "a"), col(None, "b")]);
    }

    #[test]
    fn inserts_give_columns_rows_and_duplicate_key_updates() {
        let f = analyze(
            "INSERT INTO shop.t_order (order_id, BUYER_ID, note) VALUES (1, 10086, 'x'), (?, -7, NULL) \
             ON DUPLICATE KEY UPDATE note = VALUES(note)",
        )
        .unwrap();
        let ins = f.insert.unwrap();
        assert_eq!(ins.table, "t_order");
        assert_eq!(ins.columns, ["order_id", "buyer_id", "note"]);
        assert_eq!(
            ins.rows,
            vec![
                vec![int(1), int(10086), Operand::Value(Value::Str("x".into()))],
                vec![Operand::Param(0), int(-7), Operand::Value(Value::Null)],
            ]
        );
        assert_eq!(f.assigned, [col(None, "note")]);
        assert_eq!(f.tables[0].schema.as_deref(), Some("shop"));
        let f = analyze("INSERT INTO t SET a = 1, b = 'z'").unwrap();
        assert_eq!(f.insert.unwrap().columns, ["a", "b"]);
        let f = analyze("INSERT INTO t VALUES (1, 2)").unwrap();
        assert_eq!(f.unknowns, ["INSERT without a column list"]);
        let f = analyze("INSERT INTO t (a) SELECT a FROM u").unwrap();
        assert_eq!(f.unknowns, ["INSERT … SELECT rows"]);
        assert_eq!(f.tables.len(), 2);
    }

    #[test]
    fn joins_and_subqueries_list_every_table() {
        let f = analyze(
            "SELECT * FROM t_order o JOIN t_order_item i ON o.order_id = i.order_id \
             WHERE o.buyer_id = 7 AND i.sku IN (SELECT sku FROM t_sku)",
        )
        .unwrap();
        let names: Vec<&str> = f.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["t_order", "t_order_item", "t_sku"]);
        let f = analyze("SELECT * FROM t FOR UPDATE").unwrap();
        assert!(f.locks);
    }
}
