//! Sharded execution (issue 9): a statement whose decision reaches another data source than
//! the session's, renamed physical tables, or several data nodes.
//!
//! - One node: the client's text with the table names replaced by token spans, relayed like
//!   any statement on that data source's connection.
//! - Several nodes, a SELECT: the node queries of [`shard_rules::scatter`] run on one
//!   connection per data source (pipelined; the data sources in parallel) and their results
//!   are merged by [`crate::merge`]: streamed for plain unions and aggregates, a k-way merge of
//!   sorted node results for ORDER BY.
//! - Several nodes, a write or DDL: every node query runs, in one transaction per data source
//!   when the session has none open (so a failure on one node changes none of that data
//!   source); the answer sums the affected rows.
//!
//! Connections: the session's own data source keeps using `held`; the others are `side`
//! connections, kept while a transaction is open (one per data source, started with
//! `START TRANSACTION` when they join it) and committed or rolled back with it.

use std::collections::VecDeque;

use super::*;
use crate::merge::{self, ColumnInfo, Row};
use shard_rules::decide::Decision;
use shard_rules::lex::Quoting;
use shard_rules::scatter::SelectPlan;

/// A side connection: to a data source other than the session's, for sharded statements.
pub(super) struct Side {
    pub conn: Conn,
    pub ds: String,
    pub target: crate::backend::SharedTarget,
    /// Joined to the session's transaction (START TRANSACTION, an XA branch, or autocommit
    /// off): dropped without its COMMIT or ROLLBACK, it is closed (rolled back), never pooled.
    pub joined: bool,
    /// The session's own (`held`) connection, lent for one statement.
    pub was_held: bool,
    /// Lists the connection in the session's handle while the side holds it, so that the
    /// cluster fence can stop a write running on it.
    pub _mark: BackendMark,
}

/// While alive, the session handle lists a side connection (data source, backend thread).
pub(super) struct BackendMark {
    handle: Arc<SessionHandle>,
    entry: (String, u32),
}

impl BackendMark {
    pub(super) fn new(handle: &Arc<SessionHandle>, ds: &str, thread: u32) -> BackendMark {
        let entry = (ds.to_string(), thread);
        lock(&handle.sides).push(entry.clone());
        BackendMark {
            handle: Arc::clone(handle),
            entry,
        }
    }
}

impl Drop for BackendMark {
    fn drop(&mut self) {
        let mut sides = lock(&self.handle.sides);
        if let Some(i) = sides.iter().position(|e| *e == self.entry) {
            sides.swap_remove(i);
        }
    }
}

/// One node query: the physical data source and the SQL text it runs.
struct NodeQuery {
    ds: String,
    sql: Vec<u8>,
}

/// A node result being read: its column definitions and its rows (buffered, or still on the
/// connection).
struct Source {
    conn: usize,
    buffered: Option<VecDeque<Row>>,
    done: bool,
    /// Warnings and status flags the node's result ended with.
    warnings: u16,
    status: u16,
}

/// How node results are merged: the memory bound, the framing, the client's protocol.
#[derive(Clone, Copy)]
struct MergeOpts {
    limit: usize,
    deprecate_eof: bool,
    binary: bool,
}

/// What the statement's first word says about transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TxWord {
    /// BEGIN / START TRANSACTION: commits an open transaction first.
    Begin,
    Commit,
    /// Not ROLLBACK TO SAVEPOINT, which keeps the transaction open.
    Rollback,
    Other,
}

pub(super) fn tx_word(sql: &[u8]) -> TxWord {
    let stripped = sql_hint::parse(sql).map(|p| p.sql).unwrap_or_default();
    let kw = crate::enforce::first_keyword(&stripped);
    match &*kw {
        "BEGIN" | "START" => TxWord::Begin,
        "COMMIT" => TxWord::Commit,
        // `ROLLBACK TO SAVEPOINT` keeps the transaction open.
        "ROLLBACK" if !contains_word(&stripped, b"TO") => TxWord::Rollback,
        _ => TxWord::Other,
    }
}

/// The text reads or sets a user variable (`@v`, not `@@system`).
pub(super) fn uses_user_variables(sql: &[u8], q: Quoting) -> bool {
    shard_rules::lex::tokens(sql, q).is_ok_and(|toks| {
        toks.iter().any(|t| {
            t.kind == shard_rules::lex::TokenKind::Variable
                && !sql[t.span.clone()].starts_with(b"@@")
        })
    })
}

/// A statement that commits the open transaction before it runs, as MariaDB does: BEGIN /
/// START TRANSACTION, DDL, LOCK / UNLOCK TABLES, GRANT / REVOKE, `SET autocommit = 1`.
/// `autocommit_off`: the session runs with autocommit=0 (only then does `SET autocommit=1`
/// commit).
pub(super) fn commits_implicitly(sql: &[u8], autocommit_off: bool) -> bool {
    let stripped = sql_hint::parse(sql).map(|p| p.sql).unwrap_or_default();
    let kw = crate::enforce::first_keyword(&stripped);
    match &*kw {
        "BEGIN" | "START" | "CREATE" | "ALTER" | "DROP" | "TRUNCATE" | "RENAME" | "LOCK"
        | "GRANT" | "REVOKE" | "ANALYZE" | "OPTIMIZE" | "REPAIR" | "CHECK" | "FLUSH" | "CACHE" => {
            true
        }
        "SET" if autocommit_off => {
            let t = String::from_utf8_lossy(&stripped).to_ascii_lowercase();
            let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
            [
                "autocommit=1",
                "autocommit=on",
                "autocommit=true",
                "autocommit=default",
            ]
            .iter()
            .any(|k| compact.contains(k))
        }
        _ => false,
    }
}

fn contains_word(sql: &[u8], word: &[u8]) -> bool {
    sql.split(|b| !b.is_ascii_alphanumeric() && *b != b'_')
        .any(|w| w.eq_ignore_ascii_case(word))
}

impl Session {
    pub(super) fn quoting(&self) -> Quoting {
        let s = self.syntax();
        Quoting {
            backslash_escapes: s.backslash_escapes,
            ansi_quotes: s.ansi_quotes,
        }
    }

    /// The physical data source of a logical one of the session's database, in this room.
    pub(super) fn physical_ds(&self, logical: &str) -> Option<String> {
        let rules = self.shared.rules.load();
        let db = rules.database(self.rules_database()?.as_ref())?;
        db.data_sources
            .iter()
            .find(|l| &*l.name == logical)?
            .physical
            .get(self.shared.room as usize)?
            .clone()
    }

    /// Where a prepared statement on sharded tables is prepared: the physical data source of
    /// its first node, and the renames to that node's tables.
    pub(super) fn first_node_of(
        &self,
        a: &crate::enforce::Analysed,
    ) -> Option<(String, Vec<shard_rules::lex::Rename>)> {
        let database = self.rules_database()?;
        let rules = self.shared.rules.load_full();
        let ctx = self.rules_ctx(&rules, &database);
        let (logical, renames) = crate::enforce::first_node(&ctx, a)?;
        Some((self.physical_ds(&logical)?, renames))
    }

