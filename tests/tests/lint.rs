//! `rainbow-bridge lint` (issue 10) on fixture corpora with known verdicts: every statement of
//! `fixtures/lint/app.sql` carries its expected verdict in a `-- expect:` comment; the general
//! log `fixtures/lint/general.log` has its verdicts here. Exit codes are what CI relies on.

use std::io::Write;
use std::process::{Command, Stdio};

use rb_e2e::{binary, root};

fn lint(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(binary())
        .arg("lint")
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rainbow-bridge lint");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const RULES: &str = "--config=fixtures/demo/rules.toml";

fn json(args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = vec![RULES, "--format=json"];
    a.extend_from_slice(args);
    let (code, out, err) = lint(&a, None);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, v)
}

#[test]
fn every_statement_of_the_corpus_gets_its_known_verdict() {
    let text = std::fs::read_to_string(root().join("fixtures/lint/app.sql")).unwrap();
    let expected: Vec<Vec<&str>> = text
        .lines()
        .filter_map(|l| l.strip_prefix("-- expect: "))
        .map(|e| e.split_whitespace().collect())
        .collect();
    let (code, v) = json(&["fixtures/lint/app.sql"]);
    assert_eq!(code, 1, "refusals make the exit status 1");
    assert_eq!(v["failed"], true);
    let file = &v["files"][0];
    let stmts = file["statements"].as_array().unwrap();
    assert_eq!(stmts.len(), expected.len(), "one finding per statement");
    assert!(expected.len() >= 25);
    for (s, e) in stmts.iter().zip(&expected) {
        let what = format!("line {}: {}", s["line"], s["sql"]);
        assert_eq!(s["verdict"], e[0], "{what}: {s}");
        match e[0] {
            "ok" => {
                assert_eq!(
                    s["route"],
                    e[1].replace("single", "single_node"),
                    "{what}: {s}"
                );
                assert!(s["error"].is_null(), "{what}");
            }
            "refused" => {
                let code: u64 = e[1].parse().unwrap();
                assert_eq!(s["error"]["code"], code, "{what}: {s}");
                assert!(!s["error"]["message"].as_str().unwrap().is_empty());
                let route = e
                    .get(2)
                    .filter(|r| **r != "unparsed")
                    .copied()
                    .unwrap_or("none");
                assert_eq!(s["route"], route, "{what}: {s}");
            }
            other => panic!("bad expectation `{other}`"),
        }
        assert_eq!(s["parses"], !e.contains(&"unparsed"), "{what}: {s}");
    }
    // Refusals name what to do; the owner room and route code come with a wrong-room write.
    let wrong_room = stmts.iter().find(|s| s["error"]["code"] == 8031).unwrap();
    assert_eq!(wrong_room["route_code"], 5001);
    assert_eq!(wrong_room["owner_room"], "B");
    assert!(wrong_room["error"]["message"]
        .as_str()
        .unwrap()
        .contains("belongs to room `B`"));
    let scatter = stmts.iter().find(|s| s["route"] == "scatter").unwrap();
    assert_eq!(scatter["nodes"], 4);
    assert_eq!(scatter["database"], "mall");
    let sm = &file["summary"];
    let count = |k: &str, want: &str| {
        expected.iter().filter(|e| e.contains(&want)).count() as u64 == sm[k].as_u64().unwrap()
    };
    assert!(count("refused", "refused"), "{sm}");
    assert!(count("scatter", "scatter"), "{sm}");
    assert!(count("broadcast", "broadcast"), "{sm}");
    assert_eq!(sm["statements"], expected.len() as u64);
}

#[test]
fn a_general_log_is_read_with_each_connections_database() {
    let (code, v) = json(&["fixtures/lint/general.log"]);
    assert_eq!(code, 1);
    let got: Vec<(u64, String, String, String)> = v["files"][0]["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["line"].as_u64().unwrap(),
                s["database"].as_str().unwrap().to_string(),
                s["route"].as_str().unwrap().to_string(),
                s["error"]["code"]
                    .as_u64()
                    .map_or("ok".into(), |c| c.to_string()),
            )
        })
        .collect();
    let want = [
        (5, "shop", "single_node", "ok"),
        (6, "shop", "single_node", "ok"),
        // The execution of a prepared statement, with its values (the Prepare line is not).
        (12, "mall", "scatter", "ok"),
        (13, "shop", "none", "8030"),
        (14, "mall", "scatter", "ok"),
        (15, "shop", "single_node", "ok"),
        (16, "shop", "none", "8031"),
    ];
    let want: Vec<(u64, String, String, String)> = want
        .iter()
        .map(|(l, d, r, c)| (*l, d.to_string(), r.to_string(), c.to_string()))
        .collect();
    assert_eq!(got, want);
    // The continued lines of a multi-line query belong to it.
    assert_eq!(
        v["files"][0]["statements"][1]["sql"],
        "SELECT order_id, amount\n  FROM t_order\n  WHERE buyer_id = 1001"
    );
}

