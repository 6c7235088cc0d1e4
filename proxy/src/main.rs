//! The `rainbow-bridge` command line.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shard_rules::config::hash_password;
use shard_rules::Config;
use tracing::info;

#[derive(Parser)]
#[command(
    name = "rainbow-bridge",
    version,
    about = "A MySQL-compatible proxy for multi-active deployments"
)]
struct Cli {
    /// Configuration file (TOML) to run the proxy with.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Cluster mode: the rules from etcd, `etcd://HOST:PORT[,HOST:PORT]/PREFIX`; overrides the
    /// config's `[cluster] url` (docs/cutover.md).
    #[arg(long, env = "RB_CLUSTER")]
    cluster: Option<String>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, default_value = "info", env = "RB_LOG")]
    log_level: tracing::Level,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and print every problem found.
    CheckConfig { file: PathBuf },
    /// Validate a rules file (rooms, route codes, traffic, write-ban, databases, table rules,
    /// users) and print every problem found.
    CheckRules { file: PathBuf },
    /// Show how a statement routes under a rules file: ShardingKey, route code, owner room,
    /// ban, data nodes, or the refusal.
    Route {
        /// The rules file.
        #[arg(long)]
        rules: PathBuf,
        /// The proxy's room.
        #[arg(long)]
        room: String,
        /// The session's logical database.
        #[arg(long)]
        database: String,
        /// Connection mode, `unit` or `center`.
        #[arg(long, default_value = "unit")]
        mode: String,
        /// The statement (hints included).
        sql: String,
    },
    /// Run SQL compatibility case files directly against MariaDB and through the proxy, in the
    /// text and the binary protocol, and compare every statement's outcome
    /// (docs/compatibility.md).
    Compat {
        /// MariaDB itself, the oracle: mysql://user:password@host:port (the proxy's backend
        /// account, so privileges and USER() agree).
        #[arg(long)]
        direct: String,
        /// The proxy: mysql://user:password@host:port.
        #[arg(long)]
        proxy: String,
        /// Drop and create the case database before each run of a case, with this account on
        /// the server behind the proxy (e.g. the --direct URL). Without it the cases run in the
        /// database as it is; the project's cases need it.
        #[arg(long)]
        reset: Option<String>,
        /// The database the cases run in (`{{db}}` in case files); it must be a database of
        /// the proxy's rules, with the same schema name on its backend.
        #[arg(long, default_value = "rb_compat")]
        database: String,
        /// `text`, `binary` or `both`.
        #[arg(long, default_value = "both")]
        protocol: String,
        /// Seconds a statement may take before it counts as hung.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Also write the report (as printed) to this file.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Case files (`*.sql`) or directories of them.
        #[arg(required = true)]
        cases: Vec<PathBuf>,
    },
    /// Report what the proxy would do with each statement of SQL files or general logs:
    /// parses, tables, route (single node / scatter / broadcast), refused and why.
    Lint {
        /// The rules file.
        #[arg(long)]
        config: PathBuf,
        /// The proxy's room (default: the center room).
        #[arg(long)]
        room: Option<String>,
        /// The session's database, for statements the input does not place (a general log's
        /// Connect/Init DB and `USE` statements do).
        #[arg(long)]
        database: Option<String>,
        /// Connection mode, `unit` or `center`.
        #[arg(long, default_value = "unit")]
        mode: String,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        format: String,
        /// What makes the exit status 1: a comma list of refused, unparsed, scatter (or none).
        #[arg(long, default_value = "refused")]
        fail_on: String,
        /// The application's sql_mode, for how its SQL reads (ANSI_QUOTES, ANSI,
        /// NO_BACKSLASH_ESCAPES matter).
        #[arg(long, default_value = "")]
        sql_mode: String,
        /// SQL files (`;`-separated, or one statement per line) or general logs; `-` is stdin.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Operate a cluster of proxies through etcd: status, rules, write-ban (docs/cutover.md).
    Ctl {
        /// `etcd://HOST:PORT[,HOST:PORT]/PREFIX`.
        #[arg(long, env = "RB_CLUSTER")]
        cluster: String,
        #[command(subcommand)]
        action: CtlAction,
    },
    /// Print the mysql_native_password hash of a password (read from stdin if not given),
    /// for `users.<name>.password_hash`.
    HashPassword { password: Option<String> },
}

