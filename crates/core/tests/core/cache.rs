//! The session cache (`latchkey_core::session_cache`): credential checks answered from memory
//! stay exact on the instance that makes a change, follow the revocation bus on the others,
//! and without the bus are stale for at most the cache's TTL, by the injected clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_core::clock::{Clock, ManualClock};
use latchkey_core::identity::{Email, Login, PasswordPolicy, PresentedPassword, Profile, TenantId};
use latchkey_core::limits::Unlimited;
use latchkey_core::password::HashParams;
use latchkey_core::ports::{RevocationBus, Store};
use latchkey_core::secret::ServerSecret;
use latchkey_core::session::{ClientMeta, LocalRevocationBus, Revocation};
use latchkey_core::session_cache::SessionCacheSettings;
use latchkey_core::{Auth, Deps, Error, NewUser, Settings, SignedIn};
use latchkey_store::{Database, Options};

use crate::support::Outbox;

const PASSWORD: &str = "correct horse battery";

/// Instances built over one store and one manual clock, as processes sharing a database.
struct Cluster {
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    outbox: Arc<Outbox>,
    _db: Database,
}

impl Cluster {
    async fn new() -> Self {
        let db = Database::connect("sqlite::memory:", &Options::default()).await.expect("in-memory sqlite");
        Self {
            store: db.store(),
            clock: Arc::new(ManualClock::starting_now()),
            outbox: Arc::new(Outbox::default()),
            _db: db,
        }
    }

    /// An instance announcing revocations on `bus`, with the default cache (TTL one second).
    async fn instance(&self, bus: Arc<dyn RevocationBus>) -> Auth {
        let settings = Settings {
            hash_params: HashParams { memory_kib: 256, iterations: 1, parallelism: 1 },
            require_email_verification: false,
            ..Settings::default()
        };
        assert_eq!(settings.session_cache, SessionCacheSettings::default());
        let deps = Deps {
            store: self.store.clone(),
            mailer: self.outbox.clone(),
            clock: self.clock.clone(),
            limiter: Arc::new(Unlimited),
            revocations: bus,
        };
        Auth::new(deps, &ServerSecret::new(vec![7u8; 32]).expect("secret"), settings).await.expect("auth")
    }
}

/// A bus that carries nothing, not even to its own instance's subscribers: only what the
/// instance itself does when it revokes can make it forget.
struct Deaf(tokio::sync::broadcast::Sender<Revocation>);

impl Deaf {
    fn bus() -> Arc<dyn RevocationBus> {
        Arc::new(Deaf(tokio::sync::broadcast::channel(1).0))
    }
}

#[async_trait::async_trait]
impl RevocationBus for Deaf {
    async fn publish(&self, _: &[Revocation]) {}

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Revocation> {
        self.0.subscribe()
    }
}

fn email(s: &str) -> Email {
    Email::parse(s).expect("email")
}

async fn signed_in(auth: &Auth, address: &str) -> SignedIn {
    let new = NewUser {
        email: Some(email(address)),
        password: Some(PasswordPolicy::default().parse(PASSWORD).expect("policy")),
        profile: Profile::default(),
        ..Default::default()
    };
    auth.sign_up(TenantId::DEFAULT, new, &ClientMeta::default()).await.expect("sign up");
    sign_in(auth, address).await
}

async fn sign_in(auth: &Auth, address: &str) -> SignedIn {
    let password = PresentedPassword::parse(PASSWORD).expect("bounded");
    auth.sign_in(TenantId::DEFAULT, &Login::Email(email(address)), &password, &ClientMeta::default())
        .await
        .expect("sign in")
}

async fn token(auth: &Auth, s: &SignedIn) -> String {
    auth.access_token(&s.session, &s.user, "test", Default::default()).await.expect("token").0
}

