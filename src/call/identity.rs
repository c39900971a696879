//! Who is calling: P-Asserted-Identity (RFC 3325, only from a trusted source), then
//! Remote-Party-ID, then From — in the organization's order — normalized to E.164 with its
//! default country code by libphonenumber's rules (`crm::phone`). Withheld numbers are
//! anonymous; a caller ID that is present but cannot be placed is kept raw and looked up as
//! received.

use crate::config::org::{IdentitySource, Organization};
use crate::crm::phone::{self, LookupNumber};
use crate::sip::msg::{split_list, Message, NameAddr, Uri};
use std::net::IpAddr;

/// The caller as received and as a CRM lookup reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A caller ID: what the header said, and the number read from it — placed by
    /// libphonenumber's rules (E.164 and the other forms) or, when it cannot be placed (an
    /// internal extension, a short code, a national form of another country), the raw text,
    /// which is looked up as received.
    Number { raw: String, number: LookupNumber },
    /// Withheld.
    Anonymous { raw: String },
}

impl Caller {
    pub fn raw(&self) -> &str {
        match self {
            Caller::Number { raw, .. } | Caller::Anonymous { raw } => raw,
        }
    }
    pub fn e164(&self) -> Option<&str> {
        self.lookup().and_then(LookupNumber::e164)
    }
    /// What the CRM is asked about; `None` when the number is withheld.
    pub fn lookup(&self) -> Option<&LookupNumber> {
        match self {
            Caller::Number { number, .. } => Some(number),
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

/// Normalizes a phone number to E.164 with a default country code (libphonenumber's rules).
/// `None` if it is not a number we can place.
pub fn e164(number: &str, country_code: &str) -> Option<String> {
    phone::place(number, country_code).map(|p| p.e164)
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
        return Caller::Number {
            raw: user.clone(),
            number: phone::lookup_number(number, &org.country_code),
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
            "01115551234567",
        ] {
            assert_eq!(e164(n, "1").as_deref(), Some("+15551234567"), "{n}");
        }
        assert_eq!(e164("030 1234567", "49").as_deref(), Some("+49301234567"));
        assert_eq!(e164("06 1234 5678", "39").as_deref(), Some("+390612345678"));
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

    /// Caller IDs as real PBXs send them, per organization country code: the E.164 form, or
    /// the raw form a lookup uses as received.
    #[test]
    fn caller_ids_from_real_pbxs() {
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let table: &[(&str, &str, Result<&str, &str>)] = &[
            (
                "1",
                "<sip:+15551234567@pbx.example;user=phone>",
                Ok("+15551234567"),
            ),
            ("1", "<sip:+15551234567@pbx.example>", Ok("+15551234567")),
            ("1", "<sip:5551234567@10.0.0.1>", Ok("+15551234567")),
            (
                "1",
                "<sip:5551234567@10.0.0.1;user=phone>",
                Ok("+15551234567"),
            ),
            ("1", "<sip:15551234567@10.0.0.1>", Ok("+15551234567")),
            ("1", "<tel:+1-555-123-4567>", Ok("+15551234567")),
            ("1", "<tel:5551234567>", Ok("+15551234567")),
            ("1", "<sip:%2B15551234567@pbx>", Ok("+15551234567")),
            ("1", "<sip:011442079460958@pbx>", Ok("+442079460958")),
            (
                "1",
                "<sip:00442079460958@pbx;user=phone>",
                Err("00442079460958"),
            ),
            (
                "44",
                "<sip:00442079460958@pbx;user=phone>",
                Ok("+442079460958"),
            ),
            ("44", "<sip:02079460958@pbx>", Ok("+442079460958")),
            ("44", "<sip:+15551234567@pbx>", Ok("+15551234567")),
            ("39", "<sip:0612345678@pbx>", Ok("+390612345678")),
            (
                "39",
                "<sip:+390612345678@pbx;user=phone>",
                Ok("+390612345678"),
            ),
            ("39", "<sip:00390612345678@pbx>", Ok("+390612345678")),
            ("49", "<sip:0301234567@pbx>", Ok("+49301234567")),
            ("1", "<sip:101@pbx>", Err("101")),
            ("1", "<sip:101@pbx;user=phone>", Err("101")),
            ("44", "<sip:101@pbx>", Err("101")),
            ("1", "<sip:911@pbx>", Err("911")),
            ("1", "<sip:alice@pbx>", Err("alice")),
            ("39", "<sip:4567@pbx>", Err("4567")),
            ("44", "<sip:5551234@pbx>", Err("5551234")),
        ];
        for (cc, from, want) in table {
            let o = org(&format!("country_code = \"{cc}\"\n"));
            let m = invite(&format!("From: {from};tag=1\r\n"));
            let c = caller(&m, ip, &o);
            let Caller::Number { number, raw } = &c else {
                panic!("{cc} {from}: {c:?}")
            };
            match want {
                Ok(e) => assert_eq!(number.e164(), Some(*e), "{cc} {from}"),
                Err(r) => {
                    assert_eq!(number, &LookupNumber::Raw(r.to_string()), "{cc} {from}");
                    assert_eq!(c.e164(), None);
                    assert!(!raw.is_empty());
                }
            }
        }
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
        ] {
            let m = invite(&format!("From: {from}\r\n"));
            assert!(
                matches!(caller(&m, ip, &o), Caller::Anonymous { .. }),
                "{from}"
            );
        }
    }
}