#[derive(Subcommand)]
enum CtlAction {
    /// Every registered proxy: its room, the rules and write-ban it serves, when the ban became
    /// effective there, and whether it is behind the rules in etcd.
    Status,
    /// Validate a rules file and write it to etcd, then wait for every proxy to apply it.
    PutRules {
        file: PathBuf,
        /// Seconds to wait for the acknowledgements.
        #[arg(long, default_value_t = 30)]
        wait: u64,
        /// Fail unless at least this many proxies acknowledge (default 0: the first rules are
        /// put before any proxy runs).
        #[arg(long, default_value_t = 0)]
        min_proxies: usize,
    },
    /// Ban writes of route codes (`1000-1099,4000`) too (codes already banned stay banned),
    /// then wait until every proxy has applied it and it is effective there; prints the
    /// latest effective time.
    Ban {
        #[arg(long, value_delimiter = ',', required = true)]
        route_codes: Vec<String>,
        /// The new write-ban version (default: the current one + 1).
        #[arg(long)]
        version: Option<u64>,
        #[arg(long, default_value_t = 30)]
        wait: u64,
        /// Fail unless at least this many proxies acknowledge.
        #[arg(long, default_value_t = 1)]
        min_proxies: usize,
    },
    /// Lift the write-ban (of `--route-codes` only, if given), then wait until every proxy
    /// applied it.
    Unban {
        /// Lift the ban of these route codes only (default: the whole ban).
        #[arg(long, value_delimiter = ',')]
        route_codes: Vec<String>,
        #[arg(long, default_value_t = 30)]
        wait: u64,
        /// Fail unless at least this many proxies acknowledge.
        #[arg(long, default_value_t = 1)]
        min_proxies: usize,
    },
    /// Move route codes to another room safely: ban, wait for every proxy, wait for the target
    /// room's replication (MASTER_GTID_WAIT), switch the traffic rule, lift the ban. Re-running
    /// resumes (docs/cutover.md).
    Cutover {
        #[arg(long, value_delimiter = ',', required = true)]
        route_codes: Vec<String>,
        /// The room that will own them.
        #[arg(long)]
        to: String,
        /// Seconds to wait for the proxies' acknowledgements, per step.
        #[arg(long, default_value_t = 30)]
        wait: u64,
        /// Seconds the target room's servers may take to apply the source's GTID position.
        #[arg(long, default_value_t = 60)]
        gtid_timeout: u64,
        #[arg(long, default_value_t = 1)]
        min_proxies: usize,
    },
}

/// `rainbow-bridge ctl`: 0 done, 1 the operation did not complete (the message says what
/// stands and how to go on), 2 bad input.
fn ctl(url: &str, action: CtlAction) -> anyhow::Result<std::process::ExitCode> {
    use rainbow_bridge::ctl::{render_status, wait_acks, Ctl};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let fail = |m: String| {
            eprintln!("rainbow-bridge ctl: {m}");
            Ok(std::process::ExitCode::from(1))
        };
        let mut c = match Ctl::connect(url).await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        match action {
            CtlAction::Status => {
                let stored = match c.rules().await {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                };
                let (acks, unreadable) = match c.acks_and_unreadable().await {
                    Ok(a) => a,
                    Err(e) => return fail(e),
                };
                print!("{}", render_status(stored.as_ref(), &acks));
                for why in &unreadable {
                    println!("UNREADABLE: {why}");
                }
                // A proxy ctl cannot read is one the cut-over cannot count on.
                Ok(if unreadable.is_empty() {
                    std::process::ExitCode::SUCCESS
                } else {
                    std::process::ExitCode::from(1)
                })
            }
            CtlAction::PutRules {
                file,
                wait,
                min_proxies,
            } => {
                let text = match std::fs::read_to_string(&file) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("rainbow-bridge ctl: cannot read {}: {e}", file.display());
                        return Ok(std::process::ExitCode::from(2));
                    }
                };
                let rules = match shard_rules::RuleSet::parse(&text) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("rainbow-bridge ctl: {}: {e}", file.display());
                        return Ok(std::process::ExitCode::from(2));
                    }
                };
                let stored = match c.rules().await {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                };
                // A text the proxies would refuse is not written: moving route codes needs
                // their write-ban in the rules in etcd and in the new ones (ctl cutover).
                if let Some(old) = stored.as_ref().and_then(|s| s.rules.as_ref()) {
                    let route = (old.route(), rules.route());
                    if route.0.count != route.1.count || route.0.key != route.1.key {
                        eprintln!(
                            "rainbow-bridge ctl: {}: the route code function ([route_codes] count \
                             or key) differs from the rules in etcd; the proxies refuse that \
                             while serving",
                            file.display()
                        );
                        return Ok(std::process::ExitCode::from(2));
                    }
                    if let Err(e) = rainbow_bridge::reload::check_moves_between(old, &rules) {
                        eprintln!(
                            "rainbow-bridge ctl: {}: {e} (`ctl cutover` does both); nothing was written",
                            file.display()
                        );
                        return Ok(std::process::ExitCode::from(2));
                    }
                    if old.banned_codes().iter().any(|c| !rules.is_banned(c)) {
                        if let Err(e) = rainbow_bridge::ctl::lift_allowed(&mut c, old).await {
                            return fail(e);
                        }
                    }
                    if let Err(e) = rainbow_bridge::reload::check_versions(old, &rules) {
                        eprintln!(
                            "rainbow-bridge ctl: {}: against the rules in etcd, {e}; the proxies \
                             refuse that; nothing was written",
                            file.display()
                        );
                        return Ok(std::process::ExitCode::from(2));
                    }
                }
                let expected = stored.map_or(0, |s| s.revision);
                let rev = match c.put_rules(&text, expected).await {
                    Ok(r) => r,
                    Err(e) => return fail(e),
                };
                println!(
                    "rules version {} written to etcd (revision {rev}); waiting for the proxies",
                    rules.version()
                );
                match wait_acks(&mut c, rev, min_proxies, std::time::Duration::from_secs(wait), |a| {
                    a.rules_version == rules.version()
                })
                .await
                {
                    Ok(acks) => {
                        println!("applied by all {} proxies", acks.len());
                        Ok(std::process::ExitCode::SUCCESS)
                    }
                    Err(e) => fail(format!(
                        "{e}; the rules stay in etcd and the proxies keep trying: `ctl status` shows who is behind"
                    )),
                }
            }
            CtlAction::Ban {
                route_codes,
                version,
                wait,
                min_proxies,
            } => {
                let change = rainbow_bridge::ctl::BanChange::Add(route_codes);
                ban(&mut c, change, version, wait, min_proxies).await
            }
            CtlAction::Unban {
                route_codes,
                wait,
                min_proxies,
            } => {
                use rainbow_bridge::ctl::BanChange;
                let change = if route_codes.is_empty() {
                    BanChange::LiftAll
                } else {
                    BanChange::Remove(route_codes)
                };
                ban(&mut c, change, None, wait, min_proxies).await
            }
            CtlAction::Cutover {
                route_codes,
                to,
                wait,
                gtid_timeout,
                min_proxies,
            } => {
                let plan = rainbow_bridge::ctl::Cutover {
                    codes: route_codes,
                    to,
                    wait: std::time::Duration::from_secs(wait),
                    gtid_timeout: std::time::Duration::from_secs(gtid_timeout),
                    min_proxies,
                };
                match rainbow_bridge::ctl::cutover(&mut c, &plan).await {
                    Ok(()) => Ok(std::process::ExitCode::SUCCESS),
                    Err(e) => fail(e),
                }
            }
        }
    })
}

