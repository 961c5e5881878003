//! Configuration: defaults, then an optional TOML file (`--config`), then `LATCHKEY_*`
//! environment variables (API.md, "Configuration"). Every value is validated at start-up; a bad
//! one stops the server with one line naming the key.
//!
//! In the TOML file the keys are the variable names without the prefix, in lower case
//! (`code_ttl = "10m"`). Any key of [`Config`] may also be read from a file named by
//! `<KEY>_FILE` when `<KEY>` itself is not set; that is meant for secrets
//! (`LATCHKEY_SECRET_FILE`, `LATCHKEY_DATABASE_URL_FILE`, `LATCHKEY_SMTP_URL_FILE`,
//! `LATCHKEY_REDIS_URL_FILE`).
//!
//! [`Config`] is one `Deserialize` struct extracted by figment; its defaults are written once,
//! in `Default for Config`, and `latchkey --help` renders them from there. Values are parsed by
//! the deserializers of [`de`], which the surfaces use for their own settings too: keys that
//! `Config` does not know are kept in [`Config::surface_settings`], from which each surface
//! extracts its own typed struct ([`SurfaceSettings::extract`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Tag, Value};
use figment::{Figment, Metadata, Profile, Provider};
use latchkey_core::password::{HashParams, MAX_ARGON2_ITERATIONS, MAX_ARGON2_MEMORY_KIB};
use latchkey_core::token::SigningAlgorithm;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// One key of [`Config`]: its environment name and meaning. The table drives `latchkey --help`
/// and tells [`Config`]'s keys from those of the surfaces.
#[derive(Clone, Copy)]
pub struct Key {
    /// Environment variable name, e.g. `LATCHKEY_CODE_TTL`.
    pub env: &'static str,
    /// What it does.
    pub help: &'static str,
    /// What happens when the key is unset and its default is "none" (e.g. `http://<listen>`
    /// for the public URL); empty for keys with a default value.
    pub when_unset: &'static str,
    /// The key's value in `config` as text that parses back to it; `None` when unset.
    render: fn(&Config) -> Option<String>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key").field("env", &self.env).field("help", &self.help).finish_non_exhaustive()
    }
}

impl Key {
    /// The key as written in a TOML file: the environment name without `LATCHKEY_`, in lower
    /// case (e.g. `code_ttl`).
    pub fn name(&self) -> String {
        self.env.trim_start_matches("LATCHKEY_").to_ascii_lowercase()
    }

    /// The default as `latchkey --help` shows it: the value of `Config::default()` as text, or
    /// [`Key::when_unset`] when there is none.
    pub fn default_text(&self) -> String {
        (self.render)(&Config::default()).unwrap_or_else(|| self.when_unset.to_owned())
    }
}

/// Every key of [`Config`], in the order `latchkey --help` lists them.
pub const KEYS: &[Key] = &[
    Key {
        env: "LATCHKEY_LISTEN",
        help: "Address and port to listen on",
        when_unset: "",
        render: |c| Some(c.listen.to_string()),
    },
    Key {
        env: "LATCHKEY_DATABASE_URL",
        help: "sqlite://PATH (created if missing) or postgres://USER@HOST:PORT/DB",
        when_unset: "",
        render: |c| Some(c.database_url.to_string()),
    },
    Key {
        env: "LATCHKEY_DATABASE_MAX_CONNECTIONS",
        help: "Connections in the database pool (1-1000)",
        when_unset: "",
        render: |c| Some(c.database_max_connections.to_string()),
    },
    Key {
        env: "LATCHKEY_PUBLIC_URL",
        help: "External base URL: the token issuer (iss); https makes cookies Secure",
        when_unset: "http://<listen>",
        render: |c| c.public_url.clone(),
    },
    Key {
        env: "LATCHKEY_SMTP_URL",
        help: "SMTP relay in lettre's URL form, e.g. smtp://127.0.0.1:2525 or smtps://user:pass@host",
        when_unset: "(unset: mail goes to the log)",
        render: |c| c.smtp_url.as_ref().map(ToString::to_string),
    },
    Key {
        env: "LATCHKEY_OUTBOX_DIR",
        help: "Without SMTP, also write each mail as a .eml file here",
        when_unset: "(unset)",
        render: |c| c.outbox_dir.as_ref().map(|p| p.display().to_string()),
    },
    Key {
        env: "LATCHKEY_MAIL_FROM",
        help: "Sender of code mails",
        when_unset: "",
        render: |c| Some(c.mail_from.clone()),
    },
    Key {
        env: "LATCHKEY_CODE_TTL",
        help: "Lifetime of one-time codes",
        when_unset: "",
        render: |c| Some(de::format_duration(c.code_ttl)),
    },
    Key {
        env: "LATCHKEY_ACCESS_TOKEN_TTL",
        help: "Lifetime of access and ID tokens",
        when_unset: "",
        render: |c| Some(de::format_duration(c.access_token_ttl)),
    },
    Key {
        env: "LATCHKEY_SESSION_TTL",
        help: "Lifetime of sessions and refresh tokens",
        when_unset: "",
        render: |c| Some(de::format_duration(c.session_ttl)),
    },
    Key {
        env: "LATCHKEY_REFRESH_REUSE_WINDOW",
        help: "Grace window in which a just-rotated refresh token returns the same successor",
        when_unset: "",
        render: |c| Some(de::format_duration(c.refresh_reuse_window)),
    },
    Key {
        env: "LATCHKEY_UNVERIFIED_ACCOUNT_TTL",
        help: "How long an account whose email was never verified is kept before it is deleted",
        when_unset: "",
        render: |c| Some(de::format_duration(c.unverified_account_ttl)),
    },
    Key {
        env: "LATCHKEY_AUDIT_RETENTION",
        help: "How long audit events are kept before they are deleted (1h to 3650d)",
        when_unset: "",
        render: |c| Some(de::format_duration(c.audit_retention)),
    },
    Key {
        env: "LATCHKEY_SESSION_CACHE_TTL",
        help: "Longest a checked session is served from memory when no revocation reached this instance (0 to 60s; 0: off)",
        when_unset: "",
        render: |c| Some(de::format_duration(c.session_cache_ttl)),
    },
    Key {
        env: "LATCHKEY_SESSION_CACHE_SIZE",
        help: "Most sessions the session cache keeps (0 to 10000000; 0: off)",
        when_unset: "",
        render: |c| Some(c.session_cache_size.to_string()),
    },
    Key {
        env: "LATCHKEY_HASH_QUEUE",
        help: "Password hashes that may wait for a hashing thread; beyond that, requests get 503 (1-100000)",
        when_unset: "",
        render: |c| Some(c.hash_queue.to_string()),
    },
    Key {
        env: "LATCHKEY_ARGON2_MEMORY_KIB",
        help: "Memory of each new password hash in KiB (argon2id m; 7168-1048576; with LATCHKEY_ARGON2_ITERATIONS at least an OWASP configuration)",
        when_unset: "",
        render: |c| Some(c.argon2_memory_kib.to_string()),
    },
    Key {
        env: "LATCHKEY_ARGON2_ITERATIONS",
        help: "Passes over that memory (argon2id t; 1-16); stored hashes are redone at each user's next sign-in",
        when_unset: "",
        render: |c| Some(c.argon2_iterations.to_string()),
    },
    Key {
        env: "LATCHKEY_REGION",
        help: "Region named in Cognito pool and identity ids (lower-case letters, digits, '-')",
        when_unset: "",
        render: |c| Some(c.region.clone()),
    },
    Key {
        env: "LATCHKEY_USER_POOL_ID",
        help: "Cognito user pool id clients are configured with; the part after '_' is the SRP pool name",
        when_unset: "<region>_latchkey",
        render: |c| c.user_pool_id.clone(),
    },
    Key {
        env: "LATCHKEY_SRP",
        help: "on or off: Cognito SRP sign-in (USER_SRP_AUTH); off also keeps no SRP verifiers",
        when_unset: "",
        render: |c| Some(if c.srp { "on" } else { "off" }.to_owned()),
    },
    Key {
        env: "LATCHKEY_METRICS_ALLOW",
        help: "Comma-separated addresses or networks (CIDR) besides loopback that may read /metrics",
        when_unset: "(loopback only)",
        render: |c| {
            (!c.metrics_allow.is_empty())
                .then(|| c.metrics_allow.iter().map(ToString::to_string).collect::<Vec<_>>().join(","))
        },
    },
    Key {
        env: "LATCHKEY_ALLOWED_ORIGINS",
        help: "Comma-separated origins (https://app.example.com) of other sites' pages that may call the API with the user's cookies (CORS with credentials)",
        when_unset: "(none: same origin only)",
        render: |c| (!c.allowed_origins.is_empty()).then(|| c.allowed_origins.join(",")),
    },
    Key {
        env: "LATCHKEY_REQUIRE_EMAIL_VERIFICATION",
        help: "Whether the default tenant requires a verified email to sign in",
        when_unset: "",
        render: |c| Some(c.require_email_verification.to_string()),
    },
    Key {
        env: "LATCHKEY_JWT_ALG",
        help: "Signing algorithm of new keys: EdDSA, ES256 or RS256",
        when_unset: "",
        render: |c| Some(c.jwt_alg.as_str().to_owned()),
    },
    Key {
        env: "LATCHKEY_SURFACES",
        help: "Comma-separated surfaces to mount (see API.md), or all",
        when_unset: "",
        render: |c| {
            Some(match &c.surfaces {
                SurfaceSelection::All => "all".to_owned(),
                SurfaceSelection::Only(names) => names.join(","),
            })
        },
    },
    Key {
        env: "LATCHKEY_PASSWORD_MIN_LENGTH",
        help: "Minimum password length (1-128)",
        when_unset: "",
        render: |c| Some(c.password_min_length.to_string()),
    },
    Key {
        env: "LATCHKEY_TRUST_FORWARDED_FOR",
        help: "Take the client address from the last X-Forwarded-For entry (only behind a proxy that sets it)",
        when_unset: "",
        render: |c| Some(c.trust_forwarded_for.to_string()),
    },
    Key {
        env: "LATCHKEY_REDIS_URL",
        help: "Redis for rate limits shared by instances",
        when_unset: "(unset)",
        render: |c| c.redis_url.as_ref().map(ToString::to_string),
    },
    Key {
        env: "LATCHKEY_RATE_LIMIT",
        help: "on or off (off: for tests and benchmarks only)",
        when_unset: "",
        render: |c| Some(if c.rate_limit { "on" } else { "off" }.to_owned()),
    },
    Key {
        env: "LATCHKEY_SECRET",
        help: "Server secret (>= 32 bytes) for code hashing and key encryption; shared by all instances. \
               Unset: generated into latchkey.secret beside the SQLite file",
        when_unset: "(generated)",
        render: |c| c.secret.as_ref().map(|_| "[redacted]".to_owned()),
    },
    Key {
        env: "LATCHKEY_LOG",
        help: "Log filter (tracing EnvFilter syntax), e.g. info,latchkey=debug",
        when_unset: "",
        render: |c| Some(c.log.clone()),
    },
    Key {
        env: "LATCHKEY_LOG_FORMAT",
        help: "text or json",
        when_unset: "",
        render: |c| Some(c.log_format.as_str().to_owned()),
    },
];

