//! Call loops: a few threads (one per core, each running its own current-thread tokio
//! runtime) that each own many calls, instead of a task per call. A loop holds its calls in
//! a table, their deadlines in one timer ring, and learns which media sockets have packets
//! from a ready queue that the sockets' own wakers fill; one wake-up of the loop serves
//! every call whose frame is due in that millisecond.
//! Per call and frame that is one `sendto` and no task wake-up, no timer-wheel entry and no
//! channel message (the per-call task it replaced paid all three).
//!
//! Each input to a call — a SIP message, an RTP or RTCP packet, a CRM reply, a timeout — is
//! one *step*: mutate the call, then `call::run::drain` (the same drain the simulations
//! run), then file the deadline it returned. A step runs under `catch_unwind`: a panic in
//! one call's code ends that call only (its `CallGuard` answers or hangs up, audits, and
//! gives back what it held), and the loop goes on with the others.

use super::batch::{RecvBatch, SendBatch};
use super::call_task::{bind_rtp, fault_point, CallGuard, DriverIo, MediaSockets};
use super::timers::Timers;
use super::{advertised, CallInput, Shared};
use crate::call::run::drain;
use crate::call::{Call, CallSetup, Wake};
use crate::config::{Config, Transport};
use crate::media::rtcp::WallClock;
use crate::media::rtp::MAX_RTP_PACKET;
use crate::sip::endpoint::Admission;
use crate::sip::sdp::LocalMedia;
use crate::sip::Flow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake as TaskWake, Waker};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{debug, info, warn, Instrument};

/// Depth of a loop's inbox (SIP for its calls, CRM and store replies, new calls). A loop
/// that falls this far behind drops SIP (the peer retransmits) rather than growing memory.
pub(crate) const LOOP_INBOX: usize = 16_384;

/// Packets read from one socket per turn before the loop serves the others (a flooding
/// peer cannot starve the loop's other calls).
const READ_BUDGET: usize = 32;

/// What a call loop receives.
pub(crate) enum LoopMsg {
    /// An admitted INVITE: build the call, bind its media, answer.
    New(Box<NewCall>),
    /// An input for one of the loop's calls.
    Input(u64, CallInput),
}

/// An admitted call on its way to a loop.
pub(crate) struct NewCall {
    pub key: u64,
    pub guard: CallGuard,
    pub config: Arc<Config>,
    pub adm: Admission,
    pub flow: Flow,
}

/// Where inputs for one call go: its loop's inbox, tagged with the call's key.
#[derive(Clone)]
pub(crate) struct CallHandle {
    pub tx: mpsc::Sender<LoopMsg>,
    pub key: u64,
}

impl CallHandle {
    /// Queues an input without waiting; `Err` when the loop's inbox is full or gone.
    pub fn try_send(&self, input: CallInput) -> Result<(), ()> {
        self.tx
            .try_send(LoopMsg::Input(self.key, input))
            .map_err(|_| ())
    }

    /// Queues an input, waiting for room (CRM and store replies: never dropped).
    pub async fn send(&self, input: CallInput) -> Result<(), ()> {
        self.tx
            .send(LoopMsg::Input(self.key, input))
            .await
            .map_err(|_| ())
    }
}

/// Which of a call's media sockets has packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sock {
    Rtp,
    Rtcp,
}

/// Calls whose sockets became readable, filled by the sockets' wakers (on the I/O
/// driver's thread) and emptied by the loop.
#[derive(Default)]
struct ReadyQueue {
    list: Mutex<Vec<(u64, Sock)>>,
    notify: Notify,
}

/// The waker a call's socket keeps while it has nothing to read: waking it files the call
/// in its loop's ready queue and wakes the loop.
struct SockWaker {
    key: u64,
    sock: Sock,
    queue: Arc<ReadyQueue>,
}

impl TaskWake for SockWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Ok(mut l) = self.queue.list.lock() {
            l.push((self.key, self.sock));
        }
        self.queue.notify.notify_one();
    }
}

