//! Tenants and their API keys (API.md, `projects`; seed `002_156bcb377661a719.txt`).
//!
//! A [`Tenant`] is an isolated user directory: the same email in two tenants is two unrelated
//! users. The default tenant serves every surface but `projects`; project owners live in a
//! system tenant of their own ([`TenantId::PROJECT_OWNERS`]); each owner gets a tenant for the
//! accounts of their projects, reached with the tenant's [`ApiKey`]s.
//!
//! API keys are `lk_` followed by the unpadded base64url of 32 random bytes (256 bits). Only
//! their keyed hash (HMAC-SHA256 under the server secret's `api-keys` subkey) is stored, so a
//! database dump reveals no usable key; a presented key is hashed the same way and the hashes
//! are compared in constant time.

use std::fmt;

use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use crate::identity::{ApiKeyId, ParseError, TenantId, UserId};
use crate::secret::{SubKey, constant_time_eq};

/// Per-tenant rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TenantSettings {
    /// Whether users with an email must verify it before signing in. The default tenant's
    /// value comes from `LATCHKEY_REQUIRE_EMAIL_VERIFICATION` instead of its row; tenants
    /// created by `projects` do not require it (API.md, "Email verification").
    pub require_email_verification: bool,
}

/// A tenant: an isolated user directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// The tenant's id (`tid` claim of every token issued in it).
    pub id: TenantId,
    /// A name for operators (1 to 200 characters); not unique.
    pub name: String,
    /// The project owner (a user of [`TenantId::PROJECT_OWNERS`]) this tenant belongs to, for
    /// tenants created by `projects` sign-up; `None` for system tenants and tenants created by
    /// the operator.
    pub owner: Option<UserId>,
    /// The tenant's rules.
    pub settings: TenantSettings,
    /// When the tenant was created.
    pub created_at: OffsetDateTime,
}

/// A tenant name: 1 to 200 characters after trimming, no control characters.
///
/// # Errors
/// A [`ParseError`] saying what is wrong.
pub fn parse_tenant_name(raw: &str) -> Result<String, ParseError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(ParseError("must not be empty".into()));
    }
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ParseError("must be at most 200 printable characters".into()));
    }
    Ok(name.to_owned())
}

/// A freshly generated API key: the secret text, shown once to whoever created it and never
/// stored. `Debug` shows only [`ApiKey::hint`].
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    /// The prefix every key starts with.
    pub const PREFIX: &'static str = "lk_";
    /// Random bytes per key (256 bits).
    pub const RANDOM_BYTES: usize = 32;
    /// Characters of the key kept as its non-secret hint (the prefix and 6 more).
    const HINT_LEN: usize = 9;

    /// A new key from the operating system's CSPRNG: `lk_` + base64url(32 bytes), 46 characters.
    pub fn generate() -> Self {
        let mut bytes = [0u8; Self::RANDOM_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let text = format!("{}{}", Self::PREFIX, base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
        ApiKey(SecretString::from(text))
    }

    /// The key's text, to show once to its creator.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The first characters of the key (`lk_` and 6 more): enough for an owner to tell keys
    /// apart in a listing, far too few to guess the rest.
    pub fn hint(&self) -> String {
        self.expose().chars().take(Self::HINT_LEN).collect()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", self.hint())
    }
}

/// An API key as a client presented it (the `key` header of `projects`): 1 to 256 visible
/// ASCII characters. Held as a secret; `Debug` never shows it.
#[derive(Clone)]
pub struct PresentedApiKey(SecretString);

impl PresentedApiKey {
    /// Longest text accepted; anything longer is no key of ours.
    pub const MAX_LEN: usize = 256;

    /// Wraps a presented key.
    ///
    /// # Errors
    /// A [`ParseError`] when empty, longer than [`PresentedApiKey::MAX_LEN`] or holding
    /// anything but visible ASCII.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(ParseError("must not be empty".into()));
        }
        if raw.len() > Self::MAX_LEN || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ParseError("is not an API key".into()));
        }
        Ok(PresentedApiKey(SecretString::from(raw.to_owned())))
    }

    fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for PresentedApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresentedApiKey([redacted])")
    }
}

/// A stored API key: everything but the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The key's id.
    pub id: ApiKeyId,
    /// The tenant the key opens.
    pub tenant: TenantId,
    /// HMAC-SHA256 of the key text under the `api-keys` subkey, 32 bytes (see
    /// [`ApiKeyHasher`]).
    pub key_hash: Vec<u8>,
    /// The key's first characters ([`ApiKey::hint`]).
    pub hint: String,
    /// When the key was created.
    pub created_at: OffsetDateTime,
    /// When the key last opened its tenant (recorded at most once a minute).
    pub last_used_at: Option<OffsetDateTime>,
    /// When the key was revoked; a revoked key opens nothing.
    pub revoked_at: Option<OffsetDateTime>,
}

/// Hashes API keys with a key derived from the server secret.
#[derive(Clone)]
pub struct ApiKeyHasher(SubKey);

impl ApiKeyHasher {
    /// A hasher keyed with `key` (the server secret's `api-keys` subkey).
    pub fn new(key: SubKey) -> Self {
        Self(key)
    }

    /// The stored form of a generated key: 32 bytes.
    pub fn hash(&self, key: &ApiKey) -> [u8; 32] {
        self.hash_text(key.expose())
    }

    /// The hash of a presented key, to look up and compare with the stored ones.
    pub fn hash_presented(&self, key: &PresentedApiKey) -> [u8; 32] {
        self.hash_text(key.expose())
    }

    /// Whether `stored` is the hash of `presented`, compared in constant time.
    pub fn matches(&self, presented: &[u8; 32], stored: &[u8]) -> bool {
        constant_time_eq(presented, stored)
    }

    fn hash_text(&self, text: &str) -> [u8; 32] {
        self.0.mac(&[b"api-key", text.as_bytes()])
    }
}

impl fmt::Debug for ApiKeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeyHasher([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::ServerSecret;

    #[test]
    fn keys_carry_256_random_bits_and_hash_with_the_secret() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("lk_"));
        let body = &a.expose()[3..];
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).expect("base64url");
        assert_eq!(bytes.len(), 32);
        assert_eq!(a.hint().len(), 9);
        assert!(!format!("{a:?}").contains(body));

        let secret = ServerSecret::new(vec![1u8; 32]).expect("secret");
        let other = ServerSecret::new(vec![2u8; 32]).expect("secret");
        let h = ApiKeyHasher::new(secret.derive("api-keys"));
        let presented = PresentedApiKey::parse(a.expose()).expect("parses");
        assert!(h.matches(&h.hash_presented(&presented), &h.hash(&a)));
        assert!(!h.matches(&h.hash_presented(&presented), &h.hash(&b)));
        let h2 = ApiKeyHasher::new(other.derive("api-keys"));
        assert_ne!(h.hash(&a), h2.hash(&a), "the hash depends on the server secret");
        assert_eq!(format!("{presented:?}"), "PresentedApiKey([redacted])");
    }

    #[test]
    fn presented_keys_and_names_are_bounded() {
        assert!(PresentedApiKey::parse("").is_err());
        assert!(PresentedApiKey::parse("a b").is_err());
        assert!(PresentedApiKey::parse(&"k".repeat(257)).is_err());
        assert!(PresentedApiKey::parse("aQ8{71D7").is_ok());
        assert!(parse_tenant_name("  ").is_err());
        assert!(parse_tenant_name(&"n".repeat(201)).is_err());
        assert_eq!(parse_tenant_name(" Acme ").expect("name"), "Acme");
    }
}
