//! The node queries a decided statement makes (issue 9): one *unit* per query a backend runs —
//! a logical data source and the physical name of every sharded table in it. Tables of one
//! binding group pair by node position; broadcast and single tables keep their names.
//! Anything that cannot be split into independent node queries whose union is the answer is
//! refused with the construct named.

use std::sync::Arc;

use crate::analyze::{Facts, Kind, WriteKind};
use crate::decide::{Decision, Layout, NodeRef};
use crate::lex::Rename;
use crate::ruleset::{Database, TableKind, TableRule};
use crate::scatter::NotSupported;

/// One node query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Logical data source.
    pub data_source: Arc<str>,
    /// Logical → physical table names (sharded tables only).
    pub renames: Vec<Rename>,
    /// For an INSERT into a sharded table: the rows (0-based, in text order) this node gets.
    pub rows: Vec<usize>,
}

/// The units of a statement, in node order.
pub fn units(db: &Database, facts: &Facts, d: &Decision) -> Result<Vec<Unit>, NotSupported> {
    let joins = facts.joins;
    let sharded: Vec<(usize, &TableRule)> = d
        .tables
        .iter()
        .enumerate()
        .filter(|(_, t)| t.layout == Layout::Sharded)
        .filter_map(|(i, t)| match db.table(&t.table) {
            TableKind::Sharded(r) => Some((i, r)),
            _ => None,
        })
        .collect();
    if sharded.is_empty() {
        // Single and broadcast tables: the default data source, or every one for a broadcast
        // write.
        let mut sources: Vec<Arc<str>> = d
            .tables
            .iter()
            .flat_map(|t| t.nodes.iter().map(|n| n.data_source.clone()))
            .collect();
        sources.sort();
        sources.dedup();
        if sources.len() > 1 {
            if let Some(single) = d.tables.iter().find(|t| t.layout == Layout::Single) {
                return no(format!(
                    "a write to broadcast tables that also reads the single table `{}`",
                    single.table
                ));
            }
        }
        return Ok(sources
            .into_iter()
            .map(|ds| Unit {
                data_source: ds,
                renames: Vec::new(),
                rows: Vec::new(),
            })
            .collect());
    }
    for (_, rule) in &sharded {
        if let Some(c) = facts
            .columns_like_tables
            .iter()
            .find(|c| c.eq_ignore_ascii_case(&rule.name))
        {
            return no(format!(
                "a column named like the sharded table `{}` (`{c}`): qualify it with an alias, or rename it",
                rule.name
            ));
        }
    }
    for (i, rule) in &sharded {
        if let Some(schema) = facts.tables.get(*i).and_then(|t| t.schema.as_deref()) {
            return no(format!(
                "the schema-qualified sharded table `{schema}.{}`: leave the database name out",
                rule.name
            ));
        }
    }
    // INSERT … SELECT (or any INSERT whose rows the proxy cannot read) into a sharded table:
    // its rows' nodes are unknown.
    if let (Kind::Write(WriteKind::Insert | WriteKind::Replace), Some(ins)) =
        (facts.kind, &facts.insert)
    {
        let into = d
            .tables
            .iter()
            .find(|t| t.layout == Layout::Sharded && t.table.eq_ignore_ascii_case(&ins.table));
        if into.is_some_and(|t| t.rows.is_empty()) {
            return no(format!(
                "INSERT into the sharded table `{}` without VALUES rows the proxy can read (INSERT … SELECT, …): write the rows out",
                ins.table
            ));
        }
    }
    for (i, rule) in &sharded {
        if let Some(alias) = facts.tables.get(*i).and_then(|t| t.alias.as_deref()) {
            if let Some((_, other)) = sharded
                .iter()
                .find(|(_, r)| r.name.eq_ignore_ascii_case(alias))
            {
                return no(format!(
                    "the alias `{alias}` on `{}`, which is the name of the sharded table `{}`",
                    rule.name, other.name
                ));
            }
        }
    }
    // A condition no node can match (`id IN ()`, a value no node takes) still runs on one
    // node, for the columns of its result and its errors; it matches no row there either.
    // Borrowed from the decision except for those empty node lists (no copy per statement).
    let first_nodes: Vec<std::borrow::Cow<'_, [NodeRef]>> = d
        .tables
        .iter()
        .map(|t| match db.table(&t.table) {
            TableKind::Sharded(r) if t.nodes.is_empty() => std::borrow::Cow::Owned(
                r.nodes
                    .first()
                    .map(|n| NodeRef {
                        data_source: db.data_source_arc(n.data_source),
                        table: n.table.clone(),
                    })
                    .into_iter()
                    .collect(),
            ),
            _ => std::borrow::Cow::Borrowed(t.nodes.as_slice()),
        })
        .collect();
    let nodes_of = |i: usize| -> &[NodeRef] { &first_nodes[i] };
    let lead = sharded[0];
    // Every distinct sharded table, first occurrence.
    let mut distinct: Vec<(usize, &TableRule)> = Vec::new();
    for (i, r) in &sharded {
        match distinct.iter().find(|(_, x)| x.name == r.name) {
            Some((first, _)) => {
                // The same sharded table twice pairs rows of two nodes only on one node.
                if nodes_of(*first).len() > 1
                    || nodes_of(*i).len() > 1
                    || nodes_of(*first) != nodes_of(*i)
                {
                    return no(format!(
                        "a self-join of the sharded table `{}` across nodes",
                        r.name
                    ));
                }
            }
            None => distinct.push((*i, r)),
        }
    }
    let spread = distinct.iter().any(|(i, _)| nodes_of(*i).len() > 1);
    if spread {
        if let Some(op) = &facts.compound {
            return no(format!(
                "{op} of queries on the sharded table `{}` across nodes",
                lead.1.name
            ));
        }
        for (i, r) in &distinct {
            // DDL names its tables outside any FROM; it runs on every node of each.
            if facts.kind != Kind::Ddl && facts.tables.get(*i).is_some_and(|t| !t.top || t.nested) {
                return no(format!(
                    "a subquery or derived table on the sharded table `{}` that needs rows of several nodes",
                    r.name
                ));
            }
        }
        if matches!(facts.kind, Kind::Write(_)) && d.tables.len() > 1 {
            return no("a write that joins or reads other tables across nodes");
        }
        if joins.right_or_full {
            return no("RIGHT or FULL JOIN across nodes");
        }
        let first = facts.tables.iter().position(|t| t.top);
        if joins.left && first.is_some_and(|f| d.tables[f].layout != Layout::Sharded) {
            return no(format!(
                "a LEFT JOIN whose left table `{}` is not sharded, across nodes (every node would add its unmatched rows)",
                d.tables[first.unwrap_or(0)].table
            ));
        }
    }
    let mut units: Vec<Unit> = Vec::new();
    if distinct.len() == 1 || !spread {
        // One sharded table (or each on one node): a unit per node of the lead table.
        if distinct.len() > 1 {
            let ds = &nodes_of(lead.0).first().map(|n| n.data_source.clone());
            let mut renames = Vec::new();
            for (i, r) in &distinct {
                let Some(n) = nodes_of(*i).first() else {
                    return Ok(Vec::new());
                };
                if Some(&n.data_source) != ds.as_ref() {
                    return no(format!(
                        "a join of `{}` and `{}`, whose rows are on different data sources",
                        lead.1.name, r.name
                    ));
                }
                renames.push(rename(r, n));
            }
            if let Some(ds) = ds.clone() {
                units.push(Unit {
                    data_source: ds,
                    renames,
                    rows: Vec::new(),
                });
            }
        } else {
            for n in nodes_of(lead.0) {
                units.push(Unit {
                    data_source: n.data_source.clone(),
                    renames: vec![rename(lead.1, n)],
                    rows: Vec::new(),
                });
            }
        }
    } else {
        // Several sharded tables: one binding group, paired by node position.
        let group = db.binding_group(&lead.1.name);
        for (_, r) in &distinct[1..] {
            if group.is_none() || db.binding_group(&r.name) != group {
                return no(format!(
                    "a join of the differently sharded tables `{}` and `{}` across nodes (declare them a binding group if they shard alike)",
                    lead.1.name, r.name
                ));
            }
        }
        for n in nodes_of(lead.0) {
            let Some(pos) = position(db, lead.1, n) else {
                continue;
            };
            let mut renames = vec![rename(lead.1, n)];
            for (_, r) in &distinct[1..] {
                let Some(node) = r.nodes.get(pos) else {
                    continue;
                };
                renames.push(Rename {
                    logical: r.name.clone(),
                    physical: node.table.to_string(),
                });
            }
            units.push(Unit {
                data_source: n.data_source.clone(),
                renames,
                rows: Vec::new(),
            });
        }
    }
    // Single tables live on the default data source only.
    if let Some(single) = d.tables.iter().find(|t| t.layout == Layout::Single) {
        let default = db.data_source_name(db.default_data_source);
        if let Some(u) = units.iter().find(|u| &*u.data_source != default) {
            return no(format!(
                "a join of the sharded table `{}` with the single table `{}`, which is only on data source `{default}`, not on `{}`",
                lead.1.name, single.table, u.data_source
            ));
        }
    }
    // INSERT rows go to their own node.
    if let (Kind::Write(WriteKind::Insert | WriteKind::Replace), Some(t)) =
        (facts.kind, d.tables.get(lead.0))
    {
        if !t.rows.is_empty() {
            for u in &mut units {
                let Some(physical) = u.renames.first().map(|r| r.physical.clone()) else {
                    continue;
                };
                let physical = &physical;
                u.rows = t
                    .rows
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.data_source == u.data_source && &*n.table == physical)
                    .map(|(r, _)| r)
                    .collect();
            }
            units.retain(|u| !u.rows.is_empty());
        }
    }
    // A table whose node has its own name needs no rename (the client's spelling stays).
    for u in &mut units {
        u.renames.retain(|r| r.logical != r.physical);
    }
    Ok(units)
}

