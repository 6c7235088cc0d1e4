//! Cluster mode (issue 11): the rules live in etcd; every proxy watches them, compiles and
//! applies them as it does a rules file, and writes back, under its own lease, what it applied.
//!
//! Keys under the cluster prefix `P`:
//! - `P/rules`: the rules file's text (TOML), written by `rainbow-bridge ctl put-rules` / `ban`
//!   / `unban`.
//! - `P/proxies/<instance>`: one JSON acknowledgement per live proxy ([`Ack`]), attached to its
//!   lease, so a proxy that dies disappears after the lease's TTL.
//!
//! A proxy that cannot reach etcd keeps serving its last rules and retries; its
//! [`Status`] says so (admin `SHOW CLUSTER`, the `rainbow_cluster_connected` metric).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcd_client::{Client, ConnectOptions, EventType, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};
use shard_rules::RuleSet;
use tracing::{info, warn};

use crate::session::Shared;

fn connect_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5))
}

/// A client of the cluster's etcd: connects within 2 s, each request answered within 5 s.
///
/// With several endpoints, the client is built on the members that answer now: the balanced
/// channel of etcd-client (tonic's) does not steer around a member that refuses connections,
/// it fails the requests that land there. Each member is asked for its status; those that
/// know a leader are used (a member cut off from the quorum answers, but knows none), else
/// those that answered at all, so that etcd's own error is what the caller sees. Every
/// reconnection (the watch, the lease, each `ctl`) probes again.
pub async fn connect(endpoints: &[String]) -> Result<Client, etcd_client::Error> {
    if endpoints.len() < 2 {
        return Client::connect(endpoints, Some(connect_options())).await;
    }
    let mut probes = tokio::task::JoinSet::new();
    for (i, e) in endpoints.iter().enumerate() {
        let e = e.clone();
        probes.spawn(async move {
            let answer = async {
                let mut c = Client::connect([e.as_str()], Some(connect_options())).await?;
                c.status().await
            };
            let r = tokio::time::timeout(Duration::from_secs(2), answer).await;
            (i, r)
        });
    }
    let (mut led, mut answered, mut first_error) = (Vec::new(), Vec::new(), None);
    while let Some(joined) = probes.join_next().await {
        let Ok((i, r)) = joined else { continue };
        match r {
            Ok(Ok(status)) => {
                answered.push(i);
                if status.leader() != 0 {
                    led.push(i);
                }
            }
            Ok(Err(e)) => {
                first_error.get_or_insert((i, e));
            }
            Err(_) => {
                first_error.get_or_insert((
                    i,
                    etcd_client::Error::IoError(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("{} did not answer within 2 s", endpoints[i]),
                    )),
                ));
            }
        }
    }
    let mut usable = if led.is_empty() { answered } else { led };
    if usable.is_empty() {
        return Err(first_error.map_or_else(
            || etcd_client::Error::InvalidArgs("no etcd endpoint answered".into()),
            |(_, e)| e,
        ));
    }
    usable.sort_unstable();
    let chosen: Vec<&str> = usable.iter().map(|&i| endpoints[i].as_str()).collect();
    Client::connect(chosen, Some(connect_options())).await
}

/// The key of the rules text.
pub fn rules_key(prefix: &str) -> String {
    format!("{prefix}/rules")
}

/// The prefix of the proxies' acknowledgements.
pub fn proxies_prefix(prefix: &str) -> String {
    format!("{prefix}/proxies/")
}

/// What a proxy writes back after every change it applied (or refused).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ack {
    pub instance: String,
    pub room: String,
    /// The rules it serves.
    pub rules_version: u64,
    pub traffic_version: u64,
    pub ban_version: u64,
    /// The banned route codes, as in the rules file.
    pub banned: String,
    /// When the serving write-ban became effective here (every write of a now-banned route
    /// code that was running when it was applied has ended), RFC 3339; `None` while waiting.
    pub ban_effective_at: Option<String>,
    /// When the serving rules were applied, RFC 3339.
    pub applied_at: String,
    /// The etcd revision of the rules key it applied (0: the local rules file).
    pub rules_revision: i64,
    /// The last rules text from etcd it refused, and why (the old rules keep serving);
    /// cleared when a later text is applied.
    pub refused: Option<String>,
    /// The etcd revision of that refused text.
    pub refused_revision: Option<i64>,
}

