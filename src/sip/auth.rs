//! Optional digest authentication of new INVITEs (RFC 3261 §22.4 with RFC 8760's SHA-256;
//! RFC 7616 §3.3-3.4 for the computation): a 401 with one WWW-Authenticate per algorithm
//! (SHA-256 first), `qop=auth` required, nonces that expire (`stale=true`) and a nonce-count
//! that must grow (a replayed Authorization is refused). Sans-IO: `now` is handed in, the
//! nonce key is drawn by the driver once per process; nonces carry their own time and MAC,
//! so nothing is stored for a challenge, only for a nonce that has authenticated.

use super::build::{response, stateless_tag};
use super::msg::{Message, StartLine};
use sha2::Digest as _;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// A digest algorithm (RFC 8760 §2: SHA-256 preferred, MD5 for older trunks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Md5,
}

impl Algorithm {
    pub fn from_name(n: &str) -> Option<Algorithm> {
        if n.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else if n.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Md5 => "MD5",
        }
    }

    /// Lower-case hex of the hash of `data`.
    fn hex(self, data: &str) -> String {
        match self {
            Algorithm::Sha256 => hex(&sha2::Sha256::digest(data.as_bytes())),
            Algorithm::Md5 => hex(&md5::Md5::digest(data.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Where the trunk's password comes from (never the configuration file itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// An environment variable.
    Env(String),
    /// A file only our user can read (relative to the configuration file).
    File(PathBuf),
}

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `[sip.auth]`, validated; `password` is filled by `config::load`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    pub realm: String,
    pub username: String,
    pub source: PasswordSource,
    /// `None` until loaded: every INVITE is then challenged, none passes (fail closed).
    pub password: Option<Secret>,
    /// Offered in this order (one WWW-Authenticate each).
    pub algorithms: Vec<Algorithm>,
    /// How long a nonce may be used.
    pub nonce_ttl: Duration,
}

/// What `check` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The credentials are right, for a fresh nonce and a nonce-count not seen before.
    Authenticated,
    /// Answer 401. `stale`: the credentials were right but the nonce expired (the client
    /// retries without asking its user, RFC 7616 §3.3); `failed`: credentials were given
    /// and are wrong, or replayed (counted; a first INVITE without any is not).
    Challenge { stale: bool, failed: bool },
}

/// Nonces that authenticated, at most; past this the expired ones are forgotten, and if
/// none are, the oldest half (their next use then fails as a replay would: safe side).
const MAX_NONCES: usize = 10_000;

/// The authenticator's state: the nonce key and the highest nonce-count per used nonce.
#[derive(Debug)]
pub struct Authenticator {
    key: [u8; 32],
    epoch: Instant,
    /// nonce -> (highest nc accepted, minted at (seconds since epoch)).
    used: HashMap<String, (u32, u64)>,
    /// Challenges issued: each nonce carries its own serial, so two challenges in the same
    /// second differ (a UA counts from nc=1 on every new nonce).
    serial: u64,
}

/// The `Digest` parameters of one Authorization value.
fn digest_params(v: &str) -> Option<HashMap<String, String>> {
    let rest = v.trim();
    let (scheme, rest) = rest.split_once(|c: char| c.is_whitespace())?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut out = HashMap::new();
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let name = name.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, after) = if let Some(q) = after.strip_prefix('"') {
            // quoted-string with backslash escapes (§25.1)
            let mut val = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            val.push(e);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => val.push(c),
                }
            }
            (val, q.get(end?..)?)
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after.get(..end)?.trim().to_string(), after.get(end..)?)
        };
        if out.insert(name, value).is_some() {
            return None; // a parameter twice: not a credential we can trust
        }
        rest = after.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(out)
}

impl Authenticator {
    /// `key` must be random (the driver draws it once); `epoch` is any fixed instant.
    pub fn new(key: [u8; 32], epoch: Instant) -> Authenticator {
        Authenticator {
            key,
            epoch,
            used: HashMap::new(),
            serial: 0,
        }
    }

    fn mac(&self, minted: u64, serial: u64) -> String {
        let mut h = sha2::Sha256::new();
        h.update(self.key);
        h.update(minted.to_be_bytes());
        h.update(serial.to_be_bytes());
        h.update(self.key);
        let d = h.finalize();
        hex(d.get(..16).unwrap_or_default())
    }

    /// `<minted>.<serial>.<mac>`: when, which challenge, and our MAC over both.
    fn mint(&mut self, now: Instant) -> String {
        let minted = now.saturating_duration_since(self.epoch).as_secs();
        self.serial = self.serial.wrapping_add(1);
        let serial = self.serial;
        format!("{minted:x}.{serial:x}.{}", self.mac(minted, serial))
    }

