//! Prompts: audio files decoded and encoded once, at start-up or reload, into µ-law and
//! A-law byte strings shared by every call (`Arc`). A call's packets are slices copied out
//! of these: no per-packet decoding or encoding. 16 and 48 kHz PCM are resampled to 8 kHz
//! with a windowed-sinc low-pass.

use crate::media::g711;
use crate::media::wav::{self, WavError};
use crate::sip::sdp::Codec;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Longest prompt accepted: 10 minutes at 8 kHz.
pub const MAX_SAMPLES: usize = 10 * 60 * 8000;
/// Largest prompt file read.
pub const MAX_FILE_BYTES: u64 = wav::MAX_WAV_BYTES as u64;

/// The prompts the service plays, by name. Each is `<name>.wav` (or `.ulaw`, `.alaw`) in
/// the prompt directory unless overridden.
pub const NAMES: [&str; 8] = [
    "enter_pin",
    "incorrect_pin",
    "try_again",
    "no_input",
    "verified",
    "transferring",
    "transfer_failed",
    "locked_out",
];

/// Prompts played when present, skipped when not: `crm_error` is said before the transfer
/// when the CRM could not answer (an operator's own message for that case).
pub const OPTIONAL: [&str; 1] = ["crm_error"];

/// A prompt file that cannot be used, with the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("prompt {name}: {path}: {reason}")]
pub struct PromptError {
    pub name: String,
    pub path: String,
    pub reason: String,
}

/// One prompt, ready to send in either law.
#[derive(Debug)]
pub struct Prompt {
    name: String,
    ulaw: Vec<u8>,
    alaw: Vec<u8>,
}

