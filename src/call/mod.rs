//! One call, sans-IO: composes the INVITE server transaction, the dialog, the in-dialog
//! server and client transactions, the session timer (RFC 4028) and the RTP session.
//! Fed with SIP messages, RTP datagrams and timeouts; drained with `poll_*`.

pub mod flow;
pub mod identity;
pub mod lockout;
pub mod run;
mod session_timer;
pub mod verdict;

use crate::config::{Config, Organization};
use crate::crm::CrmReply;
use crate::media::dtmf::info::{self as dtmf_info, InfoDtmf};
use crate::media::dtmf::{DigitCollector, DigitEvent};
use crate::media::player::{PlayItem, Player, PlayerEvent};
use crate::media::rtcp::{RtcpBye, RtcpPort, RtcpSetup, WallClock};
use crate::media::rtp::{RtpPayload, RtpSession, RtpStats};
use crate::sip::build::{response, response_flow};
use crate::sip::dialog::Dialog;
use crate::sip::endpoint::session_expires;
use crate::sip::msg::{Message, Method, StartLine};
use crate::sip::sdp::{self, LocalMedia, Negotiated, Sdp};
use crate::sip::transaction::{
    InviteServer, IstEvent, NictEvent, NonInviteClient, NonInviteServer, Timer,
};
use crate::sip::{Flow, SipTransmit, ACCEPT, ALLOW, SUPPORTED};
use bytes::Bytes;
use flow::{FlowAction, FlowFacts, PinFlow};
use identity::Caller;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use session_timer::{Refresher, SessionTimer};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a call ended. Exactly one per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The PBX sent BYE.
    RemoteBye,
    /// The PBX cancelled before we answered.
    Cancelled,
    /// Our 2xx was never ACKed (§13.3.1.4).
    AckTimeout,
    /// The delayed-offer ACK carried no usable SDP answer.
    BadAnswer,
    /// No RTP for `media_timeout`.
    MediaTimeout,
    /// The session timer ran out without a refresh (RFC 4028 §10).
    SessionExpired,
    /// Our session refresh failed (RFC 4028 §10).
    RefreshFailed,
    /// The service is shutting down.
    Shutdown,
    /// The PBX took the transfer (final 2xx NOTIFY); we hung up our leg.
    Transferred,
    /// The flow ended the call (after a failed transfer).
    FlowEnded,
    /// The call reached `[sip] max_call_secs`, whatever state it was in: the safety net
    /// under every other timer, so no call outlives it.
    MaxDuration,
}

/// What the call reports to its driver.
#[derive(Debug, Clone)]
pub enum CallEvent {
    /// We sent the 200 to the INVITE.
    Answered,
    /// The caller pressed a key (from any source the DTMF mode accepts). Never log the
    /// digit itself.
    Digit(DigitEvent),
    /// A prompt started, finished or was interrupted.
    Prompt(PlayerEvent),
    /// Look the caller up in the organization's CRM; answer with `handle_crm`. The number
    /// is placed (E.164 and the forms CRMs store) or, when it cannot be, raw as received.
    CrmLookup {
        organization: String,
        number: crate::crm::phone::LookupNumber,
    },
    /// Ask the CRM's verify webhook about a PIN; answer with `handle_verify`. The PIN is
    /// redacted in Debug; send it nowhere but the webhook.
    CrmVerify {
        organization: String,
        caller: String,
        pin: verdict::Pin,
    },
    /// Settle a verdict: the lockout store's check, the PIN comparison (`judge`, argon2:
    /// off the call's task), the store's record (`PinCheck::settle_in_memory` does all of
    /// it for the in-memory store); answer with `handle_check`.
    CheckPin(verdict::PinCheck),
    /// Is any of these lockout keys locked? Answer with `handle_lock_state`.
    LockCheck(Vec<String>),
    /// The call is over (it may linger a little to absorb retransmissions).
    Ended(CallSummary),
}

/// The end-of-call facts for logs and the audit record.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CallSummary {
    pub reason: EndReason,
    pub answered: bool,
    pub duration_ms: u64,
    pub rtp: RtpStats,
    /// How many digits the caller entered (never which).
    pub digits: u32,
}

/// The end-of-call record: summary plus who called, where, and what the flow decided.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallRecord {
    pub call_id: String,
    pub organization: String,
    pub caller: String,
    pub caller_e164: Option<String>,
    #[serde(flatten)]
    pub summary: CallSummary,
    #[serde(flatten)]
    pub flow: FlowFacts,
}

/// Why the call wants to be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    Transaction(Timer),
    Answer,
    MediaFrame,
    MediaTimeout,
    SessionTimer,
    /// RFC 4733 press without end packets (§2.5.1.4).
    DigitTimeout,
    /// A PIN-flow timer (digit timeouts, CRM deadline, transfer timeout).
    Flow,
    /// Our next RTCP report (RFC 3550 §6.2).
    Rtcp,
    /// `[sip] max_call_secs` since the INVITE.
    MaxDuration,
}

/// The names of `Call::progress`'s values (for the operator's list of calls).
pub const PROGRESS: [&str; 8] = [
    "ringing",
    "answered",
    "collecting",
    "verifying",
    "transferring",
    "closing",
    "ending",
    "ended",
];

/// How often a REFER answered 491 Request Pending is sent again (RFC 3261 §14.1).
const MAX_REFER_RETRIES: u32 = 3;

/// A REFER that may be sent again after 491.
#[derive(Debug)]
struct ReferAttempt {
    uri: String,
    headers: Vec<(String, String)>,
    retries: u32,
    /// When to send it again (after a 491).
    retry_at: Option<Instant>,
}

/// Why a call could not be set up from an admitted INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The INVITE lacks what a dialog needs (From tag, To, CSeq, a usable Contact).
    #[error("the INVITE cannot create a dialog")]
    NoDialog,
}

/// What the driver hands a new call.
#[derive(Debug)]
pub struct CallSetup {
    pub invite: Message,
    pub offer: Option<Sdp>,
    /// The flow the INVITE arrived on.
    pub flow: Flow,
    /// Our address as written in Via and Contact.
    pub local_sip: SocketAddr,
    /// Our RTP socket's advertised address.
    pub media: LocalMedia,
    /// Seed for tags, branches, SSRC and initial sequence/timestamp.
    pub seed: u64,
    /// The organization the call belongs to (admission chose it).
    pub org: Arc<Organization>,
    /// Who is calling.
    pub caller: Caller,
    /// Lockout across calls is on (the driver holds the store: memory or Redis).
    pub lockout: bool,
    /// A wall-clock reading for RTCP's NTP timestamps (the core never reads the clock).
    pub wall_clock: WallClock,
}

