//! Password hashes made by other systems, kept as they were imported until the user's first
//! successful sign-in replaces them with Latchkey's argon2id.
//!
//! Each format is recognised by its prefix, parsed completely, and checked against cost bounds
//! before it is stored (at import) and again before it is verified (at sign-in): each sign-in
//! pays a hash's cost, so a hash asking for absurd work is refused rather than computed.
//! Verification runs on the hashing threads of [`super::PasswordHasher`], like argon2, and
//! compares derived keys in constant time.
//!
//! Passwords are verified as Latchkey receives them (NFKC-normalised UTF-8): identical to what
//! the original system hashed for every ASCII password and every NFKC-stable one.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Params};
use base64::Engine as _;
use hmac::Hmac;
use sha2::{Sha256, Sha512};

use crate::secret::constant_time_eq;

/// Largest bcrypt cost accepted (2^16 rounds, about 4 s per sign-in on one core).
pub const MAX_BCRYPT_COST: u32 = 16;
/// Largest scrypt `N` accepted (2^20).
pub const MAX_SCRYPT_N: u64 = 1 << 20;
/// Largest scrypt memory `128 · N · r` accepted, in bytes (1 GiB).
pub const MAX_SCRYPT_MEMORY: u64 = 1 << 30;
/// Largest scrypt parallelism `p` accepted (computed sequentially here).
pub const MAX_SCRYPT_P: u32 = 16;
/// Largest PBKDF2 iteration count accepted (10^7).
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
/// Largest argon2 memory cost accepted, in KiB (1 GiB).
pub const MAX_ARGON2_MEMORY_KIB: u32 = 1 << 20;
/// Largest argon2 time cost (passes) accepted.
pub const MAX_ARGON2_ITERATIONS: u32 = 16;
/// Largest argon2 parallelism (lanes) accepted (computed sequentially here).
pub const MAX_ARGON2_PARALLELISM: u32 = 16;

/// Shortest and longest derived key accepted from PBKDF2 and scrypt hashes, in bytes.
const KEY_LEN: std::ops::RangeInclusive<usize> = 16..=64;

/// A password hash format Latchkey can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashFormat {
    /// Argon2 PHC string, `$argon2id$v=19$m=…,t=…,p=…$salt$hash` (also `$argon2i$`, `$argon2d$`),
    /// as written by the reference implementation, argon2-cffi, RustCrypto `argon2` and Latchkey.
    Argon2,
    /// bcrypt modular crypt string `$2a$`/`$2b$`/`$2y$` + two-digit cost + 53 characters of
    /// bcrypt base64 (OpenBSD bcrypt, Python `bcrypt`, Node `bcryptjs`, Go `x/crypto/bcrypt`).
    /// Passwords longer than 72 bytes are truncated to 72, as those libraries do.
    Bcrypt,
    /// scrypt PHC string `$scrypt$ln=…,r=…,p=…$salt$hash` (RustCrypto `scrypt`): `N = 2^ln`,
    /// salt and hash in unpadded standard base64.
    ScryptPhc,
    /// Werkzeug `generate_password_hash` PBKDF2 format, `pbkdf2:sha256:N$salt$hex` (or
    /// `sha512`): HMAC-SHA-2 PBKDF2 of the UTF-8 password with the salt string's UTF-8 bytes,
    /// `N` iterations, hex-encoded key of the digest's length.
    WerkzeugPbkdf2,
    /// Werkzeug `generate_password_hash` scrypt format, `scrypt:N:r:p$salt$hex`: scrypt of the
    /// UTF-8 password with the salt string's UTF-8 bytes, hex-encoded 64-byte key.
    WerkzeugScrypt,
    /// Django `PBKDF2PasswordHasher` format, `pbkdf2_sha256$N$salt$base64`: PBKDF2-HMAC-SHA256
    /// with the salt string's UTF-8 bytes, 32-byte key in padded standard base64.
    DjangoPbkdf2,
}

impl HashFormat {
    /// The format's name as written in reports: `argon2`, `bcrypt`, `scrypt`,
    /// `werkzeug-pbkdf2`, `werkzeug-scrypt`, `django-pbkdf2`.
    pub fn name(self) -> &'static str {
        match self {
            HashFormat::Argon2 => "argon2",
            HashFormat::Bcrypt => "bcrypt",
            HashFormat::ScryptPhc => "scrypt",
            HashFormat::WerkzeugPbkdf2 => "werkzeug-pbkdf2",
            HashFormat::WerkzeugScrypt => "werkzeug-scrypt",
            HashFormat::DjangoPbkdf2 => "django-pbkdf2",
        }
    }
}

