//! A UAS dialog (RFC 3261 §12): identifiers, CSeq tracking, route set, remote target, and
//! the construction of our in-dialog requests (§12.2.1.1).

use super::msg::{split_list, Message, Method, NameAddr, StartLine, Uri};
use super::Transport;
use bytes::Bytes;
use std::net::SocketAddr;

/// The dialog state we hold as the UAS of the PBX's INVITE.
#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// Our From header for requests we send (the INVITE's To plus our tag).
    local: String,
    /// Our To header for requests we send (the INVITE's From, with its tag).
    remote: String,
    /// Where our requests go (the peer's Contact URI).
    pub remote_target: String,
    /// Record-Route of the INVITE, in order (§12.1.1).
    route_set: Vec<String>,
    local_seq: u32,
    remote_seq: u32,
    /// Our Contact header value.
    pub local_contact: String,
}

impl Dialog {
    /// Creates the dialog from the initial INVITE. `None` when the INVITE lacks a usable
    /// From tag or Contact (the caller answers 400).
    pub fn uas(invite: &Message, local_tag: String, local_contact: String) -> Option<Dialog> {
        let remote_tag = invite.from_tag()?;
        let contact = invite.header("Contact").and_then(NameAddr::parse)?;
        let route_set = invite
            .header_values("Record-Route")
            .map(str::to_string)
            .collect();
        let (seq, _) = invite.cseq()?;
        Some(Dialog {
            call_id: invite.call_id().to_string(),
            local: format!("{};tag={local_tag}", invite.header("To")?),
            remote: invite.header("From")?.to_string(),
            local_tag,
            remote_tag,
            remote_target: contact.uri,
            route_set,
            // Our first request uses a fresh sequence space (§12.1.1: local CSeq "empty").
            local_seq: 0,
            remote_seq: seq,
            local_contact,
        })
    }

    /// Does a request's tags put it in this dialog (§12.2.2)?
    pub fn matches(&self, req: &Message) -> bool {
        req.call_id() == self.call_id
            && req.from_tag().as_deref() == Some(self.remote_tag.as_str())
            && req.to_tag().as_deref() == Some(self.local_tag.as_str())
    }

    /// Checks and records the CSeq of an in-dialog request (not ACK/CANCEL). A lower one
    /// than seen before is out of order: the caller answers 500 (§12.2.2).
    pub fn accept_remote_cseq(&mut self, seq: u32) -> bool {
        if seq < self.remote_seq {
            return false;
        }
        self.remote_seq = seq;
        true
    }

    /// A target refresh (re-INVITE, UPDATE) may change the remote target (§12.2.2).
    pub fn refresh_target(&mut self, req: &Message) {
        if let Some(c) = req.header("Contact").and_then(NameAddr::parse) {
            self.remote_target = c.uri;
        }
    }

    /// Moves our CSeq forward by `n` (for a request built outside the normal sequence).
    pub fn skip_cseq(&mut self, n: u32) {
        self.local_seq = self.local_seq.saturating_add(n);
    }

    /// Builds an in-dialog request (§12.2.1.1) with a new CSeq and the given Via branch.
    pub fn request(
        &mut self,
        method: Method,
        branch: &str,
        via_host: SocketAddr,
        transport: Transport,
        user_agent: &str,
    ) -> Message {
        self.local_seq += 1;
        let mut headers: Vec<(String, String)> = Vec::with_capacity(10);
        headers.push((
            "Via".into(),
            format!(
                "SIP/2.0/{} {};branch={};rport",
                transport.as_str(),
                via_host,
                branch
            ),
        ));
        headers.push(("Max-Forwards".into(), "70".into()));
        headers.push(("From".into(), self.local.clone()));
        headers.push(("To".into(), self.remote.clone()));
        headers.push(("Call-ID".into(), self.call_id.clone()));
        headers.push((
            "CSeq".into(),
            format!("{} {}", self.local_seq, method.as_str()),
        ));
        // Loose routing (lr) keeps the remote target in the Request-URI; a strict router
        // first in the set takes the Request-URI and the target goes last (§12.2.1.1).
        let strict = self
            .route_set
            .first()
            .and_then(|r| NameAddr::parse(r))
            .and_then(|n| Uri::parse(&n.uri))
            .is_some_and(|u| !u.has_param("lr"));
        let uri = match self.route_set.split_first() {
            Some((first, rest)) if strict => {
                let first = NameAddr::parse(first).map(|n| n.uri);
                for r in rest {
                    headers.push(("Route".into(), r.clone()));
                }
                headers.push(("Route".into(), format!("<{}>", self.remote_target)));
                first.unwrap_or_else(|| self.remote_target.clone())
            }
            _ => {
                for r in &self.route_set {
                    headers.push(("Route".into(), r.clone()));
                }
                self.remote_target.clone()
            }
        };
        // Contact only where it means something: target refreshes and requests that set up
        // a subscription (REFER); never on BYE, CANCEL or INFO (§20.10, table 3).
        if !matches!(method, Method::Bye | Method::Cancel | Method::Info) {
            headers.push(("Contact".into(), self.local_contact.clone()));
        }
        headers.push(("User-Agent".into(), user_agent.to_string()));
        Message {
            start: StartLine::Request { method, uri },
            headers,
            body: Bytes::new(),
        }
    }

