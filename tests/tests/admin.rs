//! The DBA's side end to end: the admin interface through the real binary and the `mariadb`
//! CLI, rules reloads (SIGHUP and `RELOAD RULES`) under load, a broken rules file, write-ban
//! changes written back to the rules file, and the Prometheus endpoint scraped over HTTP.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::*;
use rb_e2e::{free_port, fresh_unit_db, http_get, mariadb, Proxy, ROOM_A_PORT, ROOM_B_PORT};

const ADMIN_PW: &str = "secret";
const WATCH_PW: &str = "look";

/// Rules for unit database `db` (data sources `u_a`/`u_b`, or `u_b_name` for room B) with a
/// sharded `t_order`, a broadcast `t_region`, and users `app` (unit mode).
fn rules(db: &str, version: u64, u_b_name: &str, ban: &str) -> String {
    let hash = shard_rules::config::hash_password("app");
    format!(
        r#"# rules of the admin test
version = {version}
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
[write_ban]
# the DBA's note on the ban
version = {version}
route_codes = [{ban}]
[data_sources.u_a]
room = "A"
host = "127.0.0.1"
port = {ROOM_A_PORT}
schema = "{db}"
user = "rb"
password = "rb"
[data_sources.{u_b_name}]
room = "B"
host = "127.0.0.1"
port = {ROOM_B_PORT}
schema = "{db}"
user = "rb"
password = "rb"
[databases.{db}]
type = "unit"
data_sources.ds = ["u_a", "{u_b_name}"]
broadcast_tables = ["t_region"]
[databases.{db}.tables.t_order]
sharding_key = "buyer_id"
[databases.{db}.tables.t_order_item]
sharding_key = "buyer_id"
[databases.central]
type = "center"
data_sources.ds = ["u_a"]
[users.app]
password_hash = "{hash}"
databases = ["{db}", "central"]
mode = "unit"
"#
    )
}

/// `[admin]` on a free port with a writing and a read-only user, and `[metrics]` on `metrics`.
fn sections(metrics: Option<u16>) -> String {
    let mut s = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\nusers.dba = {{ password_hash = \"{}\" }}\n\
         users.watch = {{ password_hash = \"{}\", write = false }}\n",
        shard_rules::config::hash_password(ADMIN_PW),
        shard_rules::config::hash_password(WATCH_PW)
    );
    if let Some(port) = metrics {
        s += &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    }
    s
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE t_order (id BIGINT PRIMARY KEY AUTO_INCREMENT, buyer_id BIGINT NOT NULL, \
     status VARCHAR(16) NOT NULL DEFAULT 'new')",
    "CREATE TABLE t_order_item (id BIGINT PRIMARY KEY AUTO_INCREMENT, buyer_id BIGINT NOT NULL)",
    "CREATE TABLE t_region (id INT PRIMARY KEY, name VARCHAR(20))",
];

/// The admin CLI as `dba`: success, stdout, stderr.
fn admin(p: &Proxy, db: &str, sql: &str) -> (bool, String, String) {
    mariadb(p.admin_port.expect("admin port"), "dba", ADMIN_PW, db, sql)
}

/// Runs `sql` on the admin port and returns its stdout; panics with stderr on failure.
fn admin_ok(p: &Proxy, db: &str, sql: &str) -> String {
    let (ok, out, err) = admin(p, db, sql);
    assert!(ok, "{sql}: {err}\n{}", p.log_text());
    out
}

/// The value column of `item` in PREVIEW output.
fn item<'a>(out: &'a str, item: &str) -> Vec<&'a str> {
    out.lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(k, _)| *k == item)
        .map(|(_, v)| v)
        .collect()
}

async fn app(p: &Proxy, db: &str) -> mysql_async::Conn {
    mysql_async::Conn::new(p.opts("app", "app", Some(db)))
        .await
        .expect("app connection")
}

