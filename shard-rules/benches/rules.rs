//! `cargo bench -p shard-rules`: `decide` on analysed statements (the per-statement cost once the
//! plan cache holds the analysis), and sqlparser parse + analysis of typical OLTP statements (the
//! cost of a plan cache miss).

use std::path::Path;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shard_rules::algorithm::Value;
use shard_rules::analyze::analyze;
use shard_rules::config::ConnectionMode;
use shard_rules::decide::{decide, SessionCtx};
use shard_rules::RuleSet;

const POINT_SELECT: &str =
    "SELECT order_id, buyer_id, amount, status FROM t_order WHERE buyer_id = ? AND order_id = ?";
const POINT_UPDATE: &str = "UPDATE t_order SET status = ? WHERE buyer_id = ? AND order_id = ?";
const INSERT: &str = "INSERT INTO t_order (order_id, buyer_id, amount, status) VALUES (?, ?, ?, ?)";
const OLTP_SELECT: &str = "SELECT o.order_id, o.amount, i.sku, i.qty FROM t_order o JOIN t_order_item i ON o.order_id = i.order_id WHERE o.buyer_id = 1001 AND o.status IN ('new', 'paid') AND o.created_at > '2024-01-01' ORDER BY o.created_at DESC LIMIT 20";

fn bench(c: &mut Criterion) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/rules/full-example.toml"),
    )
    .unwrap();
    let rules = RuleSet::parse(&text).unwrap();
    let session = SessionCtx {
        room: rules.room_id("A").unwrap(),
        mode: ConnectionMode::Unit,
        database: "shop",
        session_key: None,
        privileged: false,
    };
    let mut g = c.benchmark_group("decide");
    for (name, sql, params) in [
        (
            "point_select",
            POINT_SELECT,
            vec![Value::Int(1001), Value::Int(13)],
        ),
        (
            "point_update",
            POINT_UPDATE,
            vec![Value::Str("paid".into()), Value::Int(1001), Value::Int(13)],
        ),
        (
            "insert",
            INSERT,
            vec![
                Value::Int(13),
                Value::Int(1001),
                Value::Str("9.50".into()),
                Value::Str("new".into()),
            ],
        ),
    ] {
        let facts = analyze(sql).unwrap();
        let d = decide(&rules, &facts, None, &session, &params, &mut |_| Ok(1)).unwrap();
        assert_eq!(d.tables[0].nodes.len(), 1, "{name} reaches one node");
        g.bench_function(name, |b| {
            b.iter(|| {
                decide(
                    &rules,
                    black_box(&facts),
                    None,
                    &session,
                    black_box(&params),
                    &mut |_| Ok(1),
                )
                .unwrap()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("parse_and_analyze");
    for (name, sql) in [
        ("point_select", POINT_SELECT),
        ("point_update", POINT_UPDATE),
        ("insert", INSERT),
        ("oltp_select_join", OLTP_SELECT),
    ] {
        g.bench_function(name, |b| b.iter(|| analyze(black_box(sql)).unwrap()));
    }
    g.finish();
}

/// The digest lexer (issue 7): what a plan-cache lookup costs before the hash.
fn digest(c: &mut Criterion) {
    let point = b"SELECT c FROM sbtest1 WHERE id=5013".as_slice();
    let insert = b"INSERT INTO sbtest1 (id, k, c, pad) VALUES (5013, 4993, '83868641912-28773972837-60736120486-75162659906-27563526494-20381887404-41576422241-93426793964-56405065102-33518432330', '67847967377-48000963322-62604785301-91415491898-96926520291')".as_slice();
    c.bench_function("digest/point_select", |b| {
        b.iter(|| shard_rules::digest::digest(black_box(point)))
    });
    c.bench_function("digest/oltp_insert", |b| {
        b.iter(|| shard_rules::digest::digest(black_box(insert)))
    });
}

criterion_group!(benches, bench, digest);
criterion_main!(benches);
