//! The routing decision for one statement: ShardingKey → route code → owner room, the checks
//! of DESIGN.md (room ownership, write-ban, connection mode, database type), the data nodes of
//! every table, and the keys to generate. Pure: the same facts, hint, session, rules and
//! parameters always give the same decision.
//!
//! The rules for writes (DESIGN.md, vocabulary):
//! - a `center` connection is served only in the center room; a center database likewise;
//! - center-unit databases are written only in the center room;
//! - unit databases: every write needs a ShardingKey (hint `route_code` or `sharding_key`, else
//!   the table's ShardingKey column in the statement, else the session's key); each key's route
//!   code must be owned by this room and not under the write-ban.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use sql_hint::{Hint, ValueKind};

use crate::algorithm::{Pick, Strategy, Value};
use crate::analyze::{ColumnRef, Cond, Facts, Kind, Operand, TableRef, WriteKind};
use crate::config::{ConnectionMode, DatabaseType, RoomRole};
use crate::nodeset::NodeSet;
use crate::route::ShardingKey;
use crate::ruleset::{Database, KeyGenerator, RoomId, RuleSet, TableKind, TableRule};

/// Who is asking: this proxy's room and the session's settings.
#[derive(Debug, Clone, Copy)]
pub struct SessionCtx<'a> {
    pub room: RoomId,
    pub mode: ConnectionMode,
    pub database: &'a str,
    /// Set with `SET @@rb_sharding_key = …` for clients that strip comments.
    pub session_key: Option<&'a ShardingKey>,
    /// May use the `room` hint.
    pub privileged: bool,
}

/// Where the ShardingKey came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    HintRouteCode,
    HintKey,
    Column,
    Session,
}

/// The multi-active route of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `None` when the hint gave the route code directly.
    pub key: Option<ShardingKey>,
    pub code: u32,
    pub owner: RoomId,
    pub banned: bool,
    pub source: KeySource,
}

/// How a table is laid out, in a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Sharded,
    Broadcast,
    Single,
}

/// `data_source.table` with the logical data source's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeRef {
    pub data_source: Arc<str>,
    pub table: Arc<str>,
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.data_source, self.table)
    }
}

/// The data nodes one logical table of the statement reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRoute {
    /// As written in the statement.
    pub table: String,
    pub layout: Layout,
    /// Sorted. Empty when no row can match (e.g. `id IN ()` of no shard).
    pub nodes: Vec<NodeRef>,
    /// For an INSERT into a sharded table: the node of each row, in row order.
    pub rows: Vec<NodeRef>,
    /// A sharding condition, a hint or the rows chose the nodes (false: every node, for
    /// want of a condition).
    pub conditioned: bool,
}

/// Values the proxy generated for a key column left out of an INSERT, one per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub table: String,
    pub generator: KeyGenerator,
    pub values: Vec<i64>,
}

/// The decision for one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub kind: Kind,
    pub rule_version: u64,
    /// Set when a ShardingKey or route code is known.
    pub route: Option<Route>,
    /// A read of a unit database whose ShardingKey belongs to another room (served locally, counted).
    pub foreign_read: bool,
    pub tables: Vec<TableRoute>,
    pub generated: Vec<Generated>,
    /// The hint asked to log this decision.
    pub trace: bool,
    /// Every route code a write to a unit database was allowed for (all its keys): what a
    /// write-ban applied while the statement runs must wait for.
    pub write_codes: Vec<u32>,
    /// The node queries the statement makes, in node order (one for a statement on single or
    /// broadcast tables read from the default data source).
    pub units: Vec<crate::units::Unit>,
}

impl Decision {
    /// The distinct logical data sources the statement reaches.
    pub fn data_sources(&self) -> BTreeSet<&str> {
        self.tables
            .iter()
            .flat_map(|t| t.nodes.iter().map(|n| &*n.data_source))
            .collect()
    }
}

