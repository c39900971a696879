//! Builders for the messages we send: responses (§8.2.6), stateless replies, Via stamping
//! (§18.2.1, RFC 3581) and where responses go (§18.2.2).

use super::msg::{split_list, Message, StartLine, Via};
use super::Flow;
use bytes::Bytes;
use std::net::SocketAddr;

/// Builds a response to `req`: Via (all, in order), From, To (+ our tag), Call-ID, CSeq
/// copied; Server added. Record-Route is copied for 18x/2xx to INVITE (§12.1.1).
pub fn response(req: &Message, code: u16, to_tag: Option<&str>, server: &str) -> Message {
    response_with_reason(req, code, super::msg::reason_phrase(code), to_tag, server)
}

/// As `response`, with an explicit reason phrase.
pub fn response_with_reason(
    req: &Message,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    server: &str,
) -> Message {
    let mut headers = Vec::with_capacity(12);
    let is_invite = matches!(req.method(), Some(super::msg::Method::Invite));
    for (n, v) in &req.headers {
        match n.as_str() {
            "Via" | "From" | "Call-ID" | "CSeq" => headers.push((n.clone(), v.clone())),
            "Record-Route" if is_invite && code > 100 && code < 300 => {
                headers.push((n.clone(), v.clone()))
            }
            "To" => {
                let has_tag = req.to_tag().is_some();
                let v = match to_tag {
                    Some(t) if !has_tag && code > 100 => format!("{v};tag={t}"),
                    _ => v.clone(),
                };
                headers.push((n.clone(), v));
            }
            _ => {}
        }
    }
    headers.push(("Server".into(), server.to_string()));
    Message {
        start: StartLine::Response {
            code,
            reason: reason.to_string(),
        },
        headers,
        body: Bytes::new(),
    }
}

/// Adds `received` and fills `rport` in the top Via of a request that arrived from `src`
/// (RFC 3261 §18.2.1, RFC 3581 §4).
pub fn stamp_via(msg: &mut Message, src: SocketAddr) {
    let Some(slot) = msg
        .headers
        .iter_mut()
        .find_map(|(n, v)| (n == "Via").then_some(v))
    else {
        return;
    };
    let value = slot.clone();
    let mut parts: Vec<&str> = split_list(&value).collect();
    let Some(first) = parts.first().copied() else {
        return;
    };
    let Some(via) = Via::parse(first) else { return };
    let src_ip = src.ip().to_string();
    let host = via.host.trim_start_matches('[').trim_end_matches(']');
    let mut top = String::with_capacity(first.len() + 40);
    // Rebuild the parameters: rport gets its value, received is added when needed.
    let (head, _) = first.split_once(';').unwrap_or((first, ""));
    top.push_str(head.trim_end());
    let mut have_received = false;
    for (n, v) in &via.params {
        match (n.as_str(), v) {
            ("rport", _) => top.push_str(&format!(";rport={}", src.port())),
            ("received", _) => {
                have_received = true;
                top.push_str(&format!(";received={src_ip}"));
            }
            (n, Some(v)) => top.push_str(&format!(";{n}={v}")),
            (n, None) => top.push_str(&format!(";{n}")),
        }
    }
    if !have_received && (host != src_ip || via.has_param("rport")) {
        top.push_str(&format!(";received={src_ip}"));
    }
    if let Some(p) = parts.first_mut() {
        *p = &top;
    }
    *slot = parts.join(", ");
}

/// Where a response to a request received on `flow` goes (§18.2.2 + RFC 3581): for UDP
/// to the source address and port when `rport` was asked for, else to the source IP and
/// the Via port. For TCP back on the request's connection (`conn`); `remote` is then
/// where to open a new one if the peer has closed it: the source IP (the Via's
/// `received`) and the Via's sent-by port, 5060 by default.
pub fn response_flow(req: &Message, flow: Flow) -> Flow {
    let Some(via) = req.top_via() else {
        return flow;
    };
    let rport = via.param("rport").is_some_and(|p| !p.is_empty()) || via.has_param("rport");
    if rport && !flow.reliable() {
        return flow;
    }
    Flow {
        remote: SocketAddr::new(flow.remote.ip(), via.port.unwrap_or(5060)),
        ..flow
    }
}

