//! The core's [`Mailer`] port over SMTP (lettre) or, without `LATCHKEY_SMTP_URL`, the log
//! transport for development.
//!
//! The log transport prints each message as a framed block on standard error (and, with
//! `LATCHKEY_OUTBOX_DIR`, writes it as an `.eml` file) so that a developer can read the code.
//! That block *is* the delivery, not a log event: tracing events about mail carry only the
//! masked recipient and subject, whatever the transport.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use latchkey_core::ports::{Mail, MailError, Mailer};
use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Where mail goes.
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Log { outbox: Option<PathBuf> },
}

/// Sends code mails.
pub struct ServerMailer {
    from: Mailbox,
    transport: Transport,
}

impl std::fmt::Debug for ServerMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMailer").field("transport", &self.describe()).finish()
    }
}

impl ServerMailer {
    /// A mailer sending from `from` through `smtp_url` (lettre's URL syntax: `smtp://host:port`
    /// for plain SMTP, `smtp://host?tls=required` for STARTTLS, `smtps://user:pass@host` for
    /// implicit TLS) or, with no URL, to the log and optionally `outbox`.
    ///
    /// # Errors
    /// A message when the URL or sender does not parse.
    pub fn new(from: &str, smtp_url: Option<&str>, outbox: Option<PathBuf>) -> Result<Self, String> {
        let from: Mailbox = from.parse().map_err(|e| format!("LATCHKEY_MAIL_FROM: {e}"))?;
        let transport = match smtp_url {
            Some(url) => Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| format!("LATCHKEY_SMTP_URL: {e}"))?
                    .timeout(Some(Duration::from_secs(15)))
                    .build(),
            ),
            None => Transport::Log { outbox },
        };
        Ok(Self { from, transport })
    }

    /// A short description for the start-up line: `smtp://host:port` (no credentials) or `log`.
    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Smtp(_) => "smtp".into(),
            Transport::Log { outbox: Some(dir) } => format!("log (and .eml files in {})", dir.display()),
            Transport::Log { outbox: None } => "log".into(),
        }
    }

    fn message(&self, mail: &Mail) -> Result<Message, MailError> {
        let to: Mailbox =
            mail.to.as_str().parse().map_err(|e| MailError(format!("recipient {}: {e}", mail.to.masked())))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(mail.text.clone())
            .map_err(|e| MailError(format!("building message: {e}")))
    }
}

#[async_trait]
impl Mailer for ServerMailer {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let message = self.message(mail)?;
        match &self.transport {
            Transport::Smtp(smtp) => {
                smtp.send(message).await.map_err(|e| MailError(e.to_string()))?;
                tracing::info!(to = %mail.to.masked(), subject = %mail.subject, "mail sent over SMTP");
            }
            Transport::Log { outbox } => {
                let formatted = String::from_utf8_lossy(&message.formatted()).into_owned();
                eprintln!(
                    "----- mail (log transport: LATCHKEY_SMTP_URL is not set) -----\nTo: {}\nSubject: {}\n\n{}----- end of mail -----",
                    mail.to, mail.subject, mail.text
                );
                if let Some(dir) = outbox {
                    let name = format!(
                        "{}-{}.eml",
                        time::OffsetDateTime::now_utc().unix_timestamp(),
                        uuid::Uuid::new_v4().simple()
                    );
                    let path = dir.join(name);
                    tokio::fs::create_dir_all(dir)
                        .await
                        .map_err(|e| MailError(format!("outbox {}: {e}", dir.display())))?;
                    tokio::fs::write(&path, formatted)
                        .await
                        .map_err(|e| MailError(format!("outbox {}: {e}", path.display())))?;
                }
                tracing::info!(to = %mail.to.masked(), subject = %mail.subject, "mail written to the log transport");
            }
        }
        Ok(())
    }
}
