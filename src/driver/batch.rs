//! Batched datagram I/O for the shared media sockets: RTP frames of many calls leave in one
//! `sendmmsg`, and what has arrived is read with one `recvmmsg`. Linux only (as the
//! service is); with loop_timer.rs and the DTMF kernels, the places with `unsafe`, each
//! block with the reason it is sound.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Room per datagram (RTP and RTCP packets are far smaller).
const SLOT: usize = crate::media::rtp::MAX_RTP_PACKET;

/// Datagrams queued to leave one socket together.
pub struct SendBatch {
    data: Box<[u8]>,
    lens: [usize; BATCH],
    dests: Vec<socket2::SockAddr>,
    /// Datagrams dropped because the socket's buffer was full or the send failed.
    pub dropped: u64,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            data: vec![0; BATCH * SLOT].into_boxed_slice(),
            lens: [0; BATCH],
            dests: Vec::with_capacity(BATCH),
            dropped: 0,
        }
    }
}

impl SendBatch {
    /// Queues `data` for `dest`, sending the batch first if it is full.
    pub fn push(&mut self, sock: &UdpSocket, data: &[u8], dest: SocketAddr) {
        if self.dests.len() >= BATCH {
            self.flush(sock);
        }
        let i = self.dests.len();
        let Some(slot) = self.data.get_mut(i * SLOT..(i + 1) * SLOT) else {
            return;
        };
        let n = data.len().min(SLOT);
        if let (Some(to), Some(from), Some(len)) =
            (slot.get_mut(..n), data.get(..n), self.lens.get_mut(i))
        {
            to.copy_from_slice(from);
            *len = n;
            self.dests.push(dest.into());
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.dests.is_empty()
    }

    /// Sends everything queued. A full socket buffer drops the rest (RTP is lossy by
    /// nature; a frame is never worth blocking the loop).
    pub fn flush(&mut self, sock: &UdpSocket) {
        let n = self.dests.len();
        if n == 0 {
            return;
        }
        // SAFETY: all-zero bytes are a valid `iovec` and `mmsghdr` (null pointers, zero
        // lengths), overwritten below before use.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdr: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, ((v, h), dest)) in iov
            .iter_mut()
            .zip(hdr.iter_mut())
            .zip(self.dests.iter())
            .enumerate()
        {
            let len = self.lens.get(i).copied().unwrap_or(0);
            let Some(slot) = self.data.get_mut(i * SLOT..i * SLOT + len) else {
                continue;
            };
            v.iov_base = slot.as_mut_ptr().cast();
            v.iov_len = len;
            h.msg_hdr.msg_name = dest.as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = dest.len();
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < n {
            let Some(rest) = hdr.get_mut(sent..n) else {
                break;
            };
            // SAFETY: `rest` holds `rest.len()` initialized headers whose name and iovec
            // pointers point into `self.dests` and `self.data`, which outlive the call and
            // are not touched during it; the kernel only reads them (and writes msg_len).
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    rest.as_mut_ptr(),
                    rest.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r <= 0 {
                let e = std::io::Error::last_os_error();
                if r < 0 && e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                // WouldBlock (buffer full) or an error on the first datagram (e.g. an
                // unreachable address): skip that one and go on with the rest.
                self.dropped += 1;
                sent += 1;
                continue;
            }
            sent += r as usize;
        }
        self.dests.clear();
    }
}

/// Buffers for reading up to `BATCH` datagrams with one `recvmmsg`.
pub struct RecvBatch {
    data: Box<[u8]>,
    lens: [usize; BATCH],
    srcs: Vec<Option<SocketAddr>>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            // One byte more per slot than a packet may have, so an oversized one is seen.
            data: vec![0; BATCH * (SLOT + 1)].into_boxed_slice(),
            lens: [0; BATCH],
            srcs: Vec::with_capacity(BATCH),
        }
    }
}

impl RecvBatch {
    /// Reads what the socket holds, up to `BATCH` datagrams, without waiting. Returns how
    /// many; 0 when there was nothing (or an error, which a later read retries).
    pub fn recv(&mut self, sock: &UdpSocket) -> usize {
        // SAFETY: all-zero bytes are a valid `iovec`, `mmsghdr` and `sockaddr_storage`
        // (null pointers, zero lengths), the first two overwritten below before use.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut hdr: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
        for (i, ((v, h), name)) in iov
            .iter_mut()
            .zip(hdr.iter_mut())
            .zip(names.iter_mut())
            .enumerate()
        {
            let Some(slot) = self.data.get_mut(i * (SLOT + 1)..(i + 1) * (SLOT + 1)) else {
                continue;
            };
            v.iov_base = slot.as_mut_ptr().cast();
            v.iov_len = slot.len();
            h.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `hdr` holds BATCH initialized headers whose iovecs point into
        // `self.data` (each to its own slot of the stated length) and whose names point
        // into `names`, all alive and unaliased for the call; the kernel writes at most
        // the stated lengths.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdr.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        self.srcs.clear();
        if r <= 0 {
            return 0;
        }
        let n = (r as usize).min(BATCH);
        for (i, (h, name)) in hdr.iter().zip(names.iter()).take(n).enumerate() {
            if let Some(l) = self.lens.get_mut(i) {
                *l = h.msg_len as usize;
            }
            self.srcs.push(socket_addr(name, h.msg_hdr.msg_namelen));
        }
        n
    }

    /// Datagram `i` of the last read: its source and bytes (`None` for an address that
    /// is not IP).
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        let src = (*self.srcs.get(i)?)?;
        let len = *self.lens.get(i)?;
        let start = i * (SLOT + 1);
        Some((src, self.data.get(start..start + len.min(SLOT + 1))?))
    }
}

/// The IP address and port in a `sockaddr_storage` the kernel filled in.
fn socket_addr(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(name.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a `sockaddr_in` (the kernel wrote
            // `len` bytes of it); `sockaddr_storage` is aligned for every address type.
            let a =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((
                u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for `sockaddr_in6`.
            let a =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_leaves_in_order_and_arrives_whole() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let to = rx.local_addr().unwrap();
        let mut b = SendBatch::default();
        // More than one batch: the push that finds it full sends it first.
        for i in 0..(BATCH + 3) {
            b.push(&tx, &[i as u8; 172], to);
        }
        b.flush(&tx);
        assert!(b.is_empty());
        let mut r = RecvBatch::default();
        let mut got = Vec::new();
        for _ in 0..100 {
            let n = r.recv(&rx);
            for i in 0..n {
                let (src, data) = r.get(i).unwrap();
                assert_eq!(src, tx.local_addr().unwrap());
                assert_eq!(data.len(), 172);
                got.push(data[0]);
            }
            if got.len() == BATCH + 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let want: Vec<u8> = (0..(BATCH + 3)).map(|i| i as u8).collect();
        assert_eq!(got, want);
        assert_eq!(r.recv(&rx), 0, "nothing left");
    }

    #[test]
    fn an_oversized_datagram_is_seen_as_such() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        tx.send_to(&[7; SLOT + 500], rx.local_addr().unwrap())
            .unwrap();
        let mut r = RecvBatch::default();
        let mut n = 0;
        for _ in 0..100 {
            n = r.recv(&rx);
            if n > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(n, 1);
        assert_eq!(r.get(0).unwrap().1.len(), SLOT + 1);
    }
}
