//! The `mariadb` CLI through the proxy (the other real drivers are in drivers.rs).

use rb_e2e::{fresh_db, mariadb, Proxy, ProxyConfig, ROOM_A_PORT};

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
