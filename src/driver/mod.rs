//! The tokio drivers: the only code that owns sockets, reads the clock and sleeps.
//! One receive task per SIP socket (UDP) or connection (TCP), one call loop per core
//! (`shard`) owning its calls, their RTP sockets and one timer ring. `dashmap` maps Call-ID
//! to the call's handle (its loop's inbox and its key there).
#![allow(clippy::disallowed_methods)]

mod admin;
mod audit;
mod batch;
mod call_task;
mod costly;
mod lockout_store;
mod loop_timer;
mod marking;
pub mod metrics;
mod ports;
mod shard;
mod tcp;
#[doc(hidden)]
pub mod timers;

pub use admin::ReloadHook;
pub use audit::AuditSink;

pub use ports::PortPool;

use crate::config::{Config, Listen, Transport};
use crate::sip::endpoint::{CallTable, Endpoint, Inbound};
use crate::sip::msg::Message;
use crate::sip::{Flow, SipTransmit};
use arc_swap::ArcSwap;
use bytes::Bytes;
use dashmap::DashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// What a call task receives.
#[derive(Debug)]
pub(crate) enum CallInput {
    Sip(Message, Flow),
    /// The CRM's answer to the call's lookup.
    Crm(crate::crm::CrmReply),
    /// The verify webhook's answer.
    Verify(crate::crm::VerifyReply),
    /// A verdict settled (PIN comparison and lockout store).
    Checked(crate::call::verdict::CheckResult),
    /// The lockout store's answer about the caller's number.
    LockState(crate::call::verdict::LockState),
    /// Our request with this branch could not be sent (no connection to its next hop).
    TransportError(String),
    Shutdown,
}

/// A call in the table: its inbox, and what `/calls` shows of it.
pub(crate) struct CallEntry {
    pub tx: shard::CallHandle,
    pub status: Arc<CallStatus>,
}

/// What the call task publishes about its call (plain atomics, written after each drain).
pub(crate) struct CallStatus {
    pub organization: String,
    pub started: std::time::Instant,
    /// An index into `call::PROGRESS`.
    pub state: AtomicU8,
    /// How many digits (never which).
    pub digits: AtomicU32,
}

/// State shared by every task of one running server.
pub(crate) struct Shared {
    /// The main runtime: CRM requests, PIN checks and SIP sends that must wait run here,
    /// never on a call loop's thread.
    pub rt: tokio::runtime::Handle,
    pub config: ArcSwap<Config>,
    pub calls: DashMap<String, CallEntry>,
    /// The call loops' inboxes (one loop per core; `shard`).
    pub loops: Vec<mpsc::Sender<shard::LoopMsg>>,
    /// Their receiving ends, until `Server::run` starts the loops.
    pub loop_inboxes: std::sync::Mutex<Vec<mpsc::Receiver<shard::LoopMsg>>>,
    /// The next call's key in its loop, and the next loop (round robin).
    pub next_key: AtomicU64,
    pub next_loop: AtomicUsize,
    pub active: AtomicUsize,
    pub udp: Vec<(Arc<UdpSocket>, SocketAddr)>,
    pub tcp_conns: DashMap<u64, (mpsc::Sender<Bytes>, SocketAddr)>,
    /// The TCP listeners' bound addresses: what a connection we opened advertises as its
    /// local address (a new call on it gets a Contact where we listen, not its own port).
    pub tcp_listen: Vec<SocketAddr>,
    /// Connections we opened, by where to (`tcp::open`): our requests whose own connection
    /// the peer closed go here.
    pub tcp_out: DashMap<SocketAddr, u64>,
    pub next_conn: AtomicU64,
    pub ports: PortPool,
    pub calls_total: AtomicU64,
    pub audit: AuditSink,
    /// Call-IDs of INVITEs refused lately, so a retransmitted one is audited once.
    pub refused: DashMap<String, std::time::Instant>,
    /// Failed-PIN counters across calls (memory or Redis).
    pub lockout: lockout_store::LockoutStore,
    /// The PIN-check workers for argon2 comparisons, one per core, below the call loops'
    /// priority (`lockout_store::settle`).
    pub costly_checks: costly::CostlyPool,
    pub metrics: metrics::Metrics,
    /// SIGTERM/SIGINT came: readiness 503, new calls and OPTIONS 503, calls go on.
    pub draining: AtomicBool,
    /// When the running configuration was loaded (Unix seconds).
    pub config_loaded: std::sync::Mutex<std::time::SystemTime>,
    /// Per-source rate limits and calls up (the policy is in the configuration).
    pub gate: std::sync::Mutex<crate::sip::gate::Gate>,
    /// Digest nonces (used only when `[sip.auth]` is configured).
    pub auth: std::sync::Mutex<crate::sip::auth::Authenticator>,
}