#[derive(Debug)]
enum Phase {
    /// 180 sent; we answer at `answer_at`.
    Ringing { answer_at: Instant },
    /// 200 sent (or about to be).
    Answered,
    /// The call ended; transactions finish before the driver drops us.
    Ended,
}

/// A server INVITE transaction plus the offer/answer facts of that INVITE.
#[derive(Debug)]
struct ServerInvite {
    tx: InviteServer,
    cseq: u32,
    /// We put an offer in the 2xx: the answer comes in the ACK.
    offer_in_2xx: bool,
}

/// One call.
#[derive(Debug)]
pub struct Call {
    config: Arc<Config>,
    rng: SmallRng,
    flow: Flow,
    local_sip: SocketAddr,
    media: LocalMedia,
    sdp_version: u64,
    last_answer: Option<String>,
    dialog: Dialog,
    invite: Message,
    offer: Option<Sdp>,
    phase: Phase,
    initial: ServerInvite,
    reinvite: Option<ServerInvite>,
    nists: Vec<NonInviteServer>,
    clients: Vec<(NonInviteClient, Method)>,
    session_timer: Option<SessionTimer>,
    rtp: Option<RtpSession>,
    digits: DigitCollector,
    digit_count: u32,
    player: Player,
    org: Arc<Organization>,
    caller: Caller,
    pin: Option<PinFlow>,
    lockout: bool,
    /// REFER sent: the NICT branch and when the transfer is given up.
    transfer: Option<(String, Instant)>,
    /// The REFER in progress (to resend after 491) and its retries so far.
    refer: Option<ReferAttempt>,
    /// The play list the flow waits on (its `ListDone` is the flow's "prompts done").
    awaited_list: Option<u64>,
    record: Option<CallRecord>,
    started: Instant,
    answered_at: Option<Instant>,
    outbox: VecDeque<SipTransmit>,
    events: VecDeque<CallEvent>,
    wall_clock: WallClock,
    /// Our last RTCP report with BYE, waiting for `poll_rtcp` after the call ended.
    rtcp_bye: Option<RtcpBye>,
}

fn hex(rng: &mut SmallRng) -> String {
    format!("{:016x}", rng.gen::<u64>())
}

impl Call {
    /// Takes an admitted INVITE: sends 100 Trying, then rings or answers. Fails only for an
    /// INVITE that cannot make a dialog (admission answers those 400 first).
    pub fn new(now: Instant, config: Arc<Config>, setup: CallSetup) -> Result<Call, SetupError> {
        let mut rng = SmallRng::seed_from_u64(setup.seed);
        let local_tag = hex(&mut rng);
        let user = setup
            .invite
            .start
            .clone()
            .request_user()
            .unwrap_or_else(|| "pincoderouting".into());
        let transport_param = if setup.flow.reliable() {
            ";transport=tcp"
        } else {
            ""
        };
        let contact = format!("<sip:{user}@{}{transport_param}>", setup.local_sip);
        let dialog = Dialog::uas(&setup.invite, local_tag, contact).ok_or(SetupError::NoDialog)?;
        let branch = setup
            .invite
            .top_via()
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        let cseq = setup.invite.cseq().map(|c| c.0).unwrap_or(0);
        let mut call = Call {
            sdp_version: 1,
            last_answer: None,
            rng,
            flow: setup.flow,
            local_sip: setup.local_sip,
            media: setup.media,
            initial: ServerInvite {
                tx: InviteServer::new(branch, setup.flow.reliable(), config.sip.timers),
                cseq,
                offer_in_2xx: setup.offer.is_none(),
            },
            dialog,
            offer: setup.offer,
            phase: Phase::Answered,
            reinvite: None,
            nists: Vec::new(),
            clients: Vec::new(),
            session_timer: None,
            rtp: None,
            digits: DigitCollector::new(now, setup.org.dtmf_mode.unwrap_or(config.media.dtmf_mode)),
            digit_count: 0,
            player: Player::new(config.prompts.idle),
            org: setup.org.clone(),
            caller: setup.caller.clone(),
            pin: None,
            lockout: setup.lockout,
            transfer: None,
            refer: None,
            awaited_list: None,
            record: None,
            started: now,
            answered_at: None,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            wall_clock: setup.wall_clock,
            rtcp_bye: None,
            invite: setup.invite,
            config,
        };
        let trying = call.reply(&call.invite.clone(), 100, false);
        let b = call.initial.tx.provisional(trying.to_bytes());
        call.send_response(&call.invite.clone(), b);
        let ring = call.config.sip.ring;
        if ring.is_zero() {
            call.answer(now);
        } else {
            let ringing = call.reply(&call.invite.clone(), 180, true);
            let b = call.initial.tx.provisional(ringing.to_bytes());
            call.send_response(&call.invite.clone(), b);
            call.phase = Phase::Ringing {
                answer_at: now + ring,
            };
        }
        Ok(call)
    }

    pub fn call_id(&self) -> &str {
        &self.dialog.call_id
    }

    /// Builds a response in this dialog (our tag on everything but 100).
    fn reply(&self, req: &Message, code: u16, contact: bool) -> Message {
        let mut r = response(
            req,
            code,
            Some(&self.dialog.local_tag),
            &self.config.sip.user_agent,
        );
        if contact {
            r.push_header("Contact", self.dialog.local_contact.clone());
        }
        r
    }

    fn send_response(&mut self, req: &Message, data: Bytes) {
        self.outbox.push_back(SipTransmit {
            flow: response_flow(req, self.flow),
            data,
        });
    }

    /// The flow our own requests take: the dialog's next hop if it is an IP literal, else
    /// back where the INVITE came from. On TCP, the INVITE's connection while it stands,
    /// with the next hop as `remote`: where the driver opens a connection if the peer has
    /// closed that one (RFC 3261 §12.2.1.1, §18.1.1: requests go to the next hop).
    fn request_flow(&self) -> Flow {
        match self.dialog.next_hop() {
            Some(remote) => Flow {
                remote,
                ..self.flow
            },
            None => self.flow,
        }
    }

