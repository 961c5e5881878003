//! `AWSCognitoIdentityProviderService.<Op>`: the user-pool operations of API.md `cognito`,
//! each with the request and response members of the Amazon Cognito user pools API
//! reference (optional members Latchkey has no use for, such as `SecretHash`,
//! `ClientMetadata`, `UserContextData` or `AnalyticsMetadata`, are accepted and ignored;
//! clients send `null` for some).
//!
//! Usernames are email addresses. Operations that mail a code answer `CodeDeliveryDetails`
//! with the address masked as Cognito masks it (`a***@e***`). Request types hold passwords and
//! tokens, so none of them implements `Debug`.

use std::collections::BTreeMap;

use axum::extract::Request;
use latchkey_core::code::OneTimeCode;
use latchkey_core::identity::{Email, Login, NewPassword, PresentedPassword, Profile, User};
use latchkey_core::session::{ClientMeta, Session};
use latchkey_core::token::RefreshToken;
use latchkey_core::{Authenticated, NewUser, SrpResponse};
use serde::Deserialize;
use serde_json::{Value, json};

use super::wire::{CODE_MISMATCH, CognitoError, Exception, Output};
use super::{CognitoState, TENANT, claims, cognito_username, read};

/// Runs the user-pool operation `operation` on the request body.
///
/// # Errors
/// `UnknownOperationException` for operations this surface does not implement; each
/// operation's errors otherwise.
pub(super) async fn call(
    state: &CognitoState,
    meta: &ClientMeta,
    operation: &str,
    request: Request,
) -> Result<Output, CognitoError> {
    match operation {
        "SignUp" => sign_up(state, meta, read(request).await?).await,
        "ConfirmSignUp" => confirm_sign_up(state, meta, read(request).await?).await,
        "ResendConfirmationCode" => resend_confirmation_code(state, read(request).await?).await,
        "InitiateAuth" => initiate_auth(state, meta, read(request).await?).await,
        "RespondToAuthChallenge" => respond_to_auth_challenge(state, meta, read(request).await?).await,
        "GetTokensFromRefreshToken" => get_tokens_from_refresh_token(state, read(request).await?).await,
        "GetUser" => get_user(state, read(request).await?).await,
        "GlobalSignOut" => global_sign_out(state, read(request).await?).await,
        "RevokeToken" => revoke_token(state, read(request).await?).await,
        "ForgotPassword" => forgot_password(state, read(request).await?).await,
        "ConfirmForgotPassword" => confirm_forgot_password(state, meta, read(request).await?).await,
        "ChangePassword" => change_password(state, read(request).await?).await,
        _ => {
            Err(CognitoError::new(Exception::UnknownOperation, "The operation named by X-Amz-Target is not supported."))
        }
    }
}

/// A map of string parameters (`AuthParameters`, `ChallengeResponses`): values other than
/// strings (clients send `null` for an absent `DEVICE_KEY`) count as absent.
type Parameters = BTreeMap<String, Value>;

/// Parameter `name` of `params`, if it is a string.
fn parameter<'a>(params: &'a Parameters, name: &str) -> Option<&'a str> {
    params.get(name).and_then(Value::as_str)
}

/// A required member.
///
/// # Errors
/// `InvalidParameterException` naming `member` when it is absent or `null`.
fn required<T>(value: Option<T>, member: &str) -> Result<T, CognitoError> {
    value.ok_or_else(|| CognitoError::missing(member))
}

/// A username that must be an email address (sign-up).
///
/// # Errors
/// `InvalidParameterException` "Username should be an email." otherwise.
fn email_username(username: &str) -> Result<Email, CognitoError> {
    Email::parse(username).map_err(|_| CognitoError::invalid_parameter("Username should be an email."))
}

/// A new password, checked by the password policy.
///
/// # Errors
/// `InvalidPasswordException` when the policy refuses it.
fn new_password(state: &CognitoState, raw: &str) -> Result<NewPassword, CognitoError> {
    state.auth.settings().password_policy.parse(raw).map_err(|e| {
        CognitoError::new(Exception::InvalidPassword, format!("Password did not conform with policy: password {e}"))
    })
}