/// Whether `name` (lower case, without prefix) is a key of [`Config`].
fn is_config_key(name: &str) -> bool {
    KEYS.iter().any(|k| k.env.strip_prefix("LATCHKEY_").is_some_and(|e| e.eq_ignore_ascii_case(name)))
}

/// The environment name of a lower-case key: `code_ttl` is `LATCHKEY_CODE_TTL`.
fn env_name(key: &str) -> String {
    format!("LATCHKEY_{}", key.to_ascii_uppercase())
}

/// A configuration error: the key and what is wrong with its value. Displays as one line,
/// `invalid configuration: LATCHKEY_X: <what is wrong>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment name of the offending key (`LATCHKEY_CODE_TTL`), or `--config` for a
    /// configuration file that cannot be read.
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

impl ConfigError {
    /// The error of a figment extraction: the first key of its path names the setting;
    /// without a path, the configuration file is at fault.
    fn from_figment(e: figment::Error) -> Self {
        if let figment::error::Kind::MissingField(field) = &e.kind {
            return ConfigError { key: env_name(field), message: "must be set".into() };
        }
        match e.path.first() {
            Some(key) => ConfigError { key: env_name(key), message: one_line(&e.kind.to_string()) },
            None => ConfigError { key: "--config".into(), message: one_line(&e.to_string()) },
        }
    }
}

/// `s` on one line (TOML syntax errors come with a snippet over several lines).
fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The error for a name in `LATCHKEY_SURFACES` that is not among the `known` surfaces (the
/// caller's list): `invalid configuration: LATCHKEY_SURFACES: unknown surface "soap"; known:
/// all, users, v1`.
pub fn unknown_surface(name: &str, known: &[&str]) -> ConfigError {
    ConfigError {
        key: "LATCHKEY_SURFACES".into(),
        message: format!("unknown surface {name:?}; known: all, {}", known.join(", ")),
    }
}

/// Log output format (`LATCHKEY_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The configuration name: `text` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// A URL that may carry a password (database, SMTP, Redis). `Debug` and `Display` show it with
/// the password replaced by `***` ([`latchkey_store::redact`]); [`ExposeSecret::expose_secret`]
/// gives the URL itself, for the one place that connects.
#[derive(Clone)]
pub struct SecretUrl(SecretString);

impl SecretUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(SecretString::from(url.into()))
    }
}

impl ExposeSecret<str> for SecretUrl {
    fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        SecretUrl::new(url)
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> Self {
        SecretUrl::new(url)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&latchkey_store::redact(self.expose_secret()), f)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&latchkey_store::redact(self.expose_secret()))
    }
}

/// Which surfaces to mount (`LATCHKEY_SURFACES`). The names are the surfaces' own; the caller
/// checks them against its list with [`SurfaceSelection::check_known`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SurfaceSelection {
    /// `all`: every surface the server has.
    All,
    /// Only these, by name (possibly none).
    Only(Vec<String>),
}

impl SurfaceSelection {
    /// Whether the surface named `name` is selected.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            SurfaceSelection::All => true,
            SurfaceSelection::Only(names) => names.iter().any(|n| n == name),
        }
    }

    /// Checks that every selected name is among `known`.
    ///
    /// # Errors
    /// [`unknown_surface`] for the first name that is not.
    pub fn check_known(&self, known: &[&str]) -> Result<(), ConfigError> {
        match self {
            SurfaceSelection::All => Ok(()),
            SurfaceSelection::Only(names) => match names.iter().find(|n| !known.contains(&n.as_str())) {
                Some(bad) => Err(unknown_surface(bad, known)),
                None => Ok(()),
            },
        }
    }
}

impl<'de> Deserialize<'de> for SurfaceSelection {
    /// A list ([`de::list`]); `all` anywhere in it selects every surface.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = de::list(deserializer)?;
        Ok(if names.iter().any(|n| n == "all") { SurfaceSelection::All } else { SurfaceSelection::Only(names) })
    }
}

/// Keys Config does not know, for surfaces to extract their own settings from.
///
/// Keys are lower case without the `LATCHKEY_` prefix, from the TOML file and the environment
/// alike (the environment wins). Values are as figment read them: text, numbers, booleans, or
/// TOML arrays and tables. `Debug` shows the key names only, never the values.
#[derive(Clone, Default)]
pub struct SurfaceSettings {
    values: Dict,
}

impl SurfaceSettings {
    /// Sets `key` (lower case, without prefix) to the text `value`, as an environment variable
    /// would.
    pub fn insert(&mut self, key: &str, value: impl Into<String>) {
        self.values.insert(key.to_ascii_lowercase(), Value::from(value.into()));
    }

    /// The keys present, in alphabetical order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// Extracts a surface's settings: `T`'s fields are the surface's keys (lower case, without
    /// prefix), typically with serde defaults for absent keys and [`de`] deserializers for
    /// their values. Keys `T` does not have are ignored.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key as `LATCHKEY_<KEY>`, in the usual one-line form: a bad
    /// value, or `must be set` for an absent key without a default.
    pub fn extract<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        Value::Dict(Tag::Default, self.values.clone()).deserialize().map_err(ConfigError::from_figment)
    }
}

impl fmt::Debug for SurfaceSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SurfaceSettings").field("keys", &self.keys().collect::<Vec<_>>()).finish()
    }
}

