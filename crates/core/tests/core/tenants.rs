//! Tenant rules exercised through [`Auth`] on an in-memory SQLite store with a manual clock:
//! tokens bound to their tenant, API keys (tenant, revocation, last use), per-tenant
//! verification and the paged user listing.

use std::sync::Arc;
use std::time::Duration;

use latchkey_core::clock::ManualClock;
use latchkey_core::identity::{Email, Login, PresentedPassword, TenantId};
use latchkey_core::limits::Unlimited;
use latchkey_core::password::HashParams;

use crate::support::Outbox;
use latchkey_core::secret::ServerSecret;
use latchkey_core::session::{ClientMeta, LocalRevocationBus};
use latchkey_core::tenant::TenantSettings;
use latchkey_core::{Auth, Deps, Error, NewUser, Settings};
use latchkey_store::{Database, Options};

const PASSWORD: &str = "correct horse battery";

async fn auth() -> (Auth, Arc<ManualClock>, Arc<Outbox>) {
    let db = Database::connect("sqlite::memory:", &Options::default()).await.expect("in-memory sqlite");
    let clock = Arc::new(ManualClock::starting_now());
    let outbox = Arc::new(Outbox::default());
    let deps = Deps {
        store: db.store(),
        mailer: outbox.clone(),
        clock: clock.clone(),
        limiter: Arc::new(Unlimited),
        revocations: Arc::new(LocalRevocationBus::default()),
    };
    let settings =
        Settings { hash_params: HashParams { memory_kib: 256, iterations: 1, parallelism: 1 }, ..Settings::default() };
    let secret = ServerSecret::new(vec![9u8; 32]).expect("secret");
    (Auth::new(deps, &secret, settings).await.expect("auth"), clock, outbox)
}

fn new_user(address: &str) -> NewUser {
    let policy = latchkey_core::identity::PasswordPolicy::default();
    NewUser {
        email: Some(Email::parse(address).expect("email")),
        password: Some(policy.parse(PASSWORD).expect("password")),
        ..NewUser::default()
    }
}

fn login(address: &str) -> Login {
    Login::Email(Email::parse(address).expect("email"))
}

#[tokio::test]
async fn a_token_is_accepted_only_in_its_own_tenant() {
    let (auth, _, _) = auth().await;
    let (tenant, _) = auth.create_tenant("Acme", TenantSettings::default()).await.expect("tenant");
    let meta = ClientMeta::default();
    let user = auth.sign_up(tenant.id, new_user("eve@example.com"), &meta).await.expect("sign up").user;
    let session = auth.start_session(&user, &meta).await.expect("session");
    // Even with the audience a default-tenant surface accepts, the tenant decides.
    let token = auth.session_token(&session, &user, "users").await.expect("token");
    assert!(matches!(auth.authenticate(&token, &["users"]).await, Err(Error::InvalidToken)));
    assert!(matches!(
        auth.authenticate_in(TenantId::PROJECT_OWNERS, &token, &["users"]).await,
        Err(Error::InvalidToken)
    ));
    let ok = auth.authenticate_in(tenant.id, &token, &["users"]).await.expect("its own tenant");
    assert_eq!(ok.user.id, user.id);
    let id_token = auth.id_token(&session, &user, "users", Default::default()).await.expect("id token");
    assert!(matches!(auth.verify_id_token(&id_token, &["users"]).await, Err(Error::InvalidToken)));

    // An owner's token is bound to its owner, too.
    let owner = auth
        .sign_up_owner(
            Email::parse("own@example.com").expect("email"),
            latchkey_core::identity::PasswordPolicy::default().parse(PASSWORD).expect("pw"),
            &meta,
        )
        .await
        .expect("owner");
    let signed_in = auth
        .sign_in(
            TenantId::PROJECT_OWNERS,
            &login("own@example.com"),
            &PresentedPassword::parse(PASSWORD).expect("pw"),
            &meta,
        )
        .await
        .expect("owner signs in without verifying");
    let owner_token = auth.session_token(&signed_in.session, &signed_in.user, "projects").await.expect("token");
    auth.authenticate_owner(owner.owner.id, &owner_token, &["projects"]).await.expect("the owner");
    assert!(matches!(auth.authenticate_owner(user.id, &owner_token, &["projects"]).await, Err(Error::InvalidToken)));
    assert_eq!(auth.tenant_of_owner(owner.owner.id).await.expect("tenant").id, owner.tenant.id);
}

