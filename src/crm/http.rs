//! The REST lookup adapter for CRMs that keep the PIN on the contact record, and the verify
//! webhook for CRMs that judge PINs themselves.
//!
//! A lookup is a URL template (and, for search APIs, a JSON body template) with the caller's
//! number in the forms CRMs store — `{phone}` (E.164), `{phone_digits}`, `{phone_national}`,
//! `{phone_formatted}`, `{phone_international}`, and `{number}`: each of the candidate
//! `forms` in turn, until one finds the caller — URL-encoded in the URL, JSON-escaped in the
//! body. Selectors (JSON pointers or RFC 9535 JSONPath, `select.rs`) find the contacts, the
//! id, the name, the numbers and the PIN (a custom field in a list is
//! `$.customFields[?@.caption == 'Security PIN'].value`); an optional second request
//! (`detail_url` with `{id}`) fetches the record that holds the PIN. Presets (`presets.rs`)
//! fill all of this in for ConnectWise PSA, Autotask, Kaseya BMS, HaloPSA and HubSpot.
//!
//! One shared client (connection reuse, TLS certificates verified), credentials from
//! `auth.rs`, one total deadline for the whole lookup (token, every candidate form, the
//! detail), bounded retries for these idempotent requests (5xx, transport errors; a 429
//! waits for its Retry-After when that fits in the deadline; a 401 retries once with a
//! fresh token), and a clear outcome for every failure. A failure never lets a caller
//! through: the flow routes it to the failure extension as `crm_error`.

use super::auth::{self, Auth, AuthConfig, Env};
use super::phone::{Form, LookupNumber};
use super::presets::{self, Preset};
use super::select::{self, Selector};
use super::{Contact, CrmReply, VerifyReply};
use crate::call::verdict::{Pin, StoredPin};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

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

/// `[crm.http]` as written. Every key a preset sets may be given to override it.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpLookupConfig {
    /// A ready-made adapter: connectwise, autotask, kaseya_bms, halopsa, hubspot.
    pub preset: Option<Preset>,
    /// The CRM's API root, for presets (`{base_url}` in templates).
    pub base_url: Option<String>,
    /// The name of the field that holds the PIN, for presets (`{pin_field}`).
    pub pin_field: Option<String>,
    #[serde(default)]
    pub url: String,
    pub method: Option<String>,
    /// A request body template (JSON; placeholders are JSON-escaped).
    pub body: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The forms `{number}` takes, tried in order while none finds the caller.
    #[serde(default)]
    pub forms: Vec<Form>,
    /// Where the contacts are (pointer or JSONPath; empty = the whole reply).
    pub contacts_pointer: Option<String>,
    pub id_pointer: Option<String>,
    pub pin_pointer: Option<String>,
    /// Parts of the contact's name, joined with a space.
    #[serde(default)]
    pub name_pointers: Vec<String>,
    /// Where a contact's numbers are: when set, only contacts with a number that denotes
    /// the caller (in any format) count.
    #[serde(default)]
    pub phone_pointers: Vec<String>,
    /// A second request for the record that holds the PIN (`{id}` = the contact's id).
    pub detail_url: Option<String>,
    /// Where the record is in the detail reply (empty = the whole reply).
    pub detail_pointer: Option<String>,
    #[serde(default)]
    pub multiple: Multiple,
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "d_retries")]
    pub retries: u32,
    /// Refuse PINs stored in clear: only argon2 hashes (`$argon2id$…`) in the PIN field.
    #[serde(default)]
    pub require_hashed_pin: bool,
    pub auth: Option<AuthConfig>,
}

fn d_timeout() -> u64 {
    2000
}
fn d_retries() -> u32 {
    1
}

/// The placeholders a template may use.
const PLACEHOLDERS: [&str; 10] = [
    "phone",
    "phone_digits",
    "phone_national",
    "phone_formatted",
    "phone_international",
    "number",
    "org",
    "base_url",
    "pin_field",
    "id",
];

