//! HTTP plumbing shared by the surfaces; no auth rule lives here.
//!
//! - [`body`]: the one input pipeline: a JSON body read with the size and media-type rules of
//!   API.md "Bad input", deserialised into a serde DTO with `serde_path_to_error`; rejections
//!   become the surface's own error type.
//! - [`input`]: what DTOs are made of: a lenient field for seeds that report every bad field,
//!   the code-as-number-or-string type, and the validation collector that turns DTO fields
//!   into domain types.
//! - [`cookies`]: cookie attributes, reading cookies, and the credential lookup order.
//! - [`client`]: the client's address and user agent.
//! - [`origin`]: the refusal of cross-site cookie-authenticated requests (CSRF), switched on
//!   per route, and the request's own scheme.

pub mod body;
pub mod client;
pub mod cookies;
pub mod input;
pub mod origin;

pub use body::{BodyError, MAX_BODY_BYTES, read_json};
pub use client::{Client, ClientAddressPolicy};
pub use cookies::{CookiePolicy, credential};
pub use input::{Checked, CodeInput, FieldProblem, Lenient, Validator};
pub use origin::{Methods, OriginGuard, OriginPolicy};
