//! Replays every fuzz target's committed seeds (`fuzz/seeds/<target>/`) and crash
//! regressions (`fuzz/regressions/<target>/`) through the same functions the cargo-fuzz
//! targets call (`pincoderouting::fuzzing`), so a normal `cargo test` catches a regression
//! without nightly or a fuzzer. A panic in any of them fails the test, naming the file.

// A driver of the sans-IO core: it hands in the one `Instant` the targets start from.
#![allow(clippy::disallowed_methods)]

use pincoderouting::fuzzing;
use std::path::{Path, PathBuf};
use std::time::Instant;

const TARGETS: [&str; 6] = ["sip", "sdp", "rtp", "info", "wav", "config"];

fn run(target: &str, data: &[u8]) {
    let t0 = Instant::now();
    match target {
        "sip" => fuzzing::sip(t0, data),
        "sdp" => fuzzing::sdp(data),
        "rtp" => fuzzing::rtp(t0, data),
        "info" => fuzzing::info(data),
        "wav" => fuzzing::wav(data),
        "config" => fuzzing::config(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

#[test]
fn every_fuzz_target_replays_its_seeds_and_regressions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut failures = Vec::new();
    for t in TARGETS {
        let seeds = files(&root.join("seeds").join(t));
        assert!(!seeds.is_empty(), "fuzz/seeds/{t} has no seeds");
        let regressions = files(&root.join("regressions").join(t));
        for f in seeds.iter().chain(&regressions) {
            let data = std::fs::read(f).unwrap();
            let shown = f.strip_prefix(&root).unwrap_or(f).display().to_string();
            if std::panic::catch_unwind(|| run(t, &data)).is_err() {
                failures.push(shown);
            }
        }
    }
    assert!(failures.is_empty(), "fuzz inputs that panic: {failures:?}");
}

#[test]
fn every_target_has_a_cargo_fuzz_binary() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml"))
            .unwrap();
    for t in TARGETS {
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{t}.rs\"")),
            "fuzz/Cargo.toml lacks target {t}"
        );
    }
}
