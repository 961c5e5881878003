//! Sign-in by Cognito's SRP variant (`USER_SRP_AUTH` then `PASSWORD_VERIFIER`), as
//! `../shared/COGNITO-SRP.md` describes it: the password never leaves the client; the server
//! holds a verifier per user and proves nothing about unknown users.
//!
//! * **Verifiers** are computed wherever a password is set (sign-up, reset, change, passwordless
//!   completion, re-registration of an unverified account) and on a password sign-in of a user
//!   who has none yet; only for the default tenant (the one the `cognito` surface serves) and
//!   only while [`Settings::srp`](super::Settings::srp) is on. Each is sealed (XChaCha20-Poly1305, key derived from the server secret)
//!   with the pool name, tenant, user id and a hash of the user's password hash as associated
//!   data: a verifier made for an older password, another user or another pool name does not
//!   open, and counts as missing.
//! * **Challenges** carry no server-side state until answered: the secret block is a sealed
//!   record of `(id, expiry, user, b, A, B, login)` bound to the tenant and the app client.
//!   Answering records its id, so each block is accepted once; blocks expire after
//!   [`CHALLENGE_TTL`].
//! * **Unknown users** (and users without a verifier) get a challenge built the same way from a
//!   stand-in salt, id and verifier derived from a keyed hash of the login, so repeated
//!   challenges for one address look like a real user's; their proof is checked with the same
//!   work and refused.
//! * **Work**: each exponentiation runs on the blocking pool, off the async threads.
//! * **Limits** are those of [`Auth::sign_in`]: attempts per client address when the challenge
//!   is issued, and a wrong proof counts as a failed sign-in for the login, per address and
//!   overall.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use num_bigint::BigUint;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{Auth, SignedIn, observed};
use crate::audit::AuditKind;
use crate::error::{Error, Result};
use crate::identity::{Email, TenantId, User, UserId};
use crate::limits::{LimitKind, address_key};
use crate::ports::UserRecord;
use crate::secret::constant_time_eq;
use crate::session::ClientMeta;
use crate::srp;

/// How long a secret block may be answered (Cognito allows a few minutes).
pub const CHALLENGE_TTL: Duration = Duration::from_secs(5 * 60);

/// How far the client's `TIMESTAMP` may be from the server's clock, either way.
pub const TIMESTAMP_SKEW: Duration = Duration::from_secs(5 * 60);

/// Longest `PASSWORD_CLAIM_SECRET_BLOCK` accepted, in base64 characters.
const MAX_SECRET_BLOCK_LEN: usize = 4096;

/// Salt length in bytes.
const SALT_LEN: usize = 16;

/// Layout version of the sealed challenge record.
const CHALLENGE_VERSION: u8 = 1;

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

/// A user's verifier, opened.
struct Verifier {
    salt: [u8; SALT_LEN],
    v: BigUint,
}

/// The challenge record sealed into the secret block.
struct ChallengeState {
    id: uuid::Uuid,
    expires_at: i64,
    user_id: uuid::Uuid,
    known: bool,
    b: Zeroizing<[u8; 32]>,
    a_pub: BigUint,
    b_pub: BigUint,
    login: String,
}

impl ChallengeState {
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(1024));
        out.push(CHALLENGE_VERSION);
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        out.extend_from_slice(self.user_id.as_bytes());
        out.push(u8::from(self.known));
        out.extend_from_slice(self.b.as_slice());
        for part in [srp::pad(&self.a_pub), srp::pad(&self.b_pub), self.login.as_bytes().to_vec()] {
            let len = u16::try_from(part.len()).unwrap_or_else(|_| unreachable!("bounded by N and the email length"));
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&part);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        if r.take(1)?[0] != CHALLENGE_VERSION {
            return None;
        }
        let id = uuid::Uuid::from_slice(r.take(16)?).ok()?;
        let expires_at = i64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let user_id = uuid::Uuid::from_slice(r.take(16)?).ok()?;
        let known = r.take(1)?[0] == 1;
        let b = Zeroizing::new(<[u8; 32]>::try_from(r.take(32)?).ok()?);
        let a_pub = BigUint::from_bytes_be(r.part()?);
        let b_pub = BigUint::from_bytes_be(r.part()?);
        let login = String::from_utf8(r.part()?.to_vec()).ok()?;
        r.0.is_empty().then_some(Self { id, expires_at, user_id, known, b, a_pub, b_pub, login })
    }
}

