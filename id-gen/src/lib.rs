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
//! - A clock step back of at most `clock_backwards_tolerance_ms` (default 10) is waited out; a
//!   longer one is refused with [`IdError::ClockBackwards`] until the clock is back at the last
//!   millisecond used. A duplicate is never handed out.
//! - A used-up millisecond (4 096 IDs in the default layout) waits for the next one.
//! - "Waiting" never blocks an async worker: [`Generator::try_next`] returns
//!   [`Attempt::Wait`] and [`Generator::next_with`] sleeps with the runtime's sleep.
//! - The state lives in memory: a proxy restarted while its clock is behind the last millisecond
//!   it used before the restart could repeat IDs of that worker. Worker ids leased with their last
//!   time (issue 11) close that gap; until then, do not restart a proxy during a clock step back.
//!
//! # Why not `snowflake_me` (or another crate)
//!
//! The design names `snowflake_me` (houseme/snowflake-rs; read at 2.0.1). Its generator is the
//! same algorithm (an `AtomicU64` of time and sequence, one CAS per ID), but it cannot meet three
//! requirements here, and none of them can be added by wrapping it:
//! - Its clock is not injectable per generator: with `std` it reads `jiff::Timestamp::now()`;
//!   without `std`, one process-wide time source is shared by every generator. Tests could not
//!   drive two generators (or parallel tests) independently.
//! - On a used-up millisecond and with its `Wait` drift strategy it busy-spins inside
//!   `next_id()`, which must not happen on a tokio worker; its `Error` strategy refuses every
//!   step back (no tolerance to wait out), and `LastTimestamp` keeps issuing IDs on the old time.
//! - It has no per-millisecond starting-sequence vibration.
//!
//! `ferroid` has an injectable clock and a non-blocking result, but its layouts are types fixed at
//! compile time, and ours is configuration. So the generator is this crate's own (about 100
//! lines); the criterion bench (`cargo bench -p id-gen`) measures it against `snowflake_me` in
//! the same run.

mod layout;
mod segment;
mod snowflake;

pub use layout::{Layout, LayoutError, PartTooLarge, Parts};
pub use segment::{
    Block, SegmentAllocator, SegmentConfig, SegmentError, SegmentSource, SourceError, TagStatus,
};
pub use snowflake::{
    Attempt, Clock, ConfigError, Generator, IdError, ManualClock, SnowflakeConfig, SystemClock,
    WaitReason, DEFAULT_EPOCH_MS,
};
