//! Room-aware distributed IDs that can never collide across rooms.
//!
//! Unit databases replicate both ways between rooms, so auto-increment keys collide; the proxy
//! makes primary keys instead, two ways:
//!
//! - [`Generator`]: snowflake IDs, positive `i64`s laid out as
//!   `0 | time | room | worker | sequence` ([`Layout`], default 41 / 3 / 7 / 12 bits: 69 years
//!   from the epoch, 8 rooms, 128 workers per room, 4 096 IDs per millisecond per worker). Two
//!   generators collide only if they share room *and* worker, so rooms never collide. One
//!   generator serves all sessions of a proxy, lock-free (one compare-and-swap per ID); its clock
//!   is injected ([`Clock`]), so tests drive time. [`Layout::decode`] takes an ID apart.
//! - [`SegmentAllocator`]: dense, roughly ordered IDs in blocks from a central source, double
//!   buffered.
//!
//! # Time going wrong
//!
//! - A clock step back of less than `clock_backwards_tolerance_ms` (default 10) is waited out; a
//!   longer one is refused with [`IdError::ClockBackwards`] until the clock is back within the
//!   tolerance of the last millisecond used. A duplicate is never handed out.
//! - A used-up millisecond (4 096 IDs in the default layout) waits for the next one.
//! - "Waiting" never blocks an async worker: [`Generator::try_next`] returns
//!   [`Attempt::Wait`] and [`Generator::next_with`] sleeps with the runtime's sleep.
//! - The state lives in memory: a proxy restarted while its clock is behind the last millisecond
//!   it used before the restart could repeat IDs of that worker. Worker ids leased with their last
//!   time (issue 11) close that gap; until then, do not restart a proxy during a clock step back.
//!
//! # Why not `snowflake_me` (or another crate)
//!
//! The design names `snowflake_me` (houseme/snowflake-rs). Version 2.2.0 (the one in
//! `Cargo.lock`, a dev-dependency for the bench) has the same core (an `AtomicU64` of time and
//! sequence, one compare-and-swap per ID), a per-generator clock (`Builder::clock_source`), a
//! `Wait` drift strategy bounded by `max_clock_drift_ms`, and `wait_timeout(0)` for callers that
//! must not spin. It cannot do one thing the issue asks for: the starting-sequence vibration —
//! each millisecond's sequence always starts at 0, inside the crate, so no wrapper can change it.
//! It also reports a wait only as `WaitTimeout`, without how long to sleep, so an async caller
//! would have to poll. So the generator is this crate's own (about 100 lines); the criterion
//! bench (`cargo bench -p id-gen`) measures it against `snowflake_me` in the same run. `ferroid`
//! has an injectable clock and non-blocking results too, but its layouts are types fixed at
//! compile time, and ours is configuration.

mod layout;
#[cfg(feature = "segment")]
mod segment;
mod snowflake;

pub use layout::{Layout, LayoutError, PartTooLarge, Parts};
#[cfg(feature = "segment")]
pub use segment::{
    Block, SegmentAllocator, SegmentConfig, SegmentError, SegmentSource, SourceError, TagStatus,
};
pub use snowflake::{
    Attempt, Clock, ConfigError, Decoded, Generator, IdError, ManualClock, SnowflakeConfig,
    SystemClock, WaitReason, DEFAULT_EPOCH_MS,
};
