//! The proxy as mysql_async (a CLIENT_DEPRECATE_EOF client) sees it, compared with MariaDB
//! itself: types and metadata in both protocols, transactions, session state and pooling,
//! errors, concurrency.

use mysql_async::prelude::*;
use mysql_async::{Column, Conn, Row, Value};
use rb_e2e::{direct, fresh_db, Proxy, ProxyConfig, TestUser};

fn meta(c: &Column) -> String {
    format!(
        "{}|{}|{}|{}|{}|{:?}|{:?}|{}|{}|{}",
        c.schema_str(),
        c.table_str(),
        c.org_table_str(),
        c.name_str(),
        c.org_name_str(),
        c.column_type(),
        c.flags(),
        c.column_length(),
        c.decimals(),
        c.character_set()
    )
}

/// Runs `sql` in text and binary protocol on both connections; everything must be identical.
async fn same_everywhere(proxy: &mut Conn, direct: &mut Conn, sql: &str) -> usize {
    let mut n = 0;
    for binary in [false, true] {
        let (p, d): (Vec<Row>, Vec<Row>) = if binary {
            (
                proxy.exec(sql, ()).await.unwrap(),
                direct.exec(sql, ()).await.unwrap(),
            )
        } else {
            (
                proxy.query(sql).await.unwrap(),
                direct.query(sql).await.unwrap(),
            )
        };
        assert_eq!(p.len(), d.len(), "{sql} (binary {binary}): row count");
        n = p.len();
        for (pr, dr) in p.iter().zip(&d) {
            let pm: Vec<String> = pr.columns_ref().iter().map(meta).collect();
            let dm: Vec<String> = dr.columns_ref().iter().map(meta).collect();
            assert_eq!(pm, dm, "{sql} (binary {binary}): column metadata");
            let pv: Vec<Value> = pr.clone().unwrap();
            let dv: Vec<Value> = dr.clone().unwrap();
            assert_eq!(pv, dv, "{sql} (binary {binary}): values");
        }
    }
    n
}

#[tokio::test]
async fn every_mariadb_type_round_trips_with_identical_metadata_in_both_protocols() {
    let db = fresh_db("types").await;
    let proxy = Proxy::start(&ProxyConfig::single(&db)).await;
    let mut d = direct(Some(&db)).await;
    d.query_drop(
        "CREATE TABLE t (
            id INT PRIMARY KEY,
            ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED,
            mi MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
            de DECIMAL(30,10), f FLOAT, dbl DOUBLE,
            d DATE, dt DATETIME(6), ts TIMESTAMP(6) NULL, tm TIME(6), y YEAR,
            vc VARCHAR(50) CHARACTER SET utf8mb4, c CHAR(5), bin BINARY(4), vb VARBINARY(10),
            bl BLOB, tx TEXT, js JSON, en ENUM('a','b'), st SET('x','y'), bt BIT(10)
        )",
    )
    .await
    .unwrap();
    d.query_drop("SET SESSION sql_mode = ''").await.unwrap();
    d.query_drop(
        "INSERT INTO t VALUES
         (1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
          -9223372036854775808, 18446744073709551615, -12345678901234567890.0123456789, 3.25, -1.5e300,
          '0000-00-00', '0000-00-00 00:00:00', '2038-01-19 03:14:07.999999', '-838:59:59.000000', 1901,
          'emoji 😀🚀 ü', 'ab', x'00ff0102', x'00', x'00ff7f80', 'text', '{\"a\": [1, 2.5, null]}', 'b', 'x,y', b'1010101010'),
         (2, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0,
          9223372036854775807, 0, 0.0000000001, -0.0, 2.2250738585072014e-308,
          '9999-12-31', '9999-12-31 23:59:59.999999', '1970-01-01 00:00:01', '100:00:00.5', 2155,
          '', '', x'', '', '', '', '[]', 'a', '', b'0'),
         (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
          NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    )
    .await
    .unwrap();
    let mut p = proxy.conn(&db).await;
    assert_eq!(
        same_everywhere(&mut p, &mut d, "SELECT * FROM t ORDER BY id").await,
        3
    );
    same_everywhere(
        &mut p,
        &mut d,
        "SELECT id, de * 2, CAST(tm AS CHAR), vc, LENGTH(bl), -tu FROM t ORDER BY id",
    )
    .await;
    same_everywhere(
        &mut p,
        &mut d,
        "SELECT NULL, 1, 1.5, 'x', _binary'y', NOW() - NOW(), CAST(1 AS UNSIGNED)",
    )
    .await;
}