/// The validated configuration. Field docs name the key; defaults are in `Default for Config`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `LATCHKEY_LISTEN`: address and port to listen on (port 0 picks a free one).
    #[serde(deserialize_with = "de::socket_addr")]
    pub listen: SocketAddr,
    /// `LATCHKEY_DATABASE_URL`: `sqlite:...` or `postgres://...`.
    #[serde(deserialize_with = "database_url")]
    pub database_url: SecretUrl,
    /// `LATCHKEY_DATABASE_MAX_CONNECTIONS`: pool size, 1 to 1000.
    #[serde(deserialize_with = "database_max_connections")]
    pub database_max_connections: u32,
    /// `LATCHKEY_PUBLIC_URL`, without a trailing slash; `None`: `http://<listen address>`.
    #[serde(deserialize_with = "public_url")]
    pub public_url: Option<String>,
    /// `LATCHKEY_SMTP_URL` (`smtp://` or `smtps://`); `None`: mail goes to the log.
    #[serde(deserialize_with = "smtp_url")]
    pub smtp_url: Option<SecretUrl>,
    /// `LATCHKEY_OUTBOX_DIR`: without SMTP, also write each mail as an `.eml` file here.
    #[serde(deserialize_with = "outbox_dir")]
    pub outbox_dir: Option<PathBuf>,
    /// `LATCHKEY_MAIL_FROM`: the sender mailbox.
    #[serde(deserialize_with = "mail_from")]
    pub mail_from: String,
    /// `LATCHKEY_CODE_TTL`: lifetime of one-time codes, at most a day.
    #[serde(deserialize_with = "code_ttl")]
    pub code_ttl: Duration,
    /// `LATCHKEY_ACCESS_TOKEN_TTL`: lifetime of access and ID tokens, at most 400 days.
    #[serde(deserialize_with = "lifetime")]
    pub access_token_ttl: Duration,
    /// `LATCHKEY_SESSION_TTL`: lifetime of sessions and refresh tokens, at most 400 days.
    #[serde(deserialize_with = "lifetime")]
    pub session_ttl: Duration,
    /// `LATCHKEY_REFRESH_REUSE_WINDOW`: how long a just-rotated refresh token still returns the
    /// same successor, at most an hour.
    #[serde(deserialize_with = "reuse_window")]
    pub refresh_reuse_window: Duration,
    /// `LATCHKEY_UNVERIFIED_ACCOUNT_TTL`: how long an account whose email was never verified
    /// is kept, at most 400 days.
    #[serde(deserialize_with = "lifetime")]
    pub unverified_account_ttl: Duration,
    /// `LATCHKEY_AUDIT_RETENTION`: how long audit events are kept, from an hour to 3650 days.
    #[serde(deserialize_with = "audit_retention")]
    pub audit_retention: Duration,
    /// `LATCHKEY_SESSION_CACHE_TTL`: the longest a credential check is answered from the
    /// session cache without reading the store, from 0 (off) to 60 seconds; default 1 second.
    /// It bounds how late another instance refuses a revoked session when the revocation
    /// bus did not reach it (latchkey_core::session_cache).
    #[serde(deserialize_with = "session_cache_ttl")]
    pub session_cache_ttl: Duration,
    /// `LATCHKEY_SESSION_CACHE_SIZE`: most sessions the session cache keeps, 0 (off) to
    /// 10,000,000; default 10,000 (about 10 MiB at most).
    #[serde(deserialize_with = "session_cache_size")]
    pub session_cache_size: usize,
    /// `LATCHKEY_HASH_QUEUE`: password hashes that may wait for a hashing thread (1 to
    /// 100000); when full, requests get 503 with `Retry-After`.
    #[serde(deserialize_with = "hash_queue")]
    pub hash_queue: usize,
    /// `LATCHKEY_ARGON2_MEMORY_KIB`: argon2id memory cost `m` of new password hashes, in KiB,
    /// 7168 to 1048576; default 19456 (19 MiB). With `argon2_iterations` it must reach one of
    /// OWASP's configurations ([`HashParams::check_strength`]).
    #[serde(deserialize_with = "argon2_memory_kib")]
    pub argon2_memory_kib: u32,
    /// `LATCHKEY_ARGON2_ITERATIONS`: argon2id time cost `t` (passes over memory), 1 to 16;
    /// default 2. A hash stored with other parameters is replaced at its user's next
    /// successful password sign-in.
    #[serde(deserialize_with = "argon2_iterations")]
    pub argon2_iterations: u32,
    /// `LATCHKEY_REGION`: the region in Cognito pool ids and identity ids (`local-1`).
    #[serde(deserialize_with = "region")]
    pub region: String,
    /// `LATCHKEY_USER_POOL_ID`: `<region>_<pool name>`; `None`: `<region>_latchkey`. The pool
    /// name takes part in every SRP verifier, so changing it invalidates them (they are
    /// recomputed at each user's next password sign-in).
    #[serde(deserialize_with = "user_pool_id")]
    pub user_pool_id: Option<String>,
    /// `LATCHKEY_SRP`: whether the `cognito` surface offers SRP sign-in (`USER_SRP_AUTH`) and
    /// the core keeps SRP verifiers (on).
    #[serde(deserialize_with = "de::boolean")]
    pub srp: bool,
    /// `LATCHKEY_METRICS_ALLOW`: addresses and networks (CIDR) besides loopback that may read
    /// `/metrics`.
    #[serde(deserialize_with = "networks")]
    pub metrics_allow: Vec<ipnet::IpNet>,
    /// `LATCHKEY_ALLOWED_ORIGINS`: origins (`scheme://host[:port]`, lower case, without the
    /// scheme's default port) whose pages may send cookie-authenticated requests and read the
    /// answers (CORS with credentials); empty: the server's own origin only.
    #[serde(deserialize_with = "origins")]
    pub allowed_origins: Vec<String>,
    /// `LATCHKEY_REQUIRE_EMAIL_VERIFICATION`.
    #[serde(deserialize_with = "de::boolean")]
    pub require_email_verification: bool,
    /// `LATCHKEY_JWT_ALG`: algorithm of new signing keys.
    #[serde(deserialize_with = "de::signing_algorithm")]
    pub jwt_alg: SigningAlgorithm,
    /// `LATCHKEY_SURFACES`: the surfaces to mount.
    pub surfaces: SurfaceSelection,
    /// `LATCHKEY_PASSWORD_MIN_LENGTH`: in characters, 1 to 128.
    #[serde(deserialize_with = "password_min_length")]
    pub password_min_length: usize,
    /// `LATCHKEY_TRUST_FORWARDED_FOR`.
    #[serde(deserialize_with = "de::boolean")]
    pub trust_forwarded_for: bool,
    /// `LATCHKEY_REDIS_URL` (`redis://` or `rediss://`); `None`: each instance counts alone.
    #[serde(deserialize_with = "redis_url")]
    pub redis_url: Option<SecretUrl>,
    /// `LATCHKEY_RATE_LIMIT`.
    #[serde(deserialize_with = "de::boolean")]
    pub rate_limit: bool,
    /// `LATCHKEY_SECRET` (or the contents of `LATCHKEY_SECRET_FILE`), at least 32 bytes;
    /// `None`: generated into `latchkey.secret`.
    #[serde(deserialize_with = "server_secret")]
    pub secret: Option<SecretString>,
    /// `LATCHKEY_LOG`: a tracing `EnvFilter`.
    #[serde(deserialize_with = "log_filter")]
    pub log: String,
    /// `LATCHKEY_LOG_FORMAT`.
    #[serde(deserialize_with = "de::log_format")]
    pub log_format: LogFormat,
    /// The keys Config does not know, for the surfaces.
    #[serde(skip)]
    pub surface_settings: SurfaceSettings,
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
            code_ttl: Duration::from_secs(10 * 60),
            access_token_ttl: Duration::from_secs(15 * 60),
            session_ttl: Duration::from_secs(30 * 86_400),
            refresh_reuse_window: Duration::from_secs(10),
            unverified_account_ttl: Duration::from_secs(7 * 86_400),
            audit_retention: Duration::from_secs(90 * 86_400),
            session_cache_ttl: Duration::from_secs(1),
            session_cache_size: 10_000,
            hash_queue: 256,
            argon2_memory_kib: HashParams::default().memory_kib,
            argon2_iterations: HashParams::default().iterations,
            region: "local-1".into(),
            user_pool_id: None,
            srp: true,
            metrics_allow: Vec::new(),
            allowed_origins: Vec::new(),
            require_email_verification: true,
            jwt_alg: SigningAlgorithm::EdDSA,
            surfaces: SurfaceSelection::All,
            password_min_length: 8,
            trust_forwarded_for: false,
            redis_url: None,
            rate_limit: true,
            secret: None,
            log: "info".into(),
            log_format: LogFormat::Text,
            surface_settings: SurfaceSettings::default(),
        }
    }
}

// Deserializers of single keys of `Config`, on top of `de`.

const DAY: Duration = Duration::from_secs(86_400);

/// A duration no longer than `max` (named in the message as `max_text`).
fn bounded<'de, D: serde::Deserializer<'de>>(d: D, max: Duration, max_text: &str) -> Result<Duration, D::Error> {
    let value = de::duration(d)?;
    if value > max {
        return Err(serde::de::Error::custom(format!("{} is longer than {max_text}", de::format_duration(value))));
    }
    Ok(value)
}

fn code_ttl<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    bounded(d, DAY, "a day")
}

fn lifetime<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    bounded(d, 400 * DAY, "400 days")
}

fn reuse_window<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    bounded(d, Duration::from_secs(3600), "an hour")
}

fn audit_retention<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let value = bounded(d, 3650 * DAY, "3650 days")?;
    if value < Duration::from_secs(3600) {
        return Err(serde::de::Error::custom(format!("{} is shorter than an hour", de::format_duration(value))));
    }
    Ok(value)
}

fn session_cache_ttl<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    bounded(d, Duration::from_secs(60), "a minute")
}

fn session_cache_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    de::number_in_range(d, 0, 10_000_000)
}

fn hash_queue<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    de::number_in_range(d, 1, 100_000)
}

fn argon2_memory_kib<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    de::number_in_range(d, HashParams::MIN_MEMORY_KIB, MAX_ARGON2_MEMORY_KIB)
}

fn argon2_iterations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    de::number_in_range(d, 1, MAX_ARGON2_ITERATIONS)
}