/// Why a hash cannot be stored (or verified).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashRejection {
    /// No recognised prefix.
    #[error("unknown password hash format")]
    Unknown,
    /// A recognised prefix, but the rest does not follow the format.
    #[error("malformed {} hash: {reason}", format.name())]
    Malformed {
        /// The format the prefix announced.
        format: HashFormat,
        /// What is wrong.
        reason: &'static str,
    },
    /// Well formed, but its cost is beyond Latchkey's bounds (each sign-in would pay it).
    #[error("{} hash cost too high: {reason}", format.name())]
    TooCostly {
        /// The hash's format.
        format: HashFormat,
        /// Which parameter and its bound.
        reason: String,
    },
}

/// Checks that `hash` is a password hash Latchkey can verify within its cost bounds, as the
/// import does before storing it.
///
/// # Errors
/// [`HashRejection::Unknown`] for an unrecognised prefix, [`HashRejection::Malformed`] when the
/// string does not follow its format, [`HashRejection::TooCostly`] when a cost parameter exceeds
/// the bounds above (`MAX_*`).
pub fn check_importable(hash: &str) -> Result<HashFormat, HashRejection> {
    if hash.starts_with("$argon2") {
        parse_argon2(hash).map(|_| HashFormat::Argon2)
    } else {
        Foreign::parse(hash).map(|f| f.format())
    }
}

/// Parses an argon2 PHC string and checks its bounds; the parsed hash and its parameters.
pub(super) fn parse_argon2(hash: &str) -> Result<(PasswordHash, Algorithm, Params), HashRejection> {
    let malformed = |reason| HashRejection::Malformed { format: HashFormat::Argon2, reason };
    let parsed = PasswordHash::new(hash).map_err(|_| malformed("not a PHC string"))?;
    let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).map_err(|_| malformed("unknown argon2 variant"))?;
    let params = Params::try_from(&parsed).map_err(|_| malformed("invalid parameters"))?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(malformed("no salt or no hash"));
    }
    let too_costly = |reason: String| HashRejection::TooCostly { format: HashFormat::Argon2, reason };
    if params.m_cost() > MAX_ARGON2_MEMORY_KIB {
        return Err(too_costly(format!("m={} KiB > {MAX_ARGON2_MEMORY_KIB}", params.m_cost())));
    }
    if params.t_cost() > MAX_ARGON2_ITERATIONS {
        return Err(too_costly(format!("t={} > {MAX_ARGON2_ITERATIONS}", params.t_cost())));
    }
    if params.p_cost() > MAX_ARGON2_PARALLELISM {
        return Err(too_costly(format!("p={} > {MAX_ARGON2_PARALLELISM}", params.p_cost())));
    }
    Ok((parsed, algorithm, params))
}

/// A parsed, bounds-checked hash of one of the non-argon2 formats.
#[derive(Debug)]
pub(super) enum Foreign<'h> {
    Bcrypt { hash: &'h str },
    Pbkdf2 { format: HashFormat, digest: Digest, iterations: u32, salt: Vec<u8>, key: Vec<u8> },
    Scrypt { format: HashFormat, params: scrypt::Params, salt: Vec<u8>, key: Vec<u8> },
}

/// The PRF digest of a PBKDF2 hash.
#[derive(Debug, Clone, Copy)]
pub(super) enum Digest {
    Sha256,
    Sha512,
}

impl<'h> Foreign<'h> {
    /// Recognises and parses `hash`.
    pub(super) fn parse(hash: &'h str) -> Result<Self, HashRejection> {
        if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
            parse_bcrypt(hash)
        } else if hash.starts_with("$scrypt$") {
            parse_scrypt_phc(hash)
        } else if hash.starts_with("pbkdf2:") {
            parse_werkzeug_pbkdf2(hash)
        } else if hash.starts_with("scrypt:") {
            parse_werkzeug_scrypt(hash)
        } else if hash.starts_with("pbkdf2_sha256$") {
            parse_django(hash)
        } else {
            Err(HashRejection::Unknown)
        }
    }

    /// The hash's format.
    pub(super) fn format(&self) -> HashFormat {
        match self {
            Foreign::Bcrypt { .. } => HashFormat::Bcrypt,
            Foreign::Pbkdf2 { format, .. } | Foreign::Scrypt { format, .. } => *format,
        }
    }

    /// Whether `password` derives the stored key (constant-time comparison). CPU-heavy: call
    /// on a hashing thread only.
    pub(super) fn verify(&self, password: &[u8]) -> bool {
        match self {
            // `bcrypt::verify` truncates to 72 bytes like the original libraries, and compares
            // in constant time (`subtle`).
            Foreign::Bcrypt { hash } => bcrypt::verify(password, hash).unwrap_or(false),
            Foreign::Pbkdf2 { digest, iterations, salt, key, .. } => {
                let mut out = vec![0u8; key.len()];
                match digest {
                    Digest::Sha256 => pbkdf2::pbkdf2::<Hmac<Sha256>>(password, salt, *iterations, &mut out),
                    Digest::Sha512 => pbkdf2::pbkdf2::<Hmac<Sha512>>(password, salt, *iterations, &mut out),
                }
                .is_ok()
                    && constant_time_eq(&out, key)
            }
            Foreign::Scrypt { params, salt, key, .. } => {
                let mut out = vec![0u8; key.len()];
                scrypt::scrypt(password, salt, params, &mut out).is_ok() && constant_time_eq(&out, key)
            }
        }
    }
}

