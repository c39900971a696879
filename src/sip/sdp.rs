//! SDP (RFC 4566/8866) parsing and the RFC 3264 offer/answer rules for one G.711 audio
//! stream with RFC 4733 telephone-events; where RTCP goes: `a=rtcp-mux` (RFC 5761 §5.1.1,
//! answered when offered, never offered by us), `a=rtcp:` (RFC 3605), else RTP port + 1.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// The audio codecs we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0.
    #[serde(rename = "PCMU")]
    Pcmu,
    /// G.711 A-law, static payload type 8.
    #[serde(rename = "PCMA")]
    Pcma,
}

impl Codec {
    pub fn static_pt(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
    fn from_name(n: &str) -> Option<Codec> {
        if n.eq_ignore_ascii_case("PCMU") {
            Some(Codec::Pcmu)
        } else if n.eq_ignore_ascii_case("PCMA") {
            Some(Codec::Pcma)
        } else {
            None
        }
    }
}

/// Media direction attribute (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
    /// The answerer's direction for an offered one (RFC 3264 §6.1).
    fn reverse(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
    pub fn we_send(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
    pub fn we_receive(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// Why an SDP was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    /// A line could not be parsed or a limit was exceeded.
    #[error("malformed SDP: {0}")]
    Malformed(&'static str),
    /// No audio stream offers PCMU or PCMA.
    #[error("no common codec (need PCMU or PCMA)")]
    NoCommonCodec,
    /// The only audio streams are multicast (we do unicast only).
    #[error("multicast media not available")]
    Multicast,
    /// No audio stream we can use: none offered, port 0, a port out of range, no address,
    /// or a malformed line in it. The reason is that of the first audio stream.
    #[error("no usable audio stream ({0})")]
    NoUsableAudio(&'static str),
}

impl SdpError {
    /// The RFC 3261 §20.43 Warning code and text for a 488, when the SDP was understood
    /// but cannot be taken (`None` for a malformed SDP, which is a 400).
    pub fn warning(&self) -> Option<(u16, &'static str)> {
        match self {
            SdpError::Malformed(_) => None,
            SdpError::NoCommonCodec => Some((305, "Incompatible media format")),
            SdpError::Multicast => Some((330, "Multicast not available")),
            SdpError::NoUsableAudio(_) => Some((304, "Media type not available")),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct MediaDesc {
    kind: String,
    port: u16,
    proto: String,
    fmts: Vec<String>,
    conn: Option<IpAddr>,
    rtpmap: Vec<(u8, String, u32)>,
    ptime: Option<u32>,
    direction: Option<Direction>,
    rtcp_mux: bool,
    /// `a=rtcp:port [IN IP4 addr]` (RFC 3605).
    rtcp: Option<(u16, Option<IpAddr>)>,
    /// Why this stream cannot be used, if a line of it was malformed (RFC 3264 §6: such a
    /// stream is answered with port 0; the others still count).
    broken: Option<&'static str>,
}

impl MediaDesc {
    fn mark(&mut self, why: &'static str) {
        self.broken.get_or_insert(why);
    }
}

/// A parsed session description (only what offer/answer needs).
#[derive(Debug, Clone, Default)]
pub struct Sdp {
    conn: Option<IpAddr>,
    direction: Option<Direction>,
    media: Vec<MediaDesc>,
}

const MAX_MEDIA: usize = 16;
const MAX_ATTRS: usize = 256;

fn parse_conn(v: &str) -> Result<IpAddr, SdpError> {
    // c=IN IP4 192.0.2.1[/ttl]
    let mut it = v.split_whitespace();
    let (Some("IN"), Some(_), Some(addr)) = (it.next(), it.next(), it.next()) else {
        return Err(SdpError::Malformed("c="));
    };
    addr.split('/')
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|_| SdpError::Malformed("c= address"))
}

/// `a=rtpmap:<pt> <name>/<rate>[/<channels>]`.
fn parse_rtpmap(val: &str) -> Option<(u8, String, u32)> {
    let (pt, enc) = val.split_once(' ')?;
    let pt: u8 = pt.parse().ok()?;
    let mut e = enc.trim().split('/');
    let name = e.next().unwrap_or("").to_string();
    let rate = e.next().and_then(|r| r.parse().ok())?;
    Some((pt, name, rate))
}

/// `a=rtcp:` value: a port, optionally a connection address (RFC 3605 §2.1). A broken one
/// is ignored (port + 1 then applies), not a reason to refuse the offer.
fn parse_rtcp_attr(v: &str) -> Option<(u16, Option<IpAddr>)> {
    let mut it = v.split_whitespace();
    let port = it.next()?.parse::<u16>().ok().filter(|p| *p != 0)?;
    let ip = match (it.next(), it.next(), it.next()) {
        (Some("IN"), Some(_), Some(addr)) => addr.parse().ok(),
        _ => None,
    };
    Some((port, ip))
}

fn parse_direction(a: &str) -> Option<Direction> {
    match a {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    }
}

impl Sdp {
    /// How many m= lines the description has.
    pub fn media_count(&self) -> usize {
        self.media.len()
    }

    pub fn parse(body: &[u8]) -> Result<Sdp, SdpError> {
        let text = std::str::from_utf8(body).map_err(|_| SdpError::Malformed("not UTF-8"))?;
        let mut sdp = Sdp::default();
        let mut seen_v = false;
        let mut attrs = 0usize;
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or(SdpError::Malformed("line"))?;
            match k {
                "v" => {
                    if v != "0" {
                        return Err(SdpError::Malformed("v="));
                    }
                    seen_v = true;
                }
                "c" => match (sdp.media.last_mut(), parse_conn(v)) {
                    (Some(m), Ok(ip)) => m.conn = Some(ip),
                    // A bad address spoils its own stream only.
                    (Some(m), Err(_)) => m.mark("c= address"),
                    (None, ip) => sdp.conn = Some(ip?),
                },
                "m" => {
                    if sdp.media.len() >= MAX_MEDIA {
                        return Err(SdpError::Malformed("too many m= lines"));
                    }
                    // Kind and proto are needed to answer the line, even with port 0.
                    let mut it = v.split_whitespace();
                    let kind = it.next().ok_or(SdpError::Malformed("m="))?;
                    let port = it.next().ok_or(SdpError::Malformed("m= port"))?;
                    let proto = it.next().ok_or(SdpError::Malformed("m= proto"))?;
                    let fmts: Vec<String> = it.take(64).map(str::to_string).collect();
                    let mut m = MediaDesc {
                        kind: kind.to_string(),
                        proto: proto.to_string(),
                        fmts,
                        ..Default::default()
                    };
                    // `port[/count]`; out of 1..=65535 (or not a number) cannot be used.
                    match port.split('/').next().and_then(|p| p.parse::<u16>().ok()) {
                        Some(p) => m.port = p,
                        None => m.mark("m= port out of range"),
                    }
                    if !kind.chars().all(|c| c.is_ascii_alphanumeric())
                        || !proto.chars().all(|c| c.is_ascii_graphic())
                    {
                        return Err(SdpError::Malformed("m="));
                    }
                    sdp.media.push(m);
                }
                "a" => {
                    attrs += 1;
                    if attrs > MAX_ATTRS {
                        return Err(SdpError::Malformed("too many attributes"));
                    }
                    let (name, val) = v.split_once(':').unwrap_or((v, ""));
                    if let Some(d) = parse_direction(name) {
                        match sdp.media.last_mut() {
                            Some(m) => m.direction = Some(d),
                            None => sdp.direction = Some(d),
                        }
                        continue;
                    }
                    let Some(m) = sdp.media.last_mut() else {
                        continue;
                    };
                    match name {
                        "rtpmap" => match parse_rtpmap(val) {
                            Some(r) => m.rtpmap.push(r),
                            None => m.mark("rtpmap"),
                        },
                        "ptime" => m.ptime = val.trim().parse().ok(),
                        "rtcp-mux" => m.rtcp_mux = true,
                        "rtcp" => m.rtcp = parse_rtcp_attr(val),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if !seen_v {
            return Err(SdpError::Malformed("no v= line"));
        }
        Ok(sdp)
    }
}

/// Our side of the media session, as the driver allocated it.
#[derive(Debug, Clone, Copy)]
pub struct LocalMedia {
    pub ip: IpAddr,
    pub port: u16,
    pub session_id: u64,
}

/// The result of a negotiation: what the RTP session must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: Codec,
    /// Payload type for the codec (normally the static one).
    pub pt: u8,
    /// Payload type of telephone-event/8000, if both sides have it.
    pub te_pt: Option<u8>,
    pub ptime_ms: u32,
    /// Where the peer wants media; `None` when on hold with 0.0.0.0 or port 0.
    pub remote: Option<SocketAddr>,
    /// Our direction.
    pub direction: Direction,
    /// RTCP shares the RTP port both ways (RFC 5761): the offer had `a=rtcp-mux` and our
    /// answer repeats it.
    pub rtcp_mux: bool,
    /// Where the peer wants RTCP: `remote` with mux, else its `a=rtcp:` address or the RTP
    /// port + 1 (RFC 3550 §11); `None` with `remote`.
    pub rtcp: Option<SocketAddr>,
}

/// The telephone-event payload type we offer when we make the offer.
pub const OFFER_TE_PT: u8 = 101;

fn norm_ptime(p: Option<u32>, default: u32) -> u32 {
    match p {
        Some(p) if (10..=60).contains(&p) && p % 10 == 0 => p,
        Some(p) if (10..=60).contains(&p) => (p / 10) * 10,
        _ => default,
    }
}

fn codec_of(m: &MediaDesc, fmt: &str) -> Option<(Codec, u8)> {
    let pt: u8 = fmt.parse().ok()?;
    if let Some((_, name, rate)) = m.rtpmap.iter().find(|(p, _, _)| *p == pt) {
        return (*rate == 8000)
            .then(|| Codec::from_name(name))
            .flatten()
            .map(|c| (c, pt));
    }
    match pt {
        0 => Some((Codec::Pcmu, 0)),
        8 => Some((Codec::Pcma, 8)),
        _ => None,
    }
}

fn te_of(m: &MediaDesc) -> Option<u8> {
    m.rtpmap
        .iter()
        .find(|(pt, name, rate)| {
            name.eq_ignore_ascii_case("telephone-event")
                && *rate == 8000
                && m.fmts.iter().any(|f| f.parse() == Ok(*pt))
        })
        .map(|(pt, _, _)| *pt)
}

fn remote_addr(conn: Option<IpAddr>, port: u16) -> Option<SocketAddr> {
    let ip = conn?;
    if port == 0 || ip.is_unspecified() {
        return None;
    }
    Some(SocketAddr::new(ip, port))
}

/// The peer's RTCP address for a stream whose RTP goes to `remote`.
fn rtcp_addr(m: &MediaDesc, remote: Option<SocketAddr>, mux: bool) -> Option<SocketAddr> {
    let remote = remote?;
    if mux {
        return Some(remote);
    }
    Some(match m.rtcp {
        Some((port, ip)) => SocketAddr::new(ip.unwrap_or(remote.ip()), port),
        None => SocketAddr::new(remote.ip(), remote.port().checked_add(1)?),
    })
}

fn write_session(s: &mut String, local: &LocalMedia, version: u64) {
    let fam = if local.ip.is_ipv4() { "IP4" } else { "IP6" };
    let _ = write!(
        s,
        "v=0\r\no=pincoderouting {} {} IN {fam} {}\r\ns=pincoderouting\r\nc=IN {fam} {}\r\nt=0 0\r\n",
        local.session_id, version, local.ip, local.ip
    );
}

fn write_audio(s: &mut String, port: u16, codecs: &[(Codec, u8)], te: Option<u8>, ptime: u32) {
    let _ = write!(s, "m=audio {port} RTP/AVP");
    for (_, pt) in codecs {
        let _ = write!(s, " {pt}");
    }
    if let Some(te) = te {
        let _ = write!(s, " {te}");
    }
    s.push_str("\r\n");
    for (c, pt) in codecs {
        let _ = write!(s, "a=rtpmap:{pt} {}/8000\r\n", c.name());
    }
    if let Some(te) = te {
        let _ = write!(
            s,
            "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"
        );
    }
    let _ = write!(s, "a=ptime:{ptime}\r\n");
}

/// Answers an offer (RFC 3264 §6): the first audio stream with PCMU/PCMA is accepted, every
/// other m= line is rejected with port 0. Returns the negotiation and the answer body
/// (without the o= version, which the caller fills via `version`).
pub fn answer(
    offer: &Sdp,
    prefs: &[Codec],
    default_ptime: u32,
    local: &LocalMedia,
    version: u64,
) -> Result<(Negotiated, String), SdpError> {
    let mut chosen: Option<(usize, Negotiated)> = None;
    // Why the audio streams seen so far could not be used, for the error.
    let (mut codec_miss, mut multicast, mut first_why) = (false, false, None);
    for (i, m) in offer.media.iter().enumerate() {
        if chosen.is_some() || m.kind != "audio" {
            continue;
        }
        let conn = m.conn.or(offer.conn);
        let why = if let Some(b) = m.broken {
            Some(b)
        } else if m.port == 0 {
            Some("port 0")
        } else if !m.proto.starts_with("RTP/") {
            Some("not RTP")
        } else if conn.is_none() {
            Some("no c= line")
        } else if conn.is_some_and(|c| c.is_multicast()) {
            multicast = true;
            Some("multicast")
        } else {
            None
        };
        if let Some(why) = why {
            first_why.get_or_insert(why);
            continue;
        }
        let offered: Vec<(Codec, u8)> = m.fmts.iter().filter_map(|f| codec_of(m, f)).collect();
        let pick = prefs
            .iter()
            .find_map(|p| offered.iter().find(|(c, _)| c == p).copied());
        let Some((codec, pt)) = pick else {
            codec_miss = true;
            continue;
        };
        let dir = m
            .direction
            .or(offer.direction)
            .unwrap_or(Direction::SendRecv);
        // Old-style hold (RFC 2543): c=0.0.0.0 means the peer receives nothing.
        let dir = if conn.is_some_and(|c| c.is_unspecified()) {
            match dir {
                Direction::SendRecv | Direction::RecvOnly => Direction::SendOnly,
                d => d,
            }
        } else {
            dir
        };
        let remote = remote_addr(conn, m.port);
        chosen = Some((
            i,
            Negotiated {
                codec,
                pt,
                te_pt: te_of(m),
                ptime_ms: norm_ptime(m.ptime, default_ptime),
                remote,
                direction: dir.reverse(),
                rtcp_mux: m.rtcp_mux,
                rtcp: rtcp_addr(m, remote, m.rtcp_mux),
            },
        ));
    }
    let (idx, neg) = chosen.ok_or(if codec_miss {
        SdpError::NoCommonCodec
    } else if multicast {
        SdpError::Multicast
    } else {
        SdpError::NoUsableAudio(first_why.unwrap_or("no audio stream"))
    })?;
    let mut s = String::with_capacity(300);
    write_session(&mut s, local, version);
    for (i, m) in offer.media.iter().enumerate() {
        if i == idx {
            write_audio(
                &mut s,
                local.port,
                &[(neg.codec, neg.pt)],
                neg.te_pt,
                neg.ptime_ms,
            );
            let _ = write!(s, "a={}\r\n", neg.direction.attr());
            if neg.rtcp_mux {
                s.push_str("a=rtcp-mux\r\n");
            }
        } else {
            // Rejected (RFC 3264 §6): port 0, formats echoed (one is required).
            let fmts = if m.fmts.is_empty() {
                "0".to_string()
            } else {
                m.fmts.join(" ")
            };
            let _ = write!(s, "m={} 0 {} {fmts}\r\n", m.kind, m.proto);
        }
    }
    Ok((neg, s))
}

/// Our offer for a delayed-offer INVITE (RFC 3261 §13.2.1): every preferred codec plus
/// telephone-event.
pub fn offer(prefs: &[Codec], ptime: u32, local: &LocalMedia, version: u64) -> String {
    let mut s = String::with_capacity(300);
    write_session(&mut s, local, version);
    let codecs: Vec<(Codec, u8)> = prefs.iter().map(|c| (*c, c.static_pt())).collect();
    write_audio(&mut s, local.port, &codecs, Some(OFFER_TE_PT), ptime);
    s.push_str("a=sendrecv\r\n");
    s
}

/// Takes the answer to our offer (from the ACK of a delayed-offer call).
pub fn accept_answer(answer: &Sdp, prefs: &[Codec], ptime: u32) -> Result<Negotiated, SdpError> {
    let m = answer
        .media
        .iter()
        .find(|m| m.kind == "audio" && m.port != 0 && m.broken.is_none())
        .ok_or(SdpError::NoCommonCodec)?;
    let (codec, pt) = m
        .fmts
        .iter()
        .filter_map(|f| codec_of(m, f))
        .find(|(c, _)| prefs.contains(c))
        .ok_or(SdpError::NoCommonCodec)?;
    let conn = m
        .conn
        .or(answer.conn)
        .ok_or(SdpError::Malformed("no c= line"))?;
    let dir = m
        .direction
        .or(answer.direction)
        .unwrap_or(Direction::SendRecv);
    let remote = remote_addr(Some(conn), m.port);
    Ok(Negotiated {
        codec,
        pt,
        te_pt: te_of(m).filter(|t| *t == OFFER_TE_PT),
        ptime_ms: norm_ptime(m.ptime, ptime),
        remote,
        direction: dir.reverse(),
        // We never offer mux, so an answer cannot accept it (RFC 5761 §5.1.1).
        rtcp_mux: false,
        rtcp: rtcp_addr(m, remote, false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalMedia {
        LocalMedia {
            ip: "192.0.2.10".parse().unwrap(),
            port: 10000,
            session_id: 42,
        }
    }

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 18 8 0 96\r\na=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\na=ptime:30\r\n";

    fn ans(sdp: &str, prefs: &[Codec]) -> Result<(Negotiated, String), SdpError> {
        answer(&Sdp::parse(sdp.as_bytes())?, prefs, 20, &local(), 1)
    }

    #[test]
    fn picks_preferred_codec_and_keeps_dynamic_te() {
        let (n, body) = ans(OFFER, &[Codec::Pcmu, Codec::Pcma]).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.te_pt, Some(96));
        assert_eq!(n.ptime_ms, 30);
        assert_eq!(n.remote, Some("192.0.2.1:4000".parse().unwrap()));
        assert!(body.contains("m=audio 10000 RTP/AVP 0 96\r\n"), "{body}");
        assert!(body.contains("a=rtpmap:96 telephone-event/8000"));
        assert!(body.contains("a=sendrecv"));
        let (n, _) = ans(OFFER, &[Codec::Pcma, Codec::Pcmu]).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
    }

    #[test]
    fn no_g711_is_refused() {
        let sdp = OFFER.replace("18 8 0 96", "18 96");
        assert_eq!(
            ans(&sdp, &[Codec::Pcmu]).unwrap_err(),
            SdpError::NoCommonCodec
        );
    }

    #[test]
    fn directions_and_hold() {
        let sdp = format!("{OFFER}a=sendonly\r\n");
        let (n, body) = ans(&sdp, &[Codec::Pcmu]).unwrap();
        assert_eq!(n.direction, Direction::RecvOnly);
        assert!(body.contains("a=recvonly"));
        let sdp = OFFER.replace("c=IN IP4 192.0.2.1", "c=IN IP4 0.0.0.0");
        let (n, _) = ans(&sdp, &[Codec::Pcmu]).unwrap();
        assert_eq!(n.remote, None);
        assert_eq!(n.direction, Direction::RecvOnly);
        let sdp = format!("{OFFER}a=inactive\r\n");
        assert_eq!(
            ans(&sdp, &[Codec::Pcmu]).unwrap().0.direction,
            Direction::Inactive
        );
    }

    #[test]
    fn media_level_c_and_ipv6_and_extra_streams() {
        let sdp = "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nt=0 0\r\n\
m=video 5000 RTP/AVP 31\r\nc=IN IP6 2001:db8::1\r\n\
m=audio 4000 RTP/AVP 8\r\nc=IN IP6 2001:db8::2\r\na=ptime:15\r\n";
        let (n, body) = ans(sdp, &[Codec::Pcmu, Codec::Pcma]).unwrap();
        assert_eq!(n.remote, Some("[2001:db8::2]:4000".parse().unwrap()));
        assert_eq!(n.ptime_ms, 10);
        assert!(
            body.contains("m=video 0 RTP/AVP 31\r\nm=audio 10000"),
            "{body}"
        );
        assert_eq!(n.te_pt, None);
    }

    #[test]
    fn broken_sdp_is_an_error() {
        for bad in [
            "",
            "garbage",
            "v=1\r\n",
            "v=0\r\nc=IN IP4 nope\r\n",
            "v=0\r\nm=\r\n",
            "v=0\r\nm=audio 4000\r\n",
            "v=0\r\nm=au\x01dio 4000 RTP/AVP 0\r\n",
        ] {
            assert!(Sdp::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        // A malformed line inside the only audio stream makes it unusable: 488, not 400.
        for (bad, why) in [
            ("m=audio x RTP/AVP 0\r\n", "m= port out of range"),
            ("m=audio 70000 RTP/AVP 0\r\n", "m= port out of range"),
            (
                "m=audio 4000 RTP/AVP 0\r\na=rtpmap:zz PCMU/8000\r\n",
                "rtpmap",
            ),
            ("m=audio 4000 RTP/AVP 0\r\nc=IN IP4 nope\r\n", "c= address"),
            ("m=audio 0 RTP/AVP 0\r\n", "port 0"),
        ] {
            let sdp = format!("v=0\r\nc=IN IP4 192.0.2.1\r\n{bad}");
            let e = ans(&sdp, &[Codec::Pcmu]).unwrap_err();
            assert_eq!(e, SdpError::NoUsableAudio(why), "{bad}");
            assert_eq!(e.warning().map(|w| w.0), Some(304));
        }
        let no_c = "v=0\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert_eq!(
            ans(no_c, &[Codec::Pcmu]).unwrap_err(),
            SdpError::NoUsableAudio("no c= line")
        );
        assert_eq!(
            ans("v=0\r\nc=IN IP4 192.0.2.1\r\n", &[Codec::Pcmu]).unwrap_err(),
            SdpError::NoUsableAudio("no audio stream")
        );
    }

    #[test]
    fn a_broken_other_stream_is_refused_alone_and_audio_negotiated() {
        // RFC 3264 §6: video with an unknown/malformed rtpmap and a bad port, an unknown
        // media kind: each answered with port 0, in order; the audio stream is taken.
        let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264\r\na=rtpmap:x y/z\r\n\
m=image 99999 udptl t38\r\n\
m=audio 4000 RTP/AVP 0\r\n\
m=text 6000 RTP/AVP\r\n";
        let (n, body) = ans(sdp, &[Codec::Pcmu]).unwrap();
        assert_eq!(n.remote, Some("192.0.2.1:4000".parse().unwrap()));
        let m: Vec<&str> = body.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            m,
            vec![
                "m=video 0 RTP/AVP 96",
                "m=image 0 udptl t38",
                "m=audio 10000 RTP/AVP 0",
                "m=text 0 RTP/AVP 0"
            ]
        );
        // The same broken video with a broken audio stream: nothing usable remains.
        let bad_audio = sdp.replace("m=audio 4000", "m=audio 0");
        assert!(matches!(
            ans(&bad_audio, &[Codec::Pcmu]),
            Err(SdpError::NoUsableAudio(_))
        ));
        // A second, good audio stream rescues a broken first one.
        let two = sdp.replace(
            "m=audio 4000 RTP/AVP 0\r\n",
            "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\nm=audio 4002 RTP/AVP 8\r\n",
        );
        let (n, body) = ans(&two, &[Codec::Pcmu, Codec::Pcma]).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert!(
            body.contains("m=audio 0 RTP/AVP 0\r\nm=audio 10000 RTP/AVP 8"),
            "{body}"
        );
    }

    #[test]
    fn multicast_audio_is_refused_with_its_own_warning() {
        let sdp = OFFER.replace("c=IN IP4 192.0.2.1", "c=IN IP4 233.252.0.1/127");
        let e = ans(&sdp, &[Codec::Pcmu]).unwrap_err();
        assert_eq!(e, SdpError::Multicast);
        assert_eq!(e.warning().map(|w| w.0), Some(330));
        let v6 = OFFER.replace("c=IN IP4 192.0.2.1", "c=IN IP6 ff0e::1");
        assert_eq!(ans(&v6, &[Codec::Pcmu]).unwrap_err(), SdpError::Multicast);
        // No G.711 is 305, and it wins over a multicast stream elsewhere.
        let g729 = OFFER.replace("18 8 0 96", "18");
        assert_eq!(
            ans(&g729, &[Codec::Pcmu])
                .unwrap_err()
                .warning()
                .map(|w| w.0),
            Some(305)
        );
    }

    #[test]
    fn delayed_offer_round_trip() {
        let o = offer(&[Codec::Pcma, Codec::Pcmu], 20, &local(), 1);
        assert!(o.contains("m=audio 10000 RTP/AVP 8 0 101"));
        let a = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
        let n = accept_answer(
            &Sdp::parse(a.as_bytes()).unwrap(),
            &[Codec::Pcma, Codec::Pcmu],
            20,
        )
        .unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.te_pt, Some(101));
    }

    #[test]
    fn rtcp_mux_answered_when_offered_else_port_plus_one_or_a_rtcp() {
        let (n, body) = ans(&format!("{OFFER}a=rtcp-mux\r\n"), &[Codec::Pcmu]).unwrap();
        assert!(n.rtcp_mux);
        assert_eq!(n.rtcp, n.remote);
        assert!(body.contains("a=rtcp-mux\r\n"), "{body}");
        let (n, body) = ans(OFFER, &[Codec::Pcmu]).unwrap();
        assert!(!n.rtcp_mux);
        assert_eq!(n.rtcp, Some("192.0.2.1:4001".parse().unwrap()));
        assert!(!body.contains("rtcp"), "{body}");
        let (n, _) = ans(&format!("{OFFER}a=rtcp:4005\r\n"), &[Codec::Pcmu]).unwrap();
        assert_eq!(n.rtcp, Some("192.0.2.1:4005".parse().unwrap()));
        let (n, _) = ans(
            &format!("{OFFER}a=rtcp:5001 IN IP4 192.0.2.99\r\n"),
            &[Codec::Pcmu],
        )
        .unwrap();
        assert_eq!(n.rtcp, Some("192.0.2.99:5001".parse().unwrap()));
        // A broken a=rtcp is ignored; mux on another m= line does not count.
        let (n, _) = ans(&format!("{OFFER}a=rtcp:x\r\n"), &[Codec::Pcmu]).unwrap();
        assert_eq!(n.rtcp, Some("192.0.2.1:4001".parse().unwrap()));
        let sdp = format!("{OFFER}m=video 5000 RTP/AVP 31\r\na=rtcp-mux\r\n");
        let (n, body) = ans(&sdp, &[Codec::Pcmu]).unwrap();
        assert!(!n.rtcp_mux && !body.contains("rtcp-mux"), "{body}");
        // On hold (c=0.0.0.0): no address for RTCP either.
        let sdp = OFFER.replace("c=IN IP4 192.0.2.1", "c=IN IP4 0.0.0.0");
        assert_eq!(ans(&sdp, &[Codec::Pcmu]).unwrap().0.rtcp, None);
    }

    #[test]
    fn our_offer_has_no_mux_and_an_answer_cannot_add_it() {
        let o = offer(&[Codec::Pcmu], 20, &local(), 1);
        assert!(!o.contains("rtcp"), "{o}");
        let a = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\na=rtcp-mux\r\n";
        let n = accept_answer(&Sdp::parse(a.as_bytes()).unwrap(), &[Codec::Pcmu], 20).unwrap();
        assert!(!n.rtcp_mux);
        assert_eq!(n.rtcp, Some("192.0.2.1:4001".parse().unwrap()));
    }
}
