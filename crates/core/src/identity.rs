//! Who users are: identifiers, input newtypes that validate on parse, and the [`User`] itself.
//!
//! Every input newtype has a private field and a `parse` constructor, so past the edge of a
//! surface an [`Email`] is always a valid address and a [`NewPassword`] always meets the policy.
//! Parse errors are plain messages ([`ParseError`]); the surface attaches its own field name.

use std::fmt;
use std::sync::LazyLock;

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

/// Why an input could not be parsed; the message is safe to show to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random (version 4) identifier.
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }

            /// Parses the hyphenated UUID form.
            pub fn parse(s: &str) -> Result<Self, ParseError> {
                Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| ParseError("must be a UUID".into()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A tenant: an isolated user directory. Every user, session, code and key belongs to one.
    TenantId
);
uuid_id!(
    /// A user's id; also the `sub` claim of every token issued for the user.
    UserId
);
uuid_id!(
    /// A session's id; the `sid` claim of every token issued for the session.
    SessionId
);
uuid_id!(
    /// An API key's id: names the key in listings and revocations; never a secret.
    ApiKeyId
);

impl TenantId {
    /// The default tenant: the directory shared by every surface but `projects` (API.md,
    /// "One directory").
    pub const DEFAULT: TenantId = TenantId(Uuid::from_u128(1));
    /// The system tenant holding the owners of the `projects` surface (API.md, `projects`).
    pub const PROJECT_OWNERS: TenantId = TenantId(Uuid::from_u128(2));

    /// Whether this is one of the system tenants ([`TenantId::DEFAULT`],
    /// [`TenantId::PROJECT_OWNERS`]), which no API key opens.
    pub fn is_system(self) -> bool {
        self == Self::DEFAULT || self == Self::PROJECT_OWNERS
    }
}

/// An email address: syntactically valid, at most 254 characters, kept as given (surrounding
/// whitespace trimmed). Compared case-insensitively through [`Email::normalized`].
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Maximum length in characters (RFC 5321 section 4.5.3.1.3 path limit, minus the brackets).
    pub const MAX_LEN: usize = 254;

    /// Parses an address of the form `local@domain.tld`.
    ///
    /// # Errors
    /// A [`ParseError`] when empty, too long, without exactly one `@`, with whitespace, control
    /// or special characters, or with a domain that is not a dotted host name.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let s = raw.trim();
        let invalid = || ParseError("must be a valid email address".into());
        if s.is_empty() {
            return Err(ParseError("must not be empty".into()));
        }
        if s.chars().count() > Self::MAX_LEN {
            return Err(ParseError(format!("must be at most {} characters", Self::MAX_LEN)));
        }
        let (local, domain) = s.split_once('@').ok_or_else(invalid)?;
        if local.is_empty() || local.chars().count() > 64 || domain.contains('@') {
            return Err(invalid());
        }
        let bad_local = |c: char| c.is_whitespace() || c.is_control() || "<>()[],;:\"\\".contains(c);
        if local.chars().any(bad_local) || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(invalid());
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(invalid());
        }
        for label in &labels {
            let ok = !label.is_empty()
                && label.chars().count() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-');
            if !ok {
                return Err(invalid());
            }
        }
        Ok(Email(s.to_owned()))
    }

    /// The address as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The comparison key: the address in lower case. Two addresses that differ only in case
    /// are the same user.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }

    /// The address with most of the local part hidden, e.g. `j***@example.com` (for Cognito's
    /// `CodeDeliveryDetails.Destination` and for logs).
    pub fn masked(&self) -> String {
        match self.0.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}***@{domain}")
            }
            None => "***".into(),
        }
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.masked())
    }
}

/// A username: 1 to 256 characters, no whitespace or control characters (API.md, `auth`).
/// Compared exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Maximum length in characters.
    pub const MAX_LEN: usize = 256;

    /// Parses a username.
    ///
    /// # Errors
    /// A [`ParseError`] when empty, longer than 256 characters, or containing whitespace or
    /// control characters.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.is_empty() {
            return Err(ParseError("must not be empty".into()));
        }
        if raw.chars().count() > Self::MAX_LEN {
            return Err(ParseError(format!("must be at most {} characters", Self::MAX_LEN)));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ParseError("must not contain spaces or control characters".into()));
        }
        Ok(Username(raw.to_owned()))
    }

    /// The username.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An identifier the user is known by in another system (`employee_id` of the `auth` surface):
/// 1 to 256 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalId(String);

