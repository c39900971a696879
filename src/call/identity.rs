//! Who is calling: P-Asserted-Identity (RFC 3325, only from a trusted source), then
//! Remote-Party-ID, then From — in the organization's order — normalized to E.164 with its
//! default country code. Withheld numbers are recognised as anonymous.
// call/mod.rs allows these until its own sweep (TODO(lint)); this module is already clean.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::config::org::{IdentitySource, Organization};
use crate::sip::msg::{split_list, Message, NameAddr, Uri};
use std::net::IpAddr;

/// The caller as received and as normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A number: what the header said, and its E.164 form.
    Number { raw: String, e164: String },
    /// Withheld or not a phone number we can use.
    Anonymous { raw: String },
}

impl Caller {
    pub fn raw(&self) -> &str {
        match self {
            Caller::Number { raw, .. } | Caller::Anonymous { raw } => raw,
        }
    }
    pub fn e164(&self) -> Option<&str> {
        match self {
            Caller::Number { e164, .. } => Some(e164),
            Caller::Anonymous { .. } => None,
        }
    }
}

const ANONYMOUS: [&str; 6] = [
    "anonymous",
    "restricted",
    "unavailable",
    "unknown",
    "private",
    "withheld",
];

/// Normalizes a phone number to E.164 with a default country code. `None` if it is not a
/// usable number.
pub fn e164(number: &str, country_code: &str) -> Option<String> {
    let trimmed = number.trim();
    let plus = trimmed.starts_with('+');
    if trimmed
        .chars()
        .any(|c| !(c.is_ascii_digit() || " -.()+".contains(c)))
    {
        return None;
    }
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 4 || digits.len() > 15 {
        return None;
    }
    let full = if plus {
        digits
    } else if let Some(intl) = digits.strip_prefix("00") {
        intl.to_string()
    } else if country_code == "1" {
        // North America: 10 digits, or 11 starting with the 1.
        match digits.len() {
            10 => format!("1{digits}"),
            11 if digits.starts_with('1') => digits,
            _ => return None,
        }
    } else if let Some(national) = digits.strip_prefix('0') {
        // Trunk prefix 0 (most of the world): drop it.
        format!("{country_code}{national}")
    } else if digits.starts_with(country_code) && digits.len() > 9 {
        digits
    } else {
        format!("{country_code}{digits}")
    };
    (full.len() >= 8 && full.len() <= 15).then(|| format!("+{full}"))
}

/// The user part of a header's URI (sip:user@host, tel:number).
fn header_user(value: &str) -> Option<(String, Uri)> {
    let first = split_list(value).next()?;
    let na = NameAddr::parse(first)?;
    let uri = Uri::parse(&na.uri)?;
    Some((uri.user.clone().unwrap_or_default(), uri))
}

fn is_anonymous(user: &str, uri: &Uri) -> bool {
    let u = user.to_ascii_lowercase();
    u.is_empty()
        || ANONYMOUS.contains(&u.as_str())
        || uri.host.eq_ignore_ascii_case("anonymous.invalid")
}

/// Reads the caller from an INVITE that came from `src`, for an organization.
pub fn caller(invite: &Message, src: IpAddr, org: &Organization) -> Caller {
    let trusted = org.trusted_sources.iter().any(|c| c.contains(src));
    for source in &org.caller_id_order {
        let value = match source {
            IdentitySource::Pai if trusted => invite.header("P-Asserted-Identity"),
            IdentitySource::Pai => None,
            IdentitySource::Rpid => invite.header("Remote-Party-ID"),
            IdentitySource::From => invite.header("From"),
        };
        let Some(value) = value else { continue };
        let Some((user, uri)) = header_user(value) else {
            continue;
        };
        // Privacy: id on a trusted PAI still identifies the caller to us.
        if is_anonymous(&user, &uri) {
            return Caller::Anonymous { raw: user };
        }
        let number = user.split(';').next().unwrap_or("");
        return match e164(number, &org.country_code) {
            Some(e) => Caller::Number {
                raw: user.clone(),
                e164: e,
            },
            None => Caller::Anonymous { raw: user },
        };
    }
    Caller::Anonymous { raw: String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::msg::Limits;

    #[test]
    fn e164_normalization() {
        for n in [
            "5551234567",
            "15551234567",
            "+1 (555) 123-4567",
            "+15551234567",
            "555.123.4567",
            "0015551234567",
        ] {
            assert_eq!(e164(n, "1").as_deref(), Some("+15551234567"), "{n}");
        }
        assert_eq!(e164("030 1234567", "49").as_deref(), Some("+49301234567"));
        assert_eq!(
            e164("+44 20 7946 0958", "1").as_deref(),
            Some("+442079460958")
        );
        assert_eq!(e164("12", "1"), None);
        assert_eq!(
            e164("555123456", "1"),
            None,
            "9 digits is not a NANP number"
        );
        assert_eq!(e164("alice", "1"), None);
        assert_eq!(e164("5551234567x", "1"), None);
    }

    fn org(extra: &str) -> Organization {
        let cfg = format!(
            "[[organization]]\nname = \"o\"\npbx_host = \"pbx\"\npin_success_ext = \"1\"\npin_failed_ext = \"2\"\n\
             trusted_sources = [\"10.0.0.0/8\"]\n{extra}"
        );
        let c = crate::config::parse(&cfg, "t").unwrap();
        (*c.organizations[0]).clone()
    }

    fn invite(headers: &str) -> Message {
        let s = format!(
            "INVITE sip:pin@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
To: <sip:pin@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:a@h>\r\n{headers}\r\n"
        );
        Message::parse(s.as_bytes(), &Limits::default(), true).unwrap()
    }

    #[test]
    fn pai_only_from_trusted_sources_then_rpid_then_from() {
        let o = org("");
        let m = invite(
            "From: <sip:5550000000@h>;tag=1\r\nP-Asserted-Identity: <sip:+15551234567@pbx;user=phone>\r\n\
Remote-Party-ID: \"X\" <sip:5559999999@h>;party=calling\r\n",
        );
        let trusted: IpAddr = "10.1.1.1".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(caller(&m, trusted, &o).e164(), Some("+15551234567"));
        assert_eq!(
            caller(&m, stranger, &o).e164(),
            Some("+15559999999"),
            "PAI ignored"
        );
        let m = invite("From: \"Alice\" <tel:+1-555-123-4567>;tag=1\r\n");
        assert_eq!(caller(&m, stranger, &o).e164(), Some("+15551234567"));
        let o2 = org("caller_id_order = [\"from\"]\n");
        let m = invite(
            "From: <sip:5550000000@h>;tag=1\r\nP-Asserted-Identity: <sip:+15551234567@pbx>\r\n",
        );
        assert_eq!(caller(&m, trusted, &o2).e164(), Some("+15550000000"));
    }

    #[test]
    fn withheld_numbers_are_anonymous() {
        let o = org("");
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        for from in [
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1",
            "<sip:restricted@h>;tag=1",
            "<sip:h>;tag=1",
            "<sip:alice@h>;tag=1",
        ] {
            let m = invite(&format!("From: {from}\r\n"));
            assert!(
                matches!(caller(&m, ip, &o), Caller::Anonymous { .. }),
                "{from}"
            );
        }
    }
}
