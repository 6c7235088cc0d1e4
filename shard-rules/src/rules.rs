//! The rules file DBAs edit (TOML), as written. [`crate::RuleSet::compile`] validates it as a
//! whole and compiles it; `docs/rules.md` is the reference, `fixtures/rules/full-example.toml`
//! a commented example.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::algorithm::StrategySpec;
use crate::config::{DataSource, DatabaseType, Room, User};
use crate::route::KeyType;

/// The whole rules file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// Version of this rule set; bump it on every change. Required.
    pub version: u64,
    /// The rooms, keyed by name; exactly one has `role = "center"`. Required.
    pub rooms: BTreeMap<String, Room>,
    /// The route code function. Required.
    pub route_codes: RouteCodes,
    /// Which room owns which route codes. Required.
    pub traffic: Traffic,
    /// Route codes whose writes are refused everywhere. Default: none.
    #[serde(default)]
    pub write_ban: WriteBan,
    /// Snowflake ID settings shared by every proxy (layout, epoch, clock tolerance,
    /// vibration; `docs/ids.md`). Default: 41/3/7/12 bits from 2024-01-01.
    #[serde(default)]
    pub ids: id_gen::SnowflakeConfig,
    /// Where segment keys are allocated. Required when a table uses a segment generator.
    pub segments: Option<Segments>,
    /// Physical databases, keyed by name. Required.
    pub data_sources: BTreeMap<String, DataSource>,
    /// Logical databases, keyed by name. Required.
    pub databases: BTreeMap<String, DatabaseRules>,
    /// Application users, keyed by name. Required.
    pub users: BTreeMap<String, User>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCodes {
    /// Number of route codes: codes are `0..count-1`. 1 to 1048576. Required.
    pub count: u32,
    /// `"integer"` (default) or `"string"` ShardingKeys.
    #[serde(default)]
    pub key: KeyType,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Version of the traffic rule; cited in "wrong room" errors. Required.
    pub version: u64,
    /// Room name → route codes it owns (`"0-4999"`, `"7"`). Every code exactly once. Required.
    pub owners: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteBan {
    /// Version of the write-ban rule; cited in "banned" errors. Default 0.
    #[serde(default)]
    pub version: u64,
    /// Banned route codes (`"100-199"`, `"4000"`). Default: none.
    #[serde(default)]
    pub route_codes: Vec<String>,
}

/// A logical database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseRules {
    /// `"unit"`, `"center"` or `"center-unit"`. Required.
    #[serde(rename = "type")]
    pub db_type: DatabaseType,
    /// Logical data source name → its physical data source in each room (one per room). Data
    /// node expressions use the logical names. Required.
    pub data_sources: BTreeMap<String, Vec<String>>,
    /// Where tables without a rule live. Default: the only logical data source.
    pub default_data_source: Option<String>,
    /// Sharded tables, keyed by logical table name.
    #[serde(default)]
    pub tables: BTreeMap<String, TableRuleSpec>,
    /// Tables with the same copy in every logical data source.
    #[serde(default)]
    pub broadcast_tables: Vec<String>,
    /// Groups of tables sharded alike, which join on one node.
    #[serde(default)]
    pub binding_groups: Vec<Vec<String>>,
    /// How a transaction that spans several data sources commits: `"local"` (each data
    /// source commits in turn) or `"xa"` (MariaDB XA, two-phase). Default `"local"`.
    #[serde(default)]
    pub transactions: TransactionMode,
}

/// How transactions across data sources commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransactionMode {
    /// One transaction per data source, committed one after the other: a failure part-way
    /// leaves the earlier ones committed.
    #[default]
    Local,
    /// XA: every data source prepares, then every one commits; a proxy that crashes between
    /// the two finishes (or rolls back) at its next start.
    Xa,
}

/// How one logical table is laid out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRuleSpec {
    /// The multi-active ShardingKey column (decides the room). Optional: without it, writes to
    /// the table in a unit database need a hint or the session ShardingKey.
    pub sharding_key: Option<String>,
    /// Data nodes, e.g. `ds_${0..1}.t_order_${0..7}`; comma-separated lists allowed. Default:
    /// the default data source, table of the same name.
    pub data_nodes: Option<String>,
    /// Picks the data source. Default: none (every data source of the data nodes).
    pub database_sharding: Option<StrategySpec>,
    /// Picks the table within the data source. Default: none (every table there).
    pub table_sharding: Option<StrategySpec>,
    /// A column the proxy fills when an INSERT leaves it out.
    pub key_generator: Option<KeyGeneratorSpec>,
    /// UPDATE and DELETE without a sharding condition (reaching every node) are refused
    /// unless this is true (like ShardingSphere's DML_SHARDING_CONDITIONS audit).
    #[serde(default)]
    pub allow_full_scatter_writes: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyGeneratorSpec {
    pub column: String,
    /// `"snowflake"` or `"segment"`.
    #[serde(rename = "type")]
    pub kind: KeyGeneratorKind,
    /// Business tag for `segment` (default: the table name).
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyGeneratorKind {
    #[serde(alias = "SNOWFLAKE")]
    Snowflake,
    #[serde(alias = "SEGMENT")]
    Segment,
}

/// The segment allocation table: a table in a center database, one row per business tag
/// (`docs/ids.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segments {
    /// A center database (its data source in the center room holds the table). Required.
    pub database: String,
    /// Table name. Default `rb_id_segment`.
    #[serde(default = "default_segment_table")]
    pub table: String,
    /// IDs per block fetched by a proxy. Default 1000.
    #[serde(default = "default_segment_step")]
    pub step: u32,
}

fn default_segment_table() -> String {
    "rb_id_segment".into()
}
fn default_segment_step() -> u32 {
    1000
}