impl Shared {
    /// The gate, even if a panic elsewhere poisoned its lock (its state stays consistent:
    /// every update is a single map operation).
    pub fn gate(&self) -> std::sync::MutexGuard<'_, crate::sip::gate::Gate> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl CallTable for Shared {
    fn contains(&self, call_id: &str) -> bool {
        self.calls.contains_key(call_id)
    }
    fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
    fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

impl Shared {
    /// Sets the gauges that are read, not counted: calls up, lockouts, config age.
    pub fn refresh_gauges(&self) {
        let m = &self.metrics;
        m.calls_in_progress.set(self.active() as i64);
        if let Some(l) = self.lockout.memory() {
            if let Ok(l) = l.lock() {
                m.lockouts_active
                    .set(l.locked_count(std::time::Instant::now()) as i64);
            }
        }
        if let Ok(at) = self.config_loaded.lock() {
            let unix = at
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            m.config_loaded.set(unix);
            m.config_age
                .set(at.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0));
        }
    }

    /// Calls in progress as a JSON array: Call-ID, organization, state, age, digit count.
    pub fn calls_json(&self) -> String {
        let now = std::time::Instant::now();
        let calls: Vec<serde_json::Value> = self
            .calls
            .iter()
            .map(|e| {
                let s = &e.value().status;
                serde_json::json!({
                    "call_id": e.key(),
                    "organization": s.organization,
                    "state": crate::call::PROGRESS
                        .get(usize::from(s.state.load(Ordering::Relaxed)))
                        .copied()
                        .unwrap_or("unknown"),
                    "age_ms": now.duration_since(s.started).as_millis() as u64,
                    "digit_count": s.digits.load(Ordering::Relaxed),
                })
            })
            .collect();
        serde_json::Value::Array(calls).to_string()
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A listen address could not be bound.
    #[error("cannot listen on {transport:?} {addr}: {source}")]
    Bind {
        transport: Transport,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The admin endpoint's address could not be bound.
    #[error("cannot listen on the admin address {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The lockout store's settings are unusable (a bad Redis URL).
    #[error("{0}")]
    Lockout(String),
    /// The audit file cannot be opened.
    #[error("cannot open the audit file {path}: {source}")]
    Audit {
        path: String,
        source: std::io::Error,
    },
}

/// Swaps the configuration of a running server (live reload). Calls in progress keep the
/// `Arc<Config>` they started with; listen addresses, the RTP port range, the audit file,
/// the admin endpoint and the lockout table stay as they were at start.
#[derive(Clone)]
pub struct Reloader {
    shared: Arc<Shared>,
}

impl Reloader {
    pub fn reload(&self, config: Arc<Config>) {
        let old = self.shared.config.load();
        if old.sip.listen != config.sip.listen
            || old.media.rtp_port_min != config.media.rtp_port_min
            || old.media.rtp_port_max != config.media.rtp_port_max
        {
            warn!("listen addresses and the RTP port range change only on restart");
        }
        self.shared.config.store(config);
        // logrotate moves the audit file away and then reloads us.
        self.shared.audit.reopen();
        if let Ok(mut at) = self.shared.config_loaded.lock() {
            *at = std::time::SystemTime::now();
        }
        self.count(true);
        info!("configuration reloaded");
    }

    /// Counts a reload that was refused (the file did not load).
    pub fn refused(&self, why: &str) {
        self.count(false);
        tracing::error!(error = why, "reload refused");
    }

    fn count(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.shared
            .metrics
            .config_reloads
            .get_or_create(&metrics::ResultLabels { result })
            .inc();
    }
}

/// A bound, running server.
pub struct Server {
    shared: Arc<Shared>,
    tcp: Vec<(TcpListener, SocketAddr)>,
    admin: Option<(TcpListener, SocketAddr)>,
    admin_token: Option<String>,
}

impl Server {
    /// Binds every listen address. Port 0 picks a free port (see `local_addrs`).
    pub async fn bind(config: Arc<Config>) -> Result<Server, DriverError> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for Listen { transport, addr } in config.sip.listen.iter().copied() {
            let err = |source| DriverError::Bind {
                transport,
                addr,
                source,
            };
            match transport {
                Transport::Udp => {
                    let s = UdpSocket::bind(addr).await.map_err(err)?;
                    // Room for a burst (hundreds of INVITEs, every caller's last key at
                    // once) while the receive task is busy: the default ~200 KiB holds a
                    // few hundred datagrams. Capped by net.core.rmem_max/wmem_max.
                    let sock = socket2::SockRef::from(&s);
                    let _ = sock.set_recv_buffer_size(4 << 20);
                    let _ = sock.set_send_buffer_size(4 << 20);
                    marking::mark_sip(sock, config.sip.dscp, addr);
                    let local = s.local_addr().map_err(err)?;
                    udp.push((Arc::new(s), local));
                }
                Transport::Tcp => {
                    let l = TcpListener::bind(addr).await.map_err(err)?;
                    // Accepted connections take the listener's marking.
                    marking::mark_sip(socket2::SockRef::from(&l), config.sip.dscp, addr);
                    let local = l.local_addr().map_err(err)?;
                    tcp.push((l, local));
                }
            }
        }
        let admin = match config.admin.listen {
            Some(addr) => {
                let err = |source| DriverError::Admin { addr, source };
                let l = TcpListener::bind(addr).await.map_err(err)?;
                let local = l.local_addr().map_err(err)?;
                Some((l, local))
            }
            None => None,
        };
        let admin_token = std::env::var(&config.admin.token_env)
            .ok()
            .filter(|t| !t.is_empty());
        let ports = PortPool::new(config.media.rtp_port_min, config.media.rtp_port_max);
        let audit =
            AuditSink::open(config.audit_file.as_deref()).map_err(|source| DriverError::Audit {
                path: config
                    .audit_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                source,
            })?;
        let lockout = lockout_store::LockoutStore::new(config.lockout.as_ref())
            .map_err(DriverError::Lockout)?;
        let metrics = metrics::Metrics::default();
        let orgs: Vec<String> = config
            .organizations
            .iter()
            .map(|o| o.name.clone())
            .collect();
        metrics.init_series(&orgs);
        let n_loops = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let (loops, loop_inboxes): (Vec<_>, Vec<_>) = (0..n_loops)
            .map(|_| mpsc::channel(shard::LOOP_INBOX))
            .unzip();
        Ok(Server {
            shared: Arc::new(Shared {
                rt: tokio::runtime::Handle::current(),
                config: ArcSwap::new(config.clone()),
                calls: DashMap::new(),
                loops,
                loop_inboxes: std::sync::Mutex::new(loop_inboxes),
                next_key: AtomicU64::new(1),
                next_loop: AtomicUsize::new(0),
                active: AtomicUsize::new(0),
                udp,
                tcp_conns: DashMap::new(),
                tcp_listen: tcp.iter().map(|(_, a)| *a).collect(),
                tcp_out: DashMap::new(),
                next_conn: AtomicU64::new(1),
                ports,
                calls_total: AtomicU64::new(0),
                audit,
                refused: DashMap::new(),
                metrics,
                draining: AtomicBool::new(false),
                config_loaded: std::sync::Mutex::new(std::time::SystemTime::now()),
                gate: Default::default(),
                auth: std::sync::Mutex::new(crate::sip::auth::Authenticator::new(
                    rand::random(),
                    std::time::Instant::now(),
                )),
                lockout,
                costly_checks: costly::CostlyPool::start(n_loops),
            }),
            tcp,
            admin,
            admin_token,
        })
    }

    /// A handle that swaps the whole configuration for calls that start from now on.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            shared: self.shared.clone(),
        }
    }

    /// The admin endpoint's bound address, if it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, a)| *a)
    }

    /// The addresses actually bound.
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        let mut v: Vec<_> = self
            .shared
            .udp
            .iter()
            .map(|(_, a)| (Transport::Udp, *a))
            .collect();
        v.extend(self.tcp.iter().map(|(_, a)| (Transport::Tcp, *a)));
        v
    }

    /// Serves until told to stop. The first message on `signals` (SIGTERM/SIGINT) starts a
    /// graceful drain: readiness goes 503, new INVITEs and out-of-dialog OPTIONS get 503,
    /// calls in progress run to their end for up to `[sip] drain_timeout_secs`, then what
    /// is left gets BYE. A second message ends at once (BYE to all). Either way every call
    /// writes its audit record before this returns. `reload` serves `POST /reload`.
    pub async fn run(self, mut signals: mpsc::Receiver<()>, reload: Option<ReloadHook>) {
        for (t, a) in self.local_addrs() {
            info!(transport = t.as_str(), addr = %a, "listening");
        }
        let inboxes = self
            .shared
            .loop_inboxes
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        let loops = shard::start(&self.shared, inboxes);
        let mut tasks = Vec::new();
        for (idx, (sock, _)) in self.shared.udp.iter().enumerate() {
            let (shared, sock) = (self.shared.clone(), sock.clone());
            tasks.push(supervise(self.shared.clone(), "udp", move || {
                udp_loop(shared.clone(), sock.clone(), idx as u64)
            }));
        }
        for (listener, _) in self.tcp {
            let (shared, listener) = (self.shared.clone(), Arc::new(listener));
            tasks.push(supervise(self.shared.clone(), "tcp accept", move || {
                tcp::accept_loop(shared.clone(), listener.clone())
            }));
        }
        let admin = self.admin.map(|(listener, addr)| {
            info!(addr = %addr, auth = self.admin_token.is_some(), "admin endpoint");
            tokio::spawn(admin::serve(
                self.shared.clone(),
                listener,
                self.admin_token.clone(),
                reload,
            ))
        });
        let shared = &self.shared;
        let _ = signals.recv().await;
        shared.draining.store(true, Ordering::Relaxed);
        let drain = shared.config.load().sip.drain_timeout;
        info!(
            calls = shared.calls.len(),
            drain_timeout_secs = drain.as_secs(),
            "draining: no new calls; calls in progress run to their end"
        );
        let deadline = tokio::time::Instant::now() + drain;
        let mut forced = false;
        // Calls in progress, not table entries: an ended call lingers in its loop for its
        // transactions' retransmission timers (up to 32 s on UDP), which a drain need not wait for.
        while shared.active() > 0 {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                s = signals.recv() => {
                    forced = s.is_some();
                    break;
                }
                () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
        }
        if shared.active() > 0 {
            info!(
                calls = shared.active(),
                forced, "ending the calls still up with BYE"
            );
            for e in shared.calls.iter() {
                let _ = e.value().tx.try_send(CallInput::Shutdown);
            }
            // Each call writes its record as it ends (at once); give their BYEs a moment
            // to be answered before the sockets close.
            let grace = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
            while shared.active() > 0 && tokio::time::Instant::now() < grace {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        for t in tasks {
            t.abort();
        }
        // Each loop drops the calls it still holds (each writes its audit record and gives
        // back what it held) and ends its thread.
        loops.stop(std::time::Duration::from_secs(5)).await;
        if let Some(a) = admin {
            a.abort();
        }
        info!(
            calls_total = shared.calls_total.load(Ordering::Relaxed),
            calls_panicked = shared.metrics.calls_panicked.get(),
            loop_restarts = shared.metrics.loop_restarts.get(),
            "stopped"
        );
    }
}

/// Runs a receive loop as its own task and starts it again if it panics (counted and
/// logged), so one bad packet can never leave a listener dead while the process lives on.
/// The loop's socket or listener is shared (`Arc`), so a restart keeps it bound.
fn supervise<F, Fut>(shared: Arc<Shared>, what: &'static str, make: F) -> AbortOnDrop
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let inner: Arc<std::sync::Mutex<Option<tokio::task::AbortHandle>>> = Arc::default();
    let current = inner.clone();
    let outer = tokio::spawn(async move {
        loop {
            let task = tokio::spawn(make());
            if let Ok(mut c) = current.lock() {
                *c = Some(task.abort_handle());
            }
            match task.await {
                Err(e) if e.is_panic() => {
                    let n = shared.metrics.loop_restarts.inc() + 1;
                    tracing::error!(
                        loop_name = what,
                        loop_restarts = n,
                        "receive loop panicked; restarted"
                    );
                }
                _ => return,
            }
        }
    });
    AbortOnDrop { outer, inner }
}

/// A supervised loop; aborting it stops the supervisor and the loop it runs.
struct AbortOnDrop {
    outer: tokio::task::JoinHandle<()>,
    inner: Arc<std::sync::Mutex<Option<tokio::task::AbortHandle>>>,
}

impl AbortOnDrop {
    fn abort(&self) {
        self.outer.abort();
        if let Ok(Some(h)) = self.inner.lock().as_deref() {
            h.abort();
        }
    }
}

async fn udp_loop(shared: Arc<Shared>, sock: Arc<UdpSocket>, idx: u64) {
    // One byte more than the limit, so an oversized datagram is seen as such.
    let max = shared.config.load().sip.max_message_bytes + 1;
    let mut buf = vec![0u8; max.max(65536)];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, src)) => {
                let flow = Flow {
                    transport: Transport::Udp,
                    conn: idx,
                    remote: src,
                };
                dispatch(&shared, flow, buf.get(..n).unwrap_or_default(), true);
            }
            // ICMP port unreachable and the like surface here on some systems.
            Err(e) => debug!(error = %e, "udp receive error"),
        }
    }
}

