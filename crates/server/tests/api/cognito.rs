//! The `cognito` surface (seed 000 client side, API.md `cognito`) as a Cognito client sees it:
//! `POST /` with `X-Amz-Target`, every operation with its members, every exception input can
//! reach, Cognito's error shape for bad input, tokens with Cognito's claims that verify
//! through the JWKS, identity ids, and one directory shared with `users` and `v1`.
//!
//! The request helpers of this surface live here: [`Cognito`] sends one operation and reads
//! the answer.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{ApiResponse, Backend, PASSWORD, TestApp, jwt_parts, send};
use crate::on_both_backends;

const CLIENT: &str = "local";
const USER_POOL: &str = "AWSCognitoIdentityProviderService";
const IDENTITY: &str = "AWSCognitoIdentityService";
const AMZ_JSON: &str = "application/x-amz-json-1.1";
const INCORRECT: &str = "Incorrect username or password.";
const POOL_ID: &str = "local-1:00000000-0000-4000-8000-000000000000";

/// One signed-in Cognito session: the `AuthenticationResult`.
struct Tokens {
    access: String,
    id: String,
    refresh: String,
}

/// What a Cognito client checks in an answer.
trait Cognito {
    /// Asserts 200 with the AWS JSON media type and returns the body.
    fn ok(self) -> Value;
    /// Asserts a 400 of `exception` (header and body); returns the message.
    fn exception(&self, exception: &str) -> String;
}

impl Cognito for ApiResponse {
    fn ok(self) -> Value {
        assert_eq!(self.status, 200, "{}", self.body);
        assert_eq!(self.header("content-type"), Some(AMZ_JSON));
        assert!(self.header("x-amzn-requestid").is_some());
        assert!(self.body.is_object(), "every success has a JSON object body: {}", self.text);
        self.body
    }

    fn exception(&self, exception: &str) -> String {
        assert_eq!(self.status, 400, "{}", self.body);
        assert_eq!(self.header("x-amzn-errortype"), Some(exception), "{}", self.body);
        assert_eq!(self.body["__type"], exception, "{}", self.body);
        assert_eq!(self.header("content-type"), Some(AMZ_JSON));
        self.body["message"].as_str().expect("message").to_owned()
    }
}

impl Tokens {
    fn from(body: &Value) -> Self {
        let result = &body["AuthenticationResult"];
        assert_eq!(result["TokenType"], "Bearer", "{body}");
        Tokens {
            access: result["AccessToken"].as_str().expect("AccessToken").into(),
            id: result["IdToken"].as_str().expect("IdToken").into(),
            refresh: result["RefreshToken"].as_str().expect("RefreshToken").into(),
        }
    }
}

impl TestApp {
    /// `POST /` with `X-Amz-Target: <service>.<operation>` and `body`.
    async fn amz(&self, service: &str, operation: &str, body: Value) -> ApiResponse {
        send(
            self.request(Method::POST, "/")
                .header("content-type", AMZ_JSON)
                .header("x-amz-target", format!("{service}.{operation}"))
                .body(body.to_string()),
        )
        .await
    }

    /// A user-pool operation.
    async fn idp(&self, operation: &str, body: Value) -> ApiResponse {
        self.amz(USER_POOL, operation, body).await
    }

    /// `SignUp` with `email` as username and attribute.
    async fn cognito_sign_up(&self, email: &str, password: &str) -> ApiResponse {
        self.idp(
            "SignUp",
            json!({"ClientId": CLIENT, "Username": email, "Password": password,
                   "UserAttributes": [{"Name": "email", "Value": email}], "ValidationData": null}),
        )
        .await
    }

    /// `ConfirmSignUp` with `code`.
    async fn cognito_confirm(&self, email: &str, code: &str) -> ApiResponse {
        self.idp(
            "ConfirmSignUp",
            json!({"ClientId": CLIENT, "Username": email, "ConfirmationCode": code, "ForceAliasCreation": true}),
        )
        .await
    }

    /// `InitiateAuth` `USER_PASSWORD_AUTH`.
    async fn cognito_sign_in(&self, email: &str, password: &str) -> ApiResponse {
        self.idp(
            "InitiateAuth",
            json!({"ClientId": CLIENT, "AuthFlow": "USER_PASSWORD_AUTH",
                   "AuthParameters": {"USERNAME": email, "PASSWORD": password, "DEVICE_KEY": null},
                   "ClientMetadata": {}}),
        )
        .await
    }

    /// Signs `email` up with [`PASSWORD`], confirms it with the mailed code; returns `UserSub`.
    async fn cognito_user(&self, email: &str) -> String {
        let sub = self.cognito_sign_up(email, PASSWORD).await.ok()["UserSub"].as_str().expect("UserSub").to_owned();
        let code = self.mail.next_mail(email).await.code();
        assert_eq!(self.cognito_confirm(email, &code).await.ok(), json!({}));
        sub
    }

    /// Signs a confirmed `email` in with `password`.
    async fn cognito_tokens(&self, email: &str, password: &str) -> Tokens {
        Tokens::from(&self.cognito_sign_in(email, password).await.ok())
    }

    /// `GetUser` with `access`.
    async fn cognito_get_user(&self, access: &str) -> ApiResponse {
        self.idp("GetUser", json!({"AccessToken": access})).await
    }

    /// `InitiateAuth` `REFRESH_TOKEN_AUTH`.
    async fn cognito_refresh(&self, refresh: &str) -> ApiResponse {
        self.idp(
            "InitiateAuth",
            json!({"ClientId": CLIENT, "AuthFlow": "REFRESH_TOKEN_AUTH", "AuthParameters": {"REFRESH_TOKEN": refresh}}),
        )
        .await
    }

    /// Verifies a JWT through `/.well-known/jwks.json` with `audience`; returns its claims.
    async fn verified_claims(&self, token: &str, audience: &str) -> Value {
        let jwks: JwkSet =
            serde_json::from_value(self.get("/.well-known/jwks.json").await.expect_status(200)).expect("JWKS");
        let header = jsonwebtoken::decode_header(token).expect("header");
        let jwk = jwks.find(header.kid.as_deref().expect("kid")).expect("the token's key is published");
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.base.as_str()]);
        validation.set_audience(&[audience]);
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).expect("key"), &validation)
            .expect("verifies")
            .claims
    }
}

on_both_backends!(
    sign_up_confirm_and_sign_in,
    sign_up_refusals,
    bad_input_gets_cognito_errors,
    refresh_rotates_and_global_sign_out_ends_everything,
    revoke_token_ends_its_session_only,
    forgot_password_never_reveals_accounts,
    change_password_needs_the_current_one,
    resent_codes_replace_old_ones,
    wrong_codes_burn_and_expire,
    wrong_codes_do_not_tell_accounts_apart,
    one_directory_with_users_and_v1,
    identity_ids_and_credentials,
    srp_challenges_do_not_reveal_accounts,
    srp_can_be_turned_off,
    client_ids_are_checked,
    failed_sign_ins_are_limited,
    internal_failures_are_500_without_detail,
    a_second_sign_up_takes_over_an_unconfirmed_account,
    disabled_users_are_told_only_after_the_password,
    the_seed_000_flow_with_its_socket,
);

