//! The compiled, immutable rule set: every lookup the proxy makes per statement, with no
//! allocation (route code → room is a dense table, the write-ban a bit set).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use crate::algorithm::{Algorithm, Pick, Strategy, StrategySpec};
use crate::config::{
    is_identifier, parse_password_hash, ConfigProblem, DataSource, DatabaseType, RoomRole, User,
};
use crate::inline::Value as InlineValue;
use crate::inline::{split_top_level, Template};
use crate::nodeset::NodeSet;

/// The rule set's lookup maps: foldhash, much cheaper than SipHash for short names; the keys
/// come from the DBA's file, not from clients.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use crate::route::{CodeSet, RouteFn};
use crate::rules::{KeyGeneratorKind, RulesFile, TableRuleSpec};

/// Index of a room in [`RuleSet::rooms`].
pub type RoomId = u16;

/// Most route codes a rule set may have (the owner table is dense).
pub const MAX_ROUTE_CODES: u32 = 1 << 20;

/// Why a rules file was refused.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("rules file is not valid TOML or has an unknown or missing field: {0}")]
    Syntax(#[from] toml::de::Error),
    /// Several fields have the wrong type or an unknown name: each, with where it is.
    #[error("rules file has {} field problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Fields(Vec<String>),
    #[error("rules file has {} problem(s):\n{}", .0.len(), crate::config::list(.0))]
    Invalid(Vec<ConfigProblem>),
}

/// A compiled rule set. Cheap to share (`Arc`); never changes once built.
#[derive(Debug)]
pub struct RuleSet {
    version: u64,
    rooms: Vec<(String, RoomRole)>,
    center: RoomId,
    route: RouteFn,
    traffic_version: u64,
    owner: Vec<RoomId>,
    owned: Vec<CodeSet>,
    ban_version: u64,
    banned_bits: Vec<u64>,
    banned: CodeSet,
    data_sources: BTreeMap<String, DataSource>,
    databases: HashMap<String, Arc<Database>>,
    users: BTreeMap<String, User>,
    ids: id_gen::SnowflakeConfig,
    segments: Option<crate::rules::Segments>,
}

/// A logical database, compiled.
#[derive(Debug)]
pub struct Database {
    pub name: String,
    pub db_type: DatabaseType,
    /// Logical data sources, in name order.
    pub data_sources: Vec<LogicalDataSource>,
    /// Index into `data_sources` of the default data source.
    pub default_data_source: usize,
    tables: HashMap<String, Arc<TableRule>>,
    broadcast: HashMap<String, String>,
    binding: HashMap<String, usize>,
    pub transactions: crate::rules::TransactionMode,
    /// [`Database::is_laid_out`], computed once.
    laid_out: bool,
}

/// A logical data source and its physical data source in each room.
#[derive(Debug)]
pub struct LogicalDataSource {
    pub name: Arc<str>,
    /// Physical data source name, by [`RoomId`].
    pub physical: Vec<Option<String>>,
}

/// `data_source.table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataNode {
    /// Index into the database's `data_sources`.
    pub data_source: usize,
    pub table: Arc<str>,
}

/// A sharded table, compiled.
#[derive(Debug)]
pub struct TableRule {
    pub name: String,
    /// The multi-active ShardingKey column, lower case.
    pub sharding_key: Option<String>,
    pub nodes: Vec<DataNode>,
    /// The distinct data sources of `nodes`, in order of first appearance.
    pub node_data_sources: Vec<usize>,
    /// For each entry of `node_data_sources`, the indices of its nodes in `nodes`.
    pub tables_in: Vec<Vec<usize>>,
    /// Lower-case physical table name → its nodes (name picks: inline, interval).
    by_table_name: HashMap<String, Vec<usize>>,
    pub database: Option<Strategy>,
    pub table: Option<Strategy>,
    pub key_generator: Option<KeyGenerator>,
    /// UPDATE/DELETE may reach every node without a sharding condition.
    pub allow_full_scatter_writes: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGenerator {
    /// Lower case.
    pub column: String,
    pub kind: KeyGeneratorKind,
    /// Business tag (segment).
    pub tag: String,
}

/// How a table is laid out.
#[derive(Debug, Clone, Copy)]
pub enum TableKind<'a> {
    Sharded(&'a TableRule),
    /// The same copy in every data source.
    Broadcast,
    /// One copy, on the default data source.
    Single,
}

impl Database {
    /// How `table` (any case) is laid out.
    pub fn table(&self, table: &str) -> TableKind<'_> {
        let key = lower_key(table);
        if let Some(t) = self.tables.get(key.as_ref()) {
            TableKind::Sharded(t)
        } else if self.broadcast.contains_key(key.as_ref()) {
            TableKind::Broadcast
        } else {
            TableKind::Single
        }
    }

    /// Has tables on other nodes than the default data source's table of their name (sharded,
    /// renamed), or several data sources: statements are routed by their tables,
    /// reads included. A table rule that only names a ShardingKey column is not a layout.
    pub fn is_laid_out(&self) -> bool {
        self.laid_out
    }

