//! In-band DTMF detection (ITU-T Q.23/Q.24) on linear PCM at 8 kHz.
//!
//! Hann-windowed 64-sample (8 ms) windows overlapping by half give a complete window every
//! 4 ms; each window's 8 DFT bins (the Goertzel frequencies) are the sum of two half-window
//! partial sums, so every 32-sample chunk is one fixed 32×32 matrix–vector product. A window is *tone-like* when its
//! strongest low-group and high-group bins hold most of its energy, both tones are above the
//! level floor and its two halves carry similar energy (no onset or dropout inside). A
//! decision needs three consecutive tone-like windows with the same pair; the frequency of
//! each tone is then *measured* from the phase advance of its bin between windows (32 and 64
//! samples apart), so the ±1.5 % accept / ±3.5 % reject rule is applied to a measured
//! frequency rather than inferred from a bin's magnitude. Twist is checked on amplitudes
//! corrected for the measured offset. Start needs `ON_DECISIONS` agreeing decisions, end
//! needs `OFF_DECISIONS` disagreeing ones: that gives the 40 ms / 23 ms duration rule, bridges
//! 10 ms dropouts and splits on 40 ms pauses. A long press is one digit, however long.
//!
//! The hot loop is that product (no recurrence, so no latency chain), written for the
//! compiler to vectorize and compiled twice: plain, and with AVX2+FMA chosen at run time.
//! Everything else runs once per 32 samples.

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

/// Agreeing decisions (4 ms apart) before a digit starts.
const ON_DECISIONS: u32 = 4;
/// Disagreeing decisions before a digit ends.
const OFF_DECISIONS: u32 = 9;
/// Share of a window's energy the two tones must hold.
const MIN_TONE_FRACTION: f32 = 0.75;
/// Weakest tone accepted, dBm0 (full-scale sine = +3.14 dBm0).
const MIN_LEVEL_DBM0: f32 = -36.0;
/// Low tone louder than high ("normal" twist) accepted up to this, dB.
const MAX_NORMAL_TWIST_DB: f32 = 9.5;
/// High tone louder than low ("reverse" twist) accepted up to this, dB.
const MAX_REVERSE_TWIST_DB: f32 = 5.5;
/// Frequency accepted within ±(this share + 1 Hz): between Q.24's 1.5 %+2 Hz and 3.5 %.
const MAX_DEVIATION: f32 = 0.025;
/// The two half-windows' energies must be within this ratio (onsets, dropouts).
const MIN_HALF_BALANCE: f32 = 0.5;
/// The two lag-32 frequency readings of one decision must agree within this, Hz.
const MAX_DRIFT_HZ: f32 = 12.0;

/// Outputs of the per-chunk product: re/im of the 8 bins with the first-half window
/// (0..16) and with the second-half window (16..32).
const OUTS: usize = 32;

struct Consts {
    /// `mat[i][o]`: weight of input sample `i` of a chunk in output `o`.
    mat: [[f32; OUTS]; HOP],

    /// Bin power of a tone at the level floor: (A·Σw/2)².
    min_power: f32,
    /// Below this a chunk cannot be half of a tone-like window.
    min_chunk_energy: f32,
    /// Energy of one tone at the level floor over a window.
    min_window_energy: f32,
    /// The twist limits as amplitude ratios.
    max_normal_ratio: f32,
    max_reverse_ratio: f32,
    /// Each bin's own phase advance over 32 and 64 samples, wrapped to (-π, π].
    own32: [f32; 8],
    own64: [f32; 8],
    /// (Σw)² / (2·WIN): |X|² of a pure tone over its (unwindowed) energy in the window.
    gain: f32,
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
        let own = |lag: f64| {
            FREQS.map(|f| {
                let a = 2.0 * std::f64::consts::PI * f as f64 * lag / RATE as f64;
                (a.sin().atan2(a.cos())) as f32
            })
        };
        let min_amp = 32768.0 * 10f32.powf((MIN_LEVEL_DBM0 - FULL_SCALE_DBM0) / 20.0);
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
            own64: own(WIN as f64),
            mat,
            gain: sum_w * sum_w / (2.0 * WIN as f32),
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
    /// Σ x² over each half.
    halves: [f32; 2],
    /// Index of the window's first sample.
    start: u64,
    /// The tone pair (row, column bins) if the window is tone-like.
    class: Option<(usize, usize)>,
    /// Phases of those two bins (only when `class` is set).
    phase: [f32; 2],
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

