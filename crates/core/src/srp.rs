//! The arithmetic of Cognito's SRP variant (`USER_SRP_AUTH`), as `amazon-cognito-identity-js`
//! (`AuthenticationHelper.js`) and Amplify v6 (`packages/auth/src/providers/cognito/utils/srp/`)
//! compute it; `../shared/COGNITO-SRP.md` has the formulas and the test vector used below.
//!
//! It is not RFC 5054 SRP-6a: `k` hashes the minimally encoded `N` and `g` (a leading zero byte
//! only when the top bit is set, like Java's `BigInteger.toByteArray()`), the session key is
//! HKDF-SHA256 (RFC 5869) with the info string `Caldera Derived Key`, and the proof is an
//! HMAC-SHA256 over the pool name, the user id, the server's secret block and a timestamp.
//!
//! This module holds the pure functions, for both sides: the server's (used by
//! [`Auth::srp_challenge`](crate::Auth::srp_challenge) and
//! [`Auth::srp_sign_in`](crate::Auth::srp_sign_in)) and the client's ([`client`], which tests
//! and tools use to sign in without a JavaScript client).
//!
//! Powers of the generator with a 256-bit exponent (the verifier `g^x`, the server's `g^b`) use
//! a fixed-base table ([`g_pow`]): 64 Montgomery multiplications (`crypto-bigint`) instead of
//! about 300, and constant-time: the exponent stays 32 bytes (never a `BigUint`, whose length
//! depends on leading zeros), and the table is read in full at every step. The other
//! exponentiations (`v^u`, `(A·v^u)^b`) use `num-bigint`'s `modpow`, which is not constant-time;
//! the exponents it sees are the server's one-time `b` and public values, and a verifier never
//! leaves the process except sealed.

use std::sync::LazyLock;

use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
use crypto_bigint::{Odd, U3072, Word};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use num_bigint::BigUint;
use sha2::{Digest, Sha256};
use time::{Month, OffsetDateTime, PrimitiveDateTime, Time, Weekday};

type HmacSha256 = Hmac<Sha256>;

/// The 3072-bit MODP prime of RFC 3526 section 4 (group 15), in hex.
const N_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD",
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F",
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510",
    "15728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864D87602733EC86A64521F2B18177B200C",
    "BBE117577A615D6C770988C0BAD946E208E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
);

/// The group: prime `N`, generator `g = 2`, multiplier `k = H(pad(N) ‖ pad(g))`.
struct Group {
    n: BigUint,
    g: BigUint,
    k: BigUint,
}

static GROUP: LazyLock<Group> = LazyLock::new(|| {
    let n = BigUint::parse_bytes(N_HEX.as_bytes(), 16).unwrap_or_else(|| unreachable!("N_HEX is hex"));
    let g = BigUint::from(2u8);
    let k = hash_to_int(&[&pad(&n), &pad(&g)]);
    Group { n, g, k }
});

/// Bits of the exponents [`g_pow`] takes from its table: SHA-256 outputs and 32-byte secrets.
const FIXED_BASE_BITS: usize = 256;
/// Exponent bits per table row (a window of 4 bits: 16 entries per row).
const WINDOW_BITS: usize = 4;
/// Rows of the table: one per 4-bit digit of a 256-bit exponent.
const WINDOWS: usize = FIXED_BASE_BITS / WINDOW_BITS;
/// Entries per row.
const DIGITS: usize = 1 << WINDOW_BITS;
/// Machine words in one 3072-bit value.
const LIMBS: usize = U3072::LIMBS;

/// One table entry: a power of `g` in Montgomery form, as machine words.
type Entry = [Word; LIMBS];

/// `g^(d·16^i) mod N` for every row `i` and digit `d`, in Montgomery form (64 × 16 entries of
/// 384 bytes: 384 KiB, built on first use in about 5 ms).
struct FixedBase {
    params: FixedMontyParams<LIMBS>,
    table: Box<[[Entry; DIGITS]]>,
}