#[tokio::test]
async fn every_admin_statement_answers_through_the_mariadb_cli() {
    let db = fresh_unit_db("admin_cli", SCHEMA).await;
    let p = Proxy::start_rules_sections("B", &rules(&db, 1, "u_b", ""), &sections(None)).await;
    let mut c = app(&p, &db).await;
    c.query_drop("INSERT INTO t_order (buyer_id) VALUES (5001)")
        .await
        .unwrap();
    // A center database in this unit room: refused by the session itself, counted as such.
    let e = c.query_drop("USE central").await.unwrap_err();
    assert!(e.to_string().contains("8021"), "{e}");

    let out = admin_ok(&p, &db, "SHOW RULES");
    assert!(
        out.starts_with("version\ttraffic_version\twrite_ban_version\tsource"),
        "{out}"
    );
    let row: Vec<&str> = out.lines().nth(1).unwrap().split('\t').collect();
    assert_eq!(&row[..3], ["1", "1", "1"], "{out}");
    assert_eq!(
        row[3],
        p.rules_path.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(row[5], "start");
    assert_eq!(row[6], "B");

    let out = admin_ok(&p, &db, "SHOW TABLE RULES LIKE 't_order%'");
    let tables: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(2).unwrap())
        .collect();
    assert_eq!(tables, ["t_order", "t_order_item"], "{out}");
    assert!(out.contains("\tsharded\tbuyer_id\tds.t_order\t"), "{out}");
    let out = admin_ok(&p, &db, "SHOW TABLE RULES");
    assert!(
        out.contains("\tt_region\tbroadcast\tNULL\tds.t_region\t"),
        "{out}"
    );

    let out = admin_ok(&p, &db, "SHOW TRAFFIC RULE");
    assert!(out.contains("1\tA\tcenter\t0-4999\t5000\t0"), "{out}");
    assert!(out.contains("1\tB\tunit\t5000-9999\t5000\t0"), "{out}");

    let out = admin_ok(&p, &db, "SHOW WRITE BAN");
    assert!(out.contains("\n1\tnone\t0\teffective\t"), "{out}");

    let out = admin_ok(&p, &db, "SHOW POOLS");
    let pool = out
        .lines()
        .find(|l| l.starts_with("B\tu_b\t"))
        .unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = pool.split('\t').collect();
    assert_eq!(cols[2], format!("127.0.0.1:{ROOM_B_PORT}/{db}"));
    assert_eq!(cols[4], "16", "max_size: {out}");
    assert!(cols[5].parse::<u32>().unwrap() >= 1, "connections: {out}");
    assert!(
        !out.contains("u_a"),
        "room A's data source is not this proxy's: {out}"
    );

    // The app session shows with its database, mode and the digest of its last statement.
    c.query_drop("UPDATE t_order SET status = 'paid' WHERE buyer_id = 5001")
        .await
        .unwrap();
    let out = admin_ok(&p, &db, "SHOW SESSIONS");
    let line = out
        .lines()
        .find(|l| l.contains("\tapp\t"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(&format!("\t{db}\tunit\t")), "{line}");
    assert!(
        line.contains("UPDATE t_order SET status = ? WHERE buyer_id = ?"),
        "{line}"
    );

    let out = admin_ok(&p, &db, "SHOW VERSION");
    let mut room_b = rb_e2e::direct_room(ROOM_B_PORT, None).await;
    let backend: String = room_b
        .query_first("SELECT VERSION()")
        .await
        .unwrap()
        .unwrap();
    room_b.disconnect().await.unwrap();
    assert!(
        out.contains(&format!("\t5.5.5-{backend}\t")),
        "{backend}: {out}"
    );
    assert!(out.contains(&format!("\t{}\t", "B")), "{out}");

    // A write-ban set here is written to the rules file (comments kept, versions bumped),
    // applied at once and reported effective.
    let out = admin_ok(
        &p,
        &db,
        "SET WRITE BAN ROUTE_CODES 5000-5009, 5020 VERSION 7; SHOW WRITE BAN",
    );
    assert!(
        out.contains("\n7\t5000-5009,5020\t11\teffective\t"),
        "{out}"
    );
    let file = std::fs::read_to_string(&p.rules_path).unwrap();
    assert!(
        file.contains(
            "# the DBA's note on the ban\nversion = 7\nroute_codes = [\"5000-5009\", \"5020\"]"
        ),
        "{file}"
    );
    assert!(
        file.contains("\nversion = 2\n"),
        "the rules version is bumped: {file}"
    );
    assert!(p
        .log_text()
        .contains("write-ban changed through the admin interface"));
    assert!(p
        .log_text()
        .contains("by=admin dba@127.0.0.1: SET WRITE BAN"));
    let e = c
        .query_drop("UPDATE t_order SET status = 'x' WHERE buyer_id = 5001")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("8032"), "{e}");
    let out = admin_ok(&p, &db, "SHOW RULES");
    assert!(
        out.lines().nth(1).unwrap().starts_with("2\t1\t7\t"),
        "{out}"
    );

    // The read-only admin user may look but not change anything.
    let port = p.admin_port.unwrap();
    let (ok, out, _) = mariadb(port, "watch", WATCH_PW, &db, "SHOW WRITE BAN");
    assert!(ok && out.contains("5000-5009,5020"), "{out}");
    let (ok, _, err) = mariadb(port, "watch", WATCH_PW, &db, "CLEAR WRITE BAN");
    assert!(
        !ok && err.contains("ERROR 1227") && err.contains("may not change rules"),
        "{err}"
    );
    let (ok, _, err) = mariadb(port, "watch", WATCH_PW, &db, "RELOAD RULES");
    assert!(!ok && err.contains("ERROR 1227"), "{err}");
    // Application users are not admin users, and a wrong password is refused.
    let (ok, _, err) = mariadb(port, "app", "app", &db, "SHOW RULES");
    assert!(!ok && err.contains("ERROR 1698"), "{err}");
    let (ok, _, _) = mariadb(port, "dba", "wrong", &db, "SHOW RULES");
    assert!(!ok);

    // A version that does not go up is refused, and nothing changes.
    let (ok, _, err) = admin(&p, &db, "SET WRITE BAN ROUTE_CODES 1 VERSION 7");
    assert!(
        !ok && err.contains("is not above the serving version 7"),
        "{err}"
    );
    // Codes outside the route code range are refused by validation, naming the field.
    let (ok, _, err) = admin(&p, &db, "SET WRITE BAN ROUTE_CODES 20000");
    assert!(
        !ok && err.contains("write_ban") && err.contains("20000"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&p.rules_path).unwrap(), file);

    let out = admin_ok(&p, &db, "CLEAR WRITE BAN; SHOW WRITE BAN");
    assert!(out.contains("\n8\tnone\t0\teffective\t"), "{out}");
    c.query_drop("UPDATE t_order SET status = 'x' WHERE buyer_id = 5001")
        .await
        .unwrap();

    // RELOAD RULES re-reads the file: an edit made there is applied.
    std::fs::write(&p.rules_path, rules(&db, 9, "u_b", "\"9000\"")).unwrap();
    admin_ok(&p, &db, "RELOAD RULES");
    let out = admin_ok(&p, &db, "SHOW WRITE BAN");
    assert!(out.contains("\n9\t9000\t1\teffective\t"), "{out}");

    let out = admin_ok(&p, &db, "SHOW STATS");
    let stat = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}\t")))
            .unwrap_or_else(|| panic!("{name} missing: {out}"))
            .parse()
            .unwrap()
    };
    assert_eq!(stat("refusals.banned"), 1);
    assert_eq!(stat("refusals.center_database"), 1);
    assert_eq!(stat("statements.update.refused"), 1);
    assert_eq!(stat("statements.update.ok"), 2);
    assert_eq!(stat("statements.insert.ok"), 1);
    assert_eq!(stat("rules.reloads_applied"), 3);
    assert!(stat("rules.reloads_refused") >= 2);
    assert!(stat("client_connections") >= 1);

    // What the CLI sends by itself, and what is not an admin statement.
    let out = admin_ok(&p, &db, "SELECT @@version_comment LIMIT 1");
    assert!(out.contains("Rainbow Bridge admin"), "{out}");
    let (ok, _, err) = admin(&p, &db, "DELETE FROM t_order");
    assert!(
        !ok && err.contains("ERROR 1064") && err.contains("SHOW RULES"),
        "{err}"
    );
    let out = admin_ok(&p, &db, "SHOW HELP");
    assert!(out.contains("PREVIEW"), "{out}");
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn preview_shows_routed_refused_and_broadcast_statements() {
    let db = fresh_unit_db("admin_preview", SCHEMA).await;
    let p =
        Proxy::start_rules_sections("B", &rules(&db, 1, "u_b", "\"5500\""), &sections(None)).await;

    // Routed: a write of a key this room owns.
    let out = admin_ok(
        &p,
        &db,
        "PREVIEW UPDATE t_order SET status = 'paid' WHERE buyer_id = 5001",
    );
    assert_eq!(
        item(&out, "decision"),
        ["forwarded: checked and allowed"],
        "{out}"
    );
    assert_eq!(
        item(&out, "sharding key"),
        ["5001 (from the sharding column)"],
        "{out}"
    );
    assert_eq!(item(&out, "route code"), ["5001"]);
    assert_eq!(item(&out, "owner room"), ["B"]);
    assert_eq!(
        item(&out, "write-ban"),
        ["not banned (write-ban version 1)"]
    );
    assert_eq!(item(&out, "data nodes"), ["t_order (sharded): ds.t_order"]);
    assert_eq!(
        item(&out, "backend"),
        [format!("u_b (127.0.0.1:{ROOM_B_PORT}/{db}) in room B").as_str()]
    );
    assert_eq!(
        item(&out, "sql"),
        ["UPDATE t_order SET status = 'paid' WHERE buyer_id = 5001"]
    );

    // Refused: another room's key, and a banned key (through a hint), each with its error.
    let out = admin_ok(
        &p,
        &db,
        "PREVIEW UPDATE t_order SET status = 'paid' WHERE buyer_id = 1001",
    );
    assert_eq!(item(&out, "decision"), ["refused"], "{out}");
    let err = item(&out, "error")[0];
    assert!(err.starts_with("8031 (HY000) "), "{err}");
    assert!(
        err.contains("room `A`") && err.contains("route code 1001"),
        "{err}"
    );
    // The refusal's route facts are listed too.
    assert_eq!(item(&out, "sharding key"), ["1001"], "{out}");
    assert_eq!(item(&out, "route code"), ["1001"], "{out}");
    assert_eq!(item(&out, "owner room"), ["A"], "{out}");
    assert_eq!(item(&out, "table"), ["t_order"], "{out}");
    let out = admin_ok(
        &p,
        &db,
        "PREVIEW /* rb: sharding_key=5500 */ DELETE FROM t_order_item WHERE id = 3",
    );
    assert_eq!(item(&out, "hint"), ["/* rb: sharding_key=5500 */"], "{out}");
    assert!(item(&out, "error")[0].starts_with("8032 (HY000) "), "{out}");
    assert_eq!(item(&out, "route code"), ["5500"], "{out}");
    assert_eq!(
        item(&out, "write-ban")[0].split(' ').next(),
        Some("banned"),
        "{out}"
    );
    // The same statement with the hint: the SQL sent keeps the hint, as the proxy sends it.
    let out = admin_ok(
        &p,
        &db,
        "PREVIEW /* rb: sharding_key=5501 */ DELETE FROM t_order_item WHERE id = 3",
    );
    assert_eq!(
        item(&out, "sharding key"),
        ["5501 (from the hint)"],
        "{out}"
    );
    assert_eq!(
        item(&out, "sql"),
        ["/* rb: sharding_key=5501 */ DELETE FROM t_order_item WHERE id = 3"]
    );

    // Broadcast: a read of a broadcast table, and a write of one needing a hint.
    let out = admin_ok(&p, &db, "PREVIEW SELECT name FROM t_region WHERE id = 1");
    assert_eq!(
        item(&out, "data nodes"),
        ["t_region (broadcast): ds.t_region"],
        "{out}"
    );
    assert!(
        item(&out, "decision")[0].starts_with("forwarded: reads"),
        "{out}"
    );
    let out = admin_ok(
        &p,
        &db,
        "PREVIEW INSERT INTO t_region (id, name) VALUES (1, 'north')",
    );
    assert_eq!(item(&out, "decision"), ["refused"], "{out}");
    assert!(item(&out, "error")[0].starts_with("8030 "), "{out}");

    // A read of another room's key: served here and counted.
    let out = admin_ok(
        &p,
        &db,
        "PREVIEW SELECT * FROM t_order WHERE buyer_id = 1001",
    );
    assert!(item(&out, "decision")[0].contains("foreign read"), "{out}");
    // A center connection in a unit room, with the database named in the statement.
    let out = admin_ok(
        &p,
        "",
        &format!("PREVIEW DATABASE {db} MODE center SELECT 1"),
    );
    assert!(item(&out, "error")[0].starts_with("8020 "), "{out}");
    // Without a database there is nothing to judge against: a clear error.
    let (ok, _, err) = admin(&p, "", "PREVIEW SELECT 1");
    assert!(!ok && err.contains("PREVIEW needs a database"), "{err}");
}

