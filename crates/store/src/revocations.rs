//! The [`RevocationBus`] across instances sharing one PostgreSQL database: `NOTIFY` on the
//! channel [`CHANNEL`], received by every instance through `LISTEN` (PostgreSQL documentation,
//! "NOTIFY" and "LISTEN"; sqlx's `PgListener`).
//!
//! Each notification's payload is one revocation as text: `<instance> <tenant> <session>
//! <user>` (UUIDs, hyphenated; about 150 bytes, far below PostgreSQL's 8000-byte limit).
//! Revocations published by this process are delivered to its own subscribers at once, and the
//! listener skips notifications carrying this process's instance id, so each reaches local
//! subscribers exactly once, whether or not the listening connection is up at that moment.
//! A lost listening connection is re-established (by sqlx, or by a new listener after any other
//! failure) and listens again; what was notified while it was down is not replayed, which delays pushes but never the refusal of a
//! revoked credential (every credential check reads the session row).

use std::time::Duration;

use async_trait::async_trait;
use latchkey_core::identity::{SessionId, TenantId, UserId};
use latchkey_core::ports::RevocationBus;
use latchkey_core::session::Revocation;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::broadcast;
use uuid::Uuid;

/// The notification channel.
pub const CHANNEL: &str = "latchkey_revocations";

/// How long the listener waits before trying again after a failure it could not recover from
/// by itself.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Revocations over PostgreSQL `LISTEN`/`NOTIFY`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgRevocationBus {
    pool: PgPool,
    instance: Uuid,
    local: broadcast::Sender<Revocation>,
}

impl PgRevocationBus {
    /// A bus that only publishes (for maintenance commands such as `latchkey users disable`,
    /// which revoke sessions without serving): its revocations reach every listening
    /// instance; it receives nothing from others.
    pub fn publisher(pool: PgPool) -> Self {
        Self {
            pool,
            instance: Uuid::new_v4(),
            local: broadcast::channel(latchkey_core::session::LocalRevocationBus::CAPACITY).0,
        }
    }

    /// A bus that publishes (through `pool`) and listens: it starts listening on [`CHANNEL`]
    /// before returning, so every revocation committed afterwards, by any instance, reaches its
    /// subscribers. The listening connection is one of its own, opened with `pool`'s connect
    /// options, so it takes nothing from `pool` (however small); it is closed when `pool` is.
    ///
    /// # Errors
    /// When the listening connection cannot be opened or `LISTEN` fails.
    pub async fn listening(pool: PgPool) -> Result<Self, sqlx::Error> {
        let bus = Self::publisher(pool.clone());
        let own = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with((*pool.connect_options()).clone())
            .await?;
        let listener = open_listener(&own).await?;
        let closing = pool.close_event();
        tokio::spawn({
            let own = own.clone();
            async move {
                closing.await;
                own.close().await;
            }
        });
        tokio::spawn(listen(own, listener, bus.instance, bus.local.clone()));
        Ok(bus)
    }
}

/// Delivers notifications of other instances to `local` until the pool closes. A connection
/// sqlx reports lost is re-established by sqlx itself (`try_recv` answers `None`); after any
/// other failure the listener is replaced by a new one, every [`RETRY_AFTER`] until that works.
async fn listen(pool: PgPool, mut listener: PgListener, instance: Uuid, local: broadcast::Sender<Revocation>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => match parse(notification.payload()) {
                Some((from, _)) if from == instance => {}
                // No receivers is fine: nobody is listening on this instance.
                Some((_, revocation)) => drop(local.send(revocation)),
                None => tracing::warn!(channel = CHANNEL, "ignoring a malformed revocation notification"),
            },
            Ok(None) => tracing::warn!("the revocation listener lost its database connection; listening again"),
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "the revocation listener failed; reconnecting");
                listener = loop {
                    tokio::time::sleep(RETRY_AFTER).await;
                    match open_listener(&pool).await {
                        Ok(fresh) => break fresh,
                        Err(sqlx::Error::PoolClosed) => return,
                        Err(e) => tracing::warn!(error = %e, "cannot listen for revocations yet; retrying"),
                    }
                };
            }
        }
    }
}

/// A listener on [`CHANNEL`] holding one connection of `pool`.
async fn open_listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// The payload of one revocation published by `instance`.
fn payload(instance: Uuid, r: &Revocation) -> String {
    format!("{} {} {} {}", instance.hyphenated(), r.tenant, r.session, r.user)
}

/// Parses [`payload`]'s format: the publishing instance and the revocation.
fn parse(payload: &str) -> Option<(Uuid, Revocation)> {
    let mut parts = payload.split(' ');
    let instance = Uuid::parse_str(parts.next()?).ok()?;
    let tenant = TenantId::parse(parts.next()?).ok()?;
    let session = SessionId::parse(parts.next()?).ok()?;
    let user = UserId::parse(parts.next()?).ok()?;
    parts.next().is_none().then_some((instance, Revocation { tenant, session, user }))
}

#[async_trait]
impl RevocationBus for PgRevocationBus {
    async fn publish(&self, revocations: &[Revocation]) {
        if revocations.is_empty() {
            return;
        }
        for r in revocations {
            let _ = self.local.send(r.clone());
        }
        let payloads: Vec<String> = revocations.iter().map(|r| payload(self.instance, r)).collect();
        // One statement for the whole batch; each row is one notification.
        let sent = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
            .bind(CHANNEL)
            .bind(&payloads)
            .execute(&self.pool)
            .await;
        if let Err(e) = sent {
            tracing::error!(
                error = %e,
                sessions = revocations.len(),
                "cannot announce revoked sessions to other instances (their sockets learn of it only on their next check)"
            );
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.local.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_junk_is_refused() {
        let r = Revocation { tenant: TenantId::DEFAULT, session: SessionId::random(), user: UserId::random() };
        let me = Uuid::new_v4();
        let text = payload(me, &r);
        assert!(text.len() < 8000);
        assert_eq!(parse(&text), Some((me, r)));
        for junk in ["", "x", &format!("{text} extra"), &text[..text.len() - 1], "a b c d"] {
            assert_eq!(parse(junk), None, "{junk:?}");
        }
    }
}
