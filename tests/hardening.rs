//! Black-box: the real binary answers as RFC 3261 / RFC 4475 expect — strict where the
//! RFC is strict (Content-Length, single-valued headers, CSeq range, control bytes, URI
//! schemes, Require, SIP version, unusable media), lenient where it is lenient (LWS in
//! Via, any method token, extra media streams) — over UDP, and over TCP where framing
//! matters. Each rule has its unit test in `src/sip`; this is the class end to end.

// Black-box tests are a driver: they may read the clock.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

/// An out-of-dialog request from 127.0.0.1 with `extra` header lines and a body.
fn request(method: &str, call_id: &str, extra: &str, body: &str) -> String {
    format!(
        "{method} sip:pincoderouting@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{call_id};rport\r\n\
From: <sip:+15551234567@127.0.0.1>;tag=1\r\nTo: <sip:pincoderouting@127.0.0.1>\r\n\
Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n";

fn invite(call_id: &str, sdp: &str) -> String {
    request(
        "INVITE",
        call_id,
        "Contact: <sip:t@127.0.0.1:9>\r\nContent-Type: application/sdp\r\n",
        sdp,
    )
}

/// Sends one datagram; the first reply's text (None if nothing came within 1 s).
fn ask(to: SocketAddr, data: &[u8]) -> Option<String> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.send_to(data, to).unwrap();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, _) = s.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        // A 100 Trying is not the answer we are after.
        if !text.starts_with("SIP/2.0 100 ") {
            return Some(text);
        }
    }
}

fn status_line(reply: &str) -> &str {
    reply.lines().next().unwrap_or("")
}