async fn sign_up_confirm_and_sign_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "Ada.Lovelace@example.com";

    // Sign up: unconfirmed, the user's id, the destination masked as Cognito masks it.
    let body = app.cognito_sign_up(email, PASSWORD).await.ok();
    assert_eq!(body["UserConfirmed"], false);
    let sub = body["UserSub"].as_str().expect("UserSub").to_owned();
    assert_eq!(
        body["CodeDeliveryDetails"],
        json!({"AttributeName": "email", "DeliveryMedium": "EMAIL", "Destination": "A***@e***"})
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = $1", email).await, 1);
    let mail = app.mail.next_mail(email).await;
    assert!(mail.subject().contains("verification"), "{}", mail.subject());

    // Before confirmation: the right password is UserNotConfirmedException, a wrong one is not.
    app.cognito_sign_in(email, PASSWORD).await.exception("UserNotConfirmedException");
    assert_eq!(app.cognito_sign_in(email, "not the password").await.exception("NotAuthorizedException"), INCORRECT);

    let code = mail.code();
    let wrong = if code == "999999" { "999998" } else { "999999" };
    app.cognito_confirm(email, wrong).await.exception("CodeMismatchException");
    assert_eq!(app.cognito_confirm(email, &code).await.ok(), json!({}));
    // Confirming again reads like a wrong code: nothing about the account is revealed.
    app.cognito_confirm(email, &code).await.exception("CodeMismatchException");

    // Sign in (the username's case does not matter): tokens with Cognito's claims.
    let body = app.cognito_sign_in("ada.lovelace@EXAMPLE.com", PASSWORD).await.ok();
    assert_eq!(body["ChallengeParameters"], json!({}));
    assert_eq!(body["AuthenticationResult"]["ExpiresIn"], 900);
    assert!(body["AuthenticationResult"].get("NewDeviceMetadata").is_none());
    let tokens = Tokens::from(&body);
    let access = app.verified_claims(&tokens.access, CLIENT).await;
    assert_eq!(access["token_use"], "access");
    assert_eq!(access["client_id"], CLIENT);
    assert_eq!(access["username"], email);
    assert_eq!(access["scope"], "aws.cognito.signin.user.admin");
    assert_eq!(access["sub"], sub.as_str());
    assert_eq!(access["exp"].as_i64().expect("exp") - access["iat"].as_i64().expect("iat"), 900);
    for claim in ["auth_time", "origin_jti", "event_id", "sid", "tid", "jti"] {
        assert!(!access[claim].is_null(), "access token has {claim}: {access}");
    }
    let id = app.verified_claims(&tokens.id, CLIENT).await;
    assert_eq!(id["token_use"], "id");
    assert_eq!(id["aud"], CLIENT);
    assert_eq!(id["cognito:username"], email);
    assert_eq!((id["email"].as_str(), id["email_verified"].as_bool()), (Some(email), Some(true)));
    assert_eq!(id["event_id"], access["event_id"]);
    assert_eq!(id["origin_jti"], access["origin_jti"]);
    assert_eq!(id["auth_time"], access["auth_time"]);

    // GetUser with the access token; the ID token is not an access token.
    let user = app.cognito_get_user(&tokens.access).await.ok();
    assert_eq!(user["Username"], email);
    let attributes: Vec<(String, String)> = user["UserAttributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .map(|a| (a["Name"].as_str().expect("Name").into(), a["Value"].as_str().expect("Value").into()))
        .collect();
    assert!(attributes.contains(&("sub".into(), sub.clone())), "{attributes:?}");
    assert!(attributes.contains(&("email".into(), email.into())), "{attributes:?}");
    assert!(attributes.contains(&("email_verified".into(), "true".into())), "{attributes:?}");
    app.cognito_get_user(&tokens.id).await.exception("NotAuthorizedException");
    app.cognito_get_user("not-a-token").await.exception("NotAuthorizedException");

    // Unknown users read exactly like wrong passwords; so do addresses that cannot exist.
    let unknown = app.cognito_sign_in("nobody@example.com", PASSWORD).await;
    assert_eq!(unknown.exception("NotAuthorizedException"), INCORRECT);
    assert_eq!(app.cognito_sign_in("not an email", PASSWORD).await.exception("NotAuthorizedException"), INCORRECT);
    let wrong = app.cognito_sign_in(email, "not the password").await;
    assert_eq!(wrong.body, unknown.body);
}

async fn sign_up_refusals(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.cognito_user("taken@example.com").await;
    let message = app.cognito_sign_up("TAKEN@example.com", PASSWORD).await.exception("UsernameExistsException");
    assert_eq!(message, "An account with the given email already exists.");
    let message = app.cognito_sign_up("short@example.com", "short").await.exception("InvalidPasswordException");
    assert!(message.starts_with("Password did not conform with policy"), "{message}");
    let message = app.cognito_sign_up("short@example.com", "iloveyou123").await.exception("InvalidPasswordException");
    assert!(message.contains("most common passwords"), "{message}");
    app.cognito_sign_up("short@example.com", &"x".repeat(129)).await.exception("InvalidPasswordException");
    let message = app.cognito_sign_up("not-an-email", PASSWORD).await.exception("InvalidParameterException");
    assert_eq!(message, "Username should be an email.");
    let sign_up = |body: Value| app.idp("SignUp", body);
    let message =
        sign_up(json!({"ClientId": CLIENT, "Password": PASSWORD})).await.exception("InvalidParameterException");
    assert!(message.contains("'username'"), "{message}");
    sign_up(json!({"ClientId": CLIENT, "Username": "p@example.com"})).await.exception("InvalidParameterException");
    sign_up(json!({"Username": "p@example.com", "Password": PASSWORD})).await.exception("InvalidParameterException");
    for attributes in [
        json!([{"Name": "email", "Value": "someone-else@example.com"}]),
        json!([{"Name": "custom:role", "Value": "admin"}]),
        json!([{"Name": "given_name", "Value": ""}]),
    ] {
        sign_up(json!({"ClientId": CLIENT, "Username": "p@example.com", "Password": PASSWORD, "UserAttributes": attributes}))
            .await
            .exception("InvalidParameterException");
    }
    // None of the refused sign-ups stored a user or sent a mail.
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email <> $1", "taken@example.com").await, 0);
    assert_eq!(app.mail.unread("p@example.com") + app.mail.unread("short@example.com"), 0);

    // Profile attributes are kept and come back from GetUser.
    let body = sign_up(json!({"ClientId": CLIENT, "Username": "grace@example.com", "Password": PASSWORD,
        "UserAttributes": [{"Name": "given_name", "Value": "Grace"}, {"Name": "family_name", "Value": "Hopper"}]}))
    .await
    .ok();
    assert_eq!(body["UserConfirmed"], false);
    let code = app.mail.next_mail("grace@example.com").await.code();
    app.cognito_confirm("grace@example.com", &code).await.ok();
    let tokens = app.cognito_tokens("grace@example.com", PASSWORD).await;
    let user = app.cognito_get_user(&tokens.access).await.ok();
    let names: Vec<&str> =
        user["UserAttributes"].as_array().expect("attributes").iter().filter_map(|a| a["Name"].as_str()).collect();
    assert!(names.contains(&"given_name") && names.contains(&"family_name"), "{names:?}");
    assert_eq!(jwt_parts(&tokens.id).1["given_name"], "Grace");
}

async fn bad_input_gets_cognito_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let raw = |target: Option<&str>, content_type: &str, body: Vec<u8>| {
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
        let mut request = client.post(app.url("/")).header("content-type", content_type).body(body);
        if let Some(t) = target {
            request = request.header("x-amz-target", t);
        }
        send(request)
    };
    let sign_up = Some("AWSCognitoIdentityProviderService.SignUp");
    raw(sign_up, AMZ_JSON, b"{\"ClientId\":".to_vec()).await.exception("SerializationException");
    raw(sign_up, AMZ_JSON, b"[1,2]".to_vec()).await.exception("SerializationException");
    raw(sign_up, AMZ_JSON, b"\"text\"".to_vec()).await.exception("SerializationException");
    raw(sign_up, AMZ_JSON, b"{\"ClientId\":\"\xff\"}".to_vec()).await.exception("SerializationException");
    raw(sign_up, "text/plain", b"{}".to_vec()).await.exception("SerializationException");
    let mistyped = app.idp("SignUp", json!({"ClientId": CLIENT, "Username": 7, "Password": PASSWORD})).await;
    assert!(mistyped.exception("SerializationException").contains("Username"), "{}", mistyped.body);
    app.idp("InitiateAuth", json!({"ClientId": CLIENT, "AuthFlow": "USER_PASSWORD_AUTH", "AuthParameters": []}))
        .await
        .exception("SerializationException");
    let mut oversized = br#"{"ClientId":""#.to_vec();
    oversized.extend(std::iter::repeat_n(b'a', 70 * 1024));
    oversized.extend_from_slice(b"\"}");
    raw(sign_up, AMZ_JSON, oversized).await.exception("InvalidParameterException");
    raw(None, AMZ_JSON, b"{}".to_vec()).await.exception("UnknownOperationException");
    raw(Some("SignUp"), AMZ_JSON, b"{}".to_vec()).await.exception("UnknownOperationException");
    raw(Some("AWSCognitoIdentityProviderService.AdminCreateUser"), AMZ_JSON, b"{}".to_vec())
        .await
        .exception("UnknownOperationException");
    raw(Some("AWSCognitoIdentityService.GetOpenIdToken"), AMZ_JSON, b"{}".to_vec())
        .await
        .exception("UnknownOperationException");
    raw(Some("DynamoDB_20120810.ListTables"), AMZ_JSON, b"{}".to_vec()).await.exception("UnknownOperationException");
    // A required member sent as null is missing.
    app.idp("ConfirmSignUp", json!({"ClientId": CLIENT, "Username": null, "ConfirmationCode": "123456"}))
        .await
        .exception("InvalidParameterException");
    app.idp("InitiateAuth", json!({"ClientId": CLIENT, "AuthFlow": "USER_PASSWORD_AUTH", "AuthParameters": {}}))
        .await
        .exception("InvalidParameterException");
    let too_long = "x".repeat(600);
    app.cognito_sign_in("a@example.com", &too_long).await.exception("InvalidParameterException");

    // Other methods on `/`: 405 in the same shape.
    let get = app.get("/").await;
    assert_eq!((get.status, get.body["__type"].as_str()), (405, Some("UnknownOperationException")));

    // CORS: the preflight allows the headers the AWS clients send; answers are readable.
    let preflight = send(
        app.request(Method::OPTIONS, "/")
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-amz-target,x-amz-user-agent"),
    )
    .await;
    assert_eq!(preflight.status, 200);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert!(preflight.header("access-control-allow-methods").is_some_and(|m| m.contains("POST")));
    let allowed = preflight.header("access-control-allow-headers").expect("allowed headers");
    for header in [
        "content-type",
        "x-amz-target",
        "x-amz-user-agent",
        "cache-control",
        "amz-sdk-invocation-id",
        "amz-sdk-request",
    ] {
        assert!(allowed.contains(header), "{header} in {allowed}");
    }
    let answer = app.cognito_sign_in("a@example.com", PASSWORD).await;
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
    assert!(answer.header("access-control-expose-headers").is_some_and(|h| h.contains("x-amzn-ErrorType")));
}

