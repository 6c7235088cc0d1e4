//! Real clients other than mysql_async: the `mariadb` CLI and PyMySQL (a classic-EOF driver).

use std::process::Command;

use rb_e2e::{fresh_db, mariadb, root, Proxy, ProxyConfig, ROOM_A_PORT};

#[tokio::test]
async fn the_mariadb_cli_gives_the_same_output_through_the_proxy_as_directly() {
    let db = fresh_db("cli").await;
    let proxy = Proxy::start(&ProxyConfig::single(&db)).await;
    let script = "CREATE TABLE t (id INT PRIMARY KEY, note VARCHAR(20)); \
                  INSERT INTO t VALUES (1, 'one'), (2, /* a comment kept by -c */ 'two'); \
                  SELECT * FROM t ORDER BY id; SELECT 1/0; SHOW WARNINGS; \
                  SELECT COUNT(*) AS n FROM t; DROP TABLE t;";
    let (ok_p, out_p, err_p) = mariadb(proxy.port, "app", "app", &db, script);
    assert!(ok_p, "through the proxy: {err_p}");
    let (ok_d, out_d, err_d) = mariadb(ROOM_A_PORT, "rb", "rb", &db, script);
    assert!(ok_d, "direct: {err_d}");
    assert_eq!(out_p, out_d);
    let (ok, _, err) = mariadb(proxy.port, "app", "app", &db, "SELEC 1");
    assert!(!ok);
    assert!(err.contains("ERROR 1064 (42000)"), "{err}");
    let (ok, _, err) = mariadb(proxy.port, "app", "nope", &db, "SELECT 1");
    assert!(!ok);
    assert!(err.contains("ERROR 1045 (28000)"), "{err}");
}

#[tokio::test]
async fn pymysql_runs_its_scenario_through_the_proxy() {
    let db = fresh_db("pymysql").await;
    let proxy = Proxy::start(&ProxyConfig::single(&db)).await;
    let out = Command::new("python3")
        .arg(root().join("tests/python/pymysql_scenario.py"))
        .args([
            "--proxy-port",
            &proxy.port.to_string(),
            "--direct-port",
            &ROOM_A_PORT.to_string(),
        ])
        .args(["--user", "app", "--password", "app", "--db", &db])
        .output()
        .expect("run python3 (scripts/test.sh installs PyMySQL)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "PyMySQL scenario failed:\n{stdout}\n{}\nproxy log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log_text()
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
