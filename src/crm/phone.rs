//! Phone numbers by libphonenumber's rules (the `phonenumber` crate carries its metadata):
//! a caller ID or a number typed into a CRM, read with an organization's country code, becomes
//! a placed number in the forms CRMs store (E.164, digits, national significant number,
//! national format) — or, when it is not a number we can place (an internal extension, a
//! short code, a national form of another country), stays the raw text it was.
//!
//! "Placed" means libphonenumber can parse it and its length is possible for its country; we
//! do not require the range to be assigned (fictional 555 numbers and brand-new ranges are
//! still callers). Pure code: no clock, no I/O.

use phonenumber::{Mode, PhoneNumber};

/// Longest text handed to libphonenumber (a caller ID is never this long).
const MAX_INPUT: usize = 40;

/// A placed number in the forms CRMs store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneForms {
    /// `+15551234567`
    pub e164: String,
    /// The national significant number: `5551234567`, Italy's `0612345678`.
    pub national: String,
    /// The national format: `(555) 123-4567`, `06 1234 5678`, `020 7946 0958`.
    pub formatted: String,
    /// The international format: `+1 555-123-4567`.
    pub international: String,
}

impl PhoneForms {
    /// E.164 without the `+`: `15551234567`.
    pub fn digits(&self) -> &str {
        self.e164.strip_prefix('+').unwrap_or(&self.e164)
    }
}

/// The caller as a CRM lookup uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupNumber {
    /// A number placed by libphonenumber's rules.
    Phone(PhoneForms),
    /// A caller ID that is present but not a number we can place, as received.
    Raw(String),
}

/// The forms of a number a lookup template or a candidate list names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// `+15551234567` (`{phone}`)
    E164,
    /// `15551234567` (`{phone_digits}`)
    Digits,
    /// `5551234567` (`{phone_national}`)
    National,
    /// `(555) 123-4567` (`{phone_formatted}`)
    Formatted,
    /// `+1 555-123-4567` (`{phone_international}`)
    International,
}

impl LookupNumber {
    /// What identifies the caller across calls (lockout, the file CRM, the verify webhook):
    /// the E.164 form, or the raw text.
    pub fn key(&self) -> &str {
        match self {
            LookupNumber::Phone(p) => &p.e164,
            LookupNumber::Raw(r) => r,
        }
    }

    pub fn e164(&self) -> Option<&str> {
        match self {
            LookupNumber::Phone(p) => Some(&p.e164),
            LookupNumber::Raw(_) => None,
        }
    }

    /// One form of the number; a raw caller ID is the same text in every form.
    pub fn form(&self, form: Form) -> &str {
        match self {
            LookupNumber::Raw(r) => r,
            LookupNumber::Phone(p) => match form {
                Form::E164 => &p.e164,
                Form::Digits => p.digits(),
                Form::National => &p.national,
                Form::Formatted => &p.formatted,
                Form::International => &p.international,
            },
        }
    }

    /// Does a number as a CRM holds it (any format) denote this caller? A placed caller
    /// matches a stored number that places to the same E.164 (read with the caller's own
    /// country: a national form stored for a foreign contact is in that contact's
    /// country); a raw caller matches the same digits.
    pub fn matches_stored(&self, stored: &str) -> bool {
        match self {
            LookupNumber::Phone(p) => {
                let cc = p.digits().get(..country_code_len(&p.e164)).unwrap_or("");
                place(stored, cc).is_some_and(|s| s.e164 == p.e164)
            }
            LookupNumber::Raw(r) => {
                let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
                let (a, b) = (digits(r), digits(stored));
                if a.is_empty() {
                    r.trim().eq_ignore_ascii_case(stored.trim())
                } else {
                    a == b
                }
            }
        }
    }
}

/// The length of the country calling code of an E.164 number (1–3 digits).
fn country_code_len(e164: &str) -> usize {
    let digits = e164.strip_prefix('+').unwrap_or(e164);
    (1..=3)
        .find(|n| {
            digits
                .get(..*n)
                .and_then(|c| c.parse::<u16>().ok())
                .is_some_and(|c| phonenumber::metadata::DATABASE.region(&c).is_some())
        })
        .unwrap_or(1)
}

/// Is `country_code` (digits, `"1"`, `"39"`) a country calling code libphonenumber knows?
pub fn known_country_code(country_code: &str) -> bool {
    country_code
        .parse::<u16>()
        .ok()
        .and_then(|c| phonenumber::metadata::DATABASE.region(&c))
        .is_some()
}

