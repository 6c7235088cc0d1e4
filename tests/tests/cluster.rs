//! Cluster mode (issue 11), against a real etcd started by `scripts/etcd.sh`: rules written to
//! etcd reach every proxy, each acknowledges under its own lease, a refused text leaves the old
//! rules serving, a write-ban is reported effective everywhere, a proxy that goes away drops out
//! and one that comes back catches up, and a proxy without etcd keeps serving.

use std::process::Command;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use rb_e2e::{binary, fresh_db, fresh_unit_db, root, Proxy, ROOM_A_PORT};

fn etcd_up() {
    let out = Command::new(root().join("scripts/etcd.sh"))
        .arg("up")
        .output()
        .expect("run scripts/etcd.sh");
    assert!(
        out.status.success(),
        "scripts/etcd.sh up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ctl(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(["ctl", "--cluster", url])
        .args(args)
        .output()
        .expect("run rainbow-bridge ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs ctl, which must exit with `code` and say each of `said` on stderr; returns stderr.
fn ctl_refuses(url: &str, args: &[&str], code: i32, said: &[&str]) -> String {
    let (got, out, err) = ctl(url, args);
    assert_eq!(got, code, "ctl {args:?}:\n{out}{err}");
    for s in said {
        assert!(err.contains(s), "ctl {args:?} does not say {s:?}:\n{err}");
    }
    err
}

/// Writes a value straight into etcd (what a careless operator could do with etcdctl).
fn etcdctl_put(key: &str, value: &str) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints=http://127.0.0.1:2379", "put", key, value])
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn etcdctl_del(key: &str) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints=http://127.0.0.1:2379", "del", key])
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn etcdctl_get(key: &str) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints=http://127.0.0.1:2379",
            "get",
            "--print-value-only",
            key,
        ])
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

fn rules(db: &str, version: u64) -> String {
    let hash = shard_rules::config::hash_password("app");
    format!(
        "version = {version}\n[rooms.A]\nrole = \"center\"\n[rooms.B]\nrole = \"unit\"\n\
         [route_codes]\ncount = 10000\n[traffic]\nversion = 1\nowners.A = [\"0-4999\"]\n\
         owners.B = [\"5000-9999\"]\n\
         [data_sources.c_a]\nroom = \"A\"\nhost = \"127.0.0.1\"\nport = {ROOM_A_PORT}\n\
         schema = \"{db}\"\nuser = \"rb\"\npassword = \"rb\"\n\
         [databases.{db}]\ntype = \"center\"\ndata_sources.ds = [\"c_a\"]\n\
         [users.app]\npassword_hash = \"{hash}\"\ndatabases = [\"{db}\"]\nmode = \"unit\"\n"
    )
}

fn write(name: &str, text: &str) -> String {
    let p = std::env::temp_dir().join(format!("rb-cluster-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Waits until `ctl status` satisfies `ok`.
fn wait_status(url: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, out, _) = ctl(url, &["status"]);
        if ok(&out) {
            return out;
        }
        assert!(Instant::now() < deadline, "{what}; last status:\n{out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn start(db: &str, url: &str, instance: &str) -> Proxy {
    // The local file starts as version 1: etcd's rules replace it once the proxy connects.
    Proxy::start_rules_sections(
        "A",
        &rules(db, 1),
        &format!("[cluster]\nurl = \"{url}\"\ninstance = \"{instance}\"\nlease_ttl_s = 2\n"),
    )
    .await
}

#[tokio::test]
async fn rules_in_etcd_reach_every_proxy_which_acknowledges_them() {
    etcd_up();
    let db = fresh_db("cluster").await;
    let prefix = format!("/rbt-{}", std::process::id());
    let url = format!("etcd://127.0.0.1:2379{prefix}");
    let (code, out, err) = ctl(
        &url,
        &["put-rules", &write("v2", &rules(&db, 2)), "--wait", "1"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let p1 = start(&db, &url, "p1").await;
    let mut p2 = start(&db, &url, "p2").await;
    let out = wait_status(&url, "both proxies apply version 2", |s| {
        s.contains("2 proxies registered")
            && s.lines()
                .filter(|l| l.starts_with("p") && l.contains(" current"))
                .count()
                == 2
    });
    assert!(out.contains("rules in etcd: version 2"), "{out}");
    for l in out.lines().filter(|l| l.starts_with('p')) {
        assert_eq!(l.split_whitespace().nth(2), Some("2"), "{l}");
    }
    // Two proxies of one room never share a snowflake worker id: each holds its own lease.
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints=http://127.0.0.1:2379", "get", "--prefix"])
        .arg(format!("{prefix}/workers/A/"))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 4, "two keys, two values: {listed}");
    assert!(
        lines[0].ends_with("/workers/A/0") && lines[2].ends_with("/workers/A/1"),
        "{listed}"
    );
    let mut holders = vec![lines[1], lines[3]];
    holders.sort();
    assert_eq!(holders, ["p1", "p2"], "{listed}");
    // A change reaches both; ctl waits for their acknowledgements.
    let (code, out, err) = ctl(
        &url,
        &["put-rules", &write("v3", &rules(&db, 3)), "--wait", "10"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("applied by all 2 proxies"), "{out}");
    // Sessions are served on the new rules.
    let mut c = p1.conn(&db).await;
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));

    // A text that does not parse, written behind ctl's back: refused, version 3 keeps serving,
    // and the acknowledgements say so.
    etcdctl_put(&format!("{prefix}/rules"), "version = 4\n[rooms.A\n");
    let out = wait_status(&url, "both proxies report the refusal", |s| {
        s.matches("REFUSED").count() == 2
    });
    assert!(out.contains("not valid TOML"), "{out}");
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the old rules keep serving");
    let (code, out, _) = ctl(
        &url,
        &["put-rules", &write("v4", &rules(&db, 4)), "--wait", "10"],
    );
    assert_eq!(code, 0, "{out}");
    // A text that moves route codes without their ban is refused by ctl before it is written:
    // every proxy would refuse it.
    let moving = rules(&db, 5).replace(
        "owners.A = [\"0-4999\"]\nowners.B = [\"5000-9999\"]",
        "owners.A = [\"0-5999\"]\nowners.B = [\"6000-9999\"]",
    );
    assert!(moving.contains("0-5999"), "{moving}");
    ctl_refuses(
        &url,
        &["put-rules", &write("v5-moving", &moving), "--wait", "1"],
        2,
        &[
            "moves route code 5000 from room `B` to room `A`",
            "nothing was written",
        ],
    );
    let (_, out, _) = ctl(&url, &["status"]);
    assert!(out.contains("rules in etcd: version 4,"), "{out}");

    // A write-ban: applied everywhere, with the latest effective time printed.
    let (code, out, err) = ctl(
        &url,
        &[
            "ban",
            "--route-codes",
            "100-199",
            "--min-proxies",
            "2",
            "--wait",
            "10",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("effective on all 2 proxies; latest effective time 20"),
        "{out}"
    );
    let out = wait_status(&url, "the ban in both acknowledgements", |s| {
        s.lines().filter(|l| l.contains("100-199")).count() == 3
    });
    assert!(out.contains("write-ban version 1 on 100-199"), "{out}");

    // `ban` adds to the ban; `unban --route-codes` lifts only those codes.
    let (code, out, err) = ctl(&url, &["ban", "--route-codes", "300", "--wait", "10"]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = ctl(&url, &["status"]);
    assert!(out.contains("write-ban version 2 on 100-199,300,"), "{out}");
    let (code, out, err) = ctl(&url, &["unban", "--route-codes", "100-199", "--wait", "10"]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = ctl(&url, &["status"]);
    assert!(out.contains("write-ban version 3 on 300,"), "{out}");
    // A write-ban version that does not go up is refused before anything is written.
    ctl_refuses(
        &url,
        &[
            "ban",
            "--route-codes",
            "400",
            "--version",
            "3",
            "--wait",
            "1",
        ],
        2,
        &["--version 3 is not above the write-ban version in etcd (3)"],
    );
    // So is a rules text whose write-ban differs under the same version.
    let same_version = format!(
        "{}[write_ban]\nversion = 3\nroute_codes = [\"301\"]\n",
        rules(&db, 9)
    );
    ctl_refuses(
        &url,
        &[
            "put-rules",
            &write("same-ban-version", &same_version),
            "--wait",
            "1",
        ],
        2,
        &[
            "the write-ban changes from version 3 (route codes 300) to version 3 (route codes 301)",
            "nothing was written",
        ],
    );
    // Fewer proxies than --min-proxies: not completed, and said so.
    ctl_refuses(
        &url,
        &[
            "ban",
            "--route-codes",
            "300",
            "--min-proxies",
            "3",
            "--wait",
            "1",
        ],
        1,
        &["2 proxies registered and acknowledged, fewer than --min-proxies 3"],
    );
    // A proxy serving an older traffic rule than etcd's (here an acknowledgement written by
    // hand, as a proxy behind would leave it) blocks lifting a ban: it would write the codes
    // in their old room.
    let ghost = format!("{prefix}/proxies/ghost");
    etcdctl_put(
        &ghost,
        r#"{"instance":"ghost","room":"A","rules_version":4,"traffic_version":0,"ban_version":3,"banned":"300","ban_effective_at":null,"applied_at":"2026-12-04T00:00:00.000Z","rules_revision":1,"refused":null,"refused_revision":null}"#,
    );
    ctl_refuses(&url, &["unban", "--route-codes", "300", "--wait", "1"], 1, &["not lifted: ghost (traffic version 0) still serve an older traffic rule than etcd's version 1", "nothing was written"]);
    // An acknowledgement that does not read: status still lists the others, names it, exits 1.
    etcdctl_put(&ghost, "not json");
    let (code, out, _) = ctl(&url, &["status"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("2 proxies registered")
            && out.contains("UNREADABLE: the acknowledgement under")
            && out.contains("/proxies/ghost does not read"),
        "{out}"
    );
    etcdctl_del(&ghost);
    let (_, out, _) = ctl(&url, &["status"]);
    assert!(out.contains("write-ban version 4 on 300,"), "{out}");

    // A proxy that goes away drops out when its lease expires; back, it catches up.
    p2.terminate();
    assert!(p2.wait_exit(Duration::from_secs(10)));
    drop(p2);
    wait_status(&url, "p2's registration expires", |s| {
        s.contains("1 proxies registered")
    });
    let (code, out, err) = ctl(&url, &["unban", "--wait", "10"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("lifted on all 1 proxies"), "{out}");
    let _p2 = start(&db, &url, "p2").await;
    let out = wait_status(&url, "p2 comes back on the current rules", |s| {
        s.contains("2 proxies registered")
            && s.lines()
                .filter(|l| l.starts_with("p") && l.contains(" current"))
                .count()
                == 2
    });
    for l in out.lines().filter(|l| l.starts_with('p')) {
        // version 4, the bans and unbans above (5 to 8), then the lifting (9).
        assert_eq!(l.split_whitespace().nth(2), Some("9"), "{l}");
        assert!(l.contains(" none "), "{l}");
    }
}

#[tokio::test]
async fn a_proxy_that_cannot_reach_etcd_serves_its_rules_file_and_says_so() {
    let db = fresh_db("cluster_down").await;
    // Nothing listens on port 1.
    let metrics = rb_e2e::free_port();
    let p = Proxy::start_rules_sections(
        "A",
        &rules(&db, 1),
        &format!(
            "[cluster]\nurl = \"etcd://127.0.0.1:1/rbt-nowhere\"\ninstance = \"lonely\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\nusers.dba = {{ password_hash = \"{}\" }}\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
            shard_rules::config::hash_password("dba")
        ),
    )
    .await;
    let mut c = p.conn(&db).await;
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    assert!(
        p.wait_log(
            "etcd unreachable: serving the last rules applied",
            1,
            Duration::from_secs(10)
        )
        .is_some(),
        "{}",
        p.log_text()
    );
    // Its status and metrics say so.
    let (ok, out, err) = rb_e2e::mariadb(p.admin_port.unwrap(), "dba", "dba", "", "SHOW CLUSTER");
    assert!(ok, "{err}");
    assert!(
        out.contains("UNREACHABLE: serving the last rules applied"),
        "{out}"
    );
    assert!(out.contains("none from etcd yet (the rules file)"), "{out}");
    // Never registered: writes of unit databases are held.
    assert!(out.contains("writes\tHELD (8032)"), "{out}");
    assert!(
        out.contains("not usable: this proxy holds no snowflake worker id lease"),
        "{out}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = rb_e2e::http_get(metrics, "/metrics").unwrap();
        if body.contains("rainbow_cluster_connected 0")
            && body.contains("rainbow_cluster_writes_held 1")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // ctl says what is wrong.
    let (code, _, err) = ctl("etcd://127.0.0.1:1/rbt-nowhere", &["status"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach etcd at http://127.0.0.1:1"),
        "{err}"
    );
}

/// `scripts/rooms.sh ACTION` on the replicated pair of rooms of tests/tests/replication.rs
/// (3336/3337); its stdout.
fn replicated_rooms(action: &str) -> String {
    let out = Command::new(root().join("scripts/rooms.sh"))
        .arg(action)
        .args((action == "up").then_some("--replicated"))
        .env("RB_ROOMS_DIR", "/tmp/rainbow-bridge-rooms-replicated")
        .env("RB_ROOM_PORTS", "3336 3337")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rooms.sh {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `to` has applied everything `from` has written so far.
async fn replicated_to(from: &mut mysql_async::Conn, to: &mut mysql_async::Conn) {
    let pos: String = from
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    let done: Option<i64> = to
        .query_first(format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"))
        .await
        .unwrap();
    assert_eq!(done, Some(0), "caught up with {pos}");
}

/// Drops a test's database once both rooms have applied each other's writes to it: dropped
/// earlier, a row still on its way from B would stop A's replication on a missing table.
async fn drop_replicated(db: &str, a: &mut mysql_async::Conn, b: &mut mysql_async::Conn) {
    replicated_to(b, a).await;
    a.query_drop(format!("DROP DATABASE {db}")).await.unwrap();
    replicated_to(a, b).await;
}

fn unit_rules(db: &str) -> String {
    let hash = shard_rules::config::hash_password("app");
    format!(
        "version = 1\n[rooms.A]\nrole = \"center\"\n[rooms.B]\nrole = \"unit\"\n\
         [route_codes]\ncount = 10000\n[traffic]\nversion = 1\nowners.A = [\"0-4999\"]\n\
         owners.B = [\"5000-9999\"]\n[write_ban]\nversion = 0\nroute_codes = []\n\
         [data_sources.u_a]\nroom = \"A\"\nhost = \"127.0.0.1\"\nport = 3336\n\
         schema = \"{db}\"\nuser = \"rb\"\npassword = \"rb\"\n\
         [data_sources.u_b]\nroom = \"B\"\nhost = \"127.0.0.1\"\nport = 3337\n\
         schema = \"{db}\"\nuser = \"rb\"\npassword = \"rb\"\n\
         [databases.{db}]\ntype = \"unit\"\ndata_sources.ds = [\"u_a\", \"u_b\"]\n\
         [databases.{db}.tables.t_note]\nsharding_key = \"buyer\"\n\
         [users.app]\npassword_hash = \"{hash}\"\ndatabases = [\"{db}\"]\nmode = \"unit\"\n"
    )
}

#[tokio::test]
async fn a_cutover_moves_route_codes_to_another_room_through_ban_replication_and_traffic() {
    etcd_up();
    replicated_rooms("up");
    let db = format!("cut_{}", std::process::id());
    let mut a = rb_e2e::direct_room(3336, None).await;
    a.query_drop(format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.t_note (id INT PRIMARY KEY, buyer INT, note VARCHAR(20))"
    ))
    .await
    .unwrap();
    let mut b = rb_e2e::direct_room(3337, None).await;
    replicated_to(&mut a, &mut b).await;

    let prefix = format!("/rbt-cut-{}", std::process::id());
    let url = format!("etcd://127.0.0.1:2379{prefix}");
    let text = unit_rules(&db);
    let (code, out, err) = ctl(&url, &["put-rules", &write("cut", &text), "--wait", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    let sections = |i: &str| {
        format!(
            "[cluster]\nurl = \"{url}\"\ninstance = \"{i}\"\nlease_ttl_s = 5\n\
             [admin]\nlisten = \"127.0.0.1:0\"\nusers.dba = {{ password_hash = \"{}\" }}\n",
            shard_rules::config::hash_password("dba")
        )
    };
    let pa = Proxy::start_rules_sections("A", &text, &sections("room-a")).await;
    let pb = Proxy::start_rules_sections("B", &text, &sections("room-b")).await;
    wait_status(&url, "both rooms' proxies registered", |s| {
        s.contains("2 proxies registered")
    });
    let (ok, out, err) = rb_e2e::mariadb(pa.admin_port.unwrap(), "dba", "dba", "", "SHOW CLUSTER");
    assert!(ok, "{err}");
    assert!(
        out.contains("etcd\tconnected")
            && out.contains("instance\troom-a")
            && out.contains("writes\tallowed (registered)"),
        "{out}"
    );
    assert!(
        out.contains("snowflake worker id\t0 (leased from etcd)"),
        "{out}"
    );
    // Rule changes on the admin port are refused: the rules live in etcd.
    let (ok, _, err) = rb_e2e::mariadb(
        pa.admin_port.unwrap(),
        "dba",
        "dba",
        "",
        "SET WRITE BAN ROUTE_CODES 7",
    );
    assert!(
        !ok && err.contains("cluster mode: the rules live in etcd"),
        "{err}"
    );
    let insert =
        |id: u32| format!("INSERT INTO t_note (id, buyer, note) VALUES ({id}, 1001, 'n{id}')");
    let mut ca = pa.conn(&db).await;
    let mut cb = pb.conn(&db).await;
    ca.query_drop(insert(1)).await.unwrap();
    let e = cb.query_drop(insert(2)).await.unwrap_err().to_string();
    assert!(e.contains("belongs to room `A`"), "{e}");

    // A cut-over that does not get the acknowledgements it asks for (3 proxies, 2 run) stops
    // at step 2 with the ban in place, says so and how to go on; the unban it prints rolls back.
    ctl_refuses(
        &url,
        &[
            "cutover",
            "--route-codes",
            "1001",
            "--to",
            "B",
            "--min-proxies",
            "3",
            "--wait",
            "1",
        ],
        1,
        &[
            "step 2 (acknowledgements of the ban) failed",
            "fewer than --min-proxies 3",
            "The write-ban on 1001 stays in place",
            "rainbow-bridge ctl unban --route-codes 1001",
        ],
    );
    let (code, msg) = server_code(ca.query_drop(insert(5)).await.unwrap_err());
    assert_eq!(code, 8032, "{msg}");
    let _ = unban_1001(&url);
    ca.query_drop(insert(10)).await.unwrap();

    let (code, out, err) = try_cutover_1001(&url, "B", 2, &[]);
    assert_eq!(
        code,
        0,
        "{out}\n{err}\nA:\n{}\nB:\n{}",
        pa.log_text(),
        pb.log_text()
    );
    for step in ["step 1:", "step 2:", "step 3:", "step 4:", "step 5:"] {
        assert!(out.contains(step), "{step} missing:\n{out}");
    }
    assert!(
        out.contains("room B's 127.0.0.1:3337 applied room A's 127.0.0.1:3336 position 1-1-"),
        "{out}"
    );
    assert!(out.contains("cutover done"), "{out}");
    // Now room B owns route code 1001, with the row written in A before the switch.
    cb.query_drop(insert(3)).await.unwrap();
    let e = ca.query_drop(insert(4)).await.unwrap_err().to_string();
    assert!(e.contains("belongs to room `B`"), "{e}");
    let rows: Vec<i32> = b
        .query(format!("SELECT id FROM {db}.t_note ORDER BY id"))
        .await
        .unwrap();
    assert_eq!(rows, [1, 3, 10]);
    let out = wait_status(&url, "both proxies on the new traffic rule", |s| {
        s.lines()
            .filter(|l| l.starts_with("room-") && l.contains(" none "))
            .count()
            == 2
    });
    // The stopped cut-over's ban (1) and its rollback (2), then this one's ban and lifting.
    assert!(out.contains("write-ban version 4 on none"), "{out}");
    // Re-running finds nothing to do.
    let (code, out, _) = ctl(&url, &["cutover", "--route-codes", "1001", "--to", "B"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing to do"), "{out}");
    drop_replicated(&db, &mut a, &mut b).await;
}

/// One acknowledged write of the consistency test.
#[derive(Debug, Clone)]
struct Acked {
    buyer: u32,
    client: u32,
    seq: u32,
    room: char,
    sent: Instant,
    acked: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_both_rooms_stay_consistent_while_route_codes_are_cut_over_back_and_forth() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    etcd_up();
    replicated_rooms("up");
    let db = format!("consist_{}", std::process::id());
    let mut a = rb_e2e::direct_room(3336, None).await;
    let mut b = rb_e2e::direct_room(3337, None).await;
    a.query_drop(format!(
        // `id` is not a key, so that two rows sharing an ID would both be there to count.
        "CREATE DATABASE {db}; CREATE TABLE {db}.t_w (id BIGINT NOT NULL, buyer INT NOT NULL, \
         client INT NOT NULL, seq INT NOT NULL, written_in CHAR(1) NOT NULL, \
         written_by INT NOT NULL DEFAULT 0, PRIMARY KEY (client, seq), KEY (id)); \
         CREATE TRIGGER {db}.t_w_by BEFORE INSERT ON {db}.t_w FOR EACH ROW SET NEW.written_by = @@server_id"
    ))
    .await
    .unwrap();
    replicated_to(&mut a, &mut b).await;
    let text = unit_rules(&db).replace(
        &format!("[databases.{db}.tables.t_note]\nsharding_key = \"buyer\"\n"),
        &format!(
            "[databases.{db}.tables.t_w]\nsharding_key = \"buyer\"\n\
             key_generator = {{ column = \"id\", type = \"snowflake\" }}\n"
        ),
    );
    let prefix = format!("/rbt-consist-{}", std::process::id());
    let url = format!("etcd://127.0.0.1:2379{prefix}");
    let (code, out, err) = ctl(
        &url,
        &["put-rules", &write("consist", &text), "--wait", "1"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let sections =
        |i: &str| format!("[cluster]\nurl = \"{url}\"\ninstance = \"{i}\"\nlease_ttl_s = 5\n");
    // Two proxies in each room.
    let pa = Proxy::start_rules_sections("A", &text, &sections("room-a1")).await;
    let pa2 = Proxy::start_rules_sections("A", &text, &sections("room-a2")).await;
    let pb = Proxy::start_rules_sections("B", &text, &sections("room-b1")).await;
    let pb2 = Proxy::start_rules_sections("B", &text, &sections("room-b2")).await;
    wait_status(&url, "the four proxies registered", |s| {
        s.contains("4 proxies registered")
    });

    // Writers: random buyers 1..=20 (route codes 1..=20, room A's); each sends to the room it
    // believes owns the buyer, moves to the other room on 8031 (wrong room) and retries later
    // on 8032 (banned).
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let (wrong_room, banned, failed, txns) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut writers = Vec::new();
    for client in 0..4u32 {
        // Half of the clients use each room's first proxy, half its second: writes go through
        // all four.
        let mut conns = if client % 2 == 0 {
            [pa.conn(&db).await, pb.conn(&db).await]
        } else {
            [pa2.conn(&db).await, pb2.conn(&db).await]
        };
        let (stop, acked) = (stop.clone(), acked.clone());
        let (wrong_room, banned, failed, txns) = (
            wrong_room.clone(),
            banned.clone(),
            failed.clone(),
            txns.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut believed = [0usize; 21];
            let mut seq = 0u32;
            let mut rng = 0x9E37_79B9u32.wrapping_mul(client + 1);
            while !stop.load(Ordering::Relaxed) {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                let buyer = 1 + rng % 20;
                seq += 1;
                loop {
                    let side = believed[buyer as usize];
                    let room = if side == 0 { 'A' } else { 'B' };
                    let sent = Instant::now();
                    let insert = format!(
                        "INSERT INTO t_w (buyer, client, seq, written_in) VALUES ({buyer}, {client}, {seq}, '{room}')"
                    );
                    // Clients 2 and 3 write every other row in a transaction that stays open a
                    // while after its INSERT: a ban arriving meanwhile must wait for its COMMIT.
                    let in_txn = client >= 2 && seq.is_multiple_of(2);
                    let c = &mut conns[side];
                    let r = if in_txn {
                        async {
                            c.query_drop("START TRANSACTION").await?;
                            if let Err(e) = c.query_drop(&insert).await {
                                c.query_drop("ROLLBACK").await?;
                                return Err(e);
                            }
                            c.query_drop("SELECT SLEEP(0.03)").await?;
                            c.query_drop("COMMIT").await
                        }
                        .await
                    } else {
                        c.query_drop(&insert).await
                    };
                    match r {
                        Ok(()) => {
                            if in_txn {
                                txns.fetch_add(1, Ordering::Relaxed);
                            }
                            acked.lock().unwrap().push(Acked {
                                buyer,
                                client,
                                seq,
                                room,
                                sent,
                                acked: Instant::now(),
                            });
                            break;
                        }
                        Err(mysql_async::Error::Server(e)) if e.code == 8031 => {
                            wrong_room.fetch_add(1, Ordering::Relaxed);
                            believed[buyer as usize] = 1 - side;
                        }
                        Err(mysql_async::Error::Server(e)) if e.code == 8032 => {
                            banned.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            panic!("client {client}: buyer {buyer}: {e}");
                        }
                    }
                }
            }
        }));
    }
    // Route codes 1-10 go to B, back to A, and to B again, while the writers run.
    let mut cutovers = Vec::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for to in ["B", "A", "B"] {
        let url = url.clone();
        let start = Instant::now();
        let (code, out, err) = tokio::task::spawn_blocking(move || {
            ctl(
                &url,
                &[
                    "cutover",
                    "--route-codes",
                    "1-10",
                    "--to",
                    to,
                    "--min-proxies",
                    "4",
                    "--wait",
                    "20",
                ],
            )
        })
        .await
        .unwrap();
        assert_eq!(code, 0, "cutover to {to}:\n{out}\n{err}");
        cutovers.push((to, start, Instant::now()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    // Both rooms applied each other's writes.
    replicated_to(&mut a, &mut b).await;
    replicated_to(&mut b, &mut a).await;
    // The server that wrote each row (a trigger on the writing server; replicas apply the row
    // as written) is the room of the proxy that acknowledged it: server_id 1 is room A's.
    let by: Vec<(u32, u32, String, u32)> = a
        .query(format!(
            "SELECT client, seq, written_in, written_by FROM {db}.t_w"
        ))
        .await
        .unwrap();
    for (client, seq, room, server) in &by {
        let want = if room == "A" { 1 } else { 2 };
        assert_eq!(*server, want, "client {client} seq {seq}: acknowledged by room {room}'s proxy, written by server {server}");
    }
    let mut present = Vec::new();
    for c in [&mut a, &mut b] {
        let rows: Vec<(i64, u32, u32, u32, String)> = c
            .query(format!(
                "SELECT id, buyer, client, seq, written_in FROM {db}.t_w ORDER BY client, seq"
            ))
            .await
            .unwrap();
        present.push(rows);
    }
    assert_eq!(present[0], present[1], "both rooms hold the same rows");
    let rows = &present[0];
    // Every acknowledged write is there, and nothing else.
    let mut want: Vec<(u32, u32, u32, String)> = acked
        .iter()
        .map(|w| (w.client, w.seq, w.buyer, w.room.to_string()))
        .collect();
    want.sort();
    let mut got: Vec<(u32, u32, u32, String)> =
        rows.iter().map(|r| (r.2, r.3, r.1, r.4.clone())).collect();
    got.sort();
    assert_eq!(got, want, "the rows are exactly the acknowledged writes");
    let ids: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(ids.len(), rows.len(), "no two rows share an ID");
    // Ownership. Codes 11-20 never moved from room A. Codes 1-10 were owned by A, then by B
    // from some moment inside the first cut-over, by A from inside the second, by B from inside
    // the third: ownership period k runs from the start of cut-over k-1 to the end of cut-over
    // k. Each write must fit a period of its room that its [sent, acked] overlaps; two writes
    // of one code in different rooms must never overlap in time (the ban keeps the old room's
    // writes from running on into the new room's); and of two such writes, the earlier one
    // must fit an earlier period than the later one (no write in the old room after one in the
    // new room).
    let owners = ['A', 'B', 'A', 'B'];
    let periods = |w: &Acked| -> Vec<usize> {
        (0..=cutovers.len())
            .filter(|&k| {
                owners[k] == w.room
                    && (k == 0 || w.acked >= cutovers[k - 1].1)
                    && (k == cutovers.len() || w.sent <= cutovers[k].2)
            })
            .collect()
    };
    let (mut checked, mut pairs) = (0, 0u64);
    for buyer in 1..=20u32 {
        let ws: Vec<(&Acked, Vec<usize>)> = acked
            .iter()
            .filter(|w| w.buyer == buyer)
            .map(|w| (w, periods(w)))
            .collect();
        for (w, fit) in &ws {
            checked += 1;
            if buyer > 10 {
                assert_eq!(w.room, 'A', "route code {buyer} never moved: {w:?}");
                continue;
            }
            assert!(
                !fit.is_empty(),
                "route code {buyer}: written in room {} when it did not own the code: {w:?}",
                w.room
            );
        }
        for (i, (wi, fi)) in ws.iter().enumerate() {
            for (wj, fj) in &ws[i + 1..] {
                if wi.room == wj.room {
                    continue;
                }
                pairs += 1;
                let ((w1, f1), (w2, f2)) = if wi.sent <= wj.sent {
                    ((wi, fi), (wj, fj))
                } else {
                    ((wj, fj), (wi, fi))
                };
                assert!(
                    w1.acked < w2.sent,
                    "route code {buyer}: writes in both rooms at once:\n{w1:?}\n{w2:?}"
                );
                assert!(
                    f1[0] < *f2.last().unwrap(),
                    "route code {buyer}: a write in room {} after one in room {}:\n{w1:?}\n{w2:?}",
                    w2.room,
                    w1.room
                );
            }
        }
    }
    // No replication error or conflict in either room.
    let status = replicated_rooms("status");
    assert_eq!(status.matches("io=Yes sql=Yes").count(), 2, "{status}");
    assert!(!status.contains("error:"), "{status}");
    let in_b = acked.iter().filter(|w| w.room == 'B').count();
    println!(
        "consistency: 4 proxies (2 per room), {} writes acknowledged ({} in room A, {in_b} in room B; {} in explicit transactions), all {} present in both \
         rooms, {} distinct ids, {checked} checked against the owner of their key, {pairs} pairs of \
         one code's writes in different rooms all apart in time and in order, 3 cut-overs, \
         {} wrong-room redirects, {} banned retries, {} failures, replication without error",
        acked.len(),
        acked.len() - in_b,
        txns.load(Ordering::Relaxed),
        rows.len(),
        ids.len(),
        wrong_room.load(Ordering::Relaxed),
        banned.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert!(in_b > 0 && acked.len() > in_b, "writes in both rooms");
    assert!(
        txns.load(Ordering::Relaxed) > 0,
        "writes in explicit transactions"
    );
    assert!(
        banned.load(Ordering::Relaxed) > 0,
        "writers met the ban during the cut-overs (retried on 8032)"
    );

    // A rules change in etcd (a write-ban) reaches all four proxies, each acknowledging it. A
    // proxy killed (SIGKILL: no goodbye to etcd) drops out once its lease expires; the ban is
    // lifted without it; restarted, it registers again and catches up.
    let (code, out, err) = ctl(
        &url,
        &[
            "ban",
            "--route-codes",
            "15",
            "--min-proxies",
            "4",
            "--wait",
            "20",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("effective on all 4 proxies"), "{out}");
    drop(pb2);
    wait_status(&url, "room-b2's lease expires", |s| {
        s.contains("3 proxies registered")
    });
    let (code, out, err) = ctl(&url, &["unban", "--min-proxies", "3", "--wait", "20"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("lifted on all 3 proxies"), "{out}");
    let pb2 = Proxy::start_rules_sections("B", &text, &sections("room-b2")).await;
    let status = wait_status(&url, "room-b2 back on the current rules", |s| {
        s.contains("4 proxies registered")
            && s.lines()
                .filter(|l| {
                    l.starts_with("room-") && l.contains(" current") && l.contains(" none ")
                })
                .count()
                == 4
    });
    assert!(status.contains("room-b2"), "{status}");
    // It serves the rules from etcd, not its rules file: route code 1 is room B's now.
    pb2.conn(&db)
        .await
        .query_drop("INSERT INTO t_w (buyer, client, seq, written_in) VALUES (1, 99, 1, 'B')")
        .await
        .unwrap();
    drop((pa, pa2, pb, pb2));
    drop_replicated(&db, &mut a, &mut b).await;
}

fn etcd_at(port: u16, action: &str) {
    let out = Command::new(root().join("scripts/etcd.sh"))
        .arg(action)
        .env("RB_ETCD_PORT", port.to_string())
        .env("RB_ETCD_DIR", format!("/tmp/rainbow-bridge-etcd-{port}"))
        .output()
        .expect("run scripts/etcd.sh");
    assert!(
        out.status.success(),
        "etcd.sh {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn writes_are_held_while_the_registration_may_have_lapsed_and_resume_after() {
    // An etcd of this test's own, so stopping it disturbs no other test.
    const PORT: u16 = 2479;
    etcd_at(PORT, "up");
    let db = fresh_unit_db(
        "cluster_fence",
        &[
            "CREATE TABLE t_note (id INT PRIMARY KEY, buyer INT, note VARCHAR(20))",
            "CREATE TABLE t_s_0 (id INT PRIMARY KEY, buyer INT, note VARCHAR(20))",
            "CREATE TABLE t_s_1 (id INT PRIMARY KEY, buyer INT, note VARCHAR(20))",
        ],
    )
    .await;
    let url = format!("etcd://127.0.0.1:{PORT}/rbt-fence-{}", std::process::id());
    // t_s: one route code's rows in two tables, so a write of it runs on two nodes.
    let text = unit_rules(&db)
        .replace("port = 3336", &format!("port = {ROOM_A_PORT}"))
        .replace("port = 3337", &format!("port = {}", rb_e2e::ROOM_B_PORT))
        .replace(
            "[users.app]",
            &format!(
                "[databases.{db}.tables.t_s]\nsharding_key = \"buyer\"\n\
                 data_nodes = \"ds.t_s_${{0..1}}\"\n\
                 table_sharding = {{ algorithm = \"mod\", column = \"id\" }}\n\
                 allow_full_scatter_writes = true\n[users.app]"
            ),
        );
    let (code, out, err) = ctl(&url, &["put-rules", &write("fence", &text), "--wait", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    let p = Proxy::start_rules_sections(
        "A",
        &text,
        &format!("[cluster]\nurl = \"{url}\"\ninstance = \"fenced\"\nlease_ttl_s = 3\n"),
    )
    .await;
    wait_status(&url, "registered", |s| s.contains("1 proxies registered"));
    let mut c = p.conn(&db).await;
    let insert = |id: u32| format!("INSERT INTO t_note (id, buyer, note) VALUES ({id}, 1001, 'x')");
    c.query_drop(insert(1)).await.unwrap();
    c.query_drop("INSERT INTO t_s (id, buyer, note) VALUES (0, 1001, 'x'), (1, 1001, 'x')")
        .await
        .unwrap();
    // A write of route code 1001 over both of t_s's tables that runs long, as the other one.
    let mut slow_nodes = p.conn(&db).await;
    let slow_nodes = tokio::spawn(async move {
        slow_nodes
            .query_drop("UPDATE t_s SET note = IF(SLEEP(30) = 0, 'late', 'x') WHERE buyer = 1001")
            .await
    });
    // A write of route code 1001 that runs long (SLEEP(30) for its one row) is in flight when
    // etcd goes away.
    let mut slow = p.conn(&db).await;
    let slow = tokio::spawn(async move {
        slow.query_drop(
            "UPDATE t_note SET note = IF(SLEEP(30) = 0, 'late', 'x') WHERE buyer = 1001 AND id = 1",
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // etcd goes away: once the lease may have lapsed, writes are held (retryable, 8032);
    // reads go on.
    etcd_at(PORT, "down");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut id = 2;
    // An INSERT that happens to be running when writes become held is stopped like the slow
    // ones (8003, connection closed; whether it committed is unknown, as for any lost
    // connection); the next one is refused.
    let mut stopped_insert = None;
    let held = loop {
        match c.query_drop(insert(id)).await {
            Ok(()) => id += 1,
            Err(mysql_async::Error::Server(e)) if e.code == 8003 && stopped_insert.is_none() => {
                stopped_insert = Some(id);
                id += 1;
                c = p.conn(&db).await;
            }
            Err(mysql_async::Error::Server(e)) => break e,
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "writes never held");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(held.code, 8032, "{held:?}");
    assert!(held.message.contains("writes are held"), "{}", held.message);
    let n: Option<i64> = c
        .query_first(format!(
            "SELECT COUNT(*) FROM t_note WHERE id <> {}",
            stopped_insert.unwrap_or(0)
        ))
        .await
        .unwrap();
    let acknowledged = i64::from(id) - 1 - i64::from(stopped_insert.is_some());
    assert_eq!(
        n,
        Some(acknowledged),
        "reads are served, and no held write was applied"
    );
    // The write in flight was stopped when writes became held, instead of committing after
    // the lease could have expired.
    // Its backend thread was killed: the client hears of a lost backend connection (8003).
    let stopped = slow.await.unwrap();
    assert!(
        matches!(&stopped, Err(mysql_async::Error::Server(e)) if e.code == 8003),
        "the slow UPDATE was not stopped by the proxy: {stopped:?}"
    );
    let note: Option<String> = c
        .query_first("SELECT note FROM t_note WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(note.as_deref(), Some("x"), "{stopped:?}");
    let stopped = slow_nodes.await.unwrap();
    assert!(
        matches!(&stopped, Err(mysql_async::Error::Server(e)) if e.code == 8003),
        "the slow UPDATE over two nodes was not stopped by the proxy: {stopped:?}"
    );
    let notes: Vec<String> = c.query("SELECT note FROM t_s ORDER BY id").await.unwrap();
    assert_eq!(notes, ["x", "x"], "{stopped:?}");
    assert!(
        p.log_text()
            .contains("stopping a running statement that writes route codes"),
        "{}",
        p.log_text()
    );
    // etcd back: the proxy registers again and writes go on.
    etcd_at(PORT, "up");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c.query_drop(insert(id)).await {
            Ok(()) => break,
            Err(mysql_async::Error::Server(e)) if e.code == 8032 => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            Instant::now() < deadline,
            "writes never resumed:\n{}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A TCP relay to etcd that can be cut: a network partition of one proxy from etcd, with the
/// proxy, etcd and the rooms all real.
struct Relay {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    /// On a thread and runtime of its own: the tests block their runtime in `wait_status`.
    fn to(upstream: u16) -> Relay {
        use std::sync::atomic::Ordering;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (flag, cuts) = (open.clone(), cut.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        std::thread::spawn(move || {
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                while let Ok((mut down, _)) = listener.accept().await {
                    if !flag.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is refused
                    }
                    let mut cut = cuts.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut up) =
                            tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        });
        Relay { port, open, cut }
    }

    /// Closes every relayed connection and refuses new ones.
    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The replicated rooms, a database on them with `t_note`, and its rules in etcd under a
/// prefix of the test's own: (database, cluster url, rules text, direct connections to A, B).
async fn unit_db_in_etcd(
    name: &str,
) -> (String, String, String, mysql_async::Conn, mysql_async::Conn) {
    etcd_up();
    replicated_rooms("up");
    let db = format!("{name}_{}", std::process::id());
    let mut a = rb_e2e::direct_room(3336, None).await;
    a.query_drop(format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; \
         CREATE TABLE {db}.t_note (id INT PRIMARY KEY, buyer INT, note VARCHAR(20))"
    ))
    .await
    .unwrap();
    let mut b = rb_e2e::direct_room(3337, None).await;
    replicated_to(&mut a, &mut b).await;
    let url = format!("etcd://127.0.0.1:2379/rbt-{name}-{}", std::process::id());
    let text = unit_rules(&db);
    let (code, out, err) = ctl(&url, &["put-rules", &write(name, &text), "--wait", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    (db, url, text, a, b)
}

fn cluster_section(url: &str, instance: &str) -> String {
    format!("[cluster]\nurl = \"{url}\"\ninstance = \"{instance}\"\nlease_ttl_s = 3\n")
}

fn note(id: u32) -> String {
    format!("INSERT INTO t_note (id, buyer, note) VALUES ({id}, 1001, 'n{id}')")
}

/// The cut-over of route code 1001 (ShardingKey 1001) to `to`, waiting for `n` proxies.
fn cutover_1001(url: &str, to: &str, n: usize) -> String {
    let (code, out, err) = try_cutover_1001(url, to, n, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("cutover done"), "{out}");
    out
}

/// The same, with more arguments (`--gtid-timeout 2`), for its exit code, stdout and stderr.
/// `ctl unban --route-codes 1001`, acknowledged by two proxies; its output.
fn unban_1001(url: &str) -> String {
    let (code, out, err) = ctl(
        url,
        &[
            "unban",
            "--route-codes",
            "1001",
            "--min-proxies",
            "2",
            "--wait",
            "20",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    out
}

fn try_cutover_1001(url: &str, to: &str, n: usize, more: &[&str]) -> (i32, String, String) {
    let n = n.to_string();
    let mut args = vec![
        "cutover",
        "--route-codes",
        "1001",
        "--to",
        to,
        "--min-proxies",
        &n,
        "--wait",
        "20",
    ];
    args.extend_from_slice(more);
    ctl(url, &args)
}

fn server_code(e: mysql_async::Error) -> (u16, String) {
    match e {
        mysql_async::Error::Server(e) => (e.code, e.message),
        e => panic!("not a server error: {e}"),
    }
}

#[tokio::test]
async fn a_proxy_cut_off_from_etcd_during_a_cutover_holds_its_writes_and_rejoins_on_the_new_rules()
{
    let (db, url, text, mut a, mut b) = unit_db_in_etcd("rejoin").await;
    let (endpoints, prefix) = shard_rules::config::parse_cluster_url(&url).unwrap();
    assert_eq!(endpoints.len(), 1);
    let relay = Relay::to(2379);
    let relayed = format!("etcd://127.0.0.1:{}{prefix}", relay.port);
    let pa = Proxy::start_rules_sections("A", &text, &cluster_section(&url, "a-1")).await;
    let cut_off =
        Proxy::start_rules_sections("A", &text, &cluster_section(&relayed, "a-cut")).await;
    let pb = Proxy::start_rules_sections("B", &text, &cluster_section(&url, "b-1")).await;
    wait_status(&url, "three proxies registered", |s| {
        s.contains("3 proxies registered")
    });
    // A transaction on the proxy about to be cut off writes route code 1001 (room A's).
    let mut open = cut_off.conn(&db).await;
    open.query_drop("BEGIN").await.unwrap();
    open.query_drop(note(1)).await.unwrap();
    let mut other = cut_off.conn(&db).await;

    relay.cut();
    wait_status(&url, "the cut-off proxy's lease expires", |s| {
        s.contains("2 proxies registered") && !s.contains("a-cut")
    });
    // Its writes are held, and the open transaction may not commit: it is rolled back.
    let (code, msg) = server_code(other.query_drop(note(2)).await.unwrap_err());
    assert_eq!(code, 8032, "{msg}");
    assert!(msg.contains("writes are held"), "{msg}");
    let (code, msg) = server_code(open.query_drop("COMMIT").await.unwrap_err());
    assert_eq!(code, 8032, "{msg}");
    assert!(
        msg.contains("route codes 1001") && msg.contains("rolled back"),
        "{msg}"
    );
    assert!(
        open.query_drop("SELECT 1").await.is_err(),
        "the connection is closed"
    );

    // The cut-over runs without it: it cannot see the ban, the switch or the lifting.
    cutover_1001(&url, "B", 2);
    let mut cb = pb.conn(&db).await;
    cb.query_drop(note(3)).await.unwrap();
    let (code, msg) = server_code(pa.conn(&db).await.query_drop(note(4)).await.unwrap_err());
    assert_eq!(code, 8031, "{msg}");

    // Meanwhile the rules key is overwritten with a text that does not read (etcdctl): the
    // registered proxies refuse it and serve on. Back in touch, the cut-off proxy refuses it
    // too, and since it cannot know what it missed, it registers with its writes still held.
    let valid = etcdctl_get(&format!("{prefix}/rules"));
    assert!(valid.contains("[traffic]"), "{valid}");
    etcdctl_put(&format!("{prefix}/rules"), "version = 99\n[rooms.A\n");
    relay.restore();
    wait_status(
        &url,
        "the cut-off proxy registers, refusing the text",
        |s| s.contains("3 proxies registered") && s.matches("REFUSED").count() == 3,
    );
    assert!(
        cut_off
            .wait_log(
                "rejoining etcd on rules this proxy refused",
                1,
                Duration::from_secs(5)
            )
            .is_some(),
        "{}",
        cut_off.log_text()
    );
    let mut back = cut_off.conn(&db).await;
    let (code, msg) = server_code(back.query_drop(note(5)).await.unwrap_err());
    assert_eq!(
        code, 8032,
        "its stale rules would write 1001 in room A: {msg}"
    );
    let (code, msg) = server_code(
        back.query_drop("INSERT INTO t_note (id, buyer, note) VALUES (6, 7, 'n6')")
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 8032, "{msg}");
    // Valid rules again: it applies the rules it missed (whose move it could not have seen
    // banned) and writes on them.
    let (code, out, err) = ctl(
        &url,
        &["put-rules", &write("rejoin-valid", &valid), "--wait", "20"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let out = wait_status(
        &url,
        "the cut-off proxy rejoins on the current rules",
        |s| {
            s.contains("3 proxies registered")
                && s.lines().filter(|l| l.contains(" current")).count() == 3
        },
    );
    assert!(!out.contains("REFUSED"), "{out}");
    assert!(
        cut_off
            .wait_log(
                "route codes changed rooms while this proxy was not registered",
                1,
                Duration::from_secs(5)
            )
            .is_some(),
        "{}",
        cut_off.log_text()
    );
    let (code, msg) = server_code(back.query_drop(note(5)).await.unwrap_err());
    assert_eq!(code, 8031, "{msg}");
    assert!(msg.contains("belongs to room `B`"), "{msg}");
    // A key room A still owns is written again.
    back.query_drop("INSERT INTO t_note (id, buyer, note) VALUES (6, 7, 'n6')")
        .await
        .unwrap();

    replicated_to(&mut b, &mut a).await;
    replicated_to(&mut a, &mut b).await;
    for (room, c) in [("A", &mut a), ("B", &mut b)] {
        let ids: Vec<i32> = c
            .query(format!("SELECT id FROM {db}.t_note ORDER BY id"))
            .await
            .unwrap();
        assert_eq!(
            ids,
            [3, 6],
            "room {room}: the rolled-back transaction's row is nowhere"
        );
    }
    drop_replicated(&db, &mut a, &mut b).await;
}

#[tokio::test]
async fn a_proxy_restarted_in_the_middle_of_a_cutover_comes_back_banned_and_the_cutover_finishes() {
    let (db, url, text, mut a, mut b) = unit_db_in_etcd("restart").await;
    let mut pa = Proxy::start_rules_sections("A", &text, &cluster_section(&url, "a-1")).await;
    let pb = Proxy::start_rules_sections("B", &text, &cluster_section(&url, "b-1")).await;
    wait_status(&url, "both registered", |s| {
        s.contains("2 proxies registered")
    });
    pa.conn(&db).await.query_drop(note(1)).await.unwrap();

    // Step 1 and 2 of the cut-over: the ban, effective on both.
    let (code, out, err) = ctl(
        &url,
        &[
            "ban",
            "--route-codes",
            "1001",
            "--min-proxies",
            "2",
            "--wait",
            "20",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    // Room A's proxy restarts; its rules file still has no ban (it was written before).
    pa.terminate();
    assert!(pa.wait_exit(Duration::from_secs(10)));
    drop(pa);
    let pa = Proxy::start_rules_sections("A", &text, &cluster_section(&url, "a-1")).await;
    // It starts on the rules in etcd, ban included, not on its file's; its very first write is
    // refused (by the ban, or by the hold until it has registered: both 8032).
    let mut first = pa.conn(&db).await;
    assert!(
        pa.log_text().contains("starting on the rules in etcd"),
        "{}",
        pa.log_text()
    );
    let (code, msg) = server_code(first.query_drop(note(2)).await.unwrap_err());
    assert_eq!(code, 8032, "{msg}");
    wait_status(&url, "the restarted proxy acknowledges the ban", |s| {
        s.contains("2 proxies registered")
            && s.lines()
                .filter(|l| l.contains("1001") && l.contains(" current"))
                .count()
                == 2
    });
    let (code, msg) = server_code(pa.conn(&db).await.query_drop(note(2)).await.unwrap_err());
    assert_eq!(code, 8032, "{msg}");
    assert!(msg.contains("write-ban"), "{msg}");

    // Re-running the cut-over resumes after the ban and finishes with both proxies.
    let out = cutover_1001(&url, "B", 2);
    assert!(out.contains("step 4:") && out.contains("step 5:"), "{out}");
    pb.conn(&db).await.query_drop(note(3)).await.unwrap();
    let (code, msg) = server_code(pa.conn(&db).await.query_drop(note(4)).await.unwrap_err());
    assert_eq!(code, 8031, "{msg}");
    replicated_to(&mut b, &mut a).await;
    let ids: Vec<i32> = a
        .query(format!("SELECT id FROM {db}.t_note ORDER BY id"))
        .await
        .unwrap();
    assert_eq!(ids, [1, 3]);
    drop_replicated(&db, &mut a, &mut b).await;
}

/// `scripts/etcd.sh` on a three-member etcd of this test's own; returns its stdout.
fn etcd3(args: &[&str]) -> String {
    let out = Command::new(root().join("scripts/etcd.sh"))
        .args(args)
        .env("RB_ETCD_PORT", "2581")
        .env("RB_ETCD_DIR", "/tmp/rainbow-bridge-etcd-3m")
        .output()
        .expect("run scripts/etcd.sh");
    assert!(
        out.status.success(),
        "etcd.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Retries a write through `c` while it is held (8032) until it succeeds, for up to 30 s.
async fn write_when_not_held(c: &mut mysql_async::Conn, sql: &str, p: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.query_drop(sql).await {
            Ok(()) => return,
            Err(mysql_async::Error::Server(e)) if e.code == 8032 => {}
            Err(e) => panic!("{sql}: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "{sql} held for 30 s:\n{}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_three_member_etcd_keeps_the_cluster_going_without_one_member_and_holds_writes_without_quorum(
) {
    let endpoints = etcd3(&["up", "--members", "3"]);
    assert_eq!(
        endpoints, "127.0.0.1:2581,127.0.0.1:2583,127.0.0.1:2585",
        "the endpoints `up` prints"
    );
    let db = fresh_unit_db(
        "cluster_quorum",
        &[
            "CREATE TABLE t_note (id INT PRIMARY KEY, buyer INT, note VARCHAR(20))",
            "CREATE TABLE t_key (id BIGINT PRIMARY KEY, buyer INT)",
        ],
    )
    .await;
    let url = format!("etcd://{endpoints}/rbt-quorum-{}", std::process::id());
    // t_key's ids come from each proxy's snowflake worker id, leased from etcd.
    let text = unit_rules(&db)
        .replace("port = 3336", &format!("port = {ROOM_A_PORT}"))
        .replace("port = 3337", &format!("port = {}", rb_e2e::ROOM_B_PORT))
        .replace(
            &format!("[databases.{db}.tables.t_note]\n"),
            &format!(
                "[databases.{db}.tables.t_key]\nsharding_key = \"buyer\"\n\
                 key_generator = {{ column = \"id\", type = \"snowflake\" }}\n\
                 [databases.{db}.tables.t_note]\n"
            ),
        );
    assert!(text.contains("t_key"), "{text}");
    let (code, out, err) = ctl(&url, &["put-rules", &write("quorum", &text), "--wait", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    let p1 = Proxy::start_rules_sections("A", &text, &cluster_section(&url, "q-1")).await;
    let p2 = Proxy::start_rules_sections("A", &text, &cluster_section(&url, "q-2")).await;
    wait_status(&url, "both registered", |s| {
        s.contains("2 proxies registered")
    });
    let (mut c1, mut c2) = (p1.conn(&db).await, p2.conn(&db).await);
    c1.query_drop(note(1)).await.unwrap();

    // One member of three goes away (the first endpoint, where every client starts): the
    // other two are a quorum. The proxies stay registered (their leases are kept alive through
    // the other members), a write-ban is applied and acknowledged by both, and writes go on.
    etcd3(&["stop-member", "0"]);
    let (code, out, err) = ctl(
        &url,
        &[
            "ban",
            "--route-codes",
            "4999",
            "--min-proxies",
            "2",
            "--wait",
            "30",
        ],
    );
    assert_eq!(code, 0, "ban with one etcd member down:\n{out}{err}");
    let status = wait_status(&url, "both on the ban's rules", |s| {
        s.contains("2 proxies registered")
            && s.lines().filter(|l| l.contains(" current")).count() == 2
    });
    assert!(status.contains("4999"), "{status}");
    write_when_not_held(&mut c1, &note(2), &p1).await;
    write_when_not_held(&mut c2, &note(3), &p2).await;
    let (code, msg) = server_code(
        c2.query_drop("INSERT INTO t_note (id, buyer, note) VALUES (4, 4999, 'banned')")
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 8032, "the ban applied with one member down: {msg}");
    assert!(msg.contains("write-ban"), "{msg}");
    // Past a lease TTL (3 s) with the member still down, the worker-id leases were renewed
    // through the other members: snowflake keys are still generated.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (c, p) in [(&mut c1, &p1), (&mut c2, &p2)] {
        write_when_not_held(c, "INSERT INTO t_key (buyer) VALUES (1001)", p).await;
    }
    let keys: Option<i64> = c1
        .query_first("SELECT COUNT(DISTINCT id) FROM t_key")
        .await
        .unwrap();
    assert_eq!(keys, Some(2), "two generated keys, distinct");

    // A second member goes: no quorum, so no lease can be kept alive. Once a lease may have
    // lapsed, its proxy holds every write (it could miss a ban); reads go on.
    etcd3(&["stop-member", "1"]);
    for (c, p, mut id) in [(&mut c1, &p1, 100), (&mut c2, &p2, 500)] {
        let deadline = Instant::now() + Duration::from_secs(30);
        let held = loop {
            id += 1;
            match c.query_drop(note(id)).await {
                Ok(()) => {}
                // Running when writes became held: stopped, and the connection closed.
                Err(mysql_async::Error::Server(e)) if e.code == 8003 => *c = p.conn(&db).await,
                Err(mysql_async::Error::Server(e)) => break e,
                Err(e) => panic!("{e}"),
            }
            assert!(
                Instant::now() < deadline,
                "writes never held without quorum:\n{}",
                p.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(held.code, 8032, "{held:?}");
        assert!(held.message.contains("writes are held"), "{}", held.message);
        let n: Option<i64> = c
            .query_first("SELECT COUNT(*) FROM t_note WHERE buyer = 1001")
            .await
            .unwrap();
        assert!(n.is_some_and(|n| n >= 3), "reads are served: {n:?}");
    }

    // The members come back: both proxies register again and writes resume.
    etcd3(&["up"]);
    wait_status(&url, "both registered again", |s| {
        s.contains("2 proxies registered")
            && s.lines().filter(|l| l.contains(" current")).count() == 2
    });
    write_when_not_held(&mut c1, &note(1000), &p1).await;
    write_when_not_held(&mut c2, &note(1001), &p2).await;
    let (code, out, err) = ctl(&url, &["unban", "--wait", "30"]);
    assert_eq!(code, 0, "{out}{err}");
    write_when_not_held(
        &mut c2,
        "INSERT INTO t_note (id, buyer, note) VALUES (4, 4999, 'unbanned')",
        &p2,
    )
    .await;
}

#[tokio::test]
async fn a_cutover_stops_at_step_three_with_the_ban_in_place_while_the_target_room_lags_then_rolls_back_or_resumes(
) {
    // A replicated pair of rooms of this test's own: stopping its replication disturbs no
    // other test.
    let rooms = |args: &[&str]| {
        let out = Command::new(root().join("scripts/rooms.sh"))
            .args(args)
            .env("RB_ROOMS_DIR", "/tmp/rainbow-bridge-rooms-lag")
            .env("RB_ROOM_PORTS", "3346 3347")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rooms.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    rooms(&["up", "--replicated"]);
    etcd_up();
    let db = format!("lag_{}", std::process::id());
    let mut a = rb_e2e::direct_room(3346, None).await;
    let mut b = rb_e2e::direct_room(3347, None).await;
    a.query_drop(format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.t_note (id INT PRIMARY KEY, buyer INT, note VARCHAR(20))"
    ))
    .await
    .unwrap();
    replicated_to(&mut a, &mut b).await;
    let url = format!("etcd://127.0.0.1:2379/rbt-lag-{}", std::process::id());
    let text = unit_rules(&db)
        .replace("port = 3336", "port = 3346")
        .replace("port = 3337", "port = 3347");
    let (code, out, err) = ctl(&url, &["put-rules", &write("lag", &text), "--wait", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    let pa = Proxy::start_rules_sections("A", &text, &cluster_section(&url, "lag-a")).await;
    let pb = Proxy::start_rules_sections("B", &text, &cluster_section(&url, "lag-b")).await;
    wait_status(&url, "both registered", |s| {
        s.contains("2 proxies registered")
    });
    let (mut ca, mut cb) = (pa.conn(&db).await, pb.conn(&db).await);
    write_when_not_held(&mut ca, &note(1), &pa).await;

    // Room B stops applying room A's writes: row 2 is in A only.
    b.query_drop("STOP SLAVE SQL_THREAD").await.unwrap();
    ca.query_drop(note(2)).await.unwrap();
    let cutover = |timeout: &str| try_cutover_1001(&url, "B", 2, &["--gtid-timeout", timeout]);
    let (code, out, err) = cutover("2");
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("step 2: the ban is effective on all 2 proxies"),
        "{out}"
    );
    assert!(!out.contains("step 4"), "{out}");
    for want in [
        "step 3 (MASTER_GTID_WAIT) failed: room B's server 127.0.0.1:3347 has not applied position 1-1-",
        "The write-ban on 1001 stays in place and their owner has not changed",
        "Run the same command again to resume",
        "`rainbow-bridge ctl unban --route-codes 1001`",
    ] {
        assert!(err.contains(want), "{want:?} missing:\n{err}");
    }
    // The ban holds in both rooms; room A still owns the code.
    let (code, msg) = server_code(ca.query_drop(note(3)).await.unwrap_err());
    assert_eq!(code, 8032, "{msg}");
    assert!(msg.contains("banned during a cut-over"), "{msg}");
    let (code, msg) = server_code(cb.query_drop(note(3)).await.unwrap_err());
    assert!(code == 8031 || code == 8032, "{code} {msg}");
    // Re-running while B still lags recognises the ban and stops at step 3 again.
    let (code, out, err) = cutover("2");
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("step 1: already banned"), "{out}");
    assert!(err.contains("step 3 (MASTER_GTID_WAIT) failed"), "{err}");
    // Rolling back as the message says: the ban of 1001 goes, room A keeps it.
    let out = unban_1001(&url);
    assert!(out.contains("lifted on all 2 proxies"), "{out}");
    ca.query_drop(note(3)).await.unwrap();
    let (code, msg) = server_code(cb.query_drop(note(4)).await.unwrap_err());
    assert_eq!(code, 8031, "{msg}");
    // Replication back: the cut-over runs through, and B has every row A wrote before it.
    b.query_drop("START SLAVE SQL_THREAD").await.unwrap();
    let (code, out, err) = cutover("30");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cutover done"), "{out}");
    cb.query_drop(note(5)).await.unwrap();
    let (code, msg) = server_code(ca.query_drop(note(6)).await.unwrap_err());
    assert_eq!(code, 8031, "{msg}");
    let ids: Vec<i32> = b
        .query(format!("SELECT id FROM {db}.t_note ORDER BY id"))
        .await
        .unwrap();
    assert_eq!(ids, [1, 2, 3, 5]);
    drop((ca, cb, pa, pb));
    drop_replicated(&db, &mut a, &mut b).await;
}

#[tokio::test]
async fn two_proxies_given_one_instance_name_never_share_a_registration() {
    etcd_up();
    let db = fresh_unit_db(
        "cluster_twins",
        &["CREATE TABLE t_note (id INT PRIMARY KEY, buyer INT, note VARCHAR(20))"],
    )
    .await;
    let url = format!("etcd://127.0.0.1:2379/rbt-twins-{}", std::process::id());
    let text = unit_rules(&db)
        .replace("port = 3336", &format!("port = {ROOM_A_PORT}"))
        .replace("port = 3337", &format!("port = {}", rb_e2e::ROOM_B_PORT));
    let (code, out, err) = ctl(&url, &["put-rules", &write("twins", &text), "--wait", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    let mut first = Proxy::start_rules_sections("A", &text, &cluster_section(&url, "twin")).await;
    wait_status(&url, "the first registered", |s| {
        s.contains("1 proxies registered")
    });
    let mut c1 = first.conn(&db).await;
    write_when_not_held(&mut c1, &note(1), &first).await;
    // The second, misconfigured with the same name, does not take over the registration: it
    // says why and holds its writes, since ctl cannot see it.
    let second = Proxy::start_rules_sections("A", &text, &cluster_section(&url, "twin")).await;
    assert!(
        second
            .wait_log(
                "instance `twin` is registered in etcd",
                1,
                Duration::from_secs(10)
            )
            .is_some(),
        "{}",
        second.log_text()
    );
    let mut c2 = second.conn(&db).await;
    let (code, msg) = server_code(c2.query_drop(note(2)).await.unwrap_err());
    assert_eq!(code, 8032, "{msg}");
    assert!(msg.contains("writes are held"), "{msg}");
    c1.query_drop(note(3)).await.unwrap();
    let (_, out, _) = ctl(&url, &["status"]);
    assert!(out.contains("1 proxies registered"), "{out}");
    // The first stops (SIGTERM): once its sessions are closed it deregisters at once, and the
    // second registers instead of waiting out the lease.
    drop(c1);
    first.terminate();
    assert!(first.wait_exit(Duration::from_secs(10)));
    assert!(
        first.log_text().contains("deregistered from etcd"),
        "{}",
        first.log_text()
    );
    write_when_not_held(&mut c2, &note(2), &second).await;
    wait_status(&url, "the second registered", |s| {
        s.contains("1 proxies registered")
    });
}