async fn refresh_rotates_and_global_sign_out_ends_everything(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "rotating@example.com";
    app.cognito_user(email).await;
    let first = app.cognito_tokens(email, PASSWORD).await;
    let origin = jwt_parts(&first.access).1["origin_jti"].clone();

    // REFRESH_TOKEN_AUTH: new tokens of the same sign-in and a rotated refresh token.
    let second = Tokens::from(&app.cognito_refresh(&first.refresh).await.ok());
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    assert_eq!(jwt_parts(&second.access).1["origin_jti"], origin);
    // The older alias of the flow, and GetTokensFromRefreshToken (Amplify v6), both rotate.
    let third = Tokens::from(
        &app.idp(
            "InitiateAuth",
            json!({"ClientId": CLIENT, "AuthFlow": "REFRESH_TOKEN", "AuthParameters": {"REFRESH_TOKEN": second.refresh}}),
        )
        .await
        .ok(),
    );
    let fourth = Tokens::from(
        &app.idp(
            "GetTokensFromRefreshToken",
            json!({"ClientId": CLIENT, "RefreshToken": third.refresh, "DeviceKey": null}),
        )
        .await
        .ok(),
    );
    app.cognito_get_user(&fourth.access).await.ok();
    app.cognito_refresh("garbage").await.exception("NotAuthorizedException");
    app.idp("GetTokensFromRefreshToken", json!({"ClientId": CLIENT})).await.exception("InvalidParameterException");
    app.idp("InitiateAuth", json!({"ClientId": CLIENT, "AuthFlow": "REFRESH_TOKEN_AUTH", "AuthParameters": {}}))
        .await
        .exception("InvalidParameterException");

    // The same user also signed in through v1 and users.
    let v1 = app.v1_signed_in(email).await;
    let cookie = app.users_signed_in(email).await;

    // GlobalSignOut: every session ends, on every surface.
    assert_eq!(app.idp("GlobalSignOut", json!({"AccessToken": fourth.access})).await.ok(), json!({}));
    app.cognito_get_user(&fourth.access).await.exception("NotAuthorizedException");
    app.cognito_get_user(&first.access).await.exception("NotAuthorizedException");
    app.cognito_refresh(&fourth.refresh).await.exception("NotAuthorizedException");
    app.idp("GlobalSignOut", json!({"AccessToken": fourth.access})).await.exception("NotAuthorizedException");
    app.idp("GlobalSignOut", json!({})).await.exception("InvalidParameterException");
    assert_eq!(app.v1_me(&v1.access).await.status, 401);
    assert_eq!(app.v1_refresh(&v1.refresh).await.status, 401);
    let current = send(app.request(Method::GET, "/api/users/currentuser").header("cookie", cookie)).await;
    assert_eq!(current.body, Value::Null);
    assert!(app.revoked_sessions(&v1.sid()).await == 1);
}

async fn revoke_token_ends_its_session_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "revoker@example.com";
    app.cognito_user(email).await;
    let a = app.cognito_tokens(email, PASSWORD).await;
    let b = app.cognito_tokens(email, PASSWORD).await;
    let revoke =
        |token: &str| app.idp("RevokeToken", json!({"ClientId": CLIENT, "Token": token, "ClientSecret": null}));
    assert_eq!(revoke(&a.refresh).await.ok(), json!({}));
    app.cognito_get_user(&a.access).await.exception("NotAuthorizedException");
    app.cognito_refresh(&a.refresh).await.exception("NotAuthorizedException");
    app.cognito_get_user(&b.access).await.ok();
    // Unknown and already revoked tokens are answered the same (RFC 7009).
    revoke(&a.refresh).await.ok();
    revoke("not-a-refresh-token").await.ok();
    app.idp("RevokeToken", json!({"ClientId": CLIENT})).await.exception("InvalidParameterException");
    app.idp("RevokeToken", json!({"ClientId": "other", "Token": b.refresh}))
        .await
        .exception("ResourceNotFoundException");
    app.cognito_refresh(&b.refresh).await.ok();
    let sid = jwt_parts(&a.access).1["sid"].as_str().expect("sid").to_owned();
    assert_eq!(app.revoked_sessions(&sid).await, 1);
}

