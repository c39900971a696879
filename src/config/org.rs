//! Organizations (tenants): which calls belong to one, and its PIN-routing settings.

use crate::media::dtmf::DtmfMode;
use crate::sip::msg::{Message, NameAddr, Uri};
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

/// An address block, `192.0.2.0/24` or `2001:db8::/32` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not an address block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{s}': prefix must be 0..={max}"))?,
            None => max,
        };
        Ok(Cidr { net, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// What happens to a caller whose number is withheld.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AnonymousPolicy {
    /// Straight to the failure extension, without asking for a PIN.
    #[default]
    Fail,
    /// Ask for the PIN anyway (it can only fail: there is no contact to check against).
    Ask,
}

/// Where the caller's identity is read from, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentitySource {
    /// P-Asserted-Identity (RFC 3325), only from a trusted source address.
    Pai,
    /// Remote-Party-ID.
    Rpid,
    From,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOrganization {
    name: String,
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    match_user: Vec<String>,
    #[serde(default)]
    match_to_user: Vec<String>,
    #[serde(default)]
    match_header: Option<HeaderMatch>,
    #[serde(default)]
    match_source: Vec<String>,
    #[serde(default)]
    allow: Vec<String>,
    pbx_host: String,
    pin_success_ext: String,
    pin_failed_ext: String,
    #[serde(default = "d_refer_to")]
    refer_to: String,
    #[serde(default = "d_true")]
    refer_to_result_header: bool,
    #[serde(default = "d_result_in")]
    pin_result_in: Vec<ResultCarrier>,
    #[serde(default = "d_true")]
    announce_verdict: bool,
    #[serde(default = "d_true")]
    announce_transfer: bool,
    #[serde(default = "d_min")]
    min_digits: usize,
    #[serde(default = "d_max")]
    max_digits: usize,
    #[serde(default = "d_terminator")]
    terminator: String,
    #[serde(default = "d_clear")]
    clear_key: String,
    #[serde(default = "d_first")]
    first_digit_timeout_secs: u64,
    #[serde(default = "d_inter")]
    inter_digit_timeout_secs: u64,
    #[serde(default = "d_attempts")]
    max_attempts: u32,
    #[serde(default)]
    dtmf_mode: Option<DtmfMode>,
    #[serde(default = "d_cc")]
    country_code: String,
    #[serde(default)]
    anonymous: AnonymousPolicy,
    #[serde(default = "d_order")]
    caller_id_order: Vec<IdentitySource>,
    #[serde(default)]
    trusted_sources: Vec<String>,
    #[serde(default = "d_transfer")]
    transfer_timeout_secs: u64,
    #[serde(default)]
    transfer_fallback: String,
    #[serde(default)]
    prompts_dir: String,
    #[serde(default)]
    crm: String,
}

fn d_refer_to() -> String {
    "sip:{ext}@{pbx_host}".into()
}
fn d_true() -> bool {
    true
}
fn d_result_in() -> Vec<ResultCarrier> {
    vec![ResultCarrier::ReferTo, ResultCarrier::ReferHeader]
}
fn d_min() -> usize {
    4
}
fn d_max() -> usize {
    8
}
fn d_terminator() -> String {
    "#".into()
}
fn d_clear() -> String {
    "*".into()
}
fn d_first() -> u64 {
    10
}
fn d_inter() -> u64 {
    // Not 5: Linphone over UDP sends SIP INFO keys ~5 s apart (each INFO waits for the
    // previous transaction's Timer K), so a 5 s gap would cut every PIN it sends.
    8
}
fn d_attempts() -> u32 {
    3
}
fn d_cc() -> String {
    "1".into()
}
fn d_order() -> Vec<IdentitySource> {
    vec![
        IdentitySource::Pai,
        IdentitySource::Rpid,
        IdentitySource::From,
    ]
}
fn d_transfer() -> u64 {
    30
}

/// Where the PIN result is put for the PBX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultCarrier {
    /// `?X-PIN-Result=...` URI headers in the Refer-To.
    ReferTo,
    /// `X-PIN-Result:` header fields on the REFER request.
    ReferHeader,
}