impl Prompt {
    /// From linear PCM at 8 kHz.
    pub fn from_pcm(name: &str, pcm: &[i16]) -> Prompt {
        Prompt {
            name: name.to_string(),
            ulaw: pcm.iter().map(|s| g711::encode(Codec::Pcmu, *s)).collect(),
            alaw: pcm.iter().map(|s| g711::encode(Codec::Pcma, *s)).collect(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Samples (= bytes in either law).
    pub fn len(&self) -> usize {
        self.ulaw.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ulaw.is_empty()
    }

    /// The encoded audio in a codec.
    pub fn bytes(&self, codec: Codec) -> &[u8] {
        match codec {
            Codec::Pcmu => &self.ulaw,
            Codec::Pcma => &self.alaw,
        }
    }

    /// Loads a prompt file: WAV (8 kHz PCM/µ-law/A-law, or 16/48 kHz 16-bit PCM, mono), or
    /// raw `.ulaw` / `.alaw` at 8 kHz.
    pub fn load(name: &str, path: &Path) -> Result<Prompt, PromptError> {
        let err = |reason: String| PromptError {
            name: name.to_string(),
            path: path.display().to_string(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(err(format!("file too large ({} bytes)", meta.len())));
        }
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let pcm = match ext.as_str() {
            "ulaw" | "mulaw" | "pcmu" => decode_raw(&bytes, Codec::Pcmu),
            "alaw" | "pcma" => decode_raw(&bytes, Codec::Pcma),
            _ => {
                let (rate, pcm) =
                    wav::read_any_rate(&bytes).map_err(|e: WavError| err(e.to_string()))?;
                resample_to_8k(&pcm, rate)
            }
        };
        if pcm.is_empty() {
            return Err(err("no audio".into()));
        }
        if pcm.len() > MAX_SAMPLES {
            return Err(err(format!(
                "{} s of audio: longer than the 600 s limit",
                pcm.len() / 8000
            )));
        }
        Ok(Prompt::from_pcm(name, &pcm))
    }
}

fn decode_raw(bytes: &[u8], codec: Codec) -> Vec<i16> {
    let t = g711::decode_table(codec);
    bytes.iter().map(|b| g711::lookup(t, *b)).collect()
}

/// Low-pass (cut-off 3.6 kHz, Blackman-windowed sinc) and decimate 16/48 kHz to 8 kHz.
pub fn resample_to_8k(pcm: &[i16], rate: u32) -> Vec<i16> {
    let factor = (rate / 8000).max(1) as usize;
    if factor == 1 {
        return pcm.to_vec();
    }
    let taps = 16 * factor + 1;
    let fc = 3600.0 / rate as f64;
    let mid = (taps / 2) as f64;
    let mut h: Vec<f64> = (0..taps)
        .map(|n| {
            let x = n as f64 - mid;
            let sinc = if x == 0.0 {
                2.0 * fc
            } else {
                (2.0 * std::f64::consts::PI * fc * x).sin() / (std::f64::consts::PI * x)
            };
            let w = 0.42 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / (taps - 1) as f64).cos()
                + 0.08 * (4.0 * std::f64::consts::PI * n as f64 / (taps - 1) as f64).cos();
            sinc * w
        })
        .collect();
    let sum: f64 = h.iter().sum();
    h.iter_mut().for_each(|x| *x /= sum);
    (0..pcm.len() / factor)
        .map(|i| {
            let c = i * factor;
            let acc: f64 = h
                .iter()
                .enumerate()
                .map(|(k, hk)| {
                    let idx = c as isize + k as isize - mid as isize;
                    // Taps before the first or past the last sample see silence.
                    usize::try_from(idx)
                        .ok()
                        .and_then(|i| pcm.get(i))
                        .map_or(0.0, |s| hk * *s as f64)
                })
                .sum();
            acc.round().clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// `<name>.wav`, `.ulaw` or `.alaw` in `dir`, whichever exists first.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    ["wav", "ulaw", "alaw"]
        .iter()
        .map(|e| dir.join(format!("{name}.{e}")))
        .find(|p| p.exists())
}

/// The loaded prompt set.
#[derive(Debug, Default, Clone)]
pub struct Prompts {
    map: HashMap<String, Arc<Prompt>>,
}

impl Prompts {
    /// Loads every name in `NAMES` from `dir` (`<name>.wav`, `.ulaw` or `.alaw`) unless
    /// `files` names another file for it (relative paths against `base`).
    pub fn load(
        dir: &Path,
        files: &BTreeMap<String, PathBuf>,
        base: &Path,
    ) -> Result<Prompts, PromptError> {
        let mut map = HashMap::new();
        let file_for = |name: &str| match files.get(name) {
            Some(p) => Some(base.join(p)), // join keeps an absolute path as it is
            None => find_file(dir, name),
        };
        for name in NAMES {
            // A required prompt with no file is reported as the missing `<name>.wav`.
            let path = file_for(name).unwrap_or_else(|| dir.join(format!("{name}.wav")));
            map.insert(name.to_string(), Arc::new(Prompt::load(name, &path)?));
        }
        for name in OPTIONAL {
            if let Some(path) = file_for(name) {
                map.insert(name.to_string(), Arc::new(Prompt::load(name, &path)?));
            }
        }
        for name in files.keys() {
            if !NAMES.contains(&name.as_str()) && !OPTIONAL.contains(&name.as_str()) {
                return Err(PromptError {
                    name: name.clone(),
                    path: String::new(),
                    reason: format!("unknown prompt name (known: {})", NAMES.join(", ")),
                });
            }
        }
        Ok(Prompts { map })
    }

    /// Loads whichever prompts of `NAMES` exist in `dir` (an organization's overrides, or
    /// another language); the rest fall back to the service's set. A file that exists but
    /// is broken is an error.
    pub fn load_partial(dir: &Path) -> Result<Prompts, PromptError> {
        if !dir.is_dir() {
            return Err(PromptError {
                name: "*".into(),
                path: dir.display().to_string(),
                reason: "not a directory".into(),
            });
        }
        let mut map = HashMap::new();
        for name in NAMES.iter().chain(OPTIONAL.iter()) {
            if let Some(path) = find_file(dir, name) {
                map.insert(name.to_string(), Arc::new(Prompt::load(name, &path)?));
            }
        }
        Ok(Prompts { map })
    }

    /// This set's prompt, else the fallback set's.
    pub fn get_or(&self, name: &str, fallback: &Prompts) -> Option<Arc<Prompt>> {
        self.get(name).or_else(|| fallback.get(name))
    }

    /// A set built in code (tests, tools).
    pub fn from_prompts(prompts: impl IntoIterator<Item = Prompt>) -> Prompts {
        Prompts {
            map: prompts
                .into_iter()
                .map(|p| (p.name.clone(), Arc::new(p)))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Prompt>> {
        self.map.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn wav_header(channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let mut v = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&(rate * bits as u32 / 8 * channels as u32).to_le_bytes());
        v.extend_from_slice(&(bits / 8 * channels).to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn loads_wav_and_raw_laws_into_both_codecs() {
        let d = tempfile::tempdir().unwrap();
        let pcm: Vec<i16> = (0..800).map(|i| ((i % 50) * 100) as i16).collect();
        let p = Prompt::load("x", &write(d.path(), "a.wav", &wav::write_pcm16(&pcm))).unwrap();
        assert_eq!(p.len(), 800);
        assert_eq!(p.bytes(Codec::Pcmu)[10], g711::encode(Codec::Pcmu, pcm[10]));
        assert_eq!(p.bytes(Codec::Pcma)[10], g711::encode(Codec::Pcma, pcm[10]));
        let raw: Vec<u8> = pcm.iter().map(|s| g711::encode(Codec::Pcmu, *s)).collect();
        let p = Prompt::load("x", &write(d.path(), "a.ulaw", &raw)).unwrap();
        assert_eq!(p.bytes(Codec::Pcmu), &raw[..]);
    }

    #[test]
    fn sixteen_and_forty_eight_khz_are_resampled() {
        let d = tempfile::tempdir().unwrap();
        for rate in [16000u32, 48000] {
            // 1 s of 1 kHz at the input rate, plus 6 kHz that must not alias into the band.
            let data: Vec<u8> = (0..rate)
                .flat_map(|i| {
                    let t = i as f64 / rate as f64;
                    let x = 8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()
                        + if rate == 48000 {
                            8000.0 * (2.0 * std::f64::consts::PI * 6000.0 * t).sin()
                        } else {
                            0.0
                        };
                    (x as i16).to_le_bytes()
                })
                .collect();
            let p = write(
                d.path(),
                &format!("r{rate}.wav"),
                &wav_header(1, rate, 16, &data),
            );
            let prompt = Prompt::load("x", &p).unwrap();
            assert_eq!(prompt.len(), 8000, "{rate}");
            // The 1 kHz tone survives at its level; the 6 kHz one is gone (no 2 kHz alias).
            let pcm = decode_raw(prompt.bytes(Codec::Pcmu), Codec::Pcmu);
            let power = |f: f64| {
                let (mut re, mut im) = (0.0, 0.0);
                for (n, s) in pcm[1000..7000].iter().enumerate() {
                    let a = 2.0 * std::f64::consts::PI * f * n as f64 / 8000.0;
                    re += *s as f64 * a.cos();
                    im += *s as f64 * a.sin();
                }
                (re * re + im * im).sqrt() / 3000.0
            };
            assert!(
                (power(1000.0) - 8000.0).abs() < 800.0,
                "{rate}: {}",
                power(1000.0)
            );
            assert!(power(2000.0) < 200.0, "{rate}: alias {}", power(2000.0));
        }
    }

    #[test]
    fn bad_files_are_clear_errors_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let pcm = wav::write_pcm16(&[1; 400]);
        let cases: Vec<(PathBuf, &str)> = vec![
            (write(d.path(), "trunc.wav", &pcm[..60]), "truncated"),
            (
                write(d.path(), "rate.wav", &wav_header(1, 11025, 16, &[0; 100])),
                "11025 Hz",
            ),
            (
                write(d.path(), "stereo.wav", &wav_header(2, 8000, 16, &[0; 100])),
                "2 channels",
            ),
            (
                write(d.path(), "empty.wav", &wav_header(1, 8000, 16, &[])),
                "no audio",
            ),
            (write(d.path(), "zero.ulaw", &[]), "no audio"),
            (write(d.path(), "text.wav", b"hello"), "not a WAV"),
            (d.path().join("missing.wav"), "No such file"),
        ];
        for (path, want) in cases {
            let e = Prompt::load("enter_pin", &path).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.starts_with("prompt enter_pin: "), "{e}");
        }
        // Longer than 10 minutes.
        let long = write(d.path(), "long.ulaw", &vec![0xFFu8; MAX_SAMPLES + 1]);
        assert!(Prompt::load("x", &long)
            .unwrap_err()
            .to_string()
            .contains("600 s limit"));
    }

    #[test]
    fn the_shipped_set_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sip-config/prompts");
        let set = Prompts::load(&dir, &BTreeMap::new(), &dir).unwrap();
        for name in NAMES {
            let p = set.get(name).unwrap();
            assert!(p.len() > 4000, "{name} is at least half a second");
        }
    }

    #[test]
    fn overrides_and_unknown_names() {
        let d = tempfile::tempdir().unwrap();
        for name in NAMES {
            write(
                d.path(),
                &format!("{name}.wav"),
                &wav::write_pcm16(&[5; 160]),
            );
        }
        let other = write(d.path(), "custom.wav", &wav::write_pcm16(&[5; 320]));
        let mut files = BTreeMap::new();
        files.insert("verified".to_string(), PathBuf::from("custom.wav"));
        let set = Prompts::load(d.path(), &files, d.path()).unwrap();
        assert_eq!(set.get("verified").unwrap().len(), 320);
        assert_eq!(set.get("enter_pin").unwrap().len(), 160);
        let _ = other;
        files.insert("bogus".to_string(), PathBuf::from("custom.wav"));
        let e = Prompts::load(d.path(), &files, d.path()).unwrap_err();
        assert!(e.to_string().contains("unknown prompt name"), "{e}");
    }
}
