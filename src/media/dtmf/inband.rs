//! In-band DTMF detection (ITU-T Q.23/Q.24) on linear PCM at 8 kHz.
//!
//! Hann-windowed 64-sample (8 ms) windows overlapping by half give a complete window every
//! 4 ms; each window's 8 DFT bins (the Goertzel frequencies) are the sums of two
//! half-window partial sums, so every 32-sample chunk is one fixed 32×32 matrix–vector
//! product. 4 low-band bins (125–500 Hz) are computed only for the windows that need them.
//!
//! *Beginning* a key is strict. A window is *tone-like* when its strongest low-group and
//! high-group bins are above the level floor, hold 65 % of the energy *above* the low band
//! and 40 % of the whole window, the low band (speech's fundamental and first formant, none
//! of a key's) holds no more than the tones, and its two halves carry similar energy (no
//! onset inside); it is *clean* when the tones also hold 3/4 of the whole window. A key
//! begins on a span of 7 windows (32 ms) whose first and last are tone-like with one pair,
//! 4 of them tone-like with it and 1 clean (speech over a key breaks single windows: its
//! formants take the strongest low-group bin, or the share), and which *measures* as a key:
//! each tone's frequency from its bin's phase advance over the whole span (so speech, which
//! jolts single 4 ms steps, averages out) within ±(2.5 %+1 Hz), no glide (first and last
//! steps agree), the tones' *coherent* power (the windows turned back by the measured
//! advance and summed: only a steady tone adds up) against the energy outside the DTMF
//! bands, twist on amplitudes corrected for the offset, and not two harmonics of one voice
//! or note: a pair at a small-integer ratio b:a (2:1, 3:2 of a note; 4:3, 7:5, 7:3 of a
//! voice) is rejected when Q.24 does not require it (a tone beyond ±(1.5 %+2 Hz)), and
//! otherwise when the voice's other harmonics (a±1, b±1) stand beside it over the span.
//!
//! *Holding* a key is lenient (hysteresis): each window in which both of its bins stay
//! within 9 dB of their level at the begin, and the pair keeps a quarter of the window,
//! holds it, however much speech lies over it; 8 windows in a row without (a 40 ms pause
//! spans at least 9, a 10 ms dropout at most 3) end it, so a dropout is bridged only when
//! the same key's tones come back. Another key begun ends it at once. A long press is one
//! digit, however long.
//!
//! The hot loop is that product (no recurrence, so no latency chain), written for the
//! compiler to vectorize and compiled three times: plain, AVX2+FMA and AVX-512, chosen at
//! run time. Everything else runs once per 32 samples.

use super::Digit;
use crate::media::g711;
use std::collections::VecDeque;
use std::f32::consts::PI;
use std::sync::OnceLock;

/// Level of a full-scale sine, dBm0 (ITU-T G.711: +3.14 dBm0; not π).
#[allow(clippy::approx_constant)]
pub const FULL_SCALE_DBM0: f32 = 3.14;
/// Samples per second.
pub const RATE: f32 = 8000.0;
const WIN: usize = 64;
const HOP: usize = 32;
const FREQS: [f32; 8] = [697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0];
const KEYPAD: [[u8; 4]; 4] = [
    [b'1', b'2', b'3', b'A'],
    [b'4', b'5', b'6', b'B'],
    [b'7', b'8', b'9', b'C'],
    [b'*', b'0', b'#', b'D'],
];

