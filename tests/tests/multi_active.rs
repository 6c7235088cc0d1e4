//! Multi-active enforcement end to end: two rooms (two MariaDB instances), one proxy per room,
//! real clients (mysql_async in the text and the binary protocol).

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder};
use rb_e2e::{direct_room, fresh_unit_db, Proxy, ROOM_A_PORT, ROOM_B_PORT};

/// Rules for a unit database `db` in rooms A and B, a center-unit `cu` one, and users in both
/// modes. Buyers 0-4999 (mod 10000) belong to room A, 5000-9999 to B; 4000-4099 are banned.
fn rules(db: &str, cu: &str) -> String {
    let hash = shard_rules::config::hash_password("app");
    format!(
        r#"version = 3
[rooms.A]
role = "center"
[rooms.B]
role = "unit"
[route_codes]
count = 10000
[traffic]
version = 5
owners.A = ["0-4999"]
owners.B = ["5000-9999"]
[write_ban]
version = 2
route_codes = ["4000-4099"]
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
port = {ROOM_B_PORT}
schema = "{db}"
user = "rb"
password = "rb"
[data_sources.cu_a]
room = "A"
host = "127.0.0.1"
port = {ROOM_A_PORT}
schema = "{cu}"
user = "rb"
password = "rb"
[data_sources.cu_b]
room = "B"
host = "127.0.0.1"
port = {ROOM_B_PORT}
schema = "{cu}"
user = "rb"
password = "rb"
[databases.{db}]
type = "unit"
data_sources.ds = ["u_a", "u_b"]
[segments]
database = "{db}_ops"
step = 10
[data_sources.ops_a]
room = "A"
host = "127.0.0.1"
port = {ROOM_A_PORT}
schema = "{db}_ops"
user = "rb"
password = "rb"
[databases.{db}_ops]
type = "center"
data_sources.ds = ["ops_a"]
[databases.{db}.tables.t_item]
sharding_key = "buyer_id"
key_generator = {{ column = "item_id", type = "segment", tag = "item" }}
[databases.{db}.tables.t_order]
sharding_key = "buyer_id"
key_generator = {{ column = "order_id", type = "snowflake" }}
[databases.{cu}]
type = "center-unit"
data_sources.ds = ["cu_a", "cu_b"]
[users.app]
password_hash = "{hash}"
databases = ["{db}", "{cu}"]
mode = "unit"
[users.boss]
password_hash = "{hash}"
databases = ["{db}", "{cu}"]
mode = "center"
"#
    )
}

const ORDERS: &str =
    "CREATE TABLE t_order (order_id BIGINT PRIMARY KEY, buyer_id BIGINT NOT NULL, \
                      amount DECIMAL(10,2) NOT NULL, status VARCHAR(16) NOT NULL DEFAULT 'new', \
                      at DATETIME(6) NOT NULL DEFAULT NOW(6))";

fn opts(p: &Proxy, user: &str, db: &str) -> Opts {
    OptsBuilder::from_opts(p.opts(user, "app", Some(db))).into()
}

async fn refused(c: &mut Conn, sql: &str) -> (u16, String) {
    match c.query_drop(sql).await {
        Err(mysql_async::Error::Server(e)) => (e.code, e.message),
        other => panic!("expected a refusal for {sql}, got {other:?}"),
    }
}

struct Rooms {
    a: Proxy,
    b: Proxy,
    db: String,
    cu: String,
}

/// Fresh unit (`t_order`) and center-unit (`t_sku`) databases in both rooms.
async fn databases(name: &str) -> (String, String) {
    let db = fresh_unit_db(name, &[ORDERS]).await;
    let cu = fresh_unit_db(
        &format!("{name}_cu"),
        &["CREATE TABLE t_sku (sku VARCHAR(16) PRIMARY KEY, price INT)"],
    )
    .await;
    (db, cu)
}

async fn rooms(name: &str) -> Rooms {
    let (db, cu) = databases(name).await;
    let text = rules(&db, &cu);
    let a = Proxy::start_rules("A", &text).await;
    let b = Proxy::start_rules("B", &text).await;
    Rooms { a, b, db, cu }
}

async fn count(port: u16, db: &str, sql: &str) -> i64 {
    let mut c = direct_room(port, Some(db)).await;
    let n: i64 = c.query_first(sql).await.unwrap().unwrap();
    c.disconnect().await.unwrap();
    n
}

/// Statements of one shape share a cached analysis (issue 7), yet each is decided on its own
/// values: the same INSERT, UPDATE and prepared UPDATE are taken for this room's keys and
/// refused for the other room's, alternately, long after the shape was cached. The proxy's
/// shutdown line reports the hits.
#[tokio::test]
async fn cached_statement_shapes_are_decided_on_each_statements_own_values() {
    let (db, cu) = databases("ma_plans").await;
    let mut a = Proxy::start_rules("A", &rules(&db, &cu)).await;
    let mut c = Conn::new(opts(&a, "app", &db)).await.unwrap();
    let mut taken = 0;
    for i in 0..20i64 {
        // Even rounds: a key of room A (taken); odd rounds: a key of room B (refused).
        let buyer = if i % 2 == 0 { 1000 + i } else { 5000 + i };
        let insert = format!(
            "INSERT INTO t_order (order_id, buyer_id, amount) VALUES ({}, {buyer}, 1.5)",
            100 + i
        );
        let update = format!("UPDATE t_order SET status = 's{i}' WHERE buyer_id = {buyer}");
        for sql in [&insert, &update] {
            if i % 2 == 0 {
                c.query_drop(sql).await.unwrap();
                taken += 1;
            } else {
                let (code, msg) = refused(&mut c, sql).await;
                assert_eq!(code, 8031, "{sql}: {msg}");
                assert!(
                    msg.contains(&format!("ShardingKey {buyer} ")),
                    "{sql}: {msg}"
                );
            }
        }
        // A prepared statement mixing a literal and a parameter: the literal is the key.
        let stmt = format!("UPDATE t_order SET status = ? WHERE buyer_id = {buyer}");
        let r = c.exec_drop(stmt.as_str(), (format!("p{i}"),)).await;
        match (i % 2 == 0, r) {
            (true, Ok(())) => {}
            (false, Err(mysql_async::Error::Server(e))) if e.code == 8031 => {}
            (_, other) => panic!("{stmt}: {other:?}"),
        }
    }
    assert_eq!(taken, 20);
    let rows = count(
        ROOM_A_PORT,
        &db,
        "SELECT COUNT(*) FROM t_order WHERE status LIKE 'p%' AND buyer_id < 5000",
    )
    .await;
    assert_eq!(rows, 10);
    assert_eq!(
        count(ROOM_B_PORT, &db, "SELECT COUNT(*) FROM t_order").await,
        0,
        "nothing reached room B"
    );
    c.disconnect().await.unwrap();
    a.terminate();
    assert!(a.wait_exit(std::time::Duration::from_secs(10)));
    let log = a.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("all sessions closed"))
        .unwrap_or_else(|| panic!("no shutdown line:\n{log}"));
    // 20 rounds of 3 shapes: at most one miss per shape (per-connection prepares count too).
    let hits: u64 = line
        .split("plan_cache_hits=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no plan_cache_hits in {line}"));
    assert!(hits >= 50, "{line}");
}