/// Counts statements that succeeded and the errors of those that did not.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: std::sync::Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_fails_no_statement() {
    let db = fresh_unit_db("admin_reload", SCHEMA).await;
    let p = Proxy::start_rules_sections("B", &rules(&db, 1, "u_b", ""), &sections(None)).await;
    let p = Arc::new(p);
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    let mut clients = Vec::new();
    for n in 0..6 {
        let (p, stop, load, db) = (p.clone(), stop.clone(), load.clone(), db.clone());
        clients.push(tokio::spawn(async move {
            let mut c = app(&p, &db).await;
            let buyer = 5000 + n;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let r = match i % 4 {
                    0 => {
                        c.exec_drop("INSERT INTO t_order (buyer_id) VALUES (?)", (buyer,))
                            .await
                    }
                    1 => {
                        c.query_drop(format!(
                            "UPDATE t_order SET status = 's{i}' WHERE buyer_id = {buyer}"
                        ))
                        .await
                    }
                    2 => c.query_drop("SELECT COUNT(*) FROM t_order").await,
                    _ => {
                        // A transaction across the reloads: begun on one rule set, committed
                        // on another.
                        async {
                            c.query_drop("BEGIN").await?;
                            c.query_drop(format!(
                                "INSERT INTO t_order_item (buyer_id) VALUES ({buyer})"
                            ))
                            .await?;
                            tokio::time::sleep(Duration::from_millis(3)).await;
                            c.query_drop("COMMIT").await
                        }
                        .await
                    }
                };
                match r {
                    Ok(()) => {
                        load.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => load.failed.lock().unwrap().push(e.to_string()),
                }
            }
            c.disconnect().await.unwrap();
        }));
    }
    // Reloads while the clients run: unchanged files, a ban on codes nobody writes, and twice
    // a renamed data source for room B (a new pool; the old one drains), by SIGHUP and by
    // RELOAD RULES.
    let rule_sets = [
        rules(&db, 2, "u_b", ""),
        rules(&db, 3, "u_b2", "\"9000-9099\""),
        rules(&db, 4, "u_b2", ""),
        rules(&db, 5, "u_b", "\"7000\""),
        rules(&db, 6, "u_b", ""),
        rules(&db, 7, "u_b3", ""),
    ];
    // The reloads block (kill, the CLI, polling the log), so they run off the runtime while
    // the clients keep sending.
    for (i, text) in rule_sets.into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (p, db) = (p.clone(), db.clone());
        tokio::task::spawn_blocking(move || {
            if i % 2 == 0 {
                assert!(p.reload(&text), "reload {i} refused:\n{}", p.log_text());
            } else {
                std::fs::write(&p.rules_path, &text).unwrap();
                admin_ok(&p, &db, "RELOAD RULES");
            }
        })
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failed = load.failed.lock().unwrap().clone();
    let ok = load.ok.load(Ordering::Relaxed);
    println!("statements ok: {ok}, failed: {}", failed.len());
    assert!(
        failed.is_empty(),
        "{} of {} failed; the first ones: {:?}",
        failed.len(),
        ok + failed.len() as u64,
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "the load ran: {ok} statements");
    // The serving rules are the last ones, with the renamed data source's pool.
    let out = admin_ok(&p, &db, "SHOW RULES; SHOW POOLS");
    assert!(out.contains("\n7\t1\t7\t"), "{out}");
    assert!(out.contains("\nB\tu_b3\t"), "{out}");
    assert!(
        !out.contains("\nB\tu_b\t") && !out.contains("\nB\tu_b2\t"),
        "{out}"
    );
    assert!(
        p.log_text().contains("new_pools=[\"u_b\", \"u_b2\"]"),
        "{}",
        p.log_text()
    );
    // Unchanged data sources kept their pools: version 2 changed no data source, nor did
    // version 4 (only the ban, on the data source version 3 renamed).
    let log = p.log_text();
    for v in [2, 4] {
        let line = log
            .lines()
            .find(|l| l.contains("rules reloaded") && l.contains(&format!("rules_version={v} ")))
            .unwrap_or_else(|| panic!("no reload of version {v}:\n{log}"));
        assert!(line.contains("new_pools=[]"), "{line}");
    }
}