/// One organization's validated settings.
#[derive(Debug, Clone)]
pub struct Organization {
    pub name: String,
    /// The feature is activated for this organization.
    pub enabled: bool,
    pub match_user: Vec<String>,
    pub match_to_user: Vec<String>,
    pub match_header: Option<HeaderMatch>,
    pub match_source: Vec<Cidr>,
    /// Sources this organization's calls may come from (on top of `[sip] allow`); empty:
    /// whatever `[sip] allow` lets in.
    pub allow: Vec<Cidr>,
    pub pbx_host: String,
    pub pin_success_ext: String,
    pub pin_failed_ext: String,
    /// Refer-To template with `{ext}` and `{pbx_host}`.
    pub refer_to: String,
    /// Tell the PBX the result (`X-PIN-Result`, and `X-PIN-Contact` when verified);
    /// false: say nothing.
    pub refer_to_result_header: bool,
    /// Where the result goes: URI headers of the Refer-To (a PBX that copies them into
    /// the transferred call's INVITE, e.g. baresip, FreeSWITCH), headers on the REFER
    /// itself (a PBX that drops Refer-To's headers, e.g. Asterisk, reads them there), or
    /// both.
    pub pin_result_in: Vec<ResultCarrier>,
    /// Say the verdict ("verified", "locked out", the CRM error prompt) during the transfer.
    pub announce_verdict: bool,
    /// Say "transferring" during the transfer.
    pub announce_transfer: bool,
    pub min_digits: usize,
    pub max_digits: usize,
    pub terminator: Option<char>,
    pub clear_key: Option<char>,
    pub first_digit_timeout: Duration,
    pub inter_digit_timeout: Duration,
    pub max_attempts: u32,
    pub dtmf_mode: Option<DtmfMode>,
    /// Default country code for E.164 normalization, digits only ("1").
    pub country_code: String,
    pub anonymous: AnonymousPolicy,
    pub caller_id_order: Vec<IdentitySource>,
    /// Sources whose P-Asserted-Identity is believed.
    pub trusted_sources: Vec<Cidr>,
    pub transfer_timeout: Duration,
    /// Where to send the caller when a transfer fails (a full SIP URI), else hang up.
    pub transfer_fallback: Option<String>,
    /// This organization's own prompts (its wording, or its language), relative to the
    /// config file; any prompt missing there comes from the service's set.
    pub prompts_dir: Option<std::path::PathBuf>,
    /// The name of this organization's CRM (`[crms.NAME]`); empty = the `[crm]` one.
    pub crm: String,
}

fn key(s: &str, what: &str) -> Result<Option<char>, String> {
    let mut it = s.chars();
    match (it.next(), it.next()) {
        (None, _) => Ok(None),
        (Some(c), None) if "0123456789*#ABCDabcd".contains(c) => Ok(Some(c.to_ascii_uppercase())),
        _ => Err(format!("{what} must be one DTMF key or empty")),
    }
}