/// A presented password (sign-in, change).
///
/// # Errors
/// `InvalidParameterException` when it is longer than any password can be.
fn presented_password(raw: &str, member: &str) -> Result<PresentedPassword, CognitoError> {
    PresentedPassword::parse(raw).map_err(|e| CognitoError::invalid_parameter(format!("{member} {e}")))
}

/// A confirmation code: six digits. Anything else cannot be the code: it is a
/// `CodeMismatchException` like a wrong code, without counting as a guess.
fn confirmation_code(raw: &str) -> Result<OneTimeCode, CognitoError> {
    OneTimeCode::parse(raw.trim()).map_err(|_| CognitoError::new(Exception::CodeMismatch, CODE_MISMATCH))
}

/// `Destination` of `CodeDeliveryDetails`: the address as Cognito masks it, the first
/// character of the local part and of the domain, each followed by `***` (`a***@e***`).
fn masked_destination(email: &Email) -> String {
    let (local, domain) = email.as_str().split_once('@').unwrap_or((email.as_str(), ""));
    let first = |s: &str| s.chars().next().map(String::from).unwrap_or_default();
    format!("{}***@{}***", first(local), first(domain))
}

/// `CodeDeliveryDetails` for a code mailed to `email`.
fn code_delivery(email: &Email) -> Value {
    json!({ "AttributeName": "email", "DeliveryMedium": "EMAIL", "Destination": masked_destination(email) })
}

/// The user attributes Latchkey stores, by their Cognito (OpenID Connect) names.
const PROFILE_ATTRIBUTES: [&str; 5] = ["given_name", "family_name", "phone_number", "address", "picture"];

/// `{Name, Value}` of `UserAttributes`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AttributeType {
    name: String,
    value: Option<String>,
}

/// `SignUp` input (API reference: SignUp).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SignUpRequest {
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    user_attributes: Option<Vec<AttributeType>>,
}

/// The profile from `UserAttributes`; `email`, if given, must be the username.
///
/// # Errors
/// `InvalidParameterException` for an attribute the schema does not have, a bad value, or an
/// `email` other than the username.
fn profile_from(attributes: &[AttributeType], email: &Email) -> Result<Profile, CognitoError> {
    let mut profile = Profile::default();
    for attribute in attributes {
        let name = attribute.name.as_str();
        let value = attribute.value.as_deref().unwrap_or_default();
        if name == "email" {
            if Email::parse(value).map(|e| e.normalized()).ok() != Some(email.normalized()) {
                return Err(CognitoError::invalid_parameter("The email attribute must be the username."));
            }
            continue;
        }
        if !PROFILE_ATTRIBUTES.contains(&name) {
            let shown: String = name.chars().take(64).collect();
            return Err(CognitoError::invalid_parameter(format!(
                "Attributes did not conform to the schema: {shown}: Attribute does not exist in the schema."
            )));
        }
        let value = Profile::parse_attribute(value)
            .map_err(|e| CognitoError::invalid_parameter(format!("Invalid value for attribute {name}: {e}")))?;
        let slot = match name {
            "given_name" => &mut profile.given_name,
            "family_name" => &mut profile.family_name,
            "phone_number" => &mut profile.phone_number,
            "address" => &mut profile.address,
            _ => &mut profile.picture,
        };
        *slot = Some(value);
    }
    Ok(profile)
}

