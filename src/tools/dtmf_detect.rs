//! `pincoderouting dtmf-detect`: what digits a recording or a capture holds. WAV files go
//! through the in-band detector; pcap/pcapng captures are split into RTP streams, and each
//! stream's telephone-events (RFC 4733) and G.711 audio (in-band) are decoded separately.
//! This is a tester's tool: printing the digits is its purpose (the service never does).

use crate::media::dtmf::inband::{InbandDetector, InbandEvent};
use crate::media::dtmf::rfc4733::{EventBlock, Rfc4733Decoder, Rfc4733Event};
use crate::media::dtmf::Digit;
use crate::media::g711;
use crate::media::wav::{self, WavError};
use crate::sip::sdp::Codec;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// One detected digit with its time span in the recording or stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    pub digit: Digit,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Why a file could not be analysed.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A WAV file we cannot use.
    #[error("{0}")]
    Wav(#[from] WavError),
    /// A capture that does not parse.
    #[error("bad capture: {0}")]
    Pcap(String),
    /// Neither WAV nor pcap/pcapng.
    #[error("unrecognised file: need a WAV (8 kHz mono, 16-bit PCM, mu-law or A-law) or a pcap/pcapng capture")]
    Unknown,
}

/// Runs the in-band detector over linear PCM at 8 kHz.
pub fn detect_pcm(samples: &[i16]) -> Vec<Detected> {
    let mut d = InbandDetector::new();
    for c in samples.chunks(160) {
        d.process_i16(c);
    }
    d.finish();
    collect_inband(&mut d)
}

fn collect_inband(d: &mut InbandDetector) -> Vec<Detected> {
    let mut out: Vec<Detected> = Vec::new();
    while let Some(e) = d.poll_event() {
        match e {
            InbandEvent::Begin { digit, at_sample } => out.push(Detected {
                digit,
                start_ms: at_sample / 8,
                end_ms: at_sample / 8,
            }),
            InbandEvent::End { at_sample } => {
                if let Some(last) = out.last_mut() {
                    last.end_ms = at_sample / 8;
                }
            }
        }
    }
    out
}

/// Detects digits in a WAV file's bytes.
pub fn detect_wav(bytes: &[u8]) -> Result<Vec<Detected>, DetectError> {
    Ok(detect_pcm(&wav::read(bytes)?))
}

/// What one RTP stream of a capture held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReport {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub ssrc: u32,
    /// Payload types seen, with what we took them for.
    pub kinds: Vec<(u8, &'static str)>,
    pub rfc4733: Vec<Detected>,
    pub inband: Vec<Detected>,
}

/// Most packets read from one capture.
const MAX_PACKETS: usize = 5_000_000;
/// Largest silence gap filled in for lost audio, samples (1 s).
const MAX_GAP: u32 = 8000;

struct Stream {
    report: StreamReport,
    first_ts: u32,
    next_audio_ts: Option<u32>,
    inband: InbandDetector,
    rfc: Rfc4733Decoder,
    /// Longest duration seen per event timestamp, for end times.
    durations: BTreeMap<u32, u32>,
}

impl Stream {
    fn rel_ms(&self, ts: u32) -> u64 {
        ts.wrapping_sub(self.first_ts) as u64 / 8
    }

    fn kind(&mut self, pt: u8, what: &'static str) {
        if !self.report.kinds.iter().any(|(p, _)| *p == pt) {
            self.report.kinds.push((pt, what));
        }
    }

    fn audio(&mut self, codec: Codec, ts: u32, payload: &[u8]) {
        if let Some(next) = self.next_audio_ts {
            let gap = ts.wrapping_sub(next);
            if (gap as i32) < 0 {
                return; // late or duplicate packet: already covered
            }
            if gap > 0 && gap <= MAX_GAP {
                let silence = [g711::encode(codec, 0); 160];
                let mut left = gap as usize;
                while left > 0 {
                    let n = left.min(160);
                    self.inband.process_g711(
                        silence.get(..n).unwrap_or(&silence),
                        g711::decode_table_f32(codec),
                    );
                    left -= n;
                }
            }
        }
        self.inband
            .process_g711(payload, g711::decode_table_f32(codec));
        self.next_audio_ts = Some(ts.wrapping_add(payload.len() as u32));
        self.drain_inband();
    }

