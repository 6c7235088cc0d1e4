//! The proxy instance's own TOML configuration: where it listens, which room it runs in, where
//! its rules file is, and its backend pools. The rules (rooms, data sources, databases, users,
//! route codes, traffic, write-ban, table rules) live in the rules file, shared by every proxy
//! ([`crate::rules`], `docs/rules.md`); the types both files use are here.
//!
//! Invariants: [`Config::parse`] either returns a config that passed [`Config::validate`] or every
//! problem found, each naming the section, the field and the reason. Unknown fields are refused
//! (`deny_unknown_fields`) so a typo never silently falls back to a default.

use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;

/// The whole configuration file of one proxy instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This proxy instance. Required.
    pub proxy: ProxySection,
    /// Backend pool sizes and timeouts, applied to every (data source) pool. Optional.
    #[serde(default)]
    pub pool: PoolConfig,
    /// The admin interface (MySQL protocol, its own port and users). Default: off.
    pub admin: Option<AdminSection>,
    /// The Prometheus metrics endpoint. Default: off.
    pub metrics: Option<MetricsSection>,
    /// Cluster mode: rules from etcd, acknowledgements written back. Default: off (the rules
    /// file alone).
    pub cluster: Option<ClusterSection>,
}

/// Cluster mode (`docs/cutover.md`): the rules live in etcd under `url`'s prefix; this proxy
/// watches them and acknowledges what it applied under its own lease.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// `etcd://HOST:PORT[,HOST:PORT…]/PREFIX`. Required.
    pub url: String,
    /// This proxy's name among the registered proxies. Default: `<room>-<listen address>`.
    pub instance: Option<String>,
    /// Seconds the registration lease lives without a keep-alive. Default 10.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_s: u64,
}

fn default_lease_ttl() -> u64 {
    10
}

/// `etcd://h:p[,h:p]/prefix` → (endpoints as `http://h:p`, prefix without trailing `/`).
pub fn parse_cluster_url(url: &str) -> Result<(Vec<String>, String), String> {
    let rest = url
        .strip_prefix("etcd://")
        .ok_or_else(|| format!("`{url}` does not start with etcd://"))?;
    let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let endpoints: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("http://{h}"))
        .collect();
    if endpoints.is_empty() {
        return Err(format!(
            "`{url}` names no etcd endpoint (etcd://HOST:PORT/PREFIX)"
        ));
    }
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return Err(format!(
            "`{url}` has no key prefix (etcd://HOST:PORT/PREFIX, e.g. /rainbow-bridge)"
        ));
    }
    Ok((endpoints, format!("/{prefix}")))
}

/// The admin interface: DBAs and operators connect with the `mariadb` CLI or any MySQL driver
/// (`docs/operations.md`). Its users are not application users.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Address the admin listener binds, e.g. `"127.0.0.1:6032"`. Required.
    pub listen: String,
    /// Admin users by name: their mysql_native_password hash (`rainbow-bridge hash-password`).
    /// Required, at least one.
    pub users: std::collections::BTreeMap<String, AdminUser>,
}

/// One admin user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUser {
    /// `*` followed by 40 hex digits, as for application users. Required.
    pub password_hash: String,
    /// `false`: the user may only read (SHOW, PREVIEW), not change rules or reload.
    /// Default true.
    #[serde(default = "default_true")]
    pub write: bool,
}

/// The Prometheus metrics endpoint (`GET /metrics`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address the HTTP listener binds, e.g. `"127.0.0.1:9104"`. Required.
    pub listen: String,
}

fn default_true() -> bool {
    true
}

/// This proxy instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// Address the MySQL protocol listener binds, e.g. `"127.0.0.1:3307"`. Required.
    pub listen: String,
    /// The room this instance runs in; must name a room of the rules file. Required.
    pub room: String,
    /// The rules file, relative to this file's directory (or absolute). Required.
    pub rules: String,
    /// This proxy's worker number in snowflake IDs: unique among the proxies of its room
    /// (0–127 in the default layout). Default 0.
    #[serde(default)]
    pub worker_id: u32,
    /// Seconds a newly applied write-ban waits for transactions that already wrote to its
    /// codes; those still open then are aborted (rolled back) and the ban is effective.
    /// Default 30.
    #[serde(default = "default_ban_wait")]
    pub ban_wait_timeout_s: u64,
    /// Parse every read of a unit database to find its ShardingKey and count reads of other
    /// rooms' keys (a plan-cache lookup per read, 10–35 µs of sqlparser for a new statement
    /// shape). Default false: only reads whose hint names a key are counted.
    #[serde(default)]
    pub count_foreign_reads: bool,
    /// Statement shapes (digests) whose analysis the plan cache keeps, least recently used
    /// evicted first; 0 turns the cache off (every analysed statement is parsed). Default 4096.
    #[serde(default = "default_plan_cache_size")]
    pub plan_cache_size: usize,
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
    /// Proxy memory one statement's merge of data-node results may hold, in MiB: groups of
    /// GROUP BY / DISTINCT / aggregates, and node results buffered for a sorted merge. A merge
    /// that needs more is refused (error 1038). Default 64.
    #[serde(default = "default_merge_memory")]
    pub merge_memory_mb: usize,
    /// The XA log: commit decisions of XA transactions (`transactions = "xa"`), read at start
    /// to finish or roll back branches a crash left prepared. Relative to the config file's
    /// directory. Default: `rainbow-bridge-xa-<room>-<worker_id>.log` next to the rules file.
    #[serde(default)]
    pub xa_log: Option<String>,
}

