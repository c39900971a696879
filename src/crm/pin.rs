//! A PIN as CRMs hold it: a text (or number) field typed by people. Trimmed; then either an
//! argon2 PHC hash (`$argon2id$…`, for CRMs where the PIN is stored hashed) or digits only.
//! Anything else — an empty field, `12 34`, `12ab` — is a data error for that contact (the
//! call fails as `crm_error`), never a match. Errors never echo the value.

use crate::call::verdict::{Pin, StoredPin, MAX_PIN};

/// Why a stored PIN is unusable (never the value itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PinDataError {
    /// The field is there but holds nothing (or only spaces).
    #[error("field is empty")]
    Empty,
    /// Something other than digits after trimming.
    #[error("field is not digits")]
    NotDigits,
    /// Longer than any PIN we handle.
    #[error("field is longer than 32 digits")]
    TooLong,
    /// It looks like a hash but is not a valid argon2 PHC string.
    #[error("field holds an invalid argon2 hash")]
    BadHash,
}

/// Reads a PIN field's text.
pub fn sanitize(value: &str) -> Result<StoredPin, PinDataError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(PinDataError::Empty);
    }
    if v.starts_with("$argon2") {
        return StoredPin::from_hash(v).map_err(|_| PinDataError::BadHash);
    }
    if !v.chars().all(|c| c.is_ascii_digit()) {
        return Err(PinDataError::NotDigits);
    }
    if v.len() > MAX_PIN {
        return Err(PinDataError::TooLong);
    }
    Pin::from_digits(v)
        .map(StoredPin::Plain)
        .ok_or(PinDataError::NotDigits)
}

/// Reads a PIN field of a JSON reply: a string, or a whole number (a numeric custom field).
pub fn from_json(value: &serde_json::Value) -> Result<StoredPin, PinDataError> {
    match value {
        serde_json::Value::String(s) => sanitize(s),
        serde_json::Value::Number(n) if n.is_u64() => sanitize(&n.to_string()),
        serde_json::Value::Null => Err(PinDataError::Empty),
        _ => Err(PinDataError::NotDigits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::verdict::hash_pin;

    #[test]
    fn pins_as_crms_hold_them() {
        let p = |s: &str| Pin::from_digits(s).unwrap();
        for (text, pin) in [("1234", "1234"), ("  1234 ", "1234"), ("\t0042\n", "0042")] {
            let stored = sanitize(text).unwrap();
            assert!(stored.matches(&p(pin)), "{text:?}");
            assert!(!stored.matches(&p("9999")));
        }
        for (text, err) in [
            ("", PinDataError::Empty),
            ("   ", PinDataError::Empty),
            ("12 34", PinDataError::NotDigits),
            ("12ab", PinDataError::NotDigits),
            ("12A4", PinDataError::NotDigits),
            ("１２３４", PinDataError::NotDigits),
            ("-123", PinDataError::NotDigits),
            ("$argon2id$nonsense", PinDataError::BadHash),
        ] {
            assert_eq!(sanitize(text).err(), Some(err), "{text:?}");
        }
        assert_eq!(sanitize(&"1".repeat(33)).err(), Some(PinDataError::TooLong));
        let h = hash_pin(&p("7777")).unwrap();
        assert!(sanitize(&format!(" {h} ")).unwrap().matches(&p("7777")));
        assert!(from_json(&serde_json::json!(4321))
            .unwrap()
            .matches(&p("4321")));
        assert_eq!(
            from_json(&serde_json::json!(null)).err(),
            Some(PinDataError::Empty)
        );
        assert_eq!(
            from_json(&serde_json::json!(-1)).err(),
            Some(PinDataError::NotDigits)
        );
        assert_eq!(
            from_json(&serde_json::json!(true)).err(),
            Some(PinDataError::NotDigits)
        );
        // Errors never carry the value.
        assert!(!PinDataError::NotDigits.to_string().contains("12"));
    }
}
