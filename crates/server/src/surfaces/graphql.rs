//! The `graphql` surface: `POST /graphql`, seed `003_1fe24f0756f9cc04.txt` as pinned down by
//! API.md `graphql`; `GET /graphql` serves GraphiQL, from files embedded in the binary
//! (`crates/server/assets/graphiql/`, served under `/graphql/assets/`), so the page loads
//! nothing from another origin.
//!
//! The seed's six mutations (`registerEmail`, `requestNewCode`, `isCodeValid`, `verifyCode`,
//! `loginUser`, `logoutUser`) answer `{exitcode, msg}` (plus `token` or `isvalid`) with the
//! seed's exit codes, and `query { me(token) { id email } }` tells who a token belongs to.
//! The flow is passwordless first: `registerEmail` creates a user without a password and mails
//! a code, `verifyCode` sets the password with it and signs in. `token` is an access JWT of the
//! session (audience `graphql`) that lives as long as the session and dies with it.
//!
//! Outcomes of the core become exit codes in one function, [`outcome`]; what the seed has no
//! exit code for (rate limits, a busy server, internal failures outside a storage step) is a
//! GraphQL error with `extensions.code`. Unreadable requests (not JSON, malformed, too large)
//! get a GraphQL-shaped `{"errors":[...]}` body with a 4xx status; documents that do not parse
//! or validate get GraphQL errors, with 400 for clients that accept
//! `application/graphql-response+json` and 200 for `application/json` ones (GraphQL over
//! HTTP). The committed schema is `crates/server/schema.graphql`.
//!
//! Clients send the same few documents over and over with different variables, so documents
//! that parsed are kept, parsed, by their text ([`ParsedDocuments`]); validation still runs on
//! every request, with that request's variables.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{
    Context, EmptySubscription, ErrorExtensions, ID, Object, Request as GraphqlRequest, Response as GraphqlResponse,
    Schema, SchemaBuilder, SimpleObject, Variables,
};
use async_graphql_axum::GraphQLResponse;
use axum::extract::{FromRef, Path, Request, State};
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use latchkey_core::code::{CodePurpose, OneTimeCode};
use latchkey_core::identity::{Email, PresentedPassword, TenantId};
use latchkey_core::session::ClientMeta;
use latchkey_core::{Auth, Delivery, Error, Registration, RegistrationStep};
use serde::Deserialize;

use crate::context::{Mounted, SurfaceContext};
use crate::http::origin::PAGE_CSP;
use crate::http::{BodyError, Client, ClientAddressPolicy, read_json};

/// The audience (`aud`) of the tokens this surface issues and accepts.
const AUDIENCE: &str = "graphql";
/// The surface's one route.
const PATH: &str = "/graphql";
/// How long `registerEmail` waits for the first delivery attempt of its code mail (the seed
/// reports mail failures with exit code 8; the mail is retried in the background anyway).
const MAIL_WAIT: Duration = Duration::from_secs(10);
/// Deepest selection set accepted (GraphiQL's introspection query needs 13).
const MAX_DEPTH: usize = 20;
/// Largest query complexity accepted (one per field; GraphiQL's introspection query is well
/// below it).
const MAX_COMPLEXITY: usize = 500;

/// The surface's schema.
type LatchkeySchema = Schema<Query, Mutation, EmptySubscription>;

/// What the handlers use.
#[derive(Clone, FromRef)]
struct GraphqlState {
    schema: LatchkeySchema,
    clients: ClientAddressPolicy,
    documents: Arc<ParsedDocuments>,
}

/// Longest document text kept parsed, in bytes: the documents an application sends are a few
/// hundred bytes; longer ones are parsed on every request.
const MAX_CACHED_DOCUMENT: usize = 4 * 1024;
/// Total document text kept parsed, in bytes (the parsed form takes several times its text).
const DOCUMENT_CACHE_BYTES: u64 = 512 * 1024;

