//! The audit trail, through [`Auth`] on an in-memory SQLite store with a manual clock: every
//! kind of event is recorded where it happens, with the account, tenant and request context;
//! a full queue drops and counts; the retention purges.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::support::Outbox;
use latchkey_core::audit::{self, AuditEvent, AuditKind, AuditLog, AuditQuery, RequestContext};
use latchkey_core::clock::ManualClock;
use latchkey_core::code::OneTimeCode;
use latchkey_core::identity::{Email, Login, NewPassword, PasswordPolicy, PresentedPassword, TenantId};
use latchkey_core::limits::{MemoryRateLimiter, RateLimiter, Unlimited};
use latchkey_core::password::HashParams;
use latchkey_core::ports::AuditStore;
use latchkey_core::secret::ServerSecret;
use latchkey_core::session::{ClientMeta, LocalRevocationBus};
use latchkey_core::tenant::TenantSettings;
use latchkey_core::{Auth, Deps, Error, NewUser, Settings};
use latchkey_store::{Database, Options};

const PASSWORD: &str = "k7#mq2vz-Tern-81";
const NEW_PASSWORD: &str = "Qv9!rT-lamp-x47w";

struct Harness {
    auth: Auth,
    clock: Arc<ManualClock>,
    outbox: Arc<Outbox>,
    db: Database,
}

impl Harness {
    async fn code(&self) -> OneTimeCode {
        assert!(self.auth.flush_mail(Duration::from_secs(5)).await, "mail delivered");
        let mails = self.outbox.0.lock().expect("outbox");
        let text = &mails.last().expect("a mail was sent").text;
        let digits: String = text.split(|c: char| !c.is_ascii_digit()).find(|r| r.len() == 6).expect("code").into();
        OneTimeCode::parse(&digits).expect("six digits")
    }

    /// Every stored event, newest first, once the queue is drained.
    async fn events(&self, query: AuditQuery) -> Vec<AuditEvent> {
        self.auth.flush_audit().await;
        self.auth.audit_events(&AuditQuery { limit: 1000, ..query }).await.expect("audit events")
    }
}

async fn harness(settings: Settings, limits: bool) -> Harness {
    let db = Database::connect("sqlite::memory:", &Options::default()).await.expect("in-memory sqlite");
    let clock = Arc::new(ManualClock::starting_now());
    let outbox = Arc::new(Outbox::default());
    let secret = ServerSecret::new(vec![7u8; 32]).expect("secret");
    let limiter: Arc<dyn RateLimiter> =
        if limits { Arc::new(MemoryRateLimiter::new(clock.clone())) } else { Arc::new(Unlimited) };
    let deps = Deps {
        store: db.store(),
        mailer: outbox.clone(),
        clock: clock.clone(),
        limiter,
        revocations: Arc::new(LocalRevocationBus::default()),
    };
    let settings = Settings { hash_params: HashParams { memory_kib: 256, iterations: 1, parallelism: 1 }, ..settings };
    let auth = Auth::new(deps, &secret, settings).await.expect("auth");
    Harness { auth, clock, outbox, db }
}

fn email(s: &str) -> Email {
    Email::parse(s).expect("email")
}

fn new_password(p: &str) -> NewPassword {
    PasswordPolicy::default().parse(p).expect("within the policy")
}

fn presented(p: &str) -> PresentedPassword {
    PresentedPassword::parse(p).expect("bounded")
}

fn context() -> RequestContext {
    RequestContext::new("v1", Some("198.51.100.23".into()), Some("audit-test/1.0"))
}

