//! The snowflake generator: one per proxy, shared by all its sessions, lock-free.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::layout::Layout;

/// Where the generator reads the time: milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The system's wall clock (`SystemTime`, which NTP may step backwards: the generator handles it).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        // A clock before 1970 reads as 0, which is before any epoch: refused, never an ID.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that moves only when told to: for tests, which drive time exactly.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(now_ms: u64) -> Self {
        ManualClock(AtomicU64::new(now_ms))
    }
    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

/// 2024-01-01T00:00:00Z in milliseconds since the Unix epoch.
pub const DEFAULT_EPOCH_MS: u64 = 1_704_067_200_000;

/// How a generator behaves (the room and worker are given separately: they come from the rules
/// and from the proxy's own configuration or lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnowflakeConfig {
    /// Field widths. Default 41 / 3 / 7 / 12.
    pub layout: Layout,
    /// Time zero of the time field, in milliseconds since the Unix epoch. Default 2024-01-01.
    /// Every generator whose IDs share a table must use the same epoch and layout.
    pub epoch_ms: u64,
    /// A clock step back of less than this many milliseconds is waited out; one as long or
    /// longer is refused with [`IdError::ClockBackwards`]. Default 10; 0 refuses every step
    /// back.
    pub clock_backwards_tolerance_ms: u64,
    /// `0` (default): each millisecond's sequence starts at 0. `n` (a power of two, at most half
    /// the sequence space: 2048 in the default layout): it starts at one of `0..n`, picked by a
    /// hash of the millisecond, room and worker, so that at low rates `id % k` spreads over
    /// the `k` shards instead of always being 0, for any power of two `k <= n`. Use `n` at least
    /// the number of shards.
    pub vibration: u32,
}

impl Default for SnowflakeConfig {
    fn default() -> Self {
        SnowflakeConfig {
            layout: Layout::DEFAULT,
            epoch_ms: DEFAULT_EPOCH_MS,
            clock_backwards_tolerance_ms: 10,
            vibration: 0,
        }
    }
}

/// Why a generator could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("room {room} does not fit the layout's {bits} room bits (rooms 0–{max})")]
    Room { room: u32, bits: u8, max: u32 },
    #[error("worker {worker} does not fit the layout's {bits} worker bits (workers 0–{max})")]
    Worker { worker: u32, bits: u8, max: u32 },
    #[error(
        "vibration {vibration} is not 0 or a power of two up to half the sequence space ({max})"
    )]
    Vibration { vibration: u32, max: u32 },
    #[error("clock_backwards_tolerance_ms {0} is more than 1000")]
    Tolerance(u64),
    #[error("epoch_ms {epoch_ms} is not before the clock ({now_ms} ms since 1970)")]
    EpochInFuture { epoch_ms: u64, now_ms: u64 },
    #[error("epoch_ms {epoch_ms} is so old that the {bits}-bit time field has already run out")]
    EpochTooOld { epoch_ms: u64, bits: u8 },
}

/// An ID taken apart by [`Generator::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decoded {
    /// When the ID was made, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub room: u32,
    pub worker: u32,
    pub sequence: u32,
}

/// Why no ID can be generated now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("the clock reads {now_ms} ms since 1970, not after the ID epoch {epoch_ms}")]
    BeforeEpoch { now_ms: u64, epoch_ms: u64 },
    #[error(
        "the clock is past the end of the {bits}-bit time field ({max_ms} ms after the epoch): \
         IDs need a new epoch or layout"
    )]
    TimeOverflow { bits: u8, max_ms: u64 },
    #[error(
        "the clock went back {by_ms} ms, not less than the {tolerance_ms} ms tolerance: no ID \
         until it is back within the tolerance of the last millisecond used"
    )]
    ClockBackwards { by_ms: u64, tolerance_ms: u64 },
}

/// Why [`Generator::try_next`] asks the caller to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// This millisecond's sequence is used up.
    SequenceExhausted,
    /// The clock stepped back by `by_ms`, within the tolerance.
    ClockBackwards { by_ms: u64 },
}

/// What [`Generator::try_next`] gives: an ID, or how long to wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Id(i64),
    Wait { ms: u64, why: WaitReason },
}

/// A lock-free snowflake generator for one room and worker.
///
/// The state is one `AtomicU64` holding the last millisecond used and the last sequence in it;
/// each ID is one compare-and-swap. IDs of one generator strictly increase.
#[derive(Debug)]
pub struct Generator<C = SystemClock> {
    clock: C,
    layout: Layout,
    epoch_ms: u64,
    tolerance_ms: u64,
    vibration: u64,
    room: u64,
    worker: u64,
    /// `(time << sequence_bits) | sequence` of the last ID; 0 before the first (time 0 is never
    /// used: the clock must be after the epoch).
    state: AtomicU64,
}

impl Generator<SystemClock> {
    /// A generator on the system clock.
    pub fn new(config: &SnowflakeConfig, room: u32, worker: u32) -> Result<Self, ConfigError> {
        Generator::with_clock(config, room, worker, SystemClock)
    }
}

