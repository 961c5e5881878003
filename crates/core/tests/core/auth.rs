//! Core rules exercised through [`Auth`] on an in-memory SQLite store with a manual clock:
//! code expiry and attempts, sign-in policy, sessions, tokens and refresh rotation.

use std::sync::Arc;
use std::time::Duration;

use latchkey_core::clock::{Clock, ManualClock};
use latchkey_core::code::OneTimeCode;
use latchkey_core::identity::{
    Email, Login, NewPassword, PasswordPolicy, PresentedPassword, Profile, SessionId, TenantId,
};
use latchkey_core::limits::{MemoryRateLimiter, RateLimiter, Unlimited};
use latchkey_core::password::HashParams;

use crate::support::Outbox;
use latchkey_core::secret::ServerSecret;
use latchkey_core::session::{ClientMeta, LocalRevocationBus};
use latchkey_core::token::{RefreshToken, SigningAlgorithm};
use latchkey_core::{Auth, Deps, Error, NewUser, PresentedTokens, Settings};
use latchkey_store::{Database, Options};

impl Outbox {
    /// The recipient of the last mail.
    fn last_to(&self) -> String {
        self.0.lock().expect("outbox").last().expect("a mail was sent").to.as_str().to_owned()
    }

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

impl Harness {
    /// The code in the last mail, once the mail queue has delivered it.
    async fn code(&self) -> OneTimeCode {
        assert!(self.auth.flush_mail(Duration::from_secs(5)).await, "mail delivered");
        self.outbox.last_code()
    }

