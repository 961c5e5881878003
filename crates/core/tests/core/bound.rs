//! Bound refresh pairs ([`Auth::refresh_pair`], [`Auth::rotate_refresh_pair`]) on an in-memory
//! SQLite store with a manual clock: a refresh needs the token and the value bound to it, a
//! mismatched pair changes nothing, and rotation, the grace window and reuse detection apply
//! to pairs as to bare refresh tokens. Also the username users of the `auth` surface: unique
//! usernames and external ids, and no email verification in their way.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use latchkey_core::clock::ManualClock;
use latchkey_core::identity::{ExternalId, Login, PasswordPolicy, PresentedPassword, TenantId, Username};
use latchkey_core::limits::Unlimited;
use latchkey_core::password::HashParams;
use latchkey_core::ports::{Mail, MailError, Mailer};
use latchkey_core::secret::ServerSecret;
use latchkey_core::session::{ClientMeta, LocalRevocationBus};
use latchkey_core::token::RefreshToken;
use latchkey_core::{Auth, Deps, Error, NewUser, Settings, SignedIn};
use latchkey_store::{Database, Options};

/// Users of these tests have no email, so nothing is ever mailed.
struct NoMail;

#[async_trait]
impl Mailer for NoMail {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        Err(MailError(format!("unexpected mail to {}", mail.to.masked())))
    }
}

struct Harness {
    auth: Auth,
    clock: Arc<ManualClock>,
}

async fn harness() -> Harness {
    let db = Database::connect("sqlite::memory:", &Options::default()).await.expect("in-memory sqlite");
    let clock = Arc::new(ManualClock::starting_now());
    let secret = ServerSecret::new(vec![9u8; 32]).expect("secret");
    let deps = Deps {
        store: db.store(),
        mailer: Arc::new(NoMail),
        clock: clock.clone(),
        limiter: Arc::new(Unlimited),
        revocations: Arc::new(LocalRevocationBus::default()),
    };
    let settings =
        Settings { hash_params: HashParams { memory_kib: 256, iterations: 1, parallelism: 1 }, ..Settings::default() };
    let auth = Auth::new(deps, &secret, settings).await.expect("auth");
    Harness { auth, clock }
}

const PASSWORD: &str = "correct horse battery";

async fn sign_up(h: &Harness, username: &str, employee: &str) -> Result<latchkey_core::SignedUp, Error> {
    let new = NewUser {
        username: Some(Username::parse(username).expect("username")),
        external_id: Some(ExternalId::parse(employee).expect("external id")),
        password: Some(PasswordPolicy::default().parse(PASSWORD).expect("password")),
        ..NewUser::default()
    };
    h.auth.sign_up(TenantId::DEFAULT, new, &ClientMeta::default()).await
}

async fn signed_in(h: &Harness, username: &str) -> SignedIn {
    sign_up(h, username, &format!("emp-{username}")).await.expect("sign up");
    let login = Login::Username(Username::parse(username).expect("username"));
    h.auth
        .sign_in(
            TenantId::DEFAULT,
            &login,
            &PresentedPassword::parse(PASSWORD).expect("password"),
            &ClientMeta::default(),
        )
        .await
        .expect("sign in")
}

async fn rotate(h: &Harness, token: &RefreshToken, bound: &str) -> Result<latchkey_core::RefreshPair, Error> {
    h.auth.rotate_refresh_pair(TenantId::DEFAULT, token, bound).await.map(|(_, _, pair)| pair)
}

#[tokio::test]
async fn a_pair_rotates_into_a_new_pair_of_the_same_session() {
    let h = harness().await;
    let s = signed_in(&h, "ann").await;
    let p0 = h.auth.refresh_pair(&s.session).await.expect("pair");
    assert_eq!(p0.token().expose().len(), 86, "session id, 256 random bits and a tag, base64url");
    assert_eq!(p0.bound().len(), 43, "an HMAC-SHA256, base64url");
    assert_ne!(p0.bound(), p0.token().expose());

    let (user, session, p1) =
        h.auth.rotate_refresh_pair(TenantId::DEFAULT, p0.token(), p0.bound()).await.expect("rotate");
    assert_eq!((user.id, session.id), (s.user.id, s.session.id));
    assert_ne!(p1.token(), p0.token());
    assert_ne!(p1.bound(), p0.bound());
    assert_ne!(p1.bound(), p1.token().expose());
    let p2 = rotate(&h, p1.token(), p1.bound()).await.expect("the successor pair refreshes too");
    assert_ne!(p2, p1);
    assert_eq!(format!("{p2:?}"), "RefreshPair([redacted])");
}