fn default_merge_memory() -> usize {
    64
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
fn default_plan_cache_size() -> usize {
    4096
}
fn default_max_packet() -> usize {
    64 << 20
}
fn default_handshake_timeout() -> u64 {
    10
}
fn default_ban_wait() -> u64 {
    30
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
        if self.proxy.rules.trim().is_empty() {
            bad("proxy", "rules", "must name the rules file".into());
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

        if let Some(admin) = &self.admin {
            if admin.listen.parse::<SocketAddr>().is_err() {
                bad(
                    "admin",
                    "listen",
                    format!("`{}` is not an IP:port address", admin.listen),
                );
            }
            if admin.users.is_empty() {
                bad("admin", "users", "needs at least one admin user".into());
            }
            for (name, u) in &admin.users {
                if parse_password_hash(&u.password_hash).is_none() {
                    bad(
                        &format!("admin.users.{name}"),
                        "password_hash",
                        "is not `*` followed by 40 hex digits (rainbow-bridge hash-password)"
                            .into(),
                    );
                }
            }
        }
        if let Some(m) = &self.metrics {
            if m.listen.parse::<SocketAddr>().is_err() {
                bad(
                    "metrics",
                    "listen",
                    format!("`{}` is not an IP:port address", m.listen),
                );
            }
        }
        if let Some(c) = &self.cluster {
            if let Err(e) = parse_cluster_url(&c.url) {
                bad("cluster", "url", e);
            }
            if c.lease_ttl_s < 2 {
                bad("cluster", "lease_ttl_s", "must be at least 2".into());
            }
        }
        // Two listeners on one address cannot both bind (port 0 picks a free port each time).
        let fixed = |a: &str| a.parse::<SocketAddr>().ok().filter(|a| a.port() != 0);
        let mut seen = vec![("proxy", fixed(&self.proxy.listen))];
        if let Some(a) = &self.admin {
            seen.push(("admin", fixed(&a.listen)));
        }
        if let Some(m) = &self.metrics {
            seen.push(("metrics", fixed(&m.listen)));
        }
        for (i, (at, addr)) in seen.iter().enumerate() {
            if let Some((other, _)) = seen[..i].iter().find(|(_, b)| addr.is_some() && b == addr) {
                bad(
                    at,
                    "listen",
                    format!("is the same address as {other}.listen"),
                );
            }
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

        out
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

    #[test]
    fn a_minimal_config_gets_every_default() {
        let c = Config::parse(
            "[proxy]\nlisten = \"127.0.0.1:3307\"\nroom = \"A\"\nrules = \"rules.toml\"\n",
        )
        .unwrap();
        assert_eq!(c.proxy.max_connections, 4096);
        assert_eq!(c.pool.max_size, 64);
        assert_eq!(c.proxy.rules, "rules.toml");
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_section_and_field() {
        let text =
            "[proxy]\nlisten = \"nowhere\"\nroom = \"A\"\nrules = \" \"\nmax_connections = 0\n\
                    [pool]\nmax_size = 2\nmin_idle = 3\ncheckout_timeout_ms = 0\n";
        let Err(ConfigError::Invalid(problems)) = Config::parse(text) else {
            panic!("expected problems");
        };
        let got: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            got,
            [
                "proxy: field `listen`: `nowhere` is not an IP:port address",
                "proxy: field `rules`: must name the rules file",
                "proxy: field `max_connections`: must be at least 1",
                "pool: field `min_idle`: 3 exceeds max_size 2",
                "pool: field `checkout_timeout_ms`: must be at least 1",
            ]
        );
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let err = Config::parse(
            "[proxy]\nlisten = \"127.0.0.1:1\"\nroom = \"A\"\nrules = \"r\"\nlisen = 1\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `lisen`"), "{err}");
        let err = Config::parse("[proxy]\nlisten = \"127.0.0.1:1\"\nroom = \"A\"\nrules = \"r\"\n[rooms.A]\nrole = \"center\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `rooms`"), "{err}");
    }

    #[test]
    fn password_hash_matches_mariadb_password_function() {
        // MariaDB: SELECT PASSWORD('app') → *5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3
        assert_eq!(
            hash_password("app"),
            "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3"
        );
        assert!(parse_password_hash("*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3").is_some());
        assert!(parse_password_hash("5BCB3E").is_none());
    }
}
