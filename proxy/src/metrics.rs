//! What the proxy counts, and every metric name and help string in one place
//! (`docs/operations.md` lists them).
//!
//! The counters live in [`Stats`]: plain atomics the sessions bump (one relaxed add each, no
//! lookup, no lock), read by the admin interface's `SHOW STATS`. When the Prometheus endpoint is
//! on ([`install`]), an upkeep task copies them into the exporter's registry once a second, so a
//! scrape may lag the counters by up to a second. The latency histogram is recorded directly.
//! Labels are bounded: statement kind, outcome, refusal reason, room and data source (from the
//! rules), never a user or SQL text.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::session::Shared;

/// Metric names (prefix `rainbow_`) and their help strings.
pub mod names {
    pub const CONNECTIONS: (&str, &str) = (
        "rainbow_client_connections",
        "Client sessions logged in right now",
    );
    pub const CONNECTIONS_TOTAL: (&str, &str) = (
        "rainbow_client_connections_total",
        "Client connections by outcome: logged_in, refused_limit (error 1040), failed_login",
    );
    pub const STATEMENTS: (&str, &str) = (
        "rainbow_statements_total",
        "Client commands by statement kind and outcome (ok, backend_error, refused, error)",
    );
    pub const REFUSALS: (&str, &str) = (
        "rainbow_refusals_total",
        "Statements refused by the multi-active rules, by reason (error codes 8020-8036)",
    );
    pub const LATENCY: (&str, &str) = (
        "rainbow_statement_duration_seconds",
        "Time from a client command read to its answer sent, by statement kind",
    );
    pub const POOL_CONNECTIONS: (&str, &str) = (
        "rainbow_pool_connections",
        "Backend connections per room and data source, by state (idle, in_use)",
    );
    pub const POOL_MAX: (&str, &str) = (
        "rainbow_pool_max_connections",
        "Most backend connections a pool may open (per client capability profile)",
    );
    pub const POOL_WAITERS: (&str, &str) = (
        "rainbow_pool_waiters",
        "Statements waiting for a free backend connection, per room and data source",
    );
    pub const POOL_ERRORS: (&str, &str) = (
        "rainbow_pool_errors_total",
        "Backend failures per room and data source: connects refused or timed out, checkouts timed out, connections lost",
    );
    pub const RULES_VERSION: (&str, &str) = (
        "rainbow_rules_version",
        "Version of the rules being applied",
    );
    pub const RULES_APPLIED: (&str, &str) = (
        "rainbow_rules_applied_timestamp_seconds",
        "When the rules being applied were swapped in (Unix time)",
    );
    pub const RELOADS: (&str, &str) = (
        "rainbow_rules_reloads_total",
        "Rule reloads and admin rule changes, by outcome (applied, refused)",
    );
    pub const BAN_VERSION: (&str, &str) = (
        "rainbow_write_ban_version",
        "Version of the write-ban being applied",
    );
    pub const BAN_CODES: (&str, &str) = (
        "rainbow_write_ban_route_codes",
        "Number of route codes the write-ban being applied bans",
    );
    pub const BAN_EFFECTIVE: (&str, &str) = (
        "rainbow_write_ban_effective_timestamp_seconds",
        "When this proxy reported the current write-ban effective (Unix time; 0 while pending)",
    );
    pub const BAN_WAIT: (&str, &str) = (
        "rainbow_write_ban_wait_seconds",
        "How long the last write-ban waited for transactions that had written its codes",
    );
    pub const IDS: (&str, &str) = (
        "rainbow_ids_generated_total",
        "Keys generated for INSERTs, by generator (snowflake, segment)",
    );
    pub const FOREIGN_READS: (&str, &str) = (
        "rainbow_foreign_reads_total",
        "Reads of another room's ShardingKey served locally",
    );
    pub const PLAN_HITS: (&str, &str) = (
        "rainbow_plan_cache_hits_total",
        "Statement analyses found in the plan cache",
    );
    pub const PLAN_MISSES: (&str, &str) = (
        "rainbow_plan_cache_misses_total",
        "Statement analyses not found in the plan cache (parsed)",
    );
    pub const PLAN_ENTRIES: (&str, &str) = (
        "rainbow_plan_cache_entries",
        "Statement shapes held by the plan cache",
    );
    pub const CLUSTER_CONNECTED: (&str, &str) = (
        "rainbow_cluster_connected",
        "Cluster mode: 1 while etcd is reachable, 0 while the proxy serves its last rules without it",
    );
    pub const CLUSTER_WRITES_HELD: (&str, &str) = (
        "rainbow_cluster_writes_held",
        "Cluster mode: 1 while writes of unit databases are held (8032) because the registration in etcd may have lapsed",
    );
    pub const CLUSTER_REVISION: (&str, &str) = (
        "rainbow_cluster_rules_revision",
        "Cluster mode: the etcd revision of the rules applied (0: the rules file)",
    );
}

