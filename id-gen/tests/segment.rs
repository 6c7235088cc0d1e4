//! The segment allocator against an in-memory block source whose failures the tests control.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use id_gen::{Block, SegmentAllocator, SegmentConfig, SegmentError, SegmentSource, SourceError};

/// Hands out `step`-long blocks from 1 up, like a `max_id` row updated with `max_id + step`.
#[derive(Default)]
struct Source {
    next: AtomicI64,
    step: i64,
    calls: AtomicUsize,
    fail: AtomicBool,
    /// Return the previous block again (a broken source).
    repeat: AtomicBool,
    empty: AtomicBool,
    hang: AtomicBool,
    panic: AtomicBool,
}

impl Source {
    fn new(step: i64) -> Arc<Source> {
        Arc::new(Source {
            next: AtomicI64::new(1),
            step,
            ..Source::default()
        })
    }
}

impl SegmentSource for Source {
    async fn next_block(&self, tag: &str) -> Result<Block, SourceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.hang.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if self.panic.load(Ordering::SeqCst) {
            panic!("source bug");
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(format!("center database unreachable (tag {tag})").into());
        }
        if self.empty.load(Ordering::SeqCst) {
            return Ok(Block { start: 5, end: 5 });
        }
        let start = if self.repeat.load(Ordering::SeqCst) {
            self.next.load(Ordering::SeqCst) - self.step
        } else {
            self.next.fetch_add(self.step, Ordering::SeqCst)
        };
        Ok(Block {
            start,
            end: start + self.step,
        })
    }
}

fn allocator(source: &Arc<Source>) -> SegmentAllocator<Arc<Source>> {
    SegmentAllocator::new(source.clone(), SegmentConfig::default())
}

/// Lets spawned fetches run (the tests use a current-thread runtime).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn ids_are_dense_across_blocks() {
    let source = Source::new(10);
    let a = allocator(&source);
    let mut ids = Vec::new();
    for _ in 0..35 {
        ids.push(a.next_id("order").await.unwrap());
    }
    assert_eq!(ids, (1..=35).collect::<Vec<i64>>());
    // Tags are independent: another tag gets a block of its own (which one depends on when
    // the first tag's prefetch ran), not the rest of the first tag's.
    let user = a.next_id("user").await.unwrap();
    assert!(user > 40 && (user - 1) % 10 == 0, "{user}");
    assert_eq!(a.next_id("user").await.unwrap(), user + 1);
}