fn region<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = de::text(d)?;
    let valid = (1..=32).contains(&v.len())
        && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-');
    if valid { Ok(v) } else { Err(serde::de::Error::custom(format!("{v:?} is not a region like eu-west-1"))) }
}

fn user_pool_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = de::text(d)?;
    let valid = v.split_once('_').is_some_and(|(region, name)| {
        !region.is_empty() && (1..=55).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if valid {
        Ok(Some(v))
    } else {
        Err(serde::de::Error::custom(format!("{v:?} is not a pool id like local-1_latchkey")))
    }
}

fn networks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    de::list(d)?
        .iter()
        .map(|item| {
            item.parse::<ipnet::IpNet>().or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)).map_err(
                |_| serde::de::Error::custom(format!("{item:?} is not an address or a network like 10.0.0.0/8")),
            )
        })
        .collect()
}

fn origins<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    de::list(d)?.iter().map(|item| origin(item).map_err(serde::de::Error::custom)).collect()
}

/// A web origin as browsers send it in `Origin` (RFC 6454 section 6.1): `http` or `https`, a
/// host, an optional port, nothing else; lower-cased, the scheme's default port dropped.
fn origin(item: &str) -> Result<String, String> {
    let refuse = || format!("{item:?} is not an origin like https://app.example.com (scheme://host[:port], no path)");
    let lower = item.trim().to_ascii_lowercase();
    let (scheme, authority) = lower.split_once("://").ok_or_else(refuse)?;
    if !matches!(scheme, "http" | "https") {
        return Err(refuse());
    }
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal: `[::1]` or `[::1]:8443`.
        Some(rest) => {
            let (inside, after) = rest.split_once(']').ok_or_else(refuse)?;
            if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
                return Err(refuse());
            }
            (
                &authority[..inside.len() + 2],
                if after.is_empty() { None } else { Some(after.strip_prefix(':').ok_or_else(refuse)?) },
            )
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            let name_ok = !host.is_empty()
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                && !host.starts_with('.')
                && !host.ends_with('.');
            if !name_ok {
                return Err(refuse());
            }
            (host, port)
        }
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err()) {
        return Err(refuse());
    }
    let default = if scheme == "https" { "443" } else { "80" };
    Ok(match port {
        Some(p) if p != default => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

fn database_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretUrl, D::Error> {
    let v = de::text(d)?.trim().to_owned();
    if !(v.starts_with("sqlite:") || de::check_scheme(&v, &["postgres", "postgresql"]).is_ok()) {
        return Err(serde::de::Error::custom("must start with sqlite:// or postgres://"));
    }
    Ok(SecretUrl::new(v))
}

fn database_max_connections<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    de::number_in_range(d, 1, 1000)
}

fn password_min_length<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    de::number_in_range(d, 1, 128)
}

fn public_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = de::text(d)?.trim().trim_end_matches('/').to_owned();
    let rest = v.strip_prefix("https://").or_else(|| v.strip_prefix("http://"));
    if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
        return Err(serde::de::Error::custom(format!("{v:?} is not an http:// or https:// URL")));
    }
    Ok(Some(v))
}

/// An optional URL with one of `schemes`; empty text means unset.
fn optional_url<'de, D: serde::Deserializer<'de>>(d: D, schemes: &[&str]) -> Result<Option<SecretUrl>, D::Error> {
    let v = de::text(d)?.trim().to_owned();
    if v.is_empty() {
        return Ok(None);
    }
    de::check_scheme(&v, schemes).map_err(serde::de::Error::custom)?;
    Ok(Some(SecretUrl::new(v)))
}

fn smtp_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SecretUrl>, D::Error> {
    optional_url(d, &["smtp", "smtps"])
}

fn redis_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SecretUrl>, D::Error> {
    optional_url(d, &["redis", "rediss"])
}

fn outbox_dir<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let v = de::text(d)?;
    Ok((!v.trim().is_empty()).then(|| PathBuf::from(v)))
}

fn mail_from<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = de::text(d)?;
    if v.parse::<lettre::message::Mailbox>().is_err() {
        return Err(serde::de::Error::custom(format!(
            "{v:?} is not a mailbox like \"Latchkey <no-reply@example.com>\""
        )));
    }
    Ok(v)
}

fn server_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    let v = de::secret(d)?;
    if v.expose_secret().len() < latchkey_core::secret::ServerSecret::MIN_LEN {
        return Err(serde::de::Error::custom("must be at least 32 bytes (e.g. `openssl rand -base64 32`)"));
    }
    Ok(Some(v))
}

fn log_filter<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = de::text(d)?;
    tracing_subscriber::EnvFilter::try_new(&v).map_err(|e| serde::de::Error::custom(format!("{v:?}: {e}")))?;
    Ok(v)
}

/// Refuses an environment value (`key` without the prefix) that figment 0.10 cannot parse.
///
/// figment reads an environment value that starts with `"`, `[` or `{` as a TOML-ish value, and
/// its unescaping of a quoted string slices the text by character index where it means byte
/// index: a backslash escape after non-ASCII text panics (`"é\n"`) or silently drops
/// characters. Such values are refused before figment sees them; unquoted text, and quoted
/// text that is all ASCII, are read as before.
///
/// # Errors
/// A [`ConfigError`] naming `LATCHKEY_<KEY>`.
fn check_figment_can_read(key: &str, value: &str) -> Result<(), ConfigError> {
    let quoted = value.trim_start_matches(|c: char| c.is_ascii_whitespace()).starts_with(['"', '[', '{']);
    if quoted && value.contains('\\') && !value.is_ascii() {
        return Err(ConfigError {
            key: env_name(key),
            message: "a quoted value with a backslash escape and non-ASCII text cannot be read; \
                      write it without quotes or set it in the configuration file"
                .into(),
        });
    }
    Ok(())
}

/// A figment provider over the merged sources (file, then environment) that gives them their
/// final shape: keys in lower case, and for each key of [`Config`] that is absent, the contents
/// of the file named by `<key>_file` (`LATCHKEY_<KEY>_FILE`) without the line breaks at its
/// end (files written with `echo` or an editor end in one).
struct FileVariants {
    sources: Figment,
}

impl Provider for FileVariants {
    fn metadata(&self) -> Metadata {
        Metadata::named("LATCHKEY_<KEY>_FILE")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let raw: Dict = self.sources.extract()?;
        let mut values: Dict = raw.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        for key in KEYS {
            let name = key.name();
            let file_key = format!("{name}_file");
            if values.contains_key(&name) {
                continue;
            }
            let Some(path) = values.get(&file_key) else { continue };
            let path = de::text(path).map_err(|e| e.with_path(&file_key))?;
            let text = std::fs::read_to_string(&path)
                .map_err(|e| figment::Error::from(format!("{path}: {e}")).with_path(&file_key))?;
            values.insert(name, Value::from(text.trim_end_matches(['\r', '\n']).to_owned()));
        }
        Ok(Profile::Default.collect(values))
    }
}

impl Config {
    /// Loads the configuration: defaults, then the TOML `file` if given, then the `LATCHKEY_*`
    /// environment variables, then `LATCHKEY_<KEY>_FILE` for keys still unset.
    ///
    /// `claimed` lists the keys the surfaces read (lower case, without prefix). Returns the
    /// configuration and warnings, to log once logging is up, for keys that are neither
    /// `Config`'s nor claimed (see [`Config::warnings_for`]).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first bad key, or `--config` when the file is missing or
    /// is not valid TOML.
    pub fn load(file: Option<&Path>, claimed: &[&str]) -> Result<(Config, Vec<String>), ConfigError> {
        let env = Env::prefixed("LATCHKEY_");
        for (key, value) in env.iter() {
            check_figment_can_read(key.as_str(), &value)?;
        }
        Self::load_from(file, env, claimed)
    }