/// What a client command was, for counting (bounded: these labels only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StmtKind {
    Select,
    Insert,
    Update,
    Delete,
    Replace,
    Ddl,
    Transaction,
    Set,
    Show,
    Prepare,
    Other,
}

impl StmtKind {
    pub const ALL: [StmtKind; 11] = [
        StmtKind::Select,
        StmtKind::Insert,
        StmtKind::Update,
        StmtKind::Delete,
        StmtKind::Replace,
        StmtKind::Ddl,
        StmtKind::Transaction,
        StmtKind::Set,
        StmtKind::Show,
        StmtKind::Prepare,
        StmtKind::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            StmtKind::Select => "select",
            StmtKind::Insert => "insert",
            StmtKind::Update => "update",
            StmtKind::Delete => "delete",
            StmtKind::Replace => "replace",
            StmtKind::Ddl => "ddl",
            StmtKind::Transaction => "transaction",
            StmtKind::Set => "set",
            StmtKind::Show => "show",
            StmtKind::Prepare => "prepare",
            StmtKind::Other => "other",
        }
    }

    /// The kind of a statement from its first keyword (upper case).
    pub fn of_keyword(k: &str) -> StmtKind {
        match k {
            "SELECT" | "WITH" | "VALUES" | "TABLE" => StmtKind::Select,
            "INSERT" => StmtKind::Insert,
            "UPDATE" => StmtKind::Update,
            "DELETE" => StmtKind::Delete,
            "REPLACE" => StmtKind::Replace,
            "CREATE" | "ALTER" | "DROP" | "TRUNCATE" | "RENAME" => StmtKind::Ddl,
            "BEGIN" | "START" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" | "XA" => {
                StmtKind::Transaction
            }
            "SET" => StmtKind::Set,
            "SHOW" | "DESC" | "DESCRIBE" | "EXPLAIN" => StmtKind::Show,
            _ => StmtKind::Other,
        }
    }
}

/// How a client command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    /// The backend (or the proxy) answered with OK or rows.
    Ok,
    /// The backend answered with an error (relayed unchanged).
    BackendError,
    /// The multi-active rules refused it (8020–8036).
    Refused,
    /// The proxy could not serve it (unavailable backend, unsupported command…).
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::BackendError,
        Outcome::Refused,
        Outcome::Error,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::BackendError => "backend_error",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }
}

/// At most one log line per second for one kind of event: [`LogLimiter::allow`] says whether
/// to write a line now, and how many were left out since the last one.
#[derive(Debug, Default)]
pub struct LogLimiter {
    /// The second (Unix time) of the last line written.
    last: AtomicU64,
    skipped: AtomicU64,
}

