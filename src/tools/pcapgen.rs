//! Writes RTP streams as pcap files (Ethernet/IPv4/UDP), for tests, for the SIPp
//! captures in `scenarios/pcap/` (`cargo run --example make-dtmf-pcaps`) and for
//! `pincoderouting gen-pcap` (the tester's kit: the keys of any PIN, RFC 4733 or in-band,
//! PCMU or PCMA).

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
    let timing = Timing {
        lead_ms,
        on_ms: tone_ms,
        off_ms: gap_ms,
        pause_ms: 0,
    };
    inband_packets_in(Codec::Pcmu, keys, timing)
}

/// When keys are pressed: `lead_ms` of silence first, each key `on_ms` long with `off_ms`
/// of silence after it, and `pause_ms` of silence for each `,` in the keys (a dialer's pause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub lead_ms: u32,
    pub on_ms: u32,
    pub off_ms: u32,
    pub pause_ms: u32,
}

/// The pause character in a key string (as on a phone's dialer).
pub const PAUSE: char = ',';

/// `codec` packets (20 ms) for `keys` as in-band tones at −10 dBm0 per tone.
pub fn inband_packets_in(codec: Codec, keys: &str, t: Timing) -> Vec<RtpSpec> {
    const LOW: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
    const HIGH: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
    const PAD: [&str; 4] = ["123A", "456B", "789C", "*0#D"];
    let amp = 32768.0 * 10f32.powf((-10.0 - crate::media::dtmf::inband::FULL_SCALE_DBM0) / 20.0);
    let silence = |ms: u32| std::iter::repeat_n(0i16, (ms * 8) as usize);
    let mut pcm: Vec<i16> = silence(t.lead_ms).collect();
    for key in keys.chars() {
        if key == PAUSE {
            pcm.extend(silence(t.pause_ms));
            continue;
        }
        // An unknown key plays as '1'.
        let key = key.to_ascii_uppercase();
        let (low, high) = PAD
            .iter()
            .zip(LOW)
            .find_map(|(row, low)| Some((low, *HIGH.get(row.find(key)?)?)))
            .unwrap_or((LOW[0], HIGH[0]));
        pcm.extend(crate::media::dtmf::dual_tone(
            low,
            high,
            t.on_ms as usize,
            amp,
        ));
        pcm.extend(silence(t.off_ms));
    }
    pcm.chunks(160)
        .enumerate()
        .map(|(i, c)| {
            let payload = c.iter().map(|x| g711::encode(codec, *x)).collect();
            (codec.static_pt(), (i * 160) as u32, i == 0, payload)
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
    let timing = Timing {
        lead_ms,
        on_ms: press_ms,
        off_ms: gap_ms,
        pause_ms: 0,
    };
    rfc4733_packets_in(Codec::Pcmu, keys, te_pt, timing)
}

/// `codec` silence interleaved with RFC 4733 events (PT `te_pt`) for `keys`, as
/// `rfc4733_packets`; a `,` is `pause_ms` of silence.
pub fn rfc4733_packets_in(codec: Codec, keys: &str, te_pt: u8, t: Timing) -> Vec<RtpSpec> {
    let silence = vec![g711::encode(codec, 0); 160];
    let pt = codec.static_pt();
    let mut out: Vec<RtpSpec> = Vec::new();
    let mut ts = 0u32;
    let audio = |out: &mut Vec<RtpSpec>, ts: &mut u32, ms: u32| {
        for _ in 0..ms / 20 {
            out.push((pt, *ts, out.is_empty(), silence.clone()));
            *ts += 160;
        }
    };
    audio(&mut out, &mut ts, t.lead_ms);
    for key in keys.chars() {
        if key == PAUSE {
            audio(&mut out, &mut ts, t.pause_ms);
            continue;
        }
        let Some(d) = Digit::from_char(key) else {
            continue;
        };
        let start = ts;
        let steps = (t.on_ms / 20).max(1);
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
        audio(&mut out, &mut ts, t.off_ms);
    }
    out
}

/// How `gen-pcap` sends the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// RFC 4733 telephone-events at this dynamic payload type, beside codec silence.
    Rfc4733 { te_pt: u8 },
    /// Dual tones in the codec's audio.
    Inband,
}

/// Why `gen-pcap` refused its arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenError {
    /// A key that is not 0-9, *, #, A-D or the pause `,`.
    #[error("key {0:?} is not one of 0-9 * # A-D (or ',' for a pause)")]
    BadKey(char),
    /// No key and no pause: nothing to write.
    #[error("no keys given")]
    Empty,
    /// The telephone-event payload type must be dynamic (RFC 3551: 96-127).
    #[error("telephone-event payload type {0} is not dynamic (96-127)")]
    BadPt(u8),
    /// Keys shorter than RFC 4733 or Q.24 allows, or timings that do not fit 20 ms frames.
    #[error("{0}")]
    BadTiming(String),
    /// The capture could not be written.
    #[error("cannot write the capture: {0}")]
    Write(String),
}