#[tokio::test]
async fn every_kind_is_recorded_with_account_tenant_and_request_context() {
    let h = harness(Settings::default(), true).await;
    let auth = &h.auth;
    let meta = ClientMeta { ip: Some("198.51.100.23".into()), user_agent: Some("audit-test/1.0".into()) };
    let t = TenantId::DEFAULT;
    let ada = email("Ada@Example.com");
    let (user, key_id) = context()
        .scope(async {
            let new =
                NewUser { email: Some(ada.clone()), password: Some(new_password(PASSWORD)), ..NewUser::default() };
            auth.sign_up(t, new, &meta).await.expect("sign up");
            let code = h.code().await;
            let wrong = OneTimeCode::parse(if code.digits() == "123456" { "654321" } else { "123456" }).expect("code");
            assert!(matches!(auth.verify_email(t, &ada, wrong, &meta).await, Err(Error::CodeMismatch { .. })));
            let ghost = email("Nobody.Here@example.com");
            assert!(auth.verify_email(t, &ghost, code, &meta).await.is_err());
            auth.verify_email(t, &ada, code, &meta).await.expect("verified");

            let login = Login::Email(ada.clone());
            assert!(matches!(
                auth.sign_in(t, &login, &presented(NEW_PASSWORD), &meta).await,
                Err(Error::InvalidCredentials)
            ));
            let unknown = Login::Email(ghost.clone());
            assert!(auth.sign_in(t, &unknown, &presented(PASSWORD), &meta).await.is_err());
            let signed = auth.sign_in(t, &login, &presented(PASSWORD), &meta).await.expect("sign in");
            let first = auth.refresh_token(&signed.session).await.expect("refresh token");
            auth.rotate_refresh_token(t, &first).await.expect("rotated");
            h.clock.advance(Duration::from_secs(60));
            assert!(matches!(auth.rotate_refresh_token(t, &first).await, Err(Error::RefreshTokenReused)));

            let signed = auth.sign_in(t, &login, &presented(PASSWORD), &meta).await.expect("sign in");
            assert!(auth.sign_out(&signed.session).await.expect("signed out"));

            auth.request_password_reset(t, &ada).await.expect("reset requested");
            let code = h.code().await;
            auth.reset_password(t, &ada, code, &new_password(NEW_PASSWORD), &meta).await.expect("reset");

            let signed = auth.sign_in(t, &login, &presented(NEW_PASSWORD), &meta).await.expect("sign in");
            auth.change_password(&signed.user, &signed.session, &presented(NEW_PASSWORD), &new_password(PASSWORD))
                .await
                .expect("changed");
            let moved = email("ada.l@example.org");
            auth.request_email_change(&signed.user, &presented(PASSWORD), &moved).await.expect("change requested");
            let code = h.code().await;
            auth.confirm_email_change(&signed.user, &signed.session, code).await.expect("email changed");

            let (tenant, key) = auth.create_tenant("Acme", TenantSettings::default()).await.expect("tenant");
            let second = auth.create_api_key(tenant.id).await.expect("key");
            assert!(auth.revoke_api_key(tenant.id, second.record.id).await.expect("revoked"));

            for _ in 0..10 {
                if let Err(Error::RateLimited { .. }) = auth.request_password_reset(t, &moved).await {
                    break;
                }
            }
            (signed.user, key.record.id)
        })
        .await;
    RequestContext::cli()
        .scope(async {
            auth.set_disabled(t, user.id, true).await.expect("disabled");
            auth.set_disabled(t, user.id, false).await.expect("enabled");
            auth.delete_user(t, user.id).await.expect("deleted");
        })
        .await;

    let events = h.events(AuditQuery::default()).await;
    let kinds: BTreeSet<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let all: BTreeSet<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(kinds, all, "every kind recorded");
    assert!(events.windows(2).all(|w| w[0].at >= w[1].at), "newest first");

    for e in &events {
        let operator =
            matches!(e.kind, AuditKind::AccountDisabled | AuditKind::AccountEnabled | AuditKind::AccountDeleted);
        if operator {
            assert_eq!((e.surface.as_str(), e.ip.as_deref()), ("cli", None), "{e:?}");
        } else {
            assert_eq!(e.surface, "v1", "{e:?}");
            assert_eq!(e.ip.as_deref(), Some("198.51.100.23"), "{e:?}");
            assert_eq!(e.user_agent.as_deref(), Some("audit-test/1.0"), "{e:?}");
        }
        for text in [&e.email, &e.detail, &e.user_agent].into_iter().flatten() {
            assert!(!text.contains(PASSWORD) && !text.contains(NEW_PASSWORD), "no password in {e:?}");
        }
        let about_ada = !matches!(e.kind, AuditKind::KeyCreated | AuditKind::KeyRevoked | AuditKind::RateLimited)
            && e.email.as_deref() != Some("Nobody.Here@example.com");
        if about_ada {
            assert_eq!(e.user_id, Some(user.id), "{e:?}");
            assert_eq!(e.tenant, t, "{e:?}");
        }
    }
    let of = |kind: AuditKind| events.iter().filter(move |e| e.kind == kind);
    let sign_up = of(AuditKind::SignUp).next().expect("sign_up");
    assert_eq!(sign_up.email.as_deref(), Some("Ada@Example.com"), "as the account stores it");

    let failed: Vec<_> = of(AuditKind::SignInFailed).collect();
    let unknown = failed.iter().find(|e| e.detail.as_deref() == Some("unknown_user")).expect("unknown user");
    assert_eq!((unknown.user_id, unknown.email.as_deref()), (None, Some("Nobody.Here@example.com")), "as typed");
    assert!(failed.iter().any(|e| e.detail.as_deref() == Some("wrong_password") && e.user_id == Some(user.id)));

    let code_failed: Vec<_> = of(AuditKind::CodeFailed).collect();
    assert!(code_failed.iter().any(|e| e.detail.as_deref() == Some("verify_email: code_mismatch")));
    assert!(code_failed.iter().any(|e| e.user_id.is_none() && e.email.as_deref() == Some("Nobody.Here@example.com")));

    let sent: BTreeSet<_> = of(AuditKind::CodeSent).filter_map(|e| e.detail.as_deref()).collect();
    assert_eq!(sent, BTreeSet::from(["change_email", "reset_password", "verify_email"]));
    assert_eq!(of(AuditKind::EmailChange).next().and_then(|e| e.email.as_deref()), Some("ada.l@example.org"));
    assert_eq!(of(AuditKind::RateLimited).next().and_then(|e| e.detail.as_deref()), Some("code_mail"));
    let key = format!("api_key {key_id}");
    assert!(of(AuditKind::KeyCreated).any(|e| e.detail.as_deref() == Some(key.as_str()) && e.tenant != t));
    assert_eq!(of(AuditKind::SignOut).count(), 1, "replays and password changes are not sign-outs");
    assert_eq!(
        of(AuditKind::AccountDeleted).next().and_then(|e| e.email.as_deref()),
        Some("ada.l@example.org"),
        "the deleted account's address is kept"
    );

    // Filters.
    let only =
        h.events(AuditQuery { kinds: vec![AuditKind::SignIn, AuditKind::SignOut], ..AuditQuery::default() }).await;
    assert_eq!(only.len(), of(AuditKind::SignIn).count() + 1);
    let by_email =
        h.events(AuditQuery { email: Some("nobody.here@EXAMPLE.com".into()), ..AuditQuery::default() }).await;
    assert_eq!(by_email.len(), 2, "case-insensitive: {by_email:?}");
    let by_user = h.events(AuditQuery { user_id: Some(user.id), ..AuditQuery::default() }).await;
    assert!(by_user.iter().all(|e| e.user_id == Some(user.id)) && by_user.len() > 10);
    let latest = h.auth.audit_events(&AuditQuery { limit: 2, ..AuditQuery::default() }).await.expect("events");
    assert_eq!(latest, events[..2].to_vec());
    let since = events[0].at;
    let recent = h.events(AuditQuery { since: Some(since), ..AuditQuery::default() }).await;
    assert!(recent.iter().all(|e| e.at >= since) && !recent.is_empty());
    let before = h.events(AuditQuery { until: Some(since), ..AuditQuery::default() }).await;
    assert!(before.iter().all(|e| e.at < since) && before.len() + recent.len() == events.len());
    assert_eq!(h.auth.audit_dropped(), 0);
}