/// `SignUp`: creates an unconfirmed user and mails a confirmation code. Answers `UserSub`,
/// `UserConfirmed: false` and `CodeDeliveryDetails` (`UserConfirmed: true`, no delivery, when
/// the default tenant does not require verification). A confirmed address is
/// `UsernameExistsException`, as in Cognito; an account that was never confirmed is taken over
/// by the new sign-up (its earlier password stops working; see
/// [`latchkey_core::Auth::sign_up_reclaiming`]).
async fn sign_up(state: &CognitoState, meta: &ClientMeta, req: SignUpRequest) -> Result<Output, CognitoError> {
    state.client_id(req.client_id)?;
    let email = email_username(&required(req.username, "username")?)?;
    let password = new_password(state, &required(req.password, "password")?)?;
    let profile = profile_from(req.user_attributes.as_deref().unwrap_or_default(), &email)?;
    let new = NewUser { email: Some(email.clone()), password: Some(password), profile, ..NewUser::default() };
    let user = state.auth.sign_up_reclaiming(TENANT, new, meta).await?.user;
    let confirmed = user.email_verified || !state.auth.requires_verification(TENANT).await?;
    let mut output = json!({ "UserConfirmed": confirmed, "UserSub": user.id.to_string() });
    if !confirmed {
        output["CodeDeliveryDetails"] = code_delivery(&email);
    }
    Ok(Output(output))
}

/// `ConfirmSignUp` and `ConfirmForgotPassword` input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfirmRequest {
    client_id: Option<String>,
    username: Option<String>,
    confirmation_code: Option<String>,
    password: Option<String>,
}

/// `ConfirmSignUp`: confirms the user's email with the mailed code. Does not sign in.
async fn confirm_sign_up(state: &CognitoState, meta: &ClientMeta, req: ConfirmRequest) -> Result<Output, CognitoError> {
    state.client_id(req.client_id)?;
    let username = required(req.username, "username")?;
    let code = confirmation_code(&required(req.confirmation_code, "confirmationCode")?)?;
    // No account can have an address that does not parse: a wrong code, as for any unknown user.
    let email = Email::parse(&username).map_err(|_| CognitoError::new(Exception::CodeMismatch, CODE_MISMATCH))?;
    state.auth.verify_email(TENANT, &email, code, meta).await?;
    Ok(Output(json!({})))
}

/// `ResendConfirmationCode` and `ForgotPassword` input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UsernameRequest {
    client_id: Option<String>,
    username: Option<String>,
}

/// `ResendConfirmationCode`: mails a fresh code to an unconfirmed user (the old one stops
/// working). Answers `CodeDeliveryDetails` whether or not there is such a user.
async fn resend_confirmation_code(state: &CognitoState, req: UsernameRequest) -> Result<Output, CognitoError> {
    state.client_id(req.client_id)?;
    let email = email_username(&required(req.username, "username")?)?;
    state.auth.resend_verification_quietly(TENANT, &email).await?;
    Ok(Output(json!({ "CodeDeliveryDetails": code_delivery(&email) })))
}

/// `ForgotPassword`: mails a reset code. Answers `CodeDeliveryDetails` whether or not there
/// is such a user.
async fn forgot_password(state: &CognitoState, req: UsernameRequest) -> Result<Output, CognitoError> {
    state.client_id(req.client_id)?;
    let email = email_username(&required(req.username, "username")?)?;
    state.auth.request_password_reset(TENANT, &email).await?;
    Ok(Output(json!({ "CodeDeliveryDetails": code_delivery(&email) })))
}

/// `ConfirmForgotPassword`: sets the new password with the reset code; every session of the
/// user ends.
async fn confirm_forgot_password(
    state: &CognitoState,
    meta: &ClientMeta,
    req: ConfirmRequest,
) -> Result<Output, CognitoError> {
    state.client_id(req.client_id)?;
    let username = required(req.username, "username")?;
    let code = required(req.confirmation_code, "confirmationCode")?;
    let password = new_password(state, &required(req.password, "password")?)?;
    let code = confirmation_code(&code)?;
    let email = Email::parse(&username).map_err(|_| CognitoError::new(Exception::CodeMismatch, CODE_MISMATCH))?;
    state.auth.reset_password(TENANT, &email, code, &password, meta).await?;
    Ok(Output(json!({})))
}

/// `InitiateAuth` input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InitiateAuthRequest {
    client_id: Option<String>,
    auth_flow: Option<String>,
    auth_parameters: Option<Parameters>,
}

