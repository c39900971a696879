//! The stateless front of the SIP stack: parses a datagram or stream frame, stamps the Via,
//! and decides where it goes — to an existing call, to a new call (after admission:
//! capacity, extensions, session timer, SDP), or to a stateless reply (400 malformed, 481
//! unknown dialog, 200 OPTIONS, 405/501, 503 overloaded). Holds no per-call state.

use super::build::{response, response_flow, response_with_reason, stamp_via, stateless_tag};
use super::gate::{Action, Rejection};
use super::msg::{Limits, Message, Method, NameAddr, ParseError, StartLine, Uri};
use super::sdp::{self, LocalMedia, Sdp, SdpError};
use super::source::effective_source;
use super::{Flow, SipTransmit, ACCEPT, ALLOW, SUPPORTED};
use crate::call::identity::{self, Caller};
use crate::config::{Config, Organization};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// Where an inbound message goes.
#[derive(Debug)]
pub enum Inbound {
    /// Deliver to the call with this Call-ID.
    ToCall(Message),
    /// A new INVITE passed admission: create a call for it.
    NewCall(Admission),
    /// Send this reply; nothing is kept.
    Reply(SipTransmit),
    /// An INVITE refused: send the reply and write the audit record.
    Refused(SipTransmit, Refusal),
    /// Turned away by the access policy (an organization's `allow`): the reply to send,
    /// if the policy says to answer, and why (counted, not audited: floods are cheap).
    Denied(Option<SipTransmit>, Rejection),
    /// Bytes that did not parse: the 400/413 to send when one can be addressed.
    Malformed(Option<SipTransmit>),
    /// Nothing to do (stray ACK, response to nobody).
    Drop(&'static str),
}

/// An INVITE that may become a call.
#[derive(Debug)]
pub struct Admission {
    pub invite: Message,
    /// The parsed offer; `None` for a delayed-offer INVITE.
    pub offer: Option<Sdp>,
    /// The organization the call belongs to.
    pub org: Arc<Organization>,
    /// Who is calling.
    pub caller: Caller,
    /// Where the INVITE is taken to come from (`sip::source::effective_source`): the
    /// packet's source, or the address a trusted proxy named.
    pub source: IpAddr,
}

/// An INVITE refused before it became a call: what the audit record says.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Refusal {
    pub call_id: String,
    pub organization: Option<String>,
    pub caller: String,
    /// `not_activated` for an organization without the feature, else `refused`.
    pub result: &'static str,
    pub sip_status: u16,
}

/// What the endpoint needs to know about the calls the driver holds.
pub trait CallTable {
    fn contains(&self, call_id: &str) -> bool;
    fn active(&self) -> usize;
    /// The service is draining: new calls and out-of-dialog OPTIONS get 503 (so a SIP load
    /// balancer probing with OPTIONS takes this instance out), calls in progress go on.
    fn draining(&self) -> bool {
        false
    }
}

/// The stateless SIP endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    config: Arc<Config>,
    limits: Limits,
}

/// The Session-Expires delta of a request, if any (RFC 4028 §4).
pub fn session_expires(msg: &Message) -> Option<(u32, Option<String>)> {
    let v = msg.header("Session-Expires")?;
    let mut parts = v.split(';');
    let secs = parts.next()?.trim().parse().ok()?;
    let refresher = parts.find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case("refresher")
            .then(|| v.trim().to_ascii_lowercase())
    });
    Some((secs, refresher))
}

