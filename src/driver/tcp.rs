//! SIP over TCP (RFC 3261 §18.3): accept, frame by Content-Length, one writer per
//! connection. A connection that breaks framing or exceeds the size limit is closed
//! after a 400 when one can be addressed; one that brings nothing for
//! `[sip] tcp_idle_timeout_secs`, or leaves a message unfinished for 64×T1, is closed;
//! a double-CRLF keep-alive gets its CRLF pong (RFC 5626 §4.4.1). When the peer has closed the connection a
//! dialog or a request came on, our next request opens one to the dialog's next hop
//! (§18.1.1) and a response one to its Via's received IP and sent-by port (§18.2.2);
//! later messages to the same place share it.

use super::{dispatch, Shared};
use crate::config::Transport;
use crate::sip::msg::{frame_stream, Frame, Limits};
use crate::sip::Flow;
use bytes::{Buf, Bytes, BytesMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Most simultaneous TCP connections; more are refused (closed at once).
const MAX_CONNECTIONS: usize = 4096;
/// Outgoing messages queued per connection before we drop.
const WRITE_QUEUE: usize = 256;
/// How long opening a connection may take before its queued requests are dropped (the
/// transactions then time out as on a lost datagram).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: Arc<TcpListener>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "tcp accept failed");
                continue;
            }
        };
        // A stranger gets no connection at all ([sip] allow; closed at once, counted).
        if !shared.config.load().sip.access.allows(peer.ip()) {
            shared
                .metrics
                .rejected(crate::sip::gate::Rejection::NotAllowed);
            debug!(%peer, "tcp connection from a source not allowed; closed");
            continue;
        }
        if shared.tcp_conns.len() >= MAX_CONNECTIONS {
            warn!(%peer, "too many tcp connections; refusing");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        shared.tcp_conns.insert(id, (tx, local));
        let shared = shared.clone();
        tokio::spawn(async move {
            // Removes the entry however the task ends, a panic included: the stream halves
            // drop with the task, so the socket is closed, not left in CLOSE-WAIT.
            let _entry = ConnEntry(shared.clone(), id);
            connection(&shared, stream, id, peer, rx).await;
        });
    }
}