/// `InitiateAuth` with `USER_PASSWORD_AUTH` (tokens), `USER_SRP_AUTH` (the
/// `PASSWORD_VERIFIER` challenge) or `REFRESH_TOKEN_AUTH` / `REFRESH_TOKEN` (new tokens and
/// the rotated refresh token).
async fn initiate_auth(
    state: &CognitoState,
    meta: &ClientMeta,
    req: InitiateAuthRequest,
) -> Result<Output, CognitoError> {
    let client_id = state.client_id(req.client_id)?;
    let flow = required(req.auth_flow, "authFlow")?;
    let params = req.auth_parameters.unwrap_or_default();
    match flow.as_str() {
        "USER_PASSWORD_AUTH" => {
            let username = required(parameter(&params, "USERNAME"), "USERNAME")?;
            let password = presented_password(required(parameter(&params, "PASSWORD"), "PASSWORD")?, "PASSWORD")?;
            // No account has an address that does not parse.
            let email = Email::parse(username).map_err(|_| CognitoError::incorrect_credentials())?;
            let signed_in = state.auth.sign_in(TENANT, &Login::Email(email), &password, meta).await?;
            let refresh = state.auth.refresh_token(&signed_in.session).await?;
            authenticated(state, &signed_in.user, &signed_in.session, &client_id, &refresh).await
        }
        "USER_SRP_AUTH" => {
            srp_enabled(state)?;
            let username = required(parameter(&params, "USERNAME"), "USERNAME")?;
            let srp_a = required(parameter(&params, "SRP_A"), "SRP_A")?;
            let email = Email::parse(username).map_err(|_| CognitoError::incorrect_credentials())?;
            let challenge = state.auth.srp_challenge(TENANT, &email, srp_a, &client_id, meta).await?;
            Ok(Output(json!({
                "ChallengeName": "PASSWORD_VERIFIER",
                "ChallengeParameters": {
                    "SALT": challenge.salt,
                    "SRP_B": challenge.srp_b,
                    "SECRET_BLOCK": challenge.secret_block,
                    "USERNAME": username,
                    "USER_ID_FOR_SRP": challenge.user_id_for_srp,
                },
            })))
        }
        "REFRESH_TOKEN_AUTH" | "REFRESH_TOKEN" => {
            let token = required(parameter(&params, "REFRESH_TOKEN"), "REFRESH_TOKEN")?;
            refreshed(state, &client_id, token).await
        }
        other => {
            let shown: String = other.chars().take(64).collect();
            Err(CognitoError::invalid_parameter(format!(
                "Unsupported AuthFlow {shown}: use USER_SRP_AUTH, USER_PASSWORD_AUTH or REFRESH_TOKEN_AUTH."
            )))
        }
    }
}

/// Refuses the SRP flow when `LATCHKEY_SRP=off` (the core's setting: it then keeps no
/// verifiers either).
fn srp_enabled(state: &CognitoState) -> Result<(), CognitoError> {
    if state.auth.settings().srp {
        Ok(())
    } else {
        Err(CognitoError::invalid_parameter("USER_SRP_AUTH is not enabled for this client: use USER_PASSWORD_AUTH."))
    }
}

/// `RespondToAuthChallenge` input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RespondToAuthChallengeRequest {
    client_id: Option<String>,
    challenge_name: Option<String>,
    challenge_responses: Option<Parameters>,
}

/// `RespondToAuthChallenge` with `PASSWORD_VERIFIER`: checks the SRP proof and answers the
/// tokens. Never answers `NewDeviceMetadata` (the client would start device SRP).
async fn respond_to_auth_challenge(
    state: &CognitoState,
    meta: &ClientMeta,
    req: RespondToAuthChallengeRequest,
) -> Result<Output, CognitoError> {
    let client_id = state.client_id(req.client_id)?;
    let challenge = required(req.challenge_name, "challengeName")?;
    if challenge != "PASSWORD_VERIFIER" {
        return Err(CognitoError::invalid_parameter(
            "Unsupported ChallengeName: only PASSWORD_VERIFIER is answered here.",
        ));
    }
    srp_enabled(state)?;
    let responses = req.challenge_responses.unwrap_or_default();
    let get = |name: &'static str| required(parameter(&responses, name), name);
    let response = SrpResponse {
        user_id_for_srp: get("USERNAME")?,
        secret_block: get("PASSWORD_CLAIM_SECRET_BLOCK")?,
        timestamp: get("TIMESTAMP")?,
        signature: get("PASSWORD_CLAIM_SIGNATURE")?,
    };
    let signed_in = state.auth.srp_sign_in(TENANT, &response, &client_id, meta).await?;
    let refresh = state.auth.refresh_token(&signed_in.session).await?;
    authenticated(state, &signed_in.user, &signed_in.session, &client_id, &refresh).await
}