    fn compute_laid_out(&self) -> bool {
        let plain = |t: &TableRule| {
            matches!(t.nodes.as_slice(), [n] if n.data_source == self.default_data_source
                && n.table.eq_ignore_ascii_case(&t.name))
        };
        // Broadcast tables matter only with several data sources.
        self.tables.values().any(|t| !plain(t)) || self.data_sources.len() > 1
    }

    /// The binding group of a sharded table, if any.
    pub fn binding_group(&self, table: &str) -> Option<usize> {
        if self.binding.is_empty() {
            return None;
        }
        self.binding.get(lower_key(table).as_ref()).copied()
    }

    pub fn sharded_tables(&self) -> impl Iterator<Item = &TableRule> {
        self.tables.values().map(|t| t.as_ref())
    }

    pub fn broadcast_tables(&self) -> impl Iterator<Item = &str> {
        self.broadcast.values().map(|s| s.as_str())
    }

    pub fn data_source_name(&self, index: usize) -> &str {
        self.data_sources.get(index).map_or("?", |d| &d.name)
    }

    /// The shared name of a logical data source (cloning it does not allocate).
    pub fn data_source_arc(&self, index: usize) -> Arc<str> {
        self.data_sources
            .get(index)
            .map_or_else(|| Arc::from("?"), |d| d.name.clone())
    }
}