impl Organization {
    pub(super) fn from_raw(r: RawOrganization) -> Result<Organization, (String, String)> {
        let bad = |k: &str, m: String| (k.to_string(), format!("organization '{}': {m}", r.name));
        if r.name.is_empty() {
            return Err(("name".into(), "organization name is empty".into()));
        }
        for (k, v) in [
            ("pbx_host", &r.pbx_host),
            ("pin_success_ext", &r.pin_success_ext),
            ("pin_failed_ext", &r.pin_failed_ext),
        ] {
            if v.is_empty() || v.contains(|c: char| c.is_whitespace() || "<>\"".contains(c)) {
                return Err(bad(k, format!("{k} must be a non-empty SIP token")));
            }
        }
        if !r.refer_to.contains("{ext}") {
            return Err(bad("refer_to", "refer_to must contain {ext}".into()));
        }
        if r.min_digits == 0 || r.max_digits < r.min_digits || r.max_digits > 32 {
            return Err(bad(
                "min_digits",
                "need 1 <= min_digits <= max_digits <= 32".into(),
            ));
        }
        if r.max_attempts == 0 || r.max_attempts > 10 {
            return Err(bad("max_attempts", "must be 1..=10".into()));
        }
        if r.first_digit_timeout_secs == 0 || r.inter_digit_timeout_secs == 0 {
            return Err(bad(
                "first_digit_timeout_secs",
                "timeouts must be at least 1 s".into(),
            ));
        }
        if !r.country_code.chars().all(|c| c.is_ascii_digit()) || r.country_code.is_empty() {
            return Err(bad(
                "country_code",
                "country_code is digits, e.g. \"1\"".into(),
            ));
        }
        if !crate::crm::phone::known_country_code(&r.country_code) {
            return Err(bad(
                "country_code",
                format!("{} is not a country calling code", r.country_code),
            ));
        }
        let terminator = key(&r.terminator, "terminator").map_err(|m| bad("terminator", m))?;
        let clear_key = key(&r.clear_key, "clear_key").map_err(|m| bad("clear_key", m))?;
        if terminator.is_some() && terminator == clear_key {
            return Err(bad(
                "clear_key",
                "clear_key and terminator must differ".into(),
            ));
        }
        let transfer_fallback = match r.transfer_fallback.as_str() {
            "" => None,
            f if f.starts_with("sip:") || f.starts_with("sips:") || f.starts_with("tel:") => {
                Some(f.to_string())
            }
            _ => {
                return Err(bad(
                    "transfer_fallback",
                    "must be a sip:, sips: or tel: URI".into(),
                ))
            }
        };
        let cidrs = |k: &str, v: &[String]| {
            v.iter()
                .map(|c| c.parse::<Cidr>().map_err(|m| bad(k, m)))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Organization {
            match_source: cidrs("match_source", &r.match_source)?,
            allow: cidrs("allow", &r.allow)?,
            trusted_sources: cidrs("trusted_sources", &r.trusted_sources)?,
            name: r.name,
            enabled: r.enabled,
            match_user: r.match_user,
            match_to_user: r.match_to_user,
            match_header: r.match_header,
            pbx_host: r.pbx_host,
            pin_success_ext: r.pin_success_ext,
            pin_failed_ext: r.pin_failed_ext,
            refer_to: r.refer_to,
            refer_to_result_header: r.refer_to_result_header,
            pin_result_in: r.pin_result_in,
            announce_verdict: r.announce_verdict,
            announce_transfer: r.announce_transfer,
            min_digits: r.min_digits,
            max_digits: r.max_digits,
            terminator,
            clear_key,
            first_digit_timeout: Duration::from_secs(r.first_digit_timeout_secs),
            inter_digit_timeout: Duration::from_secs(r.inter_digit_timeout_secs),
            max_attempts: r.max_attempts,
            dtmf_mode: r.dtmf_mode,
            country_code: r.country_code,
            anonymous: r.anonymous,
            caller_id_order: r.caller_id_order,
            transfer_timeout: Duration::from_secs(r.transfer_timeout_secs),
            transfer_fallback,
            prompts_dir: (!r.prompts_dir.is_empty()).then(|| r.prompts_dir.into()),
            crm: r.crm,
        })
    }

    /// Does this INVITE from `src` belong here? Every criterion the organization sets must
    /// hold; one that sets none matches nothing (it can still be the default).
    /// May this organization's calls come from `src` (its `allow`; empty: anyone that
    /// `[sip] allow` lets in)?
    pub fn allows(&self, src: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(src))
    }

    pub fn matches(&self, invite: &Message, src: IpAddr) -> bool {
        let mut any = false;
        if !self.match_user.is_empty() {
            any = true;
            let user = invite.start.clone().request_user();
            if !user.is_some_and(|u| self.match_user.iter().any(|m| m.eq_ignore_ascii_case(&u))) {
                return false;
            }
        }
        if !self.match_to_user.is_empty() {
            any = true;
            let user = invite
                .header("To")
                .and_then(NameAddr::parse)
                .and_then(|n| Uri::parse(&n.uri))
                .and_then(|u| u.user);
            if !user.is_some_and(|u| {
                self.match_to_user
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(&u))
            }) {
                return false;
            }
        }
        if let Some(h) = &self.match_header {
            any = true;
            if invite.header(&h.name).map(str::trim) != Some(h.value.as_str()) {
                return false;
            }
        }
        if !self.match_source.is_empty() {
            any = true;
            if !self.match_source.iter().any(|c| c.contains(src)) {
                return false;
            }
        }
        any
    }

    /// The Refer-To URI for an extension.
    pub fn refer_uri(&self, ext: &str) -> String {
        self.refer_to
            .replace("{ext}", ext)
            .replace("{pbx_host}", &self.pbx_host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let c: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(c.contains("192.0.2.77".parse().unwrap()));
        assert!(c.contains("::ffff:192.0.2.1".parse().unwrap()));
        assert!(!c.contains("192.0.3.1".parse().unwrap()));
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!c.contains("10.0.0.1".parse().unwrap()));
        let one: Cidr = "10.1.2.3".parse().unwrap();
        assert!(one.contains("10.1.2.3".parse().unwrap()));
        assert!(!one.contains("10.1.2.4".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope/8".parse::<Cidr>().is_err());
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
    }
}
