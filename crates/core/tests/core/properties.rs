//! Properties of the core's parsers of untrusted input, checked on generated inputs
//! (proptest, 256 cases each): no input panics, what parses round-trips through its text
//! form, normalisation is idempotent, and bounds hold. The fuzz targets in `fuzz/` explore
//! the same parsers without a case budget; their findings are pinned here.

use std::sync::{Arc, OnceLock};

use latchkey_core::clock::SystemClock;
use latchkey_core::code::{CodePurpose, OneTimeCode};
use latchkey_core::identity::{
    Email, ExternalId, PasswordPolicy, PresentedPassword, Profile, SessionId, TenantId, UserId, Username,
};
use latchkey_core::password::{
    HashRejection, MAX_ARGON2_MEMORY_KIB, MAX_BCRYPT_COST, MAX_PBKDF2_ITERATIONS, MAX_SCRYPT_N, check_importable,
};
use latchkey_core::secret::ServerSecret;
use latchkey_core::token::{Claims, Expectation, KeyRing, SigningAlgorithm};
use latchkey_core::{Error, srp, time_util};
use latchkey_store::{Database, Options};
use proptest::prelude::*;
use time::OffsetDateTime;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

/// Addresses of the shape `local@label.tld` that the parser must accept.
fn valid_email() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9_%+-]{0,20}(\\.[a-zA-Z0-9_%+-]{1,8})?@[a-zA-Z0-9]{1,12}(-[a-zA-Z0-9]{1,5})?\\.[a-zA-Z]{2,6}"
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn email_parsing_never_panics_and_what_parses_round_trips(raw in any::<String>()) {
        if let Ok(email) = Email::parse(&raw) {
            prop_assert_eq!(email.as_str(), raw.trim());
            prop_assert_eq!(Email::parse(&email.to_string()), Ok(email.clone()));
            prop_assert!(email.as_str().chars().count() <= Email::MAX_LEN);
        }
    }

    #[test]
    fn valid_emails_parse_and_normalise_idempotently(raw in valid_email(), pad in "[ \t]{0,3}") {
        let email = Email::parse(&format!("{pad}{raw}{pad}")).map_err(|e| TestCaseError::fail(e.0))?;
        prop_assert_eq!(email.as_str(), raw.as_str());
        let normalized = email.normalized();
        let again = Email::parse(&normalized).map_err(|e| TestCaseError::fail(e.0))?;
        prop_assert_eq!(again.normalized(), normalized.clone());
        prop_assert_eq!(normalized, raw.to_lowercase());
        prop_assert!(email.masked().ends_with(raw.split_once('@').map_or("", |(_, d)| d)));
    }

    #[test]
    fn usernames_and_external_ids_never_panic_and_keep_their_text(raw in any::<String>()) {
        if let Ok(name) = Username::parse(&raw) {
            prop_assert_eq!(name.as_str(), raw.as_str());
            prop_assert!(!raw.chars().any(|c| c.is_whitespace() || c.is_control()));
        }
        if let Ok(id) = ExternalId::parse(&raw) {
            prop_assert_eq!(id.as_str(), raw.as_str());
            prop_assert!(raw.chars().count() <= 256);
        }
    }

    #[test]
    fn password_policy_normalises_idempotently_within_its_bounds(raw in any::<String>(), min in 1usize..=32) {
        let policy = PasswordPolicy { min_length: min, ..PasswordPolicy::default() };
        if let Ok(password) = policy.parse(&raw) {
            let len = password.expose().chars().count();
            prop_assert!((min..=128).contains(&len));
            // NFKC is idempotent: the stored form parses to itself.
            let again = policy.parse(password.expose()).map_err(|e| TestCaseError::fail(e.0))?;
            prop_assert_eq!(again.expose(), password.expose());
            // What a user may set, they may present.
            let presented = PresentedPassword::parse(&raw).map_err(|e| TestCaseError::fail(e.0))?;
            prop_assert_eq!(presented.expose(), password.expose());
        }
    }

    #[test]
    fn presented_passwords_are_bounded(raw in any::<String>()) {
        if let Ok(password) = PresentedPassword::parse(&raw) {
            prop_assert!(password.expose().chars().count() <= PresentedPassword::MAX_LEN);
        }
    }

    #[test]
    fn profile_attributes_never_panic_and_refuse_control_characters(raw in any::<String>()) {
        if let Ok(value) = Profile::parse_attribute(&raw) {
            prop_assert_eq!(&value, &raw);
            prop_assert!(!value.trim().is_empty() && value.chars().count() <= Profile::MAX_LEN);
            prop_assert!(!value.chars().any(|c| c.is_control() && c != '\n' && c != '\r'));
        }
    }

    #[test]
    fn ids_round_trip_through_their_text(n in any::<u128>(), raw in any::<String>()) {
        let id = TenantId(uuid::Uuid::from_u128(n));
        prop_assert_eq!(TenantId::parse(&id.to_string()), Ok(id));
        let user = UserId(uuid::Uuid::from_u128(n));
        prop_assert_eq!(UserId::parse(&user.to_string()), Ok(user));
        if let Ok(session) = SessionId::parse(&raw) {
            prop_assert_eq!(SessionId::parse(&session.to_string()), Ok(session));
        }
    }

    #[test]
    fn codes_are_exactly_six_digits(n in any::<u64>(), raw in any::<String>()) {
        let in_range = (100_000..=999_999).contains(&n);
        prop_assert_eq!(OneTimeCode::from_number(n).is_ok(), in_range);
        if let Ok(code) = OneTimeCode::from_number(n) {
            prop_assert_eq!(code.digits(), n.to_string());
            prop_assert_eq!(OneTimeCode::parse(&code.digits()), Ok(code));
            prop_assert_eq!(OneTimeCode::parse(&format!(" {n}\n")), Ok(code));
        }
        if let Ok(code) = OneTimeCode::parse(&raw) {
            prop_assert_eq!(code.digits(), raw.trim());
        }
        if let Some(purpose) = CodePurpose::from_name(&raw) {
            prop_assert_eq!(purpose.as_str(), raw.as_str());
        }
    }

    #[test]
    fn srp_public_values_parse_only_as_bounded_hex_and_round_trip(raw in any::<String>(), hex in "[0-9a-fA-F]{1,800}") {
        if let Ok(value) = srp::parse_public(&raw) {
            prop_assert!(!raw.is_empty() && raw.len() <= 800 && raw.bytes().all(|b| b.is_ascii_hexdigit()));
            prop_assert_eq!(srp::parse_public(&srp::to_hex(&value)), Ok(value));
        }
        match srp::parse_public(&hex) {
            Ok(value) => prop_assert_eq!(srp::to_hex(&value), hex.trim_start_matches('0').to_lowercase()),
            // Only multiples of N (zero among them) are refused.
            Err(reason) => prop_assert_eq!(reason, "is not a valid SRP public value"),
        }
    }

    #[test]
    fn srp_timestamps_round_trip_and_never_panic(secs in 0i64..253_402_300_799, raw in any::<String>()) {
        let at = OffsetDateTime::from_unix_timestamp(secs).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if at.year() >= 1000 {
            prop_assert_eq!(srp::parse_timestamp(&srp::format_timestamp(at)), Some(at));
        }
        if let Some(parsed) = srp::parse_timestamp(&raw) {
            prop_assert_eq!(srp::format_timestamp(parsed).replace(" 0", " "), raw.replace(" 0", " "));
        }
    }

    #[test]
    fn imported_hashes_never_panic(raw in any::<String>(), structured in "(\\$(2[aby]|argon2(id|i|d)|scrypt)\\$|pbkdf2(:|_)sha(256|512)[:$]|scrypt:)[ -~]{0,120}") {
        let _ = check_importable(&raw);
        let _ = check_importable(&structured);
    }

    #[test]
    fn imported_hashes_with_absurd_costs_are_refused(extra in 1u64..1_000_000) {
        let bcrypt = format!("$2b${}$abcdefghijklmnopqrstuuJBVvA9ws5wCsXwGbcGQLBHRZfkyFS6", u64::from(MAX_BCRYPT_COST) + extra);
        prop_assert!(check_importable(&bcrypt).is_err());
        let memory = u64::from(MAX_ARGON2_MEMORY_KIB) + extra;
        let argon2 = format!("$argon2id$v=19$m={memory},t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG");
        prop_assert!(matches!(check_importable(&argon2), Err(HashRejection::TooCostly { .. })), "{argon2}");
        let iterations = u64::from(MAX_PBKDF2_ITERATIONS) + extra;
        let werkzeug = format!("pbkdf2:sha256:{iterations}$salt$0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        prop_assert!(matches!(check_importable(&werkzeug), Err(HashRejection::TooCostly { .. })), "{werkzeug}");
        let ln = MAX_SCRYPT_N.trailing_zeros() + 1 + u32::try_from(extra % 20).unwrap_or(0);
        let scrypt = format!("$scrypt$ln={ln},r=8,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObGaaaaaaaaaaa");
        prop_assert!(check_importable(&scrypt).is_err(), "{scrypt}");
    }

    #[test]
    fn millisecond_timestamps_round_trip(ms in -62_135_596_800_000i64..253_402_300_799_999, any_ms in any::<i64>()) {
        prop_assert_eq!(time_util::millis(time_util::from_millis(ms)), ms);
        let _ = time_util::from_millis(any_ms);
    }
}

