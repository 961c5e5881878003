//! Tokens: the signing key ring, JWT issue and verification, and opaque refresh tokens.
//!
//! * **Key ring.** Signing keys live in the store (so every instance shares them), private
//!   parts as PKCS#8/PKCS#1 DER encrypted with XChaCha20-Poly1305 under a key derived from the
//!   server secret. The newest generation is the current key; the one before it still verifies
//!   and is still published, so tokens outlive one rotation (RFC 7517 JWK Set).
//! * **JWTs** (RFC 7519) carry `kid` in the header (RFC 7515 section 4.1.4). Access tokens are
//!   typed `at+jwt` (RFC 9068 section 2.1) so an ID token is never accepted as an access token.
//!   Verification accepts only the ring's algorithm for that `kid`: `none`, HS256 signed with a
//!   public key and any other algorithm confusion fail.
//! * **Refresh tokens** are 256 random bits, stored as HMAC-SHA256 under a secret-derived key.
//!   A token's successor is derived from it (HMAC under another label), so concurrent
//!   refreshes within the reuse window all get the same successor without storing it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters, EllipticCurveKeyType, Jwk,
    JwkSet, KeyAlgorithm, OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, RSAKeyParameters, RSAKeyType,
};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::identity::{SessionId, TenantId};
use crate::ports::{KeyRecord, Store};
use crate::secret::SubKey;
use crate::time_util::seconds;

/// The JWS algorithms Latchkey signs with (`LATCHKEY_JWT_ALG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SigningAlgorithm {
    /// Ed25519 signatures (RFC 8037). The default.
    #[default]
    EdDSA,
    /// ECDSA on P-256 with SHA-256 (RFC 7518 section 3.4).
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and 2048-bit keys (RFC 7518 section 3.3).
    RS256,
}

impl SigningAlgorithm {
    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::EdDSA => "EdDSA",
            SigningAlgorithm::ES256 => "ES256",
            SigningAlgorithm::RS256 => "RS256",
        }
    }

    /// Parses a JWS `alg` name (exact spelling).
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "EdDSA" => Some(SigningAlgorithm::EdDSA),
            "ES256" => Some(SigningAlgorithm::ES256),
            "RS256" => Some(SigningAlgorithm::RS256),
            _ => None,
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            SigningAlgorithm::EdDSA => Algorithm::EdDSA,
            SigningAlgorithm::ES256 => Algorithm::ES256,
            SigningAlgorithm::RS256 => Algorithm::RS256,
        }
    }
}

/// The `typ` header of access tokens (RFC 9068 section 2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// The `typ` header of ID tokens.
pub const ID_TOKEN_TYP: &str = "JWT";

/// The claims of every token Latchkey signs (API.md, "Tokens"). Times are seconds since the
/// Unix epoch (RFC 7519 `NumericDate`). `extra` holds token-specific claims (profile claims of
/// ID tokens, Cognito's `token_use`, ...), serialised at the top level.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Issuer (`LATCHKEY_PUBLIC_URL`).
    pub iss: String,
    /// Subject: the user id.
    pub sub: String,
    /// Audience: the client or surface the token is for.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Unique token id (a UUID).
    pub jti: String,
    /// Session id.
    pub sid: String,
    /// Tenant id.
    pub tid: String,
    /// Further claims.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// What a verifier expects of a token besides a valid signature.
#[derive(Debug, Clone, Copy)]
pub struct Expectation<'a> {
    /// Required `typ` header ([`ACCESS_TOKEN_TYP`] or [`ID_TOKEN_TYP`]).
    pub typ: &'a str,
    /// Accepted audiences; empty accepts any.
    pub audiences: &'a [&'a str],
}