    fn drain_inband(&mut self) {
        // Detector positions count from the stream's first audio sample.
        while let Some(e) = self.inband.poll_event() {
            match e {
                InbandEvent::Begin { digit, at_sample } => self.report.inband.push(Detected {
                    digit,
                    start_ms: at_sample / 8,
                    end_ms: at_sample / 8,
                }),
                InbandEvent::End { at_sample } => {
                    if let Some(last) = self.report.inband.last_mut() {
                        last.end_ms = at_sample / 8;
                    }
                }
            }
        }
    }

    fn event(&mut self, now: Instant, ts: u32, marker: bool, payload: &[u8]) {
        if let Some(b) = EventBlock::parse(payload) {
            let e = self.durations.entry(ts).or_insert(0);
            *e = (*e).max(b.duration as u32);
        }
        for e in self
            .rfc
            .handle(now, ts, marker, payload)
            .into_iter()
            .flatten()
        {
            if let Rfc4733Event::Begin { digit, ts } = e {
                let start = self.rel_ms(ts);
                self.report.rfc4733.push(Detected {
                    digit,
                    start_ms: start,
                    end_ms: start,
                });
            }
        }
    }

    fn finish(mut self) -> StreamReport {
        self.inband.finish();
        self.drain_inband();
        for d in &mut self.report.rfc4733 {
            let ts = self.first_ts.wrapping_add((d.start_ms * 8) as u32);
            if let Some(dur) = self.durations.get(&ts) {
                d.end_ms = d.start_ms + *dur as u64 / 8;
            }
        }
        self.report
    }
}

/// The IP/UDP part of a link-layer frame: (src, dst, UDP payload).
fn udp_of(link: DataLink, frame: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    let ip = match link {
        DataLink::ETHERNET => {
            let mut off = 12;
            let mut ethertype = u16::from_be_bytes(frame.get(off..off + 2)?.try_into().ok()?);
            while ethertype == 0x8100 || ethertype == 0x88A8 {
                off += 4;
                ethertype = u16::from_be_bytes(frame.get(off..off + 2)?.try_into().ok()?);
            }
            frame.get(off + 2..)?
        }
        DataLink::LINUX_SLL => frame.get(16..)?,
        DataLink::LINUX_SLL2 => frame.get(20..)?,
        DataLink::NULL | DataLink::LOOP => frame.get(4..)?,
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => frame,
        _ => return None,
    };
    let version_ihl = *ip.first()?;
    let (src_ip, dst_ip, udp): (IpAddr, IpAddr, &[u8]) = match version_ihl >> 4 {
        4 => {
            let ihl = ((version_ihl & 0x0F) as usize) * 4;
            let frag = u16::from_be_bytes(ip.get(6..8)?.try_into().ok()?);
            if *ip.get(9)? != 17 || frag & 0x3FFF != 0 || ihl < 20 {
                return None;
            }
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (
                Ipv4Addr::from(s).into(),
                Ipv4Addr::from(d).into(),
                ip.get(ihl..)?,
            )
        }
        6 => {
            if *ip.get(6)? != 17 {
                return None;
            }
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (
                Ipv6Addr::from(s).into(),
                Ipv6Addr::from(d).into(),
                ip.get(40..)?,
            )
        }
        _ => return None,
    };
    let sp = u16::from_be_bytes(udp.get(0..2)?.try_into().ok()?);
    let dp = u16::from_be_bytes(udp.get(2..4)?.try_into().ok()?);
    let len = u16::from_be_bytes(udp.get(4..6)?.try_into().ok()?) as usize;
    let payload = udp.get(8..len.clamp(8, udp.len()))?;
    Some((
        SocketAddr::new(src_ip, sp),
        SocketAddr::new(dst_ip, dp),
        payload,
    ))
}