/// One signing key ring over an in-memory store, shared by the token properties.
fn ring() -> &'static (tokio::runtime::Runtime, KeyRing) {
    static RING: OnceLock<(tokio::runtime::Runtime, KeyRing)> = OnceLock::new();
    RING.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let ring = runtime.block_on(async {
            let db = Database::connect("sqlite::memory:", &Options::default()).await.expect("in-memory sqlite");
            let secret = ServerSecret::new(vec![7u8; 32]).expect("secret");
            KeyRing::load(
                db.store(),
                secret.derive("properties"),
                SigningAlgorithm::EdDSA,
                "https://issuer.example".into(),
                Arc::new(SystemClock),
            )
            .await
            .expect("key ring")
        });
        (runtime, ring)
    })
}

fn claims(sub: &str, aud: &str) -> Claims {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    Claims {
        iss: "https://issuer.example".into(),
        sub: sub.into(),
        aud: aud.into(),
        exp: now + 600,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
        sid: uuid::Uuid::new_v4().to_string(),
        tid: uuid::Uuid::from_u128(1).to_string(),
        extra: serde_json::Map::new(),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_is_never_a_valid_token(raw in any::<String>(), parts in proptest::collection::vec("[A-Za-z0-9_-]{0,60}", 3)) {
        let (runtime, ring) = ring();
        let expect = Expectation { typ: "at+jwt", audiences: &[] };
        let outcome = runtime.block_on(ring.verify(&raw, expect));
        prop_assert!(matches!(outcome, Err(Error::InvalidToken)));
        let outcome = runtime.block_on(ring.verify(&parts.join("."), expect));
        prop_assert!(matches!(outcome, Err(Error::InvalidToken)));
    }

    #[test]
    fn signed_tokens_verify_to_their_claims_and_tampering_is_refused(sub in any::<String>(), aud in "[a-z0-9-]{1,20}", flip in any::<prop::sample::Index>()) {
        let (runtime, ring) = ring();
        let sent = claims(&sub, &aud);
        let token = runtime.block_on(ring.sign("at+jwt", &sent)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let audiences = [aud.as_str()];
        let got = runtime.block_on(ring.verify(&token, Expectation { typ: "at+jwt", audiences: &audiences }))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&got.sub, &sent.sub);
        prop_assert_eq!(&got.aud, &sent.aud);
        prop_assert_eq!(got.exp, sent.exp);
        // Another typ or audience is refused.
        let id_typ = runtime.block_on(ring.verify(&token, Expectation { typ: "id+jwt", audiences: &[] }));
        prop_assert!(id_typ.is_err());
        let other = runtime.block_on(ring.verify(&token, Expectation { typ: "at+jwt", audiences: &["another-audience"] }));
        prop_assert!(other.is_err());
        // Changing one character of the payload or signature breaks it.
        let payload_start = token.find('.').map_or(0, |i| i + 1);
        let i = payload_start + flip.index(token.len() - payload_start);
        let original = token.as_bytes()[i];
        if original != b'.' {
            let replacement = if original == b'A' { "B" } else { "A" };
            let tampered = format!("{}{replacement}{}", &token[..i], &token[i + 1..]);
            let outcome = runtime.block_on(ring.verify(&tampered, Expectation { typ: "at+jwt", audiences: &[] }));
            prop_assert!(outcome.is_err(), "tampered token accepted");
        }
    }
}
