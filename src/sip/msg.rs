//! The SIP wire layer: our message model, the parser (RFC 3261 §7, §18.3 framing rules,
//! §7.3.3 compact forms, §7.3.1 folding) and the printer. Every limit a peer could abuse is
//! enforced here, before anything else looks at the bytes.
//!
//! rsip 0.4 is used for method names only (see DESIGN.md §2: it rejects folded headers,
//! compact forms, `tel:` URIs and IPv6 Contacts, and ignores Content-Length, so the
//! parse itself is ours).

use bytes::Bytes;
use std::fmt::Write as _;
use std::str::FromStr;

/// Hard limits on what a peer may send in one message.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Whole message (headers + body), bytes.
    pub max_message: usize,
    /// Number of header lines after unfolding.
    pub max_headers: usize,
    /// Length of one (unfolded) header line, bytes. As long as the message by default:
    /// RFC 4475 §3.1.1.11 has valid messages with very long values, and a method token
    /// of any length (echoed in CSeq) must still be answered 501.
    pub max_header_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 16 * 1024,
            max_headers: 128,
            max_header_line: 16 * 1024,
        }
    }
}

impl Limits {
    /// The limits for a configured message size: one header line may be as long as that.
    pub fn for_message(max_message: usize) -> Limits {
        Limits {
            max_message,
            max_header_line: max_message,
            ..Limits::default()
        }
    }
}

/// Why a message could not be parsed. Each variant maps to 400 (when there is enough of a
/// request to answer) or to a silent drop.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// The message is larger than `max_message`.
    #[error("message too large ({0} bytes)")]
    TooLarge(usize),
    /// No empty line ends the header section.
    #[error("no end of headers")]
    NoHeaderEnd,
    /// The header section is not UTF-8.
    #[error("headers are not UTF-8")]
    NotUtf8,
    /// The first line is neither a request line nor a status line.
    #[error("bad start line")]
    BadStartLine,
    /// A header line has no colon or an invalid name.
    #[error("bad header line")]
    BadHeader,
    /// Too many header lines, or one too long.
    #[error("header limits exceeded")]
    HeaderLimits,
    /// Content-Length is not a plain decimal number (negative, empty, overflowing), or
    /// two Content-Length headers (`l:` counts) disagree.
    #[error("bad Content-Length")]
    BadContentLength,
    /// The request line names a SIP version other than 2.0 (answered 505).
    #[error("SIP version not supported")]
    VersionNotSupported,
    /// A header that may appear once (From, To, Call-ID, CSeq, Max-Forwards) came twice.
    #[error("{0} more than once")]
    Duplicate(&'static str),
    /// A header we read is present but unparseable (Contact).
    #[error("malformed {0}")]
    BadValue(&'static str),
    /// Content-Length says more than the datagram holds.
    #[error("body shorter than Content-Length")]
    Truncated,
    /// A mandatory header (Via, From, To, Call-ID, CSeq) is missing or malformed.
    #[error("missing or malformed {0}")]
    Mandatory(&'static str),
}

/// SIP methods. Known ones by name; anything else keeps its token for 501.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Refer,
    Notify,
    Subscribe,
    Message,
    Prack,
    Publish,
    /// A method token we do not know (answered 501).
    Other(String),
}

impl Method {
    fn parse(tok: &str) -> Method {
        // rsip knows the standard set; map its enum to ours so unknown tokens survive.
        match rsip::Method::from_str(tok) {
            Ok(m) if m.to_string() == tok => match m {
                rsip::Method::Invite => Method::Invite,
                rsip::Method::Ack => Method::Ack,
                rsip::Method::Bye => Method::Bye,
                rsip::Method::Cancel => Method::Cancel,
                rsip::Method::Options => Method::Options,
                rsip::Method::Register => Method::Register,
                rsip::Method::Info => Method::Info,
                rsip::Method::Update => Method::Update,
                rsip::Method::Refer => Method::Refer,
                rsip::Method::Notify => Method::Notify,
                rsip::Method::Subscribe => Method::Subscribe,
                rsip::Method::Message => Method::Message,
                rsip::Method::PRack => Method::Prack,
                rsip::Method::Publish => Method::Publish,
            },
            _ => Method::Other(tok.to_string()),
        }
    }

    /// The method token as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Prack => "PRACK",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: String },
    Response { code: u16, reason: String },
}

/// A parsed (or to-be-printed) SIP message. Header names are canonical long forms.
#[derive(Debug, Clone)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

const COMPACT: &[(&str, &str)] = &[
    ("i", "Call-ID"),
    ("m", "Contact"),
    ("e", "Content-Encoding"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("f", "From"),
    ("s", "Subject"),
    ("k", "Supported"),
    ("t", "To"),
    ("v", "Via"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("b", "Referred-By"),
    ("x", "Session-Expires"),
    ("u", "Allow-Events"),
];

/// Headers that may appear once only (§20: no comma-separated list form).
const SINGLE: [&str; 5] = ["From", "To", "Call-ID", "CSeq", "Max-Forwards"];

const CANONICAL: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Max-Forwards",
    "Content-Type",
    "Content-Length",
    "Record-Route",
    "Route",
    "Allow",
    "Supported",
    "Require",
    "Session-Expires",
    "Min-SE",
    "Retry-After",
    "Event",
    "Refer-To",
    "Referred-By",
    "Subscription-State",
    "P-Asserted-Identity",
    "Remote-Party-ID",
    "User-Agent",
    "Server",
    "Warning",
    "Accept",
];

fn canonical_name(raw: &str) -> String {
    if raw.len() == 1 {
        if let Some((_, long)) = COMPACT.iter().find(|(s, _)| s.eq_ignore_ascii_case(raw)) {
            return (*long).to_string();
        }
    }
    match CANONICAL.iter().find(|c| c.eq_ignore_ascii_case(raw)) {
        Some(c) => (*c).to_string(),
        None => raw.to_string(),
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

/// Length of the header section including the blank line, if complete.
fn header_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A Content-Length value (§20.14: `1*DIGIT`): no sign, no blanks inside, no overflow.
fn content_length(v: &str) -> Result<usize, ParseError> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadContentLength);
    }
    v.parse().map_err(|_| ParseError::BadContentLength)
}

/// A second Content-Length (or `l:`) must say the same as the first: when they disagree
/// the body's length would be a guess, so the message is a 400 on any transport.
fn agree(seen: Option<usize>, n: usize) -> Result<usize, ParseError> {
    match seen {
        Some(m) if m != n => Err(ParseError::BadContentLength),
        _ => Ok(n),
    }
}

/// TCP framing (RFC 3261 §18.3): how many bytes at the front of `buf` form one message.
/// Leading CRLFs (keep-alives, RFC 5626 §3.5.1) are reported as `Skip(n)`.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Need more bytes.
    Incomplete,
    /// Discard this many bytes of keep-alive CRLF.
    Skip(usize),
    /// One whole message of this many bytes.
    Message(usize),
}