    /// When a nonce was minted (seconds since `epoch`), if it is one of ours.
    fn minted(&self, nonce: &str) -> Option<u64> {
        let (t, rest) = nonce.split_once('.')?;
        let (serial, mac) = rest.split_once('.')?;
        let minted = u64::from_str_radix(t, 16).ok()?;
        let serial = u64::from_str_radix(serial, 16).ok()?;
        bool::from(self.mac(minted, serial).as_bytes().ct_eq(mac.as_bytes())).then_some(minted)
    }

    /// Checks the INVITE's Authorization against the configuration.
    pub fn check(&mut self, cfg: &AuthConfig, now: Instant, req: &Message) -> Verdict {
        let StartLine::Request { method, uri } = &req.start else {
            return Verdict::Challenge {
                stale: false,
                failed: true,
            };
        };
        let mut given = false;
        for v in req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Authorization"))
            .map(|(_, v)| v)
        {
            let Some(p) = digest_params(v) else {
                given = true;
                continue;
            };
            if p.get("realm").map(String::as_str) != Some(cfg.realm.as_str()) {
                continue; // credentials for someone else (a proxy on the way)
            }
            match self.verify(cfg, now, method.as_str(), uri, &p) {
                Ok(()) => return Verdict::Authenticated,
                Err(stale) => {
                    return Verdict::Challenge {
                        stale,
                        failed: !stale,
                    }
                }
            }
        }
        Verdict::Challenge {
            stale: false,
            failed: given,
        }
    }

    /// `Err(true)` for a right answer to an expired nonce, `Err(false)` for anything else.
    fn verify(
        &mut self,
        cfg: &AuthConfig,
        now: Instant,
        method: &str,
        request_uri: &str,
        p: &HashMap<String, String>,
    ) -> Result<(), bool> {
        let get = |k: &str| p.get(k).map(String::as_str).ok_or(false);
        let alg = match p.get("algorithm") {
            // RFC 7616 §3.4: no algorithm is MD5.
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_name(a).ok_or(false)?,
        };
        if !cfg.algorithms.contains(&alg) {
            return Err(false);
        }
        let password = cfg.password.as_ref().ok_or(false)?;
        let (username, nonce, uri, response) = (
            get("username")?,
            get("nonce")?,
            get("uri")?,
            get("response")?,
        );
        // qop=auth only: without a client nonce and a count there is no replay defence.
        if get("qop")? != "auth" {
            return Err(false);
        }
        let (cnonce, nc) = (get("cnonce")?, get("nc")?);
        if cnonce.is_empty() || nc.len() != 8 || username != cfg.username || uri != request_uri {
            return Err(false);
        }
        let count = u32::from_str_radix(nc, 16).map_err(|_| false)?;
        let minted = self.minted(nonce).ok_or(false)?;
        let ha1 = alg.hex(&format!("{username}:{}:{}", cfg.realm, password.0));
        let ha2 = alg.hex(&format!("{method}:{uri}"));
        let want = alg.hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
        if !bool::from(
            want.as_bytes()
                .ct_eq(response.to_ascii_lowercase().as_bytes()),
        ) {
            return Err(false);
        }
        let age = now
            .saturating_duration_since(self.epoch)
            .as_secs()
            .saturating_sub(minted);
        if age > cfg.nonce_ttl.as_secs() {
            return Err(true);
        }
        // Replay: each use of a nonce must carry a higher count than the last.
        if self.used.get(nonce).is_some_and(|(seen, _)| count <= *seen) {
            return Err(false);
        }
        self.remember(nonce, count, minted, now, cfg.nonce_ttl);
        Ok(())
    }

    fn remember(&mut self, nonce: &str, count: u32, minted: u64, now: Instant, ttl: Duration) {
        if self.used.len() >= MAX_NONCES {
            let now_s = now.saturating_duration_since(self.epoch).as_secs();
            self.used
                .retain(|_, (_, m)| now_s.saturating_sub(*m) <= ttl.as_secs());
            if self.used.len() >= MAX_NONCES {
                let mut ages: Vec<u64> = self.used.values().map(|(_, m)| *m).collect();
                ages.sort_unstable();
                let cut = ages.get(ages.len() / 2).copied().unwrap_or(0);
                self.used.retain(|_, (_, m)| *m > cut);
            }
        }
        self.used.insert(nonce.to_string(), (count, minted));
    }

    /// The 401 for `req`: one WWW-Authenticate per configured algorithm, in order.
    pub fn challenge(
        &mut self,
        cfg: &AuthConfig,
        now: Instant,
        req: &Message,
        stale: bool,
        server: &str,
    ) -> Message {
        let tag = stateless_tag(req);
        let mut r = response(req, 401, Some(&tag), server);
        let nonce = self.mint(now);
        for alg in &cfg.algorithms {
            let stale = if stale { ", stale=true" } else { "" };
            r.push_header(
                "WWW-Authenticate",
                format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}",
                    cfg.realm,
                    alg.name()
                ),
            );
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::msg::Limits;