#[test]
fn exit_codes_follow_fail_on_and_bad_input_is_a_usage_error() {
    let clean = "USE shop;\nSELECT * FROM t_order WHERE buyer_id = 1001;\n";
    let (code, out, _) = lint(&[RULES, "-"], Some(clean));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("-: 2 statements: 2 ok, 0 refused"), "{out}");
    // One statement per line when there is no `;`.
    let lines = "SELECT * FROM t_order WHERE buyer_id = 1001\nSELECT buyer_id FROM t_order\n";
    let (code, out, _) = lint(
        &[RULES, "--database=mall", "--fail-on=scatter", "-"],
        Some(lines),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("2 statements: 2 ok"), "{out}");
    let (code, _, _) = lint(&[RULES, "--database=mall", "-"], Some(lines));
    assert_eq!(code, 0, "scatters are fine unless --fail-on says so");
    let (code, _, _) = lint(&[RULES, "--fail-on=none", "fixtures/lint/app.sql"], None);
    assert_eq!(code, 0);
    let (code, _, _) = lint(
        &[RULES, "--fail-on=unparsed", "--database=shop", "-"],
        Some("SELECT 1 PROCEDURE ANALYSE()"),
    );
    assert_eq!(code, 1);
    // The application's sql_mode changes the verdict: under ANSI_QUOTES the proxy refuses
    // writes it cannot read the way the server does.
    let ansi = "UPDATE t_order SET status = 'x' WHERE \"buyer_id\" = 1001";
    let (code, out, _) = lint(&[RULES, "--database=shop", "-"], Some(ansi));
    assert!(code == 1 && out.contains("has no ShardingKey"), "{out}");
    let (code, out, _) = lint(
        &[
            RULES,
            "--database=shop",
            "--sql-mode=ANSI,STRICT_TRANS_TABLES",
            "-",
        ],
        Some(ansi),
    );
    assert!(
        code == 1 && out.contains("with sql_mode NO_BACKSLASH_ESCAPES or ANSI_QUOTES"),
        "{out}"
    );
    // Room B's proxy sees the mirror image: its own keys pass, room A's are refused.
    let (code, out, _) = lint(
        &[RULES, "--room=B", "--database=shop", "-"],
        Some("INSERT INTO t_order (order_id, buyer_id, amount) VALUES (1, 5001, 1)"),
    );
    assert_eq!(code, 0, "{out}");
    // Several files: one report each and a total.
    let (code, out, _) = lint(
        &[
            RULES,
            "--fail-on=none",
            "fixtures/lint/app.sql",
            "fixtures/lint/general.log",
        ],
        None,
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("total: 37 statements: 25 ok, 12 refused"),
        "{out}"
    );
    let (_, v) = json(&["fixtures/lint/app.sql", "fixtures/lint/general.log"]);
    assert_eq!(v["summary"]["statements"], 37);
    assert_eq!(v["files"].as_array().unwrap().len(), 2);
    for (args, needle) in [
        (vec![RULES, "-", "-"], "`-` (stdin) given more than once"),
        (
            vec![RULES, "fixtures/lint/app.sql", "no/such/later.sql"],
            "cannot read no/such/later.sql",
        ),
        (
            vec!["--config=fixtures/lint/app.sql", "-"],
            "fixtures/lint/app.sql",
        ),
        (
            vec![RULES, "--database=nowhere", "-"],
            "--database `nowhere` is not a database",
        ),
        (vec![RULES, "--room=Z", "-"], "room `Z` is not a room"),
        (
            vec![RULES, "--fail-on=sideways", "-"],
            "`sideways` is not one of",
        ),
        (vec![RULES, "--mode=sideways", "-"], "--mode `sideways`"),
        (
            vec![RULES, "no/such/file.sql"],
            "cannot read no/such/file.sql",
        ),
    ] {
        let (code, out, err) = lint(&args, Some(""));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            out.is_empty(),
            "nothing printed before a usage error: {out}"
        );
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
