//! Validation of rules files, and properties of compiled rule sets and decisions.

use std::path::Path;

use proptest::prelude::*;
use shard_rules::algorithm::Value;
use shard_rules::analyze::analyze;
use shard_rules::config::ConnectionMode;
use shard_rules::decide::{decide, Refusal, RouteError, SessionCtx};
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
    RuleSet::parse(&rules_text(
        count,
        &format!("\"0-{}\"", split - 1),
        &format!("\"{split}-{}\"", count - 1),
        ban,
    ))
    .unwrap()
}

fn rules_text(count: u32, a: &str, b: &str, ban: &[(u32, u32)]) -> String {
    let ban: Vec<String> = ban.iter().map(|(x, y)| format!("\"{x}-{y}\"")).collect();
    example()
        .replace("count = 10000", &format!("count = {count}"))
        .replace("owners.A = [\"0-4999\"]", &format!("owners.A = [{a}]"))
        .replace("owners.B = [\"5000-9999\"]", &format!("owners.B = [{b}]"))
        .replace(
            "route_codes = [\"4000-4099\"]",
            &format!("route_codes = [{}]", ban.join(", ")),
        )
}

fn decide_sql(
    rules: &RuleSet,
    room: &str,
    mode: ConnectionMode,
    db: &str,
    sql: &str,
    key: Option<i64>,
) -> Result<shard_rules::decide::Decision, Box<Refusal>> {
    let parsed = sql_hint::parse(sql.as_bytes()).unwrap();
    let stripped = String::from_utf8(parsed.sql.into_owned()).unwrap();
    let facts = analyze(&stripped).unwrap();
    let key = key.map(ShardingKey::Int);
    let session = SessionCtx {
        room: rules.room_id(room).unwrap(),
        mode,
        database: db,
        session_key: key.as_ref(),
        privileged: false,
    };
    decide(
        rules,
        &facts,
        parsed.hint.as_ref(),
        &session,
        &[] as &[Value],
        &mut |_| Ok(1),
    )
}

fn write(
    rules: &RuleSet,
    room: &str,
    db: &str,
    sql: &str,
    key: Option<i64>,
) -> Result<shard_rules::decide::Decision, Box<Refusal>> {
    decide_sql(rules, room, ConnectionMode::Unit, db, sql, key)
}

/// Statements that change data, in many shapes.
const WRITES: &[&str] = &[
    "INSERT INTO t_order (order_id, buyer_id, amount) VALUES (1, {k}, 1)",
    "INSERT INTO t_order (order_id, buyer_id, amount) VALUES (1, {k}, 1), (2, {k}, 2)",
    "REPLACE INTO t_order (order_id, buyer_id, amount) VALUES (1, {k}, 1)",
    "UPDATE t_order SET status = 'paid' WHERE buyer_id = {k}",
    "UPDATE t_order SET status = 'paid' WHERE buyer_id IN ({k}, {k}) AND order_id = 3",
    "DELETE FROM t_order WHERE buyer_id = {k}",
    "/* rb: sharding_key={k} */ DELETE FROM t_order WHERE order_id = 3",
    "/* rb: sharding_key={k} */ UPDATE t_user SET name = 'x' WHERE user_id = 9",
    "INSERT INTO t_order (order_id, buyer_id, amount) VALUES (1, {k}, 1) ON DUPLICATE KEY UPDATE amount = 2",
];

