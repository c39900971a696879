//! How we prove ourselves to a CRM, and where the secrets for it come from.
//!
//! Secrets are never written in the configuration in clear: a secret value is `${NAME}`
//! (an environment variable) or `${file:/path}` (a file that only this service's user can
//! read: owned by us, no group or other permission bits). Schemes: static headers, HTTP
//! Basic, OAuth 2.0 client credentials (RFC 6749 §4.4) and a vendor's token login (a form
//! POSTed to a token URL, the token picked from the reply). Tokens are cached until shortly
//! before they expire; a 401 from the CRM drops the cached token and the request is made
//! once more with a fresh one. Nothing here ever logs or prints a secret or a token.

use super::select::{self, Selector};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// Where environment variables come from (the process environment, or a test's map).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Reads a secret file, refusing one that others could read.
fn read_secret_file(path: &str) -> Result<String, String> {
    crate::config::read_owner_only(std::path::Path::new(path))
        .map_err(|e| format!("secret file {path}: {e}"))
}

/// Expands every `${NAME}` and `${file:/path}` in a value. `what` names the value in errors
/// (never the secret).
pub fn expand(what: &str, value: &str, env: Env) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        let (before, after) = rest.split_at(i);
        out.push_str(before);
        let inner = after.get(2..).unwrap_or("");
        let end = inner
            .find('}')
            .ok_or_else(|| format!("{what}: unclosed ${{"))?;
        let (name, tail) = inner.split_at(end);
        let v = match name.strip_prefix("file:") {
            // The environment may resolve a file itself (the config loader: a path relative
            // to the configuration file, checked owner-only); else the path as given.
            Some(path) => match env(name) {
                Some(v) => v,
                None => read_secret_file(path).map_err(|e| format!("{what}: {e}"))?,
            },
            None => env(name)
                .ok_or_else(|| format!("{what}: environment variable {name} is not set"))?,
        };
        out.push_str(&v);
        rest = tail.get(1..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands a value that is a secret: it must come from `${…}`, never be written in clear.
pub fn secret(what: &str, value: &str, env: Env) -> Result<String, String> {
    if !value.contains("${") {
        return Err(format!(
            "{what}: a secret comes from the environment (${{NAME}}) or an owner-only file \
             (${{file:/path}}), never in clear"
        ));
    }
    expand(what, value, env)
}

/// Names of headers and form fields that carry credentials.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "authorization",
        "x-api-key",
        "api-key",
        "apikey",
        "cookie",
        "x-auth-token",
        "secret",
        "password",
        "clientid",
        "apiintegrationcode",
        "client_secret",
        "token",
    ]
    .iter()
    .any(|s| n == *s || n.contains("secret") || n.contains("password"))
}

/// The scheme, as configured in `[crm.http.auth]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// Only the configured headers.
    #[default]
    None,
    /// HTTP Basic (`username`, `password`).
    Basic,
    /// OAuth 2.0 client credentials (`token_url`, `client_id`, `client_secret`, `scope`).
    Oauth2,
    /// A vendor token login: `params` POSTed as a form to `token_url`.
    Token,
}

/// `[crm.http.auth]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub kind: AuthKind,
    pub username: Option<String>,
    pub password: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scope: Option<String>,
    /// More form fields for the token request (`tenant` for a hosted Halo; the whole
    /// login form for `kind = "token"`).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Where the token is in the token reply (first that selects a string wins).
    #[serde(default)]
    pub token_paths: Vec<String>,
    /// Where its lifetime in seconds is (default: `expires_in`; none found: 30 min).
    #[serde(default)]
    pub expires_paths: Vec<String>,
}

/// A cached access token.
struct Cached {
    token: String,
    until: Instant,
}

/// A token endpoint and the token it last gave.
pub struct TokenSource {
    url: String,
    /// The form, secrets filled in. Never printed.
    form: Vec<(String, String)>,
    token_paths: Vec<Selector>,
    expires_paths: Vec<Selector>,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("url", &self.url)
            .field("form", &"<redacted>")
            .finish()
    }
}

/// Without a lifetime in the reply, a token is used this long.
const DEFAULT_TOKEN_LIFE: Duration = Duration::from_secs(30 * 60);