    /// Whether the decision needs more than the relay to the session's own data source.
    pub(super) fn needs_sharding(&self, d: &Decision) -> bool {
        match d.units.as_slice() {
            [] => false,
            [u] if !u.renames.is_empty() => true,
            // The common case, without allocating: the database's default data source, which
            // is the session's.
            [u] => {
                let rules = self.shared.rules.load();
                let default = self.rules_database().and_then(|db| {
                    rules
                        .database(&db)
                        .map(|d| d.data_source_name(d.default_data_source) == &*u.data_source)
                });
                default != Some(true) && self.physical_ds(&u.data_source) != self.ds
            }
            _ => true,
        }
    }

    /// Runs a text statement the decision routes to other or several data nodes. `p` is the
    /// client's packet (generated keys already added).
    pub(super) async fn sharded_query(
        &mut self,
        p: &Packet,
        st: &Statement,
        d: &Decision,
    ) -> Result<()> {
        self.sharded_query_as(p, st, d, false).await
    }

    /// [`Session::sharded_query`], answering rows in the binary protocol when `binary` (a
    /// prepared statement's execute, run as text with its values bound in).
    pub(super) async fn sharded_query_as(
        &mut self,
        p: &Packet,
        st: &Statement,
        d: &Decision,
        binary: bool,
    ) -> Result<()> {
        let sql = &p.payload[1..];
        let q = self.quoting();
        let stripped = sql_hint::parse(sql)
            .map(|h| h.sql.into_owned())
            .unwrap_or_else(|_| sql.to_vec());
        let planned = shard_rules::units::node_queries(d, sql, &stripped, q)
            .map_err(|e| ProxyError::NotSupportedAcrossNodes(e.0))?;
        let mut queries = Vec::with_capacity(planned.queries.len());
        for (logical, text) in planned.queries {
            let ds = self.physical_ds(&logical).ok_or_else(|| {
                ProxyError::NotSupportedAcrossNodes(format!("data source `{logical}` in this room"))
            })?;
            debug!(connection_id = self.connection_id, data_source = %ds, sql = %String::from_utf8_lossy(&text), "node query");
            queries.push(NodeQuery { ds, sql: text });
        }
        // User variables and LAST_INSERT_ID() live on the session's own connection only.
        if (queries.len() > 1 || queries.iter().any(|q| Some(&q.ds) != self.ds.as_ref()))
            && (st.reads_last_insert_id || uses_user_variables(&stripped, q))
        {
            return Err(ProxyError::NotSupportedAcrossNodes(
                "user variables or LAST_INSERT_ID() in a statement on several data nodes or another data source than the session's; bind the value instead".into(),
            )
            .into());
        }
        let read = d.kind == shard_rules::analyze::Kind::Read;
        if let [one] = queries.as_slice() {
            if !(binary && read) {
                return self.single_node(p, st, one).await;
            }
            // One node, binary rows: the text result converted, nothing merged.
            let plan = SelectPlan {
                node_sql: String::new(),
                hidden: 0,
                items: None,
                aggregate: None,
                order: Vec::new(),
                limit: None,
                offset: 0,
            };
            return self
                .scatter_read(p.last_seq.wrapping_add(1), &plan, queries, binary)
                .await;
        }
        match (d.kind, planned.select) {
            (shard_rules::analyze::Kind::Read, Some(plan)) => {
                self.scatter_read(p.last_seq.wrapping_add(1), &plan, queries, binary)
                    .await
            }
            _ => {
                // A broadcast write changes the same rows in every copy: its count is one copy's.
                let broadcast = d
                    .tables
                    .iter()
                    .all(|t| t.layout != shard_rules::decide::Layout::Sharded);
                self.scatter_write(p.last_seq.wrapping_add(1), st, queries, broadcast)
                    .await
            }
        }
    }

    /// One node: the session's own data source through `held`, another through a side
    /// connection brought to the session's state.
    async fn single_node(&mut self, p: &Packet, st: &Statement, nq: &NodeQuery) -> Result<()> {
        let mut payload = Vec::with_capacity(1 + nq.sql.len());
        payload.push(p.payload[0]);
        payload.extend_from_slice(&nq.sql);
        if payload.len() >= crate::packet::MAX_PAYLOAD && p.seq != p.last_seq {
            return Err(ProxyError::Unsupported(
                "a 16 MiB or larger statement on a sharded table".into(),
            )
            .into());
        }
        let packet = Packet {
            seq: p.seq,
            last_seq: p.last_seq,
            payload: Bytes::from(payload),
        };
        if Some(&nq.ds) == self.ds.as_ref() {
            self.acquire(st).await?;
            let o = self.relay(&packet, ResponseKind::ResultSets).await?;
            return self.finish(&o, st).await;
        }
        let mut side = self.side_conn(&nq.ds).await?;
        let mut framed = Vec::with_capacity(packet.payload.len() + 4);
        frame_into(&mut framed, packet.seq, &packet.payload);
        let r = side
            .conn
            .relay(&framed, ResponseKind::ResultSets, &mut self.client, 0)
            .await;
        let o = match r {
            Ok(o) => o,
            Err(crate::backend::RelayError::Client(e)) => return Err(SessionError::ClientIo(e)),
            Err(crate::backend::RelayError::Backend { sent, source }) => {
                return Err(self.side_lost(&nq.ds, source.to_string(), sent));
            }
        };
        self.finish_side(side, &o, st);
        Ok(())
    }

    /// The id of `sql` prepared on a side connection, preparing it there first; `None` when
    /// the server refused it (its error is sent to the client).
    pub(super) async fn side_statement(
        &mut self,
        s: &mut Side,
        sql: &Bytes,
        seq: u8,
    ) -> Result<Option<u32>> {
        match s.conn.statement_id(sql).await {
            Ok(Ok(id)) => Ok(Some(id)),
            Ok(Err(err)) => {
                self.client
                    .send(seq, &err)
                    .await
                    .map_err(SessionError::ClientIo)?;
                Ok(None)
            }
            Err(e) => {
                let ds = s.ds.clone();
                Err(self.side_lost(&ds, e.to_string(), false))
            }
        }
    }

    /// After a statement on a side connection: the session's state, and the connection kept
    /// while a transaction is open.
    pub(super) fn finish_side(&mut self, side: Side, o: &crate::response::Outcome, st: &Statement) {
        self.backend_failed |= o.error.is_some();
        if o.error.is_none() {
            self.status = o.status & !STATUS_MORE_RESULTS;
        }
        if o.last_insert_id != 0 {
            self.last_insert_id = o.last_insert_id;
        }
        let _ = st;
        self.keep_side(side, o.status & STATUS_IN_TRANS != 0 || o.error.is_some());
    }