    fn answer_sdp(&mut self, offer: &Sdp) -> Result<(Negotiated, String), sdp::SdpError> {
        let m = &self.config.media;
        let (neg, body) = sdp::answer(offer, &m.codecs, m.ptime_ms, &self.media, 0)?;
        Ok((neg, self.versioned(body)))
    }

    /// RFC 3264 §8: the o= version goes up exactly when the description changes.
    /// `body` was built with version 0; the real version is put in here.
    fn versioned(&mut self, body: String) -> String {
        let changed = self.last_answer.as_deref() != Some(body.as_str());
        if changed && self.last_answer.is_some() {
            self.sdp_version += 1;
        }
        let sid = self.media.session_id;
        let out = body.replacen(
            &format!(" {sid} 0 IN "),
            &format!(" {sid} {} IN ", self.sdp_version),
            1,
        );
        self.last_answer = Some(body);
        out
    }

    fn our_offer(&mut self) -> String {
        let m = &self.config.media;
        let body = sdp::offer(&m.codecs, m.ptime_ms, &self.media, 0);
        self.versioned(body)
    }

    fn start_media(&mut self, now: Instant, neg: Negotiated) {
        self.digits.negotiated(neg.te_pt.is_some(), neg.codec);
        match &mut self.rtp {
            Some(r) => r.renegotiate(now, neg),
            None => {
                let (ssrc, seq, ts) = (self.rng.gen(), self.rng.gen(), self.rng.gen());
                let rtcp = RtcpSetup {
                    seed: self.rng.gen(),
                    wall_clock: self.wall_clock,
                };
                self.rtp = Some(RtpSession::new(now, neg, ssrc, seq, ts).with_rtcp(now, rtcp));
                self.start_flow(now);
            }
        }
    }

    fn answer(&mut self, now: Instant) {
        let invite = self.invite.clone();
        let mut ok = self.reply(&invite, 200, true);
        let body = match self.offer.clone() {
            Some(offer) => match self.answer_sdp(&offer) {
                Ok((neg, body)) => {
                    self.start_media(now, neg);
                    body
                }
                Err(_) => {
                    // Admission dry-ran this offer; it cannot fail here. Refuse cleanly anyway.
                    let r = self.reply(&invite, 488, false);
                    let b = self.initial.tx.final_response(now, 488, r.to_bytes());
                    self.send_response(&invite, b);
                    self.end(now, EndReason::BadAnswer);
                    return;
                }
            },
            None => self.our_offer(),
        };
        self.add_session_timer(now, &invite, &mut ok);
        self.add_capabilities(&mut ok);
        ok.push_header("Content-Type", "application/sdp");
        ok.body = Bytes::from(body);
        let b = self.initial.tx.final_response(now, 200, ok.to_bytes());
        self.send_response(&invite, b);
        self.phase = Phase::Answered;
        self.answered_at = Some(now);
        self.events.push_back(CallEvent::Answered);
    }

    fn add_capabilities(&self, r: &mut Message) {
        r.push_header("Allow", ALLOW);
        r.push_header("Supported", SUPPORTED);
        r.push_header("Accept", ACCEPT);
    }

    /// RFC 4028 §9: echo the interval; pick the refresher if the UAC did not.
    fn add_session_timer(&mut self, now: Instant, req: &Message, resp: &mut Message) {
        let Some((secs, refresher)) = session_expires(req) else {
            // A refresh without Session-Expires turns the timer off (RFC 4028 §9).
            self.session_timer = None;
            return;
        };
        let uac_supports = req.has_option("Supported", "timer");
        let refresher = match refresher.as_deref() {
            Some("uas") => Refresher::Us,
            Some("uac") => Refresher::Peer,
            _ if uac_supports => Refresher::Peer,
            _ => Refresher::Us,
        };
        let tag = if refresher == Refresher::Us {
            "uas"
        } else {
            "uac"
        };
        resp.push_header("Session-Expires", format!("{secs};refresher={tag}"));
        if uac_supports {
            resp.push_header("Require", "timer");
        }
        self.session_timer = Some(SessionTimer::new(now, secs, refresher));
    }

    /// Ends the call once: emits the summary and, if a dialog is up, sends BYE.
    fn end(&mut self, now: Instant, reason: EndReason) {
        if matches!(self.phase, Phase::Ended) {
            return;
        }
        // §13.3.1.4: even an un-ACKed 2xx is ended with BYE.
        let send_bye = self.answered_at.is_some()
            && !matches!(reason, EndReason::RemoteBye | EndReason::Cancelled);
        if let Phase::Ringing { .. } = self.phase {
            // Not answered yet: refuse the INVITE instead of BYE.
            let code = if reason == EndReason::Cancelled {
                487
            } else {
                480
            };
            let inv = self.invite.clone();
            let r = self.reply(&inv, code, false);
            let b = self.initial.tx.final_response(now, code, r.to_bytes());
            self.send_response(&inv, b);
        } else if send_bye {
            self.send_request(now, Method::Bye);
        }
        self.phase = Phase::Ended;
        self.session_timer = None;
        let rtp = self.rtp.as_ref().map(|r| r.stats()).unwrap_or_default();
        self.rtcp_bye = self.rtp.take().and_then(|mut r| r.rtcp_bye(now));
        if let Some(f) = self.pin.as_mut() {
            if !f.is_done() && f.facts().outcome.is_none() {
                f.abandon();
            }
        }
        let summary = CallSummary {
            reason,
            answered: self.answered_at.is_some(),
            duration_ms: (now - self.started).as_millis() as u64,
            rtp,
            digits: self.digit_count,
        };
        let mut facts = self
            .pin
            .as_ref()
            .map(|f| f.facts().clone())
            .unwrap_or_default();
        if facts.outcome.is_none() {
            facts.outcome = Some(flow::Outcome::Abandoned);
        }
        if self.transfer.is_some() && facts.transfer_outcome.is_none() {
            facts.transfer_outcome = Some("caller hung up during the transfer".into());
        }
        self.record = Some(CallRecord {
            call_id: self.dialog.call_id.clone(),
            organization: self.org.name.clone(),
            caller: self.caller.raw().to_string(),
            caller_e164: self.caller.e164().map(str::to_string),
            summary,
            flow: facts,
        });
        self.transfer = None;
        self.refer = None;
        self.events.push_back(CallEvent::Ended(summary));
    }

