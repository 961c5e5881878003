//! Configuration: defaults, then an optional TOML file (`--config`), then `LATCHKEY_*`
//! environment variables (API.md, "Configuration"). Every value is validated at start-up; a bad
//! one stops the server with one line naming the key.
//!
//! In the TOML file the keys are the variable names without the prefix, in lower case
//! (`code_ttl = "10m"`). Secrets may also be read from a file named by `<KEY>_FILE`
//! (`LATCHKEY_SECRET_FILE`, `LATCHKEY_DATABASE_URL_FILE`, `LATCHKEY_SMTP_URL_FILE`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use figment::value::Value;
use latchkey_core::token::SigningAlgorithm;

/// One configuration key: its environment name, default and meaning. The table drives
/// parsing, unknown-key warnings and `latchkey --help`.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// Environment variable name.
    pub env: &'static str,
    /// Default, as text.
    pub default: &'static str,
    /// What it does.
    pub help: &'static str,
}

/// Every key Latchkey reads.
pub const KEYS: &[Key] = &[
    Key { env: "LATCHKEY_LISTEN", default: "127.0.0.1:8080", help: "Address and port to listen on" },
    Key {
        env: "LATCHKEY_DATABASE_URL",
        default: "sqlite://latchkey.db",
        help: "sqlite://PATH (created if missing) or postgres://USER@HOST:PORT/DB",
    },
    Key { env: "LATCHKEY_DATABASE_MAX_CONNECTIONS", default: "16", help: "Connections in the database pool" },
    Key {
        env: "LATCHKEY_PUBLIC_URL",
        default: "http://<listen>",
        help: "External base URL: the token issuer (iss); https makes cookies Secure",
    },
    Key {
        env: "LATCHKEY_SMTP_URL",
        default: "(unset: mail goes to the log)",
        help: "SMTP relay in lettre's URL form, e.g. smtp://127.0.0.1:2525 or smtps://user:pass@host",
    },
    Key {
        env: "LATCHKEY_OUTBOX_DIR",
        default: "(unset)",
        help: "Without SMTP, also write each mail as a .eml file here",
    },
    Key { env: "LATCHKEY_MAIL_FROM", default: "Latchkey <no-reply@localhost>", help: "Sender of code mails" },
    Key { env: "LATCHKEY_CODE_TTL", default: "10m", help: "Lifetime of one-time codes" },
    Key { env: "LATCHKEY_ACCESS_TOKEN_TTL", default: "15m", help: "Lifetime of access and ID tokens" },
    Key { env: "LATCHKEY_SESSION_TTL", default: "30d", help: "Lifetime of sessions and refresh tokens" },
    Key {
        env: "LATCHKEY_REFRESH_REUSE_WINDOW",
        default: "10s",
        help: "Grace window in which a just-rotated refresh token returns the same successor",
    },
    Key {
        env: "LATCHKEY_REQUIRE_EMAIL_VERIFICATION",
        default: "true",
        help: "Whether the default tenant requires a verified email to sign in",
    },
    Key { env: "LATCHKEY_JWT_ALG", default: "EdDSA", help: "Signing algorithm of new keys: EdDSA, ES256 or RS256" },
    Key { env: "LATCHKEY_CLIENT_IDS", default: "local", help: "Comma-separated Cognito app client ids accepted" },
    Key { env: "LATCHKEY_REGION", default: "local-1", help: "Region in Cognito identity ids" },
    Key {
        env: "LATCHKEY_SURFACES",
        default: "all",
        help: "Comma-separated surfaces to mount: users, projects, graphql, auth, cognito, realtime, v1",
    },
    Key { env: "LATCHKEY_PASSWORD_MIN_LENGTH", default: "8", help: "Minimum password length (1-128)" },
    Key {
        env: "LATCHKEY_TRUST_FORWARDED_FOR",
        default: "false",
        help: "Take the client address from the last X-Forwarded-For entry (only behind a proxy that sets it)",
    },
    Key { env: "LATCHKEY_REDIS_URL", default: "(unset)", help: "Redis for rate limits shared by instances" },
    Key { env: "LATCHKEY_RATE_LIMIT", default: "on", help: "on or off (off: for tests and benchmarks only)" },
    Key {
        env: "LATCHKEY_SECRET",
        default: "(generated)",
        help: "Server secret (>= 32 bytes) for code hashing and key encryption; shared by all instances. \
               Unset: generated into latchkey.secret beside the SQLite file",
    },
    Key {
        env: "LATCHKEY_LOG",
        default: "info",
        help: "Log filter (tracing EnvFilter syntax), e.g. info,latchkey=debug",
    },
    Key { env: "LATCHKEY_LOG_FORMAT", default: "text", help: "text or json" },
];

