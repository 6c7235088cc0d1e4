//! The proxy's TOML configuration: this instance, the rooms, the data sources, the logical
//! databases, the users and the backend pools.
//!
//! Invariants: [`Config::parse`] either returns a config that passed [`Config::validate`] or every
//! problem found, each naming the section, the field and the reason. Unknown fields are refused
//! (`deny_unknown_fields`) so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This proxy instance. Required.
    pub proxy: ProxySection,
    /// The rooms (datacenters), keyed by name. Exactly one has `role = "center"`. Required.
    pub rooms: BTreeMap<String, Room>,
    /// Backend pool sizes and timeouts, applied to every (data source) pool. Optional.
    #[serde(default)]
    pub pool: PoolConfig,
    /// Physical databases, keyed by data source name. Required.
    pub data_sources: BTreeMap<String, DataSource>,
    /// Logical databases the applications connect to, keyed by name. Required.
    pub databases: BTreeMap<String, Database>,
    /// The proxy's application users, keyed by user name. Required.
    pub users: BTreeMap<String, User>,
}

/// This proxy instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// Address the MySQL protocol listener binds, e.g. `"127.0.0.1:3307"`. Required.
    pub listen: String,
    /// The room this instance runs in; must name a room in `[rooms]`. Required.
    pub room: String,
    /// Maximum concurrent client connections; more get error 1040. Default 4096.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest packet a client may send and the proxy forwards, in bytes. Default 64 MiB
    /// (MariaDB's own default for `max_allowed_packet` is 16 MiB; the backend still applies its own).
    #[serde(default = "default_max_packet")]
    pub max_allowed_packet: usize,
    /// Seconds a client has to finish the handshake before it is dropped. Default 10.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_s: u64,
    /// Runtime worker threads. Default 0: one per CPU core.
    #[serde(default)]
    pub worker_threads: usize,
    /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for open transactions to finish before it
    /// closes their connections (which rolls them back). Idle sessions close at once. Default 30.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_s: u64,
}

/// Role of a room in the multi-active deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoomRole {
    /// The center room (A): hosts center databases and the writable copy of center-unit ones.
    Center,
    /// A unit room (B, C…).
    Unit,
}

/// One room (datacenter).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Room {
    /// `"center"` or `"unit"`. Required.
    pub role: RoomRole,
}

/// Backend pool settings. Every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Maximum connections per pool. Default 64.
    #[serde(default = "default_pool_max")]
    pub max_size: u32,
    /// Idle connections kept open per pool. Default 0 (connections open on demand).
    #[serde(default)]
    pub min_idle: u32,
    /// Milliseconds to open and authenticate one backend connection. Default 3000.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Milliseconds a statement waits for a free backend connection before error 8002. Default 5000.
    #[serde(default = "default_checkout_timeout")]
    pub checkout_timeout_ms: u64,
    /// Seconds an idle backend connection is kept. Default 600.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_s: u64,
    /// Seconds after which a backend connection is replaced. Default 3600.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_s: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_size: default_pool_max(),
            min_idle: 0,
            connect_timeout_ms: default_connect_timeout(),
            checkout_timeout_ms: default_checkout_timeout(),
            idle_timeout_s: default_idle_timeout(),
            max_lifetime_s: default_max_lifetime(),
        }
    }
}

/// One physical MySQL/MariaDB database in one room.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// Room the server runs in; must name a room in `[rooms]`. Required.
    pub room: String,
    /// Host name or IP address. Required.
    pub host: String,
    /// TCP port. Default 3306.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Schema (database) on the server. Required.
    pub schema: String,
    /// Backend user the proxy logs in as. Required.
    pub user: String,
    /// Backend password (plain text: the proxy must present it to the server). Default empty.
    #[serde(default)]
    pub password: String,
}

/// Type of a logical database (DESIGN.md, vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatabaseType {
    /// Deployed in every room, each room writes the route codes it owns.
    Unit,
    /// Deployed in the center room only.
    Center,
    /// Deployed in every room; the center writes, unit rooms read.
    CenterUnit,
}

