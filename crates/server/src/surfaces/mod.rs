//! The surfaces of API.md: one module per wire API. Each parses its wire format into calls on
//! [`latchkey_core::Auth`] and maps [`latchkey_core::Error`] to its own error shape in one
//! place. Surfaces never import each other; removing one leaves the rest working.

pub mod users;
pub mod v1;