fn rename(rule: &TableRule, n: &NodeRef) -> Rename {
    Rename {
        logical: rule.name.clone(),
        physical: n.table.to_string(),
    }
}

fn position(db: &Database, rule: &TableRule, n: &NodeRef) -> Option<usize> {
    rule.nodes
        .iter()
        .position(|x| db.data_source_name(x.data_source) == &*n.data_source && x.table == n.table)
}

fn no<T>(what: impl Into<String>) -> Result<T, NotSupported> {
    Err(NotSupported(what.into()))
}

/// The SQL every node runs, by logical data source, and for a SELECT on several nodes the
/// plan of its merge.
#[derive(Debug, Clone)]
pub struct NodeQueries {
    pub queries: Vec<(Arc<str>, Vec<u8>)>,
    pub select: Option<crate::scatter::SelectPlan>,
}

/// The node queries of a decided statement: `sql` is the client's text (hint included),
/// `stripped` the same without the hint. One node: `sql` renamed. Several: an INSERT's rows
/// split per node, a SELECT planned for merging ([`crate::scatter`]), anything else renamed
/// per node.
pub fn node_queries(
    d: &Decision,
    sql: &[u8],
    stripped: &[u8],
    q: crate::lex::Quoting,
) -> Result<NodeQueries, NotSupported> {
    let bad = |e: crate::lex::Unterminated| NotSupported(e.to_string());
    let several = d.units.len() > 1;
    if several && d.kind == Kind::Read {
        let plan = crate::scatter::plan_select(stripped, q)?;
        let mut queries = Vec::with_capacity(d.units.len());
        for u in &d.units {
            let text =
                crate::lex::rename_tables(plan.node_sql.as_bytes(), &u.renames, q).map_err(bad)?;
            queries.push((u.data_source.clone(), text));
        }
        return Ok(NodeQueries {
            queries,
            select: Some(plan),
        });
    }
    if several && matches!(d.kind, Kind::Write(WriteKind::Update | WriteKind::Delete)) {
        let toks = crate::lex::tokens(stripped, q).map_err(bad)?;
        if toks
            .iter()
            .any(|t| t.depth == 0 && t.is_keyword(stripped, "LIMIT"))
        {
            return Err(NotSupported(
                "UPDATE or DELETE with LIMIT across nodes (each node would apply the LIMIT)".into(),
            ));
        }
    }
    let split = several
        && matches!(d.kind, Kind::Write(WriteKind::Insert | WriteKind::Replace))
        && d.units.iter().any(|u| !u.rows.is_empty());
    let rows = if split {
        Some(crate::lex::insert_rows(sql, q).ok_or_else(|| {
            NotSupported(
                "this INSERT form across nodes (write INSERT INTO t (columns) VALUES (…), (…))"
                    .into(),
            )
        })?)
    } else {
        None
    };
    let mut queries = Vec::with_capacity(d.units.len());
    for u in &d.units {
        let text = match &rows {
            Some(r) => r.only(sql, &u.rows),
            None => sql.to_vec(),
        };
        queries.push((
            u.data_source.clone(),
            crate::lex::rename_tables(&text, &u.renames, q).map_err(bad)?,
        ));
    }
    Ok(NodeQueries {
        queries,
        select: None,
    })
}

impl crate::scatter::SelectPlan {
    /// The merge in words (PREVIEW, `route`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match &self.aggregate {
            Some(a) if a.keys.is_empty() => parts.push("one group (aggregates merged)".to_string()),
            Some(a) => parts.push(format!(
                "groups by {} key(s), aggregates merged",
                a.keys.len()
            )),
            None if self.order.is_empty() => {
                parts.push("union of the node results, streamed".into())
            }
            None => parts.push(format!(
                "k-way merge of sorted node results on {} key(s)",
                self.order.len()
            )),
        }
        if self.aggregate.as_ref().is_some_and(|a| a.having.is_some()) {
            parts.push("HAVING after the merge".into());
        }
        if let Some(l) = self.limit {
            parts.push(format!("LIMIT {l} OFFSET {} after the merge", self.offset));
        }
        if self.hidden > 0 {
            parts.push(format!("{} hidden column(s)", self.hidden));
        }
        parts.join("; ")
    }
}
