//! The mail queue: code and notice mails leave the request path (API.md, "Timing": no response
//! waits for the mail relay), so a slow or failing relay neither delays answers nor reveals,
//! by timing, which addresses have accounts.
//!
//! Mails wait in a bounded queue and are delivered by a background task, a few at a time, each
//! tried up to [`ATTEMPTS`] times with growing pauses. A mail that cannot be queued (the queue
//! is full) or delivered (every attempt failed) is logged as lost, with the masked recipient,
//! and counted in `latchkey_mail_total{outcome}`; it is never dropped silently.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use crate::ports::{Mail, Mailer};

/// Delivery attempts per mail.
pub const ATTEMPTS: usize = 3;

/// Pauses before the second and third attempts.
const BACKOFF: [Duration; ATTEMPTS - 1] = [Duration::from_secs(1), Duration::from_secs(5)];

/// Mails delivered at once.
const CONCURRENT_DELIVERIES: usize = 4;

/// What became of a mail's first delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The relay accepted the mail.
    Sent,
    /// The first attempt failed (the mail is retried in the background), or the mail could not
    /// even be queued.
    Failed,
}

/// A handle on one queued mail. Dropping it is fine: nobody has to wait for mail. Only a
/// surface whose wire contract reports mail failures awaits [`MailReceipt::first_attempt`].
#[derive(Debug)]
#[must_use = "drop the receipt unless the surface must report the first attempt's outcome"]
pub struct MailReceipt(Option<oneshot::Receiver<Delivery>>);

impl MailReceipt {
    /// A receipt for a mail that was never queued.
    pub fn failed() -> Self {
        Self(None)
    }

    /// Waits for the first delivery attempt.
    pub async fn first_attempt(self) -> Delivery {
        match self.0 {
            Some(rx) => rx.await.unwrap_or(Delivery::Failed),
            None => Delivery::Failed,
        }
    }
}

struct Job {
    mail: Mail,
    first_attempt: oneshot::Sender<Delivery>,
}

/// The queue; cheap to clone.
#[derive(Clone)]
pub struct MailQueue {
    jobs: mpsc::Sender<Job>,
    pending: Arc<Pending>,
}

impl std::fmt::Debug for MailQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailQueue").field("pending", &self.pending.count.load(Ordering::Relaxed)).finish()
    }
}

/// Mails queued or being delivered, and a signal when that drops to zero.
#[derive(Default)]
struct Pending {
    count: AtomicUsize,
    idle: Notify,
}

impl Pending {
    fn done(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

impl MailQueue {
    /// Starts the delivery task on the current tokio runtime, delivering through `mailer`.
    /// `capacity` mails may wait at once.
    pub fn start(mailer: Arc<dyn Mailer>, capacity: usize) -> Self {
        let (jobs, mut rx) = mpsc::channel::<Job>(capacity.max(1));
        let pending = Arc::new(Pending::default());
        let queue = Self { jobs, pending: pending.clone() };
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(CONCURRENT_DELIVERIES));
            while let Some(job) = rx.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let (mailer, pending) = (mailer.clone(), pending.clone());
                tokio::spawn(async move {
                    deliver(mailer.as_ref(), job).await;
                    pending.done();
                    drop(slot);
                });
            }
        });
        queue
    }

    /// Queues `mail` and returns at once.
    pub fn enqueue(&self, mail: Mail) -> MailReceipt {
        let (tx, rx) = oneshot::channel();
        self.pending.count.fetch_add(1, Ordering::AcqRel);
        match self.jobs.try_send(Job { mail, first_attempt: tx }) {
            Ok(()) => MailReceipt(Some(rx)),
            Err(e) => {
                self.pending.done();
                let job = match e {
                    mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job) => job,
                };
                metrics::counter!("latchkey_mail_total", "outcome" => "lost").increment(1);
                tracing::error!(to = %job.mail.to.masked(), subject = %job.mail.subject, "mail lost: the mail queue is full");
                MailReceipt::failed()
            }
        }
    }

    /// Waits until every queued mail has been delivered or given up on, or `timeout` passes
    /// (for graceful shutdown). Returns whether the queue is empty.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let drained = async {
            loop {
                let idle = self.pending.idle.notified();
                if self.pending.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, drained).await.is_ok()
    }
}

/// Tries a mail up to [`ATTEMPTS`] times, reporting the first attempt.
async fn deliver(mailer: &dyn Mailer, job: Job) {
    let Job { mail, first_attempt } = job;
    let mut first_attempt = Some(first_attempt);
    for attempt in 0..ATTEMPTS {
        if let Some(pause) = attempt.checked_sub(1).and_then(|i| BACKOFF.get(i)) {
            tokio::time::sleep(*pause).await;
        }
        let result = mailer.send(&mail).await;
        if let Some(tx) = first_attempt.take() {
            let _ = tx.send(if result.is_ok() { Delivery::Sent } else { Delivery::Failed });
        }
        match result {
            Ok(()) => {
                metrics::counter!("latchkey_mail_total", "outcome" => "sent").increment(1);
                return;
            }
            Err(e) => {
                metrics::counter!("latchkey_mail_total", "outcome" => "retried").increment(1);
                tracing::warn!(to = %mail.to.masked(), attempt = attempt + 1, error = %e, "mail delivery failed");
            }
        }
    }
    metrics::counter!("latchkey_mail_total", "outcome" => "lost").increment(1);
    tracing::error!(to = %mail.to.masked(), subject = %mail.subject, attempts = ATTEMPTS, "mail lost: every delivery attempt failed");
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::identity::Email;
    use crate::ports::MailError;

    /// Refuses the first `refuse` sends, then keeps mails.
    #[derive(Default)]
    struct Flaky {
        refuse: Mutex<usize>,
        sent: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Mailer for Flaky {
        async fn send(&self, mail: &Mail) -> Result<(), MailError> {
            let mut refuse = self.refuse.lock().map_err(|e| MailError(e.to_string()))?;
            if *refuse > 0 {
                *refuse -= 1;
                return Err(MailError("451 try again".into()));
            }
            self.sent.lock().map_err(|e| MailError(e.to_string()))?.push(mail.subject.clone());
            Ok(())
        }
    }

    fn mail(subject: &str) -> Mail {
        Mail { to: Email::parse("a@example.com").expect("email"), subject: subject.into(), text: "x".into() }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_mail_is_retried_and_the_first_attempt_reported() {
        let mailer = Arc::new(Flaky { refuse: Mutex::new(1), ..Flaky::default() });
        let queue = MailQueue::start(mailer.clone(), 8);
        let receipt = queue.enqueue(mail("one"));
        assert_eq!(receipt.first_attempt().await, Delivery::Failed);
        assert!(queue.flush(Duration::from_secs(60)).await, "delivered on the retry");
        assert_eq!(*mailer.sent.lock().expect("sent"), ["one"]);
        assert_eq!(queue.enqueue(mail("two")).first_attempt().await, Delivery::Sent);
    }

    #[tokio::test(start_paused = true)]
    async fn a_mail_every_attempt_fails_for_is_given_up() {
        let mailer = Arc::new(Flaky { refuse: Mutex::new(ATTEMPTS), ..Flaky::default() });
        let queue = MailQueue::start(mailer.clone(), 8);
        drop(queue.enqueue(mail("lost")));
        assert!(queue.flush(Duration::from_secs(60)).await);
        assert!(mailer.sent.lock().expect("sent").is_empty());
    }
}