#[tokio::test]
async fn writes_land_only_in_the_room_that_owns_their_key() {
    let r = rooms("ma_room").await;
    let mut a = Conn::new(opts(&r.a, "app", &r.db)).await.unwrap();
    let mut b = Conn::new(opts(&r.b, "app", &r.db)).await.unwrap();

    // Buyer 1001 belongs to A, 5001 to B: each room takes its own and refuses the other's.
    a.query_drop("INSERT INTO t_order (order_id, buyer_id, amount) VALUES (1, 1001, 9.5)")
        .await
        .unwrap();
    b.query_drop("INSERT INTO t_order (order_id, buyer_id, amount) VALUES (2, 5001, 9.5)")
        .await
        .unwrap();
    let (code, msg) = refused(
        &mut b,
        "INSERT INTO t_order (order_id, buyer_id, amount) VALUES (3, 1002, 1)",
    )
    .await;
    assert_eq!(code, 8031, "{msg}");
    assert!(
        msg.contains(
            "ShardingKey 1002 (route code 1002) belongs to room `A`, not this proxy's room `B`"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("traffic rule version 5") && msg.contains("rules version 3"),
        "{msg}"
    );
    let (code, msg) = refused(
        &mut a,
        "UPDATE t_order SET status = 'paid' WHERE buyer_id = 5001",
    )
    .await;
    assert_eq!(code, 8031, "{msg}");
    // Multi-row: every row's key must be local.
    let (code, _) = refused(
        &mut a,
        "INSERT INTO t_order (order_id, buyer_id, amount) VALUES (4, 1003, 1), (5, 5003, 1)",
    )
    .await;
    assert_eq!(code, 8031);
    // A hint that names another room's key is refused even when the row's own key is local.
    let (code, _) = refused(
        &mut a,
        "/* rb: sharding_key=5001 */ UPDATE t_order SET status = 'x' WHERE order_id = 1",
    )
    .await;
    assert_eq!(code, 8031);
    // The hint's key alone decides when the statement names none.
    a.query_drop(
        "/* rb: sharding_key=1001 */ UPDATE t_order SET status = 'paid' WHERE order_id = 1",
    )
    .await
    .unwrap();

    // A write hidden after a read in a multi-statement text, or inside an executable comment,
    // is judged like any other.
    let (code, msg) = refused(
        &mut a,
        "SELECT 1; DELETE FROM t_order WHERE buyer_id = 5001",
    )
    .await;
    assert_eq!(code, 8031, "{msg}");
    let (code, msg) = refused(&mut a, "/*! DELETE FROM t_order WHERE buyer_id = 5001 */").await;
    assert_eq!(code, 8031, "{msg}");
    let (code, msg) = refused(
        &mut a,
        "/*!50000 DELETE FROM t_order WHERE buyer_id = 5001 */",
    )
    .await;
    assert_eq!(code, 8035, "{msg}");

    // No key at all: refused, with what would give it one.
    let (code, msg) = refused(&mut a, "DELETE FROM t_order WHERE order_id = 1").await;
    assert_eq!(code, 8030, "{msg}");
    assert!(
        msg.contains("`buyer_id`") && msg.contains("SET @@rb_sharding_key"),
        "{msg}"
    );

    // Reads are served locally in every room, whoever owns the key.
    let n: i64 = b
        .query_first("SELECT COUNT(*) FROM t_order WHERE buyer_id = 1001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        n, 0,
        "room B's copy has no row of room A's buyer in this test (no replication)"
    );

    // A read hinted with another room's key is served here and counted.
    let n: i64 = b
        .query_first("/* rb: sharding_key=1001 */ SELECT COUNT(*) FROM t_order")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 1);
    let line =
        r.b.wait_log(
            "read of another room's data",
            1,
            std::time::Duration::from_secs(5),
        )
        .expect("foreign read logged");
    assert!(
        line.contains("foreign_reads=1") && line.contains("route_code=1001"),
        "{line}"
    );

    // The backends hold exactly the accepted writes.
    assert_eq!(
        count(ROOM_A_PORT, &r.db, "SELECT COUNT(*) FROM t_order").await,
        1
    );
    assert_eq!(
        count(ROOM_B_PORT, &r.db, "SELECT COUNT(*) FROM t_order").await,
        1
    );
    assert_eq!(
        count(
            ROOM_A_PORT,
            &r.db,
            "SELECT COUNT(*) FROM t_order WHERE status = 'paid'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn banned_route_codes_are_refused_everywhere_and_retryable() {
    let r = rooms("ma_ban").await;
    let mut a = Conn::new(opts(&r.a, "app", &r.db)).await.unwrap();
    let (code, msg) = refused(
        &mut a,
        "INSERT INTO t_order (order_id, buyer_id, amount) VALUES (1, 14050, 1)",
    )
    .await;
    assert_eq!(code, 8032, "{msg}");
    assert!(
        msg.contains("ShardingKey 14050 (route code 4050) is banned")
            && msg.contains("write-ban version 2")
            && msg.contains("retry later"),
        "{msg}"
    );
    // Just outside the ban: accepted.
    a.query_drop("INSERT INTO t_order (order_id, buyer_id, amount) VALUES (2, 14100, 1)")
        .await
        .unwrap();
    // In a transaction: the refused write leaves the transaction open and usable.
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("INSERT INTO t_order (order_id, buyer_id, amount) VALUES (3, 1001, 1)")
        .await
        .unwrap();
    let (code, _) = refused(
        &mut a,
        "UPDATE t_order SET amount = 2 WHERE buyer_id = 4001",
    )
    .await;
    assert_eq!(code, 8032);
    a.query_drop("COMMIT").await.unwrap();
    assert_eq!(
        count(ROOM_A_PORT, &r.db, "SELECT COUNT(*) FROM t_order").await,
        2
    );
}

#[tokio::test]
async fn the_session_sharding_key_serves_clients_that_strip_comments() {
    let r = rooms("ma_session").await;
    let mut b = Conn::new(opts(&r.b, "app", &r.db)).await.unwrap();
    let (code, _) = refused(&mut b, "DELETE FROM t_order WHERE order_id = 9").await;
    assert_eq!(code, 8030);
    b.query_drop("SET @@rb_sharding_key = 5001").await.unwrap();
    b.query_drop("DELETE FROM t_order WHERE order_id = 9")
        .await
        .unwrap();
    b.query_drop("SET @@rb_sharding_key = 1001").await.unwrap();
    let (code, _) = refused(&mut b, "DELETE FROM t_order WHERE order_id = 9").await;
    assert_eq!(code, 8031);
    b.query_drop("SET @@rb_sharding_key = DEFAULT")
        .await
        .unwrap();
    let (code, _) = refused(&mut b, "DELETE FROM t_order WHERE order_id = 9").await;
    assert_eq!(code, 8030);
    // A reset connection forgets it.
    b.query_drop("SET rb_sharding_key = 5001").await.unwrap();
    b.reset().await.unwrap();
    let (code, _) = refused(&mut b, "DELETE FROM t_order WHERE order_id = 9").await;
    assert_eq!(code, 8030);
    // A bad hint is its own error.
    let (code, msg) = refused(&mut b, "/* rb: sharding_key=abc */ SELECT 1").await;
    assert_eq!(code, 8034, "{msg}");
    // On writes too: a key of the wrong type, a route code out of range.
    for sql in [
        "/* rb: sharding_key='abc' */ DELETE FROM t_order WHERE order_id = 9",
        "/* rb: route_code=20000 */ DELETE FROM t_order WHERE order_id = 9",
    ] {
        let (code, msg) = refused(&mut b, sql).await;
        assert_eq!(code, 8034, "{sql}: {msg}");
        assert!(msg.contains("bad hint for `t_order`"), "{msg}");
    }
    // Only alone; a string session key where keys are integers; NULL as the reset.
    let (code, msg) = refused(&mut b, "SET @@rb_sharding_key = 'abc'; SELECT 1").await;
    assert_eq!(code, 8010, "{msg}");
    b.query_drop("SET @@rb_sharding_key = 'abc'").await.unwrap();
    let (code, msg) = refused(&mut b, "DELETE FROM t_order WHERE order_id = 9").await;
    assert_eq!(code, 8035, "{msg}");
    assert!(msg.contains("'abc' is not an integer"), "{msg}");
    b.query_drop("SET @@rb_sharding_key = 5001").await.unwrap();
    b.query_drop("SET @@rb_sharding_key = NULL").await.unwrap();
    let (code, _) = refused(&mut b, "DELETE FROM t_order WHERE order_id = 9").await;
    assert_eq!(code, 8030);
}

#[tokio::test]
async fn prepared_statements_are_decided_with_their_bound_values() {
    let r = rooms("ma_prepared").await;
    let mut a = Conn::new(opts(&r.a, "app", &r.db)).await.unwrap();
    let insert = a
        .prep("INSERT INTO t_order (order_id, buyer_id, amount) VALUES (?, ?, ?)")
        .await
        .unwrap();
    a.exec_drop(&insert, (1, 1001, 9.5)).await.unwrap();
    match a.exec_drop(&insert, (2, 5001, 9.5)).await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 8031, "{}", e.message),
        other => panic!("expected wrong room, got {other:?}"),
    }
    match a.exec_drop(&insert, (3, 4050, 1)).await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 8032, "{}", e.message),
        other => panic!("expected banned, got {other:?}"),
    }
    // The statement stays usable after refusals.
    a.exec_drop(&insert, (4, 1002, 1)).await.unwrap();
    let upd = a
        .prep("UPDATE t_order SET status = ? WHERE buyer_id = ?")
        .await
        .unwrap();
    a.exec_drop(&upd, ("paid", 1001)).await.unwrap();
    assert!(a.exec_drop(&upd, ("paid", 9001)).await.is_err());
    // A write without a key is refused at execute (the session key may come after the prepare).
    let del = a
        .prep("DELETE FROM t_order WHERE order_id = ?")
        .await
        .unwrap();
    match a.exec_drop(&del, (99,)).await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 8030, "{}", e.message),
        other => panic!("expected no ShardingKey, got {other:?}"),
    }
    a.query_drop("SET @@rb_sharding_key = 1001").await.unwrap();
    a.exec_drop(&del, (99,)).await.unwrap();
    a.query_drop("SET @@rb_sharding_key = DEFAULT")
        .await
        .unwrap();

    assert_eq!(
        count(ROOM_A_PORT, &r.db, "SELECT COUNT(*) FROM t_order").await,
        2
    );
    assert_eq!(
        count(
            ROOM_A_PORT,
            &r.db,
            "SELECT COUNT(*) FROM t_order WHERE status = 'paid'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn modes_and_database_types_are_enforced_per_room() {
    let r = rooms("ma_types").await;
    // A center connection: only in the center room.
    match Conn::new(opts(&r.b, "boss", &r.db)).await {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!(e.code, 8020, "{}", e.message);
            assert!(
                e.message.contains("`A`") && e.message.contains("`B`"),
                "{}",
                e.message
            );
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    // Center-unit: read-write in the center room, read-only in unit rooms.
    let mut a = Conn::new(opts(&r.a, "app", &r.cu)).await.unwrap();
    a.query_drop("INSERT INTO t_sku VALUES ('x', 1)")
        .await
        .unwrap();
    let mut b = Conn::new(opts(&r.b, "app", &r.cu)).await.unwrap();
    let n: i64 = b
        .query_first("SELECT COUNT(*) FROM t_sku")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    let (code, msg) = refused(&mut b, "UPDATE t_sku SET price = 2").await;
    assert_eq!(code, 8033, "{msg}");
    assert!(msg.contains("read-only in room `B`"), "{msg}");
    let (code, _) = refused(&mut b, "TRUNCATE TABLE t_sku").await;
    assert_eq!(code, 8033);
    // DDL on a unit database needs a center connection (room A only).
    let mut ua = Conn::new(opts(&r.a, "app", &r.db)).await.unwrap();
    let (code, msg) = refused(&mut ua, "ALTER TABLE t_order ADD COLUMN note VARCHAR(8)").await;
    assert_eq!(code, 8036, "{msg}");
    let mut boss = Conn::new(opts(&r.a, "boss", &r.db)).await.unwrap();
    boss.query_drop("ALTER TABLE t_order ADD COLUMN note VARCHAR(8)")
        .await
        .unwrap();

    // A reload applies to open sessions at their next statement: user `app` becomes a
    // center user (its open session in room A may now run DDL), and the center-unit database
    // becomes a center database (the open session in room B may no longer write it).
    let text = rules(&r.db, &r.cu);
    let app_unit = "databases = [\"{db}\", \"{cu}\"]\nmode = \"unit\""
        .replace("{db}", &r.db)
        .replace("{cu}", &r.cu);
    let cu_type = "type = \"center-unit\"\ndata_sources.ds = [\"cu_a\", \"cu_b\"]";
    assert!(text.contains(&app_unit) && text.contains(cu_type));
    let center_cu = text
        .replace(cu_type, "type = \"center\"\ndata_sources.ds = [\"cu_a\"]")
        .replace("version = 3\n", "version = 4\n");
    let changed = center_cu.replace(&app_unit, &app_unit.replace("\"unit\"", "\"center\""));
    assert!(r.a.reload(&changed), "{}", r.a.log_text());
    ua.query_drop("ALTER TABLE t_order ADD COLUMN note2 VARCHAR(8)")
        .await
        .unwrap();
    // Room B: a prepared read made while the database was center-unit, then the reload.
    let read = b.prep("SELECT COUNT(*) FROM t_sku").await.unwrap();
    assert!(r.b.reload(&center_cu), "{}", r.b.log_text());
    let (code, msg) = refused(&mut b, "UPDATE t_sku SET price = 2").await;
    assert_eq!(code, 8021, "{msg}");
    assert!(msg.contains("served only in the center room `A`"), "{msg}");
    let (code, msg) = refused(&mut b, "SELECT COUNT(*) FROM t_sku").await;
    assert_eq!(code, 8021, "{msg}");
    match b.exec_first::<i64, _, _>(&read, ()).await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 8021, "{}", e.message),
        other => panic!("expected 8021 for the prepared read, got {other:?}"),
    }
    // And once the user is a center user, its open sessions in room B are refused (8020).
    assert!(r
        .b
        .reload(&changed.replace("version = 4\n", "version = 5\n")));
    let (code, msg) = refused(&mut b, "SELECT 1").await;
    assert_eq!(code, 8020, "{msg}");
}

