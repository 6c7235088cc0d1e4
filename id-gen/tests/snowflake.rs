//! The snowflake generator, driven by a manual clock, with exact expected IDs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use id_gen::{
    Attempt, ConfigError, Decoded, Generator, IdError, Layout, LayoutError, ManualClock, Parts,
    SnowflakeConfig, WaitReason, DEFAULT_EPOCH_MS,
};
use proptest::prelude::*;

const E: u64 = DEFAULT_EPOCH_MS;

type Manual = Generator<Arc<ManualClock>>;

fn generator(
    config: SnowflakeConfig,
    room: u32,
    worker: u32,
    now: u64,
) -> (Manual, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(now));
    let g = Generator::with_clock(&config, room, worker, clock.clone()).unwrap();
    (g, clock)
}

fn id(g: &Manual) -> i64 {
    match g.try_next().unwrap() {
        Attempt::Id(id) => id,
        other => panic!("expected an ID, got {other:?}"),
    }
}

fn decoded(ms: u64, room: u32, worker: u32, sequence: u32) -> Decoded {
    Decoded {
        timestamp_ms: E + ms,
        room,
        worker,
        sequence,
    }
}

#[test]
fn the_default_layout_puts_each_field_in_its_place() {
    let (g, _) = generator(SnowflakeConfig::default(), 2, 5, E + 1000);
    // time 1000 << 22 | room 2 << 19 | worker 5 << 12 | sequence 0
    assert_eq!(id(&g), 4_195_373_056);
    assert_eq!(id(&g), 4_195_373_057);
    assert_eq!(g.decode(4_195_373_057), decoded(1000, 2, 5, 1));
    assert_eq!(
        Layout::DEFAULT.decode(4_195_373_057),
        Parts {
            time: 1000,
            room: 2,
            worker: 5,
            sequence: 1
        }
    );
    let l = Layout::DEFAULT;
    assert_eq!(
        (
            l.time_bits(),
            l.room_bits(),
            l.worker_bits(),
            l.sequence_bits()
        ),
        (41, 3, 7, 12)
    );
    // Every field at its maximum is the largest positive i64: the sign bit is never used.
    let max = Parts {
        time: l.max_time(),
        room: 7,
        worker: 127,
        sequence: 4095,
    };
    assert_eq!(l.compose(max).unwrap(), i64::MAX);
}

#[test]
fn a_new_millisecond_starts_the_sequence_again() {
    let (g, clock) = generator(SnowflakeConfig::default(), 0, 1, E + 7);
    let a = id(&g);
    let b = id(&g);
    clock.advance(1);
    let c = id(&g);
    assert_eq!(g.decode(a), decoded(7, 0, 1, 0));
    assert_eq!(g.decode(b), decoded(7, 0, 1, 1));
    assert_eq!(g.decode(c), decoded(8, 0, 1, 0));
    assert!(a < b && b < c);
}

#[test]
fn a_used_up_millisecond_waits_for_the_next() {
    let (g, clock) = generator(SnowflakeConfig::default(), 1, 1, E + 50);
    let ids: Vec<i64> = (0..4096).map(|_| id(&g)).collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "one millisecond, sequences 0..4095"
    );
    assert_eq!(g.decode(ids[4095]).sequence, 4095);
    assert_eq!(
        g.try_next().unwrap(),
        Attempt::Wait {
            ms: 1,
            why: WaitReason::SequenceExhausted
        }
    );
    // Still the same millisecond: still waiting, nothing handed out.
    assert!(matches!(g.try_next().unwrap(), Attempt::Wait { .. }));
    clock.advance(1);
    assert_eq!(g.decode(id(&g)), decoded(51, 1, 1, 0));
}

#[test]
fn a_clock_step_back_under_the_tolerance_is_waited_out_without_a_duplicate() {
    let (g, clock) = generator(SnowflakeConfig::default(), 0, 0, E + 100);
    let first = id(&g);
    clock.set(E + 96);
    assert_eq!(
        g.try_next().unwrap(),
        Attempt::Wait {
            ms: 4,
            why: WaitReason::ClockBackwards { by_ms: 4 }
        }
    );
    clock.set(E + 91); // 9 ms, just under the 10 ms tolerance: still a wait
    assert!(matches!(g.try_next().unwrap(), Attempt::Wait { ms: 9, .. }));
    clock.set(E + 90); // exactly the tolerance: refused
    assert_eq!(
        g.try_next().unwrap_err(),
        IdError::ClockBackwards {
            by_ms: 10,
            tolerance_ms: 10
        }
    );
    clock.set(E + 100); // back at the last millisecond used: the sequence goes on
    assert_eq!(id(&g), first + 1);
}

