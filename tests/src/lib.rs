//! End-to-end harness: real MariaDB rooms (scripts/rooms.sh), the real `rainbow-bridge`
//! binary started on a free port with a temporary config, and clients: mysql_async, a raw
//! protocol client for what drivers cannot express, PyMySQL and the `mariadb` CLI.
//!
//! Every test works in its own database (`rbt_<name>`), created fresh on room A, so tests run
//! in parallel without seeing each other.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

pub mod raw;

pub const ROOM_A_PORT: u16 = 3316;
pub const ROOM_B_PORT: u16 = 3317;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Starts the rooms once per test process (idempotent and locked in the script itself).
pub fn rooms_up() {
    static UP: OnceLock<()> = OnceLock::new();
    UP.get_or_init(|| {
        let out = Command::new(root().join("scripts/rooms.sh"))
            .arg("up")
            .output()
            .expect("run scripts/rooms.sh");
        assert!(
            out.status.success(),
            "scripts/rooms.sh up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Options for a direct connection to room A as the backend user.
pub fn direct_opts(db: Option<&str>) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(ROOM_A_PORT)
        .user(Some("rb"))
        .pass(Some("rb"))
        .db_name(db)
        .prefer_socket(false)
        .into()
}

pub async fn direct(db: Option<&str>) -> Conn {
    Conn::new(direct_opts(db))
        .await
        .expect("direct connection to room A")
}

/// A direct connection (as `rb`) to the MariaDB of the room on `port`.
pub async fn direct_room(port: u16, db: Option<&str>) -> Conn {
    let opts: Opts = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("rb"))
        .pass(Some("rb"))
        .db_name(db)
        .prefer_socket(false)
        .into();
    Conn::new(opts).await.expect("direct connection")
}

/// Drops and creates database `rbt_<name>` on both rooms, and runs `schema` in each (a unit
/// database: one copy per room); returns its name.
pub async fn fresh_unit_db(name: &str, schema: &[&str]) -> String {
    rooms_up();
    let db = format!("rbt_{name}");
    for port in [ROOM_A_PORT, ROOM_B_PORT] {
        let mut c = direct_room(port, None).await;
        c.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
            .await
            .unwrap();
        c.query_drop(format!("CREATE DATABASE `{db}`"))
            .await
            .unwrap();
        c.query_drop(format!("USE `{db}`")).await.unwrap();
        for stmt in schema {
            c.query_drop(*stmt).await.unwrap();
        }
        c.disconnect().await.unwrap();
    }
    db
}

/// Drops and creates database `rbt_<name>` on room A; returns its name.
pub async fn fresh_db(name: &str) -> String {
    rooms_up();
    let db = format!("rbt_{name}");
    let mut c = direct(None).await;
    c.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
        .await
        .unwrap();
    c.query_drop(format!("CREATE DATABASE `{db}`"))
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    db
}

/// A user of the test proxy: name, password, databases, mode.
pub struct TestUser {
    pub name: &'static str,
    pub password: &'static str,
    pub databases: Vec<String>,
    pub mode: &'static str,
}

/// What a test proxy serves.
pub struct ProxyConfig {
    pub room: &'static str,
    pub databases: Vec<String>,
    pub users: Vec<TestUser>,
    pub pool_max: u32,
    pub checkout_timeout_ms: u64,
    /// Extra data sources pointing at a dead port, to test unavailable backends.
    pub dead_database: Option<String>,
}

impl ProxyConfig {
    /// One center database served by room A, and user `app`/`app` allowed on it.
    pub fn single(db: &str) -> Self {
        ProxyConfig {
            room: "A",
            databases: vec![db.to_string()],
            users: vec![TestUser {
                name: "app",
                password: "app",
                databases: vec![db.to_string()],
                mode: "unit",
            }],
            pool_max: 16,
            checkout_timeout_ms: 5000,
            dead_database: None,
        }
    }

    /// The config file and the rules file (named `rules`, next to the config).
    fn render(&self, rules: &str) -> (String, String) {
        let config = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\nroom = \"{}\"\nrules = \"{rules}\"\n\n\
             [pool]\nmax_size = {}\ncheckout_timeout_ms = {}\nconnect_timeout_ms = 2000\n",
            self.room, self.pool_max, self.checkout_timeout_ms
        );
        let mut s = "version = 1\n\n[rooms.A]\nrole = \"center\"\n[rooms.B]\nrole = \"unit\"\n\n\
                     [route_codes]\ncount = 10000\n\n[traffic]\nversion = 1\nowners.A = [\"0-4999\"]\n\
                     owners.B = [\"5000-9999\"]\n\n"
            .to_string();
        for db in &self.databases {
            s += &format!(
                "[data_sources.{db}_a]\nroom = \"A\"\nhost = \"127.0.0.1\"\nport = {ROOM_A_PORT}\nschema = \"{db}\"\nuser = \"rb\"\npassword = \"rb\"\n\n\
                 [databases.{db}]\ntype = \"center\"\ndata_sources.ds = [\"{db}_a\"]\n\n"
            );
        }
        if let Some(db) = &self.dead_database {
            // Port 1 on loopback: nothing listens there, connections are refused at once.
            s += &format!(
                "[data_sources.{db}_a]\nroom = \"A\"\nhost = \"127.0.0.1\"\nport = 1\nschema = \"{db}\"\nuser = \"rb\"\npassword = \"rb\"\n\n\
                 [databases.{db}]\ntype = \"center\"\ndata_sources.ds = [\"{db}_a\"]\n\n"
            );
        }
        for u in &self.users {
            let dbs: Vec<String> = u.databases.iter().map(|d| format!("\"{d}\"")).collect();
            s += &format!(
                "[users.{}]\npassword_hash = \"{}\"\ndatabases = [{}]\nmode = \"{}\"\n\n",
                u.name,
                shard_rules::config::hash_password(u.password),
                dbs.join(", "),
                u.mode
            );
        }
        (config, s)
    }
}

/// A running `rainbow-bridge` process; killed on drop.
pub struct Proxy {
    child: Child,
    pub port: u16,
    /// The admin interface's port, when the config has `[admin]`.
    pub admin_port: Option<u16>,
    pub log: PathBuf,
    /// The rules file the proxy reads (rewrite it, then [`Proxy::reload`]).
    pub rules_path: PathBuf,
}

/// The `rainbow-bridge` binary built for this test run.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/rainbow-bridge
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("rainbow-bridge");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

impl Proxy {
    pub async fn start(config: &ProxyConfig) -> Proxy {
        Proxy::start_with(|rules| config.render(rules)).await
    }

    /// A proxy in `room` (pools of 16, 2 s connect timeout) with these rules.
    pub async fn start_rules(room: &str, rules: &str) -> Proxy {
        Proxy::start_rules_with(room, rules, "").await
    }

    /// [`Proxy::start_rules`] with extra `[proxy]` lines (e.g. `ban_wait_timeout_s = 1`).
    pub async fn start_rules_with(room: &str, rules: &str, proxy_lines: &str) -> Proxy {
        let rules_text = rules.to_string();
        let room = room.to_string();
        let extra = proxy_lines.to_string();
        Proxy::start_with(move |file| {
            (
                format!(
                    "[proxy]\nlisten = \"127.0.0.1:0\"\nroom = \"{room}\"\nrules = \"{file}\"\n{extra}\n\n\
                     [pool]\nmax_size = 16\nconnect_timeout_ms = 2000\n"
                ),
                rules_text.clone(),
            )
        })
        .await
    }

    /// A proxy in `room` with these rules and extra config sections (`[admin]`, `[metrics]`)
    /// after `[pool]`; an `[admin]` listen of `127.0.0.1:0` gets a free port, in `admin_port`.
    pub async fn start_rules_sections(room: &str, rules: &str, sections: &str) -> Proxy {
        let rules_text = rules.to_string();
        let room = room.to_string();
        let extra = sections.to_string();
        Proxy::start_with(move |file| {
            (
                format!(
                    "[proxy]\nlisten = \"127.0.0.1:0\"\nroom = \"{room}\"\nrules = \"{file}\"\n\n\
                     [pool]\nmax_size = 16\nconnect_timeout_ms = 2000\n\n{extra}\n"
                ),
                rules_text.clone(),
            )
        })
        .await
    }

    /// Sends SIGHUP (reload the rules file) without waiting for the outcome.
    pub fn hangup(&self) {
        let ok = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(ok.success());
    }

    /// Waits (bounded) until the log has `n` lines containing `what`; returns the last.
    pub fn wait_log(&self, what: &str, n: usize, timeout: std::time::Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(what)).collect();
            if lines.len() >= n {
                return lines.last().map(|l| l.to_string());
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    async fn start_with(render: impl Fn(&str) -> (String, String)) -> Proxy {
        Proxy::start_with_env(render, &[]).await
    }

    /// [`Proxy::start_rules_with`] with environment variables for the process (e.g. a fault
    /// switch).
    pub async fn start_rules_env(
        room: &str,
        rules: &str,
        proxy_lines: &str,
        env: &[(&str, &str)],
    ) -> Proxy {
        let rules_text = rules.to_string();
        let room = room.to_string();
        let extra = proxy_lines.to_string();
        Proxy::start_with_env(
            move |file| {
                (
                    format!(
                        "[proxy]\nlisten = \"127.0.0.1:0\"\nroom = \"{room}\"\nrules = \"{file}\"\n{extra}\n\n\
                         [pool]\nmax_size = 16\nconnect_timeout_ms = 2000\n"
                    ),
                    rules_text.clone(),
                )
            },
            env,
        )
        .await
    }

    async fn start_with_env(
        render: impl Fn(&str) -> (String, String),
        env: &[(&str, &str)],
    ) -> Proxy {
        rooms_up();
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join("rainbow-bridge-e2e");
        std::fs::create_dir_all(&dir).unwrap();
        let stem = format!("{}-{}", std::process::id(), n);
        let cfg = dir.join(format!("{stem}.toml"));
        let rules = format!("{stem}-rules.toml");
        let (config_text, rules_text) = render(&rules);
        std::fs::write(&cfg, &config_text).unwrap();
        std::fs::write(dir.join(&rules), rules_text).unwrap();
        let log = dir.join(format!("{stem}.log"));
        let mut child = Command::new(binary())
            .arg("--config")
            .arg(&cfg)
            .arg("--log-level")
            .arg("debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rainbow-bridge");
        let stderr = child.stderr.take().unwrap();
        let admin = config_text.contains("[admin]");
        let (tx, rx) = mpsc::channel::<(bool, u16)>();
        let log_path = log.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(&log_path).unwrap();
            let port_of = |line: &str, field: &str| -> Option<u16> {
                let at = line.find(field)?;
                let addr = line[at + field.len()..].split_whitespace().next()?;
                addr.rsplit(':').next()?.parse().ok()
            };
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                if line.contains("rainbow-bridge listening") {
                    if let Some(port) = port_of(&line, " listen=") {
                        let _ = tx.send((false, port));
                    }
                }
                if line.contains("admin interface listening") {
                    if let Some(port) = port_of(&line, "admin_listen=") {
                        let _ = tx.send((true, port));
                    }
                }
            }
        });
        let (mut port, mut admin_port) = (None, None);
        while port.is_none() || (admin && admin_port.is_none()) {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok((false, p)) => port = Some(p),
                Ok((true, p)) => admin_port = Some(p),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "rainbow-bridge did not start; log: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    )
                }
            }
        }
        Proxy {
            child,
            port: port.unwrap_or_default(),
            admin_port,
            log,
            rules_path: dir.join(&rules),
        }
    }

    pub fn opts(&self, user: &str, password: &str, db: Option<&str>) -> Opts {
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some(user))
            .pass(Some(password))
            .db_name(db)
            .prefer_socket(false)
            .into()
    }

    /// A mysql_async connection as `app`/`app` to `db`.
    pub async fn conn(&self, db: &str) -> Conn {
        Conn::new(self.opts("app", "app", Some(db)))
            .await
            .expect("connect through the proxy")
    }

    /// Sends SIGTERM, as `kill` or a service manager would.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(ok.success());
    }

    /// Waits (bounded) for the process to exit; returns whether it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Replaces the rules file and sends SIGHUP; waits (bounded) until the proxy logged the
    /// outcome, and returns whether the new rules were taken.
    pub fn reload(&self, rules: &str) -> bool {
        let before = self.log_text().matches("rules reload").count();
        std::fs::write(&self.rules_path, rules).unwrap();
        let ok = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(ok.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = self.log_text();
            if log.matches("rules reload").count() > before {
                let last = log
                    .lines()
                    .rev()
                    .find(|l| l.contains("rules reload"))
                    .unwrap_or("");
                return last.contains("rules reloaded");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no reload logged:\n{log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `mariadb` CLI (`-c` keeps hints, `--batch` prints tab-separated rows with a header)
/// against `port`; returns whether it succeeded, its stdout and its stderr.
pub fn mariadb(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    sql: &str,
) -> (bool, String, String) {
    let mut args = vec![
        "-h127.0.0.1".to_string(),
        format!("-P{port}"),
        format!("-u{user}"),
        format!("-p{password}"),
        "-c".into(),
        "--batch".into(),
    ];
    // An empty `db`: no database on the command line.
    if !db.is_empty() {
        args.push(db.into());
    }
    let out = Command::new("mariadb")
        .args(&args)
        .args(["-e", sql])
        .output()
        .expect("run the mariadb CLI (scripts/rooms.sh installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A port nothing listens on right now (bound, then released), for listeners whose port
/// cannot be learnt after the fact (the metrics endpoint).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` over HTTP/1.0 (no chunked body) on 127.0.0.1:`port`: the status code and the body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}