impl LogLimiter {
    /// `Some(left_out)` when a line may be written now, else `None` (and the event is counted
    /// as left out).
    pub fn allow(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let prev = self.last.load(Ordering::Relaxed);
        if prev != now
            && self
                .last
                .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.skipped.swap(0, Ordering::Relaxed))
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Refusal reasons by error code (docs/errors.md).
pub const REFUSAL_REASONS: [(u16, &str); 9] = [
    (8020, "mode_not_served"),
    (8021, "center_database"),
    (8030, "no_sharding_key"),
    (8031, "wrong_room"),
    (8032, "banned"),
    (8033, "read_only"),
    (8034, "bad_hint"),
    (8035, "refused"),
    (8036, "needs_center"),
];

const KINDS: usize = StmtKind::ALL.len();
const OUTCOMES: usize = Outcome::ALL.len();

/// The proxy's counters (see the module docs).
pub struct Stats {
    statements: [[AtomicU64; OUTCOMES]; KINDS],
    /// Sum of command latencies in µs, per kind (SHOW STATS gives the mean).
    latency_us: [AtomicU64; KINDS],
    refusals: [AtomicU64; REFUSAL_REASONS.len()],
    pub logged_in: AtomicU64,
    pub refused_limit: AtomicU64,
    pub failed_login: AtomicU64,
    pub ids_snowflake: AtomicU64,
    pub ids_segment: AtomicU64,
    pub reloads_applied: AtomicU64,
    pub reloads_refused: AtomicU64,
    /// How long the last write-ban waited, in ms.
    pub ban_wait_ms: AtomicU64,
    /// Per refusal reason: the second its last log line was written, and lines left out since.
    refusal_log: [LogLimiter; REFUSAL_REASONS.len()],
    latency: Option<Vec<metrics::Histogram>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new(false)
    }
}

impl Stats {
    /// `export`: the Prometheus recorder is installed, so latencies are recorded to it too.
    pub fn new(export: bool) -> Self {
        let latency = export.then(|| {
            StmtKind::ALL
                .iter()
                .map(|k| metrics::histogram!(names::LATENCY.0, "kind" => k.label()))
                .collect()
        });
        Stats {
            statements: Default::default(),
            latency_us: Default::default(),
            refusals: Default::default(),
            logged_in: AtomicU64::new(0),
            refused_limit: AtomicU64::new(0),
            failed_login: AtomicU64::new(0),
            ids_snowflake: AtomicU64::new(0),
            ids_segment: AtomicU64::new(0),
            reloads_applied: AtomicU64::new(0),
            reloads_refused: AtomicU64::new(0),
            ban_wait_ms: AtomicU64::new(0),
            refusal_log: Default::default(),
            latency,
        }
    }

    /// Counts one finished client command.
    #[inline]
    pub fn statement(&self, kind: StmtKind, outcome: Outcome, took: Duration) {
        self.statements[kind as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
        self.latency_us[kind as usize].fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        if let Some(h) = &self.latency {
            h[kind as usize].record(took.as_secs_f64());
        }
    }

    pub fn statements(&self, kind: StmtKind, outcome: Outcome) -> u64 {
        self.statements[kind as usize][outcome as usize].load(Ordering::Relaxed)
    }

    /// Mean latency of a kind's commands, in µs (0 without any).
    pub fn mean_latency_us(&self, kind: StmtKind) -> u64 {
        let n: u64 = Outcome::ALL.iter().map(|o| self.statements(kind, *o)).sum();
        self.latency_us[kind as usize]
            .load(Ordering::Relaxed)
            .checked_div(n)
            .unwrap_or(0)
    }

    /// Counts a refusal; returns `Some(left_out)` when it should be logged: at most one line per
    /// reason and second, saying how many were left out since the last one.
    pub fn refusal(&self, code: u16) -> Option<u64> {
        let i = REFUSAL_REASONS.iter().position(|(c, _)| *c == code)?;
        self.refusals[i].fetch_add(1, Ordering::Relaxed);
        self.refusal_log[i].allow()
    }

    pub fn refusals(&self, code: u16) -> u64 {
        REFUSAL_REASONS
            .iter()
            .position(|(c, _)| *c == code)
            .map_or(0, |i| self.refusals[i].load(Ordering::Relaxed))
    }
}

/// Installs the Prometheus recorder and its HTTP listener on `listen` (`GET /metrics`), and
/// registers the help strings. Must run inside the runtime, before [`Shared`] is built.
pub fn install(listen: std::net::SocketAddr) -> Result<(), String> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(
            Matcher::Full(names::LATENCY.0.to_string()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ],
        )
        .map_err(|e| e.to_string())?
        .install()
        .map_err(|e| format!("cannot start the metrics endpoint on {listen}: {e}"))?;
    use names::*;
    for (name, help) in [
        CONNECTIONS_TOTAL,
        STATEMENTS,
        REFUSALS,
        POOL_ERRORS,
        RELOADS,
        IDS,
        FOREIGN_READS,
        PLAN_HITS,
        PLAN_MISSES,
    ] {
        metrics::describe_counter!(name, help);
    }
    for (name, help) in [
        CONNECTIONS,
        POOL_CONNECTIONS,
        POOL_MAX,
        POOL_WAITERS,
        RULES_VERSION,
        RULES_APPLIED,
        BAN_VERSION,
        BAN_CODES,
        BAN_EFFECTIVE,
        BAN_WAIT,
        PLAN_ENTRIES,
        CLUSTER_CONNECTED,
        CLUSTER_WRITES_HELD,
        CLUSTER_REVISION,
    ] {
        metrics::describe_gauge!(name, help);
    }
    metrics::describe_histogram!(LATENCY.0, metrics::Unit::Seconds, LATENCY.1);
    Ok(())
}

