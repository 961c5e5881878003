//! Test harness: a real Latchkey on `127.0.0.1:0`, a real SMTP sink on `127.0.0.1:0`, and a
//! fresh database per test (a temporary SQLite file, or a PostgreSQL database created for the
//! test and dropped afterwards).
//!
//! Tests talk to the server only through this harness: one request helper per endpoint
//! (`users`, `v1`, the always-on endpoints), each answering an [`ApiResponse`], and the flows
//! stories start from (a signed-up user, a verified one, a signed-in session). Test modules
//! import from here, never from one another.

mod ops;
mod projects;
mod realtime;
mod response;
mod users;
mod v1;

pub use realtime::{Ended, Socket, login_frame, signup_frame, silent_socket_until_dropped};
pub use response::{ApiResponse, send};
pub use users::users_signup_body;
pub use v1::{Tokens, V1Auth};

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use latchkey_server::config::{Config, LogFormat};
use latchkey_server::{Application, telemetry};
use secrecy::ExposeSecret;
use serde_json::Value;
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

/// The password the flows give every user they create.
pub const PASSWORD: &str = "correct horse battery";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `sqlite` and `postgres` variants of an `async fn(Backend)` test.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::helpers::postgres_available().await {
                    super::$name($crate::helpers::Backend::Postgres).await;
                }
            }
        }
    )+};
}

/// The server under test for PostgreSQL tests: `LATCHKEY_TEST_POSTGRES_URL`, default
/// `postgres://postgres@127.0.0.1:5432/postgres`.
fn postgres_admin_url() -> String {
    std::env::var("LATCHKEY_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Whether PostgreSQL tests can run. Without a server they are skipped with a message,
/// unless `LATCHKEY_TEST_REQUIRE_POSTGRES=1`, which turns a missing server into a failure.
pub async fn postgres_available() -> bool {
    static AVAILABLE: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
    let available = *AVAILABLE
        .get_or_init(|| async {
            let url = postgres_admin_url();
            match tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&url)).await {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    true
                }
                Ok(Err(e)) => {
                    eprintln!("PostgreSQL at {url} is not reachable ({e})");
                    false
                }
                Err(_) => {
                    eprintln!("PostgreSQL at {url} did not answer within 5 s");
                    false
                }
            }
        })
        .await;
    if !available {
        if std::env::var("LATCHKEY_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
            panic!("LATCHKEY_TEST_REQUIRE_POSTGRES=1 but PostgreSQL is not reachable at {}", postgres_admin_url());
        }
        eprintln!(
            "skipping a PostgreSQL test: no server (set LATCHKEY_TEST_POSTGRES_URL, or LATCHKEY_TEST_REQUIRE_POSTGRES=1 to fail instead)"
        );
    }
    available
}