    fn cfg(algorithms: Vec<Algorithm>) -> AuthConfig {
        AuthConfig {
            realm: "pincoderouting".into(),
            username: "pbx".into(),
            source: PasswordSource::Env("X".into()),
            password: Some(Secret::new("s3cret pass".into())),
            algorithms,
            nonce_ttl: Duration::from_secs(300),
        }
    }

    const INVITE: &str =
        "INVITE sip:pin@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
From: <sip:a@192.0.2.1>;tag=1\r\nTo: <sip:pin@192.0.2.10>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:a@192.0.2.1>\r\n";

    fn invite(auth: Option<&str>) -> Message {
        let a = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let text = format!("{INVITE}{a}Content-Length: 0\r\n\r\n");
        Message::parse(text.as_bytes(), &Limits::default(), true).unwrap()
    }

    /// What a client computes (RFC 7616 §3.4.1), independently of the code under test's
    /// helpers: the hash is done here with the crates directly.
    fn client(alg: &str, nonce: &str, nc: &str, password: &str, uri: &str) -> String {
        let h = |s: String| -> String {
            if alg == "MD5" {
                hex(&md5::Md5::digest(s.as_bytes()))
            } else {
                hex(&sha2::Sha256::digest(s.as_bytes()))
            }
        };
        let ha1 = h(format!("pbx:pincoderouting:{password}"));
        let ha2 = h(format!("INVITE:{uri}"));
        let resp = h(format!("{ha1}:{nonce}:{nc}:0a4f113b:auth:{ha2}"));
        format!(
            "Digest username=\"pbx\", realm=\"pincoderouting\", nonce=\"{nonce}\", uri=\"{uri}\", \
response=\"{resp}\", algorithm={alg}, cnonce=\"0a4f113b\", qop=auth, nc={nc}"
        )
    }

    fn nonce_of(m: &Message, alg: &str) -> String {
        let v = m
            .headers
            .iter()
            .filter(|(n, _)| n == "WWW-Authenticate")
            .map(|(_, v)| v)
            .find(|v| v.contains(&format!("algorithm={alg},")))
            .unwrap();
        digest_params(v).unwrap()["nonce"].clone()
    }

    #[test]
    fn the_challenge_offers_sha256_then_md5_and_both_authenticate() {
        let c = cfg(vec![Algorithm::Sha256, Algorithm::Md5]);
        let t0 = crate::testutil::epoch();
        let mut a = Authenticator::new([7; 32], t0);
        let first = invite(None);
        assert_eq!(
            a.check(&c, t0, &first),
            Verdict::Challenge {
                stale: false,
                failed: false
            }
        );
        let ch = a.challenge(&c, t0, &first, false, "ua");
        assert_eq!(ch.status(), Some(401));
        let www: Vec<&str> = ch
            .headers
            .iter()
            .filter(|(n, _)| n == "WWW-Authenticate")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(www.len(), 2);
        assert!(www[0].contains("algorithm=SHA-256") && www[0].contains("qop=\"auth\""));
        assert!(www[1].contains("algorithm=MD5"));
        // Both challenges carry the same nonce, so the second use counts on from the first.
        for (alg, nc) in [("SHA-256", "00000001"), ("MD5", "00000002")] {
            let n = nonce_of(&ch, alg);
            let cred = client(alg, &n, nc, "s3cret pass", "sip:pin@192.0.2.10");
            assert_eq!(
                a.check(&c, t0, &invite(Some(&cred))),
                Verdict::Authenticated,
                "{alg}"
            );
        }
    }

