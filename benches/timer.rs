//! The deadline set at the size the loop runs it: 10,000 armed connections. Activity (a
//! later deadline) must be O(1); an earlier deadline and expiry are O(log n).

use criterion::{criterion_group, criterion_main, Criterion};
use loopd::timer::{Time, TimerSlot, Timers};
use std::hint::black_box;

/// Connections with an armed deadline (the default connection limit).
const ARMED: usize = 10_000;

fn filled() -> (Timers<usize>, Vec<TimerSlot>) {
    let mut timers = Timers::new();
    let mut slots = vec![TimerSlot::default(); ARMED];
    for (key, slot) in slots.iter_mut().enumerate() {
        timers.arm(slot, Some(Time(300_000 + key as u64)), key);
    }
    (timers, slots)
}

fn timer(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer");

    g.bench_function("activity_later_deadline", |b| {
        let (mut timers, mut slots) = filled();
        let mut now = 300_000u64;
        let mut key = 0;
        b.iter(|| {
            now += 1;
            key = (key + 1) % ARMED;
            timers.arm(&mut slots[key], Some(Time(black_box(now + 300_000))), key);
        })
    });

    g.bench_function("earlier_deadline_rearm", |b| {
        let (mut timers, mut slots) = filled();
        let mut key = 0;
        let mut t = 299_999u64;
        b.iter(|| {
            key = (key + 1) % ARMED;
            t -= 1;
            timers.arm(&mut slots[key], Some(Time(black_box(t))), key);
        })
    });

    g.bench_function("expire_and_rearm", |b| {
        let (mut timers, mut slots) = filled();
        let mut now = 0u64;
        b.iter(|| {
            now = timers.next_deadline().unwrap().0;
            let (at, key) = timers.pop_due(Time(now)).unwrap();
            assert!(Timers::<usize>::fired(&mut slots[key], at));
            timers.arm(&mut slots[key], Some(Time(now + 300_000)), key);
        })
    });
    g.finish();
}

criterion_group!(benches, timer);
criterion_main!(benches);
