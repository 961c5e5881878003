//! `AWSCognitoIdentityService.GetId` and `GetCredentialsForIdentity` (Amazon Cognito
//! identity pools API reference), as API.md `cognito` "Identity ids" describes them: enough for
//! Amplify's `fetchAuthSession` to complete.
//!
//! The identity id is `<region>:<uuid>`, stable per user ([`latchkey_core::Auth::identity_id`]),
//! the seed's `cogId`. Only authenticated identities exist: `Logins` must hold a Latchkey ID
//! token of a live session, under any provider name (Amplify names it by the token's issuer
//! without scheme; older clients `cognito-idp.<region>.amazonaws.com/<pool id>`).
//!
//! The credentials **grant nothing in AWS**: the access key id and secret key are random, and
//! the session token is a Latchkey JWT for the identity (verifiable through the JWKS, audience
//! `cognito-identity`, which no surface accepts as an access token).

use std::collections::BTreeMap;

use axum::extract::Request;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use latchkey_core::Authenticated;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};

use super::wire::{CognitoError, Exception, Output};
use super::{CognitoState, IDENTITY_AUDIENCE, claims, read};

/// Cognito's message for a request without `Logins` (no guest identities here).
const UNAUTHENTICATED: &str = "Unauthenticated access is not supported for this identity pool.";

/// Runs the identity-pool operation `operation`.
///
/// # Errors
/// `UnknownOperationException` for other operations; each operation's errors otherwise.
pub(super) async fn call(state: &CognitoState, operation: &str, request: Request) -> Result<Output, CognitoError> {
    match operation {
        "GetId" => get_id(state, read(request).await?).await,
        "GetCredentialsForIdentity" => get_credentials_for_identity(state, read(request).await?).await,
        _ => {
            Err(CognitoError::new(Exception::UnknownOperation, "The operation named by X-Amz-Target is not supported."))
        }
    }
}

/// The user behind `Logins`: exactly one ID token, of one of the app clients, of a live
/// session.
///
/// # Errors
/// `NotAuthorizedException` without logins or with a token that does not verify;
/// `InvalidParameterException` for several logins or a login that is not a string.
async fn login(state: &CognitoState, logins: Option<BTreeMap<String, Value>>) -> Result<Authenticated, CognitoError> {
    let logins = logins.unwrap_or_default();
    let mut tokens = logins.values();
    let token = match (tokens.next(), tokens.next()) {
        (None, _) => return Err(CognitoError::new(Exception::NotAuthorized, UNAUTHENTICATED)),
        (Some(_), Some(_)) => return Err(CognitoError::invalid_parameter("Logins must hold exactly one ID token.")),
        (Some(token), None) => token,
    };
    let token = token.as_str().ok_or_else(|| CognitoError::invalid_parameter("Logins values must be strings."))?;
    Ok(state.auth.verify_id_token(token, &state.audiences()).await?)
}

/// `GetId` input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetIdRequest {
    identity_pool_id: Option<String>,
    logins: Option<BTreeMap<String, Value>>,
}

/// `GetId`: `{"IdentityId": "<region>:<uuid>"}` for the user of the ID token in `Logins`.
async fn get_id(state: &CognitoState, req: GetIdRequest) -> Result<Output, CognitoError> {
    let pool = req.identity_pool_id.ok_or_else(|| CognitoError::missing("identityPoolId"))?;
    if pool.is_empty() || pool.len() > 55 {
        return Err(CognitoError::invalid_parameter("IdentityPoolId must be 1 to 55 characters."));
    }
    let caller = login(state, req.logins).await?;
    Ok(Output(json!({ "IdentityId": state.auth.identity_id(&caller.user) })))
}

/// `GetCredentialsForIdentity` input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetCredentialsForIdentityRequest {
    identity_id: Option<String>,
    logins: Option<BTreeMap<String, Value>>,
}

/// Random bytes, for the access key id and secret key.
fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// `GetCredentialsForIdentity`: `{IdentityId, Credentials: {AccessKeyId, SecretKey,
/// SessionToken, Expiration}}` (`Expiration` in seconds since the epoch, as the AWS JSON
/// protocol encodes timestamps) for the identity of the ID token in `Logins`. The identity id
/// must be that user's.
async fn get_credentials_for_identity(
    state: &CognitoState,
    req: GetCredentialsForIdentityRequest,
) -> Result<Output, CognitoError> {
    let identity_id = req.identity_id.ok_or_else(|| CognitoError::missing("identityId"))?;
    let caller = login(state, req.logins).await?;
    let own = state.auth.identity_id(&caller.user);
    if identity_id != own {
        return Err(CognitoError::new(
            Exception::NotAuthorized,
            "Invalid login token. The identity id is not the login's.",
        ));
    }
    let extra = claims([("token_use", json!("identity")), ("identity_id", json!(own))]);
    let (session_token, lifetime) =
        state.auth.access_token(&caller.session, &caller.user, IDENTITY_AUDIENCE, extra).await?;
    let expiration = state.auth.now().unix_timestamp().saturating_add(i64::try_from(lifetime).unwrap_or(0));
    // AWS access key ids are 20 upper-case characters; ASIA marks temporary ones.
    let access_key_id: String = format!("ASIA{}", base32(&random::<10>()));
    Ok(Output(json!({
        "IdentityId": own,
        "Credentials": {
            "AccessKeyId": access_key_id,
            "SecretKey": STANDARD.encode(random::<30>()),
            "SessionToken": session_token,
            "Expiration": expiration,
        },
    })))
}

/// RFC 4648 base32 (upper case, no padding) of `bytes`: 16 characters for 10 bytes.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_key_ids_look_like_aws_ones() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        let id = format!("ASIA{}", base32(&random::<10>()));
        assert_eq!(id.len(), 20);
        assert!(id.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()), "{id}");
    }
}
