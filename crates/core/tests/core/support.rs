//! What the test modules share: a mailer that keeps every mail, so tests read codes from it.

use std::sync::Mutex;

use async_trait::async_trait;
use latchkey_core::ports::{Mail, MailError, Mailer};

/// Keeps every mail sent, in order; tests read codes from it.
#[derive(Default)]
pub struct Outbox(pub Mutex<Vec<Mail>>);

#[async_trait]
impl Mailer for Outbox {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        self.0.lock().map_err(|e| MailError(e.to_string()))?.push(mail.clone());
        Ok(())
    }
}