/// Those that carry the caller's number.
const NUMBER_PLACEHOLDERS: [&str; 6] = [
    "{phone}",
    "{phone_digits}",
    "{phone_national}",
    "{phone_formatted}",
    "{phone_international}",
    "{number}",
];

/// How a value is put into a template.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    Url,
    Json,
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

/// A value inside a JSON string literal.
fn json_escape(v: &str) -> String {
    let quoted = serde_json::Value::String(v.to_string()).to_string();
    quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or("")
        .to_string()
}

/// The `{name}` placeholders of a template (lowercase names only: JSON's `{"` is not one).
fn placeholders(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        let after = rest.get(i + 1..).unwrap_or("");
        let name_len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 && after.get(name_len..name_len + 1) == Some("}") {
            out.push(after.get(..name_len).unwrap_or(""));
        }
        rest = after;
    }
    out
}

/// Fills a template. `base_url` goes in as it is; every other value is escaped.
fn render(template: &str, vars: &[(&str, &str)], esc: Escape) -> String {
    let mut out = template.to_string();
    for (name, value) in vars {
        let key = format!("{{{name}}}");
        if !out.contains(&key) {
            continue;
        }
        let v = match (*name, esc) {
            ("base_url", _) => value.to_string(),
            (_, Escape::Url) => encode(value),
            (_, Escape::Json) => json_escape(value),
        };
        out = out.replace(&key, &v);
    }
    out
}

/// A lookup, checked and with its preset applied (no secrets yet).
#[derive(Debug, Clone)]
pub struct LookupSpec {
    pub url: String,
    pub method: reqwest::Method,
    pub body: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub forms: Vec<Form>,
    pub contacts: Selector,
    pub id: Selector,
    pub pin: Selector,
    pub name: Vec<Selector>,
    pub phones: Vec<Selector>,
    pub detail_url: Option<String>,
    pub detail: Selector,
    pub multiple: Multiple,
    pub timeout: Duration,
    pub retries: u32,
    pub require_hashed_pin: bool,
    pub auth: Option<AuthConfig>,
    pub base_url: String,
    pub pin_field: String,
}

fn sel(key: &str, text: &str) -> Result<Selector, String> {
    Selector::parse(text).map_err(|e| format!("{key}: {e}"))
}

