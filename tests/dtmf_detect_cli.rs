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

/// `gen-pcap` writes what `dtmf-detect` reads back: the same keys, by the method, codec and
/// event payload type asked for.
#[test]
fn gen_pcap_reads_back_to_the_same_digits() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--method", "rfc4733"],
            "PCMU(0)+telephone-event(101)\n  rfc4733: 4821#\n  inband: \n",
        ),
        (
            &["--method", "rfc4733", "--pt", "96", "--codec", "pcma"],
            "PCMA(8)+telephone-event(96)\n  rfc4733: 4821#\n  inband: \n",
        ),
        (
            &["--method", "inband"],
            "PCMU(0)\n  rfc4733: \n  inband: 4821#\n",
        ),
        (
            &[
                "--method", "inband", "--codec", "pcma", "--on-ms", "60", "--off-ms", "60",
            ],
            "PCMA(8)\n  rfc4733: \n  inband: 4821#\n",
        ),
        (
            &[
                "--method",
                "inband",
                "--on-ms",
                "100",
                "--off-ms",
                "100",
                "--lead-ms",
                "0",
            ],
            "PCMU(0)\n  rfc4733: \n  inband: 4821#\n",
        ),
    ];
    for (i, (args, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("pin{i}.pcap"));
        let out = Command::new(env!("CARGO_BIN_EXE_pincoderouting"))
            .args(["gen-pcap", "--digits", "4821#"])
            .args(*args)
            .arg("-o")
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        // It says what it wrote, never which keys.
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("5 keys") && !said.contains("4821"), "{said}");
        let (code, got, err) = detect(&[path.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(got.ends_with(want), "{args:?}:\n{got}");
    }
    // A ',' is a pause between entries: "1111#", a second of silence, "4821#".
    let path = dir.path().join("two.pcap");
    let ok = Command::new(env!("CARGO_BIN_EXE_pincoderouting"))
        .args([
            "gen-pcap",
            "--digits",
            "1111#,4821#",
            "--method",
            "rfc4733",
            "-o",
        ])
        .arg(&path)
        .status()
        .unwrap();
    assert!(ok.success());
    let (_, got, _) = detect(&["--json", path.to_str().unwrap()]);
    let starts: Vec<u64> = got
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["start_ms"].as_u64())
        .collect();
    assert_eq!(starts.len(), 10, "{got}");
    assert!(starts[5] - starts[4] >= 1000, "the pause: {starts:?}");
    // Keys it cannot send are refused (exit 2), and nothing is written.
    let bad = dir.path().join("bad.pcap");
    let out = Command::new(env!("CARGO_BIN_EXE_pincoderouting"))
        .args(["gen-pcap", "--digits", "12x", "--method", "inband", "-o"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'x'"));
    assert!(!bad.exists());
}
