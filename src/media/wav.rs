//! A small WAV reader for prompts and `dtmf-detect`: RIFF/WAVE with 16-bit PCM, µ-law or
//! A-law (plain or WAVE_FORMAT_EXTENSIBLE), mono, 8 kHz. Everything else is a clear error;
//! sizes in the header are checked against the file, never trusted.

use crate::media::g711;
use crate::sip::sdp::Codec;

/// Largest file accepted (one hour of 16-bit audio at 8 kHz is 57.6 MB).
pub const MAX_WAV_BYTES: usize = 64 * 1024 * 1024;

/// Why a WAV file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WavError {
    /// Not a RIFF/WAVE file.
    #[error("not a WAV file (no RIFF/WAVE header)")]
    NotWav,
    /// Larger than `MAX_WAV_BYTES`.
    #[error("file too large ({0} bytes)")]
    TooLarge(usize),
    /// A chunk claims more bytes than the file has, or `fmt ` is missing/short.
    #[error("truncated or corrupt WAV ({0})")]
    Corrupt(&'static str),
    /// An encoding other than 16-bit PCM, µ-law, A-law.
    #[error(
        "unsupported encoding (format {format}, {bits} bits): need 16-bit PCM, mu-law or A-law"
    )]
    Encoding { format: u16, bits: u16 },
    /// Not one channel.
    #[error("{0} channels: need mono")]
    Channels(u16),
    /// A sample rate we do not take.
    #[error("{0} Hz: need 8000 Hz (or 16000/48000 Hz 16-bit PCM for prompts)")]
    Rate(u32),
    /// No audio in the data chunk.
    #[error("no audio data")]
    Empty,
}

fn u16le(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32le(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Reads an 8 kHz WAV file into linear 16-bit samples.
pub fn read(bytes: &[u8]) -> Result<Vec<i16>, WavError> {
    match read_any_rate(bytes)? {
        (8000, s) => Ok(s),
        (rate, _) => Err(WavError::Rate(rate)),
    }
}

/// Rates `read_any_rate` accepts (16-bit PCM only above 8 kHz).
pub const RATES: [u32; 3] = [8000, 16000, 48000];

/// Reads a mono WAV file at 8 kHz (PCM, µ-law, A-law) or 16/48 kHz (16-bit PCM): the rate
/// and the linear samples.
pub fn read_any_rate(bytes: &[u8]) -> Result<(u32, Vec<i16>), WavError> {
    if bytes.len() > MAX_WAV_BYTES {
        return Err(WavError::TooLarge(bytes.len()));
    }
    if !bytes.starts_with(b"RIFF") || bytes.get(8..12) != Some(b"WAVE".as_slice()) {
        return Err(WavError::NotWav);
    }
    let mut at = 12;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    let mut data: Option<&[u8]> = None;
    while at + 8 <= bytes.len() {
        let id = bytes
            .get(at..at + 4)
            .ok_or(WavError::Corrupt("chunk header"))?;
        let len = u32le(bytes, at + 4).ok_or(WavError::Corrupt("chunk header"))? as usize;
        let body_start = at + 8;
        let body = body_start
            .checked_add(len)
            .and_then(|end| bytes.get(body_start..end))
            .ok_or(WavError::Corrupt("chunk longer than file"))?;
        let body_end = body_start + body.len();
        match id {
            b"fmt " => {
                if body.len() < 16 {
                    return Err(WavError::Corrupt("fmt chunk too short"));
                }
                let mut format = u16le(body, 0).unwrap_or(0);
                let channels = u16le(body, 2).unwrap_or(0);
                let rate = u32le(body, 4).unwrap_or(0);
                let bits = u16le(body, 14).unwrap_or(0);
                if format == 0xFFFE {
                    // WAVE_FORMAT_EXTENSIBLE: the real format is the sub-format GUID's head.
                    format = u16le(body, 24).ok_or(WavError::Corrupt("extensible fmt"))?;
                }
                fmt = Some((format, channels, rate, bits));
            }
            b"data" => data = Some(body),
            _ => {}
        }
        // Chunks are padded to even length.
        at = body_end + (len & 1);
        if data.is_some() && fmt.is_some() {
            break;
        }
    }
    let (format, channels, rate, bits) = fmt.ok_or(WavError::Corrupt("no fmt chunk"))?;
    let data = data.ok_or(WavError::Corrupt("no data chunk"))?;
    if channels != 1 {
        return Err(WavError::Channels(channels));
    }
    if !RATES.contains(&rate) || (rate != 8000 && (format, bits) != (1, 16)) {
        return Err(WavError::Rate(rate));
    }
    let samples: Vec<i16> = match (format, bits) {
        // An odd trailing byte is ignored.
        (1, 16) => data
            .as_chunks::<2>()
            .0
            .iter()
            .map(|c| i16::from_le_bytes(*c))
            .collect(),
        (6, 8) => {
            let t = g711::decode_table(Codec::Pcma);
            data.iter().map(|b| g711::lookup(t, *b)).collect()
        }
        (7, 8) => {
            let t = g711::decode_table(Codec::Pcmu);
            data.iter().map(|b| g711::lookup(t, *b)).collect()
        }
        (format, bits) => return Err(WavError::Encoding { format, bits }),
    };
    if samples.is_empty() {
        return Err(WavError::Empty);
    }
    Ok((rate, samples))
}

/// Writes 16-bit mono 8 kHz PCM as a WAV file (tests, tools).
pub fn write_pcm16(samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut v = Vec::with_capacity(44 + samples.len() * 2);
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data_len).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&8000u32.to_le_bytes());
    v.extend_from_slice(&16000u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        v.extend_from_slice(&s.to_le_bytes());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(format: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let mut v = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&format.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&(rate * bits as u32 / 8).to_le_bytes());
        v.extend_from_slice(&(bits / 8).to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        v.extend_from_slice(b"LIST\x04\0\0\0abcd");
        v.extend_from_slice(b"data");
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn reads_pcm_ulaw_alaw() {
        let pcm = write_pcm16(&[0, 1000, -1000]);
        assert_eq!(read(&pcm).unwrap(), vec![0, 1000, -1000]);
        assert_eq!(
            read(&header(7, 1, 8000, 8, &[0xFF, 0x80])).unwrap(),
            vec![0, 32124]
        );
        assert_eq!(read(&header(6, 1, 8000, 8, &[0xD5])).unwrap(), vec![8]);
    }

    #[test]
    fn bad_files_are_clear_errors() {
        assert_eq!(read(b"").unwrap_err(), WavError::NotWav);
        assert_eq!(read(b"RIFF\0\0\0\0AVI ").unwrap_err(), WavError::NotWav);
        assert_eq!(
            read(&header(1, 2, 8000, 16, &[0; 8])).unwrap_err(),
            WavError::Channels(2)
        );
        assert_eq!(
            read(&header(1, 1, 16000, 16, &[0; 8])).unwrap_err(),
            WavError::Rate(16000)
        );
        assert_eq!(
            read(&header(3, 1, 8000, 32, &[0; 8])).unwrap_err(),
            WavError::Encoding {
                format: 3,
                bits: 32
            }
        );
        assert_eq!(
            read(&header(1, 1, 8000, 16, &[])).unwrap_err(),
            WavError::Empty
        );
        let mut t = write_pcm16(&[1; 100]);
        t.truncate(100);
        assert!(matches!(read(&t).unwrap_err(), WavError::Corrupt(_)));
        let mut huge_len = write_pcm16(&[1; 4]);
        huge_len[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read(&huge_len).unwrap_err(), WavError::Corrupt(_)));
    }
}