#[tokio::test]
async fn a_mismatched_pair_is_refused_and_changes_nothing() {
    let h = harness().await;
    let s = signed_in(&h, "bob").await;
    let p0 = h.auth.refresh_pair(&s.session).await.expect("pair");
    let other = h.auth.refresh_pair(&s.session).await.expect("another pair of the same session");

    let mut flipped = p0.bound().to_owned();
    let last = flipped.pop().expect("non-empty");
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    for bound in ["", "x", flipped.as_str(), other.bound(), p0.token().expose(), &p0.bound()[..42]] {
        let err = rotate(&h, p0.token(), bound).await.expect_err("mismatched");
        assert!(matches!(err, Error::InvalidToken), "{bound:?}: {err:?}");
    }
    let err = rotate(&h, &RefreshToken::from_client("unknown"), p0.bound()).await.expect_err("unknown token");
    assert!(matches!(err, Error::InvalidToken), "{err:?}");

    // None of that rotated p0: it rotates now, as a fresh token.
    let p1 = rotate(&h, p0.token(), p0.bound()).await.expect("p0 is still fresh");

    // A replay of p0 after the window with a wrong bound value is refused without revoking.
    h.clock.advance(Duration::from_secs(11));
    let err = rotate(&h, p0.token(), other.bound()).await.expect_err("mismatched");
    assert!(matches!(err, Error::InvalidToken), "{err:?}");
    rotate(&h, p1.token(), p1.bound()).await.expect("the session lives on");
}

#[tokio::test]
async fn the_grace_window_repeats_the_successor_pair_and_a_later_replay_revokes_the_session() {
    let h = harness().await;
    let s = signed_in(&h, "cy").await;
    let p0 = h.auth.refresh_pair(&s.session).await.expect("pair");
    let p1 = rotate(&h, p0.token(), p0.bound()).await.expect("rotate");

    // A second tab presents p0 within the window: the same successor pair.
    h.clock.advance(Duration::from_secs(5));
    assert_eq!(rotate(&h, p0.token(), p0.bound()).await.expect("grace"), p1);

    let (access, _) = h.auth.access_token(&s.session, &s.user, "auth", Default::default()).await.expect("access");
    let p2 = rotate(&h, p1.token(), p1.bound()).await.expect("rotate p1");
    h.clock.advance(Duration::from_secs(11));
    let err = rotate(&h, p0.token(), p0.bound()).await.expect_err("replay");
    assert!(matches!(err, Error::RefreshTokenReused), "{err:?}");
    let err = rotate(&h, p2.token(), p2.bound()).await.expect_err("the legitimate pair dies too");
    assert!(matches!(err, Error::SessionRevoked), "{err:?}");
    let err = h.auth.authenticate(&access, &["auth"]).await.expect_err("so do access tokens");
    assert!(matches!(err, Error::SessionRevoked), "{err:?}");
}

#[tokio::test]
async fn username_users_have_unique_usernames_and_external_ids_and_need_no_verification() {
    let h = harness().await;
    let s = signed_in(&h, "dee").await;
    assert_eq!(s.user.email, None);
    assert_eq!(s.user.external_id.as_ref().map(ExternalId::as_str), Some("emp-dee"));

    let err = sign_up(&h, "dee2", "emp-dee").await.expect_err("same employee, other username");
    assert!(matches!(err, Error::ExternalIdTaken), "{err:?}");
    let err = sign_up(&h, "dee", "emp-other").await.expect_err("same username");
    assert!(matches!(err, Error::UsernameTaken), "{err:?}");
    let err = sign_up(&h, "Dee", "emp-dee").await.expect_err("case differs, employee the same");
    assert!(matches!(err, Error::ExternalIdTaken), "{err:?}");
    sign_up(&h, "Dee", "emp-3").await.expect("usernames are compared exactly");
}

#[tokio::test]
async fn the_token_of_a_pair_does_not_refresh_without_its_bound_value() {
    // An attacker holding only `sRefreshToken` tries the refresh routes that take a bare refresh
    // token (`v1`, Cognito's REFRESH_TOKEN_AUTH): refused, and nothing rotates or ends.
    let h = harness().await;
    let s = signed_in(&h, "dee").await;
    let p0 = h.auth.refresh_pair(&s.session).await.expect("pair");
    let err = h.auth.rotate_refresh_token(TenantId::DEFAULT, p0.token()).await.expect_err("bare use of a pair");
    assert!(matches!(err, Error::InvalidToken), "{err:?}");
    let p1 = rotate(&h, p0.token(), p0.bound()).await.expect("p0 is still fresh");
    let err = h.auth.rotate_refresh_token(TenantId::DEFAULT, p1.token()).await.expect_err("successors are pairs too");
    assert!(matches!(err, Error::InvalidToken), "{err:?}");
    rotate(&h, p1.token(), p1.bound()).await.expect("the session lives on");

    // Nor does it revoke anything alone (Cognito's RevokeToken takes a bare token).
    let (_, _, p2) = h.auth.rotate_refresh_pair(TenantId::DEFAULT, p1.token(), p1.bound()).await.expect("rotate");
    assert!(!h.auth.revoke_refresh_token(TenantId::DEFAULT, p2.token()).await.expect("no error"));
    rotate(&h, p2.token(), p2.bound()).await.expect("the session still lives on");

    // And a bare refresh token cannot be presented as a pair's token.
    let bare = h.auth.refresh_token(&s.session).await.expect("bare token");
    let err = rotate(&h, &bare, p0.bound()).await.expect_err("not a pair");
    assert!(matches!(err, Error::InvalidToken), "{err:?}");
    h.auth.rotate_refresh_token(TenantId::DEFAULT, &bare).await.expect("the bare token still refreshes");
}