/// One key of the ring, ready to sign and verify.
pub struct SigningKey {
    /// Key id.
    pub kid: String,
    /// Generation (1 for the first key).
    pub generation: i64,
    /// Algorithm.
    pub alg: SigningAlgorithm,
    /// Public JWK, with `kid`, `alg` and `use: sig`.
    pub jwk: Jwk,
    signer: JwsSigner,
    decoding: DecodingKey,
    /// The checks for tokens of this key, built once: only this key's algorithm, this issuer,
    /// the registered claims present (`exp` and `aud` are checked by [`KeyRing::verify`]).
    validation: Validation,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("generation", &self.generation)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A private key parsed once when the ring is loaded, so that signing a token costs only the
/// signature: JWS Compact Serialization (RFC 7515 section 7.1) with EdDSA over Ed25519
/// (RFC 8037 section 3.1), ES256 (RFC 7518 section 3.4: `R || S`, 64 bytes) or RS256
/// (RFC 7518 section 3.3: RSASSA-PKCS1-v1_5 with SHA-256). Tokens it signs verify with
/// `jsonwebtoken`, as every test that signs through the ring shows.
enum JwsSigner {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    P256(Box<p256::ecdsa::SigningKey>),
    Rsa(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
}

impl JwsSigner {
    /// Parses a private key as [`generate_key_pair`] makes it: PKCS#8 DER for EdDSA and ES256,
    /// PKCS#1 DER for RS256.
    fn from_der(alg: SigningAlgorithm, der: &[u8]) -> std::result::Result<Self, String> {
        Ok(match alg {
            SigningAlgorithm::EdDSA => {
                use ed25519_dalek::pkcs8::DecodePrivateKey;
                Self::Ed25519(Box::new(ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(|e| e.to_string())?))
            }
            SigningAlgorithm::ES256 => {
                use p256::pkcs8::DecodePrivateKey;
                Self::P256(Box::new(p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|e| e.to_string())?))
            }
            SigningAlgorithm::RS256 => {
                use rsa::pkcs1::DecodeRsaPrivateKey;
                let key = rsa::RsaPrivateKey::from_pkcs1_der(der).map_err(|e| e.to_string())?;
                Self::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(key)))
            }
        })
    }

    /// `BASE64URL(header) "." BASE64URL(claims) "." BASE64URL(signature)`.
    ///
    /// # Errors
    /// [`Error::Internal`] when the header or claims cannot be serialised.
    fn encode(&self, header: &Header, claims: &impl Serialize) -> Result<String> {
        let mut token = base64_json(header)?;
        token.push('.');
        token.push_str(&base64_json(claims)?);
        let signature = self.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::Ed25519(key) => ed25519_dalek::Signer::sign(key.as_ref(), message).to_bytes().to_vec(),
            Self::P256(key) => {
                let signature: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(key.as_ref(), message);
                signature.to_bytes().to_vec()
            }
            Self::Rsa(key) => {
                use rsa::signature::SignatureEncoding;
                rsa::signature::Signer::sign(key.as_ref(), message).to_vec()
            }
        }
    }
}

/// `BASE64URL(UTF8(JSON(value)))`, one part of a JWS.
fn base64_json(value: &impl Serialize) -> Result<String> {
    let json = serde_json::to_vec(value).map_err(|e| Error::internal(format!("jwt encoding: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// A freshly generated key pair: private DER (PKCS#8 for EdDSA/ES256, PKCS#1 for RS256) and
/// the public JWK (without `kid`).
fn generate_key_pair(alg: SigningAlgorithm) -> Result<(Zeroizing<Vec<u8>>, AlgorithmParameters)> {
    use rand::rngs::OsRng;
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    match alg {
        SigningAlgorithm::EdDSA => {
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
            let der = key.to_pkcs8_der().map_err(|e| Error::internal(format!("ed25519 pkcs8: {e}")))?;
            Ok((
                Zeroizing::new(der.as_bytes().to_vec()),
                AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x: b64(key.verifying_key().as_bytes()),
                }),
            ))
        }
        SigningAlgorithm::ES256 => {
            use p256::pkcs8::EncodePrivateKey;
            let key = p256::ecdsa::SigningKey::random(&mut OsRng);
            let der = key.to_pkcs8_der().map_err(|e| Error::internal(format!("p256 pkcs8: {e}")))?;
            let point = key.verifying_key().to_encoded_point(false);
            let (x, y) =
                point.x().zip(point.y()).ok_or_else(|| Error::internal("p256 public key has no coordinates"))?;
            Ok((
                Zeroizing::new(der.as_bytes().to_vec()),
                AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                    key_type: EllipticCurveKeyType::EC,
                    curve: EllipticCurve::P256,
                    x: b64(x),
                    y: b64(y),
                }),
            ))
        }
        SigningAlgorithm::RS256 => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::traits::PublicKeyParts;
            let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).map_err(|e| Error::internal(format!("rsa: {e}")))?;
            let der = key.to_pkcs1_der().map_err(|e| Error::internal(format!("rsa pkcs1: {e}")))?;
            Ok((
                Zeroizing::new(der.as_bytes().to_vec()),
                AlgorithmParameters::RSA(RSAKeyParameters {
                    key_type: RSAKeyType::RSA,
                    n: b64(&key.n().to_bytes_be()),
                    e: b64(&key.e().to_bytes_be()),
                }),
            ))
        }
    }
}

