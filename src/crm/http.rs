//! The generic REST lookup adapter for CRMs that keep the PIN on the contact record:
//! a URL template with `{phone}` and `{org}`, a method, headers whose secrets come from
//! environment variables (`${NAME}`; never in clear in the config file), JSON pointers to the
//! contacts array, the id and the PIN, and what to do when several contacts match.
//!
//! One shared client (connection reuse, TLS certificates verified), a total deadline per
//! lookup, bounded retries for this idempotent request, and a clear outcome for every
//! failure: timeout, refused, 5xx, 4xx, bad JSON, PIN field missing. A failure never lets a
//! caller through: the flow routes it to the failure extension as `crm_error`.

use super::{Contact, CrmReply, VerifyReply};
use crate::call::verdict::{Pin, StoredPin};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// What to do when several contacts match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Multiple {
    /// Treat the caller as unknown (a PIN cannot say which contact it is).
    #[default]
    Unknown,
    /// Take the first one.
    First,
}

/// `[crm]` settings of the HTTP lookup adapter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLookupConfig {
    pub url: String,
    #[serde(default = "d_get")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub contacts_pointer: String,
    #[serde(default = "d_id")]
    pub id_pointer: String,
    #[serde(default = "d_pin")]
    pub pin_pointer: String,
    #[serde(default)]
    pub multiple: Multiple,
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "d_retries")]
    pub retries: u32,
}

fn d_get() -> String {
    "GET".into()
}
fn d_id() -> String {
    "/id".into()
}
fn d_pin() -> String {
    "/pin".into()
}
fn d_timeout() -> u64 {
    2000
}
fn d_retries() -> u32 {
    1
}

/// Expands `${NAME}` from the environment; a header value with no `${…}` at all is refused
/// for headers that carry credentials, so secrets never sit in the file in clear.
pub fn expand_env(
    name: &str,
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let secret_header = [
        "authorization",
        "x-api-key",
        "api-key",
        "cookie",
        "x-auth-token",
    ]
    .contains(&name.to_ascii_lowercase().as_str());
    if secret_header && !value.contains("${") {
        return Err(format!(
            "header {name}: put the secret in an environment variable and write ${{NAME}}"
        ));
    }
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find('}')
            .ok_or_else(|| format!("header {name}: unclosed ${{"))?;
        let var = &rest[i + 2..i + end];
        let v = env(var)
            .ok_or_else(|| format!("header {name}: environment variable {var} is not set"))?;
        out.push_str(&v);
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Percent-encodes a value for a URL (RFC 3986 unreserved characters pass).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Interprets a lookup reply body.
pub fn parse_reply(cfg: &HttpLookupConfig, body: &[u8]) -> CrmReply {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return CrmReply::Error("bad JSON in the CRM reply".into());
    };
    let list = if cfg.contacts_pointer.is_empty() {
        Some(&v)
    } else {
        v.pointer(&cfg.contacts_pointer)
    };
    let contacts: Vec<&serde_json::Value> = match list {
        Some(serde_json::Value::Array(a)) => a.iter().collect(),
        Some(o @ serde_json::Value::Object(_)) => vec![o],
        Some(serde_json::Value::Null) | None => {
            return CrmReply::Error(format!("no contacts at {}", cfg.contacts_pointer))
        }
        Some(_) => return CrmReply::Error("contacts are not a list".into()),
    };
    let c = match (contacts.as_slice(), cfg.multiple) {
        ([], _) => return CrmReply::NotFound,
        ([one], _) | ([one, ..], Multiple::First) => *one,
        (_, Multiple::Unknown) => return CrmReply::Ambiguous,
    };
    let id = match c.pointer(&cfg.id_pointer) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return CrmReply::Error("contact id missing".into()),
    };
    let pin = match c.pointer(&cfg.pin_pointer) {
        Some(serde_json::Value::String(s)) => Pin::from_digits(s.trim()),
        Some(serde_json::Value::Number(n)) => Pin::from_digits(&n.to_string()),
        _ => return CrmReply::Error("PIN field missing".into()),
    };
    match pin {
        Some(p) => CrmReply::Found(Contact {
            id,
            name: String::new(),
            pin: Some(StoredPin::Plain(p)),
        }),
        None => CrmReply::Error("PIN field is not a PIN".into()),
    }
}