static FIXED_BASE: LazyLock<FixedBase> = LazyLock::new(|| {
    let n = U3072::from_be_slice(&GROUP.n.to_bytes_be());
    let n = Option::<Odd<U3072>>::from(Odd::new(n)).unwrap_or_else(|| unreachable!("N is an odd prime"));
    let params = FixedMontyParams::new_vartime(n);
    let one = FixedMontyForm::one(&params);
    let mut base = FixedMontyForm::new(&U3072::from_u8(2), &params);
    let mut table = vec![[[0; LIMBS]; DIGITS]; WINDOWS].into_boxed_slice();
    for row in table.iter_mut() {
        // row[d] = base^d, where base = g^(16^i); the next row's base is base^16.
        let mut power = one;
        for entry in row.iter_mut() {
            entry.copy_from_slice(power.as_montgomery().as_words());
            power = power.mul(&base);
        }
        base = power;
    }
    FixedBase { params, table }
});

/// `g^e mod N` for the 256-bit exponent `e` (big-endian bytes), in constant time: the product
/// of one table entry per 4-bit digit of `e`, each selected by reading every entry of its row
/// under a mask.
fn g_pow(e: &[u8; FIXED_BASE_BITS / 8]) -> BigUint {
    let fixed = &*FIXED_BASE;
    let mut acc = FixedMontyForm::one(&fixed.params);
    let mut selected = zeroize::Zeroizing::new([0 as Word; LIMBS]);
    for (i, row) in fixed.table.iter().enumerate() {
        // Row i holds digit i counted from the least significant end.
        let digit = (e[e.len() - 1 - i / 2] >> (4 * (i % 2))) & 0x0f;
        selected.fill(0);
        for (d, entry) in (0u8..).zip(row.iter()) {
            let mask = Word::from(subtle::ConstantTimeEq::ct_eq(&d, &digit).unwrap_u8()).wrapping_neg();
            for (s, w) in selected.iter_mut().zip(entry) {
                *s |= w & mask;
            }
        }
        acc = acc.mul(&FixedMontyForm::from_montgomery(U3072::from_words(*selected), &fixed.params));
    }
    BigUint::from_bytes_be(&acc.retrieve().to_be_bytes())
}

/// Longest `SRP_A` accepted, in hex digits: `A` is below the 3072-bit `N`, so 768 digits
/// suffice; a few more allow leading zeros.
pub const MAX_PUBLIC_HEX_LEN: usize = 800;

/// Length of the derived session key in bytes.
pub const KEY_LEN: usize = 16;

/// Minimal big-endian bytes of `n`, with one `0x00` prepended when the top bit is set (Java's
/// `BigInteger.toByteArray()`, the clients' `padHex`). Not padded to the length of `N`.
pub fn pad(n: &BigUint) -> Vec<u8> {
    let mut bytes = n.to_bytes_be();
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    bytes
}

/// SHA-256 over the concatenation of `parts`, as an integer.
fn hash_to_int(parts: &[&[u8]]) -> BigUint {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part);
    }
    BigUint::from_bytes_be(&h.finalize())
}

/// Parses a public value (`SRP_A` or `SRP_B`): hex digits only (either case, no sign, no
/// separators), at most [`MAX_PUBLIC_HEX_LEN`] of them, and not zero modulo `N` (a zero `A`
/// would make the server's `S` zero whatever the password: the classic SRP bypass).
///
/// # Errors
/// A short reason when the text is empty, too long, not hex, or the value is 0 mod N.
pub fn parse_public(hex: &str) -> Result<BigUint, &'static str> {
    if hex.is_empty() || hex.len() > MAX_PUBLIC_HEX_LEN {
        return Err("must be 1 to 800 hexadecimal digits");
    }
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("must be hexadecimal");
    }
    let value = BigUint::parse_bytes(hex.as_bytes(), 16).ok_or("must be hexadecimal")?;
    if (&value % &GROUP.n) == BigUint::ZERO {
        return Err("is not a valid SRP public value");
    }
    Ok(value)
}

/// Lower-case hex without leading zeros, as the clients print and parse big integers.
pub fn to_hex(n: &BigUint) -> String {
    format!("{n:x}")
}

/// The private exponent `x = H(pad(salt) ‖ H(poolName ‖ userIdForSRP ‖ ":" ‖ password))`, as
/// the hash's 32 bytes (big-endian).
fn private_key_bytes(
    pool_name: &str,
    user_id_for_srp: &str,
    password: &str,
    salt: &[u8],
) -> zeroize::Zeroizing<[u8; 32]> {
    let inner = Sha256::new()
        .chain_update(pool_name.as_bytes())
        .chain_update(user_id_for_srp.as_bytes())
        .chain_update(b":")
        .chain_update(password.as_bytes())
        .finalize();
    let x = Sha256::new().chain_update(pad(&BigUint::from_bytes_be(salt))).chain_update(inner).finalize();
    zeroize::Zeroizing::new(x.into())
}

