//! Protocol corners real drivers hit and mysql_async cannot be made to produce: each one is a
//! regression test for a defect measured in opensrv-mysql (see issue 2).

use mysql_async::prelude::*;
use rb_e2e::raw::{Raw, Reply};
use rb_e2e::{direct, fresh_db, Proxy, ProxyConfig};

fn rows(r: Reply) -> Vec<Vec<Option<Vec<u8>>>> {
    match r {
        Reply::Rows(rows) => rows,
        other => panic!("expected rows, got {other:?}"),
    }
}

fn text(v: &Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(v.as_deref().expect("non-NULL")).into_owned()
}

#[tokio::test]
async fn a_caching_sha2_client_is_switched_to_native_password_and_gets_in() {
    let db = fresh_db("sha2").await;
    let proxy = Proxy::start(&ProxyConfig::single(&db)).await;
    let mut c = Raw::connect(proxy.port, "app", "app", Some(&db), "caching_sha2_password")
        .await
        .unwrap();
    assert_eq!(text(&rows(c.query(b"SELECT DATABASE()").await)[0][0]), db);
    let e = Raw::connect(proxy.port, "app", "bad", Some(&db), "caching_sha2_password")
        .await
        .unwrap_err();
    assert_eq!(e.code, 1045);
}

#[tokio::test]
async fn a_reexecuted_statement_without_types_keeps_its_parameters_on_another_backend() {
    let db = fresh_db("reexec").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.pool_max = 2;
    let proxy = Proxy::start(&cfg).await;
    let mut x = Raw::connect(proxy.port, "app", "app", Some(&db), "mysql_native_password")
        .await
        .unwrap();
    let (id, params) = x
        .prepare("SELECT CONCAT(?, '|', ?), CAST(CONNECTION_ID() AS CHAR)")
        .await
        .unwrap();
    assert_eq!(params, 2);
    let first = rows(x.execute(id, &["alpha", "beta"], true).await);
    assert_eq!(text(&first[0][0]), "alpha|beta");
    let backend_1 = text(&first[0][1]);
    // Another session takes the only idle backend connection (the one x just used) and keeps it
    // in a transaction, so x's next execute must run on a second backend connection.
    let mut y = Raw::connect(proxy.port, "app", "app", Some(&db), "mysql_native_password")
        .await
        .unwrap();
    assert!(matches!(y.query(b"BEGIN").await, Reply::Ok { .. }));
    let held = text(&rows(y.query(b"SELECT CONNECTION_ID()").await)[0][0]);
    assert_eq!(held, backend_1, "y must hold the backend x used");
    // Re-execute WITHOUT re-sending the parameter types, as libmariadb and Connector/J do.
    let second = rows(x.execute(id, &["gamma", "delta"], false).await);
    assert_eq!(
        text(&second[0][0]),
        "gamma|delta",
        "parameters garbled on re-execute"
    );
    assert_ne!(
        text(&second[0][1]),
        backend_1,
        "the statement moved to another backend connection"
    );
    assert!(matches!(y.query(b"ROLLBACK").await, Reply::Ok { .. }));
}

#[tokio::test]
async fn non_utf8_sql_is_relayed_byte_for_byte() {
    let db = fresh_db("latin1").await;
    let proxy = Proxy::start(&ProxyConfig::single(&db)).await;
    let mut c = Raw::connect(proxy.port, "app", "app", Some(&db), "mysql_native_password")
        .await
        .unwrap();
    assert!(matches!(
        c.query(b"SET NAMES latin1").await,
        Reply::Ok { .. }
    ));
    assert!(matches!(
        c.query(b"CREATE TABLE t (s VARCHAR(10)) CHARACTER SET utf8mb4")
            .await,
        Reply::Ok { .. }
    ));
    assert!(matches!(
        c.query(b"INSERT INTO t VALUES ('caf\xe9')").await,
        Reply::Ok { affected: 1, .. }
    ));
    let r = rows(
        c.query(b"SELECT s, HEX(CONVERT(s USING utf8mb4)) FROM t")
            .await,
    );
    assert_eq!(r[0][0].as_deref(), Some(&b"caf\xe9"[..]));
    assert_eq!(text(&r[0][1]), "636166C3A9");
}

