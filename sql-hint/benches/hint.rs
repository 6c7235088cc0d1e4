//! `cargo bench -p sql-hint`: the hint parser on the statements the proxy sees most.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

const BODY: &str = "SELECT o.order_id, o.buyer_id, o.amount, o.status, o.created_at FROM t_order o \
                    WHERE o.buyer_id = 10086 AND o.status IN ('new', 'paid') AND o.created_at > '2024-01-01' \
                    ORDER BY o.created_at DESC LIMIT 20";

fn bench(c: &mut Criterion) {
    let plain = BODY.to_string();
    // The hint alone: what parsing the pairs costs, without any scanning around them.
    let only = "/* rb: sharding_key=10086 */".to_string();
    let leading = format!("/* rb: sharding_key=10086 */ {BODY}");
    let trailing = format!("{BODY} /* rb: sharding_key=10086 */");
    let big = {
        let mut s = String::from("/* rb: sharding_key=10086 */ INSERT INTO t_order VALUES ");
        while s.len() < 10_000 {
            s.push_str("(1, 10086, 12.50, 'it''s \\'new\\'', '2024-01-01 10:00:00'), ");
        }
        s.push_str("(2, 10086, 1.00, 'new', NOW())");
        s
    };
    // A `/` (division) defeats the no-`/` shortcut: the whole statement is scanned.
    let slash = BODY.replace("o.amount,", "o.amount / 100 AS amount,");
    let big_trailing = {
        let mut s = big
            .trim_start_matches("/* rb: sharding_key=10086 */ ")
            .to_string();
        s.push_str(" /* rb: sharding_key=10086 */");
        s
    };
    assert!(sql_hint::parse(plain.as_bytes()).unwrap().hint.is_none());
    assert!(sql_hint::parse(slash.as_bytes()).unwrap().hint.is_none());
    assert!(sql_hint::parse(big_trailing.as_bytes())
        .unwrap()
        .hint
        .is_some());
    assert!(sql_hint::parse(leading.as_bytes()).unwrap().hint.is_some());
    let mut g = c.benchmark_group("parse");
    for (name, sql) in [
        ("hint_only", &only),
        ("200B_no_hint", &plain),
        ("200B_slash_no_hint", &slash),
        ("200B_leading_hint", &leading),
        ("200B_trailing_hint", &trailing),
        ("10kB_leading_hint", &big),
        ("10kB_trailing_hint", &big_trailing),
    ] {
        g.throughput(Throughput::Bytes(sql.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| sql_hint::parse(black_box(sql.as_bytes())).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