impl HttpLookupConfig {
    /// Applies the preset and checks everything that can be checked without the network or
    /// the secrets. Errors name the key.
    pub fn resolve(&self) -> Result<LookupSpec, String> {
        let mut c = self.clone();
        if let Some(p) = c.preset {
            presets::apply(p, &mut c)?;
        }
        let base_url = c.base_url.clone().unwrap_or_default();
        let pin_field = c.pin_field.clone().unwrap_or_default();
        let url = c.url.replace("{base_url}", base_url.trim_end_matches('/'));
        if url.is_empty() {
            return Err("url: a lookup needs a url (or a preset)".into());
        }
        let body = c.body.clone().filter(|b| !b.trim().is_empty());
        let templates = [Some(url.as_str()), body.as_deref(), c.detail_url.as_deref()];
        for t in templates.into_iter().flatten() {
            if let Some(bad) = placeholders(t)
                .into_iter()
                .find(|p| !PLACEHOLDERS.contains(p))
            {
                return Err(format!(
                    "url: unknown placeholder {{{bad}}} (use {})",
                    NUMBER_PLACEHOLDERS.join(", ")
                ));
            }
        }
        let has_number = |t: &str| NUMBER_PLACEHOLDERS.iter().any(|p| t.contains(p));
        if !has_number(&url) && !body.as_deref().is_some_and(has_number) {
            return Err(format!(
                "url: the url or the body must contain the caller's number: {}",
                NUMBER_PLACEHOLDERS.join(", ")
            ));
        }
        if (url.contains("{pin_field}")
            || body.as_deref().is_some_and(|b| b.contains("{pin_field}")))
            && pin_field.is_empty()
        {
            return Err("pin_field: this lookup needs the name of the PIN field".into());
        }
        let method: reqwest::Method = c
            .method
            .clone()
            .unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into())
            .to_ascii_uppercase()
            .parse()
            .map_err(|_| "method: not an HTTP method".to_string())?;
        if let Some(b) = &body {
            // The body must be JSON once filled in.
            let sample: Vec<(&str, &str)> = PLACEHOLDERS.iter().map(|p| (*p, "x")).collect();
            serde_json::from_str::<serde_json::Value>(&render(b, &sample, Escape::Json))
                .map_err(|e| format!("body: not JSON once filled in: {e}"))?;
        }
        if c.timeout_ms == 0 || c.timeout_ms > 30_000 || c.retries > 5 {
            return Err("timeout_ms: need 1..=30000 ms and at most 5 retries".into());
        }
        let pin_text = c
            .pin_pointer
            .clone()
            .unwrap_or_else(|| "/pin".into())
            .replace("{pin_field}", &select::quote(&pin_field));
        Ok(LookupSpec {
            url,
            method,
            body,
            headers: c.headers.clone(),
            forms: if c.forms.is_empty() {
                vec![Form::E164]
            } else {
                c.forms.clone()
            },
            contacts: sel(
                "contacts_pointer",
                c.contacts_pointer.as_deref().unwrap_or(""),
            )?,
            id: sel("id_pointer", c.id_pointer.as_deref().unwrap_or("/id"))?,
            pin: sel("pin_pointer", &pin_text)?,
            name: c
                .name_pointers
                .iter()
                .map(|n| sel("name_pointers", n))
                .collect::<Result<_, _>>()?,
            phones: c
                .phone_pointers
                .iter()
                .map(|n| sel("phone_pointers", n))
                .collect::<Result<_, _>>()?,
            detail_url: c
                .detail_url
                .clone()
                .map(|d| d.replace("{base_url}", base_url.trim_end_matches('/'))),
            detail: sel("detail_pointer", c.detail_pointer.as_deref().unwrap_or(""))?,
            multiple: c.multiple,
            timeout: Duration::from_millis(c.timeout_ms),
            retries: c.retries,
            require_hashed_pin: c.require_hashed_pin,
            auth: c.auth.clone(),
            base_url,
            pin_field,
        })
    }
}

/// What one reply says about the caller.
#[derive(Debug)]
pub enum Step {
    /// Nobody has this form of the number: try the next form.
    Nobody,
    /// The answer.
    Done(CrmReply),
    /// One contact; its PIN is in the record `detail_url` fetches.
    NeedDetail { id: String, name: String },
}

