//! Users brought from another service (`latchkey import`): one row becomes one user, with the
//! password hash the other service stored, checked by [`crate::password::check_importable`];
//! the first successful sign-in replaces that hash with Latchkey's argon2id.

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Auth;
use crate::error::{Error, Result};
use crate::identity::{Email, ExternalId, Profile, TenantId, User, UserId, Username};
use crate::password::check_importable;
use crate::ports::{StoreError, UniqueKey, UserRecord};

/// One user of the import format (README, "Migrating"): a JSON Lines object or a CSV record
/// with these names. Unknown fields are refused, so that a misspelt column is not silently lost.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRow {
    /// The user's id, kept when it is a UUID (so that existing tokens' `sub` stays meaningful);
    /// a new random id otherwise.
    #[serde(default)]
    pub id: Option<String>,
    /// Email address (required).
    pub email: String,
    /// Whether the address was verified by the other service (default false).
    #[serde(default)]
    pub email_verified: bool,
    /// The stored hash, in a format [`check_importable`] accepts; none: the user signs in only
    /// after a password reset.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Username, for users who sign in by username.
    #[serde(default)]
    pub username: Option<String>,
    /// External id (`employee_id`).
    #[serde(default)]
    pub external_id: Option<String>,
    /// Profile: first name.
    #[serde(default)]
    pub given_name: Option<String>,
    /// Profile: last name.
    #[serde(default)]
    pub family_name: Option<String>,
    /// Profile: phone number, as given.
    #[serde(default)]
    pub phone_number: Option<String>,
    /// Profile: one formatted address.
    #[serde(default)]
    pub address: Option<String>,
    /// Profile: picture URL.
    #[serde(default)]
    pub picture: Option<String>,
    /// When the user was created, RFC 3339 (default: now). Kept for verified users only: an
    /// unverified user is created now, since the purge of never-verified accounts counts from
    /// creation and would otherwise delete an old unverified user at its next run.
    #[serde(default)]
    pub created_at: Option<String>,
}

/// What importing one row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// A new user (or, in a dry run, one that would be created).
    Created(UserId),
    /// The user is already there as this row describes it (same email, and same id and hash):
    /// nothing changed, so importing a file twice changes nothing the second time.
    Unchanged(UserId),
}

/// Why a row was not imported, as one line for the report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RowRejected(pub String);

/// A non-empty value, trimmed; empty strings count as absent (CSV cells).
fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl ImportRow {
    /// Turns the row into the user record it describes, checking every field.
    ///
    /// # Errors
    /// [`RowRejected`] naming the field: invalid email, username, external id, profile
    /// attribute or `created_at`, or a password hash that is unknown, malformed or too costly.
    pub fn to_record(&self, tenant: TenantId, now: OffsetDateTime) -> std::result::Result<UserRecord, RowRejected> {
        let reject = |field: &str, why: &dyn std::fmt::Display| RowRejected(format!("{field}: {why}"));
        let email = Email::parse(self.email.trim()).map_err(|e| reject("email", &e.0))?;
        let username =
            present(&self.username).map(Username::parse).transpose().map_err(|e| reject("username", &e.0))?;
        let external_id =
            present(&self.external_id).map(ExternalId::parse).transpose().map_err(|e| reject("external_id", &e.0))?;
        let attribute = |name: &str, value: &Option<String>| {
            present(value).map(Profile::parse_attribute).transpose().map_err(|e| reject(name, &e.0))
        };
        let profile = Profile {
            given_name: attribute("given_name", &self.given_name)?,
            family_name: attribute("family_name", &self.family_name)?,
            phone_number: attribute("phone_number", &self.phone_number)?,
            address: attribute("address", &self.address)?,
            picture: attribute("picture", &self.picture)?,
        };
        let created_at = present(&self.created_at)
            .map(|t| OffsetDateTime::parse(t, &Rfc3339))
            .transpose()
            .map_err(|e| reject("created_at", &e))?
            .filter(|_| self.email_verified)
            .unwrap_or(now);
        let password_hash = present(&self.password_hash).map(str::to_owned);
        if let Some(hash) = &password_hash {
            check_importable(hash).map_err(|e| reject("password_hash", &e))?;
        }
        let id = present(&self.id).and_then(|id| UserId::parse(id).ok()).unwrap_or_else(UserId::random);
        let user = User {
            id,
            tenant,
            email: Some(email),
            email_verified: self.email_verified,
            username,
            external_id,
            profile,
            has_password: password_hash.is_some(),
            disabled: false,
            created_at,
            updated_at: now,
        };
        Ok(UserRecord { user, password_hash })
    }
}

