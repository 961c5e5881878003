//! `latchkey`: the command line. See `latchkey --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use latchkey_server::config::Config;
use latchkey_server::{Application, app, surfaces, telemetry};

/// Latchkey: a self-hosted authentication server with one user directory and many API
/// surfaces.
#[derive(Debug, Parser)]
#[command(name = "latchkey", version, about, after_long_help = Config::help_text(), after_help = "Run `latchkey --help` for every configuration key.")]
struct Cli {
    /// TOML file with configuration keys (lower case, without the LATCHKEY_ prefix);
    /// environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the server (the default): migrate the database, load keys, serve HTTP until
    /// SIGINT or SIGTERM.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage the signing key ring.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Disable, enable or delete a user of the default tenant (effective at once on every
    /// instance).
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Validate the configuration, print it (secrets redacted) and exit.
    CheckConfig,
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Refuse sign-in and end every session of the user.
    Disable {
        /// The user's email address.
        email: String,
    },
    /// Allow a disabled user to sign in again.
    Enable {
        /// The user's email address.
        email: String,
    },
    /// Delete the user, with their sessions.
    Delete {
        /// The user's email address.
        email: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a new current signing key; the previous key keeps verifying until the next
    /// rotation.
    Rotate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Surfaces declare the configuration keys they read, and LATCHKEY_SURFACES names them.
    let loaded = Config::load(cli.config.as_deref(), &surfaces::claimed_keys())
        .and_then(|(config, warnings)| app::selected_surfaces(&config).map(|_| (config, warnings)));
    let (config, warnings) = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(&config.log, config.log_format, std::io::stderr);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => Application::build(config).await?.run_until_stopped().await,
            Command::Migrate => {
                app::migrate(&config).await?;
                println!("migrations applied");
                Ok(())
            }
            Command::Keys { command: KeysCommand::Rotate } => {
                let kid = app::rotate_keys(&config).await?;
                println!("new current signing key: {kid}");
                Ok(())
            }
            Command::Users { command } => {
                let (email, action) = match command {
                    UsersCommand::Disable { email } => (email, app::UserAction::Disable),
                    UsersCommand::Enable { email } => (email, app::UserAction::Enable),
                    UsersCommand::Delete { email } => (email, app::UserAction::Delete),
                };
                let id = app::manage_user(&config, &email, action).await?;
                println!("{action:?}d user {id}");
                Ok(())
            }
            Command::CheckConfig => {
                println!("{config:#?}");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain names the setting involved.
            eprintln!("latchkey: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use latchkey_server::config::KEYS;

    use super::Cli;

    #[test]
    fn long_help_shows_every_key_with_its_default() {
        let help = Cli::command().render_long_help().to_string();
        for key in KEYS {
            assert!(help.contains(key.env), "{} missing from --help:\n{help}", key.env);
            let default = format!("default: {}", key.default_text());
            assert!(help.contains(&default), "{default:?} missing from --help:\n{help}");
        }
    }
}