#[tokio::test]
async fn a_broken_rules_file_is_refused_with_every_problem_and_the_old_rules_keep_serving() {
    let db = fresh_unit_db("admin_broken", SCHEMA).await;
    let good = rules(&db, 1, "u_b", "\"5001\"");
    let p = Proxy::start_rules_sections("B", &good, &sections(None)).await;
    // Two sections with a wrong value, and one validation problem each in two others.
    let broken = good
        .replace("type = \"unit\"", "type = \"sideways\"")
        .replace(&format!("port = {ROOM_B_PORT}"), "port = 99999");
    std::fs::write(&p.rules_path, &broken).unwrap();
    let (ok, _, err) = admin(&p, &db, "RELOAD RULES");
    assert!(!ok, "a broken file was taken");
    assert!(err.contains("the old rules keep serving"), "{err}");
    assert!(
        err.contains(&format!("databases.{db}: ")) && err.contains("sideways"),
        "{err}"
    );
    assert!(
        err.contains("data_sources.u_b: ") && err.contains("99999"),
        "{err}"
    );
    // Validation problems (they parse, but make no sense) are listed all at once too.
    let invalid = good
        .replace("owners.B = [\"5000-9999\"]", "owners.B = [\"5000-9998\"]")
        .replace("databases = [", "databases = [\"nowhere\", ");
    assert!(!p.reload(&invalid), "an invalid file was taken");
    let line = p
        .wait_log("rules reload refused", 2, Duration::from_secs(5))
        .unwrap();
    assert!(line.contains("9999") && line.contains("nowhere"), "{line}");
    // A file that cannot be read at all.
    std::fs::remove_file(&p.rules_path).unwrap();
    let (ok, _, err) = admin(&p, &db, "RELOAD RULES");
    assert!(!ok && err.contains("cannot read it"), "{err}");

    // The old rules serve on: version 1, its ban still enforced, its data source in use.
    let out = admin_ok(&p, &db, "SHOW RULES");
    assert!(
        out.lines().nth(1).unwrap().starts_with("1\t1\t1\t"),
        "{out}"
    );
    let mut c = app(&p, &db).await;
    c.query_drop("INSERT INTO t_order (buyer_id) VALUES (5002)")
        .await
        .unwrap();
    let e = c
        .query_drop("INSERT INTO t_order (buyer_id) VALUES (5001)")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("8032"), "{e}");
    // While the file differs from what is applied, the admin interface will not write it.
    std::fs::write(&p.rules_path, &broken).unwrap();
    let (ok, _, err) = admin(&p, &db, "CLEAR WRITE BAN");
    assert!(
        !ok && err.contains("has changed since rules version 1 was applied"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&p.rules_path).unwrap(), broken);
    c.disconnect().await.unwrap();
}

