//! `pincoderouting contacts`: set-pin with numbers in any format, import --csv (PINs stored
//! only as argon2id hashes, the CSV deleted), hash-pin; never a PIN on the screen.

use std::io::Write;
use std::process::{Command, Stdio};

fn run(args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pincoderouting"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn import_csv_set_pin_and_hash_pin() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("p.toml");
    std::fs::write(
        &cfg,
        "default_organization = \"acme\"\n\
         [[organization]]\nname = \"acme\"\npbx_host = \"p\"\npin_success_ext = \"1\"\npin_failed_ext = \"2\"\n\
         [[organization]]\nname = \"roma\"\npbx_host = \"p\"\npin_success_ext = \"1\"\npin_failed_ext = \"2\"\ncountry_code = \"39\"\n",
    )
    .unwrap();
    let contacts = d.path().join("contacts.toml");
    let csv = d.path().join("clients.csv");
    std::fs::write(
        &csv,
        "id,name,organization,phones,pin\nc1,Ann,acme,(555) 123-4567,4321\nc2,Marco,roma,06 1234 5678,8765\n",
    )
    .unwrap();
    let (c, f) = (cfg.to_str().unwrap(), contacts.to_str().unwrap());
    let (ok, out) = run(
        &[
            "contacts",
            "import",
            "--csv",
            csv.to_str().unwrap(),
            "--file",
            f,
            "--config",
            c,
        ],
        "",
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("2 added") && !out.contains("4321") && !out.contains("8765"),
        "{out}"
    );
    assert!(!csv.exists(), "the CSV holds PINs in clear: deleted");
    let text = std::fs::read_to_string(&contacts).unwrap();
    assert!(
        text.contains("+15551234567") && text.contains("+390612345678"),
        "{text}"
    );
    assert!(!text.contains("4321") && !text.contains("8765") && text.contains("$argon2id$"));
    // A bad row: named, nothing written, no PIN shown.
    let bad = d.path().join("bad.csv");
    std::fs::write(&bad, "id,phones,pin\nc3,5550001111,12x4\n").unwrap();
    let (ok, out) = run(
        &[
            "contacts",
            "import",
            "--csv",
            bad.to_str().unwrap(),
            "--file",
            f,
            "--config",
            c,
            "--org",
            "acme",
        ],
        "",
    );
    assert!(
        !ok && out.contains("row 2 (c3)") && !out.contains("12x4"),
        "{out}"
    );
    assert!(bad.exists(), "kept when nothing was imported");
    // From standard input.
    let (ok, out) = run(
        &[
            "contacts", "import", "--csv", "-", "--file", f, "--config", c, "--org", "acme",
        ],
        "id,phones,pin\nc4,555.000.2222,1111\n",
    );
    assert!(ok, "{out}");
    // An organization the configuration does not know, and no --country-code: refused.
    let (ok, out) = run(
        &[
            "contacts", "import", "--csv", "-", "--file", f, "--config", c, "--org", "nowhere",
        ],
        "id,phones,pin\nc5,555.000.3333,1111\n",
    );
    assert!(
        !ok && out.contains("nowhere") && out.contains("--country-code"),
        "{out}"
    );
    // set-pin with the number as people write it.
    let (ok, out) = run(
        &[
            "contacts",
            "set-pin",
            "--file",
            f,
            "--config",
            c,
            "--phone",
            "555-123-4567",
        ],
        "2468\n",
    );
    assert!(ok && out.contains("c1"), "{out}");
    let (ok, out) = run(
        &[
            "contacts",
            "set-pin",
            "--file",
            f,
            "--country-code",
            "39",
            "--phone",
            "06 1234 5678",
        ],
        "1357\n",
    );
    assert!(ok && out.contains("c2"), "{out}");
    // hash-pin prints a hash and never the PIN.
    let (ok, out) = run(&["contacts", "hash-pin"], "9753\n");
    assert!(
        ok && out.starts_with("$argon2id$") && !out.contains("9753"),
        "{out}"
    );
    let (ok, _) = run(&["contacts", "hash-pin"], "12 34\n");
    assert!(!ok);
}
