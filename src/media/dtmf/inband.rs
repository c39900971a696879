//! In-band DTMF detection (ITU-T Q.23/Q.24) on linear PCM at 8 kHz.
//!
//! Two interleaved banks of 8 Goertzel filters over Hann-windowed 64-sample (8 ms) windows,
//! offset by 32 samples, give a complete window every 4 ms. A window is *tone-like* when its
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
//! The hot loop is 16 independent f32 recurrences per sample, laid out for the compiler to
//! vectorize; everything else runs once per 32 samples.

use super::Digit;
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

struct Consts {
    hann: [f32; WIN],
    coef: [f32; 16],
    cos: [f32; 8],
    sin: [f32; 8],
    /// (Σw)² / (2 Σw²): |X|² of a pure windowed tone over its windowed energy.
    gain: f32,
    sum_w: f32,
    min_amp: f32,
}

fn consts() -> &'static Consts {
    static C: OnceLock<Consts> = OnceLock::new();
    C.get_or_init(|| {
        let mut hann = [0f32; WIN];
        for (n, w) in hann.iter_mut().enumerate() {
            let s = (PI * (n as f32 + 0.5) / WIN as f32).sin();
            *w = s * s;
        }
        let sum_w: f32 = hann.iter().sum();
        let sum_w2: f32 = hann.iter().map(|w| w * w).sum();
        let mut coef = [0f32; 16];
        let mut cos = [0f32; 8];
        let mut sin = [0f32; 8];
        for k in 0..8 {
            let w = 2.0 * PI * FREQS[k] / RATE;
            cos[k] = w.cos();
            sin[k] = w.sin();
            coef[k] = 2.0 * cos[k];
            coef[k + 8] = 2.0 * cos[k];
        }
        Consts {
            hann,
            coef,
            cos,
            sin,
            gain: sum_w * sum_w / (2.0 * sum_w2),
            sum_w,
            min_amp: 32768.0 * 10f32.powf((MIN_LEVEL_DBM0 - FULL_SCALE_DBM0) / 20.0),
        }
    })
}

/// One completed window: the complex Goertzel output per tone and energies.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    re: [f32; 8],
    im: [f32; 8],
    power: [f32; 8],
    /// Σ (x·w)² over the window.
    windowed_energy: f32,
    /// Σ x² over each half.
    halves: [f32; 2],
    /// Index of the window's first sample.
    start: u64,
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
    s1: [f32; 16],
    s2: [f32; 16],
    /// Σ(x·w)² per bank (A = lanes 0..8, B = lanes 8..16).
    wenergy: [f32; 2],
    chunk: [f32; HOP],
    fill: usize,
    /// Energy of the previous chunk (first half of the window completing now).
    prev_chunk_energy: f32,
    /// Chunks processed so far.
    chunks: u64,
    history: [Window; 3],
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