/// A whole `gen-pcap` capture: an RTP stream (192.0.2.1:4000 -> 192.0.2.10:10000) that SIPp
/// can play with `play_pcap_audio`, holding `keys` sent by `method` over `codec`.
pub fn dtmf_capture(
    keys: &str,
    method: Method,
    codec: Codec,
    timing: Timing,
) -> Result<Vec<u8>, GenError> {
    if let Some(bad) = keys
        .chars()
        .find(|c| *c != PAUSE && Digit::from_char(*c).is_none())
    {
        return Err(GenError::BadKey(bad));
    }
    if keys.is_empty() {
        return Err(GenError::Empty);
    }
    if let Method::Rfc4733 { te_pt } = method {
        if !(96..=127).contains(&te_pt) {
            return Err(GenError::BadPt(te_pt));
        }
    }
    if !(40..=5000).contains(&timing.on_ms) || !(40..=60_000).contains(&timing.off_ms) {
        return Err(GenError::BadTiming(
            "a key is 40-5000 ms on and 40-60000 ms off (ITU-T Q.24: 40 ms at least)".into(),
        ));
    }
    if timing.lead_ms > 60_000 || timing.pause_ms > 60_000 {
        return Err(GenError::BadTiming(
            "lead and pause are at most 60000 ms".into(),
        ));
    }
    let times = [timing.on_ms, timing.off_ms, timing.lead_ms, timing.pause_ms];
    if matches!(method, Method::Rfc4733 { .. }) && times.iter().any(|ms| ms % 20 != 0) {
        return Err(GenError::BadTiming(
            "RFC 4733 times are whole 20 ms packets (multiples of 20 ms)".into(),
        ));
    }
    let packets = match method {
        Method::Rfc4733 { te_pt } => rfc4733_packets_in(codec, keys, te_pt, timing),
        Method::Inband => inband_packets_in(codec, keys, timing),
    };
    rtp_pcap(&packets).map_err(|e| GenError::Write(e.to_string()))
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

    fn detect(bytes: &[u8]) -> (String, String, u8) {
        let r = crate::tools::dtmf_detect::detect_pcap(bytes, crate::testutil::epoch()).unwrap();
        let keys = |v: &[crate::tools::dtmf_detect::Detected]| {
            v.iter().map(|d| d.digit.as_char()).collect::<String>()
        };
        let audio_pt = r[0]
            .kinds
            .iter()
            .find(|(pt, _)| *pt < 96)
            .map(|k| k.0)
            .unwrap();
        (keys(&r[0].rfc4733), keys(&r[0].inband), audio_pt)
    }

    const T: Timing = Timing {
        lead_ms: 400,
        on_ms: 100,
        off_ms: 100,
        pause_ms: 1000,
    };

    #[test]
    fn gen_pcap_any_keys_any_codec_any_event_pt() {
        let c = dtmf_capture("4821#", Method::Rfc4733 { te_pt: 96 }, Codec::Pcma, T).unwrap();
        assert_eq!(detect(&c), ("4821#".into(), String::new(), 8));
        let c = dtmf_capture("4821#", Method::Inband, Codec::Pcma, T).unwrap();
        assert_eq!(detect(&c), (String::new(), "4821#".into(), 8));
        // A pause splits entries: "1111#" then, a second later, "4821#".
        let c = dtmf_capture("11#,48*4821#", Method::Inband, Codec::Pcmu, T).unwrap();
        assert_eq!(detect(&c), (String::new(), "11#48*4821#".into(), 0));
        let c = dtmf_capture("A,D", Method::Rfc4733 { te_pt: 101 }, Codec::Pcmu, T).unwrap();
        assert_eq!(detect(&c).0, "AD");
    }

    #[test]
    fn gen_pcap_refuses_what_it_cannot_write() {
        let m = Method::Rfc4733 { te_pt: 101 };
        assert_eq!(
            dtmf_capture("12x", m, Codec::Pcmu, T),
            Err(GenError::BadKey('x'))
        );
        assert_eq!(dtmf_capture("", m, Codec::Pcmu, T), Err(GenError::Empty));
        let bad_pt = Method::Rfc4733 { te_pt: 8 };
        assert_eq!(
            dtmf_capture("1", bad_pt, Codec::Pcmu, T),
            Err(GenError::BadPt(8))
        );
        let short = Timing { on_ms: 20, ..T };
        assert!(dtmf_capture("1", m, Codec::Pcmu, short).is_err());
        let odd = Timing { on_ms: 50, ..T };
        assert!(dtmf_capture("1", m, Codec::Pcmu, odd).is_err());
        assert!(dtmf_capture("1", Method::Inband, Codec::Pcmu, odd).is_ok());
    }
}