    fn send_request(&mut self, now: Instant, method: Method) {
        self.send_request_with(now, method, Vec::new());
    }

    /// Sends an in-dialog request with extra headers; returns its branch.
    fn send_request_with(
        &mut self,
        now: Instant,
        method: Method,
        extra: Vec<(String, String)>,
    ) -> String {
        let branch = format!("z9hG4bK{}", hex(&mut self.rng));
        let mut req = self.dialog.request(
            method.clone(),
            &branch,
            self.local_sip,
            self.flow.transport,
            &self.config.sip.user_agent,
        );
        for (n, v) in extra {
            req.push_header(&n, v);
        }
        let data = req.to_bytes();
        let flow = self.request_flow();
        let tx = NonInviteClient::new(
            now,
            branch.clone(),
            data.clone(),
            flow.reliable(),
            self.config.sip.timers,
        );
        self.clients.push((tx, method));
        self.outbox.push_back(SipTransmit { flow, data });
        branch
    }

    /// Starts ending the call from outside (service shutdown).
    pub fn shutdown(&mut self, now: Instant) {
        self.end(now, EndReason::Shutdown);
    }

    /// A SIP message for this call (already routed by Call-ID, Via stamped).
    pub fn handle_sip(&mut self, now: Instant, msg: Message, flow: Flow) {
        if flow.reliable() {
            // Keep answering on the connection the peer uses now.
            self.flow = flow;
        }
        match msg.start.clone() {
            StartLine::Response { code, .. } => self.handle_response(now, &msg, code),
            StartLine::Request { method, .. } => self.handle_request(now, msg, method, flow),
        }
    }

    fn handle_response(&mut self, now: Instant, msg: &Message, code: u16) {
        let Some(branch) = msg.top_via().and_then(|v| v.branch().map(str::to_string)) else {
            return;
        };
        self.client_final(now, &branch, code, false);
    }

    /// Our request with this branch could not be sent: the driver could not open a
    /// connection to its destination. The transaction ends at once and the TU takes it as
    /// a 503 (RFC 3261 §17.1.4, §8.1.3.1) instead of waiting out Timer F (32 s): a REFER
    /// fails over to the flow's next step, a BYE lets the call finish.
    pub fn handle_transport_error(&mut self, now: Instant, branch: &str) {
        self.client_final(now, branch, 503, true);
    }

    /// A final status for the client transaction with `branch`: a response, or a transport
    /// error taken as 503.
    fn client_final(&mut self, now: Instant, branch: &str, code: u16, transport_error: bool) {
        let Some((client, method)) = self.clients.iter_mut().find(|(c, _)| c.branch() == branch)
        else {
            return;
        };
        let Some(code) = client.on_response(now, code) else {
            return;
        };
        let method = method.clone();
        let current_refer = self.transfer.as_ref().is_some_and(|(b, _)| *b == branch);
        if method == Method::Refer && code >= 300 && current_refer {
            // §14.1: 491 means the PBX has a request of its own open (Linphone's INFO):
            // try again after 0–2 s (we did not make the Call-ID), a few times.
            let delay = Duration::from_millis(self.rng.gen_range(0..=2000));
            match self.refer.as_mut() {
                Some(r) if code == 491 && r.retries < MAX_REFER_RETRIES => {
                    r.retries += 1;
                    r.retry_at = Some(now + delay);
                }
                _ if transport_error => {
                    self.transfer_done(now, Err("REFER could not be sent (transport)".into()))
                }
                _ => self.transfer_done(now, Err(format!("REFER answered {code}"))),
            }
        }
        if method == Method::Update && !(200..300).contains(&code) {
            // RFC 4028 §10: a failed refresh (408/481) ends the session.
            if code == 408 || code == 481 {
                self.end(now, EndReason::RefreshFailed);
            }
        }
    }

    fn handle_request(&mut self, now: Instant, req: Message, method: Method, flow: Flow) {
        let branch = req
            .top_via()
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        // Retransmission of a non-INVITE request we already answered.
        if !matches!(method, Method::Invite | Method::Ack) {
            if let Some(n) = self
                .nists
                .iter()
                .find(|n| n.matches(&branch, method.as_str()))
            {
                if let Some(b) = n.on_retransmission() {
                    self.outbox.push_back(SipTransmit {
                        flow: response_flow(&req, flow),
                        data: b,
                    });
                }
                return;
            }
        }
        match method {
            Method::Invite if branch == self.initial.tx.branch() => {
                if let Some(b) = self.initial.tx.on_retransmission() {
                    self.send_response(&req, b);
                }
            }
            Method::Ack => self.handle_ack(now, &req, &branch),
            Method::Cancel => self.handle_cancel(now, &req, &branch, flow),
            _ if !self.dialog.matches(&req) => self.respond(now, &req, flow, 481),
            Method::Invite => self.handle_reinvite(now, req),
            m => {
                let seq = req.cseq().map(|c| c.0).unwrap_or(0);
                if !self.dialog.accept_remote_cseq(seq) {
                    return self.respond(now, &req, flow, 500);
                }
                match m {
                    Method::Bye => {
                        self.respond(now, &req, flow, 200);
                        self.end(now, EndReason::RemoteBye);
                    }
                    Method::Options => self.respond(now, &req, flow, 200),
                    Method::Info => self.handle_info(now, &req, flow),
                    Method::Update => self.handle_update(now, req, flow),
                    Method::Notify => self.handle_notify(now, &req, flow),
                    Method::Other(_) => self.respond(now, &req, flow, 501),
                    _ => self.respond(now, &req, flow, 405),
                }
            }
        }
    }

    /// Answers a non-INVITE request through a new server transaction.
    fn respond(&mut self, now: Instant, req: &Message, flow: Flow, code: u16) {
        let mut r = self.reply(req, code, false);
        if matches!(code, 200 | 405 | 501) {
            r.push_header("Allow", ALLOW);
        }
        if code == 500 {
            r.push_header("Retry-After", "1");
        }
        self.finish_nist(now, req, flow, r);
    }