/// Weighs a kept document by its text's length in bytes.
#[derive(Clone, Copy)]
struct TextLength;

impl quick_cache::Weighter<Arc<str>, ExecutableDocument> for TextLength {
    fn weight(&self, text: &Arc<str>, _: &ExecutableDocument) -> u64 {
        text.len() as u64
    }
}

/// Documents that parsed, by their exact text: at most [`DOCUMENT_CACHE_BYTES`] of text, none
/// longer than [`MAX_CACHED_DOCUMENT`], the least recently and frequently used evicted first.
/// Parsing depends on nothing but the text, so a kept document is the one the text would
/// parse to again; a document that fails to parse is not kept (its request gets the same
/// errors each time). Anyone can fill the cache with documents of their own, which costs
/// other clients a parse, never a wrong answer.
struct ParsedDocuments(quick_cache::sync::Cache<Arc<str>, ExecutableDocument, TextLength>);

impl ParsedDocuments {
    fn new() -> Self {
        let typical = 512;
        Self(quick_cache::sync::Cache::with_weighter(
            (DOCUMENT_CACHE_BYTES as usize) / typical,
            DOCUMENT_CACHE_BYTES,
            TextLength,
        ))
    }

    /// `request` with its document parsed: from the cache, or parsed now and kept. A document
    /// that does not parse is left to the schema, which reports why.
    fn prepare(&self, mut request: GraphqlRequest) -> GraphqlRequest {
        if request.query.len() > MAX_CACHED_DOCUMENT {
            return request;
        }
        if let Some(document) = self.0.get(request.query.as_str()) {
            request.set_parsed_query(document);
            return request;
        }
        if let Ok(document) = request.parsed_query() {
            let document = document.clone();
            self.0.insert(Arc::from(request.query.as_str()), document);
        }
        request
    }
}

/// The schema with its limits, without data: what `schema.graphql` describes.
fn schema_builder() -> SchemaBuilder<Query, Mutation, EmptySubscription> {
    Schema::build(Query, Mutation, EmptySubscription).limit_depth(MAX_DEPTH).limit_complexity(MAX_COMPLEXITY)
}

/// `POST /graphql` (GraphQL requests), `GET /graphql` (GraphiQL) and `GET
/// /graphql/assets/{file}` (GraphiQL's scripts and styles).
pub fn mount(ctx: &SurfaceContext) -> anyhow::Result<Mounted> {
    let state = GraphqlState {
        schema: schema_builder().data(ctx.auth.clone()).finish(),
        clients: ctx.clients,
        documents: Arc::new(ParsedDocuments::new()),
    };
    Ok(Mounted::routes(
        Router::new()
            .route(PATH, get(graphiql).post(execute))
            .route(&format!("{PATH}/assets/{{file}}"), get(asset))
            .with_state(state),
    ))
}

/// The GraphiQL page and its files, embedded at build time: `(name, content type, bytes)`.
/// Versions and origin are in `assets/graphiql/README.md`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("graphiql.min.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/graphiql/graphiql.min.js")),
    ("graphiql.min.css", "text/css; charset=utf-8", include_bytes!("../../assets/graphiql/graphiql.min.css")),
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
    ),
    ("graphiql-boot.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/graphiql/graphiql-boot.js")),
    ("graphiql-page.css", "text/css; charset=utf-8", include_bytes!("../../assets/graphiql/graphiql-page.css")),
];

/// `GET /graphql`: the GraphiQL IDE, pointed at this endpoint; it refers only to
/// `/graphql/assets/*`, and its policy ([`PAGE_CSP`]) lets it load nothing else.
async fn graphiql() -> Response {
    let mut response = Html(include_str!("../../assets/graphiql/index.html")).into_response();
    response.headers_mut().insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    response
}