/// Finds the next frame in a stream buffer. Errors mean the stream is unrecoverable.
pub fn frame_stream(buf: &[u8], limits: &Limits) -> Result<Frame, ParseError> {
    let skip = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if skip > 0 {
        return Ok(Frame::Skip(skip));
    }
    let Some(end) = header_end(buf) else {
        if buf.len() > limits.max_message {
            return Err(ParseError::TooLarge(buf.len()));
        }
        return Ok(Frame::Incomplete);
    };
    let head = buf.get(..end).unwrap_or_default(); // header_end is never past the end
    let head = std::str::from_utf8(head).map_err(|_| ParseError::NotUtf8)?;
    let mut len = None;
    for line in head.split('\n') {
        if let Some((n, v)) = line.split_once(':') {
            let n = n.trim();
            if n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l") {
                len = Some(agree(len, content_length(v)?)?);
            }
        }
    }
    // A stream message without Content-Length cannot be framed (§18.3 MUST).
    let len = len.ok_or(ParseError::Mandatory("Content-Length"))?;
    let total = end.checked_add(len).ok_or(ParseError::BadContentLength)?;
    if total > limits.max_message {
        return Err(ParseError::TooLarge(total));
    }
    if buf.len() < total {
        Ok(Frame::Incomplete)
    } else {
        Ok(Frame::Message(total))
    }
}

impl Message {
    /// Parses one message. `datagram` selects the UDP rule for a missing Content-Length
    /// (body runs to the end) — on a stream it is mandatory and framing already checked it.
    pub fn parse(buf: &[u8], limits: &Limits, datagram: bool) -> Result<Message, ParseError> {
        if buf.len() > limits.max_message {
            return Err(ParseError::TooLarge(buf.len()));
        }
        // Tolerate leading CRLF before the start line (§7.5).
        let mut buf = buf;
        while let [b'\r' | b'\n', after @ ..] = buf {
            buf = after;
        }
        let (head, rest) = header_end(buf)
            .and_then(|end| buf.split_at_checked(end))
            .ok_or(ParseError::NoHeaderEnd)?;
        let head = std::str::from_utf8(head).map_err(|_| ParseError::NotUtf8)?;
        let mut lines = head
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .filter(|l| !l.is_empty());
        let first = lines.next().ok_or(ParseError::BadStartLine)?;
        let start = parse_start_line(first)?;

        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with(' ') || line.starts_with('\t') {
                // Folded continuation (§7.3.1): joins the previous header with one space.
                let (_, v) = headers.last_mut().ok_or(ParseError::BadHeader)?;
                if !v.is_empty() {
                    v.push(' ');
                }
                v.push_str(line.trim());
                if v.len() > limits.max_header_line {
                    return Err(ParseError::HeaderLimits);
                }
                continue;
            }
            if line.len() > limits.max_header_line {
                return Err(ParseError::HeaderLimits);
            }
            let (name, value) = line.split_once(':').ok_or(ParseError::BadHeader)?;
            let name = name.trim_end_matches([' ', '\t']);
            if name.is_empty() || !name.chars().all(is_token_char) {
                return Err(ParseError::BadHeader);
            }
            if headers.len() >= limits.max_headers {
                return Err(ParseError::HeaderLimits);
            }
            headers.push((canonical_name(name), value.trim().to_string()));
        }