impl LookupSpec {
    fn vars<'a>(
        &'a self,
        org: &'a str,
        n: &'a LookupNumber,
        form: Form,
    ) -> Vec<(&'a str, &'a str)> {
        vec![
            ("phone", n.form(Form::E164)),
            ("phone_digits", n.form(Form::Digits)),
            ("phone_national", n.form(Form::National)),
            ("phone_formatted", n.form(Form::Formatted)),
            ("phone_international", n.form(Form::International)),
            ("number", n.form(form)),
            ("org", org),
            ("pin_field", &self.pin_field),
        ]
    }

    /// The candidate forms, without repeats (a raw caller ID is one form).
    fn candidate_forms(&self, n: &LookupNumber) -> Vec<Form> {
        let uses_number = self.url.contains("{number}")
            || self.body.as_deref().is_some_and(|b| b.contains("{number}"));
        if !uses_number {
            return vec![Form::E164];
        }
        let mut seen: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        for f in &self.forms {
            let text = n.form(*f);
            if !seen.contains(&text) {
                seen.push(text);
                out.push(*f);
            }
        }
        out
    }

    /// Interprets a search reply.
    pub fn interpret(&self, number: &LookupNumber, body: &[u8]) -> Step {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Step::Done(CrmReply::Error("bad JSON in the CRM reply".into()));
        };
        let Some(mut records) = self.contacts.records(&v) else {
            return Step::Done(CrmReply::Error(format!("no contacts at {}", self.contacts)));
        };
        if records.iter().any(|r| !r.is_object()) {
            return Step::Done(CrmReply::Error("contacts are not objects".into()));
        }
        if !self.phones.is_empty() {
            records.retain(|r| {
                self.phones
                    .iter()
                    .flat_map(|s| s.all(r))
                    .filter_map(select::text)
                    .any(|p| number.matches_stored(&p))
            });
        }
        let record = match (records.as_slice(), self.multiple) {
            ([], _) => return Step::Nobody,
            ([one], _) | ([one, ..], Multiple::First) => *one,
            (_, Multiple::Unknown) => return Step::Done(CrmReply::Ambiguous),
        };
        let id = match self.id.one(record) {
            Ok(Some(v)) => match select::text(v) {
                Some(id) if !id.is_empty() => id,
                _ => return Step::Done(CrmReply::Error("contact id missing".into())),
            },
            Ok(None) => return Step::Done(CrmReply::Error("contact id missing".into())),
            Err(e) => return Step::Done(CrmReply::Error(format!("contact id: {e}"))),
        };
        let name = self.name_of(record);
        if self.detail_url.is_some() {
            return Step::NeedDetail { id, name };
        }
        Step::Done(self.contact(id, name, record))
    }

    fn name_of(&self, record: &serde_json::Value) -> String {
        self.name
            .iter()
            .filter_map(|s| s.one(record).ok().flatten().and_then(select::text))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Interprets the detail reply of a contact found by the search.
    pub fn interpret_detail(&self, id: String, name: String, body: &[u8]) -> CrmReply {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return CrmReply::Error("bad JSON in the CRM's contact record".into());
        };
        match self.detail.one(&v) {
            Ok(Some(record)) => {
                let name = if name.is_empty() {
                    self.name_of(record)
                } else {
                    name
                };
                self.contact(id, name, record)
            }
            Ok(None) => CrmReply::Error(format!("contact {id}: no record at {}", self.detail)),
            Err(e) => CrmReply::Error(format!("contact {id}: {e}")),
        }
    }

    /// The contact with its PIN. A PIN that is missing, empty or not digits is a data error
    /// for this contact (`crm_error`), never a match; errors name the contact, never the PIN.
    fn contact(&self, id: String, name: String, record: &serde_json::Value) -> CrmReply {
        let value = match self.pin.one(record) {
            Ok(Some(v)) => v,
            Ok(None) => {
                return CrmReply::Error(format!("contact {id}: PIN field missing ({})", self.pin))
            }
            Err(e) => return CrmReply::Error(format!("contact {id}: PIN {e}")),
        };
        match super::pin::from_json(value) {
            Ok(StoredPin::Plain(_)) if self.require_hashed_pin => CrmReply::Error(format!(
                "contact {id}: PIN stored in clear but require_hashed_pin is set"
            )),
            Ok(pin) => CrmReply::Found(Contact {
                id,
                name,
                pin: Some(pin),
            }),
            Err(e) => CrmReply::Error(format!("contact {id}: PIN {e}")),
        }
    }
}

/// An HTTP reply worth reading: 2xx or 404.
struct Reply {
    status: reqwest::StatusCode,
    body: bytes::Bytes,
}