/// The shared HTTP client (connection reuse, TLS verified) and the configured headers, with
/// their `${ENV}` secrets filled in and marked sensitive.
fn client_and_headers(
    cfg: &HttpLookupConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(reqwest::Client, reqwest::header::HeaderMap), String> {
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &cfg.headers {
        let value = expand_env(k, v, env)?;
        let name: reqwest::header::HeaderName = k
            .parse()
            .map_err(|_| format!("header name '{k}' is invalid"))?;
        let mut hv: reqwest::header::HeaderValue = value
            .parse()
            .map_err(|_| format!("header {k}: invalid value"))?;
        hv.set_sensitive(true);
        headers.insert(name, hv);
    }
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| e.to_string())?;
    Ok((client, headers))
}

/// The HTTP lookup adapter (one per service; cheap to clone).
#[derive(Debug, Clone)]
pub struct HttpLookup {
    client: reqwest::Client,
    cfg: HttpLookupConfig,
    method: reqwest::Method,
    headers: reqwest::header::HeaderMap,
}

impl HttpLookup {
    /// Builds the adapter; header secrets come from `env`.
    pub fn new(
        cfg: HttpLookupConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<HttpLookup, String> {
        if !cfg.url.contains("{phone}") {
            return Err("url must contain {phone}".into());
        }
        let method: reqwest::Method = cfg
            .method
            .to_ascii_uppercase()
            .parse()
            .map_err(|_| format!("method '{}' is not an HTTP method", cfg.method))?;
        let (client, headers) = client_and_headers(&cfg, env)?;
        Ok(HttpLookup {
            client,
            cfg,
            method,
            headers,
        })
    }

    fn url(&self, org: &str, phone: &str) -> String {
        self.cfg
            .url
            .replace("{phone}", &encode(phone))
            .replace("{org}", &encode(org))
    }

    /// Looks a caller up, within the total deadline, retrying 5xx and transport errors.
    pub async fn lookup(&self, org: &str, phone: &str) -> CrmReply {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.cfg.timeout_ms);
        match tokio::time::timeout_at(deadline, self.lookup_retrying(org, phone)).await {
            Ok(r) => r,
            Err(_) => CrmReply::Error(format!("CRM timeout after {} ms", self.cfg.timeout_ms)),
        }
    }

    async fn lookup_retrying(&self, org: &str, phone: &str) -> CrmReply {
        let mut last = CrmReply::Error("not tried".into());
        for attempt in 0..=self.cfg.retries {
            if attempt > 0 {
                // A short pause before retrying (the deadline bounds the total).
                tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_millis(100))
                    .await;
            }
            let req = self
                .client
                .request(self.method.clone(), self.url(org, phone))
                .headers(self.headers.clone())
                .header("Accept", "application/json");
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = CrmReply::Error(if e.is_connect() {
                        "CRM connection refused or unreachable".into()
                    } else {
                        "CRM request failed".into()
                    });
                    continue;
                }
            };
            let status = resp.status();
            if status == reqwest::StatusCode::NOT_FOUND {
                return CrmReply::NotFound;
            }
            if status.is_server_error() {
                last = CrmReply::Error(format!("CRM answered HTTP {}", status.as_u16()));
                continue;
            }
            if !status.is_success() {
                return CrmReply::Error(format!("CRM answered HTTP {}", status.as_u16()));
            }
            return match resp.bytes().await {
                Ok(b) if b.len() <= 1024 * 1024 => parse_reply(&self.cfg, &b),
                Ok(_) => CrmReply::Error("CRM reply too large".into()),
                Err(_) => CrmReply::Error("CRM reply cut off".into()),
            };
        }
        last
    }
}

/// Interprets a verify webhook reply: `{"verified": bool, "contact": {"id": …}}`.
pub fn parse_verify(body: &[u8]) -> VerifyReply {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return VerifyReply::Error("bad JSON in the verify reply".into());
    };
    let id = match v.pointer("/contact/id") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    match v.get("verified") {
        Some(serde_json::Value::Bool(true)) => match id {
            Some(contact_id) => VerifyReply::Verified { contact_id },
            None => VerifyReply::Error("verified without a contact id".into()),
        },
        Some(serde_json::Value::Bool(false)) => VerifyReply::Rejected { contact_id: id },
        _ => VerifyReply::Error("no boolean 'verified' in the reply".into()),
    }
}

