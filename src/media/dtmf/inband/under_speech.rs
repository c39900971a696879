//! PINs pressed while someone talks (issue 11): generated mixes of PINs in realistic timing
//! over speech (espeak-ng voices in ten languages, our own prompts as echo) and synthesized
//! music, at DTMF-to-speech ratios of 15, 10 and 5 dB, through PCMU and PCMA; and talk-off on
//! the same material without keys.
//!
//! The normal suite runs a representative subset on the committed material
//! (`tests/data/talkoff`, `sip-config/prompts`, music made here). The full evaluation and the
//! long talk-off set (≥ 1.5 h; `scripts/make-talkoff.sh --long` writes it, not committed) are
//! ignored tests that print the table:
//! `cargo test --release --lib dtmf::inband::under_speech -- --ignored --nocapture`.
//!
//! The ratio is the power of the two tones over the *active* level of what is under them:
//! the mean power of the 20 ms frames of the PIN's span within 16 dB of its loudest frame
//! (in the spirit of ITU-T P.56), so pauses between words do not make a mix easier.

use super::*;
use crate::media::g711;
use crate::sip::sdp::Codec;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const RATIOS: [f32; 3] = [15.0, 10.0, 5.0];
const CODECS: [Codec; 2] = [Codec::Pcmu, Codec::Pcma];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Something to press keys over, or to stay silent on.
struct Background {
    name: String,
    pcm: Vec<f32>,
}

fn read_dir_wavs(dir: &Path) -> Vec<Background> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("wav"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let pcm = crate::media::wav::read(&std::fs::read(&p).unwrap()).unwrap();
            Background {
                name: p.file_name().unwrap().to_string_lossy().into_owned(),
                pcm: pcm.into_iter().map(f32::from).collect(),
            }
        })
        .collect()
}

/// The committed speech (nine voices) and our prompts (the echo a caller's phone sends back).
fn committed_speech() -> Vec<Background> {
    let mut v = read_dir_wavs(&root().join("tests/data/talkoff"));
    v.extend(read_dir_wavs(&root().join("sip-config/prompts")));
    assert!(v.len() >= 12, "tests/data/talkoff and sip-config/prompts");
    v
}

/// The long set (`scripts/make-talkoff.sh --long`); the ignored tests fail without it.
fn long_speech() -> Vec<Background> {
    let v = read_dir_wavs(&root().join("tests/data/talkoff-long"));
    assert!(
        v.len() >= 100,
        "tests/data/talkoff-long is missing: run scripts/make-talkoff.sh --long"
    );
    v
}

/// Music pieces of `seconds` each, styles in rotation from `first_seed` on.
fn music_pieces(n: u64, seconds: f32, first_seed: u64) -> Vec<Background> {
    (first_seed..first_seed + n)
        .map(|seed| Background {
            name: format!("music-{seed}"),
            pcm: music(seed, seconds),
        })
        .collect()
}

/// Amplitude of a sine at `dbm0` (full-scale sine = +3.14 dBm0).
fn amp(dbm0: f32) -> f32 {
    32768.0 * 10f32.powf((dbm0 - FULL_SCALE_DBM0) / 20.0)
}

/// Equal-tempered note frequency (MIDI number; A4 = 69 = 440 Hz).
fn note_hz(midi: i32) -> f32 {
    440.0 * 2f32.powf((midi - 69) as f32 / 12.0)
}

/// A timbre: relative amplitudes of harmonics 1, 2, 3, ...
fn timbre(kind: usize) -> &'static [f32] {
    match kind % 5 {
        0 => &[1.0, 0.5, 0.33, 0.25, 0.2, 0.17, 0.14, 0.12], // strings / sawtooth
        1 => &[1.0, 0.05, 0.33, 0.05, 0.2, 0.05, 0.14],      // clarinet: odd harmonics
        2 => &[1.0, 0.6, 0.25, 0.15, 0.1],                   // flute, breathy low register
        3 => &[1.0, 0.7, 0.5, 0.45, 0.3, 0.2, 0.15, 0.1],    // brass
        _ => &[1.0, 0.45, 0.3, 0.2, 0.12, 0.08, 0.05],       // piano-like
    }
}

