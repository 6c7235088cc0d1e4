//! Golden route table: every case in `fixtures/routes/*.routes` is decided against the rules
//! file of the same name in `fixtures/rules/`, and the rendered decision must equal the line
//! after `=>`. A changed route is a reviewed diff: `RB_BLESS=1 cargo test -p shard-rules --test
//! golden` rewrites the expectations, and `git diff` shows what moved.
//!
//! Case format:
//! ```text
//! @ ROOM MODE DATABASE [privileged] [session_key=K]
//! [params V, V, …]
//! SQL (one or more lines; a leading /* rb: … */ hint is parsed like the proxy does)
//! => expected
//! ```

use std::path::{Path, PathBuf};

use shard_rules::algorithm::Value;
use shard_rules::analyze::analyze;
use shard_rules::config::ConnectionMode;
use shard_rules::decide::{decide, Decision, SessionCtx};
use shard_rules::{RuleSet, ShardingKey};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn parse_value(s: &str) -> Value {
    let s = s.trim();
    if s.eq_ignore_ascii_case("null") {
        Value::Null
    } else if let Some(q) = s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        Value::Str(q.to_string())
    } else {
        Value::Int(s.parse().unwrap_or_else(|_| panic!("bad parameter {s}")))
    }
}

/// The decision (or refusal) as one line.
pub fn render(rules: &RuleSet, r: &Result<Decision, String>) -> String {
    let d = match r {
        Err(e) => return format!("error {e}"),
        Ok(d) => d,
    };
    let mut out = format!("{:?}", d.kind).to_lowercase();
    if let Some(route) = &d.route {
        out += &format!(
            " route={}@{}{}{} ({:?}{})",
            route.code,
            rules.room_name(route.owner),
            if route.banned { " banned" } else { "" },
            if d.foreign_read { " foreign" } else { "" },
            route.source,
            route
                .key
                .as_ref()
                .map(|k| format!(" {k}"))
                .unwrap_or_default()
        );
    }
    for t in &d.tables {
        let nodes: Vec<String> = t.nodes.iter().map(|n| n.to_string()).collect();
        out += &format!(
            " | {}: {}",
            t.table,
            if nodes.is_empty() {
                "none".into()
            } else {
                nodes.join(",")
            }
        );
        if t.rows.len() > 1 {
            let rows: Vec<String> = t.rows.iter().map(|n| n.to_string()).collect();
            out += &format!(" rows={}", rows.join(","));
        }
    }
    for g in &d.generated {
        out += &format!(
            " | generated {}.{}={:?}",
            g.table, g.generator.column, g.values
        );
    }
    out
}

fn run(rules: &RuleSet, header: &str, params: &[Value], sql: &str) -> Result<Decision, String> {
    let mut words = header.split_whitespace();
    let room = rules.room_id(words.next().unwrap()).expect("room");
    let mode = match words.next().unwrap() {
        "center" => ConnectionMode::Center,
        _ => ConnectionMode::Unit,
    };
    let database = words.next().unwrap().to_string();
    let mut privileged = false;
    let mut session_key = None;
    for w in words {
        if w == "privileged" {
            privileged = true;
        } else if let Some(k) = w.strip_prefix("session_key=") {
            session_key = Some(ShardingKey::Int(k.parse().unwrap()));
        }
    }
    let parsed = sql_hint::parse(sql.as_bytes()).map_err(|e| e.to_string())?;
    let stripped = String::from_utf8(parsed.sql.into_owned()).unwrap();
    let facts = analyze(&stripped).map_err(|e| e.to_string())?;
    let session = SessionCtx {
        room,
        mode,
        database: &database,
        session_key: session_key.as_ref(),
        privileged,
    };
    let mut next = 1_000_000i64;
    let mut ids = |_: &shard_rules::ruleset::KeyGenerator| {
        next += 1;
        Ok(next)
    };
    decide(
        rules,
        &facts,
        parsed.hint.as_ref(),
        &session,
        params,
        &mut ids,
    )
    .map_err(|e| e.to_string())
}

#[test]
fn golden_routes() {
    let bless = std::env::var_os("RB_BLESS").is_some();
    let dir = root().join("fixtures/routes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "routes"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no golden route files in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    let mut cases = 0;
    for file in files {
        let stem = file.file_stem().unwrap().to_str().unwrap().to_string();
        let rules_text =
            std::fs::read_to_string(root().join(format!("fixtures/rules/{stem}.toml"))).unwrap();
        let rules = RuleSet::parse(&rules_text).unwrap_or_else(|e| panic!("{stem}: {e}"));
        let text = std::fs::read_to_string(&file).unwrap();
        let mut out = String::new();
        let mut header = String::new();
        let mut params = Vec::new();
        let mut sql = String::new();
        for (n, line) in text.lines().enumerate() {
            if let Some(expected) = line.strip_prefix("=> ") {
                let got = render(&rules, &run(&rules, &header, &params, sql.trim()));
                cases += 1;
                if got != expected {
                    failures.push(format!(
                        "{}:{}: {}\n  expected: {expected}\n  got:      {got}",
                        file.display(),
                        n + 1,
                        sql.trim()
                    ));
                }
                out += &format!("=> {got}\n");
                sql.clear();
                params.clear();
                continue;
            }
            out += line;
            out += "\n";
            if let Some(h) = line.strip_prefix("@ ") {
                header = h.to_string();
            } else if let Some(p) = line.strip_prefix("params ") {
                params = p.split(',').map(parse_value).collect();
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                sql += line;
                sql += "\n";
            }
        }
        if bless {
            std::fs::write(&file, out).unwrap();
        }
    }
    assert!(cases > 0);
    if !bless {
        assert!(
            failures.is_empty(),
            "{} of {cases} golden routes differ (RB_BLESS=1 to accept):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}