    pub(super) fn keep_side(&mut self, side: Side, in_trans: bool) {
        if in_trans || self.must_keep() {
            self.side.insert(side.ds.clone(), side);
        }
        if !self.must_keep() && !in_trans {
            self.clear_sides();
        }
    }

    /// A connection to data source `ds` (not the session's own) at the session's schema,
    /// settings and transaction.
    pub(super) async fn side_conn(&mut self, ds: &str) -> Result<Side> {
        if self.handle.killed.load(Ordering::Acquire) {
            return Err(SessionError::Fatal(ProxyError::ConnectionKilled));
        }
        if let Some(s) = self.side.remove(ds) {
            return Ok(s);
        }
        let (conn, target) = self.shared.pools.get(ds, self.caps).await?;
        let in_trans = self.in_transaction();
        let mark = BackendMark::new(&self.handle, ds, conn.thread_id);
        let mut side = Side {
            conn,
            ds: ds.to_string(),
            target,
            joined: in_trans || self.status & STATUS_AUTOCOMMIT == 0,
            was_held: false,
            _mark: mark,
        };
        let synced: Result<Result<(), Bytes>, crate::backend::BackendError> = async {
            if side.conn.schema != side.target.schema {
                if let Err(p) = side.conn.init_db(&side.target.schema).await? {
                    return Ok(Err(p));
                }
            }
            if let Err(p) = side.conn.set_vars(&self.vars).await? {
                return Ok(Err(p));
            }
            if self.xa.is_some() {
                return super::xa_tx::join(&mut self.xa, &mut side.conn, ds).await;
            }
            if in_trans {
                if let Err(p) = side.conn.query("START TRANSACTION").await? {
                    return Ok(Err(p));
                }
            }
            Ok(Ok(()))
        }
        .await;
        match synced {
            Ok(Ok(())) => Ok(side),
            Ok(Err(packet)) => Err(SessionError::Server(packet)),
            Err(e) => Err(self.side_lost(ds, e.to_string(), false)),
        }
    }

    /// Gives the side connections up: back to the pool, unless one is still joined to a
    /// transaction that ended elsewhere (the server rolled the session's part back, say): that
    /// one is closed, which rolls its part back too.
    pub(super) fn clear_sides(&mut self) {
        for (ds, mut s) in std::mem::take(&mut self.side) {
            if s.joined {
                s.conn.broken = true;
                warn!(connection_id = self.connection_id, data_source = %ds, "the transaction ended on the session's own connection; its part on this data source is rolled back");
            }
        }
    }

    /// A side connection failed: in a transaction, every node's part of it is rolled back.
    pub(super) fn side_lost(&mut self, ds: &str, why: String, sent: bool) -> SessionError {
        self.shared.pools.count_error(ds);
        warn!(connection_id = self.connection_id, data_source = %ds, error = %why, "backend connection lost");
        let in_transaction = self.in_transaction() || !self.side.is_empty();
        let e = ProxyError::BackendLost {
            ds: ds.to_string(),
            room: self.shared.config.proxy.room.clone(),
            in_transaction,
        };
        if in_transaction {
            // The other nodes' parts cannot commit alone: close them all (rolled back).
            for (_, mut s) in std::mem::take(&mut self.side) {
                s.conn.broken = true;
            }
            if let Some(h) = self.held.as_mut() {
                h.conn.broken = true;
            }
            self.held = None;
            self.status &= !STATUS_IN_TRANS;
            return SessionError::Fatal(e);
        }
        if sent {
            return SessionError::Fatal(e);
        }
        SessionError::Client(e)
    }