#[tokio::test]
async fn keys_open_only_their_tenant_until_revoked() {
    let (auth, clock, _) = auth().await;
    let meta = ClientMeta::default();
    let (a, key_a) = auth.create_tenant("A", TenantSettings::default()).await.expect("tenant");
    let (b, _) = auth.create_tenant("B", TenantSettings::default()).await.expect("tenant");
    let text = key_a.key.expose().to_owned();

    let used = auth.authenticate_api_key(a.id, Some(&text), &meta).await.expect("A's key opens A");
    assert_eq!(used.id, key_a.record.id);
    assert!(matches!(auth.authenticate_api_key(b.id, Some(&text), &meta).await, Err(Error::InvalidToken)));
    assert!(matches!(auth.authenticate_api_key(a.id, None, &meta).await, Err(Error::InvalidToken)));
    assert!(matches!(auth.authenticate_api_key(a.id, Some("lk_nope"), &meta).await, Err(Error::InvalidToken)));

    // Last use is recorded, at most once a minute.
    let first_use = auth.api_keys(a.id).await.expect("keys")[0].last_used_at.expect("used");
    clock.advance(Duration::from_secs(30));
    auth.authenticate_api_key(a.id, Some(&text), &meta).await.expect("again");
    assert_eq!(auth.api_keys(a.id).await.expect("keys")[0].last_used_at, Some(first_use));
    clock.advance(Duration::from_secs(31));
    auth.authenticate_api_key(a.id, Some(&text), &meta).await.expect("again");
    assert!(auth.api_keys(a.id).await.expect("keys")[0].last_used_at > Some(first_use));

    // A second key, then the first revoked: only the second opens A.
    let second = auth.create_api_key(a.id).await.expect("second key");
    assert!(!auth.revoke_api_key(b.id, key_a.record.id).await.expect("revoke"), "not B's key");
    assert!(auth.revoke_api_key(a.id, key_a.record.id).await.expect("revoke"));
    assert!(!auth.revoke_api_key(a.id, key_a.record.id).await.expect("revoke"), "once");
    assert!(matches!(auth.authenticate_api_key(a.id, Some(&text), &meta).await, Err(Error::InvalidToken)));
    auth.authenticate_api_key(a.id, Some(second.key.expose()), &meta).await.expect("the second key");
    assert!(matches!(auth.create_api_key(TenantId::random()).await, Err(Error::TenantNotFound)));
    assert!(matches!(auth.create_api_key(TenantId::DEFAULT).await, Err(Error::InvalidInput(_))));

    // At most ten active keys; revoking one makes room.
    for _ in 1..10 {
        auth.create_api_key(a.id).await.expect("room for more");
    }
    assert!(matches!(auth.create_api_key(a.id).await, Err(Error::InvalidInput(_))));
    assert!(auth.revoke_api_key(a.id, second.record.id).await.expect("revoke"));
    auth.create_api_key(a.id).await.expect("room again");
}

#[tokio::test]
async fn each_tenant_has_its_own_verification_rule() {
    let (auth, _, outbox) = auth().await;
    let meta = ClientMeta::default();
    let strict = TenantSettings { require_email_verification: true };
    let (checked, _) = auth.create_tenant("Checked", strict).await.expect("tenant");
    let (open, _) = auth.create_tenant("Open", TenantSettings::default()).await.expect("tenant");
    let password = PresentedPassword::parse(PASSWORD).expect("pw");

    auth.sign_up(checked.id, new_user("v@example.com"), &meta).await.expect("sign up");
    assert!(auth.flush_mail(Duration::from_secs(5)).await);
    assert_eq!(outbox.0.lock().expect("outbox").len(), 1, "a code goes out where verification is required");
    let refused = auth.sign_in(checked.id, &login("v@example.com"), &password, &meta).await;
    assert!(matches!(refused, Err(Error::NotVerified)));

    auth.sign_up(open.id, new_user("v@example.com"), &meta).await.expect("sign up");
    assert!(auth.flush_mail(Duration::from_secs(5)).await);
    assert_eq!(outbox.0.lock().expect("outbox").len(), 1, "no code where it is not");
    auth.sign_in(open.id, &login("v@example.com"), &password, &meta).await.expect("no verification needed");

    assert!(matches!(
        auth.sign_up(TenantId::random(), new_user("x@example.com"), &meta).await,
        Err(Error::TenantNotFound)
    ));
    let default = auth.tenant(TenantId::DEFAULT).await.expect("default tenant");
    assert!(default.settings.require_email_verification, "the default tenant follows the setting");
}

#[tokio::test]
async fn users_are_listed_page_by_page_per_tenant() {
    let (auth, clock, _) = auth().await;
    let meta = ClientMeta::default();
    let (tenant, _) = auth.create_tenant("Paged", TenantSettings::default()).await.expect("tenant");
    for i in 0..5 {
        auth.sign_up(tenant.id, new_user(&format!("u{i}@example.com")), &meta).await.expect("sign up");
        clock.advance(Duration::from_secs(1));
    }
    auth.sign_up(TenantId::DEFAULT, new_user("elsewhere@example.com"), &meta).await.expect("sign up");
    let emails = |users: Vec<latchkey_core::identity::User>| -> Vec<String> {
        users.into_iter().map(|u| u.email.expect("email").to_string()).collect()
    };
    assert_eq!(emails(auth.users_page(tenant.id, 2, 0).await.expect("page")), ["u0@example.com", "u1@example.com"]);
    assert_eq!(emails(auth.users_page(tenant.id, 2, 4).await.expect("page")), ["u4@example.com"]);
    assert!(auth.users_page(tenant.id, 2, 6).await.expect("page").is_empty());
    assert!(matches!(auth.users_page(tenant.id, 0, 0).await, Err(Error::InvalidInput(_))));
    assert!(matches!(auth.users_page(TenantId::random(), 10, 0).await, Err(Error::TenantNotFound)));
}
