//! Configuration: a pure `parse(&str) -> Result<Config, ConfigError>` with line numbers,
//! then semantic validation. Nothing here touches the file system except `load`.

pub mod org;

use crate::crm::file::ContactDirectory;
pub use org::{Cidr, Organization};

use crate::media::dtmf::DtmfMode;
use crate::media::player::IdleMode;
use crate::media::prompt::{PromptError, Prompts};
use crate::sip::sdp::Codec;
use crate::sip::TimerValues;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The shipped default configuration file, embedded so `serve` and tests know it.
pub const DEFAULT_PATH: &str = "sip-config/pincoderouting.toml";

/// A configuration problem, with the file and line where it can be told.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type.
    #[error("{path}:{line}: {msg}")]
    Syntax {
        path: String,
        line: usize,
        msg: String,
    },
    /// A value that parses but makes no sense. `at` is `path:line`, or just `path` when
    /// the key was left at its default.
    #[error("{at}: {key}: {msg}")]
    Invalid {
        at: String,
        key: String,
        msg: String,
    },
    /// A prompt file is missing or unusable.
    #[error("{path}: {source}")]
    Prompt { path: String, source: PromptError },
    /// The contacts file of the file CRM is unusable.
    #[error("{path}: {msg}")]
    Contacts { path: String, msg: String },
    /// A secret (password file, environment variable) is missing or exposed.
    #[error("{path}: {msg}")]
    Secret { path: String, msg: String },
}

/// SIP transport of a listen address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
    pub fn is_reliable(self) -> bool {
        self == Transport::Tcp
    }
}

/// One `transport:ip:port` listen address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (t, a) = s
            .split_once(':')
            .ok_or_else(|| format!("'{s}': expected udp:IP:PORT or tcp:IP:PORT"))?;
        let transport = match t.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            _ => return Err(format!("'{s}': transport must be udp or tcp")),
        };
        let addr = a
            .parse()
            .map_err(|_| format!("'{s}': '{a}' is not IP:PORT (IPv6 as [::]:5060)"))?;
        Ok(Listen { transport, addr })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    sip: RawSip,
    #[serde(default)]
    media: RawMedia,
    #[serde(default)]
    prompts: RawPrompts,
    #[serde(default)]
    organization: Vec<org::RawOrganization>,
    #[serde(default)]
    default_organization: Option<String>,
    #[serde(default)]
    organizations_dir: Option<String>,
    #[serde(default)]
    crm: RawCrm,
    #[serde(default)]
    crms: BTreeMap<String, RawCrm>,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    security: RawSecurity,
    #[serde(default)]
    admin: RawAdmin,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    listen: String,
    token_env: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:9090".into(),
            token_env: "PINCODEROUTING_ADMIN_TOKEN".into(),
        }
    }
}

/// The operator's HTTP endpoint (metrics, health, calls, reload).
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Where it listens; `None` = off.
    pub listen: Option<SocketAddr>,
    /// The environment variable holding the bearer token; requests need it when it is set.
    pub token_env: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSecurity {
    lockout_failures: usize,
    lockout_window_secs: u64,
    lockout_secs: u64,
    store: String,
    store_timeout_ms: u64,
    on_store_error: OnStoreError,
}

/// What a call does when the shared lockout store cannot be reached in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// No verdict stands without the store: the caller goes to the failure extension
    /// (audited `lockout_unavailable`). A PIN is still never accepted unverified.
    #[default]
    FailClosed,
    /// Verify without lockout while the store is away (counted and logged).
    SkipLockout,
}

/// Where the lockout counters live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockoutStoreConfig {
    /// In this process (one instance).
    Memory,
    /// In Redis, shared by every instance: `redis://host:port/db`.
    Redis { url: String },
}

/// Lockout across calls and where it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockoutConfig {
    pub policy: crate::call::lockout::LockoutPolicy,
    pub store: LockoutStoreConfig,
    /// Deadline of each store operation.
    pub store_timeout: Duration,
    pub on_store_error: OnStoreError,
}

