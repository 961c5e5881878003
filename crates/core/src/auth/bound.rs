//! Bound refresh pairs: a refresh token issued together with a second opaque value derived
//! from it, both of which a refresh must present (API.md `auth`: `sRefreshToken` and
//! `sIdRefreshToken`, "bound to the refresh token: refresh needs both to match").
//!
//! The bound value is HMAC-SHA256 of the token under the refresh-token key and a label of its
//! own ([`RefreshTokenHasher::bound_value`](crate::token::RefreshTokenHasher::bound_value)),
//! so it is stored nowhere, cannot be computed without the server secret, and follows its token
//! through rotation: within the grace window the successor is the same again, and so is its
//! bound value. A pair that does not match is refused before the store is touched, so a
//! mismatched pair neither rotates nor revokes anything. The token of a pair is issued as
//! [`RefreshKind::Bound`], so the routes that take a bare refresh token refuse it: without its
//! bound value it refreshes nowhere.

use super::{Auth, observed};
use crate::error::{Error, Result};
use crate::identity::{TenantId, User};
use crate::secret::constant_time_eq;
use crate::session::Session;
use crate::token::{RefreshKind, RefreshToken};

/// The HMAC label of bound values; distinct from the labels of token hashes and successors,
/// so a bound value is neither the stored key of its token nor its successor.
const BOUND_LABEL: &str = "bound-refresh";

/// A refresh token and the value bound to it, issued and rotated together. Both are secrets:
/// `Debug` prints neither.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshPair {
    token: RefreshToken,
    bound: String,
}

impl RefreshPair {
    /// The refresh token (opaque, see [`RefreshToken`]), e.g. `sRefreshToken`.
    pub fn token(&self) -> &RefreshToken {
        &self.token
    }

    /// The value bound to the token (HMAC-SHA256, base64url: 43 characters), e.g.
    /// `sIdRefreshToken`. Worthless without its token.
    pub fn bound(&self) -> &str {
        &self.bound
    }
}

impl std::fmt::Debug for RefreshPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshPair([redacted])")
    }
}

impl Auth {
    /// The pair of `token` and the value bound to it.
    fn pair(&self, token: RefreshToken) -> RefreshPair {
        let bound = self.0.refresh.bound_value(BOUND_LABEL, &token);
        RefreshPair { token, bound }
    }

    /// A new refresh token for `session` (stored as its keyed hash, see
    /// [`Auth::refresh_token`]) with the value bound to it.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    pub async fn refresh_pair(&self, session: &Session) -> Result<RefreshPair> {
        let token = self.issue_refresh_token(session, RefreshKind::Bound).await?;
        Ok(self.pair(token))
    }

    /// Exchanges a refresh pair for its successor pair. `bound` must be the value bound to
    /// `token` (compared in constant time); then the token rotates exactly as in
    /// [`Auth::rotate_refresh_token`]: a fresh token is rotated, a token rotated within
    /// `refresh_reuse_window` gives the same successor (and the same bound value) again, and a
    /// token rotated earlier revokes the whole session.
    ///
    /// Returns the session, its user and the successor pair.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] when `bound` does not match `token` (nothing is rotated or
    /// revoked) or the token is unknown, [`Error::SessionRevoked`] when the session ended,
    /// [`Error::RefreshTokenReused`] for a replay after the window (the session is now revoked).
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn rotate_refresh_pair(
        &self,
        tenant: TenantId,
        token: &RefreshToken,
        bound: &str,
    ) -> Result<(User, Session, RefreshPair)> {
        observed("refresh", async {
            let expected = self.0.refresh.bound_value(BOUND_LABEL, token);
            if !constant_time_eq(expected.as_bytes(), bound.as_bytes()) {
                return Err(Error::InvalidToken);
            }
            let (user, session, successor) = self.rotate_inner(tenant, token, RefreshKind::Bound).await?;
            Ok((user, session, self.pair(successor)))
        })
        .await
    }
}
