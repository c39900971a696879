//! Black-box: `pincoderouting dtmf-detect` on WAV files and captures.

mod common;

use common::repo;
use pincoderouting::media::wav;
use std::process::Command;

fn detect(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pincoderouting"))
        .arg("dtmf-detect")
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tone(f1: f32, f2: f32, ms: usize) -> Vec<i16> {
    pincoderouting::media::dtmf::dual_tone(f1, f2, ms, 5000.0)
}

#[test]
fn wav_prints_digits_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut pcm = vec![0i16; 1600];
    for (f1, f2) in [(852.0, 1336.0), (697.0, 1633.0), (941.0, 1209.0)] {
        pcm.extend(tone(f1, f2, 80));
        pcm.extend(vec![0i16; 800]);
    }
    let path = dir.path().join("pin.wav");
    std::fs::write(&path, wav::write_pcm16(&pcm)).unwrap();
    let p = path.to_str().unwrap();
    let (code, out, _) = detect(&[p]);
    assert_eq!((code, out.as_str()), (0, "8A*\n"));
    let (code, out, _) = detect(&["--json", p]);
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["digit"], "8");
    let (s, e) = (
        lines[0]["start_ms"].as_u64().unwrap(),
        lines[0]["end_ms"].as_u64().unwrap(),
    );
    assert!(
        (190..=210).contains(&s) && (270..=290).contains(&e),
        "{s}..{e}"
    );
    // Speech from the talk-off set: an empty line.
    let (code, out, _) = detect(&["tests/data/talkoff/speech-de-p75.wav"]);
    assert_eq!((code, out.as_str()), (0, "\n"));
}

#[test]
fn captures_print_per_stream_digits() {
    let (code, out, err) = detect(&["scenarios/pcap/rfc4733_pin.pcap"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rfc4733: 1234#\n  inband: \n"), "{out}");
    let (code, out, _) = detect(&["scenarios/pcap/inband_pin.pcap"]);
    assert_eq!(code, 0);
    assert!(out.contains("rfc4733: \n  inband: 1234#\n"), "{out}");
    let (code, out, _) = detect(&["--json", "/usr/share/sip-tester/dtmf_2833_9.pcap"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["digit"], "9");
    assert_eq!(v["source"], "rfc4733");
}

#[test]
fn bad_inputs_exit_nonzero_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let stereo = dir.path().join("stereo.wav");
    let mut w = wav::write_pcm16(&[0; 100]);
    w[22] = 2; // channels
    std::fs::write(&stereo, w).unwrap();
    let (code, out, err) = detect(&[stereo.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("2 channels: need mono"), "{err}");
    let (code, _, err) = detect(&["Cargo.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("unrecognised file"), "{err}");
    let (code, _, err) = detect(&["no/such/file.wav"]);
    assert_eq!(code, 2);
    assert!(err.contains("no/such/file.wav"), "{err}");
}