/// Cluster mode holds writes of unit databases while this proxy's registration may have
/// lapsed: a proxy that ctl cannot see must not write, or a cut-over could run without it.
/// Atomics, read on every write without a lock.
#[derive(Debug, Default)]
pub struct WriteFence {
    enabled: std::sync::atomic::AtomicBool,
    /// Writes are allowed until this monotonic ms (see [`now_ms`]); 0: not yet registered.
    until_ms: std::sync::atomic::AtomicU64,
    /// The proxy (re)joined etcd while its writes were held and refused the rules it found:
    /// the rules it serves may miss a cut-over, so writes stay held until a text applies.
    stale: std::sync::atomic::AtomicBool,
}

impl WriteFence {
    /// `true` while writes must be held.
    #[inline]
    pub fn held(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.enabled.load(Ordering::Relaxed)
            && (self.stale.load(Ordering::Relaxed)
                || now_ms() >= self.until_ms.load(Ordering::Relaxed))
    }

    /// Writes are held because the rules served may miss a cut-over (see `stale`).
    pub fn stale(&self) -> bool {
        self.stale.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_stale(&self, stale: bool) {
        self.stale
            .store(stale, std::sync::atomic::Ordering::Relaxed);
    }

    /// Holds writes from now on (until the next registration).
    fn hold_now(&self) {
        self.until_ms.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    fn enable(&self) {
        self.enabled
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The lease was granted or renewed by a request sent at `sent_ms`: writes may go on until
    /// a second before etcd could let it expire.
    fn renewed(&self, sent_ms: u64, ttl_ms: u64) {
        self.until_ms.store(
            sent_ms + ttl_ms.saturating_sub(1000),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// What this proxy knows of etcd.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Cluster mode is on.
    pub enabled: bool,
    pub url: String,
    pub instance: String,
    pub connected: bool,
    /// The last connection or watch error.
    pub last_error: Option<String>,
    /// The revision of the rules key applied (0: none yet).
    pub rules_revision: i64,
    pub refused: Option<String>,
    pub refused_revision: Option<i64>,
    /// When etcd was last reached.
    pub last_contact: Option<SystemTime>,
    /// The lease this proxy's acknowledgement lives under (kept across reconnections while it
    /// lives, so a short outage does not leave an orphan registration behind).
    pub lease: Option<i64>,
    /// The endpoints of the cluster url, for [`deregister`].
    pub endpoints: Vec<String>,
    /// Set by [`deregister`] at shutdown: the proxy does not register again.
    pub deregistered: bool,
}

fn status(shared: &Shared) -> std::sync::MutexGuard<'_, Status> {
    shared.cluster.lock().unwrap_or_else(|e| e.into_inner())
}

/// This proxy's acknowledgement of what it serves now.
pub fn ack(shared: &Shared) -> Ack {
    let rules = shared.rules.load();
    let st = status(shared);
    Ack {
        instance: st.instance.clone(),
        room: shared.config.proxy.room.clone(),
        rules_version: rules.version(),
        traffic_version: rules.traffic_version(),
        ban_version: rules.ban_version(),
        banned: rules.banned_codes().to_string(),
        ban_effective_at: shared
            .ban_effective_at()
            .filter(|(v, _)| *v == rules.ban_version())
            .map(|(_, t)| crate::admin::timestamp(t)),
        applied_at: crate::admin::timestamp(shared.applied().at),
        rules_revision: st.rules_revision,
        refused: st.refused.clone(),
        refused_revision: st.refused_revision,
    }
}

/// Starts watching etcd in the background: connects (retrying), applies the rules key and every
/// change of it, and keeps this proxy's acknowledgement current under a lease.
pub fn spawn(shared: Arc<Shared>, url: String, instance: String, lease_ttl: Duration) {
    {
        let mut st = status(&shared);
        st.enabled = true;
        st.url = url.clone();
        st.instance = instance.clone();
    }
    shared.write_fence.enable();
    // The fence holds new writes; this stops those already running when it engages.
    let watch = Arc::clone(&shared);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if watch.write_fence.held() {
                watch.abort_running_writes().await;
            }
        }
    });
    tokio::spawn(async move {
        let (endpoints, prefix) = match shard_rules::config::parse_cluster_url(&url) {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "cluster mode off: bad cluster url");
                return;
            }
        };
        // Retries come quickly after a connection that worked (a watch error, a member gone),
        // and never slower than a quarter of the lease: the registration must be back before
        // the fence holds writes.
        let start = Duration::from_millis(200);
        let cap = (lease_ttl / 4).clamp(start, Duration::from_secs(5));
        let mut backoff = start;
        loop {
            if status(&shared).deregistered {
                return;
            }
            match session(&shared, &endpoints, &prefix, lease_ttl).await {
                Ok(()) => backoff = start,
                Err(e) => {
                    let first = {
                        let mut st = status(&shared);
                        if st.connected {
                            backoff = start;
                        }
                        let first = st.connected || st.last_error.is_none();
                        st.connected = false;
                        st.last_error = Some(e.clone());
                        first
                    };
                    if first {
                        warn!(url = %url, error = %e, "etcd unreachable: serving the last rules applied, retrying");
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(cap);
        }
    });
}

/// One connection to etcd, until it fails.
async fn session(
    shared: &Arc<Shared>,
    endpoints: &[String],
    prefix: &str,
    lease_ttl: Duration,
) -> Result<(), String> {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: etcd_client::Error| format!("{what}: {err}")
    };
    let mut c = connect(endpoints).await.map_err(e("connect"))?;
    let ttl = lease_ttl.as_secs().max(2) as i64;
    let key = rules_key(prefix);
    // Re-acknowledge when a write-ban this proxy applied becomes effective.
    let (tx, mut effective) = tokio::sync::mpsc::unbounded_channel::<()>();
    let notify = |waiter: Option<tokio::task::JoinHandle<Option<SystemTime>>>| {
        if let Some(waiter) = waiter {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = waiter.await;
                let _ = tx.send(());
            });
        }
    };
    // The rules first, then the lease: applying a text on rejoining may wait for writers
    // (up to `ban_wait_timeout_s`), longer than a lease lives unrenewed.
    let mut read = read_rules(&mut c, &key).await.map_err(e("get rules"))?;
    apply_read(shared, &read, &notify).await;
    {
        let mut st = status(shared);
        st.connected = true;
        st.last_error = None;
        st.last_contact = Some(SystemTime::now());
    }
    // The lease of the previous connection, if it still lives: the acknowledgement under it
    // is this proxy's, and stays so (see the compare below).
    let previous = status(shared).lease;
    let mut granted = now_ms();
    let mut reused = None;
    if let Some(l) = previous {
        let renew = async {
            let (mut k, mut a) = c.lease_keep_alive(l).await.ok()?;
            k.keep_alive().await.ok()?;
            let r = a.message().await.ok()??;
            (r.ttl() > 0).then_some((l, k, a))
        };
        // A member that accepts the request and never answers must not stall the reconnection.
        reused = tokio::time::timeout(Duration::from_secs(2), renew)
            .await
            .ok()
            .flatten();
    }
    let (lease, mut keeper, mut alive) = match reused {
        Some(x) => x,
        None => {
            granted = now_ms();
            let lease = c
                .lease_grant(ttl, None)
                .await
                .map_err(e("lease grant"))?
                .id();
            let (k, a) = c
                .lease_keep_alive(lease)
                .await
                .map_err(e("lease keep-alive"))?;
            (lease, k, a)
        }
    };
    {
        let mut st = status(shared);
        st.lease = Some(lease);
        st.endpoints = endpoints.to_vec();
    }
    let instance = status(shared).instance.clone();
    let ack_key = format!("{}{instance}", proxies_prefix(prefix));
    let mut last_ack: Option<Vec<u8>>;
    // Registering: the acknowledgement is written only if the rules key is still the one just
    // applied, so a ban that ctl wrote meanwhile (and whose acknowledgements it counted
    // without this proxy) is applied before this proxy becomes visible and may write.
    loop {
        if status(shared).deregistered {
            let _ = c.lease_revoke(lease).await;
            return Ok(());
        }
        match put_ack(
            &mut c,
            ack_body(shared),
            &ack_key,
            lease,
            Some((&key, read.mod_revision)),
        )
        .await?
        {
            Put::Done(body) => {
                last_ack = Some(body);
                break;
            }
            Put::RulesChanged => {
                read = read_rules(&mut c, &key).await.map_err(e("get rules"))?;
                apply_read(shared, &read, &notify).await;
            }
            Put::TakenByAnotherLease => {
                let why = format!(
                    "instance `{instance}` is registered in etcd ({ack_key}) under another \
                     lease: another live proxy has this name, or this proxy's previous run \
                     until its lease expires; writes stay held until this proxy can register \
                     (give every proxy its own [cluster] instance)"
                );
                warn!("{why}");
                return Err(why);
            }
        }
    }
    // Registered: writes may go on while the lease is renewed.
    shared.write_fence.renewed(granted, ttl as u64 * 1000);
    if status(shared).deregistered {
        // Shutdown deregistered while this registration was on its way.
        shared.write_fence.hold_now();
        let _ = c.lease_revoke(lease).await;
        return Ok(());
    }
    info!(instance = %instance, lease, revision = read.revision, "registered in etcd");
    let mut events = c
        .watch(
            key.as_str(),
            Some(WatchOptions::new().with_start_revision(read.revision + 1)),
        )
        .await
        .map_err(e("watch rules"))?;
    let mut keep = tokio::time::interval(Duration::from_millis((ttl as u64 * 1000) / 3));
    loop {
        tokio::select! {
            msg = events.message() => {
                let msg = msg.map_err(e("watch"))?.ok_or("the watch ended")?;
                if msg.canceled() {
                    return Err("the watch was canceled (compacted?)".into());
                }
                for ev in msg.events() {
                    if ev.event_type() != EventType::Put {
                        continue;
                    }
                    if let Some(kv) = ev.kv() {
                        // Writes held on stale rules: nothing is in flight, so the next text
                        // is taken as on rejoining.
                        let arrival = if shared.write_fence.stale() {
                            Arrival::Rejoining
                        } else {
                            Arrival::Watched
                        };
                        notify(apply_text(shared, kv.value(), kv.mod_revision(), arrival).await);
                    }
                }
                reack(&mut c, shared, &ack_key, lease, &mut last_ack).await?;
            }
            Some(()) = effective.recv() => reack(&mut c, shared, &ack_key, lease, &mut last_ack).await?,
            _ = keep.tick() => {
                // An etcd that stops answering without closing the connection must not leave
                // this loop waiting: no answer within the TTL is a lost connection.
                let sent = now_ms();
                let renewed = tokio::time::timeout(Duration::from_secs(ttl as u64), async {
                    keeper.keep_alive().await.map_err(e("lease keep-alive"))?;
                    alive.message().await.map_err(e("lease keep-alive"))
                })
                .await
                .map_err(|_| format!("etcd did not answer a keep-alive within {ttl} s"))??;
                if renewed.is_none_or(|r| r.ttl() <= 0) {
                    return Err(format!("lease {lease} expired"));
                }
                shared.write_fence.renewed(sent, ttl as u64 * 1000);
                status(shared).last_contact = Some(SystemTime::now());
                reack(&mut c, shared, &ack_key, lease, &mut last_ack).await?;
            }
        }
    }
}