/// Routes one inbound SIP message.
pub(crate) fn dispatch(shared: &Arc<Shared>, flow: Flow, data: &[u8], datagram: bool) {
    #[cfg(debug_assertions)]
    if data.windows(21).any(|w| w == b"fault-panic-dispatch-") {
        call_task::fault_point("fault-panic-dispatch-", "dispatch");
    }
    shared.metrics.sip("in", data);
    let config = shared.config.load_full();
    let endpoint = Endpoint::new(config.clone());
    let now = std::time::Instant::now();
    // Access control and the request rate, before a byte is parsed (sip::gate).
    let passed = shared
        .gate()
        .request(&config.sip.access, now, flow.remote.ip());
    let inbound = match passed {
        Ok(()) => endpoint.handle(flow, data, datagram, shared.as_ref()),
        Err(why) => endpoint.deny_raw(flow, data, datagram, why),
    };
    match inbound {
        Inbound::ToCall(msg) => deliver(shared, msg, flow),
        Inbound::Malformed(reply) => {
            shared.metrics.parse_errors.inc();
            debug!(from = %flow.remote, "malformed SIP");
            if let Some(t) = reply {
                send_sip_now(shared, t);
            }
        }
        Inbound::NewCall(adm) => new_call(shared, &endpoint, config, adm, flow, now),
        Inbound::Denied(reply, why) => {
            shared.metrics.rejected(why);
            debug!(from = %flow.remote, reason = why.as_str(), "turned away");
            if let Some(t) = reply {
                send_sip_now(shared, t);
            }
        }
        Inbound::Reply(t) => {
            if shared.draining() && t.data.starts_with(b"SIP/2.0 503") {
                shared.metrics.draining_rejections.inc();
            }
            send_sip_now(shared, t)
        }
        Inbound::Refused(t, refusal) => {
            let now = std::time::Instant::now();
            if shared.refused.len() > 10_000 {
                shared
                    .refused
                    .retain(|_, at| now.duration_since(*at) < std::time::Duration::from_secs(64));
                // A flood of distinct refused INVITEs must not grow memory without bound:
                // deduplication is best effort, memory is not.
                if shared.refused.len() > 100_000 {
                    shared.refused.clear();
                }
            }
            if shared
                .refused
                .insert(refusal.call_id.clone(), now)
                .is_none()
            {
                shared.audit.write("refused", &refusal);
                let m = &shared.metrics;
                if refusal.sip_status == 503 {
                    if shared.draining() {
                        m.draining_rejections.inc();
                    } else {
                        m.overload_rejections.inc();
                    }
                }
                m.calls
                    .get_or_create(&metrics::CallLabels {
                        organization: refusal
                            .organization
                            .clone()
                            .unwrap_or_else(|| "unknown".into()),
                        outcome: refusal.result.to_string(),
                    })
                    .inc();
            }
            send_sip_now(shared, t)
        }
        Inbound::Drop(why) => debug!(from = %flow.remote, why, "dropped"),
    }
}