/// The surfaces of API.md, by name.
pub const SURFACES: &[&str] = &["users", "projects", "graphql", "auth", "cognito", "realtime", "v1"];

/// A configuration error: the key and what is wrong with its value. Displays as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment name of the offending key.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration.
#[derive(Clone)]
pub struct Config {
    /// `LATCHKEY_LISTEN`.
    pub listen: SocketAddr,
    /// `LATCHKEY_DATABASE_URL`.
    pub database_url: String,
    /// `LATCHKEY_DATABASE_MAX_CONNECTIONS`.
    pub database_max_connections: u32,
    /// `LATCHKEY_PUBLIC_URL`, without a trailing slash; `None`: `http://<listen address>`.
    pub public_url: Option<String>,
    /// `LATCHKEY_SMTP_URL`.
    pub smtp_url: Option<String>,
    /// `LATCHKEY_OUTBOX_DIR`.
    pub outbox_dir: Option<PathBuf>,
    /// `LATCHKEY_MAIL_FROM`.
    pub mail_from: String,
    /// `LATCHKEY_CODE_TTL`.
    pub code_ttl: Duration,
    /// `LATCHKEY_ACCESS_TOKEN_TTL`.
    pub access_token_ttl: Duration,
    /// `LATCHKEY_SESSION_TTL`.
    pub session_ttl: Duration,
    /// `LATCHKEY_REFRESH_REUSE_WINDOW`.
    pub refresh_reuse_window: Duration,
    /// `LATCHKEY_REQUIRE_EMAIL_VERIFICATION`.
    pub require_email_verification: bool,
    /// `LATCHKEY_JWT_ALG`.
    pub jwt_alg: SigningAlgorithm,
    /// `LATCHKEY_CLIENT_IDS`.
    pub client_ids: Vec<String>,
    /// `LATCHKEY_REGION`.
    pub region: String,
    /// `LATCHKEY_SURFACES`: names from [`SURFACES`].
    pub surfaces: Vec<String>,
    /// `LATCHKEY_PASSWORD_MIN_LENGTH`.
    pub password_min_length: usize,
    /// `LATCHKEY_TRUST_FORWARDED_FOR`.
    pub trust_forwarded_for: bool,
    /// `LATCHKEY_REDIS_URL`.
    pub redis_url: Option<String>,
    /// `LATCHKEY_RATE_LIMIT`.
    pub rate_limit: bool,
    /// `LATCHKEY_SECRET` (or the contents of `LATCHKEY_SECRET_FILE`).
    pub secret: Option<String>,
    /// `LATCHKEY_LOG`.
    pub log: String,
    /// `LATCHKEY_LOG_FORMAT`.
    pub log_format: LogFormat,
}

