//! Segment (block) allocation: dense, roughly ordered IDs from a central ID service.
//!
//! A [`SegmentSource`] hands out blocks of IDs per business tag (the proxy backs it with a table
//! in the center database, like Meituan's Leaf). [`SegmentAllocator`] serves IDs from the current
//! block and fetches the next one in the background as soon as [`SegmentConfig::prefetch_at`]
//! of the current block is used, so callers normally never wait for the source. When the source
//! fails, IDs keep coming from what is buffered; only a caller who finds both buffers empty gets
//! the source's error, and the next call tries the source again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// IDs `start..end` (end excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub start: i64,
    pub end: i64,
}

/// What a source's failure carries.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Where blocks come from.
pub trait SegmentSource: Send + Sync + 'static {
    /// The next block for `tag`. Blocks of one tag must be non-empty and increasing: each starts
    /// at or after the end of the previous one (the allocator refuses any other).
    fn next_block(&self, tag: &str) -> impl Future<Output = Result<Block, SourceError>> + Send;
}

impl<S: SegmentSource> SegmentSource for Arc<S> {
    fn next_block(&self, tag: &str) -> impl Future<Output = Result<Block, SourceError>> + Send {
        (**self).next_block(tag)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("ID segment source failed for tag `{tag}`: {cause}")]
    Source { tag: String, cause: String },
    #[error("ID segment source did not answer for tag `{tag}` within {ms} ms")]
    Timeout { tag: String, ms: u128 },
    #[error("ID segments for tag `{tag}` need a tokio runtime to fetch blocks")]
    NoRuntime { tag: String },
    #[error(
        "ID segment source returned block {start}..{end} for tag `{tag}`: empty, or not \
         positive (IDs start at 1)"
    )]
    EmptyBlock { tag: String, start: i64, end: i64 },
    #[error(
        "ID segment source returned block {start}..{end} for tag `{tag}`, which overlaps the \
         blocks already taken (up to {high_water}): refused, it would duplicate IDs"
    )]
    Overlap {
        tag: String,
        start: i64,
        end: i64,
        high_water: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentConfig {
    /// Fraction of the current block used when the next block is fetched. Default 0.1.
    pub prefetch_at: f64,
    /// A fetch that takes longer fails with [`SegmentError::Timeout`]. Default 5 s.
    pub fetch_timeout: Duration,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        SegmentConfig {
            prefetch_at: 0.1,
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves IDs per tag from double-buffered blocks. Cheap to clone (shared state). Must be used
/// inside a tokio runtime (fetches run as tasks).
pub struct SegmentAllocator<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for SegmentAllocator<S> {
    fn clone(&self) -> Self {
        SegmentAllocator {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S> {
    source: S,
    config: SegmentConfig,
    tags: Mutex<HashMap<String, Arc<Tag>>>,
}

struct Tag {
    name: String,
    buffers: Mutex<Buffers>,
    fetched: Notify,
}

#[derive(Default)]
struct Buffers {
    /// Next ID of the current block, and its end.
    cursor: i64,
    end: i64,
    /// Where to start prefetching in the current block.
    prefetch_from: i64,
    next: Option<Block>,
    fetching: bool,
    /// Number of the latest fetch, and the failure of a fetch (with its number).
    generation: u64,
    failure: Option<(u64, SegmentError)>,
    /// End of the last block accepted: a new block must start at or after it.
    high_water: Option<i64>,
    /// After a failed fetch: no background prefetch before this time.
    retry_at: Option<Instant>,
}

/// Status of one tag, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagStatus {
    pub remaining: u64,
    pub next_ready: bool,
    pub fetching: bool,
    pub last_failure: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code that can panic runs while the lock is held (no spawn, no source call), so a
    // poisoned lock can only come from a bug elsewhere; the buffers are still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<S: SegmentSource> SegmentAllocator<S> {
    pub fn new(source: S, config: SegmentConfig) -> Self {
        SegmentAllocator {
            inner: Arc::new(Inner {
                source,
                config,
                tags: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn tag(&self, name: &str) -> Arc<Tag> {
        let mut tags = lock(&self.inner.tags);
        if let Some(t) = tags.get(name) {
            return t.clone();
        }
        let t = Arc::new(Tag {
            name: name.to_string(),
            buffers: Mutex::new(Buffers::default()),
            fetched: Notify::new(),
        });
        tags.insert(name.to_string(), t.clone());
        t
    }

    /// The next ID of `tag`. Must be called inside a tokio runtime (the fetches are tasks);
    /// outside one it fails with [`SegmentError::NoRuntime`] rather than hang.
    pub async fn next_id(&self, tag: &str) -> Result<i64, SegmentError> {
        let t = self.tag(tag);
        // The fetch this call waited for, if any: its failure is this call's error.
        let mut waited: Option<u64> = None;
        loop {
            let notified = t.fetched.notified();
            tokio::pin!(notified);
            let fetch = {
                let mut b = lock(&t.buffers);
                if b.cursor >= b.end {
                    if let Some(next) = b.next.take() {
                        b.install(next, self.inner.config.prefetch_at);
                    }
                }
                if b.cursor < b.end {
                    let id = b.cursor;
                    b.cursor += 1;
                    let fetch = b.cursor >= b.prefetch_from
                        && b.next.is_none()
                        && !b.fetching
                        && b.retry_at.is_none_or(|at| Instant::now() >= at);
                    let fetch = fetch.then(|| b.begin_fetch());
                    drop(b);
                    if let Some(generation) = fetch {
                        // A background prefetch: if it cannot start, the caller that finds
                        // the buffers empty will say why.
                        let _ = self.spawn_fetch(&t, generation);
                    }
                    return Ok(id);
                }
                if let (Some(w), Some((g, e))) = (waited, &b.failure) {
                    if w == *g {
                        return Err(e.clone());
                    }
                }
                let fetch = (!b.fetching).then(|| b.begin_fetch());
                waited = Some(b.generation);
                // Registered before the lock is released, so the fetch's wake-up cannot be
                // missed.
                notified.as_mut().enable();
                fetch
            };
            // Spawned outside the lock: a task dropped at once (runtime shutting down) ends
            // its fetch in its guard, which takes the lock.
            if let Some(generation) = fetch {
                self.spawn_fetch(&t, generation)?;
            }
            notified.await;
        }
    }

    /// What `tag`'s buffers hold now (`None` for a tag never used).
    pub fn status(&self, tag: &str) -> Option<TagStatus> {
        let t = lock(&self.inner.tags).get(tag).cloned()?;
        let b = lock(&t.buffers);
        Some(TagStatus {
            remaining: (i128::from(b.end) - i128::from(b.cursor)).max(0) as u64,
            next_ready: b.next.is_some(),
            fetching: b.fetching,
            last_failure: b.failure.as_ref().map(|(_, e)| e.to_string()),
        })
    }

    /// Starts fetch number `generation` as a task. The guard that ends it (and wakes the
    /// waiters) exists before the task does, so a task that never runs still ends its fetch.
    fn spawn_fetch(&self, t: &Arc<Tag>, generation: u64) -> Result<(), SegmentError> {
        let mut done = FetchDone {
            tag: t.clone(),
            generation,
            result: None,
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            done.result = Some(Err(SegmentError::NoRuntime {
                tag: t.name.clone(),
            }));
            drop(done);
            return Err(SegmentError::NoRuntime {
                tag: t.name.clone(),
            });
        };
        let inner = self.inner.clone();
        runtime.spawn(async move {
            let tag = done.tag.name.clone();
            let timeout = inner.config.fetch_timeout;
            let result = match tokio::time::timeout(timeout, inner.source.next_block(&tag)).await {
                Ok(Ok(block)) => Ok(block),
                Ok(Err(e)) => Err(SegmentError::Source {
                    tag,
                    cause: chain(e.as_ref()),
                }),
                Err(_) => Err(SegmentError::Timeout {
                    tag,
                    ms: timeout.as_millis(),
                }),
            };
            done.result = Some(result);
            drop(done); // stores the result and wakes the waiters
        });
        Ok(())
    }
}

/// An error and its causes: `outer: inner: root`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

impl Buffers {
    fn begin_fetch(&mut self) -> u64 {
        self.fetching = true;
        self.generation += 1;
        self.generation
    }

    fn install(&mut self, block: Block, prefetch_at: f64) {
        self.cursor = block.start;
        self.end = block.end;
        let len = (i128::from(block.end) - i128::from(block.start)) as f64;
        self.prefetch_from = block
            .start
            .saturating_add((len * prefetch_at.clamp(0.0, 1.0)) as i64);
    }
}

/// Ends a fetch: stores its block or failure, clears `fetching`, wakes the waiters. Runs when
/// the fetch task finishes, panics, or is dropped without running.
struct FetchDone {
    tag: Arc<Tag>,
    generation: u64,
    result: Option<Result<Block, SegmentError>>,
}

impl Drop for FetchDone {
    fn drop(&mut self) {
        let result = self.result.take().unwrap_or_else(|| {
            Err(SegmentError::Source {
                tag: self.tag.name.clone(),
                cause: "the fetch ended without an answer (the source panicked, or the \
                        runtime is shutting down)"
                    .into(),
            })
        });
        {
            let mut b = lock(&self.tag.buffers);
            b.fetching = false;
            match result.and_then(|block| check(&self.tag.name, block, b.high_water)) {
                Ok(block) => {
                    b.high_water = Some(block.end);
                    b.next = Some(block);
                    b.failure = None;
                    b.retry_at = None;
                }
                Err(e) => {
                    b.failure = Some((self.generation, e));
                    // No background retry for a while: a source that is down is not asked again
                    // on every ID; a caller who finds the buffers empty still asks at once.
                    b.retry_at = Some(Instant::now() + RETRY_BACKOFF);
                }
            }
        }
        self.tag.fetched.notify_waiters();
    }
}

/// How long a failed background prefetch waits before the next one.
const RETRY_BACKOFF: Duration = Duration::from_secs(1);

fn check(tag: &str, block: Block, high_water: Option<i64>) -> Result<Block, SegmentError> {
    if block.start >= block.end || block.start < 1 {
        return Err(SegmentError::EmptyBlock {
            tag: tag.to_string(),
            start: block.start,
            end: block.end,
        });
    }
    if let Some(high_water) = high_water.filter(|h| block.start < *h) {
        return Err(SegmentError::Overlap {
            tag: tag.to_string(),
            start: block.start,
            end: block.end,
            high_water,
        });
    }
    Ok(block)
}