#[tokio::test]
async fn events_outside_any_request_are_internal() {
    let h = harness(Settings::default(), false).await;
    let new = NewUser {
        email: Some(email("grace@example.com")),
        password: Some(new_password(PASSWORD)),
        ..NewUser::default()
    };
    h.auth.sign_up(TenantId::DEFAULT, new, &ClientMeta::default()).await.expect("sign up");
    let events = h.events(AuditQuery { kinds: vec![AuditKind::SignUp], ..AuditQuery::default() }).await;
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].surface.as_str(), events[0].ip.as_deref()), (audit::NO_SURFACE, None));
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let h = harness(Settings::default(), false).await;
    let store: Arc<dyn AuditStore> = h.db.store();
    let log = AuditLog::start(store, 4);
    let now = h.auth.now();
    // Nothing awaits between these, so the writer cannot drain the queue meanwhile.
    for _ in 0..10 {
        log.record(audit::event(AuditKind::SignIn, now, TenantId::DEFAULT, None, None, None));
    }
    assert_eq!(log.dropped(), 6, "4 queued, 6 dropped");
    log.flush().await;
    let stored = h.auth.audit_events(&AuditQuery { limit: 100, ..AuditQuery::default() }).await.expect("events");
    assert_eq!(stored.len(), 4);
    log.record(audit::event(AuditKind::SignOut, now, TenantId::DEFAULT, None, None, None));
    log.flush().await;
    assert_eq!(log.dropped(), 6, "room again once drained");
}

#[tokio::test]
async fn events_older_than_the_retention_are_purged() {
    let h = harness(Settings { audit_retention: Duration::from_secs(2 * 3600), ..Settings::default() }, false).await;
    let sign_up = |address: &str| NewUser {
        email: Some(email(address)),
        password: Some(new_password(PASSWORD)),
        ..NewUser::default()
    };
    h.auth.sign_up(TenantId::DEFAULT, sign_up("old@example.com"), &ClientMeta::default()).await.expect("sign up");
    h.clock.advance(Duration::from_secs(3 * 3600));
    h.auth.sign_up(TenantId::DEFAULT, sign_up("new@example.com"), &ClientMeta::default()).await.expect("sign up");
    let before = h.events(AuditQuery::default()).await;
    assert_eq!(before.len(), 4, "sign_up and code_sent twice: {before:?}");
    assert_eq!(h.auth.purge_audit().await.expect("purge"), 2);
    let after = h.events(AuditQuery::default()).await;
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|e| e.email.as_deref() == Some("new@example.com")), "{after:?}");
    assert_eq!(h.auth.purge_audit().await.expect("purge"), 0);
}