/// [`private_key_bytes`] as an integer (the client's side).
fn private_key(pool_name: &str, user_id_for_srp: &str, password: &str, salt: &[u8]) -> BigUint {
    BigUint::from_bytes_be(private_key_bytes(pool_name, user_id_for_srp, password, salt).as_slice())
}

/// The password verifier `v = g^x mod N` for a user, from the plaintext password (the only
/// moment it can be computed). `salt` is the user's random salt (its bytes; the wire carries it
/// as hex and the client re-encodes it with [`pad`]).
pub fn verifier(pool_name: &str, user_id_for_srp: &str, password: &str, salt: &[u8]) -> BigUint {
    g_pow(&private_key_bytes(pool_name, user_id_for_srp, password, salt))
}

/// A value in `[1, N)` derived from `seed`: a stand-in verifier for users who have none, so
/// their challenge is computed like a real one and looks like one. (No exponentiation: `B`
/// hides `v` behind `g^b` either way.)
pub fn stand_in_verifier(seed: &[u8; 32]) -> BigUint {
    let hk = Hkdf::<Sha256>::new(None, seed);
    let mut wide = [0u8; 400];
    hk.expand(b"latchkey srp stand-in verifier", &mut wide)
        .unwrap_or_else(|_| unreachable!("400 bytes is within HKDF-SHA256's output limit"));
    let v = BigUint::from_bytes_be(&wide) % &GROUP.n;
    if v == BigUint::ZERO { BigUint::from(1u8) } else { v }
}

/// The server's public value `B = (k·v + g^b) mod N` for the one-time secret `b` (32 bytes,
/// big-endian), or `None` when it is zero mod N (draw another `b`).
pub fn server_public(v: &BigUint, b: &[u8; 32]) -> Option<BigUint> {
    let n = &GROUP.n;
    let big_b = (&GROUP.k * v + g_pow(b)) % n;
    (big_b != BigUint::ZERO).then_some(big_b)
}

/// The scrambling parameter `u = H(pad(A) ‖ pad(B))`.
fn scrambler(a_pub: &BigUint, b_pub: &BigUint) -> BigUint {
    hash_to_int(&[&pad(a_pub), &pad(b_pub)])
}

/// HKDF-SHA256(salt = pad(u), ikm = pad(S), info = "Caldera Derived Key"), 16 bytes.
fn derive_key(u: &BigUint, s: &BigUint) -> [u8; KEY_LEN] {
    let hk = Hkdf::<Sha256>::new(Some(&pad(u)), &pad(s));
    let mut key = [0u8; KEY_LEN];
    hk.expand(b"Caldera Derived Key", &mut key)
        .unwrap_or_else(|_| unreachable!("16 bytes is within HKDF-SHA256's output limit"));
    key
}

/// The server's session key: `S = (A · v^u)^b mod N`, then [`derive_key`]. `None` when `u`
/// is zero (the proof must then be refused).
pub fn server_key(a_pub: &BigUint, b_pub: &BigUint, b: &BigUint, v: &BigUint) -> Option<[u8; KEY_LEN]> {
    let n = &GROUP.n;
    let u = scrambler(a_pub, b_pub);
    if u == BigUint::ZERO {
        return None;
    }
    let s = (a_pub * v.modpow(&u, n)).modpow(b, n);
    Some(derive_key(&u, &s))
}

/// `PASSWORD_CLAIM_SIGNATURE` before base64: HMAC-SHA256(key, poolName ‖ userIdForSRP ‖
/// secretBlock ‖ timestamp), 32 bytes.
pub fn signature(
    key: &[u8; KEY_LEN],
    pool_name: &str,
    user_id_for_srp: &str,
    secret_block: &[u8],
    timestamp: &str,
) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(pool_name.as_bytes());
    mac.update(user_id_for_srp.as_bytes());
    mac.update(secret_block);
    mac.update(timestamp.as_bytes());
    mac.finalize().into_bytes().into()
}

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Formats `TIMESTAMP` as the clients do: `EEE MMM d HH:mm:ss UTC yyyy` in English, the day
/// not zero-padded (e.g. `Wed Mar 6 12:34:56 UTC 2024`).
pub fn format_timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{} {} {} {:02}:{:02}:{:02} UTC {}",
        WEEKDAYS[usize::from(at.weekday().number_days_from_monday())],
        MONTHS[usize::from(u8::from(at.month())) - 1],
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.year()
    )
}