    /// The recipient of the last mail, once the mail queue has delivered it.
    async fn mail_to(&self) -> String {
        assert!(self.auth.flush_mail(Duration::from_secs(5)).await, "mail delivered");
        self.outbox.last_to()
    }
}

async fn harness_with(settings: Settings) -> Harness {
    build(settings, false).await
}

/// A harness whose rate limits are on, counted by the manual clock.
async fn limited() -> Harness {
    build(
        Settings { hash_params: HashParams { memory_kib: 256, iterations: 1, parallelism: 1 }, ..Settings::default() },
        true,
    )
    .await
}

async fn build(settings: Settings, limits: bool) -> Harness {
    let db = Database::connect("sqlite::memory:", &Options::default()).await.expect("in-memory sqlite");
    let clock = Arc::new(ManualClock::starting_now());
    let outbox = Arc::new(Outbox::default());
    let secret = ServerSecret::new(vec![9u8; 32]).expect("secret");
    let limiter: Arc<dyn RateLimiter> =
        if limits { Arc::new(MemoryRateLimiter::new(clock.clone())) } else { Arc::new(Unlimited) };
    let deps = Deps {
        store: db.store(),
        mailer: outbox.clone(),
        clock: clock.clone(),
        limiter,
        revocations: Arc::new(LocalRevocationBus::default()),
    };
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

const PASSWORD: &str = "correct horse battery";

/// The password users are created with.
fn new_password() -> NewPassword {
    PasswordPolicy::default().parse(PASSWORD).expect("within the policy")
}

/// The same password, as presented at sign-in.
fn password() -> PresentedPassword {
    PresentedPassword::parse(PASSWORD).expect("bounded")
}

async fn sign_up(h: &Harness, address: &str) -> latchkey_core::SignedUp {
    h.auth
        .sign_up(
            TenantId::DEFAULT,
            NewUser {
                email: Some(email(address)),
                password: Some(new_password()),
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
    let code = h.code().await;
    h.clock.advance(Duration::from_secs(10 * 60));
    let err = h
        .auth
        .verify_email(TenantId::DEFAULT, &email("ada@example.com"), code, &ClientMeta::default())
        .await
        .expect_err("expired");
    assert!(matches!(err, Error::CodeExpired), "{err:?}");
}

#[tokio::test]
async fn a_code_is_accepted_just_before_it_expires() {
    let h = harness().await;
    sign_up(&h, "ada@example.com").await;
    let code = h.code().await;
    h.clock.advance(Duration::from_secs(10 * 60 - 1));
    let user = h
        .auth
        .verify_email(TenantId::DEFAULT, &email("ADA@example.com"), code, &ClientMeta::default())
        .await
        .expect("verified");
    assert!(user.email_verified);
}

#[tokio::test]
async fn the_fifth_wrong_guess_burns_the_code() {
    let h = harness().await;
    sign_up(&h, "bob@example.com").await;
    let right = h.code().await;
    let wrong = OneTimeCode::parse(if right.digits() == "111111" { "222222" } else { "111111" }).expect("code");
    let addr = email("bob@example.com");
    for left in (0..5).rev() {
        let err =
            h.auth.verify_email(TenantId::DEFAULT, &addr, wrong, &ClientMeta::default()).await.expect_err("wrong");
        assert!(matches!(err, Error::CodeMismatch { attempts_left } if attempts_left == left), "{err:?}");
    }
    let err = h.auth.verify_email(TenantId::DEFAULT, &addr, right, &ClientMeta::default()).await.expect_err("burnt");
    assert!(matches!(err, Error::CodeExpired), "{err:?}");

    // A new code replaces the burnt one and works.
    h.auth.resend_verification(TenantId::DEFAULT, &addr).await.expect("resend");
    let fresh = h.code().await;
    h.auth.verify_email(TenantId::DEFAULT, &addr, fresh, &ClientMeta::default()).await.expect("fresh code works");
}

#[tokio::test]
async fn a_new_code_kills_the_old_one_and_codes_are_single_use() {
    let h = harness().await;
    sign_up(&h, "cy@example.com").await;
    let addr = email("cy@example.com");
    let old = h.code().await;
    h.auth.resend_verification(TenantId::DEFAULT, &addr).await.expect("resend");
    let new = h.code().await;
    if old != new {
        let err =
            h.auth.verify_email(TenantId::DEFAULT, &addr, old, &ClientMeta::default()).await.expect_err("old code");
        assert!(matches!(err, Error::CodeMismatch { .. }), "{err:?}");
    }
    h.auth.verify_email(TenantId::DEFAULT, &addr, new, &ClientMeta::default()).await.expect("new code");
    let err =
        h.auth.verify_email(TenantId::DEFAULT, &addr, new, &ClientMeta::default()).await.expect_err("already verified");
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
        .sign_in(TenantId::DEFAULT, &login, &PresentedPassword::parse("wrong password").expect("bounded"), &meta)
        .await
        .expect_err("wrong");
    assert!(matches!(err, Error::InvalidCredentials), "{err:?}");
    let err = h.auth.sign_in(TenantId::DEFAULT, &login, &password(), &meta).await.expect_err("unverified");
    assert!(matches!(err, Error::NotVerified), "{err:?}");
    let unknown = Login::Email(email("nobody@example.com"));
    let err = h.auth.sign_in(TenantId::DEFAULT, &unknown, &password(), &meta).await.expect_err("unknown");
    assert!(matches!(err, Error::InvalidCredentials), "{err:?}");

    let code = h.code().await;
    h.auth
        .verify_email(TenantId::DEFAULT, &email("dee@example.com"), code, &ClientMeta::default())
        .await
        .expect("verify");
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
            NewUser { email: Some(email("EVE@Example.com")), password: Some(new_password()), ..Default::default() },
            &ClientMeta::default(),
        )
        .await
        .expect_err("taken");
    assert!(matches!(err, Error::EmailTaken), "{err:?}");
}

async fn signed_in(h: &Harness, address: &str) -> latchkey_core::SignedIn {
    sign_up(h, address).await;
    let code = h.code().await;
    h.auth.verify_email(TenantId::DEFAULT, &email(address), code, &ClientMeta::default()).await.expect("verify");
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
async fn revoking_a_refresh_token_ends_its_session_only() {
    let h = harness().await;
    let a = signed_in(&h, "ivy@example.com").await;
    let b = h
        .auth
        .sign_in(TenantId::DEFAULT, &Login::Email(email("ivy@example.com")), &password(), &ClientMeta::default())
        .await
        .expect("second session");
    let t0 = h.auth.refresh_token(&a.session).await.expect("refresh token");
    let (_, _, t1) = h.auth.rotate_refresh_token(TenantId::DEFAULT, &t0).await.expect("rotate");
    let (access, _) = h.auth.access_token(&a.session, &a.user, "test", Default::default()).await.expect("token");
    let (other, _) = h.auth.access_token(&b.session, &b.user, "test", Default::default()).await.expect("token");

    // The rotated token still names its session: revoking it ends the session, successor and all.
    assert!(h.auth.revoke_refresh_token(TenantId::DEFAULT, &t0).await.expect("revoke"));
    assert!(matches!(h.auth.authenticate(&access, &["test"]).await, Err(Error::SessionRevoked)));
    assert!(h.auth.rotate_refresh_token(TenantId::DEFAULT, &t1).await.is_err());
    h.auth.authenticate(&other, &["test"]).await.expect("the other session lives on");

    // Revoking again, or a token this server never issued, is not an error and ends nothing.
    assert!(!h.auth.revoke_refresh_token(TenantId::DEFAULT, &t1).await.expect("again"));
    assert!(
        !h.auth.revoke_refresh_token(TenantId::DEFAULT, &RefreshToken::from_client("nope")).await.expect("unknown")
    );
    h.auth.authenticate(&other, &["test"]).await.expect("still alive");
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
        let jwks = h.auth.jwks().await.expect("jwks");
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
        .verify_email(TenantId::DEFAULT, &email("kay@example.com"), h.code().await, &ClientMeta::default())
        .await
        .expect_err("gone");
    assert!(matches!(err, Error::NoCodePending), "{err:?}");
}

fn new_password_of(raw: &str) -> NewPassword {
    PasswordPolicy::default().parse(raw).expect("within the policy")
}

async fn sign_in_with(h: &Harness, address: &str, raw: &str) -> Result<latchkey_core::SignedIn, Error> {
    let login = Login::Email(email(address));
    h.auth
        .sign_in(TenantId::DEFAULT, &login, &PresentedPassword::parse(raw).expect("bounded"), &ClientMeta::default())
        .await
}

#[tokio::test]
async fn a_password_reset_needs_the_mailed_code_and_ends_every_session() {
    let h = harness().await;
    let first = signed_in(&h, "lea@example.com").await;
    let second = sign_in_with(&h, "lea@example.com", PASSWORD).await.expect("second session");
    let (token, _) = h.auth.access_token(&second.session, &second.user, "t", Default::default()).await.expect("token");
    let addr = email("lea@example.com");

    h.auth.request_password_reset(TenantId::DEFAULT, &addr).await.expect("reset code");
    assert_eq!(h.mail_to().await, "lea@example.com");
    let code = h.code().await;
    let wrong = OneTimeCode::parse(if code.digits() == "111111" { "222222" } else { "111111" }).expect("code");
    let err = h
        .auth
        .reset_password(
            TenantId::DEFAULT,
            &addr,
            wrong,
            &new_password_of("a brand new passphrase"),
            &ClientMeta::default(),
        )
        .await
        .expect_err("wrong code");
    assert!(matches!(err, Error::CodeMismatch { attempts_left: 4 }), "{err:?}");
    assert!(sign_in_with(&h, "lea@example.com", PASSWORD).await.is_ok(), "nothing changed yet");

    h.auth
        .reset_password(
            TenantId::DEFAULT,
            &addr,
            code,
            &new_password_of("a brand new passphrase"),
            &ClientMeta::default(),
        )
        .await
        .expect("reset");
    assert!(matches!(h.auth.authenticate(&token, &[]).await, Err(Error::SessionRevoked)));
    assert!(h.auth.sessions(TenantId::DEFAULT, first.user.id).await.expect("sessions").is_empty());
    assert!(matches!(sign_in_with(&h, "lea@example.com", PASSWORD).await, Err(Error::InvalidCredentials)));
    sign_in_with(&h, "lea@example.com", "a brand new passphrase").await.expect("the new password works");
    let err = h
        .auth
        .reset_password(
            TenantId::DEFAULT,
            &addr,
            code,
            &new_password_of("yet another passphrase"),
            &ClientMeta::default(),
        )
        .await
        .expect_err("single use");
    assert!(matches!(err, Error::NoCodePending), "{err:?}");
}

#[tokio::test]
async fn a_reset_verifies_an_unverified_address() {
    let h = harness().await;
    sign_up(&h, "max@example.com").await;
    let addr = email("max@example.com");
    h.auth.request_password_reset(TenantId::DEFAULT, &addr).await.expect("reset code");
    let code = h.code().await;
    let user = h
        .auth
        .reset_password(TenantId::DEFAULT, &addr, code, &new_password(), &ClientMeta::default())
        .await
        .expect("reset");
    assert!(user.email_verified, "the reset code proved the mailbox");
    sign_in_with(&h, "max@example.com", PASSWORD).await.expect("signs in without a separate verification");
}

#[tokio::test]
async fn a_password_change_needs_the_current_password_and_keeps_only_this_session() {
    let h = harness().await;
    let here = signed_in(&h, "ned@example.com").await;
    let elsewhere = sign_in_with(&h, "ned@example.com", PASSWORD).await.expect("second session");
    let new = new_password_of("an entirely new passphrase");

    let err = h
        .auth
        .change_password(
            &here.user,
            &here.session,
            &PresentedPassword::parse("not my password").expect("bounded"),
            &new,
        )
        .await
        .expect_err("wrong current password");
    assert!(matches!(err, Error::InvalidCredentials), "{err:?}");
    assert!(sign_in_with(&h, "ned@example.com", PASSWORD).await.is_ok(), "unchanged after a wrong current password");

    h.auth.change_password(&here.user, &here.session, &password(), &new).await.expect("changed");
    let live: Vec<_> = h.auth.sessions(TenantId::DEFAULT, here.user.id).await.expect("sessions");
    let live_ids: Vec<_> = live.iter().map(|s| s.id).collect();
    assert!(live_ids.contains(&here.session.id), "this session stays");
    assert!(!live_ids.contains(&elsewhere.session.id), "the other session ends");
    assert!(matches!(sign_in_with(&h, "ned@example.com", PASSWORD).await, Err(Error::InvalidCredentials)));
    sign_in_with(&h, "ned@example.com", "an entirely new passphrase").await.expect("new password");
}

#[tokio::test]
async fn an_email_change_commits_only_with_the_code_sent_to_the_new_address() {
    let h = harness().await;
    let s = signed_in(&h, "ola@example.com").await;
    let other_device = sign_in_with(&h, "ola@example.com", PASSWORD).await.expect("second session");
    signed_in(&h, "taken@example.com").await;

    let err = h
        .auth
        .request_email_change(
            &s.user,
            &PresentedPassword::parse("not my password").expect("bounded"),
            &email("x@example.com"),
        )
        .await
        .expect_err("wrong password");
    assert!(matches!(err, Error::InvalidCredentials), "{err:?}");

    // A taken address is not revealed when the change starts; it fails at confirmation.
    h.auth.request_email_change(&s.user, &password(), &email("Taken@example.com")).await.expect("accepted");
    assert_eq!(h.mail_to().await, "Taken@example.com");
    let err = h.auth.confirm_email_change(&s.user, &s.session, h.code().await).await.expect_err("taken");
    assert!(matches!(err, Error::EmailTaken), "{err:?}");

    h.auth.request_email_change(&s.user, &password(), &email("ola.new@example.com")).await.expect("code sent");
    assert_eq!(h.mail_to().await, "ola.new@example.com", "the code goes to the new address");
    let code = h.code().await;
    assert!(sign_in_with(&h, "ola@example.com", PASSWORD).await.is_ok(), "the old address holds until confirmed");

    let user = h.auth.confirm_email_change(&s.user, &s.session, code).await.expect("confirmed");
    assert_eq!(user.email.as_ref().map(Email::as_str), Some("ola.new@example.com"));
    assert!(user.email_verified);
    assert_eq!(h.mail_to().await, "ola@example.com", "the old address is told");
    let notice = h.outbox.0.lock().expect("outbox").last().expect("notice").text.clone();
    assert!(notice.contains("ola.new@example.com"), "{notice}");
    let live: Vec<_> =
        h.auth.sessions(TenantId::DEFAULT, s.user.id).await.expect("sessions").iter().map(|x| x.id).collect();
    assert!(live.contains(&s.session.id) && !live.contains(&other_device.session.id), "other sessions end");
    assert!(matches!(sign_in_with(&h, "ola@example.com", PASSWORD).await, Err(Error::InvalidCredentials)));
    sign_in_with(&h, "ola.new@example.com", PASSWORD).await.expect("the new address signs in");
    let err = h.auth.confirm_email_change(&s.user, &s.session, code).await.expect_err("single use");
    assert!(matches!(err, Error::NoCodePending), "{err:?}");
}

#[tokio::test]
async fn disabling_a_user_ends_their_sessions_and_enabling_lets_them_back_in() {
    let h = harness().await;
    let s = signed_in(&h, "pia@example.com").await;
    let token = h.auth.session_token(&s.session, &s.user, "t").await.expect("token");
    let mut revocations = h.auth.subscribe_revocations();

    h.auth.set_disabled(TenantId::DEFAULT, s.user.id, true).await.expect("disable");
    assert!(matches!(h.auth.authenticate(&token, &[]).await, Err(Error::SessionRevoked)));
    assert!(matches!(sign_in_with(&h, "pia@example.com", PASSWORD).await, Err(Error::UserDisabled)));
    let announced = revocations.try_recv().expect("the revocation was announced");
    assert_eq!((announced.session, announced.user), (s.session.id, s.user.id));

    h.auth.set_disabled(TenantId::DEFAULT, s.user.id, false).await.expect("enable");
    sign_in_with(&h, "pia@example.com", PASSWORD).await.expect("back in");
    let missing = latchkey_core::identity::UserId::random();
    assert!(matches!(h.auth.set_disabled(TenantId::DEFAULT, missing, true).await, Err(Error::UserNotFound)));
}

#[tokio::test]
async fn deleting_a_user_removes_them_and_their_sessions() {
    let h = harness().await;
    let s = signed_in(&h, "quin@example.com").await;
    let token = h.auth.session_token(&s.session, &s.user, "t").await.expect("token");
    let refresh = h.auth.refresh_token(&s.session).await.expect("refresh token");
    let mut revocations = h.auth.subscribe_revocations();

    h.auth.delete_user(TenantId::DEFAULT, s.user.id).await.expect("delete");
    assert!(matches!(h.auth.authenticate(&token, &[]).await, Err(Error::SessionRevoked)));
    assert!(matches!(h.auth.rotate_refresh_token(TenantId::DEFAULT, &refresh).await, Err(Error::InvalidToken)));
    assert!(matches!(sign_in_with(&h, "quin@example.com", PASSWORD).await, Err(Error::InvalidCredentials)));
    assert!(matches!(h.auth.user(TenantId::DEFAULT, s.user.id).await, Err(Error::UserNotFound)));
    assert_eq!(revocations.try_recv().expect("announced").session, s.session.id);
    assert!(matches!(h.auth.delete_user(TenantId::DEFAULT, s.user.id).await, Err(Error::UserNotFound)));
    // The address is free again.
    sign_up(&h, "quin@example.com").await;
}

fn meta(ip: &str) -> ClientMeta {
    ClientMeta { ip: Some(ip.into()), user_agent: None }
}

fn other_than(code: OneTimeCode) -> OneTimeCode {
    OneTimeCode::parse(if code.digits() == "111111" { "222222" } else { "111111" }).expect("code")
}

#[tokio::test]
async fn wrong_codes_count_per_account_across_reissued_codes() {
    let h = limited().await;
    sign_up(&h, "ray@example.com").await;
    let addr = email("ray@example.com");
    let mut code = h.code().await;
    // 20 wrong guesses, 4 per code, from ever-new addresses, each code reissued.
    for round in 0..5 {
        for guess in 0..4 {
            let from = meta(&format!("198.51.100.{}", round * 4 + guess));
            let err = h.auth.verify_email(TenantId::DEFAULT, &addr, other_than(code), &from).await.expect_err("wrong");
            assert!(matches!(err, Error::CodeMismatch { .. }), "{err:?}");
        }
        h.clock.advance(Duration::from_secs(20 * 60));
        h.auth.resend_verification(TenantId::DEFAULT, &addr).await.expect("new code");
        code = h.code().await;
    }
    let err =
        h.auth.verify_email(TenantId::DEFAULT, &addr, code, &meta("203.0.113.1")).await.expect_err("budget spent");
    let Error::RateLimited { retry_after } = err else { panic!("{err:?}") };
    assert!(retry_after > Duration::from_secs(22 * 3600), "until the day's window closes: {retry_after:?}");
    h.clock.advance(retry_after);
    h.auth.resend_verification(TenantId::DEFAULT, &addr).await.expect("new code");
    let fresh = h.code().await;
    h.auth.verify_email(TenantId::DEFAULT, &addr, fresh, &meta("203.0.113.1")).await.expect("a new day");
}

#[tokio::test]
async fn a_correct_code_does_not_spend_the_budget() {
    let h = limited().await;
    for i in 0..25 {
        let address = format!("u{i}@example.com");
        sign_up(&h, &address).await;
        let code = h.code().await;
        h.auth
            .verify_email(TenantId::DEFAULT, &email(&address), code, &meta(&format!("2001:db8:{i}::1")))
            .await
            .expect("verified");
    }
}

#[tokio::test]
async fn code_checks_are_limited_per_client_address() {
    let h = limited().await;
    let from = meta("192.0.2.9");
    let quota = latchkey_core::limits::LimitKind::CodeChecksPerAddress.quota().burst;
    for i in 0..quota {
        let err = h
            .auth
            .verify_email(
                TenantId::DEFAULT,
                &email(&format!("nobody{i}@example.com")),
                other_than(OneTimeCode::parse("123456").expect("code")),
                &from,
            )
            .await
            .expect_err("unknown");
        assert!(matches!(err, Error::UserNotFound), "{err:?}");
    }
    let err = h
        .auth
        .verify_email(
            TenantId::DEFAULT,
            &email("another@example.com"),
            OneTimeCode::parse("123456").expect("code"),
            &from,
        )
        .await
        .expect_err("limited");
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
}

#[tokio::test]
async fn failed_sign_ins_lock_one_address_out_not_the_owner() {
    let h = limited().await;
    signed_in(&h, "sam@example.com").await;
    let login = Login::Email(email("sam@example.com"));
    let wrong = PresentedPassword::parse("not the password").expect("bounded");
    for _ in 0..10 {
        let err = h.auth.sign_in(TenantId::DEFAULT, &login, &wrong, &meta("198.51.100.66")).await.expect_err("wrong");
        assert!(matches!(err, Error::InvalidCredentials), "{err:?}");
    }
    let err = h.auth.sign_in(TenantId::DEFAULT, &login, &password(), &meta("198.51.100.66")).await.expect_err("locked");
    assert!(matches!(err, Error::RateLimited { .. }), "the attacker's address is cut off, even with the password");
    h.auth.sign_in(TenantId::DEFAULT, &login, &password(), &meta("203.0.113.20")).await.expect("the owner elsewhere");
    // Successes do not count: the owner signs in again and again.
    for _ in 0..30 {
        h.clock.advance(Duration::from_secs(2));
        h.auth.sign_in(TenantId::DEFAULT, &login, &password(), &meta("203.0.113.20")).await.expect("no failures");
    }
}

#[tokio::test]
async fn one_ipv6_64_is_one_client() {
    let h = limited().await;
    signed_in(&h, "tia@example.com").await;
    let login = Login::Email(email("tia@example.com"));
    let wrong = PresentedPassword::parse("not the password").expect("bounded");
    for i in 0..10 {
        let from = meta(&format!("2001:db8:aaaa:1:{i:x}::{i:x}"));
        assert!(matches!(
            h.auth.sign_in(TenantId::DEFAULT, &login, &wrong, &from).await,
            Err(Error::InvalidCredentials)
        ));
    }
    let err =
        h.auth.sign_in(TenantId::DEFAULT, &login, &wrong, &meta("2001:db8:aaaa:1:ffff::99")).await.expect_err("x");
    assert!(matches!(err, Error::RateLimited { .. }), "a fresh address of the same /64: {err:?}");
    h.auth.sign_in(TenantId::DEFAULT, &login, &password(), &meta("2001:db8:bbbb:2::1")).await.expect("another /64");
}

#[tokio::test]
async fn an_account_takes_at_most_100_failed_sign_ins_a_day() {
    let h = limited().await;
    signed_in(&h, "uma@example.com").await;
    let login = Login::Email(email("uma@example.com"));
    let wrong = PresentedPassword::parse("not the password").expect("bounded");
    for i in 0..100 {
        let from = meta(&format!("10.{}.{}.1", i / 250, i % 250));
        assert!(matches!(
            h.auth.sign_in(TenantId::DEFAULT, &login, &wrong, &from).await,
            Err(Error::InvalidCredentials)
        ));
    }
    let err = h.auth.sign_in(TenantId::DEFAULT, &login, &password(), &meta("203.0.113.77")).await.expect_err("capped");
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
}

#[tokio::test]
async fn re_authentication_is_limited_like_sign_in() {
    let h = limited().await;
    let s = signed_in(&h, "val@example.com").await;
    let wrong = PresentedPassword::parse("not the password").expect("bounded");
    for _ in 0..10 {
        assert!(matches!(h.auth.confirm_password(&s.user, &wrong).await, Err(Error::InvalidCredentials)));
    }
    assert!(matches!(h.auth.confirm_password(&s.user, &password()).await, Err(Error::RateLimited { .. })));
    let new = new_password_of("a different passphrase");
    assert!(matches!(
        h.auth.change_password(&s.user, &s.session, &password(), &new).await,
        Err(Error::RateLimited { .. })
    ));
}

#[tokio::test]
async fn a_refresh_fork_inside_the_grace_window_is_reuse() {
    let h = harness().await;
    let s = signed_in(&h, "wes@example.com").await;
    let r0 = h.auth.refresh_token(&s.session).await.expect("refresh token");
    let (_, _, r1) = h.auth.rotate_refresh_token(TenantId::DEFAULT, &r0).await.expect("r0 -> r1");
    let (_, _, r2) = h.auth.rotate_refresh_token(TenantId::DEFAULT, &r1).await.expect("r1 -> r2");
    h.clock.advance(Duration::from_secs(2));
    let err =
        h.auth.rotate_refresh_token(TenantId::DEFAULT, &r0).await.expect_err("r0 again, though within the window");
    assert!(matches!(err, Error::RefreshTokenReused), "{err:?}");
    assert!(matches!(h.auth.rotate_refresh_token(TenantId::DEFAULT, &r2).await, Err(Error::SessionRevoked)));
}

#[tokio::test]
async fn rotated_refresh_tokens_are_purged_and_their_replay_still_revokes() {
    let h = harness().await;
    let s = signed_in(&h, "xan@example.com").await;
    let r0 = h.auth.refresh_token(&s.session).await.expect("refresh token");
    let (_, _, r1) = h.auth.rotate_refresh_token(TenantId::DEFAULT, &r0).await.expect("rotate");
    h.clock.advance(Duration::from_secs(11));
    let purged = h.auth.purge_expired(Duration::from_secs(24 * 3600)).await.expect("purge");
    assert_eq!(purged.refresh_tokens, 1, "the rotated row is gone once the window is over");
    let err = h.auth.rotate_refresh_token(TenantId::DEFAULT, &r0).await.expect_err("replay");
    assert!(matches!(err, Error::RefreshTokenReused), "{err:?}");
    assert!(matches!(h.auth.rotate_refresh_token(TenantId::DEFAULT, &r1).await, Err(Error::SessionRevoked)));
    // A forged token naming the session is just invalid.
    let text = r1.expose();
    let swap = if &text[30..31] == "A" { "B" } else { "A" };
    let forged = RefreshToken::from_client(&format!("{}{swap}{}", &text[..30], &text[31..]));
    assert!(matches!(h.auth.rotate_refresh_token(TenantId::DEFAULT, &forged).await, Err(Error::InvalidToken)));
}

#[tokio::test]
async fn refreshes_are_limited_per_session() {
    let h = limited().await;
    let s = signed_in(&h, "yul@example.com").await;
    let mut token = h.auth.refresh_token(&s.session).await.expect("refresh token");
    let burst = latchkey_core::limits::LimitKind::RefreshPerSession.quota().burst;
    for _ in 0..burst {
        token = h.auth.rotate_refresh_token(TenantId::DEFAULT, &token).await.expect("rotate").2;
    }
    let err = h.auth.rotate_refresh_token(TenantId::DEFAULT, &token).await.expect_err("limited");
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
}

#[tokio::test]
async fn an_unverified_account_is_not_kept_by_its_first_registrant() {
    let h = harness().await;
    let squatter = NewUser {
        email: Some(email("zoe@example.com")),
        password: Some(new_password_of("the squatter's password")),
        ..Default::default()
    };
    h.auth.sign_up_quietly(TenantId::DEFAULT, squatter, &ClientMeta::default()).await.expect("first");
    let squatter_code = h.code().await;
    let owner = NewUser { email: Some(email("zoe@example.com")), password: Some(new_password()), ..Default::default() };
    h.auth.sign_up_quietly(TenantId::DEFAULT, owner, &ClientMeta::default()).await.expect("second");
    let code = h.code().await;
    assert_eq!(h.mail_to().await, "zoe@example.com");
    if code != squatter_code {
        let err = h
            .auth
            .verify_email(TenantId::DEFAULT, &email("zoe@example.com"), squatter_code, &ClientMeta::default())
            .await
            .expect_err("old code");
        assert!(matches!(err, Error::CodeMismatch { .. }), "{err:?}");
    }
    h.auth
        .verify_email(TenantId::DEFAULT, &email("zoe@example.com"), code, &ClientMeta::default())
        .await
        .expect("verified");
    sign_in_with(&h, "zoe@example.com", PASSWORD).await.expect("the mailbox owner's password");
    assert!(matches!(
        sign_in_with(&h, "zoe@example.com", "the squatter's password").await,
        Err(Error::InvalidCredentials)
    ));

    // A verified account is not taken over: its owner gets a notice instead.
    let late = NewUser {
        email: Some(email("zoe@example.com")),
        password: Some(new_password_of("the squatter's password")),
        ..Default::default()
    };
    h.auth.sign_up_quietly(TenantId::DEFAULT, late, &ClientMeta::default()).await.expect("quiet");
    assert_eq!(h.mail_to().await, "zoe@example.com");
    assert!(h.outbox.0.lock().expect("outbox").last().expect("notice").subject.contains("Sign-up attempt"));
    sign_in_with(&h, "zoe@example.com", PASSWORD).await.expect("unchanged");
}

#[tokio::test]
async fn unverified_accounts_are_purged_after_their_ttl() {
    let h = harness().await;
    sign_up(&h, "old@example.com").await;
    signed_in(&h, "kept@example.com").await;
    let retention = Duration::from_secs(24 * 3600);
    h.clock.advance(Duration::from_secs(6 * 24 * 3600));
    assert_eq!(h.auth.purge_expired(retention).await.expect("purge").unverified_users, 0);
    h.clock.advance(Duration::from_secs(24 * 3600 + 60));
    assert_eq!(h.auth.purge_expired(retention).await.expect("purge").unverified_users, 1);
    assert!(matches!(
        h.auth.user_by_email(TenantId::DEFAULT, &email("old@example.com")).await,
        Err(Error::UserNotFound)
    ));
    h.auth.user_by_email(TenantId::DEFAULT, &email("kept@example.com")).await.expect("verified users stay");
}

#[tokio::test]
async fn codes_go_to_the_stored_address_never_a_look_alike() {
    let h = harness().await;
    signed_in(&h, "kevin@example.com").await;
    let look_alike = email("\u{212A}evin@example.com");
    h.auth.request_password_reset(TenantId::DEFAULT, &look_alike).await.expect("accepted");
    assert_eq!(h.mail_to().await, "kevin@example.com", "the account's own address, not the one typed");
    h.auth.request_password_reset(TenantId::DEFAULT, &email("nobody@example.com")).await.expect("same answer");
    assert!(h.auth.flush_mail(Duration::from_secs(5)).await);
    assert!(h.outbox.0.lock().expect("outbox").iter().all(|m| m.to.as_str() == "kevin@example.com"));
}

async fn registered(h: &Harness, address: &str) -> latchkey_core::Registration {
    h.auth.register_email(TenantId::DEFAULT, &email(address), &ClientMeta::default()).await.expect("registered")
}

fn policy(raw: &str) -> Result<NewPassword, latchkey_core::identity::ParseError> {
    PasswordPolicy::default().parse(raw)
}

#[tokio::test]
async fn passwordless_registration_sets_the_password_with_the_code_and_signs_in() {
    use latchkey_core::{Delivery, Registration};
    let h = harness().await;
    let addr = email("pia@example.com");
    let Registration::CodeSent(receipt) = registered(&h, "pia@example.com").await else { panic!("a code is sent") };
    assert_eq!(receipt.first_attempt().await, Delivery::Sent);
    let code = h.code().await;
    let pending = h.auth.user_by_email(TenantId::DEFAULT, &addr).await.expect("pending user");
    assert!(!pending.has_password && !pending.email_verified);
    assert!(matches!(registered(&h, "PIA@example.com").await, Registration::CodeStillValid));
    // A pending user cannot sign in, and is told apart from a wrong password.
    let err = h.auth.sign_in_telling_unknown(TenantId::DEFAULT, &addr, &password(), &ClientMeta::default()).await;
    assert!(matches!(err, Err(Error::UserNotFound)), "{err:?}");

    let complete = |code, raw: &'static str| {
        let auth = h.auth.clone();
        let addr = addr.clone();
        async move { auth.complete_registration(TenantId::DEFAULT, &addr, code, policy(raw), &ClientMeta::default()).await }
    };
    let err = complete(other_than(code), "short").await.expect_err("password first");
    assert!(matches!(&err, Error::InvalidInput(f) if f[0].field == "password"), "{err:?}");
    let err = complete(other_than(code), PASSWORD).await.expect_err("wrong code");
    assert!(matches!(err, Error::CodeMismatch { attempts_left: 4 }), "{err:?}");
    let signed_in = complete(code, PASSWORD).await.expect("signed in");
    assert!(signed_in.user.email_verified && signed_in.user.has_password);
    let token = h.auth.session_token(&signed_in.session, &signed_in.user, "graphql").await.expect("token");
    h.auth.authenticate(&token, &["graphql"]).await.expect("a live session");

    // Now a full user: registering, new codes and the code step are refused in the contract's order.
    assert!(matches!(registered(&h, "pia@example.com").await, Registration::FullUser));
    let err = h.auth.request_new_code(TenantId::DEFAULT, &addr).await.expect_err("not pending");
    assert!(matches!(err, Error::UserNotFound), "{err:?}");
    let err = complete(code, "short").await.expect_err("verified first");
    assert!(matches!(err, Error::AlreadyVerified), "{err:?}");
    let wrong = PresentedPassword::parse("not the password").expect("bounded");
    let err = h.auth.sign_in_telling_unknown(TenantId::DEFAULT, &addr, &wrong, &ClientMeta::default()).await;
    assert!(matches!(err, Err(Error::InvalidCredentials)), "{err:?}");
    h.auth.sign_in_telling_unknown(TenantId::DEFAULT, &addr, &password(), &ClientMeta::default()).await.expect("in");
    let unknown = email("nobody@example.com");
    let err = h.auth.sign_in_telling_unknown(TenantId::DEFAULT, &unknown, &password(), &ClientMeta::default()).await;
    assert!(matches!(err, Err(Error::UserNotFound)), "{err:?}");
    let err = h
        .auth
        .complete_registration(TenantId::DEFAULT, &unknown, code, policy("short"), &ClientMeta::default())
        .await
        .expect_err("unknown first");
    assert!(matches!(err, Error::UserNotFound), "{err:?}");
}

#[tokio::test]
async fn an_expired_registration_code_is_reported_and_replaced_on_request() {
    use latchkey_core::Registration;
    let h = harness().await;
    let addr = email("quin@example.com");
    registered(&h, "quin@example.com").await;
    let old = h.code().await;
    h.clock.advance(Duration::from_secs(10 * 60));
    assert!(matches!(registered(&h, "quin@example.com").await, Registration::CodeExpired));
    let err = h
        .auth
        .complete_registration(TenantId::DEFAULT, &addr, old, policy(PASSWORD), &ClientMeta::default())
        .await
        .expect_err("expired");
    assert!(matches!(err, Error::CodeExpired), "{err:?}");
    h.auth.request_new_code(TenantId::DEFAULT, &addr).await.expect("a new code");
    let fresh = h.code().await;
    assert!(matches!(registered(&h, "quin@example.com").await, Registration::CodeStillValid));
    h.auth
        .complete_registration(TenantId::DEFAULT, &addr, fresh, policy(PASSWORD), &ClientMeta::default())
        .await
        .expect("the new code works");
    let err = h.auth.request_new_code(TenantId::DEFAULT, &email("nobody@example.com")).await.expect_err("unknown");
    assert!(matches!(err, Error::UserNotFound), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_guesses_never_evaluate_more_than_five() {
    let h = harness().await;
    sign_up(&h, "race@example.com").await;
    let right = h.code().await;
    let wrong = other_than(right);
    let checks = (0..20).map(|_| {
        let auth = h.auth.clone();
        tokio::spawn(async move {
            auth.check_code(
                TenantId::DEFAULT,
                &email("race@example.com"),
                latchkey_core::code::CodePurpose::VerifyEmail,
                wrong,
                &ClientMeta::default(),
            )
            .await
        })
    });
    let mut evaluated = 0;
    for check in checks.collect::<Vec<_>>() {
        match check.await.expect("joined") {
            Ok(valid) => {
                assert!(!valid);
                evaluated += 1;
            }
            Err(Error::CodeExpired) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(evaluated, 5, "exactly five wrong guesses are compared; the rest find the code burnt");
    let err = h
        .auth
        .verify_email(TenantId::DEFAULT, &email("race@example.com"), right, &ClientMeta::default())
        .await
        .expect_err("burnt");
    assert!(matches!(err, Error::CodeExpired), "{err:?}");
}

#[tokio::test]
async fn a_right_check_does_not_count_against_the_code() {
    let h = harness().await;
    sign_up(&h, "sam@example.com").await;
    let right = h.code().await;
    let addr = email("sam@example.com");
    let purpose = latchkey_core::code::CodePurpose::VerifyEmail;
    for _ in 0..10 {
        let valid = h.auth.check_code(TenantId::DEFAULT, &addr, purpose, right, &ClientMeta::default()).await;
        assert!(valid.expect("checked"));
    }
    for _ in 0..4 {
        let valid =
            h.auth.check_code(TenantId::DEFAULT, &addr, purpose, other_than(right), &ClientMeta::default()).await;
        assert!(!valid.expect("checked"));
    }
    h.auth.verify_email(TenantId::DEFAULT, &addr, right, &ClientMeta::default()).await.expect("still usable");
}

#[tokio::test]
async fn identity_ids_are_stable_per_user_and_distinct_between_users() {
    let h = harness().await;
    let alice = sign_up(&h, "alice@example.com").await.user;
    let bob = sign_up(&h, "bob@example.com").await.user;
    let id = h.auth.identity_id(&alice);
    assert_eq!(id, h.auth.identity_id(&alice));
    assert_ne!(id, h.auth.identity_id(&bob));
    let (region, uuid) = id.split_once(':').expect("<region>:<uuid>");
    assert_eq!(region, "local-1");
    assert_eq!(uuid.len(), 36);
    assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{uuid}");
    assert_ne!(uuid, alice.id.to_string(), "not the user id itself");
}

/// Cognito SRP sign-in, computed on the client side with `latchkey_core::srp::client`.
mod srp_sign_in {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use latchkey_core::srp::{self, client};
    use latchkey_core::{SrpChallenge, SrpResponse};
    use num_bigint::BigUint;

    use super::*;

    const CLIENT: &str = "web";

    fn meta() -> ClientMeta {
        ClientMeta { ip: Some("198.51.100.7".into()), user_agent: None }
    }

    /// A client's first step: a fresh secret `a` and the challenge for it.
    async fn challenge(h: &Harness, address: &str) -> Result<(BigUint, SrpChallenge), Error> {
        let a = BigUint::from_bytes_be(&rand_bytes());
        let a_pub = srp::to_hex(&client::public(&a));
        let challenge = h.auth.srp_challenge(TenantId::DEFAULT, &email(address), &a_pub, CLIENT, &meta()).await?;
        Ok((a, challenge))
    }

    fn rand_bytes() -> [u8; 32] {
        use rand::RngCore;
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        b
    }

    /// The client's proof for `password`, as amazon-cognito-identity-js computes it.
    fn proof(h: &Harness, a: &BigUint, c: &SrpChallenge, password: &str) -> (String, String) {
        let pool = h.auth.settings().srp_pool_name();
        let salt = BigUint::parse_bytes(c.salt.as_bytes(), 16).expect("hex salt").to_bytes_be();
        let b_pub = BigUint::parse_bytes(c.srp_b.as_bytes(), 16).expect("hex B");
        let key = client::key(pool, &c.user_id_for_srp, password, &salt, a, &b_pub).expect("valid B");
        let timestamp = srp::format_timestamp(h.clock.now());
        let block = STANDARD.decode(&c.secret_block).expect("base64 block");
        let signature = srp::signature(&key, pool, &c.user_id_for_srp, &block, &timestamp);
        (timestamp, STANDARD.encode(signature))
    }

    async fn answer(
        h: &Harness,
        a: &BigUint,
        c: &SrpChallenge,
        password: &str,
        client_id: &str,
    ) -> Result<latchkey_core::SignedIn, Error> {
        let (timestamp, signature) = proof(h, a, c, password);
        let response = SrpResponse {
            user_id_for_srp: &c.user_id_for_srp,
            secret_block: &c.secret_block,
            timestamp: &timestamp,
            signature: &signature,
        };
        h.auth.srp_sign_in(TenantId::DEFAULT, &response, client_id, &meta()).await
    }

    async fn verified(h: &Harness, address: &str) -> latchkey_core::SignedUp {
        let up = sign_up(h, address).await;
        let code = h.code().await;
        h.auth.verify_email(TenantId::DEFAULT, &email(address), code, &ClientMeta::default()).await.expect("verify");
        up
    }

    #[tokio::test]
    async fn the_right_password_signs_in_once_per_secret_block() {
        let h = harness().await;
        let up = verified(&h, "sam@example.com").await;
        let (a, c) = challenge(&h, "sam@example.com").await.expect("challenge");
        assert_eq!(c.user_id_for_srp, up.user.id.to_string());
        let signed = answer(&h, &a, &c, PASSWORD, CLIENT).await.expect("signed in");
        assert_eq!(signed.user.id, up.user.id);
        assert!(h.auth.sessions(TenantId::DEFAULT, up.user.id).await.expect("sessions").len() == 1);

        let replay = answer(&h, &a, &c, PASSWORD, CLIENT).await.expect_err("block used");
        assert!(matches!(replay, Error::InvalidCredentials), "{replay:?}");
    }

    #[tokio::test]
    async fn a_wrong_password_another_client_or_an_expired_block_is_refused() {
        let h = harness().await;
        verified(&h, "sam@example.com").await;
        let (a, c) = challenge(&h, "sam@example.com").await.expect("challenge");
        let wrong = answer(&h, &a, &c, "not the password", CLIENT).await.expect_err("wrong");
        assert!(matches!(wrong, Error::InvalidCredentials), "{wrong:?}");

        let (a, c) = challenge(&h, "sam@example.com").await.expect("challenge");
        let other = answer(&h, &a, &c, PASSWORD, "another-client").await.expect_err("other client");
        assert!(matches!(other, Error::InvalidCredentials), "{other:?}");

        let (a, c) = challenge(&h, "sam@example.com").await.expect("challenge");
        h.clock.advance(Duration::from_secs(5 * 60 + 1));
        let late = answer(&h, &a, &c, PASSWORD, CLIENT).await.expect_err("expired");
        assert!(matches!(late, Error::InvalidCredentials), "{late:?}");

        let (a, c) = challenge(&h, "sam@example.com").await.expect("challenge");
        let (timestamp, signature) = proof(&h, &a, &c, PASSWORD);
        let other_user = uuid::Uuid::new_v4().to_string();
        let response = SrpResponse {
            user_id_for_srp: &other_user,
            secret_block: &c.secret_block,
            timestamp: &timestamp,
            signature: &signature,
        };
        let err = h.auth.srp_sign_in(TenantId::DEFAULT, &response, CLIENT, &meta()).await.expect_err("user");
        assert!(matches!(err, Error::InvalidCredentials), "{err:?}");

        let mut forged = STANDARD.decode(&c.secret_block).expect("base64");
        forged[30] ^= 1;
        let forged = STANDARD.encode(forged);
        let response = SrpResponse { secret_block: &forged, ..response };
        let err = h.auth.srp_sign_in(TenantId::DEFAULT, &response, CLIENT, &meta()).await.expect_err("forged");
        assert!(matches!(err, Error::InvalidCredentials), "{err:?}");

        assert!(answer(&h, &a, &c, PASSWORD, CLIENT).await.is_ok(), "the genuine answer still works");
    }

    #[tokio::test]
    async fn unknown_users_get_a_plausible_challenge_and_then_invalid_credentials() {
        let h = harness().await;
        verified(&h, "sam@example.com").await;
        let (_, real) = challenge(&h, "sam@example.com").await.expect("challenge");
        let (a, fake) = challenge(&h, "nobody@example.com").await.expect("challenge for nobody");
        let (_, again) = challenge(&h, "Nobody@Example.com").await.expect("challenge for nobody");
        assert!(uuid::Uuid::parse_str(&fake.user_id_for_srp).is_ok());
        assert_eq!(fake.user_id_for_srp, again.user_id_for_srp, "stable like a real user's id");
        assert_eq!(fake.salt, again.salt, "stable like a real user's salt");
        assert_ne!(fake.srp_b, again.srp_b);
        assert!((28..=32).contains(&fake.salt.len()) && (28..=32).contains(&real.salt.len()));
        assert!(fake.srp_b.len().abs_diff(real.srp_b.len()) <= 4);
        assert!(fake.secret_block.len().abs_diff(real.secret_block.len()) <= 8);
        let err = answer(&h, &a, &fake, PASSWORD, CLIENT).await.expect_err("nobody");
        assert!(matches!(err, Error::InvalidCredentials), "{err:?}");
    }

    #[tokio::test]
    async fn state_is_told_only_after_a_valid_proof() {
        let h = harness().await;
        sign_up(&h, "new@example.com").await;
        let (a, c) = challenge(&h, "new@example.com").await.expect("challenge");
        let err = answer(&h, &a, &c, "not the password", CLIENT).await.expect_err("wrong");
        assert!(matches!(err, Error::InvalidCredentials), "{err:?}");
        let (a, c) = challenge(&h, "new@example.com").await.expect("challenge");
        let err = answer(&h, &a, &c, PASSWORD, CLIENT).await.expect_err("unverified");
        assert!(matches!(err, Error::NotVerified), "{err:?}");
    }

    #[tokio::test]
    async fn a_new_password_replaces_the_verifier() {
        let h = harness().await;
        let up = verified(&h, "sam@example.com").await;
        let signed = sign_in_with(&h, "sam@example.com", PASSWORD).await.expect("sign in");
        h.auth
            .change_password(&up.user, &signed.session, &password(), &new_password_of("a second passphrase"))
            .await
            .expect("change");
        let (a, c) = challenge(&h, "sam@example.com").await.expect("challenge");
        let err = answer(&h, &a, &c, PASSWORD, CLIENT).await.expect_err("old password");
        assert!(matches!(err, Error::InvalidCredentials), "{err:?}");
        let (a, c) = challenge(&h, "sam@example.com").await.expect("challenge");
        answer(&h, &a, &c, "a second passphrase", CLIENT).await.expect("new password");
    }

    #[tokio::test]
    async fn with_srp_off_no_verifier_is_kept_and_no_proof_passes() {
        let h = harness_with(Settings {
            hash_params: HashParams { memory_kib: 256, iterations: 1, parallelism: 1 },
            srp: false,
            ..Settings::default()
        })
        .await;
        verified(&h, "sam@example.com").await;
        sign_in_with(&h, "sam@example.com", PASSWORD).await.expect("the password flow works");
        let (a, c) = challenge(&h, "sam@example.com").await.expect("a stand-in challenge");
        let err = answer(&h, &a, &c, PASSWORD, CLIENT).await.expect_err("no verifier");
        assert!(matches!(err, Error::InvalidCredentials), "{err:?}");
    }

    #[tokio::test]
    async fn a_zero_public_value_is_refused_before_anything_else() {
        let h = harness().await;
        verified(&h, "sam@example.com").await;
        let n = "0".repeat(10);
        for bad in [n.as_str(), "xyz", ""] {
            let err = h
                .auth
                .srp_challenge(TenantId::DEFAULT, &email("sam@example.com"), bad, CLIENT, &meta())
                .await
                .expect_err("bad A");
            assert!(matches!(err, Error::InvalidInput(ref f) if f[0].field == "SRP_A"), "{err:?}");
        }
    }

    #[tokio::test]
    async fn wrong_proofs_count_as_failed_sign_ins() {
        let h = limited().await;
        verified(&h, "sam@example.com").await;
        let mut refused = None;
        for attempt in 0..12 {
            let (a, c) = challenge(&h, "sam@example.com").await.expect("challenge");
            match answer(&h, &a, &c, "not the password", CLIENT).await {
                Err(Error::InvalidCredentials) => {}
                Err(Error::RateLimited { .. }) => {
                    refused = Some(attempt);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(refused, Some(10), "ten failures per login and address, as for passwords");
        let err = h
            .auth
            .sign_in(TenantId::DEFAULT, &Login::Email(email("sam@example.com")), &password(), &meta())
            .await
            .expect_err("limited");
        assert!(matches!(err, Error::RateLimited { .. }), "the password flow shares the limit: {err:?}");
    }
}

#[tokio::test]
async fn a_revealing_sign_up_takes_over_an_unverified_account_but_not_a_verified_one() {
    let h = harness().await;
    let first = sign_up(&h, "jo@example.com").await.user;
    let first_code = h.code().await;
    let again = |raw: &str| NewUser {
        email: Some(email("JO@example.com")),
        password: Some(new_password_of(raw)),
        ..Default::default()
    };
    let taken = h
        .auth
        .sign_up_reclaiming(TenantId::DEFAULT, again("the second password"), &ClientMeta::default())
        .await
        .expect("an unverified address is taken over");
    assert_eq!(taken.user.id, first.id);
    assert!(!taken.user.email_verified);
    // A fresh code replaces the first registrant's, and only the new password signs in.
    let code = h.code().await;
    assert!(
        h.auth
            .verify_email(TenantId::DEFAULT, &email("jo@example.com"), first_code, &ClientMeta::default())
            .await
            .is_err()
            || first_code == code
    );
    h.auth
        .verify_email(TenantId::DEFAULT, &email("jo@example.com"), code, &ClientMeta::default())
        .await
        .expect("verify");
    assert!(matches!(sign_in_with(&h, "jo@example.com", PASSWORD).await, Err(Error::InvalidCredentials)));
    sign_in_with(&h, "jo@example.com", "the second password").await.expect("the new password");

    // A verified address stays taken.
    let err = h
        .auth
        .sign_up_reclaiming(TenantId::DEFAULT, again("a third password"), &ClientMeta::default())
        .await
        .expect_err("taken");
    assert!(matches!(err, Error::EmailTaken), "{err:?}");
    sign_in_with(&h, "jo@example.com", "the second password").await.expect("unchanged");
}

/// The sessions announced on the revocation bus since `rx` subscribed, in order.
fn announced(rx: &mut tokio::sync::broadcast::Receiver<latchkey_core::session::Revocation>) -> Vec<SessionId> {
    std::iter::from_fn(|| rx.try_recv().ok()).map(|r| r.session).collect()
}

#[tokio::test]
async fn every_revocation_path_announces_the_revoked_sessions() {
    let h = harness().await;
    let addr = email("rae@example.com");
    let first = signed_in(&h, "rae@example.com").await;
    let mut rx = h.auth.subscribe_revocations();

    // Sign-out of one session.
    h.auth.sign_out(&first.session).await.expect("sign out");
    assert_eq!(announced(&mut rx), vec![first.session.id], "sign-out");
    h.auth.sign_out(&first.session).await.expect("again");
    assert!(announced(&mut rx).is_empty(), "nothing new is revoked, nothing announced");

    // Sign-out everywhere, keeping one.
    let (a, b) =
        (sign_in_with(&h, "rae@example.com", PASSWORD).await, sign_in_with(&h, "rae@example.com", PASSWORD).await);
    let (a, b) = (a.expect("a"), b.expect("b"));
    h.auth.sign_out_everywhere(TenantId::DEFAULT, a.user.id, Some(b.session.id)).await.expect("everywhere");
    assert_eq!(announced(&mut rx), vec![a.session.id], "sign-out everywhere");

    // Refresh token reuse.
    let t0 = h.auth.refresh_token(&b.session).await.expect("refresh");
    h.auth.rotate_refresh_token(TenantId::DEFAULT, &t0).await.expect("rotate");
    h.clock.advance(Duration::from_secs(11));
    assert!(matches!(h.auth.rotate_refresh_token(TenantId::DEFAULT, &t0).await, Err(Error::RefreshTokenReused)));
    assert_eq!(announced(&mut rx), vec![b.session.id], "reuse detection");

    // Password change: the other sessions.
    let (here, other) =
        (sign_in_with(&h, "rae@example.com", PASSWORD).await, sign_in_with(&h, "rae@example.com", PASSWORD).await);
    let (here, other) = (here.expect("here"), other.expect("other"));
    let changed = new_password_of("another long passphrase");
    h.auth.change_password(&here.user, &here.session, &password(), &changed).await.expect("change");
    assert_eq!(announced(&mut rx), vec![other.session.id], "password change");

    // Password reset: every session.
    h.auth.request_password_reset(TenantId::DEFAULT, &addr).await.expect("reset code");
    let code = h.code().await;
    h.auth
        .reset_password(TenantId::DEFAULT, &addr, code, &new_password(), &ClientMeta::default())
        .await
        .expect("reset");
    assert_eq!(announced(&mut rx), vec![here.session.id], "password reset");

    // Email change: the other sessions.
    let (here, other) = (signed_again(&h).await, signed_again(&h).await);
    h.auth.request_email_change(&here.user, &password(), &email("rae.new@example.com")).await.expect("change");
    let code = h.code().await;
    h.auth.confirm_email_change(&here.user, &here.session, code).await.expect("confirm");
    assert_eq!(announced(&mut rx), vec![other.session.id], "email change");
}

async fn signed_again(h: &Harness) -> latchkey_core::SignedIn {
    sign_in_with(h, "rae@example.com", PASSWORD).await.expect("sign in")
}

#[tokio::test]
async fn presented_token_sets_are_verified_together_and_read_only() {
    let h = harness().await;
    let s = signed_in(&h, "sol@example.com").await;
    let other = signed_in(&h, "tam@example.com").await;
    let tokens = h.auth.token_set(&s.session, &s.user, "v1").await.expect("tokens");
    let theirs = h.auth.token_set(&other.session, &other.user, "v1").await.expect("tokens");
    let addr = email("SOL@example.com");
    let cog = h.auth.identity_id(&s.user);
    let presented = PresentedTokens {
        access: &tokens.access_token,
        id: Some(&tokens.id_token),
        refresh: Some(&tokens.refresh_token),
    };
    let proven = h
        .auth
        .verify_presented_tokens(&presented, TenantId::DEFAULT, &["v1"], &addr, Some(&cog))
        .await
        .expect("genuine");
    assert_eq!((proven.session.id, proven.identity_id.as_str()), (s.session.id, cog.as_str()));

    let refused = |e: Result<latchkey_core::ProvenSession, Error>| e.expect_err("refused");
    let err =
        refused(h.auth.verify_presented_tokens(&presented, TenantId::DEFAULT, &["cognito-client"], &addr, None).await);
    assert!(matches!(err, Error::InvalidToken), "a foreign audience: {err:?}");
    let err = refused(h.auth.verify_presented_tokens(&presented, TenantId::PROJECT_OWNERS, &["v1"], &addr, None).await);
    assert!(matches!(err, Error::InvalidToken), "another tenant's: {err:?}");
    let err = refused(
        h.auth.verify_presented_tokens(&presented, TenantId::DEFAULT, &["v1"], &email("tam@example.com"), None).await,
    );
    assert!(matches!(err, Error::InvalidToken), "another user's email: {err:?}");
    let their_cog = h.auth.identity_id(&other.user);
    let err =
        refused(h.auth.verify_presented_tokens(&presented, TenantId::DEFAULT, &["v1"], &addr, Some(&their_cog)).await);
    assert!(matches!(err, Error::InvalidToken), "another user's identity id: {err:?}");
    let mixed = PresentedTokens { refresh: Some(&theirs.refresh_token), ..presented.clone() };
    let err = refused(h.auth.verify_presented_tokens(&mixed, TenantId::DEFAULT, &["v1"], &addr, None).await);
    assert!(matches!(err, Error::InvalidToken), "another session's refresh token: {err:?}");

    // Read-only: the refresh token still rotates afterwards; once rotated it is refused here.
    let (_, _, successor) =
        h.auth.rotate_refresh_token(TenantId::DEFAULT, &tokens.refresh_token).await.expect("rotates");
    let err = refused(h.auth.verify_presented_tokens(&presented, TenantId::DEFAULT, &["v1"], &addr, None).await);
    assert!(matches!(err, Error::InvalidToken), "a rotated refresh token: {err:?}");
    let current = PresentedTokens { refresh: Some(&successor), ..presented.clone() };
    h.auth.verify_presented_tokens(&current, TenantId::DEFAULT, &["v1"], &addr, None).await.expect("the successor");

    // Expired by the injected clock.
    h.clock.advance(Duration::from_secs(15 * 60));
    let err = refused(h.auth.verify_presented_tokens(&current, TenantId::DEFAULT, &["v1"], &addr, None).await);
    assert!(matches!(err, Error::TokenExpired), "{err:?}");

    // A session of an unconfirmed user.
    let pending = sign_up(&h, "uma@example.com").await.user;
    let session = h.auth.start_session(&pending, &ClientMeta::default()).await.expect("session");
    let t = h.auth.token_set(&session, &pending, "v1").await.expect("tokens");
    let unconfirmed =
        PresentedTokens { access: &t.access_token, id: Some(&t.id_token), refresh: Some(&t.refresh_token) };
    let err = refused(
        h.auth.verify_presented_tokens(&unconfirmed, TenantId::DEFAULT, &["v1"], &email("uma@example.com"), None).await,
    );
    assert!(matches!(err, Error::NotVerified), "{err:?}");

    // Revoked.
    h.auth.sign_out(&session).await.expect("sign out");
    let err = refused(
        h.auth.verify_presented_tokens(&unconfirmed, TenantId::DEFAULT, &["v1"], &email("uma@example.com"), None).await,
    );
    assert!(matches!(err, Error::SessionRevoked), "{err:?}");
    assert!(!h.auth.session_active(&session).await.expect("read"));
    assert!(h.auth.session_active(&s.session).await.expect("read"));
}