impl Default for RawSecurity {
    fn default() -> Self {
        RawSecurity {
            lockout_failures: 5,
            lockout_window_secs: 900,
            lockout_secs: 900,
            store: "memory".into(),
            store_timeout_ms: 300,
            on_store_error: OnStoreError::FailClosed,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCrm {
    kind: String,
    contacts: String,
    http: Option<crate::crm::http::HttpLookupConfig>,
}

impl Default for RawCrm {
    fn default() -> Self {
        RawCrm {
            kind: "file".into(),
            contacts: "contacts.toml".into(),
            http: None,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawAudit {
    file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPrompts {
    dir: String,
    idle: IdleMode,
    files: BTreeMap<String, String>,
    interruptible: Vec<String>,
}

impl Default for RawPrompts {
    fn default() -> Self {
        RawPrompts {
            dir: "prompts".into(),
            idle: IdleMode::Silence,
            files: BTreeMap::new(),
            interruptible: INPUT_PROMPTS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSip {
    listen: Vec<String>,
    public_address: Option<String>,
    user_agent: String,
    max_message_bytes: usize,
    max_calls: usize,
    retry_after_secs: u32,
    drain_timeout_secs: u64,
    t1_ms: u64,
    t2_ms: u64,
    t4_ms: u64,
    ring_ms: u64,
    min_session_expires_secs: u32,
    trusted_proxies: Vec<String>,
    source_header: String,
    allow: Vec<String>,
    denied: String,
    requests_per_sec: f64,
    requests_burst: f64,
    calls_per_sec: f64,
    calls_burst: f64,
    max_calls_per_source: usize,
    limited: String,
    auth: Option<RawAuth>,
    dscp: u8,
    tcp_idle_timeout_secs: u64,
    max_call_secs: u64,
}

/// `[sip.auth]`: digest authentication of INVITEs (RFC 8760 / RFC 7616).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default = "d_realm")]
    realm: String,
    username: String,
    #[serde(default)]
    password_env: String,
    #[serde(default)]
    password_file: String,
    #[serde(default = "d_algorithms")]
    algorithms: Vec<String>,
    #[serde(default = "d_nonce_ttl")]
    nonce_ttl_secs: u64,
}

fn d_realm() -> String {
    "pincoderouting".into()
}
fn d_algorithms() -> Vec<String> {
    vec!["SHA-256".into(), "MD5".into()]
}
fn d_nonce_ttl() -> u64 {
    300
}

impl Default for RawSip {
    fn default() -> Self {
        RawSip {
            listen: vec!["udp:0.0.0.0:5060".into(), "tcp:0.0.0.0:5060".into()],
            public_address: None,
            user_agent: concat!("pincoderouting/", env!("CARGO_PKG_VERSION")).into(),
            max_message_bytes: 16 * 1024,
            max_calls: 5000,
            retry_after_secs: 5,
            drain_timeout_secs: 120,
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            ring_ms: 0,
            min_session_expires_secs: 90,
            trusted_proxies: Vec::new(),
            source_header: "X-Source-IP".into(),
            allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
            denied: "drop".into(),
            requests_per_sec: 1000.0,
            requests_burst: 2000.0,
            calls_per_sec: 100.0,
            calls_burst: 300.0,
            max_calls_per_source: 0,
            limited: "503".into(),
            auth: None,
            dscp: 24,
            tcp_idle_timeout_secs: 120,
            max_call_secs: 600,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMedia {
    rtp_bind: String,
    public_address: Option<String>,
    rtp_port_min: u16,
    rtp_port_max: u16,
    codecs: Vec<Codec>,
    ptime_ms: u32,
    media_timeout_secs: u64,
    dtmf_mode: DtmfMode,
    shared_socket: bool,
    dscp: u8,
}

impl Default for RawMedia {
    fn default() -> Self {
        RawMedia {
            rtp_bind: "0.0.0.0".into(),
            public_address: None,
            rtp_port_min: 10000,
            rtp_port_max: 20000,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            ptime_ms: 20,
            media_timeout_secs: 30,
            dtmf_mode: DtmfMode::Auto,
            shared_socket: false,
            dscp: 46,
        }
    }
}

/// SIP settings.
#[derive(Debug, Clone)]
pub struct SipConfig {
    pub listen: Vec<Listen>,
    /// Address put in Via/Contact; `None` = the local address toward the peer.
    pub public_address: Option<IpAddr>,
    pub user_agent: String,
    pub max_message_bytes: usize,
    pub max_calls: usize,
    pub retry_after_secs: u32,
    /// On SIGTERM/SIGINT, how long calls in progress may run on before they get BYE.
    pub drain_timeout: Duration,
    pub timers: TimerValues,
    /// Ringing time before answering (0 = answer at once).
    pub ring: Duration,
    /// Our Min-SE (RFC 4028 §5); smaller Session-Expires gets 422.
    pub min_session_expires: u32,
    /// Proxies (Kamailio) whose `source_header` names the real sender of a request; for
    /// trust decisions, see `sip::source::effective_source`. Empty: no proxy is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// The header a trusted proxy writes the sender's address in (`X-Source-IP`).
    pub source_header: String,
    /// Who may send SIP, and how fast (`allow`, rate limits, calls per source).
    pub access: crate::sip::gate::AccessPolicy,
    /// Digest authentication of INVITEs; `None`: trust comes from `allow` alone.
    pub auth: Option<crate::sip::auth::AuthConfig>,
    /// The DSCP our SIP is marked with (RFC 4594: 24, CS3, for signaling); 0 unmarked.
    pub dscp: u8,
    /// A TCP connection that brings nothing for this long is closed (ours reopen when a
    /// dialog needs them); a message begun must be whole within 64×T1 whatever comes.
    pub tcp_idle_timeout: Duration,
    /// No call lasts longer, whatever state it is in: it is then ended (BYE) with its
    /// audit record. The safety net under the flow's own timers.
    pub max_call: Duration,
}

/// Media settings.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    pub rtp_bind: IpAddr,
    /// Address put in SDP c=; `None` = the local address toward the peer.
    pub public_address: Option<IpAddr>,
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    pub codecs: Vec<Codec>,
    pub ptime_ms: u32,
    pub media_timeout: Duration,
    /// Which DTMF sources count (SIP INFO always does).
    pub dtmf_mode: DtmfMode,
    /// All calls of a call loop share one RTP port (and the RTCP port above it), told
    /// apart by the source address in the peer's SDP; frames leave in batches.
    pub shared_socket: bool,
    /// The DSCP our RTP and RTCP are marked with (RFC 4594: 46, Expedited Forwarding, for
    /// telephony media); 0 leaves them unmarked.
    pub dscp: u8,
}

/// Prompt settings. Paths are relative to the configuration file's directory.
#[derive(Debug, Clone)]
pub struct PromptConfig {
    pub dir: PathBuf,
    /// Comfort silence or nothing between prompts.
    pub idle: IdleMode,
    /// Per-prompt file overrides, by prompt name.
    pub files: BTreeMap<String, PathBuf>,
    /// The prompts a key stops (barge-in). Announcements are not in it by default.
    pub interruptible: Vec<String>,
}

/// The prompts that ask for input: the only ones a key interrupts by default.
pub const INPUT_PROMPTS: &[&str] = &["enter_pin", "incorrect_pin", "try_again", "no_input"];

/// Where caller records come from.
#[derive(Debug, Clone)]
pub enum CrmConfig {
    /// The embedded file-backed CRM: its contacts file (relative to the config file).
    File { contacts: PathBuf },
    /// A REST lookup (`[crm.http]`).
    HttpLookup(crate::crm::http::HttpLookupConfig),
    /// A verify webhook (`[crm.http]`, the PIN is POSTed).
    HttpVerify(crate::crm::http::HttpLookupConfig),
}

fn crm_config(
    raw: RawCrm,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<CrmConfig, ConfigError> {
    match (raw.kind.as_str(), raw.http) {
        ("file", _) => Ok(CrmConfig::File {
            contacts: PathBuf::from(raw.contacts),
        }),
        ("http_lookup", Some(h)) => {
            // Preset applied, templates, selectors and limits checked; errors start with
            // the key they are about.
            if let Err(e) = h.resolve() {
                let (key, msg) = e.split_once(": ").unwrap_or(("url", e.as_str()));
                return Err(invalid(key, msg.to_string()));
            }
            Ok(CrmConfig::HttpLookup(h))
        }
        ("http_verify", Some(h)) => {
            if h.timeout_ms == 0 || h.timeout_ms > 30_000 {
                return Err(invalid("timeout_ms", "need 1..=30000 ms".into()));
            }
            Ok(CrmConfig::HttpVerify(h))
        }
        ("http_lookup" | "http_verify", None) => Err(invalid(
            "kind",
            "an HTTP CRM kind needs a [crm.http] table".into(),
        )),
        (k, _) => Err(invalid(
            "kind",
            format!("crm kind '{k}': use \"file\", \"http_lookup\" or \"http_verify\""),
        )),
    }
}

/// The whole validated configuration. Shared as `Arc<Config>` and swapped whole on reload.
#[derive(Debug, Clone)]
pub struct Config {
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub prompts: PromptConfig,
    /// The loaded prompts (empty until `load` reads them; `parse` touches no files).
    pub prompt_set: Arc<Prompts>,
    /// Organizations' own prompts, by organization name (loaded by `load`).
    pub org_prompts: std::collections::HashMap<String, Arc<Prompts>>,
    /// Organizations in match order.
    pub organizations: Vec<Arc<Organization>>,
    /// Index of the organization for calls matching none (else they get 404).
    pub default_organization: Option<usize>,
    /// Its name, as configured.
    pub default_organization_name: Option<String>,
    /// A directory of `*.toml` files with more `[[organization]]` tables (read by `load`).
    pub organizations_dir: Option<PathBuf>,
    /// CRM settings by name ("" is `[crm]`, the default; others `[crms.NAME]`).
    pub crms: BTreeMap<String, CrmConfig>,
    /// Audit file (one JSON line per call), relative to the config file; `None` = log only.
    pub audit_file: Option<PathBuf>,
    /// The loaded CRMs by name (built by `load`, secrets from the environment).
    pub adapters: std::collections::HashMap<String, crate::crm::CrmAdapter>,
    /// Lockout across calls; `None` when `lockout_failures = 0`.
    pub lockout: Option<LockoutConfig>,
    pub admin: AdminConfig,
}

impl Config {
    /// The CRM an organization uses (loaded by `load`).
    pub fn crm_for(&self, org: &Organization) -> Option<&crate::crm::CrmAdapter> {
        self.adapters.get(&org.crm)
    }

    /// The organization an INVITE from `src` belongs to.
    pub fn organization_for(
        &self,
        invite: &crate::sip::msg::Message,
        src: IpAddr,
    ) -> Option<&Arc<Organization>> {
        self.organizations
            .iter()
            .find(|o| o.matches(invite, src))
            .or_else(|| {
                self.default_organization
                    .and_then(|i| self.organizations.get(i))
            })
    }
}

fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with(key) && l[key.len()..].trim_start().starts_with('=')
        })
        .map(|i| i + 1)
        .unwrap_or(0)
}

/// `[sip] allow`, `denied`, the rate limits and `limited`.
fn access_policy(
    s: &RawSip,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<crate::sip::gate::AccessPolicy, ConfigError> {
    use crate::sip::gate::{AccessPolicy, Action, Rate};
    let allow = s
        .allow
        .iter()
        .map(|c| c.parse().map_err(|m| invalid("allow", m)))
        .collect::<Result<Vec<_>, _>>()?;
    let denied = match s.denied.as_str() {
        "drop" => Action::Drop,
        "403" => Action::Reply,
        d => return Err(invalid("denied", format!("'{d}': use \"drop\" or \"403\""))),
    };
    let limited = match s.limited.as_str() {
        "drop" => Action::Drop,
        "503" => Action::Reply,
        d => {
            return Err(invalid(
                "limited",
                format!("'{d}': use \"503\" or \"drop\""),
            ))
        }
    };
    let rate = |key: &str, per_sec: f64, burst: f64| -> Result<Option<Rate>, ConfigError> {
        if !per_sec.is_finite() || !burst.is_finite() || per_sec < 0.0 || burst < 0.0 {
            return Err(invalid(key, "must be a number >= 0".into()));
        }
        if per_sec == 0.0 {
            return Ok(None);
        }
        // A burst below one token would refuse everything.
        let burst = if burst == 0.0 { per_sec * 2.0 } else { burst };
        Ok(Some(Rate {
            per_sec,
            burst: burst.max(1.0),
        }))
    };
    Ok(AccessPolicy {
        allow,
        denied,
        requests: rate("requests_per_sec", s.requests_per_sec, s.requests_burst)?,
        calls: rate("calls_per_sec", s.calls_per_sec, s.calls_burst)?,
        max_calls_per_source: s.max_calls_per_source,
        limited,
    })
}

/// `[sip.auth]`: checked here; the password itself is read by `load` (environment or a
/// file only we can read), never written in the configuration.
fn auth_config(
    a: &RawAuth,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<crate::sip::auth::AuthConfig, ConfigError> {
    use crate::sip::auth::{Algorithm, AuthConfig, PasswordSource};
    if a.username.is_empty() || a.realm.is_empty() || a.realm.contains('"') {
        return Err(invalid(
            "username",
            "[sip.auth] needs a username and a realm without quotes".into(),
        ));
    }
    let algorithms = a
        .algorithms
        .iter()
        .map(|n| {
            Algorithm::from_name(n).ok_or_else(|| {
                invalid(
                    "algorithms",
                    format!("'{n}': use \"SHA-256\" and/or \"MD5\""),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if algorithms.is_empty() {
        return Err(invalid("algorithms", "name at least one".into()));
    }
    let source = match (a.password_env.as_str(), a.password_file.as_str()) {
        (e, "") if !e.is_empty() => PasswordSource::Env(e.to_string()),
        ("", f) if !f.is_empty() => PasswordSource::File(PathBuf::from(f)),
        _ => {
            return Err(invalid(
                "password_env",
                "[sip.auth] needs exactly one of password_env, password_file".into(),
            ))
        }
    };
    if a.nonce_ttl_secs == 0 || a.nonce_ttl_secs > 3600 {
        return Err(invalid("nonce_ttl_secs", "must be 1..=3600".into()));
    }
    Ok(AuthConfig {
        realm: a.realm.clone(),
        username: a.username.clone(),
        source,
        password: None,
        algorithms,
        nonce_ttl: Duration::from_secs(a.nonce_ttl_secs),
    })
}

/// Reads a secret from a file that only its owner may read: a group- or world-readable
/// file is refused, naming it (the secret would be one `cat` away for every local user).
pub fn read_secret_file(path: &Path) -> Result<String, ConfigError> {
    let shown = path.display().to_string();
    read_owner_only(path).map_err(|e| match e {
        SecretFileError::Io(source) => ConfigError::Io {
            path: shown.clone(),
            source,
        },
        e => ConfigError::Secret {
            path: shown.clone(),
            msg: e.to_string(),
        },
    })
}

/// Why a secret file was not read.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("mode {0:o} lets others read it; chmod 600 (only our user may read a secret file)")]
    Readable(u32),
    #[error("it is not owned by this service's user")]
    NotOwner,
}

/// Reads a secret from a file only our user can read (mode 600 or stricter, owned by the
/// service's user), without its trailing newline. The one reader behind `${file:...}` in the
/// configuration and the CRM credentials.
pub fn read_owner_only(path: &Path) -> Result<String, SecretFileError> {
    let meta = std::fs::metadata(path).map_err(SecretFileError::Io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(SecretFileError::Readable(mode & 0o777));
        }
        // Our own uid, as the kernel reports it for this process.
        if let Ok(me) = std::fs::metadata("/proc/self") {
            if me.uid() != meta.uid() {
                return Err(SecretFileError::NotOwner);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = std::fs::read_to_string(path).map_err(SecretFileError::Io)?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// Parses and validates a configuration text; `path` is only used in messages.
pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0);
        ConfigError::Syntax {
            path: path.to_string(),
            line,
            msg: e.message().to_string(),
        }
    })?;
    let invalid = |key: &str, msg: String| ConfigError::Invalid {
        at: match line_of(text, key) {
            0 => format!("{path} (default value)"),
            n => format!("{path}:{n}"),
        },
        key: key.to_string(),
        msg,
    };
    // Six bits (RFC 2474); the TOS byte is this shifted left by two.
    let dscp = |key: &str, v: u8| -> Result<u8, ConfigError> {
        if v > 63 {
            return Err(invalid(key, format!("{v} is not a DSCP value (0-63)")));
        }
        Ok(v)
    };
    let ip = |key: &str, v: &Option<String>| -> Result<Option<IpAddr>, ConfigError> {
        v.as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|_| invalid(key, format!("'{s}' is not an IP address")))
            })
            .transpose()
    };
    let s = raw.sip;
    let m = raw.media;
    let pr = raw.prompts;
    let mut organizations = Vec::new();
    for o in raw.organization {
        let org = Organization::from_raw(o).map_err(|(k, m)| invalid(&k, m))?;
        if organizations
            .iter()
            .any(|x: &Arc<Organization>| x.name == org.name)
        {
            return Err(invalid(
                "name",
                format!("organization '{}' defined twice", org.name),
            ));
        }
        organizations.push(Arc::new(org));
    }
    let default_name = raw.default_organization.clone().filter(|n| !n.is_empty());
    let default_organization = match default_name.as_deref() {
        None => None,
        Some(n) => match organizations.iter().position(|o| o.name == n) {
            Some(i) => Some(i),
            // It may live in the organizations directory, which `load` reads.
            None if raw.organizations_dir.is_some() => None,
            None => {
                return Err(invalid(
                    "default_organization",
                    format!("no organization named '{n}'"),
                ))
            }
        },
    };
    let mut crms = BTreeMap::new();
    crms.insert(String::new(), crm_config(raw.crm, &invalid)?);
    for (name, c) in raw.crms {
        if name.is_empty() {
            return Err(invalid("crms", "a CRM name cannot be empty".into()));
        }
        crms.insert(name, crm_config(c, &invalid)?);
    }
    for o in &organizations {
        if !crms.contains_key(&o.crm) {
            return Err(invalid(
                "crm",
                format!("organization '{}': no [crms.{}]", o.name, o.crm),
            ));
        }
    }
    let listen = s
        .listen
        .iter()
        .map(|l| l.parse::<Listen>().map_err(|e| invalid("listen", e)))
        .collect::<Result<Vec<_>, _>>()?;
    if listen.is_empty() {
        return Err(invalid("listen", "at least one listen address".into()));
    }
    if !(1024..=65535).contains(&s.max_message_bytes) {
        return Err(invalid("max_message_bytes", "must be 1024..=65535".into()));
    }
    if s.max_calls == 0 {
        return Err(invalid("max_calls", "must be at least 1".into()));
    }
    if !(10..=86_400).contains(&s.max_call_secs) {
        return Err(invalid(
            "max_call_secs",
            "must be 10..=86400 (seconds)".into(),
        ));
    }
    if !(1..=86_400).contains(&s.tcp_idle_timeout_secs) {
        return Err(invalid(
            "tcp_idle_timeout_secs",
            "must be 1..=86400 (seconds)".into(),
        ));
    }
    if s.t1_ms == 0 || s.t2_ms < s.t1_ms || s.t4_ms == 0 {
        return Err(invalid(
            "t1_ms",
            "need 0 < t1_ms <= t2_ms and t4_ms > 0".into(),
        ));
    }
    if s.min_session_expires_secs < 90 {
        return Err(invalid(
            "min_session_expires_secs",
            "RFC 4028 requires at least 90".into(),
        ));
    }
    let trusted_proxies = s
        .trusted_proxies
        .iter()
        .map(|c| c.parse::<Cidr>().map_err(|e| invalid("trusted_proxies", e)))
        .collect::<Result<Vec<_>, _>>()?;
    if s.source_header.is_empty()
        || !s
            .source_header
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(
            "source_header",
            format!("'{}' is not a header name", s.source_header),
        ));
    }
    let access = access_policy(&s, &invalid)?;
    let auth = match &s.auth {
        Some(a) => Some(auth_config(a, &invalid)?),
        None => None,
    };
    let rtp_bind = m
        .rtp_bind
        .parse()
        .map_err(|_| invalid("rtp_bind", format!("'{}' is not an IP address", m.rtp_bind)))?;
    if !m.rtp_port_min.is_multiple_of(2)
        || m.rtp_port_min < 1024
        || m.rtp_port_max <= m.rtp_port_min
    {
        return Err(invalid(
            "rtp_port_min",
            format!(
                "port range {}..{} must be even, start at 1024 or above and hold at least one port pair",
                m.rtp_port_min, m.rtp_port_max
            ),
        ));
    }
    let pairs = (m.rtp_port_max - m.rtp_port_min) as usize / 2 + 1;
    if s.max_calls > pairs {
        return Err(invalid(
            "max_calls",
            format!(
                "{} calls need {} RTP ports but rtp_port_min..rtp_port_max holds {pairs} even ports",
                s.max_calls, s.max_calls
            ),
        ));
    }
    if m.codecs.is_empty() {
        return Err(invalid("codecs", "name at least one of PCMU, PCMA".into()));
    }
    if !(10..=60).contains(&m.ptime_ms) || !m.ptime_ms.is_multiple_of(10) {
        return Err(invalid(
            "ptime_ms",
            "must be 10, 20, 30, 40, 50 or 60".into(),
        ));
    }
    if m.media_timeout_secs == 0 {
        return Err(invalid("media_timeout_secs", "must be at least 1".into()));
    }
    if let Some(bad) = pr
        .interruptible
        .iter()
        .find(|n| !crate::media::prompt::NAMES.contains(&n.as_str()) && *n != "crm_error")
    {
        return Err(invalid(
            "interruptible",
            format!(
                "unknown prompt '{bad}'; names are {}",
                crate::media::prompt::NAMES.join(", ")
            ),
        ));
    }
    let lockout_store = match raw.security.store.trim() {
        "" | "memory" => LockoutStoreConfig::Memory,
        u if u.starts_with("redis://")
            || u.starts_with("rediss://")
            || u.starts_with("unix://") =>
        {
            LockoutStoreConfig::Redis { url: u.to_string() }
        }
        other => {
            return Err(invalid(
                "store",
                format!("'{other}': \"memory\" or a redis://host:port/db URL"),
            ))
        }
    };
    let admin = AdminConfig {
        listen: match raw.admin.listen.trim() {
            "" => None,
            a => Some(a.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "listen",
                    format!("[admin] listen '{a}' is not an address:port (\"\" turns it off)"),
                )
            })?),
        },
        token_env: raw.admin.token_env,
    };
    Ok(Config {
        sip: SipConfig {
            listen,
            public_address: ip("public_address", &s.public_address)?,
            user_agent: s.user_agent,
            max_message_bytes: s.max_message_bytes,
            max_calls: s.max_calls,
            retry_after_secs: s.retry_after_secs,
            drain_timeout: Duration::from_secs(s.drain_timeout_secs),
            timers: TimerValues {
                t1: Duration::from_millis(s.t1_ms),
                t2: Duration::from_millis(s.t2_ms),
                t4: Duration::from_millis(s.t4_ms),
            },
            ring: Duration::from_millis(s.ring_ms),
            min_session_expires: s.min_session_expires_secs,
            trusted_proxies,
            source_header: s.source_header,
            access,
            auth,
            dscp: dscp("dscp", s.dscp)?,
            tcp_idle_timeout: Duration::from_secs(s.tcp_idle_timeout_secs),
            max_call: Duration::from_secs(s.max_call_secs),
        },
        media: MediaConfig {
            rtp_bind,
            public_address: ip("public_address", &m.public_address)?,
            rtp_port_min: m.rtp_port_min,
            rtp_port_max: m.rtp_port_max,
            codecs: m.codecs,
            ptime_ms: m.ptime_ms,
            media_timeout: Duration::from_secs(m.media_timeout_secs),
            dtmf_mode: m.dtmf_mode,
            shared_socket: m.shared_socket,
            dscp: dscp("dscp", m.dscp)?,
        },
        prompts: PromptConfig {
            dir: PathBuf::from(pr.dir),
            idle: pr.idle,
            files: pr
                .files
                .into_iter()
                .map(|(k, v)| (k, PathBuf::from(v)))
                .collect(),
            interruptible: pr.interruptible,
        },
        prompt_set: Arc::new(Prompts::default()),
        org_prompts: Default::default(),
        organizations,
        default_organization,
        default_organization_name: default_name,
        organizations_dir: raw.organizations_dir.map(PathBuf::from),
        crms,
        adapters: Default::default(),
        audit_file: (!raw.audit.file.is_empty()).then(|| PathBuf::from(raw.audit.file)),
        lockout: (raw.security.lockout_failures > 0).then(|| LockoutConfig {
            policy: crate::call::lockout::LockoutPolicy {
                failures: raw.security.lockout_failures,
                window: Duration::from_secs(raw.security.lockout_window_secs.max(1)),
                cooldown: Duration::from_secs(raw.security.lockout_secs.max(1)),
            },
            store: lockout_store,
            store_timeout: Duration::from_millis(raw.security.store_timeout_ms.max(1)),
            on_store_error: raw.security.on_store_error,
        }),
        admin,
    })
}

/// Parses a file of `[[organization]]` tables (an organizations directory entry).
pub fn parse_organizations(text: &str, path: &str) -> Result<Vec<Organization>, ConfigError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct OrgFile {
        #[serde(default)]
        organization: Vec<org::RawOrganization>,
    }
    let raw: OrgFile = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_string(),
        line: e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0),
        msg: e.message().to_string(),
    })?;
    raw.organization
        .into_iter()
        .map(|o| {
            Organization::from_raw(o).map_err(|(k, m)| ConfigError::Invalid {
                at: match line_of(text, &k) {
                    0 => path.to_string(),
                    n => format!("{path}:{n}"),
                },
                key: k,
                msg: m,
            })
        })
        .collect()
}

/// Reads and parses a configuration file, then loads its prompts (paths relative to the
/// file's directory). Any unusable prompt fails the load, naming the file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: shown.clone(),
        source,
    })?;
    let mut config = parse(&text, &shown)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let dir = base.join(&config.prompts.dir);
    let set =
        Prompts::load(&dir, &config.prompts.files, base).map_err(|source| ConfigError::Prompt {
            path: shown.clone(),
            source,
        })?;
    config.prompt_set = Arc::new(set);
    if let Some(dir) = config.organizations_dir.clone() {
        let dir = base.join(dir);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|source| ConfigError::Io {
                path: dir.display().to_string(),
                source,
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        for f in files {
            let shown_f = f.display().to_string();
            let text = std::fs::read_to_string(&f).map_err(|source| ConfigError::Io {
                path: shown_f.clone(),
                source,
            })?;
            for org in parse_organizations(&text, &shown_f)? {
                if config.organizations.iter().any(|o| o.name == org.name) {
                    return Err(ConfigError::Invalid {
                        at: shown_f.clone(),
                        key: "name".into(),
                        msg: format!("organization '{}' defined twice", org.name),
                    });
                }
                config.organizations.push(Arc::new(org));
            }
        }
        for o in &config.organizations {
            if !config.crms.contains_key(&o.crm) {
                return Err(ConfigError::Invalid {
                    at: shown.clone(),
                    key: "crm".into(),
                    msg: format!("organization '{}': no [crms.{}]", o.name, o.crm),
                });
            }
        }
        if let Some(n) = &config.default_organization_name {
            config.default_organization = Some(
                config
                    .organizations
                    .iter()
                    .position(|o| &o.name == n)
                    .ok_or_else(|| ConfigError::Invalid {
                        at: shown.clone(),
                        key: "default_organization".into(),
                        msg: format!("no organization named '{n}'"),
                    })?,
            );
        }
    }
    for org in &config.organizations {
        if let Some(d) = &org.prompts_dir {
            let set =
                Prompts::load_partial(&base.join(d)).map_err(|source| ConfigError::Prompt {
                    path: shown.clone(),
                    source,
                })?;
            config.org_prompts.insert(org.name.clone(), Arc::new(set));
        }
    }
    if let Some(auth) = &mut config.sip.auth {
        let password = match &auth.source {
            crate::sip::auth::PasswordSource::Env(var) => std::env::var(var)
                .ok()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| ConfigError::Secret {
                    path: shown.clone(),
                    msg: format!("[sip.auth] password_env: environment variable {var} is not set"),
                })?,
            crate::sip::auth::PasswordSource::File(f) => read_secret_file(&base.join(f))?,
        };
        auth.password = Some(crate::sip::auth::Secret::new(password));
    }
    // The file CRM reads its contacts' numbers with their organization's country code.
    let country_codes: std::collections::HashMap<String, String> = config
        .organizations
        .iter()
        .map(|o| (o.name.clone(), o.country_code.clone()))
        .collect();
    let country_code_of = |org: &str| country_codes.get(org).cloned();
    for (name, crm) in config.crms.clone() {
        let label = if name.is_empty() {
            "[crm]".to_string()
        } else {
            format!("[crms.{name}]")
        };
        // `${NAME}` is an environment variable; `${file:PATH}` a file only we can read
        // (relative to this file), refused — naming it — when group or world can read it.
        let mut files = std::collections::HashMap::new();
        if let CrmConfig::HttpLookup(h) | CrmConfig::HttpVerify(h) = &crm {
            for v in h.headers.values() {
                for part in v.split("${file:").skip(1) {
                    let Some((p, _)) = part.split_once('}') else {
                        continue;
                    };
                    files.insert(p.to_string(), read_secret_file(&base.join(p))?);
                }
            }
        }
        let env = |k: &str| match k.strip_prefix("file:") {
            Some(p) => files.get(p).cloned(),
            None => std::env::var(k).ok(),
        };
        let fail = |msg: String| ConfigError::Contacts {
            path: shown.clone(),
            msg: format!("{label}: {msg}"),
        };
        let adapter = match crm {
            CrmConfig::File { contacts } => {
                let contacts_path = base.join(contacts);
                let dir =
                    ContactDirectory::load(&contacts_path, &country_code_of).map_err(|msg| {
                        ConfigError::Contacts {
                            path: contacts_path.display().to_string(),
                            msg,
                        }
                    })?;
                crate::crm::CrmAdapter::File(Arc::new(dir))
            }
            CrmConfig::HttpLookup(h) => crate::crm::CrmAdapter::Lookup(Arc::new(
                crate::crm::http::HttpLookup::new(h, &env).map_err(fail)?,
            )),
            CrmConfig::HttpVerify(h) => crate::crm::CrmAdapter::Verify(Arc::new(
                crate::crm::http::HttpVerify::new(h, &env).map_err(fail)?,
            )),
        };
        config.adapters.insert(name, adapter);
    }
    if let Some(f) = &config.audit_file {
        config.audit_file = Some(base.join(f));
    }
    Ok(config)
}