/// The Redis for shared-limit tests (`LATCHKEY_TEST_REDIS_URL`, default
/// `redis://127.0.0.1:6379`), or `None` (with a message) when it does not answer, unless
/// `LATCHKEY_TEST_REQUIRE_REDIS=1`, which turns a missing server into a failure.
pub async fn redis_url() -> Option<String> {
    let url = std::env::var("LATCHKEY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let ping = async {
        let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
        let mut conn = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
        redis::cmd("PING").query_async::<String>(&mut conn).await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(Duration::from_secs(3), ping).await {
        Ok(Ok(_)) => Some(url),
        outcome => {
            let why = match outcome {
                Ok(Err(e)) => e,
                _ => "no answer within 3 s".into(),
            };
            if std::env::var("LATCHKEY_TEST_REQUIRE_REDIS").is_ok_and(|v| v == "1") {
                panic!("LATCHKEY_TEST_REQUIRE_REDIS=1 but Redis at {url} is not reachable: {why}");
            }
            eprintln!("skipping a Redis test: {url} is not reachable ({why})");
            None
        }
    }
}

/// A PostgreSQL database created for one test, dropped (with its connections) on drop.
struct PgDatabase {
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create() -> Self {
        let admin = postgres_admin_url();
        let name = format!("latchkey_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_owned();
        Self { url: format!("{base}/{name}"), name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; do the async cleanup on a runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// Every log line of every server in this test process, so tests can check that no secret
/// was ever logged.
pub fn captured_logs() -> String {
    let buf = log_buffer().lock().unwrap_or_else(|p| p.into_inner());
    String::from_utf8_lossy(&buf).into_owned()
}

fn log_buffer() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

#[derive(Clone, Copy)]
struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        log_buffer().lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(data);
        if std::env::var("LATCHKEY_TEST_LOG").is_ok() {
            std::io::stderr().write_all(data)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        telemetry::init_tracing("debug,sqlx=info,hyper=info,h2=info,tower=info,lettre=info", LogFormat::Text, || {
            CaptureWriter
        });
    });
}

/// One message received by the SMTP sink.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// Envelope recipients.
    pub to: Vec<String>,
    /// The message as sent (headers and body).
    pub data: String,
}

impl ReceivedMail {
    /// The `Subject` header.
    pub fn subject(&self) -> String {
        self.data.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or_default().trim().to_owned()
    }

    /// The body, after the blank line ending the headers.
    pub fn body(&self) -> String {
        self.data.split_once("\r\n\r\n").map_or_else(String::new, |(_, b)| b.to_owned())
    }

    /// The one run of exactly six digits in the body.
    pub fn code(&self) -> String {
        let body = self.body();
        let runs: Vec<&str> = body.split(|c: char| !c.is_ascii_digit()).filter(|r| r.len() == 6).collect();
        assert_eq!(runs.len(), 1, "the body holds exactly one six-digit run: {body:?}");
        runs[0].to_owned()
    }
}

#[derive(Default)]
struct SinkState {
    inbox: VecDeque<ReceivedMail>,
    /// How many of the next transactions to refuse with a transient error.
    refuse: usize,
}

/// A minimal SMTP server (RFC 5321) that accepts every message and keeps it.
#[derive(Clone)]
pub struct SmtpSink {
    pub port: u16,
    state: Arc<Mutex<SinkState>>,
    arrived: Arc<Notify>,
    held: Arc<tokio::sync::watch::Sender<bool>>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind SMTP sink");
        let port = listener.local_addr().expect("addr").port();
        let sink = Self {
            port,
            state: Arc::default(),
            arrived: Arc::default(),
            held: Arc::new(tokio::sync::watch::Sender::new(false)),
        };
        let s = sink.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = s.serve(socket).await;
                });
            }
        });
        sink
    }

    /// From now on, keeps each message's final `250` reply back (the sender waits inside its
    /// SMTP transaction) until [`SmtpSink::release`]. The message is in the inbox already.
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Sends the replies kept back by [`SmtpSink::hold`], and stops holding.
    pub fn release(&self) {
        self.held.send_replace(false);
    }

    /// Refuses the next `n` messages with `451` (a transient failure).
    pub fn refuse_next(&self, n: usize) {
        self.state.lock().expect("sink").refuse = n;
    }

    async fn serve(&self, socket: tokio::net::TcpStream) -> std::io::Result<()> {
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read);
        write.write_all(b"220 sink.test ESMTP ready\r\n").await?;
        let mut to = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_ascii_uppercase();
            if command.starts_with("EHLO") {
                write.write_all(b"250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n").await?;
            } else if command.starts_with("HELO") {
                write.write_all(b"250 sink.test\r\n").await?;
            } else if command.starts_with("MAIL FROM") {
                let refuse = {
                    let mut st = self.state.lock().expect("sink");
                    let refuse = st.refuse > 0;
                    st.refuse = st.refuse.saturating_sub(1);
                    refuse
                };
                if refuse {
                    write.write_all(b"451 4.3.0 try again later\r\n").await?;
                } else {
                    to.clear();
                    write.write_all(b"250 OK\r\n").await?;
                }
            } else if command.starts_with("RCPT TO") {
                let addr =
                    line.trim_end()[8..].trim().trim_start_matches(':').trim().trim_matches(['<', '>']).to_owned();
                to.push(addr);
                write.write_all(b"250 OK\r\n").await?;
            } else if command == "DATA" {
                write.write_all(b"354 end with .\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    let l = line.strip_prefix('.').unwrap_or(&line);
                    data.push_str(l);
                }
                self.state.lock().expect("sink").inbox.push_back(ReceivedMail { to: to.clone(), data });
                self.arrived.notify_waiters();
                let mut held = self.held.subscribe();
                while *held.borrow_and_update() {
                    if held.changed().await.is_err() {
                        break;
                    }
                }
                write.write_all(b"250 OK queued\r\n").await?;
            } else if command == "QUIT" {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            } else if command == "RSET" || command == "NOOP" {
                write.write_all(b"250 OK\r\n").await?;
            } else {
                write.write_all(b"502 command not implemented\r\n").await?;
            }
        }
    }

    /// The oldest unread message to `to`, waiting up to 10 s for it.
    pub async fn next_mail(&self, to: &str) -> ReceivedMail {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.arrived.notified();
            {
                let mut st = self.state.lock().expect("sink");
                if let Some(i) = st.inbox.iter().position(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to))) {
                    return st.inbox.remove(i).expect("present");
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("no mail to {to} within 10 s");
            }
        }
    }

    /// How many unread messages to `to` are waiting.
    pub fn unread(&self, to: &str) -> usize {
        let st = self.state.lock().expect("sink");
        st.inbox.iter().filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to))).count()
    }
}

