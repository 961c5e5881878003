//! Request bodies of every surface: a fuzz-chosen route, body, content type and cookie sent
//! through the real router. No input may make the server answer 5xx or panic.
#![no_main]

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;

/// Method and path of every route that reads a request (the `{owner}` and `{id}` segments
/// are filled from the input).
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/users/signup"),
    ("POST", "/api/users/signin"),
    ("PATCH", "/api/users/requestactivation"),
    ("PATCH", "/api/users/activate"),
    ("GET", "/api/users/currentuser"),
    ("POST", "/api/users/signout"),
    ("POST", "/auth/signup"),
    ("POST", "/auth/signin"),
    ("GET", "/auth/signout"),
    ("POST", "/auth/session/refresh"),
    ("GET", "/auth/user"),
    ("POST", "/graphql"),
    ("POST", "/projects/api/users/signup"),
    ("POST", "/projects/api/users/login"),
    ("POST", "/projects/api/users/{owner}/accounts/signup"),
    ("POST", "/projects/api/users/{owner}/accounts/login"),
    ("GET", "/projects/api/users/{owner}/keys"),
    ("POST", "/projects/api/users/{owner}/keys"),
    ("DELETE", "/projects/api/users/{owner}/keys/{id}"),
    ("POST", "/"),
    ("OPTIONS", "/"),
    ("POST", "/v1/signup"),
    ("POST", "/v1/sessions"),
    ("GET", "/v1/sessions"),
    ("DELETE", "/v1/sessions/current"),
    ("DELETE", "/v1/sessions/{id}"),
    ("POST", "/v1/token/refresh"),
    ("GET", "/v1/me"),
    ("POST", "/v1/me/delete"),
    ("POST", "/v1/email/verification"),
    ("POST", "/v1/email/verification/request"),
    ("POST", "/v1/email/change"),
    ("POST", "/v1/email/change/confirm"),
    ("POST", "/v1/password/change"),
    ("POST", "/v1/password/forgot"),
    ("POST", "/v1/password/reset"),
    ("GET", "/ws"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/.well-known/openid-configuration"),
];

/// `X-Amz-Target` values of the `cognito` surface.
const TARGETS: &[&str] = &[
    "AWSCognitoIdentityProviderService.SignUp",
    "AWSCognitoIdentityProviderService.ConfirmSignUp",
    "AWSCognitoIdentityProviderService.ResendConfirmationCode",
    "AWSCognitoIdentityProviderService.InitiateAuth",
    "AWSCognitoIdentityProviderService.RespondToAuthChallenge",
    "AWSCognitoIdentityProviderService.GetTokensFromRefreshToken",
    "AWSCognitoIdentityProviderService.GetUser",
    "AWSCognitoIdentityProviderService.GlobalSignOut",
    "AWSCognitoIdentityProviderService.RevokeToken",
    "AWSCognitoIdentityProviderService.ForgotPassword",
    "AWSCognitoIdentityProviderService.ConfirmForgotPassword",
    "AWSCognitoIdentityProviderService.ChangePassword",
    "AWSCognitoIdentityService.GetId",
    "AWSCognitoIdentityService.GetCredentialsForIdentity",
];

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/x-amz-json-1.1",
    "application/json; charset=utf-8",
    "application/graphql-response+json",
    "text/plain",
    "application/x-www-form-urlencoded",
];

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    route: u8,
    target: u8,
    /// Index into [`CONTENT_TYPES`]; past its end, `raw_content_type` (or none).
    content_type: u8,
    raw_content_type: &'a str,
    cookie: Option<&'a str>,
    authorization: Option<&'a str>,
    segment: &'a str,
    body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let h = latchkey_fuzz::harness();
    let (method, template) = ROUTES[usize::from(input.route) % ROUTES.len()];
    let segment: String = input.segment.chars().filter(char::is_ascii_alphanumeric).take(64).collect();
    let segment = if segment.is_empty() { "x".to_owned() } else { segment };
    let path = template.replace("{owner}", &segment).replace("{id}", &segment);
    let mut request = Request::builder().method(method).uri(&path);
    let content_type = CONTENT_TYPES
        .get(usize::from(input.content_type))
        .copied()
        .or_else(|| (input.content_type % 2 == 0).then_some(input.raw_content_type));
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    if path == "/" {
        request = request.header("x-amz-target", TARGETS[usize::from(input.target) % TARGETS.len()]);
    }
    if let Some(cookie) = input.cookie {
        request = request.header("cookie", cookie);
    }
    if let Some(auth) = input.authorization {
        request = request.header("authorization", auth);
    }
    // Header values the http crate refuses never reach a server.
    let Ok(request) = request.body(Body::from(input.body.to_vec())) else { return };
    let (response, body) = h.send(request);
    latchkey_fuzz::assert_not_server_error(&format!("{method} {path}"), response.status(), &body);
});
