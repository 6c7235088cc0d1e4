//! XA transactions across data sources for databases with `transactions = "xa"` (see
//! [`crate::xa`]): BEGIN is answered by the proxy; each data source the transaction reaches
//! gets a branch (`XA START`) when its connection joins; COMMIT prepares every branch, logs the
//! decision, commits every branch; ROLLBACK rolls every branch back.

use std::collections::BTreeSet;

use super::sharded::TxWord;
use super::*;

/// The session's open XA transaction.
pub(super) struct XaTx {
    pub gtrid: String,
    /// Physical data sources whose branch has started.
    pub branches: BTreeSet<String>,
}

/// Starts data source `ds`'s branch of the open XA transaction (if any) on the connection
/// joining it.
pub(super) async fn join(
    xa: &mut Option<XaTx>,
    conn: &mut crate::backend::BackendConn,
    ds: &str,
) -> Result<Result<(), Bytes>, crate::backend::BackendError> {
    let Some(xa) = xa.as_mut() else {
        return Ok(Ok(()));
    };
    if xa.branches.contains(ds) {
        return Ok(Ok(()));
    }
    let sql = format!("XA START {}", crate::xa::xid(&xa.gtrid, ds));
    match conn.query(&sql).await? {
        Ok(_) => {
            xa.branches.insert(ds.to_string());
            Ok(Ok(()))
        }
        Err(p) => Ok(Err(p)),
    }
}

impl Session {
    /// The session's database commits transactions across data sources with XA.
    pub(super) fn xa_mode(&self) -> bool {
        let Some(db) = self.rules_database() else {
            return false;
        };
        self.shared
            .rules
            .load()
            .database(&db)
            .is_some_and(|d| d.transactions == shard_rules::rules::TransactionMode::Xa)
    }

    /// Handles BEGIN / COMMIT / ROLLBACK in XA mode; `false` when the statement is not one the
    /// proxy answers itself.
    pub(super) async fn xa_statement(&mut self, sql: &[u8], seq: u8) -> Result<bool> {
        // Cheap checks first: most databases are not in XA mode.
        if self.xa.is_none() && !self.xa_mode() {
            return Ok(false);
        }
        let word = sharded::tx_word(sql);
        if word == TxWord::Other {
            return Ok(false);
        }
        match word {
            TxWord::Begin => {
                if self.xa.is_none() && self.status & STATUS_IN_TRANS != 0 {
                    // A local transaction is open (autocommit=0): the server handles BEGIN.
                    return Ok(false);
                }
                if self.xa.is_some() {
                    // BEGIN commits the open transaction first, as on one server.
                    self.xa_commit().await?;
                }
                self.xa = Some(XaTx {
                    gtrid: self.shared.xa.gtrid(),
                    branches: BTreeSet::new(),
                });
                self.status |= STATUS_IN_TRANS;
            }
            TxWord::Commit => {
                if self.xa.is_none() {
                    return Ok(false);
                }
                self.xa_commit().await?;
            }
            TxWord::Rollback => {
                if self.xa.is_none() {
                    return Ok(false);
                }
                self.xa_rollback().await?;
            }
            TxWord::Other => return Ok(false),
        }
        self.send_ok(seq).await?;
        Ok(true)
    }

    fn branch_conn(&mut self, ds: &str) -> Option<&mut crate::backend::BackendConn> {
        if self.held.as_ref().is_some_and(|h| h.ds == ds) {
            return self.held.as_mut().map(|h| &mut *h.conn);
        }
        self.side.get_mut(ds).map(|s| &mut *s.conn)
    }