#[tokio::test]
async fn unsupported_commands_get_a_clear_error_never_a_fake_ok() {
    let db = fresh_db("unknowncmd").await;
    let proxy = Proxy::start(&ProxyConfig::single(&db)).await;
    let mut c = Raw::connect(proxy.port, "app", "app", Some(&db), "mysql_native_password")
        .await
        .unwrap();
    for cmd in [0x05u8, 0x12, 0xFA, 0x1B] {
        c.send(&[cmd, 0, 0, 0, 0]).await;
        match c.read_reply(false, None).await {
            Reply::Err(e) => assert!(matches!(e.code, 1047 | 8010), "command {cmd:#x}: {e:?}"),
            other => panic!("command {cmd:#x} answered {other:?}"),
        }
    }
    assert_eq!(text(&rows(c.query(b"SELECT 1").await)[0][0]), "1");
    // COM_STATISTICS and COM_FIELD_LIST are answered by the backend.
    c.send(&[0x09]).await;
    let stats = String::from_utf8(c.read().await).unwrap();
    assert!(stats.starts_with("Uptime:"), "{stats}");
    assert!(matches!(
        c.query(b"CREATE TABLE f (a INT, b TEXT)").await,
        Reply::Ok { .. }
    ));
    c.send(b"\x04f\0").await;
    let mut fields = 0;
    loop {
        let p = c.read().await;
        if p[0] == 0xFE && p.len() < 9 {
            break;
        }
        fields += 1;
    }
    assert_eq!(fields, 2);
}