    /// COMMIT (or BEGIN, which commits first) or ROLLBACK with side connections open: the side
    /// parts first, then the session's own connection (relayed). A side that fails to commit
    /// rolls back the rest.
    pub(super) async fn end_sides(&mut self, word: TxWord) -> Result<()> {
        if self.side.is_empty() {
            return Ok(());
        }
        let sides = std::mem::take(&mut self.side);
        let mut failure: Option<SessionError> = None;
        let mut committed: Vec<String> = Vec::new();
        for (ds, mut s) in sides {
            let sql = if word != TxWord::Rollback && failure.is_none() {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            match s.conn.query(sql).await {
                Ok(Ok(_)) => {
                    s.joined = false;
                    if sql == "COMMIT" {
                        committed.push(ds);
                    }
                }
                Ok(Err(packet)) => {
                    // Its transaction state is unknown now: never pooled.
                    s.conn.broken = true;
                    if failure.is_none() {
                        failure = Some(SessionError::Server(packet));
                    }
                }
                Err(e) => {
                    s.conn.broken = true;
                    if failure.is_none() {
                        failure = Some(SessionError::Client(ProxyError::BackendLost {
                            ds: ds.clone(),
                            room: self.shared.config.proxy.room.clone(),
                            in_transaction: true,
                        }));
                        warn!(connection_id = self.connection_id, data_source = %ds, error = %e, "backend lost at commit");
                    }
                }
            }
        }
        if let Some(f) = failure {
            if !committed.is_empty() {
                warn!(
                    connection_id = self.connection_id,
                    committed = ?committed,
                    "COMMIT across data sources failed part-way: the listed data sources committed, the others rolled back (use transaction mode xa for atomic commits)"
                );
            }
            // The session's own part is rolled back too.
            if let Some(h) = self.held.as_mut() {
                let _ = h.conn.query("ROLLBACK").await;
            }
            self.status &= !STATUS_IN_TRANS;
            self.release_unless_kept();
            return Err(f);
        }
        Ok(())
    }

    /// Connections for the node queries: `held` for the session's own data source, side
    /// connections for the others. Returns them by data source, in first-use order.
    async fn node_conns(&mut self, st: &Statement, queries: &[NodeQuery]) -> Result<Vec<Side>> {
        self.node_conns_as(st, queries, false).await.map(|(c, _)| c)
    }

    /// Connections for the node queries, and for each query the index of its connection.
    /// `per_query`: one connection per query (every node works in parallel), for reads outside
    /// a transaction and without pinned state; otherwise one per data source (a transaction
    /// and the session's state live on one connection per data source).
    async fn node_conns_as(
        &mut self,
        st: &Statement,
        queries: &[NodeQuery],
        per_query: bool,
    ) -> Result<(Vec<Side>, Vec<usize>)> {
        let mut conns: Vec<Side> = Vec::new();
        let mut assign = Vec::with_capacity(queries.len());
        for q in queries {
            if let Some(i) = conns.iter().position(|c| c.ds == q.ds) {
                if !per_query || !self.shared.pools.spare(&q.ds, self.caps) {
                    assign.push(i);
                    continue;
                }
            }
            let own = Some(&q.ds) == self.ds.as_ref() && !conns.iter().any(|c| c.was_held);
            let next = if own {
                match self.acquire(st).await {
                    Ok(()) => match self.held.take() {
                        // The held connection goes back into `held` after the statement.
                        Some(h) => {
                            let (conn, ds, target) = h.into_parts();
                            let mark = BackendMark::new(&self.handle, &ds, conn.thread_id);
                            Ok(Side {
                                conn,
                                ds,
                                target,
                                joined: false,
                                was_held: true,
                                _mark: mark,
                            })
                        }
                        None => Err(ProxyError::NoDatabase.into()),
                    },
                    Err(e) => Err(e),
                }
            } else {
                self.side_conn(&q.ds).await
            };
            match next {
                Ok(c) => {
                    conns.push(c);
                    assign.push(conns.len() - 1);
                }
                Err(e) => {
                    self.return_conns(conns, false);
                    return Err(e);
                }
            }
        }
        Ok((conns, assign))
    }

    fn return_conns(&mut self, conns: Vec<Side>, in_trans: bool) {
        for c in conns {
            if c.was_held {
                self.held = Some(Held::new(c.conn, c.ds, c.target, &self.handle));
            } else {
                self.keep_side(c, in_trans);
            }
        }
        if !in_trans && !self.must_keep() {
            self.clear_sides();
            self.release_unless_kept();
        }
    }

    /// Writes and DDL on several nodes: every node query in turn (data sources without an
    /// open transaction run theirs in one), the affected rows summed.
    async fn scatter_write(
        &mut self,
        seq: u8,
        st: &Statement,
        queries: Vec<NodeQuery>,
        broadcast: bool,
    ) -> Result<()> {
        let mut conns = self.node_conns(st, &queries).await?;
        // Outside a transaction and with autocommit on, the statement is its own transaction.
        let own_trans = !self.in_transaction() && self.status & STATUS_AUTOCOMMIT != 0;
        let is_ddl = {
            let kw = crate::enforce::first_keyword(&queries[0].sql);
            matches!(&*kw, "CREATE" | "ALTER" | "DROP" | "TRUNCATE" | "RENAME")
        };
        // DDL commits implicitly: no transaction around it.
        let wrap = own_trans && !is_ddl;
        // In an XA database, a write on several data sources is one XA transaction.
        let xa = wrap && conns.len() > 1 && self.xa_mode();
        if xa {
            self.xa = Some(super::xa_tx::XaTx {
                gtrid: self.shared.xa.gtrid(),
                branches: Default::default(),
            });
        }
        let mut affected: u64 = 0;
        let mut warnings: u64 = 0;
        let mut last_id: u64 = 0;
        let mut error: Option<SessionError> = None;
        let mut status = 0u16;
        // Inside the client's (local) transaction a statement that fails on one node must not
        // stay half done on the others: each connection marks where it began.
        let savepoint = !own_trans && !is_ddl && self.xa.is_none();
        let mut ran: Vec<usize> = Vec::new();
        'conns: for (ci, c) in conns.iter_mut().enumerate() {
            if savepoint {
                if let Ok(Ok(_)) = c.conn.query("SAVEPOINT `__rb_statement`").await {
                    ran.push(ci);
                }
            }
            if wrap {
                let started = if xa {
                    super::xa_tx::join(&mut self.xa, &mut c.conn, &c.ds)
                        .await
                        .map(|r| r.map(|_| ()))
                } else {
                    c.conn
                        .query("START TRANSACTION")
                        .await
                        .map(|r| r.map(|_| ()))
                };
                match started {
                    Ok(Ok(_)) => {}
                    Ok(Err(p)) => {
                        error = Some(SessionError::Server(p));
                        break;
                    }
                    Err(e) => {
                        c.conn.broken = true;
                        error = Some(SessionError::Client(ProxyError::BackendLost {
                            ds: c.ds.clone(),
                            room: self.shared.config.proxy.room.clone(),
                            in_transaction: false,
                        }));
                        warn!(connection_id = self.connection_id, data_source = %c.ds, error = %e, "backend lost");
                        break;
                    }
                }
            }
            for q in queries.iter().filter(|q| q.ds == c.ds) {
                let mut payload = Vec::with_capacity(q.sql.len() + 1);
                payload.push(0x03);
                payload.extend_from_slice(&q.sql);
                match c.conn.exchange(&payload, ResponseKind::ResultSets).await {
                    Ok(r) => match r.error_packet() {
                        Some(p) => {
                            error = Some(SessionError::Server(p.clone()));
                            break 'conns;
                        }
                        None => {
                            if !broadcast || ci == 0 {
                                affected += r.outcome.affected_rows;
                            }
                            warnings += u64::from(r.outcome.warnings);
                            status = r.outcome.status;
                            if r.outcome.last_insert_id != 0 && last_id == 0 {
                                last_id = r.outcome.last_insert_id;
                            }
                        }
                    },
                    Err(e) => {
                        c.conn.broken = true;
                        error = Some(SessionError::Client(ProxyError::BackendLost {
                            ds: c.ds.clone(),
                            room: self.shared.config.proxy.room.clone(),
                            in_transaction: !own_trans,
                        }));
                        warn!(connection_id = self.connection_id, data_source = %c.ds, error = %e, "backend lost");
                        break 'conns;
                    }
                }
            }
        }
        let mut whole_rollback = false;
        if savepoint && error.is_some() {
            // A deadlock or lock-wait timeout already rolled back the failing node's whole
            // transaction: then the others roll back theirs too.
            let code = match &error {
                Some(SessionError::Server(p)) => {
                    p.get(1..3).map(|b| u16::from_le_bytes([b[0], b[1]]))
                }
                _ => None,
            };
            whole_rollback = matches!(code, Some(1213 | 1205));
            for &ci in &ran {
                let c = &mut conns[ci];
                if !c.conn.broken
                    && !whole_rollback
                    && !matches!(
                        c.conn.query("ROLLBACK TO SAVEPOINT `__rb_statement`").await,
                        Ok(Ok(_))
                    )
                {
                    whole_rollback = true;
                }
            }
        }
        // In an XA transaction (no savepoints there) a statement that failed on a node rolls
        // the whole transaction back, as a deadlock would.
        let xa_abort = !own_trans && error.is_some() && self.xa.is_some();
        if whole_rollback || xa_abort {
            self.return_conns(conns, true);
            if self.xa.is_some() {
                self.xa_rollback().await?;
            } else {
                self.end_sides(TxWord::Rollback).await?;
                if let Some(h) = self.held.as_mut() {
                    let _ = h.conn.query("ROLLBACK").await;
                }
                self.status &= !STATUS_IN_TRANS;
                self.release_unless_kept();
            }
            warn!(connection_id = self.connection_id, "a statement failed on one data node inside a transaction spanning data sources; the whole transaction was rolled back");
            self.backend_failed = true;
            return Err(error.unwrap_or_else(|| ProxyError::Merge("node failed".into()).into()));
        }
        if xa {
            // The branches commit (two-phase) or roll back together.
            self.return_conns(conns, true);
            let ended = if error.is_none() {
                self.xa_commit().await
            } else {
                self.xa_rollback().await
            };
            if let (None, Err(e)) = (&error, ended) {
                error = Some(e);
            }
            if let Some(e) = error {
                self.backend_failed = true;
                return Err(e);
            }
            let status = (status & !STATUS_MORE_RESULTS & !STATUS_IN_TRANS)
                | (self.status & STATUS_AUTOCOMMIT);
            self.status = status;
            let ok =
                crate::response::ok_payload(affected, last_id, status, warnings.min(65535) as u16);
            if last_id != 0 {
                self.last_insert_id = last_id;
            }
            return self
                .client
                .send(seq, &ok)
                .await
                .map(|_| ())
                .map_err(SessionError::ClientIo);
        }
        if wrap {
            let end = if error.is_none() {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            for c in conns.iter_mut().filter(|c| !c.conn.broken) {
                match c.conn.query(end).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(p)) => {
                        if error.is_none() {
                            error = Some(SessionError::Server(p));
                        }
                    }
                    Err(_) => c.conn.broken = true,
                }
            }
        }
        // In the client's open transaction a failed node statement leaves the others' parts in
        // place; the client decides (ROLLBACK), as after a failed statement on one server.
        let keep_trans = !own_trans;
        self.return_conns(conns, keep_trans);
        if let Some(e) = error {
            self.backend_failed = true;
            return Err(e);
        }
        if last_id != 0 {
            self.last_insert_id = last_id;
        }
        let status = (status & !STATUS_MORE_RESULTS & !STATUS_IN_TRANS)
            | (self.status & STATUS_IN_TRANS)
            | if keep_trans { STATUS_IN_TRANS } else { 0 };
        self.status = status;
        let ok = crate::response::ok_payload(affected, last_id, status, warnings.min(65535) as u16);
        self.client
            .send(seq, &ok)
            .await
            .map_err(SessionError::ClientIo)?;
        Ok(())
    }

    /// A SELECT on several nodes, merged.
    async fn scatter_read(
        &mut self,
        seq: u8,
        plan: &SelectPlan,
        queries: Vec<NodeQuery>,
        binary: bool,
    ) -> Result<()> {
        let st = Statement::passive();
        // Outside a transaction every node query gets its own connection: all run at once.
        let per_query = !self.must_keep() && self.status & STATUS_AUTOCOMMIT != 0;
        let (mut conns, assign) = self.node_conns_as(&st, &queries, per_query).await?;
        let limit = self
            .shared
            .config
            .proxy
            .merge_memory_mb
            .saturating_mul(1 << 20);
        let deprecate_eof = self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        // Send every node query first: the data sources work in parallel, and each connection
        // answers its queries in order.
        let mut units_of: Vec<Vec<usize>> = vec![Vec::new(); conns.len()];
        for (qi, ci) in assign.iter().enumerate() {
            units_of[*ci].push(qi);
        }
        let mut failure: Option<SessionError> = None;
        for (ci, c) in conns.iter_mut().enumerate() {
            for &qi in &units_of[ci] {
                let mut payload = Vec::with_capacity(queries[qi].sql.len() + 1);
                payload.push(0x03);
                payload.extend_from_slice(&queries[qi].sql);
                if let Err(e) = c.conn.send_command(&payload).await {
                    failure.get_or_insert(self.node_failed(&c.ds, e));
                }
            }
        }
        if failure.is_some() {
            // Queries already sent on the other connections have replies nobody will read.
            abandon(&mut conns);
            if let Some(SessionError::Client(e)) = failure.take() {
                failure = Some(SessionError::Fatal(e));
            }
        }
        let r = if failure.is_none() {
            let opts = MergeOpts {
                limit,
                deprecate_eof,
                binary,
            };
            self.merge_nodes(seq, plan, &mut conns, &units_of, opts)
                .await
        } else {
            Err(failure
                .take()
                .unwrap_or_else(|| ProxyError::Merge("node failed".into()).into()))
        };
        let in_trans = self.in_transaction();
        self.return_conns(conns, in_trans);
        r
    }

    /// A node failed in the middle of a merge: no connection of the statement can be reused
    /// (responses are unread), and the client's result is cut: the session ends, so that
    /// nothing half-read or half-committed is taken for a whole.
    fn merge_lost(
        &self,
        conns: &mut [Side],
        ds: &str,
        e: crate::backend::BackendError,
    ) -> SessionError {
        abandon(conns);
        match self.node_failed(ds, e) {
            SessionError::Client(p) => SessionError::Fatal(p),
            other => other,
        }
    }

    fn node_failed(&self, ds: &str, e: crate::backend::BackendError) -> SessionError {
        self.shared.pools.count_error(ds);
        warn!(connection_id = self.connection_id, data_source = %ds, error = %e, "backend connection lost");
        SessionError::Client(ProxyError::BackendLost {
            ds: ds.to_string(),
            room: self.shared.config.proxy.room.clone(),
            in_transaction: self.in_transaction(),
        })
    }

    async fn merge_nodes(
        &mut self,
        seq: u8,
        plan: &SelectPlan,
        conns: &mut [Side],
        units_of: &[Vec<usize>],
        opts: MergeOpts,
    ) -> Result<()> {
        if plan.order.is_empty() || plan.aggregate.is_some() {
            return self
                .merge_sequential(seq, plan, conns, units_of, opts)
                .await;
        }
        let MergeOpts {
            limit,
            deprecate_eof,
            binary,
        } = opts;
        // Sorted merge. Read each node result's header; results queued behind another on one
        // connection are buffered (bounded) so that every node's rows can be merged.
        let mut sources: Vec<Source> = Vec::new();
        let mut columns: Option<Vec<Bytes>> = None;
        let mut error: Option<Bytes> = None;
        let mut buffered_bytes = 0usize;
        let mut status = 0u16;
        let mut warnings = 0u32;
        for (ci, units) in units_of.iter().enumerate() {
            for (k, _) in units.iter().enumerate() {
                let last = k + 1 == units.len();
                let conn = &mut conns[ci].conn;
                let head = match read_head(conn, deprecate_eof).await {
                    Ok(h) => h,
                    Err(e) => {
                        let ds = conns[ci].ds.clone();
                        return Err(self.merge_lost(conns, &ds, e));
                    }
                };
                match head {
                    Head::Err(p) => {
                        error.get_or_insert(p);
                        continue;
                    }
                    Head::Ok => continue,
                    Head::Columns(defs) => {
                        match &columns {
                            None => columns = Some(defs),
                            Some(c) if c.len() != defs.len() => {
                                error.get_or_insert(Bytes::from(
                                    ProxyError::Merge(
                                        "data nodes returned different numbers of columns".into(),
                                    )
                                    .to_err_payload(),
                                ));
                            }
                            _ => {}
                        }
                        if last {
                            sources.push(Source {
                                conn: ci,
                                buffered: None,
                                done: false,
                                warnings: 0,
                                status: 0,
                            });
                        } else {
                            let width = columns.as_ref().map_or(0, Vec::len);
                            let mut rows = VecDeque::new();
                            loop {
                                match next_row(conn, width, deprecate_eof).await {
                                    Ok(Next::Row(r)) => {
                                        buffered_bytes += r.raw.len() + 48;
                                        if buffered_bytes > limit {
                                            error.get_or_insert(Bytes::from(
                                                too_large(limit).to_err_payload(),
                                            ));
                                            // Keep reading to the end: the connection stays in step.
                                            continue;
                                        }
                                        rows.push_back(r);
                                    }
                                    Ok(Next::End {
                                        status: s,
                                        warnings: w,
                                    }) => {
                                        status |= s;
                                        warnings += u32::from(w);
                                        break;
                                    }
                                    Ok(Next::Err(p)) => {
                                        error.get_or_insert(p);
                                        break;
                                    }
                                    Err(e) => {
                                        let ds = conns[ci].ds.clone();
                                        return Err(self.merge_lost(conns, &ds, e));
                                    }
                                }
                            }
                            sources.push(Source {
                                conn: ci,
                                buffered: Some(rows),
                                done: true,
                                warnings: 0,
                                status: 0,
                            });
                        }
                    }
                }
            }
        }
        let width = columns.as_ref().map_or(0, Vec::len);
        if let Some(e) = error {
            drain_sources(conns, &mut sources, width, deprecate_eof).await;
            return Err(SessionError::Server(e));
        }
        let Some(columns) = columns else {
            return Err(ProxyError::Merge("no data node returned a result set".into()).into());
        };
        if width < plan.hidden || plan.items.is_some_and(|n| n + plan.hidden != width) {
            drain_sources(conns, &mut sources, width, deprecate_eof).await;
            return Err(ProxyError::Merge(format!(
                "the node result has {width} columns, the plan expected {}",
                plan.items.unwrap_or(0) + plan.hidden
            ))
            .into());
        }
        let infos: Vec<ColumnInfo> = columns
            .iter()
            .map(|c| merge::column_info_or_text(c))
            .collect();
        let layout = merge::Layout {
            width,
            hidden: plan.hidden,
        };
        // ENUM and SET sort by their index on the server; the merge only sees labels.
        if plan.order.iter().any(|k| {
            infos
                .get(layout.index(k.col))
                .is_some_and(|c| c.enum_or_set)
        }) {
            drain_sources(conns, &mut sources, width, deprecate_eof).await;
            return Err(ProxyError::NotSupportedAcrossNodes(
                "ORDER BY an ENUM or SET column across nodes (order by `col + 0` for its index, or by CAST(col AS CHAR) for its label)".into(),
            )
            .into());
        }
        let visible = width - plan.hidden;
        let skip = usize::try_from(plan.offset).unwrap_or(usize::MAX);
        let take = plan
            .limit
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        // k-way merge of the sorted node results.
        let mut next_seq = queue_header(&mut self.client, seq, &columns, visible, deprecate_eof);
        self.err_seq = Some(next_seq);
        let mut heads: Vec<Option<Row>> = Vec::with_capacity(sources.len());
        for si in 0..sources.len() {
            match pull(conns, &mut sources[si], width, deprecate_eof).await {
                Ok(r) => heads.push(r),
                Err(e) => {
                    let ds = conns[sources[si].conn].ds.clone();
                    return Err(self.merge_lost(conns, &ds, e));
                }
            }
        }
        let mut n = 0usize;
        loop {
            let mut best: Option<usize> = None;
            for (i, h) in heads.iter().enumerate() {
                let Some(r) = h else { continue };
                best = match best {
                    None => Some(i),
                    Some(b) => {
                        let br = heads[b].as_ref().map(|x| x as &Row);
                        match br {
                            Some(br)
                                if merge::cmp_rows(r, br, &plan.order, layout, &infos)
                                    == std::cmp::Ordering::Less =>
                            {
                                Some(i)
                            }
                            _ => Some(b),
                        }
                    }
                };
            }
            let Some(b) = best else { break };
            let Some(r) = heads[b].take() else { break };
            if n >= skip && n - skip < take {
                next_seq = self
                    .send_row(next_seq, &r, plan.hidden, &infos, binary)
                    .map_err(|e| fatal_after(conns, e))?;
                self.flush_if_full()
                    .await
                    .map_err(|e| fatal_after(conns, e))?;
            }
            n += 1;
            if n >= skip.saturating_add(take) {
                break;
            }
            match pull(conns, &mut sources[b], width, deprecate_eof).await {
                Ok(r) => heads[b] = r,
                Err(e) => {
                    let ds = conns[sources[b].conn].ds.clone();
                    return Err(self.merge_lost(conns, &ds, e));
                }
            }
        }
        // Read what is left (after LIMIT), keeping the connections in step.
        drain_sources(conns, &mut sources, width, deprecate_eof).await;
        let warnings = sources
            .iter()
            .fold(warnings, |w, s| w.saturating_add(u32::from(s.warnings)))
            .min(u32::from(u16::MAX)) as u16;
        // A node left inside a transaction (autocommit off) keeps the session's connections.
        let status = sources.iter().fold(status, |a, s| a | s.status);
        if status & STATUS_IN_TRANS != 0 {
            self.status |= STATUS_IN_TRANS;
        }
        let st = self.status & !STATUS_MORE_RESULTS;
        queue_end(&mut self.client, next_seq, st, warnings, deprecate_eof);
        self.client.flush().await.map_err(SessionError::ClientIo)?;
        self.err_seq = None;
        Ok(())
    }

    /// A union or an aggregation: every node result read in turn, straight off its
    /// connection (the node queries of one connection answer in order), rows sent (union) or
    /// folded into their groups (aggregates) as they come: nothing else is held.
    async fn merge_sequential(
        &mut self,
        seq: u8,
        plan: &SelectPlan,
        conns: &mut [Side],
        units_of: &[Vec<usize>],
        opts: MergeOpts,
    ) -> Result<()> {
        let MergeOpts {
            limit,
            deprecate_eof,
            binary,
        } = opts;
        let mut columns: Option<Vec<Bytes>> = None;
        let mut infos: Vec<ColumnInfo> = Vec::new();
        let mut error: Option<Bytes> = None;
        let (mut status, mut warnings) = (0u16, 0u32);
        let mut grouper: Option<merge::Grouper<'_>> = None;
        let mut next_seq: Option<u8> = None;
        let skip = usize::try_from(plan.offset).unwrap_or(usize::MAX);
        let take = plan
            .limit
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        let mut n = 0usize;
        for (ci, units) in units_of.iter().enumerate() {
            for _ in units {
                let head = match read_head(&mut conns[ci].conn, deprecate_eof).await {
                    Ok(h) => h,
                    Err(e) => {
                        let ds = conns[ci].ds.clone();
                        return Err(self.merge_lost(conns, &ds, e));
                    }
                };
                let width = match head {
                    Head::Err(p) => {
                        error.get_or_insert(p);
                        continue;
                    }
                    Head::Ok => continue,
                    Head::Columns(defs) => {
                        let defs_len = defs.len();
                        if let Some(c) = &columns {
                            if c.len() != defs.len() {
                                error.get_or_insert(Bytes::from(
                                    ProxyError::Merge(
                                        "data nodes returned different numbers of columns".into(),
                                    )
                                    .to_err_payload(),
                                ));
                            }
                        } else {
                            infos = defs.iter().map(|c| merge::column_info_or_text(c)).collect();
                            let width = defs.len();
                            if width < plan.hidden
                                || plan.items.is_some_and(|n| n + plan.hidden != width)
                            {
                                error.get_or_insert(Bytes::from(
                                    ProxyError::Merge(format!(
                                        "the node result has {width} columns, the plan expected {}",
                                        plan.items.unwrap_or(0) + plan.hidden
                                    ))
                                    .to_err_payload(),
                                ));
                            }
                            let layout = merge::Layout {
                                width,
                                hidden: plan.hidden,
                            };
                            // ENUM and SET sort by their index on the server; the merge only
                            // sees labels.
                            if width >= plan.hidden
                                && plan.order.iter().any(|k| {
                                    infos
                                        .get(layout.index(k.col))
                                        .is_some_and(|c| c.enum_or_set)
                                })
                            {
                                error.get_or_insert(Bytes::from(
                                    ProxyError::NotSupportedAcrossNodes(
                                        "ORDER BY an ENUM or SET column across nodes (order by `col + 0` for its index, or by CAST(col AS CHAR) for its label)".into(),
                                    )
                                    .to_err_payload(),
                                ));
                            }
                            columns = Some(defs);
                        }
                        // Each result's rows are read with its own width.
                        defs_len
                    }
                };
                let layout = merge::Layout {
                    width,
                    hidden: plan.hidden,
                };
                if error.is_none() {
                    if let Some(agg) = &plan.aggregate {
                        if grouper.is_none() {
                            grouper = Some(merge::Grouper::new(agg, layout, infos.clone(), limit));
                        }
                    } else if next_seq.is_none() {
                        let cols = columns.as_deref().unwrap_or_default();
                        next_seq = Some(queue_header(
                            &mut self.client,
                            seq,
                            cols,
                            width - plan.hidden,
                            deprecate_eof,
                        ));
                        self.err_seq = next_seq;
                    }
                }
                loop {
                    match next_row(&mut conns[ci].conn, width, deprecate_eof).await {
                        Ok(Next::Row(r)) => {
                            if error.is_some() {
                                continue;
                            }
                            if let Some(g) = grouper.as_mut() {
                                if let Err(e) = g.add(&r) {
                                    error = Some(Bytes::from(merge_error(e).to_err_payload()));
                                }
                            } else if let Some(s) = next_seq {
                                if n >= skip && n - skip < take {
                                    next_seq = Some(
                                        self.send_row(s, &r, plan.hidden, &infos, binary)
                                            .map_err(|e| fatal_after(conns, e))?,
                                    );
                                    self.flush_if_full()
                                        .await
                                        .map_err(|e| fatal_after(conns, e))?;
                                }
                                n += 1;
                            }
                        }
                        Ok(Next::End {
                            status: st,
                            warnings: w,
                        }) => {
                            status |= st;
                            warnings += u32::from(w);
                            break;
                        }
                        Ok(Next::Err(p)) => {
                            error.get_or_insert(p);
                            break;
                        }
                        Err(e) => {
                            let ds = conns[ci].ds.clone();
                            return Err(self.merge_lost(conns, &ds, e));
                        }
                    }
                }
            }
        }
        if status & STATUS_IN_TRANS != 0 {
            self.status |= STATUS_IN_TRANS;
        }
        // Every node result was read to its end: the connections are in step.
        if let Some(e) = error {
            return match next_seq {
                // Rows already went out: the error ends the result, as a server's would.
                Some(s) => {
                    self.client.queue(s, &e);
                    self.client.flush().await.map_err(SessionError::ClientIo)?;
                    self.err_seq = None;
                    self.backend_failed = true;
                    Ok(())
                }
                None => Err(SessionError::Server(e)),
            };
        }
        let Some(columns) = columns else {
            return Err(ProxyError::Merge("no data node returned a result set".into()).into());
        };
        let width = columns.len();
        let layout = merge::Layout {
            width,
            hidden: plan.hidden,
        };
        let s = match next_seq {
            Some(s) => s,
            None => {
                let rows = match grouper {
                    Some(g) => g.finish().map_err(merge_error)?,
                    None => Vec::new(),
                };
                let rows = merge::finish_rows(rows, plan, layout, &infos);
                let mut s = queue_header(
                    &mut self.client,
                    seq,
                    &columns,
                    width - plan.hidden,
                    deprecate_eof,
                );
                self.err_seq = Some(s);
                for r in rows {
                    s = self.send_row(s, &r, plan.hidden, &infos, binary)?;
                    self.flush_if_full().await?;
                }
                s
            }
        };
        let warnings = warnings.min(u32::from(u16::MAX)) as u16;
        queue_end(
            &mut self.client,
            s,
            self.status & !STATUS_MORE_RESULTS,
            warnings,
            deprecate_eof,
        );
        self.client.flush().await.map_err(SessionError::ClientIo)?;
        self.err_seq = None;
        Ok(())
    }

    /// Queues one merged row for the client, in its protocol.
    fn send_row(
        &mut self,
        seq: u8,
        r: &Row,
        hidden: usize,
        infos: &[ColumnInfo],
        binary: bool,
    ) -> Result<u8> {
        let next = if binary {
            let visible = infos.len().saturating_sub(hidden);
            let b = merge::binary_row(r, infos, visible).ok_or_else(|| {
                ProxyError::Merge("a value does not read as its column's type".into())
            })?;
            self.client.queue(seq, &b)
        } else {
            self.client.queue(seq, &r.visible(hidden))
        };
        self.err_seq = Some(next);
        Ok(next)
    }

    async fn flush_if_full(&mut self) -> Result<()> {
        if self.client.wbuf.len() >= 64 * 1024 {
            self.client.flush().await.map_err(SessionError::ClientIo)?;
        }
        Ok(())
    }
}

