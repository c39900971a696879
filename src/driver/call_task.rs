//! What the driver keeps per call: its RTP and RTCP sockets (an even port and the odd one
//! above it), the `CallGuard`, and `DriverIo`, the driver's side of a drain. The calls
//! themselves run on the call loops (`shard`), many to a loop.
//!
//! Admission happens on the receive task (`admit`: a table entry, the active count), but
//! everything that runs the call's own code runs on its loop, under a `CallGuard`:
//! if that code panics, the guard ends this call only — counts and logs it with its
//! Call-ID, answers an unanswered INVITE 500 (or sends the BYE an answered call had ready),
//! writes its audit record, and gives back its port, table entry and active count.

use super::metrics::{
    AdapterLabels, CallLabels, CrmLabels, DirectionLabels, ResultLabels, SourceLabels,
};
use super::shard::{CallHandle, LoopMsg, MediaOut, NewCall};
use super::{send_sip_now, CallEntry, CallInput, CallStatus, Shared};
use crate::call::run::CallIo;
use crate::call::{Call, CallEvent};
use crate::config::Config;
use crate::crm::CrmAdapter;
use crate::media::rtcp::RtcpPort;
use crate::sip::build::{response, response_flow, stateless_tag};
use crate::sip::endpoint::Admission;
use crate::sip::msg::Message;
use crate::sip::{Flow, SipTransmit};
use dashmap::mapref::entry::Entry;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tracing::{debug, error, info, warn};

/// A call's media sockets: RTP on an even port from the pool, RTCP on the port above it
/// (RFC 3550 §11). Registered with the reactor for reading only: sending is a plain
/// non-blocking `sendto`, and write interest would have every sent packet's release wake
/// the reactor (a `sock_wfree` wake-up and an epoll event per frame, ~10 % of the CPU at
/// 2,000 calls).
pub(crate) struct MediaSockets {
    pub rtp: AsyncFd<std::net::UdpSocket>,
    pub rtcp: AsyncFd<std::net::UdpSocket>,
}

