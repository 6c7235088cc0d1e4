//! Rainbow Bridge's rules: the model DBAs edit, validated as a whole and compiled into fast,
//! immutable routing decisions. Pure code, no I/O.
//!
//! - [`config`]: the proxy instance's own configuration (listen address, room, pools).
//! - [`rules`]: the rules file as written (rooms, route codes, traffic, write-ban, data sources,
//!   logical databases with table rules, users); [`RuleSet`] its compiled form.
//! - [`route`]: ShardingKey → route code; [`algorithm`] and [`inline`]: sharding algorithms.
//! - [`digest`]: a statement's shape and literal values, the key of the plan cache.
//! - [`plan`]: the plan cache: one sqlparser analysis per statement shape, verified.
//! - [`lex`]: a token scanner; table renames by token spans. [`scatter`]: how a SELECT that
//!   reaches several nodes is sent and merged; [`units`]: which node queries a statement makes.

pub mod algorithm;
pub mod analyze;
pub mod config;
pub mod decide;
pub mod digest;
pub mod inline;
pub mod lex;
mod nodeset;
pub mod plan;
pub mod route;
pub mod rules;
pub mod ruleset;
pub mod scatter;
pub mod units;

pub use config::{Config, ConfigError, ConfigProblem};
pub use route::{CodeSet, KeyType, RouteFn, ShardingKey};
pub use ruleset::{DataNode, Database, RoomId, RuleSet, RulesError, TableKind, TableRule};