/// One call in a loop.
struct Slot {
    call: Call,
    guard: CallGuard,
    /// Its own sockets, dropped (and the port given back) as soon as the call ends (the
    /// call may linger a little longer for SIP retransmissions: Timer J, K, BYE); or the
    /// sources it is known by on the loop's shared socket.
    media: CallMedia,
    rtp_waker: Waker,
    rtcp_waker: Waker,
    /// Where replies for this call (CRM, lockout store) are sent.
    handle: CallHandle,
    /// The deadline filed in the heap for this call, and what it is for.
    armed: Option<(Instant, Wake)>,
    last_flush: Instant,
    /// The progress and digit count last published to the admin listing's `CallStatus`
    /// (another allocation: touched only when they change, not every frame).
    published: (u8, u32),
    span: tracing::Span,
}

/// Hashes a call's key: keys are a counter of ours (no peer picks one), so one multiply
/// spreads them well enough, where SipHash would run for every frame of every call.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type KeyMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// A call's media in its loop.
pub(crate) enum CallMedia {
    Own(MediaSockets),
    /// On the loop's shared sockets, filed in `Demux` under these sources; `live` until
    /// the call's media ends.
    Shared {
        rtp: Option<SocketAddr>,
        rtcp: Option<SocketAddr>,
        live: bool,
    },
    Ended,
}

