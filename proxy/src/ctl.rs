//! `rainbow-bridge ctl`: the operator's side of cluster mode (issue 11). It reads and writes
//! the rules in etcd and waits for the proxies' acknowledgements ([`crate::cluster::Ack`]).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use shard_rules::RuleSet;

use crate::cluster::{proxies_prefix, rules_key, Ack};

/// A connection to the cluster's etcd and its key prefix.
pub struct Ctl {
    client: Client,
    prefix: String,
}

fn unreachable(endpoints: &[String]) -> impl Fn(etcd_client::Error) -> String + '_ {
    move |e| format!("cannot reach etcd at {}: {e}", endpoints.join(", "))
}

/// The rules key as etcd holds it.
pub struct StoredRules {
    pub text: String,
    pub revision: i64,
    pub rules: Option<RuleSet>,
}

impl Ctl {
    pub async fn connect(url: &str) -> Result<Ctl, String> {
        let (endpoints, prefix) = shard_rules::config::parse_cluster_url(url)?;
        let mut client = crate::cluster::connect(&endpoints)
            .await
            .map_err(unreachable(&endpoints))?;
        // The channel connects lazily: ask once, so an unreachable etcd is said so here.
        client.status().await.map_err(unreachable(&endpoints))?;
        Ok(Ctl { client, prefix })
    }

    /// The rules text in etcd, if any.
    pub async fn rules(&mut self) -> Result<Option<StoredRules>, String> {
        let r = self
            .client
            .get(rules_key(&self.prefix), None)
            .await
            .map_err(|e| format!("get rules: {e}"))?;
        Ok(r.kvs().first().map(|kv| {
            let text = String::from_utf8_lossy(kv.value()).into_owned();
            StoredRules {
                rules: RuleSet::parse(&text).ok(),
                text,
                revision: kv.mod_revision(),
            }
        }))
    }

    /// Every registered (live) proxy's acknowledgement, by instance. An acknowledgement that
    /// does not read (another version of the proxy, a damaged value) is a proxy ctl cannot
    /// judge: an error, never counted as absent.
    pub async fn acks(&mut self) -> Result<Vec<Ack>, String> {
        let (acks, unreadable) = self.acks_and_unreadable().await?;
        match unreadable.into_iter().next() {
            Some(why) => Err(why),
            None => Ok(acks),
        }
    }

    /// The acknowledgements that read, and a message for each that does not (`ctl status`
    /// shows both).
    pub async fn acks_and_unreadable(&mut self) -> Result<(Vec<Ack>, Vec<String>), String> {
        let r = self
            .client
            .get(
                proxies_prefix(&self.prefix),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| format!("get proxies: {e}"))?;
        let mut v: Vec<Ack> = Vec::with_capacity(r.kvs().len());
        let mut unreadable = Vec::new();
        for kv in r.kvs() {
            match serde_json::from_slice(kv.value()) {
                Ok(a) => v.push(a),
                Err(e) => unreadable.push(format!(
                    "the acknowledgement under {} does not read ({e}); is that proxy another version?",
                    String::from_utf8_lossy(kv.key())
                )),
            }
        }
        v.sort_by(|a: &Ack, b| a.instance.cmp(&b.instance));
        Ok((v, unreadable))
    }

    /// Writes `text` as the rules if the key is still at `expected` (0: absent), so two
    /// operators never overwrite each other's change unseen. Returns the new revision.
    pub async fn put_rules(&mut self, text: &str, expected: i64) -> Result<i64, String> {
        let key = rules_key(&self.prefix);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                expected,
            )])
            .and_then([TxnOp::put(key, text, None)]);
        let r = self
            .client
            .txn(txn)
            .await
            .map_err(|e| format!("put rules: {e}"))?;
        if !r.succeeded() {
            return Err(
                "the rules in etcd changed meanwhile (another operator?); run the command again"
                    .into(),
            );
        }
        Ok(r.header().map_or(0, |h| h.revision()))
    }
}