/// Checks `token` on `auth` until it is refused (the bus is asynchronous), for at most five
/// seconds of real time; the manual clock does not move meanwhile, so the TTL cannot be what
/// ends the entry.
async fn refused_soon(auth: &Auth, token: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match auth.authenticate(token, &["test"]).await {
            Err(Error::SessionRevoked) => return true,
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    false
}

#[tokio::test]
async fn every_kind_of_revocation_is_refused_by_the_next_check_on_the_same_instance() {
    let cluster = Cluster::new().await;
    let auth = cluster.instance(Deaf::bus()).await;

    // Sign-out.
    let a = signed_in(&auth, "ann@example.com").await;
    let t = token(&auth, &a).await;
    auth.authenticate(&t, &["test"]).await.expect("cached now");
    auth.sign_out(&a.session).await.expect("sign out");
    assert!(matches!(auth.authenticate(&t, &["test"]).await, Err(Error::SessionRevoked)));

    // Signing out everywhere, and disabling the account.
    let b = sign_in(&auth, "ann@example.com").await;
    let t = token(&auth, &b).await;
    auth.authenticate(&t, &["test"]).await.expect("cached now");
    auth.sign_out_everywhere(TenantId::DEFAULT, b.user.id, None).await.expect("everywhere");
    assert!(matches!(auth.authenticate(&t, &["test"]).await, Err(Error::SessionRevoked)));

    let c = sign_in(&auth, "ann@example.com").await;
    let t = token(&auth, &c).await;
    auth.authenticate(&t, &["test"]).await.expect("cached now");
    auth.set_disabled(TenantId::DEFAULT, c.user.id, true).await.expect("disable");
    assert!(matches!(auth.authenticate(&t, &["test"]).await, Err(Error::SessionRevoked)));
    auth.set_disabled(TenantId::DEFAULT, c.user.id, false).await.expect("enable");

    // A password change keeps the current session and ends the others.
    let (keep, other) = (sign_in(&auth, "ann@example.com").await, sign_in(&auth, "ann@example.com").await);
    let (t_keep, t_other) = (token(&auth, &keep).await, token(&auth, &other).await);
    auth.authenticate(&t_keep, &["test"]).await.expect("cached now");
    auth.authenticate(&t_other, &["test"]).await.expect("cached now");
    let old = PresentedPassword::parse(PASSWORD).expect("bounded");
    let new = PasswordPolicy::default().parse("k7#mq2vz-Tern-81").expect("policy");
    auth.change_password(&keep.user, &keep.session, &old, &new).await.expect("change");
    auth.authenticate(&t_keep, &["test"]).await.expect("the current session lives on");
    assert!(matches!(auth.authenticate(&t_other, &["test"]).await, Err(Error::SessionRevoked)));

    // Deleting the account.
    let d = signed_in(&auth, "bob@example.com").await;
    let t = token(&auth, &d).await;
    auth.authenticate(&t, &["test"]).await.expect("cached now");
    auth.delete_user(TenantId::DEFAULT, d.user.id).await.expect("delete");
    assert!(matches!(auth.authenticate(&t, &["test"]).await, Err(Error::SessionRevoked)));
}

#[tokio::test]
async fn a_change_to_the_user_is_read_by_the_next_check_on_the_same_instance() {
    let cluster = Cluster::new().await;
    let auth = cluster.instance(Deaf::bus()).await;
    let s = signed_in(&auth, "cy@example.com").await;
    let t = token(&auth, &s).await;
    assert!(!auth.authenticate(&t, &["test"]).await.expect("valid").user.email_verified);
    auth.resend_verification(TenantId::DEFAULT, &email("cy@example.com")).await.expect("code mailed");
    assert!(auth.flush_mail(Duration::from_secs(5)).await);
    let code = {
        let mails = cluster.outbox.0.lock().expect("outbox");
        let text = &mails.last().expect("a verification mail").text;
        let digits: String = text.split(|c: char| !c.is_ascii_digit()).find(|r| r.len() == 6).expect("code").into();
        latchkey_core::code::OneTimeCode::parse(&digits).expect("six digits")
    };
    auth.verify_email(TenantId::DEFAULT, &email("cy@example.com"), code, &ClientMeta::default()).await.expect("verify");
    assert!(auth.authenticate(&t, &["test"]).await.expect("valid").user.email_verified, "no stale copy");
}

#[tokio::test]
async fn other_instances_forget_a_revoked_session_when_the_bus_reaches_them() {
    let cluster = Cluster::new().await;
    let bus: Arc<dyn RevocationBus> = Arc::new(LocalRevocationBus::default());
    let (a, b) = (cluster.instance(bus.clone()).await, cluster.instance(bus).await);
    let s = signed_in(&a, "dee@example.com").await;
    let t = token(&a, &s).await;
    b.authenticate(&t, &["test"]).await.expect("B caches the session");
    a.sign_out(&s.session).await.expect("A signs out");
    assert!(refused_soon(&b, &t).await, "B refuses the session without its TTL running out");
}

#[tokio::test]
async fn without_the_bus_a_cached_session_lives_at_most_the_ttl() {
    let cluster = Cluster::new().await;
    // Two instances the bus does not connect (as two processes on one SQLite file).
    let (a, b) = (cluster.instance(Deaf::bus()).await, cluster.instance(Deaf::bus()).await);
    let s = signed_in(&a, "eve@example.com").await;
    let t = token(&a, &s).await;
    b.authenticate(&t, &["test"]).await.expect("B caches the session");
    a.sign_out(&s.session).await.expect("A signs out");
    assert!(matches!(a.authenticate(&t, &["test"]).await, Err(Error::SessionRevoked)));

    // B has not heard: it answers from its cache until the entry is a second old, no longer.
    cluster.clock.advance(Duration::from_millis(999));
    b.authenticate(&t, &["test"]).await.expect("still within the TTL");
    cluster.clock.advance(Duration::from_millis(1));
    assert!(matches!(b.authenticate(&t, &["test"]).await, Err(Error::SessionRevoked)));

    // A session revoked behind every instance's back (straight in the store) ends the same way.
    let s = sign_in(&a, "eve@example.com").await;
    let t = token(&a, &s).await;
    a.authenticate(&t, &["test"]).await.expect("cached");
    assert!(cluster.store.revoke_session(TenantId::DEFAULT, s.session.id, cluster.clock.now()).await.expect("revoke"));
    cluster.clock.advance(Duration::from_secs(1));
    assert!(matches!(a.authenticate(&t, &["test"]).await, Err(Error::SessionRevoked)));
}

#[tokio::test]
async fn a_session_that_expires_is_refused_even_while_cached() {
    let cluster = Cluster::new().await;
    let auth = cluster.instance(Arc::new(LocalRevocationBus::default())).await;
    let s = signed_in(&auth, "fox@example.com").await;
    // A token as long-lived as the session (the `users` cookie).
    let t = auth.session_token(&s.session, &s.user, "test").await.expect("token");
    auth.authenticate(&t, &["test"]).await.expect("cached");
    let left = s.session.expires_at - cluster.clock.now();
    cluster.clock.advance(Duration::try_from(left).expect("positive"));
    assert!(auth.authenticate(&t, &["test"]).await.is_err(), "expired");
}