/// `GET /graphql/assets/{file}`: one of [`ASSETS`] with its content type, cacheable for a day
/// (they change only with the binary); any other name is a 404 with the surface's error body.
async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => (
            [
                (CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400")),
                (CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP)),
            ],
            *bytes,
        )
            .into_response(),
        None => {
            let body =
                serde_json::json!({ "errors": [{ "message": "No such file", "extensions": { "code": "NOT_FOUND" } }] });
            (StatusCode::NOT_FOUND, Json(body)).into_response()
        }
    }
}

/// Whether the client accepts `application/graphql-response+json` (GraphQL over HTTP): then
/// requests that fail before execution get a 4xx; legacy `application/json` clients get 200.
fn accepts_graphql_response(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("application/graphql-response+json"))
}

/// A request that never reached the executor: a GraphQL-shaped error body with a 4xx.
fn unreadable(e: &BodyError) -> Response {
    let status = match e {
        BodyError::TooLarge | BodyError::UnsupportedMediaType => e.status(),
        BodyError::Malformed(_) | BodyError::NotAnObject | BodyError::Schema { .. } => StatusCode::BAD_REQUEST,
    };
    let body = serde_json::json!({
        "errors": [{ "message": e.message(), "extensions": { "code": "BAD_REQUEST" } }]
    });
    (status, Json(body)).into_response()
}

/// A GraphQL-over-HTTP request body: `query` is required, `operationName` and `variables`
/// (an object) are optional, other members are ignored. One request per body (no batches).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestBody {
    query: String,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `POST /graphql`: one GraphQL request (`{query, operationName?, variables?}`) as JSON.
async fn execute(State(state): State<GraphqlState>, Client(meta): Client, request: Request) -> Response {
    let modern = accepts_graphql_response(request.headers());
    let body: RequestBody = match read_json(request).await {
        Ok(r) => r,
        Err(e) => return unreadable(&e),
    };
    let mut graphql = GraphqlRequest::new(body.query).data(meta);
    if let Some(name) = body.operation_name {
        graphql = graphql.operation_name(name);
    }
    if let Some(variables) = body.variables {
        graphql = graphql.variables(Variables::from_json(serde_json::Value::Object(variables)));
    }
    let response = state.schema.execute(state.documents.prepare(graphql)).await;
    render(response, modern)
}

/// Executes one GraphQL document (with `variables`, a JSON object or null) against the schema
/// over `auth`, as `POST /graphql` does for a client described by `meta`. For the fuzz
/// targets; the HTTP handler is [`execute`].
#[doc(hidden)]
pub async fn execute_document(
    auth: Auth,
    meta: ClientMeta,
    query: &str,
    variables: serde_json::Value,
) -> GraphqlResponse {
    let schema = schema_builder().data(auth).finish();
    schema.execute(GraphqlRequest::new(query).data(meta).variables(Variables::from_json(variables))).await
}

/// The HTTP response for an executed request. A response without data whose errors carry no
/// path failed to parse or validate: 400 for `application/graphql-response+json` clients.
fn render(response: GraphqlResponse, modern: bool) -> Response {
    let request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let mut http = GraphQLResponse::from(response).into_response();
    if modern {
        if request_error {
            *http.status_mut() = StatusCode::BAD_REQUEST;
        }
    } else {
        http.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    http
}

/// The result of a mutation without a credential: the seed's exit code and a message.
#[derive(Debug, SimpleObject)]
struct ExitStatus {
    /// The seed's exit code: 0 on success.
    exitcode: i32,
    /// What happened, for people.
    msg: String,
}

/// The result of `verifyCode` and `loginUser`.
#[derive(Debug, SimpleObject)]
struct TokenStatus {
    /// The seed's exit code: 0 on success.
    exitcode: i32,
    /// The session's token (a JWT that lives as long as the session) when `exitcode` is 0,
    /// else null.
    token: Option<String>,
    /// What happened, for people.
    msg: String,
}

/// The result of `isCodeValid`.
#[derive(Debug, SimpleObject)]
struct CodeValidity {
    /// The seed's exit code: 0 when the code was checked.
    exitcode: i32,
    /// What happened, for people.
    msg: String,
    /// Whether the code is the valid pending one, when `exitcode` is 0; else null.
    isvalid: Option<bool>,
}

/// The user a token belongs to.
#[derive(Debug, SimpleObject)]
struct Me {
    /// The user's id (a UUID, the token's `sub`).
    id: ID,
    /// The user's email address, as registered.
    email: Option<String>,
}

/// A seed exit code and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Exit {
    code: i32,
    msg: String,
}

