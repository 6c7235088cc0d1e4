//! The SQL compatibility suite (issue 10): `rainbow-bridge compat` runs `fixtures/compat`
//! directly against MariaDB and through the proxy, in the text and the binary protocol. The
//! report goes to `target/compat-report/sql.txt` (printed by `scripts/test.sh` at the end).

use std::process::Command;

use rb_e2e::{binary, rooms_up, root, Proxy, ROOM_A_PORT};

fn compat(proxy_port: u16, extra: &[&str], cases: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .arg("compat")
        .arg(format!("--direct=mysql://rb:rb@127.0.0.1:{ROOM_A_PORT}"))
        // The cases need `rb_compat` created afresh for every run; on a new machine it does
        // not exist at all.
        .arg(format!("--reset=mysql://rb:rb@127.0.0.1:{ROOM_A_PORT}"))
        .arg(format!(
            "--proxy=mysql://compat:compat@127.0.0.1:{proxy_port}"
        ))
        .args(extra)
        .args(cases)
        .current_dir(root())
        .output()
        .expect("run rainbow-bridge compat");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn compat_proxy_rules() -> String {
    std::fs::read_to_string(root().join("fixtures/compat/rules.toml")).unwrap()
}

/// One test, so the suite and the runner's own checks never reset `rb_compat` under each
/// other.
#[tokio::test]
async fn the_compatibility_suite_compares_equal_in_both_protocols_and_the_runner_catches_differences(
) {
    rooms_up();
    let proxy = Proxy::start_rules("A", &compat_proxy_rules()).await;
    let report = root().join("target/compat-report/sql.txt");
    let report_arg = format!("--report={}", report.display());
    let (code, out, err) = compat(proxy.port, &[&report_arg], &["fixtures/compat"]);
    assert_eq!(
        code,
        0,
        "compatibility suite:\n{out}\n{err}\nproxy log:\n{}",
        proxy.log_text()
    );
    let summary = out.lines().last().unwrap_or("");
    assert!(summary.ends_with("— passed"), "{summary}");
    // Every case file ran, in both protocols, with statements compared.
    let cases = std::fs::read_dir(root().join("fixtures/compat"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    assert!(cases >= 15, "{cases} case files");
    assert!(
        summary.starts_with(&format!(
            "compat: {cases} cases; text: {cases}/{cases} cases"
        )),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("binary: {cases}/{cases} cases")),
        "{summary}"
    );
    assert_eq!(std::fs::read_to_string(&report).unwrap(), out);

    // A difference the case does not explain fails the run and is shown in full: the proxy
    // answers a prepared USE itself (8010) where MariaDB says 1049.
    let dir = tempdir("rb-compat-differs");
    std::fs::write(
        dir.join("001-use.sql"),
        "SELECT 1;\n-- compat: binary-only\nUSE no_such_database;\n",
    )
    .unwrap();
    let d = dir.display().to_string();
    let (code, out, _) = compat(proxy.port, &[], &[&d]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("DIFFERS 001-use:3 (binary): USE no_such_database"),
        "{out}"
    );
    assert!(
        out.contains("direct: prepared (0 params, 0 columns); ERROR 1049 (42000)"),
        "{out}"
    );
    assert!(out.contains("proxy:  ERROR 8010 (0A000)"), "{out}");
    assert!(out.contains("— FAILED"), "{out}");
    // As JSON, for CI tooling.
    let (code, out, _) = compat(proxy.port, &["--json"], &[&d]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(v["passed"], false);
    assert_eq!(v["protocols"]["binary"]["differ"], 1);
    assert_eq!(v["protocols"]["text"]["equal"], 1);
    assert_eq!(v["cases"][0]["not_equal"][0]["line"], 3);

    // A broken case file is refused before anything runs, naming the line.
    std::fs::write(dir.join("002-bad.sql"), "-- compat: sideways\nSELECT 1;\n").unwrap();
    let (code, _, err) = compat(proxy.port, &[], &[&d]);
    assert_eq!(code, 2);
    assert!(
        err.contains("002-bad.sql:1: unknown directive `sideways`"),
        "{err}"
    );
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
