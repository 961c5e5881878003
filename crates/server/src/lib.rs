//! # latchkey
//!
//! The Latchkey server: configuration, mail transports, the HTTP application and its
//! surfaces. `main.rs` only parses the command line, sets up telemetry and runs an
//! [`app::Application`]; tests build the same application on port 0.

pub mod app;
pub mod cli;
pub mod config;
pub mod context;
pub mod http;
pub mod import;
pub mod mail;
pub mod problem;
pub mod ratelimit;
pub mod surfaces;
pub mod telemetry;

pub use app::Application;
pub use config::Config;
