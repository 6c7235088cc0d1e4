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

fn load(path: &PathBuf) -> anyhow::Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Config::parse(&text).with_context(|| format!("{} refused", path.display()))
}

fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Some(Command::CheckConfig { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            match Config::parse(&text) {
                Ok(c) => {
                    println!(
                        "{}: ok ({} rooms, {} data sources, {} databases, {} users)",
                        file.display(),
                        c.rooms.len(),
                        c.data_sources.len(),
                        c.databases.len(),
                        c.users.len()
                    );
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("{}: {e}", file.display());
                    Ok(std::process::ExitCode::from(2))
                }
            }
        }
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
            let config = load(&path)?;
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if config.proxy.worker_threads > 0 {
                rt.worker_threads(config.proxy.worker_threads);
            }
            let rt = rt.enable_all().build()?;
            rt.block_on(async move {
                let listen = config.proxy.listen.clone();
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                info!(listen = %listener.local_addr()?, room = %config.proxy.room, "rainbow-bridge listening");
                let shared = rainbow_bridge::server::shared(config);
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