        let mut cl = None;
        for (_, v) in headers.iter().filter(|(n, _)| n == "Content-Length") {
            cl = Some(agree(cl, content_length(v)?)?);
        }
        let body = match cl {
            // §18.3: bytes past Content-Length in a datagram are discarded.
            Some(n) => Bytes::copy_from_slice(rest.get(..n).ok_or(ParseError::Truncated)?),
            None if datagram => Bytes::copy_from_slice(rest),
            None => return Err(ParseError::Mandatory("Content-Length")),
        };
        let msg = Message {
            start,
            headers,
            body,
        };
        msg.check_mandatory()?;
        Ok(msg)
    }

    fn check_mandatory(&self) -> Result<(), ParseError> {
        // §7.3.1 / RFC 4475 §3.1.2.19: single-valued headers appear once.
        for name in SINGLE {
            if self.headers.iter().filter(|(n, _)| n == name).count() > 1 {
                return Err(ParseError::Duplicate(name));
            }
        }
        let via = self.top_via().ok_or(ParseError::Mandatory("Via"))?;
        // A request from port 0 cannot be answered (and an INVITE's RTP would go nowhere).
        let request = matches!(self.start, StartLine::Request { .. });
        if via.host.is_empty() || (request && via.port == Some(0)) {
            return Err(ParseError::Mandatory("Via"));
        }
        self.header("From")
            .and_then(NameAddr::parse)
            .ok_or(ParseError::Mandatory("From"))?;
        self.header("To")
            .and_then(NameAddr::parse)
            .ok_or(ParseError::Mandatory("To"))?;
        match self.header("Call-ID") {
            Some(v) if !v.is_empty() && !v.contains(char::is_whitespace) => {}
            _ => return Err(ParseError::Mandatory("Call-ID")),
        }
        let (_, m) = self.cseq().ok_or(ParseError::Mandatory("CSeq"))?;
        if let StartLine::Request { method, .. } = &self.start {
            // CSeq method must match, except the ACK/CANCEL rules which use their own method.
            if m != *method {
                return Err(ParseError::Mandatory("CSeq"));
            }
            // A Contact we may have to use must parse (a request's; a peer's response is
            // taken as it comes: we only ever read the Contact of requests).
            for c in self.header_values("Contact") {
                if NameAddr::parse(c).is_none() {
                    return Err(ParseError::BadValue("Contact"));
                }
            }
        }
        Ok(())
    }

    /// First value of a header (by canonical name, case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, with comma-separated lists split (outside quotes and <>).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| split_list(v))
    }

    /// Is the named option tag listed in this header (Supported, Require)?
    pub fn has_option(&self, header: &str, tag: &str) -> bool {
        self.header_values(header)
            .any(|v| v.trim().eq_ignore_ascii_case(tag))
    }

    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn call_id(&self) -> &str {
        self.header("Call-ID").unwrap_or("")
    }

    /// CSeq number and method. The number is `1*DIGIT` below 2^31 (§8.1.1.5).
    pub fn cseq(&self) -> Option<(u32, Method)> {
        let v = self.header("CSeq")?;
        let mut it = v.split_whitespace();
        let n = it.next()?;
        if !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u32 = n.parse().ok()?;
        if n >= 1 << 31 {
            return None;
        }
        let m = Method::parse(it.next()?);
        if it.next().is_some() {
            return None;
        }
        Some((n, m))
    }

    pub fn top_via(&self) -> Option<Via> {
        self.header_values("Via").next().and_then(Via::parse)
    }

    pub fn from(&self) -> Option<NameAddr> {
        self.header("From").and_then(NameAddr::parse)
    }

    pub fn to(&self) -> Option<NameAddr> {
        self.header("To").and_then(NameAddr::parse)
    }

    pub fn from_tag(&self) -> Option<String> {
        self.from().and_then(|f| f.param("tag").map(str::to_string))
    }

    pub fn to_tag(&self) -> Option<String> {
        self.to().and_then(|t| t.param("tag").map(str::to_string))
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header("Content-Type")
            .map(|v| v.split(';').next().unwrap_or("").trim())
    }

    /// Sets or replaces a header in place.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, v)) => *v = value,
            None => self.headers.push((name.to_string(), value)),
        }
    }

    pub fn push_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push((name.to_string(), value.into()));
    }

    /// Prints the message; Content-Length is always written, from the body.
    pub fn to_bytes(&self) -> Bytes {
        let mut s = String::with_capacity(512 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                let _ = write!(s, "{} {} SIP/2.0\r\n", method.as_str(), uri);
            }
            StartLine::Response { code, reason } => {
                let _ = write!(s, "SIP/2.0 {} {}\r\n", code, reason);
            }
        }
        for (n, v) in &self.headers {
            if n != "Content-Length" {
                let _ = write!(s, "{}: {}\r\n", n, v);
            }
        }
        let _ = write!(s, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        Bytes::from(out)
    }
}