impl ExternalId {
    /// Parses an external id.
    ///
    /// # Errors
    /// A [`ParseError`] when empty, longer than 256 characters or containing control characters.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.trim().is_empty() {
            return Err(ParseError("must not be empty".into()));
        }
        if raw.chars().count() > 256 || raw.chars().any(char::is_control) {
            return Err(ParseError("must be at most 256 printable characters".into()));
        }
        Ok(ExternalId(raw.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How passwords chosen by users are checked: length only, no composition rules (NIST SP
/// 800-63B section 5.1.1.2). Lengths count Unicode scalar values after NFKC normalisation.
///
/// The policy is the only way to obtain a [`NewPassword`], so the core never stores a password
/// that did not pass it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Minimum length (`LATCHKEY_PASSWORD_MIN_LENGTH`, default 8).
    pub min_length: usize,
    /// Maximum length (128). Longer passwords are rejected, never truncated.
    pub max_length: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self { min_length: 8, max_length: 128 }
    }
}

impl PasswordPolicy {
    /// Parses a new password (sign-up, reset, change) against this policy: NFKC-normalised,
    /// then its length checked, then refused when it is one of the 30,000 most common
    /// passwords (`crates/core/data/common-passwords.txt`, zxcvbn's list), compared
    /// case-insensitively, since an online guesser tries those first.
    ///
    /// # Errors
    /// A [`ParseError`] naming the allowed length range, or saying the password is too common.
    pub fn parse(&self, raw: &str) -> Result<NewPassword, ParseError> {
        let secret = normalize(raw);
        let len = secret.expose_secret().chars().count();
        if len < self.min_length || len > self.max_length {
            return Err(ParseError(format!("must be between {} and {} characters", self.min_length, self.max_length)));
        }
        if is_common_password(secret.expose_secret()) {
            return Err(ParseError(
                "is one of the most common passwords; choose one that is harder to guess".to_owned(),
            ));
        }
        Ok(NewPassword(secret))
    }
}

/// The common-password list, sorted once for binary search (about 240 KB).
static COMMON_PASSWORDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut list: Vec<&'static str> = include_str!("../data/common-passwords.txt").lines().collect();
    list.sort_unstable();
    list
});

/// Whether `password` (already normalised) is on the common-password list, ignoring case.
fn is_common_password(password: &str) -> bool {
    let lower = password.to_lowercase();
    COMMON_PASSWORDS.binary_search(&lower.as_str()).is_ok()
}

/// NFKC normalisation (API.md, "Passwords"), straight into a secret.
fn normalize(raw: &str) -> SecretString {
    SecretString::from(raw.nfkc().collect::<String>())
}