/// Room A is room 0 and B room 1 of the rules (rooms in name order): the room field of an ID.
fn room_of(id: i64) -> i64 {
    (id >> 19) & 0b111
}

#[tokio::test]
async fn inserts_that_leave_out_the_key_get_room_stamped_snowflake_ids() {
    let r = rooms("ma_ids").await;
    let mut a = Conn::new(opts(&r.a, "app", &r.db)).await.unwrap();
    let mut b = Conn::new(opts(&r.b, "app", &r.db)).await.unwrap();

    // One row: the OK packet's last insert id and LAST_INSERT_ID() are the generated id.
    a.query_drop("INSERT INTO t_order (buyer_id, amount) VALUES (1001, 9.5)")
        .await
        .unwrap();
    let first = a.last_insert_id().unwrap() as i64;
    assert!(first > 0);
    assert_eq!(room_of(first), 0);
    let lid: i64 = a
        .query_first("SELECT LAST_INSERT_ID()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lid, first);
    let stored: i64 = a
        .query_first("SELECT order_id FROM t_order WHERE buyer_id = 1001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, first);

    // Several rows: one id each, increasing; the first is reported.
    b.query_drop("INSERT INTO t_order (buyer_id, amount) VALUES (5001, 1), (5002, 2), (5003, 3)")
        .await
        .unwrap();
    let reported = b.last_insert_id().unwrap() as i64;
    let ids: Vec<i64> = b
        .query("SELECT order_id FROM t_order ORDER BY buyer_id")
        .await
        .unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], reported);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert!(
        ids.iter().all(|id| room_of(*id) == 1),
        "room B stamps room 1: {ids:?}"
    );

    // Many inserts through both rooms: no id collides.
    let mut all = std::collections::HashSet::new();
    for i in 0..100 {
        a.query_drop(format!(
            "INSERT INTO t_order (buyer_id, amount) VALUES ({}, 1)",
            2000 + i
        ))
        .await
        .unwrap();
        assert!(all.insert(a.last_insert_id().unwrap()));
        b.query_drop(format!(
            "INSERT INTO t_order (buyer_id, amount) VALUES ({}, 1)",
            6000 + i
        ))
        .await
        .unwrap();
        assert!(all.insert(b.last_insert_id().unwrap()));
    }
    assert_eq!(all.len(), 200);

    // The room check still applies to rows that get generated keys.
    let (code, _) = refused(
        &mut a,
        "INSERT INTO t_order (buyer_id, amount) VALUES (5001, 1)",
    )
    .await;
    assert_eq!(code, 8031);
    // Shapes the proxy cannot complete are refused, not sent without their key.
    let (code, msg) = refused(&mut a, "INSERT INTO t_order (buyer_id, amount) SELECT buyer_id, amount FROM t_order WHERE buyer_id = 1001").await;
    assert_eq!(code, 8035, "{msg}");
    // Prepared INSERTs get keys at every execute; the client binds only its own parameters.
    let ins = a
        .prep("INSERT INTO t_order (buyer_id, amount) VALUES (?, ?)")
        .await
        .unwrap();
    assert_eq!(ins.num_params(), 2);
    a.exec_drop(&ins, (1003, 5)).await.unwrap();
    let p1 = a.last_insert_id().unwrap() as i64;
    a.exec_drop(&ins, (1004, 6)).await.unwrap();
    let p2 = a.last_insert_id().unwrap() as i64;
    assert!(p2 > p1 && room_of(p1) == 0 && room_of(p2) == 0, "{p1} {p2}");
    let lid: i64 = a
        .query_first("SELECT LAST_INSERT_ID()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lid, p2);
    let two = a
        .prep("INSERT INTO t_order (buyer_id, amount) VALUES (?, ?), (?, 1)")
        .await
        .unwrap();
    assert_eq!(two.num_params(), 3);
    a.exec_drop(&two, (1005, 1, 1006)).await.unwrap();
    let p3 = a.last_insert_id().unwrap() as i64;
    let got: Vec<i64> = a
        .query("SELECT order_id FROM t_order WHERE buyer_id IN (1005, 1006) ORDER BY buyer_id")
        .await
        .unwrap();
    assert_eq!(got, [p3, p3 + 1]);
    // The room check still runs on prepared rows with generated keys.
    match a.exec_drop(&ins, (5009, 1)).await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 8031, "{}", e.message),
        other => panic!("expected wrong room, got {other:?}"),
    }
    // Giving the column a value is always possible.
    a.query_drop("INSERT INTO t_order (order_id, buyer_id, amount) VALUES (42, 1001, 1)")
        .await
        .unwrap();
}