/// The rules key as read, with the revision of the read.
struct RulesRead {
    /// The text and its modification revision; `None` when there is no rules key.
    text: Option<Vec<u8>>,
    mod_revision: i64,
    /// The store's revision when read: the watch starts after it.
    revision: i64,
}

async fn read_rules(c: &mut Client, key: &str) -> Result<RulesRead, etcd_client::Error> {
    let got = c.get(key, None).await?;
    let kv = got.kvs().first();
    Ok(RulesRead {
        text: kv.map(|kv| kv.value().to_vec()),
        mod_revision: kv.map_or(0, |kv| kv.mod_revision()),
        revision: got.header().map_or(0, |h| h.revision()),
    })
}

/// Applies a text read on (re)connecting.
async fn apply_read(
    shared: &Arc<Shared>,
    read: &RulesRead,
    notify: &impl Fn(Option<tokio::task::JoinHandle<Option<SystemTime>>>),
) {
    let Some(text) = &read.text else { return };
    // Writes held means the registration lapsed or was never made: texts may have been
    // missed, cut-overs included.
    let arrival = if shared.write_fence.held() {
        Arrival::Rejoining
    } else {
        Arrival::Watched
    };
    notify(apply_text(shared, text, read.mod_revision, arrival).await);
    if arrival == Arrival::Rejoining && status(shared).refused_revision == Some(read.mod_revision) {
        // It may have missed cut-overs, and cannot take the rules that tell: its writes stay
        // held, registered or not, until a text applies.
        shared.write_fence.set_stale(true);
        warn!(
            revision = read.mod_revision,
            "rejoining etcd on rules this proxy refused: writes stay held until a rules text \
             applies (the rules served may miss a cut-over)"
        );
    }
}

