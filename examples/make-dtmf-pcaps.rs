//! Writes the RTP captures SIPp plays in the DTMF scenarios (`scenarios/pcap/`):
//! `cargo run --example make-dtmf-pcaps`.

use pincoderouting::tools::pcapgen::{inband_packets, rfc4733_packets, rtp_pcap};

fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/pcap");
    std::fs::create_dir_all(&dir)?;
    let files = [
        (
            "inband_pin.pcap",
            rtp_pcap(&inband_packets("1234#", 400, 100, 100))?,
        ),
        (
            "rfc4733_pin.pcap",
            rtp_pcap(&rfc4733_packets("1234#", 101, 400, 100, 100))?,
        ),
        // Three wrong PINs in a row (the flow takes keys while its retry prompts play).
        (
            "rfc4733_wrong3.pcap",
            rtp_pcap(&rfc4733_packets("9999#9999#9999#", 101, 400, 100, 100))?,
        ),
        // One wrong PIN (one attempt per call: lockout tests).
        (
            "rfc4733_wrong1.pcap",
            rtp_pcap(&rfc4733_packets("9999#", 101, 400, 100, 100))?,
        ),
        // Silence only: no input.
        (
            "rfc4733_none.pcap",
            rtp_pcap(&rfc4733_packets("", 101, 1000, 100, 100))?,
        ),
    ];
    for (name, bytes) in files {
        std::fs::write(dir.join(name), &bytes)?;
        println!("{name}: {} bytes", bytes.len());
    }
    Ok(())
}