fn parse_bcrypt(hash: &str) -> Result<Foreign<'_>, HashRejection> {
    let malformed = |reason| HashRejection::Malformed { format: HashFormat::Bcrypt, reason };
    // `$2b$` + 2 cost digits + `$` + 22 salt + 31 hash characters.
    if hash.len() != 60 || !hash.is_ascii() || hash.as_bytes()[6] != b'$' {
        return Err(malformed("expected $2b$NN$ and 53 characters"));
    }
    let cost: u32 = hash[4..6].parse().map_err(|_| malformed("cost is not two digits"))?;
    if !hash[7..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/') {
        return Err(malformed("salt and hash are not bcrypt base64"));
    }
    if cost < 4 {
        return Err(malformed("cost below 4"));
    }
    if cost > MAX_BCRYPT_COST {
        return Err(HashRejection::TooCostly {
            format: HashFormat::Bcrypt,
            reason: format!("cost {cost} > {MAX_BCRYPT_COST}"),
        });
    }
    Ok(Foreign::Bcrypt { hash })
}

fn parse_scrypt_phc(hash: &str) -> Result<Foreign<'_>, HashRejection> {
    let format = HashFormat::ScryptPhc;
    let malformed = |reason| HashRejection::Malformed { format, reason };
    let parsed = PasswordHash::new(hash).map_err(|_| malformed("not a PHC string"))?;
    let decimal =
        |name: &str| parsed.params.get_decimal(name).ok_or(malformed("expected ln, r and p decimal parameters"));
    let (ln, r, p) = (decimal("ln")?, decimal("r")?, decimal("p")?);
    let salt = parsed.salt.as_ref().ok_or(malformed("no salt"))?.as_ref().to_vec();
    let key = parsed.hash.as_ref().ok_or(malformed("no hash"))?.as_bytes().to_vec();
    if ln >= 64 {
        return Err(malformed("ln out of range"));
    }
    scrypt_params(format, 1u64 << ln, r, p, salt, key)
}

fn parse_werkzeug_pbkdf2(hash: &str) -> Result<Foreign<'_>, HashRejection> {
    let format = HashFormat::WerkzeugPbkdf2;
    let malformed = |reason| HashRejection::Malformed { format, reason };
    let (method, salt, hex) = split3(hash).ok_or(malformed("expected pbkdf2:sha256:N$salt$hex"))?;
    let mut parts = method.split(':').skip(1);
    let digest = match parts.next() {
        Some("sha256") => Digest::Sha256,
        Some("sha512") => Digest::Sha512,
        _ => return Err(malformed("digest is not sha256 or sha512")),
    };
    // Werkzeug has always written the iteration count; without it the count would be the
    // writing version's default, which changed over releases.
    let iterations = parts.next().ok_or(malformed("no iteration count"))?;
    if parts.next().is_some() {
        return Err(malformed("too many parameters"));
    }
    let iterations: u32 = iterations.parse().map_err(|_| malformed("iteration count is not a number"))?;
    let key = decode_hex(hex).ok_or(malformed("hash is not hex"))?;
    pbkdf2_params(format, digest, iterations, salt, key)
}

fn parse_werkzeug_scrypt(hash: &str) -> Result<Foreign<'_>, HashRejection> {
    let format = HashFormat::WerkzeugScrypt;
    let malformed = |reason| HashRejection::Malformed { format, reason };
    let (method, salt, hex) = split3(hash).ok_or(malformed("expected scrypt:N:r:p$salt$hex"))?;
    let numbers: Vec<&str> = method.split(':').skip(1).collect();
    let [n, r, p] = numbers[..] else {
        return Err(malformed("expected scrypt:N:r:p"));
    };
    let n: u64 = n.parse().map_err(|_| malformed("N is not a number"))?;
    let r: u32 = r.parse().map_err(|_| malformed("r is not a number"))?;
    let p: u32 = p.parse().map_err(|_| malformed("p is not a number"))?;
    let key = decode_hex(hex).ok_or(malformed("hash is not hex"))?;
    scrypt_params(format, n, r, p, salt.as_bytes().to_vec(), key)
}