impl Exit {
    fn new(code: i32, msg: &str) -> Self {
        Self { code, msg: msg.to_owned() }
    }
}

/// A core outcome the seed has no exit code for, answered as a GraphQL error.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    /// `extensions.code`.
    code: &'static str,
    message: &'static str,
    /// Seconds, also sent as `Retry-After`.
    retry_after: Option<u64>,
}

impl Refusal {
    fn internal() -> Self {
        Self { code: "INTERNAL_SERVER_ERROR", message: "Internal error", retry_after: None }
    }

    /// The GraphQL error, with `Retry-After` on the HTTP response when there is a wait.
    fn into_error(self, ctx: &Context<'_>) -> async_graphql::Error {
        if let Some(secs) = self.retry_after {
            ctx.insert_http_header(RETRY_AFTER, HeaderValue::from(secs));
        }
        let (code, retry_after) = (self.code, self.retry_after);
        async_graphql::Error::new(self.message).extend_with(|_, e| {
            e.set("code", code);
            if let Some(secs) = retry_after {
                e.set("retryAfter", secs);
            }
        })
    }
}

/// The operation a core outcome belongs to: exit codes are per mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    RegisterEmail(RegistrationStep),
    RequestNewCode,
    IsCodeValid,
    VerifyCode,
    LoginUser,
    LogoutUser,
    Me,
}

impl Op {
    /// The exit code the seed gives a storage failure of this operation, if it has one.
    fn storage_failure(self) -> Option<Exit> {
        match self {
            Op::RegisterEmail(RegistrationStep::User) => Some(Exit::new(6, "Error adding new user to user database")),
            Op::RegisterEmail(RegistrationStep::Code) => {
                Some(Exit::new(700, "Error adding code to pending_signups database"))
            }
            Op::RequestNewCode => Some(Exit::new(700, "Error writing code to database")),
            Op::VerifyCode => Some(Exit::new(5, "Error adding user to database")),
            Op::LogoutUser => Some(Exit::new(3, "Error deleting token from database")),
            Op::IsCodeValid | Op::LoginUser | Op::Me => None,
        }
    }
}