/// Where a drained call's RTP and RTCP leave from.
pub(crate) enum MediaOut<'a> {
    Own(&'a MediaSockets),
    Shared(&'a mut SharedOut),
    Ended,
}

/// The sending half of a loop's shared media sockets.
pub(crate) struct SharedOut {
    pub rtp: std::net::UdpSocket,
    pub rtcp: std::net::UdpSocket,
    pub batch: SendBatch,
}

/// The receiving half: batches read, and which call each source belongs to.
struct Demux {
    port: u16,
    /// Taken out while its packets' steps borrow the loop.
    inb: Option<RecvBatch>,
    rtp: HashMap<SocketAddr, u64>,
    rtcp: HashMap<SocketAddr, u64>,
}

impl Demux {
    /// Files call `key` under the sources its SDP names now (none once its media ended or
    /// its step panicked), replacing those it was filed under.
    fn sync(&mut self, key: u64, slot: &mut Slot, ok: bool) {
        let CallMedia::Shared { rtp, rtcp, live } = &mut slot.media else {
            return;
        };
        let (want_rtp, want_rtcp) = if ok && *live && !slot.call.is_done() {
            slot.call.media_sources()
        } else {
            (None, None)
        };
        refile(&mut self.rtp, key, rtp, want_rtp);
        refile(&mut self.rtcp, key, rtcp, want_rtcp);
        if !*live && rtp.is_none() && rtcp.is_none() {
            slot.media = CallMedia::Ended;
        }
    }
}

/// Moves `key` in `map` from source `*have` to `want`. Another call that claims the same
/// source takes it over (a peer reusing a port for a new call); the old one's later
/// removal leaves the new owner alone.
fn refile(
    map: &mut HashMap<SocketAddr, u64>,
    key: u64,
    have: &mut Option<SocketAddr>,
    want: Option<SocketAddr>,
) {
    if *have == want {
        return;
    }
    if let Some(old) = have.take() {
        if map.get(&old) == Some(&key) {
            map.remove(&old);
        }
    }
    if let Some(new) = want {
        if let Some(prev) = map.insert(new, key) {
            if prev != key {
                debug!(source = %new, "media source moved to a newer call");
            }
        }
    }
    *have = want;
}

/// How often a loop with calls on its shared socket reads it even when no frame is due.
const SHARED_POLL: Duration = Duration::from_millis(5);

/// The state of one call loop.
struct Loop {
    shared: Arc<Shared>,
    tx: mpsc::Sender<LoopMsg>,
    /// Boxed: the table holds a key and a pointer per call (its buckets stay in cache and
    /// finding a call no longer touches the call's own memory), and the table's spare
    /// capacity costs 16 bytes a bucket rather than a whole call's 4 KiB.
    calls: KeyMap<Box<Slot>>,
    /// Every call's next deadline; entries that no longer match the call's `armed` are
    /// stale and skipped when they come up.
    timers: Timers,
    /// Deadlines that came due this turn (kept for its capacity).
    due: Vec<(Instant, u64)>,
    ready: Arc<ReadyQueue>,
    /// Sockets left with packets after their read budget, served next turn.
    again: Vec<(u64, Sock)>,
    /// One received packet (taken out while a step borrows the loop).
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    /// Frame lateness, added to the shared metric about once a second.
    lateness: crate::driver::metrics::LocalHistogram,
    flushed: Instant,
    /// The shared media sockets (`[media] shared_socket`).
    out: Option<SharedOut>,
    demux: Option<Demux>,
}

/// The running call loops: how to stop them, and their threads.
pub(crate) struct Loops {
    /// Dropping these ends the loops.
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Loops that could not have a thread of their own run as tasks of the main runtime.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Loops {
    /// Ends every loop and waits (up to `within`) until they are gone: each drops the calls
    /// it still holds, whose guards write their audit records and give back what they held.
    pub async fn stop(self, within: Duration) {
        let Loops {
            stops,
            threads,
            tasks,
        } = self;
        drop(stops);
        let joined = async {
            for t in tasks {
                let _ = t.await;
            }
            let _ = tokio::task::spawn_blocking(move || {
                for t in threads {
                    let _ = t.join();
                }
            })
            .await;
        };
        if tokio::time::timeout(within, joined).await.is_err() {
            warn!("call loops did not stop in time");
        }
    }
}

/// Starts the call loops, one per inbox, each on a thread of its own with its own
/// current-thread runtime: its media sockets and its timer are registered with that
/// runtime's reactor alone, so a sent frame's release and a received packet's wake-up stay
/// on the loop's core (with one reactor for every socket, both cores contended for its
/// lock on every packet), and no other task runs between a loop's frames.
pub(crate) fn start(shared: &Arc<Shared>, inboxes: Vec<mpsc::Receiver<LoopMsg>>) -> Loops {
    let mut loops = Loops {
        stops: Vec::new(),
        threads: Vec::new(),
        tasks: Vec::new(),
    };
    for (i, (rx, tx)) in inboxes.into_iter().zip(shared.loops.iter()).enumerate() {
        let (out, demux) = match shared_sockets(shared) {
            Some((out, demux)) => {
                info!(loop_index = i, rtp_port = demux.port, "shared media socket");
                (Some(out), Some(demux))
            }
            None => (None, None),
        };
        let l = Loop {
            out,
            demux,
            shared: shared.clone(),
            tx: tx.clone(),
            calls: KeyMap::default(),
            timers: Timers::new(Instant::now()),
            due: Vec::new(),
            ready: Arc::default(),
            again: Vec::new(),
            rx_buf: vec![0; MAX_RTP_PACKET + 1],
            tx_buf: vec![0; MAX_RTP_PACKET],
            lateness: shared.metrics.frame_lateness.local(),
            flushed: Instant::now(),
        };
        let (stop, stopped) = oneshot::channel();
        loops.stops.push(stop);
        let run = l
            .run(rx, stopped)
            .instrument(tracing::info_span!("loop", loop_index = i));
        // The loop's future goes to its thread once the thread runs (taken back if not).
        let (give, take) = std::sync::mpsc::sync_channel(1);
        let thread = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                std::thread::Builder::new()
                    .name(format!("call-loop-{i}"))
                    .spawn(move || {
                        if let Ok(run) = take.recv() {
                            rt.block_on(run);
                        }
                    })
                    .map_err(|e| e.to_string())
            });
        let run = match thread {
            Ok(t) => match give.send(run) {
                Ok(()) => {
                    loops.threads.push(t);
                    continue;
                }
                Err(std::sync::mpsc::SendError(run)) => run,
            },
            Err(e) => {
                warn!(loop_index = i, error = %e, "no thread for a call loop: it runs as a task");
                run
            }
        };
        loops.tasks.push(tokio::spawn(run));
    }
    loops
}

