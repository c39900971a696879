//! Whole-call simulations in virtual time: our endpoint and call against a simulated PBX
//! built from our own SIP and RTP code, over a seeded network that loses, duplicates,
//! delays and reorders. No sockets, no sleeps: a minute of call runs in milliseconds.

use super::*;
use crate::config;
use crate::sip::build::response;
use crate::sip::endpoint::{CallTable, Endpoint, Inbound};
use crate::sip::msg::Limits;
use crate::sip::Transport;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const QUIET_ORG: &str = "[[organization]]\nname = \"test\"\nenabled = true\n\
match_user = [\"pincoderouting\"]\npbx_host = \"pbx.test\"\npin_success_ext = \"2001\"\n\
pin_failed_ext = \"2002\"\nfirst_digit_timeout_secs = 100000\ninter_digit_timeout_secs = 100000\n";

const US_SIP: &str = "192.0.2.10:5060";
const US_RTP: &str = "192.0.2.10:10000";
const PBX_SIP: &str = "192.0.2.1:5060";
const PBX_RTP: &str = "192.0.2.1:4000";
const US_RTCP: &str = "192.0.2.10:10001";
const PBX_RTCP: &str = "192.0.2.1:4001";

/// The wall clock both sides' RTCP uses (2024-01-01T00:00:00Z at the simulation's start).
fn wall_clock() -> crate::media::rtcp::WallClock {
    crate::media::rtcp::WallClock {
        at: crate::testutil::epoch(),
        since_unix: Duration::from_secs(1_704_067_200),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum To {
    Us,
    Pbx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Sip,
    Rtp,
    /// RTCP between the RTP ports + 1.
    Rtcp,
    /// RTCP on the RTP ports (rtcp-mux).
    RtcpMux,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Packet {
    to: To,
    kind: Kind,
    data: Vec<u8>,
}

/// A seeded lossy network.
struct Net {
    rng: SmallRng,
    loss: f64,
    dup: f64,
    latency: Duration,
    jitter: Duration,
    seq: u64,
    queue: BinaryHeap<Reverse<(Instant, u64, Packet)>>,
    /// Drop every SIP message that starts with this (e.g. "ACK").
    black_hole: Option<&'static str>,
}

impl Net {
    fn new(seed: u64, loss: f64, dup: f64) -> Net {
        Net {
            rng: SmallRng::seed_from_u64(seed),
            loss,
            dup,
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(15),
            seq: 0,
            queue: BinaryHeap::new(),
            black_hole: None,
        }
    }

    fn send(&mut self, now: Instant, to: To, kind: Kind, data: &[u8]) {
        if let Some(prefix) = self.black_hole {
            if kind == Kind::Sip && data.starts_with(prefix.as_bytes()) {
                return;
            }
        }
        let copies = if self.rng.gen_bool(self.dup) { 2 } else { 1 };
        for _ in 0..copies {
            if self.rng.gen_bool(self.loss) {
                continue;
            }
            let j = self.rng.gen_range(0..=self.jitter.as_micros() as u64);
            let at = now + self.latency + Duration::from_micros(j);
            self.seq += 1;
            self.queue.push(Reverse((
                at,
                self.seq,
                Packet {
                    to,
                    kind,
                    data: data.to_vec(),
                },
            )));
        }
    }

    fn next_at(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((t, _, _))| *t)
    }
}

/// The simulated PBX trunk: a UAC built from our message model, transactions and RTP.
struct Pbx {
    call_id: String,
    tag: String,
    cseq: u32,
    invite: Option<(Message, Instant, Duration)>,
    invite_branch: String,
    to_tag: Option<String>,
    responses: Vec<(u16, Method)>,
    requests: Vec<Method>,
    rtp: Option<RtpSession>,
    send_rtp: bool,
    auto_ack: bool,
    last_answer: Option<Bytes>,
    bye: Option<NonInviteClient>,
    out: VecDeque<Vec<u8>>,
    n: u64,
    player: crate::media::player::Player,
    received: Vec<Received>,
    /// How the PBX answers our REFER, and the sipfrag status of its NOTIFY (None: never).
    refer_reply: u16,
    /// Answers for the first REFERs, in order, before `refer_reply` applies.
    refer_script: Vec<u16>,
    notify: Option<u16>,
    /// Send the NOTIFY this long after the 202 (zero: at once).
    notify_delay: Duration,
    delayed: Vec<(Instant, Vec<u8>)>,
    refer_to: Vec<String>,
    /// Each REFER as received (for headers on the request itself).
    refers: Vec<Message>,
    /// Every request with when it arrived.
    requests_at: Vec<(Method, Instant)>,
    /// Whether our first REFER arrived before our 200 to the INVITE.
    refer_before_ok: Option<bool>,
    /// The PBX runs RTCP too (reports to us every ~5 s).
    rtcp: bool,
    /// The PBX's Contact URI (behind a proxy: an address we must not send to directly).
    contact: String,
    /// Every request as received (Request-URI, Route headers).
    requests_full: Vec<Message>,
    /// RTCP the PBX received from us: when, on which port, the bytes.
    rtcp_rx: Vec<(Instant, Kind, Vec<u8>)>,
}

/// One RTP packet the PBX received from us.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    seq: u16,
    ts: u32,
    marker: bool,
    payload: Vec<u8>,
}

impl Pbx {
    fn new(call_id: &str) -> Pbx {
        Pbx {
            call_id: call_id.into(),
            tag: "pbx-tag".into(),
            cseq: 1,
            invite: None,
            invite_branch: "z9hG4bKinv".into(),
            to_tag: None,
            responses: vec![],
            requests: vec![],
            rtp: None,
            send_rtp: true,
            auto_ack: true,
            last_answer: None,
            bye: None,
            out: VecDeque::new(),
            n: 0,
            player: Default::default(),
            received: vec![],
            refer_reply: 202,
            refer_script: vec![],
            notify: Some(200),
            notify_delay: Duration::ZERO,
            delayed: vec![],
            refer_to: vec![],
            refers: vec![],
            requests_at: vec![],
            refer_before_ok: None,
            rtcp: false,
            rtcp_rx: vec![],
            contact: format!("sip:pbx@{PBX_SIP}"),
            requests_full: vec![],
        }
    }

    fn to_header(&self) -> String {
        match &self.to_tag {
            Some(t) => format!("<sip:pincoderouting@192.0.2.10>;tag={t}"),
            None => "<sip:pincoderouting@192.0.2.10>".into(),
        }
    }

    fn build(&mut self, method: &str, branch: &str, cseq: u32, extra: &str, body: &str) -> Message {
        let s = format!(
            "{method} sip:pincoderouting@192.0.2.10 SIP/2.0\r\n\
Via: SIP/2.0/UDP {PBX_SIP};branch={branch};rport\r\nMax-Forwards: 70\r\n\
From: <sip:+15551234567@192.0.2.1>;tag={}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n\
Contact: <{}>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            self.tag,
            self.to_header(),
            self.call_id,
            self.contact,
            body.len()
        );
        Message::parse(s.as_bytes(), &Limits::default(), true).unwrap()
    }

    fn sdp(port: u16, dir: &str) -> String {
        format!(
            "v=0\r\no=pbx 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na={dir}\r\n"
        )
    }

    fn invite(&mut self, now: Instant, extra: &str, body: Option<String>) {
        let (extra, body) = match body {
            Some(b) => (format!("Content-Type: application/sdp\r\n{extra}"), b),
            None => (extra.to_string(), String::new()),
        };
        let branch = self.invite_branch.clone();
        let m = self.build("INVITE", &branch, 1, &extra, &body);
        self.out.push_back(m.to_bytes().to_vec());
        self.invite = Some((
            m,
            now + Duration::from_millis(500),
            Duration::from_millis(500),
        ));
    }

    /// Sends an in-dialog request with a new CSeq; BYE uses a client transaction.
    fn request(&mut self, now: Instant, method: &str, extra: &str, body: &str) -> u32 {
        self.cseq += 1;
        self.n += 1;
        let branch = format!("z9hG4bKpbx{}", self.n);
        let cseq = self.cseq;
        let m = self.build(method, &branch, cseq, extra, body);
        let data = m.to_bytes();
        if method == "BYE" {
            self.bye = Some(NonInviteClient::new(
                now,
                branch,
                data.clone(),
                false,
                Default::default(),
            ));
        }
        self.out.push_back(data.to_vec());
        cseq
    }

    fn ack(&mut self, cseq: u32, branch: &str, body: &str) {
        let extra = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        let m = self.build("ACK", branch, cseq, extra, body);
        self.out.push_back(m.to_bytes().to_vec());
    }

    fn handle_sip(&mut self, now: Instant, data: &[u8]) {
        let msg = Message::parse(data, &Limits::default(), true).unwrap();
        match msg.start.clone() {
            StartLine::Response { code, .. } => {
                let (seq, method) = msg.cseq().unwrap();
                self.responses.push((code, method.clone()));
                match method {
                    Method::Invite => {
                        if seq == 1 {
                            self.invite = None;
                        }
                        if code >= 200 {
                            if let Some(t) = msg.to_tag() {
                                self.to_tag = Some(t);
                            }
                        }
                        if (200..300).contains(&code) {
                            if !msg.body.is_empty() {
                                self.last_answer = Some(msg.body.clone());
                                if let Ok(neg) = Sdp::parse(&msg.body).and_then(|a| {
                                    sdp::accept_answer(
                                        &a,
                                        &[sdp::Codec::Pcmu, sdp::Codec::Pcma],
                                        20,
                                    )
                                }) {
                                    // The PBX offered mux if our answer has it.
                                    let mut neg = neg;
                                    if msg.body.windows(10).any(|w| w == b"a=rtcp-mux") {
                                        neg.rtcp_mux = true;
                                        neg.rtcp = neg.remote;
                                    }
                                    match &mut self.rtp {
                                        Some(r) => r.renegotiate(now, neg),
                                        None => {
                                            let mut r = RtpSession::new(now, neg, 99, 0, 0);
                                            if self.rtcp {
                                                let setup = crate::media::rtcp::RtcpSetup {
                                                    seed: 11,
                                                    wall_clock: wall_clock(),
                                                };
                                                r = r.with_rtcp(now, setup);
                                            }
                                            self.rtp = Some(r)
                                        }
                                    }
                                }
                            }
                            if self.auto_ack {
                                self.n += 1;
                                let b = format!("z9hG4bKack{}", self.n);
                                self.ack(seq, &b, "");
                            }
                        } else if code >= 300 {
                            let b = if seq == 1 {
                                self.invite_branch.clone()
                            } else {
                                msg.top_via().unwrap().branch().unwrap().to_string()
                            };
                            self.ack(seq, &b, "");
                        }
                    }
                    Method::Bye => {
                        if let Some(b) = &mut self.bye {
                            b.on_response(now, code);
                        }
                    }
                    _ => {}
                }
            }
            StartLine::Request { method, .. } => {
                self.requests.push(method.clone());
                self.requests_at.push((method.clone(), now));
                self.requests_full.push(msg.clone());
                if method == Method::Refer {
                    if self.refer_before_ok.is_none() {
                        let ok = self
                            .responses
                            .iter()
                            .any(|(c, m)| *c == 200 && *m == Method::Invite);
                        self.refer_before_ok = Some(!ok);
                    }
                    self.refers.push(msg.clone());
                    self.refer_to
                        .push(msg.header("Refer-To").unwrap_or("").to_string());
                    let code = if self.refer_script.is_empty() {
                        self.refer_reply
                    } else {
                        self.refer_script.remove(0)
                    };
                    let r = response(&msg, code, None, "pbx");
                    self.out.push_back(r.to_bytes().to_vec());
                    if (200..300).contains(&code) {
                        if let Some(code) = self.notify {
                            let body = format!("SIP/2.0 {code} Whatever\r\n");
                            self.request(
                                now,
                                "NOTIFY",
                                "Event: refer\r\nSubscription-State: terminated;reason=noresource\r\n\
Content-Type: message/sipfrag\r\n",
                                &body,
                            );
                            if !self.notify_delay.is_zero() {
                                if let Some(n) = self.out.pop_back() {
                                    self.delayed.push((now + self.notify_delay, n));
                                }
                            }
                        }
                    }
                } else if method != Method::Ack {
                    let r = response(&msg, 200, None, "pbx");
                    self.out.push_back(r.to_bytes().to_vec());
                }
            }
        }
    }

    fn handle_rtp(&mut self, now: Instant, data: &[u8]) {
        use webrtc_util::marshal::Unmarshal;
        let mut b = data;
        if let Ok(h) = rtp::header::Header::unmarshal(&mut b) {
            self.received.push(Received {
                at: now,
                seq: h.sequence_number,
                ts: h.timestamp,
                marker: h.marker,
                payload: b.to_vec(),
            });
        }
        if let Some(r) = &mut self.rtp {
            let _ = r.handle_packet(now, addr(US_RTP), data);
        }
    }

    /// RTCP from us, on the PBX's RTP port + 1 (`Kind::Rtcp`) or its RTP port (mux).
    fn handle_rtcp(&mut self, now: Instant, kind: Kind, data: &[u8]) {
        self.rtcp_rx.push((now, kind, data.to_vec()));
        if let Some(r) = &mut self.rtp {
            let (src, via) = match kind {
                Kind::RtcpMux => (addr(US_RTP), crate::media::rtcp::RtcpPort::Rtp),
                _ => (addr(US_RTCP), crate::media::rtcp::RtcpPort::Rtcp),
            };
            r.handle_rtcp(now, src, data, via);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Vec<Instant> = self.delayed.iter().map(|d| d.0).collect();
        if let Some(r) = &self.rtp {
            t.extend(r.poll_rtcp_timeout());
        }
        if let Some((_, at, _)) = &self.invite {
            t.push(*at);
        }
        if let Some(b) = &self.bye {
            t.extend(b.poll_timeout().map(|x| x.0));
        }
        if self.send_rtp {
            if let Some(r) = &self.rtp {
                t.extend(r.poll_timeout());
            }
        }
        t.into_iter().min()
    }

    fn handle_timeout(&mut self, now: Instant, net: &mut Net) {
        let (due, later): (Vec<_>, Vec<_>) = self.delayed.drain(..).partition(|d| d.0 <= now);
        self.delayed = later;
        self.out.extend(due.into_iter().map(|d| d.1));
        if let Some((m, at, iv)) = &mut self.invite {
            if now >= *at {
                // Timer A: INVITE retransmission over UDP (§17.1.1.2).
                *iv *= 2;
                *at = now + *iv;
                self.out.push_back(m.to_bytes().to_vec());
            }
        }
        if let Some(b) = &mut self.bye {
            if let Some(NictEvent::Retransmit(d)) = b.handle_timeout(now) {
                self.out.push_back(d.to_vec());
            }
        }
        if self.send_rtp {
            if let Some(r) = &mut self.rtp {
                let mut buf = [0u8; 1500];
                while let Some((n, _)) = r.poll_transmit(now, &mut buf, &mut self.player) {
                    net.send(now, To::Us, Kind::Rtp, &buf[..n]);
                }
            }
        }
        if let Some(r) = &mut self.rtp {
            let mut buf = [0u8; 1500];
            while let Some((n, _, port)) = r.poll_rtcp(now, &mut buf) {
                let kind = match port {
                    crate::media::rtcp::RtcpPort::Rtp => Kind::RtcpMux,
                    crate::media::rtcp::RtcpPort::Rtcp => Kind::Rtcp,
                };
                net.send(now, To::Us, kind, &buf[..n]);
            }
        }
    }
}

struct OneCall<'a>(Option<&'a str>);
impl CallTable for OneCall<'_> {
    fn contains(&self, id: &str) -> bool {
        self.0 == Some(id)
    }
    fn active(&self) -> usize {
        usize::from(self.0.is_some())
    }
}

