//! The `realtime` surface (`GET /ws`, API.md `realtime`): a WebSocket client over
//! tokio-tungstenite, and the seed's frames.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use latchkey_core::identity::{Email, TenantId};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TestApp;
use super::v1::Tokens;

/// How long a test waits for a frame before failing.
const WAIT: Duration = Duration::from_secs(10);

/// An open WebSocket to `/ws`.
pub struct Socket(WebSocketStream<MaybeTlsStream<TcpStream>>);

/// How a socket ended, as the client saw it.
#[derive(Debug)]
pub enum Ended {
    /// A close frame with this code.
    Closed(u16),
    /// The connection ended without a close frame.
    Dropped,
}

impl TestApp {
    /// `ws://127.0.0.1:<port>/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// Opens a WebSocket to `/ws`.
    pub async fn ws_connect(&self) -> Socket {
        let (ws, response) = tokio_tungstenite::connect_async(self.ws_url()).await.expect("WebSocket upgrade");
        assert_eq!(response.status(), 101);
        Socket(ws)
    }

    /// Tries to open a WebSocket to `/ws`; the HTTP status of a refused upgrade.
    pub async fn ws_try_connect(&self) -> Result<Socket, u16> {
        match tokio_tungstenite::connect_async(self.ws_url()).await {
            Ok((ws, _)) => Ok(Socket(ws)),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(e) => panic!("WebSocket connect failed: {e}"),
        }
    }

    /// The identity id (`cogId`) of the default-tenant user with `email`.
    pub async fn identity_id(&self, email: &str) -> String {
        let email = Email::parse(email).expect("email");
        let user = self.auth.user_by_email(TenantId::DEFAULT, &email).await.expect("user");
        self.auth.identity_id(&user)
    }

    /// A user of `email` signed up, verified and signed in through `v1`: the tokens of the
    /// sign-in and the user's `cogId`.
    pub async fn realtime_user(&self, email: &str) -> (Tokens, String) {
        self.v1_verified_user(email).await;
        let tokens = self.v1_signed_in(email).await;
        (tokens, self.identity_id(email).await)
    }
}

/// The seed's `user-signup` frame.
pub fn signup_frame(cog_id: &str, email: &str, tokens: &Tokens) -> Value {
    json!({
        "action": "user-signup",
        "message": {
            "cogId": cog_id,
            "username": email,
            "email": email,
            "accessToken": tokens.access,
            "idToken": tokens.id,
            "refreshToken": tokens.refresh,
        }
    })
}

/// The seed's `user-login` (or, with `action` `user-logout`, logout) frame.
pub fn login_frame(action: &str, email: &str, tokens: &Tokens) -> Value {
    json!({
        "action": action,
        "message": {
            "email": email,
            "accessToken": tokens.access,
            "idToken": tokens.id,
            "refreshToken": tokens.refresh,
        }
    })
}

impl Socket {
    /// Sends `frame` as a text frame.
    pub async fn send_json(&mut self, frame: &Value) {
        self.send(Message::Text(frame.to_string().into())).await;
    }

    /// Sends any message.
    pub async fn send(&mut self, message: Message) {
        self.0.send(message).await.expect("send a frame");
    }

    /// The next text frame as JSON, skipping pings and pongs; fails on anything else or after
    /// 10 s.
    pub async fn next_frame(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.0.next())
                .await
                .expect("a frame within 10 s")
                .expect("the socket is open")
                .expect("a readable frame");
            match message {
                Message::Text(text) => return serde_json::from_str(text.as_str()).expect("a JSON frame"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Sends `frame` and returns the reply.
    pub async fn request(&mut self, frame: &Value) -> Value {
        self.send_json(frame).await;
        self.next_frame().await
    }

    /// Reads until the socket ends (at most 10 s), skipping other frames: the close code the
    /// server sent, or [`Ended::Dropped`].
    pub async fn ended(&mut self) -> Ended {
        let read = async {
            while let Some(message) = self.0.next().await {
                match message {
                    Ok(Message::Close(Some(CloseFrame { code, .. }))) => return Ended::Closed(code.into()),
                    Ok(Message::Close(None)) | Err(_) => return Ended::Dropped,
                    Ok(_) => continue,
                }
            }
            Ended::Dropped
        };
        tokio::time::timeout(WAIT, read).await.expect("the socket ended within 10 s")
    }

    /// Closes the socket from this side (close code 1000) and reads until the server's answer:
    /// whether it answered with a close frame, as RFC 6455 section 5.5.1 asks.
    pub async fn close(&mut self) -> bool {
        let frame = CloseFrame { code: 1000.into(), reason: "bye".into() };
        self.0.send(Message::Close(Some(frame))).await.expect("send close");
        let read = async {
            while let Some(message) = self.0.next().await {
                match message {
                    Ok(Message::Close(_)) => return true,
                    Ok(_) => continue,
                    Err(_) => return false,
                }
            }
            false
        };
        tokio::time::timeout(WAIT, read).await.expect("the close was answered within 10 s")
    }

    /// Counts pings received (answering them) until `n` have arrived, failing after 10 s.
    pub async fn pings(&mut self, n: usize) {
        let mut seen = 0;
        while seen < n {
            let message = tokio::time::timeout(WAIT, self.0.next())
                .await
                .expect("a ping within 10 s")
                .expect("the socket is open")
                .expect("a readable frame");
            if matches!(message, Message::Ping(_)) {
                seen += 1;
            }
        }
    }
}

/// A WebSocket opened by hand over TCP that never answers anything (no pong): returns once
/// the server has closed the connection, with how many bytes it sent; fails after 10 s.
pub async fn silent_socket_until_dropped(app: &TestApp) -> usize {
    let mut tcp = TcpStream::connect(("127.0.0.1", app.port)).await.expect("connect");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        app.port
    );
    tcp.write_all(request.as_bytes()).await.expect("upgrade request");
    let mut received = 0;
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return received,
                Ok(n) => received += n,
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("the server dropped the silent socket within 10 s")
}