/// Binds a loop's shared RTP and RTCP sockets on a port pair from the pool, when the
/// configuration asks for them. `None` (the loop's calls get their own ports) if it does
/// not, or if no pair can be bound (logged).
fn shared_sockets(shared: &Shared) -> Option<(SharedOut, Demux)> {
    let config = shared.config.load();
    if !config.media.shared_socket {
        return None;
    }
    for _ in 0..16 {
        let port = shared.ports.take()?;
        let bind = |port: u16| -> std::io::Result<std::net::UdpSocket> {
            let addr = SocketAddr::new(config.media.rtp_bind, port);
            let s = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            // Room for a few milliseconds of every call's packets (capped by the
            // system's rmem_max/wmem_max).
            let _ = s.set_recv_buffer_size(8 << 20);
            let _ = s.set_send_buffer_size(8 << 20);
            s.set_nonblocking(true)?;
            s.bind(&addr.into())?;
            super::marking::mark_media(
                socket2::SockRef::from(&s),
                config.media.dscp,
                addr.is_ipv6(),
            );
            Ok(s.into())
        };
        let pair = bind(port).and_then(|rtp| {
            let up = port.checked_add(1).ok_or(std::io::ErrorKind::AddrInUse)?;
            Ok((rtp, bind(up)?))
        });
        match pair {
            Ok((rtp, rtcp)) => {
                return Some((
                    SharedOut {
                        rtp,
                        rtcp,
                        batch: SendBatch::default(),
                    },
                    Demux {
                        port,
                        inb: Some(RecvBatch::default()),
                        rtp: HashMap::new(),
                        rtcp: HashMap::new(),
                    },
                ))
            }
            Err(e) => {
                warn!(port, error = %e, "shared media port pair busy, trying the next");
                shared.ports.give_back(port);
            }
        }
    }
    warn!("no port pair for a shared media socket: this loop's calls get their own");
    None
}

/// What a step did to its call.
enum Stepped {
    Goes(Option<(Instant, Wake)>),
    Done,
}

impl Loop {
    async fn run(mut self, mut rx: mpsc::Receiver<LoopMsg>, mut stop: oneshot::Receiver<()>) {
        let mut msgs: Vec<LoopMsg> = Vec::with_capacity(256);
        let mut ready: Vec<(u64, Sock)> = Vec::with_capacity(256);
        let mut timer = super::loop_timer::LoopTimer::new();
        let mut slept_until: Option<Instant> = None;
        loop {
            let mut next = self.timers.next();
            if self.demux.is_some() && !self.calls.is_empty() {
                // The shared socket is read each turn, not woken for: at least this often.
                let poll = Instant::now() + SHARED_POLL;
                next = Some(next.map_or(poll, |n| n.min(poll)));
            }
            if next != slept_until {
                slept_until = next;
                timer.set(next);
            }
            if self.again.is_empty() {
                tokio::select! {
                    n = rx.recv_many(&mut msgs, 256) => {
                        if n == 0 {
                            return;
                        }
                    }
                    () = self.ready.notify.notified() => {}
                    () = timer.rung(), if next.is_some() => {
                        slept_until = None;
                    }
                    _ = &mut stop => return,
                }
            } else {
                tokio::task::yield_now().await;
            }
            // Everything that is waiting, in one pass: messages, readable sockets, due
            // timers.
            while let Ok(m) = rx.try_recv() {
                msgs.push(m);
                if msgs.len() >= 1024 {
                    break;
                }
            }
            // Each call's step catches its own panics; this catches the loop's own code
            // around them (the demux, the timers), so a bug there costs a turn, not the
            // loop and every call on it.
            let turn = catch_unwind(AssertUnwindSafe(|| self.turn(&mut msgs, &mut ready)));
            if turn.is_err() {
                msgs.clear();
                ready.clear();
                let n = self.shared.metrics.loop_restarts.inc() + 1;
                tracing::error!(
                    loop_restarts = n,
                    "call loop panicked outside a call; going on"
                );
            }
        }
    }