/// `ctl status`: the rules in etcd and every live proxy, with how far behind it is.
pub fn render_status(stored: Option<&StoredRules>, acks: &[Ack]) -> String {
    let mut s = String::new();
    match stored {
        None => s.push_str("rules in etcd: none (ctl put-rules FILE)\n"),
        Some(r) => {
            let _ = match &r.rules {
                Some(rules) => writeln!(
                    s,
                    "rules in etcd: version {}, traffic version {}, write-ban version {} on {}, revision {}",
                    rules.version(),
                    rules.traffic_version(),
                    rules.ban_version(),
                    rules.banned_codes(),
                    r.revision
                ),
                None => writeln!(s, "rules in etcd: revision {}, does NOT parse", r.revision),
            };
        }
    }
    let _ = writeln!(
        s,
        "{:<24} {:<6} {:>8} {:>9} {:>8} {:<14} {:<27} {:>9} state",
        "instance", "room", "rules v", "traffic v", "ban v", "banned", "ban effective", "revision"
    );
    for a in acks {
        let state = match (stored, &a.refused) {
            (_, Some(why)) => format!("REFUSED {why}"),
            (Some(r), None) if a.rules_revision < r.revision => {
                format!(
                    "behind ({} revisions; its rules applied at {})",
                    r.revision - a.rules_revision,
                    a.applied_at
                )
            }
            _ => "current".into(),
        };
        let _ = writeln!(
            s,
            "{:<24} {:<6} {:>8} {:>9} {:>8} {:<14} {:<27} {:>9} {state}",
            a.instance,
            a.room,
            a.rules_version,
            a.traffic_version,
            a.ban_version,
            a.banned,
            a.ban_effective_at.as_deref().unwrap_or("waiting"),
            a.rules_revision
        );
    }
    let _ = writeln!(s, "{} proxies registered", acks.len());
    s
}