#[tokio::test]
async fn the_server_version_is_the_backends_with_the_mariadb_prefix_and_ids_are_the_proxys() {
    let db = fresh_db("version").await;
    let proxy = Proxy::start(&ProxyConfig::single(&db)).await;
    let raw1 =
        rb_e2e::raw::Raw::connect(proxy.port, "app", "app", Some(&db), "mysql_native_password")
            .await
            .unwrap();
    let raw2 =
        rb_e2e::raw::Raw::connect(proxy.port, "app", "app", Some(&db), "mysql_native_password")
            .await
            .unwrap();
    let mut d = direct(None).await;
    let version: String = d.query_first("SELECT VERSION()").await.unwrap().unwrap();
    assert_eq!(raw1.server_version, format!("5.5.5-{version}"));
    assert_ne!(raw1.connection_id, 0);
    assert_ne!(raw1.connection_id, raw2.connection_id);
    let mut p = proxy.conn(&db).await;
    let pv: String = p.query_first("SELECT VERSION()").await.unwrap().unwrap();
    assert_eq!(pv, version);
    let (pm, dm): (u64, u64) = (
        p.query_first("SELECT @@max_allowed_packet")
            .await
            .unwrap()
            .unwrap(),
        d.query_first("SELECT @@max_allowed_packet")
            .await
            .unwrap()
            .unwrap(),
    );
    assert_eq!(pm, dm, "@@max_allowed_packet is the server's, not made up");
}

#[tokio::test]
async fn logins_are_refused_with_mariadbs_own_errors() {
    let db = fresh_db("login").await;
    let other = fresh_db("login_other").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.databases.push(other.clone());
    let proxy = Proxy::start(&cfg).await;
    let err = |e: mysql_async::Error| match e {
        mysql_async::Error::Server(s) => (s.code, s.state, s.message),
        other => panic!("expected a server error, got {other:?}"),
    };
    let e = err(Conn::new(proxy.opts("app", "wrong", Some(&db)))
        .await
        .unwrap_err());
    assert_eq!((e.0, e.1.as_str()), (1045, "28000"));
    assert!(
        e.2.starts_with("Access denied for user 'app'@'127.0.0.1' (using password: YES)"),
        "{}",
        e.2
    );
    let e = err(Conn::new(proxy.opts("nobody", "app", Some(&db)))
        .await
        .unwrap_err());
    assert_eq!(e.0, 1045);
    let e = err(Conn::new(proxy.opts("app", "app", Some("no_such_db")))
        .await
        .unwrap_err());
    assert_eq!((e.0, e.2.as_str()), (1049, "Unknown database 'no_such_db'"));
    let e = err(Conn::new(proxy.opts("app", "app", Some(&other)))
        .await
        .unwrap_err());
    assert_eq!((e.0, e.1.as_str()), (1044, "42000"));
    // And on an open connection: USE of an unknown or forbidden database.
    let mut c = proxy.conn(&db).await;
    let e = err(c.query_drop("USE no_such_db").await.unwrap_err());
    assert_eq!(e.0, 1049);
    let e = err(c.query_drop(format!("USE {other}")).await.unwrap_err());
    assert_eq!(e.0, 1044);
    let now: Option<String> = c.query_first("SELECT DATABASE()").await.unwrap().unwrap();
    assert_eq!(
        now.as_deref(),
        Some(db.as_str()),
        "a refused USE leaves the database unchanged"
    );
}