/// A routed INVITE that would become a call: calls up from its source and the call rate
/// (`sip::gate`), then digest authentication when `[sip.auth]` asks for it, then the call.
fn new_call(
    shared: &Arc<Shared>,
    endpoint: &Endpoint,
    config: Arc<Config>,
    adm: crate::sip::endpoint::Admission,
    flow: Flow,
    now: std::time::Instant,
) {
    use crate::sip::auth::Verdict;
    // Per source: the effective one (sip::source), so behind a proxy each PBX has its own
    // call rate and calls-up count rather than all sharing the proxy's.
    let limited = shared.gate().new_call(&config.sip.access, now, adm.source);
    if let Err(why) = limited {
        shared.metrics.rejected(why);
        debug!(from = %flow.remote, reason = why.as_str(), "new call turned away");
        if let Inbound::Denied(Some(t), _) = endpoint.deny(&adm.invite, flow, why) {
            send_sip_now(shared, t);
        }
        return;
    }
    if let Some(auth) = &config.sip.auth {
        let mut a = shared.auth.lock().unwrap_or_else(|e| e.into_inner());
        if let Verdict::Challenge { stale, failed } = a.check(auth, now, &adm.invite) {
            let r = a.challenge(auth, now, &adm.invite, stale, &config.sip.user_agent);
            drop(a);
            if failed {
                shared.metrics.rejected(crate::sip::gate::Rejection::Auth);
                debug!(from = %flow.remote, "digest authentication failed");
            }
            send_sip_now(
                shared,
                SipTransmit {
                    flow: crate::sip::build::response_flow(&adm.invite, flow),
                    data: r.to_bytes(),
                },
            );
            return;
        }
    }
    call_task::admit(shared, config, adm, flow);
}

