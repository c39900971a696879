//! DTMF detection speed. The in-band target: at least 50,000 seconds of 8 kHz audio per
//! CPU-second on one core (criterion's "elem/s" below is samples/s: divide by 8,000; the
//! first lines printed measure it in CPU time, which a shared machine does not inflate).
//! Run: `cargo bench --bench dtmf`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use pincoderouting::media::dtmf::inband::InbandDetector;
use pincoderouting::media::dtmf::rfc4733::Rfc4733Decoder;
use pincoderouting::media::g711;
use pincoderouting::sip::sdp::Codec;
use std::time::{Duration, Instant};

/// One second of µ-law: digits (half the time) or none, over a noisy background.
fn audio(digits: bool) -> Vec<u8> {
    let mut seed = 12345u32;
    let mut noise = || {
        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        (seed >> 16) as f32 / 65536.0 - 0.5
    };
    (0..8000)
        .map(|i| {
            let t = i as f32 / 8000.0;
            let tone = if digits && (i / 800) % 2 == 0 {
                6000.0
                    * ((2.0 * std::f32::consts::PI * 770.0 * t).sin()
                        + (2.0 * std::f32::consts::PI * 1336.0 * t).sin())
            } else {
                0.0
            };
            let x = tone + 3000.0 * noise();
            g711::encode(Codec::Pcmu, x as i16)
        })
        .collect()
}

/// CPU time of this thread so far (utime + stime from /proc, Linux), seconds.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which ends with ')'): utime and stime are the 12th
    // and 13th of them, in clock ticks (100 per second).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The target itself, in CPU time rather than wall time (a shared machine's wall time
/// counts other people's work): seconds of audio per CPU-second over 20,000 s of audio.
fn cpu_rate() {
    let table = g711::decode_table_f32(Codec::Pcmu);
    for (name, digits) in [("no digits", false), ("digits", true)] {
        let a = audio(digits);
        let mut d = InbandDetector::new();
        let (Some(t0), n) = (thread_cpu_seconds(), 20_000) else {
            return;
        };
        for _ in 0..n {
            for p in a.chunks(160) {
                d.process_g711(black_box(p), table);
            }
            while d.poll_event().is_some() {}
        }
        if let Some(t1) = thread_cpu_seconds() {
            let rate = n as f64 / (t1 - t0).max(0.01);
            eprintln!("dtmf/inband {name}: {rate:.0} s of audio per CPU-second (target 50000)");
        }
    }
}

fn inband(c: &mut Criterion) {
    cpu_rate();
    let table = g711::decode_table_f32(Codec::Pcmu);
    let mut g = c.benchmark_group("dtmf");
    for (name, digits) in [
        ("inband_1s_ulaw_no_digits", false),
        ("inband_1s_ulaw_digits", true),
    ] {
        let a = audio(digits);
        g.throughput(Throughput::Elements(a.len() as u64));
        let mut d = InbandDetector::new();
        g.bench_function(name, |b| {
            b.iter(|| {
                for p in a.chunks(160) {
                    d.process_g711(black_box(p), table);
                }
                while d.poll_event().is_some() {}
            })
        });
    }
    let x: [f32; 32] = std::array::from_fn(|i| (i as f32 * 0.37).sin() * 1000.0);
    g.throughput(Throughput::Elements(32));
    g.bench_function("inband_chunk_product", |b| {
        b.iter(|| pincoderouting::media::dtmf::inband::bench_product(black_box(&x)))
    });
    g.finish();
}

#[allow(clippy::disallowed_methods)]
fn rfc4733(c: &mut Criterion) {
    let mut g = c.benchmark_group("dtmf");
    g.throughput(Throughput::Elements(1));
    let mut d = Rfc4733Decoder::new();
    let t0 = Instant::now();
    let mut ts = 0u32;
    let mut n = 0u16;
    g.bench_function("rfc4733_packet", |b| {
        b.iter(|| {
            // A press every 10 packets: begins, updates, ends.
            n = n.wrapping_add(1);
            if n.is_multiple_of(10) {
                ts = ts.wrapping_add(1600);
            }
            let end = n % 10 == 9;
            let dur = (n % 10) * 160;
            let p = [
                5u8,
                if end { 0x8A } else { 0x0A },
                (dur >> 8) as u8,
                dur as u8,
            ];
            d.handle(
                t0 + Duration::from_millis(n as u64),
                ts,
                n.is_multiple_of(10),
                black_box(&p),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, inband, rfc4733);
criterion_main!(benches);
