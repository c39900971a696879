//! The security decision as a type. `PinVerified` can only be made here, after the entered
//! PIN matched the one on file (argon2id verification, or a constant-time comparison for
//! CRMs that hand out the PIN); only a `PinVerified` can send a call to the success
//! extension. PINs are a redacted type with no Display and no Serialize.

use crate::crm::Contact;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use subtle::ConstantTimeEq;

/// Longest PIN handled (digits).
pub const MAX_PIN: usize = 32;

/// A PIN, typed or stored. Never printed: Debug is redacted, there is no Display.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(Vec<u8>);

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

impl Pin {
    /// From DTMF keys 0–9 and A–D (at most `MAX_PIN`).
    pub fn from_digits(s: &str) -> Option<Pin> {
        let ok = !s.is_empty()
            && s.len() <= MAX_PIN
            && s.chars()
                .all(|c| c.is_ascii_digit() || ('A'..='D').contains(&c));
        ok.then(|| Pin(s.as_bytes().to_vec()))
    }

    /// An empty PIN being typed.
    pub fn empty() -> Pin {
        Pin(Vec::with_capacity(MAX_PIN))
    }

    pub fn push(&mut self, key: char) {
        if self.0.len() < MAX_PIN {
            self.0.push(key as u8);
        }
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The digits, for the one place that must send them: the verify webhook's request
    /// body. Never log the result.
    pub(crate) fn expose_for_webhook(&self) -> &str {
        // Built only from DTMF keys (ASCII), so this never fails.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// The PIN a CRM holds: an argon2 hash (file CRM) or the PIN itself (CRMs that hand it out).
#[derive(Clone)]
pub enum StoredPin {
    Argon2(String),
    Plain(Pin),
}

impl std::fmt::Debug for StoredPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredPin(<redacted>)")
    }
}

// 8 MiB, 2 passes: a few ms per verification, on the PIN-check workers (PinCheck). A 4–8 digit PIN has
// little entropy anyway; the hash keeps it out of the file, not out of reach forever.
// Checked at compile time: invalid parameters fail the build, never a call.
const ARGON2_PARAMS: Params = match Params::new(8 * 1024, 2, 1, None) {
    Ok(p) => p,
    Err(_) => panic!("invalid argon2 parameters"),
};

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, ARGON2_PARAMS)
}

/// The most argon2 memory a thread keeps between verifications (256 MiB); a stored hash
/// that asks for more gets memory of its own for that one verification.
const KEEP_ARGON2_BLOCKS: usize = 256 * 1024;

thread_local! {
    /// argon2's working memory, kept by the thread that verifies (the PIN-check workers):
    /// allocating, zeroing and faulting in 8 MiB for every check cost as much CPU as the
    /// hash itself. Every block is written before it is read, so reuse needs no clearing.
    static ARGON2_MEMORY: std::cell::RefCell<Vec<argon2::Block>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `Argon2::verify_password` with the thread's kept memory: the algorithm, version, cost
/// and salt from the PHC string, the output compared in constant time.
fn verify_argon2(entered: &[u8], phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out_buf = [0u8; 64];
    let Some(out) = out_buf.get_mut(..expected.len()) else {
        return false;
    };
    let blocks = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    let hashed = |memory: &mut [argon2::Block], out: &mut [u8]| {
        argon
            .hash_password_into_with_memory(entered, salt, out, memory)
            .is_ok()
    };
    let done = ARGON2_MEMORY.with(|kept| match kept.try_borrow_mut() {
        Ok(mut kept) if blocks <= KEEP_ARGON2_BLOCKS => {
            if kept.len() < blocks {
                kept.resize(blocks, argon2::Block::default());
            }
            kept.get_mut(..blocks).map(|m| hashed(m, out))
        }
        _ => None,
    });
    let done = match done {
        Some(done) => done,
        None => hashed(&mut vec![argon2::Block::default(); blocks], out),
    };
    done && bool::from(out.ct_eq(expected.as_bytes()))
}

/// Hashes a PIN for storage (argon2id, random salt).
pub fn hash_pin(pin: &Pin) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(pin.bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("argon2 hashing failed: {e}"))
}

impl StoredPin {
    /// Checks a stored hash's format (never echoes it in the error).
    pub fn from_hash(h: &str) -> Result<StoredPin, String> {
        let parsed = PasswordHash::new(h).map_err(|_| "not a PHC hash string".to_string())?;
        if !parsed.algorithm.as_str().starts_with("argon2") {
            return Err("only argon2 hashes are accepted".into());
        }
        if parsed.hash.is_none() || parsed.salt.is_none() {
            return Err("the PHC string has no salt or no hash".into());
        }
        Ok(StoredPin::Argon2(h.to_string()))
    }

