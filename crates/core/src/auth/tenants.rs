//! Tenants: creating them (by the operator, or by a project owner's sign-up), their API keys
//! (create, list, revoke, and the check of a presented key), the credential check bound to one
//! tenant, and the listing of a tenant's users (API.md, `projects`; seed `002`).
//!
//! Isolation is enforced here: a presented key opens only the tenant it was created for, and a
//! token is accepted only in the tenant named by its `tid`, by a caller that says which tenant
//! it serves ([`Auth::authenticate_in`]).

use std::time::Duration;

use super::{Auth, Authenticated, NewUser, observed};
use crate::audit::AuditKind;
use crate::error::{Error, Result};
use crate::identity::{ApiKeyId, Email, NewPassword, TenantId, User, UserId};
use crate::limits::{LimitKind, address_key};
use crate::session::ClientMeta;
use crate::tenant::{ApiKey, ApiKeyRecord, PresentedApiKey, Tenant, TenantSettings, parse_tenant_name};
use crate::token::{ACCESS_TOKEN_TYP, Expectation};

/// How often a key's `last_used_at` is written at most.
const KEY_TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// Most unrevoked API keys a tenant may hold at once (enough to rotate; bounded so that no
/// caller can grow the table without end).
pub const MAX_ACTIVE_KEYS: usize = 10;

/// Largest page of [`Auth::users_page`].
pub const MAX_PAGE: u32 = 1000;

/// A key just created: its text (to show once, never stored) and its stored record.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// The key itself.
    pub key: ApiKey,
    /// What is stored of it.
    pub record: ApiKeyRecord,
}

/// A project owner just signed up: the owner (a user of [`TenantId::PROJECT_OWNERS`]), the
/// tenant of their projects' accounts, and its first API key.
#[derive(Debug, Clone)]
pub struct OwnerSignedUp {
    /// The owner.
    pub owner: User,
    /// The owner's tenant.
    pub tenant: Tenant,
    /// The tenant's first key, shown once.
    pub key: NewApiKey,
}

impl Auth {
    /// A new key for `tenant`, not yet stored.
    fn new_api_key(&self, tenant: TenantId) -> NewApiKey {
        let key = ApiKey::generate();
        let record = ApiKeyRecord {
            id: ApiKeyId::random(),
            tenant,
            key_hash: self.0.api_keys.hash(&key).to_vec(),
            hint: key.hint(),
            created_at: self.now(),
            last_used_at: None,
            revoked_at: None,
        };
        NewApiKey { key, record }
    }

    /// Creates a tenant without an owner (the operator's `latchkey tenant create`) with its
    /// first API key, in one transaction.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `name`) for an empty, over-long or unprintable name,
    /// [`Error::Internal`].
    #[tracing::instrument(skip_all)]
    pub async fn create_tenant(&self, name: &str, settings: TenantSettings) -> Result<(Tenant, NewApiKey)> {
        let name = parse_tenant_name(name).map_err(|e| Error::invalid("name", format!("name {e}")))?;
        let tenant = Tenant { id: TenantId::random(), name, owner: None, settings, created_at: self.now() };
        let key = self.new_api_key(tenant.id);
        self.0.store.insert_tenant(&tenant, Some(&key.record)).await?;
        tracing::info!(tenant = %tenant.id, "tenant created");
        self.audit_key(AuditKind::KeyCreated, &key.record);
        Ok((tenant, key))
    }

    /// Signs up a project owner (API.md `projects`, `POST /projects/api/users/signup`): the
    /// owner becomes a user of [`TenantId::PROJECT_OWNERS`] (no email verification there), and
    /// gets a tenant of their own, which does not require verification either, with its first
    /// API key. Limits and hashing are those of [`Auth::sign_up`]; the unique email constraint
    /// of the owners' tenant decides between concurrent sign-ups, so one email gives exactly
    /// one owner. Should creating the tenant fail, the owner is removed again.
    ///
    /// # Errors
    /// [`Error::EmailTaken`], [`Error::RateLimited`], [`Error::Overloaded`], [`Error::Internal`].
    #[tracing::instrument(skip_all)]
    pub async fn sign_up_owner(&self, email: Email, password: NewPassword, meta: &ClientMeta) -> Result<OwnerSignedUp> {
        let new = NewUser { email: Some(email.clone()), password: Some(password), ..NewUser::default() };
        let owner = self.sign_up(TenantId::PROJECT_OWNERS, new, meta).await?.user;
        observed("create_owner_tenant", async {
            let tenant = Tenant {
                id: TenantId::random(),
                name: email.to_string(),
                owner: Some(owner.id),
                settings: TenantSettings { require_email_verification: false },
                created_at: self.now(),
            };
            let key = self.new_api_key(tenant.id);
            if let Err(e) = self.0.store.insert_tenant(&tenant, Some(&key.record)).await {
                if let Err(undo) = self.0.store.delete_user(TenantId::PROJECT_OWNERS, owner.id).await {
                    tracing::error!(error = %undo, owner = %owner.id, "cannot remove an owner left without a tenant");
                }
                return Err(e.into());
            }
            tracing::info!(tenant = %tenant.id, owner = %owner.id, "project owner's tenant created");
            self.audit_key(AuditKind::KeyCreated, &key.record);
            Ok(OwnerSignedUp { owner, tenant, key })
        })
        .await
    }

