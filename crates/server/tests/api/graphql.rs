//! The `graphql` surface: the seed's six mutations and their exit codes, `me`, the token's
//! life, failures of storage and mail, protocol-level bad input, and the same users seen
//! through `users` and `v1`. Every request is a real GraphQL document over HTTP.

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::{ApiResponse, Backend, PASSWORD, TestApp, jwt_parts, send, users_signup_body};
use crate::on_both_backends;

/// A GraphQL string literal (JSON's escapes are GraphQL's).
fn lit(s: &str) -> String {
    Value::from(s).to_string()
}

/// `POST /graphql` with `{"query": document}`.
async fn graphql(app: &TestApp, document: &str) -> ApiResponse {
    app.send_json(Method::POST, "/graphql", &json!({ "query": document })).await
}

/// Runs a document that must execute without errors and returns `data.<field>`.
async fn data(app: &TestApp, document: &str, field: &str) -> Value {
    let response = graphql(app, document).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(response.body.get("errors").is_none(), "{document}: {}", response.body);
    response.body["data"][field].clone()
}

async fn register_email(app: &TestApp, email: &str) -> Value {
    let doc = format!("mutation {{ registerEmail(email: {}) {{ exitcode msg }} }}", lit(email));
    data(app, &doc, "registerEmail").await
}

async fn request_new_code(app: &TestApp, email: &str) -> Value {
    let doc = format!("mutation {{ requestNewCode(email: {}) {{ exitcode msg }} }}", lit(email));
    data(app, &doc, "requestNewCode").await
}

async fn is_code_valid(app: &TestApp, email: &str, code: &str) -> Value {
    let doc =
        format!("mutation {{ isCodeValid(email: {}, code: {}) {{ exitcode msg isvalid }} }}", lit(email), lit(code));
    data(app, &doc, "isCodeValid").await
}

async fn verify_code(app: &TestApp, email: &str, code: &str, password: &str) -> Value {
    let doc = format!(
        "mutation {{ verifyCode(email: {}, code: {}\n password: {}) {{ exitcode token msg }} }}",
        lit(email),
        lit(code),
        lit(password)
    );
    data(app, &doc, "verifyCode").await
}

async fn login_user(app: &TestApp, email: &str, password: &str) -> Value {
    let doc = format!(
        "mutation {{ loginUser(email: {}, password: {}) {{ exitcode token msg }} }}",
        lit(email),
        lit(password)
    );
    data(app, &doc, "loginUser").await
}

async fn logout_user(app: &TestApp, token: &str) -> Value {
    let doc = format!("mutation {{ logoutUser(token: {}) {{ exitcode msg }} }}", lit(token));
    data(app, &doc, "logoutUser").await
}

async fn me(app: &TestApp, token: &str) -> Value {
    data(app, &format!("query {{ me(token: {}) {{ id email }} }}", lit(token)), "me").await
}

fn exit(result: &Value) -> i64 {
    result["exitcode"].as_i64().unwrap_or_else(|| panic!("no exitcode: {result}"))
}

fn wrong(code: &str) -> &'static str {
    if code == "111111" { "222222" } else { "111111" }
}

/// Registers and verifies `email` through `graphql`; returns the token.
async fn graphql_user(app: &TestApp, email: &str) -> String {
    assert_eq!(exit(&register_email(app, email).await), 0);
    let code = app.mail.next_mail(email).await.code();
    let verified = verify_code(app, email, &code, PASSWORD).await;
    assert_eq!(exit(&verified), 0, "{verified}");
    verified["token"].as_str().expect("token").to_owned()
}