/// The main region of a country calling code (`1` → US, `44` → GB, `39` → IT).
fn main_region(country_code: &str) -> Option<phonenumber::country::Id> {
    let code: u16 = country_code.parse().ok()?;
    let metas = phonenumber::metadata::DATABASE.by_code(&code)?;
    let main = metas
        .iter()
        .find(|m| m.is_main_country_for_code())
        .or(metas.first())?;
    main.id().parse().ok()
}

/// Characters a typed phone number is made of (digits, `+`, visual separators).
fn phone_like(s: &str) -> bool {
    s.len() <= MAX_INPUT
        && s.chars().any(|c| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_digit() || " +-.()/".contains(c))
}

/// Reads a number written in any common way, with an organization's country code for
/// numbers without their own. `None` when libphonenumber cannot place it.
pub fn place(text: &str, country_code: &str) -> Option<PhoneForms> {
    let text = text.trim().replace("%2B", "+").replace("%2b", "+");
    if !phone_like(&text) {
        return None;
    }
    let region = main_region(country_code);
    // Defence in depth: libphonenumber's parser is third-party code fed with a peer's
    // bytes; the filter above keeps it to short phone-shaped text, and a panic in it would
    // only mean "not a number we can place".
    let parsed = std::panic::catch_unwind(|| phonenumber::parse(region, &text)).ok()?;
    let number = parsed.ok()?;
    possible(&number).then(|| forms(&number))
}

/// Is the number possible for its country (libphonenumber's metadata: the country's
/// general pattern and a length of one of its kinds of number)? Valid numbers are.
fn possible(n: &PhoneNumber) -> bool {
    let national = n.national().to_string();
    let Some(metas) = phonenumber::metadata::DATABASE.by_code(&n.code().value()) else {
        return false;
    };
    let len = national.len() as u16;
    // The general descriptor's lengths are not filled in this metadata: take those of
    // every kind of number the country has.
    n.is_valid()
        || metas.iter().any(|m| {
            let d = m.descriptors();
            // The whole number has the shape of the country's numbers…
            let general = d
                .general()
                .national_number()
                .find(&national)
                .is_some_and(|f| f.start() == 0 && f.end() == national.len());
            // …and a length one of its kinds of number has.
            general
                && [
                    d.fixed_line(),
                    d.mobile(),
                    d.toll_free(),
                    d.premium_rate(),
                    d.shared_cost(),
                    d.personal_number(),
                    d.voip(),
                    d.uan(),
                ]
                .into_iter()
                .flatten()
                .any(|k| k.possible_length().contains(&len))
        })
}

fn forms(n: &PhoneNumber) -> PhoneForms {
    PhoneForms {
        e164: n.format().mode(Mode::E164).to_string(),
        national: n.national().to_string(),
        formatted: n.format().mode(Mode::National).to_string(),
        international: n.format().mode(Mode::International).to_string(),
    }
}

