//! The core's integration tests: one binary, one module per concern. Each test builds an
//! `Auth` over a real store (SQLite in memory, or PostgreSQL where a module says so) and a
//! manual clock, and drives it through its public API only.

mod audit;
mod auth;
mod bound;
mod cache;
mod properties;
mod support;
mod tenants;