#[test]
fn a_clock_step_back_beyond_the_tolerance_is_refused_until_it_is_back_within_it() {
    let config = SnowflakeConfig {
        clock_backwards_tolerance_ms: 3,
        ..SnowflakeConfig::default()
    };
    let (g, clock) = generator(config, 0, 0, E + 100);
    let first = id(&g);
    clock.set(E + 96);
    let err = g.try_next().unwrap_err();
    assert_eq!(
        err,
        IdError::ClockBackwards {
            by_ms: 4,
            tolerance_ms: 3
        }
    );
    assert!(
        err.to_string()
            .contains("went back 4 ms, not less than the 3 ms tolerance"),
        "{err}"
    );
    clock.set(E + 98); // back within the tolerance: a wait again
    assert!(matches!(g.try_next().unwrap(), Attempt::Wait { ms: 2, .. }));
    clock.set(E + 100); // the last millisecond used: the sequence goes on
    assert_eq!(id(&g), first + 1);
    clock.set(E + 101);
    assert_eq!(g.decode(id(&g)), decoded(101, 0, 0, 0));
}

#[test]
fn the_epoch_and_the_end_of_the_time_field_are_enforced() {
    // An epoch not in the past, or so old that the time field has run out, is refused at once.
    let c = SnowflakeConfig::default();
    let err = Generator::with_clock(&c, 0, 0, Arc::new(ManualClock::new(E))).unwrap_err();
    assert_eq!(
        err,
        ConfigError::EpochInFuture {
            epoch_ms: E,
            now_ms: E
        }
    );
    let late = E + Layout::DEFAULT.max_time() + 1;
    let err = Generator::with_clock(&c, 0, 0, Arc::new(ManualClock::new(late))).unwrap_err();
    assert_eq!(
        err,
        ConfigError::EpochTooOld {
            epoch_ms: E,
            bits: 41
        }
    );
    // A clock that moves there later gives errors, not IDs.
    let (g, clock) = generator(SnowflakeConfig::default(), 0, 0, E + 1);
    clock.set(E);
    assert_eq!(
        g.try_next().unwrap_err(),
        IdError::BeforeEpoch {
            now_ms: E,
            epoch_ms: E
        }
    );
    clock.set(E - 5);
    assert!(matches!(
        g.try_next().unwrap_err(),
        IdError::BeforeEpoch { .. }
    ));
    // The first millisecond after the epoch gives ID time 1: no ID is ever 0.
    clock.set(E + 1);
    assert_eq!(id(&g), 1 << 22);
    let max_time = Layout::DEFAULT.max_time();
    clock.set(E + max_time);
    assert_eq!(g.decode(id(&g)).timestamp_ms, E + max_time);
    clock.set(E + max_time + 1);
    let err = g.try_next().unwrap_err();
    assert_eq!(
        err,
        IdError::TimeOverflow {
            bits: 41,
            max_ms: max_time
        }
    );
    assert!(err.to_string().contains("new epoch or layout"), "{err}");
}

#[test]
fn vibration_spreads_the_low_bits_at_low_rates() {
    // One ID per millisecond: without vibration every ID is a multiple of 8.
    let (plain, clock) = generator(SnowflakeConfig::default(), 0, 0, E + 1);
    for _ in 0..100 {
        assert_eq!(id(&plain) % 8, 0);
        clock.advance(1);
    }
    let config = SnowflakeConfig {
        vibration: 8,
        ..SnowflakeConfig::default()
    };
    for step in [1, 7, 1000] {
        let (g, clock) = generator(config.clone(), 0, 0, E + 1);
        let mut per_shard = [0u32; 8];
        let mut last = 0;
        for _ in 0..4096 {
            let id = id(&g);
            assert!(id > last, "still strictly increasing");
            last = id;
            assert!(g.decode(id).sequence < 8);
            per_shard[(id % 8) as usize] += 1;
            clock.advance(step);
        }
        // 512 expected per shard; deterministic, so the bounds only check the spread.
        assert!(
            per_shard.iter().all(|n| (400..=624).contains(n)),
            "one ID every {step} ms: {per_shard:?}"
        );
    }
    // Exact starting sequences (the documented hash) for room 0 / worker 0 and room 2 /
    // worker 5 in the same milliseconds: other workers start elsewhere.
    let starts = |room, worker| {
        let (g, clock) = generator(config.clone(), room, worker, E + 1);
        (0..8)
            .map(|_| {
                let s = g.decode(id(&g)).sequence;
                clock.advance(1);
                s
            })
            .collect::<Vec<u32>>()
    };
    let a = starts(0, 0);
    let b = starts(2, 5);
    // Computed independently (Python) from the formula in the docs.
    assert_eq!(a, [5, 2, 0, 4, 4, 4, 4, 0]);
    assert_eq!(b, [1, 5, 2, 4, 4, 6, 2, 3]);
    // Within one millisecond the sequence counts up from its start, and runs out after
    // 4096 - start IDs.
    let (g, _) = generator(config.clone(), 0, 0, E + 1);
    let first = id(&g);
    let start = g.decode(first).sequence;
    assert_eq!(start, a[0]);
    for k in 1..(4096 - start) {
        assert_eq!(id(&g), first + i64::from(k));
    }
    assert!(matches!(
        g.try_next().unwrap(),
        Attempt::Wait {
            why: WaitReason::SequenceExhausted,
            ..
        }
    ));
    // Vibration must be a power of two.
    let bad = SnowflakeConfig {
        vibration: 6,
        ..config
    };
    assert!(matches!(
        Generator::with_clock(&bad, 0, 0, Arc::new(ManualClock::new(E + 1))),
        Err(ConfigError::Vibration {
            vibration: 6,
            max: 2048
        })
    ));
}

