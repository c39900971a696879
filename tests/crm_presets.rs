//! The CRM presets against local HTTP servers that answer in each vendor's documented shapes
//! (routes, auth, reply bodies): found by the number in any of the forms it is stored in,
//! not found, several found, PIN field missing, empty, with spaces, a revoked token (401,
//! then a fresh one), 429 with Retry-After, and a CRM slower than the deadline. Then a whole
//! SIPp call through the real binary, verified against the HaloPSA preset.

// Black-box tests drive real processes and servers: they may read the clock.
#![allow(clippy::disallowed_methods)]

mod common;

use common::http_crm::{Behave, HttpCrm, Req, Resp};
use pincoderouting::call::verdict::Pin;
use pincoderouting::crm::http::{HttpLookup, HttpLookupConfig};
use pincoderouting::crm::phone::lookup_number;
use pincoderouting::crm::CrmReply;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The PIN custom field of a person, as the CRM holds it.
#[derive(Clone, Debug)]
enum PinField {
    /// No such field on the record.
    Absent,
    /// The field, empty.
    Empty,
    Value(&'static str),
}

#[derive(Clone, Debug)]
struct Person {
    id: u32,
    first: &'static str,
    last: &'static str,
    /// As typed into the CRM.
    phones: Vec<&'static str>,
    pin: PinField,
}

/// How the fake answers API requests (token requests always work).
#[derive(Clone, Debug)]
enum Mode {
    Normal,
    /// The current token is revoked: the next API request gets 401.
    Revoke,
    /// Every API request gets 401.
    Refuse,
    /// The next `n` API requests get 429 with `Retry-After: secs`.
    RateLimit {
        n: u32,
        secs: u32,
    },
    /// Every API request waits this long.
    Slow(Duration),
}

/// A fake PSA: people, a token it issued, and what it was asked.
struct Fake {
    people: Vec<Person>,
    mode: Mutex<Mode>,
    token: Mutex<String>,
    tokens_issued: AtomicU32,
    /// Every number value an API search was made with.
    searched: Mutex<Vec<String>>,
}

impl Fake {
    fn new(people: Vec<Person>) -> Arc<Fake> {
        Arc::new(Fake {
            people,
            mode: Mutex::new(Mode::Normal),
            token: Mutex::new(String::new()),
            tokens_issued: AtomicU32::new(0),
            searched: Mutex::new(Vec::new()),
        })
    }

    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    fn issue_token(&self) -> String {
        let n = self.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
        let t = format!("tok-{n}");
        *self.token.lock().unwrap() = t.clone();
        t
    }

    fn bearer_ok(&self, r: &Req) -> bool {
        let t = self.token.lock().unwrap().clone();
        !t.is_empty() && r.header("authorization") == Some(&format!("Bearer {t}"))
    }

    /// What the mode does to an API request, before the route answers it.
    fn gate(&self, _r: &Req, authorized: bool) -> Option<Resp> {
        let mut m = self.mode.lock().unwrap();
        match &mut *m {
            Mode::Normal => {}
            Mode::Revoke => {
                *m = Mode::Normal;
                // Revoked: this token is no longer good.
                self.token.lock().unwrap().clear();
                return Some(Resp::status(401));
            }
            Mode::Refuse => return Some(Resp::status(401)),
            Mode::RateLimit { n, secs } => {
                if *n > 0 {
                    *n -= 1;
                    return Some(Resp {
                        status: 429,
                        headers: vec![("Retry-After".into(), secs.to_string())],
                        body: r#"{"status":"error","message":"rate limit"}"#.into(),
                        ..Default::default()
                    });
                }
            }
            Mode::Slow(d) => {
                return (!authorized).then(|| Resp::status(401)).or(Some(Resp {
                    delay: *d,
                    status: 0,
                    ..Default::default()
                }))
            }
        }
        (!authorized).then(|| Resp::status(401))
    }

    /// The people with a number stored exactly as `value` (an `eq` filter).
    fn with_phone(&self, value: &str) -> Vec<Person> {
        self.searched.lock().unwrap().push(value.to_string());
        self.people
            .iter()
            .filter(|p| p.phones.contains(&value))
            .cloned()
            .collect()
    }

    fn searched(&self) -> Vec<String> {
        self.searched.lock().unwrap().clone()
    }
}

/// Applies `gate`; a slow mode delays the route's answer instead of replacing it.
fn gated(fake: &Fake, r: &Req, authorized: bool, route: impl FnOnce() -> Resp) -> Resp {
    match fake.gate(r, authorized) {
        Some(Resp {
            status: 0, delay, ..
        }) => Resp { delay, ..route() },
        Some(refusal) => refusal,
        None => route(),
    }
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap();
                out.push(h);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn query(path: &str, key: &str) -> Option<String> {
    let q = path.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (pct_decode(k) == key).then(|| pct_decode(v))
    })
}