/// `s` in lower case, without allocating when it already is (the usual case).
fn lower_key(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(s.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

impl TableRule {
    /// Nodes that `pick` selects among the data sources (database strategy).
    pub(crate) fn nodes_of_data_source(&self, pick: &Pick, db: &Database) -> NodeSet {
        let mut out = NodeSet::empty(self.nodes.len());
        let pos = match pick {
            Pick::Index(i) => (*i < self.node_data_sources.len()).then_some(*i),
            Pick::Name(n) => self
                .node_data_sources
                .iter()
                .position(|d| db.data_sources[*d].name.eq_ignore_ascii_case(n)),
        };
        if let Some(p) = pos {
            for k in &self.tables_in[p] {
                out.insert(*k);
            }
        }
        out
    }

    /// Nodes that `pick` selects among the tables of each data source (table strategy).
    pub(crate) fn nodes_of_table(&self, pick: &Pick) -> NodeSet {
        let mut out = NodeSet::empty(self.nodes.len());
        for nodes in &self.tables_in {
            match pick {
                Pick::Index(i) => {
                    if let Some(k) = nodes.get(*i) {
                        out.insert(*k);
                    }
                }
                Pick::Name(n) => {
                    for k in self
                        .by_table_name
                        .get(lower_key(n).as_ref())
                        .into_iter()
                        .flatten()
                    {
                        out.insert(*k);
                    }
                    return out;
                }
            }
        }
        out
    }
}

impl RuleSet {
    /// Parses and compiles a rules file; every problem is reported at once.
    pub fn parse(text: &str) -> Result<RuleSet, RulesError> {
        let file: RulesFile = match toml::from_str(text) {
            Ok(f) => f,
            Err(first) => {
                // serde stops at the first bad field: look at every section on its own so a
                // DBA sees all of them at once (one alone keeps its line and column).
                let problems = field_problems(text);
                let bad = problems.iter().filter(|p| !p.ends_with(MISSING)).count();
                return Err(if bad > 1 {
                    RulesError::Fields(problems)
                } else {
                    RulesError::Syntax(first)
                });
            }
        };
        RuleSet::compile(&file).map_err(RulesError::Invalid)
    }

    pub fn version(&self) -> u64 {
        self.version
    }
    pub fn route(&self) -> RouteFn {
        self.route
    }
    pub fn traffic_version(&self) -> u64 {
        self.traffic_version
    }
    pub fn ban_version(&self) -> u64 {
        self.ban_version
    }
    pub fn rooms(&self) -> &[(String, RoomRole)] {
        &self.rooms
    }
    pub fn center(&self) -> RoomId {
        self.center
    }
    pub fn room_id(&self, name: &str) -> Option<RoomId> {
        self.rooms
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| i as RoomId)
    }
    pub fn room_name(&self, id: RoomId) -> &str {
        self.rooms.get(id as usize).map_or("?", |(n, _)| n.as_str())
    }
    pub fn room_role(&self, id: RoomId) -> RoomRole {
        self.rooms
            .get(id as usize)
            .map_or(RoomRole::Unit, |(_, r)| *r)
    }
    /// The room that owns `code`. Codes come from [`RouteFn::route_code`], so they are always in
    /// range; an out-of-range code belongs to no room ([`RoomId::MAX`], never a room's id), so
    /// no write can pass the room check with it.
    #[inline]
    pub fn owner(&self, code: u32) -> RoomId {
        self.owner
            .get(code as usize)
            .copied()
            .unwrap_or(RoomId::MAX)
    }
    /// The route codes `room` owns.
    pub fn owned_codes(&self, room: RoomId) -> &CodeSet {
        &self.owned[room as usize]
    }
    #[inline]
    pub fn is_banned(&self, code: u32) -> bool {
        self.banned_bits
            .get(code as usize / 64)
            .is_some_and(|w| w & (1 << (code % 64)) != 0)
    }
    pub fn banned_codes(&self) -> &CodeSet {
        &self.banned
    }
    pub fn data_sources(&self) -> &BTreeMap<String, DataSource> {
        &self.data_sources
    }
    pub fn database(&self, name: &str) -> Option<&Database> {
        self.databases.get(name).map(|d| d.as_ref())
    }
    pub fn databases(&self) -> impl Iterator<Item = &Database> {
        self.databases.values().map(|d| d.as_ref())
    }
    pub fn users(&self) -> &BTreeMap<String, User> {
        &self.users
    }
    /// The snowflake ID settings (the room field holds the room's index in [`RuleSet::rooms`]).
    pub fn ids(&self) -> &id_gen::SnowflakeConfig {
        &self.ids
    }
    /// The segment allocation table, if the rules have one.
    pub fn segments(&self) -> Option<&crate::rules::Segments> {
        self.segments.as_ref()
    }

    /// This rule set with another write-ban (the admin interface's `SET WRITE BAN`).
    pub fn with_write_ban(&self, banned: CodeSet, version: u64) -> RuleSet {
        let mut bits = vec![0u64; (self.route.count as usize).div_ceil(64)];
        for code in banned.iter() {
            if let Some(w) = bits.get_mut(code as usize / 64) {
                *w |= 1 << (code % 64);
            }
        }
        RuleSet {
            version: self.version,
            rooms: self.rooms.clone(),
            center: self.center,
            route: self.route,
            traffic_version: self.traffic_version,
            owner: self.owner.clone(),
            owned: self.owned.clone(),
            ban_version: version,
            banned_bits: bits,
            banned,
            data_sources: self.data_sources.clone(),
            databases: self.databases.clone(),
            users: self.users.clone(),
            ids: self.ids.clone(),
            segments: self.segments.clone(),
        }
    }

    /// Validates and compiles `file`; every problem is reported, each naming where, which field
    /// and why.
    pub fn compile(file: &RulesFile) -> Result<RuleSet, Vec<ConfigProblem>> {
        let mut problems = Problems::default();

        // Rooms.
        let rooms: Vec<(String, RoomRole)> = file
            .rooms
            .iter()
            .map(|(n, r)| (n.clone(), r.role))
            .collect();
        for (name, _) in &rooms {
            if !is_identifier(name) {
                problems.add(
                    format!("rooms.{name}"),
                    "name",
                    "must be letters, digits, `_` or `$`",
                );
            }
        }
        let centers: Vec<usize> = (0..rooms.len())
            .filter(|i| rooms[*i].1 == RoomRole::Center)
            .collect();
        if centers.len() != 1 {
            let names: Vec<&str> = centers.iter().map(|i| rooms[*i].0.as_str()).collect();
            problems.add(
                "rooms",
                "role",
                if names.is_empty() {
                    "no room has role = \"center\"; exactly one must".to_string()
                } else {
                    format!("rooms {names:?} all have role = \"center\"; exactly one may")
                },
            );
        }
        let center = centers.first().copied().unwrap_or(0) as RoomId;
        let room_id = |name: &str| rooms.iter().position(|(n, _)| n == name);

        // Segment keys need the allocation table in a center database.
        let uses_segments = file.databases.values().any(|d| {
            d.tables.values().any(|t| {
                t.key_generator
                    .as_ref()
                    .is_some_and(|k| k.kind == crate::rules::KeyGeneratorKind::Segment)
            })
        });
        match &file.segments {
            None if uses_segments => problems.add(
                "segments",
                "database",
                "a table uses a segment key generator: name the center database of the \
                 allocation table in [segments]",
            ),
            Some(seg) => {
                match file.databases.get(&seg.database) {
                    Some(d) if d.db_type == DatabaseType::Center => {}
                    Some(_) => problems.add(
                        "segments",
                        "database",
                        format!("`{}` is not a center database", seg.database),
                    ),
                    None => problems.add(
                        "segments",
                        "database",
                        format!("database `{}` is not defined in [databases]", seg.database),
                    ),
                }
                if !is_identifier(&seg.table) {
                    problems.add(
                        "segments",
                        "table",
                        format!("`{}` is not a table name", seg.table),
                    );
                }
                if seg.step == 0 {
                    problems.add("segments", "step", "must be at least 1");
                }
            }
            None => {}
        }

        // Snowflake IDs carry the room's index: every room must fit the layout's room field.
        let max_room = file.ids.layout.max_room() as usize;
        if rooms.len() > max_room + 1 {
            problems.add(
                "ids.layout",
                "room_bits",
                format!(
                    "{} rooms do not fit {} room bits (at most {})",
                    rooms.len(),
                    file.ids.layout.room_bits(),
                    max_room + 1
                ),
            );
        }

        // Route codes, traffic, write-ban.
        let count = file.route_codes.count;
        let count_ok = (1..=MAX_ROUTE_CODES).contains(&count);
        if !count_ok {
            problems.add(
                "route_codes",
                "count",
                format!("{count} is not between 1 and {MAX_ROUTE_CODES}"),
            );
        }
        let route = RouteFn {
            count: count.max(1),
            key: file.route_codes.key,
        };
        const NOBODY: RoomId = RoomId::MAX;
        const TWICE: RoomId = RoomId::MAX - 1;
        let mut owner = vec![NOBODY; if count_ok { count as usize } else { 0 }];
        let mut owned = vec![CodeSet::default(); rooms.len()];
        for (room, items) in &file.traffic.owners {
            let at = format!("traffic.owners.{room}");
            let Some(id) = room_id(room) else {
                problems.add(
                    at,
                    "room",
                    format!("room `{room}` is not defined in [rooms]"),
                );
                continue;
            };
            match CodeSet::parse(items, count) {
                Err(errs) => {
                    for e in errs {
                        problems.add(&at, "route codes", e.to_string());
                    }
                }
                Ok(set) => {
                    for code in set.iter() {
                        if let Some(o) = owner.get_mut(code as usize) {
                            *o = if *o == NOBODY { id as RoomId } else { TWICE };
                        }
                    }
                    owned[id] = set;
                }
            }
        }
        if count_ok {
            let runs = |want: RoomId| {
                CodeSet::from_ranges(
                    owner
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| **o == want)
                        .map(|(c, _)| (c as u32, c as u32))
                        .collect(),
                )
            };
            let nobody = runs(NOBODY);
            if !nobody.is_empty() {
                problems.add(
                    "traffic.owners",
                    "route codes",
                    format!("route codes {nobody} are owned by no room"),
                );
            }
            let twice = runs(TWICE);
            if !twice.is_empty() {
                problems.add(
                    "traffic.owners",
                    "route codes",
                    format!("route codes {twice} are owned by more than one room"),
                );
            }
        }
        let banned = match CodeSet::parse(&file.write_ban.route_codes, count) {
            Ok(s) => s,
            Err(errs) => {
                for e in errs {
                    problems.add("write_ban", "route_codes", e.to_string());
                }
                CodeSet::default()
            }
        };

        // Data sources.
        for (name, ds) in &file.data_sources {
            let at = format!("data_sources.{name}");
            if room_id(&ds.room).is_none() {
                problems.add(
                    &at,
                    "room",
                    format!("room `{}` is not defined in [rooms]", ds.room),
                );
            }
            for (field, v) in [
                ("host", &ds.host),
                ("schema", &ds.schema),
                ("user", &ds.user),
            ] {
                if v.is_empty() {
                    problems.add(&at, field, "must not be empty");
                }
            }
        }

        // Databases.
        let mut databases = HashMap::default();
        for (name, spec) in &file.databases {
            if let Some(db) = compile_database(name, spec, file, &rooms, &mut problems) {
                databases.insert(name.clone(), Arc::new(db));
            }
        }

        // Users.
        for (name, user) in &file.users {
            let at = format!("users.{name}");
            if parse_password_hash(&user.password_hash).is_none() {
                problems.add(
                    &at,
                    "password_hash",
                    "must be `*` and 40 hex digits (see `rainbow-bridge hash-password`)",
                );
            }
            for db in &user.databases {
                if !file.databases.contains_key(db) {
                    problems.add(
                        &at,
                        "databases",
                        format!("database `{db}` is not defined in [databases]"),
                    );
                }
            }
        }

        if !problems.0.is_empty() {
            return Err(problems.0);
        }
        let mut rs = RuleSet {
            version: file.version,
            rooms,
            center,
            route,
            traffic_version: file.traffic.version,
            owner,
            owned,
            ban_version: 0,
            banned_bits: Vec::new(),
            banned: CodeSet::default(),
            data_sources: file.data_sources.clone(),
            databases,
            users: file.users.clone(),
            ids: file.ids.clone(),
            segments: file.segments.clone(),
        };
        rs = rs.with_write_ban(banned, file.write_ban.version);
        Ok(rs)
    }
}