/// The verify webhook adapter: POST `{org, caller, pin, call_id}`, expect
/// `{"verified": true|false, "contact": {...}}`. Not retried (the CRM may count attempts).
#[derive(Debug, Clone)]
pub struct HttpVerify {
    client: reqwest::Client,
    url: String,
    headers: reqwest::header::HeaderMap,
    timeout: Duration,
}

impl HttpVerify {
    pub fn new(
        cfg: HttpLookupConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let (client, headers) = client_and_headers(&cfg, env)?;
        Ok(HttpVerify {
            client,
            url: cfg.url,
            headers,
            timeout: Duration::from_millis(cfg.timeout_ms),
        })
    }

    /// Asks the CRM. The PIN goes in the request body only.
    pub async fn verify(&self, org: &str, caller: &str, pin: &Pin, call_id: &str) -> VerifyReply {
        let body = serde_json::json!({
            "org": org,
            "caller": caller,
            "pin": pin.expose_for_webhook(),
            "call_id": call_id,
        });
        let req = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .json(&body)
            .timeout(self.timeout);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return VerifyReply::Error(format!(
                    "verify timeout after {} ms",
                    self.timeout.as_millis()
                ))
            }
            Err(e) if e.is_connect() => {
                return VerifyReply::Error("verify connection refused or unreachable".into())
            }
            Err(_) => return VerifyReply::Error("verify request failed".into()),
        };
        let status = resp.status();
        if !status.is_success() {
            return VerifyReply::Error(format!("verify answered HTTP {}", status.as_u16()));
        }
        match resp.bytes().await {
            Ok(b) if b.len() <= 1024 * 1024 => parse_verify(&b),
            _ => VerifyReply::Error("verify reply unusable".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> HttpLookupConfig {
        toml::from_str(&format!(
            "url = \"http://127.0.0.1:1/c?phone={{phone}}\"\ncontacts_pointer = \"/results\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn replies_are_interpreted_with_pointers() {
        let c = cfg("");
        let one = br#"{"results":[{"id":"a1","pin":"4321"}]}"#;
        assert!(matches!(parse_reply(&c, one), CrmReply::Found(x) if x.id == "a1"));
        let num = br#"{"results":[{"id":7,"pin":4321}]}"#;
        assert!(matches!(parse_reply(&c, num), CrmReply::Found(x) if x.id == "7"));
        assert!(matches!(
            parse_reply(&c, br#"{"results":[]}"#),
            CrmReply::NotFound
        ));
        let two = br#"{"results":[{"id":"a","pin":"1"},{"id":"b","pin":"2"}]}"#;
        assert!(matches!(parse_reply(&c, two), CrmReply::Ambiguous));
        assert!(
            matches!(parse_reply(&cfg("multiple = \"first\""), two), CrmReply::Found(x) if x.id == "a")
        );
        for (body, why) in [
            (&b"{not json"[..], "bad JSON"),
            (br#"{"results":[{"id":"a"}]}"#, "PIN field missing"),
            (br#"{"results":[{"id":"a","pin":"12ab"}]}"#, "not a PIN"),
            (br#"{"other":1}"#, "no contacts"),
            (br#"{"results":[{"pin":"1234"}]}"#, "id missing"),
        ] {
            match parse_reply(&c, body) {
                CrmReply::Error(e) => assert!(e.contains(why), "{e}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn verify_replies() {
        assert!(matches!(
            parse_verify(br#"{"verified":true,"contact":{"id":"c9"}}"#),
            VerifyReply::Verified { contact_id } if contact_id == "c9"
        ));
        assert!(matches!(
            parse_verify(br#"{"verified":false}"#),
            VerifyReply::Rejected { contact_id: None }
        ));
        for bad in [
            &br#"{"verified":"yes"}"#[..],
            b"nope",
            br#"{"verified":true}"#,
        ] {
            assert!(
                matches!(parse_verify(bad), VerifyReply::Error(_)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn secrets_come_from_the_environment_only() {
        let env = |k: &str| (k == "CRM_TOKEN").then(|| "s3cret".to_string());
        assert_eq!(
            expand_env("Authorization", "Bearer ${CRM_TOKEN}", &env).unwrap(),
            "Bearer s3cret"
        );
        assert!(expand_env("Authorization", "Bearer s3cret", &env).is_err());
        assert!(expand_env("Authorization", "Bearer ${MISSING}", &env).is_err());
        assert_eq!(expand_env("X-Tenant", "acme", &env).unwrap(), "acme");
        assert_eq!(encode("+1 555"), "%2B1%20555");
    }
}