async fn forgot_password_never_reveals_accounts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "forgetful@example.com";
    app.cognito_user(email).await;
    let before = app.cognito_tokens(email, PASSWORD).await;
    let forgot = |username: &str| app.idp("ForgotPassword", json!({"ClientId": CLIENT, "Username": username}));

    let known = forgot(email).await.ok();
    assert_eq!(known["CodeDeliveryDetails"]["Destination"], "f***@e***");
    let unknown = forgot("fabricated@example.com").await.ok();
    assert_eq!(unknown, known, "an unknown address reads the same");
    assert_eq!(app.mail.unread("fabricated@example.com"), 0);
    forgot("not an email").await.exception("InvalidParameterException");

    let code = app.mail.next_mail(email).await.code();
    let confirm = |username: &str, code: &str, password: &str| {
        app.idp(
            "ConfirmForgotPassword",
            json!({"ClientId": CLIENT, "Username": username, "ConfirmationCode": code, "Password": password}),
        )
    };
    let wrong = if code == "999999" { "999998" } else { "999999" };
    confirm(email, wrong, "a new passphrase").await.exception("CodeMismatchException");
    confirm(email, "abc", "a new passphrase").await.exception("CodeMismatchException");
    confirm("fabricated@example.com", &code, "a new passphrase").await.exception("CodeMismatchException");
    confirm(email, &code, "short").await.exception("InvalidPasswordException");
    app.idp("ConfirmForgotPassword", json!({"ClientId": CLIENT, "Username": email, "Password": "a new passphrase"}))
        .await
        .exception("InvalidParameterException");
    assert_eq!(confirm(email, &code, "a new passphrase").await.ok(), json!({}));

    // The old password and the old sessions are gone; the new password signs in.
    app.cognito_get_user(&before.access).await.exception("NotAuthorizedException");
    app.cognito_sign_in(email, PASSWORD).await.exception("NotAuthorizedException");
    app.cognito_tokens(email, "a new passphrase").await;
    confirm(email, &code, "another passphrase").await.exception("CodeMismatchException");
}

async fn change_password_needs_the_current_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "changer@example.com";
    app.cognito_user(email).await;
    let this = app.cognito_tokens(email, PASSWORD).await;
    let other = app.cognito_tokens(email, PASSWORD).await;
    let change = |previous: Value, proposed: Value, access: &str| {
        app.idp(
            "ChangePassword",
            json!({"PreviousPassword": previous, "ProposedPassword": proposed, "AccessToken": access}),
        )
    };
    assert_eq!(
        change(json!("wrong password"), json!("a new passphrase"), &this.access)
            .await
            .exception("NotAuthorizedException"),
        INCORRECT
    );
    change(json!(PASSWORD), json!("short"), &this.access).await.exception("InvalidPasswordException");
    change(json!(PASSWORD), json!("a new passphrase"), "bogus").await.exception("NotAuthorizedException");
    change(Value::Null, json!("a new passphrase"), &this.access).await.exception("InvalidParameterException");
    assert_eq!(change(json!(PASSWORD), json!("a new passphrase"), &this.access).await.ok(), json!({}));
    // This session stays; the others end.
    app.cognito_get_user(&this.access).await.ok();
    app.cognito_get_user(&other.access).await.exception("NotAuthorizedException");
    app.cognito_sign_in(email, PASSWORD).await.exception("NotAuthorizedException");
    app.cognito_tokens(email, "a new passphrase").await;
}

async fn resent_codes_replace_old_ones(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "resend@example.com";
    app.cognito_sign_up(email, PASSWORD).await.ok();
    let first = app.mail.next_mail(email).await.code();
    let resend = |username: &str| app.idp("ResendConfirmationCode", json!({"ClientId": CLIENT, "Username": username}));
    let body = resend(email).await.ok();
    assert_eq!(body["CodeDeliveryDetails"]["Destination"], "r***@e***");
    let second = app.mail.next_mail(email).await.code();
    if first != second {
        app.cognito_confirm(email, &first).await.exception("CodeMismatchException");
    }
    app.cognito_confirm(email, &second).await.ok();
    // Confirmed and unknown addresses read the same, and get no mail.
    assert_eq!(resend(email).await.ok()["CodeDeliveryDetails"]["DeliveryMedium"], "EMAIL");
    resend("stranger@example.com").await.ok();
    assert_eq!(app.mail.unread(email) + app.mail.unread("stranger@example.com"), 0);
    resend("not an email").await.exception("InvalidParameterException");
    app.idp("ResendConfirmationCode", json!({"ClientId": CLIENT})).await.exception("InvalidParameterException");
}

async fn wrong_codes_burn_and_expire(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "guesser@example.com";
    app.cognito_sign_up(email, PASSWORD).await.ok();
    let code = app.mail.next_mail(email).await.code();
    let wrong = if code == "999999" { "999998" } else { "999999" };
    for _ in 0..5 {
        app.cognito_confirm(email, wrong).await.exception("CodeMismatchException");
    }
    // The fifth wrong guess burned the code: the right one no longer works, and reads the same.
    app.cognito_confirm(email, &code).await.exception("CodeMismatchException");

    // A fresh code, expired in the store, reads the same too (a new code is the way out).
    app.idp("ResendConfirmationCode", json!({"ClientId": CLIENT, "Username": email})).await.ok();
    let code = app.mail.next_mail(email).await.code();
    assert_eq!(
        app.execute("UPDATE one_time_codes SET expires_at = created_at WHERE purpose = $1", "verify_email").await,
        1
    );
    let message = app.cognito_confirm(email, &code).await.exception("CodeMismatchException");
    assert!(message.contains("request a new code"), "the way out: {message}");
    app.idp("ResendConfirmationCode", json!({"ClientId": CLIENT, "Username": email})).await.ok();
    let code = app.mail.next_mail(email).await.code();
    assert_eq!(app.cognito_confirm(email, &code).await.ok(), json!({}), "a new code works");
    // An unknown user's code is simply wrong.
    app.cognito_confirm("ghost@example.com", &code).await.exception("CodeMismatchException");
    app.cognito_confirm("not an email", &code).await.exception("CodeMismatchException");
    app.cognito_confirm(email, "12345").await.exception("CodeMismatchException");
}

/// The guesses an attacker makes to learn whether an address has an account: after
/// `ForgotPassword` (or a `SignUp` left unconfirmed), a run of wrong confirmations, and one made
/// after the code expired, must read the same for a registered and an unknown address.
async fn wrong_codes_do_not_tell_accounts_apart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let registered = "known@example.com";
    app.cognito_user(registered).await;
    let pending = "pending@example.com";
    app.cognito_sign_up(pending, PASSWORD).await.ok();
    app.mail.next_mail(pending).await;
    let unknown = "unknown@example.com";
    for address in [registered, unknown] {
        app.idp("ForgotPassword", json!({"ClientId": CLIENT, "Username": address})).await.ok();
    }
    app.mail.next_mail(registered).await;
    let answers = |op: &'static str, address: &'static str| {
        let app = &app;
        async move {
            let mut seen = Vec::new();
            for guess in ["111111", "111112", "111113", "111114", "111115", "111116"] {
                let body = if op == "ConfirmForgotPassword" {
                    json!({"ClientId": CLIENT, "Username": address, "ConfirmationCode": guess, "Password": "NewPassw0rd!!"})
                } else {
                    json!({"ClientId": CLIENT, "Username": address, "ConfirmationCode": guess})
                };
                let answer = app.idp(op, body).await;
                seen.push((answer.status, answer.body["__type"].clone(), answer.body["message"].clone()));
            }
            seen
        }
    };
    assert_eq!(answers("ConfirmForgotPassword", registered).await, answers("ConfirmForgotPassword", unknown).await);
    assert_eq!(answers("ConfirmSignUp", pending).await, answers("ConfirmSignUp", unknown).await);
    // After the code's lifetime.
    app.idp("ForgotPassword", json!({"ClientId": CLIENT, "Username": registered})).await.ok();
    app.mail.next_mail(registered).await;
    app.execute("UPDATE one_time_codes SET expires_at = created_at WHERE purpose = $1", "reset_password").await;
    assert_eq!(answers("ConfirmForgotPassword", registered).await, answers("ConfirmForgotPassword", unknown).await);
}