/// Queues a result set's header: the column count, the visible column definitions, and the
/// EOF of the classic framing. Returns the next sequence id.
fn queue_header(
    io: &mut PacketIo,
    seq: u8,
    columns: &[Bytes],
    visible: usize,
    deprecate_eof: bool,
) -> u8 {
    let mut count = Vec::new();
    crate::packet::put_lenenc_int(&mut count, visible as u64);
    let mut s = io.queue(seq, &count);
    for c in &columns[..visible.min(columns.len())] {
        s = io.queue(s, c);
    }
    if !deprecate_eof {
        s = io.queue(s, &[0xFE, 0, 0, 0, 0]);
    }
    s
}

/// Queues the end of a result set (EOF, or an OK with the EOF header).
fn queue_end(io: &mut PacketIo, seq: u8, status: u16, warnings: u16, deprecate_eof: bool) -> u8 {
    let end = if deprecate_eof {
        let mut ok = crate::response::ok_payload(0, 0, status, warnings);
        ok[0] = 0xFE;
        ok
    } else {
        let mut e = vec![0xFE];
        e.extend_from_slice(&warnings.to_le_bytes());
        e.extend_from_slice(&status.to_le_bytes());
        e
    };
    io.queue(seq, &end)
}

fn too_large(limit: usize) -> ProxyError {
    merge_error(merge::MergeError::TooLarge { limit })
}