/// Reads the fields of an encoded [`ChallengeState`].
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn part(&mut self) -> Option<&'a [u8]> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().ok()?);
        self.take(usize::from(len))
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

impl Auth {
    /// Starts an SRP sign-in for `email` with the client's public value `srp_a` (hex) on app
    /// client `client_id`. Unknown users get a challenge indistinguishable from a real one.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `SRP_A`) when `srp_a` is not hex, too long or zero modulo
    /// N; [`Error::RateLimited`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn srp_challenge(
        &self,
        tenant: TenantId,
        email: &Email,
        srp_a: &str,
        client_id: &str,
        meta: &ClientMeta,
    ) -> Result<SrpChallenge> {
        observed("srp_challenge", async {
            let a_pub = srp::parse_public(srp_a).map_err(|reason| Error::invalid("SRP_A", reason))?;
            if let Some(ip) = &meta.ip {
                self.limit(LimitKind::SignInPerAddress, &address_key(ip)).await?;
            }
            let login = email.normalized().to_string();
            let record = self.0.store.user_by_email(tenant, email).await?;
            // Read a verifier row whether or not the user exists, so both paths cost the same.
            let user_id = record.as_ref().map_or_else(UserId::random, |r| r.user.id);
            let sealed = self.0.store.srp_verifier(tenant, user_id).await?;
            let verifier = match (&record, sealed) {
                (Some(r), Some(sealed)) => self.open_verifier(r, &sealed),
                _ => None,
            };
            let (user_id, known, verifier) = match (record, verifier) {
                (Some(r), Some(v)) => (r.user.id.0, true, v),
                (record, _) => {
                    let (stand_in_id, v) = self.stand_in(tenant, &login);
                    (record.map_or(stand_in_id, |r| r.user.id.0), false, v)
                }
            };
            let v = verifier.v.clone();
            let (b, b_pub) = tokio::task::spawn_blocking(move || {
                loop {
                    let b = Zeroizing::new(random_bytes::<32>());
                    if let Some(b_pub) = srp::server_public(&v, &b) {
                        break (b, b_pub);
                    }
                }
            })
            .await
            .map_err(Error::internal)?;
            let state = ChallengeState {
                id: uuid::Uuid::new_v4(),
                expires_at: (self.now() + CHALLENGE_TTL).unix_timestamp(),
                user_id,
                known,
                b,
                a_pub,
                b_pub,
                login,
            };
            let block = self.0.srp_seal.seal(&state.encode(), &self.challenge_aad(tenant, client_id));
            Ok(SrpChallenge {
                user_id_for_srp: user_id.hyphenated().to_string(),
                salt: srp::to_hex(&BigUint::from_bytes_be(&verifier.salt)),
                srp_b: srp::to_hex(&state.b_pub),
                secret_block: STANDARD.encode(block),
            })
        })
        .await
    }

    /// Completes an SRP sign-in: checks the proof against the challenge named by the secret
    /// block (once, for the same client, before it expires) and creates a session. A wrong
    /// proof counts as a failed sign-in under the limits of [`Auth::sign_in`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the timestamp or signature is malformed;
    /// [`Error::InvalidCredentials`] for a wrong proof, an unknown user, or a secret block that
    /// is forged, expired, used or issued to another user or client;
    /// [`Error::PasswordResetRequired`] for any proof of a user who has no password (imported
    /// without a hash), counted as a failure; [`Error::RateLimited`]; after a valid proof, [`Error::UserDisabled`] or [`Error::NotVerified`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn srp_sign_in(
        &self,
        tenant: TenantId,
        response: &SrpResponse<'_>,
        client_id: &str,
        meta: &ClientMeta,
    ) -> Result<SignedIn> {
        observed("srp_sign_in", async {
            let signature = STANDARD
                .decode(response.signature)
                .ok()
                .filter(|s| s.len() == 32)
                .ok_or_else(|| Error::invalid("PASSWORD_CLAIM_SIGNATURE", "must be a base64 HMAC-SHA256"))?;
            let stamped = srp::parse_timestamp(response.timestamp)
                .ok_or_else(|| Error::invalid("TIMESTAMP", "must read like `Wed Mar 6 12:34:56 UTC 2024`"))?;
            let block = Some(response.secret_block)
                .filter(|b| b.len() <= MAX_SECRET_BLOCK_LEN)
                .and_then(|b| STANDARD.decode(b).ok())
                .ok_or(Error::InvalidCredentials)?;
            let state = self
                .0
                .srp_seal
                .open(&block, &self.challenge_aad(tenant, client_id))
                .and_then(|plain| ChallengeState::decode(&plain))
                .ok_or(Error::InvalidCredentials)?;
            let now = self.now();
            let skew = (stamped - now).unsigned_abs();
            if now.unix_timestamp() > state.expires_at
                || skew > TIMESTAMP_SKEW
                || response.user_id_for_srp != state.user_id.hyphenated().to_string()
            {
                return Err(Error::InvalidCredentials);
            }

            let account = format!("{tenant}/email/{}", state.login);
            let mut limits = Vec::with_capacity(2);
            if let Some(ip) = &meta.ip {
                limits.push((LimitKind::SignInFailuresPerLoginAndAddress, format!("{account}@{}", address_key(ip))));
            }
            limits.push((LimitKind::SignInFailuresPerLogin, account));
            let user = self
                .guarded(
                    &limits,
                    |e| matches!(e, Error::InvalidCredentials | Error::PasswordResetRequired),
                    self.check_proof(tenant, &state, &block, response, &signature),
                )
                .await?;
            self.admit(tenant, user, meta).await
        })
        .await
    }

    /// Consumes the challenge and checks the proof with the user's current verifier (a
    /// password changed since the challenge fails it); unknown users get the same work.
    async fn check_proof(
        &self,
        tenant: TenantId,
        state: &ChallengeState,
        block: &[u8],
        response: &SrpResponse<'_>,
        signature: &[u8],
    ) -> Result<User> {
        let expires_at =
            time::OffsetDateTime::from_unix_timestamp(state.expires_at).map_err(|_| Error::InvalidCredentials)?;
        if !self.0.store.use_srp_challenge(tenant, state.id, expires_at).await? {
            tracing::info!("SRP secret block answered twice; refused");
            return Err(Error::InvalidCredentials);
        }
        // The same two reads whether or not the user is known, so both paths cost the same.
        let user_id = UserId(state.user_id);
        let stored = self.0.store.user_by_id(tenant, user_id).await?;
        let reset_user = stored.as_ref().filter(|r| super::signin::needs_reset(r)).map(|r| r.user.id);
        let reset_required = reset_user.is_some();
        let record = stored.filter(|_| state.known);
        let sealed = self.0.store.srp_verifier(tenant, user_id).await?;
        let verifier = match (&record, sealed) {
            (Some(r), Some(sealed)) => self.open_verifier(r, &sealed),
            _ => None,
        };
        let matched = verifier.is_some();
        let verifier = verifier.unwrap_or_else(|| self.stand_in(tenant, &state.login).1);
        let b = BigUint::from_bytes_be(state.b.as_slice());
        let (a_pub, b_pub) = (state.a_pub.clone(), state.b_pub.clone());
        let key = tokio::task::spawn_blocking(move || srp::server_key(&a_pub, &b_pub, &b, &verifier.v))
            .await
            .map_err(Error::internal)?;
        let pool = self.0.settings.srp_pool_name();
        let expected = key.map(|key| srp::signature(&key, pool, response.user_id_for_srp, block, response.timestamp));
        let proven = expected.is_some_and(|e| constant_time_eq(&e, signature));
        match record {
            Some(r) if matched && proven => Ok(r.user),
            other => {
                let detail = if reset_required {
                    "no_password"
                } else if other.is_some() {
                    "wrong_proof"
                } else {
                    "unknown_user"
                };
                let user_id = other.as_ref().map(|r| r.user.id).or(reset_user);
                let email =
                    other.as_ref().and_then(|r| r.user.email.as_ref()).map_or(state.login.as_str(), |e| e.as_str());
                self.audit(AuditKind::SignInFailed, tenant, user_id, Some(email.to_owned()), Some(detail.into()));
                // No password to prove: whatever the proof, only a reset lets this user in.
                Err(if reset_required { Error::PasswordResetRequired } else { Error::InvalidCredentials })
            }
        }
    }

    /// Computes and stores the verifier of `user` for `password`, whose argon2 hash (just
    /// stored) is `phc`. A failure is logged, not returned: the password is set either way,
    /// and the verifier is computed again at the next password sign-in.
    pub(super) async fn store_srp_verifier(&self, user: &User, phc: &str, password: &str) {
        let Some(sealed) = self.sealed_srp_verifier(user, phc, password).await else { return };
        if let Err(e) = self.0.store.put_srp_verifier(user.tenant, user.id, &sealed, self.now()).await {
            tracing::error!(error = %e, user = %user.id, "SRP verifier not stored");
        }
    }

    /// The sealed verifier of `user` for `password`, whose argon2 hash is `phc`, to be
    /// stored: `None` where the tenant keeps no verifiers, or when the computation failed
    /// (logged). The exponentiation runs on the blocking pool.
    pub(super) async fn sealed_srp_verifier(&self, user: &User, phc: &str, password: &str) -> Option<Vec<u8>> {
        if !self.keeps_srp_verifiers(user.tenant) {
            return None;
        }
        let salt: [u8; SALT_LEN] = random_bytes();
        let pool = self.0.settings.srp_pool_name().to_owned();
        let user_id = user.id.0.hyphenated().to_string();
        let password = Zeroizing::new(password.to_owned());
        let v = match tokio::task::spawn_blocking(move || srp::verifier(&pool, &user_id, &password, &salt)).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "SRP verifier computation failed");
                return None;
            }
        };
        let mut plain = Zeroizing::new(salt.to_vec());
        plain.extend_from_slice(&v.to_bytes_be());
        Some(self.0.srp_seal.seal(&plain, &self.verifier_aad(user, phc)))
    }

    /// Stores a verifier for a user who signed in with `password` and has no verifier that
    /// opens (created before SRP, by an older password hash, or under another pool name).
    pub(super) async fn ensure_srp_verifier(&self, record: &UserRecord, password: &str) -> Result<()> {
        if !self.keeps_srp_verifiers(record.user.tenant) {
            return Ok(());
        }
        let Some(phc) = record.password_hash.as_deref() else { return Ok(()) };
        let sealed = self.0.store.srp_verifier(record.user.tenant, record.user.id).await?;
        if sealed.is_none_or(|s| self.open_verifier(record, &s).is_none()) {
            self.store_srp_verifier(&record.user, phc, password).await;
        }
        Ok(())
    }

    /// Whether users of `tenant` get SRP verifiers: only where the SRP flow can use them (SRP
    /// on, and the default tenant, the only one the `cognito` surface serves).
    fn keeps_srp_verifiers(&self, tenant: TenantId) -> bool {
        self.0.settings.srp && tenant == TenantId::DEFAULT
    }

    fn open_verifier(&self, record: &UserRecord, sealed: &[u8]) -> Option<Verifier> {
        let phc = record.password_hash.as_deref()?;
        let plain = self.0.srp_seal.open(sealed, &self.verifier_aad(&record.user, phc))?;
        let (salt, v) = plain.split_at_checked(SALT_LEN)?;
        Some(Verifier { salt: salt.try_into().ok()?, v: BigUint::from_bytes_be(v) })
    }

    /// A stand-in for a login without a verifier: a stable id, salt and verifier derived from
    /// a keyed hash of the login, so that its challenges look like a real user's.
    fn stand_in(&self, tenant: TenantId, login: &str) -> (uuid::Uuid, Verifier) {
        let tenant = tenant.to_string();
        let seed = self.0.srp_mac.mac(&[tenant.as_bytes(), login.as_bytes()]);
        let id_bytes = self.0.srp_mac.mac(&[b"id", &seed]);
        let salt_bytes = self.0.srp_mac.mac(&[b"salt", &seed]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&id_bytes[..16]);
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&salt_bytes[..SALT_LEN]);
        (uuid::Builder::from_random_bytes(id).into_uuid(), Verifier { salt, v: srp::stand_in_verifier(&seed) })
    }

    fn verifier_aad(&self, user: &User, phc: &str) -> Vec<u8> {
        let phc_digest = Sha256::digest(phc.as_bytes());
        let tenant = user.tenant.to_string();
        let id = user.id.to_string();
        let pool = self.0.settings.srp_pool_name();
        self.0.srp_mac.mac(&[b"verifier", pool.as_bytes(), tenant.as_bytes(), id.as_bytes(), &phc_digest]).to_vec()
    }

    fn challenge_aad(&self, tenant: TenantId, client_id: &str) -> Vec<u8> {
        let tenant = tenant.to_string();
        let pool = self.0.settings.srp_pool_name();
        self.0.srp_mac.mac(&[b"challenge", pool.as_bytes(), tenant.as_bytes(), client_id.as_bytes()]).to_vec()
    }
}