/// Rewrites the acknowledgement when what it says changed: etcd keeps every revision until it
/// compacts, so an unchanged rewrite would only grow its history.
async fn reack(
    c: &mut Client,
    shared: &Shared,
    ack_key: &str,
    lease: i64,
    last: &mut Option<Vec<u8>>,
) -> Result<(), String> {
    let body = ack_body(shared);
    if last.as_ref() == Some(&body) {
        // Unchanged: only make sure it is still there under this lease (a transaction without
        // writes adds no revision); if someone deleted it, it is written again.
        use etcd_client::{Compare, CompareOp, Txn};
        let there = Txn::new().when([Compare::lease(ack_key, CompareOp::Equal, lease)]);
        let r = c
            .txn(there)
            .await
            .map_err(|err| format!("check acknowledgement: {err}"))?;
        if r.succeeded() {
            return Ok(());
        }
        warn!(key = %ack_key, "this proxy's acknowledgement is gone from etcd: writing it again");
    }
    match put_ack(c, body, ack_key, lease, None).await? {
        Put::Done(body) => {
            *last = Some(body);
            Ok(())
        }
        _ => Err(format!(
            "the acknowledgement {ack_key} is no longer under this proxy's lease"
        )),
    }
}

fn ack_body(shared: &Shared) -> Vec<u8> {
    serde_json::to_vec(&ack(shared)).unwrap_or_default()
}