/// The begin span: windows (4 ms apart) whose first and last are tone-like with one pair:
/// 32 ms of tone, so 40 ms always begins; with the balance rule a 23 ms tone makes at most
/// 6 tone-like windows in a row, so never a span.
const BEGIN_WINDOWS: usize = 7;
/// Of the span's windows, the tone-like ones with its pair needed (speech breaks some).
const MIN_TONE_WINDOWS: u32 = 4;
/// Of those, the clean ones needed (see `MIN_CLEAN_FRACTION`).
const MIN_CLEAN_WINDOWS: u32 = 1;
/// Windows in a row without the held key's tones before it ends: a 10 ms dropout spans at
/// most 3, a 40 ms pause at least 9.
const GAP_WINDOWS: u32 = 8;
/// A held key's tones may fall this far below their level at begin, dB.
const MAX_FALL_DB: f32 = 9.0;
/// Share of a window's energy a held key's two tones must keep (speech over the key).
const MIN_HOLD_FRACTION: f32 = 0.25;
/// Energy below the low group a tone-like window may hold, as a share of its two tones'.
const MAX_LOW_RATIO: f32 = 1.0;
/// Share of a tone-like window's energy *above* the low band its two tones must hold, and
/// of a span's (coherently).
const MIN_TONE_FRACTION: f32 = 0.65;
/// Share of a tone-like window's whole energy its two tones must hold.
const MIN_WHOLE_FRACTION: f32 = 0.4;
/// Share of a clean window's whole energy its two tones hold.
const MIN_CLEAN_FRACTION: f32 = 0.75;
/// Weakest tone accepted, dBm0 (full-scale sine = +3.14 dBm0).
const MIN_LEVEL_DBM0: f32 = -36.0;
/// Low tone louder than high ("normal" twist) accepted up to this, dB.
const MAX_NORMAL_TWIST_DB: f32 = 9.5;
/// High tone louder than low ("reverse" twist) accepted up to this, dB.
const MAX_REVERSE_TWIST_DB: f32 = 5.5;
/// Frequency accepted within ±(this share + 1 Hz): between Q.24's 1.5 %+2 Hz and 3.5 %.
const MAX_DEVIATION: f32 = 0.025;
/// The two half-windows' energies must be within this ratio (onsets, dropouts): a window
/// then holds at least 43 samples of a tone.
const MIN_HALF_BALANCE: f32 = 0.35;
/// The mean offsets of the first two and the last two lag-32 steps of a begin (16 ms
/// apart) must agree within this, Hz: a glide through a key's frequencies is not a key.
const MAX_DRIFT_HZ: f32 = 16.0;
/// Q.24's frequency tolerance a key must be detected within: ±(1.5 % + 2 Hz) per tone.
const MUST_DEVIATION: f32 = 0.015;
const MUST_DEVIATION_HZ: f32 = 2.0;
/// Margin for the measurement's error on that tolerance, Hz.
const MUST_MARGIN_HZ: f32 = 1.0;
/// A pair with a tone outside that tolerance (but within the wider one accepted) and this
/// close (relative) to a ratio b:a of small integers is two harmonics of one note or
/// voice, not a key: 2:1 and 3:2 of a note, 4:3, 5:4, 5:3 of a high voice, and so on.
/// Harmonic pairs measured under speech come within 0.5 %.
const MAX_HARMONIC_OFFSET: f32 = 0.01;
/// A voice's pair: harmonic numbers of its row tone tried (f0 from 70 Hz up).
const MAX_VOICE_HARMONIC: u32 = 10;
/// Two tones this close (relative) to a ratio b:a of those are looked at as harmonics.
const MAX_VOICE_RATIO_OFFSET: f32 = 0.008;
/// A harmonic next to the pair (a±1, b±1) this strong against the weaker tone, dB, makes
/// it a voice (speech under a real key may put that much there by chance).
const MAX_VOICE_NEIGHBOUR_DB: f32 = -6.0;
/// ... and this strong, dB, when the ratio is within `MAX_EXACT_RATIO_OFFSET` of b:a and a
/// tone is more than `MIN_OFF_NOMINAL` off its key's frequency: a key from a phone is
/// within a fraction of a percent of nominal, a voice's pair anywhere in the tolerance,
/// and silence or Q.24's 15 dB of white noise leaves the neighbours 30 dB down.
const MAX_OFF_VOICE_NEIGHBOUR_DB: f32 = -15.0;
const MAX_EXACT_RATIO_OFFSET: f32 = 0.002;
const MIN_OFF_NOMINAL: f32 = 0.007;
/// Windows kept (a ring).
const RING: usize = 8;

/// Low-band bins (Hann bins of the 64-sample window at multiples of 125 Hz): they measure
/// the energy below the low group, where speech has most of its own and a key none. Only
/// windows that pass the cheaper tests need them, so they are computed then, not in the
/// per-chunk product.
const LOW_FREQS: [f32; 4] = [125.0, 250.0, 375.0, 500.0];
/// Σ|X|² of the low bins over the window energy they stand for (a stationary signal in
/// the band gives 12, a tone on a bin 8).
const LOW_BIN_GAIN: f32 = 10.0;
/// Outputs of the per-chunk product: re/im of the 8 bins with the first-half window
/// (0..16) and with the second-half window (16..32).
const OUTS: usize = 32;

struct Consts {
    /// `mat[i][o]`: weight of input sample `i` of a chunk in output `o`.
    mat: [[f32; OUTS]; HOP],
    /// `low_mat[n]`: weights of window sample `n` in the low bins (re 0..4, im 4..8).
    low_mat: [[f32; 8]; WIN],

    /// Bin power of a tone at the level floor: (A·Σw/2)².
    min_power: f32,
    /// Below this a chunk cannot be half of a tone-like window.
    min_chunk_energy: f32,
    /// Energy of one tone at the level floor over a window.
    min_window_energy: f32,
    /// The twist limits as amplitude ratios.
    max_normal_ratio: f32,
    max_reverse_ratio: f32,
    /// Each bin's own phase advance over 32 samples, wrapped to (-π, π].
    own32: [f32; 8],
    /// (Σw)² / (2·WIN): |X|² of a pure tone over its (unwindowed) energy in the window.
    gain: f32,
    /// Hann window over a whole span (`RING` chunks).
    span_hann: [f32; RING * HOP],
    /// `MAX_VOICE_NEIGHBOUR_DB` and `MAX_OFF_VOICE_NEIGHBOUR_DB` as power ratios.
    max_voice_neighbour: f32,
    max_off_voice_neighbour: f32,
}