    /// One turn's work: the inbox's messages, readable sockets, due timers, then the
    /// batch of frames out.
    fn turn(&mut self, msgs: &mut Vec<LoopMsg>, ready: &mut Vec<(u64, Sock)>) {
        for m in msgs.drain(..) {
            match m {
                LoopMsg::New(n) => self.new_call(*n),
                LoopMsg::Input(key, input) => self.input(key, input),
            }
        }
        if let Ok(mut l) = self.ready.list.lock() {
            std::mem::swap(&mut *l, ready);
        }
        ready.append(&mut self.again);
        ready.sort_unstable_by_key(|r| (r.0, r.1 == Sock::Rtcp));
        ready.dedup();
        for (key, which) in ready.drain(..) {
            self.read(key, which);
        }
        self.read_shared();
        self.fire_timers();
        if let Some(out) = &mut self.out {
            out.batch.flush(&out.rtp);
        }
        if self.flushed.elapsed() >= Duration::from_secs(1) {
            self.flushed = Instant::now();
            self.shared.metrics.frame_lateness.flush(&mut self.lateness);
        }
    }

    /// Runs one step of call `key` under `catch_unwind`: `f` mutates the call, then the
    /// drain; the call's deadline is filed, or the call removed when it is done. A panic
    /// ends this call only.
    fn step(&mut self, key: u64, f: impl FnOnce(&mut Call, &mut CallGuard, Instant)) {
        let Some(slot) = self.calls.get_mut(&key) else {
            return;
        };
        let buf = &mut self.tx_buf[..];
        let out = self.out.as_mut();
        // The call's span, entered for the step: moved out and back rather than cloned (a
        // clone and its drop touch the subscriber's registry, every frame).
        let span = std::mem::replace(&mut slot.span, tracing::Span::none());
        let r = {
            let _entered = span.enter();
            catch_unwind(AssertUnwindSafe(|| {
                let now = Instant::now();
                f(&mut slot.call, &mut slot.guard, now);
                drain_slot(slot, now, buf, out)
            }))
        };
        slot.span = span;
        if let Some(d) = &mut self.demux {
            d.sync(key, slot, r.is_ok());
        }
        match r {
            Ok(Stepped::Goes(next)) => {
                if next.map(|n| n.0) != slot.armed.map(|a| a.0) {
                    if let Some((at, _)) = next {
                        self.timers.push(at, key);
                    }
                }
                slot.armed = next;
            }
            Ok(Stepped::Done) => {
                self.calls.remove(&key);
            }
            Err(_) => {
                if let Some(mut slot) = self.calls.remove(&key) {
                    slot.guard.panicked = true;
                    // The guard's drop does the rest: answer or hang up, audit, release.
                    drop(slot);
                }
            }
        }
    }

    fn input(&mut self, key: u64, input: CallInput) {
        self.step(key, |call, g, now| match input {
            CallInput::Sip(msg, flow) => {
                fault_point(&g.call_id, "sip");
                call.handle_sip(now, msg, flow)
            }
            CallInput::Crm(reply) => call.handle_crm(now, reply),
            CallInput::Verify(reply) => call.handle_verify(now, reply),
            CallInput::Checked(r) => call.handle_check(now, r),
            CallInput::LockState(st) => call.handle_lock_state(now, st),
            CallInput::TransportError(branch) => call.handle_transport_error(now, &branch),
            CallInput::Shutdown => call.shutdown(now),
        });
    }

    /// Reads what call `key`'s socket holds (up to the read budget), one step per packet.
    fn read(&mut self, key: u64, which: Sock) {
        let mut buf = std::mem::take(&mut self.rx_buf);
        let drained = self.read_into(key, which, &mut buf);
        self.rx_buf = buf;
        if !drained {
            // Budget spent with packets maybe left: next turn, after the other calls.
            self.again.push((key, which));
        }
    }