fn merge_error(e: merge::MergeError) -> ProxyError {
    match e {
        merge::MergeError::TooLarge { .. } => ProxyError::MergeTooLarge(e.to_string()),
        other => ProxyError::Merge(other.to_string()),
    }
}

/// The first part of a response.
enum Head {
    Err(Bytes),
    Ok,
    Columns(Vec<Bytes>),
}

enum Next {
    Row(Row),
    End { status: u16, warnings: u16 },
    Err(Bytes),
}

async fn read_head(
    conn: &mut Conn,
    deprecate_eof: bool,
) -> Result<Head, crate::backend::BackendError> {
    let first = conn.read_payload().await?;
    match first.first() {
        Some(0xFF) => return Ok(Head::Err(first)),
        Some(0x00) => return Ok(Head::Ok),
        _ => {}
    }
    let (n, _) = crate::packet::lenenc_int(&first).ok_or_else(|| bad("column count"))?;
    let mut defs = Vec::with_capacity(n as usize);
    for _ in 0..n {
        defs.push(conn.read_payload().await?);
    }
    if !deprecate_eof {
        let eof = conn.read_payload().await?;
        if eof.first() != Some(&0xFE) {
            return Err(bad("EOF after column definitions"));
        }
    }
    Ok(Head::Columns(defs))
}