/// The one mapping from core outcomes to this surface's answers: a seed exit code, or a GraphQL
/// error where the seed has none. Every variant is named.
fn outcome(op: Op, error: Error) -> Result<Exit, Refusal> {
    let unexpected = |error: &Error| {
        tracing::error!(operation = ?op, outcome = error.code(), "unexpected core outcome");
        Err(Refusal::internal())
    };
    let exit = match &error {
        Error::InvalidInput(fields) if op == Op::VerifyCode => {
            let why = fields.first().map_or("must be between 8 and 128 characters", |f| f.message.as_str());
            // The seed's exit 4 is "Password too short"; a common password is refused under the
            // same code, with its own reason.
            let what = if why.starts_with("must be between") { "too short" } else { "too weak" };
            Exit { code: 4, msg: format!("Password {what}: the password {why}") }
        }
        Error::InvalidInput(_) => return unexpected(&error),
        Error::EmailTaken | Error::UsernameTaken | Error::ExternalIdTaken => match op {
            Op::RegisterEmail(_) => Exit::new(3, "Email already belongs to a full user"),
            _ => return unexpected(&error),
        },
        // A user imported without a password reads like a wrong password: this seed has no
        // other answer.
        Error::InvalidCredentials | Error::PasswordResetRequired | Error::UserDisabled => match op {
            Op::LoginUser => Exit::new(3, "Incorrect password"),
            Op::LogoutUser => Exit::new(2, "Token not found"),
            _ => return unexpected(&error),
        },
        Error::NotVerified => match op {
            Op::LoginUser => Exit::new(200, "Email address not verified yet: finish signing up with the code"),
            _ => return unexpected(&error),
        },
        Error::AlreadyVerified => match op {
            Op::VerifyCode => Exit::new(6, "Email has already been verified"),
            Op::RequestNewCode | Op::IsCodeValid => Exit::new(2, "User never requested a code"),
            _ => return unexpected(&error),
        },
        Error::UserNotFound | Error::TenantNotFound => match op {
            Op::RequestNewCode | Op::IsCodeValid => Exit::new(2, "User never requested a code"),
            Op::VerifyCode => Exit::new(200, "Email not registered"),
            Op::LoginUser => {
                Exit::new(200, "Given email address is not associated with any user. Please sign up first.")
            }
            _ => return unexpected(&error),
        },
        Error::NoCodePending | Error::CodeExpired => match op {
            Op::VerifyCode => Exit::new(500, "Code timed out: request a new code"),
            Op::IsCodeValid => Exit::new(0, "Code checked: it has expired"),
            Op::RequestNewCode => Exit::new(2, "User never requested a code"),
            _ => return unexpected(&error),
        },
        Error::CodeMismatch { .. } => match op {
            Op::VerifyCode => Exit::new(3, "Incorrect code"),
            Op::IsCodeValid => Exit::new(0, "Code checked: it is not valid"),
            _ => return unexpected(&error),
        },
        Error::InvalidToken | Error::TokenExpired | Error::SessionRevoked | Error::RefreshTokenReused => match op {
            Op::LogoutUser => Exit::new(2, "Token not found"),
            _ => return unexpected(&error),
        },
        Error::RateLimited { retry_after } => {
            return Err(Refusal {
                code: "TOO_MANY_REQUESTS",
                message: "Too many requests, please try again later",
                retry_after: Some(retry_after.as_secs().max(1)),
            });
        }
        Error::Overloaded { retry_after } => {
            return Err(Refusal {
                code: "SERVICE_UNAVAILABLE",
                message: "The server is busy, please try again later",
                retry_after: Some(retry_after.as_secs().max(1)),
            });
        }
        Error::Internal(source) => {
            tracing::error!(operation = ?op, error = %source, "internal error");
            return op.storage_failure().ok_or_else(Refusal::internal);
        }
    };
    Ok(exit)
}

/// An invalid argument the seed has no exit code for (a code that is not six digits, a
/// password longer than any can be): a GraphQL error.
fn bad_input(argument: &'static str, message: &str) -> async_graphql::Error {
    async_graphql::Error::new(format!("{argument}: {message}")).extend_with(|_, e| {
        e.set("code", "BAD_USER_INPUT");
        e.set("argument", argument);
    })
}

fn auth<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Auth> {
    ctx.data::<Auth>()
}

fn client(ctx: &Context<'_>) -> ClientMeta {
    ctx.data_opt::<ClientMeta>().cloned().unwrap_or_default()
}

/// `{exitcode, msg}` from an outcome.
fn status(result: Result<Exit, Refusal>, ctx: &Context<'_>) -> async_graphql::Result<ExitStatus> {
    result.map(|e| ExitStatus { exitcode: e.code, msg: e.msg }).map_err(|r| r.into_error(ctx))
}

/// The session's token, or the failure's exit code.
async fn signed_in_token(
    auth: &Auth,
    op: Op,
    signed_in: Result<latchkey_core::SignedIn, Error>,
) -> Result<(String, Exit), Refusal> {
    let result = match signed_in {
        Ok(s) => auth.session_token(&s.session, &s.user, AUDIENCE).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(token) => Ok((token, Exit::new(0, ""))),
        Err(e) => outcome(op, e).map(|exit| (String::new(), exit)),
    }
}