fn key(r: usize, c: usize) -> Digit {
    Digit::from_char(KEYPAD[r][c - 4] as char).expect("keypad holds only DTMF keys")
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

fn wrap(a: f32) -> f32 {
    let two_pi = 2.0 * PI;
    let mut a = a % two_pi;
    if a > PI {
        a -= two_pi;
    } else if a < -PI {
        a += two_pi;
    }
    a
}

/// Phase advance of bin `k` from window `a` to window `b`, minus the bin's own advance over
/// `lag` samples: the frequency offset as a phase, in (-π, π].
fn offset_phase(a: &Window, b: &Window, k: usize, lag: usize) -> f32 {
    // arg(b · conj(a))
    let re = b.re[k] * a.re[k] + b.im[k] * a.im[k];
    let im = b.im[k] * a.re[k] - b.re[k] * a.im[k];
    let own = 2.0 * PI * FREQS[k] * lag as f32 / RATE;
    wrap(im.atan2(re) - own)
}

fn hz(phase: f32, lag: usize) -> f32 {
    phase * RATE / (2.0 * PI * lag as f32)
}

impl InbandDetector {
    pub fn new() -> Self {
        let _ = consts();
        InbandDetector {
            s1: [0.0; 16],
            s2: [0.0; 16],
            wenergy: [0.0; 2],
            chunk: [0.0; HOP],
            fill: 0,
            prev_chunk_energy: 0.0,
            chunks: 0,
            history: [Window::default(); 3],
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

    /// Feeds G.711 bytes through a decode table (see `g711::decode_table`).
    pub fn process_g711(&mut self, payload: &[u8], table: &[i16; 256]) {
        for &b in payload {
            self.push(table[b as usize] as f32);
        }
    }

    #[inline]
    fn push(&mut self, x: f32) {
        self.chunk[self.fill] = x;
        self.fill += 1;
        if self.fill == HOP {
            self.fill = 0;
            self.run_chunk();
        }
    }

    /// The hot loop: 32 samples through both banks.
    fn run_chunk(&mut self) {
        let c = consts();
        // Bank A's window starts on even chunks, bank B's on odd ones.
        let a_second_half = self.chunks % 2 == 1;
        let (wa, wb) = if a_second_half {
            (&c.hann[HOP..], &c.hann[..HOP])
        } else {
            (&c.hann[..HOP], &c.hann[HOP..])
        };
        let mut s1 = self.s1;
        let mut s2 = self.s2;
        let coef = c.coef;
        let (mut ea, mut eb, mut e) = (0f32, 0f32, 0f32);
        for i in 0..HOP {
            let x = self.chunk[i];
            let xa = x * wa[i];
            let xb = x * wb[i];
            e += x * x;
            ea += xa * xa;
            eb += xb * xb;
            let mut xin = [0f32; 16];
            xin[..8].fill(xa);
            xin[8..].fill(xb);
            for k in 0..16 {
                let s0 = xin[k] + coef[k] * s1[k] - s2[k];
                s2[k] = s1[k];
                s1[k] = s0;
            }
        }
        self.s1 = s1;
        self.s2 = s2;
        self.wenergy[0] += ea;
        self.wenergy[1] += eb;
        let chunk_index = self.chunks;
        self.chunks += 1;
        // The bank in its second half just completed a window (bank B's first window
        // would be a half window: skipped).
        let bank = if a_second_half { 0 } else { 1 };
        if bank == 1 && chunk_index == 0 {
            self.reset_bank(1);
            self.prev_chunk_energy = e;
            return;
        }
        self.complete(bank, [self.prev_chunk_energy, e], chunk_index);
        self.prev_chunk_energy = e;
    }

    fn reset_bank(&mut self, bank: usize) {
        self.s1[bank * 8..bank * 8 + 8].fill(0.0);
        self.s2[bank * 8..bank * 8 + 8].fill(0.0);
        self.wenergy[bank] = 0.0;
    }

    fn complete(&mut self, bank: usize, halves: [f32; 2], chunk_index: u64) {
        let c = consts();
        let lanes = bank * 8;
        let mut w = Window {
            windowed_energy: self.wenergy[bank],
            halves,
            start: (chunk_index + 1) * HOP as u64 - WIN as u64,
            ..Default::default()
        };
        for k in 0..8 {
            let (a, b) = (self.s1[lanes + k], self.s2[lanes + k]);
            // y = s1 - e^{-jω} s2; its phase reference is the same for every window.
            w.re[k] = a - c.cos[k] * b;
            w.im[k] = c.sin[k] * b;
            w.power[k] = w.re[k] * w.re[k] + w.im[k] * w.im[k];
        }
        self.reset_bank(bank);
        self.history = [self.history[1], self.history[2], w];
        self.windows += 1;
        let hit = if self.windows >= 3 {
            self.decide()
        } else {
            None
        };
        self.step(hit);
    }

    /// Is this window a clean tone pair? Returns (row, column) bins.
    fn classify(w: &Window) -> Option<(usize, usize)> {
        let c = consts();
        let r = (0..4).max_by(|a, b| w.power[*a].total_cmp(&w.power[*b]))?;
        let col = (4..8).max_by(|a, b| w.power[*a].total_cmp(&w.power[*b]))?;
        let amp = |k: usize| 2.0 * w.power[k].sqrt() / c.sum_w;
        if amp(r) < c.min_amp || amp(col) < c.min_amp || w.windowed_energy <= 0.0 {
            return None;
        }
        if (w.power[r] + w.power[col]) < MIN_TONE_FRACTION * c.gain * w.windowed_energy {
            return None;
        }
        let [h1, h2] = w.halves;
        if h1.min(h2) < MIN_HALF_BALANCE * h1.max(h2) {
            return None;
        }
        Some((r, col))
    }

    fn decide(&self) -> Option<Digit> {
        let [w2, w1, w0] = &self.history;
        let pair = Self::classify(w0)?;
        if Self::classify(w1)? != pair || Self::classify(w2)? != pair {
            return None;
        }
        let mut amp = [0f32; 2];
        for (i, k) in [pair.0, pair.1].into_iter().enumerate() {
            let d32 = hz(offset_phase(w1, w0, k, HOP), HOP);
            let d32_before = hz(offset_phase(w2, w1, k, HOP), HOP);
            if (d32 - d32_before).abs() > MAX_DRIFT_HZ {
                return None;
            }
            // The lag-64 reading is twice as precise but wraps at ±62.5 Hz: unwrap it
            // with the lag-32 reading.
            let p64 = offset_phase(w2, w0, k, WIN);
            let span = RATE / WIN as f32;
            let mut d64 = hz(p64, WIN);
            let turns = ((d32 - d64) / span).round();
            d64 += turns * span;
            if d64.abs() > MAX_DEVIATION * FREQS[k] + 1.0 {
                return None;
            }
            let x = d64 * WIN as f32 / RATE;
            amp[i] = w0.power[k].sqrt() / hann_response(x);
        }
        let twist_db = 20.0 * (amp[0] / amp[1]).log10();
        if !(-MAX_REVERSE_TWIST_DB..=MAX_NORMAL_TWIST_DB).contains(&twist_db) {
            return None;
        }
        Some(key(pair.0, pair.1))
    }

    fn step(&mut self, hit: Option<Digit>) {
        let [w2, _, w0] = self.history;
        let span_start = w2.start;
        let span_end = w0.start + WIN as u64;
        self.state = match self.state {
            State::Idle { cand } => {
                let cand = match (hit, cand) {
                    (Some(d), Some((c, n, s))) if c == d => Some((d, n + 1, s)),
                    (Some(d), _) => Some((d, 1, span_start)),
                    (None, _) => None,
                };
                match cand {
                    Some((d, n, s)) if n >= ON_DECISIONS => {
                        self.events.push_back(InbandEvent::Begin {
                            digit: d,
                            at_sample: s,
                        });
                        State::Active {
                            digit: d,
                            misses: 0,
                            last_end: span_end,
                            other: None,
                        }
                    }
                    cand => State::Idle { cand },
                }
            }
            State::Active {
                digit,
                misses,
                last_end,
                other,
            } => {
                if hit == Some(digit) {
                    State::Active {
                        digit,
                        misses: 0,
                        last_end: span_end,
                        other: None,
                    }
                } else {
                    let other = match (hit, other) {
                        (Some(d), Some((o, n, s))) if o == d => Some((d, n + 1, s)),
                        (Some(d), _) => Some((d, 1, span_start)),
                        (None, _) => None,
                    };
                    let misses = misses + 1;
                    match other {
                        // Another key held long enough: it replaces this one at once.
                        Some((d, n, s)) if n >= ON_DECISIONS => {
                            self.events.push_back(InbandEvent::End {
                                at_sample: last_end,
                            });
                            self.events.push_back(InbandEvent::Begin {
                                digit: d,
                                at_sample: s,
                            });
                            State::Active {
                                digit: d,
                                misses: 0,
                                last_end: span_end,
                                other: None,
                            }
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
            }
        };
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

#[cfg(test)]
mod tests;
