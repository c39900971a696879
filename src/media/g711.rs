//! G.711 (ITU-T G.711) µ-law and A-law: decode tables built once, encoders by the standard
//! segment arithmetic. Decoding is one table load per sample.

use crate::sip::sdp::Codec;
use std::sync::OnceLock;

fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let sign = u & 0x80;
    let exponent = (u >> 4) & 0x07;
    let mantissa = u & 0x0F;
    let magnitude = ((((mantissa as i32) << 3) + 0x84) << exponent) - 0x84;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let sign = a & 0x80;
    let exponent = (a >> 4) & 0x07;
    let mantissa = (a & 0x0F) as i32;
    let magnitude = match exponent {
        0 => (mantissa << 4) + 8,
        e => ((mantissa << 4) + 0x108) << (e - 1),
    };
    (if sign != 0 { magnitude } else { -magnitude }) as i16
}

struct Tables {
    ulaw: [i16; 256],
    alaw: [i16; 256],
    ulaw_f32: [f32; 256],
    alaw_f32: [f32; 256],
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let ulaw: [i16; 256] = std::array::from_fn(|i| ulaw_to_linear(i as u8));
        let alaw: [i16; 256] = std::array::from_fn(|i| alaw_to_linear(i as u8));
        Tables {
            ulaw,
            alaw,
            ulaw_f32: ulaw.map(f32::from),
            alaw_f32: alaw.map(f32::from),
        }
    })
}

/// One decode-table load: the entry for code byte `code`.
// Invariant: a u8 is at most 255 and the table has 256 entries, so this cannot panic (and
// the compiler emits no bounds check).
#[allow(clippy::indexing_slicing)]
#[inline(always)]
pub fn lookup<T: Copy>(table: &[T; 256], code: u8) -> T {
    table[usize::from(code)]
}

/// The decode table of a codec: index with the code byte.
pub fn decode_table(codec: Codec) -> &'static [i16; 256] {
    match codec {
        Codec::Pcmu => &tables().ulaw,
        Codec::Pcma => &tables().alaw,
    }
}

/// The decode table of a codec as f32 (for the DTMF detector).
pub fn decode_table_f32(codec: Codec) -> &'static [f32; 256] {
    match codec {
        Codec::Pcmu => &tables().ulaw_f32,
        Codec::Pcma => &tables().alaw_f32,
    }
}

/// Encodes one 16-bit sample to µ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    let s = s.min(CLIP) + BIAS;
    let exponent = (7 - (s as u32).leading_zeros().saturating_sub(17).min(7)) as i32;
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// Encodes one 16-bit sample to A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s >= 0 {
        0x80
    } else {
        s = -s - 1;
        0
    };
    let s = s.min(32767);
    let code = if s < 256 {
        (s >> 4) as u8
    } else {
        // Segment = position of the highest set bit above bit 7 (1..=7).
        let exponent = (24 - (s as u32).leading_zeros() as i32).clamp(1, 7);
        ((exponent << 4) as u8) | ((s >> (exponent + 3)) & 0x0F) as u8
    };
    (sign | code) ^ 0x55
}

/// Encodes with the codec's law.
pub fn encode(codec: Codec, sample: i16) -> u8 {
    match codec {
        Codec::Pcmu => linear_to_ulaw(sample),
        Codec::Pcma => linear_to_alaw(sample),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
    }

    #[test]
    fn every_code_round_trips() {
        for c in 0..=255u8 {
            let u = ulaw_to_linear(c);
            // 0x7F and 0xFF are both zero in µ-law.
            if c != 0x7F {
                assert_eq!(linear_to_ulaw(u), c, "ulaw {c:#x} -> {u}");
            }
            let a = alaw_to_linear(c);
            assert_eq!(linear_to_alaw(a), c, "alaw {c:#x} -> {a}");
        }
    }

    #[test]
    fn encoding_error_is_small_relative_to_level() {
        for s in (-32000i32..32000).step_by(97) {
            let s = s as i16;
            for codec in [Codec::Pcmu, Codec::Pcma] {
                let back = decode_table(codec)[encode(codec, s) as usize] as i32;
                let err = (back - s as i32).abs();
                assert!(err <= (s as i32).abs() / 16 + 16, "{codec:?} {s} -> {back}");
            }
        }
    }
}
