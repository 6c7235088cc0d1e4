//! Segment keys from the allocation table in a center database (`docs/ids.md`): one row per
//! business tag, `max_id` advanced by `step` in a transaction for every block a proxy takes.
//! The connection is a control connection (mysql_async) to the center database's data source
//! in the center room, from whichever room this proxy runs in.

use std::sync::atomic::{AtomicBool, Ordering};

use id_gen::{Block, SegmentSource, SourceError};
use mysql_async::prelude::*;

pub struct CenterSegments {
    pool: mysql_async::Pool,
    table: String,
    step: u32,
    created: AtomicBool,
}

impl CenterSegments {
    pub fn new(ds: &shard_rules::config::DataSource, table: &str, step: u32) -> Self {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(ds.host.clone())
            .tcp_port(ds.port)
            .user(Some(ds.user.clone()))
            .pass(Some(ds.password.clone()))
            .db_name(Some(ds.schema.clone()))
            .prefer_socket(false)
            .pool_opts(
                mysql_async::PoolOpts::default()
                    .with_constraints(mysql_async::PoolConstraints::new(0, 2).unwrap_or_default()),
            );
        CenterSegments {
            pool: mysql_async::Pool::new(opts),
            table: table.replace('`', "``"),
            step,
            created: AtomicBool::new(false),
        }
    }
}

impl CenterSegments {
    /// One transaction advancing `tag`'s row by its step: its new `max_id` and `step`.
    async fn take_block(
        &self,
        c: &mut mysql_async::Conn,
        tag: &str,
    ) -> Result<Option<(i64, i64)>, mysql_async::Error> {
        let t = &self.table;
        let mut tx = c.start_transaction(mysql_async::TxOpts::default()).await?;
        tx.exec_drop(
            format!("INSERT IGNORE INTO `{t}` (tag, max_id, step) VALUES (?, 0, ?)"),
            (tag, self.step),
        )
        .await?;
        tx.exec_drop(
            format!("UPDATE `{t}` SET max_id = max_id + step WHERE tag = ?"),
            (tag,),
        )
        .await?;
        let row = tx
            .exec_first(
                format!("SELECT max_id, step FROM `{t}` WHERE tag = ?"),
                (tag,),
            )
            .await?;
        tx.commit().await?;
        Ok(row)
    }
}

impl SegmentSource for CenterSegments {
    async fn next_block(&self, tag: &str) -> Result<Block, SourceError> {
        let t = &self.table;
        let mut c = self.pool.get_conn().await?;
        if !self.created.load(Ordering::Acquire) {
            c.query_drop(format!(
                "CREATE TABLE IF NOT EXISTS `{t}` (tag VARCHAR(128) NOT NULL PRIMARY KEY, \
                 max_id BIGINT NOT NULL, step INT NOT NULL, \
                 updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) \
                 ON UPDATE CURRENT_TIMESTAMP(6))"
            ))
            .await?;
            self.created.store(true, Ordering::Release);
        }
        // Two proxies taking the first block of a new tag at once can deadlock on the row's
        // insert (InnoDB picks a victim: error 1213, "try restarting transaction"); the
        // victim's transaction is rolled back whole, so it is retried.
        let mut attempt = 0;
        let row: Option<(i64, i64)> = loop {
            attempt += 1;
            match self.take_block(&mut c, tag).await {
                Err(mysql_async::Error::Server(e)) if e.code == 1213 && attempt < 5 => {
                    tracing::debug!(tag, attempt, "segment allocation deadlocked; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
                }
                other => break other?,
            }
        };
        let (max_id, step) = row.ok_or("the tag's row vanished")?;
        Ok(Block {
            start: max_id - step + 1,
            end: max_id + 1,
        })
    }
}