fn parse_django(hash: &str) -> Result<Foreign<'_>, HashRejection> {
    let format = HashFormat::DjangoPbkdf2;
    let malformed = |reason| HashRejection::Malformed { format, reason };
    let mut parts = hash.splitn(4, '$').skip(1);
    let (Some(iterations), Some(salt), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed("expected pbkdf2_sha256$N$salt$base64"));
    };
    let iterations: u32 = iterations.parse().map_err(|_| malformed("iteration count is not a number"))?;
    let key = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| malformed("hash is not base64"))?;
    pbkdf2_params(format, Digest::Sha256, iterations, salt, key)
}

fn pbkdf2_params(
    format: HashFormat,
    digest: Digest,
    iterations: u32,
    salt: &str,
    key: Vec<u8>,
) -> Result<Foreign<'static>, HashRejection> {
    let malformed = |reason| HashRejection::Malformed { format, reason };
    if iterations == 0 {
        return Err(malformed("zero iterations"));
    }
    if salt.is_empty() {
        return Err(malformed("empty salt"));
    }
    if !KEY_LEN.contains(&key.len()) {
        return Err(malformed("derived key not 16 to 64 bytes"));
    }
    if iterations > MAX_PBKDF2_ITERATIONS {
        return Err(HashRejection::TooCostly {
            format,
            reason: format!("{iterations} iterations > {MAX_PBKDF2_ITERATIONS}"),
        });
    }
    Ok(Foreign::Pbkdf2 { format, digest, iterations, salt: salt.as_bytes().to_vec(), key })
}

fn scrypt_params(
    format: HashFormat,
    n: u64,
    r: u32,
    p: u32,
    salt: Vec<u8>,
    key: Vec<u8>,
) -> Result<Foreign<'static>, HashRejection> {
    let malformed = |reason| HashRejection::Malformed { format, reason };
    if n < 2 || !n.is_power_of_two() {
        return Err(malformed("N is not a power of two"));
    }
    if r == 0 || p == 0 {
        return Err(malformed("r and p must be positive"));
    }
    if salt.is_empty() {
        return Err(malformed("empty salt"));
    }
    if !KEY_LEN.contains(&key.len()) {
        return Err(malformed("derived key not 16 to 64 bytes"));
    }
    let too_costly = |reason: String| HashRejection::TooCostly { format, reason };
    if n > MAX_SCRYPT_N {
        return Err(too_costly(format!("N={n} > {MAX_SCRYPT_N}")));
    }
    let memory = 128u64.saturating_mul(n).saturating_mul(u64::from(r));
    if memory > MAX_SCRYPT_MEMORY {
        return Err(too_costly(format!("128·N·r = {memory} bytes > {MAX_SCRYPT_MEMORY}")));
    }
    if p > MAX_SCRYPT_P {
        return Err(too_costly(format!("p={p} > {MAX_SCRYPT_P}")));
    }
    let log_n = u8::try_from(n.trailing_zeros()).map_err(|_| malformed("N out of range"))?;
    let params = scrypt::Params::new(log_n, r, p, key.len()).map_err(|_| malformed("invalid parameters"))?;
    Ok(Foreign::Scrypt { format, params, salt, key })
}

/// `method$salt$hash` with three non-empty parts (Werkzeug's layout).
fn split3(hash: &str) -> Option<(&str, &str, &str)> {
    let mut parts = hash.splitn(3, '$');
    let (method, salt, hash) = (parts.next()?, parts.next()?, parts.next()?);
    (!method.is_empty() && !salt.is_empty() && !hash.is_empty()).then_some((method, salt, hash))
}