impl Endpoint {
    pub fn new(config: Arc<Config>) -> Self {
        let limits = Limits::for_message(config.sip.max_message_bytes);
        Endpoint { config, limits }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn reply(&self, req: &Message, flow: Flow, msg: Message) -> Inbound {
        Inbound::Reply(SipTransmit {
            flow: response_flow(req, flow),
            data: msg.to_bytes(),
        })
    }

    /// An INVITE refused before it became a call: the reply, and its audit record.
    fn refuse(&self, invite: &Message, flow: Flow, org: Option<&str>, r: Message) -> Inbound {
        let status = r.status().unwrap_or(0);
        let caller = invite
            .from()
            .and_then(|f| crate::sip::msg::Uri::parse(&f.uri))
            .and_then(|u| u.user)
            .unwrap_or_default();
        let refusal = Refusal {
            call_id: invite.call_id().to_string(),
            organization: org.map(str::to_string),
            caller,
            result: if status == 480 {
                "not_activated"
            } else {
                "refused"
            },
            sip_status: status,
        };
        let t = SipTransmit {
            flow: response_flow(invite, flow),
            data: r.to_bytes(),
        };
        Inbound::Refused(t, refusal)
    }

    fn simple(&self, req: &Message, flow: Flow, code: u16) -> Inbound {
        let tag = stateless_tag(req);
        let mut r = response(req, code, Some(&tag), &self.config.sip.user_agent);
        if code == 405 || code == 501 || (code == 200 && req.method() == Some(&Method::Options)) {
            r.push_header("Allow", ALLOW);
        }
        if code == 200 {
            r.push_header("Accept", ACCEPT);
            r.push_header("Supported", SUPPORTED);
        }
        self.reply(req, flow, r)
    }

    /// Routes one message. `datagram` is true for UDP (Content-Length optional).
    pub fn handle(
        &self,
        flow: Flow,
        data: &[u8],
        datagram: bool,
        calls: &dyn CallTable,
    ) -> Inbound {
        let mut msg = match Message::parse(data, &self.limits, datagram) {
            Ok(m) => m,
            Err(e) => return self.malformed(flow, data, e),
        };
        let method = match &msg.start {
            StartLine::Response { .. } => {
                return if calls.contains(msg.call_id()) {
                    Inbound::ToCall(msg)
                } else {
                    Inbound::Drop("response outside any call")
                };
            }
            StartLine::Request { method, .. } => method.clone(),
        };
        stamp_via(&mut msg, flow.remote);
        if method != Method::Ack {
            if let Some((code, reason)) = request_uri_fault(&msg) {
                let tag = stateless_tag(&msg);
                let ua = &self.config.sip.user_agent;
                let r = response_with_reason(&msg, code, reason, Some(&tag), ua);
                return self.reply(&msg, flow, r);
            }
        }
        // §8.2.2.3: an extension we lack in Require is 420 on any request but ACK and
        // CANCEL, in a dialog or not. A new INVITE is checked in admission (audited).
        let new_invite = method == Method::Invite && msg.to_tag().is_none();
        if !matches!(method, Method::Ack | Method::Cancel) && !new_invite {
            let unsupported = unsupported_required(&msg);
            if !unsupported.is_empty() {
                let tag = stateless_tag(&msg);
                let mut r = response(&msg, 420, Some(&tag), &self.config.sip.user_agent);
                r.push_header("Unsupported", unsupported.join(", "));
                return self.reply(&msg, flow, r);
            }
        }
        if calls.contains(msg.call_id()) {
            return Inbound::ToCall(msg);
        }
        // Every trust decision below uses this address, never flow.remote directly.
        let source = effective_source(&msg, flow.remote.ip(), &self.config.sip);
        match method {
            Method::Invite if msg.to_tag().is_none() && calls.draining() => {
                let tag = stateless_tag(&msg);
                let mut r = response_with_reason(
                    &msg,
                    503,
                    "Service Unavailable (draining)",
                    Some(&tag),
                    &self.config.sip.user_agent,
                );
                r.push_header("Retry-After", self.config.sip.retry_after_secs.to_string());
                let org = self
                    .config
                    .organization_for(&msg, source)
                    .map(|o| o.name.clone());
                self.refuse(&msg, flow, org.as_deref(), r)
            }
            Method::Invite if msg.to_tag().is_none() => {
                self.admit(msg, flow, source, calls.active())
            }
            Method::Ack => Inbound::Drop("ACK outside any call"),
            Method::Options if msg.to_tag().is_none() && calls.draining() => {
                self.simple(&msg, flow, 503)
            }
            Method::Options if msg.to_tag().is_none() => self.simple(&msg, flow, 200),
            Method::Register | Method::Subscribe | Method::Message | Method::Publish
                if msg.to_tag().is_none() =>
            {
                self.simple(&msg, flow, 405)
            }
            Method::Other(_) => self.simple(&msg, flow, 501),
            // CANCEL with no transaction, BYE/re-INVITE/INFO/... with no dialog.
            _ => self.simple(&msg, flow, 481),
        }
    }

    fn admit(&self, invite: Message, flow: Flow, source: IpAddr, active: usize) -> Inbound {
        let ua = &self.config.sip.user_agent;
        let tag = stateless_tag(&invite);
        let Some(org) = self.config.organization_for(&invite, source).cloned() else {
            let r = response(&invite, 404, Some(&tag), ua);
            return self.refuse(&invite, flow, None, r);
        };
        // An organization's allow list judges the effective source: behind a proxy, the PBX.
        if !org.allows(source) {
            return self.deny(&invite, flow, Rejection::OrgNotAllowed);
        }
        if !org.enabled {
            let r = response_with_reason(&invite, 480, "PIN Routing Not Activated", Some(&tag), ua);
            return self.refuse(&invite, flow, Some(&org.name), r);
        }
        let caller = identity::caller(&invite, source, &org);
        if active >= self.config.sip.max_calls {
            let mut r = response(&invite, 503, Some(&tag), ua);
            r.push_header("Retry-After", self.config.sip.retry_after_secs.to_string());
            return self.refuse(&invite, flow, Some(&org.name), r);
        }
        let unsupported = unsupported_required(&invite);
        if !unsupported.is_empty() {
            let mut r = response(&invite, 420, Some(&tag), ua);
            r.push_header("Unsupported", unsupported.join(", "));
            return self.refuse(&invite, flow, Some(&org.name), r);
        }
        if invite.header("Session-Expires").is_some() {
            match session_expires(&invite) {
                Some((se, _)) if se >= self.config.sip.min_session_expires => {}
                Some(_) => {
                    let mut r = response(&invite, 422, Some(&tag), ua);
                    r.push_header("Min-SE", self.config.sip.min_session_expires.to_string());
                    return self.refuse(&invite, flow, Some(&org.name), r);
                }
                None => {
                    let r = response_with_reason(
                        &invite,
                        400,
                        "Bad Request (Session-Expires)",
                        Some(&tag),
                        ua,
                    );
                    return self.refuse(&invite, flow, Some(&org.name), r);
                }
            }
        }
        if let Some(bad) = dialog_fault(&invite) {
            let r = response_with_reason(
                &invite,
                400,
                &format!("Bad Request ({bad})"),
                Some(&tag),
                ua,
            );
            return self.refuse(&invite, flow, Some(&org.name), r);
        }
        if invite.body.is_empty() {
            return Inbound::NewCall(Admission {
                invite,
                offer: None,
                org,
                caller,
                source,
            });
        }
        if !invite
            .content_type()
            .is_some_and(|c| c.eq_ignore_ascii_case("application/sdp"))
        {
            let mut r = response(&invite, 415, Some(&tag), ua);
            r.push_header("Accept", ACCEPT);
            return self.refuse(&invite, flow, Some(&org.name), r);
        }
        let offer = match Sdp::parse(&invite.body) {
            Ok(o) => o,
            Err(e) => {
                let r = response_with_reason(
                    &invite,
                    400,
                    &format!("Bad Request ({e})"),
                    Some(&tag),
                    ua,
                );
                return self.refuse(&invite, flow, Some(&org.name), r);
            }
        };
        // Dry-run the negotiation: an offer we cannot take never costs a port or a task.
        let probe = LocalMedia {
            ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 0,
            session_id: 0,
        };
        let m = &self.config.media;
        let refusal = match sdp::answer(&offer, &m.codecs, m.ptime_ms, &probe, 0) {
            // An initial offer must say where media goes: c=0.0.0.0 (or ::) would make a
            // call that never hears the caller's RTP address from its SDP.
            Ok((neg, _)) if neg.remote.is_none() => (
                301,
                "Incompatible network address formats: unspecified c= address".into(),
            ),
            Ok(_) => {
                return Inbound::NewCall(Admission {
                    invite,
                    offer: Some(offer),
                    org,
                    caller,
                    source,
                })
            }
            Err(SdpError::NoCommonCodec) => {
                let names: Vec<&str> = m.codecs.iter().map(|c| c.name()).collect();
                (
                    305,
                    format!(
                        "Incompatible media format: only {} accepted",
                        names.join("/")
                    ),
                )
            }
            Err(e) => match e.warning() {
                Some((code, text)) => (code, format!("{text}: {e}")),
                None => {
                    let reason = format!("Bad Request ({e})");
                    let r = response_with_reason(&invite, 400, &reason, Some(&tag), ua);
                    return self.refuse(&invite, flow, Some(&org.name), r);
                }
            },
        };
        let (warn_code, text) = refusal;
        let mut r = response(&invite, 488, Some(&tag), ua);
        r.push_header("Warning", format!("{warn_code} pincoderouting \"{text}\""));
        r.push_header("Accept", ACCEPT);
        self.refuse(&invite, flow, Some(&org.name), r)
    }

    /// A request turned away by the access policy: 403 (denied) or 503 + Retry-After
    /// (rate or call limits) when the policy says to answer, else nothing. Never for ACK.
    pub fn deny(&self, req: &Message, flow: Flow, why: Rejection) -> Inbound {
        let policy = &self.config.sip.access;
        let action = match why {
            Rejection::NotAllowed | Rejection::OrgNotAllowed => policy.denied,
            _ => policy.limited,
        };
        if action == Action::Drop || req.method().is_none_or(|m| *m == Method::Ack) {
            return Inbound::Denied(None, why);
        }
        let tag = stateless_tag(req);
        let mut r = response(req, why.status(), Some(&tag), &self.config.sip.user_agent);
        if why.status() == 503 {
            r.push_header("Retry-After", self.config.sip.retry_after_secs.to_string());
        }
        Inbound::Denied(
            Some(SipTransmit {
                flow: response_flow(req, flow),
                data: r.to_bytes(),
            }),
            why,
        )
    }

    /// Raw bytes turned away before routing (a stranger, a source over its request rate):
    /// parsed only when the policy says to answer, and answered only if they parse.
    pub fn deny_raw(&self, flow: Flow, data: &[u8], datagram: bool, why: Rejection) -> Inbound {
        let policy = &self.config.sip.access;
        let action = match why {
            Rejection::NotAllowed | Rejection::OrgNotAllowed => policy.denied,
            _ => policy.limited,
        };
        if action == Action::Drop {
            return Inbound::Denied(None, why);
        }
        match Message::parse(data, &self.limits, datagram) {
            Ok(mut m) if m.method().is_some() => {
                stamp_via(&mut m, flow.remote);
                self.deny(&m, flow, why)
            }
            _ => Inbound::Denied(None, why),
        }
    }

    /// A message that failed to parse: answer 400 (413 when too large) if enough of a
    /// request survives to address a response, else drop it.
    fn malformed(&self, flow: Flow, data: &[u8], err: ParseError) -> Inbound {
        // ACKs are never answered (§17.2.1), malformed or not.
        let Some(mut skeleton) = lenient_skeleton(data, &self.limits) else {
            return Inbound::Malformed(None);
        };
        stamp_via(&mut skeleton, flow.remote);
        let (code, reason) = match err {
            ParseError::TooLarge(_) => (413, "Request Entity Too Large".to_string()),
            ParseError::VersionNotSupported => (505, "Version Not Supported".to_string()),
            e => (400, format!("Bad Request ({e})")),
        };
        let tag = stateless_tag(&skeleton);
        let r = response_with_reason(
            &skeleton,
            code,
            &reason,
            Some(&tag),
            &self.config.sip.user_agent,
        );
        match self.reply(&skeleton, flow, r) {
            Inbound::Reply(t) => Inbound::Malformed(Some(t)),
            other => other,
        }
    }
}

/// Pulls the request line and the five headers a response needs out of bytes that did not
/// parse, so a 400 can still be addressed. Values are echoed as they came (even a bad
/// CSeq); only a Via we can route on is required. `None` for responses and hopeless input.
fn lenient_skeleton(data: &[u8], limits: &Limits) -> Option<Message> {
    let head = data.get(..limits.max_message).unwrap_or(data);
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let first = lines.find(|l| !l.is_empty())?;
    let mut parts = first.split(' ');
    let method = parts.next()?;
    let uri = parts.next()?;
    // Any method token (of any length: the message limit bounds it) is answered; a
    // response, or a first line that is not even a token, is not.
    if method.starts_with("SIP/")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_graphic())
    {
        return None;
    }
    const WANTED: [(&str, &str, &str); 5] = [
        ("via", "v", "Via"),
        ("from", "f", "From"),
        ("to", "t", "To"),
        ("call-id", "i", "Call-ID"),
        ("cseq", "cseq", "CSeq"),
    ];
    let mut headers = Vec::new();
    for l in lines.take(limits.max_headers) {
        if l.is_empty() {
            break;
        }
        let Some((n, v)) = l.split_once(':') else {
            continue;
        };
        let n = n.trim().to_ascii_lowercase();
        if let Some((_, _, canon)) = WANTED
            .iter()
            .find(|(long, short, _)| n == *long || n == *short)
        {
            // Every Via, but one each of the others: a 400 for a duplicated CSeq must not
            // echo the duplicate.
            let repeat = *canon != "Via" && headers.iter().any(|(n, _)| n == canon);
            if !repeat && v.len() < 1024 && !v.contains(|c: char| c.is_control() && c != '\t') {
                headers.push((canon.to_string(), v.trim().to_string()));
            }
        }
    }
    let m = Message {
        start: StartLine::Request {
            method: Method::Other(method.to_string()),
            uri: uri.to_string(),
        },
        headers,
        body: bytes::Bytes::new(),
    };
    m.top_via()?;
    if method.eq_ignore_ascii_case("ACK") {
        return None;
    }
    Some(m)
}