impl TokenSource {
    /// A token: the cached one while it is fresh, else a new one from the endpoint.
    /// Concurrent calls wait for one fetch.
    pub async fn token(&self, client: &reqwest::Client) -> Result<String, String> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref().filter(|c| Instant::now() < c.until) {
            return Ok(c.token.clone());
        }
        let resp = client
            .post(&self.url)
            .header("Accept", "application/json")
            .form(&self.form)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    "token endpoint refused or unreachable".to_string()
                } else {
                    "token request failed".to_string()
                }
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("token endpoint answered HTTP {}", status.as_u16()));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|_| "token reply cut off".to_string())?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| "bad JSON in the token reply".to_string())?;
        let token = self
            .token_paths
            .iter()
            .find_map(|s| s.one(&v).ok().flatten().and_then(select::text))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| "no access token in the token reply".to_string())?;
        let life = self
            .expires_paths
            .iter()
            .find_map(|s| s.one(&v).ok().flatten().and_then(|x| x.as_f64()))
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs(s.min(86_400.0) as u64))
            .unwrap_or(DEFAULT_TOKEN_LIFE);
        // Renewed a little before it expires: a tenth of its life, at most a minute.
        let margin = (life / 10).min(Duration::from_secs(60));
        *cache = Some(Cached {
            token: token.clone(),
            until: Instant::now() + life.saturating_sub(margin),
        });
        Ok(token)
    }

    /// The CRM refused this token (401): forget it, so the next call fetches a new one.
    pub async fn invalidate(&self, token: &str) {
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_some_and(|c| c.token == token) {
            *cache = None;
        }
    }
}

/// A loaded scheme, secrets filled in.
pub enum Auth {
    None,
    Basic { user: String, pass: String },
    Bearer(TokenSource),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("Auth::None"),
            Auth::Basic { .. } => f.write_str("Auth::Basic(<redacted>)"),
            Auth::Bearer(t) => write!(f, "Auth::Bearer({t:?})"),
        }
    }
}

fn parse_selectors(list: &[String], default: &[&str]) -> Result<Vec<Selector>, String> {
    let texts: Vec<String> = if list.is_empty() {
        default.iter().map(|s| s.to_string()).collect()
    } else {
        list.to_vec()
    };
    texts
        .iter()
        .map(|t| Selector::parse(t).map_err(|e| format!("auth: {e}")))
        .collect()
}