#[test]
fn bad_rooms_workers_and_settings_are_refused() {
    let c = SnowflakeConfig::default();
    let clock = || Arc::new(ManualClock::new(E + 1));
    let err = Generator::with_clock(&c, 8, 0, clock()).unwrap_err();
    assert_eq!(
        err,
        ConfigError::Room {
            room: 8,
            bits: 3,
            max: 7
        }
    );
    let err = Generator::with_clock(&c, 0, 128, clock()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "worker 128 does not fit the layout's 7 worker bits (workers 0–127)"
    );
    let v = SnowflakeConfig {
        vibration: 4096,
        ..c.clone()
    };
    assert!(matches!(
        Generator::with_clock(&v, 0, 0, clock()),
        Err(ConfigError::Vibration { .. })
    ));
    let t = SnowflakeConfig {
        clock_backwards_tolerance_ms: 5000,
        ..c
    };
    assert!(matches!(
        Generator::with_clock(&t, 0, 0, clock()),
        Err(ConfigError::Tolerance(5000))
    ));
}

#[test]
fn layouts_are_validated_in_code_and_in_toml() {
    assert_eq!(
        Layout::new(41, 3, 7, 13).unwrap_err(),
        LayoutError::NotSixtyThree(64, 41, 3, 7, 13)
    );
    assert_eq!(
        Layout::new(37, 6, 4, 16).unwrap_err(),
        LayoutError::OutOfBounds {
            field: "time_bits",
            bits: 37,
            min: 38,
            max: 45
        }
    );
    let l = Layout::new(39, 4, 8, 12).unwrap();
    assert_eq!(l.max_room(), 15);

    let config: SnowflakeConfig = toml::from_str(
        "epoch_ms = 1700000000000\nvibration = 4\n[layout]\ntime_bits = 40\nroom_bits = 4\nworker_bits = 7\nsequence_bits = 12\n",
    )
    .unwrap();
    assert_eq!(config.layout, Layout::new(40, 4, 7, 12).unwrap());
    assert_eq!(
        (
            config.epoch_ms,
            config.vibration,
            config.clock_backwards_tolerance_ms
        ),
        (1_700_000_000_000, 4, 10)
    );
    let err = toml::from_str::<SnowflakeConfig>(
        "[layout]\ntime_bits = 41\nroom_bits = 3\nworker_bits = 7\nsequence_bits = 13\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("must add up to 63"), "{err}");
    let err = toml::from_str::<SnowflakeConfig>("epoch = 1\n").unwrap_err();
    assert!(err.to_string().contains("unknown field `epoch`"), "{err}");
}

#[test]
fn generators_of_the_same_worker_in_different_rooms_never_collide() {
    let clock = Arc::new(ManualClock::new(E + 1));
    let c = SnowflakeConfig::default();
    let gens: Vec<(u32, Manual)> = [0u32, 1, 7]
        .into_iter()
        .map(|room| {
            (
                room,
                Generator::with_clock(&c, room, 127, clock.clone()).unwrap(),
            )
        })
        .collect();
    let mut seen = HashSet::new();
    // 3 rooms × every sequence of 5 milliseconds, the same worker number everywhere.
    for _ in 0..5 {
        for (room, g) in &gens {
            for _ in 0..4096 {
                let id = id(g);
                assert!(seen.insert(id), "duplicate {id}");
                let d = g.decode(id);
                assert_eq!((d.room, d.worker), (*room, 127));
            }
            assert!(matches!(g.try_next().unwrap(), Attempt::Wait { .. }));
        }
        clock.advance(1);
    }
    assert_eq!(seen.len(), 3 * 5 * 4096);
}

#[test]
fn eight_threads_share_one_generator_without_a_duplicate() {
    let g = Arc::new(Generator::new(&SnowflakeConfig::default(), 3, 42).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let g = g.clone();
            std::thread::spawn(move || {
                (0..1_000_000)
                    .map(|_| g.next_blocking().unwrap())
                    .collect::<Vec<i64>>()
            })
        })
        .collect();
    let mut all = Vec::with_capacity(8_000_000);
    for t in threads {
        let ids = t.join().unwrap();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "each thread sees strictly increasing IDs"
        );
        all.extend(ids);
    }
    assert!(all.iter().all(|id| *id > 0));
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 8_000_000);
    let p = g.decode(all[0]);
    assert_eq!((p.room, p.worker), (3, 42));
}