/// `ctl ban` / `ctl unban` with the exit code of its outcome.
async fn ban(
    c: &mut rainbow_bridge::ctl::Ctl,
    change: rainbow_bridge::ctl::BanChange,
    version: Option<u64>,
    wait: u64,
    min_proxies: usize,
) -> anyhow::Result<std::process::ExitCode> {
    let wait = std::time::Duration::from_secs(wait);
    match rainbow_bridge::ctl::ban(c, &change, version, wait, min_proxies).await {
        Ok(()) => Ok(std::process::ExitCode::SUCCESS),
        Err((code, m)) => {
            eprintln!("rainbow-bridge ctl: {m}");
            Ok(std::process::ExitCode::from(code))
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rainbow-bridge: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Why the config file or its rules file cannot be used: every problem, per file.
enum LoadError {
    Config(PathBuf, String),
    Rules(PathBuf, String),
    Io(anyhow::Error),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Config(p, e) | LoadError::Rules(p, e) => write!(f, "{}: {e}", p.display()),
            LoadError::Io(e) => write!(f, "{e:#}"),
        }
    }
}

/// Reads and validates the config file and the rules file it names (relative to the config
/// file's directory), and checks that the proxy's room is a room of the rules.
fn load_all(path: &PathBuf) -> Result<(Config, shard_rules::RuleSet, PathBuf, String), LoadError> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(LoadError::Io)?;
    let mut config =
        Config::parse(&text).map_err(|e| LoadError::Config(path.clone(), e.to_string()))?;
    if let Some(x) = &config.proxy.xa_log {
        let p = path.parent().unwrap_or(std::path::Path::new(".")).join(x);
        config.proxy.xa_log = Some(p.to_string_lossy().into_owned());
    }
    let rules_path = path
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(&config.proxy.rules);
    let text = std::fs::read_to_string(&rules_path)
        .with_context(|| {
            format!(
                "cannot read the rules file {} (proxy.rules in {})",
                rules_path.display(),
                path.display()
            )
        })
        .map_err(LoadError::Io)?;
    let rules = shard_rules::RuleSet::parse(&text)
        .map_err(|e| LoadError::Rules(rules_path.clone(), e.to_string()))?;
    let rules_text = text;
    if rules.room_id(&config.proxy.room).is_none() {
        return Err(LoadError::Config(
            path.clone(),
            format!(
                "config has 1 problem(s):\n  - proxy: field `room`: room `{}` is not a room of the rules file {}",
                config.proxy.room,
                rules_path.display()
            ),
        ));
    }
    let room = rules.room_id(&config.proxy.room).unwrap_or_default();
    if let Err(e) = id_gen::Generator::new(rules.ids(), u32::from(room), config.proxy.worker_id) {
        return Err(LoadError::Config(
            path.clone(),
            format!(
                "config has 1 problem(s):\n  - proxy: field `worker_id`: {e} (layout from the \
                 rules file's [ids])"
            ),
        ));
    }
    Ok((config, rules, rules_path, rules_text))
}

