//! Ready-made lookups for the PSAs/CRMs our users keep their clients in, written from each
//! vendor's public API documentation (README "CRM presets" lists the pages and the one-time
//! set-up on the CRM side). A preset fills in whatever `[crm.http]` leaves out: the URL (and
//! body) template, the candidate number forms, the selectors, the auth scheme with the
//! environment variables its secrets are read from. The organization gives `base_url`
//! where the API root is per tenant, and `pin_field`: the name of the custom field that
//! holds the PIN.

use super::auth::{AuthConfig, AuthKind};
use super::http::HttpLookupConfig;
use super::phone::Form;
use serde::Deserialize;

/// `preset = "…"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// ConnectWise PSA (Manage) REST API 3.0: company/contacts, a contact custom field.
    Connectwise,
    /// Autotask (Datto/Kaseya) REST API: Contacts/query, a contact user-defined field.
    Autotask,
    /// Kaseya BMS API v2: crm/contacts, a contact custom field.
    KaseyaBms,
    /// HaloPSA API: Users (end users), a user custom field.
    Halopsa,
    /// HubSpot CRM API v3: contacts search, a contact property.
    Hubspot,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Connectwise => "connectwise",
            Preset::Autotask => "autotask",
            Preset::KaseyaBms => "kaseya_bms",
            Preset::Halopsa => "halopsa",
            Preset::Hubspot => "hubspot",
        }
    }
}

fn set<T>(slot: &mut Option<T>, v: T) {
    if slot.is_none() {
        *slot = Some(v);
    }
}

fn set_str(slot: &mut String, v: &str) {
    if slot.is_empty() {
        *slot = v.to_string();
    }
}

