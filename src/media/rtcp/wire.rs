//! RTCP wire format (RFC 3550 §6.4–6.6, validity checks of appendix A.2), hand-written:
//! a compound packet is checked whole before anything in it is used, and nothing here
//! indexes into peer bytes (checked slices and iterators only) or allocates.

/// Sender report (RFC 3550 §6.4.1).
pub const PT_SR: u8 = 200;
/// Receiver report (§6.4.2).
pub const PT_RR: u8 = 201;
/// Source description (§6.5).
pub const PT_SDES: u8 = 202;
/// Goodbye (§6.6).
pub const PT_BYE: u8 = 203;
/// SDES item type CNAME (§6.5.1).
const SDES_CNAME: u8 = 1;
/// Largest compound packet we look at (one Ethernet MTU).
pub const MAX_RTCP_PACKET: usize = 1500;
const REPORT_BLOCK: usize = 24;
const SENDER_INFO: usize = 20;

/// Why a datagram is not a valid compound RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    /// Fewer than 8 bytes (a header and an SSRC), or more than `MAX_RTCP_PACKET`.
    #[error("RTCP datagram too short or too long")]
    Size,
    /// A version other than 2.
    #[error("RTCP version is not 2")]
    Version,
    /// A length field points past the datagram's end.
    #[error("RTCP length field runs past the datagram")]
    Length,
    /// The first packet is not an SR or RR (RFC 3550 A.2).
    #[error("compound RTCP does not start with SR or RR")]
    NotReport,
    /// Padding on a packet other than the last, or a padding count that does not fit.
    #[error("bad RTCP padding")]
    Padding,
    /// A packet's body is too short for what its header counts (report blocks, SDES
    /// chunks, BYE sources, reason).
    #[error("RTCP packet body shorter than its counts")]
    Truncated,
}

/// The sender-info part of an SR (§6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// 64-bit NTP timestamp (seconds since 1900 in the high half).
    pub ntp: u64,
    pub rtp_ts: u32,
    pub packets: u32,
    pub octets: u32,
}

/// One reception report block (§6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source this block is about.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed on the wire).
    pub cumulative_lost: i32,
    pub ext_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR from that source (0: none).
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

/// The report blocks of an SR or RR (a slice of whole 24-byte blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocks<'a>(&'a [u8]);

impl<'a> Blocks<'a> {
    pub fn iter(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        self.0.chunks_exact(REPORT_BLOCK).map(|b| {
            let lost = be24(b, 5);
            // Sign-extend the 24-bit count.
            let cumulative_lost = ((lost << 8) as i32) >> 8;
            ReportBlock {
                ssrc: be32(b, 0),
                fraction_lost: b.get(4).copied().unwrap_or(0),
                cumulative_lost,
                ext_highest_seq: be32(b, 8),
                jitter: be32(b, 12),
                lsr: be32(b, 16),
                dlsr: be32(b, 20),
            }
        })
    }
}

/// One packet of a validated compound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    SenderReport {
        ssrc: u32,
        info: SenderInfo,
        blocks: Blocks<'a>,
    },
    ReceiverReport {
        ssrc: u32,
        blocks: Blocks<'a>,
    },
    /// Source description: the CNAME of the first chunk, if it has one.
    Sdes {
        chunks: u8,
        cname: Option<(u32, &'a [u8])>,
    },
    /// Goodbye: the sources leaving (4 bytes each) and the reason text (maybe empty).
    Bye {
        ssrcs: &'a [u8],
        reason: &'a [u8],
    },
    /// APP, feedback, XR…: length-checked, not looked into.
    Other {
        pt: u8,
    },
}

impl Packet<'_> {
    /// The SSRCs a BYE names.
    pub fn bye_ssrcs(ssrcs: &[u8]) -> impl Iterator<Item = u32> + '_ {
        ssrcs.chunks_exact(4).map(|c| be32(c, 0))
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0)
}