/// The value of the sample `name` (with its labels, as rendered) in a Prometheus text body.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn metrics_scraped_over_http_show_the_counters_moving() {
    let db = fresh_unit_db("admin_metrics", SCHEMA).await;
    let port = free_port();
    let p = Proxy::start_rules_sections(
        "B",
        &rules(&db, 1, "u_b", "\"5009\""),
        &sections(Some(port)),
    )
    .await;
    let scrape = || {
        let (status, body) = http_get(port, "/metrics").expect("scrape /metrics");
        assert_eq!(status, 200, "{body}");
        body
    };
    let selects = "rainbow_statements_total{kind=\"select\",outcome=\"ok\"}";
    let banned = "rainbow_refusals_total{reason=\"banned\"}";
    let before = scrape();
    assert!(
        before.contains("# HELP rainbow_statements_total "),
        "{before}"
    );
    assert!(
        before.contains("# TYPE rainbow_statement_duration_seconds histogram"),
        "{before}"
    );
    assert_eq!(
        sample(&before, "rainbow_rules_version"),
        Some(1.0),
        "{before}"
    );
    assert_eq!(sample(&before, "rainbow_write_ban_route_codes"), Some(1.0));
    let selects_before = sample(&before, selects).unwrap_or(0.0);

    let mut c = app(&p, &db).await;
    for _ in 0..5 {
        c.query_drop("SELECT 1").await.unwrap();
    }
    let e = c
        .query_drop("INSERT INTO t_order (buyer_id) VALUES (5009)")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("8032"), "{e}");
    admin_ok(&p, &db, "CLEAR WRITE BAN");

    // The exporter is fed once a second: wait (bounded) for the counters to arrive.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let body = scrape();
        let moved = sample(&body, selects).unwrap_or(0.0) >= selects_before + 5.0
            && sample(&body, banned) == Some(1.0)
            && sample(&body, "rainbow_rules_version") == Some(2.0);
        if moved || std::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        sample(&after, selects).unwrap_or(0.0) >= selects_before + 5.0,
        "{after}"
    );
    assert_eq!(sample(&after, banned), Some(1.0), "{after}");
    assert_eq!(
        sample(&after, "rainbow_rules_version"),
        Some(2.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "rainbow_write_ban_route_codes"),
        Some(0.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "rainbow_rules_reloads_total{outcome=\"applied\"}"),
        Some(1.0),
        "{after}"
    );
    assert!(
        sample(&after, "rainbow_write_ban_effective_timestamp_seconds").unwrap_or(0.0) > 1.7e9,
        "{after}"
    );
    assert!(
        sample(
            &after,
            "rainbow_pool_connections{room=\"B\",data_source=\"u_b\",state=\"idle\"}"
        )
        .unwrap_or(0.0)
            + sample(
                &after,
                "rainbow_pool_connections{room=\"B\",data_source=\"u_b\",state=\"in_use\"}"
            )
            .unwrap_or(0.0)
            >= 1.0,
        "{after}"
    );
    assert!(
        sample(
            &after,
            "rainbow_statement_duration_seconds_count{kind=\"select\"}"
        )
        .unwrap_or(0.0)
            >= 5.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, "rainbow_client_connections"),
        Some(1.0),
        "{after}"
    );
    c.disconnect().await.unwrap();

    // A reload renames room B's data source: the new one is published, the gone one's pool
    // gauges drop to zero instead of keeping the last values.
    assert!(p.reload(&rules(&db, 3, "u_b9", "")), "{}", p.log_text());
    let old_max = "rainbow_pool_max_connections{room=\"B\",data_source=\"u_b\"}";
    let new_max = "rainbow_pool_max_connections{room=\"B\",data_source=\"u_b9\"}";
    assert_eq!(sample(&after, old_max), Some(16.0), "{after}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let renamed = loop {
        let body = scrape();
        if sample(&body, new_max).is_some() || std::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(sample(&renamed, new_max), Some(16.0), "{renamed}");
    assert_eq!(sample(&renamed, old_max), Some(0.0), "{renamed}");
}