impl Auth {
    /// Imports one user into `tenant` (or, when `dry_run`, only checks that it would be):
    /// the row is checked ([`ImportRow::to_record`]), then stored unless a user with its email,
    /// id, username or external id exists. An existing user never changes: a row describing it
    /// exactly (same email, id when the row has one, and hash) is [`Imported::Unchanged`], any
    /// other clash is rejected.
    ///
    /// # Errors
    /// [`RowRejected`] with the reason (invalid field, taken email, username, external id or
    /// id); [`Error`] when the database fails, which should stop the import.
    pub async fn import_user(
        &self,
        tenant: TenantId,
        row: &ImportRow,
        dry_run: bool,
    ) -> Result<std::result::Result<Imported, RowRejected>> {
        let record = match row.to_record(tenant, self.now()) {
            Ok(record) => record,
            Err(rejected) => return Ok(Err(rejected)),
        };
        let Some(email) = record.user.email.as_ref() else {
            return Ok(Err(RowRejected("email: missing".into())));
        };
        if let Some(existing) = self.0.store.user_by_email(tenant, email).await? {
            let same_id = present(&row.id).is_none_or(|_| existing.user.id == record.user.id);
            if same_id && existing.password_hash == record.password_hash {
                return Ok(Ok(Imported::Unchanged(existing.user.id)));
            }
            return Ok(Err(RowRejected("email: a user with this email already exists".into())));
        }
        if self.0.store.user_by_id(tenant, record.user.id).await?.is_some() {
            return Ok(Err(RowRejected("id: a user with this id already exists".into())));
        }
        if dry_run {
            if let Some(name) = &record.user.username
                && self.0.store.user_by_username(tenant, name.as_str()).await?.is_some()
            {
                return Ok(Err(RowRejected("username: already taken".into())));
            }
            return Ok(Ok(Imported::Created(record.user.id)));
        }
        let taken = |what: &str| Ok(Err(RowRejected(format!("{what}: already taken"))));
        match self.0.store.insert_user(&record).await {
            Ok(()) => Ok(Ok(Imported::Created(record.user.id))),
            Err(StoreError::Conflict(UniqueKey::Email)) => taken("email"),
            Err(StoreError::Conflict(UniqueKey::Username)) => taken("username"),
            Err(StoreError::Conflict(UniqueKey::ExternalId)) => taken("external_id"),
            // The id, used by a user of another tenant.
            Err(StoreError::Conflict(UniqueKey::Other)) => taken("id"),
            Err(e) => Err(Error::from(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(json: &str) -> ImportRow {
        serde_json::from_str(json).expect("row")
    }

    #[test]
    fn rows_become_records_with_their_id_dates_and_hash() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let r = row(r#"{"id": "0190a0c1-0000-7000-8000-00000000beef", "email": " Ada@Example.com ",
            "email_verified": true, "password_hash": "$2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie",
            "username": "", "given_name": "Ada", "created_at": "2020-01-02T03:04:05Z"}"#)
        .to_record(TenantId::DEFAULT, now)
        .expect("valid");
        assert_eq!(r.user.id.to_string(), "0190a0c1-0000-7000-8000-00000000beef");
        assert!(r.user.email_verified && r.user.has_password && r.user.username.is_none());
        assert_eq!(r.user.profile.given_name.as_deref(), Some("Ada"));
        assert_eq!(r.user.created_at.year(), 2020);

        // Not a UUID: a new id. Unverified: created now (see `created_at`). No hash: none.
        let r = row(r#"{"id": "auth0|123", "email": "b@example.com", "created_at": "2020-01-02T03:04:05Z"}"#)
            .to_record(TenantId::DEFAULT, now)
            .expect("valid");
        assert_ne!(r.user.id.to_string(), "auth0|123");
        assert_eq!(r.user.created_at, now);
        assert!(!r.user.has_password && r.password_hash.is_none());
    }

    #[test]
    fn bad_fields_are_named() {
        let now = OffsetDateTime::UNIX_EPOCH;
        for (json, field) in [
            (r#"{"email": "nope"}"#, "email:"),
            (r#"{"email": "a@example.com", "password_hash": "plain"}"#, "password_hash: unknown"),
            (
                r#"{"email": "a@example.com", "password_hash": "$2b$20$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie"}"#,
                "password_hash: bcrypt hash cost too high",
            ),
            (r#"{"email": "a@example.com", "created_at": "yesterday"}"#, "created_at:"),
            (r#"{"email": "a@example.com", "username": "a b"}"#, "username:"),
        ] {
            let err = row(json).to_record(TenantId::DEFAULT, now).expect_err(json);
            assert!(err.0.starts_with(field), "{json}: {err}");
        }
        assert!(serde_json::from_str::<ImportRow>(r#"{"email": "a@example.com", "emial": 1}"#).is_err());
    }
}