/// Walks every packet of a pcap or pcapng capture: (link type, capture time, frame).
fn for_each_packet(
    bytes: &[u8],
    mut f: impl FnMut(DataLink, Duration, &[u8]),
) -> Result<(), DetectError> {
    let err = |e: pcap_file::PcapError| DetectError::Pcap(e.to_string());
    let mut count = 0usize;
    if bytes.starts_with(&[0x0A, 0x0D, 0x0D, 0x0A]) {
        let mut r = PcapNgReader::new(bytes).map_err(err)?;
        let mut links: Vec<DataLink> = Vec::new();
        while let Some(block) = r.next_block() {
            count += 1;
            if count > MAX_PACKETS {
                break;
            }
            match block.map_err(err)? {
                Block::InterfaceDescription(i) => links.push(i.linktype),
                Block::EnhancedPacket(p) => {
                    let link = links
                        .get(p.interface_id as usize)
                        .copied()
                        .unwrap_or(DataLink::ETHERNET);
                    f(link, p.timestamp, &p.data);
                }
                Block::SimplePacket(p) => {
                    let link = links.first().copied().unwrap_or(DataLink::ETHERNET);
                    f(link, Duration::ZERO, &p.data);
                }
                _ => {}
            }
        }
        return Ok(());
    }
    let mut r = PcapReader::new(bytes).map_err(err)?;
    let link = r.header().datalink;
    while let Some(p) = r.next_packet() {
        count += 1;
        if count > MAX_PACKETS {
            break;
        }
        let p = p.map_err(err)?;
        f(link, p.timestamp, &p.data);
    }
    Ok(())
}

/// Is this a telephone-event payload (4-byte blocks, event code a key or tone)?
fn looks_like_event(pt: u8, payload: &[u8]) -> bool {
    (96..=127).contains(&pt)
        && payload.len().is_multiple_of(4)
        && payload.len() <= 64
        && payload.first().is_some_and(|event| *event <= 16)
}

/// Splits a capture into RTP streams and decodes each one's digits. `epoch` anchors the
/// capture's clock (for the RFC 4733 end timeout).
pub fn detect_pcap(bytes: &[u8], epoch: Instant) -> Result<Vec<StreamReport>, DetectError> {
    let mut streams: BTreeMap<(SocketAddr, SocketAddr, u32), Stream> = BTreeMap::new();
    let mut first_time: Option<Duration> = None;
    for_each_packet(bytes, |link, time, frame| {
        let Some((src, dst, udp)) = udp_of(link, frame) else {
            return;
        };
        let [b0, b1, ..] = *udp else {
            return;
        };
        if udp.len() < 12 || b0 >> 6 != 2 || (72..=76).contains(&(b1 & 0x7F)) {
            return; // not RTP (or RTCP)
        }
        // Our reader, not the rtp crate's (which panics on some header extensions).
        let Some((h, payload)) = crate::media::rtp::parse_header(udp) else {
            return;
        };
        let t0 = *first_time.get_or_insert(time);
        let now = epoch + time.saturating_sub(t0);
        let s = streams.entry((src, dst, h.ssrc)).or_insert_with(|| Stream {
            report: StreamReport {
                src,
                dst,
                ssrc: h.ssrc,
                kinds: Vec::new(),
                rfc4733: Vec::new(),
                inband: Vec::new(),
            },
            first_ts: h.timestamp,
            next_audio_ts: None,
            inband: InbandDetector::new(),
            rfc: Rfc4733Decoder::new(),
            durations: BTreeMap::new(),
        });
        match h.payload_type {
            0 => {
                s.kind(0, "PCMU");
                s.audio(Codec::Pcmu, h.timestamp, payload);
            }
            8 => {
                s.kind(8, "PCMA");
                s.audio(Codec::Pcma, h.timestamp, payload);
            }
            pt if looks_like_event(pt, payload) => {
                s.kind(pt, "telephone-event");
                s.event(now, h.timestamp, h.marker, payload);
            }
            pt => s.kind(pt, "ignored"),
        }
    })?;
    Ok(streams.into_values().map(Stream::finish).collect())
}

