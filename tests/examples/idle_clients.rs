//! Opens N logged-in client connections to a MySQL server (the proxy), checks that every one
//! answers a query, holds them all idle for a while, then checks them again and closes them.
//! Used by `benches/idle.sh` to measure the proxy's memory with 10 000 idle clients.
//!
//! Usage: idle_clients URL N HOLD_SECONDS
//! (URL as mysql_async reads it, e.g. mysql://bench:bench@127.0.0.1:3390/sbtest)
//! Prints `HELD n` once all are open (the script reads the proxy's RSS then) and `OK n` at the
//! end; exits non-zero if any connection failed.

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

const AT_ONCE: usize = 200;

async fn open(opts: &Opts, n: usize) -> Result<Vec<Conn>, String> {
    let mut conns = Vec::with_capacity(n);
    let mut started = 0;
    while started < n {
        let batch = AT_ONCE.min(n - started);
        let mut tasks = Vec::with_capacity(batch);
        for _ in 0..batch {
            let opts = opts.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = Conn::new(opts).await?;
                let one: Option<i64> = c.query_first("SELECT 1").await?;
                Ok::<_, mysql_async::Error>((c, one))
            }));
        }
        for t in tasks {
            match t.await.map_err(|e| e.to_string())? {
                Ok((c, Some(1))) => conns.push(c),
                Ok((_, other)) => return Err(format!("SELECT 1 gave {other:?}")),
                Err(e) => return Err(format!("connection {}: {e}", conns.len() + 1)),
            }
        }
        started += batch;
    }
    Ok(conns)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(n), Some(hold)) = (
        args.get(1),
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
        args.get(3).and_then(|n| n.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: idle_clients URL N HOLD_SECONDS");
        return std::process::ExitCode::from(2);
    };
    let opts = match Opts::from_url(url) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bad URL: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut conns = match open(&opts, n).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("idle_clients: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("HELD {}", conns.len());
    tokio::time::sleep(std::time::Duration::from_secs(hold)).await;
    // Every connection is still served after the idle period.
    let mut ok = 0;
    for c in conns.iter_mut() {
        match c.query_first::<i64, _>("SELECT 2").await {
            Ok(Some(2)) => ok += 1,
            other => {
                eprintln!(
                    "idle_clients: after holding, connection {}: {other:?}",
                    ok + 1
                );
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    for c in conns {
        let _ = c.disconnect().await;
    }
    println!("OK {ok}");
    std::process::ExitCode::SUCCESS
}
