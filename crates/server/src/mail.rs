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

/// Writes a new file readable by its owner only (mode 0600 on Unix): outbox mails hold codes.
async fn write_private(path: &std::path::Path, contents: Vec<u8>) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).await?;
    file.write_all(&contents).await?;
    file.flush().await
}

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
                    write_private(&path, formatted.into_bytes())
                        .await
                        .map_err(|e| MailError(format!("outbox {}: {e}", path.display())))?;
                }
                tracing::info!(to = %mail.to.masked(), subject = %mail.subject, "mail written to the log transport");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use latchkey_core::identity::Email;

    use super::*;

    #[cfg(unix)]
    #[tokio::test]
    async fn outbox_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let mailer =
            ServerMailer::new("Latchkey <no-reply@localhost>", None, Some(dir.path().to_path_buf())).expect("mailer");
        let mail =
            Mail { to: Email::parse("a@example.com").expect("email"), subject: "Code".into(), text: "123456".into() };
        mailer.send(&mail).await.expect("written");
        let files: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").path()).collect();
        assert_eq!(files.len(), 1);
        let mode = std::fs::metadata(&files[0]).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the mail holds a code");
    }
}