#[test]
fn one_worker_counts_strictly_up_on_the_system_clock() {
    let g = Generator::new(&SnowflakeConfig::default(), 0, 0).unwrap();
    let mut last = 0;
    for _ in 0..1_000_000 {
        let id = g.next_blocking().unwrap();
        assert!(id > last);
        last = id;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_async_path_sleeps_through_a_used_up_millisecond() {
    let (g, clock) = generator(SnowflakeConfig::default(), 0, 0, E + 10);
    for _ in 0..4096 {
        id(&g);
    }
    let slept = std::sync::Mutex::new(Vec::new());
    let next = g
        .next_with(|d| {
            slept.lock().unwrap().push(d);
            clock.advance(d.as_millis() as u64);
            std::future::ready(())
        })
        .await
        .unwrap();
    assert_eq!(*slept.lock().unwrap(), vec![Duration::from_millis(1)]);
    assert_eq!(g.decode(next), decoded(11, 0, 0, 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_async_path_sleeps_through_a_small_clock_step_back_and_fails_on_a_large_one() {
    let (g, clock) = generator(SnowflakeConfig::default(), 0, 0, E + 100);
    let first = id(&g);
    clock.set(E + 94);
    // The runtime's own sleep; meanwhile the clock comes back to the last millisecond.
    let c = clock.clone();
    let mover = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(3)).await;
        c.set(E + 100);
    });
    let next = g.next_with(tokio::time::sleep).await.unwrap();
    mover.await.unwrap();
    assert_eq!(next, first + 1);
    clock.set(E + 50);
    let err = g.next_with(tokio::time::sleep).await.unwrap_err();
    assert_eq!(
        err,
        IdError::ClockBackwards {
            by_ms: 50,
            tolerance_ms: 10
        }
    );
}

fn layout() -> impl Strategy<Value = Layout> {
    (38u8..=45, 1u8..=6, 1u8..=12).prop_filter_map("63 bits", |(t, r, w)| {
        let s = 63i32 - i32::from(t) - i32::from(r) - i32::from(w);
        u8::try_from(s)
            .ok()
            .and_then(|s| Layout::new(t, r, w, s).ok())
    })
}

proptest! {
    #[test]
    fn decode_inverts_compose(l in layout(), t in any::<u64>(), r in any::<u32>(), w in any::<u32>(), s in any::<u32>()) {
        let parts = Parts {
            time: t % (l.max_time() + 1),
            room: r % (l.max_room() + 1),
            worker: w % (l.max_worker() + 1),
            sequence: s % (l.max_sequence() + 1),
        };
        let id = l.compose(parts).unwrap();
        prop_assert!(id >= 0);
        prop_assert_eq!(l.decode(id), parts);
    }

    #[test]
    fn every_field_at_its_maximum_round_trips(l in layout()) {
        let max = Parts { time: l.max_time(), room: l.max_room(), worker: l.max_worker(), sequence: l.max_sequence() };
        prop_assert_eq!(l.compose(max).unwrap(), i64::MAX);
        prop_assert_eq!(l.decode(i64::MAX), max);
    }

    #[test]
    fn compose_refuses_a_part_too_wide(l in layout(), extra in 1u32..1000, which in 0usize..4) {
        let mut p = Parts { time: 0, room: 0, worker: 0, sequence: 0 };
        let field = match which {
            0 => { p.time = l.max_time() + u64::from(extra); "time" }
            1 => { p.room = l.max_room() + extra; "room" }
            2 => { p.worker = l.max_worker() + extra; "worker" }
            _ => { p.sequence = l.max_sequence() + extra; "sequence" }
        };
        let err = l.compose(p).unwrap_err();
        prop_assert_eq!(err.field, field);
    }
}