fn be24(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 3)
        .map(|s| s.iter().fold(0u32, |a, x| (a << 8) | u32::from(*x)))
        .unwrap_or(0)
}

/// RFC 5761 §4: on a multiplexed port, a second byte of 192..=223 is RTCP (RTP payload
/// types 64..=95 with the marker bit, which nobody negotiates).
pub fn looks_like_rtcp(data: &[u8]) -> bool {
    data.get(1).is_some_and(|b| (192..=223).contains(b))
}

/// A validated compound RTCP packet.
#[derive(Debug, Clone, Copy)]
pub struct Compound<'a>(&'a [u8]);

/// Checks a whole compound packet (RFC 3550 A.2 plus each packet's own counts).
pub fn parse(data: &[u8]) -> Result<Compound<'_>, RtcpError> {
    if data.len() < 8 || data.len() > MAX_RTCP_PACKET {
        return Err(RtcpError::Size);
    }
    let mut rest = data;
    let mut first = true;
    while !rest.is_empty() {
        let (p, r) = split(rest)?;
        if first
            && !matches!(
                p,
                Packet::SenderReport { .. } | Packet::ReceiverReport { .. }
            )
        {
            return Err(RtcpError::NotReport);
        }
        first = false;
        rest = r;
    }
    Ok(Compound(data))
}

impl<'a> Compound<'a> {
    /// The packets, in order.
    pub fn packets(&self) -> impl Iterator<Item = Packet<'a>> + 'a {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            // Validated by `parse`; an error here would only end the walk.
            let (p, r) = split(rest).ok()?;
            rest = r;
            Some(p)
        })
    }
}

/// Splits the first packet off `data`.
fn split(data: &[u8]) -> Result<(Packet<'_>, &[u8]), RtcpError> {
    let head = data.get(..4).ok_or(RtcpError::Length)?;
    let (b0, pt) = (
        head.first().copied().unwrap_or(0),
        head.get(1).copied().unwrap_or(0),
    );
    if b0 >> 6 != 2 {
        return Err(RtcpError::Version);
    }
    let count = b0 & 0x1F;
    let words = head
        .get(2..4)
        .map(|l| {
            u16::from_be_bytes([
                l.first().copied().unwrap_or(0),
                l.get(1).copied().unwrap_or(0),
            ])
        })
        .unwrap_or(0);
    let len = (usize::from(words) + 1) * 4;
    let packet = data.get(..len).ok_or(RtcpError::Length)?;
    let rest = data.get(len..).unwrap_or_default();
    let mut body = packet.get(4..).unwrap_or_default();
    if b0 & 0x20 != 0 {
        // Padding only on the last packet of a compound (A.2); its count includes itself.
        if !rest.is_empty() {
            return Err(RtcpError::Padding);
        }
        let pad = usize::from(body.last().copied().unwrap_or(0));
        if pad == 0 || pad > body.len() {
            return Err(RtcpError::Padding);
        }
        body = body.get(..body.len() - pad).unwrap_or_default();
    }
    let p = match pt {
        PT_SR => {
            let blocks = usize::from(count) * REPORT_BLOCK;
            let need = 4 + SENDER_INFO + blocks;
            if body.len() < need {
                return Err(RtcpError::Truncated);
            }
            Packet::SenderReport {
                ssrc: be32(body, 0),
                info: SenderInfo {
                    ntp: (u64::from(be32(body, 4)) << 32) | u64::from(be32(body, 8)),
                    rtp_ts: be32(body, 12),
                    packets: be32(body, 16),
                    octets: be32(body, 20),
                },
                blocks: Blocks(body.get(24..need).unwrap_or_default()),
            }
        }
        PT_RR => {
            let need = 4 + usize::from(count) * REPORT_BLOCK;
            if body.len() < need {
                return Err(RtcpError::Truncated);
            }
            Packet::ReceiverReport {
                ssrc: be32(body, 0),
                blocks: Blocks(body.get(4..need).unwrap_or_default()),
            }
        }
        PT_SDES => sdes(count, body)?,
        PT_BYE => {
            let n = usize::from(count) * 4;
            let ssrcs = body.get(..n).ok_or(RtcpError::Truncated)?;
            let after = body.get(n..).unwrap_or_default();
            let reason = match after.first() {
                Some(&l) if l > 0 => after
                    .get(1..1 + usize::from(l))
                    .ok_or(RtcpError::Truncated)?,
                _ => &[][..],
            };
            Packet::Bye { ssrcs, reason }
        }
        _ => Packet::Other { pt },
    };
    Ok((p, rest))
}