/// Parses a `TIMESTAMP` in the format of [`format_timestamp`] (the day may also be
/// zero-padded). The weekday must match the date.
///
/// # Errors
/// `None` for anything else.
pub fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    if text.len() > 40 {
        return None;
    }
    let parts: Vec<&str> = text.split(' ').collect();
    let [weekday, month, day, clock, "UTC", year] = parts.as_slice() else { return None };
    let month = MONTHS.iter().position(|m| m == month)?;
    let month = Month::try_from(u8::try_from(month + 1).ok()?).ok()?;
    let digits = |s: &str, len: std::ops::RangeInclusive<usize>| {
        (len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u32>().ok()).flatten()
    };
    let day = u8::try_from(digits(day, 1..=2)?).ok()?;
    let year = i32::try_from(digits(year, 4..=4)?).ok()?;
    let mut hms = clock.split(':');
    let (h, m, s) = (hms.next()?, hms.next()?, hms.next()?);
    if hms.next().is_some() {
        return None;
    }
    let time = Time::from_hms(
        u8::try_from(digits(h, 2..=2)?).ok()?,
        u8::try_from(digits(m, 2..=2)?).ok()?,
        u8::try_from(digits(s, 2..=2)?).ok()?,
    )
    .ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let expected: Weekday = date.weekday();
    if WEEKDAYS[usize::from(expected.number_days_from_monday())] != *weekday {
        return None;
    }
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

/// The client's half, as `amazon-cognito-identity-js` computes it: for tests, tools and anyone
/// checking the server against the formulas.
pub mod client {
    use num_bigint::BigUint;

    use super::{GROUP, KEY_LEN, derive_key, private_key, scrambler};

    /// The client's public value `A = g^a mod N` for its secret `a`.
    pub fn public(a: &BigUint) -> BigUint {
        GROUP.g.modpow(a, &GROUP.n)
    }