    /// Records an event about an API key: its tenant and id, never the key.
    fn audit_key(&self, kind: AuditKind, key: &ApiKeyRecord) {
        self.audit(kind, key.tenant, None, None, Some(format!("api_key {}", key.id)));
    }

    /// The tenant `id`.
    ///
    /// # Errors
    /// [`Error::TenantNotFound`].
    pub async fn tenant(&self, id: TenantId) -> Result<Tenant> {
        self.0.store.tenant(id).await?.map(|t| self.in_force(t)).ok_or(Error::TenantNotFound)
    }

    /// The tenant with the settings in force: the default tenant's verification rule is
    /// `LATCHKEY_REQUIRE_EMAIL_VERIFICATION`, whatever its row says.
    fn in_force(&self, mut tenant: Tenant) -> Tenant {
        if tenant.id == TenantId::DEFAULT {
            tenant.settings.require_email_verification = self.0.settings.require_email_verification;
        }
        tenant
    }

    /// Every tenant, oldest first (the system tenants first).
    ///
    /// # Errors
    /// [`Error::Internal`].
    pub async fn tenants(&self) -> Result<Vec<Tenant>> {
        Ok(self.0.store.tenants().await?.into_iter().map(|t| self.in_force(t)).collect())
    }

    /// The tenant of the project owner `owner`.
    ///
    /// # Errors
    /// [`Error::TenantNotFound`] when `owner` is no owner (or owns no tenant).
    pub async fn tenant_of_owner(&self, owner: UserId) -> Result<Tenant> {
        self.0.store.tenant_of_owner(owner).await?.ok_or(Error::TenantNotFound)
    }

