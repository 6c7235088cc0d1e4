//! `cargo bench -p id-gen`: IDs per second from one thread and from two contending threads, this
//! crate's generator next to `snowflake_me` with the same layout, in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use id_gen::{Generator, SnowflakeConfig};

/// `threads` threads share `next` and make `total` IDs between them.
fn contended(threads: u64, total: u64, next: Arc<dyn Fn() -> i64 + Send + Sync>) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || {
                for _ in 0..total / threads {
                    black_box(next());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let ours = Arc::new(Generator::new(&SnowflakeConfig::default(), 1, 1).unwrap());
    // snowflake_me with the same 41 / 3 / 7 / 12 layout (its data center field is the room).
    let theirs = Arc::new(
        snowflake_me::Snowflake::builder()
            .start_time(id_gen::DEFAULT_EPOCH_MS as i64)
            .bit_len_time(41)
            .bit_len_data_center_id(3)
            .bit_len_machine_id(7)
            .bit_len_sequence(12)
            .data_center_id(&|| Ok(1))
            .machine_id(&|| Ok(1))
            .finalize()
            .unwrap(),
    );
    // With 16 sequence bits (65 536 IDs per ms) the layout no longer caps the rate: what one ID
    // costs each generator.
    let wide = SnowflakeConfig {
        layout: id_gen::Layout::new(38, 3, 6, 16).unwrap(),
        ..SnowflakeConfig::default()
    };
    let ours_wide = Arc::new(Generator::new(&wide, 1, 1).unwrap());
    let theirs_wide = Arc::new(
        snowflake_me::Snowflake::builder()
            .start_time(id_gen::DEFAULT_EPOCH_MS as i64)
            .bit_len_time(38)
            .bit_len_data_center_id(3)
            .bit_len_machine_id(6)
            .bit_len_sequence(16)
            .data_center_id(&|| Ok(1))
            .machine_id(&|| Ok(1))
            .finalize()
            .unwrap(),
    );
    let mut g = c.benchmark_group("ids");
    g.throughput(Throughput::Elements(1));
    g.bench_function("uncapped/id-gen", |b| {
        b.iter(|| ours_wide.next_blocking().unwrap())
    });
    g.bench_function("uncapped/snowflake_me", |b| {
        b.iter(|| theirs_wide.next_id().unwrap())
    });
    g.bench_function("one_thread/id-gen", |b| {
        b.iter(|| ours.next_blocking().unwrap())
    });
    g.bench_function("one_thread/snowflake_me", |b| {
        b.iter(|| theirs.next_id().unwrap())
    });
    for (name, next) in [
        ("two_threads/id-gen", {
            let g = ours.clone();
            Arc::new(move || g.next_blocking().unwrap()) as Arc<dyn Fn() -> i64 + Send + Sync>
        }),
        ("two_threads/snowflake_me", {
            let s = theirs.clone();
            Arc::new(move || s.next_id().unwrap().as_u64() as i64) as Arc<_>
        }),
        ("two_threads_uncapped/id-gen", {
            let g = ours_wide.clone();
            Arc::new(move || g.next_blocking().unwrap()) as Arc<_>
        }),
        ("two_threads_uncapped/snowflake_me", {
            let s = theirs_wide.clone();
            Arc::new(move || s.next_id().unwrap().as_u64() as i64) as Arc<_>
        }),
    ] {
        // Each thread makes half; an odd remainder is rounded up so every sample is ≥ `iters`.
        g.bench_function(name, |b| {
            b.iter_custom(|iters| contended(2, iters.div_ceil(2) * 2, next.clone()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