    /// The client's session key: `S = (B − k·g^x)^(a + u·x) mod N`, then HKDF as on the
    /// server. `None` when `B` is 0 mod N or `u` is zero (the client must give up).
    pub fn key(
        pool_name: &str,
        user_id_for_srp: &str,
        password: &str,
        salt: &[u8],
        a: &BigUint,
        b_pub: &BigUint,
    ) -> Option<[u8; KEY_LEN]> {
        let n = &GROUP.n;
        if (b_pub % n) == BigUint::ZERO {
            return None;
        }
        let a_pub = public(a);
        let u = scrambler(&a_pub, b_pub);
        if u == BigUint::ZERO {
            return None;
        }
        let x = private_key(pool_name, user_id_for_srp, password, salt);
        let kgx = (&GROUP.k * GROUP.g.modpow(&x, n)) % n;
        let base = (b_pub + n - kgx) % n;
        let s = base.modpow(&(a + &u * &x), n);
        Some(derive_key(&u, &s))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    fn int(hex: &str) -> BigUint {
        BigUint::parse_bytes(hex.as_bytes(), 16).expect("hex")
    }

    #[test]
    fn k_matches_the_clients_constant() {
        assert_eq!(to_hex(&GROUP.k), "538282c4354742d7cbbde2359fcf67f9f5b3a6b08791e5011b43b8a5b66d9ee6");
        assert_eq!(GROUP.n.bits(), 3072);
    }

    /// The vector of COGNITO-SRP.md, checked against amazon-cognito-identity-js 6.3.21.
    #[test]
    fn published_vector_gives_the_published_key_and_signature() {
        let (pool, user, password) = ("AbCdEf123", "alice", "Sup3rSecret!");
        let salt = int("d4f1c2a3b4c5d6e7f8091a2b3c4d5e6f").to_bytes_be();
        let a = int("a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90");
        let b_bytes: [u8; 32] = int("1234567890abcdef1234567890abcdef1234567890abcdef1234567890abcdef")
            .to_bytes_be()
            .try_into()
            .expect("32 bytes");
        let b = BigUint::from_bytes_be(&b_bytes);
        let block = STANDARD.decode("b3BhcXVlLXNlY3JldC1ibG9jaw==").expect("base64");
        let timestamp = "Wed Mar 6 12:34:56 UTC 2024";

        let v = verifier(pool, user, password, &salt);
        let b_pub = server_public(&v, &b_bytes).expect("B is not zero");
        let a_pub = client::public(&a);
        let server = server_key(&a_pub, &b_pub, &b, &v).expect("u is not zero");
        let client = client::key(pool, user, password, &salt, &a, &b_pub).expect("valid B");
        assert_eq!(server, client);
        assert_eq!(hex(&server), "9c291a926bfc7611648f5590d6f60168");
        let sig = signature(&server, pool, user, &block, timestamp);
        assert_eq!(STANDARD.encode(sig), "y6loCUz2SVRgxh2FnXNVSPG45JGsivlf/rfkzjHt0ec=");

        let wrong = client::key(pool, user, "Sup3rSecret?", &salt, &a, &b_pub).expect("valid B");
        assert_ne!(wrong, server);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn pad_prepends_a_zero_only_when_the_top_bit_is_set() {
        assert_eq!(pad(&BigUint::from(0x7fu8)), vec![0x7f]);
        assert_eq!(pad(&BigUint::from(0x80u8)), vec![0x00, 0x80]);
        assert_eq!(pad(&BigUint::from(0x0102u16)), vec![0x01, 0x02]);
    }

    #[test]
    fn public_values_that_are_zero_mod_n_or_not_hex_are_refused() {
        assert!(parse_public("0").is_err());
        assert!(parse_public(&to_hex(&GROUP.n)).is_err());
        assert!(parse_public(&to_hex(&(&GROUP.n * 2u8))).is_err());
        assert!(parse_public("").is_err());
        assert!(parse_public("-5").is_err());
        assert!(parse_public("12_34").is_err());
        assert!(parse_public("xyz").is_err());
        assert!(parse_public(&"f".repeat(MAX_PUBLIC_HEX_LEN + 1)).is_err());
        assert_eq!(parse_public("0aBc").expect("hex"), BigUint::from(0xabcu16));
    }

    #[test]
    fn timestamps_round_trip_in_the_clients_format() {
        let at = parse_timestamp("Wed Mar 6 12:34:56 UTC 2024").expect("valid");
        assert_eq!(format_timestamp(at), "Wed Mar 6 12:34:56 UTC 2024");
        assert_eq!(parse_timestamp("Wed Mar 06 12:34:56 UTC 2024"), Some(at));
        assert_eq!(format_timestamp(time::macros::datetime!(2026-12-14 03:04:05 UTC)), "Mon Dec 14 03:04:05 UTC 2026");
        for bad in [
            "Thu Mar 6 12:34:56 UTC 2024",
            "Wed Mar 6 12:34:56 GMT 2024",
            "Wed Mar 6 12:34 UTC 2024",
            "Wed Mar 32 12:34:56 UTC 2024",
            "Wed Mar 6 24:00:00 UTC 2024",
            "Wed  Mar 6 12:34:56 UTC 2024",
            "",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_fixed_base_table_gives_what_modpow_gives() {
        let mut exponents: Vec<[u8; 32]> = vec![[0; 32], [0xff; 32]];
        for (at, byte) in [(31, 1), (31, 15), (31, 16), (0, 0x80), (0, 0x01), (16, 0xa5)] {
            let mut e = [0; 32];
            e[at] = byte;
            exponents.push(e);
        }
        exponents.extend((0u32..64).map(|i| <[u8; 32]>::from(Sha256::digest(i.to_be_bytes()))));
        for e in &exponents {
            assert_eq!(g_pow(e), GROUP.g.modpow(&BigUint::from_bytes_be(e), &GROUP.n), "g^{e:02x?}");
        }
    }

    #[test]
    fn stand_in_verifiers_are_stable_and_in_range() {
        let v = stand_in_verifier(&[7u8; 32]);
        assert_eq!(v, stand_in_verifier(&[7u8; 32]));
        assert_ne!(v, stand_in_verifier(&[8u8; 32]));
        assert!(v < GROUP.n && v > BigUint::ZERO);
    }
}