/// What kind of file the bytes are.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    match bytes.get(..4)? {
        b"RIFF" => Some("wav"),
        [0xD4, 0xC3, 0xB2, 0xA1] | [0xA1, 0xB2, 0xC3, 0xD4] => Some("pcap"),
        [0x4D, 0x3C, 0xB2, 0xA1] | [0xA1, 0xB2, 0x3C, 0x4D] => Some("pcap"),
        [0x0A, 0x0D, 0x0D, 0x0A] => Some("pcap"),
        _ => None,
    }
}

fn digits(d: &[Detected]) -> String {
    d.iter().map(|x| x.digit.as_char()).collect()
}

fn json_line(out: &mut String, d: &Detected, extra: &str) {
    let _ = writeln!(
        out,
        "{{{extra}\"digit\":\"{}\",\"start_ms\":{},\"end_ms\":{}}}",
        d.digit.as_char(),
        d.start_ms,
        d.end_ms
    );
}

/// Runs the tool on a file's bytes; returns what to print on stdout.
pub fn run(bytes: &[u8], json: bool, epoch: Instant) -> Result<String, DetectError> {
    let mut out = String::new();
    match sniff(bytes) {
        Some("wav") => {
            let found = detect_wav(bytes)?;
            if json {
                for d in &found {
                    json_line(&mut out, d, "");
                }
            } else {
                let _ = writeln!(out, "{}", digits(&found));
            }
        }
        Some(_) => {
            for s in detect_pcap(bytes, epoch)? {
                let stream = format!("{}->{}", s.src, s.dst);
                if json {
                    for (source, list) in [("rfc4733", &s.rfc4733), ("inband", &s.inband)] {
                        for d in list {
                            let extra = format!(
                                "\"stream\":\"{stream}\",\"ssrc\":\"{:#010x}\",\"source\":\"{source}\",",
                                s.ssrc
                            );
                            json_line(&mut out, d, &extra);
                        }
                    }
                } else {
                    let kinds: Vec<String> =
                        s.kinds.iter().map(|(pt, k)| format!("{k}({pt})")).collect();
                    let _ = writeln!(
                        out,
                        "{stream} ssrc={:#010x} {}\n  rfc4733: {}\n  inband: {}",
                        s.ssrc,
                        kinds.join("+"),
                        digits(&s.rfc4733),
                        digits(&s.inband)
                    );
                }
            }
        }
        None => return Err(DetectError::Unknown),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(f1: f32, f2: f32, ms: usize) -> Vec<i16> {
        crate::media::dtmf::dual_tone(f1, f2, ms, 6000.0)
    }

    #[test]
    fn wav_digits_with_times() {
        let mut pcm = vec![0i16; 800];
        pcm.extend(tone(697.0, 1209.0, 100)); // 1
        pcm.extend(vec![0; 800]);
        pcm.extend(tone(941.0, 1477.0, 60)); // #
        pcm.extend(vec![0; 800]);
        let out = run(&wav::write_pcm16(&pcm), false, crate::testutil::epoch()).unwrap();
        assert_eq!(out, "1#\n");
        let json = run(&wav::write_pcm16(&pcm), true, crate::testutil::epoch()).unwrap();
        let lines: Vec<&str> = json.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("{\"digit\":\"1\",\"start_ms\":"),
            "{json}"
        );
        let v: Vec<u64> = lines[0]
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|x| x.parse().ok())
            .collect();
        // digit "1" is also a number in the line: start, end are the last two.
        let (start, end) = (v[v.len() - 2], v[v.len() - 1]);
        assert!(
            (95..=110).contains(&start) && (195..=210).contains(&end),
            "{json}"
        );
        let silent = run(
            &wav::write_pcm16(&[0; 8000]),
            false,
            crate::testutil::epoch(),
        )
        .unwrap();
        assert_eq!(silent, "\n");
    }

    #[test]
    fn unknown_and_bad_files_are_errors() {
        assert!(matches!(
            run(b"hello world", false, crate::testutil::epoch()),
            Err(DetectError::Unknown)
        ));
        assert!(matches!(
            run(b"RIFF\0\0\0\0WAVEjunk", false, crate::testutil::epoch()),
            Err(DetectError::Wav(_))
        ));
        let mut bad = vec![0xD4, 0xC3, 0xB2, 0xA1];
        bad.extend_from_slice(&[0xFF; 10]);
        assert!(run(&bad, false, crate::testutil::epoch()).is_err());
    }

    fn pcap(packets: &[(u8, u32, bool, Vec<u8>)]) -> Vec<u8> {
        crate::tools::pcapgen::rtp_pcap(packets).unwrap()
    }

    #[test]
    fn pcap_stream_with_events_and_inband_audio() {
        let mut pkts = Vec::new();
        let mut ts = 0u32;
        // 100 ms of the key 5 in µ-law, then silence.
        let audio: Vec<u8> = tone(770.0, 1336.0, 100)
            .into_iter()
            .chain(std::iter::repeat_n(0, 800))
            .map(|x| g711::encode(Codec::Pcmu, x))
            .collect();
        for c in audio.chunks(160) {
            pkts.push((0u8, ts, false, c.to_vec()));
            ts += 160;
        }
        // Then the key 8 as telephone-events (PT 101): start, update, 3 × end.
        for (i, end) in [false, false, true, true, true].into_iter().enumerate() {
            let dur = 400 * (i as u16 + 1);
            pkts.push((
                101,
                ts,
                i == 0,
                vec![
                    8,
                    if end { 0x8A } else { 0x0A },
                    (dur >> 8) as u8,
                    dur as u8,
                ],
            ));
        }
        let reports = detect_pcap(&pcap(&pkts), crate::testutil::epoch()).unwrap();
        assert_eq!(reports.len(), 1);
        let r = &reports[0];
        assert_eq!(r.ssrc, 0xCAFE);
        assert_eq!(digits(&r.rfc4733), "8");
        assert_eq!(digits(&r.inband), "5");
        assert_eq!(r.rfc4733[0].start_ms, 200);
        assert_eq!(r.rfc4733[0].end_ms, 200 + 2000 / 8);
        let text = run(&pcap(&pkts), false, crate::testutil::epoch()).unwrap();
        assert!(text.contains("192.0.2.1:4000->192.0.2.10:10000"), "{text}");
        assert!(text.contains("rfc4733: 8\n  inband: 5"), "{text}");
    }

    #[test]
    fn pcapng_captures_read_like_pcap() {
        use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
        use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
        use pcap_file::pcapng::PcapNgWriter;
        let pcap = crate::tools::pcapgen::rtp_pcap(&crate::tools::pcapgen::rfc4733_packets(
            "*7", 101, 100, 100, 100,
        ))
        .unwrap();
        let mut ng = PcapNgWriter::new(Vec::new()).unwrap();
        ng.write_block(&Block::InterfaceDescription(
            InterfaceDescriptionBlock::new(DataLink::ETHERNET, 65535),
        ))
        .unwrap();
        let mut r = PcapReader::new(&pcap[..]).unwrap();
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            ng.write_block(&Block::EnhancedPacket(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: p.timestamp,
                original_len: p.orig_len,
                data: p.data.clone(),
                options: vec![],
            }))
            .unwrap();
        }
        let bytes = ng.into_inner();
        assert_eq!(sniff(&bytes), Some("pcap"));
        let reports = detect_pcap(&bytes, crate::testutil::epoch()).unwrap();
        assert_eq!(digits(&reports[0].rfc4733), "*7");
    }

    #[test]
    fn sipp_shipped_dtmf_captures() {
        // The sip-tester package ships RFC 2833 captures of each key: each must decode to
        // its key.
        let dir = std::path::Path::new("/usr/share/sip-tester");
        assert!(dir.exists(), "apt-get install -y sip-tester (see .ci/run)");
        for (name, key) in [
            ("dtmf_2833_1.pcap", "1"),
            ("dtmf_2833_pound.pcap", "#"),
            ("dtmf_2833_star.pcap", "*"),
            ("dtmf_2833_0.pcap", "0"),
        ] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            let reports = detect_pcap(&bytes, crate::testutil::epoch()).unwrap();
            let all: String = reports.iter().map(|r| digits(&r.rfc4733)).collect();
            assert_eq!(all, key, "{name}");
        }
    }
}