fn key_algorithm(alg: SigningAlgorithm) -> KeyAlgorithm {
    match alg {
        SigningAlgorithm::EdDSA => KeyAlgorithm::EdDSA,
        SigningAlgorithm::ES256 => KeyAlgorithm::ES256,
        SigningAlgorithm::RS256 => KeyAlgorithm::RS256,
    }
}

/// Encrypts and decrypts private keys at rest.
#[derive(Clone, Debug)]
struct KeyCipher(SubKey);

impl KeyCipher {
    fn seal(&self, kid: &str, der: &[u8]) -> Result<Vec<u8>> {
        let cipher = XChaCha20Poly1305::new(self.0.bytes().into());
        let nonce = XChaCha20Poly1305::generate_nonce(&mut rand::rngs::OsRng);
        let ciphertext = cipher
            .encrypt(&nonce, Payload { msg: der, aad: kid.as_bytes() })
            .map_err(|_| Error::internal("signing key encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    fn open(&self, kid: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < 24 {
            return Err(Error::internal(format!("signing key {kid} is truncated")));
        }
        let (nonce, ciphertext) = sealed.split_at(24);
        let cipher = XChaCha20Poly1305::new(self.0.bytes().into());
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: kid.as_bytes() })
            .map(Zeroizing::new)
            .map_err(|_| {
                Error::internal(format!(
                    "signing key {kid} cannot be decrypted: it was stored with a different LATCHKEY_SECRET"
                ))
            })
    }
}

/// How many verified tokens [`KeyRing`] remembers before it starts over.
const VERIFIED_CAPACITY: usize = 100_000;

/// A token whose signature checked out, remembered by the SHA-256 of its text so that the
/// same token presented again (every request of a session) skips the signature check, the
/// most expensive step of a session check (~50 µs for Ed25519). Everything that can change
/// is still checked on every use: the key is still in the ring, `typ`, `aud`, `exp`, and (in
/// [`crate::Auth::authenticate`]) the session row.
struct VerifiedToken {
    kid: String,
    typ: String,
    claims: Claims,
}

struct RingState {
    /// Newest first: current, then previous.
    keys: Vec<Arc<SigningKey>>,
    loaded_at: Instant,
    last_miss_reload: Option<Instant>,
}

/// The signing key ring, cached in memory and backed by the store.
///
/// The cache is reloaded when older than [`KeyRing::RELOAD_AFTER`], and when a token names an
/// unknown `kid` (at most once per second), so a key rotated by another instance is picked up.
pub struct KeyRing {
    store: Arc<dyn Store>,
    cipher: KeyCipher,
    alg: SigningAlgorithm,
    issuer: String,
    clock: Arc<dyn Clock>,
    state: RwLock<RingState>,
    verified: Mutex<HashMap<[u8; 32], Arc<VerifiedToken>>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").field("alg", &self.alg).field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

/// Keys are stored under the default tenant: one ring per issuer.
const RING_TENANT: TenantId = TenantId::DEFAULT;

impl KeyRing {
    /// How long the in-memory copy of the ring is trusted before it is re-read.
    pub const RELOAD_AFTER: Duration = Duration::from_secs(30);

    /// Loads the ring, creating the first key (or a key of `alg`, if the current key uses
    /// another algorithm) when needed.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails or a key cannot be decrypted with this secret.
    pub async fn load(
        store: Arc<dyn Store>,
        cipher_key: SubKey,
        alg: SigningAlgorithm,
        issuer: String,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let ring = Self {
            store,
            cipher: KeyCipher(cipher_key),
            alg,
            issuer,
            clock,
            state: RwLock::new(RingState { keys: Vec::new(), loaded_at: Instant::now(), last_miss_reload: None }),
            verified: Mutex::new(HashMap::new()),
        };
        ring.reload().await?;
        let needs_key = ring.current_cached().is_none_or(|k| k.alg != alg);
        if needs_key {
            ring.rotate().await?;
        }
        Ok(ring)
    }

