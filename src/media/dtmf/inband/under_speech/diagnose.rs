//! Why keys under speech are missed: each missed key's windows, classified by the first
//! begin test they fail, and the measurement's verdict where a span could begin a key; and
//! a file traced through the detector. Needs the long set, as the full evaluation.
//! `PCR_DIAG_RATIO=5 PCR_DIAG_VERBOSE=1 cargo test --release --lib
//! dtmf::inband::under_speech::diagnose -- --ignored --nocapture`

use super::*;
use std::collections::BTreeMap;

fn pair_of(key: char) -> (usize, usize) {
    for (r, row) in KEYPAD.iter().enumerate() {
        if let Some(c) = row.iter().position(|k| char::from(*k) == key) {
            return (r, 4 + c);
        }
    }
    unreachable!()
}

/// The first classify test window `w` fails for `pair` ("ok"/"clean" if none).
fn why_window(d: &InbandDetector, older: &[f32; HOP], pair: (usize, usize)) -> &'static str {
    let c = consts();
    let w = d.back(0).unwrap();
    if w.power.iter().all(|&p| p == 0.0) {
        return "quiet";
    }
    if w.energy < c.min_window_energy {
        return "quiet";
    }
    let strongest = |(_, a): &(usize, f32), (_, b): &(usize, f32)| a.total_cmp(b);
    let bins = w.power.into_iter().enumerate();
    let (r, pr) = bins.clone().take(4).max_by(strongest).unwrap();
    let (col, pc) = bins.skip(4).max_by(strongest).unwrap();
    if r != pair.0 {
        return "row-bin";
    }
    if col != pair.1 {
        return "col-bin";
    }
    if pr < c.min_power || pc < c.min_power {
        return "floor";
    }
    let tones = (pr + pc) / c.gain;
    let [h1, h2] = w.halves;
    if h1.min(h2) < MIN_HALF_BALANCE * h1.max(h2) {
        return "balance";
    }
    if tones < MIN_WHOLE_FRACTION * w.energy {
        return "whole";
    }
    if tones >= MIN_CLEAN_FRACTION * w.energy {
        return "clean";
    }
    let low = low_energy(c, older, &d.chunk);
    if tones < MIN_TONE_FRACTION * (w.energy - low) {
        return "above";
    }
    if low > MAX_LOW_RATIO * tones {
        return "low";
    }
    "tone"
}