    /// Runs `sql` on the branch of `ds`: `Err` with the server's error or the failure.
    async fn on_branch(&mut self, ds: &str, sql: &str) -> Result<(), String> {
        let Some(conn) = self.branch_conn(ds) else {
            return Err(format!("no connection to data source `{ds}`"));
        };
        match conn.query(sql).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(p)) => Err(crate::backend::err_message(&p)),
            Err(e) => {
                conn.broken = true;
                Err(e.to_string())
            }
        }
    }

    /// `XA ROLLBACK` of one branch; a connection where it fails is closed (which rolls an
    /// unprepared branch back; a prepared one is left to recovery), never pooled.
    async fn rollback_branch(&mut self, gtrid: &str, ds: &str) {
        let sql = format!("XA ROLLBACK {}", crate::xa::xid(gtrid, ds));
        if let Err(e) = self.on_branch(ds, &sql).await {
            warn!(connection_id = self.connection_id, gtrid, data_source = %ds, error = %e, "XA ROLLBACK failed; the connection is closed");
            if let Some(c) = self.branch_conn(ds) {
                c.broken = true;
            }
        }
    }

    fn xa_finished(&mut self) {
        self.xa = None;
        // Every branch is committed or rolled back: the connections may go back to the pool.
        for s in self.side.values_mut() {
            s.joined = false;
        }
        self.status &= !STATUS_IN_TRANS;
        self.release_unless_kept();
    }

    pub(super) async fn xa_rollback(&mut self) -> Result<()> {
        let Some(xa) = self.xa.as_ref() else {
            return Ok(());
        };
        let (gtrid, branches) = (xa.gtrid.clone(), xa.branches.clone());
        for ds in &branches {
            let x = crate::xa::xid(&gtrid, ds);
            let _ = self.on_branch(ds, &format!("XA END {x}")).await;
            if let Err(e) = self.on_branch(ds, &format!("XA ROLLBACK {x}")).await {
                warn!(connection_id = self.connection_id, gtrid, data_source = %ds, error = %e, "XA ROLLBACK failed; the connection is closed, which rolls the branch back");
                if let Some(c) = self.branch_conn(ds) {
                    c.broken = true;
                }
            }
        }
        self.xa_finished();
        Ok(())
    }

    /// Two-phase commit of the open XA transaction (one phase for a single branch).
    pub(super) async fn xa_commit(&mut self) -> Result<()> {
        let Some(xa) = self.xa.as_ref() else {
            return Ok(());
        };
        let (gtrid, branches) = (xa.gtrid.clone(), xa.branches.clone());
        let failed = |what: &str, ds: &str, e: String| ProxyError::Rule {
            code: crate::enforce::code::REFUSED,
            state: *b"XA100",
            message: format!(
                "XA transaction {gtrid} rolled back: {what} failed on data source `{ds}`: {e}"
            ),
        };
        for ds in &branches {
            let x = crate::xa::xid(&gtrid, ds);
            if let Err(e) = self.on_branch(ds, &format!("XA END {x}")).await {
                let err = failed("XA END", ds, e);
                self.xa_rollback().await?;
                return Err(err.into());
            }
        }
        if branches.len() == 1 {
            let ds = branches.iter().next().cloned().unwrap_or_default();
            let r = self
                .on_branch(
                    &ds,
                    &format!("XA COMMIT {} ONE PHASE", crate::xa::xid(&gtrid, &ds)),
                )
                .await;
            self.xa_finished();
            return r.map_err(|e| failed("XA COMMIT ONE PHASE", &ds, e).into());
        }
        if branches.is_empty() {
            self.xa_finished();
            return Ok(());
        }
        if let Err(e) = self.shared.xa.open() {
            let err = failed("opening the XA log", "-", e.to_string());
            self.xa_rollback().await?;
            return Err(err.into());
        }
        for ds in &branches {
            let x = crate::xa::xid(&gtrid, ds);
            if let Err(e) = self.on_branch(ds, &format!("XA PREPARE {x}")).await {
                let err = failed("XA PREPARE", ds, e);
                for other in &branches {
                    self.rollback_branch(&gtrid, other).await;
                }
                self.xa_finished();
                return Err(err.into());
            }
        }
        crate::xa::fault("after-prepare");
        if let Err(e) = self.shared.xa.decided(&gtrid) {
            let err = failed(
                "writing the commit decision to the XA log",
                "-",
                e.to_string(),
            );
            for ds in &branches {
                self.rollback_branch(&gtrid, ds).await;
            }
            self.xa_finished();
            return Err(err.into());
        }
        crate::xa::fault("after-decision");
        // Decided: every branch commits, if need be from another connection.
        let mut all = true;
        for ds in &branches {
            let sql = format!("XA COMMIT {}", crate::xa::xid(&gtrid, ds));
            if let Err(e) = self.on_branch(ds, &sql).await {
                let retried = match self.shared.pools.dedicated(ds).await {
                    Ok(mut c) => matches!(c.query(&sql).await, Ok(Ok(_))),
                    Err(_) => false,
                };
                if !retried {
                    all = false;
                    warn!(connection_id = self.connection_id, gtrid, data_source = %ds, error = %e, "XA COMMIT failed after the decision; the branch stays prepared and is committed at the proxy's next start");
                }
            }
        }
        debug!(
            connection_id = self.connection_id,
            gtrid,
            branches = branches.len(),
            all,
            "XA transaction committed in two phases"
        );
        if all {
            if let Err(e) = self.shared.xa.done(&gtrid) {
                warn!(gtrid, error = %e, "cannot note a finished XA transaction in the log");
            }
        }
        self.xa_finished();
        Ok(())
    }
}