fn bad(what: impl Into<String>) -> crate::backend::BackendError {
    crate::backend::BackendError::from(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        what.into(),
    ))
}

async fn next_row(
    conn: &mut Conn,
    width: usize,
    deprecate_eof: bool,
) -> Result<Next, crate::backend::BackendError> {
    let p = conn.read_payload().await?;
    match p.first() {
        Some(0xFF) => Ok(Next::Err(p)),
        Some(0xFE) if p.len() < 9 || (deprecate_eof && p.len() < 0xFF_FFFF) => {
            let (status, warnings) = if deprecate_eof {
                crate::response::parse_ok(&p).map_or((0, 0), |o| (o.status, o.warnings))
            } else {
                (
                    p.get(3..5).map_or(0, |b| u16::from_le_bytes([b[0], b[1]])),
                    p.get(1..3).map_or(0, |b| u16::from_le_bytes([b[0], b[1]])),
                )
            };
            Ok(Next::End { status, warnings })
        }
        _ => Row::parse(p, width)
            .map(Next::Row)
            .ok_or_else(|| bad("row")),
    }
}

/// The next row of a source, `None` at its end (an ERR mid-result ends it too: the node's
/// error was for the client, but rows already merged cannot be taken back — it is reported as
/// a lost node instead).
async fn pull(
    conns: &mut [Side],
    s: &mut Source,
    width: usize,
    deprecate_eof: bool,
) -> Result<Option<Row>, crate::backend::BackendError> {
    if let Some(b) = s.buffered.as_mut() {
        return Ok(b.pop_front());
    }
    if s.done {
        return Ok(None);
    }
    match next_row(&mut conns[s.conn].conn, width, deprecate_eof).await? {
        Next::Row(r) => Ok(Some(r)),
        Next::End { warnings, status } => {
            s.done = true;
            s.warnings = warnings;
            s.status = status;
            Ok(None)
        }
        Next::Err(p) => {
            s.done = true;
            Err(bad(format!(
                "a data node failed mid-result: {}",
                crate::backend::err_message(&p)
            )))
        }
    }
}