/// A `{exitcode, token, msg}` from a sign-in's outcome: `token` only with exit code 0.
fn token_status(
    result: Result<(String, Exit), Refusal>,
    ok_msg: &str,
    ctx: &Context<'_>,
) -> async_graphql::Result<TokenStatus> {
    match result {
        Ok((token, exit)) if exit.code == 0 => {
            Ok(TokenStatus { exitcode: 0, token: Some(token), msg: ok_msg.to_owned() })
        }
        Ok((_, exit)) => Ok(TokenStatus { exitcode: exit.code, token: None, msg: exit.msg }),
        Err(r) => Err(r.into_error(ctx)),
    }
}

/// The queries.
#[derive(Debug, Default)]
struct Query;

#[Object]
impl Query {
    /// The user the token belongs to, or null when the token is not a live session's
    /// (malformed, foreign, expired, signed out or revoked anywhere).
    async fn me(&self, ctx: &Context<'_>, token: String) -> async_graphql::Result<Option<Me>> {
        match auth(ctx)?.authenticate(&token, &[AUDIENCE]).await {
            Ok(a) => Ok(Some(Me { id: ID(a.user.id.to_string()), email: a.user.email.as_ref().map(Email::to_string) })),
            Err(e @ Error::Internal(_)) => {
                Err(outcome(Op::Me, e).err().unwrap_or_else(Refusal::internal).into_error(ctx))
            }
            Err(_) => Ok(None),
        }
    }
}

/// The seed's mutations.
#[derive(Debug, Default)]
struct Mutation;

#[Object]
impl Mutation {
    /// Registers the address as a user without a password and mails it a code. Exit codes:
    /// 0 registered and mailed; 2 not a valid email address; 3 the address belongs to a full
    /// user; 4 a code was sent and is still valid (use it or request a new one); 500 a code was
    /// sent and has expired (request a new one); 6 error adding the user; 700 error storing
    /// the code; 8 error sending the mail (the user is registered: request a new code).
    async fn register_email(&self, ctx: &Context<'_>, email: String) -> async_graphql::Result<ExitStatus> {
        let Ok(email) = Email::parse(&email) else {
            return status(Ok(Exit::new(2, "Email entered is not a valid email address")), ctx);
        };
        let result = match auth(ctx)?.register_email(TenantId::DEFAULT, &email, &client(ctx)).await {
            Ok(Registration::CodeSent(receipt)) => {
                match tokio::time::timeout(MAIL_WAIT, receipt.first_attempt()).await {
                    Ok(Delivery::Sent) => {
                        Ok(Exit::new(0, "Email successfully registered. Code successfully emailed to user"))
                    }
                    Ok(Delivery::Failed) | Err(_) => Ok(Exit::new(8, "Error while sending email: request a new code")),
                }
            }
            Ok(Registration::FullUser) => Ok(Exit::new(3, "Email already belongs to a full user")),
            Ok(Registration::CodeStillValid) => {
                Ok(Exit::new(4, "Email has already been sent a code which is still valid: use it or request a new one"))
            }
            Ok(Registration::CodeExpired) => {
                Ok(Exit::new(500, "Email has already been sent a code, but it has expired: request a new code"))
            }
            Err(failed) => outcome(Op::RegisterEmail(failed.step), failed.error),
        };
        status(result, ctx)
    }