/// The shared client and the configured headers with their secrets filled in (marked
/// sensitive).
fn client_and_headers(
    headers_cfg: &BTreeMap<String, String>,
    env: Env,
) -> Result<(reqwest::Client, reqwest::header::HeaderMap), String> {
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in headers_cfg {
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

/// Fills in a header's `${NAME}` / `${file:/path}`; a header that carries credentials must
/// take them from there, never from the file in clear.
pub fn expand_env(name: &str, value: &str, env: Env) -> Result<String, String> {
    let what = format!("header {name}");
    if auth::is_secret_name(name) {
        auth::secret(&what, value, env)
    } else {
        auth::expand(&what, value, env)
    }
}

/// The HTTP lookup adapter (one per CRM; cheap to clone behind its `Arc`).
#[derive(Debug)]
pub struct HttpLookup {
    client: reqwest::Client,
    spec: LookupSpec,
    headers: reqwest::header::HeaderMap,
    auth: Auth,
}

/// How long to wait before retrying a 5xx or a transport error.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Without a usable Retry-After, a 429 is retried after this.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

impl HttpLookup {
    /// Builds the adapter; secrets come from `env` or owner-only files.
    pub fn new(cfg: HttpLookupConfig, env: Env) -> Result<HttpLookup, String> {
        let spec = cfg.resolve()?;
        let (client, headers) = client_and_headers(&spec.headers, env)?;
        let auth_cfg = spec.auth.clone().map(|mut a| {
            if let Some(u) = &a.token_url {
                a.token_url = Some(u.replace("{base_url}", spec.base_url.trim_end_matches('/')));
            }
            a
        });
        let auth = Auth::load(auth_cfg.as_ref(), env)?;
        Ok(HttpLookup {
            client,
            spec,
            headers,
            auth,
        })
    }

    pub fn spec(&self) -> &LookupSpec {
        &self.spec
    }

    /// Looks a caller up within the total deadline: each candidate form in turn until one
    /// finds the caller, then the contact's record when the PIN is there.
    pub async fn lookup(&self, org: &str, number: &LookupNumber) -> CrmReply {
        let deadline = Instant::now() + self.spec.timeout;
        match tokio::time::timeout_at(deadline, self.lookup_forms(org, number, deadline)).await {
            Ok(r) => r,
            Err(_) => CrmReply::Error(format!(
                "CRM timeout after {} ms",
                self.spec.timeout.as_millis()
            )),
        }
    }

    async fn lookup_forms(&self, org: &str, number: &LookupNumber, deadline: Instant) -> CrmReply {
        for form in self.spec.candidate_forms(number) {
            let vars = self.spec.vars(org, number, form);
            let url = render(&self.spec.url, &vars, Escape::Url);
            let body = self
                .spec
                .body
                .as_deref()
                .map(|b| render(b, &vars, Escape::Json));
            let reply = match self
                .send(self.spec.method.clone(), &url, body, deadline)
                .await
            {
                Ok(r) => r,
                Err(e) => return CrmReply::Error(e),
            };
            if reply.status == reqwest::StatusCode::NOT_FOUND {
                continue;
            }
            match self.spec.interpret(number, &reply.body) {
                Step::Nobody => continue,
                Step::Done(r) => return r,
                Step::NeedDetail { id, name } => return self.detail(id, name, deadline).await,
            }
        }
        CrmReply::NotFound
    }

    async fn detail(&self, id: String, name: String, deadline: Instant) -> CrmReply {
        let Some(t) = &self.spec.detail_url else {
            return CrmReply::Error("no detail_url".into());
        };
        let url = render(t, &[("id", &id)], Escape::Url);
        match self.send(reqwest::Method::GET, &url, None, deadline).await {
            Ok(r) if r.status == reqwest::StatusCode::NOT_FOUND => {
                CrmReply::Error(format!("contact {id}: its record is gone (HTTP 404)"))
            }
            Ok(r) => self.spec.interpret_detail(id, name, &r.body),
            Err(e) => CrmReply::Error(e),
        }
    }

    /// One idempotent request with its retries: 5xx and transport errors after a short
    /// pause, a 429 after its Retry-After when that fits in the deadline, a 401 once with a
    /// fresh token. `Ok` is a 2xx or a 404; anything else is the error to report.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<String>,
        deadline: Instant,
    ) -> Result<Reply, String> {
        let mut last = "not tried".to_string();
        let mut refreshed = false;
        let mut attempt = 0;
        while attempt <= self.spec.retries {
            attempt += 1;
            let mut req = self
                .client
                .request(method.clone(), url)
                .headers(self.headers.clone())
                .header("Accept", "application/json");
            if let Some(b) = &body {
                req = req
                    .header("Content-Type", "application/json")
                    .body(b.clone());
            }
            let (req, token) = self.auth.apply(&self.client, req).await?;
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = if e.is_connect() {
                        "CRM connection refused or unreachable".into()
                    } else {
                        "CRM request failed".into()
                    };
                    pause(RETRY_PAUSE, deadline).await?;
                    continue;
                }
            };
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED
                && !refreshed
                && self.auth.refused(token.as_deref()).await
            {
                // The token was revoked or expired early: once more with a new one.
                refreshed = true;
                attempt -= 1;
                continue;
            }
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                let wait = retry_after(resp.headers()).unwrap_or(DEFAULT_RETRY_AFTER);
                last = format!(
                    "CRM rate limit: HTTP 429, retry after {} s",
                    wait.as_secs_f64().ceil()
                );
                if Instant::now() + wait >= deadline {
                    return Err(format!("{last} (past the deadline)"));
                }
                pause(wait, deadline).await?;
                continue;
            }
            if status.is_server_error() {
                last = format!("CRM answered HTTP {}", status.as_u16());
                pause(RETRY_PAUSE, deadline).await?;
                continue;
            }
            if !status.is_success() && status != reqwest::StatusCode::NOT_FOUND {
                return Err(format!("CRM answered HTTP {}", status.as_u16()));
            }
            return match resp.bytes().await {
                Ok(b) if b.len() <= 1024 * 1024 => Ok(Reply { status, body: b }),
                Ok(_) => Err("CRM reply too large".into()),
                Err(_) => Err("CRM reply cut off".into()),
            };
        }
        Err(last)
    }
}

