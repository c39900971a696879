//! One tokio task per call: owns the call's state machine, its RTP socket and one timer.
//! Mutate once, drain every `poll_*`, sleep until the next deadline.
// TODO(lint): swept separately
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::{advertised, send_sip, CallInput, Shared, CALL_INBOX};
use crate::call::{Call, CallEvent, CallSetup};
use crate::config::{Config, Transport};
use crate::crm::CrmAdapter;
use crate::media::rtp::MAX_RTP_PACKET;
use crate::sip::build::{response, response_flow, stateless_tag};
use crate::sip::endpoint::Admission;
use crate::sip::sdp::LocalMedia;
use crate::sip::{Flow, SipTransmit};
use dashmap::mapref::entry::Entry;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};

/// Binds an RTP socket on a port from the pool (skipping ports something else holds).
async fn bind_rtp(shared: &Shared, config: &Config) -> Option<(UdpSocket, u16)> {
    for _ in 0..16 {
        let port = shared.ports.take()?;
        match UdpSocket::bind(SocketAddr::new(config.media.rtp_bind, port)).await {
            Ok(s) => return Some((s, port)),
            Err(e) => {
                debug!(port, error = %e, "rtp port busy, trying the next");
                shared.ports.give_back(port);
            }
        }
    }
    None
}

/// Creates the call for an admitted INVITE and starts its task.
pub(crate) async fn spawn(shared: Arc<Shared>, config: Arc<Config>, adm: Admission, flow: Flow) {
    let call_id = adm.invite.call_id().to_string();
    let Some((rtp_sock, port)) = bind_rtp(&shared, &config).await else {
        warn!(call_id, "no free RTP port: refusing the call");
        let tag = stateless_tag(&adm.invite);
        let mut r = response(&adm.invite, 503, Some(&tag), &config.sip.user_agent);
        r.push_header("Retry-After", config.sip.retry_after_secs.to_string());
        let t = SipTransmit {
            flow: response_flow(&adm.invite, flow),
            data: r.to_bytes(),
        };
        return send_sip(&shared, t).await;
    };
    let (tx, rx) = mpsc::channel(CALL_INBOX);
    let inbox = tx.clone();
    match shared.calls.entry(call_id.clone()) {
        Entry::Occupied(e) => {
            // Another task created this call first (same INVITE on two transports).
            let _ = e.get().try_send(CallInput::Sip(adm.invite, flow));
            shared.ports.give_back(port);
            return;
        }
        Entry::Vacant(v) => {
            v.insert(tx);
        }
    }
    shared.active.fetch_add(1, Ordering::Relaxed);
    shared.calls_total.fetch_add(1, Ordering::Relaxed);
    let bound = match flow.transport {
        Transport::Udp => shared.udp.get(flow.conn as usize).map(|(_, a)| *a),
        Transport::Tcp => shared.tcp_conns.get(&flow.conn).map(|e| e.value().1),
    }
    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 5060)));
    let sip_ip = advertised(bound, config.sip.public_address, flow.remote);
    let media_ip = advertised(
        SocketAddr::new(config.media.rtp_bind, port),
        config.media.public_address,
        flow.remote,
    );
    let seed: u64 = rand::random();
    let setup = CallSetup {
        invite: adm.invite,
        offer: adm.offer,
        flow,
        local_sip: SocketAddr::new(sip_ip, bound.port()),
        media: LocalMedia {
            ip: media_ip,
            port,
            session_id: seed >> 40,
        },
        seed,
        org: adm.org,
        caller: adm.caller,
        lockout: shared.lockout.clone(),
    };
    let span = info_span!("call", call_id = %call_id);
    let call = span.in_scope(|| {
        info!(from = %flow.remote, transport = flow.transport.as_str(), rtp_port = port, "new call");
        Call::new(Instant::now(), config, setup)
    });
    tokio::spawn(
        async move {
            run(&shared, call, rx, inbox, rtp_sock, port).await;
            shared.calls.remove(&call_id);
        }
        .instrument(span),
    );
}