async fn one_directory_with_users_and_v1(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    // Signed up through cognito, confirmed with the mailed code through v1, signed in through
    // v1 and users.
    let email = "shared@example.com";
    app.cognito_sign_up(email, PASSWORD).await.ok();
    let code = app.mail.next_mail(email).await.code();
    app.v1_verify_email(email, &code).await.expect_status(200);
    app.v1_signed_in(email).await;
    app.users_signed_in(email).await;
    app.cognito_tokens(email, PASSWORD).await;

    // Signed up through v1: signs in here, and its v1 refresh token refreshes here too.
    app.v1_verified_user("from-v1@example.com").await;
    let tokens = app.cognito_tokens("from-v1@example.com", PASSWORD).await;
    assert_eq!(jwt_parts(&tokens.id).1["given_name"], "Val");
    let v1 = app.v1_signed_in("from-v1@example.com").await;
    app.cognito_refresh(&v1.refresh).await.ok();
    app.cognito_sign_up("from-v1@example.com", PASSWORD).await.exception("UsernameExistsException");

    // A code mailed by cognito's ResendConfirmationCode confirms through users' activate.
    app.cognito_sign_up("third@example.com", PASSWORD).await.ok();
    app.mail.next_mail("third@example.com").await;
    app.idp("ResendConfirmationCode", json!({"ClientId": CLIENT, "Username": "third@example.com"})).await.ok();
    let code = app.mail.next_mail("third@example.com").await.code();
    let activated = app.activate("third@example.com", code.parse::<u64>().expect("digits")).await;
    assert_eq!(activated.status, 200, "{}", activated.body);
    app.cognito_tokens("third@example.com", PASSWORD).await;

    // Cognito's access tokens are not v1's, and v1's are not Cognito's.
    assert_eq!(app.v1_me(&tokens.access).await.status, 401);
    app.cognito_get_user(&v1.access).await.exception("NotAuthorizedException");
}

async fn identity_ids_and_credentials(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "identity@example.com";
    app.cognito_user(email).await;
    let tokens = app.cognito_tokens(email, PASSWORD).await;
    let issuer = app.base.trim_start_matches("http://").to_owned();
    let get_id = |logins: Value| {
        app.amz(IDENTITY, "GetId", json!({"IdentityPoolId": POOL_ID, "AccountId": null, "Logins": logins}))
    };

    // Stable per user, whatever the provider name; the core's id for that user.
    let id = get_id(json!({ issuer.clone(): tokens.id })).await.ok()["IdentityId"].as_str().expect("id").to_owned();
    assert!(id.starts_with("local-1:") && uuid::Uuid::parse_str(&id["local-1:".len()..]).is_ok(), "{id}");
    let legacy = "cognito-idp.local-1.amazonaws.com/local-1_latchkey";
    let later = app.cognito_tokens(email, PASSWORD).await;
    assert_eq!(get_id(json!({ legacy: later.id })).await.ok()["IdentityId"], id.as_str());
    let user =
        app.auth.user_by_email(latchkey_core::identity::TenantId::DEFAULT, &email.parse_email()).await.expect("user");
    assert_eq!(app.auth.identity_id(&user), id);
    app.cognito_user("other@example.com").await;
    let other = app.cognito_tokens("other@example.com", PASSWORD).await;
    let other_id =
        get_id(json!({ issuer.clone(): other.id })).await.ok()["IdentityId"].as_str().expect("id").to_owned();
    assert_ne!(other_id, id);

    // No guests; only a live ID token of this pool's clients.
    let message = get_id(json!({})).await.exception("NotAuthorizedException");
    assert_eq!(message, "Unauthenticated access is not supported for this identity pool.");
    app.amz(IDENTITY, "GetId", json!({"IdentityPoolId": POOL_ID})).await.exception("NotAuthorizedException");
    get_id(json!({ issuer.clone(): tokens.access })).await.exception("NotAuthorizedException");
    get_id(json!({ issuer.clone(): "forged" })).await.exception("NotAuthorizedException");
    get_id(json!({ "a": tokens.id, "b": later.id })).await.exception("InvalidParameterException");
    get_id(json!({ issuer.clone(): 7 })).await.exception("InvalidParameterException");
    app.amz(IDENTITY, "GetId", json!({"Logins": { issuer.clone(): tokens.id }}))
        .await
        .exception("InvalidParameterException");

    // Credentials: random keys, a session token that is a Latchkey JWT for the identity.
    let credentials = |identity: &str, login: &str| {
        app.amz(
            IDENTITY,
            "GetCredentialsForIdentity",
            json!({"IdentityId": identity, "Logins": { issuer.clone(): login }}),
        )
    };
    let body = credentials(&id, &tokens.id).await.ok();
    assert_eq!(body["IdentityId"], id.as_str());
    let c = &body["Credentials"];
    let key = c["AccessKeyId"].as_str().expect("AccessKeyId");
    assert!(key.len() == 20 && key.starts_with("ASIA"), "{key}");
    assert!(c["SecretKey"].as_str().is_some_and(|s| s.len() >= 40));
    let session_token = c["SessionToken"].as_str().expect("SessionToken");
    let claims = app.verified_claims(session_token, "cognito-identity").await;
    assert_eq!(claims["identity_id"], id.as_str());
    assert_eq!(claims["sub"], user.id.to_string());
    let expiration = c["Expiration"].as_i64().expect("Expiration in seconds");
    assert_eq!(expiration, claims["exp"].as_i64().expect("exp"));
    // The session token is no access token; another user's identity id is refused.
    app.cognito_get_user(session_token).await.exception("NotAuthorizedException");
    credentials(&other_id, &tokens.id).await.exception("NotAuthorizedException");
    app.amz(IDENTITY, "GetCredentialsForIdentity", json!({"IdentityId": id})).await.exception("NotAuthorizedException");
    app.amz(IDENTITY, "GetCredentialsForIdentity", json!({"Logins": {}})).await.exception("InvalidParameterException");

    // After sign-out the ID token no longer yields an identity.
    app.idp("GlobalSignOut", json!({"AccessToken": tokens.access})).await.ok();
    get_id(json!({ issuer.clone(): tokens.id })).await.exception("NotAuthorizedException");
    credentials(&id, &tokens.id).await.exception("NotAuthorizedException");
}

/// `InitiateAuth` `USER_SRP_AUTH` for `username` with a valid client public value.
async fn srp_challenge(app: &TestApp, username: &str) -> ApiResponse {
    // g^1: a public value that is not zero modulo N.
    app.idp(
        "InitiateAuth",
        json!({"ClientId": CLIENT, "AuthFlow": "USER_SRP_AUTH", "AuthParameters": {"USERNAME": username, "SRP_A": "02"}}),
    )
    .await
}