#[tokio::test]
async fn backend_errors_arrive_unchanged_and_the_connection_stays_usable() {
    let db = fresh_db("errors").await;
    let proxy = Proxy::start(&ProxyConfig::single(&db)).await;
    let mut d = direct(Some(&db)).await;
    d.query_drop("CREATE TABLE c (id INT PRIMARY KEY, qty INT, CHECK (qty > 0))")
        .await
        .unwrap();
    let mut p = proxy.conn(&db).await;
    for sql in [
        "SELEC 1",
        "SELECT * FROM no_such_table",
        "INSERT INTO c VALUES (1, 0)",
        "SIGNAL SQLSTATE '45000' SET MYSQL_ERRNO = 4999, MESSAGE_TEXT = 'custom'",
    ] {
        let pe = p.query_drop(sql).await.unwrap_err();
        let de = d.query_drop(sql).await.unwrap_err();
        assert_eq!(pe.to_string(), de.to_string(), "{sql}");
        let one: i64 = p.query_first("SELECT 1").await.unwrap().unwrap();
        assert_eq!(one, 1);
    }
    let pe = p
        .query_drop("INSERT INTO c VALUES (1, 0)")
        .await
        .unwrap_err();
    assert!(
        matches!(pe, mysql_async::Error::Server(ref s) if s.code == 4025),
        "{pe}"
    );
}

#[tokio::test]
async fn transactions_commit_and_roll_back_with_isolation_between_clients() {
    let db = fresh_db("txn").await;
    let proxy = Proxy::start(&ProxyConfig::single(&db)).await;
    let mut d = direct(Some(&db)).await;
    d.query_drop("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .unwrap();
    let mut a = proxy.conn(&db).await;
    let mut b = proxy.conn(&db).await;
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let mine: i64 = a
        .query_first("SELECT COUNT(*) FROM t")
        .await
        .unwrap()
        .unwrap();
    let theirs: i64 = b
        .query_first("SELECT COUNT(*) FROM t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (mine, theirs),
        (1, 0),
        "uncommitted row visible only inside the transaction"
    );
    a.query_drop("ROLLBACK").await.unwrap();
    let after: i64 = b
        .query_first("SELECT COUNT(*) FROM t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, 0);
    let mut tx = a.start_transaction(Default::default()).await.unwrap();
    tx.exec_drop("INSERT INTO t VALUES (?)", (2,))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let ids: Vec<i64> = b.query("SELECT id FROM t").await.unwrap();
    assert_eq!(ids, vec![2]);
    // autocommit=0: every statement runs in a transaction that only COMMIT ends.
    a.query_drop("SET autocommit = 0").await.unwrap();
    a.query_drop("INSERT INTO t VALUES (3)").await.unwrap();
    let seen: i64 = b
        .query_first("SELECT COUNT(*) FROM t WHERE id = 3")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, 0);
    a.query_drop("COMMIT").await.unwrap();
    let seen: i64 = b
        .query_first("SELECT COUNT(*) FROM t WHERE id = 3")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, 1);
}