    #[test]
    fn wrong_password_user_uri_or_qop_fail_and_are_counted() {
        let c = cfg(vec![Algorithm::Sha256]);
        let t0 = crate::testutil::epoch();
        let mut a = Authenticator::new([7; 32], t0);
        let n = nonce_of(&a.challenge(&c, t0, &invite(None), false, "ua"), "SHA-256");
        let failed = Verdict::Challenge {
            stale: false,
            failed: true,
        };
        let good = client(
            "SHA-256",
            &n,
            "00000001",
            "s3cret pass",
            "sip:pin@192.0.2.10",
        );
        for bad in [
            client("SHA-256", &n, "00000001", "guess", "sip:pin@192.0.2.10"),
            client(
                "SHA-256",
                &n,
                "00000001",
                "s3cret pass",
                "sip:other@192.0.2.10",
            ),
            good.replace("username=\"pbx\"", "username=\"admin\""),
            good.replace("qop=auth, nc=00000001", "nc=00000001"),
            good.replace("nonce=\"", "nonce=\"1"),
            // MD5 is not offered here.
            client("MD5", &n, "00000001", "s3cret pass", "sip:pin@192.0.2.10"),
            "Digest garbage".to_string(),
            "Basic cGJ4OnMzY3JldA==".to_string(),
        ] {
            assert_eq!(a.check(&c, t0, &invite(Some(&bad))), failed, "{bad}");
        }
        // Another realm's credentials are not ours to judge: a plain challenge.
        let other = good.replace("realm=\"pincoderouting\"", "realm=\"proxy\"");
        assert_eq!(
            a.check(&c, t0, &invite(Some(&other))),
            Verdict::Challenge {
                stale: false,
                failed: false
            }
        );
        // Not loaded: nobody passes.
        let unloaded = AuthConfig {
            password: None,
            ..c.clone()
        };
        assert_eq!(a.check(&unloaded, t0, &invite(Some(&good))), failed);
        assert_eq!(
            a.check(&c, t0, &invite(Some(&good))),
            Verdict::Authenticated
        );
    }

    /// A trunk places many calls a second, and a UA counts from nc=1 on every new nonce:
    /// two challenges in the same second must not share a nonce, or the second call's
    /// first answer would be refused as a replay of the first's.
    #[test]
    fn challenges_in_the_same_second_get_their_own_nonces() {
        let c = cfg(vec![Algorithm::Md5]);
        let t0 = crate::testutil::epoch();
        let mut a = Authenticator::new([3; 32], t0);
        let uri = "sip:pin@192.0.2.10";
        let nonces: Vec<String> = (0..3)
            .map(|_| nonce_of(&a.challenge(&c, t0, &invite(None), false, "ua"), "MD5"))
            .collect();
        assert!(nonces[0] != nonces[1] && nonces[1] != nonces[2] && nonces[0] != nonces[2]);
        for n in &nonces {
            let first = invite(Some(&client("MD5", n, "00000001", "s3cret pass", uri)));
            assert_eq!(a.check(&c, t0, &first), Verdict::Authenticated, "{n}");
        }
        // Still ours only: a serial changed by hand breaks the MAC.
        let (t, rest) = nonces[0].split_once('.').unwrap();
        let (_, mac) = rest.split_once('.').unwrap();
        let forged = format!("{t}.ff.{mac}");
        let bad = invite(Some(&client(
            "MD5",
            &forged,
            "00000001",
            "s3cret pass",
            uri,
        )));
        assert_ne!(a.check(&c, t0, &bad), Verdict::Authenticated);
    }

    #[test]
    fn nonces_expire_as_stale_and_cannot_be_replayed() {
        let c = cfg(vec![Algorithm::Sha256]);
        let t0 = crate::testutil::epoch();
        let mut a = Authenticator::new([9; 32], t0);
        let n = nonce_of(&a.challenge(&c, t0, &invite(None), false, "ua"), "SHA-256");
        let uri = "sip:pin@192.0.2.10";
        let one = invite(Some(&client("SHA-256", &n, "00000001", "s3cret pass", uri)));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(a.check(&c, t1, &one), Verdict::Authenticated);
        // The same Authorization again: a replay.
        let replayed = Verdict::Challenge {
            stale: false,
            failed: true,
        };
        assert_eq!(a.check(&c, t1, &one), replayed);
        // A higher count on the same nonce is a new use.
        let two = invite(Some(&client("SHA-256", &n, "00000002", "s3cret pass", uri)));
        assert_eq!(a.check(&c, t1, &two), Verdict::Authenticated);
        assert_eq!(
            a.check(&c, t1, &one),
            replayed,
            "going back is a replay too"
        );
        // Past the TTL the right answer is stale (the client retries with a new nonce).
        let late = t0 + Duration::from_secs(301);
        let three = invite(Some(&client("SHA-256", &n, "00000003", "s3cret pass", uri)));
        assert_eq!(
            a.check(&c, late, &three),
            Verdict::Challenge {
                stale: true,
                failed: false
            }
        );
        let ch = a.challenge(&c, late, &three, true, "ua");
        assert!(ch
            .header("WWW-Authenticate")
            .unwrap()
            .ends_with("stale=true"));
        // A nonce minted by another process (another key) is not ours.
        let mut other = Authenticator::new([1; 32], t0);
        let n2 = nonce_of(
            &other.challenge(&c, t0, &invite(None), false, "ua"),
            "SHA-256",
        );
        let foreign = invite(Some(&client(
            "SHA-256",
            &n2,
            "00000001",
            "s3cret pass",
            uri,
        )));
        assert_eq!(a.check(&c, t1, &foreign), replayed);
    }

    #[test]
    fn the_password_never_prints() {
        let c = cfg(vec![Algorithm::Md5]);
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