    /// Does the entered PIN match? Constant time in the PIN's content.
    pub fn matches(&self, entered: &Pin) -> bool {
        match self {
            StoredPin::Argon2(h) => verify_argon2(entered.bytes(), h),
            StoredPin::Plain(p) => {
                // Compare fixed-width buffers so neither content nor length leaks by timing.
                // A Pin never holds more than MAX_PIN bytes (from_digits, push), so the zips
                // copy every byte.
                let mut a = [0u8; MAX_PIN];
                let mut b = [0u8; MAX_PIN];
                a.iter_mut().zip(p.bytes()).for_each(|(d, s)| *d = *s);
                b.iter_mut().zip(entered.bytes()).for_each(|(d, s)| *d = *s);
                let same_len = (p.len() as u8).ct_eq(&(entered.len() as u8));
                bool::from(a.ct_eq(&b) & same_len)
            }
        }
    }
}

/// Proof that this call's caller entered the PIN on file for `contact_id`. Only `verify`
/// makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinVerified {
    contact_id: String,
}

impl PinVerified {
    pub fn contact_id(&self) -> &str {
        &self.contact_id
    }
}

/// A verify webhook answered `{"verified": true}` for this caller and PIN: the CRM made
/// the comparison. Only the flow calls this, on that answer.
pub(crate) fn webhook_verified(contact_id: String) -> PinVerified {
    PinVerified { contact_id }
}

/// A verdict to settle off the call's task: the comparison of an entered PIN with the one
/// on file (argon2 takes milliseconds of CPU) or a verify webhook's answer, together with
/// the lockout bookkeeping for the caller's keys (numbers and contact), which may live in a
/// shared store (Redis) that takes a network round trip. Only the flow makes one; the
/// driver runs `LockoutStore`-side steps around `judge`. Debug shows neither PIN.
#[derive(Debug, Clone)]
pub struct PinCheck {
    what: Judged,
    /// The lockout keys to check before and record after (empty: no lockout).
    keys: Vec<String>,
}

#[derive(Debug, Clone)]
enum Judged {
    /// Compare this PIN with the contact's.
    Compare { contact: Contact, entered: Pin },
    /// The CRM's webhook judged already.
    Remote {
        contact_id: Option<String>,
        verified: Option<PinVerified>,
    },
}

/// Whether the lockout store let the verdict stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// Not locked (and the outcome has been recorded).
    Open,
    /// A key is locked out: before the comparison, or because this failure locked it.
    Locked,
    /// The store could not be reached in time (the flow fails closed).
    Unavailable,
}

/// What settling a `PinCheck` found.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub contact_id: Option<String>,
    /// The proof, when the PIN matched (never with `lock` other than `Open`).
    pub verified: Option<PinVerified>,
    pub lock: LockState,
}

/// A judged `PinCheck`, before its outcome is recorded in the lockout store.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub contact_id: Option<String>,
    pub verified: Option<PinVerified>,
}

impl PinCheck {
    pub(crate) fn compare(contact: Contact, entered: Pin, keys: Vec<String>) -> PinCheck {
        PinCheck {
            what: Judged::Compare { contact, entered },
            keys,
        }
    }

    pub(crate) fn remote(
        contact_id: Option<String>,
        verified: Option<PinVerified>,
        keys: Vec<String>,
    ) -> PinCheck {
        PinCheck {
            what: Judged::Remote {
                contact_id,
                verified,
            },
            keys,
        }
    }

    /// The lockout keys of this caller (organization-scoped number and contact).
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Does the comparison need CPU (argon2), so belongs on the PIN-check workers?
    pub fn is_costly(&self) -> bool {
        matches!(
            &self.what,
            Judged::Compare {
                contact: Contact {
                    pin: Some(StoredPin::Argon2(_)),
                    ..
                },
                ..
            }
        )
    }

    /// Makes the comparison (blocking for argon2) or takes the webhook's answer.
    pub fn judge(self) -> Judgement {
        match self.what {
            Judged::Compare { contact, entered } => Judgement {
                verified: verify(&contact, &entered),
                contact_id: Some(contact.id),
            },
            Judged::Remote {
                contact_id,
                verified,
            } => Judgement {
                contact_id,
                verified,
            },
        }
    }

    /// A key was already locked: no comparison is made.
    pub fn locked(self) -> CheckResult {
        let contact_id = match self.what {
            Judged::Compare { contact, .. } => Some(contact.id),
            Judged::Remote { contact_id, .. } => contact_id,
        };
        CheckResult {
            contact_id,
            verified: None,
            lock: LockState::Locked,
        }
    }

    /// The store could not be asked: no verdict stands.
    pub fn unavailable(self) -> CheckResult {
        CheckResult {
            lock: LockState::Unavailable,
            ..self.locked()
        }
    }