impl fmt::Display for DatabaseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatabaseType::Unit => "unit",
            DatabaseType::Center => "center",
            DatabaseType::CenterUnit => "center-unit",
        })
    }
}

/// A logical database the applications connect to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// `"unit"`, `"center"` or `"center-unit"`. Required.
    #[serde(rename = "type")]
    pub db_type: DatabaseType,
    /// Data sources holding it, at most one per room until table rules (sharding) exist. Required.
    pub data_sources: Vec<String>,
}

/// Connection mode of a user's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionMode {
    /// Served only by a proxy in the center room.
    Center,
    /// Served by every room.
    Unit,
}

/// An application user of the proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The mysql_native_password hash, `*` followed by 40 hex digits — what MariaDB's
    /// `SELECT PASSWORD('secret')` or `rainbow-bridge hash-password` prints. Required.
    pub password_hash: String,
    /// Logical databases the user may use. Required, may be empty.
    pub databases: Vec<String>,
    /// Connection mode, `"unit"` or `"center"`. Default `"unit"`.
    #[serde(default = "default_mode")]
    pub mode: ConnectionMode,
}

fn default_max_connections() -> usize {
    4096
}
fn default_max_packet() -> usize {
    64 << 20
}
fn default_handshake_timeout() -> u64 {
    10
}
fn default_shutdown_timeout() -> u64 {
    30
}
fn default_pool_max() -> u32 {
    64
}
fn default_connect_timeout() -> u64 {
    3000
}
fn default_checkout_timeout() -> u64 {
    5000
}
fn default_idle_timeout() -> u64 {
    600
}
fn default_max_lifetime() -> u64 {
    3600
}
fn default_port() -> u16 {
    3306
}
fn default_mode() -> ConnectionMode {
    ConnectionMode::Unit
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: `databases.shop`, `users.demo`, `proxy`…
    pub at: String,
    /// The field, e.g. `data_sources`.
    pub field: String,
    /// Why it is refused.
    pub reason: String,
}