#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn add(&mut self, at: impl Into<String>, field: &str, reason: impl Into<String>) {
        self.0.push(ConfigProblem {
            at: at.into(),
            field: field.to_string(),
            reason: reason.into(),
        });
    }
}

fn compile_database(
    name: &str,
    spec: &crate::rules::DatabaseRules,
    file: &RulesFile,
    rooms: &[(String, RoomRole)],
    problems: &mut Problems,
) -> Option<Database> {
    let at = format!("databases.{name}");
    let before = problems.0.len();
    if !is_identifier(name) {
        problems.add(&at, "name", "must be letters, digits, `_` or `$`");
    }
    if spec.data_sources.is_empty() {
        problems.add(&at, "data_sources", "lists no data source");
    }
    let mut logical = Vec::new();
    let mut used: BTreeMap<&str, &str> = BTreeMap::new();
    for (lname, physical) in &spec.data_sources {
        let lat = format!("{at}.data_sources.{lname}");
        if !is_identifier(lname) {
            problems.add(&lat, "name", "must be letters, digits, `_` or `$`");
        }
        let mut by_room: Vec<Option<String>> = vec![None; rooms.len()];
        for pname in physical {
            if let Some(other) = used.insert(pname, lname) {
                problems.add(
                    &lat,
                    "data_sources",
                    format!("physical data source `{pname}` is also listed for `{other}`"),
                );
            }
            let Some(ds) = file.data_sources.get(pname) else {
                problems.add(
                    &lat,
                    "data_sources",
                    format!("data source `{pname}` is not defined in [data_sources]"),
                );
                continue;
            };
            let Some(r) = rooms.iter().position(|(n, _)| *n == ds.room) else {
                continue; // reported with the data source
            };
            if let Some(prev) = &by_room[r] {
                problems.add(
                    &lat,
                    "data_sources",
                    format!(
                        "room `{}` has two physical data sources, `{prev}` and `{pname}`; \
                         list one per room",
                        ds.room
                    ),
                );
            }
            by_room[r] = Some(pname.clone());
        }
        for (r, (room, role)) in rooms.iter().enumerate() {
            match (spec.db_type, role, by_room[r].is_some()) {
                (DatabaseType::Center, RoomRole::Unit, true) => problems.add(
                    &lat,
                    "data_sources",
                    format!(
                        "a center database has no data source in unit room `{room}` \
                         (center databases live in the center room only)"
                    ),
                ),
                (DatabaseType::Center, RoomRole::Center, false)
                | (DatabaseType::Unit | DatabaseType::CenterUnit, _, false) => problems.add(
                    &lat,
                    "data_sources",
                    format!(
                        "a {} database needs a data source in room `{room}`",
                        spec.db_type
                    ),
                ),
                _ => {}
            }
        }
        logical.push(LogicalDataSource {
            name: Arc::from(lname.as_str()),
            physical: by_room,
        });
    }
    let ds_index = |n: &str| logical.iter().position(|l| &*l.name == n);
    let default_data_source = match &spec.default_data_source {
        Some(d) => ds_index(d).unwrap_or_else(|| {
            problems.add(
                &at,
                "default_data_source",
                format!("`{d}` is not one of this database's data sources"),
            );
            0
        }),
        None if logical.len() > 1 => {
            problems.add(
                &at,
                "default_data_source",
                "required when a database has several data sources",
            );
            0
        }
        None => 0,
    };

    let mut tables = HashMap::default();
    for (tname, tspec) in &spec.tables {
        let tat = format!("{at}.tables.{tname}");
        // In a unit database the ShardingKey picks the room: a generated key would give
        // every new row a random room, and most INSERTs would be refused as another room's.
        if let (DatabaseType::Unit, Some(k), Some(sk)) = (
            spec.db_type,
            tspec.key_generator.as_ref(),
            tspec.sharding_key.as_deref(),
        ) {
            if k.column.trim().eq_ignore_ascii_case(sk.trim()) {
                problems.add(
                    &tat,
                    "key_generator.column",
                    format!(
                        "`{}` is the ShardingKey of a table in a unit database: it picks the \
                         room, so it cannot be generated (generate another column)",
                        k.column.trim()
                    ),
                );
            }
        }
        if let Some(t) = compile_table(tname, tspec, &tat, &logical, default_data_source, problems)
        {
            if tables
                .insert(tname.to_ascii_lowercase(), Arc::new(t))
                .is_some()
            {
                problems.add(&tat, "name", "another table differs only in letter case");
            }
        }
    }
    let mut broadcast = HashMap::default();
    for t in &spec.broadcast_tables {
        if !is_identifier(t) {
            problems.add(
                &at,
                "broadcast_tables",
                format!("`{t}` is not a table name"),
            );
        }
        if spec.tables.keys().any(|k| k.eq_ignore_ascii_case(t)) {
            problems.add(
                &at,
                "broadcast_tables",
                format!("`{t}` has a sharding rule in [tables]; a table is one or the other"),
            );
        }
        broadcast.insert(t.to_ascii_lowercase(), t.clone());
    }
    let mut binding = HashMap::default();
    for (g, group) in spec.binding_groups.iter().enumerate() {
        let field = "binding_groups";
        if group.len() < 2 {
            problems.add(
                &at,
                field,
                format!("group {group:?} needs at least two tables"),
            );
        }
        let mut first: Option<&Arc<TableRule>> = None;
        for member in group {
            let key = member.to_ascii_lowercase();
            let Some(t) = tables.get(&key) else {
                if spec.tables.keys().any(|k| k.eq_ignore_ascii_case(member)) {
                    continue; // its own rule failed: already reported
                }
                problems.add(
                    &at,
                    field,
                    format!(
                        "`{member}` in group {group:?} is not a sharded table of this database"
                    ),
                );
                continue;
            };
            if binding.insert(key, g).is_some() {
                problems.add(&at, field, format!("`{member}` is in two binding groups"));
            }
            match first {
                None => first = Some(t),
                Some(f) => {
                    if let Some(why) = differs(f, t) {
                        problems.add(
                            &at,
                            field,
                            format!(
                                "`{}` and `{}` are in one binding group but shard differently: {why}",
                                f.name, t.name
                            ),
                        );
                    }
                }
            }
        }
    }
    if problems.0.len() != before {
        return None;
    }
    let mut db = Database {
        name: name.to_string(),
        db_type: spec.db_type,
        data_sources: logical,
        default_data_source,
        tables,
        broadcast,
        binding,
        transactions: spec.transactions,
        laid_out: false,
    };
    db.laid_out = db.compute_laid_out();
    Some(db)
}