    /// Mails a fresh code to a registered address that has no password yet; the previous
    /// code stops working. Exit codes: 0 sent; 2 the address never requested a code (unknown,
    /// or a full user); 700 error storing the code.
    async fn request_new_code(&self, ctx: &Context<'_>, email: String) -> async_graphql::Result<ExitStatus> {
        let Ok(email) = Email::parse(&email) else {
            return status(Ok(Exit::new(2, "User never requested a code")), ctx);
        };
        let result = match auth(ctx)?.request_new_code(TenantId::DEFAULT, &email).await {
            Ok(_) => Ok(Exit::new(0, "New code generated successfully. Please check your email.")),
            Err(e) => outcome(Op::RequestNewCode, e),
        };
        status(result, ctx)
    }

    /// Whether `code` is the address's pending code, without using it up; a wrong guess counts
    /// against the code like any other (the fifth burns it). Exit codes: 0 checked, see
    /// `isvalid`; 2 the address never requested a code. `code` must be six digits.
    async fn is_code_valid(
        &self,
        ctx: &Context<'_>,
        email: String,
        code: String,
    ) -> async_graphql::Result<CodeValidity> {
        let code = OneTimeCode::parse(&code).map_err(|e| bad_input("code", &e.0))?;
        let result = match Email::parse(&email) {
            Err(_) => Ok((false, Exit::new(2, "User never requested a code"))),
            Ok(email) => {
                match auth(ctx)?
                    .check_code(TenantId::DEFAULT, &email, CodePurpose::VerifyEmail, code, &client(ctx))
                    .await
                {
                    Ok(true) => Ok((true, Exit::new(0, "Code checked: it is valid"))),
                    Ok(false) => Ok((false, Exit::new(0, "Code checked: it is not valid"))),
                    Err(e) => outcome(Op::IsCodeValid, e).map(|exit| (false, exit)),
                }
            }
        };
        match result {
            Ok((valid, exit)) => {
                Ok(CodeValidity { isvalid: (exit.code == 0).then_some(valid), exitcode: exit.code, msg: exit.msg })
            }
            Err(r) => Err(r.into_error(ctx)),
        }
    }

    /// Sets the first password with the mailed code, verifies the address and signs in.
    /// Checked in this order: 200 email not registered; 6 already verified; 4 password too
    /// short (or too long); 500 code timed out (or burnt by wrong guesses); 3 incorrect code;
    /// 5 error storing the user; 0 success, with `token`. `code` must be six digits.
    async fn verify_code(
        &self,
        ctx: &Context<'_>,
        email: String,
        code: String,
        password: String,
    ) -> async_graphql::Result<TokenStatus> {
        let code = OneTimeCode::parse(&code).map_err(|e| bad_input("code", &e.0))?;
        let auth = auth(ctx)?;
        let signed_in = match Email::parse(&email) {
            Err(_) => Err(Error::UserNotFound),
            Ok(email) => {
                let password = auth.settings().password_policy.parse(&password);
                auth.complete_registration(TenantId::DEFAULT, &email, code, password, &client(ctx)).await
            }
        };
        let result = signed_in_token(auth, Op::VerifyCode, signed_in).await;
        token_status(result, "Code successfully verified. Password stored. Token returned", ctx)
    }