#[tokio::test]
async fn session_settings_follow_the_session_across_pooled_connections_and_never_leak() {
    let db = fresh_db("settings").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.pool_max = 1; // both clients must share one backend connection
    let proxy = Proxy::start(&cfg).await;
    let mut fresh = direct(Some(&db)).await;
    let defaults: (String, String, i64) = fresh
        .query_first("SELECT @@sql_mode, @@time_zone, @@autocommit")
        .await
        .unwrap()
        .unwrap();
    let mut a = proxy.conn(&db).await;
    let mut b = proxy.conn(&db).await;
    a.query_drop("SET sql_mode = 'ANSI', time_zone = '+08:00'")
        .await
        .unwrap();
    a.query_drop("SET NAMES latin1").await.unwrap();
    for _ in 0..20 {
        let seen: (String, String, i64) = b
            .query_first("SELECT @@sql_mode, @@time_zone, @@autocommit")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen, defaults, "another session's settings leaked");
        let cs: String = b
            .query_first("SELECT @@character_set_client")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cs, "utf8mb4");
        let mine: (String, String) = a
            .query_first("SELECT @@time_zone, @@character_set_client")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(mine, ("+08:00".to_string(), "latin1".to_string()));
        let mode: String = a.query_first("SELECT @@sql_mode").await.unwrap().unwrap();
        assert!(mode.contains("ANSI_QUOTES"), "{mode}");
    }
    // autocommit and the isolation level follow the session too, and never leak.
    let iso_default: String = fresh
        .query_first("SELECT @@tx_isolation")
        .await
        .unwrap()
        .unwrap();
    a.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .unwrap();
    a.query_drop("SET autocommit = 0").await.unwrap();
    a.query_drop("COMMIT").await.unwrap();
    let theirs: (i64, String) = b
        .query_first("SELECT @@autocommit, @@tx_isolation")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(theirs, (1, iso_default.clone()));
    let mine: (i64, String) = a
        .query_first("SELECT @@autocommit, @@tx_isolation")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mine, (0, "READ-COMMITTED".to_string()));
    a.query_drop("COMMIT").await.unwrap();
    a.query_drop("SET autocommit = 1").await.unwrap();
    // Values computed from the old value are read back, not replayed as text.
    a.query_drop("SET sql_mode = CONCAT(@@sql_mode, ',NO_ZERO_DATE')")
        .await
        .unwrap();
    let _: Vec<i64> = b.query("SELECT 1").await.unwrap();
    let mode: String = a.query_first("SELECT @@sql_mode").await.unwrap().unwrap();
    assert!(
        mode.contains("NO_ZERO_DATE") && mode.contains("ANSI_QUOTES"),
        "{mode}"
    );
}

#[tokio::test]
async fn user_variables_and_temporary_tables_pin_the_session_to_its_backend() {
    let db = fresh_db("pinning").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.pool_max = 2;
    let proxy = Proxy::start(&cfg).await;
    let mut a = proxy.conn(&db).await;
    let mut b = proxy.conn(&db).await;
    a.query_drop("SET @secret = 42").await.unwrap();
    a.query_drop("CREATE TEMPORARY TABLE tmp (x INT)")
        .await
        .unwrap();
    a.query_drop("INSERT INTO tmp VALUES (7)").await.unwrap();
    for _ in 0..10 {
        let theirs: Option<i64> = b.query_first("SELECT @secret").await.unwrap().unwrap();
        assert_eq!(theirs, None, "user variable leaked to another session");
        let mine: i64 = a.query_first("SELECT @secret").await.unwrap().unwrap();
        assert_eq!(mine, 42);
        let x: i64 = a.query_first("SELECT x FROM tmp").await.unwrap().unwrap();
        assert_eq!(x, 7);
    }
    // COM_RESET_CONNECTION really resets: variables, temporary tables, settings, last insert id.
    let mut d = direct(Some(&db)).await;
    let default_mode: String = d.query_first("SELECT @@sql_mode").await.unwrap().unwrap();
    a.query_drop("SET sql_mode = 'ANSI'").await.unwrap();
    a.query_drop("CREATE TABLE ai (id INT AUTO_INCREMENT PRIMARY KEY)")
        .await
        .unwrap();
    a.query_drop("INSERT INTO ai VALUES (NULL)").await.unwrap();
    a.reset().await.unwrap();
    let gone: Option<i64> = a.query_first("SELECT @secret").await.unwrap().unwrap();
    assert_eq!(gone, None);
    let (mode, last): (String, u64) = a
        .query_first("SELECT @@sql_mode, LAST_INSERT_ID()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((mode, last), (default_mode, 0));
    assert!(
        a.query_drop("SELECT x FROM tmp").await.is_err(),
        "temporary table survived a reset"
    );
}

#[tokio::test]
async fn last_insert_id_and_warnings_belong_to_the_session_not_the_connection() {
    let db = fresh_db("lastid").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.pool_max = 4;
    let proxy = Proxy::start(&cfg).await;
    let mut d = direct(Some(&db)).await;
    d.query_drop("CREATE TABLE t (id BIGINT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    let mut a = proxy.conn(&db).await;
    let mut b = proxy.conn(&db).await;
    a.query_drop("INSERT INTO t (v) VALUES (1)").await.unwrap();
    let id_a = a.last_insert_id().unwrap();
    for _ in 0..5 {
        b.query_drop("INSERT INTO t (v) VALUES (2)").await.unwrap();
        let seen: u64 = a
            .query_first("SELECT LAST_INSERT_ID()")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen, id_a, "LAST_INSERT_ID() must be this session's");
    }
    a.query_drop("SELECT 1/0").await.unwrap();
    b.query_drop("SELECT 1").await.unwrap();
    let w: Vec<(String, u32, String)> = a.query("SHOW WARNINGS").await.unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].1, 1365);
}