    /// A new API key for `tenant`; the previous keys keep working (rotate by creating the new
    /// key, moving clients to it, then revoking the old one).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `tenant`) for the default and owners' tenants, and
    /// when the tenant holds [`MAX_ACTIVE_KEYS`] unrevoked keys already,
    /// [`Error::TenantNotFound`], [`Error::Internal`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn create_api_key(&self, tenant: TenantId) -> Result<NewApiKey> {
        if tenant.is_system() {
            return Err(Error::invalid("tenant", "the system tenants have no API keys"));
        }
        self.tenant(tenant).await?;
        let active = self.0.store.api_keys(tenant).await?.iter().filter(|k| k.revoked_at.is_none()).count();
        if active >= MAX_ACTIVE_KEYS {
            return Err(Error::invalid(
                "tenant",
                format!("a tenant has at most {MAX_ACTIVE_KEYS} active API keys; revoke one first"),
            ));
        }
        let key = self.new_api_key(tenant);
        self.0.store.insert_api_key(&key.record).await?;
        tracing::info!(key = %key.record.id, "API key created");
        self.audit_key(AuditKind::KeyCreated, &key.record);
        Ok(key)
    }

    /// The tenant's API keys, revoked ones included, oldest first.
    ///
    /// # Errors
    /// [`Error::TenantNotFound`], [`Error::Internal`].
    pub async fn api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKeyRecord>> {
        self.tenant(tenant).await?;
        Ok(self.0.store.api_keys(tenant).await?)
    }

    /// Revokes the tenant's key `id`. Every instance refuses it from the next request on
    /// (each request checks the key's row). Returns false when the tenant has no such
    /// unrevoked key (a key of another tenant included).
    ///
    /// # Errors
    /// [`Error::Internal`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant, key = %id))]
    pub async fn revoke_api_key(&self, tenant: TenantId, id: ApiKeyId) -> Result<bool> {
        let revoked = self.0.store.revoke_api_key(tenant, id, self.now()).await?;
        if revoked {
            tracing::info!("API key revoked");
            self.audit(AuditKind::KeyRevoked, tenant, None, None, Some(format!("api_key {id}")));
        }
        Ok(revoked)
    }

    /// Checks an API key presented for `tenant` (the `key` header of `projects`): it must be
    /// a key of exactly this tenant and not revoked; the stored hash is compared with the
    /// presented key's hash in constant time. Records the use (at most once a minute).
    ///
    /// Wrong keys are limited per client address (IPv6 per /64): 20, refilled over a minute;
    /// only failures count.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] for a missing, malformed, unknown or revoked key, or a key of
    /// another tenant (the same outcome for each), [`Error::RateLimited`], [`Error::Internal`].
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn authenticate_api_key(
        &self,
        tenant: TenantId,
        presented: Option<&str>,
        meta: &ClientMeta,
    ) -> Result<ApiKeyRecord> {
        let limits: Vec<(LimitKind, String)> =
            meta.ip.iter().map(|ip| (LimitKind::ApiKeyFailuresPerAddress, address_key(ip))).collect();
        self.guarded(&limits, |e| matches!(e, Error::InvalidToken), async {
            let presented = presented.and_then(|p| PresentedApiKey::parse(p).ok()).ok_or(Error::InvalidToken)?;
            let hash = self.0.api_keys.hash_presented(&presented);
            let record = self.0.store.api_key_by_hash(&hash).await?.ok_or(Error::InvalidToken)?;
            let genuine = self.0.api_keys.matches(&hash, &record.key_hash);
            if !genuine || record.tenant != tenant || record.revoked_at.is_some() {
                return Err(Error::InvalidToken);
            }
            let now = self.now();
            if record.last_used_at.is_none_or(|t| now - t >= KEY_TOUCH_INTERVAL) {
                self.0.store.touch_api_key(tenant, record.id, now).await?;
            }
            Ok(record)
        })
        .await
    }

    /// The tenant a `projects` URL names, opened with `presented` (a key of that tenant), and
    /// the key that opened it: what every account route of `projects` checks first. The URL's
    /// id is a project owner's (their tenant), or the id of a tenant the operator created
    /// (`latchkey tenant create`); the system tenants are never reachable this way. While an
    /// owner is disabled, no key opens their tenant.
    ///
    /// # Errors
    /// [`Error::TenantNotFound`] (no such owner or tenant), [`Error::InvalidToken`] (the owner
    /// is disabled), then as [`Auth::authenticate_api_key`].
    pub async fn open_project(
        &self,
        id: uuid::Uuid,
        presented: Option<&str>,
        meta: &ClientMeta,
    ) -> Result<(Tenant, ApiKeyRecord)> {
        let tenant = match self.0.store.tenant_of_owner(UserId(id)).await? {
            // A disabled owner's projects are suspended with the owner.
            Some(tenant) => match self.0.store.user_by_id(TenantId::PROJECT_OWNERS, UserId(id)).await? {
                Some(owner) if !owner.user.disabled => tenant,
                _ => return Err(Error::InvalidToken),
            },
            None => match self.0.store.tenant(TenantId(id)).await? {
                Some(tenant) if tenant.owner.is_none() && !tenant.id.is_system() => tenant,
                _ => return Err(Error::TenantNotFound),
            },
        };
        let key = self.authenticate_api_key(tenant.id, presented, meta).await?;
        Ok((tenant, key))
    }

    /// Like [`Auth::authenticate`], for a caller serving `tenant`: a token whose `tid` names
    /// another tenant is refused exactly like a bad token, before its session is looked up.
    ///
    /// # Errors
    /// [`Error::InvalidToken`], [`Error::TokenExpired`], [`Error::SessionRevoked`].
    #[tracing::instrument(skip_all, level = "debug", fields(tenant = %tenant))]
    pub async fn authenticate_in(&self, tenant: TenantId, token: &str, audiences: &[&str]) -> Result<Authenticated> {
        let claims = self.0.keys.verify(token, Expectation { typ: ACCESS_TOKEN_TYP, audiences }).await?;
        if TenantId::parse(&claims.tid).ok() != Some(tenant) {
            return Err(Error::InvalidToken);
        }
        let (user, session) = self.session_of(&claims).await?;
        Ok(Authenticated { user, session, claims })
    }

    /// Authenticates the project owner `owner` by an access token of the owners' tenant whose
    /// subject is `owner` (API key management of `projects`).
    ///
    /// # Errors
    /// [`Error::InvalidToken`] (also for a valid token of another owner or another tenant),
    /// [`Error::TokenExpired`], [`Error::SessionRevoked`].
    pub async fn authenticate_owner(&self, owner: UserId, token: &str, audiences: &[&str]) -> Result<Authenticated> {
        let authenticated = self.authenticate_in(TenantId::PROJECT_OWNERS, token, audiences).await?;
        if authenticated.user.id != owner {
            return Err(Error::InvalidToken);
        }
        Ok(authenticated)
    }

    /// One page of the tenant's users, oldest first: at most `limit` (1 to [`MAX_PAGE`])
    /// after skipping `offset`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `limit`), [`Error::TenantNotFound`], [`Error::Internal`].
    pub async fn users_page(&self, tenant: TenantId, limit: u32, offset: u64) -> Result<Vec<User>> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::invalid("limit", format!("limit must be between 1 and {MAX_PAGE}")));
        }
        self.tenant(tenant).await?;
        Ok(self.0.store.list_users(tenant, limit, offset).await?.into_iter().map(|r| r.user).collect())
    }
}