/// Opens a connection to `to` for a message (`first`) whose own connection is gone, and
/// keeps it, like an accepted one, for whatever else goes there or comes back: the
/// request's responses and the peer's requests are read and dispatched as on any
/// connection. Until it is up, what is sent to `to` waits in its queue.
pub(crate) fn open(shared: &Arc<Shared>, to: std::net::SocketAddr, first: Bytes) {
    if shared.tcp_conns.len() >= MAX_CONNECTIONS {
        warn!(%to, "too many tcp connections; message dropped");
        shared
            .metrics
            .send_failed(Transport::Tcp, "too_many_connections");
        super::report_unsent(shared, &first);
        return;
    }
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    // One connection per destination: a request racing this one joins its queue.
    match shared.tcp_out.entry(to) {
        dashmap::mapref::entry::Entry::Occupied(mut e) => {
            if let Some(c) = shared.tcp_conns.get(e.get()) {
                if let Err(e) = c.value().0.try_send(first) {
                    warn!(%to, "tcp connection backlog full; message dropped");
                    shared.metrics.send_failed(Transport::Tcp, "backlog_full");
                    super::report_unsent(shared, &e.into_inner());
                }
                return;
            }
            // Its connection is gone: this one takes the entry over.
            e.insert(id);
        }
        dashmap::mapref::entry::Entry::Vacant(v) => {
            v.insert(id);
        }
    }
    let (tx, mut rx) = mpsc::channel(WRITE_QUEUE);
    let _ = tx.try_send(first);
    let unbound = match to {
        std::net::SocketAddr::V4(_) => std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        std::net::SocketAddr::V6(_) => std::net::SocketAddr::from(([0u16; 8], 0)),
    };
    shared.tcp_conns.insert(id, (tx, unbound));
    // Info: rare (a peer or proxy closed a connection a dialog still needs), and an
    // operator tuning a proxy's connection lifetime wants to see it.
    info!(%to, "opening a tcp connection for a message whose own is gone");
    let shared = shared.clone();
    shared.rt.clone().spawn(async move {
        let entry = ConnEntry(shared.clone(), id);
        let out = OutEntry(shared.clone(), to, id);
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await {
            Ok(Ok(s)) => s,
            failed => {
                match failed {
                    Ok(Err(e)) => warn!(%to, error = %e, "tcp connect failed; messages dropped"),
                    _ => warn!(%to, "tcp connect timed out; messages dropped"),
                }
                // Nothing more joins the queue; the requests in it are reported to their
                // calls, which take the failure as a 503 now (§17.1.4) — not after Timer F.
                drop((out, entry));
                rx.close();
                while let Ok(b) = rx.try_recv() {
                    shared.metrics.send_failed(Transport::Tcp, "connect_failed");
                    super::report_unsent(&shared, &b);
                }
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        super::marking::mark_sip(
            socket2::SockRef::from(&stream),
            shared.config.load().sip.dscp,
            to,
        );
        if let (Ok(local), Some(mut e)) = (stream.local_addr(), shared.tcp_conns.get_mut(&id)) {
            // Our address on it, with the port we listen on (of the same family): where a
            // peer reaches us again once this connection is gone.
            let listen = shared
                .tcp_listen
                .iter()
                .find(|a| a.is_ipv4() == local.is_ipv4())
                .map_or(local.port(), |a| a.port());
            e.value_mut().1 = std::net::SocketAddr::new(local.ip(), listen);
        }
        let _kept = (entry, out);
        connection(&shared, stream, id, to, rx).await;
    });
}

/// A connection's entry in `Shared::tcp_conns`, removed on drop.
struct ConnEntry(Arc<Shared>, u64);

impl Drop for ConnEntry {
    fn drop(&mut self) {
        self.0.tcp_conns.remove(&self.1);
    }
}

/// An opened connection's entry in `Shared::tcp_out`, removed on drop (unless another
/// connection has taken it over).
struct OutEntry(Arc<Shared>, std::net::SocketAddr, u64);

impl Drop for OutEntry {
    fn drop(&mut self) {
        self.0.tcp_out.remove_if(&self.1, |_, id| *id == self.2);
    }
}

async fn connection(
    shared: &Arc<Shared>,
    stream: TcpStream,
    id: u64,
    peer: std::net::SocketAddr,
    mut out: mpsc::Receiver<Bytes>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        while let Some(b) = out.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    let (limits, idle, whole_within) = {
        let c = shared.config.load();
        let s = &c.sip;
        (
            Limits::for_message(s.max_message_bytes),
            s.tcp_idle_timeout,
            s.timers.t1.saturating_mul(64),
        )
    };
    let flow = Flow {
        transport: Transport::Tcp,
        conn: id,
        remote: peer,
    };
    let mut buf = BytesMut::with_capacity(4096);
    // When the message now in `buf` began (a peer dribbling bytes keeps the idle timer
    // from firing, not this one), and keep-alive CRLF bytes since the last message.
    let mut begun: Option<Instant> = None;
    let mut crlf = 0usize;
    'read: loop {
        let wait = match begun {
            Some(t) => (t + whole_within)
                .saturating_duration_since(Instant::now())
                .min(idle),
            None => idle,
        };
        match tokio::time::timeout(wait, rd.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => {
                debug!(%peer, incomplete = begun.is_some(), "tcp connection idle; closing");
                break;
            }
        }
        loop {
            match frame_stream(&buf, &limits) {
                Ok(Frame::Incomplete) => break,
                Ok(Frame::Skip(n)) => {
                    buf.advance(n);
                    // RFC 5626 §4.4.1: a double-CRLF ping gets a single-CRLF pong.
                    crlf += n;
                    if crlf >= 4 {
                        crlf = 0;
                        if let Some(c) = shared.tcp_conns.get(&id) {
                            let _ = c.value().0.try_send(Bytes::from_static(b"\r\n"));
                        }
                    }
                }
                Ok(Frame::Message(n)) => {
                    crlf = 0;
                    let msg = buf.split_to(n);
                    dispatch(shared, flow, &msg, false);
                }
                Err(e) => {
                    debug!(%peer, error = %e, "tcp framing error; closing");
                    // Answer what can be answered, then drop the stream: it cannot resync.
                    dispatch(shared, flow, &buf, false);
                    break 'read;
                }
            }
        }
        begun = if buf.is_empty() {
            None
        } else {
            begun.or_else(|| Some(Instant::now()))
        };
    }
    // Let queued responses go out before the writer is dropped.
    tokio::task::yield_now().await;
    shared.tcp_conns.remove(&id);
    let _ = writer.await;
}