    /// The issuer (`iss`) this ring signs for.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The configured signing algorithm.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.alg
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, RingState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn current_cached(&self) -> Option<Arc<SigningKey>> {
        self.read_state().keys.first().cloned()
    }

    /// Re-reads the two newest keys from the store.
    async fn reload(&self) -> Result<()> {
        let records = self.store.signing_keys(RING_TENANT, 2).await?;
        let mut keys = Vec::with_capacity(records.len());
        for record in records {
            keys.push(Arc::new(self.unseal(&record)?));
        }
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.keys = keys;
        state.loaded_at = Instant::now();
        Ok(())
    }

    fn unseal(&self, record: &KeyRecord) -> Result<SigningKey> {
        let alg = SigningAlgorithm::from_name(&record.alg)
            .ok_or_else(|| Error::internal(format!("signing key {} has unknown alg {}", record.kid, record.alg)))?;
        let der = self.cipher.open(&record.kid, &record.private_key)?;
        let jwk: Jwk = serde_json::from_str(&record.public_jwk)
            .map_err(|e| Error::internal(format!("signing key {} has a bad JWK: {e}", record.kid)))?;
        let decoding = DecodingKey::from_jwk(&jwk)
            .map_err(|e| Error::internal(format!("signing key {} has a bad JWK: {e}", record.kid)))?;
        let signer = JwsSigner::from_der(alg, &der)
            .map_err(|e| Error::internal(format!("signing key {} cannot be read: {e}", record.kid)))?;
        let mut validation = Validation::new(alg.jwt());
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
        Ok(SigningKey {
            kid: record.kid.clone(),
            generation: record.generation,
            alg,
            jwk,
            signer,
            decoding,
            validation,
        })
    }