/// `SIP/x.y` with digits: a version, if not ours (§7.1: compared case-insensitively).
fn is_sip_version(v: &str) -> bool {
    v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
        && v.get(4..).is_some_and(|n| {
            n.split_once('.').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().all(|c| c.is_ascii_digit())
                    && b.bytes().all(|c| c.is_ascii_digit())
            })
        })
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    // A NUL or any other control byte in the start line is no SIP (§25.1: SP-separated
    // tokens of visible characters).
    if line.chars().any(|c| c.is_control()) {
        return Err(ParseError::BadStartLine);
    }
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code.parse().map_err(|_| ParseError::BadStartLine)?;
        if !(100..=699).contains(&code) {
            return Err(ParseError::BadStartLine);
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.to_string(),
        });
    }
    let mut parts = line.split(' ');
    let (Some(m), Some(uri), Some(ver), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadStartLine);
    };
    if m.is_empty() || !m.chars().all(is_token_char) || uri.is_empty() {
        return Err(ParseError::BadStartLine);
    }
    if !ver.eq_ignore_ascii_case("SIP/2.0") {
        return Err(if is_sip_version(ver) {
            ParseError::VersionNotSupported
        } else {
            ParseError::BadStartLine
        });
    }
    if !uri.contains(':') {
        return Err(ParseError::BadStartLine);
    }
    Ok(StartLine::Request {
        method: Method::parse(m),
        uri: uri.to_string(),
    })
}