    /// The next hop for our requests when it is an IP literal: the first route, else the
    /// remote target (§8.1.2). `None` means "use the flow the INVITE came on" (we do not
    /// resolve names; a trunk that Record-Routes a hostname is reached symmetrically).
    pub fn next_hop(&self) -> Option<SocketAddr> {
        let uri = match self.route_set.first() {
            Some(r) => NameAddr::parse(split_list(r).next()?)?.uri,
            None => self.remote_target.clone(),
        };
        let u = Uri::parse(&uri)?;
        let ip = u.ip()?;
        let default = if u.scheme == "sips" { 5061 } else { 5060 };
        Some(SocketAddr::new(ip, u.port.unwrap_or(default)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::msg::Limits;

    fn invite(extra: &str) -> Message {
        let s = format!(
            "INVITE sip:pin@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1\r\n\
From: \"A\" <sip:alice@10.0.0.2>;tag=ft\r\nTo: <sip:pin@10.0.0.1>\r\nCall-ID: c1\r\n\
CSeq: 7 INVITE\r\nContact: <sip:alice@10.0.0.2:5070>\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse(s.as_bytes(), &Limits::default(), true).unwrap()
    }

    #[test]
    fn bye_is_built_from_the_dialog() {
        let inv = invite("");
        let mut d = Dialog::uas(&inv, "lt".into(), "<sip:pin@10.0.0.1:5060>".into()).unwrap();
        let bye = d.request(
            Method::Bye,
            "z9hG4bKx",
            "10.0.0.1:5060".parse().unwrap(),
            Transport::Udp,
            "ua",
        );
        let text = String::from_utf8(bye.to_bytes().to_vec()).unwrap();
        assert!(
            text.starts_with("BYE sip:alice@10.0.0.2:5070 SIP/2.0\r\n"),
            "{text}"
        );
        assert_eq!(bye.from_tag().as_deref(), Some("lt"));
        assert_eq!(bye.to_tag().as_deref(), Some("ft"));
        assert_eq!(bye.cseq(), Some((1, Method::Bye)));
        assert_eq!(d.next_hop(), Some("10.0.0.2:5070".parse().unwrap()));
        let again = d.request(
            Method::Bye,
            "b2",
            "10.0.0.1:5060".parse().unwrap(),
            Transport::Udp,
            "ua",
        );
        assert_eq!(again.cseq().unwrap().0, 2);
    }

    #[test]
    fn record_route_becomes_route_set() {
        let inv = invite("Record-Route: <sip:p1.example;lr>, <sip:192.0.2.9:5080;lr>\r\n");
        let mut d = Dialog::uas(&inv, "lt".into(), "<sip:x@h>".into()).unwrap();
        let bye = d.request(
            Method::Bye,
            "b",
            "10.0.0.1:5060".parse().unwrap(),
            Transport::Udp,
            "ua",
        );
        let routes: Vec<&str> = bye.header_values("Route").collect();
        assert_eq!(
            routes,
            vec!["<sip:p1.example;lr>", "<sip:192.0.2.9:5080;lr>"]
        );
        assert_eq!(d.next_hop(), None, "hostname route: use the flow");
    }

    #[test]
    fn cseq_must_not_go_backwards() {
        let inv = invite("");
        let mut d = Dialog::uas(&inv, "lt".into(), "<sip:x@h>".into()).unwrap();
        assert!(d.accept_remote_cseq(8));
        assert!(!d.accept_remote_cseq(6));
    }

    #[test]
    fn missing_contact_or_tag_refuses_the_dialog() {
        let s = "INVITE sip:pin@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:a@h>\r\nTo: <sip:pin@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:a@h>\r\n\r\n";
        let m = Message::parse(s.as_bytes(), &Limits::default(), true).unwrap();
        assert!(Dialog::uas(&m, "t".into(), "c".into()).is_none());
    }
}