    /// [`Config::load`] with `env` in place of the process environment (for tests: values are
    /// then whatever `env` provides, keys lower case without prefix).
    fn load_from(
        file: Option<&Path>,
        env: impl Provider,
        claimed: &[&str],
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let mut sources = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError {
                    key: "--config".into(),
                    message: format!("{} does not exist", path.display()),
                });
            }
            sources = sources.merge(Toml::file_exact(path));
        }
        let figment = Figment::from(FileVariants { sources: sources.merge(env) });
        let error = |e: figment::Error| {
            let mut error = ConfigError::from_figment(e);
            if let (Some(path), "--config") = (file, error.key.as_str()) {
                error.message = format!("{}: {}", path.display(), error.message);
            }
            error
        };
        let mut config: Config = figment.extract().map_err(error)?;
        config.hash_params().check_strength().map_err(|message| ConfigError {
            key: "LATCHKEY_ARGON2_ITERATIONS".into(),
            message: format!("with LATCHKEY_ARGON2_MEMORY_KIB={}: {message}", config.argon2_memory_kib),
        })?;
        let values: Dict = figment.extract().map_err(error)?;
        config.surface_settings.values = values
            .into_iter()
            .filter(|(k, _)| !is_config_key(k) && !k.strip_suffix("_file").is_some_and(is_config_key))
            .collect();
        let warnings = config.warnings_for(claimed);
        Ok((config, warnings))
    }

    /// Builds a configuration from lower-case keys (without the `LATCHKEY_` prefix) and their
    /// text values, read as environment variables are (through the same pipeline as
    /// [`Config::load`], without a file). Returns it with the unknown-key warnings (no key is
    /// claimed by a surface).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first bad key.
    pub fn from_map(raw: &BTreeMap<String, String>) -> Result<(Config, Vec<String>), ConfigError> {
        for (key, value) in raw {
            check_figment_can_read(key, value)?;
        }
        // figment reads environment values as TOML-ish values (`1` is an integer); so do we.
        let values: Dict =
            raw.iter().map(|(k, v)| (k.clone(), v.parse::<Value>().unwrap_or_else(|e| match e {}))).collect();
        Self::load_from(None, Serialized::defaults(values), &[])
    }

    /// Warnings for keys that are neither `Config`'s nor in `claimed` (the keys surfaces read,
    /// lower case): `unknown configuration key LATCHKEY_DATABSE_URL ignored`. Keys starting
    /// with `test_` or `bench_` (the test suites' and benchmarks' own variables) are not
    /// warned about.
    pub fn warnings_for(&self, claimed: &[&str]) -> Vec<String> {
        self.surface_settings
            .keys()
            .filter(|k| !claimed.contains(k) && !k.starts_with("test_") && !k.starts_with("bench_"))
            .map(|k| format!("unknown configuration key {} ignored", env_name(k)))
            .collect()
    }

    /// The issuer and external base URL: `LATCHKEY_PUBLIC_URL`, or `http://<bound>` where
    /// `bound` is the address actually listened on.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{bound}"))
    }

    /// The argon2id parameters of new password hashes: `LATCHKEY_ARGON2_MEMORY_KIB` and
    /// `LATCHKEY_ARGON2_ITERATIONS`, one lane.
    pub fn hash_params(&self) -> HashParams {
        HashParams { memory_kib: self.argon2_memory_kib, iterations: self.argon2_iterations, parallelism: 1 }
    }

    /// The Cognito user pool id: `LATCHKEY_USER_POOL_ID`, else `<LATCHKEY_REGION>_latchkey`.
    pub fn user_pool_id(&self) -> String {
        self.user_pool_id.clone().unwrap_or_else(|| format!("{}_latchkey", self.region))
    }

    /// Whether the surface named `name` is mounted ([`SurfaceSelection::includes`]).
    pub fn surface_enabled(&self, name: &str) -> bool {
        self.surfaces.includes(name)
    }

    /// The `--help` text listing every key of [`Config`] with its default.
    pub fn help_text() -> String {
        let mut out = String::from(
            "Configuration (environment variables; in a --config TOML file use the name without LATCHKEY_, in lower case):\n",
        );
        for key in KEYS {
            out.push_str(&format!("  {:<38} {}\n  {:<38} default: {}\n", key.env, key.help, "", key.default_text()));
        }
        out.push_str("  Secrets can also be read from a file named by <KEY>_FILE, e.g. LATCHKEY_SECRET_FILE.\n");
        out
    }
}

pub mod de {
    //! serde deserializers for configuration values, for `#[serde(deserialize_with = "...")]`
    //! in [`Config`](super::Config) and in the surfaces' settings structs.
    //!
    //! figment reads environment variables as TOML-ish values: `LATCHKEY_RATE_LIMIT=off` arrives
    //! as text, `=1` as an integer, `=true` as a boolean, `=1.5` as a float. So every
    //! deserializer here takes text, integers, floats and booleans alike (through [`text`]) and
    //! parses the text; TOML arrays are accepted where a list is expected. Errors are the
    //! message only; figment adds the key, and [`ConfigError`](super::ConfigError) shows it as
    //! `LATCHKEY_<KEY>`.

    use std::fmt;
    use std::net::SocketAddr;
    use std::time::Duration;

    use latchkey_core::token::SigningAlgorithm;
    use secrecy::SecretString;
    use serde::Deserializer;
    use serde::de::{Error, MapAccess, SeqAccess, Visitor};

    use super::LogFormat;

    /// A value as figment gives it: one scalar, or a list of them.
    enum Raw {
        Text(String),
        List(Vec<String>),
    }

    struct RawVisitor;

    impl<'de> Visitor<'de> for RawVisitor {
        type Value = Raw;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a value")
        }

        fn visit_bool<E: Error>(self, v: bool) -> Result<Raw, E> {
            Ok(Raw::Text(v.to_string()))
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<Raw, E> {
            Ok(Raw::Text(v.to_string()))
        }

        fn visit_i128<E: Error>(self, v: i128) -> Result<Raw, E> {
            Ok(Raw::Text(v.to_string()))
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<Raw, E> {
            Ok(Raw::Text(v.to_string()))
        }

        fn visit_u128<E: Error>(self, v: u128) -> Result<Raw, E> {
            Ok(Raw::Text(v.to_string()))
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<Raw, E> {
            Ok(Raw::Text(v.to_string()))
        }

        fn visit_char<E: Error>(self, v: char) -> Result<Raw, E> {
            Ok(Raw::Text(v.to_string()))
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<Raw, E> {
            Ok(Raw::Text(v.to_owned()))
        }

        fn visit_string<E: Error>(self, v: String) -> Result<Raw, E> {
            Ok(Raw::Text(v))
        }

        fn visit_unit<E: Error>(self) -> Result<Raw, E> {
            Ok(Raw::Text(String::new()))
        }

        fn visit_none<E: Error>(self) -> Result<Raw, E> {
            Ok(Raw::Text(String::new()))
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
            d.deserialize_any(self)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<Item>()? {
                items.push(item.0);
            }
            Ok(Raw::List(items))
        }

        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Raw, A::Error> {
            Err(A::Error::custom("is a table; expected a single value"))
        }
    }

    /// One element of a list: a scalar as text.
    struct Item(String);

    impl<'de> serde::Deserialize<'de> for Item {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            match d.deserialize_any(RawVisitor)? {
                Raw::Text(s) => Ok(Item(s)),
                Raw::List(_) => Err(D::Error::custom("a list may not contain lists")),
            }
        }
    }

    /// Any scalar as text, untrimmed: text as is, numbers and booleans written out (`1`,
    /// `true`). A TOML array gives its elements joined by commas.
    ///
    /// # Errors
    /// When the value is a table.
    pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(match d.deserialize_any(RawVisitor)? {
            Raw::Text(s) => s,
            Raw::List(items) => items.join(","),
        })
    }

    /// A secret as text, untrimmed, as [`text`] reads it.
    ///
    /// # Errors
    /// When the value is a table.
    pub fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
        text(d).map(SecretString::from)
    }

    /// Parses a duration written with units, such as `90s`, `15m`, `30d`, `1h 30m` or `500ms`
    /// (humantime syntax). It must be longer than zero. A bare number is refused: it would be
    /// unclear whether it means seconds or milliseconds.
    ///
    /// # Errors
    /// A message saying what is wrong with `s`.
    pub fn parse_duration(s: &str) -> Result<Duration, String> {
        let d = humantime::parse_duration(s.trim())
            .map_err(|_| format!("{s:?} is not a duration; use a number with a unit, e.g. 90s, 15m, 30d"))?;
        if d.is_zero() {
            return Err("must be longer than zero".into());
        }
        Ok(d)
    }