/// Our endpoint + call, the PBX and the network, in virtual time.
struct World {
    now: Instant,
    t0: Instant,
    config: Arc<Config>,
    ep: Endpoint,
    call: Option<Call>,
    admissions: usize,
    stateless: Vec<u16>,
    events: Vec<CallEvent>,
    /// The same events with the virtual time they came out.
    timed: Vec<(Instant, CallEvent)>,
    net: Net,
    pbx: Pbx,
    crm: CrmSim,
    /// The blocking pool answers PIN checks (false: a check never comes back).
    answer_checks: bool,
    /// The shared lockout store is unreachable (every store answer is Unavailable).
    store_down: bool,
    lockout: Option<Arc<std::sync::Mutex<crate::call::lockout::Lockout>>>,
    /// Our requests cannot be sent (the driver cannot open a connection to the PBX): each
    /// is dropped and its branch comes back as a transport error, as the driver feeds it.
    unreachable: bool,
    transport_errors: Vec<String>,
}

/// The simulation's side of a drain: SIP and RTP into the simulated network, CRM lookups
/// answered by the scripted CRM at once, every event kept for the test to read.
struct WorldIo<'a> {
    now: Instant,
    net: &'a mut Net,
    crm: &'a CrmSim,
    answer_checks: bool,
    store_down: bool,
    /// The in-memory lockout store the driver would hold.
    lockout: Option<&'a std::sync::Mutex<crate::call::lockout::Lockout>>,
    events: &'a mut Vec<CallEvent>,
    timed: &'a mut Vec<(Instant, CallEvent)>,
    unreachable: bool,
    transport_errors: &'a mut Vec<String>,
}

impl crate::call::run::CallIo for WorldIo<'_> {
    fn sip(&mut self, t: crate::sip::SipTransmit) {
        assert_eq!(t.flow.remote, addr(PBX_SIP));
        if self.unreachable && !t.data.starts_with(b"SIP/2.0 ") {
            let m = Message::parse(&t.data, &Limits::default(), true).unwrap();
            let branch = m.top_via().unwrap().branch().unwrap().to_string();
            self.transport_errors.push(branch);
            return;
        }
        self.net.send(self.now, To::Pbx, Kind::Sip, &t.data);
    }

    fn rtp(&mut self, data: &[u8], dest: SocketAddr) {
        assert_eq!(dest, addr(PBX_RTP));
        self.net.send(self.now, To::Pbx, Kind::Rtp, data);
    }

    fn rtcp(&mut self, data: &[u8], dest: SocketAddr, port: crate::media::rtcp::RtcpPort) {
        let kind = match port {
            crate::media::rtcp::RtcpPort::Rtp => {
                assert_eq!(dest, addr(PBX_RTP), "mux: to the RTP port");
                Kind::RtcpMux
            }
            crate::media::rtcp::RtcpPort::Rtcp => {
                assert_eq!(dest, addr(PBX_RTCP), "RTP port + 1");
                Kind::Rtcp
            }
        };
        self.net.send(self.now, To::Pbx, kind, data);
    }

    fn event(&mut self, call: &mut Call, now: Instant, e: CallEvent) {
        if let (CallEvent::CheckPin(check), true) = (&e, self.answer_checks) {
            // The driver runs this on a blocking pool; here it is answered at once.
            let r = if self.store_down {
                check.clone().unavailable()
            } else {
                check.clone().settle_in_memory(now, self.lockout)
            };
            call.handle_check(now, r);
        }
        if let CallEvent::LockCheck(keys) = &e {
            let locked = self
                .lockout
                .and_then(|t| t.lock().ok())
                .is_some_and(|mut t| keys.iter().any(|k| t.is_locked(now, k)));
            let state = if self.store_down {
                crate::call::verdict::LockState::Unavailable
            } else if locked {
                crate::call::verdict::LockState::Locked
            } else {
                crate::call::verdict::LockState::Open
            };
            call.handle_lock_state(now, state);
        }
        if let CallEvent::CrmLookup {
            organization,
            number,
        } = &e
        {
            let reply = match self.crm {
                CrmSim::Directory(d) => Some(d.lookup(organization, number)),
                CrmSim::Never => None,
                CrmSim::Fails => Some(crate::crm::CrmReply::Error("HTTP 500".into())),
            };
            if let Some(r) = reply {
                call.handle_crm(now, r);
            }
        }
        self.timed.push((now, e.clone()));
        self.events.push(e);
    }
}

/// How the simulated CRM answers lookups.
enum CrmSim {
    Directory(crate::crm::file::ContactDirectory),
    Never,
    Fails,
}

impl World {
    fn new(cfg: &str, seed: u64, loss: f64, dup: f64) -> World {
        Self::with_prompts(cfg, seed, loss, dup, vec![])
    }

    fn with_prompts(
        cfg: &str,
        seed: u64,
        loss: f64,
        dup: f64,
        prompts: Vec<crate::media::prompt::Prompt>,
    ) -> World {
        // Every world has an organization for "pincoderouting"; tests about other things get
        // digit timeouts long enough never to interfere.
        let cfg = if cfg.contains("[[organization]]") {
            cfg.to_string()
        } else {
            format!("{cfg}\n{QUIET_ORG}")
        };
        let mut config = config::parse(&cfg, "test").unwrap();
        config.prompt_set = Arc::new(crate::media::prompt::Prompts::from_prompts(prompts));
        let config = Arc::new(config);
        let t0 = crate::testutil::epoch();
        World {
            now: t0,
            t0,
            ep: Endpoint::new(config.clone()),
            config,
            call: None,
            admissions: 0,
            stateless: vec![],
            events: vec![],
            timed: vec![],
            net: Net::new(seed, loss, dup),
            pbx: Pbx::new("sim-call-1"),
            crm: CrmSim::Directory(Default::default()),
            answer_checks: true,
            store_down: false,
            lockout: None,
            unreachable: false,
            transport_errors: vec![],
        }
    }

    fn flow(&self) -> Flow {
        Flow {
            transport: Transport::Udp,
            conn: 0,
            remote: addr(PBX_SIP),
        }
    }

    fn deliver_sip_to_us(&mut self, data: &[u8]) {
        let id = self.call.as_ref().map(|c| c.call_id().to_string());
        let flow = self.flow();
        match self.ep.handle(flow, data, true, &OneCall(id.as_deref())) {
            Inbound::ToCall(m) => {
                if let Some(c) = self.call.as_mut() {
                    c.handle_sip(self.now, m, flow)
                }
            }
            Inbound::NewCall(adm) => {
                self.admissions += 1;
                self.call = Some(
                    Call::new(
                        self.now,
                        self.config.clone(),
                        CallSetup {
                            invite: adm.invite,
                            offer: adm.offer,
                            flow,
                            local_sip: addr(US_SIP),
                            media: LocalMedia {
                                ip: addr(US_RTP).ip(),
                                port: 10000,
                                session_id: 77,
                            },
                            seed: 5,
                            org: adm.org,
                            caller: adm.caller,
                            lockout: self.lockout.is_some(),
                            wall_clock: wall_clock(),
                        },
                    )
                    .unwrap(),
                );
            }
            Inbound::Reply(t)
            | Inbound::Refused(t, _)
            | Inbound::Malformed(Some(t))
            | Inbound::Denied(Some(t), _) => {
                let m = Message::parse(&t.data, &Limits::default(), true).unwrap();
                self.stateless.push(m.status().unwrap());
                self.net.send(self.now, To::Pbx, Kind::Sip, &t.data);
            }
            Inbound::Drop(_) | Inbound::Malformed(None) | Inbound::Denied(None, _) => {}
        }
    }