/// A rules text from etcd a proxy can start on: UTF-8, valid rules, with this proxy's room.
fn rules_from_etcd(bytes: &[u8], room: &str) -> Result<(shard_rules::RuleSet, String), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the rules text is not UTF-8".to_string())?;
    let rules = shard_rules::RuleSet::parse(text).map_err(|e| e.to_string())?;
    if rules.room_id(room).is_none() {
        return Err(format!(
            "room `{room}` (proxy.room) is not a room of the rules in etcd"
        ));
    }
    Ok((rules, text.to_string()))
}

/// `rainbow-bridge route`: one statement's decision, printed for a person.
fn route_preview(
    rules_path: &PathBuf,
    room: &str,
    database: &str,
    mode: &str,
    sql: &str,
) -> anyhow::Result<std::process::ExitCode> {
    use shard_rules::config::ConnectionMode;
    use shard_rules::decide::{decide_with_sample_keys, SessionCtx};
    let text = std::fs::read_to_string(rules_path)
        .with_context(|| format!("cannot read {}", rules_path.display()))?;
    let rules = shard_rules::RuleSet::parse(&text)
        .with_context(|| format!("{} refused", rules_path.display()))?;
    let room_id = rules
        .room_id(room)
        .with_context(|| format!("room `{room}` is not in the rules"))?;
    let mode = match mode {
        "unit" => ConnectionMode::Unit,
        "center" => ConnectionMode::Center,
        other => anyhow::bail!("mode `{other}` is neither `unit` nor `center`"),
    };
    let parsed = sql_hint::parse(sql.as_bytes())?;
    let stripped = String::from_utf8_lossy(&parsed.sql).into_owned();
    println!(
        "hint:        {}",
        parsed
            .hint
            .as_ref()
            .map_or("none".to_string(), |h| h.to_string())
    );
    let facts = shard_rules::analyze::analyze(&stripped)?;
    let session = SessionCtx {
        room: room_id,
        mode,
        database,
        session_key: None,
        privileged: false,
    };
    let decision = decide_with_sample_keys(&rules, &facts, parsed.hint.as_ref(), &session);
    println!("kind:        {:?}", facts.kind);
    match decision {
        Err(e) => {
            println!("refused:     {e}");
            if e.is_retryable() {
                println!("retryable:   yes");
            }
            Ok(std::process::ExitCode::from(1))
        }
        Ok(d) => {
            match &d.route {
                Some(r) => println!(
                    "route code:  {} (ShardingKey {}, from {:?}), owner room {}{}",
                    r.code,
                    r.key.as_ref().map_or("-".to_string(), |k| k.to_string()),
                    r.source,
                    rules.room_name(r.owner),
                    if r.banned { ", banned" } else { "" }
                ),
                None => println!("route code:  none"),
            }
            if d.foreign_read {
                println!("note:        a read of another room's data, served locally");
            }
            for t in &d.tables {
                let nodes: Vec<String> = t.nodes.iter().map(|n| n.to_string()).collect();
                println!("table {}:  {:?} -> {}", t.table, t.layout, nodes.join(", "));
            }
            for g in &d.generated {
                println!(
                    "generated:   {}.{} ({:?}), one per row (sample values here)",
                    g.table, g.generator.column, g.generator.kind
                );
            }
            if d.units.len() > 1 || d.units.iter().any(|u| !u.renames.is_empty()) {
                match shard_rules::units::node_queries(
                    &d,
                    sql.as_bytes(),
                    &parsed.sql,
                    Default::default(),
                ) {
                    Ok(nq) => {
                        for (ds, q) in &nq.queries {
                            println!("node query:  {ds}: {}", String::from_utf8_lossy(q));
                        }
                        if let Some(plan) = &nq.select {
                            println!("merge:       {}", plan.describe());
                        }
                    }
                    Err(e) => {
                        println!(
                            "refused:     This version of Rainbow Bridge doesn't yet support {e}"
                        );
                        return Ok(std::process::ExitCode::from(1));
                    }
                }
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// `rainbow-bridge compat`: exit 0 when every statement compared equal (or as a documented
/// gap), 1 on a difference, 2 when the case files or options are unusable.
#[allow(clippy::too_many_arguments)]
fn compat(
    direct: &str,
    proxy: &str,
    reset: Option<&str>,
    database: &str,
    protocol: &str,
    timeout: u64,
    json: bool,
    report: Option<&std::path::Path>,
    paths: &[PathBuf],
) -> anyhow::Result<std::process::ExitCode> {
    use rainbow_bridge::compat::{self, Protocol};
    let usage = |m: String| {
        eprintln!("rainbow-bridge compat: {m}");
        Ok(std::process::ExitCode::from(2))
    };
    let url = |u: &str, what: &str| {
        mysql_async::Opts::from_url(u)
            .map_err(|e| format!("--{what} `{u}` is not a mysql:// URL: {e}"))
    };
    let protocols = match protocol {
        "text" => vec![Protocol::Text],
        "binary" => vec![Protocol::Binary],
        "both" => vec![Protocol::Text, Protocol::Binary],
        other => return usage(format!("--protocol `{other}` is not text, binary or both")),
    };
    let (direct, proxy) = match (url(direct, "direct"), url(proxy, "proxy")) {
        (Ok(d), Ok(p)) => (d, p),
        (Err(e), _) | (_, Err(e)) => return usage(e),
    };
    let reset = match reset {
        None | Some("none") => None,
        Some(u) => match url(u, "reset") {
            Ok(o) => Some(o),
            Err(e) => return usage(e),
        },
    };
    let options = compat::RunOptions {
        direct,
        proxy,
        reset,
        database: database.to_string(),
        protocols: protocols.clone(),
        timeout: std::time::Duration::from_secs(timeout.max(1)),
    };
    let cases = match compat::load_cases(paths, database) {
        Ok(c) if c.is_empty() => {
            eprintln!("rainbow-bridge compat: no *.sql case files in the given paths");
            return Ok(std::process::ExitCode::from(2));
        }
        Ok(c) => c,
        Err(e) => {
            eprintln!("rainbow-bridge compat: {e}");
            return Ok(std::process::ExitCode::from(2));
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(compat::run(&cases, &options));
    let text = if json {
        result.json(&protocols) + "\n"
    } else {
        result.render(&protocols)
    };
    print!("{text}");
    if let Some(p) = report {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        std::fs::write(p, &text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(if result.failed() {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

#[allow(clippy::too_many_arguments)]
/// `rainbow-bridge lint`: exit 0 when nothing the `--fail-on` list names was found, 1 when
/// something was, 2 when the rules or inputs are unusable.
fn lint(
    rules_path: &std::path::Path,
    room: Option<&str>,
    database: Option<&str>,
    mode: &str,
    format: &str,
    fail_on: &str,
    sql_mode: &str,
    files: &[PathBuf],
) -> anyhow::Result<std::process::ExitCode> {
    use rainbow_bridge::lint;
    use shard_rules::config::ConnectionMode;
    let usage = |m: String| {
        eprintln!("rainbow-bridge lint: {m}");
        Ok(std::process::ExitCode::from(2))
    };
    let fail_on = match lint::FailOn::parse(fail_on) {
        Ok(f) => f,
        Err(e) => return usage(format!("--fail-on: {e}")),
    };
    let mode = match mode {
        "unit" => ConnectionMode::Unit,
        "center" => ConnectionMode::Center,
        other => return usage(format!("--mode `{other}` is neither `unit` nor `center`")),
    };
    if format != "table" && format != "json" {
        return usage(format!("--format `{format}` is neither `table` nor `json`"));
    }
    let text = match std::fs::read_to_string(rules_path) {
        Ok(t) => t,
        Err(e) => return usage(format!("cannot read {}: {e}", rules_path.display())),
    };
    let rules = match shard_rules::RuleSet::parse(&text) {
        Ok(r) => r,
        Err(e) => return usage(format!("{}: {e}", rules_path.display())),
    };
    let room_id = match room {
        Some(r) => match rules.room_id(r) {
            Some(id) => id,
            None => {
                return usage(format!(
                    "room `{r}` is not a room of {}",
                    rules_path.display()
                ))
            }
        },
        None => {
            let center = rules
                .rooms()
                .iter()
                .find(|(_, role)| *role == shard_rules::config::RoomRole::Center)
                .map(|(n, _)| n.clone());
            match center.and_then(|n| rules.room_id(&n)) {
                Some(id) => id,
                None => return usage("the rules have no center room; give --room".into()),
            }
        }
    };
    if let Some(db) = database {
        if rules.database(db).is_none() {
            return usage(format!(
                "--database `{db}` is not a database of {}",
                rules_path.display()
            ));
        }
    }
    let modes: Vec<String> = sql_mode
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .collect();
    let has = |m: &str| modes.iter().any(|x| x == m);
    let quoting = shard_rules::lex::Quoting {
        backslash_escapes: !has("NO_BACKSLASH_ESCAPES"),
        ansi_quotes: has("ANSI_QUOTES") || has("ANSI"),
    };
    let session = lint::LintSession {
        rules: &rules,
        room: room_id,
        mode,
        database,
        quoting,
    };
    if files.iter().filter(|f| f.as_os_str() == "-").count() > 1 {
        return usage("`-` (stdin) given more than once".into());
    }
    // Every input read first: an unreadable one is a usage error before anything is printed.
    let mut texts = Vec::with_capacity(files.len());
    for f in files {
        if f.as_os_str() == "-" {
            let mut b = Vec::new();
            if let Err(e) = std::io::stdin().read_to_end(&mut b) {
                return usage(format!("cannot read stdin: {e}"));
            }
            texts.push(("-".to_string(), String::from_utf8_lossy(&b).into_owned()));
        } else {
            match std::fs::read(f) {
                Ok(b) => texts.push((
                    f.display().to_string(),
                    String::from_utf8_lossy(&b).into_owned(),
                )),
                Err(e) => return usage(format!("cannot read {}: {e}", f.display())),
            }
        }
    }
    let mut failed = false;
    let mut reports = Vec::new();
    let mut all = Vec::new();
    for (name, text) in &texts {
        let inputs = if lint::is_general_log(text) {
            lint::read_general_log(text)
        } else {
            lint::read_sql(text, quoting)
        };
        if inputs.is_empty() && !text.trim().is_empty() {
            eprintln!("rainbow-bridge lint: {name}: no statements found");
        }
        let findings = lint::lint(&session, &inputs);
        failed |= findings.iter().any(|x| fail_on.fails(x));
        if format == "json" {
            reports.push(lint::to_json(name, &findings));
        } else {
            print!("{}", lint::render_table(name, &findings));
        }
        all.extend(findings);
    }
    let total = lint::summary(&all);
    if format == "json" {
        let v = serde_json::json!({
            "failed": failed,
            "summary": lint::summary_json(&total),
            "files": reports,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if texts.len() > 1 {
        println!("total: {total}");
    }
    Ok(if failed {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let cli_cluster = cli.cluster.clone();
    if let Some(u) = &cli_cluster {
        if let Err(e) = shard_rules::config::parse_cluster_url(u) {
            anyhow::bail!("--cluster: {e}");
        }
    }
    match cli.command {
        Some(Command::CheckConfig { file }) => match load_all(&file) {
            Ok((c, r, rules_path, _)) => {
                println!(
                    "{}: ok (room {}, rules {} version {}: {} rooms, {} data sources, {} \
                     databases, {} users)",
                    file.display(),
                    c.proxy.room,
                    rules_path.display(),
                    r.version(),
                    r.rooms().len(),
                    r.data_sources().len(),
                    r.databases().count(),
                    r.users().len()
                );
                Ok(std::process::ExitCode::SUCCESS)
            }
            Err(LoadError::Io(e)) => Err(e),
            Err(e) => {
                println!("{e}");
                Ok(std::process::ExitCode::from(2))
            }
        },
        Some(Command::CheckRules { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            match shard_rules::RuleSet::parse(&text) {
                Ok(r) => {
                    let tables: usize = r.databases().map(|d| d.sharded_tables().count()).sum();
                    println!(
                        "{}: ok (version {}, traffic version {}, write-ban version {} on {}, {} \
                         rooms, {} databases, {} sharded tables, {} users)",
                        file.display(),
                        r.version(),
                        r.traffic_version(),
                        r.ban_version(),
                        r.banned_codes(),
                        r.rooms().len(),
                        r.databases().count(),
                        tables,
                        r.users().len()
                    );
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("{}: {e}", file.display());
                    Ok(std::process::ExitCode::from(2))
                }
            }
        }
        Some(Command::Route {
            rules,
            room,
            database,
            mode,
            sql,
        }) => route_preview(&rules, &room, &database, &mode, &sql),
        Some(Command::Compat {
            direct,
            proxy,
            reset,
            database,
            protocol,
            timeout,
            json,
            report,
            cases,
        }) => compat(
            &direct,
            &proxy,
            reset.as_deref(),
            &database,
            &protocol,
            timeout,
            json,
            report.as_deref(),
            &cases,
        ),
        Some(Command::Lint {
            config,
            room,
            database,
            mode,
            format,
            fail_on,
            sql_mode,
            files,
        }) => lint(
            &config,
            room.as_deref(),
            database.as_deref(),
            &mode,
            &format,
            &fail_on,
            &sql_mode,
            &files,
        ),
        Some(Command::Ctl { cluster, action }) => ctl(&cluster, action),
        Some(Command::HashPassword { password }) => {
            let pw = match password {
                Some(p) => p,
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s.trim_end_matches(['\n', '\r']).to_string()
                }
            };
            println!("{}", hash_password(&pw));
            Ok(std::process::ExitCode::SUCCESS)
        }
        None => {
            let path = cli.config.context("no --config given (see --help)")?;
            let (config, rules, rules_path, rules_text) = match load_all(&path) {
                // Absolute, so SHOW RULES and the logs name the file whatever the cwd was.
                Ok((c, r, p, t)) => (c, r, std::fs::canonicalize(&p).unwrap_or(p), t),
                Err(LoadError::Io(e)) => return Err(e),
                Err(e) => anyhow::bail!("refused: {e}"),
            };
            // One worker thread: tokio's current-thread scheduler runs every task on this
            // thread with no work-stealing bookkeeping (benches/README.md measures both).
            let mut rt = if config.proxy.worker_threads == 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                if config.proxy.worker_threads > 0 {
                    b.worker_threads(config.proxy.worker_threads);
                }
                b
            };
            let rt = rt.enable_all().build()?;
            rt.block_on(async move {
                let listen = config.proxy.listen.clone();
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                info!(
                    listen = %listener.local_addr()?,
                    room = %config.proxy.room,
                    rules = %rules_path.display(),
                    rules_version = rules.version(),
                    "rainbow-bridge listening"
                );
                // The recorder goes first: the shared state's latency histograms come from it.
                let metrics_listen = config.metrics.as_ref().map(|m| m.listen.clone());
                if let Some(addr) = &metrics_listen {
                    let addr: std::net::SocketAddr =
                        addr.parse().context("metrics.listen is not IP:port")?;
                    rainbow_bridge::metrics::install(addr).map_err(|e| anyhow::anyhow!(e))?;
                    info!(metrics_listen = %addr, "metrics endpoint listening (GET /metrics)");
                }
                let admin = config.admin.clone();
                let listen_addr = listener.local_addr()?;
                let cluster = cli_cluster
                    .clone()
                    .or_else(|| config.cluster.as_ref().map(|c| c.url.clone()))
                    .map(|url| {
                        let c = config.cluster.as_ref();
                        let instance = c
                            .and_then(|c| c.instance.clone())
                            .unwrap_or_else(|| default_instance(&config.proxy.room, listen_addr));
                        (url, instance, c.map_or(10, |c| c.lease_ttl_s))
                    });
                let mut config = config;
                let (mut rules, mut rules_text) = (rules, rules_text);
                // Cluster mode: the proxy is built on the rules in etcd, not on an older file.
                let (mut etcd_applied, mut etcd_refused) = (None, None);
                // The rules file's text, while the proxy is built on etcd's instead.
                let mut file_text: Option<String> = None;
                if let Some((url, instance, ttl)) = &cluster {
                    match rainbow_bridge::cluster::fetch_rules(url, std::time::Duration::from_secs(5)).await {
                        Ok(Some((bytes, revision))) => match rules_from_etcd(&bytes, &config.proxy.room) {
                            Ok((r, text)) => {
                                info!(revision, rules_version = r.version(), "starting on the rules in etcd");
                                file_text = Some(std::mem::replace(&mut rules_text, text));
                                rules = r;
                                etcd_applied = Some(revision);
                            }
                            Err(why) => {
                                tracing::error!(revision, "rules in etcd refused at start, serving the rules file: {why}");
                                etcd_refused = Some((revision, why));
                            }
                        },
                        Ok(None) => tracing::warn!(url = %url, "no rules in etcd yet (rainbow-bridge ctl put-rules FILE): serving the rules file"),
                        Err(e) => tracing::warn!(url = %url, error = %e, "etcd unreachable at start: serving the rules file until it answers"),
                    }
                    // Recorded for the XA log's name: the instance, not the leased worker id,
                    // is what stays the same across restarts.
                    config.cluster = Some(shard_rules::config::ClusterSection {
                        url: url.clone(),
                        instance: Some(instance.clone()),
                        lease_ttl_s: *ttl,
                    });
                }
                // Cluster mode: the snowflake worker id is leased from etcd, so two live
                // proxies never share one.
                let mut fence = None;
                if let Some((url, instance, ttl)) = &cluster {
                    let max = rules.ids().layout.max_worker();
                    let claim = rainbow_bridge::cluster::claim_worker(
                        url,
                        &config.proxy.room,
                        instance,
                        std::time::Duration::from_secs(*ttl),
                        max,
                    );
                    let claimed = tokio::time::timeout(std::time::Duration::from_secs(10), claim)
                        .await
                        .unwrap_or_else(|_| Err("etcd did not answer within 10 s".into()));
                    fence = Some(match claimed {
                        Ok(f) => {
                            config.proxy.worker_id = f.worker;
                            f
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "no snowflake worker id from etcd: snowflake keys are refused until the proxy restarts with etcd reachable");
                            std::sync::Arc::new(rainbow_bridge::cluster::WorkerFence::lost(
                                config.proxy.worker_id,
                            ))
                        }
                    });
                }
                let built = rainbow_bridge::server::shared(
                    config.clone(),
                    rules,
                    rules_path.clone(),
                    rules_text.clone(),
                );
                let shared = match (built, etcd_applied, file_text) {
                    (Ok(shared), applied, file_text) => {
                        // The rules file follows etcd: a restart without etcd serves the last
                        // rules applied.
                        if applied.is_some() && file_text.is_some_and(|f| f != rules_text) {
                            if let Err(e) = rainbow_bridge::reload::write_atomically(&rules_path, &rules_text) {
                                tracing::warn!(file = %rules_path.display(), error = %e, "cannot write the rules from etcd back to the rules file");
                            }
                        }
                        shared
                    }
                    (Err(e), Some(revision), Some(file_text)) => {
                        // The file was read and checked at start: it serves instead.
                        tracing::error!(revision, "cannot start on the rules in etcd, serving the rules file: {e}");
                        etcd_applied = None;
                        etcd_refused = Some((revision, format!("cannot start on these rules: {e}")));
                        let file_rules = shard_rules::RuleSet::parse(&file_text)
                            .map_err(|e| anyhow::anyhow!("refused: {e}"))?;
                        rainbow_bridge::server::shared(config, file_rules, rules_path.clone(), file_text)
                            .map_err(|e| anyhow::anyhow!("refused: {e}"))?
                    }
                    (Err(e), ..) => anyhow::bail!("refused: {e}"),
                };
                if let Some(f) = fence {
                    let _ = shared.worker_fence.set(f);
                }
                if metrics_listen.is_some() {
                    rainbow_bridge::metrics::publish(&shared);
                    rainbow_bridge::metrics::spawn_upkeep(shared.clone());
                }
                if let Some((url, instance, ttl)) = cluster.clone() {
                    info!(url = %url, instance = %instance, "cluster mode: rules from etcd");
                    rainbow_bridge::cluster::started(&shared, etcd_applied, etcd_refused.clone());
                    rainbow_bridge::cluster::spawn(
                        shared.clone(),
                        url,
                        instance,
                        std::time::Duration::from_secs(ttl),
                    );
                }
                if let Some(admin) = admin {
                    let listener = tokio::net::TcpListener::bind(&admin.listen)
                        .await
                        .with_context(|| {
                            format!("cannot listen on {} (admin.listen)", admin.listen)
                        })?;
                    info!(
                        admin_listen = %listener.local_addr()?,
                        admin_users = admin.users.len(),
                        "admin interface listening"
                    );
                    tokio::spawn(rainbow_bridge::admin::serve(
                        listener,
                        shared.clone(),
                        admin.users,
                    ));
                }
                // SIGHUP: reload the rules file (a refused file leaves the old rules serving).
                // The handler is installed before anything waits, so an early SIGHUP reloads
                // instead of ending the process.
                {
                    use tokio::signal::unix::{signal, SignalKind};
                    let mut hup = signal(SignalKind::hangup())
                        .context("cannot install the SIGHUP handler")?;
                    let shared = shared.clone();
                    let clustered = cluster.is_some();
                    tokio::spawn(async move {
                        while hup.recv().await.is_some() {
                            if clustered {
                                // etcd is the one truth: a local edit would be served unseen by
                                // ctl and overwritten by the next change.
                                tracing::warn!("SIGHUP ignored in cluster mode: change the rules with rainbow-bridge ctl put-rules");
                                continue;
                            }
                            // Applied or refused, the outcome is logged by reload_file.
                            let _ = rainbow_bridge::reload::reload_file(&shared, "SIGHUP").await;
                        }
                    });
                }
                // Branches a crash left prepared are finished or rolled back before clients
                // come (only if the log says some could be: an XA transaction ran before).
                rainbow_bridge::xa::recover_at_start(shared.clone()).await;
                // Learn the backend version before the first client arrives.
                let _ = shared.server_version().await;
                rainbow_bridge::server::serve(listener, shared, shutdown_signal()).await;
                anyhow::Ok(())
            })?;
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// The default name of a proxy in etcd: room, host name and listen address, unique per host.
fn default_instance(room: &str, listen: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    format!("{room}-{host}-{listen}")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