    /// Writes `d` the way [`parse_duration`] reads it, in the largest whole units (`10m`,
    /// `30d`, `1h 30m`, `500ms`), to the millisecond.
    pub fn format_duration(d: Duration) -> String {
        let mut secs = d.as_secs();
        let mut parts = Vec::new();
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if secs >= size {
                parts.push(format!("{}{unit}", secs / size));
                secs %= size;
            }
        }
        if d.subsec_millis() > 0 {
            parts.push(format!("{}ms", d.subsec_millis()));
        }
        if parts.is_empty() { "0s".to_owned() } else { parts.join(" ") }
    }

    /// A positive duration with units ([`parse_duration`]): `90s`, `15m`, `30d`, `1h 30m`. A
    /// bare number (`LATCHKEY_CODE_TTL=600`) is refused.
    ///
    /// # Errors
    /// When the value is not such a duration, or is zero.
    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse_duration(&text(d)?).map_err(D::Error::custom)
    }

    /// A boolean: `true`/`false`, `on`/`off`, `yes`/`no`, `1`/`0`, in any case, or a TOML
    /// boolean.
    ///
    /// # Errors
    /// For any other value.
    pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        let s = text(d)?;
        match s.trim().to_ascii_lowercase().as_str() {
            "true" | "on" | "yes" | "1" => Ok(true),
            "false" | "off" | "no" | "0" => Ok(false),
            _ => Err(D::Error::custom(format!("{s:?} is not a boolean; use true or false (on or off)"))),
        }
    }

    /// A list: comma-separated text (`a, b`) or a TOML array (`["a", "b"]`). Items are trimmed;
    /// empty items are dropped, so empty text is an empty list.
    ///
    /// # Errors
    /// When the value is a table or an array holds lists or tables.
    pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        let items = match d.deserialize_any(RawVisitor)? {
            Raw::Text(s) => s.split(',').map(str::to_owned).collect(),
            Raw::List(items) => items,
        };
        Ok(items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_owned).collect())
    }

    /// A socket address such as `127.0.0.1:8080` or `[::1]:8080`.
    ///
    /// # Errors
    /// When the value is not an IP address with a port.
    pub fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let v = text(d)?;
        v.trim().parse().map_err(|_| D::Error::custom(format!("{v:?} is not an address like 127.0.0.1:8080")))
    }

    /// A JWS signing algorithm by its exact name: `EdDSA`, `ES256` or `RS256`.
    ///
    /// # Errors
    /// For any other name.
    pub fn signing_algorithm<'de, D: Deserializer<'de>>(d: D) -> Result<SigningAlgorithm, D::Error> {
        let v = text(d)?;
        SigningAlgorithm::from_name(v.trim())
            .ok_or_else(|| D::Error::custom(format!("{v:?} is not one of EdDSA, ES256, RS256")))
    }

    /// A log format: `text` or `json`.
    ///
    /// # Errors
    /// For any other value.
    pub fn log_format<'de, D: Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
        let v = text(d)?;
        match v.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(D::Error::custom(format!("{v:?} is not text or json"))),
        }
    }

    /// An integer from `min` to `max` inclusive, written as a number or as text. For
    /// `deserialize_with`, wrap it: `fn pool<'de, D: Deserializer<'de>>(d: D) -> Result<u32,
    /// D::Error> { de::number_in_range(d, 1, 1000) }`.
    ///
    /// # Errors
    /// When the value is not an integer in the range.
    pub fn number_in_range<'de, D, T>(d: D, min: T, max: T) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: std::str::FromStr + PartialOrd + fmt::Display,
    {
        let v = text(d)?;
        v.trim()
            .parse::<T>()
            .ok()
            .filter(|n| *n >= min && *n <= max)
            .ok_or_else(|| D::Error::custom(format!("{v:?} is not a number from {min} to {max}")))
    }

    /// Checks that `url` starts with `<scheme>://` for one of `schemes` (given without `://`).
    ///
    /// # Errors
    /// `must start with smtp:// or smtps://` (naming `schemes`) when it does not.
    pub fn check_scheme(url: &str, schemes: &[&str]) -> Result<(), String> {
        let ok = schemes.iter().any(|s| url.strip_prefix(s).is_some_and(|rest| rest.starts_with("://")));
        if ok {
            return Ok(());
        }
        let names: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
        Err(format!("must start with {}", names.join(" or ")))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    /// An environment for [`Config::load_from`]: values parsed as figment's `Env` parses them.
    fn env(pairs: &[(&str, &str)]) -> Serialized<Dict> {
        Serialized::defaults(
            pairs.iter().map(|(k, v)| ((*k).to_owned(), v.parse::<Value>().unwrap_or_else(|e| match e {}))).collect(),
        )
    }

    #[test]
    fn defaults_match_the_wire_contract() {
        let (c, warnings) = Config::from_map(&map(&[])).expect("defaults");
        assert!(warnings.is_empty());
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url.expose_secret(), "sqlite://latchkey.db");
        assert_eq!(c.code_ttl, Duration::from_secs(600));
        assert_eq!(c.access_token_ttl, Duration::from_secs(900));
        assert_eq!(c.session_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(c.refresh_reuse_window, Duration::from_secs(10));
        assert_eq!(c.audit_retention, Duration::from_secs(90 * 86_400));
        assert!(c.require_email_verification && c.rate_limit);
        // The Cognito client ids (default `local`) are the cognito surface's setting now.
        assert_eq!(c.surface_settings.keys().count(), 0);
        assert_eq!(c.surfaces, SurfaceSelection::All);
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
        #[derive(Deserialize)]
        struct Cognito {
            #[serde(deserialize_with = "de::list")]
            client_ids: Vec<String>,
        }
        let cognito: Cognito = c.surface_settings.extract().expect("cognito settings");
        assert_eq!(cognito.client_ids, vec!["a", "b"]);
        assert!(c.surface_enabled("v1") && !c.surface_enabled("graphql"));
        assert!(!c.rate_limit);
        assert_eq!(c.public_url.as_deref(), Some("https://auth.example.com"));
        assert_eq!(c.password_min_length, 12);
    }

    #[test]
    fn environment_values_of_every_shape_parse() {
        // figment makes `1` an integer, `true` a boolean, `1.5` a float.
        let (c, _) = Config::from_map(&map(&[
            ("rate_limit", "0"),
            ("trust_forwarded_for", "YES"),
            ("require_email_verification", "false"),
            ("database_max_connections", "1000"),
            ("log_format", "json"),
            ("smtp_url", ""),
            ("redis_url", "rediss://:pw@cache:6380"),
        ]))
        .expect("valid");
        assert!(!c.rate_limit && c.trust_forwarded_for && !c.require_email_verification);
        assert_eq!(c.database_max_connections, 1000);
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(c.smtp_url.is_none(), "empty means unset");
        assert_eq!(c.redis_url.as_ref().map(ExposeSecret::expose_secret), Some("rediss://:pw@cache:6380"));
    }

    #[test]
    fn durations_have_upper_bounds_and_networks_parse() {
        let (c, _) = Config::from_map(&map(&[
            ("session_ttl", "400d"),
            ("code_ttl", "1d"),
            ("unverified_account_ttl", "30d"),
            ("hash_queue", "64"),
            ("metrics_allow", "10.0.0.0/8, 192.0.2.7, 2001:db8::/32"),
        ]))
        .expect("within bounds");
        assert_eq!(c.session_ttl, Duration::from_secs(400 * 86_400));
        assert_eq!(c.unverified_account_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(c.hash_queue, 64);
        assert_eq!(c.metrics_allow.len(), 3);
        assert!(c.metrics_allow[1].contains(&"192.0.2.7".parse::<std::net::IpAddr>().expect("ip")));
        let e = Config::from_map(&map(&[("session_ttl", "100000000d")])).expect_err("too long");
        assert!(e.to_string().contains("longer than 400 days"), "{e}");
    }

    #[test]
    fn argon2_parameters_default_to_owasp_first_and_refuse_weaker_pairs() {
        let (c, _) = Config::from_map(&map(&[])).expect("default");
        assert_eq!(c.hash_params(), HashParams { memory_kib: 19_456, iterations: 2, parallelism: 1 });
        let (c, _) =
            Config::from_map(&map(&[("argon2_memory_kib", "7168"), ("argon2_iterations", "5")])).expect("OWASP");
        assert_eq!(c.hash_params(), HashParams { memory_kib: 7_168, iterations: 5, parallelism: 1 });
        let (c, _) =
            Config::from_map(&map(&[("argon2_memory_kib", "65536"), ("argon2_iterations", "3")])).expect("more");
        assert_eq!(c.hash_params().memory_kib, 65_536);
        let e = Config::from_map(&map(&[("argon2_memory_kib", "7168")])).expect_err("7 MiB × 2 passes");
        assert_eq!(
            e.to_string(),
            "invalid configuration: LATCHKEY_ARGON2_ITERATIONS: with LATCHKEY_ARGON2_MEMORY_KIB=7168: 7168 KiB needs \
             at least 5 passes (memory × passes at least 35840 KiB, OWASP's minimum)"
        );
        let e = Config::from_map(&map(&[("argon2_memory_kib", "1024")])).expect_err("1 MiB");
        assert_eq!(e.key, "LATCHKEY_ARGON2_MEMORY_KIB", "{e}");
        assert!(e.to_string().contains("from 7168 to 1048576"), "{e}");
    }

    #[test]
    fn allowed_origins_are_exact_origins_normalised_as_browsers_send_them() {
        let (c, _) = Config::from_map(&map(&[(
            "allowed_origins",
            "https://App.Example.com, http://localhost:3000,https://admin.example.com:443, http://[::1]:8080",
        )]))
        .expect("origins");
        assert_eq!(
            c.allowed_origins,
            ["https://app.example.com", "http://localhost:3000", "https://admin.example.com", "http://[::1]:8080"]
        );
        let (c, _) = Config::from_map(&map(&[])).expect("default");
        assert!(c.allowed_origins.is_empty(), "none unless configured");
        let e = Config::from_map(&map(&[("allowed_origins", "https://app.example.com/")])).expect_err("path");
        assert!(e.to_string().contains("no path"), "{e}");
    }

    #[test]
    fn audit_retention_is_between_an_hour_and_ten_years() {
        for (value, expected) in [("1h", 3600), ("3650d", 3650 * 86_400), ("2w", 14 * 86_400), ("36h", 36 * 3600)] {
            let (c, _) = Config::from_map(&map(&[("audit_retention", value)])).expect(value);
            assert_eq!(c.audit_retention, Duration::from_secs(expected), "{value}");
        }
        let e = Config::from_map(&map(&[("audit_retention", "30m")])).expect_err("too short");
        assert!(
            e.to_string().contains("LATCHKEY_AUDIT_RETENTION") && e.to_string().contains("shorter than an hour"),
            "{e}"
        );
        let e = Config::from_map(&map(&[("audit_retention", "3651d")])).expect_err("too long");
        assert!(e.to_string().contains("longer than 3650 days"), "{e}");
    }

    #[test]
    fn a_bad_value_names_its_key_in_one_line() {
        for (key, value, env) in [
            ("code_ttl", "ten minutes", "LATCHKEY_CODE_TTL"),
            ("code_ttl", "600", "LATCHKEY_CODE_TTL"),
            ("listen", "8080", "LATCHKEY_LISTEN"),
            ("jwt_alg", "HS256", "LATCHKEY_JWT_ALG"),
            ("secret", "short", "LATCHKEY_SECRET"),
            ("database_url", "mysql://x", "LATCHKEY_DATABASE_URL"),
            ("database_max_connections", "1001", "LATCHKEY_DATABASE_MAX_CONNECTIONS"),
            ("password_min_length", "0", "LATCHKEY_PASSWORD_MIN_LENGTH"),
            ("require_email_verification", "maybe", "LATCHKEY_REQUIRE_EMAIL_VERIFICATION"),
            ("session_ttl", "0s", "LATCHKEY_SESSION_TTL"),
            ("smtp_url", "http://mail", "LATCHKEY_SMTP_URL"),
            ("redis_url", "[a, b]", "LATCHKEY_REDIS_URL"),
            ("public_url", "auth.example.com", "LATCHKEY_PUBLIC_URL"),
            ("mail_from", "nobody", "LATCHKEY_MAIL_FROM"),
            ("log", "info,latchkey=loud", "LATCHKEY_LOG"),
            ("log_format", "xml", "LATCHKEY_LOG_FORMAT"),
            ("listen", "{ a = 1 }", "LATCHKEY_LISTEN"),
            ("session_ttl", "100000000d", "LATCHKEY_SESSION_TTL"),
            ("access_token_ttl", "401d", "LATCHKEY_ACCESS_TOKEN_TTL"),
            ("code_ttl", "25h", "LATCHKEY_CODE_TTL"),
            ("refresh_reuse_window", "2h", "LATCHKEY_REFRESH_REUSE_WINDOW"),
            ("unverified_account_ttl", "1000d", "LATCHKEY_UNVERIFIED_ACCOUNT_TTL"),
            ("audit_retention", "59m", "LATCHKEY_AUDIT_RETENTION"),
            ("audit_retention", "3651d", "LATCHKEY_AUDIT_RETENTION"),
            ("audit_retention", "90", "LATCHKEY_AUDIT_RETENTION"),
            ("audit_retention", "forever", "LATCHKEY_AUDIT_RETENTION"),
            ("hash_queue", "0", "LATCHKEY_HASH_QUEUE"),
            ("argon2_memory_kib", "4096", "LATCHKEY_ARGON2_MEMORY_KIB"),
            ("argon2_memory_kib", "2000000", "LATCHKEY_ARGON2_MEMORY_KIB"),
            ("argon2_iterations", "0", "LATCHKEY_ARGON2_ITERATIONS"),
            ("argon2_iterations", "17", "LATCHKEY_ARGON2_ITERATIONS"),
            ("argon2_iterations", "1", "LATCHKEY_ARGON2_ITERATIONS"),
            ("metrics_allow", "10.0.0.0/33", "LATCHKEY_METRICS_ALLOW"),
            ("allowed_origins", "https://app.example.com/", "LATCHKEY_ALLOWED_ORIGINS"),
            ("allowed_origins", "https://app.example.com/path", "LATCHKEY_ALLOWED_ORIGINS"),
            ("allowed_origins", "app.example.com", "LATCHKEY_ALLOWED_ORIGINS"),
            ("allowed_origins", "ftp://app.example.com", "LATCHKEY_ALLOWED_ORIGINS"),
            ("allowed_origins", "https://app.example.com:99999", "LATCHKEY_ALLOWED_ORIGINS"),
            ("allowed_origins", "https://user@app.example.com", "LATCHKEY_ALLOWED_ORIGINS"),
            ("allowed_origins", "https://*.example.com", "LATCHKEY_ALLOWED_ORIGINS"),
            ("allowed_origins", "*", "LATCHKEY_ALLOWED_ORIGINS"),
            ("allowed_origins", "https://app.example.com?x=1", "LATCHKEY_ALLOWED_ORIGINS"),
            ("region", "EU West", "LATCHKEY_REGION"),
            ("user_pool_id", "latchkey", "LATCHKEY_USER_POOL_ID"),
            ("user_pool_id", "eu-1_pool-name", "LATCHKEY_USER_POOL_ID"),
        ] {
            let e = Config::from_map(&map(&[(key, value)])).expect_err(key);
            assert_eq!(e.key, env, "{key}={value}: {e}");
            let line = e.to_string();
            assert!(line.starts_with(&format!("invalid configuration: {env}: ")), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn unknown_surfaces_are_reported_by_the_caller_in_one_line() {
        let (c, _) = Config::from_map(&map(&[("surfaces", "users,soap")])).expect("names are the caller's to check");
        let known = ["users", "v1"];
        let e = c.surfaces.check_known(&known).expect_err("soap is unknown");
        assert_eq!(e, unknown_surface("soap", &known));
        assert_eq!(
            e.to_string(),
            "invalid configuration: LATCHKEY_SURFACES: unknown surface \"soap\"; known: all, users, v1"
        );
        let (c, _) = Config::from_map(&map(&[("surfaces", "v1, all")])).expect("valid");
        assert_eq!(c.surfaces, SurfaceSelection::All);
        assert!(c.surfaces.check_known(&known).is_ok() && c.surfaces.includes("anything"));
        let (c, _) = Config::from_map(&map(&[("surfaces", "")])).expect("valid");
        assert!(!c.surface_enabled("v1"), "an empty list mounts no surface");
    }

    #[test]
    fn unknown_keys_are_warned_about() {
        let (c, warnings) = Config::from_map(&map(&[("databse_url", "x")])).expect("valid");
        assert_eq!(warnings, vec!["unknown configuration key LATCHKEY_DATABSE_URL ignored"]);
        assert_eq!(c.warnings_for(&["databse_url"]), Vec::<String>::new(), "unless a surface claims it");
        let (_, warnings) = Config::from_map(&map(&[("test_postgres_url", "x"), ("bench_users", "1")])).expect("valid");
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "s".repeat(40) + "\n").expect("write");
        let (c, _) = Config::from_map(&map(&[("secret_file", path.to_str().expect("utf-8"))])).expect("valid");
        assert_eq!(c.secret.as_ref().map(ExposeSecret::expose_secret), Some("s".repeat(40).as_str()));
    }

    #[test]
    fn the_database_url_can_come_from_a_file_and_the_variable_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("database_url");
        std::fs::write(&path, "postgres://latchkey:hunter2@db:5432/latchkey\n").expect("write");
        let path = path.to_str().expect("utf-8");
        let (c, warnings) = Config::from_map(&map(&[("database_url_file", path)])).expect("valid");
        assert_eq!(c.database_url.expose_secret(), "postgres://latchkey:hunter2@db:5432/latchkey");
        assert!(warnings.is_empty() && c.surface_settings.keys().count() == 0, "{warnings:?}");
        assert!(!format!("{c:?}").contains("hunter2"));

        let (c, _) =
            Config::from_map(&map(&[("database_url_file", path), ("database_url", "sqlite::memory:")])).expect("valid");
        assert_eq!(c.database_url.expose_secret(), "sqlite::memory:");

        let e = Config::from_map(&map(&[("database_url_file", "/nonexistent/latchkey")])).expect_err("no file");
        assert_eq!(e.key, "LATCHKEY_DATABASE_URL_FILE");
        assert!(e.message.starts_with("/nonexistent/latchkey: ") && !e.to_string().contains('\n'), "{e}");

        std::fs::write(dir.path().join("bad"), "mysql://x").expect("write");
        let bad = dir.path().join("bad");
        let e = Config::from_map(&map(&[("database_url_file", bad.to_str().expect("utf-8"))])).expect_err("scheme");
        assert_eq!(e.key, "LATCHKEY_DATABASE_URL");
    }

    #[test]
    fn the_user_pool_id_defaults_to_the_region_and_latchkey() {
        let (c, _) = Config::from_map(&map(&[])).expect("valid");
        assert_eq!((c.region.as_str(), c.user_pool_id().as_str()), ("local-1", "local-1_latchkey"));
        let (c, _) = Config::from_map(&map(&[("region", "eu-west-1")])).expect("valid");
        assert_eq!(c.user_pool_id(), "eu-west-1_latchkey");
        let (c, _) = Config::from_map(&map(&[("user_pool_id", "eu-west-1_AbCdEf123")])).expect("valid");
        assert_eq!(c.user_pool_id(), "eu-west-1_AbCdEf123");
    }

    #[test]
    fn a_toml_file_configures_and_the_environment_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("latchkey.toml");
        std::fs::write(
            &path,
            "code_ttl = \"90s\"\nrate_limit = false\nsurfaces = [\"users\", \"v1\"]\nheartbeat = \"5s\"\n",
        )
        .expect("write");
        let (c, warnings) = Config::load_from(Some(&path), env(&[]), &[]).expect("valid");
        assert_eq!(c.code_ttl, Duration::from_secs(90));
        assert!(!c.rate_limit);
        assert_eq!(c.surfaces, SurfaceSelection::Only(vec!["users".into(), "v1".into()]));
        assert_eq!(warnings, vec!["unknown configuration key LATCHKEY_HEARTBEAT ignored"]);
        assert!(Config::load_from(Some(&path), env(&[]), &["heartbeat"]).expect("valid").1.is_empty());

        let (c, _) =
            Config::load_from(Some(&path), env(&[("code_ttl", "2m"), ("rate_limit", "on")]), &[]).expect("valid");
        assert_eq!(c.code_ttl, Duration::from_secs(120), "the environment wins");
        assert!(c.rate_limit, "the environment wins");

        std::fs::write(&path, "session_ttl = \"forever\"\n").expect("write");
        let e = Config::load_from(Some(&path), env(&[]), &[]).expect_err("bad value");
        assert_eq!(e.key, "LATCHKEY_SESSION_TTL");

        std::fs::write(&path, "session_ttl = = 1\n[x\n").expect("write");
        let e = Config::load_from(Some(&path), env(&[]), &[]).expect_err("bad TOML");
        assert_eq!(e.key, "--config");
        assert!(!e.to_string().contains('\n'), "{e}");

        let e = Config::load_from(Some(&dir.path().join("missing.toml")), env(&[]), &[]).expect_err("no file");
        assert_eq!(e.key, "--config");
    }

    #[test]
    fn each_default_is_written_once_and_shown_by_help() {
        let defaults = Config::default();
        let help = Config::help_text();
        let rendered: Vec<(String, String)> =
            KEYS.iter().filter_map(|k| (k.render)(&defaults).map(|text| (k.name(), text))).collect();
        for key in KEYS {
            assert!(help.contains(key.env), "{} missing from help", key.env);
            assert!(help.contains(&format!("default: {}\n", key.default_text())), "{}", key.env);
            let has_default = (key.render)(&defaults).is_some();
            assert_eq!(key.when_unset.is_empty(), has_default, "{}: when_unset is for keys without a default", key.env);
        }
        // The help's defaults are the defaults: read back, they give `Config::default()`.
        let pairs: Vec<(&str, &str)> = rendered.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (parsed, warnings) = Config::from_map(&map(&pairs)).expect("rendered defaults parse");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(format!("{parsed:?}"), format!("{defaults:?}"));
        assert!(help.contains("LATCHKEY_CODE_TTL") && help.contains("default: 10m\n"));
        assert!(help.contains("default: 30d\n") && help.contains("default: http://<listen>\n"));
    }

    /// A deserializer that answers a struct's field names (as an error), to compare them with
    /// `KEYS`.
    struct FieldNames;

    impl<'de> serde::Deserializer<'de> for FieldNames {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom(fields.join(",")))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }

    #[test]
    fn the_key_table_lists_every_field() {
        let fields = Config::deserialize(FieldNames).err().map(|e| e.to_string()).unwrap_or_default();
        let fields: BTreeSet<&str> = fields.split(',').collect();
        let names: Vec<String> = KEYS.iter().map(Key::name).collect();
        let keys: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(fields, keys);
        assert_eq!(keys.len(), KEYS.len(), "no key twice");
    }

    #[test]
    fn surfaces_extract_their_own_settings() {
        #[derive(Debug, Deserialize)]
        #[serde(default)]
        struct Realtime {
            #[serde(deserialize_with = "de::duration")]
            heartbeat: Duration,
            #[serde(deserialize_with = "de::list")]
            origins: Vec<String>,
        }
        impl Default for Realtime {
            fn default() -> Self {
                Realtime { heartbeat: Duration::from_secs(30), origins: vec!["*".into()] }
            }
        }

        let mut settings = SurfaceSettings::default();
        let r: Realtime = settings.extract().expect("defaults");
        assert_eq!((r.heartbeat, r.origins), (Duration::from_secs(30), vec!["*".to_owned()]));

        settings.insert("heartbeat", "1h 30m");
        settings.insert("origins", "https://a.example, https://b.example");
        let r: Realtime = settings.extract().expect("valid");
        assert_eq!(r.heartbeat, Duration::from_secs(5400));
        assert_eq!(r.origins, vec!["https://a.example", "https://b.example"]);

        // From the environment and a TOML file alike.
        let (c, _) = Config::from_map(&map(&[("heartbeat", "15"), ("origins", "[x, y]")])).expect("valid");
        let e = c.surface_settings.extract::<Realtime>().expect_err("a bare number");
        assert_eq!(e.key, "LATCHKEY_HEARTBEAT");
        assert_eq!(
            e.to_string(),
            "invalid configuration: LATCHKEY_HEARTBEAT: \"15\" is not a duration; use a number with a unit, e.g. 90s, 15m, 30d"
        );

        settings.insert("heartbeat", "0s");
        let e = settings.extract::<Realtime>().expect_err("zero");
        assert_eq!(e.to_string(), "invalid configuration: LATCHKEY_HEARTBEAT: must be longer than zero");

        #[derive(Debug, Deserialize)]
        struct Required {
            #[allow(dead_code)]
            region: String,
        }
        let e = settings.extract::<Required>().expect_err("missing");
        assert_eq!(e.key, "LATCHKEY_REGION");
    }

    #[test]
    fn debug_shows_no_secret_and_no_url_password() {
        let (c, _) = Config::from_map(&map(&[
            ("secret", "correct-horse-battery-staple-0123456789"),
            ("database_url", "postgres://latchkey:db-password@db/latchkey"),
            ("smtp_url", "smtps://mailer:smtp-password@mail.example.com"),
            ("redis_url", "redis://:redis-password@cache:6379"),
            ("cognito_client_secret", "surface-secret"),
        ]))
        .expect("valid");
        let debug = format!("{c:?}");
        for secret in ["correct-horse", "db-password", "smtp-password", "redis-password", "surface-secret"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(debug.contains("postgres://latchkey:***@db/latchkey"), "{debug}");
        assert!(debug.contains("cognito_client_secret"), "surface keys are named: {debug}");
        assert_eq!(
            c.smtp_url.as_ref().map(ToString::to_string).as_deref(),
            Some("smtps://mailer:***@mail.example.com")
        );
    }

    #[test]
    fn durations_format_as_they_parse() {
        for d in [1, 10, 90, 600, 5400, 86_400, 30 * 86_400 + 1] {
            let d = Duration::from_secs(d);
            assert_eq!(de::parse_duration(&de::format_duration(d)), Ok(d));
        }
        assert_eq!(de::format_duration(Duration::from_millis(1500)), "1s 500ms");
        assert_eq!(de::format_duration(Duration::from_secs(5400)), "1h 30m");
    }

    /// figment 0.10 slices a quoted value by character index where it means byte index, so a
    /// backslash escape after non-ASCII text in `"..."` panics inside figment. Such a value is
    /// a configuration error naming its key.
    #[test]
    fn a_quoted_value_figment_cannot_read_is_an_error_not_a_panic() {
        // base64 `IlHCkVxcXFxgz5TCkSIyNTAiNQ==`
        let value = "\"Q\u{91}\\\\\\\\`\u{3d4}\u{91}\"250\"5";
        for (key, env) in [("access_token_ttl", "LATCHKEY_ACCESS_TOKEN_TTL"), ("code_ttl", "LATCHKEY_CODE_TTL")] {
            let e = Config::from_map(&map(&[(key, value)])).expect_err("unreadable value");
            assert_eq!(e.key, env);
            assert!(e.message.contains("cannot be read"), "{e}");
        }
        for value in ["[\"é\\n\"]", "{ \"é\\t\" = 1 }", " \"ü\\\\\""] {
            let e = Config::from_map(&map(&[("mail_from", value)])).expect_err("unreadable value");
            assert_eq!(e.key, "LATCHKEY_MAIL_FROM", "{value}");
        }
        // Unquoted non-ASCII text with backslashes is read as is; quoted ASCII escapes still work.
        let (c, _) = Config::from_map(&map(&[("outbox_dir", "C:\\Zoë\\out"), ("code_ttl", "\"5\\u006d\"")]))
            .expect("readable values");
        assert_eq!(c.outbox_dir, Some(PathBuf::from("C:\\Zoë\\out")));
        assert_eq!(c.code_ttl, Duration::from_secs(300));
    }
}