#[tokio::test]
async fn texts_the_proxy_cannot_read_as_the_server_does_are_refused() {
    let r = rooms("ma_unsafe").await;
    let mut a = Conn::new(opts(&r.a, "app", &r.db)).await.unwrap();
    a.query_drop("INSERT INTO t_order (order_id, buyer_id, amount) VALUES (1, 5001, 1)")
        .await
        .expect_err("room B's buyer");
    // Whether the server runs a versioned comment depends on its version: refused in writes.
    let (code, msg) = refused(
        &mut a,
        "/*!80000 SELECT */ DELETE FROM t_order WHERE buyer_id = 5001",
    )
    .await;
    assert_eq!(code, 8035, "{msg}");
    assert!(msg.contains("versioned executable comment"), "{msg}");
    // MariaDB's SET STATEMENT … FOR runs the statement: not a plain SET.
    let (code, msg) = refused(
        &mut a,
        "SET STATEMENT max_statement_time=10 FOR DELETE FROM t_order WHERE buyer_id = 5001",
    )
    .await;
    assert!(code == 8035 || code == 8031, "{code} {msg}");
    // SQL-level PREPARE hides the statement.
    let (code, _) = refused(
        &mut a,
        "PREPARE s FROM 'DELETE FROM t_order WHERE buyer_id = 5001'",
    )
    .await;
    assert_eq!(code, 8035);
    // A generated-key INSERT must come alone.
    let (code, _) = refused(
        &mut a,
        "INSERT INTO t_order (buyer_id, amount) VALUES (1001, 1); SELECT 1",
    )
    .await;
    assert_eq!(code, 8035);
    // Strings read differently under NO_BACKSLASH_ESCAPES: writes refused, reads served.
    a.query_drop("SET sql_mode = 'NO_BACKSLASH_ESCAPES'")
        .await
        .unwrap();
    let (code, msg) = refused(
        &mut a,
        "UPDATE t_order SET status = 'x' WHERE buyer_id = 1001",
    )
    .await;
    assert_eq!(code, 8035, "{msg}");
    let n: i64 = a
        .query_first("SELECT COUNT(*) FROM t_order")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    a.query_drop("SET sql_mode = DEFAULT").await.unwrap();
    a.query_drop("UPDATE t_order SET status = 'x' WHERE buyer_id = 1001")
        .await
        .unwrap();
    // From information_schema nothing of the rules can be written.
    a.query_drop("USE information_schema").await.unwrap();
    let (code, msg) = refused(
        &mut a,
        &format!("DELETE FROM `{}`.t_order WHERE buyer_id = 5001", r.db),
    )
    .await;
    assert_eq!(code, 8035, "{msg}");
    // Nothing reached the backend.
    assert_eq!(
        count(ROOM_A_PORT, &r.db, "SELECT COUNT(*) FROM t_order").await,
        0
    );
}