fn deliver(shared: &Shared, msg: Message, flow: Flow) {
    // Clone the sender out so no map guard is held while sending.
    let tx = shared
        .calls
        .get(msg.call_id())
        .map(|e| e.value().tx.clone());
    if let Some(tx) = tx {
        if tx.try_send(CallInput::Sip(msg, flow)).is_err() {
            debug!("call inbox full or closed; message dropped (peer will retransmit)");
        }
    }
}

/// Sends SIP bytes on their flow without waiting: a UDP datagram goes out now (or, if the
/// socket buffer is full, from a task that waits for room); a TCP message joins its
/// connection's write queue — or, when the peer has closed it, the queue of a connection
/// opened to the request's next hop or the response's Via (`tcp::open`).
pub(crate) fn send_sip_now(shared: &Arc<Shared>, t: SipTransmit) {
    shared.metrics.sip("out", &t.data);
    match t.flow.transport {
        Transport::Udp => {
            let Some((sock, _)) = shared.udp.get(t.flow.conn as usize) else {
                return;
            };
            match send_datagram(sock, &t.data, t.flow.remote) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let sock = sock.clone();
                    let shared = shared.clone();
                    shared.rt.clone().spawn(async move {
                        if let Err(e) = sock.send_to(&t.data, t.flow.remote).await {
                            warn!(to = %t.flow.remote, error = %e, "udp send failed");
                            shared.metrics.send_failed(Transport::Udp, "send_error");
                            report_unsent(&shared, &t.data);
                        }
                    });
                }
                Err(e) => {
                    warn!(to = %t.flow.remote, error = %e, "udp send failed");
                    shared.metrics.send_failed(Transport::Udp, "send_error");
                    report_unsent(shared, &t.data);
                }
            }
        }
        Transport::Tcp => {
            let conn = |id: &u64| shared.tcp_conns.get(id).map(|e| e.value().0.clone());
            let tx = conn(&t.flow.conn).or_else(|| {
                let id = shared.tcp_out.get(&t.flow.remote).map(|e| *e.value())?;
                conn(&id)
            });
            match tx {
                Some(tx) => {
                    if let Err(e) = tx.try_send(t.data) {
                        warn!(to = %t.flow.remote, "tcp connection backlog full; message dropped");
                        shared.metrics.send_failed(Transport::Tcp, "backlog_full");
                        report_unsent(shared, &e.into_inner());
                    }
                }
                // The connection is gone: a request goes to the dialog's next hop, a
                // response to its Via's received IP and sent-by port (§18.2.2), each on a
                // connection opened there (or one already open to it).
                None => tcp::open(shared, t.flow.remote, t.data),
            }
        }
    }
}