/// Waits until every live proxy acknowledged `revision` (or refused it), `want` holds for its
/// acknowledgement, and at least `min_proxies` answered; prints progress on changes.
pub async fn wait_acks(
    ctl: &mut Ctl,
    revision: i64,
    min_proxies: usize,
    timeout: Duration,
    want: impl Fn(&Ack) -> bool,
) -> Result<Vec<Ack>, String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let acks = ctl.acks().await?;
        let done: Vec<&Ack> = acks
            .iter()
            .filter(|a| a.rules_revision >= revision && want(a))
            .collect();
        let refused: Vec<&Ack> = acks
            .iter()
            .filter(|a| a.refused_revision.is_some_and(|r| r >= revision))
            .collect();
        let line = format!(
            "  {}/{} proxies acknowledged revision {revision}",
            done.len(),
            acks.len()
        );
        if line != last {
            println!("{line}");
            last = line;
        }
        if let Some(r) = refused.first() {
            return Err(format!(
                "proxy {} refused the rules: {}",
                r.instance,
                r.refused.as_deref().unwrap_or("")
            ));
        }
        if done.len() == acks.len() && acks.len() >= min_proxies {
            return Ok(acks);
        }
        if Instant::now() >= deadline {
            if done.len() == acks.len() {
                return Err(format!(
                    "timed out after {timeout:?}: {} proxies registered and acknowledged, fewer \
                     than --min-proxies {min_proxies} (`ctl status` lists them)",
                    acks.len()
                ));
            }
            let missing: Vec<&str> = acks
                .iter()
                .filter(|a| !(a.rules_revision >= revision && want(a)))
                .map(|a| a.instance.as_str())
                .collect();
            return Err(format!(
                "timed out after {timeout:?}: not acknowledged by {} of {} proxies ({})",
                missing.len(),
                acks.len(),
                missing.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `ctl ban` and `ctl unban` do to the write-ban.
#[derive(Debug, Clone)]
pub enum BanChange {
    /// Ban these route codes too; codes already banned (another cut-over's) stay banned.
    Add(Vec<String>),
    /// Lift the ban of these route codes; other banned codes stay banned.
    Remove(Vec<String>),
    /// Lift the whole ban.
    LiftAll,
}

/// `ctl ban` / `ctl unban`: writes the changed write-ban into the rules in etcd (with a
/// compare-and-swap on their revision) and waits until every live proxy applied it and, when
/// codes are banned, reported it effective; prints the latest effective time.
/// `Err((exit code, message))`: 2 for bad input, 1 when it did not complete.
pub async fn ban(
    ctl: &mut Ctl,
    change: &BanChange,
    version: Option<u64>,
    wait: Duration,
    min_proxies: usize,
) -> Result<(), (u8, String)> {
    let stored = ctl
        .rules()
        .await
        .map_err(|e| (1, e))?
        .ok_or((1, "no rules in etcd yet (ctl put-rules FILE)".to_string()))?;
    let rules = stored.rules.as_ref().ok_or((
        1,
        "the rules in etcd do not parse; put a valid rules file first".to_string(),
    ))?;
    let parse = |codes: &[String]| {
        shard_rules::CodeSet::parse(codes, rules.route().count)
            .map_err(|e| (2, format!("--route-codes: {e:?}")))
    };
    let banned = rules.banned_codes();
    let all = match change {
        BanChange::Add(codes) => {
            let add = parse(codes)?;
            code_set(
                banned
                    .iter()
                    .chain(add.iter())
                    .collect::<std::collections::BTreeSet<u32>>()
                    .into_iter(),
            )
        }
        BanChange::Remove(codes) => {
            let remove = parse(codes)?;
            code_set(banned.iter().filter(|&c| !remove.contains(c)))
        }
        BanChange::LiftAll => code_set(std::iter::empty()),
    };
    let version = version.unwrap_or(rules.ban_version() + 1);
    if version <= rules.ban_version() {
        return Err((
            2,
            format!(
                "--version {version} is not above the write-ban version in etcd ({}); the \
                 proxies refuse a changed write-ban without a higher version",
                rules.ban_version()
            ),
        ));
    }
    if banned.iter().any(|c| !all.contains(c)) {
        lift_allowed(ctl, rules).await.map_err(|e| (1, e))?;
    }
    let text =
        crate::reload::edit_write_ban(&stored.text, &render(&all), version, rules.version() + 1)
            .map_err(|e| (1, format!("the rules in etcd {e}")))?;
    let new = RuleSet::parse(&text).map_err(|e| (2, format!("the write-ban is refused: {e}")))?;
    let rev = ctl
        .put_rules(&text, stored.revision)
        .await
        .map_err(|e| (1, e))?;
    let lifting = new.banned_codes().is_empty();
    let what = if lifting {
        format!("write-ban lifted (version {version})")
    } else {
        format!("write-ban version {version} on {}", new.banned_codes())
    };
    println!(
        "{what} written to etcd (rules version {}, revision {rev}); waiting for the proxies",
        new.version()
    );
    let acks = wait_acks(ctl, rev, min_proxies, wait, |a| {
        a.ban_version >= version && (lifting || a.ban_effective_at.is_some())
    })
    .await
    .map_err(|e| {
        (
            1,
            format!(
                "{e}; the {what} stays in etcd: run `ctl status` to see who is behind, and the \
                 same command again to wait again"
            ),
        )
    })?;
    if lifting {
        println!("lifted on all {} proxies", acks.len());
    } else {
        let latest = acks
            .iter()
            .filter_map(|a| a.ban_effective_at.as_deref())
            .max();
        println!(
            "effective on all {} proxies; latest effective time {}",
            acks.len(),
            latest.unwrap_or("-")
        );
    }
    Ok(())
}

/// Lifting (part of) the write-ban of `rules` is allowed only while every live proxy serves
/// their traffic version: a proxy still on an older traffic rule would write a code whose ban
/// is lifted in the room that owned it before a cut-over.
pub async fn lift_allowed(ctl: &mut Ctl, rules: &RuleSet) -> Result<(), String> {
    let acks = ctl.acks().await?;
    let behind: Vec<String> = acks
        .iter()
        .filter(|a| a.traffic_version < rules.traffic_version())
        .map(|a| format!("{} (traffic version {})", a.instance, a.traffic_version))
        .collect();
    if behind.is_empty() {
        return Ok(());
    }
    Err(format!(
        "not lifted: {} still serve an older traffic rule than etcd's version {}, and would \
         write the unbanned route codes in the room that owned them before; nothing was \
         written. Wait until `ctl status` shows them current (or gone), then run the command \
         again",
        behind.join(", "),
        rules.traffic_version()
    ))
}

/// A set of route codes from a list of them.
fn code_set(codes: impl Iterator<Item = u32>) -> shard_rules::CodeSet {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for c in codes {
        match ranges.last_mut() {
            Some((_, hi)) if *hi + 1 == c => *hi = c,
            _ => ranges.push((c, c)),
        }
    }
    shard_rules::CodeSet::from_ranges(ranges)
}

/// A code set as the rules file writes it.
fn render(set: &shard_rules::CodeSet) -> Vec<String> {
    set.ranges()
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect()
}

/// A server as the rules give it: `host:port` and an account on it.
fn server_of(ds: &shard_rules::config::DataSource) -> (String, mysql_async::Opts) {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(ds.host.clone())
        .tcp_port(ds.port)
        .user(Some(ds.user.clone()))
        .pass(Some(ds.password.clone()))
        .prefer_socket(false)
        .into();
    (format!("{}:{}", ds.host, ds.port), opts)
}

/// The replication pairs between two rooms: for every logical data source of a unit database
/// that has a physical data source in both, (the `from` room's server, the `to` room's server),
/// each pair once. The `to` server replicates the `from` server's writes of that data.
pub fn server_pairs(
    rules: &RuleSet,
    from: &str,
    to: &str,
) -> Vec<((String, mysql_async::Opts), (String, mysql_async::Opts))> {
    let (Some(f), Some(t)) = (rules.room_id(from), rules.room_id(to)) else {
        return Vec::new();
    };
    let mut out: Vec<((String, mysql_async::Opts), (String, mysql_async::Opts))> = Vec::new();
    for (_, lds) in unit_data_sources(rules) {
        let phys = |room: shard_rules::RoomId| {
            physical_in(lds, room).and_then(|n| rules.data_sources().get(n).map(server_of))
        };
        if let (Some(a), Some(b)) = (phys(f), phys(t)) {
            if !out.iter().any(|(x, y)| x.0 == a.0 && y.0 == b.0) {
                out.push((a, b));
            }
        }
    }
    out
}

/// Every logical data source of a unit database, with its database's name.
fn unit_data_sources(
    rules: &RuleSet,
) -> impl Iterator<Item = (&str, &shard_rules::ruleset::LogicalDataSource)> {
    rules
        .databases()
        .filter(|d| d.db_type == shard_rules::config::DatabaseType::Unit)
        .flat_map(|db| {
            db.data_sources
                .iter()
                .map(move |lds| (db.name.as_str(), lds))
        })
}

/// The physical data source of `lds` in `room`, if it has one there.
fn physical_in(
    lds: &shard_rules::ruleset::LogicalDataSource,
    room: shard_rules::RoomId,
) -> Option<&str> {
    lds.physical.get(room as usize).and_then(|p| p.as_deref())
}

/// How long a server may take to accept ctl's connection or answer a query (beyond what the
/// query itself waits for): a server that hangs must not leave the cut-over waiting unsaid.
const SERVER_TIMEOUT: Duration = Duration::from_secs(10);

async fn within<T>(
    name: &str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, mysql_async::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(|e| format!("server {name}: {e}")),
        Err(_) => Err(format!("server {name}: no answer within {limit:?}")),
    }
}

async fn server_conn(name: &str, opts: &mysql_async::Opts) -> Result<mysql_async::Conn, String> {
    within(name, SERVER_TIMEOUT, mysql_async::Conn::new(opts.clone())).await
}

/// The unit databases' logical data sources that have a physical data source in room `from`
/// and none in room `to`, as `database.data_source`.
pub fn missing_in_target(rules: &RuleSet, from: &str, to: &str) -> Vec<String> {
    let (Some(f), Some(t)) = (rules.room_id(from), rules.room_id(to)) else {
        return Vec::new();
    };
    unit_data_sources(rules)
        .filter(|(_, lds)| physical_in(lds, f).is_some() && physical_in(lds, t).is_none())
        .map(|(db, lds)| format!("{db}.{}", lds.name))
        .collect()
}

/// `@@gtid_binlog_pos` of a server, reduced to the server's own GTID domain (what it writes;
/// the other room's transactions it applied are not its to hand on).
pub async fn gtid_position(name: &str, opts: &mysql_async::Opts) -> Result<String, String> {
    use mysql_async::prelude::Queryable;
    let mut c = server_conn(name, opts).await?;
    let (pos, domain): (String, u32) = within(
        name,
        SERVER_TIMEOUT,
        c.query_first("SELECT @@gtid_binlog_pos, @@gtid_domain_id"),
    )
    .await?
    .unwrap_or_default();
    let _ = tokio::time::timeout(Duration::from_secs(2), c.disconnect()).await;
    Ok(pos
        .split(',')
        .filter(|g| g.split('-').next() == Some(&domain.to_string()))
        .collect::<Vec<_>>()
        .join(","))
}

/// Waits until server `name` has applied `pos` (MASTER_GTID_WAIT), at most `timeout`.
pub async fn gtid_wait(
    name: &str,
    opts: &mysql_async::Opts,
    pos: &str,
    timeout: Duration,
) -> Result<(), String> {
    use mysql_async::prelude::Queryable;
    let mut c = server_conn(name, opts).await?;
    let r: Option<i64> = within(
        name,
        timeout + SERVER_TIMEOUT,
        c.query_first(format!(
            "SELECT MASTER_GTID_WAIT('{pos}', {})",
            timeout.as_secs_f64()
        )),
    )
    .await
    .map_err(|e| format!("{e} (MASTER_GTID_WAIT)"))?;
    let _ = tokio::time::timeout(Duration::from_secs(2), c.disconnect()).await;
    if r != Some(0) {
        return Err(format!(
            "server {name} has not applied position {pos} after {timeout:?} (is replication \
             running? `SHOW SLAVE STATUS` there)"
        ));
    }
    Ok(())
}

/// What `ctl cutover` needs to know.
pub struct Cutover {
    pub codes: Vec<String>,
    pub to: String,
    pub wait: Duration,
    pub gtid_timeout: Duration,
    pub min_proxies: usize,
}

/// Moves route codes to room `to` (seed 001, section 4): (1) ban them, (2) wait until every
/// live proxy reports the ban effective, (3) wait until the target room applied the source
/// rooms' GTID positions read after that, (4) give the codes to `to` and wait for every proxy,
/// (5) lift their ban. Each step prints its progress; a failure stops with the ban in place,
/// and running the same command again resumes (done steps are recognised and skipped).
pub async fn cutover(ctl: &mut Ctl, c: &Cutover) -> Result<(), String> {
    let codes_arg = c.codes.join(",");
    // What a failure leaves in etcd, and how to go on, depends on the step.
    let before_ban = |step: &str, e: String| {
        format!(
            "{step} failed: {e}\nNothing was changed: no route code was banned and the owners are \
             as before. Run the same command again once the cause is fixed."
        )
    };
    let stop = |step: &str, e: String| {
        format!(
            "{step} failed: {e}\nThe write-ban on {codes_arg} stays in place and their owner has \
             not changed, so no write of these route codes runs anywhere. Run the same command \
             again to resume, or roll back with `rainbow-bridge ctl unban --route-codes \
             {codes_arg}` (the old owners keep the codes)."
        )
    };
    let StoredRules {
        text: stored_text,
        revision: stored_revision,
        rules,
    } = ctl
        .rules()
        .await
        .map_err(|e| before_ban("reading the rules", e))?
        .ok_or("no rules in etcd yet (ctl put-rules FILE)")?;
    let rules = rules.ok_or("the rules in etcd do not parse; put a valid rules file first")?;
    let to = rules
        .room_id(&c.to)
        .ok_or_else(|| format!("`{}` is not a room of the rules", c.to))?;
    let codes = shard_rules::CodeSet::parse(&c.codes, rules.route().count)
        .map_err(|e| format!("--route-codes: {e:?}"))?;
    let sources: Vec<String> = rules
        .rooms()
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u16 != to)
        .filter(|(i, _)| codes.iter().any(|code| rules.owner(code) as usize == *i))
        .map(|(_, (n, _))| n.clone())
        .collect();
    // Every unit database's data the codes' users have in a source room must exist in the
    // target room, or they would lose it there.
    for src in &sources {
        let missing = missing_in_target(&rules, src, &c.to);
        if !missing.is_empty() {
            return Err(format!(
                "cutover refused: in the rules (revision {stored_revision}), {} of room {src} \
                 have no physical data source in room {}; nothing was changed",
                missing.join(", "),
                c.to
            ));
        }
    }
    let owners_at_start: Vec<shard_rules::RoomId> =
        codes.iter().map(|code| rules.owner(code)).collect();
    println!(
        "cutover of route codes {codes} to room {}: owned now by {}",
        c.to,
        if sources.is_empty() {
            format!("{} already", c.to)
        } else {
            sources.join(", ")
        }
    );
    let source_list = if sources.is_empty() {
        "<the room that owned them before>".to_string()
    } else {
        sources.join(",")
    };
    let switched = |step: &str, e: String| {
        format!(
            "{step} failed: {e}\nThe write-ban on {codes_arg} stays in place, so no write of these \
             route codes runs anywhere; the traffic rule giving them to room {to} may be in etcd \
             with some proxies not on it yet (`ctl status`). Run the same command again to \
             resume, or roll back with `rainbow-bridge ctl cutover --route-codes {codes_arg} --to \
             {source_list}`. Do not lift the ban by hand: a proxy still on the old traffic rule \
             would write them in the old room.",
            to = c.to
        )
    };
    // Step 1: the ban.
    let banned_all = codes.iter().all(|code| rules.is_banned(code));
    let (rules, ban_version) = if banned_all {
        println!(
            "step 1: already banned (write-ban version {}): resuming",
            rules.ban_version()
        );
        let v = rules.ban_version();
        (rules, v)
    } else if sources.is_empty() {
        // Done before, maybe by a run whose last wait timed out: make sure every proxy serves
        // the rules as they are before saying so.
        let (bv, tv) = (rules.ban_version(), rules.traffic_version());
        wait_acks(ctl, stored_revision, c.min_proxies, c.wait, |a| {
            a.ban_version >= bv && a.traffic_version >= tv
        })
        .await
        .map_err(|e| {
            format!(
                "the codes are owned by {} and not banned, but not every proxy serves that yet: \
                 {e}; run the same command again to wait again (`ctl status` shows who is \
                 behind)",
                c.to
            )
        })?;
        println!(
            "step 1: skipped, the codes are owned by {} and not banned, on every proxy: nothing to do",
            c.to
        );
        return Ok(());
    } else {
        let all = code_set(
            rules
                .banned_codes()
                .iter()
                .chain(codes.iter())
                .collect::<std::collections::BTreeSet<u32>>()
                .into_iter(),
        );
        let version = rules.ban_version() + 1;
        let text = crate::reload::edit_write_ban(
            &stored_text,
            &render(&all),
            version,
            rules.version() + 1,
        )
        .map_err(|e| before_ban("step 1 (ban)", format!("the rules in etcd {e}")))?;
        let banned =
            RuleSet::parse(&text).map_err(|e| before_ban("step 1 (ban)", e.to_string()))?;
        let rev = ctl.put_rules(&text, stored_revision).await.map_err(|e| {
            format!(
                "step 1 (ban) failed: {e}\nThe ban may or may not have been written. Run the same \
                 command again: it sees which, and resumes; or lift it with `rainbow-bridge ctl \
                 unban --route-codes {codes_arg}`."
            )
        })?;
        println!("step 1: write-ban version {version} on {all} written (revision {rev})");
        (banned, version)
    };
    let mut ban_version = ban_version;
    let stored_after_3 = loop {
        // Step 2: every proxy applied the ban and it is effective there.
        let current = ctl
            .rules()
            .await
            .map_err(|e| stop("step 2 (reading the rules)", e))?
            .ok_or_else(|| stop("step 2", "the rules vanished from etcd".into()))?;
        let acks = wait_acks(ctl, current.revision, c.min_proxies, c.wait, |a| {
            a.ban_version >= ban_version && a.ban_effective_at.is_some()
        })
        .await
        .map_err(|e| stop("step 2 (acknowledgements of the ban)", e))?;
        let latest = acks
            .iter()
            .filter_map(|a| a.ban_effective_at.clone())
            .max()
            .unwrap_or_default();
        println!(
            "step 2: the ban is effective on all {} proxies; latest effective time {latest}",
            acks.len()
        );
        // Step 3: the data written before the ban has reached the target room: for each pair of
        // servers that replicate a unit database's data source from a source room to the target.
        for src in &sources {
            let pairs = server_pairs(&rules, src, &c.to);
            if pairs.is_empty() {
                println!("step 3: no unit database has data sources in both room {src} and room {}: nothing to wait for", c.to);
            }
            for ((from, from_opts), (to_server, to_opts)) in &pairs {
                let pos = gtid_position(from, from_opts)
                    .await
                    .map_err(|e| stop("step 3 (GTID position)", format!("room {src}'s {e}")))?;
                if pos.is_empty() {
                    println!("step 3: room {src}'s {from} has written nothing yet");
                    continue;
                }
                println!("step 3: room {src}'s {from} is at {pos}");
                let t0 = Instant::now();
                gtid_wait(to_server, to_opts, &pos, c.gtid_timeout)
                    .await
                    .map_err(|e| {
                        stop("step 3 (MASTER_GTID_WAIT)", format!("room {}'s {e}", c.to))
                    })?;
                println!(
                    "  room {}'s {to_server} applied room {src}'s {from} position {pos} ({} ms)",
                    c.to,
                    t0.elapsed().as_millis()
                );
            }
        }
        println!(
            "step 3: room {} has applied everything the source rooms wrote",
            c.to
        );
        // Step 4: the traffic rule, written only if the ban waited for in step 2 still stands:
        // the compare-and-swap on the revision read here keeps it so until the write.
        let stored = ctl
            .rules()
            .await
            .map_err(|e| stop("step 4 (reading the rules)", e))?
            .ok_or_else(|| stop("step 4", "the rules vanished from etcd".into()))?;
        let now = stored
            .rules
            .as_ref()
            .ok_or_else(|| stop("step 4", "the rules in etcd do not parse".into()))?;
        if !codes.iter().all(|code| now.is_banned(code)) {
            return Err(format!(
            "step 4 (traffic rule) refused: the ban of {codes} was lifted while steps 2 and 3 ran \
             (write-ban version {} now), so writes of them may have run in the old room since; \
             nothing was switched. Run the same command again to start over from the ban.",
            now.ban_version()
        ));
        }
        if let Some(code) = codes
            .iter()
            .zip(&owners_at_start)
            .map(|(code, was)| (code, *was, now.owner(code)))
            .find(|(_, was, is)| is != was && *is != to)
            .map(|(code, _, _)| code)
        {
            return Err(stop(
                "step 4 (traffic rule)",
                format!(
                    "route code {code} changed owner while steps 2 and 3 ran (to room {}, \
                     traffic version {}: another cut-over?), so step 3 waited for the wrong \
                     room; nothing was switched",
                    now.room_name(now.owner(code)),
                    now.traffic_version()
                ),
            ));
        }
        if now.ban_version() != ban_version {
            println!(
            "step 4: the write-ban changed while steps 2 and 3 ran (version {} now, not {ban_version}): \
             repeating them for it",
            now.ban_version()
        );
            ban_version = now.ban_version();
            continue;
        }
        break stored;
    };
    let StoredRules {
        text: stored_text,
        revision: stored_revision,
        rules,
    } = stored_after_3;
    let rules = rules.ok_or("the rules in etcd do not parse")?;
    if codes.iter().all(|code| rules.owner(code) == to) {
        println!("step 4: the codes are owned by {} already: resuming", c.to);
        // Resuming: the traffic rule must have reached every proxy before the ban goes.
        let tv = rules.traffic_version();
        wait_acks(ctl, stored_revision, c.min_proxies, c.wait, |a| {
            a.traffic_version >= tv
        })
        .await
        .map_err(|e| switched("step 4 (acknowledgements of the traffic rule)", e))?;
    } else {
        let owners: Vec<(String, Vec<String>)> = rules
            .rooms()
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let set = code_set((0..rules.route().count).filter(|&code| {
                    let owner = if codes.contains(code) {
                        to
                    } else {
                        rules.owner(code)
                    };
                    owner as usize == i
                }));
                (name.clone(), render(&set))
            })
            .collect();
        let text = crate::reload::edit_traffic(
            &stored_text,
            &owners,
            rules.traffic_version() + 1,
            rules.version() + 1,
        )
        .map_err(|e| stop("step 4 (traffic rule)", format!("the rules in etcd {e}")))?;
        RuleSet::parse(&text).map_err(|e| stop("step 4 (traffic rule)", e.to_string()))?;
        let rev = ctl
            .put_rules(&text, stored_revision)
            .await
            .map_err(|e| switched("step 4 (traffic rule)", e))?;
        println!(
            "step 4: traffic version {} gives {codes} to room {} (revision {rev})",
            rules.traffic_version() + 1,
            c.to
        );
        let tv = rules.traffic_version() + 1;
        wait_acks(ctl, rev, c.min_proxies, c.wait, |a| a.traffic_version >= tv)
            .await
            .map_err(|e| switched("step 4 (acknowledgements of the traffic rule)", e))?;
        println!("step 4: every proxy routes {codes} to room {}", c.to);
    }
    // Step 5: lift the ban of these codes (other banned codes stay banned).
    let after_switch = |what: &str, e: String| {
        format!(
            "step 5 (lift the ban: {what}) failed: {e}\nEvery proxy routes {codes_arg} to room {} \
             now; their ban may still be in place on some proxies. Run the same command again: it \
             lifts the ban if it is still written and waits for every proxy.",
            c.to
        )
    };
    let StoredRules {
        text: stored_text,
        revision: stored_revision,
        rules,
    } = ctl
        .rules()
        .await
        .map_err(|e| after_switch("reading the rules", e))?
        .ok_or_else(|| after_switch("reading the rules", "they vanished from etcd".into()))?;
    let rules =
        rules.ok_or_else(|| after_switch("reading the rules", "they do not parse".into()))?;
    if let Some(code) = codes.iter().find(|&code| rules.owner(code) != to) {
        return Err(after_switch(
            "checking the owner",
            format!(
                "route code {code} is owned by room {} in etcd's rules (traffic version {}), not \
                 by room {}: the traffic rule was changed by someone else; the ban stays",
                rules.room_name(rules.owner(code)),
                rules.traffic_version(),
                c.to
            ),
        ));
    }
    let rest = code_set(
        rules
            .banned_codes()
            .iter()
            .filter(|&code| !codes.contains(code)),
    );
    let version = rules.ban_version() + 1;
    let text =
        crate::reload::edit_write_ban(&stored_text, &render(&rest), version, rules.version() + 1)
            .map_err(|e| after_switch("edit", format!("the rules in etcd {e}")))?;
    let rev = ctl
        .put_rules(&text, stored_revision)
        .await
        .map_err(|e| after_switch("write", e))?;
    wait_acks(ctl, rev, c.min_proxies, c.wait, |a| {
        a.ban_version >= version
    })
    .await
    .map_err(|e| after_switch("acknowledgements", e))?;
    println!("step 5: the ban of {codes} is lifted (write-ban version {version}); cutover done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_each_proxy_with_its_versions_and_how_far_behind_it_is() {
        let ack = |instance: &str, rev: i64, refused: Option<&str>| Ack {
            instance: instance.into(),
            room: "A".into(),
            rules_version: 4,
            traffic_version: 2,
            ban_version: 1,
            banned: "100-199".into(),
            ban_effective_at: None,
            applied_at: "2026-12-04T03:00:00.000Z".into(),
            rules_revision: rev,
            refused: refused.map(String::from),
            refused_revision: refused.map(|_| 31),
        };
        let stored = StoredRules {
            text: String::new(),
            revision: 31,
            rules: None,
        };
        let out = render_status(
            Some(&stored),
            &[
                ack("p1", 31, None),
                ack("p2", 28, None),
                ack("p3", 28, Some("not valid TOML")),
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "rules in etcd: revision 31, does NOT parse");
        assert!(lines[1].contains("traffic v"), "{out}");
        let cols: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            cols,
            ["p1", "A", "4", "2", "1", "100-199", "waiting", "31", "current"]
        );
        assert!(
            lines[3]
                .ends_with("behind (3 revisions; its rules applied at 2026-12-04T03:00:00.000Z)"),
            "{out}"
        );
        assert!(lines[4].ends_with("REFUSED not valid TOML"), "{out}");
        assert_eq!(lines[5], "3 proxies registered");
    }

    #[test]
    fn step_three_pairs_each_source_server_with_the_server_that_replicates_it() {
        let ds = |name: &str, room: &str, port: u16| {
            format!(
                "[data_sources.{name}]\nroom = \"{room}\"\nhost = \"127.0.0.1\"\nport = {port}\n\
                 schema = \"s\"\nuser = \"u\"\npassword = \"p\"\n"
            )
        };
        let text = format!(
            "version = 1\n[rooms.A]\nrole = \"center\"\n[rooms.B]\nrole = \"unit\"\n\
             [route_codes]\ncount = 100\n[traffic]\nversion = 1\nowners.A = [\"0-49\"]\n\
             owners.B = [\"50-99\"]\n{}{}{}{}{}\
             [databases.u]\ntype = \"unit\"\ndata_sources.ds_0 = [\"a0\", \"b0\"]\n\
             data_sources.ds_1 = [\"a1\", \"b1\"]\ndefault_data_source = \"ds_0\"\n\
             [databases.c]\ntype = \"center\"\ndata_sources.ds = [\"ca\"]\n\
             [users.x]\npassword_hash = \"*61A7BFA719D1CB40DA1D05DBA4EF433C970BBBE6\"\n\
             databases = [\"u\"]\n",
            ds("a0", "A", 3336),
            ds("b0", "B", 3337),
            ds("a1", "A", 4336),
            ds("b1", "B", 4337),
            ds("ca", "A", 5336),
        );
        let rules = RuleSet::parse(&text).unwrap();
        let names = |from: &str, to: &str| -> Vec<(String, String)> {
            server_pairs(&rules, from, to)
                .into_iter()
                .map(|((a, _), (b, _))| (a, b))
                .collect()
        };
        assert_eq!(
            names("A", "B"),
            [
                ("127.0.0.1:3336".to_string(), "127.0.0.1:3337".to_string()),
                ("127.0.0.1:4336".to_string(), "127.0.0.1:4337".to_string())
            ],
            "each data source's own replica, and nothing for the center database"
        );
        assert_eq!(names("B", "A").len(), 2);
        assert!(names("A", "Z").is_empty());
    }
}