#[tokio::test]
async fn a_write_ban_applied_at_run_time_takes_effect_on_the_next_write() {
    let r = rooms("ma_reload").await;
    let text = rules(&r.db, &r.cu);
    let mut a = Conn::new(opts(&r.a, "app", &r.db)).await.unwrap();
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("INSERT INTO t_order (order_id, buyer_id, amount) VALUES (1, 1001, 1)")
        .await
        .unwrap();

    // The cut-over bans route code 1001 while the transaction is open.
    let banned = text
        .replace(
            "version = 2\nroute_codes = [\"4000-4099\"]",
            "version = 9\nroute_codes = [\"1001\", \"4000-4099\"]",
        )
        .replace("version = 3\n", "version = 4\n");
    assert_ne!(banned, text);
    assert!(r.a.reload(&banned), "{}", r.a.log_text());
    assert!(
        r.a.log_text().contains("ban_version=9"),
        "{}",
        r.a.log_text()
    );
    // The transaction's next write to the banned code is refused; others go on.
    let (code, msg) = refused(
        &mut a,
        "INSERT INTO t_order (order_id, buyer_id, amount) VALUES (2, 1001, 1)",
    )
    .await;
    assert_eq!(code, 8032, "{msg}");
    assert!(
        msg.contains("write-ban version 9") && msg.contains("rules version 4"),
        "{msg}"
    );
    a.query_drop("INSERT INTO t_order (order_id, buyer_id, amount) VALUES (3, 1002, 1)")
        .await
        .unwrap();
    a.query_drop("COMMIT").await.unwrap();
    let (code, _) = refused(
        &mut a,
        "UPDATE t_order SET amount = 5 WHERE buyer_id = 1001",
    )
    .await;
    assert_eq!(code, 8032);

    // A broken file is refused with its problems; the last good rules keep serving.
    assert!(!r.a.reload("version = 5\n[rooms.A]\nrole = \"unit\"\n"));
    assert!(
        r.a.log_text()
            .contains("rules reload refused, the old rules keep serving"),
        "{}",
        r.a.log_text()
    );
    let (code, _) = refused(
        &mut a,
        "UPDATE t_order SET amount = 5 WHERE buyer_id = 1001",
    )
    .await;
    assert_eq!(code, 8032);
    a.query_drop("UPDATE t_order SET amount = 5 WHERE buyer_id = 1002")
        .await
        .unwrap();

    // Lifting the ban: the code is writable again.
    assert!(r.a.reload(&text.replace("version = 3\n", "version = 6\n")));
    a.query_drop("UPDATE t_order SET amount = 7 WHERE buyer_id = 1001")
        .await
        .unwrap();
    assert_eq!(
        count(ROOM_A_PORT, &r.db, "SELECT COUNT(*) FROM t_order").await,
        2
    );

    // The traffic rule may move a code only while it is banned in the serving rules and the
    // new ones: moving 1001 unbanned is refused and room A keeps writing it.
    let owners = "owners.A = [\"0-4999\"]\nowners.B = [\"5000-9999\"]";
    assert!(text.contains(owners));
    let unbanned_move = text
        .replace(
            owners,
            "owners.A = [\"0-1000\", \"1002-4999\"]\nowners.B = [\"1001\", \"5000-9999\"]",
        )
        .replace("version = 3\n", "version = 7\n");
    assert!(!r.a.reload(&unbanned_move), "{}", r.a.log_text());
    assert!(
        r.a.log_text()
            .contains("moves route code 1001 from room `A` to room `B`"),
        "{}",
        r.a.log_text()
    );
    a.query_drop("UPDATE t_order SET amount = 8 WHERE buyer_id = 1001")
        .await
        .unwrap();
    // 4000-4099 are banned in both: they move (room A now refuses them as room B's).
    let banned_move = text
        .replace(
            owners,
            "owners.A = [\"0-3999\", \"4100-4999\"]\nowners.B = [\"4000-4099\", \"5000-9999\"]",
        )
        .replace("version = 3\n", "version = 8\n");
    assert!(r.a.reload(&banned_move), "{}", r.a.log_text());
    let (code, msg) = refused(
        &mut a,
        "INSERT INTO t_order (order_id, buyer_id, amount) VALUES (9, 4050, 1)",
    )
    .await;
    assert_eq!(code, 8031, "{msg}");
    assert!(msg.contains("belongs to room `B`"), "{msg}");
}

