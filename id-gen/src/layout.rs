//! The bit layout of an ID: `0 | time | room | worker | sequence`, most significant first.

use serde::{Deserialize, Serialize};

/// Widths, in bits, of the four fields of an ID. They add up to 63, so every ID is a positive
/// `i64` (the sign bit is always 0).
///
/// Bounds (checked by [`Layout::new`]):
/// - `time` 38–45: milliseconds since the epoch; 38 bits last 8.7 years, 41 bits 69.7 years,
///   45 bits 1 115 years.
/// - `room` 1–6: 2–64 rooms.
/// - `worker` 1–12: 2–4 096 proxies per room.
/// - `sequence` 6–16: 64–65 536 IDs per millisecond per worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "LayoutFields", into = "LayoutFields")]
pub struct Layout {
    time: u8,
    room: u8,
    worker: u8,
    sequence: u8,
}

/// The serialized form of a [`Layout`], validated on the way in.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayoutFields {
    time_bits: u8,
    room_bits: u8,
    worker_bits: u8,
    sequence_bits: u8,
}

impl TryFrom<LayoutFields> for Layout {
    type Error = LayoutError;
    fn try_from(f: LayoutFields) -> Result<Self, LayoutError> {
        Layout::new(f.time_bits, f.room_bits, f.worker_bits, f.sequence_bits)
    }
}

impl From<Layout> for LayoutFields {
    fn from(l: Layout) -> Self {
        LayoutFields {
            time_bits: l.time,
            room_bits: l.room,
            worker_bits: l.worker,
            sequence_bits: l.sequence,
        }
    }
}

/// Why a layout was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("{field} is {bits} bits; it must be {min}–{max}")]
    OutOfBounds {
        field: &'static str,
        bits: u8,
        min: u8,
        max: u8,
    },
    #[error(
        "the fields add up to {0} bits (time {1} + room {2} + worker {3} + sequence {4}); \
         they must add up to 63 so that every ID is a positive i64"
    )]
    NotSixtyThree(u32, u8, u8, u8, u8),
}

/// The parts of an ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Parts {
    /// Milliseconds since the generator's epoch.
    pub time: u64,
    pub room: u32,
    pub worker: u32,
    pub sequence: u32,
}

/// Why [`Layout::compose`] refused parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value} does not fit in {bits} bits (at most {max})")]
pub struct PartTooLarge {
    pub field: &'static str,
    pub value: u64,
    pub bits: u8,
    pub max: u64,
}

impl Default for Layout {
    /// 41 / 3 / 7 / 12: 69 years, 8 rooms, 128 workers per room, 4 096 IDs per millisecond.
    fn default() -> Self {
        Layout::DEFAULT
    }
}

impl Layout {
    /// 41 / 3 / 7 / 12: 69 years, 8 rooms, 128 workers per room, 4 096 IDs per millisecond.
    pub const DEFAULT: Layout = Layout {
        time: 41,
        room: 3,
        worker: 7,
        sequence: 12,
    };

    pub fn new(time: u8, room: u8, worker: u8, sequence: u8) -> Result<Layout, LayoutError> {
        for (field, bits, min, max) in [
            ("time_bits", time, 38, 45),
            ("room_bits", room, 1, 6),
            ("worker_bits", worker, 1, 12),
            ("sequence_bits", sequence, 6, 16),
        ] {
            if !(min..=max).contains(&bits) {
                return Err(LayoutError::OutOfBounds {
                    field,
                    bits,
                    min,
                    max,
                });
            }
        }
        let total = u32::from(time) + u32::from(room) + u32::from(worker) + u32::from(sequence);
        if total != 63 {
            return Err(LayoutError::NotSixtyThree(
                total, time, room, worker, sequence,
            ));
        }
        Ok(Layout {
            time,
            room,
            worker,
            sequence,
        })
    }

    pub fn time_bits(&self) -> u8 {
        self.time
    }
    pub fn room_bits(&self) -> u8 {
        self.room
    }
    pub fn worker_bits(&self) -> u8 {
        self.worker
    }
    pub fn sequence_bits(&self) -> u8 {
        self.sequence
    }

    /// Largest value of a field `bits` wide.
    pub(crate) fn max(bits: u8) -> u64 {
        (1u64 << bits) - 1
    }

    pub fn max_time(&self) -> u64 {
        Self::max(self.time)
    }
    pub fn max_room(&self) -> u32 {
        Self::max(self.room) as u32
    }
    pub fn max_worker(&self) -> u32 {
        Self::max(self.worker) as u32
    }
    pub fn max_sequence(&self) -> u32 {
        Self::max(self.sequence) as u32
    }

    /// The ID made of `parts`, refusing a part that does not fit its field.
    pub fn compose(&self, parts: Parts) -> Result<i64, PartTooLarge> {
        for (field, value, bits) in [
            ("time", parts.time, self.time),
            ("room", u64::from(parts.room), self.room),
            ("worker", u64::from(parts.worker), self.worker),
            ("sequence", u64::from(parts.sequence), self.sequence),
        ] {
            if value > Self::max(bits) {
                return Err(PartTooLarge {
                    field,
                    value,
                    bits,
                    max: Self::max(bits),
                });
            }
        }
        Ok(self.compose_unchecked(
            parts.time,
            u64::from(parts.room),
            u64::from(parts.worker),
            u64::from(parts.sequence),
        ))
    }

    /// [`Layout::compose`] for parts known to fit.
    #[inline]
    pub(crate) fn compose_unchecked(&self, time: u64, room: u64, worker: u64, seq: u64) -> i64 {
        let worker_shift = self.sequence;
        let room_shift = worker_shift + self.worker;
        let time_shift = room_shift + self.room;
        // At most 63 bits by construction, so the cast never changes the value.
        ((time << time_shift) | (room << room_shift) | (worker << worker_shift) | seq) as i64
    }

    /// The parts of `id`. Any `i64` decodes (a negative one's sign bit is ignored).
    pub fn decode(&self, id: i64) -> Parts {
        let id = id as u64 & (u64::MAX >> 1);
        let worker_shift = self.sequence;
        let room_shift = worker_shift + self.worker;
        let time_shift = room_shift + self.room;
        Parts {
            time: id >> time_shift,
            room: ((id >> room_shift) & Self::max(self.room)) as u32,
            worker: ((id >> worker_shift) & Self::max(self.worker)) as u32,
            sequence: (id & Self::max(self.sequence)) as u32,
        }
    }
}
