//! The real-driver matrix (issue 10): each driver runs the same scenario through the proxy —
//! types, parameters, transactions, prepared-statement reuse, a 10k-row result, errors that
//! leave the connection usable — comparing with a direct connection. `scripts/test.sh` installs
//! the drivers (`tests/drivers/install.sh`). Every test writes its driver's summary line to
//! `target/compat-report/drivers/<driver>.txt`, which `scripts/test.sh` prints at the end.

use std::process::{Command, Output};

use rb_e2e::{fresh_db, fresh_unit_db, root, Proxy, ProxyConfig, ROOM_A_PORT};

/// Records the driver's last line (its counts) for the end-of-run report.
fn record(driver: &str, line: &str) {
    let dir = root().join("target/compat-report/drivers");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{driver}.txt")),
        format!("{driver}: {line}\n"),
    )
    .unwrap();
}

fn last_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string()
}

/// Runs a scenario program with the shared arguments; it must exit 0 and end with
/// `N passed, 0 failed`.
/// `min_checks`: how many checks the scenario counts when it runs them all.
async fn scenario(driver: &str, db_name: &str, program: &str, args: &[&str], min_checks: usize) {
    let db = fresh_db(db_name).await;
    let proxy = Proxy::start(&ProxyConfig::single(&db)).await;
    let port = proxy.port.to_string();
    let direct = ROOM_A_PORT.to_string();
    // PyMySQL's scenario (issue 3) names the proxy's port `--proxy-port`.
    let port_args = if driver == "pymysql" {
        [
            "--proxy-port",
            &port,
            "--direct-port",
            &direct,
            "--user",
            "app",
        ]
    } else {
        [
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--direct-port",
            &direct,
        ]
    };
    let user_args: &[&str] = if driver == "pymysql" {
        &["--password", "app", "--db", &db]
    } else {
        &["--user", "app", "--password", "app", "--db", &db]
    };
    let out = Command::new(program)
        .args(args)
        .args(port_args)
        .args(user_args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): tests/drivers/install.sh installs the drivers")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = last_line(&out);
    record(
        driver,
        &if out.status.success() {
            line.clone()
        } else {
            format!("FAILED ({}): {line}", out.status)
        },
    );
    assert!(
        out.status.success() && line.contains(" passed, 0 failed"),
        "{driver} scenario failed ({}):\n{stdout}\n{}\nproxy log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        proxy.log_text()
    );
    // Every check counted: a scenario that checked nothing is a failure too.
    let passed: usize = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        passed >= min_checks,
        "{driver}: only {passed} checks ran:\n{stdout}"
    );
}

#[tokio::test]
async fn mysql_connector_python_runs_its_scenario_pure_and_c_extension() {
    scenario(
        "mysql-connector-python",
        "drv_connector",
        "python3",
        &["tests/drivers/connector_python.py"],
        600,
    )
    .await;
}

#[tokio::test]
async fn mariadb_connector_j_runs_its_scenario_client_and_server_prepared() {
    scenario(
        "mariadb-connector-j",
        "drv_java",
        "java",
        &[
            "-cp",
            "/usr/share/java/mariadb-java-client.jar",
            "tests/drivers/Scenario.java",
        ],
        380,
    )
    .await;
}

#[tokio::test]
async fn node_mysql2_runs_its_scenario_with_query_and_execute() {
    scenario(
        "node-mysql2",
        "drv_node",
        "node",
        &["tests/drivers/node/scenario.js"],
        300,
    )
    .await;
}

#[tokio::test]
async fn pymysql_runs_its_scenario() {
    scenario(
        "pymysql",
        "drv_pymysql",
        "python3",
        &["tests/python/pymysql_scenario.py"],
        12,
    )
    .await;
}