impl Default for Config {
    // Invariant: the empty document (a constant, not a peer's or user's input) is valid:
    // every key has a default. Checked by the `empty_config_is_the_default` test.
    #[allow(clippy::expect_used)]
    fn default() -> Self {
        parse("", "<default>").expect("defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration `text` gives, or a failure naming the text and the error.
    fn parsed(text: &str) -> Config {
        parse(text, "x").unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn empty_config_is_the_default() {
        let c = parsed("");
        assert_eq!(c.sip.listen.len(), 2);
        assert_eq!(c.media.media_timeout, Duration::from_secs(30));
        assert_eq!(c.media.codecs, vec![Codec::Pcmu, Codec::Pcma]);
    }

    #[test]
    fn interruptible_prompts_default_to_those_asking_for_input_and_names_are_checked() {
        let c = parsed("");
        assert_eq!(c.prompts.interruptible, INPUT_PROMPTS);
        let e = parse(
            "[prompts]\ninterruptible = [\"enter_pin\", \"verifyed\"]\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("x.toml:2") && e.contains("verifyed"), "{e}");
        let org = "[[organization]]\nname = \"a\"\npbx_host = \"p\"\npin_success_ext = \"1\"\n\
                   pin_failed_ext = \"2\"\n";
        let c = parse(org, "x").unwrap();
        let o = &c.organizations[0];
        assert!(o.announce_verdict && o.announce_transfer);
        assert_eq!(o.pin_result_in.len(), 2);
        let bad = format!("{org}pin_result_in = [\"uri\"]\n");
        let e = parse(&bad, "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml:6"), "{e}");
    }

    #[test]
    fn organizations_from_a_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("orgs")).unwrap();
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sip-config");
        let org = |name: &str, user: &str| {
            format!(
                "[[organization]]\nname = \"{name}\"\nenabled = true\nmatch_user = [\"{user}\"]\n\
                 pbx_host = \"pbx\"\npin_success_ext = \"1\"\npin_failed_ext = \"2\"\n"
            )
        };
        std::fs::write(d.path().join("orgs/a.toml"), org("acme", "acme")).unwrap();
        std::fs::write(d.path().join("orgs/b.toml"), org("globex", "globex")).unwrap();
        std::fs::write(d.path().join("orgs/notes.txt"), "ignored").unwrap();
        let cfg = d.path().join("main.toml");
        std::fs::write(
            &cfg,
            format!(
                "default_organization = \"globex\"\norganizations_dir = \"orgs\"\n\
                 [prompts]\ndir = \"{}\"\n[crm]\ncontacts = \"{}\"\n",
                shipped.join("prompts").display(),
                shipped.join("contacts.toml").display()
            ),
        )
        .unwrap();
        let c = load(&cfg).unwrap();
        let names: Vec<&str> = c.organizations.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, vec!["acme", "globex"]);
        assert_eq!(c.default_organization, Some(1));
        // An organization with its own prompts (another language): the ones it has replace
        // the service's, the rest fall back.
        std::fs::create_dir(d.path().join("es")).unwrap();
        std::fs::write(
            d.path().join("es/enter_pin.wav"),
            crate::media::wav::write_pcm16(&[7; 1600]),
        )
        .unwrap();
        std::fs::write(
            d.path().join("orgs/a.toml"),
            org("acme", "acme") + "prompts_dir = \"es\"\n",
        )
        .unwrap();
        let c = load(&cfg).unwrap();
        let own = &c.org_prompts["acme"];
        assert_eq!(own.get("enter_pin").unwrap().len(), 1600);
        assert!(own.get("verified").is_none());
        assert!(own.get_or("verified", &c.prompt_set).is_some());
        assert!(!c.org_prompts.contains_key("globex"));
        std::fs::write(d.path().join("es/try_again.wav"), b"junk").unwrap();
        let e = load(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("try_again") && e.contains("es/try_again.wav"),
            "{e}"
        );
        std::fs::remove_file(d.path().join("es/try_again.wav")).unwrap();
        // Organizations can have their own CRM.
        std::fs::write(
            d.path().join("orgs/b.toml"),
            org("globex", "globex") + "crm = \"globex-crm\"\n",
        )
        .unwrap();
        assert!(load(&cfg)
            .unwrap_err()
            .to_string()
            .contains("no [crms.globex-crm]"));
        let mut main = std::fs::read_to_string(&cfg).unwrap();
        main.push_str(
            "[crms.globex-crm]\nkind = \"http_lookup\"\n[crms.globex-crm.http]\n\
             url = \"https://crm.globex.example/c?phone={phone}\"\n",
        );
        std::fs::write(&cfg, main).unwrap();
        let c = load(&cfg).unwrap();
        let acme = c.organizations.iter().find(|o| o.name == "acme").unwrap();
        let globex = c.organizations.iter().find(|o| o.name == "globex").unwrap();
        assert!(matches!(
            c.crm_for(acme),
            Some(crate::crm::CrmAdapter::File(_))
        ));
        assert!(matches!(
            c.crm_for(globex),
            Some(crate::crm::CrmAdapter::Lookup(_))
        ));
        // A broken file is named, with its line.
        std::fs::write(d.path().join("orgs/c.toml"), "[[organization]]\nname = 3\n").unwrap();
        let e = load(&cfg).unwrap_err().to_string();
        assert!(e.contains("c.toml:2"), "{e}");
    }