fn consts() -> &'static Consts {
    static C: OnceLock<Consts> = OnceLock::new();
    C.get_or_init(|| {
        let hann = |n: usize| {
            let s = (std::f64::consts::PI * (n as f64 + 0.5) / WIN as f64).sin();
            s * s
        };
        let sum_w = (0..WIN).map(hann).sum::<f64>() as f32;
        let mut mat = [[0f32; OUTS]; HOP];
        for (i, row) in mat.iter_mut().enumerate() {
            // The row's outputs in blocks of 8 bins: re and im of the first half-window
            // (sample i), then re and im of the second (sample HOP + i).
            for (block, out) in row.chunks_exact_mut(8).enumerate() {
                let n = (block / 2) * HOP + i;
                let w = hann(n);
                for (o, f) in out.iter_mut().zip(FREQS) {
                    let ph = 2.0 * std::f64::consts::PI * f as f64 / RATE as f64 * n as f64;
                    *o = if block % 2 == 0 {
                        (w * ph.cos()) as f32
                    } else {
                        (-w * ph.sin()) as f32
                    };
                }
            }
        }
        // The low bins over a whole window: re of the 4 bins, then im.
        let mut low_mat = [[0f32; 8]; WIN];
        for (n, row) in low_mat.iter_mut().enumerate() {
            let w = hann(n);
            let (re, im) = row.split_at_mut(4);
            for ((r, i), f) in re.iter_mut().zip(im).zip(LOW_FREQS) {
                let ph = 2.0 * std::f64::consts::PI * f as f64 / RATE as f64 * n as f64;
                *r = (w * ph.cos()) as f32;
                *i = (-w * ph.sin()) as f32;
            }
        }
        let own = |lag: f64| {
            FREQS.map(|f| {
                let a = 2.0 * std::f64::consts::PI * f as f64 * lag / RATE as f64;
                (a.sin().atan2(a.cos())) as f32
            })
        };
        let min_amp = 32768.0 * 10f32.powf((MIN_LEVEL_DBM0 - FULL_SCALE_DBM0) / 20.0);
        let mut span_hann = [0f32; RING * HOP];
        for (n, w) in span_hann.iter_mut().enumerate() {
            let s = (std::f64::consts::PI * (n as f64 + 0.5) / (RING * HOP) as f64).sin();
            *w = (s * s) as f32;
        }
        Consts {
            // Half-balance ≥ 0.5 means each half holds ≥ 1/3 of a window's energy, and a
            // window holds ≥ min_window_energy; keep a factor 2 of margin.
            min_chunk_energy: min_amp * min_amp * WIN as f32 / 2.0 / 3.0 / 2.0,
            min_power: (min_amp * sum_w / 2.0) * (min_amp * sum_w / 2.0),
            // One tone of amplitude A holds A²/2 · WIN of energy in a window.
            min_window_energy: min_amp * min_amp * WIN as f32 / 2.0,
            max_normal_ratio: 10f32.powf(MAX_NORMAL_TWIST_DB / 20.0),
            max_reverse_ratio: 10f32.powf(MAX_REVERSE_TWIST_DB / 20.0),
            own32: own(HOP as f64),
            mat,
            low_mat,
            gain: sum_w * sum_w / (2.0 * WIN as f32),
            span_hann,
            max_voice_neighbour: 10f32.powf(MAX_VOICE_NEIGHBOUR_DB / 10.0),
            max_off_voice_neighbour: 10f32.powf(MAX_OFF_VOICE_NEIGHBOUR_DB / 10.0),
        }
    })
}

/// One completed window: the complex Goertzel output per tone and energies.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    re: [f32; 8],
    im: [f32; 8],
    power: [f32; 8],
    /// Σ x² over the window.
    energy: f32,
    /// Estimated energy below the low group (the low bins).
    low: f32,
    /// Σ x² over each half.
    halves: [f32; 2],
    /// Index of the window's first sample.
    start: u64,
    /// The tone pair (row, column bins) if the window is tone-like.
    class: Option<(usize, usize)>,
    /// A tone-like window whose pair also holds `MIN_CLEAN_FRACTION` of its whole energy.
    clean: bool,
}

impl Window {
    /// Completes the 8 bins: the first half-window's partial sums (re 0..8, im 8..16,
    /// carried from the previous chunk) plus this chunk's second-half outputs (re 16..24,
    /// im 24..32), and their powers.
    // Invariant: k < 8 indexes [f32; 8]; k and 8 + k index [f32; 16]; 16 + k and 24 + k
    // index [f32; OUTS = 32]. All constant-bounded, so no check survives in the hot loop.
    #[allow(clippy::indexing_slicing)]
    #[inline]
    fn sum_halves(&mut self, first: &[f32; 16], out: &[f32; OUTS]) {
        for k in 0..8 {
            self.re[k] = first[k] + out[16 + k];
            self.im[k] = first[8 + k] + out[24 + k];
            self.power[k] = self.re[k] * self.re[k] + self.im[k] * self.im[k];
        }
    }

    /// The phase of bin `k` (pairs' bins are always < 8).
    fn phase_of(&self, k: usize) -> f32 {
        match (self.im.get(k), self.re.get(k)) {
            (Some(&im), Some(&re)) => atan2(im, re),
            _ => 0.0,
        }
    }
}

/// What the detector reports, with sample positions (divide by 8 for ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InbandEvent {
    Begin { digit: Digit, at_sample: u64 },
    End { at_sample: u64 },
}

/// The detector for one audio stream.
pub struct InbandDetector {
    /// First-half partial sums (re/im of 8 bins) of the window that started last chunk.
    first: [f32; 16],
    chunk: [f32; HOP],
    /// The last `RING` chunks' samples, by chunk index modulo `RING`: the span a begin
    /// measures, and the first half of the window completing now.
    past: [[f32; HOP]; RING],
    fill: usize,
    /// Energy of the previous chunk (first half of the window completing now).
    prev_chunk_energy: f32,
    /// Chunks processed so far.
    chunks: u64,
    /// The last `RING` windows; `head` is the newest.
    history: [Window; RING],
    head: usize,
    state: State,
    events: VecDeque<InbandEvent>,
}

impl Default for InbandDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for InbandDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InbandDetector")
            .field("chunks", &self.chunks)
            .finish_non_exhaustive()
    }
}

/// The key of a (row, column) bin pair; `None` only for bins outside the keypad.
fn key(r: usize, c: usize) -> Option<Digit> {
    let k = KEYPAD.get(r)?.get(c.checked_sub(4)?)?;
    Digit::from_char(char::from(*k))
}

