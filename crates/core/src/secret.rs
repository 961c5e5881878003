//! The server secret and the keys derived from it.
//!
//! One secret (`LATCHKEY_SECRET`) is shared by every instance of a deployment. Independent
//! 256-bit subkeys are derived from it with HMAC-SHA256 under fixed labels, so a key used to
//! hash one-time codes is never the key that encrypts signing keys.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

type HmacSha256 = Hmac<Sha256>;

/// The server secret. Never printed; zeroed on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ServerSecret(Vec<u8>);

impl ServerSecret {
    /// Minimum length of the secret in bytes.
    pub const MIN_LEN: usize = 32;

    /// Wraps a secret of at least [`ServerSecret::MIN_LEN`] bytes.
    ///
    /// # Errors
    /// A message naming the minimum length when `bytes` is shorter.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, String> {
        let bytes = bytes.into();
        if bytes.len() < Self::MIN_LEN {
            return Err(format!("must be at least {} bytes", Self::MIN_LEN));
        }
        Ok(Self(bytes))
    }

    /// A fresh random secret as text: 32 random bytes, base64url without padding (43 chars).
    pub fn generate_text() -> String {
        use base64::Engine;
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The 32-byte subkey for `label`: HMAC-SHA256(secret, "latchkey/" + label).
    pub fn derive(&self, label: &str) -> SubKey {
        let mut mac = HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(b"latchkey/");
        mac.update(label.as_bytes());
        SubKey(mac.finalize().into_bytes().into())
    }
}

impl std::fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerSecret([redacted])")
    }
}

/// A 256-bit key derived from the [`ServerSecret`]; used as an HMAC key or cipher key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SubKey([u8; 32]);

impl SubKey {
    /// The raw key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// HMAC-SHA256 over the concatenation of `parts`, each prefixed by its length so that
    /// different splits never collide. Returns 32 bytes.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

impl SubKey {
    /// Encrypts `plaintext` with XChaCha20-Poly1305 under this key, bound to `aad` (which must
    /// be presented again to open it). Returns the 24-byte random nonce followed by the
    /// ciphertext and its 16-byte tag.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, Payload};
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(self.0.as_slice().into());
        let nonce = chacha20poly1305::XChaCha20Poly1305::generate_nonce(&mut rand::rngs::OsRng);
        let ciphertext = cipher
            .encrypt(&nonce, Payload { msg: plaintext, aad })
            .unwrap_or_else(|_| unreachable!("XChaCha20-Poly1305 encrypts any message of realistic length"));
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Opens what [`SubKey::seal`] made with the same key and `aad`; `None` when it was made
    /// with another key or `aad`, was altered, or is too short.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        if sealed.len() < 24 + 16 {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(24);
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(self.0.as_slice().into());
        cipher
            .decrypt(chacha20poly1305::XNonce::from_slice(nonce), Payload { msg: ciphertext, aad })
            .ok()
            .map(zeroize::Zeroizing::new)
    }
}

impl std::fmt::Debug for SubKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubKey([redacted])")
    }
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subkeys_are_independent_and_stable() {
        let s = ServerSecret::new(vec![7u8; 32]).expect("32 bytes");
        assert_eq!(s.derive("a").bytes(), s.derive("a").bytes());
        assert_ne!(s.derive("a").bytes(), s.derive("b").bytes());
        let k = s.derive("a");
        assert_ne!(k.mac(&[b"ab", b"c"]), k.mac(&[b"a", b"bc"]));
        assert!(ServerSecret::new(vec![0u8; 31]).is_err());
        assert_eq!(format!("{s:?}"), "ServerSecret([redacted])");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn sealed_data_opens_only_with_the_same_key_and_aad() {
        let s = ServerSecret::new(vec![7u8; 32]).expect("32 bytes");
        let sealed = s.derive("a").seal(b"verifier", b"user-1");
        assert_eq!(s.derive("a").open(&sealed, b"user-1").expect("opens").as_slice(), b"verifier");
        assert!(s.derive("a").open(&sealed, b"user-2").is_none());
        assert!(s.derive("b").open(&sealed, b"user-1").is_none());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(s.derive("a").open(&tampered, b"user-1").is_none());
        assert!(s.derive("a").open(&sealed[..20], b"user-1").is_none());
        assert_ne!(sealed, s.derive("a").seal(b"verifier", b"user-1"), "random nonce");
    }
}