/// Splits a header value on commas that are outside quotes and angle brackets.
pub fn split_list(v: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut quote, mut angle, mut start) = (false, false, 0);
    let bytes = v.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' if quote => i += 1,
            b'"' => quote = !quote,
            b'<' if !quote => angle = true,
            b'>' if !quote => angle = false,
            b',' if !quote && !angle => {
                parts.push(v[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(v[start.min(v.len())..].trim());
    parts.into_iter().filter(|p| !p.is_empty())
}

/// Splits `;`-separated parameters (outside quotes) into (name, value).
fn parse_params(s: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut quote = false;
    let mut start = 0;
    let b = s.as_bytes();
    let mut push = |seg: &str| {
        let seg = seg.trim();
        if seg.is_empty() {
            return;
        }
        match seg.split_once('=') {
            Some((n, v)) => out.push((
                n.trim().to_ascii_lowercase(),
                Some(v.trim().trim_matches('"').to_string()),
            )),
            None => out.push((seg.to_ascii_lowercase(), None)),
        }
    };
    let mut escaped = false;
    for (i, c) in b.iter().enumerate() {
        match c {
            _ if escaped => escaped = false,
            b'\\' if quote => escaped = true,
            b'"' => quote = !quote,
            b';' if !quote => {
                push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    push(&s[start..]);
    out
}

/// Splits `host[:port]`, with IPv6 references in brackets.
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((format!("[{host}]"), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), Some(p.parse().ok()?))),
        Some(_) => None,
        None if s.is_empty() => None,
        None => Some((s.to_string(), None)),
    }
}

/// One Via value (§20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    /// Parses `SIP/2.0/UDP host[:port][;params]`. LWS around each `/` is legal
    /// (§25.1 SLASH = SWS "/" SWS; RFC 4475 §3.1.1.1: `SIP  /   2.0 /UDP`).
    pub fn parse(v: &str) -> Option<Via> {
        let (name, rest) = v.trim().split_once('/')?;
        let (ver, rest) = rest.split_once('/')?;
        let rest = rest.trim_start();
        let (transport, rest) = rest.split_once(|c: char| c.is_whitespace())?;
        if !name.trim().eq_ignore_ascii_case("SIP")
            || ver.trim() != "2.0"
            || transport.is_empty()
            || !transport.chars().all(is_token_char)
        {
            return None;
        }
        let rest = rest.trim();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(sent_by)?;
        Some(Via {
            transport: transport.trim().to_ascii_uppercase(),
            host,
            port,
            params: parse_params(params),
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn has_param(&self, name: &str) -> bool {
        self.params.iter().any(|(n, _)| n == name)
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch")
    }
}

/// A name-addr or addr-spec with header parameters (From, To, Contact, Route, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: String,
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    pub fn parse(v: &str) -> Option<NameAddr> {
        let v = v.trim();
        if v.is_empty() {
            return None;
        }
        if let Some(lt) = find_unquoted(v, '<') {
            let display = v[..lt].trim().trim_matches('"').trim();
            let gt = v[lt..].find('>')? + lt;
            let uri = v[lt + 1..gt].trim();
            if uri.is_empty() {
                return None;
            }
            let params = v[gt + 1..].trim_start().strip_prefix(';').unwrap_or("");
            return Some(NameAddr {
                display: (!display.is_empty()).then(|| display.to_string()),
                uri: uri.to_string(),
                params: parse_params(params),
            });
        }
        if v == "*" {
            return Some(NameAddr {
                display: None,
                uri: "*".into(),
                params: vec![],
            });
        }
        // addr-spec: header params start at the first ';' (§20.10).
        let (uri, params) = match v.find(';') {
            Some(i) => (&v[..i], &v[i + 1..]),
            None => (v, ""),
        };
        if !uri.contains(':') {
            return None;
        }
        Some(NameAddr {
            display: None,
            uri: uri.trim().to_string(),
            params: parse_params(params),
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// The first `c` outside a quoted string; `\"` inside quotes is a quoted-pair (§25.1).
fn find_unquoted(s: &str, c: char) -> Option<usize> {
    let mut quote = false;
    let mut chars = s.char_indices();
    while let Some((i, ch)) = chars.next() {
        match ch {
            '\\' if quote => {
                chars.next();
            }
            '"' => quote = !quote,
            x if x == c && !quote => return Some(i),
            _ => {}
        }
    }
    None
}

/// The parts of a SIP/SIPS/tel URI we route on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    pub scheme: String,
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
}

impl Uri {
    pub fn parse(s: &str) -> Option<Uri> {
        let (scheme, rest) = s.trim().split_once(':')?;
        let scheme = scheme.to_ascii_lowercase();
        let rest = rest.split('?').next().unwrap_or("");
        if scheme == "tel" {
            let (num, params) = rest.split_once(';').unwrap_or((rest, ""));
            return Some(Uri {
                scheme,
                user: Some(num.to_string()),
                host: String::new(),
                port: None,
                params: parse_params(params),
            });
        }
        if scheme != "sip" && scheme != "sips" {
            return None;
        }
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (hp, params) = match hostpart.find(';') {
            Some(i) => (&hostpart[..i], &hostpart[i + 1..]),
            None => (hostpart, ""),
        };
        let (host, port) = split_host_port(hp)?;
        let user = userinfo.map(|u| u.split(':').next().unwrap_or("").to_string());
        Some(Uri {
            scheme,
            user,
            host,
            port,
            params: parse_params(params),
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn has_param(&self, name: &str) -> bool {
        self.params.iter().any(|(n, _)| n == name)
    }

    /// The host as an IP address, if it is a literal.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }
}

/// Reason phrases for the status codes we send (RFC 3261 §21, RFC 4028, RFC 3515).
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        422 => "Session Interval Too Small",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:pincoderouting@10.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:pincoderouting@10.0.0.1>\r\n\
From: \"Alice\" <sip:+15551234567@10.0.0.2>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@10.0.0.2:5060>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n";

    fn p(s: &str) -> Result<Message, ParseError> {
        Message::parse(s.as_bytes(), &Limits::default(), true)
    }

    #[test]
    fn parses_a_plain_invite() {
        let m = p(INVITE).unwrap();
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(m.call_id(), "a84b4c76e66710@pc33");
        assert_eq!(m.cseq(), Some((314159, Method::Invite)));
        assert_eq!(m.from_tag().as_deref(), Some("1928301774"));
        let via = m.top_via().unwrap();
        assert_eq!(via.branch(), Some("z9hG4bK776asdhds"));
        assert!(via.has_param("rport"));
        assert_eq!(&m.body[..], b"v=0\n");
    }

    #[test]
    fn compact_forms_are_accepted() {
        let s = "OPTIONS sip:x@h SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
f: <sip:a@h>;tag=1\r\nt: <sip:x@h>\r\ni: abc\r\nCSeq: 1 OPTIONS\r\nm: <sip:a@h>\r\nl: 0\r\n\r\n";
        let m = p(s).unwrap();
        assert_eq!(m.call_id(), "abc");
        assert!(m.header("Contact").is_some());
        assert!(m.body.is_empty());
    }

    #[test]
    fn folded_headers_and_spaced_colons() {
        let s = "OPTIONS sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n ;branch=z9hG4bK1\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:x@h>\r\nCall-ID : abc\r\nCSeq: 1 OPTIONS\r\nSubject: I know\r\n\tyou're there\r\n\r\n";
        let m = p(s).unwrap();
        assert_eq!(m.call_id(), "abc");
        assert_eq!(m.header("Subject"), Some("I know you're there"));
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK1"));
    }

    #[test]
    fn content_length_governs_the_body() {
        // Truncated body: rejected.
        let trunc = INVITE.replace("Content-Length: 4", "Content-Length: 40");
        assert_eq!(p(&trunc).unwrap_err(), ParseError::Truncated);
        // Two messages back to back in one datagram: only the first is taken.
        let two = format!("{INVITE}{INVITE}");
        assert_eq!(&p(&two).unwrap().body[..], b"v=0\n");
        let bad = INVITE.replace("Content-Length: 4", "Content-Length: x");
        assert_eq!(p(&bad).unwrap_err(), ParseError::BadContentLength);
    }

    #[test]
    fn ipv6_tel_and_quoted_params() {
        let s = "INVITE tel:+15551234567 SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bK1\r\n\
From: <tel:+15551234567>;tag=1\r\nTo: <sip:x@[2001:db8::2]>\r\nCall-ID: abc\r\nCSeq: 1 INVITE\r\n\
Contact: \"A, B\" <sip:a@[2001:db8::1]:5062;transport=udp>;expires=\"60\";+sip.instance=\"<urn:x>\"\r\n\r\n";
        let m = p(s).unwrap();
        let via = m.top_via().unwrap();
        assert_eq!(via.host, "[2001:db8::1]");
        assert_eq!(via.port, Some(5062));
        let c = m.header("Contact").and_then(NameAddr::parse).unwrap();
        assert_eq!(c.display.as_deref(), Some("A, B"));
        let u = Uri::parse(&c.uri).unwrap();
        assert_eq!(u.ip(), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(u.port, Some(5062));
        assert_eq!(c.param("+sip.instance"), Some("<urn:x>"));
        let t = Uri::parse("tel:+15551234567;phone-context=x").unwrap();
        assert_eq!(t.user.as_deref(), Some("+15551234567"));
    }

    #[test]
    fn unknown_methods_still_parse() {
        let s = "FOO sip:x@h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:x@h>\r\nCall-ID: abc\r\nCSeq: 1 FOO\r\nContent-Length: 0\r\n\r\n";
        let m = p(s).unwrap();
        assert_eq!(m.method(), Some(&Method::Other("FOO".into())));
    }

    #[test]
    fn malformed_inputs_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            b"",
            b"\r\n\r\n",
            b"INVITE\r\n\r\n",
            b"INVITE sip:x SIP/3.0\r\n\r\n",
            b"SIP/2.0 99999 Huh\r\n\r\n",
            b"INVITE sip:x@h SIP/2.0\r\nNoColon\r\n\r\n",
            b"INVITE sip:x@h SIP/2.0\r\nVia: junk\r\n\r\n",
            b"INVITE sip:x@h SIP/2.0\r\n\xff\xfe: x\r\n\r\n",
            b"INVITE sip:x@h SIP/2.0\r\n continuation-first\r\n\r\n",
            b"INVITE sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP [::1\r\n\r\n",
        ];
        for c in cases {
            assert!(
                Message::parse(c, &Limits::default(), true).is_err(),
                "{c:?}"
            );
        }
        let big = vec![b'a'; 70_000];
        assert!(matches!(
            Message::parse(&big, &Limits::default(), true),
            Err(ParseError::TooLarge(_))
        ));
        let many = format!(
            "OPTIONS sip:x@h SIP/2.0\r\n{}\r\n",
            "X-A: 1\r\n".repeat(200)
        );
        assert_eq!(p(&many).unwrap_err(), ParseError::HeaderLimits);
        let cseq = INVITE.replace("314159 INVITE", "314159 BYE");
        assert_eq!(p(&cseq).unwrap_err(), ParseError::Mandatory("CSeq"));
    }

    /// A minimal valid OPTIONS with `extra` header lines, for the strictness rules.
    fn opt(extra: &str) -> String {
        format!(
            "OPTIONS sip:x@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
From: <sip:a@192.0.2.1>;tag=1\r\nTo: <sip:x@192.0.2.10>\r\nCall-ID: c1\r\nCSeq: 7 OPTIONS\r\n{extra}\r\n"
        )
    }

    #[test]
    fn a_tortuous_but_valid_request_parses() {
        // In the spirit of RFC 4475 §3.1.1.1: compact and odd-case names, folding inside
        // values and around Via's slashes, spaces before colons, escaped quotes in display
        // names, unknown headers with unusual values, a Request-URI with escapes.
        let m = "INVITE sip:pin%40x@192.0.2.10;unknownparam SIP/2.0\r\n\
TO :\r\n <sip:pin@192.0.2.10>\r\n\
from   : \"A Caller \\\\\\\"\"   <sip:caller@192.0.2.1>\r\n  ;\r\n  tag = 77fq3z\r\n\
MaX-fOrWaRdS: 0068\r\n\
Call-ID: tortuous.7c1d@192.0.2.1\r\n\
Content-Length   : 0\r\n\
cseq: 0009\r\n  INVITE\r\n\
Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;rport;branch=z9hG4bKq81\r\n\
s :\r\n\
X-Invented:   a value\r\n that goes on\r\n\
X-Odd-Value: ;;,,;;,;\r\n\
m:\"Say \\\"hi\\\"\" <sip:caller@192.0.2.1> ; p1 =\r\n      v1 ;\r\n  p2 ; q = 0.5\r\n\r\n";
        let msg = p(m).unwrap();
        assert_eq!(msg.cseq(), Some((9, Method::Invite)));
        assert_eq!(msg.call_id(), "tortuous.7c1d@192.0.2.1");
        assert_eq!(msg.from_tag().as_deref(), Some("77fq3z"));
        let via = msg.top_via().unwrap();
        assert_eq!(
            (via.transport.as_str(), via.host.as_str()),
            ("UDP", "192.0.2.2")
        );
        assert_eq!(via.branch(), Some("z9hG4bKq81"));
        let from = msg.from().unwrap();
        assert_eq!(from.uri, "sip:caller@192.0.2.1");
        let contact = NameAddr::parse(msg.header("Contact").unwrap()).unwrap();
        assert_eq!(contact.uri, "sip:caller@192.0.2.1");
        assert_eq!(contact.param("p1"), Some("v1"));
        assert_eq!(contact.param("q"), Some("0.5"));
        assert_eq!(msg.header("X-Invented"), Some("a value that goes on"));
    }

    #[test]
    fn content_length_must_be_one_plain_number() {
        // Two that agree are fine; two that disagree (long or compact form) are not, on a
        // datagram or on a stream.
        let body = "Content-Type: text/plain\r\n";
        let same = format!(
            "{}abcd",
            opt(&format!("{body}Content-Length: 4\r\nl: 4\r\n"))
        );
        assert_eq!(&p(&same).unwrap().body[..], b"abcd");
        for pair in [
            "Content-Length: 4\r\nl: 2\r\n",
            "l: 2\r\nContent-Length: 4\r\n",
        ] {
            let two = format!("{}abcd", opt(&format!("{body}{pair}")));
            assert_eq!(p(&two).unwrap_err(), ParseError::BadContentLength, "{pair}");
            assert_eq!(
                frame_stream(two.as_bytes(), &Limits::default()),
                Err(ParseError::BadContentLength),
                "{pair}"
            );
        }
        for bad in ["-1", "+4", "4 4", "", "0x4", "99999999999999999999999"] {
            let m = format!("{}abcd", opt(&format!("Content-Length: {bad}\r\n")));
            assert_eq!(p(&m).unwrap_err(), ParseError::BadContentLength, "{bad:?}");
            assert_eq!(
                frame_stream(m.as_bytes(), &Limits::default()),
                Err(ParseError::BadContentLength),
                "{bad:?}"
            );
        }
        // A datagram longer than Content-Length: the rest is ignored; shorter: an error.
        let long = format!("{}abcdEXTRA", opt("Content-Length: 4\r\n"));
        assert_eq!(&p(&long).unwrap().body[..], b"abcd");
        let short = format!("{}ab", opt("Content-Length: 4\r\n"));
        assert_eq!(p(&short).unwrap_err(), ParseError::Truncated);
    }

    #[test]
    fn cseq_is_below_2_31_and_single_valued_headers_appear_once() {
        let base = opt("");
        let cseq = |n: &str| base.replace("CSeq: 7 OPTIONS", &format!("CSeq: {n} OPTIONS"));
        assert_eq!(
            p(&cseq("2147483647")).unwrap().cseq().unwrap().0,
            2147483647
        );
        assert_eq!(p(&cseq("0")).unwrap().cseq().unwrap().0, 0);
        for bad in ["2147483648", "4294967295", "4294967296", "-1", "+1", "1.0"] {
            assert_eq!(
                p(&cseq(bad)).unwrap_err(),
                ParseError::Mandatory("CSeq"),
                "{bad}"
            );
        }
        for (dup, name) in [
            ("CSeq: 8 OPTIONS\r\n", "CSeq"),
            ("i: other\r\n", "Call-ID"),
            ("Call-ID: c1\r\n", "Call-ID"),
            ("f: <sip:b@192.0.2.1>;tag=2\r\n", "From"),
            ("To: <sip:y@192.0.2.10>\r\n", "To"),
            ("Max-Forwards: 70\r\nMax-Forwards: 69\r\n", "Max-Forwards"),
        ] {
            assert_eq!(
                p(&opt(dup)).unwrap_err(),
                ParseError::Duplicate(name),
                "{dup}"
            );
        }
        // Headers that may repeat still do.
        assert!(p(&opt(
            "Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK2\r\nSupported: timer\r\nSupported: path\r\n"
        ))
        .is_ok());
    }

    #[test]
    fn control_bytes_in_the_start_line_and_versions() {
        let base = opt("");
        for bad in [
            base.replace("sip:x@192.0.2.10", "sip:x\0@192.0.2.10"),
            base.replace("OPTIONS sip", "OPT\x01IONS sip"),
            base.replace("sip:x@", "sip:x\x7f@"),
            base.replace(" SIP/2.0\r\nVia", " SIP/2.0\x0b\r\nVia"),
        ] {
            assert_eq!(p(&bad).unwrap_err(), ParseError::BadStartLine, "{bad:?}");
        }
        let v7 = base.replace(" SIP/2.0\r\nVia", " SIP/7.0\r\nVia");
        assert_eq!(p(&v7).unwrap_err(), ParseError::VersionNotSupported);
        let v21 = base.replace(" SIP/2.0\r\nVia", " SIP/2.1\r\nVia");
        assert_eq!(p(&v21).unwrap_err(), ParseError::VersionNotSupported);
        let junk = base.replace(" SIP/2.0\r\nVia", " HTTP/1.1\r\nVia");
        assert_eq!(p(&junk).unwrap_err(), ParseError::BadStartLine);
        // §7.1: the version is compared case-insensitively.
        let lower = base.replace(" SIP/2.0\r\nVia", " sip/2.0\r\nVia");
        assert!(p(&lower).is_ok());
    }

    #[test]
    fn via_with_lws_around_slashes_and_port_zero() {
        let spaced = opt("").replace(
            "Via: SIP/2.0/UDP 192.0.2.1:5060",
            "Via: SIP  /   2.0 /UDP 192.0.2.1:5060",
        );
        let via = p(&spaced).unwrap().top_via().unwrap();
        assert_eq!((via.transport.as_str(), via.port), ("UDP", Some(5060)));
        // Folded across lines, as in RFC 4475's short tortuous INVITE.
        let folded = opt("").replace(
            "Via: SIP/2.0/UDP 192.0.2.1:5060",
            "v:  SIP / 2.0\r\n  / TCP     192.0.2.1:5060",
        );
        let via = p(&folded).unwrap().top_via().unwrap();
        assert_eq!(via.transport, "TCP");
        assert_eq!(via.branch(), Some("z9hG4bK1"));
        for bad in [
            "SIP/2.0/UDP 192.0.2.1:0",
            "SIP/2.0 192.0.2.1",
            "SIP/2.0/ 192.0.2.1",
            "SIP/2.0/UDP",
        ] {
            let m = opt("").replace("Via: SIP/2.0/UDP 192.0.2.1:5060", &format!("Via: {bad}"));
            assert_eq!(p(&m).unwrap_err(), ParseError::Mandatory("Via"), "{bad}");
        }
    }

    #[test]
    fn long_method_tokens_parse_and_bad_contacts_name_the_header() {
        let long = "X".repeat(8000);
        let m = opt("").replace("OPTIONS", &long);
        let m = p(&m).unwrap();
        assert_eq!(m.method(), Some(&Method::Other(long.clone())));
        for bad in [
            "<sip:a@192.0.2.1",
            "\"x\" <sip:a@192.0.2.1",
            "<>",
            "nocolon",
        ] {
            let m = opt(&format!("Contact: {bad}\r\n"));
            assert_eq!(p(&m).unwrap_err(), ParseError::BadValue("Contact"), "{bad}");
        }
        // A response's Contact is not ours to judge.
        let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <>\r\n\r\n";
        assert!(p(resp).is_ok());
    }

    #[test]
    fn stream_framing_by_content_length() {
        let l = Limits::default();
        let two = format!("\r\n\r\n{INVITE}{INVITE}");
        let b = two.as_bytes();
        assert_eq!(frame_stream(b, &l), Ok(Frame::Skip(4)));
        let Ok(Frame::Message(n)) = frame_stream(&b[4..], &l) else {
            panic!()
        };
        assert_eq!(n, INVITE.len());
        assert_eq!(frame_stream(&b[4..20], &l), Ok(Frame::Incomplete));
        assert_eq!(
            frame_stream(&b[4..4 + n - 1], &l),
            Ok(Frame::Incomplete),
            "body not complete yet"
        );
        let no_cl = "OPTIONS sip:x@h SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n";
        assert!(frame_stream(no_cl.as_bytes(), &l).is_err());
        let huge = "OPTIONS sip:x@h SIP/2.0\r\nContent-Length: 99999999\r\n\r\n";
        assert!(matches!(
            frame_stream(huge.as_bytes(), &l),
            Err(ParseError::TooLarge(_))
        ));
    }

    #[test]
    fn printer_round_trips() {
        let m = p(INVITE).unwrap();
        let again = Message::parse(&m.to_bytes(), &Limits::default(), false).unwrap();
        assert_eq!(again.headers.len(), m.headers.len());
        assert_eq!(again.body, m.body);
    }
}