    fn finish_nist(&mut self, now: Instant, req: &Message, flow: Flow, resp: Message) {
        let branch = req
            .top_via()
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        let method = req
            .method()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default();
        let mut tx = NonInviteServer::new(&branch, &method);
        let data = tx.respond(
            now,
            resp.to_bytes(),
            flow.reliable(),
            &self.config.sip.timers,
        );
        self.nists.push(tx);
        self.outbox.push_back(SipTransmit {
            flow: response_flow(req, flow),
            data,
        });
    }

    fn handle_ack(&mut self, now: Instant, ack: &Message, branch: &str) {
        // ACK to a non-2xx shares the INVITE's branch (§17.2.1).
        if branch == self.initial.tx.branch() {
            self.initial.tx.on_ack_non2xx(now);
            return;
        }
        if let Some(r) = &mut self.reinvite {
            if r.tx.branch() == branch {
                r.tx.on_ack_non2xx(now);
                return;
            }
        }
        if !self.dialog.matches(ack) {
            return;
        }
        let seq = ack.cseq().map(|c| c.0).unwrap_or(0);
        let (si, initial) = if seq == self.initial.cseq && self.initial.tx.awaiting_2xx_ack() {
            (&mut self.initial, true)
        } else {
            match self.reinvite.as_mut() {
                Some(r) if r.cseq == seq && r.tx.awaiting_2xx_ack() => (r, false),
                _ => return,
            }
        };
        si.tx.on_ack_2xx();
        if si.offer_in_2xx {
            si.offer_in_2xx = false;
            let m = &self.config.media;
            let neg =
                Sdp::parse(&ack.body).and_then(|a| sdp::accept_answer(&a, &m.codecs, m.ptime_ms));
            match neg {
                Ok(neg) => self.start_media(now, neg),
                Err(_) if !initial && self.rtp.is_some() => {}
                Err(_) => self.end(now, EndReason::BadAnswer),
            }
        }
        if initial
            && self.transfer.is_none()
            && self.refer.is_some()
            && !matches!(self.phase, Phase::Ended)
        {
            // The REFER that waited for the dialog to be confirmed.
            self.send_refer(now);
        }
    }

    fn handle_cancel(&mut self, now: Instant, cancel: &Message, branch: &str, flow: Flow) {
        if branch != self.initial.tx.branch() {
            return self.respond(now, cancel, flow, 481);
        }
        // 200 to the CANCEL itself (§9.2), then 487 to the INVITE if still pending.
        self.respond(now, cancel, flow, 200);
        if let Phase::Ringing { .. } = self.phase {
            self.end(now, EndReason::Cancelled);
        }
    }

    fn handle_reinvite(&mut self, now: Instant, req: Message) {
        let seq = req.cseq().map(|c| c.0).unwrap_or(0);
        let branch = req
            .top_via()
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        if let Some(r) = &self.reinvite {
            if r.tx.branch() == branch {
                if let Some(b) = r.tx.on_retransmission() {
                    self.send_response(&req, b);
                }
                return;
            }
        }
        let mut tx = InviteServer::new(branch, self.flow.reliable(), self.config.sip.timers);
        let pending = self
            .reinvite
            .as_ref()
            .is_some_and(|r| r.tx.awaiting_2xx_ack())
            || self.initial.tx.awaiting_2xx_ack();
        let ended = matches!(self.phase, Phase::Ended);
        let code = if ended {
            Some(481)
        } else if pending {
            // §14.2: a re-INVITE while another is in progress gets 500 with Retry-After.
            Some(500)
        } else if !self.dialog.accept_remote_cseq(seq) {
            Some(500)
        } else {
            None
        };
        if let Some(code) = code {
            let mut r = self.reply(&req, code, false);
            if code == 500 {
                r.push_header("Retry-After", "1");
            }
            let b = tx.final_response(now, code, r.to_bytes());
            self.send_response(&req, b);
            self.reinvite = Some(ServerInvite {
                tx,
                cseq: seq,
                offer_in_2xx: false,
            });
            return;
        }
        self.dialog.refresh_target(&req);
        let mut ok = self.reply(&req, 200, true);
        let mut offer_in_2xx = false;
        let body = if req.body.is_empty() {
            offer_in_2xx = true;
            Ok(self.our_offer())
        } else {
            Sdp::parse(&req.body)
                .and_then(|o| self.answer_sdp(&o))
                .map(|(neg, body)| {
                    self.start_media(now, neg);
                    body
                })
        };
        let resp = match body {
            Ok(body) => {
                self.add_session_timer(now, &req, &mut ok);
                self.add_capabilities(&mut ok);
                ok.push_header("Content-Type", "application/sdp");
                ok.body = Bytes::from(body);
                ok
            }
            // §14.2: a re-INVITE we cannot accept leaves the old session as it was.
            Err(_) => self.reply(&req, 488, false),
        };
        let code = resp.status().unwrap_or(500);
        let b = tx.final_response(now, code, resp.to_bytes());
        self.send_response(&req, b);
        self.reinvite = Some(ServerInvite {
            tx,
            cseq: seq,
            offer_in_2xx,
        });
    }

    /// NOTIFY for our REFER (RFC 3515 §2.4.5): a message/sipfrag status line says how the
    /// transfer goes; a final one ends it.
    fn handle_notify(&mut self, now: Instant, req: &Message, flow: Flow) {
        let is_refer = req.header("Event").is_some_and(|e| {
            e.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("refer")
        });
        if !is_refer || self.transfer.is_none() {
            // No subscription of ours (§3.2.4 of RFC 6665: 481).
            return self.respond(now, req, flow, 481);
        }
        self.respond(now, req, flow, 200);
        let status = std::str::from_utf8(&req.body)
            .ok()
            .and_then(|b| b.lines().next())
            .and_then(|l| l.strip_prefix("SIP/2.0 "))
            .and_then(|l| l.get(..3))
            .and_then(|c| c.parse::<u16>().ok());
        let terminated = req.header("Subscription-State").is_some_and(|s| {
            s.trim_start()
                .to_ascii_lowercase()
                .starts_with("terminated")
        });
        match status {
            Some(c) if (200..300).contains(&c) => self.transfer_done(now, Ok(())),
            Some(c) if c >= 300 => self.transfer_done(now, Err(format!("NOTIFY sipfrag {c}"))),
            _ if terminated => {
                self.transfer_done(now, Err("subscription ended without a final status".into()))
            }
            _ => {}
        }
    }

