//! A PBX trunk written with raw UDP sockets, for black-box tests that need to see exactly
//! what the real binary sends and when (timing of our BYE, headers of our requests).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// One SIP message received, with when it arrived.
#[derive(Debug, Clone)]
pub struct Got {
    pub at: Instant,
    pub text: String,
}

impl Got {
    /// The request method, or None for a response.
    pub fn method(&self) -> Option<&str> {
        let first = self.text.lines().next()?;
        (!first.starts_with("SIP/2.0")).then(|| first.split(' ').next().unwrap_or(""))
    }

    /// The status code, or None for a request.
    pub fn status(&self) -> Option<u16> {
        let first = self.text.lines().next()?;
        first
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
    }

    /// Every value of a header (long name, case-insensitive).
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.text
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    pub fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("")
    }

    /// A response to this request: Via, From, To, Call-ID and CSeq copied (§8.2.6).
    pub fn reply(&self, code: u16, reason: &str) -> String {
        let mut r = format!("SIP/2.0 {code} {reason}\r\n");
        for v in self.headers("Via") {
            r.push_str(&format!("Via: {v}\r\n"));
        }
        for h in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(v) = self.header(h) {
                r.push_str(&format!("{h}: {v}\r\n"));
            }
        }
        r.push_str("Content-Length: 0\r\n\r\n");
        r
    }
}

/// The raw PBX: one SIP socket and one RTP socket on loopback.
pub struct RawPbx {
    pub sip: UdpSocket,
    pub rtp: UdpSocket,
    pub call_id: String,
    pub to_tag: Option<String>,
    target: SocketAddr,
}

impl RawPbx {
    pub fn new(target: SocketAddr, call_id: &str) -> RawPbx {
        Self::with_rtp(target, call_id, UdpSocket::bind("127.0.0.1:0").unwrap())
    }

    /// As `new`, offering `rtp` as the PBX's RTP socket.
    pub fn with_rtp(target: SocketAddr, call_id: &str, rtp: UdpSocket) -> RawPbx {
        let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
        sip.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        RawPbx {
            sip,
            rtp,
            call_id: call_id.to_string(),
            to_tag: None,
            target,
        }
    }

    fn sip_port(&self) -> u16 {
        self.sip.local_addr().unwrap().port()
    }

