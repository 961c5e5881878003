//! Sign-in by Cognito's SRP variant (`USER_SRP_AUTH` then `PASSWORD_VERIFIER`), as
//! `../shared/COGNITO-SRP.md` describes it: the password never leaves the client; the server
//! holds a verifier per user and proves nothing about unknown users.

use super::{Auth, SignedIn};
use crate::error::{Error, Result};
use crate::identity::{Email, TenantId};
use crate::session::ClientMeta;

/// The `PASSWORD_VERIFIER` challenge parameters answered to `USER_SRP_AUTH`
/// (Cognito `InitiateAuth`, `ChallengeParameters`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrpChallenge {
    /// `USER_ID_FOR_SRP`: the user's immutable id (its UUID), or a stand-in of the same shape
    /// for an unknown user.
    pub user_id_for_srp: String,
    /// `SALT`: the verifier's salt, lower-case hex.
    pub salt: String,
    /// `SRP_B`: the server's public value, lower-case hex, unpadded.
    pub srp_b: String,
    /// `SECRET_BLOCK`: base64 of the server's opaque, single-use challenge state.
    pub secret_block: String,
}

/// The client's answer (Cognito `RespondToAuthChallenge`, `ChallengeResponses`).
#[derive(Debug, Clone, Copy)]
pub struct SrpResponse<'a> {
    /// `USERNAME`: must equal the challenge's `USER_ID_FOR_SRP`.
    pub user_id_for_srp: &'a str,
    /// `PASSWORD_CLAIM_SECRET_BLOCK`: the challenge's `SECRET_BLOCK`, echoed.
    pub secret_block: &'a str,
    /// `TIMESTAMP`: `EEE MMM d HH:mm:ss UTC yyyy`.
    pub timestamp: &'a str,
    /// `PASSWORD_CLAIM_SIGNATURE`: base64 HMAC-SHA256 proof.
    pub signature: &'a str,
}

impl Auth {
    /// Starts an SRP sign-in for `email` with the client's public value `srp_a` (hex) on app
    /// client `client_id`. Unknown users get a challenge indistinguishable from a real one.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `SRP_A`) when `srp_a` is not hex, too long or zero modulo
    /// N; [`Error::RateLimited`].
    pub async fn srp_challenge(
        &self,
        tenant: TenantId,
        email: &Email,
        srp_a: &str,
        client_id: &str,
        meta: &ClientMeta,
    ) -> Result<SrpChallenge> {
        let _ = (tenant, email, srp_a, client_id, meta);
        Err(Error::InvalidCredentials)
    }

    /// Completes an SRP sign-in: checks the proof against the challenge named by the secret
    /// block (once, for the same client, before it expires) and creates a session. A wrong
    /// proof counts as a failed sign-in under the limits of [`Auth::sign_in`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the timestamp or signature is malformed;
    /// [`Error::InvalidCredentials`] for a wrong proof, an unknown user, or a secret block that
    /// is forged, expired, used or issued to another user or client; [`Error::RateLimited`];
    /// after a valid proof, [`Error::UserDisabled`] or [`Error::NotVerified`].
    pub async fn srp_sign_in(
        &self,
        tenant: TenantId,
        response: &SrpResponse<'_>,
        client_id: &str,
        meta: &ClientMeta,
    ) -> Result<SignedIn> {
        let _ = (tenant, response, client_id, meta);
        Err(Error::InvalidCredentials)
    }
}