enum Put {
    /// Written; the body.
    Done(Vec<u8>),
    /// The rules key is no longer at the revision given.
    RulesChanged,
    /// The key is held by another lease (another live proxy with this instance name).
    TakenByAnotherLease,
}

/// Writes this proxy's acknowledgement — only under its own lease, or created if absent: two
/// live proxies configured with one instance name must not overwrite each other, or ctl would
/// count one proxy where two serve. With `rules_at` (the rules key, a modification revision),
/// only while the rules key is still at that revision (0: absent).
async fn put_ack(
    c: &mut Client,
    body: Vec<u8>,
    key: &str,
    lease: i64,
    rules_at: Option<(&str, i64)>,
) -> Result<Put, String> {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let err = |err: etcd_client::Error| format!("put acknowledgement: {err}");
    let rules = rules_at.map(|(rules, at)| Compare::mod_revision(rules, CompareOp::Equal, at));
    let attempt = |owner: Compare| {
        let mut when = vec![owner];
        when.extend(rules.clone());
        Txn::new().when(when).and_then([TxnOp::put(
            key,
            body.clone(),
            Some(PutOptions::new().with_lease(lease)),
        )])
    };
    let ours = attempt(Compare::lease(key, CompareOp::Equal, lease));
    if c.txn(ours).await.map_err(err)?.succeeded() {
        return Ok(Put::Done(body));
    }
    let create = attempt(Compare::create_revision(key, CompareOp::Equal, 0));
    if c.txn(create).await.map_err(err)?.succeeded() {
        return Ok(Put::Done(body));
    }
    if let Some((rules, at)) = rules_at {
        let now = read_rules(c, rules).await.map_err(err)?;
        if now.mod_revision != at {
            return Ok(Put::RulesChanged);
        }
    }
    Ok(Put::TakenByAnotherLease)
}

/// At shutdown, once every session has ended: holds writes and revokes the registration's
/// lease, so ctl stops counting this proxy at once instead of after the TTL (and a restart
/// registers without waiting for it). Bounded by 2 s; a failure only means the lease expires.
pub async fn deregister(shared: &Shared) {
    let (lease, endpoints) = {
        let mut st = status(shared);
        st.deregistered = true;
        (st.lease.take(), st.endpoints.clone())
    };
    let Some(lease) = lease else { return };
    shared.write_fence.hold_now();
    let revoke = async {
        let mut c = connect(&endpoints).await.ok()?;
        c.lease_revoke(lease).await.ok()
    };
    match tokio::time::timeout(Duration::from_secs(2), revoke).await {
        Ok(Some(_)) => info!(lease, "deregistered from etcd"),
        _ => warn!(
            lease,
            "could not deregister from etcd: the registration lasts until its lease expires"
        ),
    }
}