/// Adds a note: harmonics of `f0` (piano-like ones slightly stretched), attack/decay
/// envelope, optional vibrato; harmonics above 3.9 kHz are left out.
#[allow(clippy::too_many_arguments)]
fn add_note(
    out: &mut [f32],
    at: usize,
    len: usize,
    f0: f32,
    level: f32,
    kind: usize,
    vibrato: bool,
    rng: &mut SmallRng,
) {
    let harmonics = timbre(kind);
    let phases: Vec<f32> = harmonics
        .iter()
        .map(|_| rng.gen_range(0.0..std::f32::consts::TAU))
        .collect();
    let stretch = if kind % 5 == 4 { 0.0008 } else { 0.0 };
    let end = (at + len).min(out.len());
    let attack = 0.02 * RATE;
    let decay_per_s: f32 = if kind % 5 == 4 { 3.0 } else { 0.5 };
    for (i, x) in out[at.min(end)..end].iter_mut().enumerate() {
        let t = i as f32 / RATE;
        let env = (i as f32 / attack).min(1.0)
            * (-decay_per_s * t).exp()
            * ((len - i) as f32 / (0.03 * RATE)).min(1.0);
        let vib = if vibrato {
            1.0 + 0.006 * (2.0 * PI * 5.5 * t).sin()
        } else {
            1.0
        };
        let mut s = 0.0;
        for (h, (&a, &p)) in harmonics.iter().zip(&phases).enumerate() {
            let n = (h + 1) as f32;
            let f = f0 * n * (1.0 + stretch * n * n);
            if f > 3900.0 {
                break;
            }
            s += a * (2.0 * PI * f * vib * t + p).sin();
        }
        *x += level * env * s;
    }
}

/// Deterministic music-like audio: a melody (varied timbre, vibrato on some pieces), chords
/// on a pad, a bass line and drums, in a random key and tempo; the seed picks the style
/// (odd seeds drop the drums, every third a solo melody with chords only).
fn music(seed: u64, seconds: f32) -> Vec<f32> {
    let mut rng = SmallRng::seed_from_u64(0x6d75_7369_6300 + seed);
    let n = (seconds * RATE) as usize;
    let mut out = vec![0f32; n];
    let beat = (RATE * 60.0 / rng.gen_range(70.0..160.0)) as usize;
    let root = rng.gen_range(57..69);
    let minor = rng.gen_bool(0.5);
    let scale: [i32; 7] = if minor {
        [0, 2, 3, 5, 7, 8, 10]
    } else {
        [0, 2, 4, 5, 7, 9, 11]
    };
    let degree = |d: i32| {
        let o = d.div_euclid(7);
        root + 12 * o + scale[d.rem_euclid(7) as usize]
    };
    let lead = (seed % 5) as usize;
    let pad = ((seed / 5) % 5) as usize;
    let drums = seed.is_multiple_of(2);
    let bass = !seed.is_multiple_of(3);
    // Melody: a random walk on the scale, notes of 1/2, 1 or 2 beats.
    let mut d = rng.gen_range(4..10);
    let mut t = 0;
    while t < n {
        let len = beat * [1, 2, 2, 2, 4][rng.gen_range(0..5)] / 2;
        d = (d + rng.gen_range(-3..=3)).clamp(0, 16);
        if rng.gen_bool(0.85) {
            let f = note_hz(degree(d));
            add_note(&mut out, t, len, f, 0.35, lead, seed % 4 == 1, &mut rng);
        }
        t += len;
    }
    // Chords: a triad every bar (4 beats), one octave below the melody.
    let mut t = 0;
    while t < n {
        let r = rng.gen_range(0..7);
        for k in [0, 2, 4] {
            let f = note_hz(degree(r + k) - 12);
            add_note(&mut out, t, 4 * beat, f, 0.12, pad, false, &mut rng);
        }
        if bass {
            for b in 0..4 {
                let f = note_hz(degree(r) - 24);
                add_note(&mut out, t + b * beat, beat, f, 0.3, 4, false, &mut rng);
            }
        }
        t += 4 * beat;
    }
    if drums {
        let mut t = 0;
        let mut i = 0;
        while t < n {
            let end = (t + beat / 2).min(n);
            for (j, x) in out[t..end].iter_mut().enumerate() {
                let tt = j as f32 / RATE;
                let noise: f32 = rng.gen_range(-1.0..1.0);
                *x += if i % 2 == 0 {
                    // Kick: a falling sine.
                    0.6 * (2.0 * PI * (50.0 + 60.0 * (-30.0 * tt).exp()) * tt).sin()
                        * (-12.0 * tt).exp()
                } else {
                    // Snare / hi-hat: noise.
                    0.25 * noise * (-25.0 * tt).exp()
                };
            }
            t += beat / 2;
            i += 1;
        }
    }
    // Normalize to a peak of -6 dBFS, as the speech files.
    let peak = out.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-3);
    let g = 16384.0 / peak;
    out.iter_mut().for_each(|x| *x *= g);
    out
}