/// SDES (§6.5): `count` chunks, each an SSRC, items (type, length, text) ended by one or
/// more null octets up to the next 32-bit boundary.
fn sdes(count: u8, body: &[u8]) -> Result<Packet<'_>, RtcpError> {
    let mut at = 0usize;
    let mut cname = None;
    for _ in 0..count {
        let ssrc_at = at;
        body.get(at..at + 4).ok_or(RtcpError::Truncated)?;
        at += 4;
        loop {
            let ty = *body.get(at).ok_or(RtcpError::Truncated)?;
            if ty == 0 {
                // The end item, then pad to the boundary (counted from the chunk start,
                // which is itself aligned).
                at += 1;
                at = at.div_ceil(4) * 4;
                if at > body.len() {
                    return Err(RtcpError::Truncated);
                }
                break;
            }
            let l = usize::from(*body.get(at + 1).ok_or(RtcpError::Truncated)?);
            let text = body.get(at + 2..at + 2 + l).ok_or(RtcpError::Truncated)?;
            if ty == SDES_CNAME && cname.is_none() {
                cname = Some((be32(body, ssrc_at), text));
            }
            at += 2 + l;
        }
    }
    Ok(Packet::Sdes {
        chunks: count,
        cname,
    })
}

/// What one compound report of ours holds.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    pub ssrc: u32,
    /// Present: an SR (we sent media); absent: an RR.
    pub sender: Option<SenderInfo>,
    /// About the peer's stream, once we have heard it.
    pub block: Option<ReportBlock>,
    /// Our CNAME (at most 255 bytes; longer is cut).
    pub cname: &'a [u8],
    /// End with a BYE for our SSRC (§6.6).
    pub bye: bool,
}

/// A cursor over an output buffer that refuses to run past its end.
struct Out<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        self.buf
            .get_mut(self.at..self.at + bytes.len())?
            .copy_from_slice(bytes);
        self.at += bytes.len();
        Some(())
    }
    fn u32(&mut self, v: u32) -> Option<()> {
        self.put(&v.to_be_bytes())
    }
    /// Writes a header whose length is patched by `finish`.
    fn header(&mut self, count: u8, pt: u8) -> Option<usize> {
        let start = self.at;
        self.put(&[0x80 | (count & 0x1F), pt, 0, 0])?;
        Some(start)
    }
    fn finish(&mut self, start: usize) -> Option<()> {
        while !(self.at - start).is_multiple_of(4) {
            self.put(&[0])?;
        }
        let words = u16::try_from((self.at - start) / 4 - 1).ok()?;
        self.buf
            .get_mut(start + 2..start + 4)?
            .copy_from_slice(&words.to_be_bytes());
        Some(())
    }
    fn block(&mut self, b: &ReportBlock) -> Option<()> {
        self.u32(b.ssrc)?;
        let lost = (b.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32) & 0x00FF_FFFF;
        self.u32((u32::from(b.fraction_lost) << 24) | lost)?;
        self.u32(b.ext_highest_seq)?;
        self.u32(b.jitter)?;
        self.u32(b.lsr)?;
        self.u32(b.dlsr)
    }
}

