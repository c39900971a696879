//! Writes RTP streams as pcap files (Ethernet/IPv4/UDP), for tests and for the SIPp
//! captures in `scenarios/pcap/` (`cargo run --example make-dtmf-pcaps`).

use crate::media::dtmf::Digit;
use crate::media::g711;
use crate::sip::sdp::Codec;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;
use std::time::Duration;

/// One RTP packet to write: payload type, timestamp, marker, payload. Packets are spaced
/// 20 ms apart in capture time; sequence numbers count from 0.
pub type RtpSpec = (u8, u32, bool, Vec<u8>);

/// A pcap of one RTP stream 192.0.2.1:4000 -> 192.0.2.10:10000, SSRC 0xCAFE. Fails only
/// for a packet the format cannot hold (longer than the 65535-byte snap length).
pub fn rtp_pcap(packets: &[RtpSpec]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(&mut out, header).map_err(std::io::Error::other)?;
    for (i, (pt, ts, m, payload)) in packets.iter().enumerate() {
        let mut rtp = vec![0x80, *pt | if *m { 0x80 } else { 0 }];
        rtp.extend_from_slice(&(i as u16).to_be_bytes());
        rtp.extend_from_slice(&ts.to_be_bytes());
        rtp.extend_from_slice(&0xCAFEu32.to_be_bytes());
        rtp.extend_from_slice(payload);
        let udp_len = (8 + rtp.len()) as u16;
        let ip_len = 20 + udp_len;
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
        ]);
        f.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 10]);
        f.extend_from_slice(&4000u16.to_be_bytes());
        f.extend_from_slice(&10000u16.to_be_bytes());
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&rtp);
        let t = Duration::from_millis(20 * i as u64);
        w.write_packet(&PcapPacket::new(t, f.len() as u32, &f))
            .map_err(std::io::Error::other)?;
    }
    let _ = w.into_writer();
    Ok(out)
}

/// PCMU packets (20 ms) for `keys` as in-band tones: `tone_ms` of each key at −10 dBm0 per
/// tone, `gap_ms` of silence after each, `lead_ms` of silence first.
pub fn inband_packets(keys: &str, lead_ms: u32, tone_ms: u32, gap_ms: u32) -> Vec<RtpSpec> {
    const LOW: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
    const HIGH: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
    const PAD: [&str; 4] = ["123A", "456B", "789C", "*0#D"];
    let amp = 32768.0 * 10f32.powf((-10.0 - crate::media::dtmf::inband::FULL_SCALE_DBM0) / 20.0);
    let mut pcm: Vec<i16> = vec![0; (lead_ms * 8) as usize];
    for key in keys.chars() {
        // An unknown key plays as '1'.
        let (low, high) = PAD
            .iter()
            .zip(LOW)
            .find_map(|(row, low)| Some((low, *HIGH.get(row.find(key)?)?)))
            .unwrap_or((LOW[0], HIGH[0]));
        pcm.extend(crate::media::dtmf::dual_tone(
            low,
            high,
            tone_ms as usize,
            amp,
        ));
        pcm.extend(std::iter::repeat_n(0, (gap_ms * 8) as usize));
    }
    pcm.chunks(160)
        .enumerate()
        .map(|(i, c)| {
            let payload = c.iter().map(|x| g711::encode(Codec::Pcmu, *x)).collect();
            (0u8, (i * 160) as u32, i == 0, payload)
        })
        .collect()
}

/// PCMU silence interleaved with RFC 4733 events (PT `te_pt`) for `keys`: each press is a
/// start packet, updates every 20 ms for `press_ms`, and three end packets (§2.5.1.4).
pub fn rfc4733_packets(
    keys: &str,
    te_pt: u8,
    lead_ms: u32,
    press_ms: u32,
    gap_ms: u32,
) -> Vec<RtpSpec> {
    let silence = vec![g711::encode(Codec::Pcmu, 0); 160];
    let mut out: Vec<RtpSpec> = Vec::new();
    let mut ts = 0u32;
    let audio = |out: &mut Vec<RtpSpec>, ts: &mut u32, ms: u32| {
        for _ in 0..ms / 20 {
            out.push((0, *ts, out.is_empty(), silence.clone()));
            *ts += 160;
        }
    };
    audio(&mut out, &mut ts, lead_ms);
    for key in keys.chars() {
        let Some(d) = Digit::from_char(key) else {
            continue;
        };
        let start = ts;
        let steps = (press_ms / 20).max(1);
        for i in 0..steps + 3 {
            let end = i >= steps;
            let dur = (160 * (i.min(steps - 1) + 1)) as u16;
            let vol_e = if end { 0x8A } else { 0x0A };
            out.push((
                te_pt,
                start,
                i == 0,
                vec![d.event_code(), vol_e, (dur >> 8) as u8, dur as u8],
            ));
        }
        ts += 160 * steps;
        audio(&mut out, &mut ts, gap_ms);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_captures_decode_to_their_keys() {
        let epoch = crate::testutil::epoch();
        let r = crate::tools::dtmf_detect::detect_pcap(
            &rtp_pcap(&inband_packets("147*", 200, 100, 100)).unwrap(),
            epoch,
        )
        .unwrap();
        let keys: String = r[0].inband.iter().map(|d| d.digit.as_char()).collect();
        assert_eq!(keys, "147*");
        let r = crate::tools::dtmf_detect::detect_pcap(
            &rtp_pcap(&rfc4733_packets("2580#", 101, 200, 100, 100)).unwrap(),
            epoch,
        )
        .unwrap();
        let keys: String = r[0].rfc4733.iter().map(|d| d.digit.as_char()).collect();
        assert_eq!(keys, "2580#");
        assert!(r[0].inband.is_empty());
    }
}