/// Hann window magnitude response at `x` bins off centre (1 at 0).
fn hann_response(x: f32) -> f32 {
    let x = x.abs();
    if x < 1e-4 {
        return 1.0;
    }
    if (x - 1.0).abs() < 1e-4 {
        return 0.5;
    }
    let px = PI * x;
    (px.sin() / px / (1.0 - x * x)).abs()
}

/// atan2 to within 1e-5 rad (0.0003 Hz here), without a libm call.
fn atan2(y: f32, x: f32) -> f32 {
    let (ax, ay) = (x.abs(), y.abs());
    if ax == 0.0 && ay == 0.0 {
        return 0.0;
    }
    let (z, swap) = if ay > ax {
        (ax / ay, true)
    } else {
        (ay / ax, false)
    };
    let z2 = z * z;
    let mut a = z
        * (0.999_977_3
            + z2 * (-0.332_623_5
                + z2 * (0.193_543_5
                    + z2 * (-0.116_432_9 + z2 * (0.052_653_3 + z2 * -0.011_721_2)))));
    if swap {
        a = PI / 2.0 - a;
    }
    if x < 0.0 {
        a = PI - a;
    }
    if y < 0.0 {
        -a
    } else {
        a
    }
}

/// Wraps an angle in (-3π, 3π) into (-π, π].
fn wrap(a: f32) -> f32 {
    let two_pi = 2.0 * PI;
    if a > PI {
        a - two_pi
    } else if a <= -PI {
        a + two_pi
    } else {
        a
    }
}

/// Phase advance of a tone from phase `a` (earlier window) to phase `b` (later window),
/// minus its bin's `own` advance over the lag: the frequency offset as a phase, in (-π, π].
fn offset_phase(a: f32, b: f32, own: f32) -> f32 {
    wrap(wrap(b - a) - own)
}

/// The chunk's energy and, unless it is too quiet to matter, the product
/// `out[o] = Σ_i mat[i][o] · x[i]`. Independent accumulators only, so both vectorize;
/// compiled for AVX-512 and AVX2+FMA too, chosen at run time.
fn analyze(c: &Consts, x: &[f32; HOP]) -> (f32, Option<[f32; OUTS]>) {
    let e = energy(x);
    if e < c.min_chunk_energy {
        return (e, None);
    }
    #[cfg(target_arch = "x86_64")]
    {
        static LEVEL: OnceLock<u8> = OnceLock::new();
        let level = *LEVEL.get_or_init(|| {
            if std::env::var_os("PCR_NO_AVX512").is_none()
                && std::arch::is_x86_feature_detected!("avx512f")
            {
                2
            } else if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                1
            } else {
                0
            }
        });
        match level {
            // SAFETY: the CPU supports the features of the chosen variant (checked above).
            2 => return (e, Some(unsafe { product_avx512(c, x) })),
            1 => return (e, Some(unsafe { product_avx2(c, x) })),
            _ => {}
        }
    }
    (e, Some(product_body::<false>(c, x)))
}

#[inline(always)]
fn product_body<const FMA: bool>(c: &Consts, x: &[f32; HOP]) -> [f32; OUTS] {
    let mac = |acc: f32, a: f32, b: f32| if FMA { a.mul_add(b, acc) } else { acc + a * b };
    // Four accumulator sets (rows mod 4) keep enough independent FMAs in flight to hide
    // their latency, whatever the vector width.
    let mut acc = [[0f32; OUTS]; 4];
    for (rows, xs) in c.mat.chunks_exact(4).zip(x.chunks_exact(4)) {
        for ((a, row), &xi) in acc.iter_mut().zip(rows).zip(xs) {
            for (ao, m) in a.iter_mut().zip(row) {
                *ao = mac(*ao, *m, xi);
            }
        }
    }
    let [a0, a1, a2, a3] = &acc;
    let mut out = [0f32; OUTS];
    for ((((o, v0), v1), v2), v3) in out.iter_mut().zip(a0).zip(a1).zip(a2).zip(a3) {
        *o = (v0 + v1) + (v2 + v3);
    }
    out
}

/// The energy below the low group in the window made of two chunks, from the low bins.
fn low_energy(c: &Consts, first: &[f32; HOP], second: &[f32; HOP]) -> f32 {
    // Four accumulator sets, as in the product.
    let mut acc = [[0f32; 8]; 4];
    let rows = c.low_mat.chunks_exact(4);
    let xs = first.chunks_exact(4).chain(second.chunks_exact(4));
    for (rows, xs) in rows.zip(xs) {
        for ((a, row), &xi) in acc.iter_mut().zip(rows).zip(xs) {
            for (ao, m) in a.iter_mut().zip(row) {
                *ao += m * xi;
            }
        }
    }
    let [a0, a1, a2, a3] = acc;
    let mut bins = [0f32; 8];
    for ((((o, v0), v1), v2), v3) in bins.iter_mut().zip(a0).zip(a1).zip(a2).zip(a3) {
        *o = (v0 + v1) + (v2 + v3);
    }
    let (re, im) = bins.split_at(4);
    re.iter().zip(im).map(|(r, i)| r * r + i * i).sum::<f32>() / LOW_BIN_GAIN
}