/// The rules with route codes `ban` banned (ban version `v`, rules version `100 + v`).
fn with_ban(text: &str, ban: &str, v: u64) -> String {
    text.replace(
        "version = 2\nroute_codes = [\"4000-4099\"]",
        &format!("version = {v}\nroute_codes = [{ban}]"),
    )
    .replace("version = 3\n", &format!("version = {}\n", 100 + v))
}

/// Milliseconds since 1970, the unit of `effective_ms`.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn effective_ms(line: &str) -> i64 {
    line.split("effective_ms=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no effective_ms in {line}"))
}

#[tokio::test]
async fn a_ban_is_effective_only_after_transactions_that_wrote_its_codes_end() {
    let (db, cu) = databases("ma_effective").await;
    let text = rules(&db, &cu);
    let a = Proxy::start_rules_with("A", &text, "ban_wait_timeout_s = 2").await;
    let mut t = Conn::new(opts(&a, "app", &db)).await.unwrap();
    t.query_drop("BEGIN").await.unwrap();
    t.query_drop("INSERT INTO t_order (order_id, buyer_id, amount) VALUES (1, 1001, 1)")
        .await
        .unwrap();
    assert!(a.reload(&with_ban(&text, "\"1001\"", 10)));
    // The open transaction already wrote to code 1001: the ban waits for it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !a.log_text().contains("write-ban effective"),
        "{}",
        a.log_text()
    );
    t.query_drop("COMMIT").await.unwrap();
    let line = a
        .wait_log("write-ban effective", 1, std::time::Duration::from_secs(5))
        .expect("effective");
    assert!(
        line.contains("ban_version=10")
            && line.contains("waited_for=1")
            && line.contains("connections=[")
            && line.contains("aborted=0"),
        "{line}"
    );

    // A transaction that never ends is aborted after ban_wait_timeout_s, and rolled back.
    let mut t = Conn::new(opts(&a, "app", &db)).await.unwrap();
    t.query_drop("BEGIN").await.unwrap();
    t.query_drop("INSERT INTO t_order (order_id, buyer_id, amount) VALUES (2, 1002, 1)")
        .await
        .unwrap();
    assert!(a.reload(&with_ban(&text, "\"1001-1002\"", 11)));
    let line = a
        .wait_log("write-ban effective", 2, std::time::Duration::from_secs(10))
        .expect("effective");
    assert!(
        line.contains("ban_version=11") && line.contains("aborted=1"),
        "{line}"
    );
    assert!(
        t.query_drop("COMMIT").await.is_err(),
        "the aborted session is closed"
    );
    assert_eq!(
        count(ROOM_A_PORT, &db, "SELECT COUNT(*) FROM t_order").await,
        1
    );

    // A multi-statement text claims the codes of all its statements, not only the last one's:
    // a ban on the first statement's code waits for the transaction too.
    let mut t = Conn::new(opts(&a, "app", &db)).await.unwrap();
    t.query_drop("BEGIN").await.unwrap();
    t.query_drop(
        "INSERT INTO t_order (order_id, buyer_id, amount) VALUES (3, 1003, 1); \
         INSERT INTO t_order (order_id, buyer_id, amount) VALUES (4, 1004, 1)",
    )
    .await
    .unwrap();
    assert!(a.reload(&with_ban(&text, "\"1001-1003\"", 12)));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        a.log_text().matches("write-ban effective").count(),
        2,
        "{}",
        a.log_text()
    );
    t.query_drop("COMMIT").await.unwrap();
    let line = a
        .wait_log("write-ban effective", 3, std::time::Duration::from_secs(5))
        .expect("effective");
    assert!(
        line.contains("ban_version=12") && line.contains("waited_for=1"),
        "{line}"
    );

    // A statement stuck on the server (a lock wait of 50 s) is killed after the timeout too.
    let mut holder = direct_room(ROOM_A_PORT, Some(&db)).await;
    holder.query_drop("BEGIN").await.unwrap();
    holder
        .query_drop("UPDATE t_order SET amount = 9 WHERE order_id = 4")
        .await
        .unwrap();
    let mut stuck = Conn::new(opts(&a, "app", &db)).await.unwrap();
    let waiting = tokio::spawn(async move {
        stuck
            .query_drop("UPDATE t_order SET amount = 3 WHERE buyer_id = 1004 AND order_id = 4")
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(a.reload(&with_ban(&text, "\"1001-1004\"", 13)));
    let line = a
        .wait_log("write-ban effective", 4, std::time::Duration::from_secs(15))
        .unwrap_or_else(|| panic!("the lock wait held the ban back:\n{}", a.log_text()));
    assert!(
        line.contains("ban_version=13") && line.contains("aborted=1"),
        "{line}"
    );
    assert!(
        waiting.await.unwrap().is_err(),
        "the stuck statement was killed"
    );
    holder.query_drop("ROLLBACK").await.unwrap();

    // XA transactions outlive their sessions once prepared: refused outside center databases.
    let (code, msg) = refused(&mut t, "XA START 'rb1'").await;
    assert_eq!(code, 8035, "{msg}");
    assert!(msg.contains("XA transactions"), "{msg}");
}

/// Clients write continuously through both proxies while each proxy's write-ban is switched on
/// and off, each write in a transaction held open a few milliseconds; afterwards the rows and
/// the clients' COMMIT times prove that no write to a banned code committed after the ban was
/// reported effective (until it was lifted), and that every acknowledged write is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_no_banned_write_commits_after_the_ban_is_effective() {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    let r = rooms("ma_load").await;
    let text = rules(&r.db, &r.cu);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let next_id = std::sync::Arc::new(AtomicI64::new(1));
    let mut writers = Vec::new();
    for (proxy, base) in [(&r.a, 1000i64), (&r.b, 5000i64)] {
        for w in 0..2i64 {
            let o = opts(proxy, "app", &r.db);
            let (stop, next_id) = (stop.clone(), next_id.clone());
            writers.push(tokio::spawn(async move {
                let mut c = Conn::new(o).await.unwrap();
                let mut acked = Vec::new();
                let mut k = w;
                while !stop.load(Ordering::Relaxed) {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let buyer = base + (k % 100);
                    k += 1;
                    let sql = format!(
                        "INSERT INTO t_order (order_id, buyer_id, amount) VALUES ({id}, {buyer}, 1)"
                    );
                    // A transaction that stays open a little after its write: a ban swapped in
                    // meanwhile must wait for its COMMIT.
                    c.query_drop("BEGIN").await.unwrap();
                    match c.query_drop(sql).await {
                        Ok(()) => {
                            tokio::time::sleep(std::time::Duration::from_millis(
                                (k % 7) as u64 * 3,
                            ))
                            .await;
                            let sent = wall_ms();
                            c.query_drop("COMMIT").await.unwrap();
                            acked.push((id, buyer, sent));
                        }
                        Err(mysql_async::Error::Server(e)) if e.code == 8032 => {
                            c.query_drop("ROLLBACK").await.unwrap();
                        }
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                acked
            }));
        }
    }
    // Ban the first half of each room's buyers' codes, lift it, ban again…
    let mut windows: Vec<(usize, i64, i64)> = Vec::new(); // (room, effective, lift requested)
    let mut effective_count = [0usize; 2];
    for round in 0..6u64 {
        let on = round % 2 == 0;
        let ban = if on {
            "\"1000-1049\", \"5000-5049\""
        } else {
            ""
        };
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        for (i, proxy) in [&r.a, &r.b].into_iter().enumerate() {
            let requested = wall_ms();
            assert!(proxy.reload(&with_ban(&text, ban, 20 + round)));
            effective_count[i] += 1;
            let line = proxy
                .wait_log(
                    "write-ban effective",
                    effective_count[i],
                    std::time::Duration::from_secs(10),
                )
                .expect("effective");
            if on {
                windows.push((i, effective_ms(&line), i64::MAX));
            } else if let Some(w) = windows.iter_mut().rev().find(|w| w.0 == i) {
                w.2 = requested;
            }
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 50,
        "the writers made progress: {}",
        acked.len()
    );
    for (i, port) in [(0usize, ROOM_A_PORT), (1, ROOM_B_PORT)] {
        let mut c = direct_room(port, Some(&r.db)).await;
        let rows: Vec<(i64, i64, i64)> = c
            .query(
                "SELECT order_id, buyer_id, CAST(UNIX_TIMESTAMP(at) * 1000 AS SIGNED) FROM t_order",
            )
            .await
            .unwrap();
        let ids: std::collections::HashSet<i64> = rows.iter().map(|r| r.0).collect();
        let base = if i == 0 { 1000 } else { 5000 };
        let mine = acked
            .iter()
            .filter(|(_, b, _)| *b >= base && *b < base + 100);
        for (id, buyer, sent) in mine {
            assert!(
                ids.contains(id),
                "acknowledged write {id} (buyer {buyer}) is missing in room {i}"
            );
            // Its COMMIT was sent (client clock) before the ban was reported effective, or
            // after it was lifted.
            if buyer - base < 50 {
                for (p, from, to) in &windows {
                    if *p == i {
                        assert!(
                            !(*sent > from + 1 && *sent < *to),
                            "order {id} of banned buyer {buyer}: COMMIT sent at {sent}, inside the ban window {from}..{to} of room {i}"
                        );
                    }
                }
            }
        }
        let mut banned_rows = 0;
        for (id, buyer, at) in rows {
            if buyer - base >= 50 {
                continue;
            }
            banned_rows += 1;
            for (p, from, to) in &windows {
                if *p == i {
                    assert!(
                        !(at > from + 1 && at < *to),
                        "order {id} of banned buyer {buyer} committed at {at}, inside the ban window {from}..{to} of room {i}"
                    );
                }
            }
        }
        assert!(banned_rows > 0, "room {i} wrote banned buyers between bans");
    }
}

#[tokio::test]
async fn segment_keys_come_in_blocks_from_the_center_table() {
    let r = rooms("ma_segments").await;
    {
        let mut c = direct_room(ROOM_A_PORT, None).await;
        c.query_drop(format!("DROP DATABASE IF EXISTS `{}_ops`", r.db))
            .await
            .unwrap();
        c.query_drop(format!("CREATE DATABASE `{}_ops`", r.db))
            .await
            .unwrap();
        for port in [ROOM_A_PORT, ROOM_B_PORT] {
            let mut d = direct_room(port, Some(&r.db)).await;
            d.query_drop("CREATE TABLE t_item (item_id BIGINT PRIMARY KEY, buyer_id BIGINT NOT NULL, sku VARCHAR(16))")
                .await
                .unwrap();
        }
    }
    let mut a = Conn::new(opts(&r.a, "app", &r.db)).await.unwrap();
    let mut b = Conn::new(opts(&r.b, "app", &r.db)).await.unwrap();
    a.query_drop("INSERT INTO t_item (buyer_id, sku) VALUES (1001, 'x'), (1002, 'y')")
        .await
        .unwrap();
    let first_a = a.last_insert_id().unwrap() as i64;
    b.query_drop("INSERT INTO t_item (buyer_id, sku) VALUES (5001, 'z')")
        .await
        .unwrap();
    let first_b = b.last_insert_id().unwrap() as i64;
    let ids_a: Vec<i64> = a
        .query("SELECT item_id FROM t_item ORDER BY item_id")
        .await
        .unwrap();
    assert_eq!(ids_a, [first_a, first_a + 1], "dense within a block");
    assert!(first_a >= 1 && first_b >= 1);
    assert!(
        !ids_a.contains(&first_b),
        "the rooms' blocks do not overlap: {ids_a:?} {first_b}"
    );
    let lid: i64 = b
        .query_first("SELECT LAST_INSERT_ID()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lid, first_b);
    // The center table holds the tag's high-water mark, in whole steps.
    let mut c = direct_room(ROOM_A_PORT, Some(&format!("{}_ops", r.db))).await;
    let (max_id, step): (i64, i64) = c
        .query_first("SELECT max_id, step FROM rb_id_segment WHERE tag = 'item'")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(step, 10);
    assert!(max_id >= 20 && max_id % 10 == 0, "{max_id}");
    assert!(first_a <= max_id && first_b <= max_id);

    // Room B's proxy took its blocks from room A's `ops_a`: moving that data source needs a
    // restart (the allocator keeps its target), so the reload is refused.
    let text = rules(&r.db, &r.cu);
    let ops =
        format!("[data_sources.ops_a]\nroom = \"A\"\nhost = \"127.0.0.1\"\nport = {ROOM_A_PORT}");
    assert!(text.contains(&ops));
    let moved = text
        .replace(&ops, &ops.replace("127.0.0.1", "localhost"))
        .replace("version = 3\n", "version = 4\n");
    assert!(!r.b.reload(&moved), "{}", r.b.log_text());
    assert!(
        r.b.log_text()
            .contains("the center data source of the segment allocation table changed"),
        "{}",
        r.b.log_text()
    );
}

#[tokio::test]
async fn reads_of_another_rooms_keys_are_counted_when_asked() {
    let (db, cu) = databases("ma_foreign").await;
    let b = Proxy::start_rules_with("B", &rules(&db, &cu), "count_foreign_reads = true").await;
    let mut c = Conn::new(opts(&b, "app", &db)).await.unwrap();
    // Room B's own buyer: not counted; room A's buyer, found in WHERE: counted, still served.
    let _: Vec<i64> = c
        .query("SELECT order_id FROM t_order WHERE buyer_id = 5001")
        .await
        .unwrap();
    let _: Vec<i64> = c
        .query("SELECT order_id FROM t_order WHERE buyer_id = 1001")
        .await
        .unwrap();
    let line = b
        .wait_log(
            "read of another room's data",
            1,
            std::time::Duration::from_secs(5),
        )
        .expect("counted");
    assert!(
        line.contains("foreign_reads=1") && line.contains("route_code=1001"),
        "{line}"
    );
    assert_eq!(
        b.log_text().matches("read of another room's data").count(),
        1
    );
    // Hinted reads: another room's route code is counted once; a route code out of range
    // (no room's data) and reads of a center-unit database are not counted.
    let _: Vec<i64> = c
        .query("/* rb: route_code=1002 */ SELECT order_id FROM t_order")
        .await
        .unwrap();
    let _: Vec<i64> = c
        .query("/* rb: route_code=20000 */ SELECT order_id FROM t_order")
        .await
        .unwrap();
    c.query_drop(format!("USE {cu}")).await.unwrap();
    let _: Vec<String> = c
        .query("/* rb: sharding_key=1003 */ SELECT sku FROM t_sku")
        .await
        .unwrap();
    let _: Vec<String> = c
        .query("SELECT sku FROM t_sku WHERE sku = 'a'")
        .await
        .unwrap();
    let line = b
        .wait_log(
            "read of another room's data",
            2,
            std::time::Duration::from_secs(5),
        )
        .expect("counted");
    assert!(
        line.contains("foreign_reads=2") && line.contains("route_code=1002"),
        "{line}"
    );
    assert_eq!(
        b.log_text().matches("read of another room's data").count(),
        2,
        "{}",
        b.log_text()
    );
}

/// A client that leaves in the middle of a transaction that wrote a code: its backend thread is
/// killed, and the codes stay claimed until the server confirms the thread gone.
#[tokio::test]
async fn a_client_lost_mid_write_keeps_its_codes_claimed_until_its_server_thread_is_gone() {
    let (db, cu) = databases("ma_fence").await;
    let text = rules(&db, &cu);
    let a = Proxy::start_rules_with("A", &text, "ban_wait_timeout_s = 30").await;
    let mut t = Conn::new(opts(&a, "app", &db)).await.unwrap();
    t.query_drop("BEGIN").await.unwrap();
    t.query_drop("INSERT INTO t_order (order_id, buyer_id, amount) VALUES (1, 1001, 1)")
        .await
        .unwrap();
    t.disconnect().await.unwrap(); // leaves without COMMIT
    let line = a
        .wait_log(
            "its route codes are released",
            1,
            std::time::Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("no release logged:\n{}", a.log_text()));
    let thread: i64 = line
        .split("backend_thread=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no backend_thread in {line}"));
    assert_eq!(
        count(
            ROOM_A_PORT,
            &db,
            &format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {thread}")
        )
        .await,
        0
    );
    // Rolled back, and a ban on its code is effective at once.
    assert_eq!(
        count(ROOM_A_PORT, &db, "SELECT COUNT(*) FROM t_order").await,
        0
    );
    assert!(a.reload(&with_ban(&text, "\"1001\"", 10)));
    let line = a
        .wait_log("write-ban effective", 1, std::time::Duration::from_secs(5))
        .expect("effective");
    assert!(line.contains("waited_for=0"), "{line}");
}