/// A stable To-tag for stateless replies, so retransmitted requests get the same reply.
pub fn stateless_tag(req: &Message) -> String {
    // FNV-1a over Call-ID and From-tag; no RNG needed and stable across retransmissions.
    let mut h: u64 = 0xcbf29ce484222325;
    let tag = req.from_tag().unwrap_or_default();
    for b in req.call_id().bytes().chain(tag.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::msg::Limits;
    use crate::sip::Transport;

    fn req(via: &str) -> Message {
        let s = format!(
            "OPTIONS sip:x@h SIP/2.0\r\nVia: {via}\r\nVia: SIP/2.0/UDP proxy;branch=z9hG4bKp\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:x@h>\r\nCall-ID: abc\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse(s.as_bytes(), &Limits::default(), true).unwrap()
    }

    fn udp(remote: &str) -> Flow {
        Flow {
            transport: Transport::Udp,
            conn: 0,
            remote: remote.parse().unwrap(),
        }
    }

    #[test]
    fn rport_is_filled_and_response_goes_to_source() {
        let mut m = req("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport");
        stamp_via(&mut m, "203.0.113.1:40000".parse().unwrap());
        let via = m.top_via().unwrap();
        assert_eq!(via.param("rport"), Some("40000"));
        assert_eq!(via.param("received"), Some("203.0.113.1"));
        assert_eq!(via.branch(), Some("z9hG4bK1"));
        let f = response_flow(&m, udp("203.0.113.1:40000"));
        assert_eq!(f.remote, "203.0.113.1:40000".parse().unwrap());
        assert_eq!(m.header_values("Via").count(), 2);
    }

    #[test]
    fn without_rport_response_goes_to_via_port() {
        let mut m = req("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1");
        stamp_via(&mut m, "203.0.113.1:40000".parse().unwrap());
        assert_eq!(m.top_via().unwrap().param("received"), Some("203.0.113.1"));
        let f = response_flow(&m, udp("203.0.113.1:40000"));
        assert_eq!(f.remote, "203.0.113.1:5070".parse().unwrap());
        let mut m = req("SIP/2.0/UDP 203.0.113.1;branch=z9hG4bK1");
        stamp_via(&mut m, "203.0.113.1:40000".parse().unwrap());
        assert_eq!(m.top_via().unwrap().param("received"), None);
        let f = response_flow(&m, udp("203.0.113.1:40000"));
        assert_eq!(f.remote.port(), 5060);
    }

    #[test]
    fn tcp_response_keeps_its_connection_and_names_the_via_port_for_a_new_one() {
        let tcp = |remote: &str| Flow {
            transport: Transport::Tcp,
            conn: 7,
            remote: remote.parse().unwrap(),
        };
        // The request came from an ephemeral port; the PBX listens on its Via's port.
        let mut m = req("SIP/2.0/TCP pbx.example.com:5070;branch=z9hG4bK1;rport");
        stamp_via(&mut m, "203.0.113.1:40000".parse().unwrap());
        let f = response_flow(&m, tcp("203.0.113.1:40000"));
        assert_eq!(f.conn, 7);
        assert_eq!(f.transport, Transport::Tcp);
        assert_eq!(f.remote, "203.0.113.1:5070".parse().unwrap());
        let mut m = req("SIP/2.0/TCP 203.0.113.1;branch=z9hG4bK1");
        stamp_via(&mut m, "203.0.113.1:40000".parse().unwrap());
        let f = response_flow(&m, tcp("203.0.113.1:40000"));
        assert_eq!(f.remote, "203.0.113.1:5060".parse().unwrap());
    }

    #[test]
    fn response_copies_the_right_headers() {
        let m = req("SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1");
        let r = response(&m, 405, Some("t1"), "ua");
        let text = String::from_utf8(r.to_bytes().to_vec()).unwrap();
        assert!(text.starts_with("SIP/2.0 405 Method Not Allowed\r\n"));
        assert_eq!(r.to_tag().as_deref(), Some("t1"));
        assert_eq!(r.header_values("Via").count(), 2);
        assert_eq!(r.call_id(), "abc");
        assert_eq!(stateless_tag(&m), stateless_tag(&m.clone()));
    }
}