async fn srp_challenges_do_not_reveal_accounts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "srp@example.com";
    let sub = app.cognito_user(email).await;
    let known = srp_challenge(&app, email).await.ok();
    let unknown = srp_challenge(&app, "nobody@example.com").await.ok();
    for (body, username) in [(&known, email), (&unknown, "nobody@example.com")] {
        assert_eq!(body["ChallengeName"], "PASSWORD_VERIFIER", "{body}");
        let p = &body["ChallengeParameters"];
        let mut keys: Vec<&str> = p.as_object().expect("parameters").keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["SALT", "SECRET_BLOCK", "SRP_B", "USERNAME", "USER_ID_FOR_SRP"]);
        assert_eq!(p["USERNAME"], username);
        assert!(p["SALT"].as_str().is_some_and(|s| s.chars().all(|c| c.is_ascii_hexdigit())), "{p}");
        assert!(p["SRP_B"].as_str().is_some_and(|s| s.len() > 500 && s.chars().all(|c| c.is_ascii_hexdigit())), "{p}");
        assert!(uuid::Uuid::parse_str(p["USER_ID_FOR_SRP"].as_str().expect("id")).is_ok(), "{p}");
    }
    assert_eq!(known["ChallengeParameters"]["USER_ID_FOR_SRP"], sub.as_str());

    // A wrong proof (well-formed, timely) is a wrong password, for known and unknown users alike.
    let now = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[weekday repr:short] [month repr:short] [day padding:none] [hour]:[minute]:[second] UTC [year]"
        ))
        .expect("timestamp");
    for body in [&known, &unknown] {
        let p = &body["ChallengeParameters"];
        let answer = app
            .idp(
                "RespondToAuthChallenge",
                json!({"ClientId": CLIENT, "ChallengeName": "PASSWORD_VERIFIER", "Session": null,
                       "ChallengeResponses": {"USERNAME": p["USER_ID_FOR_SRP"], "PASSWORD_CLAIM_SECRET_BLOCK": p["SECRET_BLOCK"],
                           "TIMESTAMP": now, "PASSWORD_CLAIM_SIGNATURE": "y6loCUz2SVRgxh2FnXNVSPG45JGsivlf/rfkzjHt0ec=",
                           "DEVICE_KEY": null}}),
            )
            .await;
        assert_eq!(answer.exception("NotAuthorizedException"), INCORRECT);
    }
    // Bad challenge answers.
    let respond = |body: Value| app.idp("RespondToAuthChallenge", body);
    respond(json!({"ClientId": CLIENT, "ChallengeName": "SMS_MFA", "ChallengeResponses": {}}))
        .await
        .exception("InvalidParameterException");
    respond(json!({"ClientId": CLIENT, "ChallengeName": "PASSWORD_VERIFIER", "ChallengeResponses": {"USERNAME": sub}}))
        .await
        .exception("InvalidParameterException");
    respond(json!({"ClientId": CLIENT, "ChallengeResponses": {}})).await.exception("InvalidParameterException");
    let message = srp_challenge(&app, "not an email").await.exception("NotAuthorizedException");
    assert_eq!(message, INCORRECT);
    app.idp(
        "InitiateAuth",
        json!({"ClientId": CLIENT, "AuthFlow": "USER_SRP_AUTH", "AuthParameters": {"USERNAME": email}}),
    )
    .await
    .exception("InvalidParameterException");
}

async fn srp_can_be_turned_off(backend: Backend) {
    const VERIFIERS: &str = "SELECT COUNT(*) FROM srp_verifiers WHERE $1 = $1";
    // With SRP on, a password leaves a verifier; an instance started with SRP off deletes them
    // all and keeps none for new passwords, nor does an instance without the cognito surface.
    let on = TestApp::spawn(backend).await;
    on.cognito_user("before@example.com").await;
    assert_eq!(on.count(VERIFIERS, "").await, 1);
    let app = on.another_instance_with(|c| c.srp = false).await;
    assert_eq!(app.count(VERIFIERS, "").await, 0, "dropped at start-up");
    let without = on
        .another_instance_with(|c| c.surfaces = latchkey_server::config::SurfaceSelection::Only(vec!["v1".into()]))
        .await;
    without.v1_verified_user("v1-only@example.com").await;
    assert_eq!(without.count(VERIFIERS, "").await, 0, "no cognito surface, no verifiers");

    app.cognito_user("plain@example.com").await;
    assert_eq!(app.count(VERIFIERS, "").await, 0, "none for new passwords either");
    let message = srp_challenge(&app, "plain@example.com").await.exception("InvalidParameterException");
    assert!(message.contains("USER_PASSWORD_AUTH"), "{message}");
    app.idp(
        "RespondToAuthChallenge",
        json!({"ClientId": CLIENT, "ChallengeName": "PASSWORD_VERIFIER", "ChallengeResponses": {}}),
    )
    .await
    .exception("InvalidParameterException");
    app.cognito_tokens("plain@example.com", PASSWORD).await;
    for flow in ["CUSTOM_AUTH", "ADMIN_USER_PASSWORD_AUTH", "USER_AUTH"] {
        app.idp("InitiateAuth", json!({"ClientId": CLIENT, "AuthFlow": flow, "AuthParameters": {}}))
            .await
            .exception("InvalidParameterException");
    }
    app.idp("InitiateAuth", json!({"ClientId": CLIENT})).await.exception("InvalidParameterException");
}

async fn client_ids_are_checked(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.surface_settings.insert("client_ids", "web, mobile")).await;
    let message = app.cognito_sign_up("a@example.com", PASSWORD).await.exception("ResourceNotFoundException");
    assert_eq!(message, "User pool client local does not exist.");
    let sign_up = |client: &str| {
        app.idp("SignUp", json!({"ClientId": client, "Username": "a@example.com", "Password": PASSWORD}))
    };
    sign_up("mobile").await.ok();
    let code = app.mail.next_mail("a@example.com").await.code();
    app.idp("ConfirmSignUp", json!({"ClientId": "web", "Username": "a@example.com", "ConfirmationCode": code}))
        .await
        .ok();
    let body = app
        .idp(
            "InitiateAuth",
            json!({"ClientId": "web", "AuthFlow": "USER_PASSWORD_AUTH",
                   "AuthParameters": {"USERNAME": "a@example.com", "PASSWORD": PASSWORD}}),
        )
        .await
        .ok();
    let tokens = Tokens::from(&body);
    assert_eq!(jwt_parts(&tokens.access).1["client_id"], "web");
    assert_eq!(app.verified_claims(&tokens.id, "web").await["aud"], "web");
    for operation in [
        "SignUp",
        "ConfirmSignUp",
        "ResendConfirmationCode",
        "InitiateAuth",
        "RespondToAuthChallenge",
        "GetTokensFromRefreshToken",
        "RevokeToken",
        "ForgotPassword",
        "ConfirmForgotPassword",
    ] {
        app.idp(operation, json!({"ClientId": "local"})).await.exception("ResourceNotFoundException");
    }
}

async fn failed_sign_ins_are_limited(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.rate_limit = true).await;
    let email = "limited@example.com";
    app.cognito_user(email).await;
    for _ in 0..10 {
        app.cognito_sign_in(email, "wrong password").await.exception("NotAuthorizedException");
    }
    let limited = app.cognito_sign_in(email, PASSWORD).await;
    assert_eq!(limited.exception("LimitExceededException"), "Attempt limit exceeded, please try after some time.");
    assert!(limited.header("retry-after").and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s >= 1));
}

async fn disabled_users_are_told_only_after_the_password(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "disabled@example.com";
    app.cognito_user(email).await;
    let tokens = app.cognito_tokens(email, PASSWORD).await;
    let tenant = latchkey_core::identity::TenantId::DEFAULT;
    let user = app.auth.user_by_email(tenant, &email.parse_email()).await.expect("user");
    app.auth.set_disabled(tenant, user.id, true).await.expect("disable");
    assert_eq!(app.cognito_sign_in(email, PASSWORD).await.exception("NotAuthorizedException"), "User is disabled.");
    assert_eq!(app.cognito_sign_in(email, "wrong password").await.exception("NotAuthorizedException"), INCORRECT);
    app.cognito_get_user(&tokens.access).await.exception("NotAuthorizedException");
    app.cognito_refresh(&tokens.refresh).await.exception("NotAuthorizedException");
}

/// Parses a test address.
trait ParseEmail {
    fn parse_email(&self) -> latchkey_core::identity::Email;
}

impl ParseEmail for str {
    fn parse_email(&self) -> latchkey_core::identity::Email {
        latchkey_core::identity::Email::parse(self).expect("email")
    }
}

/// A client's half of one SRP sign-in, computed with the core's client functions (the Node
/// tests run the real JavaScript clients).
struct SrpClient {
    a: num_bigint::BigUint,
}

impl SrpClient {
    fn new() -> Self {
        let bytes: [u8; 32] = std::array::from_fn(|i| u8::try_from(i * 7 + 3).expect("byte"));
        SrpClient { a: num_bigint::BigUint::from_bytes_be(&bytes) }
    }

    /// `SRP_A`.
    fn public(&self) -> String {
        latchkey_core::srp::to_hex(&latchkey_core::srp::client::public(&self.a))
    }