/// Lower- or upper-case hex to bytes; `None` for an odd length or another character.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16);
    hex.as_bytes()
        .chunks(2)
        .map(|pair| Some(u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).unwrap_or(0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(hash: &str) -> HashRejection {
        check_importable(hash).expect_err(hash)
    }

    #[test]
    fn formats_are_recognised_by_prefix() {
        assert_eq!(
            check_importable("$2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie"),
            Ok(HashFormat::Bcrypt)
        );
        assert_eq!(
            check_importable("pbkdf2:sha256:1000$salt$0123456789abcdef0123456789abcdef"),
            Ok(HashFormat::WerkzeugPbkdf2)
        );
        assert_eq!(
            check_importable("scrypt:16384:8:1$salt$0123456789abcdef0123456789abcdef"),
            Ok(HashFormat::WerkzeugScrypt)
        );
        assert_eq!(check_importable("pbkdf2_sha256$1000$salt$ASNFZ4mrze8BI0VniavN7w=="), Ok(HashFormat::DjangoPbkdf2));
        assert_eq!(rejected("md5$abc$def"), HashRejection::Unknown);
        assert_eq!(rejected(""), HashRejection::Unknown);
        assert_eq!(rejected("{SSHA}abcdef"), HashRejection::Unknown);
    }

    #[test]
    fn malformed_hashes_are_rejected_with_a_reason() {
        for bad in [
            "$2b$04$short",
            "$2b$xx$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie",
            "$2b$03$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie",
            "pbkdf2:sha256$salt$00112233445566778899aabbccddeeff",
            "pbkdf2:md5:1000$salt$00112233445566778899aabbccddeeff",
            "pbkdf2:sha256:0$salt$00112233445566778899aabbccddeeff",
            "pbkdf2:sha256:1000$salt$xyz",
            "pbkdf2:sha256:1000$$00112233445566778899aabbccddeeff",
            "scrypt:16384:8$salt$00112233445566778899aabbccddeeff",
            "scrypt:10000:8:1$salt$00112233445566778899aabbccddeeff",
            "pbkdf2_sha256$1000$salt",
            "pbkdf2_sha256$-1$salt$ASNFZ4mrze8BI0VniavN7w==",
            "$scrypt$ln=14,r=8$c2FsdHNhbHQ$ASNFZ4mrze8BI0VniavN7w",
            "$argon2id$v=19$m=abc,t=2,p=1$c2FsdHNhbHQ$ASNFZ4mrze8BI0VniavN7w",
        ] {
            assert!(matches!(rejected(bad), HashRejection::Malformed { .. }), "{bad}: {:?}", rejected(bad));
        }
    }

    #[test]
    fn costs_beyond_the_bounds_are_refused() {
        let salt = "c2FsdHNhbHRzYWx0c2FsdA";
        let key = "ASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4mrze8";
        for (hash, format) in [
            ("$2b$17$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie".to_owned(), HashFormat::Bcrypt),
            ("$2a$31$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie".to_owned(), HashFormat::Bcrypt),
            ("pbkdf2:sha256:10000001$s$00112233445566778899aabbccddeeff".to_owned(), HashFormat::WerkzeugPbkdf2),
            ("pbkdf2_sha256$4294967295$s$ASNFZ4mrze8BI0VniavN7w==".to_owned(), HashFormat::DjangoPbkdf2),
            ("scrypt:2097152:8:1$s$00112233445566778899aabbccddeeff".to_owned(), HashFormat::WerkzeugScrypt),
            ("scrypt:1048576:16:1$s$00112233445566778899aabbccddeeff".to_owned(), HashFormat::WerkzeugScrypt),
            ("scrypt:16384:8:17$s$00112233445566778899aabbccddeeff".to_owned(), HashFormat::WerkzeugScrypt),
            (format!("$scrypt$ln=21,r=8,p=1${salt}${key}"), HashFormat::ScryptPhc),
            (format!("$argon2id$v=19$m=1048577,t=2,p=1${salt}${key}"), HashFormat::Argon2),
            (format!("$argon2id$v=19$m=65536,t=17,p=1${salt}${key}"), HashFormat::Argon2),
            (format!("$argon2id$v=19$m=65536,t=2,p=17${salt}${key}"), HashFormat::Argon2),
        ] {
            match rejected(&hash) {
                HashRejection::TooCostly { format: f, .. } => assert_eq!(f, format, "{hash}"),
                other => panic!("{hash}: {other:?}"),
            }
        }
        // The bounds themselves are accepted.
        assert!(check_importable("pbkdf2:sha256:10000000$s$00112233445566778899aabbccddeeff").is_ok());
        assert!(check_importable("scrypt:1048576:8:16$s$00112233445566778899aabbccddeeff").is_ok());
        assert!(check_importable(&format!("$argon2id$v=19$m=1048576,t=16,p=16${salt}${key}")).is_ok());
        assert!(check_importable("$2b$16$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie").is_ok());
    }

    #[test]
    fn hex_decoding() {
        assert_eq!(decode_hex("00ffA0"), Some(vec![0, 255, 160]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex("é0"), None);
    }
}