impl<C: Clock> Generator<C> {
    pub fn with_clock(
        config: &SnowflakeConfig,
        room: u32,
        worker: u32,
        clock: C,
    ) -> Result<Self, ConfigError> {
        let layout = config.layout;
        if room > layout.max_room() {
            return Err(ConfigError::Room {
                room,
                bits: layout.room_bits(),
                max: layout.max_room(),
            });
        }
        if worker > layout.max_worker() {
            return Err(ConfigError::Worker {
                worker,
                bits: layout.worker_bits(),
                max: layout.max_worker(),
            });
        }
        let half = 1u32 << (layout.sequence_bits() - 1);
        if config.vibration > half || (config.vibration != 0 && !config.vibration.is_power_of_two())
        {
            return Err(ConfigError::Vibration {
                vibration: config.vibration,
                max: half,
            });
        }
        if config.clock_backwards_tolerance_ms > 1000 {
            return Err(ConfigError::Tolerance(config.clock_backwards_tolerance_ms));
        }
        let now = clock.now_ms();
        if now <= config.epoch_ms {
            return Err(ConfigError::EpochInFuture {
                epoch_ms: config.epoch_ms,
                now_ms: now,
            });
        }
        if now - config.epoch_ms > layout.max_time() {
            return Err(ConfigError::EpochTooOld {
                epoch_ms: config.epoch_ms,
                bits: layout.time_bits(),
            });
        }
        Ok(Generator {
            clock,
            layout,
            epoch_ms: config.epoch_ms,
            tolerance_ms: config.clock_backwards_tolerance_ms,
            vibration: u64::from(config.vibration),
            room: u64::from(room),
            worker: u64::from(worker),
            state: AtomicU64::new(0),
        })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn epoch_ms(&self) -> u64 {
        self.epoch_ms
    }

    /// The parts of an ID made with this generator's epoch and layout, with its time as a Unix
    /// timestamp.
    pub fn decode(&self, id: i64) -> Decoded {
        let p = self.layout.decode(id);
        Decoded {
            timestamp_ms: self.epoch_ms + p.time,
            room: p.room,
            worker: p.worker,
            sequence: p.sequence,
        }
    }

    /// The first sequence of millisecond `time`: 0, or with vibration `n` (a power of two) the
    /// SplitMix64 finalizer of `time ^ room << 56 ^ worker << 40`, mod `n`, so that consecutive
    /// or periodic milliseconds, and different workers in one millisecond, start at different
    /// sequences. Computed once per millisecond.
    #[inline]
    fn start_sequence(&self, time: u64) -> u64 {
        if self.vibration == 0 {
            return 0;
        }
        let mut z = time ^ (self.room << 56) ^ (self.worker << 40);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % self.vibration
    }

    /// One attempt, never blocking: an ID, a wait (sequence used up, or the clock stepped back
    /// within the tolerance), or an error.
    pub fn try_next(&self) -> Result<Attempt, IdError> {
        let seq_bits = self.layout.sequence_bits();
        let seq_max = u64::from(self.layout.max_sequence());
        loop {
            // The state first, then the clock: a thread paused between the two then still reads
            // a time at or after the state's (other threads only move the state to times they
            // read earlier), so a pause is never mistaken for the clock going back.
            // Relaxed is enough: every ID comes from the value this thread swapped in, and all
            // swaps of one atomic are totally ordered.
            let current = self.state.load(Ordering::Relaxed);
            let now = self.clock.now_ms();
            if now <= self.epoch_ms {
                return Err(IdError::BeforeEpoch {
                    now_ms: now,
                    epoch_ms: self.epoch_ms,
                });
            }
            let time = now - self.epoch_ms;
            if time > self.layout.max_time() {
                return Err(IdError::TimeOverflow {
                    bits: self.layout.time_bits(),
                    max_ms: self.layout.max_time(),
                });
            }
            let (last, seq) = (current >> seq_bits, current & seq_max);
            let (time, seq) = if time > last {
                (time, self.start_sequence(time))
            } else if time == last {
                if seq == seq_max {
                    return Ok(Attempt::Wait {
                        ms: 1,
                        why: WaitReason::SequenceExhausted,
                    });
                }
                (time, seq + 1)
            } else {
                let by_ms = last - time;
                if by_ms >= self.tolerance_ms {
                    return Err(IdError::ClockBackwards {
                        by_ms,
                        tolerance_ms: self.tolerance_ms,
                    });
                }
                return Ok(Attempt::Wait {
                    ms: by_ms,
                    why: WaitReason::ClockBackwards { by_ms },
                });
            };
            let next = (time << seq_bits) | seq;
            if self
                .state
                .compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(Attempt::Id(self.layout.compose_unchecked(
                    time,
                    self.room,
                    self.worker,
                    seq,
                )));
            }
        }
    }

    /// The next ID, blocking the thread through waits: a used-up millisecond is spun (then
    /// yielded) through, a longer wait slept. For threads that may block; inside an async
    /// runtime use [`Generator::next_with`]. With a [`ManualClock`] that nobody advances, a
    /// wait never ends: tests use [`Generator::try_next`].
    pub fn next_blocking(&self) -> Result<i64, IdError> {
        let mut spins = 0u32;
        loop {
            match self.try_next()? {
                Attempt::Id(id) => return Ok(id),
                Attempt::Wait { ms, .. } if ms > 1 => {
                    std::thread::sleep(Duration::from_millis(ms - 1));
                }
                Attempt::Wait { .. } => {
                    spins = spins.saturating_add(1);
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
        }
    }

    /// The next ID, sleeping through waits with `sleep` (e.g. `tokio::time::sleep`), so that a
    /// used-up millisecond or a small clock step back never blocks an async worker thread.
    pub async fn next_with<F, Fut>(&self, sleep: F) -> Result<i64, IdError>
    where
        F: Fn(Duration) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            match self.try_next()? {
                Attempt::Id(id) => return Ok(id),
                Attempt::Wait { ms, .. } => sleep(Duration::from_millis(ms)).await,
            }
        }
    }
}