fn bind_udp(config: &Config, port: u16) -> std::io::Result<AsyncFd<std::net::UdpSocket>> {
    let s = std::net::UdpSocket::bind(SocketAddr::new(config.media.rtp_bind, port))?;
    s.set_nonblocking(true)?;
    super::marking::mark_media(
        socket2::SockRef::from(&s),
        config.media.dscp,
        config.media.rtp_bind.is_ipv6(),
    );
    // SAFETY: the socket owns its file descriptor, and the `AsyncFd` owns the socket: the
    // descriptor is neither closed nor replaced while registered (it is deregistered when
    // the `AsyncFd` drops, before the socket closes it).
    unsafe { AsyncFd::register_with_interest(s, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

/// Binds RTP and RTCP on a port pair from the pool (skipping pairs something else holds
/// either half of: the pair goes back to the pool and the next one is tried).
pub(crate) fn bind_rtp(shared: &Shared, config: &Config) -> Option<(MediaSockets, u16)> {
    for _ in 0..16 {
        let port = shared.ports.take()?;
        let bound = bind_udp(config, port).and_then(|rtp| {
            let rtcp_port = port.checked_add(1).ok_or(std::io::ErrorKind::AddrInUse)?;
            Ok(MediaSockets {
                rtp,
                rtcp: bind_udp(config, rtcp_port)?,
            })
        });
        match bound {
            Ok(s) => return Some((s, port)),
            Err(e) => {
                debug!(port, error = %e, "rtp/rtcp port pair busy, trying the next");
                shared.ports.give_back(port);
            }
        }
    }
    None
}

/// What a call holds in the shared state, given back however its task ends — normally, or
/// by a panic in the call's code.
pub(crate) struct CallGuard {
    pub(crate) shared: Arc<Shared>,
    pub(crate) call_id: String,
    /// The RTP port, while the call holds it.
    pub(crate) port: Option<u16>,
    /// Counted in `Shared::active` and the gate's calls per source (until the call ends).
    pub(crate) active: bool,
    /// Where the INVITE came from (`Admission::source`; the gate counts calls per source).
    pub(crate) source: std::net::IpAddr,
    /// The INVITE and its flow, until it has a final response.
    pub(crate) unanswered: Option<(Message, Flow)>,
    /// A BYE ready for an answered call whose code can no longer send one.
    pub(crate) bye: Option<SipTransmit>,
    /// The call's audit record has been written.
    pub(crate) audited: bool,
    pub(crate) organization: String,
    pub(crate) caller: String,
    /// What `/calls` shows.
    pub(crate) status: Arc<CallStatus>,
    /// RTP counters already added to the metrics.
    pub(crate) rtp_flushed: crate::media::rtp::RtpStats,
    /// The call's code panicked (caught by its loop): the drop ends the call as a panic.
    pub(crate) panicked: bool,
}

impl CallGuard {
    /// Refuses the call before it was built: `code` (with Retry-After for 503) to the
    /// INVITE and the call's audit record, with `reason` (never the caller's digits).
    pub(crate) fn refuse(&mut self, code: u16, reason: &str) {
        if code == 503 {
            self.shared.metrics.overload_rejections.inc();
        }
        self.answer_unanswered(code);
        self.audit_abandoned(reason, Some(code));
    }

    /// Answers the INVITE with `code` if it has no final response yet (Retry-After with
    /// 503). `false` if it already had one.
    pub(crate) fn answer_unanswered(&mut self, code: u16) -> bool {
        let Some((invite, flow)) = self.unanswered.take() else {
            return false;
        };
        let config = self.shared.config.load();
        let tag = stateless_tag(&invite);
        let mut r = response(&invite, code, Some(&tag), &config.sip.user_agent);
        if code == 503 {
            r.push_header("Retry-After", config.sip.retry_after_secs.to_string());
        }
        send_sip_now(
            &self.shared,
            SipTransmit {
                flow: response_flow(&invite, flow),
                data: r.to_bytes(),
            },
        );
        true
    }

    /// The audit record (and the calls metric) of a call that ended without its flow's own
    /// record, once.
    fn audit_abandoned(&mut self, reason: &str, sip_status: Option<u16>) {
        if std::mem::replace(&mut self.audited, true) {
            return;
        }
        self.shared
            .metrics
            .calls
            .get_or_create(&CallLabels {
                organization: self.organization.clone(),
                outcome: "abandoned".into(),
            })
            .inc();
        let mut record = serde_json::json!({
            "call_id": self.call_id,
            "organization": self.organization,
            "caller": self.caller,
            "reason": reason,
            "outcome": "abandoned",
        });
        if let (Some(code), Some(m)) = (sip_status, record.as_object_mut()) {
            m.insert("sip_status".into(), code.into());
        }
        self.shared.audit.write("call", &record);
    }

    /// Gives the RTP port back (the socket itself is dropped by its owner).
    pub(crate) fn release_port(&mut self) {
        if let Some(p) = self.port.take() {
            self.shared.ports.give_back(p);
        }
    }

    pub(crate) fn release_active(&mut self) {
        if std::mem::take(&mut self.active) {
            self.shared.active.fetch_sub(1, Ordering::Relaxed);
            self.shared.gate().call_ended(self.source);
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if std::thread::panicking() || self.panicked {
            let n = self.shared.metrics.calls_panicked.inc() + 1;
            error!(
                call_id = %self.call_id,
                rtp_port = self.port,
                calls_panicked = n,
                "call panicked: this call ended, its port and entry released"
            );
            if !self.answer_unanswered(500) {
                if let Some(bye) = self.bye.take() {
                    send_sip_now(&self.shared, bye);
                }
            }
            self.audit_abandoned("internal_error", None);
        }
        self.release_port();
        self.release_active();
        self.shared.calls.remove(&self.call_id);
    }
}

/// Takes an admitted INVITE on the receive task: enters it in the call table (so a
/// retransmission finds it) and hands it to a call loop (round robin), where the call
/// itself is built.
pub(crate) fn admit(shared: &Arc<Shared>, config: Arc<Config>, adm: Admission, flow: Flow) {
    let call_id = adm.invite.call_id().to_string();
    let n = shared.loops.len().max(1);
    let pick = shared.next_loop.fetch_add(1, Ordering::Relaxed) % n;
    let Some(tx) = shared.loops.get(pick).cloned() else {
        return;
    };
    let key = shared.next_key.fetch_add(1, Ordering::Relaxed);
    let handle = CallHandle { tx, key };
    let status = Arc::new(CallStatus {
        organization: adm.org.name.clone(),
        started: Instant::now(),
        state: Default::default(),
        digits: Default::default(),
    });
    match shared.calls.entry(call_id.clone()) {
        Entry::Occupied(e) => {
            // Another task created this call first (same INVITE on two transports).
            let _ = e.get().tx.try_send(CallInput::Sip(adm.invite, flow));
            return;
        }
        Entry::Vacant(v) => {
            v.insert(CallEntry {
                tx: handle.clone(),
                status: status.clone(),
            });
        }
    }
    shared.active.fetch_add(1, Ordering::Relaxed);
    // Calls per source count the effective source: behind a proxy, each PBX apart.
    shared.gate().call_started(adm.source);
    shared.calls_total.fetch_add(1, Ordering::Relaxed);
    let guard = CallGuard {
        shared: shared.clone(),
        call_id,
        port: None,
        active: true,
        source: adm.source,
        unanswered: Some((adm.invite.clone(), flow)),
        bye: None,
        audited: false,
        organization: adm.org.name.clone(),
        caller: adm.caller.raw().to_string(),
        status,
        rtp_flushed: Default::default(),
        panicked: false,
    };
    let new = Box::new(NewCall {
        key,
        guard,
        config,
        adm,
        flow,
    });
    if let Err(e) = handle.tx.try_send(LoopMsg::New(new)) {
        // The loop is this far behind (or gone): refuse rather than queue without end.
        if let LoopMsg::New(mut new) = e.into_inner() {
            warn!(call_id = %new.guard.call_id, "call loop busy: refusing the call");
            new.guard.refuse(503, "overloaded");
        }
    }
}

/// Test-only fault injection: panics at `point` for a Call-ID `fault-panic-<point>-…` when
/// the environment has `PINCODEROUTING_FAULT_INJECTION` set. Compiled into debug builds
/// only, so the black-box tests can prove a panic ends one call and nothing else.
#[cfg(debug_assertions)]
pub(crate) fn fault_point(call_id: &str, point: &str) {
    let hit = call_id
        .strip_prefix("fault-panic-")
        .is_some_and(|rest| rest.starts_with(point));
    if hit && std::env::var_os("PINCODEROUTING_FAULT_INJECTION").is_some() {
        #[allow(clippy::panic)] // Invariant: the whole point; tests only (see above).
        {
            panic!("fault injection at {point}");
        }
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn fault_point(_call_id: &str, _point: &str) {}

/// The driver's side of a drain: SIP goes out at once on its flow, RTP and RTCP on the
/// call's sockets, events are carried out (CRM requests start here).
pub(crate) struct DriverIo<'a> {
    pub g: &'a mut CallGuard,
    pub out: MediaOut<'a>,
    pub inbox: &'a CallHandle,
    pub ended: bool,
}

impl CallIo for DriverIo<'_> {
    fn sip(&mut self, t: SipTransmit) {
        send_sip_now(&self.g.shared, t);
    }

    fn rtp(&mut self, data: &[u8], dest: SocketAddr) {
        match &mut self.out {
            // RTP is lossy by nature: a full socket buffer drops this frame, never blocks.
            MediaOut::Own(s) => {
                if let Err(e) = s.rtp.get_ref().send_to(data, dest) {
                    debug!(error = %e, "rtp send failed");
                }
            }
            // Leaves with the loop's other frames at the end of this turn.
            MediaOut::Shared(o) => o.batch.push(&o.rtp, data, dest),
            MediaOut::Ended => {}
        }
    }

    fn rtcp(&mut self, data: &[u8], dest: SocketAddr, port: RtcpPort) {
        let r = match (&mut self.out, port) {
            (MediaOut::Own(s), RtcpPort::Rtp) => s.rtp.get_ref().send_to(data, dest),
            (MediaOut::Own(s), RtcpPort::Rtcp) => s.rtcp.get_ref().send_to(data, dest),
            (MediaOut::Shared(o), RtcpPort::Rtp) => {
                o.batch.push(&o.rtp, data, dest);
                Ok(data.len())
            }
            (MediaOut::Shared(o), RtcpPort::Rtcp) => o.rtcp.send_to(data, dest),
            (MediaOut::Ended, _) => Ok(0),
        };
        if let Err(e) = r {
            debug!(error = %e, "rtcp send failed");
        }
    }

    fn event(&mut self, call: &mut Call, now: Instant, ev: CallEvent) {
        match ev {
            CallEvent::Answered => {
                info!("answered");
                self.g.bye = call.recovery_bye();
            }
            // Never the digit: only that one arrived, and from where.
            CallEvent::Digit(d) => {
                debug!(source = d.source.as_str(), "digit received");
                self.g
                    .shared
                    .metrics
                    .digits
                    .get_or_create(&SourceLabels {
                        source: d.source.as_str(),
                    })
                    .inc();
            }
            CallEvent::Prompt(p) => debug!(event = ?p, "prompt"),
            CallEvent::CrmVerify {
                organization,
                caller,
                pin,
            } => {
                let config = self.g.shared.config.load();
                match crm_of(&config, &organization) {
                    Some(CrmAdapter::Verify(v)) => {
                        let (v, inbox) = (v.clone(), self.inbox.clone());
                        let call_id = call.call_id().to_string();
                        let shared = self.g.shared.clone();
                        self.g.shared.rt.spawn(async move {
                            let asked = Instant::now();
                            let reply = v.verify(&organization, &caller, &pin, &call_id).await;
                            let outcome = match &reply {
                                crate::crm::VerifyReply::Verified { .. } => "verified",
                                crate::crm::VerifyReply::Rejected { .. } => "rejected",
                                crate::crm::VerifyReply::Error(_) => "error",
                            };
                            crm_done(&shared, "http_verify", outcome, asked);
                            let _ = inbox.send(CallInput::Verify(reply)).await;
                        });
                    }
                    _ => call.handle_verify(
                        now,
                        crate::crm::VerifyReply::Error("no verify webhook".into()),
                    ),
                }
            }
            CallEvent::CheckPin(check) => {
                // A plain comparison against the in-memory store is settled here, so the
                // REFER leaves in the step that took the `#`. The lockout store may be a
                // network away and argon2 takes milliseconds of CPU: never on the call loop.
                use super::lockout_store::{settle_now, Settle};
                let check = match settle_now(&self.g.shared.lockout, now, check) {
                    Settle::Done(settled) => return call.handle_check(now, settled),
                    Settle::Wait(check) => check,
                };
                let (inbox, shared) = (self.inbox.clone(), self.g.shared.clone());
                self.g.shared.rt.spawn(async move {
                    let r =
                        super::lockout_store::settle(&shared.lockout, &shared.costly_checks, check)
                            .await;
                    let _ = inbox.send(CallInput::Checked(r)).await;
                });
            }
            CallEvent::LockCheck(keys) => match &self.g.shared.lockout {
                // The in-memory store answers at once (before the first prompt frame).
                super::lockout_store::LockoutStore::Memory(m) => {
                    let state = super::lockout_store::memory_lock_state(m, &keys);
                    call.handle_lock_state(now, state);
                }
                _ => {
                    let (inbox, shared) = (self.inbox.clone(), self.g.shared.clone());
                    self.g.shared.rt.spawn(async move {
                        let state = super::lockout_store::lock_state(&shared.lockout, &keys).await;
                        let _ = inbox.send(CallInput::LockState(state)).await;
                    });
                }
            },
            CallEvent::CrmLookup {
                organization,
                number,
            } => {
                let config = self.g.shared.config.load();
                match crm_of(&config, &organization) {
                    // HTTP adapters answer through the call's inbox, while the prompt plays.
                    Some(CrmAdapter::Lookup(http)) => {
                        let (http, inbox) = (http.clone(), self.inbox.clone());
                        let shared = self.g.shared.clone();
                        let call_id = call.call_id().to_string();
                        self.g.shared.rt.spawn(async move {
                            let asked = Instant::now();
                            let reply = http.lookup(&organization, &number).await;
                            crm_done(&shared, "http_lookup", crm_outcome(&reply), asked);
                            // Why (a timeout, HTTP 429, "contact 7: PIN field is empty"):
                            // the adapter's errors never hold a PIN or a secret.
                            if let crate::crm::CrmReply::Error(e) = &reply {
                                warn!(call_id, organization, error = %e, "CRM lookup failed");
                            }
                            let _ = inbox.send(CallInput::Crm(reply)).await;
                        });
                    }
                    // The embedded file CRM answers at once.
                    Some(CrmAdapter::File(dir)) => {
                        let asked = Instant::now();
                        let reply = dir.lookup(&organization, &number);
                        crm_done(&self.g.shared, "file", crm_outcome(&reply), asked);
                        call.handle_crm(now, reply);
                    }
                    Some(CrmAdapter::Verify(_)) | None => call.handle_crm(
                        now,
                        crate::crm::CrmReply::Error("no CRM for this organization".into()),
                    ),
                }
            }
            CallEvent::Ended(s) => {
                self.ended = true;
                self.g.bye = None;
                if let Some(r) = call.record() {
                    self.g.shared.audit.write("call", r);
                    self.g.audited = true;
                    let m = &self.g.shared.metrics;
                    let outcome = r.flow.outcome.map(|o| o.as_str()).unwrap_or("abandoned");
                    m.calls
                        .get_or_create(&CallLabels {
                            organization: r.organization.clone(),
                            outcome: outcome.to_string(),
                        })
                        .inc();
                    if let Some(ms) = r.flow.entry_to_refer_ms {
                        m.entry_to_refer.observe(ms as f64 / 1000.0);
                    }
                    if r.flow.transfer_target.is_some() {
                        let result = if r.flow.transferred {
                            "transferred"
                        } else {
                            "failed"
                        };
                        m.refers.get_or_create(&ResultLabels { result }).inc();
                    }
                }
                self.g.flush_rtp(&s.rtp);
                // The log line comes last: once it is written, the audit record and the
                // counters of this call are too (what an operator or a test reads next).
                info!(
                    reason = ?s.reason,
                    answered = s.answered,
                    duration_ms = s.duration_ms,
                    rtp_rx = s.rtp.rx_packets,
                    rtp_rx_ignored = s.rtp.rx_ignored,
                    rtp_rx_wrong_source = s.rtp.rx_wrong_source,
                    rtp_tx = s.rtp.tx_packets,
                    rtp_late_skipped = s.rtp.tx_late_skipped,
                    rtcp_rx = s.rtp.rtcp.rx,
                    rtcp_tx = s.rtp.rtcp.tx,
                    digit_count = s.digits,
                    "call ended"
                );
            }
        }
    }
}

/// The CRM of an organization, by its name.
fn crm_of<'a>(config: &'a Config, organization: &str) -> Option<&'a CrmAdapter> {
    let org = config
        .organizations
        .iter()
        .find(|o| o.name == organization)?;
    config.crm_for(org)
}

fn crm_outcome(reply: &crate::crm::CrmReply) -> &'static str {
    match reply {
        crate::crm::CrmReply::Found(_) => "found",
        crate::crm::CrmReply::NotFound => "not_found",
        crate::crm::CrmReply::Ambiguous => "ambiguous",
        crate::crm::CrmReply::Error(_) => "error",
    }
}

/// Counts a CRM request and its latency.
fn crm_done(shared: &Shared, adapter: &'static str, outcome: &'static str, asked: Instant) {
    let m = &shared.metrics;
    m.crm_requests
        .get_or_create(&CrmLabels { adapter, outcome })
        .inc();
    m.crm_latency
        .get_or_create(&AdapterLabels { adapter })
        .observe(asked.elapsed().as_secs_f64());
}

impl CallGuard {
    /// Adds what the RTP counters moved since the last flush to the metrics (a call flushes
    /// about once a second and at its end: no shared counter is touched per packet).
    pub(crate) fn flush_rtp(&mut self, now: &crate::media::rtp::RtpStats) {
        let m = &self.shared.metrics;
        let before = self.rtp_flushed;
        let inc = |dir: &'static str, a: u64, b: u64| {
            if a > b {
                m.rtp_packets
                    .get_or_create(&DirectionLabels { direction: dir })
                    .inc_by(a - b);
            }
        };
        inc("in", now.rx_packets, before.rx_packets);
        inc("out", now.tx_packets, before.tx_packets);
        if now.rx_wrong_source > before.rx_wrong_source {
            m.rtp_wrong_source
                .inc_by(now.rx_wrong_source - before.rx_wrong_source);
        }
        if now.tx_late_skipped > before.tx_late_skipped {
            m.rtp_late_skipped
                .inc_by(now.tx_late_skipped - before.tx_late_skipped);
        }
        self.rtp_flushed = *now;
    }
}
