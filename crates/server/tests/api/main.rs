//! End-to-end tests: one binary, one module per surface. Each test starts a real Latchkey on
//! `127.0.0.1:0` with its own database and a real SMTP sink, and talks HTTP to it.
//!
//! Every module talks to the server through the harness in `helpers` (one request helper per
//! endpoint, and the shared flows: a signed-up, verified or signed-in user); no test module
//! imports from another.

mod audit;
mod auth;
mod browser;
mod cli;
mod cognito;
mod graphql;
mod hardening;
mod helpers;
mod import;
mod limits;
mod ops;
mod projects;
mod realtime;
mod tokens;
mod users;
mod v1;