#[tokio::test]
async fn prepared_statements_are_reused_with_new_parameters_and_close() {
    let db = fresh_db("prepared").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.pool_max = 3;
    let proxy = Proxy::start(&cfg).await;
    let mut d = direct(Some(&db)).await;
    d.query_drop("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20))")
        .await
        .unwrap();
    let mut p = proxy.conn(&db).await;
    let mut others: Vec<Conn> = Vec::new();
    for _ in 0..2 {
        others.push(proxy.conn(&db).await);
    }
    let ins = p.prep("INSERT INTO t VALUES (?, ?)").await.unwrap();
    let sel = p.prep("SELECT name FROM t WHERE id = ?").await.unwrap();
    for i in 0..30i32 {
        // Keep other sessions busy so statements move between backend connections.
        let o = &mut others[(i % 2) as usize];
        o.query_drop("SELECT 1").await.unwrap();
        p.exec_drop(&ins, (i, format!("name-{i}"))).await.unwrap();
        let name: String = p.exec_first(&sel, (i,)).await.unwrap().unwrap();
        assert_eq!(name, format!("name-{i}"));
    }
    p.close(sel).await.unwrap();
    let count: i64 = p
        .exec_first("SELECT COUNT(*) FROM t WHERE id >= ?", (0,))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(count, 30);
    let e = p
        .exec_drop("SELECT * FROM no_such_table WHERE id = ?", (1,))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("1146"), "{e}");
    let one: i64 = p.exec_first("SELECT ?", (1,)).await.unwrap().unwrap();
    assert_eq!(one, 1);
}

#[tokio::test]
async fn multi_statement_text_returns_every_result_and_refuses_what_it_cannot_check() {
    let db = fresh_db("multi").await;
    let proxy = Proxy::start(&ProxyConfig::single(&db)).await;
    let mut p = proxy.conn(&db).await;
    let mut r = p.query_iter("SELECT 1; SELECT 2, 3; DO 0").await.unwrap();
    let first: Vec<i64> = r.collect().await.unwrap();
    let second: Vec<(i64, i64)> = r.collect().await.unwrap();
    assert_eq!((first, second), (vec![1], vec![(2, 3)]));
    drop(r);
    let e = p.query_drop("SELECT 1; USE mysql").await.unwrap_err();
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 8011),
        "{e}"
    );
    p.query_drop("SET @v = 5; SET sql_mode = 'ANSI'")
        .await
        .unwrap();
    let (v, mode): (i64, String) = p
        .query_first("SELECT @v, @@sql_mode")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, 5);
    assert!(mode.contains("ANSI_QUOTES"));
}

