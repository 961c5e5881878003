//! The core's input newtypes and parsers: identity (`Email`, `Username`, `ExternalId`,
//! passwords, profile attributes, UUID ids), one-time codes, and imported password hashes.
//! Never a panic; what parses keeps the properties the rest of the core relies on.
#![no_main]

use latchkey_core::code::{CodePurpose, OneTimeCode};
use latchkey_core::identity::{
    Email, ExternalId, PasswordPolicy, PresentedPassword, Profile, SessionId, TenantId, UserId, Username,
};
use latchkey_core::password::check_importable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(email) = Email::parse(text) {
        assert!(email.as_str().chars().count() <= Email::MAX_LEN);
        assert_eq!(email.normalized().to_lowercase(), email.normalized());
        let _ = email.masked();
    }
    if let Ok(name) = Username::parse(text) {
        assert_eq!(name.as_str(), text);
    }
    let _ = ExternalId::parse(text);
    if let Ok(p) = PasswordPolicy::default().parse(text) {
        assert!((8..=128).contains(&p.expose().chars().count()));
    }
    if let Ok(p) = PresentedPassword::parse(text) {
        assert!(p.expose().chars().count() <= PresentedPassword::MAX_LEN);
    }
    let _ = Profile::parse_attribute(text);
    for parsed in [TenantId::parse(text).map(|t| t.to_string()), UserId::parse(text).map(|u| u.to_string())] {
        if let Ok(id) = parsed {
            assert_eq!(SessionId::parse(&id).map(|s| s.to_string()).ok(), Some(id));
        }
    }
    if let Ok(code) = OneTimeCode::parse(text) {
        assert_eq!(OneTimeCode::parse(&code.digits()), Ok(code));
    }
    if let Some(purpose) = CodePurpose::from_name(text) {
        assert_eq!(purpose.as_str(), text);
    }
    let _ = check_importable(text);
});