/// `GetTokensFromRefreshToken` input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetTokensFromRefreshTokenRequest {
    client_id: Option<String>,
    refresh_token: Option<String>,
}

/// `GetTokensFromRefreshToken` (what Amplify v6 refreshes with): new tokens and the rotated
/// refresh token.
async fn get_tokens_from_refresh_token(
    state: &CognitoState,
    req: GetTokensFromRefreshTokenRequest,
) -> Result<Output, CognitoError> {
    let client_id = state.client_id(req.client_id)?;
    let token = required(req.refresh_token, "refreshToken")?;
    refreshed(state, &client_id, &token).await
}

/// Rotates `token` (the old one stops working; see the core's rotation rules) and answers
/// tokens for its session.
async fn refreshed(state: &CognitoState, client_id: &str, token: &str) -> Result<Output, CognitoError> {
    let (user, session, successor) = state.auth.rotate_refresh_token(TENANT, &RefreshToken::from_client(token)).await?;
    authenticated(state, &user, &session, client_id, &successor).await
}

/// `AuthenticationResult` (with empty `ChallengeParameters`, as Cognito answers): an access
/// token and an ID token with Cognito's claims (API.md `cognito`), their lifetime in seconds,
/// and `refresh`.
async fn authenticated(
    state: &CognitoState,
    user: &User,
    session: &Session,
    client_id: &str,
    refresh: &RefreshToken,
) -> Result<Output, CognitoError> {
    let username = cognito_username(user);
    let auth_time = session.created_at.unix_timestamp();
    // One authentication event: the same `event_id` in both tokens; `origin_jti` names the
    // original sign-in (the session) and stays the same across refreshes.
    let event_id = uuid::Uuid::new_v4().to_string();
    let origin_jti = session.id.to_string();
    let access_claims = claims([
        ("token_use", json!("access")),
        ("client_id", json!(client_id)),
        ("username", json!(username)),
        ("scope", json!("aws.cognito.signin.user.admin")),
        ("auth_time", json!(auth_time)),
        ("origin_jti", json!(origin_jti)),
        ("event_id", json!(event_id)),
        ("version", json!(2)),
    ]);
    let id_claims = claims([
        ("token_use", json!("id")),
        ("cognito:username", json!(username)),
        ("origin_jti", json!(origin_jti)),
        ("event_id", json!(event_id)),
    ]);
    let (access_token, expires_in) = state.auth.access_token(session, user, client_id, access_claims).await?;
    let id_token = state.auth.id_token(session, user, client_id, id_claims).await?;
    Ok(Output(json!({
        "AuthenticationResult": {
            "AccessToken": access_token,
            "ExpiresIn": expires_in,
            "IdToken": id_token,
            "RefreshToken": refresh.expose(),
            "TokenType": "Bearer",
        },
        "ChallengeParameters": {},
    })))
}

/// Input of the operations that take only the access token (`GetUser`, `GlobalSignOut`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AccessTokenRequest {
    access_token: Option<String>,
}

/// The caller behind an access token issued to one of this surface's app clients, of a live
/// session.
///
/// # Errors
/// `InvalidParameterException` when absent; `NotAuthorizedException` when invalid, expired or
/// revoked.
async fn caller(state: &CognitoState, token: Option<String>) -> Result<Authenticated, CognitoError> {
    let token = required(token, "accessToken")?;
    Ok(state.auth.authenticate(&token, &state.audiences()).await?)
}