    #[test]
    fn access_policy_defaults_to_loopback_and_is_validated() {
        use crate::sip::gate::{Action, Rate};
        let c = parsed("");
        let a = &c.sip.access;
        assert!(a.allows("127.0.0.1".parse().unwrap()));
        assert!(a.allows("::1".parse().unwrap()));
        assert!(!a.allows("192.0.2.1".parse().unwrap()), "closed by default");
        assert_eq!(a.denied, Action::Drop);
        assert_eq!(a.limited, Action::Reply);
        assert_eq!(
            a.requests,
            Some(Rate {
                per_sec: 1000.0,
                burst: 2000.0
            })
        );
        let c = parse(
            "[sip]\nallow = []\ndenied = \"403\"\nrequests_per_sec = 0\ncalls_per_sec = 2\n\
calls_burst = 0\nmax_calls_per_source = 3\nlimited = \"drop\"\n",
            "x",
        )
        .unwrap();
        let a = &c.sip.access;
        assert!(a.allows("192.0.2.1".parse().unwrap()), "[] is open");
        assert_eq!((a.denied, a.limited), (Action::Reply, Action::Drop));
        assert_eq!(a.requests, None);
        assert_eq!(
            a.calls,
            Some(Rate {
                per_sec: 2.0,
                burst: 4.0
            })
        );
        assert_eq!(a.max_calls_per_source, 3);
        for (bad, key) in [
            ("allow = [\"10.0.0.0/40\"]", "allow"),
            ("denied = \"reject\"", "denied"),
            ("limited = \"429\"", "limited"),
            ("requests_per_sec = -1", "requests_per_sec"),
        ] {
            let e = parse(&format!("[sip]\n{bad}\n"), "x.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("x.toml:2: {key}")), "{bad}: {e}");
        }
        let org = "[[organization]]\nname = \"o\"\npbx_host = \"h\"\npin_success_ext = \"1\"\n\
pin_failed_ext = \"2\"\nallow = [\"192.0.2.0/24\"]\n";
        let c = parse(org, "x").unwrap();
        let o = &c.organizations[0];
        assert!(o.allows("192.0.2.9".parse().unwrap()));
        assert!(!o.allows("198.51.100.1".parse().unwrap()));
    }

    #[test]
    fn sip_auth_needs_one_password_source_and_known_algorithms() {
        use crate::sip::auth::{Algorithm, PasswordSource};
        let ok = parse(
            "[sip.auth]\nusername = \"pbx\"\npassword_env = \"P\"\nalgorithms = [\"MD5\"]\n",
            "x",
        )
        .unwrap();
        let a = ok.sip.auth.unwrap();
        assert_eq!(a.algorithms, vec![Algorithm::Md5]);
        assert_eq!(a.source, PasswordSource::Env("P".into()));
        assert!(a.password.is_none(), "parse reads no secret");
        let d = parse(
            "[sip.auth]\nusername = \"pbx\"\npassword_file = \"pw\"\n",
            "x",
        )
        .unwrap();
        assert_eq!(
            d.sip.auth.unwrap().algorithms,
            vec![Algorithm::Sha256, Algorithm::Md5]
        );
        for bad in [
            "username = \"pbx\"\n",
            "username = \"pbx\"\npassword_env = \"P\"\npassword_file = \"f\"\n",
            "username = \"pbx\"\npassword_env = \"P\"\nalgorithms = [\"SHA-512-256\"]\n",
            "username = \"pbx\"\npassword_env = \"P\"\nalgorithms = []\n",
            "username = \"\"\npassword_env = \"P\"\n",
            "username = \"pbx\"\npassword_env = \"P\"\nnonce_ttl_secs = 0\n",
        ] {
            assert!(parse(&format!("[sip.auth]\n{bad}"), "x").is_err(), "{bad}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_readable_by_others_are_refused_naming_the_file() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("sip-password");
        std::fs::write(&f, "s3cret\n").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_secret_file(&f).unwrap_err().to_string();
            assert!(e.contains("sip-password"), "{mode:o}: {e}");
            assert!(e.contains("chmod 600"), "{mode:o}: {e}");
        }
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&f).unwrap(), "s3cret");
        // Through load: [sip.auth] password_file, and a CRM header's ${file:...}.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let cfg = d.path().join("c.toml");
        let prompts = concat!(env!("CARGO_MANIFEST_DIR"), "/sip-config/prompts");
        let contacts = concat!(env!("CARGO_MANIFEST_DIR"), "/sip-config/contacts.toml");
        let base = format!("[prompts]\ndir = \"{prompts}\"\n[crm]\ncontacts = \"{contacts}\"\n");
        std::fs::write(
            &cfg,
            format!("[sip.auth]\nusername = \"pbx\"\npassword_file = \"sip-password\"\n{base}"),
        )
        .unwrap();
        let e = load(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("sip-password") && e.contains("lets others read"),
            "{e}"
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = load(&cfg).unwrap();
        assert!(c.sip.auth.unwrap().password.is_some());
        let tok = d.path().join("crm-token");
        std::fs::write(&tok, "t0ken").unwrap();
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::write(
            &cfg,
            format!(
                "[prompts]\ndir = \"{prompts}\"\n[crm]\nkind = \"http_lookup\"\n[crm.http]\n\
url = \"http://127.0.0.1:9/x?p={{phone}}\"\nheaders = {{ Authorization = \"Bearer ${{file:crm-token}}\" }}\n"
            ),
        )
        .unwrap();
        let e = load(&cfg).unwrap_err().to_string();
        assert!(e.contains("crm-token"), "{e}");
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
        let r = load(&cfg);
        assert!(r.is_ok(), "{:?}", r.err());
    }

    #[test]
    fn max_call_defaults_to_ten_minutes_and_is_bounded() {
        let c = parsed("");
        assert_eq!(c.sip.max_call, Duration::from_secs(600));
        for bad in ["0", "9", "86401"] {
            let e = parse(&format!("[sip]\nmax_call_secs = {bad}\n"), "f.toml").unwrap_err();
            assert!(e.to_string().starts_with("f.toml:2: max_call_secs"), "{e}");
        }
    }

    #[test]
    fn tcp_idle_timeout_defaults_to_two_minutes_and_is_bounded() {
        let c = parsed("");
        assert_eq!(c.sip.tcp_idle_timeout, Duration::from_secs(120));
        let c = parsed("[sip]\ntcp_idle_timeout_secs = 30\n");
        assert_eq!(c.sip.tcp_idle_timeout, Duration::from_secs(30));
        for bad in ["0", "86401"] {
            let e =
                parse(&format!("[sip]\ntcp_idle_timeout_secs = {bad}\n"), "f.toml").unwrap_err();
            assert!(e.to_string().contains("tcp_idle_timeout_secs"), "{e}");
        }
    }

    #[test]
    fn dscp_defaults_to_cs3_for_sip_and_ef_for_media_and_takes_six_bits() {
        let c = parsed("");
        assert_eq!((c.sip.dscp, c.media.dscp), (24, 46));
        let c = parsed("[sip]\ndscp = 0\n[media]\ndscp = 34\n");
        assert_eq!((c.sip.dscp, c.media.dscp), (0, 34));
        let e = parse("[media]\ndscp = 64\n", "f.toml").unwrap_err();
        assert!(e.to_string().starts_with("f.toml:2: dscp"), "{e}");
        assert!(e.to_string().contains("0-63"), "{e}");
        assert!(parse("[sip]\ndscp = 300\n", "f.toml").is_err());
    }

    #[test]
    fn shipped_config_parses() {
        let text = include_str!("../../sip-config/pincoderouting.toml");
        let c = parse(text, DEFAULT_PATH).unwrap();
        assert_eq!(c.sip.max_calls, 5000);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let e = parse("[sip]\nmax_calls = 10\nmax_calls = = 3\n", "f.toml").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("f.toml:3:"), "{s}");
        let e = parse("[sip]\n\nbogus = 1\n", "f.toml").unwrap_err();
        assert!(e.to_string().starts_with("f.toml:3:"), "{e}");
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = parse("[media]\ncodecs = [\"G729\"]\n", "f.toml").unwrap_err();
        assert!(e.to_string().starts_with("f.toml:2:"), "{e}");
    }

    #[test]
    fn semantic_errors_name_key_and_line() {
        let e = parse(
            "[media]\nrtp_port_min = 20000\nrtp_port_max = 10000\n",
            "f.toml",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("f.toml:2: rtp_port_min"), "{e}");
        let e = parse("[sip]\nlisten = [\"sctp:1.2.3.4:5\"]\n", "f.toml").unwrap_err();
        assert!(e.to_string().contains("udp or tcp"), "{e}");
        let e = parse("[sip]\nmax_calls = 6000\n", "f.toml").unwrap_err();
        assert!(e.to_string().starts_with("f.toml:2: max_calls"), "{e}");
        let e = parse("[media]\nrtp_port_max = 10100\n", "f.toml").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("f.toml (default value): max_calls"),
            "{e}"
        );
        let e = parse("[media]\nptime_ms = 25\n", "f.toml").unwrap_err();
        assert!(e.to_string().contains("ptime_ms"), "{e}");
        let e = parse("[sip]\nlisten = [\"udp:[::1]:5060\"]\n", "f").unwrap();
        assert!(e.sip.listen[0].addr.is_ipv6());
    }
}