/// The option tags in Require that we do not support (we support `timer`, RFC 4028).
fn unsupported_required(msg: &Message) -> Vec<&str> {
    msg.header_values("Require")
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("timer"))
        .collect()
}

/// A Request-URI we cannot serve: 416 for a scheme other than sip, sips or tel (§8.2.2.1),
/// 400 for a sip/sips URI without a usable host.
fn request_uri_fault(msg: &Message) -> Option<(u16, &'static str)> {
    let StartLine::Request { uri, .. } = &msg.start else {
        return None;
    };
    let scheme = uri.split_once(':').map(|(s, _)| s).unwrap_or("");
    if !["sip", "sips", "tel"]
        .iter()
        .any(|k| scheme.eq_ignore_ascii_case(k))
    {
        return Some((416, "Unsupported URI Scheme"));
    }
    match Uri::parse(uri) {
        Some(u) if u.scheme == "tel" || !u.host.is_empty() => None,
        _ => Some((400, "Bad Request (malformed Request-URI)")),
    }
}

/// What keeps an INVITE from creating a dialog (§12.1.1), named for the 400's reason
/// phrase: a From tag, and exactly one Contact holding a SIP or SIPS URI with a host
/// (§8.1.1.8). `None` when the dialog can be built.
pub(crate) fn dialog_fault(invite: &Message) -> Option<&'static str> {
    if invite.from_tag().is_none() {
        return Some("missing From tag");
    }
    let mut contacts = invite.header_values("Contact");
    let Some(first) = contacts.next() else {
        return Some("missing Contact");
    };
    if contacts.next().is_some() {
        return Some("more than one Contact");
    }
    let uri = NameAddr::parse(first).and_then(|c| Uri::parse(&c.uri));
    match uri {
        Some(u) if (u.scheme == "sip" || u.scheme == "sips") && !u.host.is_empty() => None,
        _ => Some("malformed Contact"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Transport;

    struct Table(usize, &'static str);
    impl CallTable for Table {
        fn contains(&self, id: &str) -> bool {
            id == self.1
        }
        fn active(&self) -> usize {
            self.0
        }
    }

    const ORG: &str = "\n[[organization]]\nname = \"o\"\nenabled = true\nmatch_user = [\"pin\"]\n\
pbx_host = \"pbx\"\npin_success_ext = \"1\"\npin_failed_ext = \"2\"\n\
[[organization]]\nname = \"off\"\nmatch_user = [\"off\"]\npbx_host = \"pbx\"\n\
pin_success_ext = \"1\"\npin_failed_ext = \"2\"\n";

    fn ep(cfg: &str) -> Endpoint {
        Endpoint::new(Arc::new(
            crate::config::parse(&format!("{cfg}{ORG}"), "t").unwrap(),
        ))
    }

    fn flow() -> Flow {
        Flow {
            transport: Transport::Udp,
            conn: 0,
            remote: "192.0.2.1:5060".parse().unwrap(),
        }
    }

    fn req(method: &str, extra: &str, body: &str) -> String {
        format!(
            "{method} sip:pin@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport\r\n\
From: <sip:+15551234567@192.0.2.1>;tag=a\r\nTo: <sip:pin@192.0.2.10>\r\nCall-ID: new-call\r\n\
CSeq: 1 {method}\r\nContact: <sip:a@192.0.2.1>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    fn status(i: Inbound) -> (u16, Message) {
        match i {
            Inbound::Reply(t)
            | Inbound::Refused(t, _)
            | Inbound::Malformed(Some(t))
            | Inbound::Denied(Some(t), _) => {
                let m = Message::parse(&t.data, &Limits::default(), false).unwrap();
                (m.status().unwrap(), m)
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn options_outside_dialog_gets_200_with_capabilities() {
        let (code, m) = status(ep("").handle(
            flow(),
            req("OPTIONS", "", "").as_bytes(),
            true,
            &Table(0, ""),
        ));
        assert_eq!(code, 200);
        assert!(m.header("Allow").unwrap().contains("INVITE"));
        assert_eq!(m.header("Accept"), Some("application/sdp"));
        assert!(m.to_tag().is_some());
    }

    #[test]
    fn invite_with_a_contact_no_dialog_can_use_gets_400_naming_it() {
        let e = ep("");
        let t = Table(0, "");
        let good = req("INVITE", "", "");
        for (contact, why) in [
            ("Contact: <>", "malformed Contact"),
            ("Contact: ", "missing Contact"),
            ("Contact: <sip:a@192.0.2.1", "malformed Contact"),
            ("Contact: \"x\" <sip:a@192.0.2.1", "malformed Contact"),
            ("Contact: *", "malformed Contact"),
            ("Contact: <tel:+15551234567>", "malformed Contact"),
            ("Contact: <mailto:a@b>", "malformed Contact"),
            ("Contact: <sip:@>", "malformed Contact"),
            (
                "Contact: <sip:a@192.0.2.1>, <sip:b@192.0.2.1>",
                "more than one Contact",
            ),
        ] {
            let bad = good.replace("Contact: <sip:a@192.0.2.1>", contact);
            let (c, m) = status(e.handle(flow(), bad.as_bytes(), true, &t));
            assert_eq!(c, 400, "{contact}");
            assert!(
                matches!(&m.start, StartLine::Response { reason, .. } if reason.contains(why)),
                "{contact}: {:?}",
                m.start
            );
        }
        let no_tag = good.replace(";tag=a", "");
        let (c, m) = status(e.handle(flow(), no_tag.as_bytes(), true, &t));
        assert_eq!(c, 400);
        assert!(
            matches!(&m.start, StartLine::Response { reason, .. } if reason.contains("missing From tag"))
        );
        // Compact form and a display name are fine.
        let compact = good.replace(
            "Contact: <sip:a@192.0.2.1>",
            "m: \"A\" <sip:a@192.0.2.1:5070;transport=udp>;expires=60",
        );
        assert!(matches!(
            e.handle(flow(), compact.as_bytes(), true, &t),
            Inbound::NewCall(_)
        ));
    }

    #[test]
    fn invite_admission_outcomes() {
        let e = ep("[sip]\nmax_calls = 2\n");
        let t = Table(0, "");
        let ok = req("INVITE", "Content-Type: application/sdp\r\n", SDP);
        assert!(
            matches!(e.handle(flow(), ok.as_bytes(), true, &t), Inbound::NewCall(a) if a.offer.is_some())
        );
        let delayed = req("INVITE", "", "");
        assert!(
            matches!(e.handle(flow(), delayed.as_bytes(), true, &t), Inbound::NewCall(a) if a.offer.is_none())
        );
        let (c, m) = status(e.handle(flow(), ok.as_bytes(), true, &Table(2, "")));
        assert_eq!(c, 503);
        assert_eq!(m.header("Retry-After"), Some("5"));
        let g729 = req(
            "INVITE",
            "Content-Type: application/sdp\r\n",
            &SDP.replace("RTP/AVP 0", "RTP/AVP 18"),
        );
        let (c, m) = status(e.handle(flow(), g729.as_bytes(), true, &t));
        assert_eq!(c, 488);
        assert!(m.header("Warning").unwrap().starts_with("305 "));
        let broken = req(
            "INVITE",
            "Content-Type: application/sdp\r\n",
            "v=0\r\nc=IN IP4 x\r\n",
        );
        assert_eq!(status(e.handle(flow(), broken.as_bytes(), true, &t)).0, 400);
        let html = req("INVITE", "Content-Type: text/html\r\n", "<p>");
        assert_eq!(status(e.handle(flow(), html.as_bytes(), true, &t)).0, 415);
        let req100 = req("INVITE", "Require: 100rel, foo\r\n", "");
        let (c, m) = status(e.handle(flow(), req100.as_bytes(), true, &t));
        assert_eq!(c, 420);
        assert_eq!(m.header("Unsupported"), Some("100rel, foo"));
        let short = req("INVITE", "Session-Expires: 30\r\n", "");
        let (c, m) = status(e.handle(flow(), short.as_bytes(), true, &t));
        assert_eq!(c, 422);
        assert_eq!(m.header("Min-SE"), Some("90"));
        // Organizations: none matches -> 404; not activated -> 480 with an audit record.
        let nobody = ok.replace("INVITE sip:pin@", "INVITE sip:someone@");
        assert_eq!(status(e.handle(flow(), nobody.as_bytes(), true, &t)).0, 404);
        let off = ok.replace("INVITE sip:pin@", "INVITE sip:off@");
        match e.handle(flow(), off.as_bytes(), true, &t) {
            Inbound::Refused(r, audit) => {
                let m = Message::parse(&r.data, &Limits::default(), true).unwrap();
                assert_eq!(m.status(), Some(480));
                assert!(
                    matches!(m.start, StartLine::Response { ref reason, .. } if reason == "PIN Routing Not Activated")
                );
                assert_eq!(audit.result, "not_activated");
                assert_eq!(audit.organization.as_deref(), Some("off"));
            }
            other => panic!("{other:?}"),
        }
        let dflt = Endpoint::new(Arc::new(
            crate::config::parse(&format!("default_organization = \"o\"\n{ORG}"), "t").unwrap(),
        ));
        assert!(
            matches!(dflt.handle(flow(), nobody.as_bytes(), true, &t), Inbound::NewCall(a) if a.org.name == "o")
        );
    }

    #[test]
    fn unknown_dialogs_and_methods() {
        let e = ep("");
        let t = Table(0, "");
        assert_eq!(
            status(e.handle(flow(), req("BYE", "", "").as_bytes(), true, &t)).0,
            481
        );
        assert_eq!(
            status(e.handle(flow(), req("CANCEL", "", "").as_bytes(), true, &t)).0,
            481
        );
        let reinv = req("INVITE", "", "").replace(
            "To: <sip:pin@192.0.2.10>",
            "To: <sip:pin@192.0.2.10>;tag=zz",
        );
        assert_eq!(status(e.handle(flow(), reinv.as_bytes(), true, &t)).0, 481);
        let (c, m) = status(e.handle(flow(), req("SUBSCRIBE", "", "").as_bytes(), true, &t));
        assert_eq!(c, 405);
        assert!(m.header("Allow").is_some());
        assert_eq!(
            status(e.handle(flow(), req("FROB", "", "").as_bytes(), true, &t)).0,
            501
        );
        assert!(matches!(
            e.handle(flow(), req("ACK", "", "").as_bytes(), true, &t),
            Inbound::Drop(_)
        ));
        assert!(matches!(
            e.handle(
                flow(),
                req("BYE", "", "").as_bytes(),
                true,
                &Table(1, "new-call")
            ),
            Inbound::ToCall(_)
        ));
    }

    /// An organization's allow list judges the PBX a trusted proxy names, not the proxy.
    #[test]
    fn an_organization_allow_list_behind_a_proxy_judges_the_pbx() {
        let cfg = "[sip]\ntrusted_proxies = [\"192.0.2.1\"]\n[[organization]]\nname = \"narrow\"\n\
enabled = true\nmatch_user = [\"narrow\"]\npbx_host = \"pbx\"\npin_success_ext = \"1\"\n\
pin_failed_ext = \"2\"\nallow = [\"198.51.100.0/24\"]\n";
        let e = Endpoint::new(Arc::new(crate::config::parse(cfg, "t").unwrap()));
        let t = Table(0, "");
        let inv = |src: &str| {
            req(
                "INVITE",
                &format!("Content-Type: application/sdp\r\nX-Source-IP: {src}\r\n"),
                SDP,
            )
            .replace("INVITE sip:pin@", "INVITE sip:narrow@")
        };
        // flow() is the proxy (192.0.2.1), outside the organization's list.
        assert!(matches!(
            e.handle(flow(), inv("198.51.100.7").as_bytes(), true, &t),
            Inbound::NewCall(a) if a.source == "198.51.100.7".parse::<IpAddr>().unwrap()
        ));
        assert!(matches!(
            e.handle(flow(), inv("203.0.113.9").as_bytes(), true, &t),
            Inbound::Denied(None, Rejection::OrgNotAllowed)
        ));
    }

    /// Behind Kamailio every INVITE comes from the proxy: the organization's address block
    /// and the PAI trust must see the PBX's address, which only a trusted proxy can name.
    #[test]
    fn trust_decisions_use_the_trusted_proxys_source_header() {
        let by_source = "[[organization]]\nname = \"acme\"\nenabled = true\nmatch_source = [\"198.51.100.0/24\"]\n\
trusted_sources = [\"198.51.100.0/24\"]\npbx_host = \"pbx\"\npin_success_ext = \"1\"\n\
pin_failed_ext = \"2\"\n";
        let proxied = |sip: &str| {
            Endpoint::new(Arc::new(
                crate::config::parse(&format!("[sip]\n{sip}\n{by_source}"), "t").unwrap(),
            ))
        };
        let t = Table(0, "");
        let inv = req(
            "INVITE",
            "P-Asserted-Identity: <sip:+15557654321@pbx>\r\nX-Source-IP: 198.51.100.7\r\n",
            "",
        )
        .replace("sip:pin@", "sip:someone@");
        // From the trusted proxy (flow() is 192.0.2.1): the PBX's block, and its PAI.
        let e = proxied("trusted_proxies = [\"192.0.2.0/24\"]");
        match e.handle(flow(), inv.as_bytes(), true, &t) {
            Inbound::NewCall(a) => {
                assert_eq!(a.org.name, "acme");
                assert_eq!(a.source, "198.51.100.7".parse::<IpAddr>().unwrap());
                assert_eq!(a.caller.e164(), Some("+15557654321"), "PAI trusted");
            }
            other => panic!("{other:?}"),
        }
        // No proxy configured, or a packet from elsewhere: the header means nothing.
        for (e, from) in [
            (proxied(""), flow()),
            (
                e,
                Flow {
                    remote: "203.0.113.5:5060".parse().unwrap(),
                    ..flow()
                },
            ),
        ] {
            assert_eq!(status(e.handle(from, inv.as_bytes(), true, &t)).0, 404);
        }
        // A PBX inside the block calling directly still matches, by its packet source.
        let direct = Flow {
            remote: "198.51.100.9:5060".parse().unwrap(),
            ..flow()
        };
        let plain = inv.replace("X-Source-IP: 198.51.100.7\r\n", "");
        match proxied("trusted_proxies = [\"192.0.2.0/24\"]").handle(
            direct,
            plain.as_bytes(),
            true,
            &t,
        ) {
            Inbound::NewCall(a) => assert_eq!(a.source, direct.remote.ip()),
            other => panic!("{other:?}"),
        }
    }

    fn reason(m: &Message) -> &str {
        match &m.start {
            StartLine::Response { reason, .. } => reason,
            StartLine::Request { .. } => "",
        }
    }

    #[test]
    fn request_uri_schemes_other_than_sip_sips_tel_get_416() {
        let e = ep("");
        let t = Table(0, "");
        for uri in [
            "mailto:pin@example.com",
            "urn:service:sos",
            "http://192.0.2.10/",
            "nobodyknowsthisscheme:totallyopaque",
        ] {
            let m = req("OPTIONS", "", "").replace("sip:pin@192.0.2.10", uri);
            let (c, r) = status(e.handle(flow(), m.as_bytes(), true, &t));
            assert_eq!(c, 416, "{uri}");
            assert_eq!(reason(&r), "Unsupported URI Scheme");
        }
        // In a dialog too (before the call sees it); never for ACK.
        let bye = req("BYE", "", "").replace("sip:pin@192.0.2.10", "mailto:x@y");
        assert_eq!(
            status(e.handle(flow(), bye.as_bytes(), true, &Table(1, "new-call"))).0,
            416
        );
        let ack = req("ACK", "", "").replace("sip:pin@192.0.2.10", "mailto:x@y");
        assert!(matches!(
            e.handle(flow(), ack.as_bytes(), true, &t),
            Inbound::Drop(_)
        ));
        for ok in [
            "sips:pin@192.0.2.10",
            "tel:+15551234567",
            "SIP:pin@192.0.2.10",
        ] {
            let m = req("OPTIONS", "", "").replace("sip:pin@192.0.2.10", ok);
            assert_eq!(
                status(e.handle(flow(), m.as_bytes(), true, &t)).0,
                200,
                "{ok}"
            );
        }
        let no_host = req("OPTIONS", "", "").replace("sip:pin@192.0.2.10", "sip:pin@");
        let (c, r) = status(e.handle(flow(), no_host.as_bytes(), true, &t));
        assert_eq!(c, 400);
        assert!(reason(&r).contains("Request-URI"), "{}", reason(&r));
    }

    #[test]
    fn require_with_an_unknown_extension_is_420_on_every_request_but_ack_and_cancel() {
        let e = ep("");
        let t = Table(0, "");
        let in_call = Table(1, "new-call");
        let req_foo = "Require: foo, timer\r\n";
        let (c, r) = status(e.handle(flow(), req("OPTIONS", req_foo, "").as_bytes(), true, &t));
        assert_eq!(c, 420);
        assert_eq!(r.header("Unsupported"), Some("foo"));
        for m in ["BYE", "INFO", "UPDATE", "NOTIFY"] {
            let (c, r) = status(e.handle(flow(), req(m, req_foo, "").as_bytes(), true, &in_call));
            assert_eq!(c, 420, "{m} in a dialog");
            assert_eq!(r.header("Unsupported"), Some("foo"));
        }
        let reinvite = req("INVITE", "Require: 100rel\r\n", "").replace(
            "To: <sip:pin@192.0.2.10>",
            "To: <sip:pin@192.0.2.10>;tag=zz",
        );
        let (c, r) = status(e.handle(flow(), reinvite.as_bytes(), true, &in_call));
        assert_eq!((c, r.header("Unsupported")), (420, Some("100rel")));
        // CANCEL and ACK are exempt (§8.2.2.3): they reach the call.
        for m in ["CANCEL", "ACK"] {
            assert!(
                matches!(
                    e.handle(flow(), req(m, req_foo, "").as_bytes(), true, &in_call),
                    Inbound::ToCall(_)
                ),
                "{m}"
            );
        }
        // Only `timer`: fine.
        let timer = req("OPTIONS", "Require: timer\r\n", "");
        assert_eq!(status(e.handle(flow(), timer.as_bytes(), true, &t)).0, 200);
    }

    #[test]
    fn strict_framing_and_versions_are_answered() {
        let e = ep("");
        let t = Table(0, "");
        let good = req("OPTIONS", "", "");
        let v2 = good.replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia");
        let (c, r) = status(e.handle(flow(), v2.as_bytes(), true, &t));
        assert_eq!(c, 505);
        assert_eq!(r.call_id(), "new-call");
        let two_cl = good.replace("Content-Length: 0", "Content-Length: 0\r\nl: 5");
        let (c, r) = status(e.handle(flow(), two_cl.as_bytes(), true, &t));
        assert_eq!(c, 400);
        assert!(reason(&r).contains("Content-Length"), "{}", reason(&r));
        let dup = good.replace("CSeq: 1 OPTIONS", "CSeq: 1 OPTIONS\r\nCSeq: 2 OPTIONS");
        let (c, r) = status(e.handle(flow(), dup.as_bytes(), true, &t));
        assert_eq!(c, 400);
        assert!(reason(&r).contains("CSeq"), "{}", reason(&r));
        // The 400 echoes the CSeq as it came (§8.2.6), so only its first line is read.
        let big = good.replace("CSeq: 1 OPTIONS", "CSeq: 2147483648 OPTIONS");
        match e.handle(flow(), big.as_bytes(), true, &t) {
            Inbound::Malformed(Some(r)) => assert!(r.data.starts_with(b"SIP/2.0 400 ")),
            other => panic!("{other:?}"),
        }
        let nul = good.replace("OPTIONS sip:pin@", "OPTIONS sip:p\0in@");
        assert_eq!(status(e.handle(flow(), nul.as_bytes(), true, &t)).0, 400);
        let contact = good.replace("Contact: <sip:a@192.0.2.1>", "Contact: <sip:a@192.0.2.1");
        let (c, r) = status(e.handle(flow(), contact.as_bytes(), true, &t));
        assert_eq!(c, 400);
        assert!(reason(&r).contains("Contact"), "{}", reason(&r));
        let spaced = good.replace("Via: SIP/2.0/UDP", "Via: SIP  /   2.0 /UDP");
        assert_eq!(status(e.handle(flow(), spaced.as_bytes(), true, &t)).0, 200);
        // A method token of any length (up to the message limit: it is sent twice) is
        // answered 501.
        let long = "Z".repeat(7000);
        let m = req(&long, "", "");
        let (c, r) = status(e.handle(flow(), m.as_bytes(), true, &t));
        assert_eq!(c, 501);
        assert!(r.header("Allow").is_some());
    }

    #[test]
    fn initial_offers_without_a_usable_unicast_audio_stream_get_488_with_a_warning() {
        let e = ep("");
        let t = Table(0, "");
        let inv = |sdp: &str| req("INVITE", "Content-Type: application/sdp\r\n", sdp);
        for (from, to, warn) in [
            ("c=IN IP4 192.0.2.1", "c=IN IP4 0.0.0.0", "301 "),
            ("c=IN IP4 192.0.2.1", "c=IN IP4 233.252.0.1/32", "330 "),
            ("m=audio 4000", "m=audio 0", "304 "),
            ("m=audio 4000", "m=audio 65536", "304 "),
            ("RTP/AVP 0", "RTP/AVP 18", "305 "),
        ] {
            let (c, r) = status(e.handle(flow(), inv(&SDP.replace(from, to)).as_bytes(), true, &t));
            assert_eq!(c, 488, "{to}");
            let w = r.header("Warning").unwrap_or("");
            assert!(w.starts_with(warn), "{to}: {w}");
        }
        // Video beside audio, even a malformed video stream: the call is taken.
        let av = format!("{SDP}m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264\r\n");
        assert!(matches!(
            e.handle(flow(), inv(&av).as_bytes(), true, &t),
            Inbound::NewCall(_)
        ));
        // A Via port 0 gets 400, not an answered call.
        let via0 = inv(SDP).replace("192.0.2.1:5060;branch", "192.0.2.1:0;branch");
        let (c, r) = status(e.handle(flow(), via0.as_bytes(), true, &t));
        assert_eq!(c, 400);
        assert!(reason(&r).contains("Via"), "{}", reason(&r));
    }

    #[test]
    fn an_organization_allow_list_turns_other_sources_away() {
        let org =
            "[[organization]]\nname = \"narrow\"\nenabled = true\nmatch_user = [\"narrow\"]\n\
pbx_host = \"pbx\"\npin_success_ext = \"1\"\npin_failed_ext = \"2\"\nallow = [\"192.0.2.0/30\"]\n";
        let t = Table(0, "");
        let inv = req("INVITE", "Content-Type: application/sdp\r\n", SDP)
            .replace("INVITE sip:pin@", "INVITE sip:narrow@");
        let stranger = Flow {
            remote: "198.51.100.7:5060".parse().unwrap(),
            ..flow()
        };
        // Silently by default...
        let e = ep(org);
        assert!(matches!(
            e.handle(flow(), inv.as_bytes(), true, &t),
            Inbound::NewCall(_)
        ));
        assert!(matches!(
            e.handle(stranger, inv.as_bytes(), true, &t),
            Inbound::Denied(None, Rejection::OrgNotAllowed)
        ));
        // ...or with a 403 when configured.
        let e = ep(&format!("[sip]\ndenied = \"403\"\n{org}"));
        match e.handle(stranger, inv.as_bytes(), true, &t) {
            Inbound::Denied(Some(r), Rejection::OrgNotAllowed) => {
                assert!(r.data.starts_with(b"SIP/2.0 403 Forbidden\r\n"));
                assert_eq!(r.flow.remote, stranger.remote);
            }
            other => panic!("{other:?}"),
        }
        // Other organizations are not narrowed by it.
        assert!(matches!(
            e.handle(stranger, req("INVITE", "", "").as_bytes(), true, &t),
            Inbound::NewCall(_)
        ));
    }

    #[test]
    fn denials_before_routing_answer_only_when_configured_and_never_an_ack() {
        let opts = req("OPTIONS", "", "");
        let quiet = ep("");
        assert!(matches!(
            quiet.deny_raw(flow(), opts.as_bytes(), true, Rejection::NotAllowed),
            Inbound::Denied(None, Rejection::NotAllowed)
        ));
        let loud = ep("[sip]\ndenied = \"403\"\nretry_after_secs = 9\n");
        let (c, _) = status(loud.deny_raw(flow(), opts.as_bytes(), true, Rejection::NotAllowed));
        assert_eq!(c, 403);
        let (c, m) = status(loud.deny_raw(flow(), opts.as_bytes(), true, Rejection::RequestRate));
        assert_eq!(c, 503);
        assert_eq!(m.header("Retry-After"), Some("9"));
        for quiet_input in [
            req("ACK", "", ""),
            "garbage".to_string(),
            "SIP/2.0 200 OK\r\n\r\n".into(),
        ] {
            assert!(
                matches!(
                    loud.deny_raw(flow(), quiet_input.as_bytes(), true, Rejection::NotAllowed),
                    Inbound::Denied(None, _)
                ),
                "{quiet_input}"
            );
        }
        let drop_limits = ep("[sip]\nlimited = \"drop\"\n");
        assert!(matches!(
            drop_limits.deny_raw(flow(), opts.as_bytes(), true, Rejection::CallRate),
            Inbound::Denied(None, Rejection::CallRate)
        ));
    }

    struct Draining;
    impl CallTable for Draining {
        fn contains(&self, id: &str) -> bool {
            id == "in-progress"
        }
        fn active(&self) -> usize {
            1
        }
        fn draining(&self) -> bool {
            true
        }
    }

    #[test]
    fn draining_refuses_new_calls_and_options_but_not_calls_in_progress() {
        let e = ep("");
        let inv = req("INVITE", "Content-Type: application/sdp\r\n", SDP);
        let (c, m) = status(e.handle(flow(), inv.as_bytes(), true, &Draining));
        assert_eq!(c, 503);
        assert_eq!(m.header("Retry-After"), Some("5"));
        let (c, _) = status(e.handle(flow(), req("OPTIONS", "", "").as_bytes(), true, &Draining));
        assert_eq!(c, 503);
        let bye = req("BYE", "", "").replace("new-call", "in-progress");
        assert!(matches!(
            e.handle(flow(), bye.as_bytes(), true, &Draining),
            Inbound::ToCall(_)
        ));
    }

    #[test]
    fn malformed_requests_get_400_or_are_dropped() {
        let e = ep("");
        let t = Table(0, "");
        let bad_cl = req("OPTIONS", "", "").replace("Content-Length: 0", "Content-Length: 99");
        let (c, m) = status(e.handle(flow(), bad_cl.as_bytes(), true, &t));
        assert_eq!(c, 400);
        assert_eq!(m.call_id(), "new-call");
        assert!(matches!(
            e.handle(flow(), b"\x00\x01garbage", true, &t),
            Inbound::Malformed(None)
        ));
        assert!(matches!(
            e.handle(flow(), b"SIP/2.0 200 OK\r\n\r\n", true, &t),
            Inbound::Malformed(None) | Inbound::Drop(_)
        ));
        let huge = req("OPTIONS", &format!("X-Pad: {}\r\n", "a".repeat(3000)), "").repeat(6);
        let (c, _) = status(e.handle(flow(), huge.as_bytes(), true, &t));
        assert_eq!(c, 413);
    }
}