/// A caller ID as received (the user part of a `sip:`/`tel:` URI, without parameters),
/// read with the organization's country code.
pub fn lookup_number(raw: &str, country_code: &str) -> LookupNumber {
    match place(raw, country_code) {
        Some(p) => LookupNumber::Phone(p),
        None => LookupNumber::Raw(raw.trim().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(text: &str, cc: &str) -> Option<String> {
        place(text, cc).map(|p| p.e164)
    }

    /// Real formats, per country: (country code, as typed or received, E.164).
    #[test]
    fn numbers_as_people_type_them_per_country() {
        let table: &[(&str, &str, &str)] = &[
            // North America (NANP).
            ("1", "5551234567", "+15551234567"),
            ("1", "15551234567", "+15551234567"),
            ("1", "+1 (555) 123-4567", "+15551234567"),
            ("1", "(555) 123-4567", "+15551234567"),
            ("1", "555.123.4567", "+15551234567"),
            ("1", "555-123-4567", "+15551234567"),
            ("1", "1-555-123-4567", "+15551234567"),
            ("1", "01144 20 7946 0958", "+442079460958"),
            ("1", "+44 20 7946 0958", "+442079460958"),
            ("1", "416-555-0123", "+14165550123"),
            // United Kingdom: trunk 0 dropped, 00 international.
            ("44", "020 7946 0958", "+442079460958"),
            ("44", "(020) 7946 0958", "+442079460958"),
            ("44", "07700 900123", "+447700900123"),
            ("44", "0044 20 7946 0958", "+442079460958"),
            ("44", "+44 (0)20 7946 0958", "+442079460958"),
            ("44", "001 555 123 4567", "+15551234567"),
            // Italy: the leading 0 is part of the number and stays in E.164.
            ("39", "06 1234 5678", "+390612345678"),
            ("39", "06/12345678", "+390612345678"),
            ("39", "+39 06 1234 5678", "+390612345678"),
            ("39", "0039 06 1234 5678", "+390612345678"),
            ("39", "347 123 4567", "+393471234567"),
            // Germany: trunk 0 dropped, variable lengths.
            ("49", "030 1234567", "+49301234567"),
            ("49", "030/1234567", "+49301234567"),
            ("49", "+49 (0)30 1234567", "+49301234567"),
            ("49", "0171 1234567", "+491711234567"),
            // France.
            ("33", "01 23 45 67 89", "+33123456789"),
            ("33", "06.12.34.56.78", "+33612345678"),
            // Australia.
            ("61", "(02) 9876 5432", "+61298765432"),
            ("61", "0412 345 678", "+61412345678"),
        ];
        for (cc, text, want) in table {
            assert_eq!(e164(text, cc).as_deref(), Some(*want), "{cc}: {text}");
        }
    }

    #[test]
    fn what_cannot_be_placed_stays_raw() {
        for (cc, text) in [
            ("1", "101"),            // an extension
            ("1", "911"),            // a short code
            ("1", "555123456"),      // 9 digits: not a NANP length
            ("1", "00442079460958"), // 00 is not NANP's international prefix
            ("44", "12"),            // too short
            ("1", "alice"),          // not digits
            ("1", "5551234567x"),    // not a phone shape
            ("1", "+999 1234"),      // no such country code
            ("1", &"1".repeat(60)),  // far too long
        ] {
            assert_eq!(e164(text, cc), None, "{cc}: {text}");
            assert_eq!(
                lookup_number(text, cc),
                LookupNumber::Raw(text.trim().into())
            );
        }
    }

    #[test]
    fn the_forms_a_crm_stores() {
        let us = place("5551234567", "1").unwrap();
        assert_eq!(us.e164, "+15551234567");
        assert_eq!(us.digits(), "15551234567");
        assert_eq!(us.national, "5551234567");
        assert_eq!(us.formatted, "(555) 123-4567");
        assert_eq!(us.international, "+1 555-123-4567");
        let it = place("06 1234 5678", "39").unwrap();
        assert_eq!(it.national, "0612345678");
        assert_eq!(it.formatted, "06 1234 5678");
        let gb = place("+442079460958", "1").unwrap();
        assert_eq!(gb.formatted, "020 7946 0958");
        let n = LookupNumber::Phone(us);
        assert_eq!(n.form(Form::Digits), "15551234567");
        assert_eq!(n.key(), "+15551234567");
        let raw = LookupNumber::Raw("101".into());
        assert_eq!(raw.form(Form::Formatted), "101");
        assert_eq!(raw.e164(), None);
    }

    #[test]
    fn stored_numbers_match_in_any_format() {
        let caller = lookup_number("+15551234567", "1");
        for stored in [
            "(555) 123-4567",
            "555.123.4567",
            "+1 555 123 4567",
            "15551234567",
        ] {
            assert!(caller.matches_stored(stored), "{stored}");
        }
        assert!(!caller.matches_stored("(555) 123-4568"));
        assert!(!caller.matches_stored(""));
        let it = lookup_number("+390612345678", "1");
        assert!(
            it.matches_stored("06 1234 5678"),
            "national form read as the caller's country"
        );
        let ext = lookup_number("101", "1");
        assert!(ext.matches_stored("101"));
        assert!(!ext.matches_stored("102"));
        assert!(known_country_code("39") && !known_country_code("999"));
    }

    #[test]
    fn never_panics_on_phone_shaped_noise() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(14);
        let alphabet = b"0123456789+-.() /";
        for _ in 0..3_000 {
            let n = rng.gen_range(0..45);
            let s: String = (0..n)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
                .collect();
            for cc in ["1", "39", "999"] {
                let _ = lookup_number(&s, cc);
            }
        }
    }
}