    /// `InitiateAuth` `USER_SRP_AUTH` on `client`.
    async fn challenge(&self, app: &TestApp, username: &str, client: &str) -> Value {
        app.idp(
            "InitiateAuth",
            json!({"ClientId": client, "AuthFlow": "USER_SRP_AUTH",
                   "AuthParameters": {"USERNAME": username, "SRP_A": self.public()}}),
        )
        .await
        .ok()
    }

    /// The `RespondToAuthChallenge` body answering `challenge` with `password` on `client`.
    fn answer(&self, challenge: &Value, password: &str, client: &str) -> Value {
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD;
        let p = &challenge["ChallengeParameters"];
        let text = |name: &str| p[name].as_str().unwrap_or_else(|| panic!("{name}: {challenge}")).to_owned();
        let salt = num_bigint::BigUint::parse_bytes(text("SALT").as_bytes(), 16).expect("salt").to_bytes_be();
        let b = latchkey_core::srp::parse_public(&text("SRP_B")).expect("SRP_B");
        let user_id = text("USER_ID_FOR_SRP");
        let key = latchkey_core::srp::client::key("latchkey", &user_id, password, &salt, &self.a, &b).expect("key");
        let timestamp = latchkey_core::srp::format_timestamp(time::OffsetDateTime::now_utc());
        let block = STANDARD.decode(text("SECRET_BLOCK")).expect("base64 secret block");
        let signature = latchkey_core::srp::signature(&key, "latchkey", &user_id, &block, &timestamp);
        json!({"ClientId": client, "ChallengeName": "PASSWORD_VERIFIER",
               "ChallengeResponses": {"USERNAME": user_id, "PASSWORD_CLAIM_SECRET_BLOCK": text("SECRET_BLOCK"),
                   "TIMESTAMP": timestamp, "PASSWORD_CLAIM_SIGNATURE": STANDARD.encode(signature)}})
    }

    /// Both steps on the default client.
    async fn sign_in(&self, app: &TestApp, username: &str, password: &str) -> ApiResponse {
        let challenge = self.challenge(app, username, CLIENT).await;
        app.idp("RespondToAuthChallenge", self.answer(&challenge, password, CLIENT)).await
    }
}

/// A user imported without a password (as every user of a Cognito pool export is): both
/// sign-in flows answer `PasswordResetRequiredException`, as Cognito does for a user in
/// `RESET_REQUIRED`, whatever the password; `ForgotPassword` then lets the user in. Those
/// answers count as failed sign-ins.
async fn imported_users_without_a_password_must_reset_it(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.rate_limit = true).await;
    let tenant = latchkey_core::identity::TenantId::DEFAULT;
    let (email, other) = ("imported@example.com", "imported-too@example.com");
    let rows: Vec<latchkey_core::ImportRow> = [email, other]
        .iter()
        .map(|e| serde_json::from_value(json!({"email": e, "email_verified": true})).expect("row"))
        .collect();
    let imported = app.auth.import_batch(tenant, &rows, false).await.expect("import");
    assert!(imported.iter().all(|r| matches!(r, Ok(latchkey_core::Imported::Created(_)))), "{imported:?}");

    let message = app.cognito_sign_in(email, PASSWORD).await.exception("PasswordResetRequiredException");
    assert_eq!(message, "Password reset required for the user");
    SrpClient::new().sign_in(&app, email, PASSWORD).await.exception("PasswordResetRequiredException");
    // Unknown users still read as wrong passwords.
    assert_eq!(
        app.cognito_sign_in("nobody@example.com", PASSWORD).await.exception("NotAuthorizedException"),
        INCORRECT
    );

    app.idp("ForgotPassword", json!({"ClientId": CLIENT, "Username": email})).await.ok();
    let code = app.mail.next_mail(email).await.code();
    let confirm = json!({"ClientId": CLIENT, "Username": email, "ConfirmationCode": code, "Password": PASSWORD});
    assert_eq!(app.idp("ConfirmForgotPassword", confirm).await.ok(), json!({}));
    app.cognito_tokens(email, PASSWORD).await;
    Tokens::from(&SrpClient::new().sign_in(&app, email, PASSWORD).await.ok());

    // Ten answers, then the account's failure limit, as for wrong passwords.
    for _ in 0..10 {
        app.cognito_sign_in(other, PASSWORD).await.exception("PasswordResetRequiredException");
    }
    app.cognito_sign_in(other, PASSWORD).await.exception("LimitExceededException");
}

on_both_backends!(
    imported_users_without_a_password_must_reset_it,
    srp_signs_in_with_a_single_use_challenge,
    srp_verifiers_follow_every_password_change,
    srp_wrong_proofs_count_as_failed_sign_ins,
);

async fn srp_signs_in_with_a_single_use_challenge(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.surface_settings.insert("client_ids", "local, other")).await;
    let email = "srp-user@example.com";
    let client = SrpClient::new();

    // Unconfirmed: a valid proof reveals it, a wrong one does not.
    app.cognito_sign_up(email, PASSWORD).await.ok();
    let code = app.mail.next_mail(email).await.code();
    client.sign_in(&app, email, PASSWORD).await.exception("UserNotConfirmedException");
    assert_eq!(client.sign_in(&app, email, "wrong password").await.exception("NotAuthorizedException"), INCORRECT);
    app.cognito_confirm(email, &code).await.ok();

    // A valid proof: tokens, as for USER_PASSWORD_AUTH.
    let challenge = client.challenge(&app, email, CLIENT).await;
    let answer = client.answer(&challenge, PASSWORD, CLIENT);
    let body = app.idp("RespondToAuthChallenge", answer.clone()).await.ok();
    assert!(body["AuthenticationResult"].get("NewDeviceMetadata").is_none());
    let tokens = Tokens::from(&body);
    assert_eq!(app.cognito_get_user(&tokens.access).await.ok()["Username"], email);
    assert_eq!(app.verified_claims(&tokens.id, CLIENT).await["cognito:username"], email);

    // The secret block is single-use, bound to its client and to its user.
    assert_eq!(app.idp("RespondToAuthChallenge", answer).await.exception("NotAuthorizedException"), INCORRECT);
    let challenge = client.challenge(&app, email, CLIENT).await;
    app.idp("RespondToAuthChallenge", client.answer(&challenge, PASSWORD, "other"))
        .await
        .exception("NotAuthorizedException");
    let challenge = client.challenge(&app, email, CLIENT).await;
    let mut answer = client.answer(&challenge, PASSWORD, CLIENT);
    answer["ChallengeResponses"]["USERNAME"] = json!(uuid::Uuid::new_v4().to_string());
    app.idp("RespondToAuthChallenge", answer).await.exception("NotAuthorizedException");
    // On the other client, a challenge of its own works.
    let challenge = client.challenge(&app, email, "other").await;
    app.idp("RespondToAuthChallenge", client.answer(&challenge, PASSWORD, "other")).await.ok();

    // Malformed client values are refused before any work.
    for srp_a in ["", "zz", "0", &"f".repeat(2000)] {
        app.idp(
            "InitiateAuth",
            json!({"ClientId": CLIENT, "AuthFlow": "USER_SRP_AUTH", "AuthParameters": {"USERNAME": email, "SRP_A": srp_a}}),
        )
        .await
        .exception("InvalidParameterException");
    }
    let challenge = client.challenge(&app, email, CLIENT).await;
    let mut answer = client.answer(&challenge, PASSWORD, CLIENT);
    answer["ChallengeResponses"]["TIMESTAMP"] = json!("yesterday");
    app.idp("RespondToAuthChallenge", answer).await.exception("InvalidParameterException");
}

