//! Core rules exercised through [`Auth`] on an in-memory SQLite store with a manual clock:
//! code expiry and attempts, sign-in policy, sessions, tokens and refresh rotation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use latchkey_core::clock::{Clock, ManualClock};
use latchkey_core::code::OneTimeCode;
use latchkey_core::identity::{Email, Login, Password, Profile, TenantId};
use latchkey_core::limits::Unlimited;
use latchkey_core::password::HashParams;
use latchkey_core::ports::{Mail, MailError, Mailer};
use latchkey_core::secret::ServerSecret;
use latchkey_core::session::ClientMeta;
use latchkey_core::token::{RefreshToken, SigningAlgorithm};
use latchkey_core::{Auth, Deps, Error, NewUser, Settings};
use latchkey_store::{Database, Options};

/// Keeps every mail; the core's own tests read codes from it.
#[derive(Default)]
struct Outbox(Mutex<Vec<Mail>>);

#[async_trait]
impl Mailer for Outbox {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        self.0.lock().map_err(|e| MailError(e.to_string()))?.push(mail.clone());
        Ok(())
    }
}

impl Outbox {
    fn last_code(&self) -> OneTimeCode {
        let mails = self.0.lock().expect("outbox");
        let text = &mails.last().expect("a mail was sent").text;
        let digits: String = text.split(|c: char| !c.is_ascii_digit()).find(|r| r.len() == 6).expect("code").into();
        OneTimeCode::parse(&digits).expect("six digits")
    }
}

struct Harness {
    auth: Auth,
    clock: Arc<ManualClock>,
    outbox: Arc<Outbox>,
}

async fn harness_with(settings: Settings) -> Harness {
    let db = Database::connect("sqlite::memory:", &Options::default()).await.expect("in-memory sqlite");
    let clock = Arc::new(ManualClock::starting_now());
    let outbox = Arc::new(Outbox::default());
    let secret = ServerSecret::new(vec![9u8; 32]).expect("secret");
    let deps = Deps { store: db.store(), mailer: outbox.clone(), clock: clock.clone(), limiter: Arc::new(Unlimited) };
    let auth = Auth::new(deps, &secret, settings).await.expect("auth");
    Harness { auth, clock, outbox }
}

async fn harness() -> Harness {
    harness_with(Settings {
        hash_params: HashParams { memory_kib: 256, iterations: 1, parallelism: 1 },
        ..Settings::default()
    })
    .await
}

fn email(s: &str) -> Email {
    Email::parse(s).expect("email")
}

fn password() -> Password {
    Password::candidate("correct horse battery")
}

async fn sign_up(h: &Harness, address: &str) -> latchkey_core::SignedUp {
    h.auth
        .sign_up(
            TenantId::DEFAULT,
            NewUser {
                email: Some(email(address)),
                password: Some(password()),
                profile: Profile::default(),
                ..Default::default()
            },
            &ClientMeta::default(),
        )
        .await
        .expect("sign up")
}

#[tokio::test]
async fn a_code_expires_after_its_ttl() {
    let h = harness().await;
    sign_up(&h, "ada@example.com").await;
    let code = h.outbox.last_code();
    h.clock.advance(Duration::from_secs(10 * 60));
    let err = h.auth.verify_email(TenantId::DEFAULT, &email("ada@example.com"), code).await.expect_err("expired");
    assert!(matches!(err, Error::CodeExpired), "{err:?}");
}

#[tokio::test]
async fn a_code_is_accepted_just_before_it_expires() {
    let h = harness().await;
    sign_up(&h, "ada@example.com").await;
    let code = h.outbox.last_code();
    h.clock.advance(Duration::from_secs(10 * 60 - 1));
    let user = h.auth.verify_email(TenantId::DEFAULT, &email("ADA@example.com"), code).await.expect("verified");
    assert!(user.email_verified);
}

#[tokio::test]
async fn the_fifth_wrong_guess_burns_the_code() {
    let h = harness().await;
    sign_up(&h, "bob@example.com").await;
    let right = h.outbox.last_code();
    let wrong = OneTimeCode::parse(if right.digits() == "111111" { "222222" } else { "111111" }).expect("code");
    let addr = email("bob@example.com");
    for left in (0..5).rev() {
        let err = h.auth.verify_email(TenantId::DEFAULT, &addr, wrong).await.expect_err("wrong");
        assert!(matches!(err, Error::CodeMismatch { attempts_left } if attempts_left == left), "{err:?}");
    }
    let err = h.auth.verify_email(TenantId::DEFAULT, &addr, right).await.expect_err("burnt");
    assert!(matches!(err, Error::CodeExpired), "{err:?}");

    // A new code replaces the burnt one and works.
    h.auth.resend_verification(TenantId::DEFAULT, &addr).await.expect("resend");
    let fresh = h.outbox.last_code();
    h.auth.verify_email(TenantId::DEFAULT, &addr, fresh).await.expect("fresh code works");
}