#[tokio::test]
async fn change_user_authenticates_for_real_and_resets_the_session() {
    let db = fresh_db("chuser").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.users.push(TestUser {
        name: "other",
        password: "pw2",
        databases: vec![db.clone()],
        mode: "unit",
    });
    let proxy = Proxy::start(&cfg).await;
    // A failed COM_CHANGE_USER leaves the old session intact (raw client: drivers give up
    // on a connection after a failed change_user).
    let mut raw =
        rb_e2e::raw::Raw::connect(proxy.port, "app", "app", Some(&db), "mysql_native_password")
            .await
            .unwrap();
    assert!(matches!(
        raw.query(b"SET @x = 7").await,
        rb_e2e::raw::Reply::Ok { .. }
    ));
    for (password, database, code) in [("nope", db.as_str(), 1045u16), ("pw2", "no_such_db", 1049)]
    {
        match raw.change_user("other", password, database).await {
            rb_e2e::raw::Reply::Err(e) => assert_eq!(e.code, code, "{e:?}"),
            other => panic!("{other:?}"),
        }
        let v = raw.query(b"SELECT @x, CAST(DATABASE() AS CHAR)").await;
        let rb_e2e::raw::Reply::Rows(rows) = v else {
            panic!("{v:?}")
        };
        assert_eq!(
            rows[0][0].as_deref(),
            Some(&b"7"[..]),
            "the old session lost its variables"
        );
        assert_eq!(rows[0][1].as_deref(), Some(db.as_bytes()));
    }
    assert!(matches!(
        raw.change_user("other", "pw2", &db).await,
        rb_e2e::raw::Reply::Ok { .. }
    ));
    let v = raw.query(b"SELECT @x").await;
    assert_eq!(
        v,
        rb_e2e::raw::Reply::Rows(vec![vec![None]]),
        "a successful change resets the session"
    );
    let mut p = proxy.conn(&db).await;
    p.query_drop("SET @x = 1").await.unwrap();
    let good = mysql_async::ChangeUserOpts::default()
        .with_user(Some("other".into()))
        .with_pass(Some("pw2".into()))
        .with_db_name(Some(db.clone()));
    p.change_user(good).await.unwrap();
    let x: Option<i64> = p.query_first("SELECT @x").await.unwrap().unwrap();
    assert_eq!(x, None, "COM_CHANGE_USER resets user variables");
}