/// Before the proxy is built: reads the rules key once (bounded by `within`), so a proxy that
/// restarts never starts on its older file while etcd has newer rules, and everything fixed at
/// start (this room's id, the snowflake layout, the segment allocator) comes from the rules it
/// will serve. `Ok(None)`: etcd holds no rules; `Err`: etcd could not be read in time.
pub async fn fetch_rules(url: &str, within: Duration) -> Result<Option<(Vec<u8>, i64)>, String> {
    let (endpoints, prefix) = shard_rules::config::parse_cluster_url(url)?;
    let fetch = async {
        let mut c = connect(&endpoints)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let read = read_rules(&mut c, &rules_key(&prefix))
            .await
            .map_err(|e| format!("get rules: {e}"))?;
        Ok(read.text.map(|text| (text, read.mod_revision)))
    };
    tokio::time::timeout(within, fetch)
        .await
        .unwrap_or_else(|_| Err(format!("etcd did not answer within {} s", within.as_secs())))
}

/// After start: what the proxy started on. `applied`: the etcd revision of the rules it was
/// built with; `refused`: the revision and reason of a text from etcd it could not start on
/// (it serves its rules file, and says so until a later text applies).
pub fn started(shared: &Shared, applied: Option<i64>, refused: Option<(i64, String)>) {
    if let Some(r) = applied {
        status(shared).rules_revision = r;
    }
    if let Some((revision, why)) = refused {
        refuse(shared, &format!("etcd revision {revision}"), revision, why);
        // The rules file it serves instead may miss a cut-over.
        shared.write_fence.set_stale(true);
    }
}

/// How a rules text read from etcd meets the rules being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A change the watch saw while this proxy is registered: ctl waits for this proxy at every
    /// step, so the change is checked as a reload of the rules file is.
    Watched,
    /// Read on (re)connecting while writes are held: the registration lapsed (or was never
    /// made), so cut-overs may have run without this proxy and its texts may be missing. Route
    /// codes that moved are drained of writers first — no new write starts while the fence
    /// holds — and the text then applies without the move check.
    Rejoining,
}

/// Applies a rules text from etcd as a reload of the file would be; a text that does not
/// parse or cannot be applied is refused and the old rules keep serving. Returns the
/// write-ban waiter of an applied change.
pub async fn apply_text(
    shared: &Arc<Shared>,
    text: &[u8],
    revision: i64,
    arrival: Arrival,
) -> Option<tokio::task::JoinHandle<Option<SystemTime>>> {
    let _one = shared.reload_lock.lock().await;
    let by = format!("etcd revision {revision}");
    let text = match std::str::from_utf8(text) {
        Ok(t) => t,
        Err(_) => {
            refuse(shared, &by, revision, "the rules text is not UTF-8".into());
            return None;
        }
    };
    if &*shared.applied().text == text {
        shared.write_fence.set_stale(false);
        let mut st = status(shared);
        st.rules_revision = revision;
        st.refused = None;
        st.refused_revision = None;
        return None;
    }
    let new = match RuleSet::parse(text) {
        Ok(r) => r,
        Err(e) => {
            refuse(shared, &by, revision, e.to_string());
            return None;
        }
    };
    // ctl reads the acknowledgements by version: in cluster mode they must say what they
    // version (a rules file reloaded by SIGHUP, outside cluster mode, is not held to that).
    let checked = match arrival {
        Arrival::Watched => crate::reload::check(shared, &new),
        Arrival::Rejoining => crate::reload::check_fixed(shared, &new),
    }
    .and_then(|()| crate::reload::check_versions(&shared.rules.load_full(), &new));
    if let Err(e) = checked {
        refuse(shared, &by, revision, e);
        return None;
    }
    if arrival == Arrival::Rejoining {
        let moved = crate::reload::moved_codes(&shared.rules.load(), &new);
        if !moved.is_empty() {
            let codes =
                shard_rules::route::CodeSet::from_ranges(moved.iter().map(|c| (*c, *c)).collect());
            warn!(
                revision,
                codes = %codes,
                "rejoining etcd: route codes changed rooms while this proxy was not registered; \
                 writes are held until the transactions that wrote them end, then the rules apply"
            );
            let timeout = Duration::from_secs(shared.config.proxy.ban_wait_timeout_s);
            let set: std::collections::BTreeSet<u32> = moved.into_iter().collect();
            if let Some((waited, aborted)) = shared
                .drain_writers(|c| set.contains(&c), timeout, || false)
                .await
            {
                info!(connections = ?waited, aborted, "writers of the moved route codes drained");
            }
        }
    }
    // The rules file follows etcd, so a restart without etcd serves the last rules applied,
    // not an older file.
    if let Err(e) = crate::reload::write_atomically(&shared.rules_path, text) {
        warn!(file = %shared.rules_path.display(), error = %e, "cannot write the rules from etcd back to the rules file");
    }
    let (_, waiter) = crate::reload::apply(shared, new, text.into(), by);
    shared.write_fence.set_stale(false);
    let mut st = status(shared);
    st.rules_revision = revision;
    st.refused = None;
    st.refused_revision = None;
    waiter
}

