//! `scripts/rooms.sh up --replicated` (issue 11): rooms A and B as each other's GTID replica,
//! with distinct server ids and GTID domains, as unit databases need. A second pair of rooms
//! (its own directory and ports), so the independent pair the other tests use is untouched.

use std::process::Command;

use mysql_async::prelude::*;
use rb_e2e::{direct_room, root};

const DIR: &str = "/tmp/rainbow-bridge-rooms-replicated";
const PORTS: (u16, u16) = (3336, 3337);

fn rooms(args: &[&str]) -> String {
    let out = Command::new(root().join("scripts/rooms.sh"))
        .args(args)
        .env("RB_ROOMS_DIR", DIR)
        .env("RB_ROOM_PORTS", format!("{} {}", PORTS.0, PORTS.1))
        .output()
        .expect("run scripts/rooms.sh");
    assert!(
        out.status.success(),
        "rooms.sh {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // What it did goes to stderr (`rooms: …` lines), what `status` reports to stdout.
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits on `conn` until it has applied `pos` (MASTER_GTID_WAIT: 0 done, -1 timed out).
async fn wait_for(conn: &mut mysql_async::Conn, pos: &str) -> i64 {
    conn.query_first(format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn rooms_replicate_each_other_with_gtids_in_both_directions() {
    rooms(&["up", "--replicated"]);
    // Idempotent: a second `up` keeps the replication as it is (no CHANGE MASTER, which
    // would log `replica of room …`).
    let again = rooms(&["up", "--replicated"]);
    assert!(!again.contains("replica of room"), "{again}");
    let mut a = direct_room(PORTS.0, None).await;
    let mut b = direct_room(PORTS.1, None).await;
    let ids_a: (u32, u32) = a
        .query_first("SELECT @@server_id, @@gtid_domain_id")
        .await
        .unwrap()
        .unwrap();
    let ids_b: (u32, u32) = b
        .query_first("SELECT @@server_id, @@gtid_domain_id")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(ids_a.0, ids_b.0, "distinct server ids");
    assert_ne!(ids_a.1, ids_b.1, "distinct GTID domains");

    let db = format!("repl_{}", std::process::id());
    a.query_drop(format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, written_in CHAR(1))"
    ))
    .await
    .unwrap();
    a.query_drop(format!("INSERT INTO {db}.t VALUES (1, 'A')"))
        .await
        .unwrap();
    let pos_a: String = a
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    assert!(
        pos_a.starts_with(&format!("{}-{}-", ids_a.1, ids_a.0)),
        "{pos_a}"
    );
    assert_eq!(wait_for(&mut b, &pos_a).await, 0, "B applies A's {pos_a}");
    b.query_drop(format!("INSERT INTO {db}.t VALUES (2, 'B')"))
        .await
        .unwrap();
    let pos_b: String = b
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    assert!(
        pos_b.contains(&format!("{}-{}-", ids_b.1, ids_b.0)),
        "{pos_b}"
    );
    assert_eq!(wait_for(&mut a, &pos_b).await, 0, "A applies B's {pos_b}");
    for c in [&mut a, &mut b] {
        let rows: Vec<(i32, String)> = c
            .query(format!("SELECT id, written_in FROM {db}.t ORDER BY id"))
            .await
            .unwrap();
        assert_eq!(rows, [(1, "A".to_string()), (2, "B".to_string())]);
    }
    // Both replication threads run, without an error, on both rooms.
    let status = rooms(&["status"]);
    assert_eq!(status.matches("io=Yes sql=Yes").count(), 2, "{status}");
    assert!(!status.contains("error:"), "{status}");
    a.query_drop(format!("DROP DATABASE {db}")).await.unwrap();
    let pos_a: String = a
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(wait_for(&mut b, &pos_a).await, 0);
    let left: Option<String> = b
        .query_first(format!(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{db}'"
        ))
        .await
        .unwrap();
    assert_eq!(left, None, "the DROP replicated too");
}