    /// Moves everything both sides want to send into the network: the PBX's queue, then
    /// our call through `run::drain`, the very drain the tokio driver runs.
    fn drain(&mut self) {
        while let Some(d) = self.pbx.out.pop_front() {
            self.net.send(self.now, To::Us, Kind::Sip, &d);
        }
        if let Some(c) = self.call.as_mut() {
            loop {
                let mut io = WorldIo {
                    now: self.now,
                    net: &mut self.net,
                    crm: &self.crm,
                    answer_checks: self.answer_checks,
                    store_down: self.store_down,
                    lockout: self.lockout.as_deref(),
                    events: &mut self.events,
                    timed: &mut self.timed,
                    unreachable: self.unreachable,
                    transport_errors: &mut self.transport_errors,
                };
                let mut buf = [0u8; 1500];
                let _ = crate::call::run::drain(c, self.now, &mut io, &mut buf);
                // The driver reports a failed send as an input of its own, then drains.
                if self.transport_errors.is_empty() {
                    break;
                }
                for b in std::mem::take(&mut self.transport_errors) {
                    c.handle_transport_error(self.now, &b);
                }
            }
        }
    }

    /// One step: deliver the earliest packet or fire the earliest timer, if it is due by
    /// `limit`; otherwise time moves to `limit` and nothing happens.
    fn step(&mut self, limit: Instant) -> bool {
        self.drain();
        let call_t = self
            .call
            .as_ref()
            .and_then(|c| c.poll_timeout())
            .map(|t| t.0);
        let cands = [self.net.next_at(), call_t, self.pbx.poll_timeout()];
        let next = cands.into_iter().flatten().min();
        let Some(next) = next.filter(|n| *n <= limit) else {
            self.now = limit;
            return false;
        };
        assert!(next >= self.now, "time never goes backwards");
        self.now = next;
        if self.net.next_at() == Some(next) {
            let Reverse((_, _, p)) = self.net.queue.pop().unwrap();
            match (p.to, p.kind) {
                (To::Us, Kind::Sip) => self.deliver_sip_to_us(&p.data),
                (To::Us, Kind::Rtp) => {
                    if let Some(c) = self.call.as_mut() {
                        c.handle_rtp(next, addr(PBX_RTP), &p.data)
                    }
                }
                (To::Us, Kind::Rtcp) => {
                    if let Some(c) = self.call.as_mut() {
                        c.handle_rtcp(next, addr(PBX_RTCP), &p.data)
                    }
                }
                (To::Us, Kind::RtcpMux) => {
                    if let Some(c) = self.call.as_mut() {
                        c.handle_rtp(next, addr(PBX_RTP), &p.data)
                    }
                }
                (To::Pbx, Kind::Sip) => self.pbx.handle_sip(next, &p.data),
                (To::Pbx, Kind::Rtp) => self.pbx.handle_rtp(next, &p.data),
                (To::Pbx, kind) => self.pbx.handle_rtcp(next, kind, &p.data),
            }
        } else if call_t == Some(next) {
            self.call.as_mut().unwrap().handle_timeout(next);
        } else {
            self.pbx.handle_timeout(next, &mut self.net);
        }
        self.drain();
        true
    }

    /// Runs until `secs` of virtual time have passed; fails on livelock.
    fn run_for(&mut self, secs: f64) {
        let until = self.now + Duration::from_secs_f64(secs);
        let mut steps = 0u32;
        while self.step(until) {
            steps += 1;
            assert!(steps < 2_000_000, "livelock: too many steps");
        }
    }

    fn ended(&self) -> Vec<CallSummary> {
        self.events
            .iter()
            .filter_map(|e| match e {
                CallEvent::Ended(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    fn codes(&self, m: Method) -> Vec<u16> {
        self.pbx
            .responses
            .iter()
            .filter(|(_, x)| *x == m)
            .map(|(c, _)| *c)
            .collect()
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }
}

fn start(w: &mut World) {
    let sdp = Pbx::sdp(4000, "sendrecv");
    let now = w.now;
    w.pbx.invite(now, "Supported: timer\r\n", Some(sdp));
}

#[test]
fn whole_call_over_lossy_network_with_rtp_both_ways() {
    for seed in 0..20 {
        let mut w = World::new("", seed, 0.1, 0.05);
        start(&mut w);
        w.run_for(10.0);
        let now = w.now;
        w.pbx.request(now, "BYE", "", "");
        w.run_for(40.0);
        let ended = w.ended();
        assert_eq!(ended.len(), 1, "seed {seed}: exactly one end");
        assert_eq!(ended[0].reason, EndReason::RemoteBye, "seed {seed}");
        assert_eq!(
            w.admissions, 1,
            "seed {seed}: retransmitted INVITEs absorbed"
        );
        let rtp = ended[0].rtp;
        // ~500 frames each way in 10 s with 10 % loss.
        assert!(rtp.rx_packets > 350, "seed {seed}: we received {rtp:?}");
        assert!(rtp.tx_packets >= 495, "seed {seed}: we sent {rtp:?}");
        let pbx_rx = w.pbx.rtp.as_ref().unwrap().stats().rx_packets;
        assert!(pbx_rx > 350, "seed {seed}: PBX received {pbx_rx}");
        assert!(w.codes(Method::Invite).contains(&200));
        assert!(w.codes(Method::Bye).contains(&200), "seed {seed}");
        assert!(
            w.call.as_ref().unwrap().is_done(),
            "seed {seed}: call finished"
        );
    }
}

#[test]
fn invite_retransmission_absorbed_and_answer_replayed() {
    let mut w = World::new("", 1, 0.0, 0.0);
    w.net.dup = 1.0; // every packet twice
    start(&mut w);
    w.run_for(2.0);
    assert_eq!(w.admissions, 1);
    // Each INVITE copy got an answer; the PBX saw 200 at least twice, never two dialogs.
    let oks = w
        .codes(Method::Invite)
        .iter()
        .filter(|c| **c == 200)
        .count();
    assert!(oks >= 2);
    assert_eq!(
        w.events
            .iter()
            .filter(|e| matches!(e, CallEvent::Answered))
            .count(),
        1
    );
}

#[test]
fn lost_ack_retransmits_2xx_then_byes_after_64_t1() {
    let mut w = World::new("", 2, 0.0, 0.0);
    w.net.black_hole = Some("ACK");
    start(&mut w);
    w.run_for(40.0);
    let oks = w
        .codes(Method::Invite)
        .iter()
        .filter(|c| **c == 200)
        .count();
    // 0, 0.5, 1.5, 3.5, 7.5, 11.5, ... up to 32 s: 10 sends.
    assert!((9..=11).contains(&oks), "{oks} 200s");
    let ended = w.ended();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].reason, EndReason::AckTimeout);
    assert!(w.pbx.requests.contains(&Method::Bye), "BYE after Timer H");
}

#[test]
fn cancel_before_answer_gets_200_and_487() {
    let mut w = World::new("[sip]\nring_ms = 3000\n", 3, 0.0, 0.0);
    start(&mut w);
    w.run_for(1.0);
    assert_eq!(w.codes(Method::Invite), vec![100, 180]);
    // CANCEL: same branch and CSeq number as the INVITE (§9.1).
    let branch = w.pbx.invite_branch.clone();
    let to_tag = w.pbx.to_tag.take();
    let cancel = w.pbx.build("CANCEL", &branch, 1, "", "");
    w.pbx.to_tag = to_tag;
    w.pbx.out.push_back(cancel.to_bytes().to_vec());
    w.run_for(10.0);
    assert!(!w.call.as_ref().unwrap().is_done(), "lingers for Timer J");
    w.run_for(30.0);
    assert!(w.codes(Method::Cancel).contains(&200));
    assert!(
        w.codes(Method::Invite).contains(&487),
        "{:?} {:?}",
        w.pbx.responses,
        w.events
    );
    assert!(!w.codes(Method::Invite).contains(&200));
    assert_eq!(w.ended()[0].reason, EndReason::Cancelled);
    assert!(!w.ended()[0].answered);
    assert!(w.call.as_ref().unwrap().is_done());
}

/// `[sip] max_call_secs` is the net under every other timer: a call still collecting (its
/// digit timeouts far away, RTP flowing) is ended with BYE at the limit, not before.
#[test]
fn a_call_never_outlives_max_call_secs() {
    let mut w = World::new("[sip]\nmax_call_secs = 20\n", 11, 0.0, 0.0);
    start(&mut w);
    w.run_for(19.0);
    assert!(w.ended().is_empty(), "{:?}", w.ended());
    assert!(!w.pbx.requests.contains(&Method::Bye));
    w.run_for(2.0);
    let e = w.ended();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].reason, EndReason::MaxDuration);
    assert!(
        e[0].duration_ms >= 20_000 && e[0].duration_ms < 20_100,
        "{e:?}"
    );
    assert!(w.pbx.requests.contains(&Method::Bye));
}

#[test]
fn cancel_racing_the_answer_leaves_the_call_up() {
    let mut w = World::new("", 4, 0.0, 0.0);
    start(&mut w);
    w.run_for(1.0);
    let branch = w.pbx.invite_branch.clone();
    let cancel = w.pbx.build("CANCEL", &branch, 1, "", "");
    w.pbx.out.push_back(cancel.to_bytes().to_vec());
    w.run_for(2.0);
    assert!(w.codes(Method::Cancel).contains(&200));
    assert!(!w.codes(Method::Invite).contains(&487));
    assert!(w.ended().is_empty(), "answered call survives a late CANCEL");
}

#[test]
fn no_rtp_for_media_timeout_ends_with_bye() {
    let mut w = World::new("[media]\nmedia_timeout_secs = 5\n", 5, 0.0, 0.0);
    w.pbx.send_rtp = false;
    start(&mut w);
    w.run_for(10.0);
    let ended = w.ended();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].reason, EndReason::MediaTimeout);
    let took = ended[0].duration_ms;
    assert!((5000..5100).contains(&took), "ended after {took} ms");
    assert!(w.pbx.requests.contains(&Method::Bye));
}

#[test]
fn hold_suspends_media_timeout_and_sdp_version_moves() {
    let mut w = World::new("[media]\nmedia_timeout_secs = 5\n", 6, 0.0, 0.0);
    start(&mut w);
    w.run_for(1.0);
    let v1 = w.pbx.last_answer.clone().unwrap();
    let now = w.now;
    w.pbx.request(
        now,
        "INVITE",
        "Content-Type: application/sdp\r\n",
        &Pbx::sdp(4000, "sendonly"),
    );
    w.pbx.send_rtp = true;
    w.run_for(1.0);
    let v2 = w.pbx.last_answer.clone().unwrap();
    let s2 = String::from_utf8_lossy(&v2);
    assert!(s2.contains("a=recvonly"), "{s2}");
    assert!(s2.contains(" 77 2 IN IP4"), "version bumped: {s2}");
    assert!(String::from_utf8_lossy(&v1).contains(" 77 1 IN IP4"));
    // PBX on hold sends nothing and the call stays up past the media timeout.
    let now = w.now;
    w.pbx.request(
        now,
        "INVITE",
        "Content-Type: application/sdp\r\n",
        &Pbx::sdp(4000, "inactive"),
    );
    w.pbx.send_rtp = false;
    w.run_for(20.0);
    assert!(w.ended().is_empty(), "hold is not a media timeout");
    // Same SDP again: same version (RFC 3264 §8).
    let now = w.now;
    w.pbx.request(
        now,
        "INVITE",
        "Content-Type: application/sdp\r\n",
        &Pbx::sdp(4000, "inactive"),
    );
    w.run_for(1.0);
    let v4 = String::from_utf8_lossy(w.pbx.last_answer.as_ref().unwrap()).to_string();
    assert!(v4.contains(" 77 3 IN IP4"), "{v4}");
    // Unhold: media expected again, and its absence now ends the call.
    let now = w.now;
    w.pbx.request(
        now,
        "INVITE",
        "Content-Type: application/sdp\r\n",
        &Pbx::sdp(4000, "sendrecv"),
    );
    w.run_for(10.0);
    assert_eq!(w.ended()[0].reason, EndReason::MediaTimeout);
}