/// The `mariadb` CLI in batch mode, utf8mb4, no option files: `(ok, stdout, stderr)`.
fn cli(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    extra: &[&str],
    sql: &str,
) -> (bool, String, String) {
    let out = Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h127.0.0.1",
            "--batch",
            "--default-character-set=utf8mb4",
        ])
        .arg(format!("-P{port}"))
        .arg(format!("-u{user}"))
        .arg(format!("-p{password}"))
        .args(extra)
        .args(["-D", db, "-e", sql])
        .output()
        .expect("run the mariadb CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A unit database whose table has no sharding rule: a write needs the ShardingKey hint.
fn unit_rules(db: &str) -> String {
    let hash = shard_rules::config::hash_password("app");
    format!(
        r#"version = 1
[rooms.A]
role = "center"
[rooms.B]
role = "unit"
[route_codes]
count = 10000
[traffic]
version = 1
owners.A = ["0-4999"]
owners.B = ["5000-9999"]
[data_sources.u_a]
room = "A"
host = "127.0.0.1"
port = {ROOM_A_PORT}
schema = "{db}"
user = "rb"
password = "rb"
[data_sources.u_b]
room = "B"
host = "127.0.0.1"
port = {}
schema = "{db}"
user = "rb"
password = "rb"
[databases.{db}]
type = "unit"
data_sources.ds = ["u_a", "u_b"]
[users.app]
password_hash = "{hash}"
databases = ["{db}"]
mode = "unit"
"#,
        rb_e2e::ROOM_B_PORT
    )
}

#[tokio::test]
async fn the_mariadb_cli_keeps_hints_with_c_and_runs_the_scenario() {
    let db = fresh_unit_db(
        "drv_cli",
        &["CREATE TABLE t_note (id INT PRIMARY KEY, buyer INT, note VARCHAR(20)) DEFAULT CHARSET=utf8mb4"],
    )
    .await;
    let proxy = Proxy::start_rules("A", &unit_rules(&db)).await;
    // Replaced with the counts when every check passed.
    record("mariadb-cli", "FAILED (see the test's output)");
    let run = |extra: &[&str], sql: &str| cli(proxy.port, "app", "app", &db, extra, sql);
    let mut checks = 0;
    // With -c the hint reaches the proxy: a write of room A's key is allowed.
    let (ok, _, err) = run(
        &["-c"],
        "/* rb: sharding_key=1001 */ INSERT INTO t_note (id, buyer, note) VALUES (1, 1001, 'kept');",
    );
    assert!(ok, "hinted write with -c: {err}");
    checks += 1;
    // Without -c the CLI strips the comment: the same write has no ShardingKey.
    let (ok, _, err) = run(
        &[],
        "/* rb: sharding_key=1001 */ INSERT INTO t_note (id, buyer, note) VALUES (2, 1001, 'stripped');",
    );
    assert!(!ok && err.contains("has no ShardingKey"), "{err}");
    checks += 1;
    // Another room's key is refused by name.
    let (ok, _, err) = run(
        &["-c"],
        "/* rb: sharding_key=5001 */ INSERT INTO t_note (id, buyer, note) VALUES (3, 5001, 'other room');",
    );
    assert!(!ok && err.contains("belongs to room `B`"), "{err}");
    checks += 1;
    // The CLI has no protocol-level prepared statements, and SQL-level PREPARE hides the
    // statement from the proxy: in a unit database it is refused (docs/multi-active.md).
    let (ok, _, err) = run(&["-c"], "PREPARE s FROM 'SELECT 1'");
    assert!(
        !ok && err.contains("SQL-level PREPARE/EXECUTE hides the statement"),
        "{err}"
    );
    checks += 1;
    // Types, a transaction, an error that leaves the session usable, and 10,000 rows, in one
    // script; compared with MariaDB directly.
    let (ok, _, err) = run(
        &["-c"],
        "/* rb: sharding_key=1001 */ INSERT INTO t_note (id, buyer, note) VALUES (10, 1001, 'é😀');",
    );
    assert!(ok, "{err}");
    let script = "START TRANSACTION;\n\
        /* rb: sharding_key=1001 */ INSERT INTO t_note (id, buyer, note) VALUES (11, 1001, 'rolled back');\n\
        ROLLBACK;\n\
        SELECT id, buyer, note, HEX(note), CAST(1.50 AS DECIMAL(5,2)) d, TIME'-01:02:03.5' t, NULL n FROM t_note ORDER BY id;\n\
        SELECT note FROM t_note WHERE id = 1; SELECT note FROM t_note WHERE id = 10;\n\
        SELECT COUNT(*), SUM(seq), MIN(seq), MAX(seq) FROM seq_1_to_10000;\n\
        SELECT seq FROM seq_1_to_10000 ORDER BY seq;\n";
    let (ok, out_p, err) = run(&["-c"], script);
    assert!(ok, "scenario through the proxy: {err}");
    let direct = cli(ROOM_A_PORT, "rb", "rb", &db, &["-c"], script);
    assert!(direct.0, "scenario directly: {}", direct.2);
    assert_eq!(
        out_p, direct.1,
        "the CLI's output through the proxy and directly"
    );
    assert_eq!(
        out_p.lines().filter(|l| l.parse::<u32>().is_ok()).count(),
        10_000
    );
    checks += 3;
    let (ok, _, err) = run(&["-c"], "SELECT * FROM no_such_table");
    assert!(!ok && err.contains("ERROR 1146 (42S02)"), "{err}");
    let (ok, out, _) = run(&["-c"], "SELECT * FROM no_such_table; SELECT 1");
    assert!(
        !ok && !out.contains('1'),
        "the CLI stops at the error: {out}"
    );
    // Statements read from stdin with --force go on after an error, on the same session.
    let mut child = Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h127.0.0.1",
            "--batch",
            "-c",
            "--force",
            "-uapp",
            "-papp",
        ])
        .arg(format!("-P{}", proxy.port))
        .args(["-D", &db])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(
                b"SET @mark = 'same session';\nSELECT * FROM no_such_table;\nSELECT @mark;\n",
            )
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("same session"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ERROR 1146"));
    checks += 3;
    record("mariadb-cli", &format!("{checks} passed, 0 failed"));
}

fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn sysbench(args: &[&str]) -> (bool, String) {
    let out = Command::new("sysbench")
        .args(args)
        .output()
        .expect("run sysbench (tests/drivers/install.sh installs it)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The number after `label` on sysbench's report line.
fn count_after(report: &str, label: &str) -> Option<u64> {
    report
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.split_whitespace().nth(label.split_whitespace().count()))
        .and_then(|n| n.parse().ok())
}

#[tokio::test]
async fn sysbench_prepares_runs_and_cleans_up_through_the_proxy() {
    let db = fresh_db("drv_sysbench").await;
    let proxy = Proxy::start(&ProxyConfig::single(&db)).await;
    record("sysbench", "FAILED (see the test's output)");
    let port = format!("--mysql-port={}", proxy.port);
    let dbarg = format!("--mysql-db={db}");
    let common = [
        "--mysql-host=127.0.0.1",
        port.as_str(),
        "--mysql-user=app",
        "--mysql-password=app",
        dbarg.as_str(),
        "--tables=2",
        "--table-size=1000",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["oltp_read_write".to_string()];
        v.extend(common.iter().map(|s| s.to_string()));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let (ok, out) = sysbench(&argv(&with(&["prepare"])));
    assert!(ok, "sysbench prepare:\n{out}\n{}", proxy.log_text());
    let mut transactions = 0;
    for mode in ["--db-ps-mode=auto", "--db-ps-mode=disable"] {
        let (ok, out) = sysbench(&argv(&with(&[
            mode,
            "--threads=2",
            "--events=400",
            "--time=0",
            "run",
        ])));
        assert!(ok, "sysbench run {mode}:\n{out}\n{}", proxy.log_text());
        let t = count_after(&out, "transactions:").expect("a transactions line");
        assert_eq!(t, 400, "{mode}: every event committed:\n{out}");
        transactions += t;
    }
    let mut c = rb_e2e::direct(Some(&db)).await;
    use mysql_async::prelude::Queryable;
    let n: u64 = c
        .query_first("SELECT COUNT(*) FROM sbtest1")
        .await
        .unwrap()
        .unwrap();
    // oltp_read_write deletes and re-inserts one row per transaction: the count is unchanged.
    assert_eq!(n, 1000);
    let (ok, out) = sysbench(&argv(&with(&["cleanup"])));
    assert!(ok, "sysbench cleanup:\n{out}");
    let left: Option<String> = c
        .query_first(format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}'"
        ))
        .await
        .unwrap();
    assert_eq!(left, None, "cleanup dropped every table");
    record(
        "sysbench",
        &format!(
            "{transactions} oltp_read_write transactions in 2 modes (prepared and text), 0 failed"
        ),
    );
}