fn header<'a>(reply: &'a str, name: &str) -> Option<&'a str> {
    reply.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn strict_and_lenient_rules_end_to_end() {
    let mut svc = Service::start("", "");
    let to = svc.udp;
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "two Content-Lengths that disagree",
            request("OPTIONS", "h-cl2", "l: 3\r\n", ""),
            "SIP/2.0 400 Bad Request (bad Content-Length)",
        ),
        (
            "a negative Content-Length",
            request("OPTIONS", "h-clneg", "", "")
                .replace("Content-Length: 0", "Content-Length: -1"),
            "SIP/2.0 400 Bad Request (bad Content-Length)",
        ),
        (
            "an overflowing Content-Length",
            request("OPTIONS", "h-clbig", "", "")
                .replace("Content-Length: 0", "Content-Length: 184467440737095516160"),
            "SIP/2.0 400 Bad Request (bad Content-Length)",
        ),
        (
            "a body shorter than Content-Length",
            request("OPTIONS", "h-short", "", "")
                .replace("Content-Length: 0", "Content-Length: 10"),
            "SIP/2.0 400 Bad Request (body shorter than Content-Length)",
        ),
        (
            "an unparseable From",
            request("OPTIONS", "h-from", "", "")
                .replace("From: <sip:+15551234567@127.0.0.1>;tag=1", "From: <sip:x@y"),
            "SIP/2.0 400 Bad Request (missing or malformed From)",
        ),
        (
            "an unparseable To",
            request("OPTIONS", "h-to", "", "")
                .replace("To: <sip:pincoderouting@127.0.0.1>", "To: "),
            "SIP/2.0 400 Bad Request (missing or malformed To)",
        ),
        (
            "an unparseable Contact",
            request(
                "OPTIONS",
                "h-contact",
                "Contact: \"x\" <sip:t@127.0.0.1:9\r\n",
                "",
            ),
            "SIP/2.0 400 Bad Request (malformed Contact)",
        ),
        (
            "a CSeq of 2^31",
            request("OPTIONS", "h-cseq", "", "")
                .replace("CSeq: 1 OPTIONS", "CSeq: 2147483648 OPTIONS"),
            "SIP/2.0 400 Bad Request (missing or malformed CSeq)",
        ),
        (
            "a second Call-ID",
            request("OPTIONS", "h-dupcid", "i: other\r\n", ""),
            "SIP/2.0 400 Bad Request (Call-ID more than once)",
        ),
        (
            "a second CSeq",
            request("OPTIONS", "h-dupcseq", "CSeq: 2 OPTIONS\r\n", ""),
            "SIP/2.0 400 Bad Request (CSeq more than once)",
        ),
        (
            "a NUL in the start line",
            request("OPTIONS", "h-nul", "", "")
                .replace("sip:pincoderouting@", "sip:pincode\0routing@"),
            "SIP/2.0 400 Bad Request (bad start line)",
        ),
        (
            "an INVITE from Via port 0",
            invite("h-via0", SDP).replace("127.0.0.1:9;branch", "127.0.0.1:0;branch"),
            "SIP/2.0 400 Bad Request (missing or malformed Via)",
        ),
        (
            "a mailto: Request-URI",
            request("OPTIONS", "h-mailto", "", "").replace(
                "sip:pincoderouting@127.0.0.1 SIP",
                "mailto:pin@example.com SIP",
            ),
            "SIP/2.0 416 Unsupported URI Scheme",
        ),
        (
            "Require with an extension on OPTIONS",
            request("OPTIONS", "h-require", "Require: nosuchext\r\n", ""),
            "SIP/2.0 420 Bad Extension",
        ),
        (
            "SIP/7.0",
            request("OPTIONS", "h-v7", "", "")
                .replace("127.0.0.1 SIP/2.0\r\n", "127.0.0.1 SIP/7.0\r\n"),
            "SIP/2.0 505 Version Not Supported",
        ),
        (
            "a method token of 5000 characters",
            request(&"X".repeat(5000), "h-longmethod", "", ""),
            "SIP/2.0 501 Not Implemented",
        ),
        (
            "Via with spaces around the slashes",
            request("OPTIONS", "h-lws", "", "")
                .replace("Via: SIP/2.0/UDP", "Via: SIP  /   2.0 /UDP"),
            "SIP/2.0 200 OK",
        ),
        (
            "a multicast audio address",
            invite(
                "h-mcast",
                &SDP.replace("c=IN IP4 127.0.0.1", "c=IN IP4 233.252.0.1/16"),
            ),
            "SIP/2.0 488 Not Acceptable Here",
        ),
        (
            "an unspecified audio address",
            invite(
                "h-unspec",
                &SDP.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"),
            ),
            "SIP/2.0 488 Not Acceptable Here",
        ),
        (
            "audio on port 0",
            invite("h-port0", &SDP.replace("m=audio 9", "m=audio 0")),
            "SIP/2.0 488 Not Acceptable Here",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, msg, want) in &cases {
        let got = ask(to, msg.as_bytes());
        let line = got.as_deref().map(status_line).unwrap_or("(no reply)");
        if line != *want {
            wrong.push(format!("{what}: got {line:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The 420 lists what we lack; the 488s carry their RFC 3261 §20.43 warning codes.
    let r = ask(
        to,
        request("OPTIONS", "h-req2", "Require: nosuchext\r\n", "").as_bytes(),
    )
    .unwrap();
    assert_eq!(header(&r, "Unsupported"), Some("nosuchext"), "{r}");
    for (sdp, code) in [
        (
            SDP.replace("c=IN IP4 127.0.0.1", "c=IN IP4 233.252.0.1"),
            "330 ",
        ),
        (
            SDP.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"),
            "301 ",
        ),
        (SDP.replace("m=audio 9", "m=audio 0"), "304 "),
        (SDP.replace("RTP/AVP 0", "RTP/AVP 18"), "305 "),
    ] {
        let r = ask(to, invite(&format!("h-w{code}"), &sdp).as_bytes()).unwrap();
        let w = header(&r, "Warning").unwrap_or("");
        assert!(w.starts_with(code), "{code}: {r}");
    }
    // A broken video stream beside good audio: answered, video refused with port 0.
    let av = format!("{SDP}m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264\r\n");
    let r = ask(to, invite("h-video", &av).as_bytes()).unwrap();
    assert!(r.starts_with("SIP/2.0 200 OK"), "{r}");
    assert!(r.contains("m=video 0 RTP/AVP 96\r\n"), "{r}");
    assert!(r.contains("\r\nm=audio "), "{r}");
    assert!(svc.is_running());
}

#[test]
fn tcp_content_length_disagreement_is_400_then_the_stream_closes() {
    let mut svc = Service::start("", "");
    let mut c = TcpStream::connect(svc.tcp).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let bad =
        request("OPTIONS", "h-tcp", "l: 4\r\n", "").replace("SIP/2.0/UDP", "SIP/2.0/TCP") + "abcd";
    c.write_all(bad.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match c.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                break !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    };
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("SIP/2.0 400 Bad Request (bad Content-Length)"),
        "{text}"
    );
    assert!(closed, "the stream cannot be resynchronised: closed");
    // And the listener goes on.
    let mut c = TcpStream::connect(svc.tcp).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let ok = request("OPTIONS", "h-tcp2", "", "").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    c.write_all(ok.as_bytes()).unwrap();
    let n = c.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"SIP/2.0 200 OK"));
    assert!(svc.is_running());
}