/// Why a statement is refused. Every variant names what a developer needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("unknown database `{0}`")]
    UnknownDatabase(String),
    #[error(
        "`center` connections are served only by proxies in the center room `{center}`; this \
         proxy is in room `{room}`"
    )]
    CenterModeOutsideCenter { room: String, center: String },
    #[error(
        "database `{database}` is a center database, served only in the center room `{center}`; \
         this proxy is in room `{room}`"
    )]
    CenterDatabaseOutsideCenter {
        database: String,
        room: String,
        center: String,
    },
    #[error(
        "database `{database}` is center-unit: writable only in the center room `{center}`, \
         read-only in room `{room}`"
    )]
    ReadOnlyRoom {
        database: String,
        room: String,
        center: String,
    },
    #[error("write to `{table}` in unit database `{database}` has no ShardingKey: {how}")]
    NoShardingKey {
        database: String,
        table: String,
        /// What would give it one.
        how: String,
    },
    #[error(
        "write to `{table}` with ShardingKey {key} (route code {code}) belongs to room \
         `{owner}`, not this proxy's room `{room}` (traffic rule version {traffic_version}): \
         send it to room `{owner}`"
    )]
    WrongRoom {
        table: String,
        /// The ShardingKey, or `route_code` when the hint gave the code itself.
        key: String,
        code: u32,
        owner: String,
        room: String,
        traffic_version: u64,
    },
    #[error(
        "write to `{table}` with ShardingKey {key} (route code {code}) is banned during a \
         cut-over (write-ban version {ban_version}, owner room `{owner}`); retry later"
    )]
    Banned {
        table: String,
        key: String,
        code: u32,
        owner: String,
        ban_version: u64,
    },
    #[error("ShardingKey of `{table}`: {detail}")]
    BadShardingKey { table: String, detail: String },
    /// The hint's key or route code has no route code of the rules.
    #[error("bad hint for `{table}`: {detail}")]
    BadHintKey { table: String, detail: String },
    #[error("the statement changes `{column}`, a sharding column of `{table}`; delete and re-insert the row instead")]
    ChangesShardingColumn { table: String, column: String },
    #[error("`{table}`: {detail}")]
    NoDataNode { table: String, detail: String },
    #[error("the statement has {given} parameter values but uses parameter {index}")]
    MissingParameter { index: usize, given: usize },
    #[error("the `{key}` hint is for privileged users only")]
    HintNotAllowed { key: String },
    #[error("the `room` hint names room `{hinted}`, but this proxy serves room `{room}`")]
    HintRoom { hinted: String, room: String },
    #[error("the `node` hint `{node}`: {why}")]
    HintNode { node: String, why: String },
    #[error("statement names database `{schema}` (in `{schema}.{table}`); a statement may use only the session's database `{database}`")]
    OtherDatabase {
        schema: String,
        table: String,
        database: String,
    },
    #[error(
        "{what} on {db_type} database `{database}` may change rows of every room: it needs a \
         `center` connection (served in the center room only)"
    )]
    NeedsCenterConnection {
        what: String,
        database: String,
        db_type: String,
    },
    #[error("{what} in unit database `{database}`: the proxy cannot check its rows against room ownership")]
    Unsupported { what: String, database: String },
    /// Something the proxy cannot run correctly across data nodes.
    #[error("This version of Rainbow Bridge doesn't yet support {0}")]
    NotSupportedAcrossNodes(String),
    #[error("an {what} of `{table}` without a sharding condition would change every one of its {nodes} data nodes; add a condition on its sharding column, or set `allow_full_scatter_writes = true` in its table rule")]
    FullScatterWrite {
        what: String,
        table: String,
        nodes: usize,
    },
    #[error("key generator for `{table}`.`{column}`: {detail}")]
    KeyGeneration {
        table: String,
        column: String,
        detail: String,
    },
}

impl RouteError {
    /// Worth retrying the same statement later (a write-ban ends).
    pub fn is_retryable(&self) -> bool {
        matches!(self, RouteError::Banned { .. })
    }
}

/// A refused statement: why, under which rules, and the table, route code and owner room when
/// they are known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (rules version {rule_version})")]
pub struct Refusal {
    pub reason: RouteError,
    pub rule_version: u64,
    /// The table written, or the first one read.
    pub table: Option<String>,
    pub route_code: Option<u32>,
    pub owner_room: Option<String>,
}

impl Refusal {
    /// Worth retrying the same statement later (a write-ban ends).
    pub fn is_retryable(&self) -> bool {
        self.reason.is_retryable()
    }
}

/// A source of generated keys: called once per row and generated column.
pub type NextKey<'a> = &'a mut dyn FnMut(&KeyGenerator) -> Result<i64, String>;

/// Decides a statement without parameters, with stand-in keys 1, 2, … for generated columns:
/// for showing how a statement would route (`rainbow-bridge route`, the admin interface's
/// `PREVIEW`), never for running it.
pub fn decide_with_sample_keys(
    rules: &RuleSet,
    facts: &Facts,
    hint: Option<&Hint>,
    session: &SessionCtx<'_>,
) -> Result<Decision, Box<Refusal>> {
    let mut n = 0;
    decide(rules, facts, hint, session, &[], &mut |_| {
        n += 1;
        Ok(n)
    })
}

/// Decides one statement. `params` are the bound values of `?` parameters (text order);
/// `next_key` makes a key for a generated column.
pub fn decide(
    rules: &RuleSet,
    facts: &Facts,
    hint: Option<&Hint>,
    session: &SessionCtx<'_>,
    params: &[Value],
    next_key: NextKey<'_>,
) -> Result<Decision, Box<Refusal>> {
    let d = Decider {
        rules,
        facts,
        hint,
        session,
        params,
    };
    d.run(next_key).map_err(|reason| {
        let (route_code, owner_room) = match &reason {
            RouteError::WrongRoom { code, owner, .. } | RouteError::Banned { code, owner, .. } => {
                (Some(*code), Some(owner.clone()))
            }
            _ => (None, None),
        };
        let table = match &reason {
            RouteError::WrongRoom { table, .. }
            | RouteError::Banned { table, .. }
            | RouteError::NoShardingKey { table, .. }
            | RouteError::BadShardingKey { table, .. }
            | RouteError::BadHintKey { table, .. }
            | RouteError::ChangesShardingColumn { table, .. }
            | RouteError::NoDataNode { table, .. }
            | RouteError::FullScatterWrite { table, .. }
            | RouteError::KeyGeneration { table, .. } => Some(table.clone()),
            _ => facts.tables.first().map(|t| t.name.clone()),
        };
        Box::new(Refusal {
            reason,
            rule_version: rules.version(),
            table,
            route_code,
            owner_room,
        })
    })
}