/// Runs SQL on the test database, no parameters, several statements allowed.
async fn break_database(app: &TestApp, sql: &'static str) {
    match app.backend {
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
}

async fn the_seed_flow_from_registration_to_logout(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "you@yourmail.de";
    let registered = register_email(&app, email).await;
    assert_eq!(registered, json!({"exitcode": 0, "msg": registered["msg"]}));
    let mail = app.mail.next_mail(email).await;
    assert_eq!(mail.to, [email]);
    assert!(mail.subject().contains("verification code"), "{}", mail.subject());
    let code = mail.code();
    assert_eq!(exit(&register_email(&app, "YOU@yourmail.de").await), 4, "a code is still valid");
    assert_eq!(exit(&login_user(&app, email, PASSWORD).await), 200, "a pending user has no password yet");

    let invalid = is_code_valid(&app, email, wrong(&code)).await;
    assert_eq!((exit(&invalid), &invalid["isvalid"]), (0, &json!(false)));
    let valid = is_code_valid(&app, email, &code).await;
    assert_eq!((exit(&valid), &valid["isvalid"]), (0, &json!(true)));

    let short = verify_code(&app, email, &code, "short").await;
    assert_eq!((exit(&short), &short["token"]), (4, &Value::Null), "{short}");
    let common = verify_code(&app, email, &code, "password123").await;
    assert_eq!((exit(&common), &common["token"]), (4, &Value::Null), "{common}");
    assert!(common["msg"].as_str().is_some_and(|m| m.contains("most common")), "{common}");
    let incorrect = verify_code(&app, email, wrong(&code), PASSWORD).await;
    assert_eq!((exit(&incorrect), &incorrect["token"]), (3, &Value::Null));
    let verified = verify_code(&app, email, &code, PASSWORD).await;
    assert_eq!(exit(&verified), 0, "{verified}");
    let token = verified["token"].as_str().expect("token").to_owned();
    let (header, claims) = jwt_parts(&token);
    assert_eq!((header["typ"].as_str(), claims["aud"].as_str()), (Some("at+jwt"), Some("graphql")));
    let lifetime = claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat");
    assert_eq!(lifetime, 30 * 24 * 3600, "the token lives as long as the session");
    assert_eq!(exit(&verify_code(&app, email, &code, PASSWORD).await), 6, "already verified");
    assert_eq!(exit(&verify_code(&app, email, wrong(&code), "short").await), 6, "6 comes before 4 and 3");

    let who = me(&app, &token).await;
    assert_eq!(who, json!({"id": claims["sub"], "email": email}));
    assert_eq!(exit(&register_email(&app, email).await), 3, "now a full user");
    assert_eq!(exit(&request_new_code(&app, email).await), 2, "full users never requested a code");

    let bad = login_user(&app, email, "not my password").await;
    assert_eq!((exit(&bad), &bad["token"]), (3, &Value::Null));
    let login = login_user(&app, "You@YourMail.de", PASSWORD).await;
    assert_eq!(exit(&login), 0, "{login}");
    let second = login["token"].as_str().expect("token").to_owned();
    assert_ne!(jwt_parts(&second).1["sid"], claims["sid"], "a new session");

    assert_eq!(exit(&logout_user(&app, &token).await), 0);
    assert_eq!(me(&app, &token).await, Value::Null, "signed out at once");
    assert_eq!(exit(&logout_user(&app, &token).await), 2, "already signed out");
    assert_eq!(me(&app, &second).await["email"], email, "the other session lives on");
    assert_eq!(app.mail.unread(email), 0, "no other mail");
}

async fn unknown_and_invalid_addresses(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(exit(&register_email(&app, "not an address").await), 2);
    assert_eq!(exit(&request_new_code(&app, "nobody@example.com").await), 2);
    assert_eq!(exit(&request_new_code(&app, "not an address").await), 2);
    let never = is_code_valid(&app, "nobody@example.com", "123456").await;
    assert_eq!((exit(&never), &never["isvalid"]), (2, &Value::Null));
    assert_eq!(exit(&verify_code(&app, "nobody@example.com", "123456", "short").await), 200, "200 comes first");
    assert_eq!(exit(&verify_code(&app, "not an address", "123456", PASSWORD).await), 200);
    assert_eq!(exit(&login_user(&app, "nobody@example.com", PASSWORD).await), 200);
    assert_eq!(exit(&logout_user(&app, "JdtOKQDznKQRNRAJYzEw").await), 2);
    assert_eq!(me(&app, "JdtOKQDznKQRNRAJYzEw").await, Value::Null);

    // What the seed has no exit code for is a GraphQL error naming the argument.
    let bad_code =
        graphql(&app, r#"mutation { isCodeValid(email: "a@example.com", code: "12345") { exitcode } }"#).await;
    assert_eq!(bad_code.status, 200);
    assert_eq!(bad_code.body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{}", bad_code.body);
    let long = "x".repeat(600);
    let too_long = graphql(
        &app,
        &format!("mutation {{ loginUser(email: \"a@example.com\", password: {}) {{ exitcode }} }}", lit(&long)),
    )
    .await;
    assert_eq!(too_long.body["errors"][0]["extensions"]["argument"], "password", "{}", too_long.body);
    assert_eq!(app.mail.unread("nobody@example.com"), 0);
}

async fn expired_and_burnt_codes(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.code_ttl = std::time::Duration::from_secs(1)).await;
    let email = "late@example.com";
    assert_eq!(exit(&register_email(&app, email).await), 0);
    let old = app.mail.next_mail(email).await.code();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(exit(&register_email(&app, email).await), 500, "expired: ask for a new one");
    let expired = is_code_valid(&app, email, &old).await;
    assert_eq!((exit(&expired), &expired["isvalid"]), (0, &json!(false)));
    assert_eq!(exit(&verify_code(&app, email, &old, PASSWORD).await), 500);

    let app = TestApp::spawn(backend).await;
    assert_eq!(exit(&register_email(&app, email).await), 0);
    let first = app.mail.next_mail(email).await.code();
    assert_eq!(exit(&request_new_code(&app, email).await), 0);
    let code = app.mail.next_mail(email).await.code();
    let mut guessed = 0;
    if first != code {
        assert_eq!(is_code_valid(&app, email, &first).await["isvalid"], false, "the new code replaced the old");
        guessed = 1;
    }
    for _ in guessed..4 {
        assert_eq!(is_code_valid(&app, email, wrong(&code)).await["isvalid"], false);
    }
    assert_eq!(exit(&verify_code(&app, email, wrong(&code), PASSWORD).await), 3, "the fifth wrong guess");
    assert_eq!(exit(&verify_code(&app, email, &code, PASSWORD).await), 500, "burnt");
    assert_eq!(exit(&register_email(&app, email).await), 500);
    assert_eq!(exit(&request_new_code(&app, email).await), 0);
    let fresh = app.mail.next_mail(email).await.code();
    assert_eq!(exit(&verify_code(&app, email, &fresh, PASSWORD).await), 0);
}

async fn parallel_wrong_guesses_are_five_at_most(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "rush@example.com";
    assert_eq!(exit(&register_email(&app, email).await), 0);
    let code = app.mail.next_mail(email).await.code();
    let guesses = (0..20).map(|_| is_code_valid(&app, email, wrong(&code)));
    let answers = futures::future::join_all(guesses).await;
    assert!(answers.iter().all(|a| exit(a) == 0 && a["isvalid"] == false), "{answers:?}");
    let attempts = app
        .count(
            "SELECT CAST(attempts AS BIGINT) FROM one_time_codes WHERE user_id IN \
             (SELECT id FROM users WHERE email = $1)",
            email,
        )
        .await;
    assert_eq!(attempts, 5, "no more than five guesses were evaluated");
    assert_eq!(exit(&verify_code(&app, email, &code, PASSWORD).await), 500, "the code is burnt");
}

async fn a_refused_mail_is_exit_code_8_and_the_user_stays_pending(backend: Backend) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let app = TestApp::spawn_with(backend, |c| c.smtp_url = Some(format!("smtp://127.0.0.1:{closed}").into())).await;
    let email = "lost@example.com";
    assert_eq!(exit(&register_email(&app, email).await), 8);
    assert_eq!(app.count("SELECT COUNT(*) FROM users WHERE email = $1", email).await, 1, "registered anyway");
    assert_eq!(exit(&register_email(&app, email).await), 4, "its code is stored");

    // Once mail works (another instance on the same database), a new code gets through.
    let working = app.another_instance().await;
    assert_eq!(exit(&request_new_code(&working, email).await), 0);
    let code = working.mail.next_mail(email).await.code();
    assert_eq!(exit(&verify_code(&working, email, &code, PASSWORD).await), 0);

    // A relay that refuses the message itself is a failure too.
    let relay = TestApp::spawn(backend).await;
    relay.mail.refuse_next(3);
    assert_eq!(exit(&register_email(&relay, "later@example.com").await), 8);
}

async fn storage_failures_have_their_exit_codes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let pending = "pending@example.com";
    assert_eq!(exit(&register_email(&app, pending).await), 0);
    let code = app.mail.next_mail(pending).await.code();
    let token = graphql_user(&app, "full@example.com").await;

    break_database(&app, "ALTER TABLE one_time_codes RENAME TO one_time_codes_gone").await;
    assert_eq!(exit(&register_email(&app, "new@example.com").await), 700, "the user is stored, its code is not");
    assert_eq!(exit(&request_new_code(&app, pending).await), 700);
    assert_eq!(exit(&verify_code(&app, pending, &code, PASSWORD).await), 5);
    break_database(&app, "ALTER TABLE one_time_codes_gone RENAME TO one_time_codes").await;

    let trigger = match backend {
        Backend::Sqlite => {
            "CREATE TRIGGER no_revoke BEFORE UPDATE ON sessions BEGIN SELECT RAISE(ABORT, 'broken'); END;"
        }
        Backend::Postgres => {
            "CREATE FUNCTION broken() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'broken'; END $$; \
             CREATE TRIGGER no_revoke BEFORE UPDATE ON sessions FOR EACH ROW EXECUTE FUNCTION broken();"
        }
    };
    break_database(&app, trigger).await;
    assert_eq!(exit(&logout_user(&app, &token).await), 3);
    assert_eq!(me(&app, &token).await["email"], "full@example.com", "still signed in");

    break_database(&app, "ALTER TABLE users RENAME TO users_gone").await;
    assert_eq!(exit(&register_email(&app, "other@example.com").await), 6);
    let login =
        graphql(&app, r#"mutation { loginUser(email: "full@example.com", password: "whatever1") { exitcode } }"#).await;
    assert_eq!(login.status, 200);
    assert_eq!(login.body["errors"][0]["extensions"]["code"], "INTERNAL_SERVER_ERROR", "{}", login.body);
    assert_eq!(login.body["errors"][0]["message"], "Internal error", "no detail: {}", login.body);
}

async fn protocol_errors_are_graphql_errors_never_5xx(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let raw = |content_type: &'static str, body: Vec<u8>| app.send_raw(Method::POST, "/graphql", content_type, body);
    for (content_type, body, status) in [
        ("application/json", b"{\"query\": ".to_vec(), 400),
        ("application/json", b"[{\"query\": \"{ __typename }\"}]".to_vec(), 400),
        ("application/json", b"{\"variables\": {}}".to_vec(), 400),
        ("application/json", b"{\"query\": \"{ __typename }\", \"variables\": 7}".to_vec(), 400),
        ("application/json", br#"{"query": "{ __typename }", "variables": 7}"#.to_vec(), 400),
        ("text/plain", b"{\"query\": \"{ __typename }\"}".to_vec(), 415),
        ("application/json", format!("{{\"query\": \"{}\"}}", " ".repeat(70 * 1024)).into_bytes(), 413),
    ] {
        let response = raw(content_type, body).await;
        assert_eq!(response.status, status, "{}", response.text);
        assert!(response.body["errors"][0]["message"].is_string(), "{}", response.body);
    }

    let modern = |document: &str| {
        send(
            app.request(Method::POST, "/graphql")
                .header("accept", "application/graphql-response+json, application/json")
                .json(&json!({ "query": document })),
        )
    };
    let mut nested = String::from("name");
    for _ in 0..30 {
        nested = format!("ofType {{ {nested} }}");
    }
    for document in [
        "mutation { registerEmail(email: ",
        "mutation { registerEmail(email: \"a@example.com\") { exitcode nonsense } }",
        "mutation { registerEmail(email: 5) { exitcode } }",
        "mutation { registerEmail { exitcode } }",
        "mutation { dropTables { exitcode } }",
        &format!("{{ __schema {{ queryType {{ {nested} }} }} }}"),
        &format!(
            "{{ {} }}",
            (0..600).map(|i| format!("a{i}: me(token: \"x\") {{ id }}")).collect::<Vec<_>>().join(" ")
        ),
    ] {
        let legacy = graphql(&app, document).await;
        assert_eq!(legacy.status, 200, "{document}: {}", legacy.body);
        assert_eq!(legacy.header("content-type"), Some("application/json"));
        assert!(legacy.body["errors"][0]["message"].is_string(), "{document}: {}", legacy.body);
        let answer = modern(document).await;
        assert_eq!(answer.status, 400, "{document}: {}", answer.body);
        assert_eq!(answer.header("content-type"), Some("application/graphql-response+json"));
    }

    // Introspection stays on, and GraphiQL's own query fits the limits.
    let types = data(&app, "{ __schema { mutationType { fields { name } } } }", "__schema").await;
    let names: Vec<&str> =
        types["mutationType"]["fields"].as_array().expect("fields").iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(names, ["registerEmail", "requestNewCode", "isCodeValid", "verifyCode", "loginUser", "logoutUser"]);
    let introspection = graphql(&app, INTROSPECTION).await;
    assert!(introspection.body.get("errors").is_none(), "{}", introspection.body);
    let page = ApiResponse::text(app.request(Method::GET, "/graphql").send().await.expect("GET")).await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").is_some_and(|c| c.starts_with("text/html")));
    assert!(page.text.contains("/graphql/assets/graphiql.min.js"), "the GraphiQL page, from this server");
}

/// GraphiQL's introspection query (graphql-js `getIntrospectionQuery()`).
const INTROSPECTION: &str = "query IntrospectionQuery { __schema { queryType { name } mutationType { name } \
    subscriptionType { name } types { ...FullType } directives { name description locations args { ...InputValue } } } } \
    fragment FullType on __Type { kind name description fields(includeDeprecated: true) { name description \
    args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason } inputFields { ...InputValue } \
    interfaces { ...TypeRef } enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason } \
    possibleTypes { ...TypeRef } } \
    fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue } \
    fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name \
    ofType { kind name ofType { kind name ofType { kind name } } } } } } } }";

async fn rate_limits_are_graphql_errors_with_retry_after(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.rate_limit = true).await;
    let mut last = None;
    for _ in 0..61 {
        let response =
            graphql(&app, r#"mutation { isCodeValid(email: "x@example.com", code: "123456") { exitcode } }"#).await;
        assert_eq!(response.status, 200);
        last = Some(response);
    }
    let limited = last.expect("answers");
    assert_eq!(limited.body["errors"][0]["extensions"]["code"], "TOO_MANY_REQUESTS", "{}", limited.body);
    assert!(limited.header("retry-after").and_then(|v| v.parse::<u64>().ok()).is_some_and(|s| s >= 1));
}

async fn users_and_graphql_share_one_directory(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // A `users` user is a full user here.
    app.users_activated("ada@example.com").await;
    assert_eq!(exit(&register_email(&app, "ada@example.com").await), 3);
    assert_eq!(exit(&request_new_code(&app, "ada@example.com").await), 2);
    let login = login_user(&app, "ada@example.com", PASSWORD).await;
    assert_eq!(exit(&login), 0, "{login}");
    assert_eq!(me(&app, login["token"].as_str().expect("token")).await["email"], "ada@example.com");

    // A `graphql` user signs in through `users` and `v1`.
    let token = graphql_user(&app, "gus@example.com").await;
    assert_eq!(app.signin("gus@example.com", PASSWORD).await.status, 200);
    let v1 = app.v1_sign_in("gus@example.com", PASSWORD).await.expect_status(200);
    let access = v1["access_token"].as_str().expect("access token").to_owned();
    // Tokens are not interchangeable between surfaces.
    assert_eq!(me(&app, &access).await, Value::Null, "a v1 access token is not a graphql token");

    // Signing out everywhere through v1 ends the graphql session too.
    assert_eq!(me(&app, &token).await["email"], "gus@example.com");
    assert_eq!(app.v1_sign_out_everywhere(&access).await.status, 204);
    assert_eq!(me(&app, &token).await, Value::Null);
    assert_eq!(exit(&logout_user(&app, &token).await), 2);

    // A users sign-up not yet activated has a password: a full user, not verified yet.
    assert_eq!(app.signup(&users_signup_body("una@example.com")).await.status, 201);
    assert_eq!(exit(&register_email(&app, "una@example.com").await), 3);
    assert_eq!(exit(&login_user(&app, "una@example.com", PASSWORD).await), 200);
}

/// A document is parsed once and kept; every request still gets its own variables checked and
/// its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_sent_again_answers_for_its_new_variables() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let ada = graphql_user(&app, "ada@example.com").await;
    let bob = graphql_user(&app, "bob@example.com").await;
    let with = |document: &str, variables: Value| {
        let body = json!({ "query": document, "variables": variables });
        let app = &app;
        async move { app.send_json(Method::POST, "/graphql", &body).await }
    };
    let document = "query Me($token: String!) { me(token: $token) { email } }";
    for (token, email) in [(&ada, "ada@example.com"), (&bob, "bob@example.com"), (&ada, "ada@example.com")] {
        let response = with(document, json!({ "token": token })).await;
        assert_eq!(response.body["data"]["me"]["email"], email, "{}", response.body);
    }
    // The kept document is validated against each request's variables.
    for variables in [json!({ "token": 5 }), json!({})] {
        let response = with(document, variables).await;
        assert_eq!(response.status, 200, "{}", response.text);
        assert!(response.body["errors"][0]["message"].is_string(), "{}", response.body);
        assert!(response.body.get("data").is_none_or(Value::is_null), "{}", response.body);
    }
    assert_eq!(with(document, json!({ "token": bob })).await.body["data"]["me"]["email"], "bob@example.com");

    // A document that does not parse fails the same way every time.
    let broken = "query Me($token: String!) { me(token: $token) { email }";
    let first = with(broken, json!({ "token": ada })).await.body;
    assert!(first["errors"][0]["message"].is_string(), "{first}");
    assert_eq!(with(broken, json!({ "token": ada })).await.body, first);

    // Long documents (not kept) are answered all the same.
    let long = format!("{document}\n# {}", "x".repeat(8 * 1024));
    assert_eq!(with(&long, json!({ "token": ada })).await.body["data"]["me"]["email"], "ada@example.com");
    assert_eq!(with(&long, json!({ "token": bob })).await.body["data"]["me"]["email"], "bob@example.com");
}

on_both_backends!(
    the_seed_flow_from_registration_to_logout,
    unknown_and_invalid_addresses,
    expired_and_burnt_codes,
    parallel_wrong_guesses_are_five_at_most,
    a_refused_mail_is_exit_code_8_and_the_user_stays_pending,
    storage_failures_have_their_exit_codes,
    protocol_errors_are_graphql_errors_never_5xx,
    rate_limits_are_graphql_errors_with_retry_after,
    users_and_graphql_share_one_directory,
);
