//! The `rainbow-bridge` command line itself.

use std::process::Command;

use rb_e2e::{binary, root};

#[test]
fn check_config_accepts_the_demo_config_and_lists_every_problem_of_a_bad_one() {
    let ok = Command::new(binary())
        .arg("check-config")
        .arg(root().join("fixtures/demo/room-a.toml"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains(": ok ("));

    let bad = std::env::temp_dir().join(format!("rb-bad-{}.toml", std::process::id()));
    let text = std::fs::read_to_string(root().join("fixtures/demo/room-a.toml"))
        .unwrap()
        .replace("room = \"A\"\nhost", "room = \"Z\"\nhost")
        .replace(
            "databases = [\"shop\", \"scratch\"]",
            "databases = [\"shop\", \"nope\"]",
        );
    std::fs::write(&bad, text).unwrap();
    let out = Command::new(binary())
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("data_sources.shop_a: field `room`: room `Z` is not defined"),
        "{stdout}"
    );
    assert!(
        stdout.contains("users.demo: field `databases`: database `nope` is not defined"),
        "{stdout}"
    );
    let _ = std::fs::remove_file(bad);
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