    /// Creates a new current key of the configured algorithm. The previous current key keeps
    /// verifying (and stays in the JWKS) until the next rotation. If another instance rotates
    /// at the same moment, exactly one new key is created and both instances use it.
    ///
    /// Returns the `kid` of the new current key.
    ///
    /// # Errors
    /// [`Error::Internal`] when key generation or the store fails.
    pub async fn rotate(&self) -> Result<String> {
        let newest = self.store.signing_keys(RING_TENANT, 1).await?;
        let generation = newest.first().map_or(1, |k| k.generation + 1);
        let alg = self.alg;
        let (der, params) = tokio::task::spawn_blocking(move || generate_key_pair(alg))
            .await
            .map_err(|e| Error::internal(format!("key generation task failed: {e}")))??;
        let kid = uuid::Uuid::new_v4().simple().to_string();
        let jwk = Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(key_algorithm(alg)),
                key_id: Some(kid.clone()),
                ..CommonParameters::default()
            },
            algorithm: params,
        };
        let record = KeyRecord {
            kid: kid.clone(),
            generation,
            alg: alg.as_str().to_owned(),
            public_jwk: serde_json::to_string(&jwk).map_err(Error::internal)?,
            private_key: self.cipher.seal(&kid, &der)?,
            created_at: self.clock.now(),
        };
        let inserted = self.store.insert_signing_key(RING_TENANT, &record).await?;
        self.reload().await?;
        let current = self.current_cached().ok_or_else(|| Error::internal("key ring is empty after rotation"))?;
        if inserted {
            tracing::info!(kid = %kid, generation, alg = alg.as_str(), "signing key created");
        }
        Ok(current.kid.clone())
    }

    /// The current signing key, re-reading the store if the cache is stale.
    async fn current(&self) -> Result<Arc<SigningKey>> {
        let stale = self.read_state().loaded_at.elapsed() > Self::RELOAD_AFTER;
        if stale {
            self.reload().await?;
        }
        self.current_cached().ok_or_else(|| Error::internal("key ring is empty"))
    }

    async fn find(&self, kid: &str) -> Result<Option<Arc<SigningKey>>> {
        let (found, may_reload) = {
            let state = self.read_state();
            let found = state.keys.iter().find(|k| k.kid == kid).cloned();
            let may_reload = state.last_miss_reload.is_none_or(|t| t.elapsed() > Duration::from_secs(1))
                || state.loaded_at.elapsed() > Self::RELOAD_AFTER;
            (found, may_reload)
        };
        if found.is_some() || !may_reload {
            return Ok(found);
        }
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            state.last_miss_reload = Some(Instant::now());
        }
        self.reload().await?;
        Ok(self.read_state().keys.iter().find(|k| k.kid == kid).cloned())
    }

    /// Signs `claims` with the current key, with `typ` and `kid` in the header.
    ///
    /// # Errors
    /// [`Error::Internal`] when the ring is empty or signing fails.
    pub async fn sign(&self, typ: &str, claims: &Claims) -> Result<String> {
        let key = self.current().await?;
        let mut header = Header::new(key.alg.jwt());
        header.typ = Some(typ.to_owned());
        header.kid = Some(key.kid.clone());
        key.signer.encode(&header, claims)
    }

    /// Verifies a JWT: `kid` known to the ring, `alg` equal to that key's algorithm, valid
    /// signature, `typ` and `aud` as expected, `iss` this issuer, `exp` in the future by the
    /// injected clock. Does not look at the session; see [`crate::Auth::authenticate`].
    ///
    /// # Errors
    /// [`Error::TokenExpired`] for an expired but otherwise valid token, [`Error::InvalidToken`]
    /// for everything else that is wrong with it.
    pub async fn verify(&self, token: &str, expect: Expectation<'_>) -> Result<Claims> {
        if token.len() > 16 * 1024 {
            return Err(Error::InvalidToken);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let claims = match self.verified_before(&digest) {
            Some(seen) => {
                if seen.typ != expect.typ {
                    return Err(Error::InvalidToken);
                }
                seen.claims.clone()
            }
            None => {
                let header = jsonwebtoken::decode_header(token).map_err(|_| Error::InvalidToken)?;
                let kid = header.kid.as_deref().ok_or(Error::InvalidToken)?;
                let key = self.find(kid).await?.ok_or(Error::InvalidToken)?;
                let typ = header.typ.ok_or(Error::InvalidToken)?;
                if header.alg != key.alg.jwt() || typ != expect.typ {
                    return Err(Error::InvalidToken);
                }
                let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation)
                    .map_err(|_| Error::InvalidToken)?
                    .claims;
                self.remember(digest, VerifiedToken { kid: key.kid.clone(), typ, claims: claims.clone() });
                claims
            }
        };
        if !expect.audiences.is_empty() && !expect.audiences.contains(&claims.aud.as_str()) {
            return Err(Error::InvalidToken);
        }
        if claims.exp <= seconds(self.clock.now()) {
            return Err(Error::TokenExpired);
        }
        Ok(claims)
    }

    /// A token verified before under a key still in the ring.
    fn verified_before(&self, digest: &[u8; 32]) -> Option<Arc<VerifiedToken>> {
        let seen = self.verified.lock().unwrap_or_else(|p| p.into_inner()).get(digest).cloned()?;
        self.read_state().keys.iter().any(|k| k.kid == seen.kid).then_some(seen)
    }

    fn remember(&self, digest: [u8; 32], token: VerifiedToken) {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(digest, Arc::new(token));
    }

    /// The JWK Set of the current and previous keys, from the cached ring. Each call reads
    /// only the newest key's row, and reloads (decrypting private keys) only when its
    /// generation differs from the cached one, so a key rotated by any instance is served at
    /// once without every request paying for decryption.
    ///
    /// # Errors
    /// [`Error::Internal`] when the store fails.
    pub async fn jwks(&self) -> Result<JwkSet> {
        let newest = self.store.signing_keys(RING_TENANT, 1).await?;
        let cached = self.read_state().keys.first().map(|k| k.generation);
        if newest.first().map(|k| k.generation) != cached {
            self.reload().await?;
        }
        let keys = self.read_state().keys.iter().map(|k| k.jwk.clone()).collect();
        Ok(JwkSet { keys })
    }
}

/// An opaque refresh token (API.md, "Tokens": at least 256 random bits, stored hashed). Never
/// logged.
///
/// Issued tokens ([`RefreshTokenHasher::issue`]) are 64 bytes, base64url (86 characters): the
/// session id (16 bytes), 256 random bits, and a 128-bit tag (HMAC-SHA256 under the server
/// secret) over both, so that a token whose row has been purged after its rotation is still
/// recognised as one Latchkey issued for that session, and its replay still revokes the
/// session. [`RefreshToken::generate`] makes a bare random token (43 characters).
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    /// A new random token.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        RefreshToken(URL_SAFE_NO_PAD.encode(bytes.as_ref()))
    }

    /// Wraps a token presented by a client. Anything is accepted here; an unknown token simply
    /// has no row.
    pub fn from_client(s: &str) -> Self {
        RefreshToken(s.to_owned())
    }

    /// The token text, to hand to the client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken([redacted])")
    }
}