/// Statements that may change data without a ShardingKey the proxy can see.
const OTHER_WRITES: &[&str] = &[
    "INSERT INTO t (a) VALUES (1)",
    "UPDATE t SET a = 1",
    "DELETE FROM t",
    "REPLACE INTO t (a) VALUES (2)",
    "TRUNCATE TABLE t",
    "DROP TABLE t",
    "ALTER TABLE t ADD COLUMN b INT",
    "CREATE TABLE t2 (a INT)",
    "WITH c AS (SELECT 1) DELETE FROM t",
    "WITH c AS (SELECT 1) UPDATE t SET a = 1",
    "INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = 2",
    "CALL p()",
    "LOCK TABLES t WRITE",
    "UPDATE t JOIN u ON t.a = u.a SET t.b = 1",
    "DELETE t FROM t JOIN u ON t.a = u.a",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random ownership lists compile exactly when they partition the codes, and then every
    /// code has exactly one owner.
    #[test]
    fn a_rule_set_compiles_exactly_when_every_code_has_one_owner(
        count in 2u32..400,
        ranges in proptest::collection::vec((0usize..2, 0u32..400, 0u32..60), 1..6),
    ) {
        let mut lists = [Vec::new(), Vec::new()];
        // Which rooms list each code (a room may list a code twice: still one owner).
        let mut owners = vec![[false; 2]; count as usize];
        for (room, from, len) in &ranges {
            let from = from % count;
            let to = (from + len).min(count - 1);
            lists[*room].push(format!("\"{from}-{to}\""));
            for c in from..=to {
                owners[c as usize][*room] = true;
            }
        }
        let partition = owners.iter().all(|o| o[0] != o[1]);
        let text = rules_text(count, &lists[0].join(", "), &lists[1].join(", "), &[]);
        match RuleSet::parse(&text) {
            Ok(rules) => {
                prop_assert!(partition);
                let (a, b) = (rules.room_id("A").unwrap(), rules.room_id("B").unwrap());
                for code in 0..count {
                    let in_a = rules.owned_codes(a).contains(code);
                    let in_b = rules.owned_codes(b).contains(code);
                    prop_assert!(in_a != in_b);
                    prop_assert_eq!(rules.owner(code), if in_a { a } else { b });
                }
            }
            Err(e) => {
                prop_assert!(!partition, "{}", e);
                prop_assert!(e.to_string().contains("owned by"), "{}", e);
            }
        }
    }

    /// A write is allowed only when every key it carries belongs to this room and is not
    /// banned; the same input always gives the same decision, also from a freshly parsed file.
    #[test]
    fn a_write_is_allowed_only_for_local_unbanned_keys(
        buyer in 0i64..1_000_000,
        ban_from in 0u32..10000,
        ban_len in 0u32..3000,
        room in prop_oneof![Just("A"), Just("B")],
        which in 0usize..9,
    ) {
        let ban_to = (ban_from + ban_len).min(9999);
        let rules = rules_with(10000, 5000, &[(ban_from, ban_to)]);
        let sql = WRITES[which].replace("{k}", &buyer.to_string());
        let first = write(&rules, room, "shop", &sql, None);
        let again = write(&rules_with(10000, 5000, &[(ban_from, ban_to)]), room, "shop", &sql, None);
        prop_assert_eq!(&first, &again);
        let code = (buyer % 10000) as u32;
        let local = rules.room_name(rules.owner(code)) == room;
        let banned = rules.is_banned(code);
        match &first {
            Ok(d) => {
                prop_assert!(local && !banned, "{} allowed: code {} local {} banned {}", sql, code, local, banned);
                prop_assert_eq!(d.route.as_ref().map(|r| r.code), Some(code));
            }
            Err(e) if !local => {
                let wrong = matches!(e.reason, RouteError::WrongRoom { .. });
                prop_assert!(wrong, "{}", e);
                prop_assert_eq!(e.route_code, Some(code));
            }
            Err(e) if banned => {
                let is_ban = matches!(e.reason, RouteError::Banned { .. });
                prop_assert!(is_ban && e.is_retryable(), "{}", e);
            }
            Err(e) => prop_assert!(false, "local unbanned write refused: {} → {}", sql, e),
        }
    }

    /// A unit room's proxy never lets anything that may change data reach a center or
    /// center-unit database; a unit database needs a key or a center connection for it.
    #[test]
    fn a_unit_room_never_writes_to_center_or_center_unit_databases(key in any::<i64>(), which in 0usize..15) {
        let rules = rules_with(10000, 5000, &[]);
        let sql = OTHER_WRITES[which];
        for mode in [ConnectionMode::Unit, ConnectionMode::Center] {
            let e = decide_sql(&rules, "B", mode, "ops", sql, Some(key)).unwrap_err();
            let refused = matches!(e.reason, RouteError::CenterDatabaseOutsideCenter { .. } | RouteError::CenterModeOutsideCenter { .. });
            prop_assert!(refused, "{}: {}", sql, e);
            let e = decide_sql(&rules, "B", mode, "catalog", sql, Some(key)).unwrap_err();
            let refused = matches!(e.reason, RouteError::ReadOnlyRoom { .. } | RouteError::CenterModeOutsideCenter { .. } | RouteError::NeedsCenterConnection { .. });
            prop_assert!(refused, "{}: {}", sql, e);
        }
        // In a unit database, without a key from the statement, only the session key's room
        // decides, and statements whose rows or effects cannot be seen are refused.
        if let Ok(d) = write(&rules, "B", "shop", sql, Some(key)) {
            let code = key.rem_euclid(10000) as u32;
            prop_assert!(code >= 5000, "{} allowed in B with key {}", sql, key);
            prop_assert!(matches!(d.kind, shard_rules::analyze::Kind::Write(_)));
        }
    }
}