fn refuse(shared: &Shared, by: &str, revision: i64, why: String) {
    shared
        .stats
        .reloads_refused
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let line = why.replace("\n  - ", " | ").replace('\n', " ");
    tracing::error!(by = %by, "rules from etcd refused, the old rules keep serving: {line}");
    let mut st = status(shared);
    st.refused = Some(format!("revision {revision}: {line}"));
    st.refused_revision = Some(revision);
}

#[cfg(test)]
mod tests {
    #[test]
    fn cluster_urls_name_endpoints_and_a_prefix() {
        use shard_rules::config::parse_cluster_url;
        assert_eq!(
            parse_cluster_url("etcd://127.0.0.1:2379,10.0.0.2:2379/rb/prod/").unwrap(),
            (
                vec![
                    "http://127.0.0.1:2379".to_string(),
                    "http://10.0.0.2:2379".to_string()
                ],
                "/rb/prod".to_string()
            )
        );
        assert!(parse_cluster_url("http://x:1/p")
            .unwrap_err()
            .contains("etcd://"));
        assert!(parse_cluster_url("etcd:///p")
            .unwrap_err()
            .contains("no etcd endpoint"));
        assert!(parse_cluster_url("etcd://x:1")
            .unwrap_err()
            .contains("no key prefix"));
    }
}

/// The snowflake worker id this proxy holds in etcd, and whether it may still use it: only
/// while its lease was renewed less than a TTL (minus a second of margin) ago, so an id that a
/// partition let expire (and another proxy may have taken) is never used twice.
#[derive(Debug)]
pub struct WorkerFence {
    pub worker: u32,
    ttl_ms: u64,
    /// When the last renewal that etcd confirmed was *sent*, in ms of a monotonic clock: etcd
    /// counts the TTL from its receipt, which is later.
    renewed_ms: std::sync::atomic::AtomicU64,
    lost: std::sync::atomic::AtomicBool,
}

/// Milliseconds of a monotonic clock (wall-clock steps cannot make a lease look fresh).
fn now_ms() -> u64 {
    static ZERO: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ZERO.get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1
}

impl WorkerFence {
    /// A fence that never allows (the claim failed at start).
    pub fn lost(worker: u32) -> WorkerFence {
        WorkerFence {
            worker,
            ttl_ms: 0,
            renewed_ms: 0.into(),
            lost: true.into(),
        }
    }

    /// `Err(why)` when snowflake keys may not be generated now.
    pub fn check(&self) -> Result<(), String> {
        use std::sync::atomic::Ordering;
        if self.lost.load(Ordering::Relaxed) {
            return Err(format!(
                "this proxy holds no snowflake worker id lease in etcd (worker {}): keys are \
                 refused until the proxy is restarted with etcd reachable (SHOW CLUSTER, the \
                 proxy's log)",
                self.worker
            ));
        }
        let age = now_ms().saturating_sub(self.renewed_ms.load(Ordering::Relaxed));
        if age + 1000 >= self.ttl_ms {
            return Err(format!(
                "the lease of snowflake worker id {} was last renewed {age} ms ago (TTL {} ms): \
                 etcd is unreachable, and another proxy may hold the id by now",
                self.worker, self.ttl_ms
            ));
        }
        Ok(())
    }
}

fn worker_key(prefix: &str, room: &str, id: u32) -> String {
    format!("{prefix}/workers/{room}/{id}")
}

/// Puts `PREFIX/workers/<room>/<id>` = instance under a new lease if the key is absent:
/// `Some(lease)` when claimed, `None` when another proxy holds it.
async fn claim_id(
    mut c: Client,
    prefix: &str,
    room: &str,
    instance: &str,
    ttl: i64,
    id: u32,
) -> Result<Option<i64>, String> {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let key = worker_key(prefix, room, id);
    let lease = c
        .lease_grant(ttl, None)
        .await
        .map_err(|e| format!("lease grant: {e}"))?
        .id();
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key,
            instance,
            Some(PutOptions::new().with_lease(lease)),
        )]);
    let r = c.txn(txn).await.map_err(|e| format!("claim: {e}"))?;
    if r.succeeded() {
        Ok(Some(lease))
    } else {
        let _ = c.lease_revoke(lease).await;
        Ok(None)
    }
}