#[test]
fn session_timer_without_refresh_ends_the_call() {
    let mut w = World::new("", 7, 0.0, 0.0);
    let now = w.now;
    w.pbx.invite(
        now,
        "Supported: timer\r\nSession-Expires: 90\r\n",
        Some(Pbx::sdp(4000, "sendrecv")),
    );
    w.run_for(30.0);
    // A refresh (UPDATE) resets the timer.
    let now = w.now;
    w.pbx.request(
        now,
        "UPDATE",
        "Session-Expires: 90;refresher=uac\r\nSupported: timer\r\n",
        "",
    );
    w.run_for(50.0);
    assert!(w.ended().is_empty(), "refreshed at 30 s, alive at 80 s");
    assert!(w.codes(Method::Update).contains(&200));
    w.run_for(20.0);
    let e = w.ended();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].reason, EndReason::SessionExpired);
    // 30 s + (90 - 30) s = 90 s after the start.
    assert!(
        (89_000..92_000).contains(&e[0].duration_ms),
        "{}",
        e[0].duration_ms
    );
}

#[test]
fn delayed_offer_takes_the_answer_from_the_ack() {
    let mut w = World::new("", 8, 0.0, 0.0);
    w.pbx.auto_ack = false;
    let now = w.now;
    w.pbx.invite(now, "", None);
    w.run_for(0.2);
    let offer = String::from_utf8_lossy(w.pbx.last_answer.as_ref().unwrap()).to_string();
    assert!(offer.contains("m=audio 10000 RTP/AVP 0 8 101"), "{offer}");
    w.pbx.rtp = None;
    w.pbx.ack(
        1,
        "z9hG4bKack-do",
        &Pbx::sdp(4000, "sendrecv").replace("0 8 101", "8 101"),
    );
    let neg = sdp::accept_answer(
        &Sdp::parse(Pbx::sdp(4000, "sendrecv").as_bytes()).unwrap(),
        &[sdp::Codec::Pcma],
        20,
    )
    .unwrap();
    let now = w.now;
    w.pbx.rtp = Some(RtpSession::new(now, neg, 1, 1, 1));
    w.run_for(3.0);
    let stats = w.call.as_ref().unwrap().rtp_stats().unwrap();
    assert!(
        stats.tx_packets > 100 && stats.rx_packets > 100,
        "{stats:?}"
    );
    assert!(w.ended().is_empty());
}

#[test]
fn in_dialog_requests_get_the_right_answers() {
    let mut w = World::new("", 9, 0.0, 0.0);
    start(&mut w);
    w.run_for(1.0);
    for m in ["OPTIONS", "INFO", "REFER", "FROB"] {
        let now = w.now;
        w.pbx.request(now, m, "", "");
        w.run_for(0.5);
    }
    assert_eq!(w.codes(Method::Options), vec![200]);
    assert_eq!(w.codes(Method::Info), vec![200]);
    assert_eq!(w.codes(Method::Refer), vec![405]);
    assert_eq!(w.codes(Method::Other("FROB".into())), vec![501]);
    // A request with the wrong To tag is for no dialog we know.
    w.pbx.to_tag = Some("wrong".into());
    let now = w.now;
    w.pbx.request(now, "INFO", "", "");
    w.run_for(1.0);
    assert_eq!(w.codes(Method::Info), vec![200, 481]);
    // CSeq going backwards in the dialog: 500 (§12.2.2).
    w.pbx.to_tag = w.call.as_ref().map(|c| c.dialog.local_tag.clone());
    w.pbx.cseq = 1;
    let now = w.now;
    w.pbx.request(now, "OPTIONS", "", "");
    w.run_for(0.5);
    assert_eq!(w.codes(Method::Options), vec![200, 500]);
}

#[test]
fn retransmitted_bye_gets_the_same_200_and_one_end() {
    let mut w = World::new("", 10, 0.0, 0.0);
    start(&mut w);
    w.run_for(1.0);
    let now = w.now;
    w.pbx.request(now, "BYE", "", "");
    let again = w.pbx.out.back().cloned().unwrap();
    w.pbx.out.push_back(again);
    w.run_for(1.0);
    assert_eq!(w.codes(Method::Bye), vec![200, 200]);
    assert_eq!(w.ended().len(), 1);
    // Stray BYE after the call is gone from the table: stateless 481.
    w.run_for(40.0);
    assert!(w.call.as_ref().unwrap().is_done());
}

#[test]
fn shutdown_sends_bye_and_retransmits_it_until_answered() {
    let mut w = World::new("", 11, 0.0, 0.0);
    start(&mut w);
    w.run_for(1.0);
    w.net.loss = 0.5;
    let now = w.now;
    w.call.as_mut().unwrap().shutdown(now);
    w.run_for(40.0);
    assert_eq!(w.ended()[0].reason, EndReason::Shutdown);
    assert!(w.pbx.requests.contains(&Method::Bye));
    assert!(w.call.as_ref().unwrap().is_done());
    assert!(w.elapsed() >= Duration::from_secs(40));
}

/// Sends one RTP packet from the PBX's media address.
fn pbx_rtp(w: &mut World, pt: u8, seq: u16, ts: u32, marker: bool, payload: &[u8]) {
    use webrtc_util::marshal::Marshal;
    let h = rtp::header::Header {
        version: 2,
        payload_type: pt,
        sequence_number: seq,
        timestamp: ts,
        ssrc: 0x1234,
        marker,
        ..Default::default()
    };
    let mut p = h.marshal().unwrap().to_vec();
    p.extend_from_slice(payload);
    let now = w.now;
    w.net.send(now, To::Us, Kind::Rtp, &p);
}

fn digits_seen(w: &World) -> Vec<(char, crate::media::dtmf::DigitSource)> {
    w.events
        .iter()
        .filter_map(|e| match e {
            CallEvent::Digit(d) => Some((d.digit.as_char(), d.source)),
            _ => None,
        })
        .collect()
}

#[test]
fn rfc4733_digits_over_a_lossy_network_arrive_once_each() {
    use crate::media::dtmf::DigitSource;
    for seed in 0..10 {
        let mut w = World::new("", 100 + seed, 0.1, 0.1);
        w.pbx.send_rtp = false;
        start(&mut w);
        w.run_for(1.0);
        let (mut seq, mut ts) = (1u16, 8000u32);
        for key in "1234#".chars() {
            let code = crate::media::dtmf::Digit::from_char(key)
                .unwrap()
                .event_code();
            // Start, updates every 50 ms, then the end packet three times (RFC 4733 §2.5.1.4).
            for i in 0..6u16 {
                let end = i >= 3;
                let dur = 400 * (i.min(3) + 1);
                let p = [
                    code,
                    if end { 0x8A } else { 0x0A },
                    (dur >> 8) as u8,
                    dur as u8,
                ];
                pbx_rtp(&mut w, 101, seq, ts, i == 0, &p);
                seq += 1;
                w.run_for(0.05);
            }
            // Audio between presses keeps the media timeout quiet.
            for _ in 0..10 {
                pbx_rtp(&mut w, 0, seq, ts, false, &[0xFF; 160]);
                seq += 1;
                ts += 160;
                w.run_for(0.02);
            }
            ts += 1600;
        }
        w.run_for(2.0);
        let got = digits_seen(&w);
        let keys: String = got.iter().map(|d| d.0).collect();
        assert_eq!(keys, "1234#", "seed {seed}");
        assert!(got.iter().all(|d| d.1 == DigitSource::Rfc4733));
    }
}

#[test]
fn inband_digits_when_telephone_event_was_not_negotiated() {
    use crate::media::dtmf::DigitSource;
    use crate::media::g711;
    let mut w = World::new("", 200, 0.0, 0.0);
    w.pbx.send_rtp = false;
    let now = w.now;
    let sdp = Pbx::sdp(4000, "sendrecv").replace(" 0 8 101", " 8");
    w.pbx.invite(now, "", Some(sdp));
    w.run_for(0.5);
    let (mut seq, mut ts) = (1u16, 0u32);
    let mut n = 0usize;
    for key in "90*".chars() {
        let (f1, f2) = match key {
            '9' => (852.0, 1477.0),
            '0' => (941.0, 1336.0),
            _ => (941.0, 1209.0),
        };
        // 100 ms of tone, 100 ms of silence, in 20 ms A-law packets.
        for frame in 0..10 {
            let p: Vec<u8> = (0..160)
                .map(|i| {
                    let t = n as f32 / 8000.0;
                    n += 1;
                    let tone = frame < 5 && i < 160;
                    let x = if tone {
                        6000.0
                            * ((2.0 * std::f32::consts::PI * f1 * t).sin()
                                + (2.0 * std::f32::consts::PI * f2 * t).sin())
                    } else {
                        0.0
                    };
                    g711::encode(sdp::Codec::Pcma, x as i16)
                })
                .collect();
            pbx_rtp(&mut w, 8, seq, ts, false, &p);
            seq += 1;
            ts += 160;
            w.run_for(0.02);
        }
    }
    w.run_for(0.5);
    let got = digits_seen(&w);
    assert_eq!(
        got,
        vec![
            ('9', DigitSource::Inband),
            ('0', DigitSource::Inband),
            ('*', DigitSource::Inband)
        ]
    );
}

#[test]
fn info_dtmf_bodies_give_digits_and_other_bodies_415() {
    use crate::media::dtmf::DigitSource;
    let mut w = World::new("", 300, 0.0, 0.0);
    start(&mut w);
    w.run_for(0.5);
    for (ct, body) in [
        ("application/dtmf-relay", "Signal=4\r\nDuration=160\r\n"),
        ("application/dtmf", "2"),
        ("text/plain", "hello"),
        ("application/dtmf-relay", "Signal=Z\r\n"),
    ] {
        let now = w.now;
        w.pbx
            .request(now, "INFO", &format!("Content-Type: {ct}\r\n"), body);
        w.run_for(0.3);
    }
    assert_eq!(w.codes(Method::Info), vec![200, 200, 415, 400]);
    assert_eq!(
        digits_seen(&w),
        vec![('4', DigitSource::Info), ('2', DigitSource::Info)]
    );
    let now = w.now;
    w.pbx.request(now, "BYE", "", "");
    w.run_for(1.0);
    assert_eq!(w.ended()[0].digits, 2);
}

/// A prompt of `ms` milliseconds with a recognisable, non-silent pattern.
fn test_prompt(name: &str, ms: usize) -> crate::media::prompt::Prompt {
    let pcm: Vec<i16> = (0..ms * 8)
        .map(|i| ((i * 37) % 4000) as i16 - 2000)
        .collect();
    crate::media::prompt::Prompt::from_pcm(name, &pcm)
}

