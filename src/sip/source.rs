//! The address a request is taken to come from for trust decisions (P-Asserted-Identity
//! trust, organization `match_source` blocks, access lists): the packet's source, or —
//! only when the packet comes from one of `[sip] trusted_proxies` — the address that proxy
//! wrote in `[sip] source_header` (Kamailio: `append_hf("X-Source-IP: $si\r\n")`). This is
//! the one place that decides it; everything that trusts an address asks here.

use super::msg::Message;
use crate::config::SipConfig;
use std::net::{IpAddr, SocketAddr};

/// The effective source address of `req`, which arrived from `packet_src`.
///
/// The header counts only from a trusted proxy; from anyone else it is ignored (a PBX or
/// a caller cannot claim an address by writing the header). When a proxy sends several
/// values (several headers or a comma list, `X-Forwarded-For` style), the last one is the
/// one the nearest proxy added. A trusted proxy's request without a usable value is taken
/// as coming from the proxy itself.
pub fn effective_source(req: &Message, packet_src: IpAddr, sip: &SipConfig) -> IpAddr {
    if sip.source_header.is_empty() || !sip.trusted_proxies.iter().any(|c| c.contains(packet_src)) {
        return packet_src;
    }
    req.header_values(&sip.source_header)
        .last()
        .and_then(parse_address)
        .unwrap_or(packet_src)
}

/// `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`, or any of them with a `:port`.
fn parse_address(value: &str) -> Option<IpAddr> {
    let v = value.trim();
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    v.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::msg::Limits;

    fn sip(extra: &str) -> SipConfig {
        crate::config::parse(&format!("[sip]\n{extra}\n"), "t")
            .unwrap()
            .sip
    }

    fn invite(extra: &str) -> Message {
        let s = format!(
            "INVITE sip:pin@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1\r\n\
From: <sip:+15551234567@10.0.0.2>;tag=ft\r\nTo: <sip:pin@10.0.0.1>\r\nCall-ID: c1\r\n\
CSeq: 1 INVITE\r\nContact: <sip:a@10.0.0.2>\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse(s.as_bytes(), &Limits::default(), true).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_proxy() {
        let cfg = sip("trusted_proxies = [\"10.0.0.0/24\"]");
        let req = invite("X-Source-IP: 198.51.100.7\r\n");
        assert_eq!(
            effective_source(&req, ip("10.0.0.5"), &cfg),
            ip("198.51.100.7")
        );
        // Anyone else writing it gets their packet's source.
        assert_eq!(
            effective_source(&req, ip("203.0.113.9"), &cfg),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn no_trusted_proxies_means_the_packet_source_always() {
        let cfg = sip("");
        assert!(cfg.trusted_proxies.is_empty());
        assert_eq!(cfg.source_header, "X-Source-IP");
        let req = invite("X-Source-IP: 198.51.100.7\r\n");
        assert_eq!(effective_source(&req, ip("10.0.0.5"), &cfg), ip("10.0.0.5"));
    }

    #[test]
    fn a_trusted_proxy_without_a_usable_value_is_the_source_itself() {
        let cfg = sip("trusted_proxies = [\"10.0.0.5\"]");
        for extra in ["", "X-Source-IP: not-an-address\r\n", "X-Source-IP:\r\n"] {
            assert_eq!(
                effective_source(&invite(extra), ip("10.0.0.5"), &cfg),
                ip("10.0.0.5"),
                "{extra:?}"
            );
        }
    }

    #[test]
    fn the_nearest_proxys_value_wins_and_forms_parse() {
        let cfg =
            sip("trusted_proxies = [\"10.0.0.5\", \"::1\"]\nsource_header = \"X-Forwarded-For\"");
        let req = invite("X-Forwarded-For: 192.0.2.1, 198.51.100.7\r\n");
        assert_eq!(
            effective_source(&req, ip("10.0.0.5"), &cfg),
            ip("198.51.100.7")
        );
        let req = invite("x-forwarded-for: 192.0.2.1\r\nX-Forwarded-For: [2001:db8::7]:5060\r\n");
        assert_eq!(effective_source(&req, ip("::1"), &cfg), ip("2001:db8::7"));
        let req = invite("X-Forwarded-For: [2001:db8::8]\r\n");
        assert_eq!(effective_source(&req, ip("::1"), &cfg), ip("2001:db8::8"));
        let req = invite("X-Forwarded-For: 192.0.2.9:5070\r\n");
        assert_eq!(
            effective_source(&req, ip("10.0.0.5"), &cfg),
            ip("192.0.2.9")
        );
        // The configured name only: another header is not read.
        let req = invite("X-Source-IP: 192.0.2.1\r\n");
        assert_eq!(effective_source(&req, ip("10.0.0.5"), &cfg), ip("10.0.0.5"));
    }
}