/// A running Latchkey with its mail sink and database.
pub struct TestApp {
    pub base: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub mail: SmtpSink,
    pub backend: Backend,
    pub database_url: String,
    /// The server's core, for what no route triggers (the background purge).
    pub auth: latchkey_core::Auth,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _pg: Option<PgDatabase>,
    _dir: tempfile::TempDir,
}

/// A fixed test secret: every instance of one test shares it, as a deployment would.
pub const TEST_SECRET: &str = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz";

impl TestApp {
    /// A server with test defaults: SMTP to a fresh sink, rate limits off.
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// A server whose configuration `tweak` adjusts.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        init_logs();
        let dir = tempfile::tempdir().expect("tempdir");
        let (pg, database_url) = match backend {
            Backend::Sqlite => (None, format!("sqlite://{}", dir.path().join("latchkey.db").display())),
            Backend::Postgres => {
                let db = PgDatabase::create().await;
                let url = db.url.clone();
                (Some(db), url)
            }
        };
        let mail = SmtpSink::start().await;
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            database_url: database_url.clone().into(),
            smtp_url: Some(format!("smtp://127.0.0.1:{}", mail.port).into()),
            secret: Some(TEST_SECRET.into()),
            rate_limit: false,
            ..Config::default()
        };
        tweak(&mut config);
        Self::start(config, backend, mail, pg, dir).await
    }

    /// A second instance on this one's database with the same secret and public URL (as
    /// instances behind one load balancer have), and its own mail sink.
    pub async fn another_instance(&self) -> TestApp {
        self.another_instance_with(|_| {}).await
    }

    /// A second instance on this one's database, its configuration adjusted by `tweak`.
    pub async fn another_instance_with(&self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let mail = SmtpSink::start().await;
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            public_url: Some(self.base.clone()),
            database_url: self.database_url.clone().into(),
            smtp_url: Some(format!("smtp://127.0.0.1:{}", mail.port).into()),
            secret: Some(TEST_SECRET.into()),
            rate_limit: false,
            ..Config::default()
        };
        tweak(&mut config);
        Self::start(config, self.backend, mail, None, tempfile::tempdir().expect("tempdir")).await
    }

    async fn start(
        config: Config,
        backend: Backend,
        mail: SmtpSink,
        pg: Option<PgDatabase>,
        dir: tempfile::TempDir,
    ) -> Self {
        let database_url = config.database_url.expose_secret().to_owned();
        let app = Application::build(config).await.expect("application starts");
        let port = app.port();
        let auth = app.auth().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            app.run_until(async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        Self {
            base: format!("http://127.0.0.1:{port}"),
            port,
            client: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client"),
            mail,
            backend,
            database_url,
            auth,
            shutdown: Some(tx),
            server: Some(server),
            _pg: pg,
            _dir: dir,
        }
    }

    /// Tells the server to shut down gracefully, without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Runs a statement with one text parameter on the test database; returns the rows changed.
    pub async fn execute(&self, sql: &'static str, bind: &str) -> u64 {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.database_url).await.expect("sqlite");
                let done = sqlx::query(sql).bind(bind).execute(&mut conn).await.expect("execute");
                let _ = conn.close().await;
                done.rows_affected()
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.database_url).await.expect("postgres");
                let done = sqlx::query(sql).bind(bind).execute(&mut conn).await.expect("execute");
                let _ = conn.close().await;
                done.rows_affected()
            }
        }
    }

    /// Replaces the stored password hash of the user with `email` (as an import would have
    /// stored it); returns the rows changed.
    pub async fn store_password_hash(&self, email: &str, hash: &str) -> u64 {
        let sql = "UPDATE users SET password_hash = $1 WHERE email = $2";
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.database_url).await.expect("sqlite");
                let done = sqlx::query(sql).bind(hash).bind(email).execute(&mut conn).await.expect("update");
                let _ = conn.close().await;
                done.rows_affected()
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.database_url).await.expect("postgres");
                let done = sqlx::query(sql).bind(hash).bind(email).execute(&mut conn).await.expect("update");
                let _ = conn.close().await;
                done.rows_affected()
            }
        }
    }

    /// The stored password hash of the user with `email`.
    pub async fn stored_password_hash(&self, email: &str) -> Option<String> {
        let sql = "SELECT password_hash FROM users WHERE email = $1";
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.database_url).await.expect("sqlite");
                let hash: Option<String> = sqlx::query_scalar(sql).bind(email).fetch_one(&mut conn).await.expect("row");
                let _ = conn.close().await;
                hash
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.database_url).await.expect("postgres");
                let hash: Option<String> = sqlx::query_scalar(sql).bind(email).fetch_one(&mut conn).await.expect("row");
                let _ = conn.close().await;
                hash
            }
        }
    }

    /// Runs a query returning one integer on the test database.
    pub async fn count(&self, sql: &'static str, bind: &str) -> i64 {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.database_url).await.expect("sqlite");
                let n: i64 = sqlx::query_scalar(sql).bind(bind).fetch_one(&mut conn).await.expect("count");
                let _ = conn.close().await;
                n
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.database_url).await.expect("postgres");
                let n: i64 = sqlx::query_scalar(sql).bind(bind).fetch_one(&mut conn).await.expect("count");
                let _ = conn.close().await;
                n
            }
        }
    }

    /// How many sessions with id `sid` (a UUID, as in the `sid` claim) are stored as revoked.
    pub async fn revoked_sessions(&self, sid: &str) -> i64 {
        match self.backend {
            Backend::Sqlite => {
                self.count(
                    "SELECT COUNT(*) FROM sessions WHERE lower(hex(id)) = replace($1, '-', '') AND revoked_at IS NOT NULL",
                    sid,
                )
                .await
            }
            Backend::Postgres => {
                self.count("SELECT COUNT(*) FROM sessions WHERE id = $1::uuid AND revoked_at IS NOT NULL", sid).await
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Decodes the header and claims of a JWT without verifying it (tests inspect what was issued).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    use base64::Engine;
    let mut parts = token.split('.');
    let mut decode = |what| {
        let part = parts.next().unwrap_or_else(|| panic!("JWT without {what}"));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).expect("base64url");
        serde_json::from_slice::<Value>(&bytes).expect("JSON")
    };
    (decode("header"), decode("claims"))
}