    /// Sends an INVITE from `caller` with a PCMU + telephone-event offer.
    pub fn invite(&self, caller: &str) {
        let rtp_port = self.rtp.local_addr().unwrap().port();
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
        );
        let p = self.sip_port();
        let msg = format!(
            "INVITE sip:pincoderouting@{t} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-inv-{id};rport\r\n\
From: <sip:{caller}@127.0.0.1>;tag=pbx1\r\nTo: <sip:pincoderouting@{t}>\r\nCall-ID: {id}\r\n\
CSeq: 1 INVITE\r\nContact: <sip:pbx@127.0.0.1:{p}>\r\nMax-Forwards: 70\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len(),
            t = self.target,
            id = self.call_id,
        );
        self.sip.send_to(msg.as_bytes(), self.target).unwrap();
    }

    /// ACKs the 2xx to our INVITE.
    pub fn ack(&self, ok: &Got) {
        let p = self.sip_port();
        let to = ok.header("To").unwrap_or_default();
        let msg = format!(
            "ACK sip:pincoderouting@{t} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-ack-{id};rport\r\n\
From: <sip:caller@127.0.0.1>;tag=pbx1\r\nTo: {to}\r\nCall-ID: {id}\r\nCSeq: 1 ACK\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            t = self.target,
            id = self.call_id,
        );
        self.sip.send_to(msg.as_bytes(), self.target).unwrap();
    }

    /// A request of ours in the dialog that `ours` (a request from the service) belongs
    /// to: To/From swapped from it, sent to its Contact's host.
    pub fn in_dialog(
        &self,
        method: &str,
        ours: &Got,
        cseq: u32,
        extra: &str,
        body: &str,
    ) -> String {
        let p = self.sip_port();
        let target = ours
            .header("Contact")
            .map(|c| c.trim_matches(|ch| ch == '<' || ch == '>').to_string())
            .unwrap_or_else(|| format!("sip:pincoderouting@{}", self.target));
        format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-{method}-{cseq}-{id};rport\r\n\
From: {from}\r\nTo: {to}\r\nCall-ID: {id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:pbx@127.0.0.1:{p}>\r\n\
Max-Forwards: 70\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len(),
            from = ours.header("To").unwrap_or_default(),
            to = ours.header("From").unwrap_or_default(),
            id = self.call_id,
        )
    }

    /// Accepts a REFER of ours: 202, then the final NOTIFY with a `code` sipfrag.
    pub fn accept_refer(&self, refer: &Got, code: u16) {
        self.send(&refer.reply(202, "Accepted"));
        let body = format!("SIP/2.0 {code} Whatever\r\n");
        let notify = self.in_dialog(
            "NOTIFY",
            refer,
            2,
            "Event: refer\r\nSubscription-State: terminated;reason=noresource\r\nContent-Type: message/sipfrag\r\n",
            &body,
        );
        self.send(&notify);
    }

    /// Hangs up the call `ok` (our 200 to the INVITE) answered.
    pub fn bye(&self, ok: &Got) {
        let p = self.sip_port();
        let to = ok.header("To").unwrap_or_default();
        let msg = format!(
            "BYE sip:pincoderouting@{t} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-bye-{id};rport\r\n\
From: <sip:caller@127.0.0.1>;tag=pbx1\r\nTo: {to}\r\nCall-ID: {id}\r\nCSeq: 9 BYE\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            t = self.target,
            id = self.call_id,
        );
        self.sip.send_to(msg.as_bytes(), self.target).unwrap();
    }

    /// Sends raw bytes to the service.
    pub fn send(&self, text: &str) {
        self.sip.send_to(text.as_bytes(), self.target).unwrap();
    }

    /// The next SIP message within `timeout` (RTP is never read here).
    pub fn recv(&self, timeout: Duration) -> Option<Got> {
        let end = Instant::now() + timeout;
        let mut buf = [0u8; 65536];
        while Instant::now() < end {
            if let Ok((n, _)) = self.sip.recv_from(&mut buf) {
                return Some(Got {
                    at: Instant::now(),
                    text: String::from_utf8_lossy(&buf[..n]).into_owned(),
                });
            }
        }
        None
    }

    /// Waits for the first message that `pred` accepts, answering nothing else; returns it
    /// with every message skipped on the way.
    pub fn wait(&self, timeout: Duration, pred: impl Fn(&Got) -> bool) -> (Got, Vec<Got>) {
        let end = Instant::now() + timeout;
        let mut skipped = Vec::new();
        while Instant::now() < end {
            if let Some(g) = self.recv(end - Instant::now()) {
                if pred(&g) {
                    return (g, skipped);
                }
                skipped.push(g);
            }
        }
        panic!("timed out; got {skipped:#?}");
    }

    /// INVITE, wait for the 200, ACK it. Returns the 200.
    pub fn call(&mut self, caller: &str) -> Got {
        self.invite(caller);
        let (ok, _) = self.wait(Duration::from_secs(5), |g| g.status() == Some(200));
        self.to_tag = ok
            .header("To")
            .and_then(|t| t.split(";tag=").nth(1).map(|s| s.to_string()));
        self.ack(&ok);
        ok
    }
}

/// An RTP socket on an even loopback port and an RTCP socket on the port above it.
pub fn rtp_rtcp_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..100 {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rtp.local_addr().unwrap().port();
        if !port.is_multiple_of(2) {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) {
            return (rtp, rtcp);
        }
    }
    panic!("no free even/odd port pair on loopback");
}

/// Length in milliseconds of a 16-bit mono 8 kHz WAV prompt (the shipped ones).
pub fn wav_ms(path: &std::path::Path) -> u64 {
    let b = std::fs::read(path).unwrap();
    let i = b.windows(4).position(|w| w == b"data").unwrap();
    let n = u32::from_le_bytes([b[i + 4], b[i + 5], b[i + 6], b[i + 7]]) as u64;
    n / 16
}