/// Runs audio through a codec round trip into the detector (20 ms packets); the keys found.
fn detect_g711(pcm: &[f32], codec: Codec) -> String {
    let coded: Vec<u8> = pcm
        .iter()
        .map(|x| g711::encode(codec, x.round().clamp(-32768.0, 32767.0) as i16))
        .collect();
    let table = g711::decode_table_f32(codec);
    let mut d = InbandDetector::new();
    for p in coded.chunks(160) {
        d.process_g711(p, table);
    }
    d.finish();
    let mut got = String::new();
    while let Some(e) = d.poll_event() {
        if let InbandEvent::Begin { digit, .. } = e {
            got.push(digit.as_char());
        }
    }
    got
}

fn key_freqs(key: char) -> (f32, f32) {
    for (r, row) in KEYPAD.iter().enumerate() {
        if let Some(c) = row.iter().position(|k| char::from(*k) == key) {
            return (FREQS[r], FREQS[4 + c]);
        }
    }
    unreachable!("{key}")
}

/// A PIN as people type them: 4 to 8 digits, sometimes a leading `*`, often a final `#`.
fn random_pin(rng: &mut SmallRng) -> String {
    let mut pin = String::new();
    if rng.gen_bool(0.15) {
        pin.push('*');
    }
    for _ in 0..rng.gen_range(4..=8) {
        pin.push(char::from(b'0' + rng.gen_range(0..10u8)));
    }
    if rng.gen_bool(0.5) {
        pin.push('#');
    }
    pin
}

/// Mean power of 20 ms frames.
fn frame_powers(x: &[f32]) -> Vec<f32> {
    x.chunks(160)
        .map(|c| c.iter().map(|v| v * v).sum::<f32>() / c.len() as f32)
        .collect()
}

/// One PIN pressed over `bg`: keys of 60–180 ms with 70–500 ms between them, per-tone level
/// −18 to −6 dBm0, twist −2 to +3 dB (high over low), each tone off by up to ±1 %, random
/// phases; the keys land where the background is most active (of 16 tries), 400 ms after
/// the mix starts. The background is scaled so the keys are `ratio_db` above it.
fn make_mix(bg: &Background, pin: &str, ratio_db: f32, rng: &mut SmallRng) -> Vec<f32> {
    make_mix_keys(bg, pin, ratio_db, rng).0
}