/// Bytes of an issued token: session id, random body, tag.
const TOKEN_SID: usize = 16;
const TOKEN_BODY: usize = 32;
const TOKEN_TAG: usize = 16;

/// What an issued refresh token may be exchanged by, fixed at issue, carried by its tag and
/// inherited by its successors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshKind {
    /// Exchanged on its own (`v1`, Cognito's `REFRESH_TOKEN_AUTH`).
    Bare,
    /// Exchanged only together with the value bound to it (`auth`'s `sRefreshToken` with
    /// `sIdRefreshToken`), so that the token alone is worthless on every route.
    Bound,
}

impl RefreshKind {
    fn label(self) -> &'static [u8] {
        match self {
            RefreshKind::Bare => b"refresh-token",
            RefreshKind::Bound => b"bound-refresh-token",
        }
    }
}

/// Keyed hashing, issue and successor derivation for refresh tokens.
#[derive(Clone, Debug)]
pub struct RefreshTokenHasher(SubKey);

impl RefreshTokenHasher {
    /// A hasher keyed with `key` (derived from the server secret under `refresh-tokens`).
    pub fn new(key: SubKey) -> Self {
        Self(key)
    }

    /// A new token of `kind` for `session`: the session id, 256 random bits and their tag
    /// (HMAC under a label of the kind).
    pub fn issue(&self, session: SessionId, kind: RefreshKind) -> RefreshToken {
        use rand::RngCore;
        let mut body = Zeroizing::new([0u8; TOKEN_BODY]);
        rand::rngs::OsRng.fill_bytes(body.as_mut());
        self.assemble(session, kind, body.as_ref())
    }

    fn tag(&self, kind: RefreshKind, sid: &[u8], body: &[u8]) -> [u8; 32] {
        self.0.mac(&[kind.label(), sid, body])
    }

    fn assemble(&self, session: SessionId, kind: RefreshKind, body: &[u8]) -> RefreshToken {
        let sid = session.0.into_bytes();
        let tag = self.tag(kind, &sid, body);
        let mut bytes = Zeroizing::new(Vec::with_capacity(TOKEN_SID + TOKEN_BODY + TOKEN_TAG));
        bytes.extend_from_slice(&sid);
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(&tag[..TOKEN_TAG]);
        RefreshToken(URL_SAFE_NO_PAD.encode(bytes.as_slice()))
    }

    /// The session and kind of a token this server issued (its tag verifies under one of the
    /// kinds, compared in constant time); `None` for anything else.
    pub fn issued(&self, token: &RefreshToken) -> Option<(SessionId, RefreshKind)> {
        if token.0.len() != (TOKEN_SID + TOKEN_BODY + TOKEN_TAG).div_ceil(3) * 4 - 2 {
            return None;
        }
        let bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(token.0.as_bytes()).ok()?);
        if bytes.len() != TOKEN_SID + TOKEN_BODY + TOKEN_TAG {
            return None;
        }
        let (sid, rest) = bytes.split_at(TOKEN_SID);
        let (body, tag) = rest.split_at(TOKEN_BODY);
        let bare = crate::secret::constant_time_eq(&self.tag(RefreshKind::Bare, sid, body)[..TOKEN_TAG], tag);
        let bound = crate::secret::constant_time_eq(&self.tag(RefreshKind::Bound, sid, body)[..TOKEN_TAG], tag);
        let kind = match (bare, bound) {
            (true, _) => RefreshKind::Bare,
            (false, true) => RefreshKind::Bound,
            (false, false) => return None,
        };
        Some((SessionId(uuid::Uuid::from_slice(sid).ok()?), kind))
    }

    /// The session an issued token belongs to (see [`RefreshTokenHasher::issued`]).
    pub fn session_of(&self, token: &RefreshToken) -> Option<SessionId> {
        self.issued(token).map(|(session, _)| session)
    }

    /// The storage key of a token: HMAC-SHA256(key, "hash" ‖ token).
    pub fn hash(&self, token: &RefreshToken) -> Vec<u8> {
        self.0.mac(&[b"hash", token.0.as_bytes()]).to_vec()
    }

    /// The token that replaces `token` when it is rotated, of `kind`: for an issued token,
    /// the same session with the body HMAC-SHA256(key, "successor" ‖ token); for a bare token,
    /// that HMAC itself, base64url. Deterministic, so every refresh within the reuse window
    /// returns the same successor; unpredictable without the server secret.
    pub fn successor(&self, token: &RefreshToken, kind: RefreshKind) -> RefreshToken {
        let body = self.0.mac(&[b"successor", token.0.as_bytes()]);
        match self.session_of(token) {
            Some(session) => self.assemble(session, kind, &body),
            None => RefreshToken(URL_SAFE_NO_PAD.encode(body)),
        }
    }

    /// A secondary opaque value bound to `token` (HMAC under `label`), e.g. the `auth`
    /// surface's `sIdRefreshToken`.
    pub fn bound_value(&self, label: &str, token: &RefreshToken) -> String {
        URL_SAFE_NO_PAD.encode(self.0.mac(&[label.as_bytes(), token.0.as_bytes()]))
    }
}