/// Claims the lowest free snowflake worker id of `room` (`PREFIX/workers/<room>/<id>`, created
/// only if absent, under a lease) and keeps the lease alive in the background; a lease that
/// expired anyway is claimed again for the same id, or given up (keys refused) if another
/// proxy took the id meanwhile.
pub async fn claim_worker(
    url: &str,
    room: &str,
    instance: &str,
    lease_ttl: Duration,
    max_worker: u32,
) -> Result<Arc<WorkerFence>, String> {
    let (endpoints, prefix) = shard_rules::config::parse_cluster_url(url)?;
    let mut c = connect(&endpoints)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let ttl = lease_ttl.as_secs().max(2) as i64;
    let mut found = None;
    for id in 0..=max_worker {
        if let Some(lease) = claim_id(c.clone(), &prefix, room, instance, ttl, id).await? {
            found = Some((id, lease));
            break;
        }
    }
    let (worker, mut lease) = found.ok_or_else(|| {
        format!("every snowflake worker id of room {room} (0-{max_worker}) is held by a live proxy")
    })?;
    let fence = Arc::new(WorkerFence {
        worker,
        ttl_ms: ttl as u64 * 1000,
        renewed_ms: now_ms().into(),
        lost: false.into(),
    });
    info!(
        worker,
        room, instance, "snowflake worker id leased from etcd"
    );
    let f = Arc::clone(&fence);
    let instance = instance.to_string();
    let room = room.to_string();
    tokio::spawn(async move {
        use std::sync::atomic::Ordering;
        let mut tick = tokio::time::interval(Duration::from_millis(ttl as u64 * 1000 / 3));
        loop {
            tick.tick().await;
            let sent = now_ms();
            let renewed = tokio::time::timeout(Duration::from_secs(ttl as u64), async {
                // etcd-client answers a keep-alive of an expired lease with an error
                // ("lease not found") rather than a TTL of 0: both mean expired.
                let expired = |e: &etcd_client::Error| e.to_string().contains("not found");
                let (mut keeper, mut stream) = match c.lease_keep_alive(lease).await {
                    Ok(x) => x,
                    Err(e) => return if expired(&e) { Some(false) } else { None },
                };
                keeper.keep_alive().await.ok()?;
                match stream.message().await {
                    Ok(Some(r)) => Some(r.ttl() > 0),
                    Ok(None) => None,
                    Err(e) => {
                        if expired(&e) {
                            Some(false)
                        } else {
                            None
                        }
                    }
                }
            })
            .await
            .ok()
            .flatten();
            match renewed {
                Some(true) => f.renewed_ms.store(sent, Ordering::Relaxed),
                Some(false) => {
                    // Expired (a partition longer than the TTL): take the id back if it is free.
                    match claim_id(c.clone(), &prefix, &room, &instance, ttl, f.worker).await {
                        Ok(Some(l)) => {
                            lease = l;
                            f.renewed_ms.store(now_ms(), Ordering::Relaxed);
                            warn!(
                                worker = f.worker,
                                "snowflake worker id lease expired and was claimed again"
                            );
                        }
                        Ok(None) => {
                            f.lost.store(true, Ordering::Relaxed);
                            tracing::error!(worker = f.worker, room = %room, instance = %instance,
                                "snowflake worker id taken by another proxy after this proxy's lease expired: snowflake keys are refused from now on; restart the proxy to lease a new id");
                            return;
                        }
                        Err(_) => {}
                    }
                }
                None => {
                    // etcd unreachable, or the member this client talks to is: the fence runs
                    // out on its own unless a new connection (which probes every endpoint and
                    // keeps those that know a leader) renews it in time.
                    tracing::debug!(
                        worker = f.worker,
                        "snowflake worker id lease not renewed (etcd unreachable); reconnecting"
                    );
                    let again = tokio::time::timeout(Duration::from_secs(5), connect(&endpoints));
                    if let Ok(Ok(fresh)) = again.await {
                        c = fresh;
                    }
                }
            }
        }
    });
    Ok(fence)
}
