//! The `rainbow-bridge` command line itself.

use std::process::Command;

use rb_e2e::{binary, root};

#[test]
fn check_config_accepts_the_demo_configs_and_lists_every_problem_of_bad_ones() {
    for room in ["a", "b"] {
        let ok = Command::new(binary())
            .arg("check-config")
            .arg(root().join(format!("fixtures/demo/room-{room}.toml")))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&ok.stdout);
        assert!(ok.status.success(), "{stdout}");
        assert!(stdout.contains(": ok (room "), "{stdout}");
    }

    // A bad config next to a bad rules file: the config's problems first; with a good config,
    // the rules file's problems, each naming the file.
    let dir = std::env::temp_dir().join(format!("rb-bad-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = std::fs::read_to_string(root().join("fixtures/demo/rules.toml"))
        .unwrap()
        .replace("room = \"A\"\nhost", "room = \"Z\"\nhost")
        .replace(
            "databases = [\"shop\", \"scratch\", \"mall\"]",
            "databases = [\"shop\", \"nope\", \"mall\"]",
        );
    std::fs::write(dir.join("rules.toml"), rules).unwrap();
    let config = std::fs::read_to_string(root().join("fixtures/demo/room-a.toml")).unwrap();
    std::fs::write(
        dir.join("bad.toml"),
        config.replace("max_size = 32", "max_size = 0"),
    )
    .unwrap();
    std::fs::write(dir.join("good.toml"), &config).unwrap();
    std::fs::write(
        dir.join("elsewhere.toml"),
        config.replace("room = \"A\"", "room = \"Q\""),
    )
    .unwrap();
    let check = |f: &str| {
        let out = Command::new(binary())
            .arg("check-config")
            .arg(dir.join(f))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, stdout) = check("bad.toml");
    assert_eq!(code, Some(2), "{stdout}");
    assert!(
        stdout.contains("pool: field `max_size`: must be at least 1"),
        "{stdout}"
    );
    let (code, stdout) = check("good.toml");
    assert_eq!(code, Some(2), "{stdout}");
    assert!(stdout.contains("rules.toml: rules file has "), "{stdout}");
    assert!(
        stdout.contains("data_sources.shop_a: field `room`: room `Z` is not defined"),
        "{stdout}"
    );
    assert!(
        stdout.contains("users.demo: field `databases`: database `nope` is not defined"),
        "{stdout}"
    );
    std::fs::write(
        dir.join("rules.toml"),
        std::fs::read_to_string(root().join("fixtures/demo/rules.toml")).unwrap(),
    )
    .unwrap();
    let (code, stdout) = check("elsewhere.toml");
    assert_eq!(code, Some(2), "{stdout}");
    assert!(
        stdout.contains("room `Q` is not a room of the rules file"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hash_password_prints_what_mariadb_password_prints() {
    let out = Command::new(binary())
        .args(["hash-password", "demo"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "*C142FB215B6E05B7C134B1A653AD4B455157FD79"
    );
}

#[test]
fn check_rules_and_route_explain_the_rules_to_a_dba() {
    let rules = root().join("fixtures/rules/full-example.toml");
    let ok = Command::new(binary())
        .arg("check-rules")
        .arg(&rules)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok (version 12, traffic version 7, write-ban version 3 on 4000-4099"),
        "{stdout}"
    );

    let bad = std::env::temp_dir().join(format!("rb-bad-rules-{}.toml", std::process::id()));
    let text = std::fs::read_to_string(&rules)
        .unwrap()
        .replace("owners.B = [\"5000-9999\"]", "owners.B = [\"5000-9000\"]");
    std::fs::write(&bad, text).unwrap();
    let out = Command::new(binary())
        .arg("check-rules")
        .arg(&bad)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("route codes 9001-9999 are owned by no room"),
        "{stdout}"
    );
    let _ = std::fs::remove_file(&bad);

    let route = |room: &str, sql: &str| {
        Command::new(binary())
            .args(["route", "--rules"])
            .arg(&rules)
            .args(["--room", room, "--database", "shop", sql])
            .output()
            .unwrap()
    };
    let out = route(
        "A",
        "INSERT INTO t_order (order_id, buyer_id, amount) VALUES (13, 1001, 9.5)",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("route code:  1001 (ShardingKey 1001, from Column), owner room A"),
        "{stdout}"
    );
    assert!(
        stdout.contains("table t_order:  Sharded -> ds_1.t_order_1"),
        "{stdout}"
    );
    let out = route(
        "B",
        "/* rb: sk=14050 */ DELETE FROM t_order WHERE order_id = 3",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("belongs to room `A`, not this proxy's room `B`"),
        "{stdout}"
    );
}