#[tokio::test]
async fn a_client_killed_mid_transaction_leaves_no_row_and_no_lock_behind() {
    let db = fresh_db("killed").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.pool_max = 1;
    let proxy = Proxy::start(&cfg).await;
    let mut d = direct(Some(&db)).await;
    d.query_drop("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .unwrap();
    let mut c = Raw::connect(proxy.port, "app", "app", Some(&db), "mysql_native_password")
        .await
        .unwrap();
    assert!(matches!(c.query(b"BEGIN").await, Reply::Ok { .. }));
    assert!(matches!(
        c.query(b"INSERT INTO t VALUES (1)").await,
        Reply::Ok { affected: 1, .. }
    ));
    drop(c); // the socket closes without COM_QUIT
             // The row's lock is released once the backend transaction is rolled back: a direct insert of
             // the same key then succeeds instead of waiting. Wait for the rollback (bounded).
    d.query_drop("SET SESSION innodb_lock_wait_timeout = 1")
        .await
        .unwrap();
    let mut ok = false;
    for _ in 0..20 {
        if d.query_drop("INSERT INTO t VALUES (1)").await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(ok, "the killed client's transaction was not rolled back");
    d.query_drop("DELETE FROM t").await.unwrap();
    // The pool's only connection was discarded, not returned in a transaction: the proxy works.
    let mut p = proxy.conn(&db).await;
    let n: i64 = p
        .query_first("SELECT COUNT(*) FROM t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    let in_trans: i64 = p
        .query_first("SELECT @@in_transaction")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(in_trans, 0);
}

#[tokio::test]
async fn a_packet_over_max_allowed_packet_is_refused_with_1153() {
    let db = fresh_db("bigpacket").await;
    let proxy = Proxy::start(&ProxyConfig::single(&db)).await;
    let mut c = Raw::connect(proxy.port, "app", "app", Some(&db), "mysql_native_password")
        .await
        .unwrap();
    // The proxy's default limit is 64 MiB: send five full 16 MiB packets of one COM_QUERY.
    use tokio::io::AsyncWriteExt;
    for seq in 0..5u8 {
        let mut chunk = vec![0xFF, 0xFF, 0xFF, seq];
        chunk.resize(4 + 0xFF_FFFF, b' ');
        if seq == 0 {
            chunk[4] = 0x03;
        }
        if c.stream.write_all(&chunk).await.is_err() {
            break; // the proxy already answered and closed
        }
    }
    match c.read_reply(false, None).await {
        Reply::Err(e) => assert_eq!(e.code, 1153, "{e:?}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn long_data_is_replayed_on_the_backend_that_executes() {
    let db = fresh_db("longdata").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.pool_max = 2;
    let proxy = Proxy::start(&cfg).await;
    let mut c = Raw::connect(proxy.port, "app", "app", Some(&db), "mysql_native_password")
        .await
        .unwrap();
    let (id, params) = c
        .prepare("SELECT CAST(LENGTH(?) AS CHAR), CAST(? AS CHAR)")
        .await
        .unwrap();
    assert_eq!(params, 2);
    // Parameter 0 arrives in three COM_STMT_SEND_LONG_DATA chunks (no response by protocol).
    for chunk in [vec![b'a'; 1000], vec![b'b'; 2000], vec![b'c'; 3]] {
        let mut p = vec![0x18];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&0u16.to_le_bytes());
        p.extend_from_slice(&chunk);
        c.send(&p).await;
    }
    // Execute: types for both parameters, a value only for parameter 1.
    let mut p = vec![0x17];
    p.extend_from_slice(&id.to_le_bytes());
    p.push(0);
    p.extend_from_slice(&1u32.to_le_bytes());
    p.push(0); // NULL bitmap
    p.push(1); // new params bound
    p.extend_from_slice(&[0xFC, 0, 0xFD, 0]); // BLOB, VAR_STRING
    p.push(2);
    p.extend_from_slice(b"ok");
    c.send(&p).await;
    let r = rows(c.read_reply(true, Some(0)).await);
    assert_eq!(
        (text(&r[0][0]), text(&r[0][1])),
        ("3003".to_string(), "ok".to_string())
    );
    // COM_STMT_RESET answers OK; an unknown statement id is MariaDB's error 1243.
    let mut p = vec![0x1A];
    p.extend_from_slice(&id.to_le_bytes());
    c.send(&p).await;
    assert!(matches!(c.read_reply(false, None).await, Reply::Ok { .. }));
    match c.execute(id + 100, &["x"], true).await {
        Reply::Err(e) => assert_eq!(e.code, 1243),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_handshake_character_set_is_applied_on_every_backend_the_session_uses() {
    let db = fresh_db("hscharset").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.pool_max = 1; // both sessions share one backend connection
    let proxy = Proxy::start(&cfg).await;
    // 8 = latin1_swedish_ci, 45 = utf8mb4_general_ci
    let mut latin = Raw::connect_with(
        proxy.port,
        "app",
        "app",
        Some(&db),
        "mysql_native_password",
        Some(8),
        false,
    )
    .await
    .unwrap();
    let mut utf = Raw::connect_with(
        proxy.port,
        "app",
        "app",
        Some(&db),
        "mysql_native_password",
        Some(45),
        false,
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let l = rows(latin.query(b"SELECT @@character_set_client, @@collation_connection, @@character_set_results").await);
        assert_eq!(
            (text(&l[0][0]), text(&l[0][1]), text(&l[0][2])),
            ("latin1".into(), "latin1_swedish_ci".into(), "latin1".into())
        );
        let u = rows(
            utf.query(b"SELECT @@character_set_client, @@collation_connection")
                .await,
        );
        assert_eq!(
            (text(&u[0][0]), text(&u[0][1])),
            ("utf8mb4".into(), "utf8mb4_general_ci".into())
        );
    }
    // COM_RESET_CONNECTION returns to the handshake's character set, not the current one.
    assert!(matches!(
        latin.query(b"SET NAMES utf8mb4").await,
        Reply::Ok { .. }
    ));
    latin.send(&[0x1F]).await;
    assert!(matches!(
        latin.read_reply(false, None).await,
        Reply::Ok { .. }
    ));
    let l = rows(latin.query(b"SELECT @@character_set_client").await);
    assert_eq!(text(&l[0][0]), "latin1");
}

#[tokio::test]
async fn without_multi_statements_the_server_refuses_the_second_statement_as_it_would_directly() {
    let db = fresh_db("nomulti").await;
    let proxy = Proxy::start(&ProxyConfig::single(&db)).await;
    let mut d = direct(Some(&db)).await;
    d.query_drop("CREATE TABLE t (id INT)").await.unwrap();
    d.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let mut c = Raw::connect(proxy.port, "app", "app", Some(&db), "mysql_native_password")
        .await
        .unwrap();
    match c.query(b"SELECT 1; DELETE FROM t").await {
        Reply::Err(e) => assert_eq!(e.code, 1064, "{e:?}"),
        other => panic!("{other:?}"),
    }
    let n: i64 = d
        .query_first("SELECT COUNT(*) FROM t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 1, "the second statement must not have run");
    // Not even when the first statement is one the proxy would handle itself.
    match c.query(b"USE information_schema; DELETE FROM t").await {
        Reply::Err(e) => assert_eq!(e.code, 1064, "{e:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(text(&rows(c.query(b"SELECT DATABASE()").await)[0][0]), db);
    let n: i64 = d
        .query_first("SELECT COUNT(*) FROM t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 1);
    // With the capability, each statement is checked: USE inside is refused by the proxy.
    let mut m = Raw::connect_with(
        proxy.port,
        "app",
        "app",
        Some(&db),
        "mysql_native_password",
        None,
        true,
    )
    .await
    .unwrap();
    match m.query(b"SELECT 1; USE mysql").await {
        Reply::Err(e) => assert_eq!(e.code, 8011, "{e:?}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_transaction_opened_by_a_failing_multi_statement_keeps_its_connection() {
    let db = fresh_db("errtxn").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.pool_max = 1; // if the connection were released, the other session would get it
    cfg.checkout_timeout_ms = 300;
    let proxy = Proxy::start(&cfg).await;
    let mut d = direct(Some(&db)).await;
    d.query_drop("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .unwrap();
    let mut a = Raw::connect_with(
        proxy.port,
        "app",
        "app",
        Some(&db),
        "mysql_native_password",
        None,
        true,
    )
    .await
    .unwrap();
    // Same capabilities as `a`, so both draw from the same pool (pools are per profile).
    let mut b = Raw::connect_with(
        proxy.port,
        "app",
        "app",
        Some(&db),
        "mysql_native_password",
        None,
        true,
    )
    .await
    .unwrap();
    // BEGIN and INSERT succeed, the third statement fails: the response ends with an ERR
    // packet (no status flags) while a transaction is open on the backend.
    a.send(b"\x03BEGIN; INSERT INTO t VALUES (5); SELECT * FROM no_such_table")
        .await;
    for _ in 0..2 {
        assert!(matches!(a.read_reply(false, None).await, Reply::Ok { .. }));
    }
    assert!(matches!(a.read_reply(false, None).await, Reply::Err(ref e) if e.code == 1146));
    // Past the diagnostics linger (1 s), only the open transaction keeps the connection.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    match b
        .query(b"SELECT @@in_transaction, (SELECT COUNT(*) FROM t)")
        .await
    {
        Reply::Err(e) => assert_eq!(e.code, 8002, "{e:?}"),
        other => panic!("another session was handed the open transaction: {other:?}"),
    }
    let mine = rows(
        a.query(b"SELECT @@in_transaction, (SELECT COUNT(*) FROM t)")
            .await,
    );
    assert_eq!(
        (text(&mine[0][0]), text(&mine[0][1])),
        ("1".into(), "1".into()),
        "the session lost its transaction"
    );
    assert!(matches!(a.query(b"ROLLBACK").await, Reply::Ok { .. }));
    let other = rows(
        b.query(b"SELECT @@in_transaction, (SELECT COUNT(*) FROM t)")
            .await,
    );
    assert_eq!(
        (text(&other[0][0]), text(&other[0][1])),
        ("0".into(), "0".into())
    );
}

/// Waits (bounded) until the backend runs `sql` for some session.
async fn wait_running(d: &mut mysql_async::Conn, sql: &str) {
    for _ in 0..100 {
        let n: i64 = d
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.processlist WHERE info = ?",
                (sql,),
            )
            .await
            .unwrap()
            .unwrap();
        if n > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{sql} never started on the backend");
}

#[tokio::test]
async fn kill_uses_the_proxys_connection_ids_and_reaches_the_backend_statement() {
    let db = fresh_db("kill").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.users.push(rb_e2e::TestUser {
        name: "other",
        password: "other",
        databases: vec![db.clone()],
        mode: "unit",
    });
    let proxy = Proxy::start(&cfg).await;
    let mut d = direct(None).await;
    let mut killer = proxy.conn(&db).await;

    // KILL QUERY interrupts the statement: MariaDB answers the interrupted SLEEP with 1317.
    let mut a = Raw::connect(proxy.port, "app", "app", Some(&db), "mysql_native_password")
        .await
        .unwrap();
    a.send(b"\x03SELECT SLEEP(30) AS kill_me_1").await;
    wait_running(&mut d, "SELECT SLEEP(30) AS kill_me_1").await;
    killer
        .query_drop(format!("KILL QUERY {}", a.connection_id))
        .await
        .unwrap();
    match a.read_reply(false, None).await {
        Reply::Err(e) => assert_eq!((e.code, e.state.as_str()), (1317, "70100"), "{e:?}"),
        other => panic!("the statement was not interrupted: {other:?}"),
    }
    assert_eq!(
        text(&rows(a.query(b"SELECT 2").await)[0][0]),
        "2",
        "KILL QUERY keeps the connection"
    );

    // KILL (connection) ends the statement and the session.
    a.send(b"\x03SELECT SLEEP(30) AS kill_me_2").await;
    wait_running(&mut d, "SELECT SLEEP(30) AS kill_me_2").await;
    killer
        .query_drop(format!("KILL {}", a.connection_id))
        .await
        .unwrap();
    assert!(
        matches!(a.read_reply(false, None).await, Reply::Err(_)),
        "a killed statement ends with an error"
    );
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    let n = a.stream.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "the killed session must be closed");

    // COM_PROCESS_KILL closes an idle session too.
    let mut idle = Raw::connect(proxy.port, "app", "app", Some(&db), "mysql_native_password")
        .await
        .unwrap();
    let mut cmd = vec![0x0C];
    cmd.extend_from_slice(&idle.connection_id.to_le_bytes());
    let mut k = Raw::connect(proxy.port, "app", "app", Some(&db), "mysql_native_password")
        .await
        .unwrap();
    k.send(&cmd).await;
    assert!(matches!(k.read_reply(false, None).await, Reply::Ok { .. }));
    let n = idle.stream.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "the idle session must be closed");

    // Unknown ids and other users' sessions get MariaDB's errors.
    match k.query(b"KILL 4000000000").await {
        Reply::Err(e) => assert_eq!(
            (e.code, e.message.as_str()),
            (1094, "Unknown thread id: 4000000000")
        ),
        other => panic!("{other:?}"),
    }
    let mut intruder = Raw::connect(
        proxy.port,
        "other",
        "other",
        Some(&db),
        "mysql_native_password",
    )
    .await
    .unwrap();
    match intruder
        .query(format!("KILL {}", k.connection_id).as_bytes())
        .await
    {
        Reply::Err(e) => assert_eq!(e.code, 1095),
        other => panic!("{other:?}"),
    }
    assert_eq!(text(&rows(k.query(b"SELECT 3").await)[0][0]), "3");
}

#[tokio::test]
async fn what_the_proxy_handles_in_text_cannot_be_smuggled_through_prepare_or_quoting() {
    let db = fresh_db("smuggle").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.pool_max = 2;
    let proxy = Proxy::start(&cfg).await;
    let mut c = Raw::connect_with(
        proxy.port,
        "app",
        "app",
        Some(&db),
        "mysql_native_password",
        None,
        true,
    )
    .await
    .unwrap();
    for sql in ["KILL 1", "SET PASSWORD = PASSWORD('x')", "USE mysql"] {
        match c.prepare(sql).await {
            Err(e) => assert_eq!(e.code, 8010, "{sql}: {e:?}"),
            Ok(_) => panic!("{sql} was prepared on the shared backend account"),
        }
    }
    // Under ANSI_QUOTES a double quote is an identifier quote, so this is three statements and
    // the second writes a user variable: the session must keep its backend connection.
    assert!(matches!(
        c.query(b"SET sql_mode = 'ANSI_QUOTES'").await,
        Reply::Ok { .. }
    ));
    c.send(b"\x03SELECT 1 AS \"a\\\"; SET @hidden = 42; SELECT 2 AS \"b\"")
        .await;
    for _ in 0..3 {
        match c.read_reply(false, None).await {
            Reply::Rows(_) | Reply::Ok { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    let mut other = Raw::connect_with(
        proxy.port,
        "app",
        "app",
        Some(&db),
        "mysql_native_password",
        None,
        true,
    )
    .await
    .unwrap();
    for _ in 0..3 {
        assert_eq!(
            rows(other.query(b"SELECT @hidden").await)[0][0],
            None,
            "a user variable leaked"
        );
        assert_eq!(
            text(&rows(c.query(b"SELECT @hidden").await)[0][0]),
            "42",
            "the session lost its variable"
        );
    }
}

#[tokio::test]
async fn a_server_side_cursor_is_fetched_from_the_backend_that_opened_it() {
    let db = fresh_db("cursor").await;
    let mut cfg = ProxyConfig::single(&db);
    cfg.pool_max = 2;
    let proxy = Proxy::start(&cfg).await;
    let mut c = Raw::connect(proxy.port, "app", "app", Some(&db), "mysql_native_password")
        .await
        .unwrap();
    let (id, _) = c
        .prepare("SELECT CAST(seq AS CHAR) FROM seq_1_to_5")
        .await
        .unwrap();
    // Execute with CURSOR_TYPE_READ_ONLY: metadata, then an EOF with SERVER_STATUS_CURSOR_EXISTS.
    let mut p = vec![0x17];
    p.extend_from_slice(&id.to_le_bytes());
    p.push(1);
    p.extend_from_slice(&1u32.to_le_bytes());
    c.send(&p).await;
    assert_eq!(c.read().await, vec![1], "one column");
    c.read().await; // its definition
    let eof = c.read().await;
    assert_eq!(eof[0], 0xFE);
    assert_ne!(
        u16::from_le_bytes([eof[3], eof[4]]) & 0x40,
        0,
        "cursor opened"
    );
    // Another session in between must not disturb the pinned cursor connection.
    let mut other = Raw::connect(proxy.port, "app", "app", Some(&db), "mysql_native_password")
        .await
        .unwrap();
    assert_eq!(text(&rows(other.query(b"SELECT 9").await)[0][0]), "9");
    let mut fetched = Vec::new();
    let mut last = false;
    while !last {
        let mut f = vec![0x1C];
        f.extend_from_slice(&id.to_le_bytes());
        f.extend_from_slice(&2u32.to_le_bytes());
        c.send(&f).await;
        loop {
            let r = c.read().await;
            if r[0] == 0xFE && r.len() < 9 {
                last = u16::from_le_bytes([r[3], r[4]]) & 0x80 != 0; // SERVER_STATUS_LAST_ROW_SENT
                break;
            }
            assert_eq!(r[0], 0x00, "binary row");
            // 0x00, NULL bitmap (1 byte), then the length-encoded value
            fetched.push(String::from_utf8(r[3..3 + r[2] as usize].to_vec()).unwrap());
        }
    }
    assert_eq!(fetched, ["1", "2", "3", "4", "5"]);
    // COM_STMT_RESET on the cursor goes to its backend and answers OK.
    let mut reset = vec![0x1A];
    reset.extend_from_slice(&id.to_le_bytes());
    c.send(&reset).await;
    assert!(matches!(c.read_reply(false, None).await, Reply::Ok { .. }));
    assert_eq!(text(&rows(c.query(b"SELECT 7").await)[0][0]), "7");
}

#[tokio::test]
async fn a_mysql_8_login_collation_mariadb_lacks_does_not_fail_every_statement() {
    // libmysqlclient (mysql-connector-python's C extension) logs in with utf8mb4_0900_ai_ci
    // (255), which MariaDB 10.11 does not have: replaying it failed every statement with 1273.
    let db = fresh_db("raw_0900").await;
    let proxy = Proxy::start(&ProxyConfig::single(&db)).await;
    let mut c = Raw::connect_with(
        proxy.port,
        "app",
        "app",
        Some(&db),
        "mysql_native_password",
        Some(255),
        false,
    )
    .await
    .unwrap();
    match c
        .query(b"SELECT @@character_set_client, @@collation_connection")
        .await
    {
        Reply::Rows(rows) => assert_eq!(
            rows,
            vec![vec![
                Some(b"utf8mb4".to_vec()),
                Some(b"utf8mb4_general_ci".to_vec())
            ]]
        ),
        other => panic!("{other:?}"),
    }
    // What the driver sends next works too.
    assert!(matches!(
        c.query(b"SET NAMES 'utf8mb4' COLLATE 'utf8mb4_general_ci'")
            .await,
        Reply::Ok { .. }
    ));
}