    /// INFO: DTMF bodies give a digit (200); other bodies 415, nonsense 400.
    fn handle_info(&mut self, now: Instant, req: &Message, flow: Flow) {
        if req.body.is_empty() {
            // An empty INFO is a keep-alive some PBXs send.
            return self.respond(now, req, flow, 200);
        }
        match dtmf_info::parse(req.content_type(), &req.body) {
            InfoDtmf::Digit(d, _) => {
                self.respond(now, req, flow, 200);
                if !matches!(self.phase, Phase::Ended) {
                    self.digits.on_info(now, d);
                    self.drain_digits(now);
                }
            }
            InfoDtmf::Unsupported => {
                let mut r = self.reply(req, 415, false);
                r.push_header("Accept", "application/dtmf-relay, application/dtmf");
                self.finish_nist(now, req, flow, r);
            }
            InfoDtmf::Malformed => self.respond(now, req, flow, 400),
        }
    }

    /// Media is up: the PIN flow starts, and the CRM lookup with it (while the prompt plays).
    fn start_flow(&mut self, now: Instant) {
        if self.pin.is_some() || matches!(self.phase, Phase::Ended) {
            return;
        }
        let remote_verify = self
            .config
            .crm_for(&self.org)
            .is_some_and(|c| c.is_verify());
        let number = self.caller.lookup().cloned();
        if let Some(n) = number.as_ref().filter(|_| !remote_verify) {
            self.events.push_back(CallEvent::CrmLookup {
                organization: self.org.name.clone(),
                number: n.clone(),
            });
        }
        let asked = number.as_ref().filter(|_| !remote_verify).map(|_| now);
        self.pin = Some(PinFlow::start(
            now,
            self.org.clone(),
            number.as_ref().map(|n| n.key()),
            asked,
            self.lockout,
            remote_verify,
        ));
        self.run_flow(now);
    }

    /// Carries out what the flow asked for.
    fn run_flow(&mut self, now: Instant) {
        while let Some(action) = self.pin.as_mut().and_then(|f| f.poll_action()) {
            match action {
                FlowAction::Play(names) => {
                    let own = self.config.org_prompts.get(&self.org.name);
                    let interruptible = &self.config.prompts.interruptible;
                    let items: Vec<PlayItem> = names
                        .iter()
                        .filter_map(|n| {
                            let p = match own {
                                Some(o) => o.get_or(n, &self.config.prompt_set),
                                None => self.config.prompt_set.get(n),
                            }?;
                            Some(PlayItem {
                                interruptible: interruptible.iter().any(|i| i == n),
                                ..PlayItem::new(p)
                            })
                        })
                        .collect();
                    let empty = items.is_empty();
                    let id = self.player.play(items);
                    if empty {
                        // Nothing to play (no prompts loaded): the list is done at once.
                        self.awaited_list = None;
                        if let Some(f) = self.pin.as_mut() {
                            f.on_prompts_done(now);
                        }
                    } else {
                        self.awaited_list = Some(id);
                    }
                }
                FlowAction::Refer { uri, headers } => {
                    self.refer = Some(ReferAttempt {
                        uri,
                        headers,
                        retries: 0,
                        retry_at: None,
                    });
                    // A verdict made at answer (a withheld or locked number) waits for the
                    // ACK of our 200: the dialog is confirmed only then, and the REFER
                    // must never overtake the 200 on the wire (handle_ack sends it).
                    let confirmed =
                        self.answered_at.is_some() && !self.initial.tx.awaiting_2xx_ack();
                    if confirmed {
                        self.send_refer(now);
                    }
                }
                FlowAction::Check(c) => self.events.push_back(CallEvent::CheckPin(c)),
                FlowAction::LockCheck(keys) => self.events.push_back(CallEvent::LockCheck(keys)),
                FlowAction::Verify(pin) => self.events.push_back(CallEvent::CrmVerify {
                    organization: self.org.name.clone(),
                    caller: self
                        .caller
                        .lookup()
                        .map(|n| n.key())
                        .unwrap_or("")
                        .to_string(),
                    pin,
                }),
                FlowAction::Hangup => {
                    let transferred = self.pin.as_ref().is_some_and(|f| f.facts().transferred);
                    let reason = if transferred {
                        EndReason::Transferred
                    } else {
                        EndReason::FlowEnded
                    };
                    self.end(now, reason);
                }
            }
        }
    }

    /// Sends (or sends again) the REFER in `self.refer`.
    fn send_refer(&mut self, now: Instant) {
        let Some(r) = self.refer.as_mut() else { return };
        r.retry_at = None;
        let referred_by = format!("<sip:pincoderouting@{}>", self.local_sip);
        let mut extra = vec![
            ("Refer-To".to_string(), format!("<{}>", r.uri)),
            ("Referred-By".to_string(), referred_by),
        ];
        extra.extend(r.headers.iter().cloned());
        let branch = self.send_request_with(now, Method::Refer, extra);
        // The transfer's deadline runs from the first REFER, not from each retry.
        let deadline = match &self.transfer {
            Some((_, d)) => *d,
            None => now + self.org.transfer_timeout,
        };
        self.transfer = Some((branch, deadline));
    }

    fn transfer_done(&mut self, now: Instant, result: Result<(), String>) {
        if self.transfer.take().is_none() {
            return;
        }
        self.refer = None;
        if let Some(f) = self.pin.as_mut() {
            f.on_transfer(result);
        }
        self.run_flow(now);
    }

    /// The answer to `CallEvent::LockCheck`.
    pub fn handle_lock_state(&mut self, now: Instant, state: verdict::LockState) {
        if let Some(f) = self.pin.as_mut() {
            f.on_lock_state(now, state);
        }
        self.run_flow(now);
    }

    /// The answer to `CallEvent::CheckPin`.
    pub fn handle_check(&mut self, now: Instant, result: verdict::CheckResult) {
        if let Some(f) = self.pin.as_mut() {
            f.on_check(now, result);
        }
        self.run_flow(now);
    }

    /// The verify webhook's answer to `CallEvent::CrmVerify`.
    pub fn handle_verify(&mut self, now: Instant, reply: crate::crm::VerifyReply) {
        if let Some(f) = self.pin.as_mut() {
            f.on_verify(now, reply);
        }
        self.run_flow(now);
    }