    /// `true` once the socket has nothing more (or the call or its socket is gone).
    fn read_into(&mut self, key: u64, which: Sock, buf: &mut [u8]) -> bool {
        for _ in 0..READ_BUDGET {
            let Some(slot) = self.calls.get(&key) else {
                return true;
            };
            let CallMedia::Own(sock) = &slot.media else {
                return true;
            };
            let (s, waker) = match which {
                Sock::Rtp => (&sock.rtp, &slot.rtp_waker),
                Sock::Rtcp => (&sock.rtcp, &slot.rtcp_waker),
            };
            let mut cx = Context::from_waker(waker);
            let mut ready = match s.poll_read_ready(&mut cx) {
                Poll::Pending => return true,
                Poll::Ready(Err(e)) => {
                    debug!(error = %e, "media socket readiness error");
                    return true;
                }
                Poll::Ready(Ok(r)) => r,
            };
            let (n, src) = match ready.try_io(|fd| fd.get_ref().recv_from(buf)) {
                // Nothing after all: readiness cleared, the next poll arms the waker.
                Err(_would_block) => continue,
                Ok(Err(e)) => {
                    // ICMP errors and the like: nothing for the call.
                    debug!(error = %e, "media receive error");
                    continue;
                }
                Ok(Ok(r)) => r,
            };
            let data = buf.get(..n).unwrap_or_default();
            self.step(key, |call, _, now| match which {
                Sock::Rtp => call.handle_rtp(now, src, data),
                Sock::Rtcp => call.handle_rtcp(now, src, data),
            });
        }
        false
    }

    /// Reads what the shared RTP and RTCP sockets hold (a few batches at most per turn)
    /// and steps each packet's call; a packet from no call's source is dropped and counted.
    fn read_shared(&mut self) {
        for rtcp in [false, true] {
            for _ in 0..8 {
                let (Some(d), Some(out)) = (&mut self.demux, &self.out) else {
                    return;
                };
                let Some(mut inb) = d.inb.take() else {
                    return;
                };
                let sock = if rtcp { &out.rtcp } else { &out.rtp };
                let n = inb.recv(sock);
                for i in 0..n {
                    let Some((src, data)) = inb.get(i) else {
                        continue;
                    };
                    let owner = self.demux.as_ref().and_then(|d| {
                        if rtcp {
                            d.rtcp.get(&src)
                        } else {
                            d.rtp.get(&src)
                        }
                        .copied()
                    });
                    match owner {
                        Some(key) => self.step(key, |call, _, now| {
                            if rtcp {
                                call.handle_rtcp(now, src, data)
                            } else {
                                call.handle_rtp(now, src, data)
                            }
                        }),
                        None => {
                            self.shared.metrics.rtp_wrong_source.inc();
                        }
                    }
                }
                if let Some(d) = &mut self.demux {
                    d.inb = Some(inb);
                }
                if n < super::batch::BATCH {
                    break;
                }
            }
        }
    }

    /// Steps every call whose deadline has come. A deadline a step files for now or
    /// earlier comes due next turn (a millisecond on), so a call that keeps asking to be
    /// woken at once cannot hold the loop here.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        let mut due = std::mem::take(&mut self.due);
        self.timers.take_due(now, &mut due);
        for (at, key) in due.drain(..) {
            let Some(slot) = self.calls.get_mut(&key) else {
                continue;
            };
            let Some((armed, wake)) = slot.armed else {
                continue;
            };
            if armed != at {
                continue;
            }
            slot.armed = None;
            if wake == Wake::MediaFrame {
                self.lateness
                    .observe(now.saturating_duration_since(at).as_secs_f64());
            }
            self.step(key, |call, _, now| call.handle_timeout(now));
        }
        self.due = due;
    }

    /// Builds an admitted call: binds its media, makes the state machine, files it, and
    /// runs its first step (the 100/180/200 go out).
    fn new_call(&mut self, n: NewCall) {
        let NewCall {
            key,
            mut guard,
            config,
            adm,
            flow,
        } = n;
        let span = tracing::info_span!("call", call_id = %guard.call_id);
        let entered = span.clone();
        let _e = entered.enter();
        let shared = self.shared.clone();
        let shared_port = self.demux.as_ref().map(|d| d.port);
        let built = catch_unwind(AssertUnwindSafe(|| {
            build(&shared, &mut guard, config, adm, flow, shared_port)
        }));
        let (call, media) = match built {
            Ok(Some(b)) => b,
            // Refused (no port) or not buildable: the guard answered and releases.
            Ok(None) => return,
            Err(_) => {
                guard.panicked = true;
                return;
            }
        };
        let waker = |sock| {
            Waker::from(Arc::new(SockWaker {
                key,
                sock,
                queue: self.ready.clone(),
            }))
        };
        self.calls.insert(
            key,
            Box::new(Slot {
                call,
                guard,
                media,
                rtp_waker: waker(Sock::Rtp),
                rtcp_waker: waker(Sock::Rtcp),
                handle: CallHandle {
                    tx: self.tx.clone(),
                    key,
                },
                armed: None,
                last_flush: Instant::now(),
                published: (u8::MAX, u32::MAX),
                span,
            }),
        );
        // First step: answer. Then arm both sockets' wakers (a first read that finds
        // nothing registers them).
        self.step(key, |_, _, _| {});
        self.read(key, Sock::Rtp);
        self.read(key, Sock::Rtcp);
    }
}

