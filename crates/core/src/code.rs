//! One-time codes (API.md, "One-time codes").
//!
//! A code is 6 decimal digits from a CSPRNG whose first digit is never `0`, so it survives
//! clients that send it as a JSON number. Only its keyed hash is stored: HMAC-SHA256 under a key
//! derived from the server secret, over the tenant, user, purpose and code, so a leaked table
//! cannot be brute-forced offline and a code for one purpose never works for another. A code
//! expires after the configured TTL and is burnt by its [`MAX_ATTEMPTS`]th wrong guess.

use std::fmt;

use rand::Rng;

use crate::identity::{ParseError, TenantId, UserId};
use crate::secret::{SubKey, constant_time_eq};

/// Wrong guesses allowed per code; the last one burns it.
pub const MAX_ATTEMPTS: u32 = 5;

/// What a code proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodePurpose {
    /// Ownership of the user's email address (activation, sign-up confirmation).
    VerifyEmail,
    /// Permission to set a new password without the old one.
    ResetPassword,
    /// Ownership of a new email address the user wants to switch to.
    ChangeEmail,
}

impl CodePurpose {
    /// The storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            CodePurpose::VerifyEmail => "verify_email",
            CodePurpose::ResetPassword => "reset_password",
            CodePurpose::ChangeEmail => "change_email",
        }
    }

    /// Parses a storage name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "verify_email" => Some(CodePurpose::VerifyEmail),
            "reset_password" => Some(CodePurpose::ResetPassword),
            "change_email" => Some(CodePurpose::ChangeEmail),
            _ => None,
        }
    }

    /// The subject line of the mail that carries a code of this purpose.
    pub fn mail_subject(self) -> &'static str {
        match self {
            CodePurpose::VerifyEmail => "Your Latchkey verification code",
            CodePurpose::ResetPassword => "Your Latchkey password reset code",
            CodePurpose::ChangeEmail => "Confirm your new email address for Latchkey",
        }
    }
}

/// A six-digit code, 100000 to 999999.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OneTimeCode(u32);

impl OneTimeCode {
    /// A fresh code from the operating system's CSPRNG, uniform over 100000..=999999.
    pub fn generate() -> Self {
        OneTimeCode(rand::rngs::OsRng.gen_range(100_000..=999_999))
    }

    /// Parses a code sent as a JSON number.
    ///
    /// # Errors
    /// A [`ParseError`] unless `n` has exactly six digits.
    pub fn from_number(n: u64) -> Result<Self, ParseError> {
        u32::try_from(n)
            .ok()
            .filter(|n| (100_000..=999_999).contains(n))
            .map(OneTimeCode)
            .ok_or_else(|| ParseError("must be a 6-digit code".into()))
    }

    /// Parses a code sent as a string of six digits (surrounding whitespace ignored).
    ///
    /// # Errors
    /// A [`ParseError`] unless the string is exactly six ASCII digits, the first non-zero.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError("must be a 6-digit code".into()));
        }
        s.parse::<u64>().map_err(|_| ParseError("must be a 6-digit code".into())).and_then(Self::from_number)
    }

    /// The code's digits (only for putting it in a mail).
    pub fn digits(self) -> String {
        self.0.to_string()
    }
}

impl fmt::Debug for OneTimeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OneTimeCode([redacted])")
    }
}

/// Computes and checks keyed hashes of codes.
#[derive(Clone, Debug)]
pub struct CodeHasher {
    key: SubKey,
}

impl CodeHasher {
    /// A hasher keyed with `key` (derived from the server secret under the label `codes`).
    pub fn new(key: SubKey) -> Self {
        Self { key }
    }

    /// HMAC-SHA256(key, tenant ‖ user ‖ purpose ‖ code), 32 bytes.
    pub fn hash(&self, tenant: TenantId, user: UserId, purpose: CodePurpose, code: OneTimeCode) -> Vec<u8> {
        self.key
            .mac(&[tenant.0.as_bytes(), user.0.as_bytes(), purpose.as_str().as_bytes(), &code.0.to_be_bytes()])
            .to_vec()
    }

    /// Whether `code` hashes to `stored`, compared in constant time.
    pub fn matches(
        &self,
        tenant: TenantId,
        user: UserId,
        purpose: CodePurpose,
        code: OneTimeCode,
        stored: &[u8],
    ) -> bool {
        constant_time_eq(&self.hash(tenant, user, purpose, code), stored)
    }
}

/// The text of the mail carrying `code`: the code is the only run of six digits in it.
pub fn mail_text(purpose: CodePurpose, code: OneTimeCode, ttl_minutes: u64) -> String {
    let what = match purpose {
        CodePurpose::VerifyEmail => "verify your email address",
        CodePurpose::ResetPassword => "reset your password",
        CodePurpose::ChangeEmail => "confirm your new email address",
    };
    let expiry = match ttl_minutes {
        0 | 1 => "a minute".to_owned(),
        n => format!("{n} minutes"),
    };
    format!(
        "Your code to {what} is:\n\n    {}\n\nIt expires in {expiry}. If you did not ask for it, you can ignore this message.\n",
        code.digits()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::ServerSecret;

    #[test]
    fn generated_codes_have_six_digits_and_no_leading_zero() {
        for _ in 0..10_000 {
            let c = OneTimeCode::generate();
            let d = c.digits();
            assert_eq!(d.len(), 6);
            assert_ne!(d.as_bytes()[0], b'0');
        }
    }

    #[test]
    fn codes_parse_from_numbers_and_digit_strings_only() {
        assert_eq!(OneTimeCode::from_number(123_456).map(OneTimeCode::digits), Ok("123456".into()));
        assert_eq!(OneTimeCode::parse(" 654321 ").map(OneTimeCode::digits), Ok("654321".into()));
        for bad in ["012345", "12345", "1234567", "12a456", "", "+12345", "１２３４５６"] {
            assert!(OneTimeCode::parse(bad).is_err(), "{bad:?}");
        }
        assert!(OneTimeCode::from_number(99_999).is_err());
        assert!(OneTimeCode::from_number(1_000_000).is_err());
        assert!(OneTimeCode::from_number(u64::MAX).is_err());
    }

    #[test]
    fn hashes_bind_tenant_user_and_purpose() {
        let h = CodeHasher::new(ServerSecret::new(vec![1u8; 32]).expect("secret").derive("codes"));
        let (t, u, c) = (TenantId::DEFAULT, UserId::random(), OneTimeCode::generate());
        let stored = h.hash(t, u, CodePurpose::VerifyEmail, c);
        assert!(h.matches(t, u, CodePurpose::VerifyEmail, c, &stored));
        assert!(!h.matches(t, u, CodePurpose::ResetPassword, c, &stored));
        assert!(!h.matches(t, UserId::random(), CodePurpose::VerifyEmail, c, &stored));
        assert!(!h.matches(TenantId::PROJECT_OWNERS, u, CodePurpose::VerifyEmail, c, &stored));
    }

    #[test]
    fn mail_text_holds_the_code_as_the_only_six_digit_run() {
        let c = OneTimeCode::from_number(482_913).expect("code");
        let text = mail_text(CodePurpose::VerifyEmail, c, 10);
        let runs: Vec<&str> = text.split(|ch: char| !ch.is_ascii_digit()).filter(|r| r.len() == 6).collect();
        assert_eq!(runs, vec!["482913"]);
        assert_eq!(format!("{c:?}"), "OneTimeCode([redacted])");
    }
}