#[tokio::test]
async fn a_new_code_kills_the_old_one_and_codes_are_single_use() {
    let h = harness().await;
    sign_up(&h, "cy@example.com").await;
    let addr = email("cy@example.com");
    let old = h.outbox.last_code();
    h.auth.resend_verification(TenantId::DEFAULT, &addr).await.expect("resend");
    let new = h.outbox.last_code();
    if old != new {
        let err = h.auth.verify_email(TenantId::DEFAULT, &addr, old).await.expect_err("old code");
        assert!(matches!(err, Error::CodeMismatch { .. }), "{err:?}");
    }
    h.auth.verify_email(TenantId::DEFAULT, &addr, new).await.expect("new code");
    let err = h.auth.verify_email(TenantId::DEFAULT, &addr, new).await.expect_err("already verified");
    assert!(matches!(err, Error::AlreadyVerified), "{err:?}");
}

#[tokio::test]
async fn sign_in_checks_the_password_before_verification() {
    let h = harness().await;
    sign_up(&h, "dee@example.com").await;
    let login = Login::Email(email("dee@example.com"));
    let meta = ClientMeta::default();
    let err = h
        .auth
        .sign_in(TenantId::DEFAULT, &login, &Password::candidate("wrong password"), &meta)
        .await
        .expect_err("wrong");
    assert!(matches!(err, Error::InvalidCredentials), "{err:?}");
    let err = h.auth.sign_in(TenantId::DEFAULT, &login, &password(), &meta).await.expect_err("unverified");
    assert!(matches!(err, Error::NotVerified), "{err:?}");
    let unknown = Login::Email(email("nobody@example.com"));
    let err = h.auth.sign_in(TenantId::DEFAULT, &unknown, &password(), &meta).await.expect_err("unknown");
    assert!(matches!(err, Error::InvalidCredentials), "{err:?}");

    let code = h.outbox.last_code();
    h.auth.verify_email(TenantId::DEFAULT, &email("dee@example.com"), code).await.expect("verify");
    let signed_in = h.auth.sign_in(TenantId::DEFAULT, &login, &password(), &meta).await.expect("sign in");
    assert_eq!(signed_in.user.email.as_ref().map(Email::as_str), Some("dee@example.com"));
}

#[tokio::test]
async fn duplicate_emails_differing_in_case_are_rejected() {
    let h = harness().await;
    sign_up(&h, "eve@example.com").await;
    let err = h
        .auth
        .sign_up(
            TenantId::DEFAULT,
            NewUser { email: Some(email("EVE@Example.com")), password: Some(password()), ..Default::default() },
            &ClientMeta::default(),
        )
        .await
        .expect_err("taken");
    assert!(matches!(err, Error::EmailTaken), "{err:?}");
}

async fn signed_in(h: &Harness, address: &str) -> latchkey_core::SignedIn {
    sign_up(h, address).await;
    let code = h.outbox.last_code();
    h.auth.verify_email(TenantId::DEFAULT, &email(address), code).await.expect("verify");
    h.auth
        .sign_in(TenantId::DEFAULT, &Login::Email(email(address)), &password(), &ClientMeta::default())
        .await
        .expect("sign in")
}

#[tokio::test]
async fn access_tokens_expire_by_the_injected_clock_and_die_with_their_session() {
    let h = harness().await;
    let s = signed_in(&h, "fay@example.com").await;
    let (token, ttl) = h.auth.access_token(&s.session, &s.user, "test", Default::default()).await.expect("token");
    assert_eq!(ttl, 15 * 60);
    let ok = h.auth.authenticate(&token, &["test"]).await.expect("valid");
    assert_eq!(ok.user.id, s.user.id);
    assert!(matches!(h.auth.authenticate(&token, &["other"]).await, Err(Error::InvalidToken)));

    h.clock.advance(Duration::from_secs(15 * 60));
    assert!(matches!(h.auth.authenticate(&token, &["test"]).await, Err(Error::TokenExpired)));

    let (token, _) = h.auth.access_token(&s.session, &s.user, "test", Default::default()).await.expect("token");
    h.auth.sign_out(&s.session).await.expect("sign out");
    assert!(matches!(h.auth.authenticate(&token, &["test"]).await, Err(Error::SessionRevoked)));
}