/// Sleeps, unless that would end past the deadline.
async fn pause(d: Duration, deadline: Instant) -> Result<(), String> {
    let until = Instant::now() + d;
    if until >= deadline {
        return Err("CRM deadline reached while retrying".into());
    }
    tokio::time::sleep_until(until).await;
    Ok(())
}

/// A Retry-After in seconds (RFC 9110 §10.2.3; an HTTP-date is treated as absent).
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(3600)))
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
#[derive(Debug)]
pub struct HttpVerify {
    client: reqwest::Client,
    url: String,
    headers: reqwest::header::HeaderMap,
    timeout: Duration,
    auth: Auth,
}

impl HttpVerify {
    pub fn new(cfg: HttpLookupConfig, env: Env) -> Result<Self, String> {
        let (client, headers) = client_and_headers(&cfg.headers, env)?;
        Ok(HttpVerify {
            client,
            url: cfg.url,
            headers,
            timeout: Duration::from_millis(cfg.timeout_ms),
            auth: Auth::load(cfg.auth.as_ref(), env)?,
        })
    }

    /// Asks the CRM. The PIN goes in the request body only.
    pub async fn verify(&self, org: &str, caller: &str, pin: &Pin, call_id: &str) -> VerifyReply {
        match tokio::time::timeout(self.timeout, self.verify_once(org, caller, pin, call_id)).await
        {
            Ok(r) => r,
            Err(_) => VerifyReply::Error(format!(
                "verify timeout after {} ms",
                self.timeout.as_millis()
            )),
        }
    }