    /// The CRM's answer to `CallEvent::CrmLookup`.
    pub fn handle_crm(&mut self, now: Instant, reply: CrmReply) {
        if let Some(f) = self.pin.as_mut() {
            f.on_crm(now, reply);
        }
        self.run_flow(now);
    }

    fn drain_digits(&mut self, now: Instant) {
        while let Some(d) = self.digits.poll_digit() {
            self.digit_count += 1;
            // Barge-in: the first key stops an interruptible prompt within this frame.
            self.player.barge_in();
            if let Some(f) = self.pin.as_mut() {
                f.on_digit(now, &d);
            }
            // The flow's answer to the key (a re-prompt, say) is the list it now waits on,
            // before the cut list's end is read below.
            self.run_flow(now);
            self.events.push_back(CallEvent::Digit(d));
        }
        // Runs the flow's actions too.
        self.drain_player(now);
    }

    fn drain_player(&mut self, now: Instant) {
        while let Some(e) = self.player.poll_event() {
            if let PlayerEvent::ListDone(id) = e {
                // Only the end of the list the flow is waiting on; a list that was cut
                // by a key and replaced reports an end that is not the new list's.
                if self.awaited_list == Some(id) {
                    self.awaited_list = None;
                    if let Some(f) = self.pin.as_mut() {
                        f.on_prompts_done(now);
                    }
                }
            }
            self.events.push_back(CallEvent::Prompt(e));
        }
        self.run_flow(now);
    }

    /// The end-of-call record (set once the call has ended).
    pub fn record(&self) -> Option<&CallRecord> {
        self.record.as_ref()
    }

    /// UPDATE (RFC 3311): an SDP offer or a bare session refresh.
    fn handle_update(&mut self, now: Instant, req: Message, flow: Flow) {
        if matches!(self.phase, Phase::Ended) {
            return self.respond(now, &req, flow, 481);
        }
        self.dialog.refresh_target(&req);
        let mut ok = self.reply(&req, 200, true);
        if !req.body.is_empty() {
            match Sdp::parse(&req.body).and_then(|o| self.answer_sdp(&o)) {
                Ok((neg, body)) => {
                    self.start_media(now, neg);
                    ok.push_header("Content-Type", "application/sdp");
                    ok.body = Bytes::from(body);
                }
                Err(_) => return self.respond(now, &req, flow, 488),
            }
        }
        self.add_session_timer(now, &req, &mut ok);
        ok.push_header("Allow", ALLOW);
        self.finish_nist(now, &req, flow, ok);
    }

    /// An RTP datagram on this call's media socket.
    pub fn handle_rtp(&mut self, now: Instant, src: SocketAddr, data: &[u8]) {
        let Some(rtp) = &mut self.rtp else { return };
        if rtp.is_muxed_rtcp(data) {
            return rtp.handle_rtcp(now, src, data, RtcpPort::Rtp);
        }
        match rtp.handle_packet(now, src, data) {
            Ok(RtpPayload::Audio(p)) => self.digits.on_audio(now, p),
            Ok(RtpPayload::Event {
                payload,
                timestamp,
                marker,
            }) => self.digits.on_event(now, timestamp, marker, payload),
            Ok(RtpPayload::ComfortNoise) | Err(_) => {}
        }
        self.drain_digits(now);
    }

    /// A datagram on this call's RTCP socket (RTP port + 1).
    pub fn handle_rtcp(&mut self, now: Instant, src: SocketAddr, data: &[u8]) {
        if let Some(rtp) = &mut self.rtp {
            rtp.handle_rtcp(now, src, data, RtcpPort::Rtcp);
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Phase::Ringing { answer_at } = self.phase {
            if now >= answer_at {
                self.answer(now);
            }
        }
        match self.initial.tx.handle_timeout(now) {
            Some(IstEvent::Retransmit(b)) => {
                let inv = self.invite.clone();
                self.send_response(&inv, b);
            }
            Some(IstEvent::AckTimeout2xx) => self.end(now, EndReason::AckTimeout),
            _ => {}
        }
        if let Some(r) = &mut self.reinvite {
            match r.tx.handle_timeout(now) {
                Some(IstEvent::Retransmit(b)) => {
                    let flow = self.flow;
                    // Re-INVITE responses go where the INVITE's did.
                    self.outbox.push_back(SipTransmit {
                        flow: response_flow(&self.invite, flow),
                        data: b,
                    });
                }
                Some(IstEvent::AckTimeout2xx) => self.end(now, EndReason::AckTimeout),
                _ => {}
            }
        }
        for n in &mut self.nists {
            n.handle_timeout(now);
        }
        self.nists.retain(|n| !n.is_terminated());
        let mut timeouts = Vec::new();
        // Worked out only when a request is outstanding: this runs for every media frame,
        // and the next hop parses the route set.
        let flow = if self.clients.is_empty() {
            self.flow
        } else {
            self.request_flow()
        };
        for (c, m) in &mut self.clients {
            match c.handle_timeout(now) {
                Some(NictEvent::Retransmit(data)) => {
                    self.outbox.push_back(SipTransmit { flow, data });
                }
                Some(NictEvent::Timeout) => timeouts.push(m.clone()),
                None => {}
            }
        }
        self.clients.retain(|(c, _)| !c.is_terminated());
        if timeouts.contains(&Method::Refer) {
            self.transfer_done(now, Err("REFER timed out".into()));
        }
        if timeouts.contains(&Method::Update) {
            self.end(now, EndReason::RefreshFailed);
        }
        if let Some(st) = &mut self.session_timer {
            match st.handle_timeout(now) {
                Some(session_timer::Action::Refresh) => self.send_request(now, Method::Update),
                Some(session_timer::Action::Expired) => self.end(now, EndReason::SessionExpired),
                None => {}
            }
        }
        if let Some(rtp) = &self.rtp {
            if rtp.expects_media() && now >= rtp.last_rx() + self.config.media.media_timeout {
                self.end(now, EndReason::MediaTimeout);
            }
        }
        if now >= self.started + self.config.sip.max_call {
            self.end(now, EndReason::MaxDuration);
        }
        self.digits.handle_timeout(now);
        self.drain_digits(now);
        if let Some(f) = self.pin.as_mut() {
            if f.poll_timeout().is_some_and(|t| now >= t) {
                f.handle_timeout(now);
            }
        }
        if self
            .refer
            .as_ref()
            .and_then(|r| r.retry_at)
            .is_some_and(|t| now >= t)
        {
            self.send_refer(now);
        }
        if self.transfer.as_ref().is_some_and(|(_, t)| now >= *t) {
            self.transfer_done(now, Err("no final NOTIFY in time".into()));
        }
        self.run_flow(now);
    }

    /// The next SIP message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<SipTransmit> {
        self.outbox.pop_front()
    }

