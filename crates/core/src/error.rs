//! The one error type of the core: one variant per outcome a caller must tell apart.
//!
//! Variants name outcomes, never HTTP statuses; each surface maps them to its own wire error in
//! exactly one function. [`Error::code`] gives a stable, machine-readable name for each variant
//! (used verbatim as the `code` member of `v1`'s RFC 9457 problem documents).

use std::time::Duration;

/// A problem with one input field, as found by the core (for example a password that breaks the
/// policy). `field` is the core's name for the field (`email`, `password`, `username`, ...);
/// surfaces rename it to their wire name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The core's name of the offending field.
    pub field: &'static str,
    /// A human-readable explanation, safe to show to the client.
    pub message: String,
}

impl FieldError {
    /// A field error with the given field name and message.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

/// Everything that can go wrong in an [`crate::Auth`] operation.
///
/// Deliberately exhaustive: every surface maps each variant by name in its one `From<Error>`,
/// so a new variant is a compile error in every surface rather than a silent 500.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One or more inputs are invalid; one entry per field.
    #[error("invalid input")]
    InvalidInput(Vec<FieldError>),
    /// The email address is already registered in this tenant.
    #[error("email address already registered")]
    EmailTaken,
    /// The username is already taken in this tenant.
    #[error("username already taken")]
    UsernameTaken,
    /// The external id (e.g. `employee_id`) already belongs to a user of this tenant.
    #[error("external id already registered")]
    ExternalIdTaken,
    /// Unknown login or wrong password. Deliberately does not say which.
    #[error("incorrect login or password")]
    InvalidCredentials,
    /// The user has no password (imported without a hash) and signs in only after a password
    /// reset. Only surfaces whose wire contract has this answer (`v1`, `cognito`) reveal it;
    /// the others answer it as [`Error::InvalidCredentials`].
    #[error("password reset required")]
    PasswordResetRequired,
    /// The password matched but the email address has not been verified yet.
    #[error("email address not verified")]
    NotVerified,
    /// The email address is already verified.
    #[error("email address already verified")]
    AlreadyVerified,
    /// No user matches the given identifier (only returned where a wire contract reveals it).
    #[error("user not found")]
    UserNotFound,
    /// No one-time code is pending for this user and purpose.
    #[error("no code pending")]
    NoCodePending,
    /// The pending code has expired or was burnt by too many wrong guesses.
    #[error("code expired")]
    CodeExpired,
    /// The code is wrong. `attempts_left` wrong guesses remain before the code is burnt.
    #[error("incorrect code")]
    CodeMismatch {
        /// Wrong guesses left for this code (0: the code is now burnt).
        attempts_left: u32,
    },
    /// The credential is malformed, has a bad signature, an unknown key id, a foreign
    /// algorithm, issuer, audience or token type, or is not known to the store.
    #[error("invalid token")]
    InvalidToken,
    /// The credential was valid but has expired.
    #[error("token expired")]
    TokenExpired,
    /// The session behind the credential is revoked, expired, or its user is disabled or gone.
    #[error("session revoked")]
    SessionRevoked,
    /// An already-rotated refresh token was presented outside the grace window; the whole
    /// session has been revoked (RFC 6749 section 10.4, refresh token reuse detection).
    #[error("refresh token reused; session revoked")]
    RefreshTokenReused,
    /// The user account is disabled.
    #[error("user disabled")]
    UserDisabled,
    /// The tenant does not exist.
    #[error("tenant not found")]
    TenantNotFound,
    /// Too many attempts; try again after `retry_after`.
    #[error("too many requests")]
    RateLimited {
        /// How long the caller should wait before trying again.
        retry_after: Duration,
    },
    /// Too much work is queued (the password hashing queue is full); try again after
    /// `retry_after`. Nothing was attempted.
    #[error("overloaded")]
    Overloaded {
        /// How long the caller should wait before trying again.
        retry_after: Duration,
    },
    /// A failure inside Latchkey or a dependency (database, ...). The source is for the log;
    /// clients only ever see a generic message.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Wraps any error as [`Error::Internal`].
    pub fn internal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Internal(source.into())
    }

    /// Invalid input on a single field.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidInput(vec![FieldError::new(field, message)])
    }

    /// A stable `snake_case` name of the outcome, for machine consumption (`v1`'s problem
    /// `code`, metric labels). These strings never change once released.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "invalid_input",
            Error::EmailTaken => "email_taken",
            Error::UsernameTaken => "username_taken",
            Error::ExternalIdTaken => "external_id_taken",
            Error::InvalidCredentials => "invalid_credentials",
            Error::PasswordResetRequired => "password_reset_required",
            Error::NotVerified => "email_not_verified",
            Error::AlreadyVerified => "already_verified",
            Error::UserNotFound => "user_not_found",
            Error::NoCodePending => "no_code_pending",
            Error::CodeExpired => "code_expired",
            Error::CodeMismatch { .. } => "code_mismatch",
            Error::InvalidToken => "invalid_token",
            Error::TokenExpired => "token_expired",
            Error::SessionRevoked => "session_revoked",
            Error::RefreshTokenReused => "refresh_token_reused",
            Error::UserDisabled => "user_disabled",
            Error::TenantNotFound => "tenant_not_found",
            Error::RateLimited { .. } => "rate_limited",
            Error::Overloaded { .. } => "overloaded",
            Error::Internal(_) => "internal_error",
        }
    }
}

impl From<crate::ports::StoreError> for Error {
    fn from(e: crate::ports::StoreError) -> Self {
        use crate::ports::{StoreError, UniqueKey};
        match e {
            StoreError::Conflict(UniqueKey::Email) => Error::EmailTaken,
            StoreError::Conflict(UniqueKey::Username) => Error::UsernameTaken,
            StoreError::Conflict(UniqueKey::ExternalId) => Error::ExternalIdTaken,
            StoreError::Conflict(UniqueKey::Other) => Error::internal("unexpected unique violation"),
            StoreError::Backend(source) => Error::Internal(source),
        }
    }
}

/// Result with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