/// Why two tables of one binding group do not shard alike.
fn differs(a: &TableRule, b: &TableRule) -> Option<String> {
    if a.node_data_sources != b.node_data_sources {
        return Some("their data nodes use different data sources".into());
    }
    let shape = |t: &TableRule| t.tables_in.iter().map(|v| v.len()).collect::<Vec<_>>();
    if shape(a) != shape(b) {
        return Some("their data nodes have different numbers of tables".into());
    }
    // Node positions pair up (the decision keeps shared positions): the tables at one position
    // must be the same shard, e.g. `t_order_3` with `t_order_item_3`.
    let suffix = |t: &TableRule, i: usize| -> String {
        let table = t.nodes[i].table.to_ascii_lowercase();
        table
            .strip_prefix(&t.name.to_ascii_lowercase())
            .map_or(table.clone(), str::to_string)
    };
    if (0..a.nodes.len()).any(|i| suffix(a, i) != suffix(b, i)) {
        return Some(
            "their data nodes are not listed in the same order (shard suffixes differ by position)"
                .into(),
        );
    }
    let same = |x: &Option<Strategy>, y: &Option<Strategy>| match (x, y) {
        (None, None) => true,
        (Some(x), Some(y)) => x.same_shape(y),
        _ => false,
    };
    if !same(&a.database, &b.database) {
        return Some("different database_sharding".into());
    }
    if !same(&a.table, &b.table) {
        return Some("different table_sharding".into());
    }
    None
}