/// Problems, one per line, as `  - at: field `f`: reason`.
pub(crate) fn list(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: field `{}`: {}", self.at, self.field, self.reason)
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML or does not match the schema.
    #[error("config is not valid TOML for this schema: {0}")]
    Syntax(#[from] toml::de::Error),
    /// The file parsed but failed validation.
    #[error("config has {} problem(s):\n{}", .0.len(), list(.0))]
    Invalid(Vec<ConfigProblem>),
}

impl Config {
    /// Parses and validates a configuration file's text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Checks the cross references and values; returns every problem, not just the first.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut bad = |at: &str, field: &str, reason: String| {
            out.push(ConfigProblem {
                at: at.to_string(),
                field: field.to_string(),
                reason,
            })
        };

        if self.proxy.listen.parse::<SocketAddr>().is_err() {
            bad(
                "proxy",
                "listen",
                format!("`{}` is not an IP:port address", self.proxy.listen),
            );
        }
        if !self.rooms.contains_key(&self.proxy.room) {
            bad(
                "proxy",
                "room",
                format!("room `{}` is not defined in [rooms]", self.proxy.room),
            );
        }
        if self.proxy.max_connections == 0 {
            bad("proxy", "max_connections", "must be at least 1".into());
        }
        if self.proxy.max_allowed_packet < 1024 {
            bad(
                "proxy",
                "max_allowed_packet",
                "must be at least 1024 bytes".into(),
            );
        }

        let centers: Vec<&String> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.role == RoomRole::Center)
            .map(|(n, _)| n)
            .collect();
        match centers.len() {
            1 => {}
            0 => bad(
                "rooms",
                "role",
                "no room has role = \"center\"; exactly one must".into(),
            ),
            _ => bad(
                "rooms",
                "role",
                format!("rooms {centers:?} all have role = \"center\"; exactly one may"),
            ),
        }

        if self.pool.max_size == 0 {
            bad("pool", "max_size", "must be at least 1".into());
        }
        if self.pool.min_idle > self.pool.max_size {
            bad(
                "pool",
                "min_idle",
                format!(
                    "{} exceeds max_size {}",
                    self.pool.min_idle, self.pool.max_size
                ),
            );
        }
        for (field, v) in [
            ("connect_timeout_ms", self.pool.connect_timeout_ms),
            ("checkout_timeout_ms", self.pool.checkout_timeout_ms),
        ] {
            if v == 0 {
                bad("pool", field, "must be at least 1".into());
            }
        }

        for (name, ds) in &self.data_sources {
            let at = format!("data_sources.{name}");
            if !self.rooms.contains_key(&ds.room) {
                bad(
                    &at,
                    "room",
                    format!("room `{}` is not defined in [rooms]", ds.room),
                );
            }
            if ds.host.is_empty() {
                bad(&at, "host", "must not be empty".into());
            }
            if ds.schema.is_empty() {
                bad(&at, "schema", "must not be empty".into());
            }
            if ds.user.is_empty() {
                bad(&at, "user", "must not be empty".into());
            }
        }

        for (name, db) in &self.databases {
            let at = format!("databases.{name}");
            if !is_identifier(name) {
                bad(&at, "name", "must be letters, digits, `_` or `$`".into());
            }
            if db.data_sources.is_empty() {
                bad(&at, "data_sources", "lists no data source".into());
            }
            let mut per_room: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for ds_name in &db.data_sources {
                match self.data_sources.get(ds_name) {
                    None => bad(
                        &at,
                        "data_sources",
                        format!("data source `{ds_name}` is not defined"),
                    ),
                    Some(ds) => per_room.entry(ds.room.as_str()).or_default().push(ds_name),
                }
            }
            for (room, list) in &per_room {
                if list.len() > 1 {
                    bad(
                        &at,
                        "data_sources",
                        format!(
                            "room `{room}` has {} data sources {list:?}; several per room need \
                             table rules (sharding), which this version does not support yet",
                            list.len()
                        ),
                    );
                }
            }
            for (room_name, room) in &self.rooms {
                let has = per_room.contains_key(room_name.as_str());
                match (db.db_type, room.role, has) {
                    (DatabaseType::Center, RoomRole::Unit, true) => bad(
                        &at,
                        "data_sources",
                        format!("a center database has no data source in unit room `{room_name}`"),
                    ),
                    (DatabaseType::Center, RoomRole::Center, false)
                    | (DatabaseType::Unit | DatabaseType::CenterUnit, _, false) => bad(
                        &at,
                        "data_sources",
                        format!(
                            "a {} database needs a data source in room `{room_name}`",
                            db.db_type
                        ),
                    ),
                    _ => {}
                }
            }
        }

        for (name, user) in &self.users {
            let at = format!("users.{name}");
            if parse_password_hash(&user.password_hash).is_none() {
                bad(
                    &at,
                    "password_hash",
                    "must be `*` and 40 hex digits (see `rainbow-bridge hash-password`)".into(),
                );
            }
            for db in &user.databases {
                if !self.databases.contains_key(db) {
                    bad(
                        &at,
                        "databases",
                        format!("database `{db}` is not defined in [databases]"),
                    );
                }
            }
        }
        out
    }

    /// The role of this instance's room. Only meaningful on a validated config.
    pub fn local_role(&self) -> RoomRole {
        self.rooms
            .get(&self.proxy.room)
            .map(|r| r.role)
            .unwrap_or(RoomRole::Unit)
    }

    /// The data source that serves `database` in this instance's room, if any.
    pub fn local_data_source(&self, database: &str) -> Option<(&str, &DataSource)> {
        let db = self.databases.get(database)?;
        db.data_sources.iter().find_map(|name| {
            let ds = self.data_sources.get(name)?;
            (ds.room == self.proxy.room).then_some((name.as_str(), ds))
        })
    }
}

pub(crate) fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
}

