//! A minimal SMTP server (RFC 5321) on `127.0.0.1` that accepts every message and discards it,
//! so that sign-up's activation mail costs Latchkey a real SMTP exchange without a real relay.
//!
//! It speaks just what lettre sends: `EHLO`/`HELO`, `MAIL FROM`, `RCPT TO`, `DATA`, `RSET`,
//! `NOOP` and `QUIT`, over connections that lettre's pool keeps open for many messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A running sink. Dropping it does not stop the accept loop; it lives as long as the runtime.
#[derive(Debug, Clone)]
pub struct SmtpSink {
    /// The port it listens on, on `127.0.0.1`.
    pub port: u16,
    received: Arc<AtomicU64>,
}

impl SmtpSink {
    /// Binds `127.0.0.1:0` and starts accepting connections.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the SMTP sink")?;
        let port = listener.local_addr().context("the SMTP sink's address")?.port();
        let sink = Self { port, received: Arc::default() };
        let received = sink.received.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let received = received.clone();
                tokio::spawn(async move {
                    // A client hanging up mid-conversation is not our problem.
                    let _ = serve(socket, &received).await;
                });
            }
        });
        Ok(sink)
    }

    /// How many messages were accepted so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

async fn serve(socket: TcpStream, received: &AtomicU64) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::with_capacity(256);
    write.write_all(b"220 latchkey-bench ESMTP sink\r\n").await?;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let command = String::from_utf8_lossy(&line).trim_end().to_ascii_uppercase();
        let reply: &[u8] = if command.starts_with("EHLO") {
            b"250-latchkey-bench\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        } else if command.starts_with("HELO") {
            b"250 latchkey-bench\r\n"
        } else if command.starts_with("MAIL FROM")
            || command.starts_with("RCPT TO")
            || command == "RSET"
            || command == "NOOP"
        {
            b"250 OK\r\n"
        } else if command == "DATA" {
            write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line).await? == 0 {
                    return Ok(());
                }
                if line == b".\r\n" || line == b".\n" {
                    break;
                }
            }
            received.fetch_add(1, Ordering::Relaxed);
            b"250 OK discarded\r\n"
        } else if command == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"502 command not implemented\r\n"
        };
        write.write_all(reply).await?;
    }
}