/// Reads one SIP message from a TCP stream (framed by its Content-Length); `None` when the
/// stream ends or nothing whole comes within the stream's read timeout.
fn read_sip(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_string();
            let len: usize = header(&head, "Content-Length")
                .or_else(|| header(&head, "l"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if pending.len() >= end + 4 + len {
                let msg: Vec<u8> = pending.drain(..end + 4 + len).collect();
                return Some(String::from_utf8_lossy(&msg).to_string());
            }
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

/// The headers a response copies from its request (§8.2.6.2).
fn answer(req: &str, status: &str) -> String {
    let copy: String = ["Via", "From", "To", "Call-ID", "CSeq"]
        .iter()
        .filter_map(|h| header(req, h).map(|v| format!("{h}: {v}\r\n")))
        .collect();
    format!("SIP/2.0 {status}\r\n{copy}Content-Length: 0\r\n\r\n")
}

/// The PBX calls over TCP and then closes its connection (a proxy's idle timeout, a PBX
/// restart): our REFER must still reach it, over a connection we open to the dialog's next
/// hop — its Contact — and the rest of the transfer (202, NOTIFY, our BYE) goes on that
/// connection (RFC 3261 §12.2.1.1, §18.1.1). Before, the REFER was dropped ("connection
/// gone") and the caller was never transferred.
#[test]
fn tcp_requests_open_a_connection_to_the_next_hop_when_the_pbx_closed_its_own() {
    let pbx = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pbx_port = pbx.local_addr().unwrap().port();
    let svc = tcp_pbx_service();
    let our = svc.tcp;
    let call_id = "tcp-next-hop";
    let (mut c, ok) = tcp_call(our, pbx_port, call_id);
    let to_tag = to_tag_of(&ok);
    let ack = format!(
        "ACK sip:pincoderouting@{our};transport=tcp SIP/2.0\r\n{}Content-Length: 0\r\n\r\n",
        tcp_dialog(pbx_port, call_id, "ack", "1 ACK", &to_tag)
    );
    c.write_all(ack.as_bytes()).unwrap();
    // The PBX goes away from this connection.
    std::thread::sleep(Duration::from_millis(200));
    drop(c);

    // No key: after the prompt and the first-digit timeout, the REFER to the failure
    // extension comes on a connection we open to the PBX's Contact.
    let mut back = accept_within(&pbx, Duration::from_secs(20), &svc, "the PBX's Contact");
    let mut pending = Vec::new();
    finish_tcp_transfer(&svc, &mut back, &mut pending, pbx_port, call_id, &to_tag);
}

/// The PBX sends its INVITE over TCP and closes the connection before ACKing our 200 (a
/// proxy's connection lifetime, a restart). The 200 is retransmitted until the ACK
/// (§13.3.1.4, on TCP too), and once the request's connection is gone it must go on a
/// connection we open to the Via's received IP and sent-by port (RFC 3261 §18.2.2).
/// Before, the retransmissions were dropped ("connection gone"), the ACK never came, and
/// the call was lost.
#[test]
fn tcp_responses_open_a_connection_to_the_via_when_the_request_connection_closed() {
    let pbx = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pbx_port = pbx.local_addr().unwrap().port();
    let svc = tcp_pbx_service();
    let our = svc.tcp;
    let call_id = "tcp-response-via";
    let (c, _) = tcp_call(our, pbx_port, call_id);
    // Gone before the ACK.
    drop(c);

    let mut back = accept_within(&pbx, Duration::from_secs(10), &svc, "the INVITE's Via");
    let mut pending = Vec::new();
    let ok = read_sip(&mut back, &mut pending).expect("the 200, retransmitted");
    assert!(ok.starts_with("SIP/2.0 200 "), "{ok}");
    assert_eq!(header(&ok, "Call-ID"), Some(call_id), "{ok}");
    assert!(header(&ok, "CSeq").unwrap().ends_with("INVITE"), "{ok}");
    let to_tag = to_tag_of(&ok);
    let ack = format!(
        "ACK sip:pincoderouting@{our};transport=tcp SIP/2.0\r\n{}Content-Length: 0\r\n\r\n",
        tcp_dialog(pbx_port, call_id, "ack", "1 ACK", &to_tag)
    );
    back.write_all(ack.as_bytes()).unwrap();
    // The call goes on, on the connection we opened: the REFER (same place: the Contact)
    // comes on it, and the transfer ends there.
    finish_tcp_transfer(&svc, &mut back, &mut pending, pbx_port, call_id, &to_tag);
    // A new call on the connection we opened: our Contact names the port we listen on, not
    // this connection's own (ephemeral) one, which nobody can reach once it closes.
    let second = "tcp-on-ours";
    back.write_all(tcp_invite(our, pbx_port, second).as_bytes())
        .unwrap();
    let ok = loop {
        let m = read_sip(&mut back, &mut pending).expect("our answer to the new INVITE");
        if header(&m, "Call-ID") == Some(second) && !m.starts_with("SIP/2.0 1") {
            break m;
        }
    };
    assert!(ok.starts_with("SIP/2.0 200 "), "{ok}");
    let contact = header(&ok, "Contact").unwrap();
    assert!(
        contact.contains(&format!("127.0.0.1:{}", our.port())),
        "{contact}"
    );
}

/// The PBX closes its TCP connection after the ACK and nothing listens at its Contact any
/// more (it went down). Our REFER's connection is refused: the call must take that as a
/// 503 at once (RFC 3261 §17.1.4, §8.1.3.1), its BYE likewise, and end with its audit
/// record within seconds. Before, each request waited out Timer F (32 s): the record came
/// after more than a minute.
#[test]
fn tcp_requests_that_cannot_connect_fail_at_once() {
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pbx_port = gone.local_addr().unwrap().port();
    drop(gone);
    let svc = tcp_pbx_service();
    let our = svc.tcp;
    let call_id = "tcp-refused";
    let (mut c, ok) = tcp_call(our, pbx_port, call_id);
    let ack = format!(
        "ACK sip:pincoderouting@{our};transport=tcp SIP/2.0\r\n{}Content-Length: 0\r\n\r\n",
        tcp_dialog(pbx_port, call_id, "ack", "1 ACK", &to_tag_of(&ok))
    );
    c.write_all(ack.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(c);
    // The prompt, the first-digit timeout, then the REFER and the BYE fail: well under the
    // 64 s that two Timer Fs take.
    let rec = svc.wait_audit_calls(1, Duration::from_secs(20));
    assert_eq!(rec.len(), 1, "no record within 20 s:\n{}", svc.raw_log());
    assert_eq!(rec[0]["call_id"], call_id, "{rec:?}");
    assert_eq!(rec[0]["transfer_target"], "1002", "{rec:?}");
    let outcome = rec[0]["transfer_outcome"].as_str().unwrap_or_default();
    assert!(outcome.contains("REFER could not be sent"), "{rec:?}");
    let log = svc.raw_log();
    assert!(log.contains("tcp connect failed"), "{log}");
    // Counted for the operator: the REFER and the BYE.
    let (_, m) = http(svc.admin(), "GET", "/metrics", None);
    let failed = metric(
        &m,
        "pincoderouting_sip_send_failures_total{transport=\"tcp\",reason=\"connect_failed\"}",
    );
    assert_eq!(failed, 2.0, "{m}");
}

/// TCP connections are bounded in time as they are in size: one that brings nothing for
/// `tcp_idle_timeout_secs` is closed; one whose message stays unfinished for 64×T1 is
/// closed even while bytes trickle in (slowloris: each byte would reset an idle timer); a
/// double-CRLF keep-alive is answered with a CRLF (RFC 5626 §4.4.1) and keeps the
/// connection open past the idle timeout. Before, an idle or dribbling connection held one
/// of the 4096 connection slots for ever.
#[test]
fn tcp_connections_idle_or_dribbling_are_closed_and_keepalives_answered() {
    let svc = Service::launch_full(
        "127.0.0.1",
        "info",
        // 64×T1 = 3.2 s.
        "tcp_idle_timeout_secs = 1\nt1_ms = 50\n",
        "",
        "",
        "",
    );
    // Idle: closed after about a second, well before the read gives up.
    let mut idle = TcpStream::connect(svc.tcp).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let start = std::time::Instant::now();
    let mut b = [0u8; 64];
    let n = idle.read(&mut b);
    assert!(matches!(n, Ok(0)), "closed by us, not timed out: {n:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );

    // Keep-alives: each ping gets its pong, and the connection outlives the idle timeout.
    let mut kept = TcpStream::connect(svc.tcp).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    for _ in 0..5 {
        kept.write_all(b"\r\n\r\n").unwrap();
        let mut pong = [0u8; 2];
        kept.read_exact(&mut pong).expect("a pong");
        assert_eq!(&pong, b"\r\n");
        std::thread::sleep(Duration::from_millis(500));
    }

    // Dribbling: a header line every 300 ms never finishes the message; closed within
    // 64×T1 of its first byte although the idle timer never fires.
    let mut slow = TcpStream::connect(svc.tcp).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let start = std::time::Instant::now();
    let _ = slow.write_all(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n");
    let shut = loop {
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "a dribbling connection was never closed"
        );
        let _ = slow.write_all(b"X-Pad: a\r\n");
        match slow.read(&mut b) {
            Ok(0) => break start.elapsed(),
            Ok(_) => panic!("nothing is answered to half a message"),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break start.elapsed(),
        }
    };
    assert!(shut >= Duration::from_millis(2500), "{shut:?}");
}

/// A service for the raw TCP PBX tests: no key expected (the first-digit timeout sends the
/// caller to the failure extension, 1002), an audit file.
fn tcp_pbx_service() -> Service {
    Service::launch_full(
        "127.0.0.1",
        "info",
        "",
        "",
        "first_digit_timeout_secs = 1\nmax_attempts = 1\n",
        "[audit]\nfile = \"audit.log\"\n",
    )
}

/// The PBX's dialog headers: Via and Contact at its listening port.
fn tcp_dialog(pbx_port: u16, call_id: &str, branch: &str, cseq: &str, to_tag: &str) -> String {
    format!(
        "Via: SIP/2.0/TCP 127.0.0.1:{pbx_port};branch=z9hG4bK{branch}-{call_id}\r\n\
From: <sip:+15551234567@127.0.0.1>;tag=pbx1\r\nTo: <sip:pincoderouting@127.0.0.1>{to_tag}\r\n\
Call-ID: {call_id}\r\nCSeq: {cseq}\r\nMax-Forwards: 70\r\n\
Contact: <sip:pbx@127.0.0.1:{pbx_port};transport=tcp>\r\n"
    )
}

/// The PBX's INVITE on a connection of its own, up to our 200 (returned with the stream).
fn tcp_call(our: SocketAddr, pbx_port: u16, call_id: &str) -> (TcpStream, String) {
    let mut c = TcpStream::connect(our).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(tcp_invite(our, pbx_port, call_id).as_bytes())
        .unwrap();
    let mut pending = Vec::new();
    let ok = loop {
        let r = read_sip(&mut c, &mut pending).expect("a final response to the INVITE");
        if !r.starts_with("SIP/2.0 1") {
            break r;
        }
    };
    assert!(ok.starts_with("SIP/2.0 200 "), "{ok}");
    (c, ok)
}

fn tcp_invite(our: SocketAddr, pbx_port: u16, call_id: &str) -> String {
    format!(
        "INVITE sip:pincoderouting@{our};transport=tcp SIP/2.0\r\n{}\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        tcp_dialog(pbx_port, call_id, "inv", "1 INVITE", ""),
        SDP.len()
    )
}

/// ";tag=…" of a response's To.
fn to_tag_of(response: &str) -> String {
    let to = header(response, "To").unwrap();
    to[to.find(";tag=").expect("a To tag")..].to_string()
}

/// The connection the service opens to the PBX's listening socket.
fn accept_within(
    pbx: &std::net::TcpListener,
    within: Duration,
    svc: &Service,
    what: &str,
) -> TcpStream {
    pbx.set_nonblocking(true).unwrap();
    let start = std::time::Instant::now();
    let back = loop {
        match pbx.accept() {
            Ok((s, _)) => break s,
            Err(_) if start.elapsed() < within => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("no connection to {what}: {e}\n{}", svc.raw_log()),
        }
    };
    back.set_nonblocking(false).unwrap();
    back.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    back
}

/// From our REFER (to the failure extension) to our BYE, all on `back`; then the audit
/// record must say transferred.
fn finish_tcp_transfer(
    svc: &Service,
    back: &mut TcpStream,
    pending: &mut Vec<u8>,
    pbx_port: u16,
    call_id: &str,
    to_tag: &str,
) {
    let our = svc.tcp;
    let refer = read_sip(back, pending).expect("our REFER");
    assert!(
        refer.starts_with(&format!(
            "REFER sip:pbx@127.0.0.1:{pbx_port};transport=tcp SIP/2.0"
        )),
        "{refer}"
    );
    assert!(
        header(&refer, "Refer-To").unwrap().contains("1002"),
        "{refer}"
    );
    back.write_all(answer(&refer, "202 Accepted").as_bytes())
        .unwrap();
    let sipfrag = "SIP/2.0 200 OK\r\n";
    let notify = format!(
        "NOTIFY sip:pincoderouting@{our};transport=tcp SIP/2.0\r\n{}Event: refer\r\n\
Subscription-State: terminated;reason=noresource\r\nContent-Type: message/sipfrag;version=2.0\r\n\
Content-Length: {}\r\n\r\n{sipfrag}",
        tcp_dialog(pbx_port, call_id, "notify", "2 NOTIFY", to_tag),
        sipfrag.len()
    );
    back.write_all(notify.as_bytes()).unwrap();
    let mut got = Vec::new();
    let bye = loop {
        let m = read_sip(back, pending).expect("our 200 to the NOTIFY, then BYE");
        if m.starts_with("BYE ") {
            break m;
        }
        got.push(m);
    };
    assert!(
        got.iter()
            .any(|m| m.starts_with("SIP/2.0 200 ") && m.contains("NOTIFY")),
        "{got:?}"
    );
    back.write_all(answer(&bye, "200 OK").as_bytes()).unwrap();
    let rec = svc.wait_audit_calls(1, Duration::from_secs(10));
    assert_eq!(rec[0]["call_id"], call_id, "{rec:?}");
    assert_eq!(rec[0]["transfer_target"], "1002", "{rec:?}");
    assert_eq!(rec[0]["transfer_outcome"], "transferred", "{rec:?}");
}
