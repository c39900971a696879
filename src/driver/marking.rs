//! How our packets are marked in their IP headers: the DSCP of SIP and of media (RFC 2474;
//! RFC 4594's classes: CS3 for signaling, EF for telephony media), and for media sockets
//! don't-fragment without path-MTU discovery.

use socket2::SockRef;
use std::io;

/// Marks what `sock` sends with `dscp` (0: left as the system marks it). An IPv6 socket
/// may carry IPv4 too (mapped addresses), so both its traffic class and its IPv4 TOS are
/// set.
pub(crate) fn set_dscp(sock: &SockRef<'_>, dscp: u8, ipv6: bool) -> io::Result<()> {
    if dscp == 0 {
        return Ok(());
    }
    let tos = u32::from(dscp) << 2;
    if ipv6 {
        sock.set_tclass_v6(tos)?;
        // An IPv6-only socket refuses it; its IPv6 marking is what counts.
        let _ = sock.set_tos_v4(tos);
        Ok(())
    } else {
        sock.set_tos_v4(tos)
    }
}

/// Sets an IPv4 media socket's datagrams don't-fragment without path-MTU discovery
/// (`IP_PMTUDISC_PROBE`). A frame is ~200 bytes, far below any path's MTU. The default
/// (`IP_PMTUDISC_WANT`) sets DF too but still lets the kernel fragment locally, so it
/// hashes a fresh IP ID for every datagram (`__ip_select_ident`: 1.7 % of our CPU at 4,000
/// calls, `perf record`); with DF binding, the ID of these atomic datagrams is 0, as RFC
/// 6864 allows. Not for SIP: a large INVITE response may need fragments.
#[cfg(target_os = "linux")]
pub(crate) fn dont_fragment(sock: &SockRef<'_>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value: libc::c_int = libc::IP_PMTUDISC_PROBE;
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: the descriptor is an open socket, borrowed for this call; the option value
    // points at a live c_int and `len` is its size, which is what IP_MTU_DISCOVER reads.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            std::ptr::from_ref(&value).cast(),
            len,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn dont_fragment(_sock: &SockRef<'_>) -> io::Result<()> {
    Ok(())
}

/// Marks a SIP socket (UDP, a TCP listener or connection) with its DSCP; a failure is
/// logged (SIP goes on unmarked).
pub(crate) fn mark_sip(sock: SockRef<'_>, dscp: u8, addr: std::net::SocketAddr) {
    if let Err(e) = set_dscp(&sock, dscp, addr.is_ipv6()) {
        tracing::warn!(%addr, dscp, error = %e, "cannot mark SIP with its DSCP");
    }
}

/// Marks a media socket: its DSCP, and don't-fragment on IPv4. Failures are logged (the
/// call goes on unmarked).
pub(crate) fn mark_media(sock: SockRef<'_>, dscp: u8, ipv6: bool) {
    if let Err(e) = set_dscp(&sock, dscp, ipv6) {
        tracing::debug!(error = %e, dscp, "cannot mark a media socket's DSCP");
    }
    if !ipv6 {
        if let Err(e) = dont_fragment(&sock) {
            tracing::debug!(error = %e, "cannot set a media socket don't-fragment");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mtu_discover(sock: &std::net::UdpSocket) -> libc::c_int {
        use std::os::fd::AsRawFd;
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: test only; an open socket, a live c_int and its size.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                std::ptr::from_mut(&mut v).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0);
        v
    }

    #[test]
    fn media_sockets_carry_ef_and_dont_fragment() -> std::io::Result<()> {
        let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
        assert_ne!(mtu_discover(&s), libc::IP_PMTUDISC_PROBE);
        mark_media(SockRef::from(&s), 46, false);
        assert_eq!(SockRef::from(&s).tos_v4()?, 46 << 2);
        assert_eq!(mtu_discover(&s), libc::IP_PMTUDISC_PROBE);
        Ok(())
    }

    #[test]
    fn dscp_zero_leaves_the_socket_alone_and_ipv6_gets_its_traffic_class() -> std::io::Result<()> {
        let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
        set_dscp(&SockRef::from(&s), 0, false)?;
        assert_eq!(SockRef::from(&s).tos_v4()?, 0);
        if let Ok(s6) = std::net::UdpSocket::bind("[::1]:0") {
            set_dscp(&SockRef::from(&s6), 24, true)?;
            assert_eq!(SockRef::from(&s6).tclass_v6()?, 24 << 2);
        }
        Ok(())
    }
}