fn form(body: &str, key: &str) -> Option<String> {
    body.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (pct_decode(k) == key).then(|| pct_decode(v))
    })
}

fn basic(user: &str, pass: &str) -> String {
    // Base64 of user:pass, written out (no base64 crate in the tests).
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{pass}").into_bytes();
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

// ---------------------------------------------------------------- the vendors' shapes

/// ConnectWise PSA: GET /company/contacts?childConditions=communicationItems/value="…",
/// Basic companyId+publicKey:privateKey and a clientId header; an array of contacts with
/// communicationItems and customFields.
fn connectwise(fake: Arc<Fake>) -> Behave {
    Behave::Handle(Arc::new(move |r: &Req| {
        let authorized = r.header("authorization") == Some(&basic("acme+pub", "priv"))
            && r.header("clientid") == Some("cw-client-guid");
        gated(&fake, r, authorized, || {
            assert!(
                r.method == "GET" && r.path.starts_with("/company/contacts?"),
                "{}",
                r.path
            );
            let cond = query(&r.path, "childConditions").unwrap();
            let value = cond
                .strip_prefix("communicationItems/value=\"")
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_else(|| panic!("condition {cond}"));
            let list: Vec<Value> = fake
                .with_phone(value)
                .iter()
                .map(|p| {
                    let mut custom = vec![json!({"id": 3, "caption": "Customer Since",
                        "type": "Text", "entryMethod": "EntryField", "numberOfDecimals": 0,
                        "value": "2019"})];
                    match &p.pin {
                        PinField::Absent => {}
                        PinField::Empty => custom.push(json!({"id": 7, "caption": "Security PIN",
                            "type": "Text", "entryMethod": "EntryField", "numberOfDecimals": 0})),
                        PinField::Value(v) => custom.push(json!({"id": 7, "caption": "Security PIN",
                            "type": "Text", "entryMethod": "EntryField", "numberOfDecimals": 0,
                            "value": v})),
                    }
                    json!({
                        "id": p.id, "firstName": p.first, "lastName": p.last,
                        "company": {"id": 250, "identifier": "Acme", "name": "Acme Inc"},
                        "communicationItems": p.phones.iter().enumerate().map(|(i, ph)| json!({
                            "id": i, "type": {"id": 2, "name": "Direct"}, "value": ph,
                            "defaultFlag": i == 0, "communicationType": "Phone"})).collect::<Vec<_>>(),
                        "customFields": custom,
                    })
                })
                .collect();
            Resp::json(Value::Array(list).to_string())
        })
    }))
}

/// Autotask: POST /V1.0/Contacts/query with a JSON filter, headers ApiIntegrationCode,
/// UserName and Secret; {"items": […], "pageDetails": {…}} with userDefinedFields.
fn autotask(fake: Arc<Fake>) -> Behave {
    Behave::Handle(Arc::new(move |r: &Req| {
        let authorized = r.header("apiintegrationcode") == Some("AT-CODE")
            && r.header("username") == Some("api@acme.example")
            && r.header("secret") == Some("at-secret");
        gated(&fake, r, authorized, || {
            assert!(
                r.method == "POST" && r.path == "/V1.0/Contacts/query",
                "{}",
                r.path
            );
            let q: Value = serde_json::from_str(&r.body).unwrap();
            let filters = q["filter"].as_array().unwrap();
            assert!(filters.iter().any(|f| f["field"] == "isActive"));
            let or = filters.iter().find(|f| f["op"] == "or").unwrap();
            let value = or["items"][0]["value"].as_str().unwrap();
            let items: Vec<Value> = fake
                .with_phone(value)
                .iter()
                .map(|p| {
                    let mut udf = vec![json!({"name": "Preferred Contact Time", "value": "AM"})];
                    match &p.pin {
                        PinField::Absent => {}
                        PinField::Empty => udf.push(json!({"name": "Security PIN", "value": null})),
                        PinField::Value(v) => udf.push(json!({"name": "Security PIN", "value": v})),
                    }
                    json!({"id": p.id, "firstName": p.first, "lastName": p.last, "isActive": 1,
                        "companyID": 0, "phone": p.phones.first().copied().unwrap_or(""),
                        "mobilePhone": p.phones.get(1).copied().unwrap_or(""),
                        "alternatePhone": "", "userDefinedFields": udf})
                })
                .collect();
            let n = items.len();
            Resp::json(
                json!({"items": items, "pageDetails": {"count": n, "requestCount": 5,
                    "prevPageUrl": null, "nextPageUrl": null}})
                .to_string(),
            )
        })
    }))
}

/// Kaseya BMS: POST /v2/security/authenticate (form: GrantType, UserName, Password,
/// Tenant) for a bearer token; GET /v2/crm/contacts/summary?Filter.Phone=…;
/// {"Success": true, "Result": […], "TotalRecords": n} with Phones and CustomFieldsData.
fn kaseya_bms(fake: Arc<Fake>) -> Behave {
    Behave::Handle(Arc::new(move |r: &Req| {
        if r.path == "/v2/security/authenticate" {
            let ok = form(&r.body, "GrantType").as_deref() == Some("password")
                && form(&r.body, "UserName").as_deref() == Some("api-user")
                && form(&r.body, "Password").as_deref() == Some("bms-pass")
                && form(&r.body, "Tenant").as_deref() == Some("Acme MSP");
            if !ok {
                return Resp::json(
                    r#"{"Success":false,"Error":{"Code":401,"Message":"bad login"}}"#,
                )
                .with_status(401);
            }
            let t = fake.issue_token();
            return Resp::json(
                json!({"Success": true, "Error": null,
                    "Result": {"AccessToken": t, "RefreshToken": "r", "ExpiresIn": 3600}})
                .to_string(),
            );
        }
        let authorized = fake.bearer_ok(r);
        gated(&fake, r, authorized, || {
            assert!(
                r.path.starts_with("/v2/crm/contacts/summary?"),
                "{}",
                r.path
            );
            let value = query(&r.path, "Filter.Phone").unwrap();
            let result: Vec<Value> = fake
                .with_phone(&value)
                .iter()
                .map(|p| {
                    let mut cf = vec![json!({"Id": 1, "Name": "Contract Tier", "Data": "Gold",
                        "SettingsId": 1, "CustomFieldType": 1, "CustomFieldId": 11})];
                    match &p.pin {
                        PinField::Absent => {}
                        PinField::Empty => cf.push(json!({"Id": 2, "Name": "Security PIN", "Data": "",
                            "SettingsId": 1, "CustomFieldType": 1, "CustomFieldId": 12})),
                        PinField::Value(v) => cf.push(json!({"Id": 2, "Name": "Security PIN",
                            "Data": v, "SettingsId": 1, "CustomFieldType": 1, "CustomFieldId": 12})),
                    }
                    json!({"Id": p.id, "AccountId": 40, "AccountName": "Acme", "FirstName": p.first,
                        "LastName": p.last, "IsActive": true,
                        "Phones": p.phones.iter().map(|ph| json!({"Id": 1, "Phone": ph,
                            "PhoneTypeId": 1, "PhoneType": "Work", "IsDefault": true})).collect::<Vec<_>>(),
                        "CustomFieldsData": cf})
                })
                .collect();
            let n = result.len();
            Resp::json(
                json!({"Success": true, "Error": null, "Result": result, "TotalRecords": n})
                    .to_string(),
            )
        })
    }))
}

/// HaloPSA: POST /auth/token (client_credentials) for a bearer token;
/// GET /api/Users?search=…&search_phonenumbers=true → {"record_count", "users"};
/// GET /api/Users/{id} → the user with its customfields.
fn halopsa(fake: Arc<Fake>) -> Behave {
    Behave::Handle(Arc::new(move |r: &Req| {
        if r.path == "/auth/token" {
            let ok = form(&r.body, "grant_type").as_deref() == Some("client_credentials")
                && form(&r.body, "client_id").as_deref() == Some("halo-client")
                && form(&r.body, "client_secret").as_deref() == Some("halo-secret")
                && form(&r.body, "scope").as_deref() == Some("read:customers");
            if !ok {
                return Resp::json(r#"{"error":"invalid_client"}"#).with_status(400);
            }
            let t = fake.issue_token();
            return Resp::json(
                json!({"access_token": t, "token_type": "Bearer", "expires_in": 3600}).to_string(),
            );
        }
        let authorized = fake.bearer_ok(r);
        gated(&fake, r, authorized, || {
            if let Some(id) = r.path.strip_prefix("/api/Users/") {
                let p = fake
                    .people
                    .iter()
                    .find(|p| p.id.to_string() == id)
                    .expect("a user the search found");
                let mut cf = vec![
                    json!({"id": 150, "name": "CFContractRef", "label": "Contract Ref",
                    "type": 0, "value": "X-1", "display": "X-1"}),
                ];
                match &p.pin {
                    PinField::Absent => {}
                    PinField::Empty => cf.push(json!({"id": 151, "name": "CFSecurityPIN",
                        "label": "Security PIN", "type": 0, "value": "", "display": ""})),
                    PinField::Value(v) => cf.push(json!({"id": 151, "name": "CFSecurityPIN",
                        "label": "Security PIN", "type": 0, "value": v, "display": v})),
                }
                return Resp::json(
                    json!({"id": p.id, "name": format!("{} {}", p.first, p.last),
                        "phonenumber": p.phones.first(), "customfields": cf})
                    .to_string(),
                );
            }
            assert!(r.path.starts_with("/api/Users?"), "{}", r.path);
            assert_eq!(
                query(&r.path, "search_phonenumbers").as_deref(),
                Some("true")
            );
            let value = query(&r.path, "search").unwrap();
            let users: Vec<Value> = fake
                .with_phone(&value)
                .iter()
                .map(|p| {
                    json!({"id": p.id, "name": format!("{} {}", p.first, p.last),
                    "site_id": 12, "client_id": 4, "phonenumber": p.phones.first()})
                })
                .collect();
            Resp::json(json!({"record_count": users.len(), "users": users}).to_string())
        })
    }))
}

/// HubSpot: POST /crm/v3/objects/contacts/search (filterGroups ORed, properties asked by
/// name) with a private app's bearer token; {"total", "results": [{"id", "properties"}]}.
fn hubspot(fake: Arc<Fake>) -> Behave {
    Behave::Handle(Arc::new(move |r: &Req| {
        let authorized = r.header("authorization") == Some("Bearer pat-na1-test");
        gated(&fake, r, authorized, || {
            assert!(r.method == "POST" && r.path == "/crm/v3/objects/contacts/search");
            let q: Value = serde_json::from_str(&r.body).unwrap();
            let value = q["filterGroups"][0]["filters"][0]["value"]
                .as_str()
                .unwrap();
            assert_eq!(
                q["filterGroups"][1]["filters"][0]["propertyName"],
                "mobilephone"
            );
            let asked: Vec<&str> = q["properties"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            assert!(asked.contains(&"security_pin"), "{asked:?}");
            let results: Vec<Value> = fake
                .with_phone(value)
                .iter()
                .map(|p| {
                    let mut props = json!({"firstname": p.first, "lastname": p.last,
                        "phone": p.phones.first(), "mobilephone": p.phones.get(1),
                        "hs_object_id": p.id.to_string()});
                    match &p.pin {
                        PinField::Absent => {}
                        PinField::Empty => props["security_pin"] = Value::Null,
                        PinField::Value(v) => props["security_pin"] = json!(v),
                    }
                    json!({"id": p.id.to_string(), "properties": props,
                        "createdAt": "2024-01-01T00:00:00Z", "archived": false})
                })
                .collect();
            Resp::json(json!({"total": results.len(), "results": results}).to_string())
        })
    }))
}

trait WithStatus {
    fn with_status(self, s: u16) -> Resp;
}
impl WithStatus for Resp {
    fn with_status(mut self, s: u16) -> Resp {
        self.status = s;
        self
    }
}

// ---------------------------------------------------------------- the cases

/// One vendor: its fake, its configuration, the secrets in its environment, and the forms
/// its search finds numbers in.
struct Vendor {
    name: &'static str,
    behave: fn(Arc<Fake>) -> Behave,
    config: fn(&str) -> String,
    env: &'static [(&'static str, &'static str)],
    /// Three ways the vendor's users type +1 555 123 4567 that this preset's forms reach.
    stored: [&'static str; 3],
    /// Does it fetch a token (so a 401 is answered with a fresh one)?
    token: bool,
}

const VENDORS: [Vendor; 5] = [
    Vendor {
        name: "connectwise",
        behave: connectwise,
        config: |base| {
            format!(
                "preset = \"connectwise\"\nbase_url = \"{base}\"\npin_field = \"Security PIN\"\n"
            )
        },
        env: &[
            ("CW_COMPANY_ID", "acme"),
            ("CW_PUBLIC_KEY", "pub"),
            ("CW_PRIVATE_KEY", "priv"),
            ("CW_CLIENT_ID", "cw-client-guid"),
        ],
        stored: ["5551234567", "(555) 123-4567", "+15551234567"],
        token: false,
    },
    Vendor {
        name: "autotask",
        behave: autotask,
        config: |base| {
            format!("preset = \"autotask\"\nbase_url = \"{base}\"\npin_field = \"Security PIN\"\n")
        },
        env: &[
            ("AUTOTASK_INTEGRATION_CODE", "AT-CODE"),
            ("AUTOTASK_USERNAME", "api@acme.example"),
            ("AUTOTASK_SECRET", "at-secret"),
        ],
        stored: ["(555) 123-4567", "+1 555-123-4567", "15551234567"],
        token: false,
    },
    Vendor {
        name: "kaseya_bms",
        behave: kaseya_bms,
        config: |base| {
            format!(
                "preset = \"kaseya_bms\"\nbase_url = \"{base}\"\npin_field = \"Security PIN\"\n"
            )
        },
        env: &[
            ("BMS_USERNAME", "api-user"),
            ("BMS_PASSWORD", "bms-pass"),
            ("BMS_TENANT", "Acme MSP"),
        ],
        stored: ["5551234567", "(555) 123-4567", "15551234567"],
        token: true,
    },
    Vendor {
        name: "halopsa",
        behave: halopsa,
        config: |base| {
            format!("preset = \"halopsa\"\nbase_url = \"{base}\"\npin_field = \"Security PIN\"\n")
        },
        env: &[
            ("HALO_CLIENT_ID", "halo-client"),
            ("HALO_CLIENT_SECRET", "halo-secret"),
        ],
        stored: ["5551234567", "(555) 123-4567", "+15551234567"],
        token: true,
    },
    Vendor {
        name: "hubspot",
        behave: hubspot,
        config: |base| {
            format!("preset = \"hubspot\"\nbase_url = \"{base}\"\npin_field = \"security_pin\"\n")
        },
        env: &[("HUBSPOT_TOKEN", "pat-na1-test")],
        stored: ["+15551234567", "(555) 123-4567", "+1 555-123-4567"],
        token: false,
    },
];

fn people(v: &Vendor) -> Vec<Person> {
    let p = |id, first, last, phones: Vec<&'static str>, pin| Person {
        id,
        first,
        last,
        phones,
        pin,
    };
    vec![
        // The same caller's number as three different users typed it (three callers).
        p(
            101,
            "Ann",
            "Lee",
            vec![v.stored[0]],
            PinField::Value("2580"),
        ),
        p(
            102,
            "Bo",
            "Diaz",
            vec!["555-000-0001", v.stored[1].replace("4567", "4568").leak()],
            PinField::Value("2581"),
        ),
        p(
            103,
            "Cy",
            "Park",
            vec![v.stored[2].replace("4567", "4569").leak()],
            PinField::Value(" 2582 "),
        ),
        // Two contacts share a number.
        p(
            201,
            "Di",
            "One",
            vec![v.stored[0].replace("123", "777").leak()],
            PinField::Value("1111"),
        ),
        p(
            202,
            "Ed",
            "Two",
            vec![v.stored[0].replace("123", "777").leak()],
            PinField::Value("2222"),
        ),
        // Custom field missing, empty, not digits.
        p(
            301,
            "Fa",
            "Nofield",
            vec![v.stored[0].replace("123", "301").leak()],
            PinField::Absent,
        ),
        p(
            302,
            "Gu",
            "Empty",
            vec![v.stored[0].replace("123", "302").leak()],
            PinField::Empty,
        ),
        p(
            303,
            "Ha",
            "Letters",
            vec![v.stored[0].replace("123", "303").leak()],
            PinField::Value("12 34"),
        ),
    ]
}

fn adapter(v: &Vendor, crm: &HttpCrm, extra: &str) -> HttpLookup {
    let base = format!("http://{}", crm.addr);
    let cfg: HttpLookupConfig = toml::from_str(&format!(
        "{}timeout_ms = 3000\nretries = 2\n{extra}",
        (v.config)(&base)
    ))
    .unwrap_or_else(|e| panic!("{}: {e}", v.name));
    let env = |k: &str| {
        v.env
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, s)| s.to_string())
    };
    HttpLookup::new(cfg, &env).unwrap_or_else(|e| panic!("{}: {e}", v.name))
}

fn pin(s: &str) -> Pin {
    Pin::from_digits(s).unwrap()
}

async fn look(a: &HttpLookup, number: &str) -> CrmReply {
    a.lookup("acme", &lookup_number(number, "1")).await
}

fn found(v: &Vendor, r: CrmReply, id: &str, name: &str, p: &str) {
    match r {
        CrmReply::Found(c) => {
            assert_eq!(c.id, id, "{}", v.name);
            assert_eq!(c.name, name, "{}", v.name);
            assert!(c.pin.unwrap().matches(&pin(p)), "{}: PIN", v.name);
        }
        other => panic!("{}: expected {id}, got {other:?}", v.name),
    }
}

fn error_with(v: &Vendor, r: CrmReply, what: &str) {
    match r {
        CrmReply::Error(e) => {
            assert!(e.contains(what), "{}: {e}", v.name);
            for secret in [
                "2580",
                "1234",
                "priv",
                "at-secret",
                "bms-pass",
                "halo-secret",
                "pat-na1",
            ] {
                assert!(!e.contains(secret), "{}: {e}", v.name);
            }
        }
        other => panic!("{}: expected an error with {what:?}, got {other:?}", v.name),
    }
}

async fn vendor_cases(v: &Vendor) {
    let fake = Fake::new(people(v));
    let crm = HttpCrm::start((v.behave)(fake.clone()));
    let a = adapter(v, &crm, "");
    // Found, wherever the number was typed in whichever form; the caller's E.164.
    found(v, look(&a, "+15551234567").await, "101", "Ann Lee", "2580");
    found(v, look(&a, "+15551234568").await, "102", "Bo Diaz", "2581");
    // A PIN with spaces around it is the PIN.
    found(v, look(&a, "+15551234569").await, "103", "Cy Park", "2582");
    // The candidate forms were tried in order, each at most once.
    let s = fake.searched();
    assert!(s.len() >= 3, "{}: {s:?}", v.name);
    // Not found: every form tried, then unknown.
    let before = fake.searched().len();
    assert!(
        matches!(look(&a, "+15559990000").await, CrmReply::NotFound),
        "{}",
        v.name
    );
    let tried = fake.searched().len() - before;
    assert!((2..=5).contains(&tried), "{}: {tried} forms", v.name);
    // Several contacts with the number: ambiguous (a PIN cannot say which).
    let shared = lookup_number(v.stored[0].replace("123", "777").as_str(), "1");
    assert!(
        matches!(a.lookup("acme", &shared).await, CrmReply::Ambiguous),
        "{}",
        v.name
    );
    // The PIN field missing, empty or not digits: a data error, never a match.
    for (from, what) in [
        ("301", "PIN field"),
        ("302", "PIN field"),
        ("303", "not digits"),
    ] {
        let n = lookup_number(v.stored[0].replace("123", from).as_str(), "1");
        error_with(v, a.lookup("acme", &n).await, what);
    }
    // A revoked token: 401, a fresh token, the same answer. Static credentials: an error.
    fake.set(Mode::Revoke);
    let issued = fake.tokens_issued.load(Ordering::SeqCst);
    if v.token {
        found(v, look(&a, "+15551234567").await, "101", "Ann Lee", "2580");
        assert_eq!(
            fake.tokens_issued.load(Ordering::SeqCst),
            issued + 1,
            "{}",
            v.name
        );
        // Cached: the next lookup fetches no token.
        found(v, look(&a, "+15551234567").await, "101", "Ann Lee", "2580");
        assert_eq!(
            fake.tokens_issued.load(Ordering::SeqCst),
            issued + 1,
            "{}",
            v.name
        );
        // Refused for good: one fresh token, then the error.
        fake.set(Mode::Refuse);
        error_with(v, look(&a, "+15551234567").await, "HTTP 401");
        fake.set(Mode::Normal);
    } else {
        error_with(v, look(&a, "+15551234567").await, "HTTP 401");
    }
    // 429 with Retry-After: 1 s fits in the deadline: waited for, then answered.
    fake.set(Mode::RateLimit { n: 1, secs: 1 });
    let t = Instant::now();
    found(v, look(&a, "+15551234567").await, "101", "Ann Lee", "2580");
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{}: waited {:?}",
        v.name,
        t.elapsed()
    );
    // 429 asking for longer than the deadline: an error at once, not a wait.
    fake.set(Mode::RateLimit { n: 1, secs: 30 });
    let t = Instant::now();
    error_with(v, look(&a, "+15551234567").await, "429");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{}: {:?}",
        v.name,
        t.elapsed()
    );
    // Slower than the deadline: a timeout, on time.
    fake.set(Mode::Slow(Duration::from_secs(5)));
    let t = Instant::now();
    error_with(v, look(&a, "+15551234567").await, "timeout");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_millis(4000),
        "{}: {took:?}",
        v.name
    );
    fake.set(Mode::Normal);
    // A caller ID that is not a number is looked up as received, once.
    let before = fake.searched().len();
    assert!(matches!(
        a.lookup("acme", &lookup_number("101", "1")).await,
        CrmReply::NotFound
    ));
    let s = fake.searched();
    assert_eq!(s.get(before..).unwrap(), ["101"], "{}", v.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectwise_preset() {
    vendor_cases(&VENDORS[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autotask_preset() {
    vendor_cases(&VENDORS[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kaseya_bms_preset() {
    vendor_cases(&VENDORS[2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halopsa_preset() {
    vendor_cases(&VENDORS[3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_preset() {
    vendor_cases(&VENDORS[4]).await;
}

#[tokio::test]
async fn hashed_pins_in_the_crm_and_require_hashed_pin() {
    let h = pincoderouting::call::verdict::hash_pin(&pin("4444")).unwrap();
    let body = json!({"results": [{"id": "h1", "properties": {"phone": "+15551234567", "security_pin": h}}]}).to_string();
    let crm = HttpCrm::start(Behave::Json(body));
    let v = &VENDORS[4];
    let a = adapter(v, &crm, "");
    match look(&a, "+15551234567").await {
        CrmReply::Found(c) => assert!(c.pin.unwrap().matches(&pin("4444"))),
        other => panic!("{other:?}"),
    }
    crm.set(Behave::Json(
        json!({"results": [{"id": "p1", "properties": {"phone": "+15551234567", "security_pin": "4444"}}]}).to_string(),
    ));
    let strict = adapter(v, &crm, "require_hashed_pin = true\n");
    error_with(v, look(&strict, "+15551234567").await, "stored in clear");
}

#[tokio::test]
async fn secrets_never_in_clear_and_tokens_never_in_errors() {
    // A preset whose secret is not in the environment: refused at load, naming it.
    let v = &VENDORS[4];
    let cfg: HttpLookupConfig = toml::from_str(&(v.config)("http://127.0.0.1:9")).unwrap();
    let e = HttpLookup::new(cfg, &|_| None).unwrap_err();
    assert!(e.contains("HUBSPOT_TOKEN is not set"), "{e}");
    // A token endpoint that refuses the client: the lookup is an error, no secret in it.
    let fake = Fake::new(people(&VENDORS[3]));
    let crm = HttpCrm::start(halopsa(fake));
    let base = format!("http://{}", crm.addr);
    let cfg: HttpLookupConfig = toml::from_str(&(VENDORS[3].config)(&base)).unwrap();
    let env = |k: &str| match k {
        "HALO_CLIENT_ID" => Some("halo-client".to_string()),
        "HALO_CLIENT_SECRET" => Some("wrong-secret".to_string()),
        _ => None,
    };
    let a = HttpLookup::new(cfg, &env).unwrap();
    match look(&a, "+15551234567").await {
        CrmReply::Error(e) => {
            assert!(e.contains("token endpoint answered HTTP 400"), "{e}");
            assert!(!e.contains("wrong-secret"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // And the Debug of a loaded adapter shows no secret.
    let dbg = format!("{a:?}");
    assert!(
        !dbg.contains("wrong-secret") && !dbg.contains("halo-client\""),
        "{dbg}"
    );
}

/// A whole call through the real binary: SIPp calls from +15551234567 and types 1234#; the
/// service finds the caller in a HaloPSA (OAuth2 token, user search by the number as typed
/// there, the user record's custom field) and transfers to the success extension. Then an
/// internal extension (`101`) calls: looked up as received, unknown, failure extension.
#[test]
fn a_whole_call_is_verified_against_the_halopsa_preset() {
    use common::{free_udp_port, msg, repo, sipp_available, sipp_with_files, Service};
    assert!(
        sipp_available(),
        "sipp not found: apt-get install -y sip-tester (see .ci/run)"
    );
    let fake = Fake::new(vec![Person {
        id: 777,
        first: "Ann",
        last: "Lee",
        phones: vec!["(555) 123-4567"],
        pin: PinField::Value("1234"),
    }]);
    let crm = HttpCrm::start(halopsa(fake.clone()));
    // The client secret from a file only we can read.
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("halo_client_secret");
    std::fs::write(&secret, "halo-secret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tail = format!(
        "[audit]\nfile = \"audit.log\"\n[crm]\nkind = \"http_lookup\"\n[crm.http]\n\
         preset = \"halopsa\"\nbase_url = \"http://{}\"\npin_field = \"Security PIN\"\n\
         timeout_ms = 3000\n[crm.http.auth]\nkind = \"oauth2\"\n\
         token_url = \"{{base_url}}/auth/token\"\nclient_id = \"halo-client\"\n\
         client_secret = \"${{file:{}}}\"\nscope = \"read:customers\"\n",
        crm.addr,
        secret.display()
    );
    let svc = Service::launch_full("127.0.0.1", "info", "", "", "", &tail);
    for (caller, n) in [("+15551234567", 1), ("101", 2)] {
        let mp = free_udp_port().to_string();
        let out = sipp_with_files(
            "uac_pin_transfer.xml",
            svc.udp,
            &["-m", "1", "-mp", &mp, "-key", "caller", caller],
            &[(repo().join("scenarios/pcap/rfc4733_pin.pcap"), "dtmf.pcap")],
        );
        assert!(out.status.success(), "{caller}");
        svc.wait_for(Duration::from_secs(10), |l| {
            l.iter().filter(|e| msg(e) == "call ended").count() >= n
        });
    }
    let records: Vec<Value> = std::fs::read_to_string(svc.dir.join("audit.log"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "call")
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    let r = &records[0];
    assert_eq!(r["outcome"], "verified", "{r}");
    assert_eq!(r["contact_id"], "777", "{r}");
    assert_eq!(r["transfer_target"], "1001", "{r}");
    assert_eq!(r["caller_e164"], "+15551234567", "{r}");
    let r = &records[1];
    assert_eq!(r["outcome"], "unknown_caller", "{r}");
    assert_eq!(r["caller"], "101", "{r}");
    assert_eq!(r["caller_e164"], Value::Null, "{r}");
    assert_eq!(r["transfer_target"], "1002", "{r}");
    // Found as typed in Halo after the national form found nobody; the extension as sent.
    let searched = fake.searched();
    assert_eq!(
        searched,
        ["5551234567", "(555) 123-4567", "101"],
        "{searched:?}"
    );
    assert_eq!(
        fake.tokens_issued.load(Ordering::SeqCst),
        1,
        "the token is cached"
    );
    // Never the PIN or the secret in the log.
    let log = svc.raw_log();
    assert!(
        !log.contains("1234\"") && !log.contains("halo-secret"),
        "{log}"
    );
}

/// Every other preset too: a whole SIPp call from +15551234567 typing 1234#, the caller found
/// in the vendor's fake (the number stored as people type it there, the PIN in the vendor's
/// custom field), verified, transferred to the success extension. One thread per vendor.
#[test]
fn a_whole_call_is_verified_against_each_other_preset() {
    use common::{free_udp_port, msg, repo, sipp_available, sipp_with_files, Service};
    assert!(
        sipp_available(),
        "sipp not found: apt-get install -y sip-tester (see .ci/run)"
    );
    // The presets read their secrets from the environment; the names are the vendors'.
    for v in VENDORS.iter() {
        for (k, val) in v.env {
            std::env::set_var(k, val);
        }
    }
    let runs: Vec<_> = VENDORS
        .iter()
        .filter(|v| v.name != "halopsa")
        .map(|v| {
            std::thread::spawn(move || {
                let fake = Fake::new(vec![Person {
                    id: 4242,
                    first: "Ann",
                    last: "Lee",
                    phones: vec![v.stored[1]],
                    pin: PinField::Value("1234"),
                }]);
                let crm = HttpCrm::start((v.behave)(fake));
                let tail = format!(
                    "[audit]\nfile = \"audit.log\"\n[crm]\nkind = \"http_lookup\"\n[crm.http]\n\
                     {}timeout_ms = 3000\n",
                    (v.config)(&format!("http://{}", crm.addr))
                );
                let svc = Service::launch_full("127.0.0.1", "info", "", "", "", &tail);
                let mp = free_udp_port().to_string();
                let out = sipp_with_files(
                    "uac_pin_transfer.xml",
                    svc.udp,
                    &["-m", "1", "-mp", &mp, "-key", "caller", "+15551234567"],
                    &[(repo().join("scenarios/pcap/rfc4733_pin.pcap"), "dtmf.pcap")],
                );
                assert!(out.status.success(), "{}: SIPp call", v.name);
                svc.wait_for(Duration::from_secs(10), |l| {
                    l.iter().any(|e| msg(e) == "call ended")
                });
                let r = svc.audit_calls().pop().expect("a record");
                assert_eq!(r["outcome"], "verified", "{}: {r}", v.name);
                assert_eq!(r["contact_id"], "4242", "{}: {r}", v.name);
                assert_eq!(r["transfer_target"], "1001", "{}: {r}", v.name);
                let log = svc.raw_log();
                for (_, secret) in v.env {
                    assert!(!log.contains(secret), "{}: a secret in the log", v.name);
                }
            })
        })
        .collect();
    for r in runs {
        r.join().unwrap();
    }
}