    /// Signs in with email and password. Exit codes: 0 signed in, with `token`; 200 no user
    /// with that address (or one still without a password); 3 incorrect password.
    async fn login_user(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> async_graphql::Result<TokenStatus> {
        let password = PresentedPassword::parse(&password).map_err(|e| bad_input("password", &e.0))?;
        let auth = auth(ctx)?;
        let signed_in = match Email::parse(&email) {
            Err(_) => Err(Error::UserNotFound),
            Ok(email) => auth.sign_in_telling_unknown(TenantId::DEFAULT, &email, &password, &client(ctx)).await,
        };
        let result = signed_in_token(auth, Op::LoginUser, signed_in).await;
        token_status(result, "User successfully logged in. Token returned", ctx)
    }

    /// Signs the token's session out. Exit codes: 0 signed out; 2 token not found (invalid,
    /// expired or already signed out); 3 error revoking the session.
    async fn logout_user(&self, ctx: &Context<'_>, token: String) -> async_graphql::Result<ExitStatus> {
        let auth = auth(ctx)?;
        let result = match auth.authenticate(&token, &[AUDIENCE]).await {
            Ok(a) => match auth.sign_out(&a.session).await {
                Ok(true) => Ok(Exit::new(0, "Token found and user logged out successfully")),
                Ok(false) => outcome(Op::LogoutUser, Error::SessionRevoked),
                Err(e) => outcome(Op::LogoutUser, e),
            },
            Err(e) => outcome(Op::LogoutUser, e),
        };
        status(result, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the committed schema lives, relative to this crate.
    const SCHEMA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");

    #[test]
    fn the_committed_schema_is_the_code_s_schema() {
        let sdl = schema_builder().finish().sdl();
        if std::env::var("LATCHKEY_UPDATE_SCHEMA").is_ok_and(|v| v == "1") {
            std::fs::write(SCHEMA_FILE, &sdl).expect("write schema.graphql");
        }
        let committed = std::fs::read_to_string(SCHEMA_FILE).unwrap_or_default();
        assert!(
            committed == sdl,
            "crates/server/schema.graphql differs from the code's schema; regenerate it with \
             `LATCHKEY_UPDATE_SCHEMA=1 cargo test -p latchkey --lib graphql` and commit it"
        );
    }

    #[test]
    fn every_core_error_maps_to_an_exit_code_or_a_graphql_error() {
        let storage = |op| outcome(op, Error::internal("disk on fire"));
        assert_eq!(storage(Op::RegisterEmail(RegistrationStep::User)).map(|e| e.code), Ok(6));
        assert_eq!(storage(Op::RegisterEmail(RegistrationStep::Code)).map(|e| e.code), Ok(700));
        assert_eq!(storage(Op::RequestNewCode).map(|e| e.code), Ok(700));
        assert_eq!(storage(Op::VerifyCode).map(|e| e.code), Ok(5));
        assert_eq!(storage(Op::LogoutUser).map(|e| e.code), Ok(3));
        assert_eq!(storage(Op::LoginUser).map_err(|r| r.code), Err("INTERNAL_SERVER_ERROR"));
        let limited = outcome(Op::LoginUser, Error::RateLimited { retry_after: Duration::from_millis(1500) });
        assert_eq!(limited.map_err(|r| (r.code, r.retry_after)), Err(("TOO_MANY_REQUESTS", Some(1))));
        let busy = outcome(Op::VerifyCode, Error::Overloaded { retry_after: Duration::from_secs(3) });
        assert_eq!(busy.map_err(|r| (r.code, r.retry_after)), Err(("SERVICE_UNAVAILABLE", Some(3))));
        let verify = |e| outcome(Op::VerifyCode, e).map(|e| e.code);
        assert_eq!(verify(Error::UserNotFound), Ok(200));
        assert_eq!(verify(Error::AlreadyVerified), Ok(6));
        assert_eq!(verify(Error::invalid("password", "must be between 8 and 128 characters")), Ok(4));
        assert_eq!(verify(Error::CodeExpired), Ok(500));
        assert_eq!(verify(Error::NoCodePending), Ok(500));
        assert_eq!(verify(Error::CodeMismatch { attempts_left: 3 }), Ok(3));
        assert_eq!(outcome(Op::LoginUser, Error::InvalidCredentials).map(|e| e.code), Ok(3));
        assert_eq!(outcome(Op::LoginUser, Error::PasswordResetRequired).map(|e| e.code), Ok(3));
        assert_eq!(outcome(Op::LoginUser, Error::UserNotFound).map(|e| e.code), Ok(200));
        assert_eq!(outcome(Op::LogoutUser, Error::SessionRevoked).map(|e| e.code), Ok(2));
        assert_eq!(outcome(Op::Me, Error::EmailTaken).map_err(|r| r.code), Err("INTERNAL_SERVER_ERROR"));
    }
}