/// Receives on the RTP socket while there is one; pends forever after it was released.
async fn recv_rtp(
    sock: &Option<UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn run(
    shared: &Shared,
    mut call: Call,
    mut rx: mpsc::Receiver<CallInput>,
    inbox: mpsc::Sender<CallInput>,
    sock: UdpSocket,
    port: u16,
) {
    // The socket and its port go back to the pool as soon as the call ends; the task may
    // linger a little longer for SIP retransmissions (Timer J, K, BYE).
    let mut sock = Some(sock);
    let mut rx_buf = [0u8; MAX_RTP_PACKET + 1];
    let mut tx_buf = [0u8; MAX_RTP_PACKET];
    let mut ended = false;
    let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
    let sleep = tokio::time::sleep_until(far);
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    loop {
        // Drain everything the last input produced.
        let now = Instant::now();
        while let Some(t) = call.poll_transmit() {
            send_sip(shared, t).await;
        }
        if let Some(s) = &sock {
            while let Some((n, dest)) = call.poll_rtp(now, &mut tx_buf) {
                if let Err(e) = s.send_to(&tx_buf[..n], dest).await {
                    debug!(error = %e, "rtp send failed");
                }
            }
        }
        while let Some(ev) = call.poll_event() {
            match ev {
                CallEvent::Answered => info!("answered"),
                // Never the digit: only that one arrived, and from where.
                CallEvent::Digit(d) => debug!(source = d.source.as_str(), "digit received"),
                CallEvent::Prompt(p) => debug!(event = ?p, "prompt"),
                CallEvent::CrmVerify {
                    organization,
                    caller,
                    pin,
                } => {
                    let config = shared.config.load();
                    match crm_of(&config, &organization) {
                        Some(CrmAdapter::Verify(v)) => {
                            let (v, inbox) = (v.clone(), inbox.clone());
                            let call_id = call.call_id().to_string();
                            tokio::spawn(async move {
                                let reply = v.verify(&organization, &caller, &pin, &call_id).await;
                                let _ = inbox.send(CallInput::Verify(reply)).await;
                            });
                        }
                        _ => call.handle_verify(
                            Instant::now(),
                            crate::crm::VerifyReply::Error("no verify webhook".into()),
                        ),
                    }
                }
                CallEvent::CrmLookup { organization, e164 } => {
                    let config = shared.config.load();
                    match crm_of(&config, &organization) {
                        // HTTP adapters answer through the call's inbox, while the prompt
                        // plays.
                        Some(CrmAdapter::Lookup(http)) => {
                            let (http, inbox) = (http.clone(), inbox.clone());
                            tokio::spawn(async move {
                                let reply = http.lookup(&organization, &e164).await;
                                let _ = inbox.send(CallInput::Crm(reply)).await;
                            });
                        }
                        // The embedded file CRM answers at once.
                        Some(CrmAdapter::File(dir)) => {
                            let reply = dir.lookup(&organization, &e164);
                            call.handle_crm(Instant::now(), reply);
                        }
                        Some(CrmAdapter::Verify(_)) | None => call.handle_crm(
                            Instant::now(),
                            crate::crm::CrmReply::Error("no CRM for this organization".into()),
                        ),
                    }
                }
                CallEvent::Ended(s) => {
                    ended = true;
                    if sock.take().is_some() {
                        shared.ports.give_back(port);
                    }
                    shared.active.fetch_sub(1, Ordering::Relaxed);
                    info!(
                        reason = ?s.reason,
                        answered = s.answered,
                        duration_ms = s.duration_ms,
                        rtp_rx = s.rtp.rx_packets,
                        rtp_rx_ignored = s.rtp.rx_ignored,
                        rtp_tx = s.rtp.tx_packets,
                        rtp_late_skipped = s.rtp.tx_late_skipped,
                        digit_count = s.digits,
                        "call ended"
                    );
                    if let Some(r) = call.record() {
                        shared.audit.write("call", r);
                    }
                }
            }
        }
        if call.is_done() {
            break;
        }
        let next = call.poll_timeout().map(|(t, _)| t);
        if next != armed {
            armed = next;
            let at = next.map(tokio::time::Instant::from_std).unwrap_or(far);
            sleep.as_mut().reset(at);
        }
        tokio::select! {
            input = rx.recv() => match input {
                Some(CallInput::Sip(msg, flow)) => call.handle_sip(Instant::now(), msg, flow),
                Some(CallInput::Crm(reply)) => call.handle_crm(Instant::now(), reply),
                Some(CallInput::Verify(reply)) => call.handle_verify(Instant::now(), reply),
                Some(CallInput::Shutdown) | None => call.shutdown(Instant::now()),
            },
            r = recv_rtp(&sock, &mut rx_buf) => {
                if let Ok((n, src)) = r {
                    call.handle_rtp(Instant::now(), src, &rx_buf[..n]);
                }
            }
            () = &mut sleep, if armed.is_some() => {
                armed = None;
                call.handle_timeout(Instant::now());
            }
        }
    }
    if !ended {
        shared.active.fetch_sub(1, Ordering::Relaxed);
    }
    if sock.take().is_some() {
        shared.ports.give_back(port);
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