struct Decider<'a> {
    rules: &'a RuleSet,
    facts: &'a Facts,
    hint: Option<&'a Hint>,
    session: &'a SessionCtx<'a>,
    params: &'a [Value],
}

impl Decider<'_> {
    fn room_name(&self, id: RoomId) -> String {
        self.rules.room_name(id).to_string()
    }

    fn value(&self, op: &Operand) -> Result<Option<Value>, RouteError> {
        match op {
            Operand::Value(v) => Ok(Some(v.clone())),
            Operand::Param(i) => match self.params.get(*i) {
                Some(v) => Ok(Some(v.clone())),
                None => Err(RouteError::MissingParameter {
                    index: i + 1,
                    given: self.params.len(),
                }),
            },
            Operand::Other(_) => Ok(None),
        }
    }

    fn run(&self, next_key: NextKey<'_>) -> Result<Decision, RouteError> {
        let rules = self.rules;
        let s = self.session;
        let db = rules
            .database(s.database)
            .ok_or_else(|| RouteError::UnknownDatabase(s.database.to_string()))?;
        let local_role = rules.room_role(s.room);
        let center = self.room_name(rules.center());
        if s.mode == ConnectionMode::Center && local_role != RoomRole::Center {
            return Err(RouteError::CenterModeOutsideCenter {
                room: self.room_name(s.room),
                center,
            });
        }
        if db.db_type == DatabaseType::Center && local_role != RoomRole::Center {
            return Err(RouteError::CenterDatabaseOutsideCenter {
                database: db.name.clone(),
                room: self.room_name(s.room),
                center,
            });
        }
        if let Some(room) = self.hint.and_then(|h| h.room.as_deref()) {
            if !s.privileged {
                return Err(RouteError::HintNotAllowed { key: "room".into() });
            }
            if room != rules.room_name(s.room) {
                return Err(RouteError::HintRoom {
                    hinted: room.to_string(),
                    room: self.room_name(s.room),
                });
            }
        }
        for t in &self.facts.tables {
            if let Some(schema) = &t.schema {
                if schema != s.database {
                    return Err(RouteError::OtherDatabase {
                        schema: schema.clone(),
                        table: t.name.clone(),
                        database: s.database.to_string(),
                    });
                }
            }
        }

        let kind = self.facts.kind;
        let write = matches!(kind, Kind::Write(_));
        // DDL and statements the proxy does not classify (CALL, LOCK TABLES, GRANT…) may change
        // data anywhere: outside center databases they need a center connection, which only
        // the center room serves, and they are never allowed where the room is read-only.
        let may_write = write || matches!(kind, Kind::Ddl | Kind::Other);
        if may_write && db.db_type == DatabaseType::CenterUnit && local_role != RoomRole::Center {
            return Err(RouteError::ReadOnlyRoom {
                database: db.name.clone(),
                room: self.room_name(s.room),
                center,
            });
        }
        if matches!(kind, Kind::Ddl | Kind::Other)
            && db.db_type != DatabaseType::Center
            && s.mode != ConnectionMode::Center
        {
            return Err(RouteError::NeedsCenterConnection {
                what: if kind == Kind::Ddl {
                    "DDL".into()
                } else {
                    "this statement".into()
                },
                database: db.name.clone(),
                db_type: db.db_type.to_string(),
            });
        }

        // Keys to generate (INSERT into a table whose generated column is left out).
        let mut generated = Vec::new();
        if let (Kind::Write(WriteKind::Insert | WriteKind::Replace), Some(ins)) =
            (kind, &self.facts.insert)
        {
            if let TableKind::Sharded(t) = db.table(&ins.table) {
                if let Some(g) = &t.key_generator {
                    if !ins.columns.contains(&g.column) && !ins.columns.is_empty() {
                        let mut values = Vec::with_capacity(ins.rows.len());
                        for _ in &ins.rows {
                            values.push(next_key(g).map_err(|detail| {
                                RouteError::KeyGeneration {
                                    table: t.name.clone(),
                                    column: g.column.clone(),
                                    detail,
                                }
                            })?);
                        }
                        generated.push(Generated {
                            table: t.name.clone(),
                            generator: g.clone(),
                            values,
                        });
                    }
                }
            }
        }

        let (route, write_codes) = self.route(db, write, &generated)?;
        // Only a unit database's rows belong to one room.
        let foreign_read = !write
            && db.db_type == DatabaseType::Unit
            && route.as_ref().is_some_and(|r| r.owner != s.room);

        // Data nodes of every table.
        let mut tables = Vec::new();
        for t in &self.facts.tables {
            // DDL changes every copy of a broadcast table.
            tables.push(self.table_route(db, t, write || kind == Kind::Ddl, &generated)?);
        }
        bind(db, &self.facts.tables, &mut tables);
        if let Some(node) = self.hint.and_then(|h| h.node.as_deref()) {
            self.apply_node_hint(db, node, &mut tables)?;
        }

        let mut d = Decision {
            kind,
            rule_version: rules.version(),
            route,
            foreign_read,
            tables,
            generated,
            trace: self.hint.and_then(|h| h.trace).unwrap_or(false),
            write_codes,
            units: Vec::new(),
        };
        d.units = crate::units::units(db, self.facts, &d)
            .map_err(|e| RouteError::NotSupportedAcrossNodes(e.0))?;
        if let Kind::Write(w @ (WriteKind::Update | WriteKind::Delete)) = kind {
            for t in &d.tables {
                if let TableKind::Sharded(rule) = db.table(&t.table) {
                    if rule.nodes.len() > 1
                        && !t.conditioned
                        && !rule.allow_full_scatter_writes
                        && self.hint.and_then(|h| h.node.as_ref()).is_none()
                    {
                        return Err(RouteError::FullScatterWrite {
                            what: if w == WriteKind::Update {
                                "UPDATE"
                            } else {
                                "DELETE"
                            }
                            .into(),
                            table: rule.name.clone(),
                            nodes: rule.nodes.len(),
                        });
                    }
                }
            }
        }
        Ok(d)
    }

    /// The ShardingKey route, and the room and ban checks for writes to unit databases.
    fn route(
        &self,
        db: &Database,
        write: bool,
        generated: &[Generated],
    ) -> Result<(Option<Route>, Vec<u32>), RouteError> {
        let rules = self.rules;
        let target = self.write_target(db);
        let table_name: &str = target
            .map(|(t, _)| t.name.as_str())
            .or_else(|| self.facts.tables.first().map(|t| t.name.as_str()))
            .unwrap_or_default();
        let key_column = target.and_then(|(_, r)| r.and_then(|r| r.sharding_key.as_deref()));

        // Every key the statement carries, best source first. The hint's key routes the
        // statement, but the keys in its own rows or WHERE are checked too: a hint that names
        // another user's key must not let rows of this one be written in the wrong room.
        let mut keys: Vec<(Option<ShardingKey>, u32, KeySource)> = Vec::new();
        let code_of = |k: &ShardingKey| {
            rules
                .route()
                .route_code(k)
                .map_err(|e| RouteError::BadShardingKey {
                    table: table_name.to_string(),
                    detail: e.to_string(),
                })
        };
        if let Some(code) = self.hint.and_then(|h| h.route_code) {
            if code >= rules.route().count {
                return Err(RouteError::BadHintKey {
                    table: table_name.to_string(),
                    detail: format!(
                        "hint route_code {code} is outside the route codes 0-{}",
                        rules.route().count - 1
                    ),
                });
            }
            keys.push((None, code, KeySource::HintRouteCode));
        }
        if let Some(k) = self.hint.and_then(|h| h.sharding_key.as_ref()) {
            let code = code_of(k).map_err(|e| match e {
                RouteError::BadShardingKey { table, detail } => RouteError::BadHintKey {
                    table,
                    detail: format!("hint sharding_key {k}: {detail}"),
                },
                other => other,
            })?;
            keys.push((Some(k.clone()), code, KeySource::HintKey));
        }
        if let (Some((t, Some(rule))), Some(col)) = (target, key_column) {
            let values = match self.key_values(t, rule, col, generated)? {
                KeyValues::Known(v) => v,
                KeyValues::Unevaluable(why) if write && db.db_type == DatabaseType::Unit => {
                    return Err(RouteError::Unsupported {
                        what: why,
                        database: db.name.clone(),
                    })
                }
                KeyValues::Unevaluable(_) => Vec::new(),
            };
            for v in values {
                let k = match v {
                    Value::Int(i) => ShardingKey::Int(i),
                    Value::Str(s) => ShardingKey::Str(s),
                    Value::Null => {
                        return Err(RouteError::BadShardingKey {
                            table: t.name.clone(),
                            detail: format!("`{col}` is NULL"),
                        })
                    }
                };
                // A read's key that has no route code (a name where integers are expected)
                // matches no row of a correctly keyed table: it only loses its route.
                let code = match code_of(&k) {
                    Ok(c) => c,
                    Err(_) if !write => continue,
                    Err(e) => return Err(e),
                };
                keys.push((Some(k), code, KeySource::Column));
            }
        }
        if keys.is_empty() {
            if let Some(k) = self.session.session_key {
                keys.push((Some(k.clone()), code_of(k)?, KeySource::Session));
            }
        }

        if write && db.db_type == DatabaseType::Unit {
            if matches!(self.facts.kind, Kind::Write(WriteKind::LoadData)) {
                return Err(RouteError::Unsupported {
                    what: "LOAD DATA".into(),
                    database: db.name.clone(),
                });
            }
            // Rows the analysis cannot see cannot be checked: refused, never guessed.
            if let Some(unknown) = self.facts.unknowns.first() {
                return Err(RouteError::Unsupported {
                    what: unknown.clone(),
                    database: db.name.clone(),
                });
            }
            if keys.is_empty() {
                let how = match &key_column {
                    Some(c) => format!(
                        "give `{c}` a value in the statement (INSERT column, or `{c} = …` in \
                         WHERE), add a hint /* rb: sharding_key=… */, or SET @@rb_sharding_key"
                    ),
                    None => "the table has no ShardingKey column in the rules: add a hint \
                             /* rb: sharding_key=… */ or SET @@rb_sharding_key"
                        .to_string(),
                };
                return Err(RouteError::NoShardingKey {
                    database: db.name.clone(),
                    table: table_name.to_string(),
                    how,
                });
            }
            for (key, code, _) in &keys {
                let key = key
                    .as_ref()
                    .map_or_else(|| "(hint route_code)".to_string(), |k| k.to_string());
                let owner = rules.owner(*code);
                if owner != self.session.room {
                    return Err(RouteError::WrongRoom {
                        table: table_name.to_string(),
                        key,
                        code: *code,
                        owner: self.room_name(owner),
                        room: self.room_name(self.session.room),
                        traffic_version: rules.traffic_version(),
                    });
                }
                if rules.is_banned(*code) {
                    return Err(RouteError::Banned {
                        table: table_name.to_string(),
                        key,
                        code: *code,
                        owner: self.room_name(owner),
                        ban_version: rules.ban_version(),
                    });
                }
            }
        }
        let codes: Vec<u32> = if write && db.db_type == DatabaseType::Unit {
            keys.iter().map(|(_, c, _)| *c).collect()
        } else {
            Vec::new()
        };
        Ok((
            keys.into_iter().next().map(|(key, code, source)| Route {
                key,
                code,
                owner: rules.owner(code),
                banned: rules.is_banned(code),
                source,
            }),
            codes,
        ))
    }

    /// The table a write goes to (INSERT target, or the first table of UPDATE/DELETE), with its
    /// rule if it is sharded; for reads, the first table with a ShardingKey column.
    fn write_target<'d>(&self, db: &'d Database) -> Option<(&TableRef, Option<&'d TableRule>)> {
        let rule = |t: &TableRef| match db.table(&t.name) {
            TableKind::Sharded(r) => Some(r),
            _ => None,
        };
        match self.facts.kind {
            Kind::Write(_) => self.facts.tables.first().map(|t| (t, rule(t))),
            _ => self
                .facts
                .tables
                .iter()
                .find(|t| rule(t).is_some_and(|r| r.sharding_key.is_some()))
                .map(|t| (t, rule(t))),
        }
    }

    /// The ShardingKey column's values: every INSERT row's, or the values the WHERE pins it to.
    fn key_values(
        &self,
        t: &TableRef,
        rule: &TableRule,
        col: &str,
        generated: &[Generated],
    ) -> Result<KeyValues, RouteError> {
        if let Some(ins) = &self.facts.insert {
            if let Some(i) = ins.columns.iter().position(|c| c == col) {
                let mut out = Vec::new();
                for (r, row) in ins.rows.iter().enumerate() {
                    match row.get(i).map(|op| self.value(op)).transpose()?.flatten() {
                        Some(v) => out.push(v),
                        None => {
                            return Ok(KeyValues::Unevaluable(format!(
                                "row {}'s ShardingKey `{col}` is an expression",
                                r + 1
                            )))
                        }
                    }
                }
                return Ok(KeyValues::Known(dedup(out)));
            }
            if let Some(g) = generated
                .iter()
                .find(|g| g.table == rule.name && g.generator.column == col)
            {
                return Ok(KeyValues::Known(dedup(
                    g.values.iter().map(|v| Value::Int(*v)).collect(),
                )));
            }
            return Ok(KeyValues::Known(Vec::new()));
        }
        let Some(cond) = &self.facts.condition else {
            return Ok(KeyValues::Known(Vec::new()));
        };
        if let Some(e) = unevaluable(cond, t, col) {
            return Ok(KeyValues::Unevaluable(format!(
                "the condition on ShardingKey `{col}` compares it with `{e}`"
            )));
        }
        Ok(KeyValues::Known(
            self.pinned(cond, t, col)?.map(dedup).unwrap_or_default(),
        ))
    }

    /// The finite set of values `cond` allows for `t.col`, if it pins one.
    fn pinned(
        &self,
        cond: &Cond,
        t: &TableRef,
        col: &str,
    ) -> Result<Option<Vec<Value>>, RouteError> {
        Ok(match cond {
            Cond::In { column, values } if applies(column, t) && column.name == col => {
                let mut out = Vec::new();
                for v in values {
                    match self.value(v)? {
                        Some(v) => out.push(v),
                        None => return Ok(None),
                    }
                }
                Some(out)
            }
            Cond::And(parts) => {
                for p in parts {
                    if let Some(v) = self.pinned(p, t, col)? {
                        return Ok(Some(v));
                    }
                }
                None
            }
            Cond::Or(parts) => {
                let mut out = Vec::new();
                for p in parts {
                    match self.pinned(p, t, col)? {
                        Some(v) => out.extend(v),
                        None => return Ok(None),
                    }
                }
                Some(out)
            }
            _ => None,
        })
    }

    fn table_route(
        &self,
        db: &Database,
        t: &TableRef,
        write: bool,
        generated: &[Generated],
    ) -> Result<TableRoute, RouteError> {
        let node = |ds: usize, table: &Arc<str>| NodeRef {
            data_source: db.data_source_arc(ds),
            table: table.clone(),
        };
        let written: Arc<str> = Arc::from(t.name.as_str());
        match db.table(&t.name) {
            TableKind::Single => Ok(TableRoute {
                table: t.name.clone(),
                layout: Layout::Single,
                nodes: vec![node(db.default_data_source, &written)],
                rows: Vec::new(),
                conditioned: true,
            }),
            TableKind::Broadcast => {
                // Writes reach every copy; reads one (the default data source).
                let nodes = if write {
                    (0..db.data_sources.len())
                        .map(|i| node(i, &written))
                        .collect()
                } else {
                    vec![node(db.default_data_source, &written)]
                };
                Ok(TableRoute {
                    table: t.name.clone(),
                    layout: Layout::Broadcast,
                    nodes,
                    rows: Vec::new(),
                    conditioned: true,
                })
            }
            TableKind::Sharded(rule) => {
                if let Kind::Write(WriteKind::Update | WriteKind::Insert | WriteKind::Replace) =
                    self.facts.kind
                {
                    for c in &self.facts.assigned {
                        if applies(c, t) && is_sharding_column(rule, &c.name) {
                            return Err(RouteError::ChangesShardingColumn {
                                table: rule.name.clone(),
                                column: c.name.clone(),
                            });
                        }
                    }
                }
                let mut rows = Vec::new();
                let set: Option<NodeSet> = match &self.facts.insert {
                    Some(ins) if ins.table.eq_ignore_ascii_case(&t.name) => {
                        let mut all = NodeSet::empty(rule.nodes.len());
                        for (r, row) in ins.rows.iter().enumerate() {
                            let n = self.row_node(rule, db, &ins.columns, row, r, generated)?;
                            rows.push(node(rule.nodes[n].data_source, &rule.nodes[n].table));
                            all.insert(n);
                        }
                        Some(all)
                    }
                    _ => match self.hinted_nodes(rule, db, t)? {
                        Some(s) => Some(s),
                        None => match &self.facts.condition {
                            Some(c) => self.cond_nodes(rule, db, t, c)?,
                            None => None,
                        },
                    },
                };
                let conditioned = set.is_some();
                let idx: Vec<usize> = match set {
                    Some(s) => s.iter().collect(),
                    None => (0..rule.nodes.len()).collect(),
                };
                let mut nodes: Vec<NodeRef> = idx
                    .iter()
                    .map(|i| node(rule.nodes[*i].data_source, &rule.nodes[*i].table))
                    .collect();
                nodes.sort();
                Ok(TableRoute {
                    table: t.name.clone(),
                    layout: Layout::Sharded,
                    nodes,
                    rows,
                    conditioned,
                })
            }
        }
    }

    /// The node of one INSERT row.
    fn row_node(
        &self,
        rule: &TableRule,
        db: &Database,
        columns: &[String],
        row: &[Operand],
        r: usize,
        generated: &[Generated],
    ) -> Result<usize, RouteError> {
        let value_of = |col: &str| -> Result<Value, RouteError> {
            if let Some(i) = columns.iter().position(|c| c == col) {
                return match row.get(i).map(|op| self.value(op)).transpose()?.flatten() {
                    Some(v) => Ok(v),
                    None => Err(RouteError::NoDataNode {
                        table: rule.name.clone(),
                        detail: format!(
                            "row {}: sharding column `{col}` is an expression the proxy does not evaluate",
                            r + 1
                        ),
                    }),
                };
            }
            if let Some(g) = generated
                .iter()
                .find(|g| g.table == rule.name && g.generator.column == col)
            {
                return Ok(Value::Int(g.values[r]));
            }
            Err(RouteError::NoDataNode {
                table: rule.name.clone(),
                detail: format!(
                    "row {}: the INSERT gives no value for sharding column `{col}`",
                    r + 1
                ),
            })
        };
        let mut candidates = NodeSet::full(rule.nodes.len());
        for (strategy, tables) in [(&rule.database, false), (&rule.table, true)] {
            let Some(s) = strategy else { continue };
            let v = value_of(&s.column)?;
            let pick = s.pick(&v).map_err(|e| RouteError::NoDataNode {
                table: rule.name.clone(),
                detail: format!("row {}: {e}", r + 1),
            })?;
            candidates.intersect(&pick_nodes(rule, db, &pick, tables));
        }
        if candidates.len() != 1 {
            return Err(RouteError::NoDataNode {
                table: rule.name.clone(),
                detail: format!(
                    "row {} maps to {} data nodes; an INSERT row needs exactly one",
                    r + 1,
                    candidates.len()
                ),
            });
        }
        Ok(candidates.first().unwrap_or_default())
    }

    /// Nodes chosen by ShardingSphere-style table values in the hint.
    fn hinted_nodes(
        &self,
        rule: &TableRule,
        db: &Database,
        t: &TableRef,
    ) -> Result<Option<NodeSet>, RouteError> {
        let Some(h) = self.hint else { return Ok(None) };
        let mut set: Option<NodeSet> = None;
        for (table, kind, key) in &h.table_values {
            if !(table.is_empty() || table.eq_ignore_ascii_case(&t.name)) {
                continue;
            }
            let (strategy, tables) = match kind {
                ValueKind::Database => (&rule.database, false),
                ValueKind::Table => (&rule.table, true),
            };
            let Some(s) = strategy else { continue };
            let v = match key {
                ShardingKey::Int(i) => Value::Int(*i),
                ShardingKey::Str(s) => Value::Str(s.clone()),
            };
            let picked = match s.pick(&v) {
                Ok(p) => pick_nodes(rule, db, &p, tables),
                Err(_) => NodeSet::empty(rule.nodes.len()),
            };
            set = Some(match set {
                None => picked,
                Some(mut prev) => {
                    prev.intersect(&picked);
                    prev
                }
            });
        }
        Ok(set)
    }

    /// Nodes a WHERE condition allows; `None` for all.
    fn cond_nodes(
        &self,
        rule: &TableRule,
        db: &Database,
        t: &TableRef,
        cond: &Cond,
    ) -> Result<Option<NodeSet>, RouteError> {
        let n = rule.nodes.len();
        Ok(match cond {
            Cond::And(parts) => {
                let mut acc: Option<NodeSet> = None;
                for p in parts {
                    if let Some(s) = self.cond_nodes(rule, db, t, p)? {
                        acc = Some(match acc {
                            None => s,
                            Some(mut a) => {
                                a.intersect(&s);
                                a
                            }
                        });
                    }
                }
                acc
            }
            Cond::Or(parts) => {
                let mut acc = NodeSet::empty(n);
                for p in parts {
                    match self.cond_nodes(rule, db, t, p)? {
                        Some(s) => acc.union(&s),
                        None => return Ok(None),
                    }
                }
                Some(acc)
            }
            Cond::In { column, values } if applies(column, t) => {
                let strategies = strategies_on(rule, &column.name);
                if strategies.clone().next().is_none() {
                    return Ok(None);
                }
                let mut acc = NodeSet::empty(n);
                for v in values {
                    let Some(v) = self.value(v)? else {
                        return Ok(None);
                    };
                    let mut one = NodeSet::full(n);
                    for (s, tables) in strategies.clone() {
                        // A value the algorithm cannot read (`13.0`, a number for a date) may
                        // still match rows under MySQL's comparison rules: every node.
                        match s.pick(&v) {
                            Ok(p) => one.intersect(&pick_nodes(rule, db, &p, tables)),
                            Err(_) => return Ok(None),
                        }
                    }
                    acc.union(&one);
                }
                Some(acc)
            }
            Cond::Range { column, low, high } if applies(column, t) => {
                let strategies = strategies_on(rule, &column.name);
                if strategies.clone().next().is_none() {
                    return Ok(None);
                }
                let low = match low {
                    Some(op) => match self.value(op)? {
                        Some(v) => Some(v),
                        None => return Ok(None),
                    },
                    None => None,
                };
                let high = match high {
                    Some(op) => match self.value(op)? {
                        Some(v) => Some(v),
                        None => return Ok(None),
                    },
                    None => None,
                };
                let mut one = NodeSet::full(n);
                for (s, tables) in strategies.clone() {
                    if let Some(picks) = s.pick_range(low.as_ref(), high.as_ref()) {
                        let mut picked = NodeSet::empty(n);
                        for p in &picks {
                            picked.union(&pick_nodes(rule, db, p, tables));
                        }
                        one.intersect(&picked);
                    }
                }
                Some(one)
            }
            _ => None,
        })
    }

    fn apply_node_hint(
        &self,
        db: &Database,
        node: &str,
        tables: &mut [TableRoute],
    ) -> Result<(), RouteError> {
        let (ds, table) = match node.split_once('.') {
            Some((d, t)) => (d, Some(t)),
            None => (node, None),
        };
        let bad = |why: String| RouteError::HintNode {
            node: node.to_string(),
            why,
        };
        if !db.data_sources.iter().any(|d| &*d.name == ds) {
            return Err(bad(format!("`{ds}` is not a data source of `{}`", db.name)));
        }
        for t in tables.iter_mut() {
            let keep: Vec<NodeRef> = match table {
                // A whole node: only for the sharded table it belongs to.
                Some(phys) => t
                    .nodes
                    .iter()
                    .filter(|n| &*n.data_source == ds && n.table.eq_ignore_ascii_case(phys))
                    .cloned()
                    .collect(),
                None => t
                    .nodes
                    .iter()
                    .filter(|n| &*n.data_source == ds)
                    .cloned()
                    .collect(),
            };
            if keep.is_empty() && t.layout == Layout::Sharded {
                return Err(bad(format!(
                    "`{}` has no node there that the statement can reach",
                    t.table
                )));
            }
            if t.layout == Layout::Broadcast && matches!(self.facts.kind, Kind::Write(_)) {
                return Err(bad(format!(
                    "`{}` is a broadcast table: a write goes to every copy and cannot be narrowed",
                    t.table
                )));
            }
            if let Some(r) = t.rows.iter().find(|r| !keep.contains(r)) {
                return Err(bad(format!(
                    "an INSERT row of `{}` belongs to node `{r}`",
                    t.table
                )));
            }
            if t.layout == Layout::Sharded {
                t.nodes = keep;
            } else {
                t.nodes = vec![NodeRef {
                    data_source: Arc::from(ds),
                    table: Arc::from(t.table.as_str()),
                }];
            }
        }
        Ok(())
    }
}