#[test]
#[ignore = "diagnostic"]
fn diagnose_misses() {
    // Only when asked (the full evaluation's command runs every ignored test here).
    let Some(ratio) = std::env::var("PCR_DIAG_RATIO")
        .ok()
        .and_then(|v| v.parse::<f32>().ok())
    else {
        return;
    };
    // Per missed key, one letter per window inside it: c/t clean/tone-like, R/K another
    // row/column bin strongest, a/w/l/b the share above the low band / of the whole window,
    // the low band, the balance; q quiet, f under the floor.
    let verbose = std::env::var_os("PCR_DIAG_VERBOSE").is_some();
    let mut bgs = committed_speech();
    bgs.extend(long_speech());
    bgs.extend(music_pieces(12, 30.0, 1000));
    let codec = Codec::Pcmu;
    let table = g711::decode_table_f32(codec);
    let mut verdicts: BTreeMap<String, u32> = BTreeMap::new();
    let mut window_reasons: BTreeMap<&str, u32> = BTreeMap::new();
    let mut missed_total = 0;
    for (b, bg) in bgs.iter().enumerate() {
        for k in 0..3u64 {
            let seed = 0x5049_4e00 + (b as u64) * 1000 + k;
            let pin = random_pin(&mut SmallRng::seed_from_u64(seed));
            let (mix, keys) = make_mix_keys(bg, &pin, ratio, &mut SmallRng::seed_from_u64(seed));
            let coded: Vec<u8> = mix
                .iter()
                .map(|x| g711::encode(codec, x.round().clamp(-32768.0, 32767.0) as i16))
                .collect();
            // Windows per key: reasons, and the measurement after each.
            let mut d = InbandDetector::new();
            let mut begins: Vec<(char, u64)> = vec![];
            let mut per_key: Vec<Vec<(&'static str, Option<Reject>, bool)>> =
                vec![vec![]; keys.len()];
            let mut older = [0f32; HOP];
            for chunk in coded.chunks(HOP) {
                d.process_g711(chunk, table);
                while let Some(e) = d.poll_event() {
                    if let InbandEvent::Begin { digit, at_sample } = e {
                        begins.push((digit.as_char(), at_sample));
                    }
                }
                let prev_older = older;
                older = d.chunk;
                let Some(w) = d.back(0) else { continue };
                let (ws, we) = (w.start as usize, w.start as usize + WIN);
                for (i, &(key, start, on)) in keys.iter().enumerate() {
                    if ws >= start && we <= start + on {
                        let pair = pair_of(key);
                        let why = why_window(&d, &prev_older, pair);
                        // A span that could begin the key, and how it measures.
                        let spans =
                            d.back(0).unwrap().class == Some(pair) && d.span(pair).is_some();
                        let m = if spans {
                            Some(d.measure(pair).err())
                        } else {
                            None
                        };
                        per_key[i].push((why, m.flatten(), m.is_some()));
                    }
                }
            }
            for (i, &(key, start, on)) in keys.iter().enumerate() {
                let caught = begins.iter().any(|&(c, at)| {
                    c == key && at as usize + 80 >= start && (at as usize) < start + on
                });
                if caught {
                    continue;
                }
                missed_total += 1;
                let ws = &per_key[i];
                for (why, _, _) in ws {
                    *window_reasons.entry(why).or_default() += 1;
                }
                // The measurement's verdicts where a span could begin the key.
                let mut measure_fail: BTreeMap<String, u32> = BTreeMap::new();
                for (_, m, spans) in ws {
                    if *spans {
                        *measure_fail.entry(format!("{m:?}")).or_default() += 1;
                    }
                }
                let verdict = if measure_fail.is_empty() {
                    "nospan".to_string()
                } else {
                    format!("measure {measure_fail:?}")
                };
                *verdicts
                    .entry(verdict.split(' ').next().unwrap().to_string())
                    .or_default() += 1;
                let seq: String = ws
                    .iter()
                    .map(|(w, m, spans)| match *w {
                        // C: a clean window ending a span that measures as the key.
                        "clean" => match (spans, m) {
                            (true, None) => 'C',
                            _ => 'c',
                        },
                        "tone" => 't',
                        "quiet" => 'q',
                        "row-bin" => 'R',
                        "col-bin" => 'K',
                        "floor" => 'f',
                        "balance" => 'b',
                        "whole" => 'w',
                        "above" => 'a',
                        "low" => 'l',
                        _ => '?',
                    })
                    .collect();
                if verbose {
                    println!(
                        "{} #{k} {pin} key {i} '{key}' {} ms: {verdict}\n   {seq}",
                        bg.name,
                        on / 8
                    );
                }
            }
        }
    }
    println!("{missed_total} missed keys at {ratio} dB {codec:?}");
    println!("verdicts: {verdicts:?}");
    println!("window reasons in missed keys: {window_reasons:?}");
}

/// The keys the detector finds in one file (PCR_FILE; PCMU at its level, or with PCR_PCMA
/// through PCMA 12 dB quieter, as the talk-off test).
#[test]
#[ignore = "diagnostic"]
fn trace_file() {
    let Ok(path) = std::env::var("PCR_FILE") else {
        return;
    };
    let pcm = crate::media::wav::read(&std::fs::read(&path).unwrap()).unwrap();
    let pcm: Vec<f32> = pcm.into_iter().map(f32::from).collect();
    let codec = if std::env::var_os("PCR_PCMA").is_some() {
        Codec::Pcma
    } else {
        Codec::Pcmu
    };
    let g = if codec == Codec::Pcma { 0.25 } else { 1.0 };
    let pcm: Vec<f32> = pcm.iter().map(|x| x * g).collect();
    println!("{}", detect_g711(&pcm, codec));
}

/// Talk-off on the long set as the long test runs it, or (PCR_SCAN=dir) on the WAV files
/// of another directory plus 30 min of music from other seeds: a held-out check. Names each
/// file that yields a digit (with PCR_TRACE, the detector's measurement of it follows).
#[test]
#[ignore = "diagnostic"]
fn talk_off_scan() {
    let Some(dir) = std::env::var_os("PCR_SCAN") else {
        return;
    };
    let set = if dir == "long" {
        let mut set = committed_speech();
        set.extend(long_speech());
        set.extend(music_pieces(60, 30.0, 2000));
        set
    } else {
        let mut set = read_dir_wavs(Path::new(&dir));
        set.extend(music_pieces(60, 30.0, 7000));
        set
    };
    let (mut digits, mut seconds) = (0, 0.0);
    for bg in &set {
        seconds += bg.pcm.len() as f32 / RATE;
        let quieter: Vec<f32> = bg.pcm.iter().map(|x| x * 0.25).collect();
        for (codec, pcm) in [(Codec::Pcmu, &bg.pcm), (Codec::Pcma, &quieter)] {
            eprintln!("FILE {} {codec:?}", bg.name);
            let got = detect_g711(pcm, codec);
            if !got.is_empty() {
                eprintln!("DIGITS {} {codec:?} {}", bg.name, got.len());
            }
            digits += got.len();
        }
    }
    eprintln!(
        "TOTAL {} files, {:.2} h each through PCMU and PCMA, {digits} digits",
        set.len(),
        seconds / 3600.0
    );
}