async fn srp_verifiers_follow_every_password_change(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client = SrpClient::new();

    // A password set through v1, users or graphql has a verifier too.
    app.v1_verified_user("v1-srp@example.com").await;
    client.sign_in(&app, "v1-srp@example.com", PASSWORD).await.ok();
    app.users_activated("users-srp@example.com").await;
    client.sign_in(&app, "users-srp@example.com", PASSWORD).await.ok();
    let registered = graphql(&app, r#"mutation { registerEmail(email: "gql-srp@example.com") { exitcode } }"#).await;
    assert_eq!(registered.body["data"]["registerEmail"]["exitcode"], 0, "{}", registered.body);
    let code = app.mail.next_mail("gql-srp@example.com").await.code();
    let verified = graphql(&app, &format!(
        r#"mutation {{ verifyCode(email: "gql-srp@example.com", code: "{code}", password: "{PASSWORD}") {{ exitcode }} }}"#
    ))
    .await;
    assert_eq!(verified.body["data"]["verifyCode"]["exitcode"], 0, "{}", verified.body);
    client.sign_in(&app, "gql-srp@example.com", PASSWORD).await.ok();

    // After a change and a reset, only the newest password proves.
    let email = "srp-changer@example.com";
    app.cognito_user(email).await;
    let tokens = app.cognito_tokens(email, PASSWORD).await;
    app.idp(
        "ChangePassword",
        json!({"PreviousPassword": PASSWORD, "ProposedPassword": "a new passphrase", "AccessToken": tokens.access}),
    )
    .await
    .ok();
    client.sign_in(&app, email, PASSWORD).await.exception("NotAuthorizedException");
    client.sign_in(&app, email, "a new passphrase").await.ok();
    app.idp("ForgotPassword", json!({"ClientId": CLIENT, "Username": email})).await.ok();
    let code = app.mail.next_mail(email).await.code();
    app.idp(
        "ConfirmForgotPassword",
        json!({"ClientId": CLIENT, "Username": email, "ConfirmationCode": code, "Password": "the reset passphrase"}),
    )
    .await
    .ok();
    client.sign_in(&app, email, "a new passphrase").await.exception("NotAuthorizedException");
    client.sign_in(&app, email, "the reset passphrase").await.ok();
}

async fn srp_wrong_proofs_count_as_failed_sign_ins(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.rate_limit = true).await;
    let email = "srp-guessed@example.com";
    app.cognito_user(email).await;
    let client = SrpClient::new();
    for _ in 0..10 {
        client.sign_in(&app, email, "wrong password").await.exception("NotAuthorizedException");
    }
    // The account is now limited for this address, on both flows.
    let challenge = app
        .idp(
            "InitiateAuth",
            json!({"ClientId": CLIENT, "AuthFlow": "USER_SRP_AUTH", "AuthParameters": {"USERNAME": email, "SRP_A": client.public()}}),
        )
        .await;
    let limited = app.idp("RespondToAuthChallenge", client.answer(&challenge.ok(), PASSWORD, CLIENT)).await;
    limited.exception("LimitExceededException");
    app.cognito_sign_in(email, PASSWORD).await.exception("LimitExceededException");
}

async fn internal_failures_are_500_without_detail(backend: Backend) {
    use sqlx::Connection;
    let app = TestApp::spawn(backend).await;
    let email = "unlucky@example.com";
    app.cognito_user(email).await;
    let tokens = app.cognito_tokens(email, PASSWORD).await;
    let sql = "ALTER TABLE sessions RENAME TO sessions_gone";
    match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&app.database_url).await.expect("sqlite");
            sqlx::raw_sql(sql).execute(&mut conn).await.expect("sql");
            let _ = conn.close().await;
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&app.database_url).await.expect("postgres");
            sqlx::raw_sql(sql).execute(&mut conn).await.expect("sql");
            let _ = conn.close().await;
        }
    }
    for answer in [app.cognito_sign_in(email, PASSWORD).await, app.cognito_get_user(&tokens.access).await] {
        assert_eq!(answer.status, 500, "{}", answer.body);
        assert_eq!(answer.header("x-amzn-errortype"), Some("InternalErrorException"));
        assert_eq!(answer.body, json!({"__type": "InternalErrorException", "message": "Internal server error."}));
    }
}

async fn a_second_sign_up_takes_over_an_unconfirmed_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "claimed@example.com";
    // Someone else registers the address first and never confirms it.
    let first = app.cognito_sign_up(email, "the squatter's password").await.ok();
    let squatter_code = app.mail.next_mail(email).await.code();
    let squatter = app.cognito_sign_in(email, "the squatter's password").await;
    squatter.exception("UserNotConfirmedException");

    // The owner signs up: the same account, a fresh code, and only the owner's password.
    let second = app.cognito_sign_up(email, PASSWORD).await.ok();
    assert_eq!(second["UserSub"], first["UserSub"]);
    assert_eq!(second["UserConfirmed"], false);
    let code = app.mail.next_mail(email).await.code();
    if code != squatter_code {
        app.cognito_confirm(email, &squatter_code).await.exception("CodeMismatchException");
    }
    app.cognito_confirm(email, &code).await.ok();
    assert_eq!(
        app.cognito_sign_in(email, "the squatter's password").await.exception("NotAuthorizedException"),
        INCORRECT
    );
    app.cognito_tokens(email, PASSWORD).await;
    SrpClient::new().sign_in(&app, email, PASSWORD).await.ok();
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = $1", email).await, 1);

    // Once confirmed, the address is taken.
    app.cognito_sign_up(email, "a third password").await.exception("UsernameExistsException");
    app.cognito_tokens(email, PASSWORD).await;
}

/// `POST /graphql` with `document` (to set a password through the graphql surface).
async fn graphql(app: &TestApp, document: &str) -> ApiResponse {
    app.send_json(Method::POST, "/graphql", &json!({ "query": document })).await
}

/// Seed 000 end to end: the Amplify app signs up, confirms and signs in through the Cognito
/// protocol, reports to its server's socket with the tokens and its `cogId` from `GetId`; a
/// `GlobalSignOut` is pushed to that socket.
async fn the_seed_000_flow_with_its_socket(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "seed@example.com";
    app.cognito_user(email).await;
    let tokens = app.cognito_tokens(email, PASSWORD).await;
    let issuer = app.base.trim_start_matches("http://").to_owned();
    let cog_id = app
        .amz(IDENTITY, "GetId", json!({"IdentityPoolId": POOL_ID, "Logins": { issuer: tokens.id }}))
        .await
        .ok()["IdentityId"]
        .as_str()
        .expect("IdentityId")
        .to_owned();
    let seed_tokens = crate::helpers::Tokens {
        access: tokens.access.clone(),
        id: tokens.id.clone(),
        refresh: tokens.refresh.clone(),
    };

    let mut socket = app.ws_connect().await;
    let reply = socket.request(&crate::helpers::signup_frame(&cog_id, email, &seed_tokens)).await;
    assert_eq!(reply["action"], "user-signup", "{reply}");
    assert_eq!(reply["message"]["message"], "user created", "{reply}");
    assert_eq!(
        reply["message"]["user"],
        json!({"cogId": cog_id, "username": email, "email": email, "loggedIn": true}),
        "{reply}"
    );
    let sender = reply["sender"].clone();

    // A cogId that is not this user's is refused, and the socket stays signed in.
    let wrong = socket
        .request(&crate::helpers::signup_frame("local-1:00000000-0000-4000-8000-000000000000", email, &seed_tokens))
        .await;
    assert!(wrong.get("error").is_some(), "{wrong}");

    assert_eq!(app.idp("GlobalSignOut", json!({"AccessToken": tokens.access})).await.ok(), json!({}));
    let sid = seed_tokens.sid();
    assert_eq!(
        socket.next_frame().await,
        json!({"sender": sender, "action": "session-revoked", "message": {"sid": sid}})
    );
    app.cognito_get_user(&tokens.access).await.exception("NotAuthorizedException");
}
