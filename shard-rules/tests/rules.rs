//! Validation of rules files, and properties of compiled rule sets and decisions.

use std::path::Path;

use proptest::prelude::*;
use shard_rules::algorithm::Value;
use shard_rules::analyze::analyze;
use shard_rules::config::ConnectionMode;
use shard_rules::decide::{decide, RouteError, SessionCtx};
use shard_rules::{RuleSet, RulesError, ShardingKey};

fn example() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/rules/full-example.toml");
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn the_full_example_compiles_into_fast_lookups() {
    let rules = RuleSet::parse(&example()).unwrap();
    assert_eq!(rules.version(), 12);
    assert_eq!((rules.traffic_version(), rules.ban_version()), (7, 3));
    let (a, b) = (rules.room_id("A").unwrap(), rules.room_id("B").unwrap());
    assert_eq!(rules.center(), a);
    assert_eq!(rules.owner(0), a);
    assert_eq!(rules.owner(4999), a);
    assert_eq!(rules.owner(5000), b);
    assert_eq!(rules.owner(9999), b);
    assert_eq!(rules.owned_codes(b).to_string(), "5000-9999");
    assert!(rules.is_banned(4000) && rules.is_banned(4099));
    assert!(!rules.is_banned(3999) && !rules.is_banned(4100));
    assert_eq!(rules.banned_codes().to_string(), "4000-4099");
    let shop = rules.database("shop").unwrap();
    assert_eq!(shop.data_sources.len(), 2);
    let t = match shop.table("T_ORDER") {
        shard_rules::TableKind::Sharded(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(t.nodes.len(), 8);
    assert_eq!(t.sharding_key.as_deref(), Some("buyer_id"));
    let unbanned = rules.with_write_ban(shard_rules::CodeSet::default(), 4);
    assert!(!unbanned.is_banned(4050));
    assert_eq!(unbanned.ban_version(), 4);
}

/// Every problem of a broken file is reported at once, each naming where, which field and why.
#[test]
fn a_broken_file_reports_every_problem() {
    let text = r#"
version = 1
[rooms.A]
role = "center"
[rooms.B]
role = "center"
[route_codes]
count = 100
[traffic]
version = 1
owners.A = ["0-60"]
owners.B = ["50-89"]
owners.C = ["90-99"]
[write_ban]
route_codes = ["100", "x", "99-97"]
[data_sources.a0]
room = "A"
host = "h"
schema = "s"
user = "u"
[data_sources.b0]
room = "Z"
host = "h"
schema = "s"
user = "u"
[data_sources.a1]
room = "A"
host = ""
schema = "s"
user = "u"
[databases.ops]
type = "center"
data_sources.ds = ["a0", "b0"]
[databases.shop]
type = "unit"
data_sources.ds_0 = ["a0", "nowhere"]
data_sources.ds_1 = ["a1"]
broadcast_tables = ["t_order"]
binding_groups = [["t_order", "t_item"], ["t_lonely"]]
[databases.shop.tables.t_order]
data_nodes = "ds_${0..1}.t_order_${0..3}"
database_sharding = { algorithm = "mod", column = "buyer_id", count = 3 }
table_sharding = { algorithm = "inline", expression = "t_order_${order_id % }" }
[databases.shop.tables.t_item]
data_nodes = "ds_${0..2}.t_item_${0..3}"
table_sharding = { algorithm = "mod", column = "order_id" }
key_generator = { column = "item_id", type = "snowflake", tag = "x" }
[databases.shop.tables.t_log]
data_nodes = "ds_0.t_log_202401"
table_sharding = { algorithm = "interval", column = "d", lower = "2024-01-01", upper = "2024-02-28", unit = "month", suffix = "yyyyMM" }
[users.app]
password_hash = "secret"
databases = ["shop", "nope"]
"#;
    let Err(RulesError::Invalid(problems)) = RuleSet::parse(text) else {
        panic!("expected problems");
    };
    let got: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    let expected = [
        r#"rooms: field `role`: rooms ["A", "B"] all have role = "center"; exactly one may"#,
        "traffic.owners.C: field `room`: room `C` is not defined in [rooms]",
        "traffic.owners: field `route codes`: route codes 90-99 are owned by no room",
        "traffic.owners: field `route codes`: route codes 50-60 are owned by more than one room",
        "write_ban: field `route_codes`: `100` is outside the route codes 0-99",
        "write_ban: field `route_codes`: `x` is not a route code or a range `from-to`",
        "write_ban: field `route_codes`: range `99-97` goes backwards",
        "data_sources.a1: field `host`: must not be empty",
        "data_sources.b0: field `room`: room `Z` is not defined in [rooms]",
        "databases.ops.data_sources.ds: field `data_sources`: a center database needs a data source in room `B`",
        "databases.shop.data_sources.ds_0: field `data_sources`: data source `nowhere` is not defined in [data_sources]",
        "databases.shop.data_sources.ds_0: field `data_sources`: a unit database needs a data source in room `B`",
        "databases.shop.data_sources.ds_1: field `data_sources`: a unit database needs a data source in room `B`",
        "databases.shop: field `default_data_source`: required when a database has several data sources",
        "databases.shop.tables.t_item: field `data_nodes`: `ds_2.t_item_0`: `ds_2` is not one of this database's data sources",
        "databases.shop.tables.t_item: field `key_generator.tag`: only a segment generator has a tag",
        "databases.shop.tables.t_log: field `data_nodes`: the interval needs tables the data nodes do not list: t_log_202402",
        "databases.shop.tables.t_order: field `database_sharding.count`: mod count 3 does not match the 2 targets the data nodes list",
        "databases.shop.tables.t_order: field `table_sharding.expression`: INLINE expression `t_order_${order_id % }`: unexpected `}` at byte 21",
        "databases.shop: field `broadcast_tables`: `t_order` has a sharding rule in [tables]; a table is one or the other",
        "users.app: field `password_hash`: must be `*` and 40 hex digits (see `rainbow-bridge hash-password`)",
        "users.app: field `databases`: database `nope` is not defined in [databases]",
    ];
    for e in expected {
        assert!(
            got.iter().any(|g| g == e),
            "missing problem:\n  {e}\ngot:\n  {}",
            got.join("\n  ")
        );
    }
    // The binding group problems need the tables to compile; they are checked separately below.
    assert!(got.len() >= expected.len());
}

#[test]
fn binding_groups_must_shard_alike() {
    let text = example().replace(
        r#"table_sharding = { algorithm = "inline", expression = "t_order_item_${order_id % 4}" }"#,
        r#"table_sharding = { algorithm = "inline", expression = "t_order_item_${buyer_id % 4}" }"#,
    );
    let Err(RulesError::Invalid(p)) = RuleSet::parse(&text) else {
        panic!()
    };
    assert_eq!(
        p[0].to_string(),
        "databases.shop: field `binding_groups`: `t_order` and `t_order_item` are in one binding group but shard differently: different table_sharding"
    );
    let text = example().replace(
        r#"binding_groups = [["t_order", "t_order_item"]]"#,
        r#"binding_groups = [["t_order", "t_user"]]"#,
    );
    let Err(RulesError::Invalid(p)) = RuleSet::parse(&text) else {
        panic!()
    };
    assert!(
        p[0].reason
            .contains("`t_user` in group [\"t_order\", \"t_user\"] is not a sharded table"),
        "{}",
        p[0]
    );
}

#[test]
fn syntax_errors_and_unknown_fields_name_the_line() {
    let err = RuleSet::parse("version = 1\n[rooms.A]\nrole = \"middle\"\n").unwrap_err();
    assert!(matches!(err, RulesError::Syntax(_)));
    assert!(err.to_string().contains("line 3"), "{err}");
    let text = example().replace("[route_codes]\n", "[route_codes]\nmodulus = 3\n");
    let err = RuleSet::parse(&text).unwrap_err();
    assert!(err.to_string().contains("unknown field `modulus`"), "{err}");
}

/// Rules with two rooms splitting `count` codes at `split`, and a ban.
fn rules_with(count: u32, split: u32, ban: &[(u32, u32)]) -> RuleSet {
    let ban: Vec<String> = ban.iter().map(|(a, b)| format!("\"{a}-{b}\"")).collect();
    let text = example()
        .replace("count = 10000", &format!("count = {count}"))
        .replace(
            "owners.A = [\"0-4999\"]",
            &format!("owners.A = [\"0-{}\"]", split - 1),
        )
        .replace(
            "owners.B = [\"5000-9999\"]",
            &format!("owners.B = [\"{split}-{}\"]", count - 1),
        )
        .replace(
            "route_codes = [\"4000-4099\"]",
            &format!("route_codes = [{}]", ban.join(", ")),
        );
    RuleSet::parse(&text).unwrap()
}

fn write(
    rules: &RuleSet,
    room: &str,
    db: &str,
    sql: &str,
    key: Option<i64>,
) -> Result<shard_rules::decide::Decision, RouteError> {
    let facts = analyze(sql).unwrap();
    let key = key.map(ShardingKey::Int);
    let session = SessionCtx {
        room: rules.room_id(room).unwrap(),
        mode: ConnectionMode::Unit,
        database: db,
        session_key: key.as_ref(),
        privileged: false,
    };
    decide(rules, &facts, None, &session, &[] as &[Value], &mut |_| {
        Ok(1)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_route_code_has_exactly_one_owner(count in 2u32..3000, split_at in 1u32..1000) {
        let split = 1 + split_at % (count - 1);
        let rules = rules_with(count, split, &[]);
        let (a, b) = (rules.room_id("A").unwrap(), rules.room_id("B").unwrap());
        for code in 0..count {
            let owner = rules.owner(code);
            let in_a = rules.owned_codes(a).contains(code);
            let in_b = rules.owned_codes(b).contains(code);
            prop_assert!(in_a != in_b);
            prop_assert_eq!(owner, if in_a { a } else { b });
        }
    }

    #[test]
    fn a_banned_route_code_never_writes_and_decisions_repeat(
        buyer in 0i64..1_000_000,
        ban_from in 0u32..10000,
        ban_len in 0u32..3000,
        room in prop_oneof![Just("A"), Just("B")],
    ) {
        let ban_to = (ban_from + ban_len).min(9999);
        let rules = rules_with(10000, 5000, &[(ban_from, ban_to)]);
        let sql = format!("INSERT INTO t_order (order_id, buyer_id, amount) VALUES (1, {buyer}, 1)");
        let first = write(&rules, room, "shop", &sql, None);
        let second = write(&rules, room, "shop", &sql, None);
        prop_assert_eq!(&first, &second);
        let code = (buyer % 10000) as u32;
        if let Ok(d) = &first {
            prop_assert!(!rules.is_banned(code));
            prop_assert_eq!(rules.room_name(rules.owner(code)), room);
            prop_assert_eq!(d.route.as_ref().map(|r| r.code), Some(code));
        } else if rules.room_name(rules.owner(code)) == room {
            prop_assert!(rules.is_banned(code));
            let banned = matches!(first, Err(RouteError::Banned { .. }));
            prop_assert!(banned);
        }
    }

    #[test]
    fn a_unit_room_never_writes_to_center_or_center_unit_databases(key in any::<i64>(), which in 0usize..4) {
        let rules = rules_with(10000, 5000, &[]);
        let sql = ["INSERT INTO t (a) VALUES (1)", "UPDATE t SET a = 1", "DELETE FROM t", "REPLACE INTO t (a) VALUES (2)"][which];
        for db in ["ops", "catalog"] {
            prop_assert!(write(&rules, "B", db, sql, Some(key)).is_err());
        }
    }
}