#[tokio::test]
async fn two_hundred_concurrent_clients_run_a_mixed_workload_without_error() {
    let db = fresh_db("concurrent").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.pool_max = 24;
    let proxy = Proxy::start(&cfg).await;
    let mut d = direct(Some(&db)).await;
    d.query_drop("CREATE TABLE t (id INT PRIMARY KEY, client INT, v VARCHAR(20))")
        .await
        .unwrap();
    let opts = proxy.opts("app", "app", Some(&db));
    let tasks: Vec<_> = (0..200)
        .map(|c| {
            let opts = opts.clone();
            tokio::spawn(async move {
                let mut conn = Conn::new(opts).await?;
                for k in 0..5 {
                    let id = c * 10 + k;
                    if k % 2 == 0 {
                        let mut tx = conn.start_transaction(Default::default()).await?;
                        tx.exec_drop("INSERT INTO t VALUES (?, ?, ?)", (id, c, "tx"))
                            .await?;
                        tx.commit().await?;
                    } else {
                        conn.query_drop(format!("INSERT INTO t VALUES ({id}, {c}, 'auto')"))
                            .await?;
                    }
                    let n: i64 = conn
                        .exec_first("SELECT COUNT(*) FROM t WHERE client = ?", (c,))
                        .await?
                        .unwrap();
                    assert_eq!(n, (k + 1) as i64);
                }
                conn.disconnect().await?;
                Ok::<_, mysql_async::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let total: i64 = d
        .query_first("SELECT COUNT(*) FROM t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(total, 1000);
}

#[tokio::test]
async fn a_dead_backend_gets_a_precise_error_quickly() {
    let db = fresh_db("deadbackend").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.dead_database = Some("gone".into());
    cfg.users[0].databases.push("gone".into());
    let proxy = Proxy::start(&cfg).await;
    let mut p = proxy.conn(&db).await;
    let e = p.query_drop("USE gone").await.unwrap_err();
    match e {
        mysql_async::Error::Server(s) => {
            assert_eq!(s.code, 8001, "{}", s.message);
            assert!(
                s.message.contains("data source `gone_a` in room `A`"),
                "{}",
                s.message
            );
        }
        other => panic!("{other:?}"),
    }
    let one: i64 = p.query_first("SELECT 1").await.unwrap().unwrap();
    assert_eq!(one, 1, "the session stays on its database and usable");
    // The operator sees it too: one log line naming the data source, its room and the cause.
    let log = proxy.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("backend checkout failed"))
        .unwrap_or_else(|| panic!("no log line for the dead backend:\n{log}"));
    assert!(
        line.contains("data_source=gone_a")
            && line.contains("room=A")
            && line.contains("code=8001"),
        "{line}"
    );
}

#[tokio::test]
async fn shutdown_closes_idle_sessions_and_lets_an_open_transaction_commit() {
    let db = fresh_db("shutdown").await;
    let mut proxy = Proxy::start(&ProxyConfig::single(&db)).await;
    let mut d = direct(Some(&db)).await;
    d.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let mut idle = proxy.conn(&db).await;
    let mut busy = proxy.conn(&db).await;
    busy.query_drop("BEGIN").await.unwrap();
    busy.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    proxy.terminate();
    // The idle session is closed once the proxy has seen the signal; on a loaded machine that
    // can take a moment, so wait for it (bounded) instead of guessing a delay.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while idle.query_drop("SELECT 1").await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "an idle session must be closed at shutdown"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    busy.query_drop("INSERT INTO t VALUES (2)").await.unwrap();
    busy.query_drop("COMMIT").await.unwrap();
    assert!(
        proxy.wait_exit(std::time::Duration::from_secs(10)),
        "proxy did not exit after the last transaction"
    );
    let n: i64 = d
        .query_first("SELECT COUNT(*) FROM t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 2, "the transaction that was open at shutdown committed");
    assert!(
        proxy.log_text().contains("all sessions closed"),
        "{}",
        proxy.log_text()
    );
}

#[tokio::test]
async fn a_unit_room_proxy_refuses_center_mode_users_and_center_databases() {
    let db = fresh_db("unitroom").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.room = "B"; // the database is a center database with a data source in room A only
    cfg.users.push(TestUser {
        name: "boss",
        password: "boss",
        databases: vec![db.clone()],
        mode: "center",
    });
    let proxy = Proxy::start(&cfg).await;
    let code = |r: Result<Conn, mysql_async::Error>| match r {
        Err(mysql_async::Error::Server(s)) => (s.code, s.message),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    };
    let (c, m) = code(Conn::new(proxy.opts("boss", "boss", None)).await);
    assert_eq!(c, 8020, "{m}");
    assert!(
        m.contains("center room `A`") && m.contains("unit room `B`"),
        "{m}"
    );
    let (c, m) = code(Conn::new(proxy.opts("app", "app", Some(&db))).await);
    assert_eq!(c, 8021, "{m}");
    assert!(
        m.contains(&format!("database `{db}` is a center database")),
        "{m}"
    );
}

#[tokio::test]
async fn a_session_without_a_database_never_inherits_another_sessions_schema() {
    let db = fresh_db("nodb").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.pool_max = 1;
    let proxy = Proxy::start(&cfg).await;
    let mut a = proxy.conn(&db).await;
    a.query_drop("USE information_schema").await.unwrap();
    let now: Option<String> = a.query_first("SELECT DATABASE()").await.unwrap().unwrap();
    assert_eq!(now.as_deref(), Some("information_schema"));
    let mut b = Conn::new(proxy.opts("app", "app", None)).await.unwrap();
    let theirs: Option<String> = b.query_first("SELECT DATABASE()").await.unwrap().unwrap();
    assert_eq!(
        theirs.as_deref(),
        Some(db.as_str()),
        "the data source's schema, not the last user's"
    );
}

/// The collation the server labels string columns with, for one query.
async fn label(c: &mut Conn, sql: &str) -> u16 {
    let r = c.query_iter(sql).await.unwrap();
    let cs = r.columns().unwrap()[0].character_set();
    r.drop_result().await.unwrap();
    cs
}

#[tokio::test]
async fn a_results_collation_from_set_names_collate_follows_its_session_and_never_the_next() {
    // Found by the compatibility suite: `SET NAMES cs COLLATE co` changes the collation MariaDB
    // labels result columns with, which no variable shows; a pooled connection handed it on.
    let db = fresh_db("results_collation").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.pool_max = 1; // every session runs on the one backend connection
    let proxy = Proxy::start(&cfg).await;
    let mut d = direct(Some(&db)).await;
    let plain = label(&mut d, "SELECT 'x'").await;
    d.query_drop("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci")
        .await
        .unwrap();
    let unicode = label(&mut d, "SELECT 'x'").await;
    assert_ne!(plain, unicode, "MariaDB labels the columns differently");
    let mut a = proxy.conn(&db).await;
    let mut b = proxy.conn(&db).await;
    assert_eq!(label(&mut a, "SELECT 'x'").await, plain);
    a.query_drop("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci")
        .await
        .unwrap();
    assert_eq!(label(&mut a, "SELECT 'x'").await, unicode);
    for _ in 0..3 {
        assert_eq!(
            label(&mut b, "SELECT 'x'").await,
            plain,
            "leaked into the next session"
        );
        assert_eq!(
            label(&mut a, "SELECT 'x'").await,
            unicode,
            "lost by its own session"
        );
    }
    // The same through a prepared SET NAMES (binary protocol).
    let mut c = proxy.conn(&db).await;
    c.exec_drop("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci", ())
        .await
        .unwrap();
    assert_eq!(label(&mut c, "SELECT 'x'").await, unicode);
    assert_eq!(label(&mut b, "SELECT 'x'").await, plain);
    // Assigning character_set_results resets the label, on the server and in the proxy.
    a.query_drop("SET character_set_results = 'utf8mb4'")
        .await
        .unwrap();
    assert_eq!(label(&mut a, "SELECT 'x'").await, plain);
    assert_eq!(label(&mut c, "SELECT 'x'").await, unicode);
}

#[tokio::test]
async fn prepared_statements_reach_the_backend_as_prepared_statements_prepared_once() {
    let db = fresh_db("native_prepared").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.pool_max = 1; // one backend connection: its session counters are this session's
    let proxy = Proxy::start(&cfg).await;
    let mut c = proxy.conn(&db).await;
    let counters = |rows: Vec<(String, u64)>| {
        let get = |n: &str| rows.iter().find(|r| r.0 == n).map_or(0, |r| r.1);
        (
            get("Com_stmt_prepare"),
            get("Com_stmt_execute"),
            get("Com_stmt_close"),
        )
    };
    let before = counters(
        c.query("SHOW SESSION STATUS LIKE 'Com_stmt_%'")
            .await
            .unwrap(),
    );
    let stmt = c.prep("SELECT ? + 1").await.unwrap();
    for i in 0..100i64 {
        let v: Option<i64> = c.exec_first(&stmt, (i,)).await.unwrap();
        assert_eq!(v, Some(i + 1));
    }
    let after = counters(
        c.query("SHOW SESSION STATUS LIKE 'Com_stmt_%'")
            .await
            .unwrap(),
    );
    assert_eq!(after.0 - before.0, 1, "prepared once on the backend");
    assert_eq!(after.1 - before.1, 100, "executed natively each time");
    c.close(stmt).await.unwrap();
}