    /// The phase of bin `k` (classify's bins are always < 8).
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

#[derive(Debug, Clone, Copy)]
enum State {
    Idle {
        cand: Option<(Digit, u32, u64)>,
    },
    Active {
        digit: Digit,
        misses: u32,
        last_end: u64,
        other: Option<(Digit, u32, u64)>,
    },
}

/// The detector for one audio stream.
pub struct InbandDetector {
    /// First-half partial sums (re/im of 8 bins) of the window that started last chunk.
    first: [f32; 16],
    chunk: [f32; HOP],
    fill: usize,
    /// Energy of the previous chunk (first half of the window completing now).
    prev_chunk_energy: f32,
    /// Chunks processed so far.
    chunks: u64,
    /// The last three windows, a ring; `head` is the newest.
    history: [Window; 3],
    head: usize,
    windows: u64,
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

/// Slot `head` of the window ring (`head` is always 0, 1 or 2).
fn ring_slot(history: &mut [Window; 3], head: usize) -> &mut Window {
    let [a, b, c] = history;
    match head {
        0 => a,
        1 => b,
        _ => c,
    }
}

fn hz(phase: f32, lag: usize) -> f32 {
    phase * RATE / (2.0 * PI * lag as f32)
}

impl InbandDetector {
    pub fn new() -> Self {
        let _ = consts();
        InbandDetector {
            first: [0.0; 16],
            chunk: [0.0; HOP],
            fill: 0,
            prev_chunk_energy: 0.0,
            chunks: 0,
            history: [Window::default(); 3],
            head: 0,
            windows: 0,
            state: State::Idle { cand: None },
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
        if chunk_index > 0 {
            // The window that began last chunk ends with this one; built in its ring slot.
            self.head = (self.head + 1) % 3;
            let prev_e = self.prev_chunk_energy;
            let w = ring_slot(&mut self.history, self.head);
            w.energy = prev_e + e;
            w.halves = [prev_e, e];
            w.start = (chunk_index - 1) * HOP as u64;
            w.sum_halves(&self.first, &out);
            w.class = if quiet { None } else { Self::classify(w) };
            if let Some((r, col)) = w.class {
                w.phase = [w.phase_of(r), w.phase_of(col)];
            }
            self.windows += 1;
            let hit = if self.windows >= 3 {
                self.decide()
            } else {
                None
            };
            self.step(hit);
        }
        if let Some(first) = out.first_chunk() {
            self.first = *first;
        }
        self.prev_chunk_energy = e;
    }

    /// (oldest, middle, newest) of the window ring.
    fn last_three(&self) -> (&Window, &Window, &Window) {
        let [a, b, c] = &self.history;
        match self.head {
            0 => (b, c, a),
            1 => (c, a, b),
            _ => (a, b, c),
        }
    }

    /// Is this window a clean tone pair? Returns (row, column) bins.
    fn classify(w: &Window) -> Option<(usize, usize)> {
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
        if (pr + pc) < MIN_TONE_FRACTION * c.gain * w.energy {
            return None;
        }
        let [h1, h2] = w.halves;
        if h1.min(h2) < MIN_HALF_BALANCE * h1.max(h2) {
            return None;
        }
        Some((r, col))
    }

    fn decide(&self) -> Option<Digit> {
        let (w2, w1, w0) = self.last_three();
        let pair = w0.class?;
        if w1.class != Some(pair) || w2.class != Some(pair) {
            return None;
        }
        // A key already held, still on the same two bins with a clean spectrum: the
        // frequency and twist were judged when it started; do not re-measure every 4 ms.
        if let State::Active {
            digit, misses: 0, ..
        } = self.state
        {
            if key(pair.0, pair.1) == Some(digit) {
                return Some(digit);
            }
        }
        let c = consts();
        let mut amp = [0f32; 2];
        // Tone i (0 = row, 1 = column) is bin k; phase[i] holds its phase in each window.
        let phases = w2.phase.into_iter().zip(w1.phase).zip(w0.phase);
        for ((a, k), ((p2, p1), p0)) in amp.iter_mut().zip([pair.0, pair.1]).zip(phases) {
            let (Some(&own32), Some(&own64), Some(&freq), Some(&power)) = (
                c.own32.get(k),
                c.own64.get(k),
                FREQS.get(k),
                w0.power.get(k),
            ) else {
                return None; // classify only returns bins 0..8
            };
            let d32 = hz(offset_phase(p1, p0, own32), HOP);
            let d32_before = hz(offset_phase(p2, p1, own32), HOP);
            if (d32 - d32_before).abs() > MAX_DRIFT_HZ {
                return None;
            }
            // The lag-64 reading is twice as precise but wraps at ±62.5 Hz: unwrap it
            // with the lag-32 reading.
            let p64 = offset_phase(p2, p0, own64);
            let span = RATE / WIN as f32;
            let mut d64 = hz(p64, WIN);
            let turns = ((d32 - d64) / span).round();
            d64 += turns * span;
            if d64.abs() > MAX_DEVIATION * freq + 1.0 {
                return None;
            }
            let x = d64 * WIN as f32 / RATE;
            *a = power.sqrt() / hann_response(x);
        }
        // Twist as an amplitude ratio against the dB limits (no log on the hot path).
        let [row, col] = amp;
        if row > col * c.max_normal_ratio || col > row * c.max_reverse_ratio {
            return None;
        }
        key(pair.0, pair.1)
    }

    fn step(&mut self, hit: Option<Digit>) {
        let (w2, _, w0) = self.last_three();
        let span_start = w2.start;
        let span_end = w0.start + WIN as u64;
        // A run of agreeing decisions: (key, length, first sample of its first window).
        let extend = |run: Option<(Digit, u32, u64)>| match (hit, run) {
            (Some(d), Some((c, n, s))) if c == d => Some((d, n + 1, s)),
            (Some(d), _) => Some((d, 1, span_start)),
            (None, _) => None,
        };
        self.state = match self.state {
            State::Idle { cand } => match extend(cand) {
                Some((d, n, s)) if n >= ON_DECISIONS => self.begin(d, s, span_end),
                cand => State::Idle { cand },
            },
            State::Active { digit, .. } if hit == Some(digit) => State::Active {
                digit,
                misses: 0,
                last_end: span_end,
                other: None,
            },
            State::Active {
                digit,
                misses,
                last_end,
                other,
            } => {
                let other = extend(other);
                let misses = misses + 1;
                match other {
                    // Another key held long enough: it replaces this one at once.
                    Some((d, n, s)) if n >= ON_DECISIONS => {
                        self.events.push_back(InbandEvent::End {
                            at_sample: last_end,
                        });
                        self.begin(d, s, span_end)
                    }
                    _ if misses >= OFF_DECISIONS => {
                        self.events.push_back(InbandEvent::End {
                            at_sample: last_end,
                        });
                        State::Idle { cand: other }
                    }
                    _ => State::Active {
                        digit,
                        misses,
                        last_end,
                        other,
                    },
                }
            }
        };
    }

    /// A key went down at sample `at`: report it and hold it.
    fn begin(&mut self, digit: Digit, at: u64, span_end: u64) -> State {
        self.events.push_back(InbandEvent::Begin {
            digit,
            at_sample: at,
        });
        State::Active {
            digit,
            misses: 0,
            last_end: span_end,
            other: None,
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
            self.state = State::Idle { cand: None };
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