async fn drain_sources(
    conns: &mut [Side],
    sources: &mut [Source],
    width: usize,
    deprecate_eof: bool,
) {
    for s in sources.iter_mut() {
        s.buffered = None;
        while !s.done {
            match next_row(&mut conns[s.conn].conn, width, deprecate_eof).await {
                Ok(Next::Row(_)) => {}
                Ok(_) => s.done = true,
                Err(_) => {
                    conns[s.conn].conn.broken = true;
                    s.done = true;
                }
            }
        }
    }
}

/// A failure after part of the merged result went out: the connections are closed and so
/// is the client's (a result cannot be taken back).
fn fatal_after(conns: &mut [Side], e: SessionError) -> SessionError {
    abandon(conns);
    match e {
        SessionError::Client(p) => SessionError::Fatal(p),
        other => other,
    }
}

/// After a failed read: the responses still pending on every node connection cannot be
/// read in step any more, so none of the connections is reused.
fn abandon(conns: &mut [Side]) {
    for c in conns.iter_mut() {
        c.conn.broken = true;
    }
}

/// `sql` with each `?` replaced by its literal, in order; `None` if the counts differ.
pub(super) fn bind_literals(sql: &[u8], literals: &[String], q: Quoting) -> Option<Vec<u8>> {
    let toks = shard_rules::lex::tokens(sql, q).ok()?;
    let marks: Vec<&shard_rules::lex::Token> = toks
        .iter()
        .filter(|t| t.kind == shard_rules::lex::TokenKind::Placeholder)
        .collect();
    if marks.len() != literals.len() {
        return None;
    }
    let mut out = Vec::with_capacity(sql.len() + 16 * literals.len());
    let mut at = 0;
    for (t, lit) in marks.iter().zip(literals) {
        out.extend_from_slice(&sql[at..t.span.start]);
        out.extend_from_slice(lit.as_bytes());
        at = t.span.end;
    }
    out.extend_from_slice(&sql[at..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implicit_commits() {
        assert!(commits_implicitly(b"BEGIN", false));
        assert!(commits_implicitly(b"set  @@session.autocommit = ON", true));
        assert!(!commits_implicitly(b"set autocommit = 1", false));
        assert!(commits_implicitly(b"ALTER TABLE t ADD c INT", false));
        assert!(!commits_implicitly(b"SET autocommit=0", true));
        assert!(!commits_implicitly(b"SELECT 1", true));
    }

    #[test]
    fn transaction_words() {
        assert_eq!(tx_word(b"commit"), TxWord::Commit);
        assert_eq!(tx_word(b"START TRANSACTION READ ONLY"), TxWord::Begin);
        assert_eq!(tx_word(b"/* x */ ROLLBACK WORK"), TxWord::Rollback);
        assert_eq!(tx_word(b"ROLLBACK TO SAVEPOINT s"), TxWord::Other);
        assert_eq!(tx_word(b"SELECT 1"), TxWord::Other);
    }
}