/// Copies the counters and gauges into the exporter every second (see the module docs).
pub fn spawn_upkeep(shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            publish(&shared);
        }
    });
}

fn unix_secs(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One copy of every value into the exporter.
pub fn publish(shared: &Shared) {
    use metrics::{counter, gauge};
    use names::*;
    let s = &shared.stats;
    for k in StmtKind::ALL {
        for o in Outcome::ALL {
            counter!(STATEMENTS.0, "kind" => k.label(), "outcome" => o.label())
                .absolute(s.statements(k, o));
        }
    }
    for (code, reason) in REFUSAL_REASONS {
        counter!(REFUSALS.0, "reason" => reason).absolute(s.refusals(code));
    }
    for (outcome, v) in [
        ("logged_in", &s.logged_in),
        ("refused_limit", &s.refused_limit),
        ("failed_login", &s.failed_login),
    ] {
        counter!(CONNECTIONS_TOTAL.0, "outcome" => outcome).absolute(v.load(Ordering::Relaxed));
    }
    gauge!(CONNECTIONS.0).set(shared.session_count() as f64);
    for (kind, v) in [("snowflake", &s.ids_snowflake), ("segment", &s.ids_segment)] {
        counter!(IDS.0, "kind" => kind).absolute(v.load(Ordering::Relaxed));
    }
    for (outcome, v) in [
        ("applied", &s.reloads_applied),
        ("refused", &s.reloads_refused),
    ] {
        counter!(RELOADS.0, "outcome" => outcome).absolute(v.load(Ordering::Relaxed));
    }
    counter!(FOREIGN_READS.0).absolute(shared.foreign_reads.load(Ordering::Relaxed));
    let plans = shared.plans.stats();
    counter!(PLAN_HITS.0).absolute(plans.hits);
    counter!(PLAN_MISSES.0).absolute(plans.misses);
    gauge!(PLAN_ENTRIES.0).set(plans.entries as f64);

    let rules = shared.rules.load();
    let applied = shared.applied();
    gauge!(RULES_VERSION.0).set(rules.version() as f64);
    gauge!(RULES_APPLIED.0).set(unix_secs(applied.at));
    gauge!(BAN_VERSION.0).set(rules.ban_version() as f64);
    gauge!(BAN_CODES.0).set(rules.banned_codes().len() as f64);
    let effective = shared
        .ban_effective_at()
        .filter(|(v, _)| *v == rules.ban_version())
        .map_or(0.0, |(_, t)| unix_secs(t));
    gauge!(BAN_EFFECTIVE.0).set(effective);
    gauge!(BAN_WAIT.0).set(s.ban_wait_ms.load(Ordering::Relaxed) as f64 / 1000.0);
    {
        let st = shared.cluster.lock().unwrap_or_else(|e| e.into_inner());
        if st.enabled {
            gauge!(CLUSTER_CONNECTED.0).set(if st.connected { 1.0 } else { 0.0 });
            gauge!(CLUSTER_REVISION.0).set(st.rules_revision as f64);
            let held = shared.write_fence.held();
            gauge!(CLUSTER_WRITES_HELD.0).set(if held { 1.0 } else { 0.0 });
        }
    }

    // The exporter cannot drop a series: a data source a reload removed or renamed (its pool
    // drained) is published once more with zero connections, max and waiters, so its series do
    // not keep the last values of a pool that is gone.
    static PUBLISHED: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    let stats = shared.pools.stats();
    let now: Vec<(String, String)> = stats
        .iter()
        .map(|p| (p.room.clone(), p.data_source.clone()))
        .collect();
    let gone: Vec<(String, String)> = {
        let mut published = PUBLISHED.lock().unwrap_or_else(|e| e.into_inner());
        let gone = published
            .iter()
            .filter(|k| !now.contains(k))
            .cloned()
            .collect();
        *published = now;
        gone
    };
    let pool_gauges = |room: &str, ds: &str, idle: u32, in_use: u32, max: u32, waiters: u32| {
        let labels = [("room", room.to_string()), ("data_source", ds.to_string())];
        for (state, v) in [("idle", idle), ("in_use", in_use)] {
            let with_state = [
                labels[0].clone(),
                labels[1].clone(),
                ("state", state.to_string()),
            ];
            gauge!(POOL_CONNECTIONS.0, &with_state[..]).set(v as f64);
        }
        gauge!(POOL_MAX.0, &labels[..]).set(max as f64);
        gauge!(POOL_WAITERS.0, &labels[..]).set(waiters as f64);
    };
    for (room, ds) in gone {
        pool_gauges(&room, &ds, 0, 0, 0, 0);
    }
    for p in stats {
        pool_gauges(&p.room, &p.data_source, p.idle, p.in_use, p.max, p.waiters);
        let labels = [("room", p.room), ("data_source", p.data_source)];
        counter!(POOL_ERRORS.0, &labels[..]).absolute(p.errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_kinds_come_from_the_first_keyword() {
        assert_eq!(StmtKind::of_keyword("SELECT"), StmtKind::Select);
        assert_eq!(StmtKind::of_keyword("TRUNCATE"), StmtKind::Ddl);
        assert_eq!(StmtKind::of_keyword("XA"), StmtKind::Transaction);
        assert_eq!(StmtKind::of_keyword("CALL"), StmtKind::Other);
    }

    #[test]
    fn refusal_logs_are_limited_to_one_line_per_reason_and_second() {
        let s = Stats::default();
        assert_eq!(s.refusal(8031), Some(0));
        // Same second (a test would have to straddle a second boundary to see Some here).
        let logged = (0..100).filter(|_| s.refusal(8031).is_some()).count();
        assert!(logged <= 1, "{logged} lines in about a second");
        assert_eq!(s.refusals(8031), 101);
        // Another reason has its own limit.
        assert_eq!(s.refusal(8032), Some(0));
        assert_eq!(s.refusal(1234), None);
        assert_eq!(s.refusals(1234), 0);
    }

    #[test]
    fn mean_latency_is_per_kind() {
        let s = Stats::default();
        s.statement(StmtKind::Select, Outcome::Ok, Duration::from_micros(100));
        s.statement(
            StmtKind::Select,
            Outcome::Refused,
            Duration::from_micros(300),
        );
        assert_eq!(s.mean_latency_us(StmtKind::Select), 200);
        assert_eq!(s.mean_latency_us(StmtKind::Insert), 0);
        assert_eq!(s.statements(StmtKind::Select, Outcome::Refused), 1);
    }
}