    /// Settles against an in-memory lockout table at `now` (the default store, and the
    /// simulations): locked keys stop it before the comparison; a success clears the
    /// keys; a failure counts and may lock them.
    pub fn settle_in_memory(
        self,
        now: std::time::Instant,
        table: Option<&std::sync::Mutex<crate::call::lockout::Lockout>>,
    ) -> CheckResult {
        let keys = self.keys.clone();
        let with = |f: &mut dyn FnMut(&mut crate::call::lockout::Lockout) -> bool| {
            table
                .and_then(|t| t.lock().ok())
                .map(|mut g| f(&mut g))
                .unwrap_or(false)
        };
        if with(&mut |l| keys.iter().any(|k| l.is_locked(now, k))) {
            return self.locked();
        }
        self.judge().record(|verified| {
            with(&mut |l| {
                if verified {
                    l.record_success(&keys);
                    false
                } else {
                    l.record_failure(now, &keys);
                    keys.iter().any(|k| l.is_locked(now, k))
                }
            })
        })
    }
}

impl Judgement {
    /// Records the outcome with `record(verified) -> now_locked` and gives the result.
    pub fn record(self, record: impl FnOnce(bool) -> bool) -> CheckResult {
        let locked = record(self.verified.is_some());
        self.finish(if locked {
            LockState::Locked
        } else {
            LockState::Open
        })
    }

    /// The result, with what the store said.
    pub fn finish(self, lock: LockState) -> CheckResult {
        CheckResult {
            verified: self.verified.filter(|_| lock == LockState::Open),
            contact_id: self.contact_id,
            lock,
        }
    }
}

/// The one way to a `PinVerified` from a PIN on file.
pub fn verify(contact: &Contact, entered: &Pin) -> Option<PinVerified> {
    let stored = contact.pin.as_ref()?;
    stored.matches(entered).then(|| PinVerified {
        contact_id: contact.id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(pin: Option<StoredPin>) -> Contact {
        Contact {
            id: "c1".into(),
            name: "A".into(),
            pin,
        }
    }

    #[test]
    fn kept_memory_verification_agrees_with_argon2_for_every_variant() {
        use argon2::password_hash::{PasswordVerifier, SaltString};
        let right = Pin::from_digits("4321").unwrap();
        let wrong = Pin::from_digits("4320").unwrap();
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        // Different algorithms, versions, costs, lanes and output lengths, in an order
        // that makes the kept memory grow and then be reused by a smaller hash.
        let variants = [
            (
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(1024, 1, 1, None),
            ),
            (
                Algorithm::Argon2i,
                Version::V0x10,
                Params::new(4096, 3, 2, Some(16)),
            ),
            (
                Algorithm::Argon2d,
                Version::V0x13,
                Params::new(2048, 2, 4, Some(64)),
            ),
            (
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(512, 1, 1, Some(32)),
            ),
        ];
        for (alg, version, params) in variants {
            let a = Argon2::new(alg, version, params.unwrap());
            let phc = a.hash_password(right.bytes(), &salt).unwrap().to_string();
            let parsed = PasswordHash::new(&phc).unwrap();
            for (pin, ok) in [(&right, true), (&wrong, false), (&right, true)] {
                assert_eq!(
                    a.verify_password(pin.bytes(), &parsed).is_ok(),
                    ok,
                    "argon2's own verdict, {phc}"
                );
                assert_eq!(verify_argon2(pin.bytes(), &phc), ok, "ours, {phc}");
            }
        }
        assert!(!verify_argon2(
            right.bytes(),
            "$argon2id$v=19$m=8,t=1,p=1$bad"
        ));
        assert!(!verify_argon2(right.bytes(), "not a hash"));
    }

    #[test]
    fn argon2_and_plain_verification() {
        let right = Pin::from_digits("4321").unwrap();
        let wrong = Pin::from_digits("4320").unwrap();
        let longer = Pin::from_digits("43210").unwrap();
        let hashed = contact(Some(
            StoredPin::from_hash(&hash_pin(&right).unwrap()).unwrap(),
        ));
        assert_eq!(verify(&hashed, &right).unwrap().contact_id(), "c1");
        assert!(verify(&hashed, &wrong).is_none());
        let plain = contact(Some(StoredPin::Plain(right.clone())));
        assert!(verify(&plain, &right).is_some());
        assert!(verify(&plain, &wrong).is_none());
        assert!(verify(&plain, &longer).is_none());
        assert!(
            verify(&contact(None), &right).is_none(),
            "no PIN on file never verifies"
        );
    }

    #[test]
    fn pins_never_print() {
        let p = Pin::from_digits("2468").unwrap();
        assert_eq!(format!("{p:?}"), "Pin(<redacted>)");
        let s = StoredPin::Plain(p);
        assert!(!format!("{s:?}").contains("2468"));
        assert!(Pin::from_digits("12x4").is_none());
        assert!(Pin::from_digits("").is_none());
        assert!(StoredPin::from_hash("1234").is_err());
    }
}