#[tokio::test]
async fn id_tokens_are_not_access_tokens() {
    let h = harness().await;
    let s = signed_in(&h, "gil@example.com").await;
    let id = h.auth.id_token(&s.session, &s.user, "test", Default::default()).await.expect("id token");
    assert!(matches!(h.auth.authenticate(&id, &[]).await, Err(Error::InvalidToken)));
    let verified = h.auth.verify_id_token(&id, &["test"]).await.expect("id token verifies as one");
    // Remembering a verified token does not let it change type.
    assert!(matches!(h.auth.authenticate(&id, &[]).await, Err(Error::InvalidToken)));
    assert_eq!(verified.claims.extra.get("email").and_then(|v| v.as_str()), Some("gil@example.com"));
    assert_eq!(verified.claims.extra.get("email_verified").and_then(|v| v.as_bool()), Some(true));
}

#[tokio::test]
async fn refresh_rotation_grace_window_and_reuse_detection() {
    let h = harness().await;
    let s = signed_in(&h, "hal@example.com").await;
    let t0 = h.auth.refresh_token(&s.session).await.expect("refresh token");

    let (_, _, t1) = h.auth.rotate_refresh_token(TenantId::DEFAULT, &t0).await.expect("rotate");
    assert_ne!(t1, t0);
    // A second tab presents t0 within the window: same successor, nobody signed out.
    h.clock.advance(Duration::from_secs(5));
    let (_, _, again) = h.auth.rotate_refresh_token(TenantId::DEFAULT, &t0).await.expect("grace");
    assert_eq!(again, t1);

    let (_, _, t2) = h.auth.rotate_refresh_token(TenantId::DEFAULT, &t1).await.expect("rotate t1");
    // t0 replayed after the window: the whole session is revoked, t2 included.
    h.clock.advance(Duration::from_secs(11));
    let err = h.auth.rotate_refresh_token(TenantId::DEFAULT, &t0).await.expect_err("reuse");
    assert!(matches!(err, Error::RefreshTokenReused), "{err:?}");
    let err = h.auth.rotate_refresh_token(TenantId::DEFAULT, &t2).await.expect_err("session revoked");
    assert!(matches!(err, Error::SessionRevoked), "{err:?}");
    let unknown = RefreshToken::from_client("nope");
    assert!(matches!(h.auth.rotate_refresh_token(TenantId::DEFAULT, &unknown).await, Err(Error::InvalidToken)));
}

#[tokio::test]
async fn every_signing_algorithm_issues_verifiable_tokens() {
    for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256, SigningAlgorithm::RS256] {
        let h = harness_with(Settings {
            signing_algorithm: alg,
            hash_params: HashParams { memory_kib: 256, iterations: 1, parallelism: 1 },
            ..Settings::default()
        })
        .await;
        let s = signed_in(&h, "ida@example.com").await;
        let token = h.auth.session_token(&s.session, &s.user, "test").await.expect("token");
        h.auth.authenticate(&token, &["test"]).await.expect("verifies");
        let jwks = h.auth.keys().jwks().await.expect("jwks");
        assert_eq!(jwks.keys.len(), 1);
        let _ = h.clock.now();
    }
}

#[tokio::test]
async fn ended_sessions_and_codes_are_purged_after_the_retention() {
    let h = harness().await;
    let s = signed_in(&h, "jon@example.com").await;
    sign_up(&h, "kay@example.com").await; // leaves a pending code
    h.auth.sign_out(&s.session).await.expect("sign out");
    let retention = Duration::from_secs(24 * 3600);
    let purged = h.auth.purge_expired(retention).await.expect("purge");
    assert_eq!((purged.sessions, purged.codes), (0, 0), "kept during the retention");

    h.clock.advance(retention + Duration::from_secs(11 * 60));
    let purged = h.auth.purge_expired(retention).await.expect("purge");
    assert_eq!((purged.sessions, purged.codes), (1, 1));
    let err = h
        .auth
        .verify_email(TenantId::DEFAULT, &email("kay@example.com"), h.outbox.last_code())
        .await
        .expect_err("gone");
    assert!(matches!(err, Error::NoCodePending), "{err:?}");
}