impl fmt::Debug for Config {
    /// Every setting, with the database and SMTP passwords and the secret redacted
    /// (`latchkey check-config` prints this).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &latchkey_store::redact(&self.database_url))
            .field("database_max_connections", &self.database_max_connections)
            .field("public_url", &self.public_url)
            .field("smtp_url", &self.smtp_url.as_deref().map(latchkey_store::redact))
            .field("outbox_dir", &self.outbox_dir)
            .field("mail_from", &self.mail_from)
            .field("code_ttl", &self.code_ttl)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("session_ttl", &self.session_ttl)
            .field("refresh_reuse_window", &self.refresh_reuse_window)
            .field("require_email_verification", &self.require_email_verification)
            .field("jwt_alg", &self.jwt_alg)
            .field("client_ids", &self.client_ids)
            .field("region", &self.region)
            .field("surfaces", &self.surfaces)
            .field("password_min_length", &self.password_min_length)
            .field("trust_forwarded_for", &self.trust_forwarded_for)
            .field("redis_url", &self.redis_url.as_deref().map(latchkey_store::redact))
            .field("rate_limit", &self.rate_limit)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("log", &self.log)
            .field("log_format", &self.log_format)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://latchkey.db".into(),
            database_max_connections: 16,
            public_url: None,
            smtp_url: None,
            outbox_dir: None,
            mail_from: "Latchkey <no-reply@localhost>".into(),
            code_ttl: Duration::from_secs(600),
            access_token_ttl: Duration::from_secs(900),
            session_ttl: Duration::from_secs(30 * 86_400),
            refresh_reuse_window: Duration::from_secs(10),
            require_email_verification: true,
            jwt_alg: SigningAlgorithm::EdDSA,
            client_ids: vec!["local".into()],
            region: "local-1".into(),
            surfaces: SURFACES.iter().map(|s| (*s).to_owned()).collect(),
            password_min_length: 8,
            trust_forwarded_for: false,
            redis_url: None,
            rate_limit: true,
            secret: None,
            log: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

/// The environment name of a lower-case TOML key.
fn env_name(key: &str) -> String {
    format!("LATCHKEY_{}", key.to_ascii_uppercase())
}

/// A raw value as text (figment parses environment values TOML-like; we re-read them as text
/// so every key is parsed, and reported, the same way).
fn text(value: &Value) -> String {
    match value {
        Value::String(_, s) => s.clone(),
        Value::Char(_, c) => c.to_string(),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => match (n.to_u128(), n.to_i128(), n.to_f64()) {
            (Some(u), _, _) => u.to_string(),
            (_, Some(i), _) => i.to_string(),
            (_, _, Some(f)) => f.to_string(),
            _ => String::new(),
        },
        Value::Array(_, items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        Value::Dict(..) | Value::Empty(..) => String::new(),
    }
}

/// Parses a duration such as `90s`, `15m`, `30d` or `1h 30m`; must be positive.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|_| format!("{s:?} is not a duration; use a number with a unit, e.g. 90s, 15m, 30d"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean; use true or false (on or off)")),
    }
}

fn parse_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_owned).collect()
}