/// `make_mix` and where its keys lie: (key, first sample, samples).
fn make_mix_keys(
    bg: &Background,
    pin: &str,
    ratio_db: f32,
    rng: &mut SmallRng,
) -> (Vec<f32>, Vec<(char, usize, usize)>) {
    let ms = |v: f32| (v * 8.0).round() as usize;
    let mut presses = vec![];
    let mut t = 0;
    for k in pin.chars() {
        let on = ms(rng.gen_range(60.0..180.0));
        presses.push((k, t, on));
        t += on + ms(rng.gen_range(70.0..500.0));
    }
    let span = presses.last().map(|&(_, s, on)| s + on).unwrap();
    let (lead, tail) = (ms(400.0), ms(300.0));
    let total = lead + span + tail;
    // A prompt shorter than the PIN plays again (as it would, repeated, in an echo).
    let mut pcm = bg.pcm.clone();
    while pcm.len() < 2 * total {
        pcm.extend_from_slice(&bg.pcm);
    }
    let bg_len = pcm.len();
    // The most active placement of a few.
    let frames = frame_powers(&pcm);
    let loudest = frames.iter().fold(0f32, |m, &p| m.max(p));
    let active_share = |off: usize| {
        let f = &frames[(off + lead) / 160..(off + lead + span) / 160];
        f.iter().filter(|&&p| p > loudest * 1e-3).count() as f32 / f.len() as f32
    };
    let mut offset = 0;
    let mut best = -1.0;
    for _ in 0..16 {
        let off = rng.gen_range(0..bg_len - total);
        let a = active_share(off);
        if a > best {
            (offset, best) = (off, a);
        }
    }
    let under = &pcm[offset..offset + total];
    // Active level of what lies under the keys.
    let span_frames = frame_powers(&under[lead..lead + span]);
    let top = span_frames.iter().fold(0f32, |m, &p| m.max(p));
    let active: Vec<f32> = span_frames
        .into_iter()
        .filter(|&p| p >= top * 10f32.powf(-1.6))
        .collect();
    let bg_power = (active.iter().sum::<f32>() / active.len() as f32).max(1e-6);
    let low_dbm0 = rng.gen_range(-18.0..-6.0);
    let twist = rng.gen_range(-2.0..3.0);
    let (a_lo, a_hi) = (amp(low_dbm0), amp(low_dbm0 + twist));
    let dtmf_power = (a_lo * a_lo + a_hi * a_hi) / 2.0;
    let g = (dtmf_power / 10f32.powf(ratio_db / 10.0) / bg_power).sqrt();
    let mut out: Vec<f32> = under.iter().map(|x| g * x).collect();
    let keys = presses
        .iter()
        .map(|&(k, start, on)| (k, lead + start, on))
        .collect();
    for (k, start, on) in presses {
        let (f1, f2) = key_freqs(k);
        let f1 = f1 * (1.0 + rng.gen_range(-0.01..0.01));
        let f2 = f2 * (1.0 + rng.gen_range(-0.01..0.01));
        let (p1, p2): (f32, f32) = (
            rng.gen_range(0.0..std::f32::consts::TAU),
            rng.gen_range(0.0..std::f32::consts::TAU),
        );
        for (i, x) in out[lead + start..lead + start + on].iter_mut().enumerate() {
            let t = i as f32 / RATE;
            *x += a_lo * (2.0 * PI * f1 * t + p1).sin() + a_hi * (2.0 * PI * f2 * t + p2).sin();
        }
    }
    (out, keys)
}

/// How one PIN came out.
#[derive(Debug, Default, Clone, Copy)]
struct Score {
    exact: bool,
    /// A key read twice (the same key inserted next to itself).
    split: u32,
    /// A key not read.
    missed: u32,
    /// A key read that was not pressed, or read as another key.
    extra: u32,
}

/// Aligns `got` against `want` (edit distance) and names the differences.
fn score(want: &str, got: &str) -> Score {
    let w: Vec<char> = want.chars().collect();
    let g: Vec<char> = got.chars().collect();
    let (n, m) = (w.len(), g.len());
    let mut dp = vec![vec![0u32; m + 1]; n + 1];
    for (i, row) in dp.iter_mut().enumerate() {
        row[0] = i as u32;
    }
    for (j, v) in dp[0].iter_mut().enumerate() {
        *v = j as u32;
    }
    for i in 1..=n {
        for j in 1..=m {
            let sub = dp[i - 1][j - 1] + u32::from(w[i - 1] != g[j - 1]);
            dp[i][j] = sub.min(dp[i - 1][j] + 1).min(dp[i][j - 1] + 1);
        }
    }
    let mut s = Score {
        exact: want == got,
        ..Score::default()
    };
    let (mut i, mut j) = (n, m);
    while i > 0 || j > 0 {
        if i > 0 && j > 0 && dp[i][j] == dp[i - 1][j - 1] + u32::from(w[i - 1] != g[j - 1]) {
            if w[i - 1] != g[j - 1] {
                s.extra += 1;
            }
            (i, j) = (i - 1, j - 1);
        } else if j > 0 && dp[i][j] == dp[i][j - 1] + 1 {
            // An inserted key: a split if it repeats a neighbouring pressed key.
            let near = [i.checked_sub(1), Some(i)]
                .into_iter()
                .flatten()
                .filter_map(|k| w.get(k));
            if near.into_iter().any(|&c| c == g[j - 1]) {
                s.split += 1;
            } else {
                s.extra += 1;
            }
            j -= 1;
        } else {
            s.missed += 1;
            i -= 1;
        }
    }
    s
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    pins: u32,
    exact: u32,
    split: u32,
    missed: u32,
    extra: u32,
}

