//! # latchkey-core
//!
//! The domain of Latchkey, a self-hosted authentication server: one user directory, one
//! session model, and every rule of the wire contract's "Shared rules" (`shared/API.md`),
//! written once. Surfaces parse their wire formats into calls on [`Auth`] and map [`Error`] to
//! their wire errors; they hold no rules of their own.
//!
//! The core knows nothing of HTTP, SQL or SMTP. What it needs from outside is in [`ports`]
//! ([`ports::Store`], [`ports::Mailer`]) and [`clock`] ([`clock::Clock`]). Security events are
//! recorded in [`audit`].

pub mod audit;
pub mod clock;
pub mod code;
pub mod error;
pub mod identity;
pub mod limits;
pub mod outbox;
pub mod password;
pub mod ports;
pub mod secret;
pub mod session;
pub mod session_cache;
pub mod srp;
pub mod tenant;
pub mod time_util;
pub mod token;

mod auth;

pub use auth::bound::RefreshPair;
pub use auth::import::{ExportCursor, ImportRow, Imported, RowRejected};
pub use auth::passwordless::{Registration, RegistrationFailed, RegistrationStep};
pub use auth::presented::{PresentedTokens, ProvenSession};
pub use auth::srp::{SrpChallenge, SrpResponse};
pub use auth::tenants::{NewApiKey, OwnerSignedUp};
pub use auth::{Auth, Authenticated, Deps, ExtraClaims, NewUser, Settings, SignedIn, SignedUp, TokenSet};
pub use error::{Error, FieldError, Result};
pub use outbox::{Delivery, MailReceipt};
