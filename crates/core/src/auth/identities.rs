//! Cognito-style identity ids (`AWSCognitoIdentityService.GetId`, the seed's `cogId`):
//! `<region>:<uuid>`, stable per user and derived from the server secret, so nothing is stored
//! and nobody without the secret can compute another user's id from their user id.

use super::Auth;
use crate::identity::User;

impl Auth {
    /// The identity id of `user`: `<region>:<uuid>` (API.md, `cognito`, "Identity ids"), where
    /// the region is [`Settings::region`](super::Settings::region) and the UUID (version 4
    /// layout) is the first 16 bytes of HMAC-SHA256(secret-derived key, tenant ‖ user id).
    /// The same user always gets the same id; ids of different users differ.
    pub fn identity_id(&self, user: &User) -> String {
        let mac = self.0.identities.mac(&[user.tenant.to_string().as_bytes(), user.id.to_string().as_bytes()]);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&mac[..16]);
        let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
        format!("{}:{}", self.0.settings.region, uuid.hyphenated())
    }
}