impl Tally {
    fn add(&mut self, s: Score) {
        self.pins += 1;
        self.exact += u32::from(s.exact);
        self.split += s.split;
        self.missed += s.missed;
        self.extra += s.extra;
    }
}

/// `per_background` PINs over each background, each at every ratio through both codecs (the
/// same PINs and placements at every ratio). Returns a tally per (ratio, codec) and the
/// failures as lines.
fn evaluate(backgrounds: &[Background], per_background: u64) -> (Vec<(f32, Codec, Tally)>, String) {
    let mut table: Vec<(f32, Codec, Tally)> = RATIOS
        .iter()
        .flat_map(|&r| CODECS.map(|c| (r, c, Tally::default())))
        .collect();
    let mut failures = String::new();
    for (b, bg) in backgrounds.iter().enumerate() {
        for k in 0..per_background {
            let seed = 0x5049_4e00 + (b as u64) * 1000 + k;
            let pin = random_pin(&mut SmallRng::seed_from_u64(seed));
            for row in table.chunks_mut(CODECS.len()) {
                // The same placement and key timing at every ratio.
                let ratio = row[0].0;
                let mix = make_mix(bg, &pin, ratio, &mut SmallRng::seed_from_u64(seed));
                for (ratio, codec, tally) in row.iter_mut() {
                    let got = detect_g711(&mix, *codec);
                    let s = score(&pin, &got);
                    tally.add(s);
                    if !s.exact {
                        let _ = writeln!(
                            failures,
                            "{ratio} dB {codec:?} {} #{k}: {pin} read as {got}",
                            bg.name
                        );
                    }
                }
            }
        }
    }
    (table, failures)
}

fn format_table(table: &[(f32, Codec, Tally)]) -> String {
    let mut s = String::from(
        "| ratio | codec | PINs | exact | split keys | missed keys | extra/wrong keys |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (ratio, codec, t) in table {
        let _ = writeln!(
            s,
            "| {ratio} dB | {codec:?} | {} | {} ({:.0} %) | {} | {} | {} |",
            t.pins,
            t.exact,
            100.0 * t.exact as f32 / t.pins.max(1) as f32,
            t.split,
            t.missed,
            t.extra
        );
    }
    s
}

/// What must hold, as shares of exact PINs at 15, 10 and 5 dB. Issue 11 asks every PIN at
/// 10 dB and 9 in 10 at 5 dB; this detector reaches every one at 15 and 10 dB, and at 5 dB
/// 93–95 % on the committed material and 94 % on the full evaluation. These are floors
/// against regressions, a little under what it does.
fn check_targets(table: &[(f32, Codec, Tally)], failures: &str, floors: [f32; 3]) {
    let text = format_table(table);
    for (ratio, codec, t) in table {
        let floor = match *ratio as u32 {
            15 => floors[0],
            10 => floors[1],
            _ => floors[2],
        };
        let need = (t.pins as f32 * floor).ceil() as u32;
        assert!(
            t.exact >= need,
            "{ratio} dB {codec:?}: {} of {} exact, need {need}\n{text}\n{failures}",
            t.exact,
            t.pins
        );
    }
}