fn compile_table(
    name: &str,
    spec: &TableRuleSpec,
    at: &str,
    logical: &[LogicalDataSource],
    default_ds: usize,
    problems: &mut Problems,
) -> Option<TableRule> {
    let before = problems.0.len();
    if !is_identifier(name) {
        problems.add(at, "name", "must be letters, digits, `_` or `$`");
    }
    let lower = |s: &str| s.trim().to_ascii_lowercase();
    if let Some(k) = &spec.sharding_key {
        if !is_identifier(k.trim()) {
            problems.add(at, "sharding_key", format!("`{k}` is not a column name"));
        }
    }
    // Data nodes.
    let mut nodes = Vec::new();
    let mut unknown_ds: BTreeSet<String> = BTreeSet::new();
    let mut seen: std::collections::HashSet<(usize, String)> = Default::default();
    match &spec.data_nodes {
        None => nodes.push(DataNode {
            data_source: default_ds,
            table: Arc::from(name),
        }),
        Some(expr) => {
            for item in split_top_level(expr) {
                let listed = Template::parse(item).and_then(|t| t.expand());
                let names = match listed {
                    Ok(n) => n,
                    Err(e) => {
                        problems.add(at, "data_nodes", e.to_string());
                        continue;
                    }
                };
                for n in names {
                    let Some((ds, table)) = n.split_once('.') else {
                        problems.add(
                            at,
                            "data_nodes",
                            format!("`{n}` is not `data_source.table`"),
                        );
                        continue;
                    };
                    let Some(d) = logical.iter().position(|l| &*l.name == ds) else {
                        if unknown_ds.insert(ds.to_string()) {
                            problems.add(
                                at,
                                "data_nodes",
                                format!("`{n}`: `{ds}` is not one of this database's data sources"),
                            );
                        }
                        continue;
                    };
                    if !is_identifier(table) {
                        problems.add(
                            at,
                            "data_nodes",
                            format!("`{n}`: `{table}` is not a table name"),
                        );
                        continue;
                    }
                    let node = DataNode {
                        data_source: d,
                        table: Arc::from(table),
                    };
                    if !seen.insert((d, table.to_ascii_lowercase())) {
                        problems.add(at, "data_nodes", format!("`{n}` is listed twice"));
                        continue;
                    }
                    nodes.push(node);
                }
            }
            if nodes.is_empty() && problems.0.len() == before {
                problems.add(at, "data_nodes", "lists no data node");
            }
        }
    }
    let mut node_data_sources: Vec<usize> = Vec::new();
    let mut tables_in: Vec<Vec<usize>> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        match node_data_sources.iter().position(|d| *d == n.data_source) {
            Some(p) => tables_in[p].push(i),
            None => {
                node_data_sources.push(n.data_source);
                tables_in.push(vec![i]);
            }
        }
    }
    let compile = |field: &str,
                   spec: &StrategySpec,
                   targets: usize,
                   tables: bool,
                   problems: &mut Problems| {
        match Strategy::compile(spec, targets, name, tables) {
            Ok(s) => {
                if !is_identifier(&s.column) {
                    problems.add(at, field, format!("`{}` is not a column name", s.column));
                }
                Some(s)
            }
            Err((f, why)) => {
                problems.add(at, &format!("{field}.{f}"), why);
                None
            }
        }
    };
    let database = spec.database_sharding.as_ref().and_then(|s| {
        compile(
            "database_sharding",
            s,
            node_data_sources.len(),
            false,
            problems,
        )
    });
    let per_ds: BTreeSet<usize> = tables_in.iter().map(|v| v.len()).collect();
    let table = spec.table_sharding.as_ref().and_then(|s| {
        let index_based = !matches!(
            s,
            StrategySpec::Inline { .. } | StrategySpec::Interval { .. }
        );
        if index_based && per_ds.len() > 1 {
            problems.add(
                at,
                "table_sharding",
                format!(
                    "the data sources hold different numbers of tables ({per_ds:?}); an index \
                     algorithm needs the same number in each"
                ),
            );
            return None;
        }
        let targets = per_ds.iter().next().copied().unwrap_or(0);
        let strategy = compile("table_sharding", s, targets, true, problems)?;
        if let Some(names) = strategy.interval_names() {
            let missing: Vec<&String> = names
                .iter()
                .filter(|n| !nodes.iter().any(|d| d.table.eq_ignore_ascii_case(n)))
                .collect();
            if !missing.is_empty() {
                problems.add(
                    at,
                    "data_nodes",
                    format!(
                        "the interval needs tables the data nodes do not list: {}",
                        missing
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
        Some(strategy)
    });
    // Every INSERT row must map to exactly one node, and what an INLINE expression computes
    // must be a target: checked here rather than refused row by row later.
    check_targets(
        at,
        name,
        &nodes,
        &node_data_sources,
        &tables_in,
        logical,
        &database,
        &table,
        problems,
    );
    let key_generator = spec.key_generator.as_ref().map(|k| {
        if !is_identifier(k.column.trim()) {
            problems.add(
                at,
                "key_generator.column",
                format!("`{}` is not a column name", k.column),
            );
        }
        let tag = k.tag.clone().unwrap_or_else(|| name.to_string());
        if k.kind == KeyGeneratorKind::Snowflake && k.tag.is_some() {
            problems.add(
                at,
                "key_generator.tag",
                "only a segment generator has a tag",
            );
        }
        KeyGenerator {
            column: lower(&k.column),
            kind: k.kind,
            tag,
        }
    });
    if problems.0.len() != before {
        return None;
    }
    // Name picks (INLINE, INTERVAL tables) look tables up by name.
    let mut by_table_name: HashMap<String, Vec<usize>> = HashMap::default();
    if table
        .as_ref()
        .is_some_and(|t| matches!(t.algorithm, Algorithm::Inline(_) | Algorithm::Interval(_)))
    {
        for (i, n) in nodes.iter().enumerate() {
            by_table_name
                .entry(n.table.to_ascii_lowercase())
                .or_default()
                .push(i);
        }
    }
    Some(TableRule {
        name: name.to_string(),
        sharding_key: spec.sharding_key.as_deref().map(lower),
        by_table_name,
        nodes,
        node_data_sources,
        tables_in,
        database,
        table,
        key_generator,
        allow_full_scatter_writes: spec.allow_full_scatter_writes,
    })
}

/// Checks that rows map to one node each and that INLINE expressions name targets.
#[allow(clippy::too_many_arguments)]
fn check_targets(
    at: &str,
    name: &str,
    nodes: &[DataNode],
    node_data_sources: &[usize],
    tables_in: &[Vec<usize>],
    logical: &[LogicalDataSource],
    database: &Option<Strategy>,
    table: &Option<Strategy>,
    problems: &mut Problems,
) {
    let table_names: BTreeSet<String> =
        nodes.iter().map(|n| n.table.to_ascii_lowercase()).collect();
    if database.is_none() && node_data_sources.len() > 1 {
        let by_name = table
            .as_ref()
            .is_some_and(|t| matches!(t.algorithm, Algorithm::Inline(_) | Algorithm::Interval(_)));
        if !(by_name && table_names.len() == nodes.len()) {
            problems.add(
                at,
                "database_sharding",
                format!(
                    "the data nodes of `{name}` span {} data sources, but nothing picks one: add \
                     database_sharding (or name every table differently and pick tables by name)",
                    node_data_sources.len()
                ),
            );
        }
    }
    if table.is_none() && tables_in.iter().any(|t| t.len() > 1) {
        problems.add(
            at,
            "table_sharding",
            format!("a data source holds several tables of `{name}`, but nothing picks one: add table_sharding"),
        );
    }
    for (field, strategy, targets) in [
        (
            "database_sharding",
            database,
            node_data_sources
                .iter()
                .map(|d| logical[*d].name.to_ascii_lowercase())
                .collect::<BTreeSet<String>>(),
        ),
        ("table_sharding", table, table_names.clone()),
    ] {
        let Some(Strategy {
            column,
            algorithm: Algorithm::Inline(t),
        }) = strategy
        else {
            continue;
        };
        if !t.computes() {
            continue; // names a string value as is: nothing to sample
        }
        // Integer expressions are sampled over 0..4096: every result must be a target, and
        // every target must come out.
        let mut produced = BTreeSet::new();
        let mut failed = false;
        for v in 0..4096i64 {
            match t.eval(&|_| Ok(InlineValue::Int(v))) {
                Ok(n) => {
                    let n = n.to_ascii_lowercase();
                    if !targets.contains(&n) {
                        problems.add(
                            at,
                            &format!("{field}.expression"),
                            format!(
                                "`{}` gives `{n}` for {column} = {v}, which the data nodes do not list",
                                t.source()
                            ),
                        );
                        failed = true;
                        break;
                    }
                    produced.insert(n);
                }
                Err(e) => {
                    problems.add(at, &format!("{field}.expression"), e.to_string());
                    failed = true;
                    break;
                }
            }
        }
        if !failed && produced.len() < targets.len() {
            let never: Vec<&String> = targets.difference(&produced).collect();
            problems.add(
                at,
                &format!("{field}.expression"),
                format!(
                    "`{}` never picks {} of the data nodes",
                    t.source(),
                    never
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
}

impl fmt::Display for DataNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.data_source, self.table)
    }
}

const MISSING: &str = "missing (required)";

/// Every section (every entry of the keyed ones) of a rules file that does not deserialize,
/// as `where: why`. Empty when the text is not TOML at all or every section reads.
fn field_problems(text: &str) -> Vec<String> {
    use serde::de::DeserializeOwned;
    fn one<T: DeserializeOwned>(at: &str, v: &toml::Value, out: &mut Vec<String>) {
        if let Err(e) = T::deserialize(v.clone()) {
            out.push(format!("{at}: {}", e.to_string().trim()));
        }
    }
    fn each<T: DeserializeOwned>(at: &str, v: &toml::Value, out: &mut Vec<String>) {
        match v.as_table() {
            Some(t) => {
                for (name, entry) in t {
                    one::<T>(&format!("{at}.{name}"), entry, out);
                }
            }
            None => out.push(format!("{at}: must be a table")),
        }
    }
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, v) in &table {
        match key.as_str() {
            "version" => one::<u64>(key, v, &mut out),
            "rooms" => each::<crate::config::Room>(key, v, &mut out),
            "route_codes" => one::<crate::rules::RouteCodes>(key, v, &mut out),
            "traffic" => one::<crate::rules::Traffic>(key, v, &mut out),
            "write_ban" => one::<crate::rules::WriteBan>(key, v, &mut out),
            "ids" => one::<id_gen::SnowflakeConfig>(key, v, &mut out),
            "segments" => one::<crate::rules::Segments>(key, v, &mut out),
            "data_sources" => each::<DataSource>(key, v, &mut out),
            "databases" => each::<crate::rules::DatabaseRules>(key, v, &mut out),
            "users" => each::<User>(key, v, &mut out),
            other => out.push(format!("{other}: unknown section")),
        }
    }
    for required in [
        "version",
        "rooms",
        "route_codes",
        "traffic",
        "data_sources",
        "databases",
        "users",
    ] {
        if !table.contains_key(required) {
            out.push(format!("{required}: {MISSING}"));
        }
    }
    out
}

#[cfg(test)]
mod field_tests {
    use super::*;

    #[test]
    fn several_bad_fields_are_all_reported_with_where_they_are() {
        let text = "version = 1\nsurprise = 2\n[rooms.A]\nrole = \"middle\"\n\
                    [route_codes]\ncount = 10\n[traffic]\nversion = 1\nowners.A = [\"0-9\"]\n\
                    [data_sources.a]\nroom = \"A\"\nhost = \"h\"\nport = 99999\nschema = \"s\"\n\
                    user = \"u\"\npassword = \"p\"\n[databases.d]\ntype = \"sideways\"\n\
                    data_sources.ds = [\"a\"]\n[users]\n";
        let e = RuleSet::parse(text).unwrap_err().to_string();
        for at in ["surprise", "rooms.A", "data_sources.a", "databases.d"] {
            assert!(e.contains(&format!("  - {at}: ")), "{at} missing in:\n{e}");
        }
        assert!(e.starts_with("rules file has 4 field problem(s)"), "{e}");
    }

    #[test]
    fn a_single_bad_field_keeps_its_line_and_column() {
        // Missing sections alone do not make a list: serde names the first one.
        let e = RuleSet::parse("version = \"one\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
        let e = RuleSet::parse("version = [\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