impl Auth {
    /// Loads `[crm.http.auth]`: checks it and fills in its secrets.
    pub fn load(cfg: Option<&AuthConfig>, env: Env) -> Result<Auth, String> {
        let Some(cfg) = cfg else {
            return Ok(Auth::None);
        };
        let need = |v: &Option<String>, key: &str| {
            v.clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("auth: {key} is required for kind {:?}", cfg.kind))
        };
        let mut params = Vec::new();
        for (k, v) in &cfg.params {
            let what = format!("auth.params.{k}");
            let value = if is_secret_name(k) {
                secret(&what, v, env)?
            } else {
                expand(&what, v, env)?
            };
            params.push((k.clone(), value));
        }
        let source = |form: Vec<(String, String)>, token_default: &[&str]| {
            Ok::<_, String>(TokenSource {
                url: need(&cfg.token_url, "token_url")?,
                form,
                token_paths: parse_selectors(&cfg.token_paths, token_default)?,
                expires_paths: parse_selectors(&cfg.expires_paths, &["/expires_in"])?,
                cache: tokio::sync::Mutex::new(None),
            })
        };
        match cfg.kind {
            AuthKind::None => Ok(Auth::None),
            AuthKind::Basic => Ok(Auth::Basic {
                user: expand("auth.username", &need(&cfg.username, "username")?, env)?,
                pass: secret("auth.password", &need(&cfg.password, "password")?, env)?,
            }),
            AuthKind::Oauth2 => {
                let mut form = vec![
                    ("grant_type".to_string(), "client_credentials".to_string()),
                    (
                        "client_id".to_string(),
                        expand("auth.client_id", &need(&cfg.client_id, "client_id")?, env)?,
                    ),
                    (
                        "client_secret".to_string(),
                        secret(
                            "auth.client_secret",
                            &need(&cfg.client_secret, "client_secret")?,
                            env,
                        )?,
                    ),
                ];
                if let Some(s) = cfg.scope.as_ref().filter(|s| !s.is_empty()) {
                    form.push(("scope".to_string(), s.clone()));
                }
                form.extend(params);
                Ok(Auth::Bearer(source(form, &["/access_token"])?))
            }
            AuthKind::Token => {
                if params.is_empty() {
                    return Err("auth: kind token needs params (the login form)".into());
                }
                Ok(Auth::Bearer(source(params, &["/access_token"])?))
            }
        }
    }

    /// Adds the credentials to a request; gives back the bearer token used, if any (to drop
    /// it on a 401).
    pub async fn apply(
        &self,
        client: &reqwest::Client,
        req: reqwest::RequestBuilder,
    ) -> Result<(reqwest::RequestBuilder, Option<String>), String> {
        match self {
            Auth::None => Ok((req, None)),
            Auth::Basic { user, pass } => Ok((req.basic_auth(user, Some(pass)), None)),
            Auth::Bearer(src) => {
                let token = src.token(client).await?;
                Ok((req.bearer_auth(&token), Some(token)))
            }
        }
    }

    /// A 401 answered this token.
    pub async fn refused(&self, token: Option<&str>) -> bool {
        match (self, token) {
            (Auth::Bearer(src), Some(t)) => {
                src.invalidate(t).await;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_the_environment_or_an_owner_only_file() {
        let env = |k: &str| (k == "CRM_TOKEN").then(|| "s3cret".to_string());
        assert_eq!(
            expand("h", "Bearer ${CRM_TOKEN}", &env).unwrap(),
            "Bearer s3cret"
        );
        assert!(secret("h", "Bearer s3cret", &env)
            .unwrap_err()
            .contains("never in clear"));
        assert!(expand("h", "${MISSING}", &env)
            .unwrap_err()
            .contains("MISSING is not set"));
        assert!(expand("h", "${OPEN", &env)
            .unwrap_err()
            .contains("unclosed"));
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("secret");
        std::fs::write(&f, "from-file\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let v = format!("${{file:{}}}", f.display());
        assert_eq!(secret("p", &v, &env).unwrap(), "from-file");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = secret("p", &v, &env).unwrap_err();
        assert!(
            e.contains("lets others read it") && !e.contains("from-file"),
            "{e}"
        );
        assert!(secret("p", "${file:/nonexistent/x}", &env).is_err());
    }

    #[test]
    fn schemes_load_and_refuse_secrets_in_clear() {
        let env = |k: &str| match k {
            "PW" => Some("pw".to_string()),
            "CS" => Some("cs".to_string()),
            _ => None,
        };
        let cfg = |t: &str| toml::from_str::<AuthConfig>(t).unwrap();
        assert!(matches!(
            Auth::load(
                Some(&cfg(
                    "kind = \"basic\"\nusername = \"co+pub\"\npassword = \"${PW}\""
                )),
                &env
            ),
            Ok(Auth::Basic { .. })
        ));
        let e = Auth::load(
            Some(&cfg(
                "kind = \"basic\"\nusername = \"u\"\npassword = \"pw\"",
            )),
            &env,
        )
        .unwrap_err();
        assert!(e.contains("never in clear"), "{e}");
        let e = Auth::load(
            Some(&cfg(
                "kind = \"oauth2\"\nclient_id = \"id\"\nclient_secret = \"${CS}\"",
            )),
            &env,
        )
        .unwrap_err();
        assert!(e.contains("token_url"), "{e}");
        let a = Auth::load(
            Some(&cfg(
                "kind = \"oauth2\"\ntoken_url = \"http://h/t\"\nclient_id = \"id\"\nclient_secret = \"${CS}\"",
            )),
            &env,
        )
        .unwrap();
        let dbg = format!("{a:?}");
        assert!(!dbg.contains("cs") || !dbg.contains("\"cs\""), "{dbg}");
        let e = Auth::load(
            Some(&cfg(
                "kind = \"token\"\ntoken_url = \"http://h/t\"\nparams = { Password = \"pw\" }",
            )),
            &env,
        )
        .unwrap_err();
        assert!(
            e.contains("auth.params.Password") && e.contains("never in clear"),
            "{e}"
        );
    }
}