/// Writes our compound report (SR or RR, SDES CNAME, maybe BYE) into `buf`; its length,
/// or `None` if `buf` is too small.
pub fn write(r: &Report<'_>, buf: &mut [u8]) -> Option<usize> {
    let mut o = Out { buf, at: 0 };
    let blocks = u8::from(r.block.is_some());
    let start = match r.sender {
        Some(s) => {
            let start = o.header(blocks, PT_SR)?;
            o.u32(r.ssrc)?;
            o.u32((s.ntp >> 32) as u32)?;
            o.u32(s.ntp as u32)?;
            o.u32(s.rtp_ts)?;
            o.u32(s.packets)?;
            o.u32(s.octets)?;
            start
        }
        None => {
            let start = o.header(blocks, PT_RR)?;
            o.u32(r.ssrc)?;
            start
        }
    };
    if let Some(b) = &r.block {
        o.block(b)?;
    }
    o.finish(start)?;
    let start = o.header(1, PT_SDES)?;
    o.u32(r.ssrc)?;
    let cname = r.cname.get(..r.cname.len().min(255)).unwrap_or_default();
    o.put(&[SDES_CNAME, cname.len() as u8])?;
    o.put(cname)?;
    // The end item; `finish` pads to the boundary with more nulls.
    o.put(&[0])?;
    o.finish(start)?;
    if r.bye {
        let start = o.header(1, PT_BYE)?;
        o.u32(r.ssrc)?;
        o.finish(start)?;
    }
    Some(o.at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ssrc: u32) -> ReportBlock {
        ReportBlock {
            ssrc,
            fraction_lost: 12,
            cumulative_lost: -3,
            ext_highest_seq: 0x0001_0005,
            jitter: 77,
            lsr: 0xABCD_1234,
            dlsr: 65536,
        }
    }

    fn report(sender: bool, bye: bool) -> Vec<u8> {
        let r = Report {
            ssrc: 0x1122_3344,
            sender: sender.then_some(SenderInfo {
                ntp: 0xE000_0000_8000_0000,
                rtp_ts: 160,
                packets: 5,
                octets: 800,
            }),
            block: Some(block(0x5566_7788)),
            cname: b"0123456789abcdef",
            bye,
        };
        let mut buf = [0u8; 256];
        let n = write(&r, &mut buf).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn our_sr_sdes_bye_round_trips() {
        let b = report(true, true);
        // SR 28 + 1 block 24; SDES 4 + 4 + 2 + 16 + end, padded: 28; BYE 8.
        assert_eq!(b.len(), 52 + 28 + 8);
        let c = parse(&b).unwrap();
        let p: Vec<Packet> = c.packets().collect();
        assert_eq!(p.len(), 3);
        let Packet::SenderReport { ssrc, info, blocks } = p[0] else {
            panic!("{:?}", p[0])
        };
        assert_eq!(ssrc, 0x1122_3344);
        assert_eq!(info.ntp, 0xE000_0000_8000_0000);
        assert_eq!((info.rtp_ts, info.packets, info.octets), (160, 5, 800));
        assert_eq!(blocks.iter().collect::<Vec<_>>(), vec![block(0x5566_7788)]);
        assert_eq!(
            p[1],
            Packet::Sdes {
                chunks: 1,
                cname: Some((0x1122_3344, &b"0123456789abcdef"[..]))
            }
        );
        let Packet::Bye { ssrcs, reason } = p[2] else {
            panic!()
        };
        assert_eq!(
            Packet::bye_ssrcs(ssrcs).collect::<Vec<_>>(),
            vec![0x1122_3344]
        );
        assert!(reason.is_empty());
        // Header fields on the wire: V=2, RC=1, PT=200, length 12 words.
        assert_eq!(&b[..4], &[0x81, 200, 0, 12]);
    }

    #[test]
    fn rr_without_blocks_and_cname_lengths_align() {
        for cname_len in 0..8 {
            let cname = vec![b'x'; cname_len];
            let r = Report {
                ssrc: 1,
                sender: None,
                block: None,
                cname: &cname,
                bye: false,
            };
            let mut buf = [0u8; 64];
            let n = write(&r, &mut buf).unwrap();
            assert_eq!(n % 4, 0);
            let p: Vec<Packet> = parse(&buf[..n]).unwrap().packets().collect();
            assert!(
                matches!(p[0], Packet::ReceiverReport { ssrc: 1, blocks } if blocks.iter().count() == 0)
            );
            assert_eq!(
                p[1],
                Packet::Sdes {
                    chunks: 1,
                    cname: Some((1, &cname[..]))
                }
            );
        }
    }

    #[test]
    fn small_buffer_is_none_not_a_panic() {
        let r = Report {
            ssrc: 1,
            sender: Some(SenderInfo::default()),
            block: Some(block(2)),
            cname: b"abc",
            bye: true,
        };
        let mut buf = [0u8; 200];
        let full = write(&r, &mut buf).unwrap();
        for n in 0..full {
            assert_eq!(write(&r, &mut buf[..n]), None, "{n}");
        }
    }

    #[test]
    fn cumulative_lost_clamps_to_24_bits() {
        for (lost, want) in [(i32::MAX, 0x7F_FFFF), (i32::MIN, -0x80_0000), (-1, -1)] {
            let mut b = block(9);
            b.cumulative_lost = lost;
            let r = Report {
                ssrc: 1,
                sender: None,
                block: Some(b),
                cname: b"",
                bye: false,
            };
            let mut buf = [0u8; 100];
            let n = write(&r, &mut buf).unwrap();
            let c = parse(&buf[..n]).unwrap();
            let Some(Packet::ReceiverReport { blocks, .. }) = c.packets().next() else {
                panic!()
            };
            assert_eq!(blocks.iter().next().unwrap().cumulative_lost, want);
        }
    }

    /// A PBX-style compound: RR with two blocks, SDES with two chunks and several items,
    /// APP, BYE with a reason, padding on the last packet.
    fn peer_compound() -> Vec<u8> {
        let mut v = vec![0x82, 201, 0, 13];
        v.extend_from_slice(&7u32.to_be_bytes());
        for s in [1u32, 2] {
            v.extend_from_slice(&s.to_be_bytes());
            v.extend_from_slice(&[0; 20]);
        }
        // SDES: chunk 1 = NAME "ab" then CNAME "pbx@h" then end; chunk 2 = just end.
        let mut sdes = vec![];
        sdes.extend_from_slice(&7u32.to_be_bytes());
        sdes.extend_from_slice(&[2, 2, b'a', b'b', 1, 5]);
        sdes.extend_from_slice(b"pbx@h");
        sdes.push(0);
        while sdes.len() % 4 != 0 {
            sdes.push(0);
        }
        sdes.extend_from_slice(&8u32.to_be_bytes());
        sdes.extend_from_slice(&[0, 0, 0, 0]);
        v.extend_from_slice(&[0x82, 202, 0, (sdes.len() / 4) as u8]);
        v.extend_from_slice(&sdes);
        // APP: name "TEST", no data.
        v.extend_from_slice(&[0x80, 204, 0, 2]);
        v.extend_from_slice(&7u32.to_be_bytes());
        v.extend_from_slice(b"TEST");
        // BYE with reason "done" and 4 bytes of padding: 4 + 4 + 5 (+3 align) + 4 pad.
        v.extend_from_slice(&[0xA1, 203, 0, 4]);
        v.extend_from_slice(&7u32.to_be_bytes());
        v.extend_from_slice(&[4, b'd', b'o', b'n', b'e', 0, 0, 0]);
        v.extend_from_slice(&[0, 0, 0, 4]);
        v
    }

    #[test]
    fn peer_compound_with_sdes_app_bye_and_padding() {
        let v = peer_compound();
        let p: Vec<Packet> = parse(&v).unwrap().packets().collect();
        assert_eq!(p.len(), 4);
        let Packet::ReceiverReport { ssrc: 7, blocks } = p[0] else {
            panic!()
        };
        assert_eq!(
            blocks.iter().map(|b| b.ssrc).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(
            p[1],
            Packet::Sdes {
                chunks: 2,
                cname: Some((7, &b"pbx@h"[..]))
            }
        );
        assert_eq!(p[2], Packet::Other { pt: 204 });
        assert!(matches!(
            p[3],
            Packet::Bye {
                reason: b"done",
                ..
            }
        ));
    }

    #[test]
    fn invalid_compounds_are_refused() {
        let good = peer_compound();
        let sr = report(true, false);
        let mut cases: Vec<(Vec<u8>, RtcpError)> = vec![
            (vec![], RtcpError::Size),
            (good[..7].to_vec(), RtcpError::Size),
            (vec![0x80; 1600], RtcpError::Size),
        ];
        // Truncated anywhere inside: the length fields no longer add up.
        for n in [9, 20, 57, 60, good.len() - 1] {
            cases.push((good[..n].to_vec(), RtcpError::Length));
        }
        // Wrong version in the first packet, and in a later one.
        let mut v = good.clone();
        v[0] = 0x42;
        cases.push((v, RtcpError::Version));
        let mut v = good.clone();
        v[56] = 0x02;
        cases.push((v, RtcpError::Version));
        // A length field that lies (longer than the datagram; one word short).
        let mut v = sr.clone();
        v[3] = 200;
        cases.push((v, RtcpError::Length));
        let mut v = sr.clone();
        v[3] = 11;
        cases.push((v, RtcpError::Truncated));
        // First packet not SR/RR.
        cases.push((good[56..].to_vec(), RtcpError::NotReport));
        // Padding on a packet that is not the last; a padding count of 0 or too large.
        let mut v = good.clone();
        v[0] |= 0x20;
        cases.push((v, RtcpError::Padding));
        let mut v = good.clone();
        *v.last_mut().unwrap() = 0;
        cases.push((v, RtcpError::Padding));
        let mut v = good.clone();
        *v.last_mut().unwrap() = 200;
        cases.push((v, RtcpError::Padding));
        // Counts that do not fit: RR claims 3 blocks; SR with 31; SDES 3 chunks; BYE 9
        // sources; a BYE reason longer than the packet.
        let mut v = good.clone();
        v[0] = 0x83;
        cases.push((v, RtcpError::Truncated));
        let mut v = sr.clone();
        v[0] = 0x9F;
        cases.push((v, RtcpError::Truncated));
        let mut v = good.clone();
        v[56] = 0x83;
        cases.push((v, RtcpError::Truncated));
        let mut v = good.clone();
        let bye = good.len() - 20;
        v[bye] = 0xA9;
        cases.push((v, RtcpError::Truncated));
        let mut v = good.clone();
        v[bye + 8] = 40;
        cases.push((v, RtcpError::Truncated));
        // An SDES item running past its packet.
        let mut v = good.clone();
        v[65] = 60;
        cases.push((v, RtcpError::Truncated));
        for (i, (c, want)) in cases.iter().enumerate() {
            assert_eq!(parse(c).map(|_| ()), Err(*want), "case {i}: {c:?}");
        }
    }

    #[test]
    fn rtcp_mux_demultiplexing_by_second_byte() {
        assert!(looks_like_rtcp(&[0x80, 200]));
        assert!(looks_like_rtcp(&[0x80, 201]));
        assert!(looks_like_rtcp(&[0x80, 223]));
        assert!(looks_like_rtcp(&[0x80, 192]));
        // PCMU, PCMA, telephone-event 101 (with and without marker), CN.
        for b in [0, 8, 101, 0x80 | 101, 0x80, 13, 191, 224] {
            assert!(!looks_like_rtcp(&[0x80, b]), "{b}");
        }
        assert!(!looks_like_rtcp(&[0x80]));
    }
}
