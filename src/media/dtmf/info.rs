//! DTMF in SIP INFO bodies: `application/dtmf-relay` (`Signal=5` / `Duration=160`, CRLF or
//! LF, any case) and `application/dtmf` (`5`). Other content types are not ours (415).

use super::Digit;

/// The outcome of looking at an INFO body.
#[derive(Debug, PartialEq, Eq)]
pub enum InfoDtmf {
    /// A digit (and its duration in ms, when given).
    Digit(Digit, Option<u32>),
    /// The content type is not a DTMF one: answer 415.
    Unsupported,
    /// A DTMF content type whose body makes no sense: answer 400.
    Malformed,
}

fn signal(value: &str) -> Option<Digit> {
    let v = value.trim();
    match v {
        // Some gateways send event codes instead of keys.
        "10" => Digit::from_event(10),
        "11" => Digit::from_event(11),
        _ => {
            let mut chars = v.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Digit::from_char(c),
                _ => None,
            }
        }
    }
}

/// Parses an INFO body by content type (parameters ignored, case-insensitive).
pub fn parse(content_type: Option<&str>, body: &[u8]) -> InfoDtmf {
    let ct = content_type.unwrap_or("").trim().to_ascii_lowercase();
    let Ok(text) = std::str::from_utf8(body) else {
        return InfoDtmf::Malformed;
    };
    match ct.as_str() {
        "application/dtmf-relay" => {
            let mut digit = None;
            let mut duration = None;
            for line in text.lines() {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                match k.trim().to_ascii_lowercase().as_str() {
                    "signal" => digit = signal(v),
                    "duration" => duration = v.trim().parse().ok(),
                    _ => {}
                }
            }
            match digit {
                Some(d) => InfoDtmf::Digit(d, duration),
                None => InfoDtmf::Malformed,
            }
        }
        "application/dtmf" => match signal(text) {
            Some(d) => InfoDtmf::Digit(d, None),
            None => InfoDtmf::Malformed,
        },
        _ => InfoDtmf::Unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digit {
        Digit::from_char(c).unwrap()
    }

    #[test]
    fn dtmf_relay_bodies_in_every_spelling() {
        let ct = Some("application/dtmf-relay");
        assert_eq!(
            parse(ct, b"Signal=5\r\nDuration=160\r\n"),
            InfoDtmf::Digit(d('5'), Some(160))
        );
        assert_eq!(
            parse(ct, b"signal= #\nduration =250\n"),
            InfoDtmf::Digit(d('#'), Some(250))
        );
        assert_eq!(parse(ct, b"SIGNAL=*"), InfoDtmf::Digit(d('*'), None));
        assert_eq!(parse(ct, b"Signal=11\r\n"), InfoDtmf::Digit(d('#'), None));
        assert_eq!(
            parse(Some("Application/DTMF-Relay"), b"Signal=b"),
            InfoDtmf::Digit(d('B'), None)
        );
        assert_eq!(parse(ct, b"Signal=55"), InfoDtmf::Malformed);
        assert_eq!(parse(ct, b"Duration=100"), InfoDtmf::Malformed);
        assert_eq!(parse(ct, b"\xff\xfe"), InfoDtmf::Malformed);
    }

    #[test]
    fn dtmf_bodies_and_other_types() {
        assert_eq!(
            parse(Some("application/dtmf"), b"5"),
            InfoDtmf::Digit(d('5'), None)
        );
        assert_eq!(
            parse(Some("application/dtmf"), b" 9\r\n"),
            InfoDtmf::Digit(d('9'), None)
        );
        assert_eq!(parse(Some("application/dtmf"), b""), InfoDtmf::Malformed);
        assert_eq!(parse(Some("text/plain"), b"5"), InfoDtmf::Unsupported);
        assert_eq!(parse(None, b""), InfoDtmf::Unsupported);
    }
}
