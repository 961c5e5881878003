//! The surfaces of API.md, one module per wire API. Each exposes exactly one entry point,
//! `mount(&SurfaceContext) -> Mounted`: it parses its wire format into calls on
//! [`latchkey_core::Auth`] and maps [`latchkey_core::Error`] to its own error shape in one
//! `From` impl. The modules are private and nothing in them is public beyond `mount`, so no
//! surface can import another; removing a surface is deleting its module and its line in
//! [`ALL`].

use crate::context::Surface;

mod auth;
mod cognito;
mod graphql;
mod projects;
mod realtime;
mod users;
mod v1;

#[doc(hidden)]
pub use graphql::execute_document as execute_graphql_document;
#[doc(hidden)]
pub use realtime::check_frame as check_realtime_frame;

/// Every surface, in mount order; `LATCHKEY_SURFACES` selects among them by name.
#[rustfmt::skip]
pub const ALL: &[Surface] = &[
    Surface { name: "users", keys: &[], mount: users::mount },
    Surface { name: "graphql", keys: &[], mount: graphql::mount },
    Surface { name: "auth", keys: &[], mount: auth::mount },
    Surface { name: "v1", keys: &[], mount: v1::mount },
    Surface { name: "projects", keys: &[], mount: projects::mount },
    Surface { name: "cognito", keys: cognito::KEYS, mount: cognito::mount },
    Surface { name: "realtime", keys: realtime::KEYS, mount: realtime::mount },
];

/// The configuration keys every surface declares.
pub fn claimed_keys() -> Vec<&'static str> {
    ALL.iter().flat_map(|s| s.keys.iter().copied()).collect()
}