/// Tables of one binding group shard alike and join on one node: each keeps only the node
/// positions (data source, table number) that every member of its group in the statement
/// reaches. Their node lists have the same shape (validated), so positions line up.
fn bind(db: &Database, refs: &[TableRef], tables: &mut [TableRoute]) {
    if tables.len() < 2 {
        return;
    }
    let position = |t: &TableRoute, n: &NodeRef| -> Option<usize> {
        let TableKind::Sharded(rule) = db.table(&t.table) else {
            return None;
        };
        rule.nodes.iter().position(|x| {
            db.data_source_name(x.data_source) == &*n.data_source && x.table == n.table
        })
    };
    // Only tables joined at the top level pair rows; a subquery's table is read in full.
    let top = |i: usize| refs.get(i).is_some_and(|r| r.top);
    let groups: BTreeSet<usize> = (0..tables.len())
        .filter(|i| top(*i))
        .filter_map(|i| db.binding_group(&tables[i].table))
        .collect();
    for g in groups {
        let members: Vec<usize> = (0..tables.len())
            .filter(|i| top(*i) && db.binding_group(&tables[*i].table) == Some(g))
            .collect();
        // A self-join (the same table twice) pairs rows of one table: no narrowing.
        let distinct: BTreeSet<String> = members
            .iter()
            .map(|i| tables[*i].table.to_ascii_lowercase())
            .collect();
        if members.len() < 2 || distinct.len() != members.len() {
            continue;
        }
        let mut common: Option<BTreeSet<usize>> = None;
        for &i in &members {
            let set: BTreeSet<usize> = tables[i]
                .nodes
                .iter()
                .filter_map(|n| position(&tables[i], n))
                .collect();
            common = Some(match common {
                None => set,
                Some(c) => c.intersection(&set).copied().collect(),
            });
        }
        let common = common.unwrap_or_default();
        for &i in &members {
            let t = &tables[i];
            let keep: Vec<NodeRef> = t
                .nodes
                .iter()
                .filter(|n| position(t, n).is_some_and(|p| common.contains(&p)))
                .cloned()
                .collect();
            tables[i].nodes = keep;
        }
    }
}