/// Decodes a `*HEX40` mysql_native_password hash into `SHA1(SHA1(password))`.
pub fn parse_password_hash(s: &str) -> Option<[u8; 20]> {
    let hex = s.strip_prefix('*')?;
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// The `*HEX40` mysql_native_password hash of a password, as MariaDB's `PASSWORD()` prints it.
pub fn hash_password(password: &str) -> String {
    use sha1::{Digest, Sha1};
    let stage2 = Sha1::digest(Sha1::digest(password.as_bytes()));
    let mut s = String::with_capacity(41);
    s.push('*');
    for b in stage2 {
        s.push_str(&format!("{b:02X}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[proxy]
listen = "127.0.0.1:3307"
room = "A"

[rooms.A]
role = "center"
[rooms.B]
role = "unit"

[data_sources.shop_a]
room = "A"
host = "127.0.0.1"
port = 3316
schema = "shop"
user = "rb"
password = "rb"

[data_sources.shop_b]
room = "B"
host = "127.0.0.1"
port = 3317
schema = "shop"
user = "rb"

[data_sources.scratch_a]
room = "A"
host = "127.0.0.1"
port = 3316
schema = "scratch"
user = "rb"

[databases.shop]
type = "unit"
data_sources = ["shop_a", "shop_b"]

[databases.scratch]
type = "center"
data_sources = ["scratch_a"]

[users.demo]
password_hash = "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
databases = ["shop", "scratch"]
"#;

    #[test]
    fn a_complete_config_parses_with_defaults_filled_in() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.pool.max_size, 64);
        assert_eq!(c.users["demo"].mode, ConnectionMode::Unit);
        assert_eq!(c.local_data_source("shop").unwrap().0, "shop_a");
        assert_eq!(c.local_role(), RoomRole::Center);
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let text = GOOD.replace(
            "room = \"A\"\n\n[rooms.A]",
            "room = \"A\"\nlisten_port = 1\n\n[rooms.A]",
        );
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_section_and_field() {
        let text = GOOD
            .replace(
                "[rooms.B]\nrole = \"unit\"",
                "[rooms.B]\nrole = \"unit\"\n[rooms.C]\nrole = \"center\"",
            )
            .replace(
                "databases = [\"shop\", \"scratch\"]",
                "databases = [\"shop\", \"nope\"]",
            )
            .replace(
                "data_sources = [\"scratch_a\"]",
                "data_sources = [\"scratch_a\", \"shop_b\"]",
            );
        let Err(ConfigError::Invalid(problems)) = Config::parse(&text) else {
            panic!("accepted")
        };
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(
            lines.iter().any(|l| l.starts_with("rooms: field `role`")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("users.demo") && l.contains("`nope`")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("databases.scratch") && l.contains("center database")),
            "{lines:?}"
        );
    }

    #[test]
    fn a_unit_database_missing_a_room_is_refused() {
        let text = GOOD.replace(
            "data_sources = [\"shop_a\", \"shop_b\"]",
            "data_sources = [\"shop_a\"]",
        );
        let Err(ConfigError::Invalid(problems)) = Config::parse(&text) else {
            panic!("accepted")
        };
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].at, "databases.shop");
        assert!(problems[0].reason.contains("room `B`"));
    }

    #[test]
    fn two_data_sources_in_one_room_are_refused_until_sharding_exists() {
        let text = GOOD.replace(
            "data_sources = [\"shop_a\", \"shop_b\"]",
            "data_sources = [\"shop_a\", \"shop_b\", \"scratch_a\"]",
        );
        let Err(ConfigError::Invalid(problems)) = Config::parse(&text) else {
            panic!("accepted")
        };
        assert!(problems[0].reason.contains("table rules"), "{problems:?}");
    }

    #[test]
    fn password_hash_matches_mariadb_password_function() {
        // Pairs checked against MariaDB 10.11's PASSWORD().
        assert_eq!(
            hash_password("mysql"),
            "*E74858DB86EBA20BC33D0AECAE8A8108C56B17FA"
        );
        assert_eq!(
            hash_password(""),
            "*BE1BDEC0AA74B4DCB079943E70528096CCA985F8"
        );
        let h = hash_password("demo");
        assert_eq!(parse_password_hash(&h).map(|_| ()), Some(()));
        assert_eq!(parse_password_hash("E74858DB"), None);
    }
}