#[test]
fn score_names_splits_misses_and_extras() {
    let s = score("*3510486#", "*35104486#");
    assert_eq!((s.exact, s.split, s.missed, s.extra), (false, 1, 0, 0));
    let s = score("1234", "134");
    assert_eq!((s.split, s.missed, s.extra), (0, 1, 0));
    let s = score("1234", "12734");
    assert_eq!((s.split, s.missed, s.extra), (0, 0, 1));
    let s = score("1234", "1234");
    assert!(s.exact);
}

/// The normal suite's share: two PINs over each committed voice and prompt and over four
/// music pieces, at 15, 10 and 5 dB through PCMU and PCMA (228 runs).
#[test]
fn pins_under_speech_and_music_committed_set() {
    let mut bgs = committed_speech();
    bgs.extend(music_pieces(4, 20.0, 0));
    let (table, failures) = evaluate(&bgs, 2);
    if std::env::var_os("PCR_EVAL_PRINT").is_some() {
        println!("{}", format_table(&table));
    }
    check_targets(&table, &failures, [1.0, 1.0, 0.9]);
}

/// Talk-off on the music made here (the committed speech is in tests.rs): 2 minutes, both
/// codecs.
#[test]
fn talk_off_synthesized_music_pieces() {
    let mut found = String::new();
    for bg in music_pieces(6, 20.0, 100) {
        for codec in CODECS {
            let got = detect_g711(&bg.pcm, codec);
            if !got.is_empty() {
                let _ = writeln!(found, "{} {codec:?} talked off: {got}", bg.name);
            }
        }
    }
    assert!(found.is_empty(), "{found}");
}

/// The full evaluation: three PINs over each of the ~140 voices, prompts and music pieces.
#[test]
#[ignore = "long: cargo test --release --lib dtmf::inband::under_speech -- --ignored --nocapture"]
fn pins_under_speech_full_evaluation() {
    let mut bgs = committed_speech();
    bgs.extend(long_speech());
    bgs.extend(music_pieces(12, 30.0, 1000));
    let (table, failures) = evaluate(&bgs, 3);
    println!(
        "PINs under speech and music ({} backgrounds, 3 PINs each)",
        bgs.len()
    );
    println!("{}", format_table(&table));
    println!("{failures}");
    check_targets(&table, &failures, [1.0, 1.0, 0.92]);
}

/// Talk-off on the long set: all voices through PCMU at their level and through PCMA 12 dB
/// quieter, plus 30 minutes of music both ways. Prints hours and digits.
#[test]
#[ignore = "long: cargo test --release --lib dtmf::inband::under_speech -- --ignored --nocapture"]
fn talk_off_long_set() {
    let mut speech = committed_speech();
    speech.extend(long_speech());
    let music = music_pieces(60, 30.0, 2000);
    let mut report = String::new();
    let mut digits = 0;
    let mut seconds = 0.0;
    for (what, set) in [("speech", &speech), ("music", &music)] {
        let mut set_seconds = 0.0;
        let mut set_digits = 0;
        let voices = set.len();
        for bg in set.iter() {
            set_seconds += bg.pcm.len() as f32 / RATE;
            let quieter: Vec<f32> = bg.pcm.iter().map(|x| x * 0.25).collect();
            for (codec, pcm) in [(Codec::Pcmu, &bg.pcm), (Codec::Pcma, &quieter)] {
                let got = detect_g711(pcm, codec);
                if !got.is_empty() {
                    let _ = writeln!(report, "{} {codec:?}: {got}", bg.name);
                }
                set_digits += got.len();
            }
        }
        println!(
            "talk-off {what}: {voices} files, {:.2} h (each through PCMU and PCMA), {set_digits} digits",
            set_seconds / 3600.0
        );
        digits += set_digits;
        seconds += set_seconds;
    }
    println!(
        "talk-off total: {:.2} h, {digits} digits\n{report}",
        seconds / 3600.0
    );
    assert!(seconds >= 1.5 * 3600.0, "talk-off set under 1.5 h");
    assert_eq!(digits, 0, "{report}");
}

mod diagnose;