/// What [`Decider::key_values`] found.
enum KeyValues {
    Known(Vec<Value>),
    /// The key column is given, but by an expression the proxy does not evaluate.
    Unevaluable(String),
}

/// An operand the proxy cannot evaluate, compared with `t.col` anywhere in `cond`.
fn unevaluable(cond: &Cond, t: &TableRef, col: &str) -> Option<String> {
    match cond {
        Cond::And(parts) | Cond::Or(parts) => parts.iter().find_map(|p| unevaluable(p, t, col)),
        Cond::In { column, values } if applies(column, t) && column.name == col => {
            values.iter().find_map(|v| match v {
                Operand::Other(e) => Some(e.clone()),
                _ => None,
            })
        }
        _ => None,
    }
}

/// Whether a column reference can mean a column of table `t`.
fn applies(c: &ColumnRef, t: &TableRef) -> bool {
    if !t.top || t.nested {
        // A subquery's table (also when the outer query reads it too): the top-level WHERE
        // says nothing about the rows the subquery reads.
        return false;
    }
    match &c.qualifier {
        None => true,
        Some(q) => {
            q.eq_ignore_ascii_case(&t.name)
                || t.alias
                    .as_deref()
                    .is_some_and(|a| a.eq_ignore_ascii_case(q))
        }
    }
}

fn is_sharding_column(rule: &TableRule, column: &str) -> bool {
    rule.sharding_key.as_deref() == Some(column)
        || [&rule.database, &rule.table]
            .into_iter()
            .flatten()
            .any(|s| s.column == column)
}

/// The strategies of `rule` that read `column` (database first), without allocating.
fn strategies_on<'r>(
    rule: &'r TableRule,
    column: &'r str,
) -> impl Iterator<Item = (&'r Strategy, bool)> + Clone + 'r {
    [(&rule.database, false), (&rule.table, true)]
        .into_iter()
        .filter_map(move |(s, tables)| {
            s.as_ref()
                .filter(|s| s.column == column)
                .map(|s| (s, tables))
        })
}

fn pick_nodes(rule: &TableRule, db: &Database, pick: &Pick, tables: bool) -> NodeSet {
    if tables {
        rule.nodes_of_table(pick)
    } else {
        rule.nodes_of_data_source(pick, db)
    }
}

fn dedup(mut v: Vec<Value>) -> Vec<Value> {
    v.sort();
    v.dedup();
    v
}
