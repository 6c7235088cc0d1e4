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
    /// Print the mysql_native_password hash of a password (read from stdin if not given),
    /// for `users.<name>.password_hash`.
    HashPassword { password: Option<String> },
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

fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
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
                let shared =
                    rainbow_bridge::server::shared(config, rules, rules_path.clone(), rules_text)
                        .map_err(|e| anyhow::anyhow!("refused: {e}"))?;
                if metrics_listen.is_some() {
                    rainbow_bridge::metrics::publish(&shared);
                    rainbow_bridge::metrics::spawn_upkeep(shared.clone());
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
                    tokio::spawn(async move {
                        while hup.recv().await.is_some() {
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