    async fn verify_once(&self, org: &str, caller: &str, pin: &Pin, call_id: &str) -> VerifyReply {
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
            .json(&body);
        let req = match self.auth.apply(&self.client, req).await {
            Ok((r, _)) => r,
            Err(e) => return VerifyReply::Error(e),
        };
        let resp = match req.send().await {
            Ok(r) => r,
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
    use crate::crm::phone::lookup_number;

    fn spec(extra: &str) -> LookupSpec {
        toml::from_str::<HttpLookupConfig>(&format!(
            "url = \"http://127.0.0.1:1/c?phone={{phone}}\"\ncontacts_pointer = \"/results\"\n{extra}"
        ))
        .unwrap()
        .resolve()
        .unwrap()
    }

    fn reply(s: &LookupSpec, body: &[u8]) -> CrmReply {
        match s.interpret(&lookup_number("+15551234567", "1"), body) {
            Step::Done(r) => r,
            Step::Nobody => CrmReply::NotFound,
            Step::NeedDetail { .. } => panic!("detail"),
        }
    }

    #[test]
    fn replies_are_interpreted_with_pointers() {
        let c = spec("");
        let one = br#"{"results":[{"id":"a1","pin":"4321"}]}"#;
        assert!(matches!(reply(&c, one), CrmReply::Found(x) if x.id == "a1"));
        let num = br#"{"results":[{"id":7,"pin":4321}]}"#;
        assert!(matches!(reply(&c, num), CrmReply::Found(x) if x.id == "7"));
        assert!(matches!(
            reply(&c, br#"{"results":[]}"#),
            CrmReply::NotFound
        ));
        let two = br#"{"results":[{"id":"a","pin":"1"},{"id":"b","pin":"2"}]}"#;
        assert!(matches!(reply(&c, two), CrmReply::Ambiguous));
        assert!(
            matches!(reply(&spec("multiple = \"first\""), two), CrmReply::Found(x) if x.id == "a")
        );
        for (body, why) in [
            (&b"{not json"[..], "bad JSON"),
            (
                br#"{"results":[{"id":"a"}]}"#,
                "contact a: PIN field missing",
            ),
            (
                br#"{"results":[{"id":"a","pin":"12ab"}]}"#,
                "contact a: PIN field is not digits",
            ),
            (
                br#"{"results":[{"id":"a","pin":"  "}]}"#,
                "contact a: PIN field is empty",
            ),
            (br#"{"results":[{"id":"a","pin":"12 34"}]}"#, "not digits"),
            (br#"{"other":1}"#, "no contacts"),
            (br#"{"results":[{"pin":"1234"}]}"#, "id missing"),
            (br#"{"results":[7]}"#, "not objects"),
        ] {
            match reply(&c, body) {
                CrmReply::Error(e) => {
                    assert!(e.contains(why), "{e}");
                    assert!(!e.contains("1234") && !e.contains("12ab"), "no PIN in {e}");
                }
                other => panic!("{other:?}"),
            }
        }
        // A PIN with spaces around it is the PIN.
        let spaced = br#"{"results":[{"id":"a","pin":" 4321 "}]}"#;
        let CrmReply::Found(x) = reply(&c, spaced) else {
            panic!()
        };
        assert!(x.pin.unwrap().matches(&Pin::from_digits("4321").unwrap()));
    }

    #[test]
    fn jsonpath_custom_fields_and_phone_matching() {
        let s = spec(
            "pin_pointer = \"$.customFields[?@.caption == {pin_field}].value\"\n\
             pin_field = \"Security PIN\"\n\
             name_pointers = [\"/firstName\", \"/lastName\"]\n\
             phone_pointers = [\"$.phones[*].value\"]\n",
        );
        let body = br#"{"results":[
            {"id":1,"firstName":"Ann","lastName":"Lee","phones":[{"value":"(555) 123-4567"}],
             "customFields":[{"caption":"Security PIN","value":"2580"}]},
            {"id":2,"phones":[{"value":"555-123-4568"}],"customFields":[]}]}"#;
        let CrmReply::Found(c) = reply(&s, body) else {
            panic!()
        };
        assert_eq!((c.id.as_str(), c.name.as_str()), ("1", "Ann Lee"));
        // Two custom fields with that caption: said plainly.
        let dup = br#"{"results":[{"id":1,"phones":[{"value":"5551234567"}],"customFields":[
            {"caption":"Security PIN","value":"1"},{"caption":"Security PIN","value":"2"}]}]}"#;
        let CrmReply::Error(e) = reply(&s, dup) else {
            panic!()
        };
        assert!(e.contains("selects 2 values"), "{e}");
        // Nobody whose number is the caller's: not found (the next form is tried).
        let other = br#"{"results":[{"id":2,"phones":[{"value":"555-123-4568"}]}]}"#;
        assert!(matches!(reply(&s, other), CrmReply::NotFound));
    }

    #[test]
    fn templates_fill_every_form_escaped_for_where_they_go() {
        let s = toml::from_str::<HttpLookupConfig>(
            "url = \"http://h/c?e={phone}&d={phone_digits}&n={phone_national}&f={phone_formatted}&i={phone_international}&o={org}\"\n\
             body = '{\"q\": \"{number}\", \"p\": [\"{pin_field}\"]}'\n\
             pin_field = 'PIN \"x\"'\n",
        )
        .unwrap()
        .resolve()
        .unwrap();
        let n = lookup_number("5551234567", "1");
        let vars = s.vars("a&b", &n, Form::Formatted);
        assert_eq!(
            render(&s.url, &vars, Escape::Url),
            "http://h/c?e=%2B15551234567&d=15551234567&n=5551234567&f=%28555%29%20123-4567&i=%2B1%20555-123-4567&o=a%26b"
        );
        let body = render(s.body.as_deref().unwrap(), &vars, Escape::Json);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["q"], "(555) 123-4567");
        assert_eq!(v["p"][0], "PIN \"x\"");
        // Candidate forms without repeats; a raw caller ID is one form.
        let c = toml::from_str::<HttpLookupConfig>(
            "url = \"http://h/c?q={number}\"\nforms = [\"e164\", \"national\", \"digits\", \"e164\"]\n",
        )
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!(
            c.candidate_forms(&n),
            vec![Form::E164, Form::National, Form::Digits]
        );
        assert_eq!(
            c.candidate_forms(&lookup_number("101", "1")),
            vec![Form::E164]
        );
    }

