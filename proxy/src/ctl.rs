//! `rainbow-bridge ctl`: the operator's side of cluster mode (issue 11). It reads and writes
//! the rules in etcd and waits for the proxies' acknowledgements ([`crate::cluster::Ack`]).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};
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
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5));
        let mut client = Client::connect(&endpoints, Some(opts))
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

    /// Every registered (live) proxy's acknowledgement, by instance.
    pub async fn acks(&mut self) -> Result<Vec<Ack>, String> {
        let r = self
            .client
            .get(
                proxies_prefix(&self.prefix),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| format!("get proxies: {e}"))?;
        let mut v: Vec<Ack> = r
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect();
        v.sort_by(|a: &Ack, b| a.instance.cmp(&b.instance));
        Ok(v)
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
        "{:<24} {:<6} {:>8} {:>8} {:<14} {:<27} {:>9} state",
        "instance", "room", "rules v", "ban v", "banned", "ban effective", "revision"
    );
    for a in acks {
        let state = match (stored, &a.refused) {
            (_, Some(why)) => format!("REFUSED {why}"),
            (Some(r), None) if a.rules_revision < r.revision => {
                format!("behind ({} revisions)", r.revision - a.rules_revision)
            }
            _ => "current".into(),
        };
        let _ = writeln!(
            s,
            "{:<24} {:<6} {:>8} {:>8} {:<14} {:<27} {:>9} {state}",
            a.instance,
            a.room,
            a.rules_version,
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