/// The accessors and redacting `Debug` of a password type holding a `SecretString`.
macro_rules! secret_password {
    ($name:ident) => {
        impl $name {
            /// The normalised password, for the hasher (and, for a new password, the SRP
            /// verifier) only.
            pub fn expose(&self) -> &str {
                self.0.expose_secret()
            }

            /// Length in Unicode scalar values.
            pub fn len(&self) -> usize {
                self.0.expose_secret().chars().count()
            }

            /// Whether the password is empty.
            pub fn is_empty(&self) -> bool {
                self.0.expose_secret().is_empty()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

/// A password chosen by the user (sign-up, reset, change) that passed the [`PasswordPolicy`]:
/// NFKC-normalised and held as a secret (never printed by `Debug`, zeroed on drop). Only
/// [`PasswordPolicy::parse`] builds one.
#[derive(Clone)]
pub struct NewPassword(SecretString);

secret_password!(NewPassword);

/// A password presented to prove identity (sign-in, re-authentication): NFKC-normalised and
/// held as a secret. Only its length is checked, against the policy's maximum, so that an
/// oversized password is refused as invalid input before any hashing (API.md, "Guessing");
/// the minimum is not checked (a policy change must not lock out existing users; a wrong
/// password simply does not match).
#[derive(Clone)]
pub struct PresentedPassword(SecretString);

impl PresentedPassword {
    /// The longest password any policy accepts, in Unicode scalar values after NFKC.
    pub const MAX_LEN: usize = 128;

    /// Wraps a password as the client sent it.
    ///
    /// # Errors
    /// A [`ParseError`] when it is longer than [`PresentedPassword::MAX_LEN`] characters (no
    /// password that long can have been set, so it is refused without hashing).
    pub fn parse(raw: &str) -> Result<PresentedPassword, ParseError> {
        let too_long = || ParseError(format!("must be at most {} characters", Self::MAX_LEN));
        // NFKC can expand text; bound the work before normalising.
        if raw.chars().count() > Self::MAX_LEN * 4 {
            return Err(too_long());
        }
        let secret = normalize(raw);
        if secret.expose_secret().chars().count() > Self::MAX_LEN {
            return Err(too_long());
        }
        Ok(PresentedPassword(secret))
    }
}

secret_password!(PresentedPassword);

/// Profile attributes, named as the OpenID Connect standard claims (OIDC Core section 5.1).
/// Each is free text of at most 2048 characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// `given_name` (first name).
    pub given_name: Option<String>,
    /// `family_name` (last name).
    pub family_name: Option<String>,
    /// `phone_number`, as given.
    pub phone_number: Option<String>,
    /// `address`, as one formatted string.
    pub address: Option<String>,
    /// `picture`: URL of a profile picture.
    pub picture: Option<String>,
}

impl Profile {
    /// Maximum length of one attribute, in characters.
    pub const MAX_LEN: usize = 2048;

    /// Checks one attribute value: non-empty after trimming, at most [`Profile::MAX_LEN`]
    /// characters, no control characters other than line breaks.
    ///
    /// # Errors
    /// A [`ParseError`] saying what is wrong.
    pub fn parse_attribute(raw: &str) -> Result<String, ParseError> {
        if raw.trim().is_empty() {
            return Err(ParseError("must not be empty".into()));
        }
        if raw.chars().count() > Self::MAX_LEN {
            return Err(ParseError(format!("must be at most {} characters", Self::MAX_LEN)));
        }
        if raw.chars().any(|c| c.is_control() && c != '\n' && c != '\r') {
            return Err(ParseError("must not contain control characters".into()));
        }
        Ok(raw.to_owned())
    }
}

/// How a user identifies at sign-in.
#[derive(Debug, Clone)]
pub enum Login {
    /// By email address (case-insensitive).
    Email(Email),
    /// By username (exact).
    Username(Username),
}

/// A user of one tenant, as every surface sees it. Never carries the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user's id (`sub`).
    pub id: UserId,
    /// The tenant the user belongs to (`tid`).
    pub tenant: TenantId,
    /// Email address, as given at sign-up or last change.
    pub email: Option<Email>,
    /// Whether the email address has been verified by a one-time code.
    pub email_verified: bool,
    /// Username, for users that sign in by username.
    pub username: Option<Username>,
    /// External id (`employee_id` of `auth`).
    pub external_id: Option<ExternalId>,
    /// Profile attributes.
    pub profile: Profile,
    /// Whether the user has a password (users registered by email only through `graphql` do
    /// not, until they verify).
    pub has_password: bool,
    /// Whether the account is disabled: it cannot sign in and its sessions stop working.
    pub disabled: bool,
    /// When the user was created.
    pub created_at: OffsetDateTime,
    /// When the user was last changed.
    pub updated_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_validated_and_kept_as_given() {
        let e = Email::parse("  Jane.Doe+x@Example.COM ").expect("valid");
        assert_eq!(e.as_str(), "Jane.Doe+x@Example.COM");
        assert_eq!(e.normalized(), "jane.doe+x@example.com");
        assert_eq!(e.masked(), "J***@Example.COM");
        for bad in
            ["", "plain", "a@b", "@x.com", "a@@x.com", "a b@x.com", "a@-x.com", "a@x..com", ".a@x.com", "a\u{0}b@x.com"]
        {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Email::parse(&format!("{}@x.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn password_policy_counts_scalar_values_after_nfkc() {
        let policy = PasswordPolicy::default();
        assert!(policy.parse("1234567").is_err());
        assert!(policy.parse("k7#mq2vz").is_ok());
        // Eight two-byte characters are eight characters, not sixteen.
        assert!(policy.parse("éééééééé").is_ok());
        assert!(policy.parse(&"x".repeat(128)).is_ok());
        assert!(policy.parse(&"x".repeat(129)).is_err(), "never truncated: rejected");
        // NFKC: the ligature "ﬁ" (one char) becomes "fi" (two chars).
        let p = policy.parse("ﬁﬁﬁﬁ").expect("4 ligatures are 8 chars after NFKC");
        assert_eq!(p.expose(), "fifififi");
        assert_eq!(format!("{p:?}"), "NewPassword([redacted])");
        assert_eq!(format!("{:?}", PresentedPassword::parse("x").expect("short")), "PresentedPassword([redacted])");
        assert!(PresentedPassword::parse(&"x".repeat(128)).is_ok());
        assert!(PresentedPassword::parse(&"x".repeat(129)).is_err(), "refused before hashing");
        assert!(PresentedPassword::parse(&"x".repeat(30_000)).is_err());
        let strict = PasswordPolicy { min_length: 12, max_length: 128 };
        assert!(strict.parse("12345678901").is_err());
    }

    #[test]
    fn common_passwords_are_refused_in_any_case() {
        let policy = PasswordPolicy::default();
        for common in ["password123", "qwertyuiop", "iloveyou123", "12345678", "PassWord123", "QWERTYUIOP"] {
            let err = policy.parse(common).expect_err(common);
            assert!(err.0.contains("most common passwords"), "{common}: {}", err.0);
        }
        // NFKC first: fullwidth digits are the common "12345678".
        assert!(policy.parse("１２３４５６７８").is_err());
        // The length rule still answers first.
        assert!(policy.parse("123456").expect_err("short").0.contains("between"));
        assert!(policy.parse("correct horse battery staple").is_ok());
        assert!(COMMON_PASSWORDS.len() > 29_000 && COMMON_PASSWORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn usernames_reject_spaces_and_controls() {
        assert!(Username::parse("alice").is_ok());
        assert!(Username::parse("").is_err());
        assert!(Username::parse("a b").is_err());
        assert!(Username::parse("a\u{7}").is_err());
        assert!(Username::parse(&"u".repeat(257)).is_err());
    }
}