#[tokio::test(flavor = "current_thread")]
async fn the_next_block_is_fetched_before_the_current_one_runs_out() {
    let source = Source::new(100);
    let a = allocator(&source);
    assert_eq!(a.next_id("order").await.unwrap(), 1);
    assert_eq!(source.calls.load(Ordering::SeqCst), 1);
    // 10 % of the block used: the prefetch starts.
    for _ in 0..10 {
        a.next_id("order").await.unwrap();
    }
    settle().await;
    assert_eq!(source.calls.load(Ordering::SeqCst), 2);
    let status = a.status("order").unwrap();
    assert!(status.next_ready && !status.fetching, "{status:?}");
    assert_eq!(status.remaining, 89);
    // Switching to the buffered block needs no fetch on the caller's path.
    source.fail.store(true, Ordering::SeqCst);
    for expected in 12..=200 {
        assert_eq!(a.next_id("order").await.unwrap(), expected);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_failing_source_is_a_clear_error_and_the_next_call_retries() {
    let source = Source::new(10);
    source.fail.store(true, Ordering::SeqCst);
    let a = allocator(&source);
    let err = a.next_id("order").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "ID segment source failed for tag `order`: center database unreachable (tag order)"
    );
    source.fail.store(false, Ordering::SeqCst);
    assert_eq!(a.next_id("order").await.unwrap(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn buffered_ids_keep_coming_while_the_source_is_down() {
    let source = Source::new(10);
    let a = allocator(&source);
    assert_eq!(a.next_id("order").await.unwrap(), 1);
    source.fail.store(true, Ordering::SeqCst);
    for expected in 2..=10 {
        assert_eq!(a.next_id("order").await.unwrap(), expected);
    }
    settle().await;
    assert!(a
        .status("order")
        .unwrap()
        .last_failure
        .unwrap()
        .contains("unreachable"));
    assert!(matches!(
        a.next_id("order").await,
        Err(SegmentError::Source { .. })
    ));
    source.fail.store(false, Ordering::SeqCst);
    assert_eq!(a.next_id("order").await.unwrap(), 11);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_source_that_never_answers_times_out() {
    let source = Source::new(10);
    source.hang.store(true, Ordering::SeqCst);
    let a = SegmentAllocator::new(
        source.clone(),
        SegmentConfig {
            fetch_timeout: Duration::from_millis(250),
            ..SegmentConfig::default()
        },
    );
    let err = a.next_id("order").await.unwrap_err();
    assert_eq!(
        err,
        SegmentError::Timeout {
            tag: "order".into(),
            ms: 250
        }
    );
}

#[tokio::test(flavor = "current_thread")]
async fn blocks_that_would_repeat_ids_are_refused() {
    let source = Source::new(10);
    let a = allocator(&source);
    assert_eq!(a.next_id("order").await.unwrap(), 1);
    source.repeat.store(true, Ordering::SeqCst);
    for _ in 2..=10 {
        a.next_id("order").await.unwrap();
    }
    let err = a.next_id("order").await.unwrap_err();
    assert_eq!(
        err,
        SegmentError::Overlap {
            tag: "order".into(),
            start: 1,
            end: 11,
            high_water: 11
        }
    );
    source.repeat.store(false, Ordering::SeqCst);
    source.empty.store(true, Ordering::SeqCst);
    let err = a.next_id("order").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("returned block 5..5 for tag `order`: empty"),
        "{err}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_panicking_source_is_an_error_not_a_hang() {
    let source = Source::new(10);
    source.panic.store(true, Ordering::SeqCst);
    let a = allocator(&source);
    let err = a.next_id("order").await.unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    source.panic.store(false, Ordering::SeqCst);
    assert_eq!(a.next_id("order").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_get_distinct_ids() {
    let source = Source::new(7);
    let a = allocator(&source);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..1000 {
                    ids.push(a.next_id("order").await.unwrap());
                }
                ids
            })
        })
        .collect();
    let mut all = HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(all.insert(id), "duplicate {id}");
        }
    }
    // Dense: exactly the first 8000 IDs, none lost, none skipped.
    assert_eq!(all, (1..=8000).collect::<HashSet<i64>>());
}

/// A source that takes a while and fails when told to: many callers wait on one fetch.
struct Slow {
    inner: Arc<Source>,
    /// Fetches started (counted before the delay).
    started: AtomicUsize,
}

impl SegmentSource for Slow {
    async fn next_block(&self, tag: &str) -> Result<Block, SourceError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.inner.next_block(tag).await
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn callers_waiting_on_one_fetch_all_get_its_block_or_its_error() {
    let source = Source::new(50);
    let slow = Arc::new(Slow {
        inner: source.clone(),
        started: AtomicUsize::new(0),
    });
    let a = SegmentAllocator::new(slow.clone(), SegmentConfig::default());
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.next_id("order").await })
        })
        .collect();
    let mut ids = Vec::new();
    for c in callers {
        ids.push(c.await.unwrap().unwrap());
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=20).collect::<Vec<i64>>());
    // One fetch served all twenty waiters; the twentieth ID is past 10 % of the block, so
    // the prefetch of the next block has started too.
    assert_eq!(source.calls.load(Ordering::SeqCst), 1);
    assert_eq!(slow.started.load(Ordering::SeqCst), 2);

    // Now the source fails while 10 callers wait with empty buffers: each gets the error.
    let source = Source::new(50);
    source.fail.store(true, Ordering::SeqCst);
    let a = SegmentAllocator::new(
        Arc::new(Slow {
            inner: source.clone(),
            started: AtomicUsize::new(0),
        }),
        SegmentConfig::default(),
    );
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.next_id("order").await })
        })
        .collect();
    for c in callers {
        let err = c.await.unwrap().unwrap_err();
        assert!(matches!(err, SegmentError::Source { .. }), "{err}");
    }
    assert_eq!(
        source.calls.load(Ordering::SeqCst),
        1,
        "one failed fetch for all ten"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_failed_prefetch_is_not_retried_on_every_id() {
    let source = Source::new(100);
    let a = allocator(&source);
    a.next_id("order").await.unwrap();
    source.fail.store(true, Ordering::SeqCst);
    for _ in 0..20 {
        a.next_id("order").await.unwrap();
        settle().await;
    }
    // The initial fetch, then one failed prefetch: the backoff holds the next attempt.
    assert_eq!(source.calls.load(Ordering::SeqCst), 2);
    source.fail.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_millis(1100)).await;
    a.next_id("order").await.unwrap();
    settle().await;
    assert_eq!(source.calls.load(Ordering::SeqCst), 3);
    let status = a.status("order").unwrap();
    assert!(
        status.next_ready && status.last_failure.is_none(),
        "{status:?}"
    );
    assert!(a.status("never-used").is_none());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_timed_out_source_is_asked_again_and_recovers() {
    let source = Source::new(10);
    source.hang.store(true, Ordering::SeqCst);
    let a = allocator(&source);
    assert!(matches!(
        a.next_id("order").await,
        Err(SegmentError::Timeout { .. })
    ));
    source.hang.store(false, Ordering::SeqCst);
    assert_eq!(a.next_id("order").await.unwrap(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn non_positive_blocks_are_refused() {
    struct Negative;
    impl SegmentSource for Negative {
        async fn next_block(&self, _: &str) -> Result<Block, SourceError> {
            Ok(Block { start: -5, end: 5 })
        }
    }
    let a = SegmentAllocator::new(Negative, SegmentConfig::default());
    let err = a.next_id("order").await.unwrap_err();
    assert_eq!(
        err,
        SegmentError::EmptyBlock {
            tag: "order".into(),
            start: -5,
            end: 5
        }
    );
}

#[test]
fn outside_a_runtime_the_allocator_says_so_instead_of_hanging() {
    let source = Source::new(10);
    let a = allocator(&source);
    let mut fut = std::pin::pin!(a.next_id("order"));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Err(e)) => {
            assert_eq!(
                e,
                SegmentError::NoRuntime {
                    tag: "order".into()
                }
            )
        }
        other => panic!("expected an error at once, got {other:?}"),
    }
    // The failed start left nothing half-done: a later call fails the same way, at once.
    let mut fut = std::pin::pin!(a.next_id("order"));
    assert!(matches!(
        fut.as_mut().poll(&mut cx),
        std::task::Poll::Ready(Err(_))
    ));
}
