//! Users brought from another service (`latchkey import`): one row becomes one user, with the
//! password hash the other service stored, checked by [`crate::password::check_importable`];
//! the first successful sign-in replaces that hash with Latchkey's argon2id.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Auth;
use crate::error::{Error, Result};
use crate::identity::{Email, ExternalId, Profile, TenantId, User, UserId, Username};
use crate::password::check_importable;
use crate::ports::{BATCH_LIMIT, StoreError, UniqueKey, UserRecord};

/// One user of the import format (README, "Migrating"): a JSON Lines object or a CSV record
/// with these names. Unknown fields are refused, so that a misspelt column is not silently lost.
///
/// `latchkey export` writes the same rows ([`Auth::export_page`]), absent fields left out.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRow {
    /// The user's id, kept when it is a UUID (so that existing tokens' `sub` stays meaningful);
    /// a new random id otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Email address; may be absent for a user who signs in by username only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the address was verified by the other service (default false).
    #[serde(default)]
    pub email_verified: bool,
    /// The stored hash, in a format [`check_importable`] accepts; none: the user signs in only
    /// after a password reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// Username, for users who sign in by username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// External id (`employee_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Profile: first name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// Profile: last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// Profile: phone number, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// Profile: one formatted address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Profile: picture URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
    /// When the user was created, RFC 3339 (default: now). Kept for verified users only: an
    /// unverified user is created now, since the purge of never-verified accounts counts from
    /// creation and would otherwise delete an old unverified user at its next run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Whether the account is disabled (default false), so that an export keeps it so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

/// What importing one row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// A new user (or, in a dry run, one that would be created).
    Created(UserId),
    /// The user is already there (same email, and the row's id, or without an id the same
    /// hash): nothing changed, so importing a file twice changes nothing the second time, even
    /// after some of its users signed in.
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
        let email = present(&self.email).map(Email::parse).transpose().map_err(|e| reject("email", &e.0))?;
        let username =
            present(&self.username).map(Username::parse).transpose().map_err(|e| reject("username", &e.0))?;
        if email.is_none() && username.is_none() {
            return Err(RowRejected("email: required (or a username)".into()));
        }
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
            email,
            email_verified: self.email_verified,
            username,
            external_id,
            profile,
            has_password: password_hash.is_some(),
            disabled: self.disabled,
            created_at,
            updated_at: now,
        };
        Ok(UserRecord { user, password_hash })
    }
}

