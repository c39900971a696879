//! SIP over TCP (RFC 3261 §18.3): accept, frame by Content-Length, one writer per
//! connection. A connection that breaks framing or exceeds the size limit is closed
//! after a 400 when one can be addressed.

use super::{dispatch, Shared};
use crate::config::Transport;
use crate::sip::msg::{frame_stream, Frame, Limits};
use crate::sip::Flow;
use bytes::{Buf, Bytes, BytesMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Most simultaneous TCP connections; more are refused (closed at once).
const MAX_CONNECTIONS: usize = 4096;
/// Outgoing messages queued per connection before we drop.
const WRITE_QUEUE: usize = 256;

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

/// A connection's entry in `Shared::tcp_conns`, removed on drop.
struct ConnEntry(Arc<Shared>, u64);

impl Drop for ConnEntry {
    fn drop(&mut self) {
        self.0.tcp_conns.remove(&self.1);
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
    let limits = Limits::for_message(shared.config.load().sip.max_message_bytes);
    let flow = Flow {
        transport: Transport::Tcp,
        conn: id,
        remote: peer,
    };
    let mut buf = BytesMut::with_capacity(4096);
    'read: loop {
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            match frame_stream(&buf, &limits) {
                Ok(Frame::Incomplete) => break,
                Ok(Frame::Skip(n)) => buf.advance(n),
                Ok(Frame::Message(n)) => {
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
    }
    // Let queued responses go out before the writer is dropped.
    tokio::task::yield_now().await;
    shared.tcp_conns.remove(&id);
    let _ = writer.await;
}