/// The moment `exp` of a token issued at `now` with lifetime `ttl`, capped at `cap`.
pub fn expiry(now: OffsetDateTime, ttl: Duration, cap: OffsetDateTime) -> OffsetDateTime {
    (now + ttl).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::ServerSecret;

    #[test]
    fn refresh_tokens_have_256_bits_and_derived_successors() {
        let h = RefreshTokenHasher::new(ServerSecret::new(vec![3u8; 32]).expect("secret").derive("refresh-tokens"));
        let t = RefreshToken::generate();
        assert_eq!(t.expose().len(), 43);
        assert_ne!(t, RefreshToken::generate());
        assert_eq!(h.successor(&t, RefreshKind::Bare), h.successor(&t, RefreshKind::Bare));
        assert_ne!(h.successor(&t, RefreshKind::Bare), t);
        assert_ne!(h.hash(&t), h.hash(&h.successor(&t, RefreshKind::Bare)));
        assert_eq!(h.successor(&t, RefreshKind::Bare).expose().len(), 43);
        let session = SessionId(uuid::Uuid::new_v4());
        for kind in [RefreshKind::Bare, RefreshKind::Bound] {
            let issued = h.issue(session, kind);
            assert_eq!(h.issued(&issued), Some((session, kind)));
            let next = h.successor(&issued, kind);
            assert_eq!(h.issued(&next), Some((session, kind)));
        }
        let bare = h.issue(session, RefreshKind::Bare);
        assert_eq!(h.issued(&h.successor(&bare, RefreshKind::Bound)), Some((session, RefreshKind::Bound)));
        assert_eq!(format!("{t:?}"), "RefreshToken([redacted])");
    }

    #[test]
    fn every_algorithm_generates_a_usable_key_pair() {
        for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256, SigningAlgorithm::RS256] {
            let (der, params) = generate_key_pair(alg).expect("generate");
            let jwk = Jwk {
                common: CommonParameters { key_algorithm: Some(key_algorithm(alg)), ..Default::default() },
                algorithm: params,
            };
            // Signed by the ring's own signer, verified by jsonwebtoken.
            let signer = JwsSigner::from_der(alg, &der).expect("parse");
            let decoding = DecodingKey::from_jwk(&jwk).expect("jwk");
            let claims = serde_json::json!({"sub": "x", "exp": 4_000_000_000u64});
            let token = signer.encode(&Header::new(alg.jwt()), &claims).expect("sign");
            let mut v = Validation::new(alg.jwt());
            v.set_required_spec_claims(&["exp"]);
            jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &v).expect("verify");
        }
    }

    #[test]
    fn sealed_keys_open_only_with_the_same_secret_and_kid() {
        let a = KeyCipher(ServerSecret::new(vec![1u8; 32]).expect("secret").derive("signing-keys"));
        let b = KeyCipher(ServerSecret::new(vec![2u8; 32]).expect("secret").derive("signing-keys"));
        let sealed = a.seal("kid1", b"private").expect("seal");
        assert_eq!(a.open("kid1", &sealed).expect("open").as_slice(), b"private");
        assert!(a.open("kid2", &sealed).is_err());
        assert!(b.open("kid1", &sealed).is_err());
        assert!(a.open("kid1", &sealed[..10]).is_err());
    }
}