/// Drains one call after a step and publishes its state; `Done` once it may be dropped.
fn drain_slot(
    slot: &mut Slot,
    now: Instant,
    buf: &mut [u8],
    shared_out: Option<&mut SharedOut>,
) -> Stepped {
    let Slot {
        call,
        guard: g,
        media,
        handle,
        last_flush,
        published,
        ..
    } = slot;
    let out = match (&*media, shared_out) {
        (CallMedia::Own(s), _) => MediaOut::Own(s),
        (CallMedia::Shared { live: true, .. }, Some(o)) => MediaOut::Shared(o),
        _ => MediaOut::Ended,
    };
    let mut io = DriverIo {
        g: &mut *g,
        out,
        inbox: handle,
        ended: false,
    };
    let next = drain(call, now, &mut io, buf);
    if io.ended {
        match media {
            // Unfiled from the demux by the loop after this step.
            CallMedia::Shared { live, .. } => *live = false,
            _ => *media = CallMedia::Ended,
        }
        g.release_port();
        g.release_active();
    }
    if g.unanswered.is_some() && !call.invite_pending() {
        g.unanswered = None;
    }
    let now_at = (call.progress(), call.digit_count());
    if *published != now_at {
        *published = now_at;
        g.status.state.store(now_at.0, Ordering::Relaxed);
        g.status.digits.store(now_at.1, Ordering::Relaxed);
    }
    if now.duration_since(*last_flush) >= Duration::from_secs(1) {
        *last_flush = now;
        if let Some(stats) = call.rtp_stats() {
            g.flush_rtp(&stats);
        }
    }
    if call.is_done() {
        Stepped::Done
    } else {
        Stepped::Goes(next)
    }
}

/// Binds the call's media and builds its state machine; `None` when the call was refused
/// (no free RTP port: 503) or could not be built (400), the response already sent.
fn build(
    shared: &Arc<Shared>,
    g: &mut CallGuard,
    config: Arc<Config>,
    adm: Admission,
    flow: Flow,
    shared_port: Option<u16>,
) -> Option<(Call, CallMedia)> {
    let (media, port) = match shared_port {
        Some(port) => (
            CallMedia::Shared {
                rtp: None,
                rtcp: None,
                live: true,
            },
            port,
        ),
        None => {
            let Some((sock, port)) = bind_rtp(shared, &config) else {
                warn!("no free RTP port: refusing the call");
                g.refuse(503, "no_rtp_port");
                return None;
            };
            g.port = Some(port);
            (CallMedia::Own(sock), port)
        }
    };
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
    // Behind a proxy, `from` is the proxy and `source` the PBX it named.
    let source = adm.source;
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
        lockout: shared.lockout.is_on(),
        wall_clock: WallClock {
            at: Instant::now(),
            since_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        },
    };
    info!(from = %flow.remote, %source, transport = flow.transport.as_str(), rtp_port = port, "new call");
    fault_point(&g.call_id, "new");
    match Call::new(Instant::now(), config, setup) {
        Ok(c) => Some((c, media)),
        Err(e) => {
            // Admission answers these 400 first; this is the backstop (with its audit
            // record, as every refused INVITE has).
            warn!(error = %e, "call set-up failed");
            g.refuse(400, "call_setup_failed");
            None
        }
    }
}
