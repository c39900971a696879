//! The HTTP lookup adapter against a real HTTP server standing in for the CRM.

mod common;

use common::http_crm::{Behave, HttpCrm};
use pincoderouting::crm::http::{HttpLookup, HttpLookupConfig};
use pincoderouting::crm::phone::{lookup_number, LookupNumber};
use pincoderouting::crm::CrmReply;

fn n(s: &str) -> LookupNumber {
    lookup_number(s, "1")
}

const ONE: &str = r#"{"results":[{"id":"crm-7","pin":"2580"}]}"#;

fn adapter(url: &str, extra: &str) -> HttpLookup {
    let cfg: HttpLookupConfig = toml::from_str(&format!(
        "url = \"{url}\"\ncontacts_pointer = \"/results\"\ntimeout_ms = 800\nretries = 2\n\
         headers = {{ Authorization = \"Bearer ${{TEST_CRM_TOKEN}}\", X-Tenant = \"acme\" }}\n{extra}"
    ))
    .unwrap();
    let env = |k: &str| (k == "TEST_CRM_TOKEN").then(|| "tok-123".to_string());
    HttpLookup::new(cfg, &env).unwrap()
}

#[tokio::test]
async fn found_with_encoded_phone_and_secret_header() {
    let crm = HttpCrm::start(Behave::Json(ONE.into()));
    let a = adapter(&crm.url(), "");
    match a.lookup("acme", &n("+15551234567")).await {
        CrmReply::Found(c) => assert_eq!(c.id, "crm-7"),
        other => panic!("{other:?}"),
    }
    let reqs = crm.requests();
    assert_eq!(reqs[0].0, "/contacts?phone=%2B15551234567&org=acme");
    let h = &reqs[0].1;
    assert!(h.contains(&("authorization".into(), "Bearer tok-123".into())));
    assert!(h.contains(&("x-tenant".into(), "acme".into())));
    // Connection reuse: a second lookup goes over the same connection (same server).
    let _ = a.lookup("acme", &n("+15551234567")).await;
    assert_eq!(crm.requests().len(), 2);
}

#[tokio::test]
async fn every_failure_has_a_clear_outcome() {
    let crm = HttpCrm::start(Behave::Status(404));
    let a = adapter(&crm.url(), "");
    assert!(matches!(
        a.lookup("acme", &n("+1555")).await,
        CrmReply::NotFound
    ));
    for (b, want) in [
        (Behave::Status(401), "HTTP 401"),
        (Behave::Status(503), "HTTP 503"),
        (Behave::Json("{oops".into()), "bad JSON"),
        (
            Behave::Json(r#"{"results":[{"id":"x"}]}"#.into()),
            "PIN field missing",
        ),
        (Behave::Hang, "timeout"),
    ] {
        crm.set(b.clone());
        match a.lookup("acme", &n("+15551234567")).await {
            CrmReply::Error(e) => assert!(e.contains(want), "{b:?}: {e}"),
            other => panic!("{b:?}: {other:?}"),
        }
    }
    // 5xx is retried (the lookup is idempotent): two failures then success.
    crm.set(Behave::FailThen(2, ONE.into()));
    assert!(matches!(
        a.lookup("acme", &n("+15551234567")).await,
        CrmReply::Found(_)
    ));
    // Nobody listening.
    let refused = adapter("http://127.0.0.1:9/c?phone={phone}", "");
    match refused.lookup("acme", &n("+15551234567")).await {
        CrmReply::Error(e) => assert!(e.contains("refused") || e.contains("unreachable"), "{e}"),
        other => panic!("{other:?}"),
    }
}
