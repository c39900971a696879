//! What went over loopback during a call: tcpdump on `lo` writes a pcap (kernel timestamps,
//! one clock for every process), read back here into UDP datagrams, SIP messages and RTP.

use pcap_file::pcap::PcapReader;
use pcap_file::DataLink;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running tcpdump.
pub struct Capture {
    child: Child,
    path: PathBuf,
}

impl Capture {
    /// Starts capturing UDP on loopback with the BPF `filter`; returns once tcpdump says it
    /// is listening (so nothing the test does afterwards is missed).
    pub fn start(dir: &Path, filter: &str) -> Capture {
        let path = dir.join("call.pcap");
        let mut child = Command::new("tcpdump")
            .args(["-i", "lo", "-n", "-U", "-s", "0", "-w"])
            .arg(&path)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcpdump (apt-get install -y tcpdump; see .ci/run)");
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut said = Vec::new();
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let listening = l.contains("listening on");
                said.push(l);
                if listening {
                    let _ = tx.send(Ok(()));
                }
            }
            let _ = tx.send(Err(said.join("\n")));
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(said)) => {
                panic!("tcpdump could not capture on lo (it needs root or CAP_NET_RAW): {said}")
            }
            Err(_) => panic!("tcpdump did not start listening within 10 s"),
        }
        Capture { child, path }
    }

    /// Stops tcpdump (SIGINT, so it flushes) and returns the UDP datagrams it saw.
    pub fn stop(mut self) -> Vec<Datagram> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        read_udp(&std::fs::read(&self.path).expect("read the capture"))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One UDP datagram, with the kernel's timestamp (seconds since the epoch).
#[derive(Debug, Clone)]
pub struct Datagram {
    pub t: f64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub data: Vec<u8>,
    /// The IPv4 header's TOS byte (DSCP << 2), DF flag and identification.
    pub tos: u8,
    pub df: bool,
    pub ip_id: u16,
}

/// The IPv4 UDP datagrams of a pcap (Ethernet as tcpdump writes for `lo`, Linux cooked, raw).
pub fn read_udp(pcap: &[u8]) -> Vec<Datagram> {
    let mut r = PcapReader::new(pcap).expect("a pcap file");
    let link = r.header().datalink;
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let Ok(p) = p else { break };
        let d = &p.data;
        let ip = match link {
            DataLink::ETHERNET if d.len() > 14 && d[12..14] == [0x08, 0x00] => &d[14..],
            DataLink::LINUX_SLL if d.len() > 16 && d[14..16] == [0x08, 0x00] => &d[16..],
            DataLink::RAW | DataLink::IPV4 => &d[..],
            _ => continue,
        };
        if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let ihl = usize::from(ip[0] & 0x0F) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        if total < ihl + 8 {
            continue;
        }
        let udp = &ip[ihl..total];
        let addr = |o: usize, port: &[u8]| {
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3])),
                u16::from_be_bytes([port[0], port[1]]),
            )
        };
        out.push(Datagram {
            t: p.timestamp.as_secs_f64(),
            src: addr(12, &udp[0..2]),
            dst: addr(16, &udp[2..4]),
            data: udp[8..].to_vec(),
            tos: ip[1],
            df: ip[6] & 0x40 != 0,
            ip_id: u16::from_be_bytes([ip[4], ip[5]]),
        });
    }
    out
}

/// A SIP message seen on the wire.
#[derive(Debug, Clone)]
pub struct Sip {
    pub t: f64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The request or status line.
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Sip {
    pub fn parse(d: &Datagram) -> Option<Sip> {
        let text = std::str::from_utf8(&d.data).ok()?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let start = lines.next()?.trim().to_string();
        let sip = start.starts_with("SIP/2.0 ") || start.ends_with(" SIP/2.0");
        if !sip {
            return None;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Some(Sip {
            t: d.t,
            src: d.src,
            dst: d.dst,
            start,
            headers,
            body: body.to_string(),
        })
    }

    /// The method of a request; `None` for a response.
    pub fn method(&self) -> Option<&str> {
        (!self.start.starts_with("SIP/2.0")).then(|| self.start.split(' ').next().unwrap_or(""))
    }

    /// A header's first value, by full or compact name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let compact = match name.to_ascii_lowercase().as_str() {
            "call-id" => "i",
            "content-type" => "c",
            "event" => "o",
            "refer-to" => "r",
            _ => "",
        };
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name) || k == compact)
            .map(|(_, v)| v.as_str())
    }

    /// The user part of the Request-URI (`1001` in `INVITE sip:1001@host SIP/2.0`).
    pub fn ruri_user(&self) -> Option<&str> {
        let uri = self.start.split(' ').nth(1)?;
        let rest = uri.strip_prefix("sip:")?;
        rest.split_once('@').map(|(u, _)| u)
    }

    /// The status of the message/sipfrag body of a NOTIFY (`SIP/2.0 200 OK` gives 200).
    pub fn sipfrag_status(&self) -> Option<u16> {
        self.body
            .trim_start()
            .strip_prefix("SIP/2.0 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
    }
}

/// An RTP packet seen on the wire (header fields the tests need).
#[derive(Debug, Clone)]
pub struct Rtp {
    pub t: f64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub marker: bool,
    pub pt: u8,
    pub timestamp: u32,
    pub ssrc: u32,
}

impl Rtp {
    pub fn parse(d: &Datagram) -> Option<Rtp> {
        let b = &d.data;
        if b.len() < 12 || b[0] >> 6 != 2 {
            return None;
        }
        let pt = b[1] & 0x7F;
        // RTCP (200..=204 with the marker bit) is not RTP.
        if (72..=76).contains(&pt) {
            return None;
        }
        Some(Rtp {
            t: d.t,
            src: d.src,
            dst: d.dst,
            marker: b[1] & 0x80 != 0,
            pt,
            timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        })
    }
}