impl Auth {
    /// Imports a batch of rows (at most [`BATCH_LIMIT`]) into `tenant`, or, when `dry_run`,
    /// only checks that they would be; one outcome per row, in order. Each row is checked
    /// ([`ImportRow::to_record`]), then stored unless a user with its email, id, username or
    /// external id exists, counting the rows before it in the batch as existing: the outcome
    /// is the one importing the rows one by one would give. An existing user never changes: a
    /// row naming it (same email, or without an email the same username, and, when the row
    /// has an id, that id; without an id, the same hash) is [`Imported::Unchanged`], any other
    /// clash is rejected.
    ///
    /// The whole batch costs three reads and one multi-row insert, whatever its size; a row
    /// that still clashes at insert time (a user created meanwhile) is retried alone for its
    /// reason.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for more than [`BATCH_LIMIT`] rows; [`Error::Internal`] when
    /// the database fails, which should stop the import (earlier batches stay). Rejected rows
    /// are outcomes, not errors: [`RowRejected`] with the reason (invalid field, taken email,
    /// username, external id or id).
    pub async fn import_batch(
        &self,
        tenant: TenantId,
        rows: &[ImportRow],
        dry_run: bool,
    ) -> Result<Vec<std::result::Result<Imported, RowRejected>>> {
        if rows.len() > BATCH_LIMIT {
            return Err(Error::invalid("rows", format!("at most {BATCH_LIMIT} rows per batch")));
        }
        let now = self.now();
        let records: Vec<_> = rows.iter().map(|row| row.to_record(tenant, now)).collect();
        let valid = || records.iter().filter_map(|r| r.as_ref().ok());
        let emails: Vec<String> = valid().filter_map(|r| r.user.email.as_ref().map(Email::normalized)).collect();
        let usernames: Vec<String> =
            valid().filter_map(|r| r.user.username.as_ref().map(|u| u.as_str().to_owned())).collect();
        let external_ids: Vec<String> =
            valid().filter_map(|r| r.user.external_id.as_ref().map(|x| x.as_str().to_owned())).collect();
        let ids: Vec<UserId> = valid().map(|r| r.user.id).collect();

        // What exists, as the rows before each one will have left it.
        let mut taken = Taken::default();
        for existing in self.0.store.users_matching(tenant, &emails, &usernames, &external_ids).await? {
            taken.add(&existing);
        }
        taken.ids.extend(self.0.store.existing_user_ids(&ids).await?);

        let mut outcomes = Vec::with_capacity(rows.len());
        let mut to_insert = Vec::new();
        for (row, record) in rows.iter().zip(records) {
            let record = match record {
                Ok(record) => record,
                Err(rejected) => {
                    outcomes.push(Err(rejected));
                    continue;
                }
            };
            let outcome = taken.check(row, &record);
            if matches!(outcome, Ok(Imported::Created(_))) {
                taken.add(&record);
                if !dry_run {
                    to_insert.push(record);
                }
            }
            outcomes.push(outcome);
        }
        if to_insert.is_empty() {
            return Ok(outcomes);
        }

        let inserted: HashSet<UserId> = self.0.store.insert_users(&to_insert).await?.into_iter().collect();
        for record in to_insert.iter().filter(|r| !inserted.contains(&r.user.id)) {
            // Created by someone else since the reads: this row alone, for its reason.
            let reason = match self.0.store.insert_user(record).await {
                Ok(()) => continue,
                Err(StoreError::Conflict(UniqueKey::Email)) => "email",
                Err(StoreError::Conflict(UniqueKey::Username)) => "username",
                Err(StoreError::Conflict(UniqueKey::ExternalId)) => "external_id",
                Err(StoreError::Conflict(UniqueKey::Other)) => "id",
                Err(e) => return Err(Error::from(e)),
            };
            let position = outcomes
                .iter()
                .position(|o| matches!(o, Ok(Imported::Created(id)) if *id == record.user.id))
                .ok_or_else(|| Error::internal("an inserted row without its outcome"))?;
            outcomes[position] = Err(RowRejected(format!("{reason}: already taken")));
        }
        Ok(outcomes)
    }
}

impl Auth {
    /// Tells the store that many users were just imported, so that its query planner's
    /// statistics follow (`latchkey import` calls it each time the users it created double):
    /// on PostgreSQL, a batch's lookups planned on the statistics of a much smaller table
    /// filter every user of the tenant instead of probing the unique indexes.
    ///
    /// # Errors
    /// [`Error::Internal`] when the database fails.
    pub async fn refresh_user_statistics(&self) -> Result<()> {
        Ok(self.0.store.refresh_user_statistics().await?)
    }
}

/// The emails, usernames, external ids and ids already taken, by stored users and by the rows
/// of the batch accepted so far.
#[derive(Default)]
struct Taken {
    /// Normalised email → the user's id and hash.
    emails: HashMap<String, (UserId, Option<String>)>,
    /// Username → the user's id and hash.
    usernames: HashMap<String, (UserId, Option<String>)>,
    external_ids: HashSet<String>,
    ids: HashSet<UserId>,
}

impl Taken {
    fn add(&mut self, record: &UserRecord) {
        let user = &record.user;
        let entry = (user.id, record.password_hash.clone());
        if let Some(email) = &user.email {
            self.emails.insert(email.normalized(), entry.clone());
        }
        if let Some(name) = &user.username {
            self.usernames.insert(name.as_str().to_owned(), entry);
        }
        if let Some(external) = &user.external_id {
            self.external_ids.insert(external.as_str().to_owned());
        }
        self.ids.insert(user.id);
    }