fn set_list<T: Clone>(slot: &mut Vec<T>, v: &[T]) {
    if slot.is_empty() {
        *slot = v.to_vec();
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn header(c: &mut HttpLookupConfig, name: &str, value: &str) {
    if !c.headers.keys().any(|k| k.eq_ignore_ascii_case(name)) {
        c.headers.insert(name.to_string(), value.to_string());
    }
}

/// Fills in what the configuration leaves out. `base_url` and `pin_field` must be given
/// where the preset needs them.
pub fn apply(p: Preset, c: &mut HttpLookupConfig) -> Result<(), String> {
    let name = p.name();
    if c.pin_field.as_deref().unwrap_or("").is_empty() {
        return Err(format!(
            "pin_field: preset {name} needs the name of the field that holds the PIN"
        ));
    }
    match p {
        Preset::Connectwise => {
            // https://<region>.myconnectwise.net/<codebase>/apis/3.0 (cloud) or an on-premise
            // host: it is per tenant.
            if c.base_url.is_none() {
                return Err("base_url: preset connectwise needs the API root, e.g. \
                     https://api-na.myconnectwise.net/v4_6_release/apis/3.0"
                    .into());
            }
            // Contacts whose communication items (phone, mobile, …) hold the number, as
            // typed; the contact record carries its customFields.
            set_str(
                &mut c.url,
                "{base_url}/company/contacts?childConditions=communicationItems%2Fvalue%3D%22{number}%22&pageSize=5",
            );
            set_list(
                &mut c.forms,
                &[Form::National, Form::Formatted, Form::Digits, Form::E164],
            );
            set(&mut c.contacts_pointer, String::new());
            set(&mut c.id_pointer, "/id".into());
            set_list(&mut c.name_pointers, &strings(&["/firstName", "/lastName"]));
            set_list(
                &mut c.phone_pointers,
                &strings(&["$.communicationItems[*].value"]),
            );
            set(
                &mut c.pin_pointer,
                "$.customFields[?@.caption == {pin_field}].value".into(),
            );
            // API member keys: Basic "companyId+publicKey" : privateKey, and the clientId
            // of the integration on every request.
            header(c, "clientId", "${CW_CLIENT_ID}");
            set(
                &mut c.auth,
                AuthConfig {
                    kind: AuthKind::Basic,
                    username: Some("${CW_COMPANY_ID}+${CW_PUBLIC_KEY}".into()),
                    password: Some("${CW_PRIVATE_KEY}".into()),
                    ..Default::default()
                },
            );
        }
        Preset::Autotask => {
            // https://webservicesN.autotask.net/ATServicesRest (the API user's zone).
            if c.base_url.is_none() {
                return Err(
                    "base_url: preset autotask needs the zone's REST root, e.g. \
                     https://webservices5.autotask.net/ATServicesRest"
                        .into(),
                );
            }
            set_str(&mut c.url, "{base_url}/V1.0/Contacts/query");
            set(&mut c.method, "POST".into());
            // Active contacts whose phone, mobile or alternate phone is this form of the
            // number (Autotask keeps them as typed).
            set(
                &mut c.body,
                r#"{"MaxRecords": 5, "filter": [
  {"op": "eq", "field": "isActive", "value": 1},
  {"op": "or", "items": [
    {"op": "eq", "field": "phone", "value": "{number}"},
    {"op": "eq", "field": "mobilePhone", "value": "{number}"},
    {"op": "eq", "field": "alternatePhone", "value": "{number}"}]}]}"#
                    .into(),
            );
            set_list(
                &mut c.forms,
                &[
                    Form::Formatted,
                    Form::National,
                    Form::E164,
                    Form::International,
                    Form::Digits,
                ],
            );
            set(&mut c.contacts_pointer, "/items".into());
            set(&mut c.id_pointer, "/id".into());
            set_list(&mut c.name_pointers, &strings(&["/firstName", "/lastName"]));
            set_list(
                &mut c.phone_pointers,
                &strings(&["/phone", "/mobilePhone", "/alternatePhone"]),
            );
            set(
                &mut c.pin_pointer,
                "$.userDefinedFields[?@.name == {pin_field}].value".into(),
            );
            // The API-only user's three headers.
            header(c, "ApiIntegrationCode", "${AUTOTASK_INTEGRATION_CODE}");
            header(c, "UserName", "${AUTOTASK_USERNAME}");
            header(c, "Secret", "${AUTOTASK_SECRET}");
        }
        Preset::KaseyaBms => {
            // api.bms.kaseya.com (US), api.bmsemea.kaseya.com, api.bmsapac.kaseya.com.
            set(&mut c.base_url, "https://api.bms.kaseya.com".into());
            set_str(
                &mut c.url,
                "{base_url}/v2/crm/contacts/summary?Filter.Phone={number}&Filter.IsActive=true&PageSize=5",
            );
            set_list(
                &mut c.forms,
                &[Form::National, Form::Formatted, Form::E164, Form::Digits],
            );
            set(&mut c.contacts_pointer, "/Result".into());
            set(&mut c.id_pointer, "/Id".into());
            set_list(&mut c.name_pointers, &strings(&["/FirstName", "/LastName"]));
            set_list(&mut c.phone_pointers, &strings(&["$.Phones[*].Phone"]));
            set(
                &mut c.pin_pointer,
                "$.CustomFieldsData[?@.Name == {pin_field}].Data".into(),
            );
            // A token from the API user's login, renewed on expiry or on a 401.
            set(
                &mut c.auth,
                AuthConfig {
                    kind: AuthKind::Token,
                    token_url: Some("{base_url}/v2/security/authenticate".into()),
                    params: [
                        ("GrantType", "password"),
                        ("UserName", "${BMS_USERNAME}"),
                        ("Password", "${BMS_PASSWORD}"),
                        ("Tenant", "${BMS_TENANT}"),
                    ]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                    token_paths: strings(&[
                        "/Result/AccessToken",
                        "/result/accessToken",
                        "/access_token",
                    ]),
                    expires_paths: strings(&[
                        "/Result/ExpiresIn",
                        "/result/expiresIn",
                        "/expires_in",
                    ]),
                    ..Default::default()
                },
            );
        }
        Preset::Halopsa => {
            // https://<tenant>.halopsa.com (resource server /api, authorisation server /auth).
            if c.base_url.is_none() {
                return Err(
                    "base_url: preset halopsa needs the instance, e.g. https://acme.halopsa.com"
                        .into(),
                );
            }
            // End users whose phone numbers contain this form; the user record (second
            // request) carries the custom fields.
            set_str(
                &mut c.url,
                "{base_url}/api/Users?search={number}&search_phonenumbers=true&count=5",
            );
            set_list(&mut c.forms, &[Form::National, Form::Formatted, Form::E164]);
            set(&mut c.contacts_pointer, "/users".into());
            set(&mut c.id_pointer, "/id".into());
            set_list(&mut c.name_pointers, &strings(&["/name"]));
            set(&mut c.detail_url, "{base_url}/api/Users/{id}".into());
            set(
                &mut c.pin_pointer,
                "$.customfields[?@.name == {pin_field} || @.label == {pin_field}].value".into(),
            );
            set(
                &mut c.auth,
                AuthConfig {
                    kind: AuthKind::Oauth2,
                    token_url: Some("{base_url}/auth/token".into()),
                    client_id: Some("${HALO_CLIENT_ID}".into()),
                    client_secret: Some("${HALO_CLIENT_SECRET}".into()),
                    scope: Some("read:customers".into()),
                    ..Default::default()
                },
            );
        }
        Preset::Hubspot => {
            set(&mut c.base_url, "https://api.hubapi.com".into());
            set_str(&mut c.url, "{base_url}/crm/v3/objects/contacts/search");
            set(&mut c.method, "POST".into());
            // Contacts whose phone or mobile phone is this form (filter groups are ORed);
            // the PIN property is asked for by name.
            set(
                &mut c.body,
                r#"{"filterGroups": [
  {"filters": [{"propertyName": "phone", "operator": "EQ", "value": "{number}"}]},
  {"filters": [{"propertyName": "mobilephone", "operator": "EQ", "value": "{number}"}]}],
 "properties": ["firstname", "lastname", "phone", "mobilephone", "{pin_field}"],
 "limit": 5}"#
                    .into(),
            );
            set_list(
                &mut c.forms,
                &[
                    Form::E164,
                    Form::Formatted,
                    Form::National,
                    Form::International,
                    Form::Digits,
                ],
            );
            set(&mut c.contacts_pointer, "/results".into());
            set(&mut c.id_pointer, "/id".into());
            set_list(
                &mut c.name_pointers,
                &strings(&["/properties/firstname", "/properties/lastname"]),
            );
            set_list(
                &mut c.phone_pointers,
                &strings(&["/properties/phone", "/properties/mobilephone"]),
            );
            set(&mut c.pin_pointer, "$.properties[{pin_field}]".into());
            // A private app's access token.
            header(c, "Authorization", "Bearer ${HUBSPOT_TOKEN}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_resolves_and_names_what_it_lacks() {
        for (p, base) in [
            (
                "connectwise",
                "base_url = \"https://cw.example/v4_6_release/apis/3.0\"\n",
            ),
            (
                "autotask",
                "base_url = \"https://webservices5.autotask.net/ATServicesRest\"\n",
            ),
            ("kaseya_bms", ""),
            ("halopsa", "base_url = \"https://acme.halopsa.com\"\n"),
            ("hubspot", ""),
        ] {
            let text = format!("preset = \"{p}\"\npin_field = \"Security PIN\"\n{base}");
            let cfg: HttpLookupConfig = toml::from_str(&text).unwrap();
            let s = cfg.resolve().unwrap_or_else(|e| panic!("{p}: {e}"));
            assert!(!s.url.contains("{base_url}"), "{p}: {}", s.url);
            assert!(
                s.pin.to_string().contains("'Security PIN'") || p == "x",
                "{p}: {}",
                s.pin
            );
            let no_field: HttpLookupConfig =
                toml::from_str(&format!("preset = \"{p}\"\n{base}")).unwrap();
            assert!(
                no_field.resolve().unwrap_err().starts_with("pin_field:"),
                "{p}"
            );
            if !base.is_empty() {
                let no_base: HttpLookupConfig =
                    toml::from_str(&format!("preset = \"{p}\"\npin_field = \"P\"\n")).unwrap();
                assert!(
                    no_base.resolve().unwrap_err().starts_with("base_url:"),
                    "{p}"
                );
            }
        }
        // What the organization writes wins over the preset.
        let cfg: HttpLookupConfig = toml::from_str(
            "preset = \"hubspot\"\npin_field = \"support_pin\"\nforms = [\"national\"]\ntimeout_ms = 5000\n",
        )
        .unwrap();
        let s = cfg.resolve().unwrap();
        assert_eq!(s.forms, vec![Form::National]);
        assert_eq!(s.timeout.as_millis(), 5000);
        assert_eq!(s.pin_field, "support_pin");
        assert!(s.body.unwrap().contains("{pin_field}"));
    }
}