impl Config {
    /// Loads the configuration from an optional TOML file and the process environment.
    ///
    /// Returns the configuration and warnings (unknown keys) to log once logging is up.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first bad key.
    pub fn load(file: Option<&Path>) -> Result<(Config, Vec<String>), ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError {
                    key: "--config".into(),
                    message: format!("{} does not exist", path.display()),
                });
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("LATCHKEY_"));
        let raw: BTreeMap<String, Value> = figment.extract().map_err(|e| ConfigError {
            key: e.path.first().map_or_else(|| "--config".to_owned(), |k| env_name(k)),
            message: e.to_string(),
        })?;
        let raw = raw.iter().map(|(k, v)| (k.to_ascii_lowercase(), text(v))).collect();
        Self::from_map(&raw)
    }

    /// Builds a configuration from lower-case keys (without the `LATCHKEY_` prefix) and their
    /// text values.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first bad key.
    pub fn from_map(raw: &BTreeMap<String, String>) -> Result<(Config, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        let known = |k: &str| KEYS.iter().any(|key| key.env == env_name(k));
        for k in raw.keys() {
            let base = k.strip_suffix("_file").filter(|b| known(b));
            if !known(k) && base.is_none() && !k.starts_with("test_") && !k.starts_with("bench_") {
                warnings.push(format!("unknown configuration key {} ignored", env_name(k)));
            }
        }
        let mut c = Config::default();
        let err = |key: &str, message: String| ConfigError { key: env_name(key), message };
        let get = |key: &str| -> Result<Option<String>, ConfigError> {
            if let Some(v) = raw.get(key) {
                return Ok(Some(v.clone()));
            }
            match raw.get(&format!("{key}_file")) {
                Some(path) => {
                    std::fs::read_to_string(path).map(|s| Some(s.trim_end_matches(['\r', '\n']).to_owned())).map_err(
                        |e| ConfigError { key: format!("{}_FILE", env_name(key)), message: format!("{path}: {e}") },
                    )
                }
                None => Ok(None),
            }
        };

        if let Some(v) = get("listen")? {
            c.listen =
                v.trim().parse().map_err(|_| err("listen", format!("{v:?} is not an address like 127.0.0.1:8080")))?;
        }
        if let Some(v) = get("database_url")? {
            let v = v.trim().to_owned();
            if !(v.starts_with("sqlite:") || v.starts_with("postgres://") || v.starts_with("postgresql://")) {
                return Err(err("database_url", "must start with sqlite:// or postgres://".into()));
            }
            c.database_url = v;
        }
        if let Some(v) = get("database_max_connections")? {
            c.database_max_connections = v
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| err("database_max_connections", format!("{v:?} is not a number from 1 to 1000")))?;
        }
        if let Some(v) = get("public_url")? {
            let v = v.trim().trim_end_matches('/').to_owned();
            let rest = v.strip_prefix("https://").or_else(|| v.strip_prefix("http://"));
            if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
                return Err(err("public_url", format!("{v:?} is not an http:// or https:// URL")));
            }
            c.public_url = Some(v);
        }
        if let Some(v) = get("smtp_url")?.filter(|v| !v.trim().is_empty()) {
            if !(v.starts_with("smtp://") || v.starts_with("smtps://")) {
                return Err(err("smtp_url", "must start with smtp:// or smtps://".into()));
            }
            c.smtp_url = Some(v.trim().to_owned());
        }
        if let Some(v) = get("outbox_dir")?.filter(|v| !v.trim().is_empty()) {
            c.outbox_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = get("mail_from")? {
            if v.parse::<lettre::message::Mailbox>().is_err() {
                return Err(err(
                    "mail_from",
                    format!("{v:?} is not a mailbox like \"Latchkey <no-reply@example.com>\""),
                ));
            }
            c.mail_from = v;
        }
        for (key, slot) in [
            ("code_ttl", &mut c.code_ttl),
            ("access_token_ttl", &mut c.access_token_ttl),
            ("session_ttl", &mut c.session_ttl),
            ("refresh_reuse_window", &mut c.refresh_reuse_window),
        ] {
            if let Some(v) = get(key)? {
                *slot = parse_duration(&v).map_err(|m| err(key, m))?;
            }
        }
        if let Some(v) = get("require_email_verification")? {
            c.require_email_verification = parse_bool(&v).map_err(|m| err("require_email_verification", m))?;
        }
        if let Some(v) = get("jwt_alg")? {
            c.jwt_alg = SigningAlgorithm::from_name(v.trim())
                .ok_or_else(|| err("jwt_alg", format!("{v:?} is not one of EdDSA, ES256, RS256")))?;
        }
        if let Some(v) = get("client_ids")? {
            c.client_ids = parse_list(&v);
            if c.client_ids.is_empty() {
                return Err(err("client_ids", "must name at least one client id".into()));
            }
        }
        if let Some(v) = get("region")? {
            let v = v.trim().to_owned();
            if v.is_empty() || !v.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-') {
                return Err(err("region", format!("{v:?} is not a region name like local-1 or eu-west-1")));
            }
            c.region = v;
        }
        if let Some(v) = get("surfaces")? {
            let list = parse_list(&v);
            if list.iter().any(|s| s == "all") {
                c.surfaces = SURFACES.iter().map(|s| (*s).to_owned()).collect();
            } else {
                if let Some(bad) = list.iter().find(|s| !SURFACES.contains(&s.as_str())) {
                    return Err(err(
                        "surfaces",
                        format!("unknown surface {bad:?}; known: all, {}", SURFACES.join(", ")),
                    ));
                }
                c.surfaces = list;
            }
        }
        if let Some(v) = get("password_min_length")? {
            c.password_min_length = v
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=128).contains(n))
                .ok_or_else(|| err("password_min_length", format!("{v:?} is not a number from 1 to 128")))?;
        }
        if let Some(v) = get("redis_url")?.filter(|v| !v.trim().is_empty()) {
            if !(v.starts_with("redis://") || v.starts_with("rediss://")) {
                return Err(err("redis_url", "must start with redis:// or rediss://".into()));
            }
            c.redis_url = Some(v.trim().to_owned());
        }
        if let Some(v) = get("trust_forwarded_for")? {
            c.trust_forwarded_for = parse_bool(&v).map_err(|m| err("trust_forwarded_for", m))?;
        }
        if let Some(v) = get("rate_limit")? {
            c.rate_limit = parse_bool(&v).map_err(|m| err("rate_limit", m))?;
        }
        if let Some(v) = get("secret")? {
            if v.len() < latchkey_core::secret::ServerSecret::MIN_LEN {
                return Err(err("secret", "must be at least 32 bytes (e.g. `openssl rand -base64 32`)".into()));
            }
            c.secret = Some(v);
        }
        if let Some(v) = get("log")? {
            tracing_subscriber::EnvFilter::try_new(&v).map_err(|e| err("log", format!("{v:?}: {e}")))?;
            c.log = v;
        }
        if let Some(v) = get("log_format")? {
            c.log_format = match v.trim() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(err("log_format", format!("{v:?} is not text or json"))),
            };
        }
        Ok((c, warnings))
    }

    /// The issuer and external base URL: `LATCHKEY_PUBLIC_URL`, or `http://<listen address>`.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{bound}"))
    }

    /// Whether the surface named `name` is mounted.
    pub fn surface_enabled(&self, name: &str) -> bool {
        self.surfaces.iter().any(|s| s == name)
    }

    /// The `--help` text listing every key with its default.
    pub fn help_text() -> String {
        let mut out = String::from(
            "Configuration (environment variables; in a --config TOML file use the name without LATCHKEY_, in lower case):\n",
        );
        for key in KEYS {
            out.push_str(&format!("  {:<38} {}\n  {:<38} default: {}\n", key.env, key.help, "", key.default));
        }
        out.push_str("  Secrets can also be read from a file named by <KEY>_FILE, e.g. LATCHKEY_SECRET_FILE.\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_match_the_wire_contract() {
        let (c, warnings) = Config::from_map(&map(&[])).expect("defaults");
        assert!(warnings.is_empty());
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite://latchkey.db");
        assert_eq!(c.code_ttl, Duration::from_secs(600));
        assert_eq!(c.access_token_ttl, Duration::from_secs(900));
        assert_eq!(c.session_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(c.refresh_reuse_window, Duration::from_secs(10));
        assert!(c.require_email_verification && c.rate_limit);
        assert_eq!(c.client_ids, vec!["local"]);
        assert_eq!(c.surfaces.len(), SURFACES.len());
        assert_eq!(c.public_url(c.listen), "http://127.0.0.1:8080");
    }

    #[test]
    fn values_parse() {
        let (c, _) = Config::from_map(&map(&[
            ("code_ttl", "90s"),
            ("session_ttl", "7d"),
            ("jwt_alg", "ES256"),
            ("client_ids", "a, b"),
            ("surfaces", "users,v1"),
            ("rate_limit", "off"),
            ("public_url", "https://auth.example.com/"),
            ("password_min_length", "12"),
        ]))
        .expect("valid");
        assert_eq!(c.code_ttl, Duration::from_secs(90));
        assert_eq!(c.session_ttl, Duration::from_secs(7 * 86_400));
        assert_eq!(c.jwt_alg, SigningAlgorithm::ES256);
        assert_eq!(c.client_ids, vec!["a", "b"]);
        assert!(c.surface_enabled("v1") && !c.surface_enabled("graphql"));
        assert!(!c.rate_limit);
        assert_eq!(c.public_url.as_deref(), Some("https://auth.example.com"));
        assert_eq!(c.password_min_length, 12);
    }

    #[test]
    fn a_bad_value_names_its_key_in_one_line() {
        for (key, value, env) in [
            ("code_ttl", "ten minutes", "LATCHKEY_CODE_TTL"),
            ("listen", "8080", "LATCHKEY_LISTEN"),
            ("jwt_alg", "HS256", "LATCHKEY_JWT_ALG"),
            ("surfaces", "users,soap", "LATCHKEY_SURFACES"),
            ("secret", "short", "LATCHKEY_SECRET"),
            ("database_url", "mysql://x", "LATCHKEY_DATABASE_URL"),
            ("password_min_length", "0", "LATCHKEY_PASSWORD_MIN_LENGTH"),
            ("require_email_verification", "maybe", "LATCHKEY_REQUIRE_EMAIL_VERIFICATION"),
            ("session_ttl", "0s", "LATCHKEY_SESSION_TTL"),
        ] {
            let e = Config::from_map(&map(&[(key, value)])).expect_err(key);
            assert_eq!(e.key, env);
            let line = e.to_string();
            assert!(line.starts_with(&format!("invalid configuration: {env}: ")), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn unknown_keys_are_warned_about() {
        let (_, warnings) = Config::from_map(&map(&[("databse_url", "x")])).expect("valid");
        assert_eq!(warnings, vec!["unknown configuration key LATCHKEY_DATABSE_URL ignored"]);
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "s".repeat(40) + "\n").expect("write");
        let (c, _) = Config::from_map(&map(&[("secret_file", path.to_str().expect("utf-8"))])).expect("valid");
        assert_eq!(c.secret.as_deref(), Some("s".repeat(40).as_str()));
    }
}