/// Tells the call a request of its own could not be sent (a connection that could not be
/// opened, a send the OS refused), so its transaction ends now as on a 503 (RFC 3261
/// §17.1.4) rather than after Timer F. Responses are not reported: their transaction ends
/// on its own timer.
pub(crate) fn report_unsent(shared: &Shared, data: &[u8]) {
    if data.starts_with(b"SIP/2.0 ") {
        return;
    }
    let Ok(m) = Message::parse(data, &crate::sip::msg::Limits::default(), false) else {
        return;
    };
    let Some(branch) = m.top_via().and_then(|v| v.branch().map(str::to_string)) else {
        return;
    };
    if let Some(e) = shared.calls.get(m.call_id()) {
        let _ = e.value().tx.try_send(CallInput::TransportError(branch));
    }
}

/// Sends one datagram now, on the socket's non-blocking fd. Not tokio's `try_send_to`:
/// that reports WouldBlock until the reactor has seen the socket writable, which dropped
/// the first RTP frames of every call (a fresh socket) — the prompt's marked first packet.
pub(crate) fn send_datagram(
    sock: &UdpSocket,
    data: &[u8],
    dest: SocketAddr,
) -> std::io::Result<usize> {
    socket2::SockRef::from(sock).send_to(data, &dest.into())
}

/// The local address the OS would use to reach `peer` (no packet is sent).
pub(crate) fn local_ip_toward(peer: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if peer.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(peer).ok()?;
    Some(s.local_addr().ok()?.ip())
}

/// The address we advertise for a listen socket, toward `peer`.
pub(crate) fn advertised(bound: SocketAddr, public: Option<IpAddr>, peer: SocketAddr) -> IpAddr {
    if let Some(p) = public {
        return p;
    }
    if !bound.ip().is_unspecified() {
        return bound.ip();
    }
    local_ip_toward(peer).unwrap_or(bound.ip())
}