/// Σ x² of a chunk, with lane-wise partial sums so it vectorizes.
#[inline]
fn energy(x: &[f32; HOP]) -> f32 {
    let mut acc = [0f32; 8];
    for xs in x.chunks_exact(8) {
        for (a, v) in acc.iter_mut().zip(xs) {
            *a += v * v;
        }
    }
    let [a0, a1, a2, a3, a4, a5, a6, a7] = acc;
    ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn product_avx512(c: &Consts, x: &[f32; HOP]) -> [f32; OUTS] {
    product_body::<true>(c, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn product_avx2(c: &Consts, x: &[f32; HOP]) -> [f32; OUTS] {
    product_body::<true>(c, x)
}

/// The ring slot of chunk `i`.
fn ring_index(i: u64) -> usize {
    (i % RING as u64) as usize
}

/// Slot `i` of the window ring (`i` is always below `RING`; the fallback is never taken).
fn ring_slot(history: &mut [Window; RING], i: usize) -> Option<&mut Window> {
    history.get_mut(i % RING)
}

/// Is `r` (high tone over low) within `MAX_HARMONIC_OFFSET` of a ratio b:a, a ≤ 10?
fn harmonic(r: f32) -> bool {
    (1..=MAX_VOICE_HARMONIC).any(|a| {
        let a = a as f32;
        let b = (a * r).round();
        (r * a / b - 1.0).abs() <= MAX_HARMONIC_OFFSET
    })
}

/// |X(f)|² at each of `freqs` of an already windowed block, all in one pass (a rotating
/// phasor per frequency; only the rare measurement of a voice uses it). A frequency of 0
/// gives 0.
fn dft_powers<const N: usize>(x: &[f32], freqs: [f32; N]) -> [f32; N] {
    let step = freqs.map(|f| (2.0 * PI * f / RATE).sin_cos());
    let (mut rr, mut ri) = ([1f32; N], [0f32; N]);
    let (mut sr, mut si) = ([0f32; N], [0f32; N]);
    for v in x {
        let lanes = sr.iter_mut().zip(&mut si).zip(rr.iter_mut().zip(&mut ri));
        for (((sr, si), (rr, ri)), (s, c)) in lanes.zip(&step) {
            *sr += v * *rr;
            *si += v * *ri;
            (*rr, *ri) = (*rr * c - *ri * s, *ri * c + *rr * s);
        }
    }
    let mut p = [0f32; N];
    for (((p, sr), si), f) in p.iter_mut().zip(sr).zip(si).zip(freqs) {
        *p = if f == 0.0 { 0.0 } else { sr * sr + si * si };
    }
    p
}

fn hz(phase: f32, lag: usize) -> f32 {
    phase * RATE / (2.0 * PI * lag as f32)
}

/// Why a begin span did not measure as a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reject {
    /// A tone's measured frequency is outside the tolerance.
    Frequency,
    /// The frequency moved between the span's start and end.
    Glide,
    /// The coherent tone power is too small a share of the energy above the low band.
    Coherence,
    /// Too much energy below the low group.
    LowBand,
    /// Twist beyond the limits.
    Twist,
    /// The tones stand at a harmonic ratio.
    Harmonic,
    /// The tones are two harmonics of a voice (its other harmonics stand beside them).
    Voice,
    /// Never: bins outside the keypad or windows outside the ring.
    Internal,
}

/// A key judged down: its pair and the mean power of each tone's bin when it began.
#[derive(Debug, Clone, Copy)]
struct Held {
    digit: Digit,
    pair: (usize, usize),
    /// Bin power below which a tone counts as gone (its begin level less `MAX_FALL_DB`).
    floor: [f32; 2],
}

#[derive(Debug, Clone, Copy)]
enum State {
    Idle,
    Active {
        key: Held,
        /// Windows in a row in which the key's tones were not held.
        gap: u32,
        /// End of the last window in which they were.
        last_end: u64,
    },
}

impl InbandDetector {
    pub fn new() -> Self {
        let _ = consts();
        InbandDetector {
            first: [0.0; 16],
            chunk: [0.0; HOP],
            past: [[0.0; HOP]; RING],
            fill: 0,
            prev_chunk_energy: 0.0,
            chunks: 0,
            history: [Window::default(); RING],
            head: 0,
            state: State::Idle,
            events: VecDeque::new(),
        }
    }

    /// Samples consumed so far.
    pub fn position(&self) -> u64 {
        self.chunks * HOP as u64 + self.fill as u64
    }

    /// Feeds linear PCM.
    pub fn process_i16(&mut self, samples: &[i16]) {
        for &s in samples {
            self.push(s as f32);
        }
    }

    /// Feeds G.711 bytes through a decode table (see `g711::decode_table_f32`).
    pub fn process_g711(&mut self, payload: &[u8], table: &[f32; 256]) {
        let mut bytes = payload.iter();
        loop {
            // Fill the rest of the chunk from the payload (zip stops at whichever ends first
            // and never takes a byte the chunk has no room for).
            let before = bytes.len();
            for (dst, b) in self.chunk.iter_mut().skip(self.fill).zip(&mut bytes) {
                *dst = g711::lookup(table, *b);
            }
            self.fill += before - bytes.len();
            if self.fill < HOP {
                return; // the payload is used up
            }
            self.fill = 0;
            self.run_chunk();
        }
    }

    #[inline]
    fn push(&mut self, x: f32) {
        if let Some(dst) = self.chunk.get_mut(self.fill) {
            *dst = x;
        }
        self.fill += 1;
        if self.fill >= HOP {
            self.fill = 0;
            self.run_chunk();
        }
    }

    /// The hot loop: one chunk through the 32×32 product, then the window it completes.
    fn run_chunk(&mut self) {
        let c = consts();
        // A chunk too quiet to be half of a tone-like window (the balance rule needs each
        // half to hold a third of a floor-level tone's energy) skips the product: every
        // window it belongs to fails anyway. Silence costs almost nothing.
        let (e, out) = analyze(c, &self.chunk);
        let quiet = out.is_none();
        let out = out.unwrap_or([0f32; OUTS]);
        let chunk_index = self.chunks;
        self.chunks += 1;
        if let Some(p) = self.past.get_mut(ring_index(chunk_index)) {
            *p = self.chunk;
        }
        if chunk_index > 0 {
            // The window that began last chunk ends with this one; built in its ring slot.
            self.head = (self.head + 1) % RING;
            let prev_e = self.prev_chunk_energy;
            if let Some(w) = ring_slot(&mut self.history, self.head) {
                w.energy = prev_e + e;
                w.halves = [prev_e, e];
                w.start = (chunk_index - 1) * HOP as u64;
                w.sum_halves(&self.first, &out);
                w.low = 0.0;
                let prev = self.past.get(ring_index(chunk_index + RING as u64 - 1));
                let class = match prev {
                    Some(prev) if !quiet => Self::classify(w, prev, &self.chunk),
                    _ => None,
                };
                w.class = class.map(|(p, _)| p);
                w.clean = class.is_some_and(|(_, clean)| clean);
            }
            self.step();
        }
        if let Some(first) = out.first_chunk() {
            self.first = *first;
        }
        self.prev_chunk_energy = e;
    }

    /// The window `n` windows before the newest (0 = newest), for `n < RING`.
    fn back(&self, n: usize) -> Option<&Window> {
        self.history.get((self.head + RING - n % RING) % RING)
    }

    /// Is this window tone-like, fit to be part of a key's begin? Returns its (row,
    /// column) bins and whether it is also clean.
    fn classify(
        w: &mut Window,
        first: &[f32; HOP],
        second: &[f32; HOP],
    ) -> Option<((usize, usize), bool)> {
        let c = consts();
        // Too quiet to hold two tones at the level floor: skip the rest.
        if w.energy < c.min_window_energy {
            return None;
        }
        // The strongest row bin (0..4) and column bin (4..8); the last one on a tie.
        let strongest = |(_, a): &(usize, f32), (_, b): &(usize, f32)| a.total_cmp(b);
        let bins = w.power.into_iter().enumerate();
        let (r, pr) = bins.clone().take(4).max_by(strongest)?;
        let (col, pc) = bins.skip(4).max_by(strongest)?;
        if pr < c.min_power || pc < c.min_power {
            return None;
        }
        // The tones against the energy outside the DTMF bands: below them (speech's
        // fundamental and first formant, none of a key's) judged apart from the rest, and
        // a looser share of the whole window.
        let tones = (pr + pc) / c.gain;
        let [h1, h2] = w.halves;
        if tones < MIN_WHOLE_FRACTION * w.energy || h1.min(h2) < MIN_HALF_BALANCE * h1.max(h2) {
            return None;
        }
        // A clean window leaves at most a third of the tones' energy to the rest, so it
        // passes both low-band tests as it is: only the others pay for the low bins.
        let clean = tones >= MIN_CLEAN_FRACTION * w.energy;
        if !clean {
            w.low = low_energy(c, first, second);
            if tones < MIN_TONE_FRACTION * (w.energy - w.low) || w.low > MAX_LOW_RATIO * tones {
                return None;
            }
        }
        Some(((r, col), clean))
    }

    /// Measures the last `BEGIN_WINDOWS` windows as the tones of `pair`: each tone's
    /// frequency from its phase advance over the whole span (the sum of the five lag-32
    /// steps, so speech near a tone, which jolts single steps, averages out), within
    /// ±(`MAX_DEVIATION` + 1 Hz); the first and last two steps agree within `MAX_DRIFT_HZ`
    /// (no glide); the coherent tone power against the energy outside the bands; the twist
    /// on amplitudes corrected for the measured offsets; not two harmonics of one voice or
    /// note.
    fn measure(&self, pair: (usize, usize)) -> Result<Held, Reject> {
        let c = consts();
        let nw = BEGIN_WINDOWS as f32;
        let (mut above, mut low) = (0f32, 0f32);
        for n in 0..BEGIN_WINDOWS {
            let w = self.back(n).ok_or(Reject::Internal)?;
            above += w.energy - w.low;
            low += w.low;
        }
        let (above, low) = (above / nw, low / nw);
        let mut amp = [0f32; 2];
        let mut coherent = [0f32; 2];
        let mut measured = [0f32; 2];
        let tones = amp.iter_mut().zip(&mut coherent).zip(&mut measured);
        for (((a, p), f), k) in tones.zip([pair.0, pair.1]) {
            let (Some(&own), Some(&freq)) = (c.own32.get(k), FREQS.get(k)) else {
                return Err(Reject::Internal); // classify only returns bins 0..8
            };
            // The bin in each window, oldest first, and its phase.
            let mut x = [(0f32, 0f32); BEGIN_WINDOWS];
            let mut ph = [0f32; BEGIN_WINDOWS];
            for ((xs, slot), n) in x.iter_mut().zip(&mut ph).zip((0..BEGIN_WINDOWS).rev()) {
                let w = self.back(n).ok_or(Reject::Internal)?;
                let (Some(&re), Some(&im)) = (w.re.get(k), w.im.get(k)) else {
                    return Err(Reject::Internal);
                };
                *xs = (re, im);
                *slot = w.phase_of(k);
            }
            // Each step's phase advance beyond the bin's own, and their mean.
            let mut steps = [0f32; BEGIN_WINDOWS - 1];
            for (s, (a, b)) in steps.iter_mut().zip(ph.iter().zip(ph.iter().skip(1))) {
                *s = offset_phase(*a, *b, own);
            }
            let adv = steps.iter().sum::<f32>() / steps.len() as f32;
            let offset = hz(adv, HOP);
            if offset.abs() > MAX_DEVIATION * freq + 1.0 {
                return Err(Reject::Frequency);
            }
            let early: f32 = steps.iter().take(2).sum();
            let late: f32 = steps.iter().rev().take(2).sum();
            if hz(late - early, HOP).abs() > 2.0 * MAX_DRIFT_HZ {
                return Err(Reject::Glide);
            }
            // The coherent power: the windows turned back by the measured advance and
            // summed, so only what keeps that frequency and phase for the whole span
            // adds up (speech under a key does not).
            let (sin, cos) = (own + adv).sin_cos();
            let (mut rr, mut ri) = (1f32, 0f32);
            let (mut sr, mut si) = (0f32, 0f32);
            for (xr, xi) in x {
                sr += xr * rr - xi * ri;
                si += xr * ri + xi * rr;
                (rr, ri) = (rr * cos + ri * sin, ri * cos - rr * sin);
            }
            *p = (sr * sr + si * si) / (nw * nw);
            *f = freq + offset;
            *a = p.sqrt() / hann_response(offset * WIN as f32 / RATE);
        }
        // The tones against the energy outside the DTMF bands: the band below them
        // (speech's fundamental and first formant) apart from the rest.
        let tones = (coherent[0] + coherent[1]) / c.gain;
        if tones < MIN_TONE_FRACTION * above {
            return Err(Reject::Coherence);
        }
        if low > MAX_LOW_RATIO * tones {
            return Err(Reject::LowBand);
        }
        // Twist as an amplitude ratio against the dB limits (no log on the hot path).
        let [row, col] = amp;
        if row > col * c.max_normal_ratio || col > row * c.max_reverse_ratio {
            return Err(Reject::Twist);
        }
        // Two harmonics of one voice or note stand at a small-integer ratio b:a. Such a
        // pair that Q.24 does not require us to detect (a tone beyond ±(1.5 % + 2 Hz)) is
        // rejected outright; one it does, only when the voice's other harmonics are there.
        let [f_row, f_col] = measured;
        let must = [(f_row, pair.0), (f_col, pair.1)]
            .into_iter()
            .all(|(f, k)| {
                FREQS.get(k).is_some_and(|&n| {
                    (f - n).abs() <= MUST_DEVIATION * n + MUST_DEVIATION_HZ + MUST_MARGIN_HZ
                })
            });
        if !must && harmonic(f_col / f_row) {
            return Err(Reject::Harmonic);
        }
        let dev = [(f_row, pair.0), (f_col, pair.1)]
            .into_iter()
            .map(|(f, k)| FREQS.get(k).map_or(1.0, |&n| (f / n - 1.0).abs()))
            .fold(0f32, f32::max);
        if self.voiced(f_row, f_col, dev) {
            return Err(Reject::Voice);
        }
        let fall = 10f32.powf(-MAX_FALL_DB / 10.0);
        Ok(Held {
            digit: key(pair.0, pair.1).ok_or(Reject::Internal)?,
            pair,
            floor: coherent.map(|p| p * fall),
        })
    }

    /// Does window `w` still carry the held key? Both its bins near their begin level and
    /// the pair still a fair share of the window: speech over a key lowers the share but
    /// not the tones, and a pause lowers the tones.
    fn holds(w: &Window, key: &Held) -> bool {
        let (Some(&pr), Some(&pc)) = (w.power.get(key.pair.0), w.power.get(key.pair.1)) else {
            return false;
        };
        let [fr, fc] = key.floor;
        pr >= fr && pc >= fc && pr + pc >= MIN_HOLD_FRACTION * consts().gain * w.energy
    }

    fn step(&mut self) {
        let Some(w) = self.back(0) else {
            return;
        };
        // What is needed of the newest window, read once (no copy of it).
        let (class, start) = (w.class, w.start);
        let held = match self.state {
            State::Active { key, .. } => Self::holds(w, &key),
            State::Idle => false,
        };
        let end = start + WIN as u64;
        // A span long enough, of another pair than the key held, that measures as a key.
        let candidate = match (class, self.state) {
            (None, _) => None,
            (Some(p), State::Active { key, .. }) if p == key.pair => None,
            (Some(p), _) => self
                .span(p)
                .and_then(|at| self.measure(p).ok().map(|k| (k, at))),
        };
        self.state = match self.state {
            State::Idle => match candidate {
                Some((key, at)) => self.begin(key, at, end),
                None => State::Idle,
            },
            State::Active { key, gap, last_end } => match candidate {
                // Another key held long enough: it replaces this one at once.
                Some((new, at)) => {
                    self.events.push_back(InbandEvent::End {
                        at_sample: last_end,
                    });
                    self.begin(new, at, end)
                }
                None if held => State::Active {
                    key,
                    gap: 0,
                    last_end: end,
                },
                None if gap + 1 >= GAP_WINDOWS => {
                    self.events.push_back(InbandEvent::End {
                        at_sample: last_end,
                    });
                    State::Idle
                }
                None => State::Active {
                    key,
                    gap: gap + 1,
                    last_end,
                },
            },
        };
    }

    /// If the begin span ending at the newest window (tone-like with `pair`) may begin a
    /// key: its oldest window is tone-like with the pair too, and enough of its windows are
    /// tone-like and clean. Returns the span's first sample.
    fn span(&self, pair: (usize, usize)) -> Option<u64> {
        let oldest = self.back(BEGIN_WINDOWS - 1)?;
        if oldest.class != Some(pair) {
            return None;
        }
        let (mut tone, mut clean) = (0u32, 0u32);
        for n in 0..BEGIN_WINDOWS {
            let w = self.back(n)?;
            if w.class == Some(pair) {
                tone += 1;
                clean += u32::from(w.clean);
            }
        }
        (tone >= MIN_TONE_WINDOWS && clean >= MIN_CLEAN_WINDOWS).then_some(oldest.start)
    }

    /// Are the two measured tones harmonics `a` and `b` of one voice? Speech that makes a
    /// pair (a high voice's 3rd and 7th, a low one's 7th and 10th) has its other harmonics
    /// too, about as strong; a key has nothing beside its tones but what speech under it
    /// happens to put there. For each `a` whose `b` fits the ratio, the harmonics next to
    /// the pair (a±1, b±1) are measured over the whole span (256 samples, Hann: 31 Hz
    /// apart, so harmonics of a 70 Hz voice are told apart) against the weaker tone. `dev`
    /// is the larger relative offset of the two tones from their key's frequencies.
    fn voiced(&self, f_row: f32, f_col: f32, dev: f32) -> bool {
        let c = consts();
        let r = f_col / f_row;
        // The ratios b:a the pair fits (if none, nothing more to do).
        let fits = (2..=MAX_VOICE_HARMONIC).filter_map(|a| {
            let a = a as f32;
            let b = (a * r).round();
            ((r * a / b - 1.0).abs() <= MAX_VOICE_RATIO_OFFSET).then_some((a, b))
        });
        let mut fits = fits.peekable();
        if fits.peek().is_none() {
            return false;
        }
        // The span's samples, oldest first, windowed.
        let mut x = [0f32; RING * HOP];
        let spans = x.chunks_exact_mut(HOP).zip(c.span_hann.chunks_exact(HOP));
        for (i, (dst, w)) in spans.enumerate() {
            if let Some(src) = self.past.get(ring_index(self.chunks + i as u64)) {
                for ((d, s), w) in dst.iter_mut().zip(src).zip(w) {
                    *d = s * w;
                }
            }
        }
        fits.any(|(a, b)| {
            // The voice's f0 that best fits both tones, and the harmonics beside them
            // (a + 1 = b or b - 1 = a measure a tone again: left out).
            let f0 = (a * f_row + b * f_col) / (a * a + b * b);
            let side = |k: f32| {
                if k == a || k == b || k * f0 > RATE / 2.0 - 100.0 {
                    0.0
                } else {
                    k * f0
                }
            };
            let [p_row, p_col, n1, n2, n3, n4] = dft_powers(
                &x,
                [
                    f_row,
                    f_col,
                    side(a - 1.0),
                    side(a + 1.0),
                    side(b - 1.0),
                    side(b + 1.0),
                ],
            );
            // An exact ratio off the keys' nominal frequencies is held to less.
            let exact = (r * a / b - 1.0).abs() <= MAX_EXACT_RATIO_OFFSET;
            let limit = p_row.min(p_col)
                * if exact && dev > MIN_OFF_NOMINAL {
                    c.max_off_voice_neighbour
                } else {
                    c.max_voice_neighbour
                };
            [n1, n2, n3, n4].into_iter().any(|p| p >= limit)
        })
    }

    /// A key went down at sample `at`: report it and hold it.
    fn begin(&mut self, key: Held, at: u64, end: u64) -> State {
        self.events.push_back(InbandEvent::Begin {
            digit: key.digit,
            at_sample: at,
        });
        State::Active {
            key,
            gap: 0,
            last_end: end,
        }
    }

    /// The next detector event.
    pub fn poll_event(&mut self) -> Option<InbandEvent> {
        self.events.pop_front()
    }

    /// Flushes the end of the stream: a digit still down ends at its last hit.
    pub fn finish(&mut self) {
        for _ in 0..2 {
            self.push_silence_chunk();
        }
        if let State::Active { last_end, .. } = self.state {
            self.events.push_back(InbandEvent::End {
                at_sample: last_end,
            });
            self.state = State::Idle;
        }
    }

    fn push_silence_chunk(&mut self) {
        while self.fill != 0 {
            self.push(0.0);
        }
        for _ in 0..HOP {
            self.push(0.0);
        }
    }
}

/// Benchmark hook: the per-chunk product alone (not part of the API).
#[doc(hidden)]
pub fn bench_product(x: &[f32; HOP]) -> f32 {
    let (e, out) = analyze(consts(), x);
    e + out.map(|o| o[0]).unwrap_or(0.0)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod under_speech;

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn fast_atan2_matches_libm() {
        for i in 0..3600 {
            let a = i as f32 * 0.1_f32.to_radians() - PI;
            for r in [1e-3f32, 1.0, 1e4] {
                let (y, x) = (r * a.sin(), r * a.cos());
                assert!((atan2(y, x) - y.atan2(x)).abs() < 2e-5, "{a}");
            }
        }
        assert_eq!(atan2(0.0, 0.0), 0.0);
    }

    #[test]
    fn plain_and_fast_products_agree() {
        let c = consts();
        let mut x = [0f32; HOP];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (((i * 7919) % 201) as f32 - 100.0) * 50.0;
        }
        let a = product_body::<false>(c, &x);
        let (_, b) = analyze(c, &x);
        let b = b.expect("loud enough to analyze");
        for o in 0..OUTS {
            assert!((a[o] - b[o]).abs() <= 1e-3 * (1.0 + a[o].abs()), "{o}");
        }
        let e: f32 = x.iter().map(|v| v * v).sum();
        assert!((energy(&x) - e).abs() <= 1e-3 * e);
    }
}