    #[test]
    fn bad_lookups_are_refused_at_load_naming_the_key() {
        let e = |t: &str| {
            toml::from_str::<HttpLookupConfig>(t)
                .unwrap()
                .resolve()
                .unwrap_err()
        };
        assert!(e("url = \"http://h/c\"\n").contains("must contain the caller's number"));
        assert!(e("url = \"http://h/c?p={fone}\"\n").contains("unknown placeholder {fone}"));
        assert!(
            e("url = \"http://h/{phone}\"\npin_pointer = \"$.a[\"\n").starts_with("pin_pointer:")
        );
        assert!(e("url = \"http://h/{phone}\"\nbody = \"{nope\"\n").starts_with("body:"));
        assert!(e("url = \"http://h/{phone}\"\ntimeout_ms = 0\n").starts_with("timeout_ms"));
        assert!(e("url = \"\"\n").starts_with("url:"));
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
    fn header_secrets_come_from_the_environment_only() {
        let env = |k: &str| (k == "CRM_TOKEN").then(|| "s3cret".to_string());
        assert_eq!(
            expand_env("Authorization", "Bearer ${CRM_TOKEN}", &env).unwrap(),
            "Bearer s3cret"
        );
        assert!(expand_env("Authorization", "Bearer s3cret", &env).is_err());
        assert!(expand_env("Secret", "s3cret", &env).is_err());
        assert!(expand_env("Authorization", "Bearer ${MISSING}", &env).is_err());
        assert_eq!(expand_env("X-Tenant", "acme", &env).unwrap(), "acme");
        assert_eq!(encode("+1 555"), "%2B1%20555");
        assert_eq!(placeholders("{\"a\":{phone},{b}}"), vec!["phone", "b"]);
    }
}