#[test]
fn enter_pin_prompt_plays_on_answer_frame_by_frame() {
    for ptime in [10u32, 20, 30, 60] {
        let mut w = World::with_prompts("", 400, 0.0, 0.0, vec![test_prompt("enter_pin", 1000)]);
        w.net.jitter = Duration::ZERO;
        let now = w.now;
        let sdp = format!("{}a=ptime:{ptime}\r\n", Pbx::sdp(4000, "sendrecv"));
        w.pbx.invite(now, "", Some(sdp));
        w.run_for(2.0);
        let r = &w.pbx.received;
        let per = (ptime * 8) as usize;
        assert!(
            r.len() > 1000 / ptime as usize,
            "ptime {ptime}: {} packets",
            r.len()
        );
        assert!(r.iter().all(|p| p.payload.len() == per), "ptime {ptime}");
        // The prompt's bytes, in order, from the first packet; then comfort silence.
        let audio: Vec<u8> = r.iter().flat_map(|p| p.payload.clone()).collect();
        let want = test_prompt("enter_pin", 1000);
        let want = want.bytes(sdp::Codec::Pcmu);
        assert_eq!(&audio[..want.len()], want, "ptime {ptime}");
        assert!(
            audio[want.len()..].iter().all(|b| *b == 0xFF),
            "then silence"
        );
        assert!(r[0].marker, "marker on the first packet of the prompt");
        assert!(r[1..].iter().all(|p| !p.marker));
        for pair in r.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq.wrapping_add(1));
            assert_eq!(pair[1].ts, pair[0].ts.wrapping_add(per as u32));
            assert_eq!(pair[1].at - pair[0].at, Duration::from_millis(ptime as u64));
        }
        let events: Vec<_> = w
            .events
            .iter()
            .filter_map(|e| match e {
                CallEvent::Prompt(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        use crate::media::player::PlayerEvent::*;
        assert_eq!(
            events,
            vec![
                Started("enter_pin".into()),
                Finished("enter_pin".into()),
                ListDone(1)
            ]
        );
    }
}

#[test]
fn first_digit_stops_the_prompt_within_one_frame() {
    let mut w = World::with_prompts("", 401, 0.0, 0.0, vec![test_prompt("enter_pin", 5000)]);
    w.net.jitter = Duration::ZERO;
    w.pbx.send_rtp = false;
    start(&mut w);
    w.run_for(1.0);
    let digit_sent_at = w.now;
    pbx_rtp(&mut w, 101, 1, 8000, true, &[5, 0x0A, 0, 160]);
    w.run_for(1.0);
    let digit_at = digit_sent_at + w.net.latency;
    let after: Vec<&Received> = w
        .pbx
        .received
        .iter()
        .filter(|p| p.at - w.net.latency > digit_at)
        .collect();
    // Our first frame sent after the digit arrived is already silence.
    assert!(
        after[0].payload.iter().all(|b| *b == 0xFF),
        "barge-in within one frame"
    );
    let before = w
        .pbx
        .received
        .iter()
        .rfind(|p| p.at - w.net.latency < digit_at)
        .unwrap();
    assert!(
        before.payload.iter().any(|b| *b != 0xFF),
        "prompt was playing"
    );
    assert!(w.events.iter().any(|e| matches!(e,
        CallEvent::Prompt(crate::media::player::PlayerEvent::Interrupted(n)) if n == "enter_pin")));
}

#[test]
fn idle_nothing_sends_no_packets_after_the_prompt() {
    let mut w = World::with_prompts(
        "[prompts]\nidle = \"nothing\"\n",
        402,
        0.0,
        0.0,
        vec![test_prompt("enter_pin", 200)],
    );
    w.net.jitter = Duration::ZERO;
    start(&mut w);
    w.run_for(3.0);
    // 200 ms of prompt = 10 packets, then nothing (while the PBX keeps sending to us).
    assert_eq!(w.pbx.received.len(), 10);
    assert!(w.ended().is_empty());
}

// ---- The PIN flow -------------------------------------------------------------------

const FLOW_ORG: &str = "[[organization]]\nname = \"acme\"\nenabled = true\n\
match_user = [\"pincoderouting\"]\npbx_host = \"pbx.acme.example\"\npin_success_ext = \"2001\"\n\
pin_failed_ext = \"2002\"\nfirst_digit_timeout_secs = 5\ninter_digit_timeout_secs = 3\n\
max_attempts = 3\ntransfer_timeout_secs = 10\n";

/// The caller of `Pbx` is +15551234567; give them a PIN in "acme".
fn directory(pin: &str) -> crate::crm::file::ContactDirectory {
    use crate::call::verdict::{hash_pin, Pin};
    let h = hash_pin(&Pin::from_digits(pin).unwrap()).unwrap();
    crate::crm::file::ContactDirectory::parse(&format!(
        "[[contact]]\nid = \"c-42\"\norganization = \"acme\"\nphones = [\"+15551234567\"]\npin_hash = \"{h}\"\n"
    ))
    .unwrap()
}

fn flow_world(seed: u64, pin: &str) -> World {
    flow_world_cfg(FLOW_ORG, seed, pin)
}

/// `flow_world` with another configuration (FLOW_ORG plus settings, say).
fn flow_world_cfg(cfg: &str, seed: u64, pin: &str) -> World {
    let mut w = World::with_prompts(
        cfg,
        seed,
        0.0,
        0.0,
        crate::media::prompt::NAMES
            .iter()
            .map(|n| test_prompt(n, 300))
            .collect(),
    );
    w.crm = CrmSim::Directory(directory(pin));
    w.pbx.send_rtp = false;
    w
}

/// Types `keys` as RFC 4733 events, 150 ms apart.
fn type_keys(w: &mut World, keys: &str, ts: &mut u32) {
    for k in keys.chars() {
        let code = crate::media::dtmf::Digit::from_char(k)
            .unwrap()
            .event_code();
        for i in 0..4u16 {
            let end = i == 3;
            let dur = 160 * (i + 1);
            let p = [
                code,
                if end { 0x8A } else { 0x0A },
                (dur >> 8) as u8,
                dur as u8,
            ];
            pbx_rtp(w, 101, (*ts / 160) as u16, *ts, i == 0, &p);
            w.run_for(0.02);
        }
        *ts += 1600;
        w.run_for(0.1);
    }
}

fn record(w: &World) -> CallRecord {
    w.call
        .as_ref()
        .unwrap()
        .record()
        .cloned()
        .expect("the call ended with a record")
}

#[test]
fn pin_ok_rfc4733_refers_success_ext_then_byes_after_notify() {
    let mut w = flow_world(500, "1234");
    start(&mut w);
    w.run_for(0.5);
    let mut ts = 1000;
    type_keys(&mut w, "1234#", &mut ts);
    w.run_for(3.0);
    assert_eq!(
        w.pbx.refer_to,
        vec!["<sip:2001@pbx.acme.example?X-PIN-Result=verified&X-PIN-Contact=c-42>".to_string()]
    );
    assert!(
        w.pbx.requests.contains(&Method::Bye),
        "our BYE after the 200 sipfrag"
    );
    let r = record(&w);
    assert_eq!(r.summary.reason, EndReason::Transferred);
    assert_eq!(r.flow.outcome, Some(flow::Outcome::Verified));
    assert_eq!(r.flow.contact_id.as_deref(), Some("c-42"));
    assert_eq!(r.flow.transfer_target.as_deref(), Some("2001"));
    assert_eq!(r.flow.transfer_outcome.as_deref(), Some("transferred"));
    assert_eq!(r.flow.attempts, 1);
    assert_eq!(
        r.flow.digit_source,
        Some(crate::media::dtmf::DigitSource::Rfc4733)
    );
    assert!(r.flow.crm_latency_ms.is_some());
    assert_eq!(r.caller_e164.as_deref(), Some("+15551234567"));
}

/// Behind Kamailio: the INVITE comes from the proxy (192.0.2.1, where `WorldIo` checks all
/// our SIP goes) with its double Record-Route (UDP toward us, TCP toward the PBX), and the
/// PBX's Contact is an address we cannot reach. Our REFER and BYE go to the first route,
/// with the route set as Route headers in order and the PBX's Contact as Request-URI.
#[test]
fn proxied_call_sends_refer_and_bye_through_the_record_route() {
    let mut w = flow_world(510, "1234");
    w.pbx.contact = "sip:pbx@198.51.100.7:5080;transport=tcp".into();
    let rr = [
        "<sip:192.0.2.1:5060;r2=on;lr;ftag=pbx-tag>",
        "<sip:192.0.2.1:5060;transport=tcp;r2=on;lr;ftag=pbx-tag>",
    ];
    let sdp = Pbx::sdp(4000, "sendrecv");
    let now = w.now;
    w.pbx.invite(
        now,
        &format!("Record-Route: {}\r\nRecord-Route: {}\r\n", rr[0], rr[1]),
        Some(sdp),
    );
    w.run_for(0.5);
    let mut ts = 1000;
    type_keys(&mut w, "1234#", &mut ts);
    w.run_for(3.0);
    let ours: Vec<&Message> = w
        .pbx
        .requests_full
        .iter()
        .filter(|m| matches!(m.method(), Some(Method::Refer | Method::Bye)))
        .collect();
    assert_eq!(ours.len(), 2, "REFER then BYE: {:?}", w.pbx.requests);
    for m in ours {
        assert!(
            matches!(&m.start, StartLine::Request { uri, .. } if uri == &w.pbx.contact),
            "{:?}",
            m.start
        );
        assert_eq!(m.header_values("Route").collect::<Vec<_>>(), rr.to_vec());
    }
    assert_eq!(record(&w).summary.reason, EndReason::Transferred);
}

#[test]
fn clear_key_and_max_digits_end_the_entry() {
    // "9*" is cleared; then 8 keys reach max_digits without a terminator: wrong PIN.
    let mut w = flow_world(501, "1234");
    start(&mut w);
    w.run_for(0.5);
    let mut ts = 1000;
    type_keys(&mut w, "9*12345678", &mut ts);
    w.run_for(1.0);
    // Second attempt: clear then the right PIN with terminator.
    type_keys(&mut w, "55*1234#", &mut ts);
    w.run_for(3.0);
    let r = record(&w);
    assert_eq!(r.flow.outcome, Some(flow::Outcome::Verified));
    assert_eq!(r.flow.attempts, 2);
}

#[test]
fn wrong_pin_three_times_refers_the_failure_ext() {
    let mut w = flow_world(502, "1234");
    start(&mut w);
    w.run_for(0.5);
    let mut ts = 1000;
    for _ in 0..3 {
        type_keys(&mut w, "4321#", &mut ts);
        w.run_for(2.0);
    }
    w.run_for(3.0);
    assert_eq!(
        w.pbx.refer_to,
        vec!["<sip:2002@pbx.acme.example?X-PIN-Result=failed>".to_string()]
    );
    let r = record(&w);
    assert_eq!(r.flow.outcome, Some(flow::Outcome::WrongPin));
    assert_eq!(r.flow.attempts, 3);
    assert_eq!(r.flow.contact_id.as_deref(), Some("c-42"));
}

#[test]
fn no_input_retries_then_refers_the_failure_ext() {
    let mut w = flow_world(503, "1234");
    start(&mut w);
    w.run_for(40.0);
    assert_eq!(w.pbx.refer_to.len(), 1);
    assert!(w.pbx.refer_to[0].contains("sip:2002@"));
    let r = record(&w);
    assert_eq!(r.flow.outcome, Some(flow::Outcome::NoInput));
    assert_eq!(r.flow.attempts, 3);
    assert_eq!(r.flow.digit_source, None);
    // The caller heard "no input", "try again" between attempts.
    let started: Vec<String> = w
        .events
        .iter()
        .filter_map(|e| match e {
            CallEvent::Prompt(crate::media::player::PlayerEvent::Started(n)) => Some(n.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        started,
        vec![
            "enter_pin",
            "no_input",
            "try_again",
            "enter_pin",
            "no_input",
            "try_again",
            "enter_pin",
            "transferring"
        ]
    );
}

#[test]
fn unknown_caller_and_anonymous_go_to_the_failure_ext() {
    let mut w = flow_world(504, "1234");
    w.crm = CrmSim::Directory(Default::default());
    start(&mut w);
    w.run_for(0.5);
    let mut ts = 1000;
    type_keys(&mut w, "1234#", &mut ts);
    w.run_for(3.0);
    assert_eq!(record(&w).flow.outcome, Some(flow::Outcome::UnknownCaller));
    assert!(w.pbx.refer_to[0].contains("sip:2002@"));

    let mut w = flow_world(505, "1234");
    w.pbx = Pbx::new("anon-call");
    w.pbx.send_rtp = false;
    let now = w.now;
    w.pbx.tag = "anon".into();
    let sdp = Pbx::sdp(4000, "sendrecv");
    w.pbx.invite(now, "", Some(sdp));
    // Rewrite the From of the queued INVITE to a withheld number.
    let inv = w.pbx.out.pop_back().unwrap();
    let inv = String::from_utf8(inv).unwrap().replace(
        "<sip:+15551234567@192.0.2.1>",
        "\"Anonymous\" <sip:anonymous@anonymous.invalid>",
    );
    w.pbx.out.push_back(inv.into_bytes());
    w.pbx.invite = None;
    w.run_for(3.0);
    let r = record(&w);
    assert_eq!(r.flow.outcome, Some(flow::Outcome::Anonymous));
    assert!(w.pbx.refer_to[0].contains("sip:2002@"));
    let asked_pin = w.events.iter().any(|e| {
        matches!(e, CallEvent::Prompt(crate::media::player::PlayerEvent::Started(n)) if n == "enter_pin")
    });
    assert!(!asked_pin, "no PIN asked of a withheld number");
}

#[test]
fn crm_that_hangs_or_fails_never_lets_a_caller_through() {
    for sim in [CrmSim::Never, CrmSim::Fails] {
        let mut w = flow_world(506, "1234");
        w.crm = sim;
        start(&mut w);
        w.run_for(0.5);
        let mut ts = 1000;
        type_keys(&mut w, "1234#", &mut ts);
        w.run_for(5.0);
        let r = record(&w);
        assert_eq!(r.flow.outcome, Some(flow::Outcome::CrmError));
        assert!(w.pbx.refer_to[0].contains("sip:2002@"));
    }
}

#[test]
fn refer_rejected_or_notify_never_arriving_ends_with_transfer_failed() {
    for (reply, notify, why) in [
        (403u16, Some(200u16), "REFER answered 403"),
        (202, None, "no final NOTIFY"),
        (202, Some(486), "NOTIFY sipfrag 486"),
    ] {
        let mut w = flow_world(507, "1234");
        w.pbx.refer_reply = reply;
        w.pbx.notify = notify;
        start(&mut w);
        w.run_for(0.5);
        let mut ts = 1000;
        type_keys(&mut w, "1234#", &mut ts);
        w.run_for(20.0);
        let r = record(&w);
        assert_eq!(r.flow.outcome, Some(flow::Outcome::Verified));
        assert_eq!(r.summary.reason, EndReason::FlowEnded, "{why}");
        let t = r.flow.transfer_outcome.clone().unwrap();
        assert!(t.contains(why) && t.ends_with("hung up"), "{t}");
        assert!(w.pbx.requests.contains(&Method::Bye));
        let said_failed = w.events.iter().any(|e| {
            matches!(e, CallEvent::Prompt(crate::media::player::PlayerEvent::Started(n)) if n == "transfer_failed")
        });
        assert!(said_failed);
    }
}

/// The PBX cannot be reached any more when the REFER leaves (over TCP: the driver cannot
/// open a connection to the next hop). The driver reports it, the REFER fails at once as a
/// 503 (RFC 3261 §8.1.3.1) and the BYE likewise, so the call ends with its record in the
/// time the failure takes, not after Timer F (32 s) for each of them.
#[test]
fn requests_that_cannot_be_sent_end_the_call_without_waiting_for_timer_f() {
    let mut w = flow_world(509, "1234");
    start(&mut w);
    w.run_for(0.5);
    w.unreachable = true;
    let mut ts = 1000;
    type_keys(&mut w, "1234#", &mut ts);
    w.run_for(2.0);
    assert!(!w.pbx.requests.contains(&Method::Refer));
    assert_eq!(w.ended().len(), 1, "ended well before Timer F");
    let r = record(&w);
    assert_eq!(r.flow.outcome, Some(flow::Outcome::Verified));
    let t = r.flow.transfer_outcome.clone().unwrap();
    assert!(t.contains("REFER could not be sent"), "{t}");
    // Nothing is left waiting once the INVITE transaction's Timer L (32 s after the 200,
    // on UDP) has run: the BYE's transaction is not (it would be, a Timer F later).
    w.run_for(31.0);
    assert!(w.call.as_ref().unwrap().is_done());
}

#[test]
fn bye_during_entry_or_during_refer_ends_cleanly_with_one_record() {
    let mut w = flow_world(508, "1234");
    start(&mut w);
    w.run_for(0.5);
    let mut ts = 1000;
    type_keys(&mut w, "12", &mut ts);
    let now = w.now;
    w.pbx.request(now, "BYE", "", "");
    w.run_for(40.0);
    let r = record(&w);
    assert_eq!(r.flow.outcome, Some(flow::Outcome::Abandoned));
    assert_eq!(r.summary.reason, EndReason::RemoteBye);
    assert!(w.pbx.refer_to.is_empty());
    assert_eq!(w.ended().len(), 1);

    let mut w = flow_world(509, "1234");
    w.pbx.notify = None;
    start(&mut w);
    w.run_for(0.5);
    let mut ts = 1000;
    type_keys(&mut w, "1234#", &mut ts);
    w.run_for(2.0);
    assert_eq!(w.pbx.refer_to.len(), 1);
    let now = w.now;
    w.pbx.request(now, "BYE", "", "");
    w.run_for(40.0);
    let r = record(&w);
    assert_eq!(r.summary.reason, EndReason::RemoteBye);
    assert_eq!(r.flow.outcome, Some(flow::Outcome::Verified));
    assert_eq!(
        r.flow.transfer_outcome.as_deref(),
        Some("caller hung up during the transfer")
    );
    assert_eq!(w.ended().len(), 1);
}

#[test]
fn pins_and_digits_never_reach_events_records_or_debug_output() {
    let pin = "97531";
    let mut w = flow_world(510, pin);
    start(&mut w);
    w.run_for(0.5);
    let mut ts = 1000;
    type_keys(&mut w, "86420#", &mut ts); // a wrong try first
    w.run_for(2.0);
    type_keys(&mut w, &format!("{pin}#"), &mut ts);
    w.run_for(5.0);
    let r = record(&w);
    assert_eq!(r.flow.outcome, Some(flow::Outcome::Verified));
    let json = serde_json::to_string(&r).unwrap();
    let debug = format!("{:?}{:?}", w.events, w.call.as_ref().unwrap());
    for secret in [pin, "86420"] {
        assert!(!json.contains(secret), "record leaks: {json}");
        assert!(!debug.contains(secret), "debug output leaks");
    }
}

#[test]
fn repeated_wrong_pins_lock_the_number_and_contact_out_across_calls() {
    use crate::call::lockout::{Lockout, LockoutPolicy};
    let table = Arc::new(std::sync::Mutex::new(Lockout::new(LockoutPolicy {
        failures: 2,
        ..Default::default()
    })));
    let mut w = flow_world(600, "1234");
    w.lockout = Some(table.clone());
    start(&mut w);
    w.run_for(0.5);
    let mut ts = 1000;
    type_keys(&mut w, "1111#", &mut ts);
    w.run_for(2.0);
    type_keys(&mut w, "2222#", &mut ts);
    w.run_for(8.0);
    let r = record(&w);
    assert_eq!(
        r.flow.outcome,
        Some(flow::Outcome::LockedOut),
        "locked on the 2nd failure"
    );
    assert_eq!(r.flow.attempts, 2);
    assert!(w.pbx.refer_to[0].contains("sip:2002@"));
    // The next call from that number is locked out before it is asked anything, even with
    // the right PIN ready.
    let mut w = flow_world(601, "1234");
    w.lockout = Some(table.clone());
    start(&mut w);
    w.run_for(0.5);
    let mut ts = 1000;
    type_keys(&mut w, "1234#", &mut ts);
    w.run_for(5.0);
    let r = record(&w);
    assert_eq!(r.flow.outcome, Some(flow::Outcome::LockedOut));
    let said: Vec<String> = w
        .events
        .iter()
        .filter_map(|e| match e {
            CallEvent::Prompt(crate::media::player::PlayerEvent::Started(n)) => Some(n.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(said[0], "locked_out");
    assert!(!said.contains(&"enter_pin".to_string()));
}

#[test]
fn failed_transfer_tries_the_fallback_once() {
    let cfg = FLOW_ORG.replace(
        "transfer_timeout_secs = 10\n",
        "transfer_timeout_secs = 10\ntransfer_fallback = \"sip:operator@pbx.acme.example\"\n",
    );
    for (script, outcome, reason) in [
        (vec![403u16], "failed: REFER answered 403; trying the fallback; fallback transferred", EndReason::Transferred),
        (vec![403, 486], "failed: REFER answered 403; trying the fallback; fallback failed: REFER answered 486; hung up", EndReason::FlowEnded),
    ] {
        let mut w = World::with_prompts(
            &cfg,
            700,
            0.0,
            0.0,
            crate::media::prompt::NAMES.iter().map(|n| test_prompt(n, 300)).collect(),
        );
        w.crm = CrmSim::Directory(directory("1234"));
        w.pbx.send_rtp = false;
        w.pbx.refer_script = script;
        start(&mut w);
        w.run_for(0.5);
        let mut ts = 1000;
        type_keys(&mut w, "1234#", &mut ts);
        w.run_for(10.0);
        assert_eq!(w.pbx.refer_to.len(), 2);
        assert_eq!(w.pbx.refer_to[1], "<sip:operator@pbx.acme.example>");
        let r = record(&w);
        assert_eq!(r.flow.transfer_outcome.as_deref(), Some(outcome));
        assert_eq!(r.summary.reason, reason);
        assert_eq!(r.flow.outcome, Some(flow::Outcome::Verified));
    }
}

// ---- Defects found by real peers (softphones, Asterisk), each a behaviour --------------

use crate::media::player::PlayerEvent;

/// When each prompt event happened, as (seconds since the start, event).
fn prompt_log(w: &World) -> Vec<(f64, PlayerEvent)> {
    w.timed
        .iter()
        .filter_map(|(t, e)| match e {
            CallEvent::Prompt(p) => Some(((*t - w.t0).as_secs_f64(), p.clone())),
            _ => None,
        })
        .collect()
}

fn started_at(w: &World, name: &str) -> Vec<f64> {
    prompt_log(w)
        .into_iter()
        .filter_map(|(t, e)| matches!(&e, PlayerEvent::Started(n) if n == name).then_some(t))
        .collect()
}

fn request_times(w: &World, m: Method) -> Vec<f64> {
    w.pbx
        .requests_at
        .iter()
        .filter(|(x, _)| *x == m)
        .map(|(_, t)| (*t - w.t0).as_secs_f64())
        .collect()
}

/// The PBX sends one key as SIP INFO (application/dtmf-relay).
fn info_key(w: &mut World, k: char) {
    let now = w.now;
    let body = format!("Signal={k}\r\nDuration=160\r\n");
    w.pbx.request(
        now,
        "INFO",
        "Content-Type: application/dtmf-relay\r\n",
        &body,
    );
}

/// Each key as SIP INFO *and* RFC 4733, as Linphone sends with both enabled.
fn type_keys_info_and_rfc4733(w: &mut World, keys: &str, ts: &mut u32) {
    for k in keys.chars() {
        info_key(w, k);
        type_keys(w, &k.to_string(), ts);
    }
}

#[test]
fn key_sent_as_info_and_rfc4733_counts_once() {
    let mut w = flow_world(600, "1134");
    start(&mut w);
    w.run_for(0.5);
    let mut ts = 1000;
    // Repeated keys too: "11" is two presses, each sent both ways.
    type_keys_info_and_rfc4733(&mut w, "1134#", &mut ts);
    w.run_for(3.0);
    let r = record(&w);
    assert_eq!(r.flow.outcome, Some(flow::Outcome::Verified));
    assert_eq!(r.summary.digits, 5, "one digit per key");
    assert_eq!(r.flow.attempts, 1);
    // The call's source is the first that delivered.
    assert_eq!(
        r.flow.digit_source,
        Some(crate::media::dtmf::DigitSource::Info)
    );
    assert!(w.pbx.refer_to[0].contains("sip:2001@"));
}

/// `#` alone while "enter PIN" still plays: the re-prompt plays whole, and the caller gets
/// the full first-digit timeout counted from the end of the re-prompt (the interrupted
/// list's end used to be taken for the re-prompt's, starting the timer at once).
#[test]
fn no_input_timer_starts_when_the_reprompt_ends_not_at_the_barge_in() {
    let mut w = flow_world(601, "1234");
    start(&mut w);
    w.run_for(0.1);
    let mut ts = 1000;
    type_keys(&mut w, "#", &mut ts);
    w.run_for(20.0);
    // Prompts are 300 ms each: no_input + try_again + enter_pin = 0.9 s of re-prompt.
    let reprompts = started_at(&w, "no_input");
    assert!(reprompts.len() >= 2, "{:?}", prompt_log(&w));
    let finished_enter: Vec<f64> = prompt_log(&w)
        .into_iter()
        .filter_map(|(t, e)| {
            matches!(&e, PlayerEvent::Finished(n) if n == "enter_pin").then_some(t)
        })
        .collect();
    let reprompt_end = finished_enter[0];
    assert!(reprompt_end > reprompts[0] + 0.85, "{:?}", prompt_log(&w));
    let waited = reprompts[1] - reprompt_end;
    assert!(
        (4.95..5.2).contains(&waited),
        "first-digit timeout (5 s) from the end of the re-prompt; waited {waited:.3} s"
    );
}

/// "Verified", "transferring" and "transfer failed" are announcements: a key does not cut
/// them. Only prompts that ask for input are interruptible by default.
#[test]
fn announcements_are_not_cut_by_keys() {
    let mut w = flow_world(602, "1234");
    w.pbx.notify_delay = Duration::from_secs(2);
    start(&mut w);
    w.run_for(0.5);
    let mut ts = 1000;
    type_keys(&mut w, "1234#", &mut ts);
    w.run_for(0.05);
    type_keys(&mut w, "##", &mut ts);
    w.run_for(3.0);
    let cut: Vec<_> = prompt_log(&w)
        .into_iter()
        .filter(|(_, e)| matches!(e, PlayerEvent::Interrupted(n) if n == "verified"))
        .collect();
    assert!(cut.is_empty(), "{:?}", prompt_log(&w));
    assert!(prompt_log(&w)
        .iter()
        .any(|(_, e)| matches!(e, PlayerEvent::Finished(n) if n == "verified")));

    // A key during "transfer failed" does not hang up at once: the prompt plays out.
    let mut w = flow_world(603, "1234");
    w.pbx.refer_reply = 403;
    start(&mut w);
    w.run_for(0.5);
    type_keys(&mut w, "1234#", &mut ts);
    w.run_for(0.1);
    type_keys(&mut w, "5", &mut ts);
    w.run_for(5.0);
    let log = prompt_log(&w);
    let failed_done = log
        .iter()
        .find(|(_, e)| matches!(e, PlayerEvent::Finished(n) if n == "transfer_failed"))
        .map(|x| x.0);
    let bye = request_times(&w, Method::Bye);
    assert!(failed_done.is_some(), "{log:?}");
    assert!(
        bye[0] >= failed_done.unwrap() - 0.001,
        "BYE {bye:?} after {log:?}"
    );
}

/// The REFER leaves as soon as the verdict is known; "verified" plays while the PBX carries
/// out the transfer, and stops when the final NOTIFY comes (we hang up then).
#[test]
fn verified_caller_is_referred_at_once_and_hears_verified_during_the_transfer() {
    let mut w = flow_world(604, "1234");
    w.pbx.notify_delay = Duration::from_millis(2500);
    start(&mut w);
    w.run_for(0.5);
    let mut ts = 1000;
    type_keys(&mut w, "1234", &mut ts);
    type_keys(&mut w, "#", &mut ts);
    let pound = (w.now - w.t0).as_secs_f64();
    w.run_for(5.0);
    let refer = request_times(&w, Method::Refer);
    assert_eq!(refer.len(), 1);
    // type_keys ends 160 ms after the key went down (its last packet plus 100 ms idle).
    assert!(
        refer[0] - (pound - 0.16) < 0.1,
        "REFER {:.3} s after the key",
        refer[0] - (pound - 0.16)
    );
    let verified = started_at(&w, "verified");
    assert_eq!(verified.len(), 1, "{:?}", prompt_log(&w));
    assert!(
        verified[0] >= refer[0] - 0.05,
        "announcement after the REFER"
    );
    let bye = request_times(&w, Method::Bye);
    assert_eq!(bye.len(), 1);
    assert!(bye[0] > refer[0] + 2.4, "BYE after the NOTIFY");
    let r = record(&w);
    assert_eq!(r.summary.reason, EndReason::Transferred);
    // The audit record says what the caller waited: the check is answered at once here.
    assert!(
        matches!(r.flow.entry_to_refer_ms, Some(ms) if ms < 5),
        "{:?}",
        r.flow
    );
}

#[test]
fn announcements_can_be_switched_off_per_organization() {
    let cfg = format!("{FLOW_ORG}announce_verdict = false\nannounce_transfer = false\n");
    let mut w = flow_world_cfg(&cfg, 605, "1234");
    start(&mut w);
    w.run_for(0.5);
    let mut ts = 1000;
    type_keys(&mut w, "1234#", &mut ts);
    w.run_for(3.0);
    assert!(started_at(&w, "verified").is_empty());
    assert!(started_at(&w, "transferring").is_empty());
    assert_eq!(record(&w).flow.outcome, Some(flow::Outcome::Verified));
}

/// 491 Request Pending (the PBX has its own request open) is retried after a short random
/// delay (RFC 3261 §14.1), a bounded number of times, before the transfer counts as failed.
#[test]
fn refer_answered_491_is_retried() {
    let mut w = flow_world(606, "1234");
    w.pbx.refer_script = vec![491, 491];
    start(&mut w);
    w.run_for(0.5);
    let mut ts = 1000;
    type_keys(&mut w, "1234#", &mut ts);
    w.run_for(10.0);
    let refers = request_times(&w, Method::Refer);
    assert_eq!(refers.len(), 3, "{refers:?}");
    for pair in refers.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap <= 2.1, "retry within 0–2 s: {gap}");
    }
    let r = record(&w);
    assert_eq!(r.summary.reason, EndReason::Transferred);
    assert!(w.pbx.refer_to.iter().all(|t| t.contains("sip:2001@")));

    let mut w = flow_world(607, "1234");
    w.pbx.refer_reply = 491;
    start(&mut w);
    w.run_for(0.5);
    type_keys(&mut w, "1234#", &mut ts);
    w.run_for(30.0);
    let refers = request_times(&w, Method::Refer);
    assert_eq!(refers.len(), 4, "first try and three retries: {refers:?}");
    let r = record(&w);
    assert_eq!(r.summary.reason, EndReason::FlowEnded);
    assert!(r.flow.transfer_outcome.unwrap().contains("491"));
}

/// The audit record keeps each attempt's result, not only the last.
#[test]
fn audit_record_lists_each_attempts_result() {
    let mut w = flow_world(608, "1234");
    start(&mut w);
    w.run_for(0.5);
    let mut ts = 1000;
    type_keys(&mut w, "9999#", &mut ts);
    w.run_for(1.5);
    type_keys(&mut w, "9999#", &mut ts);
    w.run_for(1.5);
    type_keys(&mut w, "#", &mut ts);
    w.run_for(5.0);
    let r = record(&w);
    use flow::Outcome::*;
    assert_eq!(r.flow.attempt_results, vec![WrongPin, WrongPin, NoInput]);
    assert_eq!(r.flow.outcome, Some(NoInput));
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        json.contains(r#""attempt_results":["wrong_pin","wrong_pin","no_input"]"#),
        "{json}"
    );
}

/// Where the verdict goes for the PBX: URI headers in Refer-To (baresip copies them into
/// its INVITE), a header on the REFER itself (for PBXs that drop Refer-To's headers), or
/// both.
#[test]
fn pin_result_rides_in_refer_to_or_on_the_refer_or_both() {
    for (setting, in_uri, on_refer) in [
        ("", true, true),
        ("pin_result_in = [\"refer_to\"]\n", true, false),
        ("pin_result_in = [\"refer_header\"]\n", false, true),
    ] {
        let mut w = flow_world_cfg(&format!("{FLOW_ORG}{setting}"), 609, "1234");
        start(&mut w);
        w.run_for(0.5);
        let mut ts = 1000;
        type_keys(&mut w, "1234#", &mut ts);
        w.run_for(3.0);
        let refer = &w.pbx.refers[0];
        let to = refer.header("Refer-To").unwrap();
        assert_eq!(
            to.contains("X-PIN-Result=verified"),
            in_uri,
            "{setting}: {to}"
        );
        assert_eq!(
            refer.header("X-PIN-Result") == Some("verified")
                && refer.header("X-PIN-Contact") == Some("c-42"),
            on_refer,
            "{setting}"
        );
    }
}

/// A caller who typed the right PIN, with the driver not answering PIN checks (yet).
fn typed_with_check_held(seed: u64) -> World {
    let mut w = flow_world(seed, "1234");
    w.answer_checks = false;
    start(&mut w);
    w.run_for(0.5);
    let mut ts = 1000;
    type_keys(&mut w, "1234#", &mut ts);
    w
}

#[test]
fn pin_check_queued_for_seconds_still_verifies() {
    // Under load, argon2 checks wait their turn for a core (the driver runs a few at a
    // time): four seconds in the queue is slow, not a fault, and a right PIN stays right.
    let mut w = typed_with_check_held(611);
    w.run_for(4.0);
    let check = w
        .events
        .iter()
        .find_map(|e| match e {
            CallEvent::CheckPin(c) => Some(c.clone()),
            _ => None,
        })
        .expect("a PIN check was asked for");
    let now = w.now;
    let r = check.settle_in_memory(now, None);
    w.call.as_mut().unwrap().handle_check(now, r);
    w.run_for(5.0);
    let r = record(&w);
    assert_eq!(r.flow.outcome, Some(flow::Outcome::Verified));
    assert!(
        w.pbx.refer_to[0].contains("sip:2001@"),
        "{:?}",
        w.pbx.refer_to
    );
}

/// The argon2 comparison runs off the call's task; if it never comes back (a driver fault)
/// the caller is not stuck and never verified: the failure extension, as crm_error.
#[test]
fn pin_check_that_never_returns_fails_closed() {
    let mut w = typed_with_check_held(610);
    w.run_for(14.0);
    assert!(w.pbx.refer_to.is_empty(), "still waiting for the check");
    w.run_for(2.0);
    let r = record(&w);
    assert_eq!(r.flow.outcome, Some(flow::Outcome::CrmError));
    assert!(w.pbx.refer_to[0].contains("sip:2002@"));
    assert!(w.events.iter().any(|e| matches!(e, CallEvent::CheckPin(_))));
}

/// Our RTCP as the PBX received it: (arrival, port kind, packet types in order, the report
/// block about the PBX's stream if any).
fn pbx_rtcp(
    w: &World,
) -> Vec<(
    Instant,
    Kind,
    Vec<u8>,
    Option<crate::media::rtcp::ReportBlock>,
)> {
    use crate::media::rtcp::wire::{self, Packet};
    w.pbx
        .rtcp_rx
        .iter()
        .map(|(at, kind, data)| {
            let c = wire::parse(data).expect("our RTCP is valid");
            let mut types = vec![];
            let mut block = None;
            for p in c.packets() {
                match p {
                    Packet::SenderReport { blocks, .. } => {
                        types.push(wire::PT_SR);
                        block = blocks.iter().next();
                    }
                    Packet::ReceiverReport { blocks, .. } => {
                        types.push(wire::PT_RR);
                        block = blocks.iter().next();
                    }
                    Packet::Sdes { cname, .. } => {
                        assert!(cname.is_some(), "every report carries a CNAME");
                        types.push(wire::PT_SDES);
                    }
                    Packet::Bye { .. } => types.push(wire::PT_BYE),
                    Packet::Other { pt } => types.push(pt),
                }
            }
            (*at, *kind, types, block)
        })
        .collect()
}

#[test]
fn rtcp_reports_every_five_seconds_on_port_plus_one_and_peer_reports_are_taken() {
    use crate::media::rtcp::wire::{PT_BYE, PT_SDES, PT_SR};
    let mut w = World::new("", 900, 0.0, 0.0);
    w.pbx.rtcp = true;
    start(&mut w);
    w.run_for(60.0);
    let got = pbx_rtcp(&w);
    // First after 1.25–3.75 s (half the interval, randomized), then every 2.5–7.5 s: about
    // 12 in a minute. The network adds 20–35 ms each way.
    assert!((8..=20).contains(&got.len()), "{} reports", got.len());
    let first = got[0].0 - w.t0;
    assert!(
        first >= Duration::from_millis(1250) && first <= Duration::from_millis(3850),
        "{first:?}"
    );
    for g in got.windows(2) {
        let gap = g[1].0 - g[0].0;
        assert!(
            gap >= Duration::from_millis(2480) && gap <= Duration::from_millis(7520),
            "{gap:?}"
        );
    }
    for (_, kind, types, block) in &got {
        assert_eq!(*kind, Kind::Rtcp, "to the PBX's RTP port + 1");
        assert_eq!(types, &vec![PT_SR, PT_SDES], "we send audio: SR + SDES");
        let b = block.expect("a block about the PBX's stream");
        assert_eq!(b.ssrc, 99, "the PBX's SSRC");
        assert_eq!(b.cumulative_lost, 0);
    }
    // The PBX's SRs reached us: later blocks echo them (LSR), and its blocks about us gave
    // an RTT of about two network latencies (20–35 ms each way).
    assert!(got.last().unwrap().3.unwrap().lsr != 0);
    let stats = w.call.as_ref().unwrap().rtp_stats().unwrap();
    assert!(stats.rtcp.rx >= 8, "{stats:?}");
    assert_eq!(stats.rtcp.rx_ignored, 0);
    assert_eq!(stats.rx_ignored, 0, "no RTCP mistaken for RTP");
    let rtt = stats.rtcp.rtt_ms.expect("an RTT from the PBX's reports");
    assert!((35..=75).contains(&rtt), "rtt {rtt} ms");
    assert_eq!(stats.rtcp.peer_reported_lost, Some(0));
    // The PBX hangs up: our last RTCP says BYE, and nothing follows it.
    let now = w.now;
    w.pbx.request(now, "BYE", "", "");
    w.run_for(40.0);
    let got = pbx_rtcp(&w);
    let last = got.last().unwrap();
    assert_eq!(last.2, vec![PT_SR, PT_SDES, PT_BYE]);
    assert_eq!(got.iter().filter(|g| g.2.contains(&PT_BYE)).count(), 1);
    let summary = w.ended()[0];
    assert!(summary.rtp.rtcp.tx >= 9, "{summary:?}");
}

#[test]
fn rtcp_mux_offered_puts_both_directions_on_the_rtp_port() {
    let mut w = World::new("", 901, 0.0, 0.0);
    w.pbx.rtcp = true;
    let now = w.now;
    w.pbx.invite(
        now,
        "",
        Some(format!("{}a=rtcp-mux\r\n", Pbx::sdp(4000, "sendrecv"))),
    );
    w.run_for(30.0);
    let answer = String::from_utf8_lossy(w.pbx.last_answer.as_ref().unwrap()).to_string();
    assert!(answer.contains("a=rtcp-mux\r\n"), "{answer}");
    let got = pbx_rtcp(&w);
    assert!(got.len() >= 4, "{}", got.len());
    assert!(
        got.iter().all(|g| g.1 == Kind::RtcpMux),
        "all on the RTP port"
    );
    // The PBX's RTCP came in on our RTP port: demultiplexed, taken, never seen as RTP.
    let stats = w.call.as_ref().unwrap().rtp_stats().unwrap();
    assert!(stats.rtcp.rx >= 4, "{stats:?}");
    assert_eq!(
        (stats.rtcp.rx_ignored, stats.rx_ignored),
        (0, 0),
        "{stats:?}"
    );
    assert!(stats.rx_packets > 1400, "RTP still flows: {stats:?}");
    let pbx = w.pbx.rtp.as_ref().unwrap().stats();
    assert_eq!(pbx.rx_ignored, 0, "the PBX never took our RTCP for RTP");
}

#[test]
fn rtcp_keeps_going_on_hold_as_receiver_reports() {
    use crate::media::rtcp::wire::{PT_RR, PT_SDES, PT_SR};
    let mut w = World::new("", 902, 0.0, 0.0);
    start(&mut w);
    w.run_for(1.0);
    // The PBX holds the call (it will only send; we only receive, so we stop sending).
    let now = w.now;
    w.pbx.request(
        now,
        "INVITE",
        "Content-Type: application/sdp\r\n",
        &Pbx::sdp(4000, "sendonly"),
    );
    w.run_for(40.0);
    assert!(w.ended().is_empty());
    let got = pbx_rtcp(&w);
    let held: Vec<_> = got
        .iter()
        .filter(|g| g.0 - w.t0 > Duration::from_secs(15))
        .collect();
    assert!(held.len() >= 3, "reports go on during hold: {}", got.len());
    // Still SR right after we stopped sending (sent since the report before last), then RR.
    assert!(held.iter().all(|g| g.2 == vec![PT_RR, PT_SDES]), "{held:?}");
    assert_eq!(got[0].2, vec![PT_SR, PT_SDES]);
    assert!(held.iter().all(|g| g.3.is_some_and(|b| b.ssrc == 99)));
}

/// A shared lockout store (Redis) that cannot be reached: the caller is still asked for the
/// PIN, but no verdict stands without the store — the right PIN goes to the failure
/// extension as lockout_unavailable (fail closed), never to the success one.
#[test]
fn lockout_store_down_fails_closed() {
    use crate::call::lockout::{Lockout, LockoutPolicy};
    let mut w = flow_world(611, "1234");
    w.lockout = Some(Arc::new(std::sync::Mutex::new(Lockout::new(
        LockoutPolicy::default(),
    ))));
    w.store_down = true;
    start(&mut w);
    w.run_for(0.5);
    assert_eq!(started_at(&w, "enter_pin").len(), 1, "still asked");
    let mut ts = 1000;
    type_keys(&mut w, "1234#", &mut ts);
    w.run_for(3.0);
    let r = record(&w);
    assert_eq!(r.flow.outcome, Some(flow::Outcome::LockoutUnavailable));
    assert!(w.pbx.refer_to[0].contains("sip:2002@"));
}

/// With lockout on, the caller's number is checked before the prompt; an in-memory store
/// answers within the same drain, so the very first frame of the call is the prompt (marked),
/// not a frame of silence before it.
#[test]
fn lockout_check_from_memory_does_not_delay_the_first_prompt_frame() {
    use crate::call::lockout::{Lockout, LockoutPolicy};
    let mut w = flow_world(612, "1234");
    w.lockout = Some(Arc::new(std::sync::Mutex::new(Lockout::new(
        LockoutPolicy::default(),
    ))));
    w.net.jitter = Duration::ZERO;
    start(&mut w);
    w.run_for(0.2);
    let first = &w.pbx.received[0];
    assert!(first.marker, "first packet starts the prompt");
    let want = test_prompt("enter_pin", 300);
    assert_eq!(first.payload[..], want.bytes(sdp::Codec::Pcmu)[..160]);
}

/// A verdict made at answer (a withheld number, a locked one) must not put the REFER ahead
/// of our 200 — or ahead of the PBX's ACK, which confirms the dialog: the REFER waits.
#[test]
fn a_verdict_at_answer_sends_the_refer_after_the_ack() {
    let mut w = flow_world(613, "1234");
    w.pbx = Pbx::new("anon-order");
    w.pbx.send_rtp = false;
    w.pbx.tag = "anon".into();
    w.net.jitter = Duration::ZERO;
    let now = w.now;
    w.pbx.invite(now, "", Some(Pbx::sdp(4000, "sendrecv")));
    let inv = w.pbx.out.pop_back().unwrap();
    let inv = String::from_utf8(inv).unwrap().replace(
        "<sip:+15551234567@192.0.2.1>",
        "\"Anonymous\" <sip:anonymous@anonymous.invalid>",
    );
    w.pbx.out.push_back(inv.into_bytes());
    w.pbx.invite = None;
    w.run_for(3.0);
    let ok_at = w
        .pbx
        .responses
        .iter()
        .position(|(c, m)| *c == 200 && *m == Method::Invite);
    assert!(ok_at.is_some());
    let refer = request_times(&w, Method::Refer);
    assert_eq!(
        refer.len(),
        1,
        "{:?} {:?} {:?}",
        w.pbx.requests,
        w.pbx.responses,
        w.events
            .iter()
            .filter(|e| !matches!(e, CallEvent::Prompt(_)))
            .collect::<Vec<_>>()
    );
    // The REFER reached the PBX after it had sent its ACK (auto_ack on the 200).
    assert!(
        w.call.as_ref().unwrap().record().is_some(),
        "{:?} {:?}",
        w.pbx.requests,
        w.pbx.responses
    );
    assert_eq!(record(&w).flow.outcome, Some(flow::Outcome::Anonymous));
    assert_eq!(record(&w).summary.reason, EndReason::Transferred);
    let first_refer_index = w.pbx.requests.iter().position(|m| *m == Method::Refer);
    assert!(first_refer_index.is_some());
    assert!(
        w.pbx.refer_before_ok == Some(false),
        "REFER arrived before our 200"
    );
}