    /// What importing `record` (read from `row`) does, given what is taken.
    fn check(&self, row: &ImportRow, record: &UserRecord) -> std::result::Result<Imported, RowRejected> {
        let user = &record.user;
        let (existing, key) = match (&user.email, &user.username) {
            (Some(email), _) => (self.emails.get(&email.normalized()), "email"),
            (None, Some(name)) => (self.usernames.get(name.as_str()), "username"),
            (None, None) => (None, "email"),
        };
        if let Some((id, hash)) = existing {
            // The same account: the row names its id, or (without an id) its very hash. A user
            // who has signed in since holds an argon2id hash, so the id is what tells an
            // earlier import (or an export) of them.
            let same = match present(&row.id) {
                Some(_) => *id == user.id,
                None => *hash == record.password_hash,
            };
            return if same {
                Ok(Imported::Unchanged(*id))
            } else {
                Err(RowRejected(format!("{key}: a user with this {key} already exists")))
            };
        }
        if self.ids.contains(&user.id) {
            return Err(RowRejected("id: a user with this id already exists".into()));
        }
        if let (Some(_), Some(name)) = (&user.email, &user.username)
            && self.usernames.contains_key(name.as_str())
        {
            return Err(RowRejected("username: already taken".into()));
        }
        if user.external_id.as_ref().is_some_and(|x| self.external_ids.contains(x.as_str())) {
            return Err(RowRejected("external_id: already taken".into()));
        }
        Ok(Imported::Created(user.id))
    }
}

impl ImportRow {
    /// The row describing a stored user: the password hash exactly as stored (Latchkey's
    /// argon2id PHC string, or the imported hash of a user who has not signed in since), so
    /// that importing it elsewhere gives a user who signs in with the same password.
    pub fn from_record(record: &UserRecord) -> Self {
        let user = &record.user;
        Self {
            id: Some(user.id.to_string()),
            email: user.email.as_ref().map(|e| e.as_str().to_owned()),
            email_verified: user.email_verified,
            password_hash: record.password_hash.clone(),
            username: user.username.as_ref().map(|u| u.as_str().to_owned()),
            external_id: user.external_id.as_ref().map(|x| x.as_str().to_owned()),
            given_name: user.profile.given_name.clone(),
            family_name: user.profile.family_name.clone(),
            phone_number: user.profile.phone_number.clone(),
            address: user.profile.address.clone(),
            picture: user.profile.picture.clone(),
            created_at: user.created_at.format(&Rfc3339).ok(),
            disabled: user.disabled,
        }
    }
}

/// Where the next page of an export starts: after this user (creation time, then id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportCursor(OffsetDateTime, UserId);

impl Auth {
    /// One page of `tenant`'s users as import rows (`latchkey export`), oldest first (then by
    /// id): at most `limit` (1 to 1000) after `after` (from the first when `None`), with the
    /// cursor of the next page (`None` after the last). Keyset paging: every page costs the
    /// same however many users come before it.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a limit out of range, [`Error::TenantNotFound`],
    /// [`Error::Internal`] when the database fails.
    pub async fn export_page(
        &self,
        tenant: TenantId,
        after: Option<ExportCursor>,
        limit: u32,
    ) -> Result<(Vec<ImportRow>, Option<ExportCursor>)> {
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid("limit", "limit must be between 1 and 1000"));
        }
        if after.is_none() {
            self.tenant(tenant).await?;
        }
        let records = self.0.store.users_after(tenant, after.map(|ExportCursor(t, id)| (t, id)), limit).await?;
        let next = match records.last() {
            Some(last) if records.len() == limit as usize => Some(ExportCursor(last.user.created_at, last.user.id)),
            _ => None,
        };
        Ok((records.iter().map(ImportRow::from_record).collect(), next))
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

    #[test]
    fn exported_rows_read_back_as_the_same_user() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let original = row(r#"{"username": "only-a-name", "email_verified": true, "disabled": true,
            "password_hash": "$2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie",
            "picture": "https://example.com/p.png", "created_at": "2021-05-06T07:08:09Z"}"#)
        .to_record(TenantId::DEFAULT, now)
        .expect("a username is enough");
        let line = serde_json::to_string(&ImportRow::from_record(&original)).expect("JSON");
        assert!(!line.contains("null") && !line.contains("\"email\""), "absent fields are left out: {line}");
        let again = row(&line).to_record(TenantId::DEFAULT, now).expect("reads back");
        assert_eq!(again.user.id, original.user.id);
        assert_eq!(again.password_hash, original.password_hash);
        assert_eq!(again.user.created_at, original.user.created_at);
        assert!(again.user.disabled && again.user.email.is_none());
        assert_eq!(again.user.profile, original.user.profile);
        assert!(row("{}").to_record(TenantId::DEFAULT, now).is_err(), "an email or a username is required");
    }
}