/// Each broken variant of the example is refused with the problem it has.
#[test]
fn each_broken_variant_names_its_problem() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"table_sharding = { algorithm = "inline", expression = "t_order_${order_id % 4}" }"#,
            r#"table_sharding = { algorithm = "inline", expression = "t_order_${order_id % 8}" }"#,
            "`t_order_${order_id % 8}` gives `t_order_4` for order_id = 4, which the data nodes do not list",
        ),
        (
            r#"table_sharding = { algorithm = "inline", expression = "t_order_${order_id % 4}" }"#,
            r#"table_sharding = { algorithm = "inline", expression = "t_order_${order_id % 2}" }"#,
            "`t_order_${order_id % 2}` never picks t_order_2, t_order_3 of the data nodes",
        ),
        (
            "database_sharding = { algorithm = \"mod\", column = \"buyer_id\" }\ntable_sharding = { algorithm = \"inline\", expression = \"t_order_${order_id % 4}\" }",
            "table_sharding = { algorithm = \"inline\", expression = \"t_order_${order_id % 4}\" }",
            "the data nodes of `t_order` span 2 data sources, but nothing picks one",
        ),
        (
            r#"database_sharding = { algorithm = "mod", column = "buyer_id" }
table_sharding = { algorithm = "inline", expression = "t_order_item_${order_id % 4}" }"#,
            r#"database_sharding = { algorithm = "mod", column = "order_id" }
table_sharding = { algorithm = "inline", expression = "t_order_item_${order_id % 4}" }"#,
            "are in one binding group but shard differently: different database_sharding",
        ),
        (
            r#"data_nodes = "ds_${0..1}.t_order_item_${0..3}""#,
            r#"data_nodes = "ds_${0..1}.t_order_item_${[1,0,2,3]}""#,
            "not listed in the same order",
        ),
        ("[rooms.A]\nrole = \"center\"", "[rooms.A]\nrole = \"unit\"", "no room has role = \"center\"; exactly one must"),
        ("count = 10000", "count = 0", "0 is not between 1 and 1048576"),
        (
            r#"data_sources.ds_1 = ["shop1_a", "shop1_b"]"#,
            r#"data_sources.ds_1 = ["shop1_a", "shop0_b"]"#,
            "physical data source `shop0_b` is also listed for `ds_0`",
        ),
        (
            r#"data_sources.ds = ["ops_a"]"#,
            r#"data_sources.ds = ["ops_a", "shop1_b"]"#,
            "a center database has no data source in unit room `B`",
        ),
        (
            r#"data_nodes = "ds_${0..1}.t_order_${0..3}""#,
            r#"data_nodes = "ds_${0..1}.t_order_${0..3}, ds_0.t_order_1""#,
            "`ds_0.t_order_1` is listed twice",
        ),
        (
            r#"data_nodes = "ds_${0..1}.t_order_${0..3}""#,
            r#"data_nodes = "ds_${0..1}_t_order_${0..3}""#,
            "is not `data_source.table`",
        ),
        (
            r#"default_data_source = "ds_0""#,
            r#"default_data_source = "ds_7""#,
            "`ds_7` is not one of this database's data sources",
        ),
        (
            r#"unit = "month""#,
            r#"unit = "month", amount = 0"#,
            "field `table_sharding.amount`: must be at least 1",
        ),
    ];
    for (from, to, want) in cases {
        let text = example();
        assert!(text.contains(from), "the example has no `{from}`");
        let text = text.replacen(from, to, 1);
        match RuleSet::parse(&text) {
            Ok(_) => panic!("accepted with `{to}`"),
            Err(e) => assert!(
                e.to_string().contains(want),
                "with `{to}`:\n{e}\nwanted: {want}"
            ),
        }
    }
}

#[test]
fn a_failing_key_generator_refuses_the_insert_and_names_the_column() {
    let rules = RuleSet::parse(&example()).unwrap();
    let facts =
        analyze("INSERT INTO t_order_item (order_id, buyer_id, sku) VALUES (13, 1001, 'x')")
            .unwrap();
    let session = SessionCtx {
        room: rules.room_id("A").unwrap(),
        mode: ConnectionMode::Unit,
        database: "shop",
        session_key: None,
        privileged: false,
    };
    let e = decide(&rules, &facts, None, &session, &[], &mut |g| {
        Err(format!("segment source for tag `{}` is down", g.tag))
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "key generator for `t_order_item`.`item_id`: segment source for tag `order_item` is down (rules version 12)"
    );
    assert_eq!(e.table.as_deref(), Some("t_order_item"));
}

#[test]
fn a_unit_tables_sharding_key_cannot_be_generated() {
    let text = example().replace(
        r#"key_generator = { column = "order_id", type = "snowflake" }"#,
        r#"key_generator = { column = "Buyer_Id", type = "snowflake" }"#,
    );
    let Err(RulesError::Invalid(p)) = RuleSet::parse(&text) else {
        panic!("accepted a generated ShardingKey")
    };
    assert_eq!(
        p[0].to_string(),
        "databases.shop.tables.t_order: field `key_generator.column`: `Buyer_Id` is the ShardingKey of a table in a unit database: it picks the room, so it cannot be generated (generate another column)"
    );
}