    /// Writes the next due RTP packet into `buf`; `(len, destination)`.
    #[must_use]
    pub fn poll_rtp(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let out = self.rtp.as_mut()?.poll_transmit(now, buf, &mut self.player);
        self.drain_player(now);
        out
    }

    /// Writes the next due RTCP report (or the final BYE) into `buf`: its length, where it
    /// goes, and from which socket (RTP with rtcp-mux, else RTCP).
    #[must_use]
    pub fn poll_rtcp(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<(usize, SocketAddr, RtcpPort)> {
        if let Some(bye) = self.rtcp_bye.take() {
            let b = bye.bytes();
            buf.get_mut(..b.len())?.copy_from_slice(b);
            return Some((b.len(), bye.dest, bye.port));
        }
        self.rtp.as_mut()?.poll_rtcp(now, buf)
    }

    /// Where the call is, as an index into `PROGRESS`.
    pub fn progress(&self) -> u8 {
        match (&self.phase, &self.pin) {
            (Phase::Ringing { .. }, _) => 0,
            (Phase::Ended, _) => 7,
            (Phase::Answered, Some(f)) => f.progress(),
            (Phase::Answered, None) => 1,
        }
    }

    /// How many digits the caller has entered (never which).
    pub fn digit_count(&self) -> u32 {
        self.digit_count
    }

    /// Is SIP, an event or the RTCP BYE waiting to be polled?
    pub fn has_output(&self) -> bool {
        !self.outbox.is_empty() || !self.events.is_empty() || self.rtcp_bye.is_some()
    }

    /// Is the initial INVITE still without a final response?
    pub fn invite_pending(&self) -> bool {
        self.initial.tx.is_proceeding()
    }

    /// A BYE for this dialog that a supervisor can send if the call's own code can no
    /// longer run (after a panic). Its CSeq jumps well ahead of ours so it is in order
    /// even if a few more requests go out before it is used (§12.2.2 allows gaps).
    pub fn recovery_bye(&self) -> Option<SipTransmit> {
        if self.answered_at.is_none() || matches!(self.phase, Phase::Ended) {
            return None;
        }
        let mut dialog = self.dialog.clone();
        dialog.skip_cseq(1000);
        let branch = format!("z9hG4bK{:016x}rb", self.media.session_id);
        let req = dialog.request(
            Method::Bye,
            &branch,
            self.local_sip,
            self.flow.transport,
            &self.config.sip.user_agent,
        );
        Some(SipTransmit {
            flow: self.request_flow(),
            data: req.to_bytes(),
        })
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// The earliest moment the call needs `handle_timeout`, and why.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, Wake)> {
        let mut best: Option<(Instant, Wake)> = None;
        let mut consider = |c: Option<(Instant, Wake)>| {
            if let Some(c) = c {
                if best.is_none_or(|b| c.0 < b.0) {
                    best = Some(c);
                }
            }
        };
        if let Phase::Ringing { answer_at } = self.phase {
            consider(Some((answer_at, Wake::Answer)));
        }
        if !matches!(self.phase, Phase::Ended) {
            consider(Some((
                self.started + self.config.sip.max_call,
                Wake::MaxDuration,
            )));
        }
        consider(
            self.initial
                .tx
                .poll_timeout()
                .map(|(t, w)| (t, Wake::Transaction(w))),
        );
        if let Some(r) = &self.reinvite {
            consider(r.tx.poll_timeout().map(|(t, w)| (t, Wake::Transaction(w))));
        }
        for n in &self.nists {
            consider(n.poll_timeout().map(|(t, w)| (t, Wake::Transaction(w))));
        }
        for (c, _) in &self.clients {
            consider(c.poll_timeout().map(|(t, w)| (t, Wake::Transaction(w))));
        }
        if let Some(st) = &self.session_timer {
            consider(Some((st.deadline(), Wake::SessionTimer)));
        }
        consider(self.digits.poll_timeout().map(|t| (t, Wake::DigitTimeout)));
        consider(
            self.pin
                .as_ref()
                .and_then(|f| f.poll_timeout())
                .map(|t| (t, Wake::Flow)),
        );
        consider(self.transfer.as_ref().map(|(_, t)| (*t, Wake::Flow)));
        consider(
            self.refer
                .as_ref()
                .and_then(|r| r.retry_at)
                .map(|t| (t, Wake::Flow)),
        );
        if let Some(rtp) = &self.rtp {
            consider(rtp.poll_timeout().map(|t| (t, Wake::MediaFrame)));
            consider(rtp.poll_rtcp_timeout().map(|t| (t, Wake::Rtcp)));
            if rtp.expects_media() {
                consider(Some((
                    rtp.last_rx() + self.config.media.media_timeout,
                    Wake::MediaTimeout,
                )));
            }
        }
        best
    }

    /// Ended, and every transaction has finished: the driver may drop the call.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Ended)
            && self.clients.is_empty()
            && self.nists.is_empty()
            && self.initial.tx.is_quiet()
            && self.reinvite.as_ref().is_none_or(|r| r.tx.is_quiet())
    }

    /// Where the peer's RTP and (separate) RTCP come from per its SDP, once negotiated.
    pub fn media_sources(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        self.rtp
            .as_ref()
            .map(|r| r.sdp_sources())
            .unwrap_or_default()
    }

    /// RTP counters so far.
    pub fn rtp_stats(&self) -> Option<RtpStats> {
        self.rtp.as_ref().map(|r| r.stats())
    }

    /// How long the call has been up.
    pub fn age(&self, now: Instant) -> Duration {
        now - self.started
    }
}

impl StartLine {
    /// The user part of a request's URI (the number or name the PBX dialled).
    pub fn request_user(self) -> Option<String> {
        match self {
            StartLine::Request { uri, .. } => crate::sip::msg::Uri::parse(&uri)?.user,
            StartLine::Response { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests;