/// `GetUser`: `Username` and `UserAttributes` (`sub`, `email`, `email_verified` as `"true"` /
/// `"false"`, and the profile attributes that are set).
async fn get_user(state: &CognitoState, req: AccessTokenRequest) -> Result<Output, CognitoError> {
    let user = caller(state, req.access_token).await?.user;
    let mut attributes = vec![json!({ "Name": "sub", "Value": user.id.to_string() })];
    if let Some(email) = &user.email {
        attributes.push(json!({ "Name": "email", "Value": email.to_string() }));
        attributes.push(json!({ "Name": "email_verified", "Value": user.email_verified.to_string() }));
    }
    let p = &user.profile;
    for (name, value) in
        PROFILE_ATTRIBUTES.iter().zip([&p.given_name, &p.family_name, &p.phone_number, &p.address, &p.picture])
    {
        if let Some(value) = value {
            attributes.push(json!({ "Name": name, "Value": value }));
        }
    }
    Ok(Output(json!({ "Username": cognito_username(&user), "UserAttributes": attributes })))
}

/// `GlobalSignOut`: ends every session of the user (their access, ID and refresh tokens stop
/// working on every surface).
async fn global_sign_out(state: &CognitoState, req: AccessTokenRequest) -> Result<Output, CognitoError> {
    let caller = caller(state, req.access_token).await?;
    state.auth.sign_out_everywhere(caller.user.tenant, caller.user.id, None).await?;
    Ok(Output(json!({})))
}

/// `RevokeToken` input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RevokeTokenRequest {
    client_id: Option<String>,
    token: Option<String>,
}

/// `RevokeToken`: ends the session of a refresh token (its access and ID tokens stop working
/// too). A token that is unknown or already revoked is answered `{}` all the same (RFC 7009
/// section 2.2).
async fn revoke_token(state: &CognitoState, req: RevokeTokenRequest) -> Result<Output, CognitoError> {
    state.client_id(req.client_id)?;
    let token = required(req.token, "token")?;
    state.auth.revoke_refresh_token(TENANT, &RefreshToken::from_client(&token)).await?;
    Ok(Output(json!({})))
}

/// `ChangePassword` input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangePasswordRequest {
    previous_password: Option<String>,
    proposed_password: Option<String>,
    access_token: Option<String>,
}

/// `ChangePassword`: needs the current password (limited like sign-in); the user's other
/// sessions end, this one stays.
async fn change_password(state: &CognitoState, req: ChangePasswordRequest) -> Result<Output, CognitoError> {
    let caller = caller(state, req.access_token).await?;
    let previous = presented_password(&required(req.previous_password, "previousPassword")?, "PreviousPassword")?;
    let proposed = new_password(state, &required(req.proposed_password, "proposedPassword")?)?;
    state.auth.change_password(&caller.user, &caller.session, &previous, &proposed).await?;
    Ok(Output(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_masked_as_cognito_masks_them() {
        let email = Email::parse("ada.lovelace@example.com").expect("email");
        assert_eq!(masked_destination(&email), "a***@e***");
        let email = Email::parse("Ünal@bücher.de").expect("email");
        assert_eq!(masked_destination(&email), "Ü***@b***");
    }

    #[test]
    fn codes_that_are_not_six_digits_are_mismatches() {
        assert!(confirmation_code(" 123456 ").is_ok());
        for bad in ["", "12345", "1234567", "abcdef", "012345"] {
            let e = confirmation_code(bad).expect_err(bad);
            assert_eq!(e.exception, Exception::CodeMismatch, "{bad}");
        }
    }

    #[test]
    fn attributes_become_the_profile() {
        let email = Email::parse("ada@example.com").expect("email");
        let attr = |n: &str, v: &str| AttributeType { name: n.into(), value: Some(v.into()) };
        let p = profile_from(&[attr("email", "ADA@example.com"), attr("given_name", "Ada")], &email).expect("valid");
        assert_eq!(p.given_name.as_deref(), Some("Ada"));
        for bad in [attr("email", "eve@example.com"), attr("custom:role", "admin"), attr("family_name", " ")] {
            let e = profile_from(&[bad], &email).expect_err("refused");
            assert_eq!(e.exception, Exception::InvalidParameter);
        }
    }
}
