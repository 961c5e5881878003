//! `latchkey`: the command line. See `latchkey --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use latchkey_core::audit::{AuditKind, AuditQuery};
use latchkey_core::identity::{ApiKeyId, Email, TenantId, UserId};
use latchkey_server::config::Config;
use latchkey_server::{Application, app, cli, import, surfaces, telemetry};

/// Latchkey: a self-hosted authentication server with one user directory and many API
/// surfaces.
#[derive(Debug, Parser)]
#[command(name = "latchkey", version, about, after_long_help = Config::help_text(), after_help = "Run `latchkey --help` for every configuration key.")]
struct Cli {
    /// TOML file with configuration keys (lower case, without the LATCHKEY_ prefix);
    /// environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Print the results of `tenant`, `user` and `session` commands as JSON instead of tables
    /// (`audit`: JSON Lines).
    #[arg(long, global = true)]
    json: bool,

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
    /// Manage tenants and their API keys.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// List, disable, enable or delete users (effective at once on every instance).
    #[command(alias = "users")]
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Revoke sessions (effective at once on every instance).
    Session {
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// Import users from another service: JSON Lines (one user per line) or CSV (README,
    /// "Migrating users from another service"). Bad rows are reported as `line N: reason` and skipped; the command fails
    /// when any row failed. Existing accounts are never changed, so a second run of the same
    /// file changes nothing.
    Import {
        /// The file's format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ImportFormat,
        #[command(flatten)]
        tenant: TenantArg,
        /// Check every row and report, but store nothing.
        #[arg(long)]
        dry_run: bool,
        /// The file to read, or `-` for standard input.
        file: String,
    },
    /// Write a tenant's users to standard output in the import format (JSON Lines), with
    /// their password hashes as stored, for `latchkey import` on another database.
    Export {
        /// The output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// List stored security events (sign-ups, sign-ins and failures, sign-outs, refreshes,
    /// codes, password and email changes, keys, rate limits, account changes), newest first:
    /// a table, or JSON Lines with --json. Filters combine; --kind may be repeated.
    Audit {
        /// Only this user's events (user id, UUID).
        #[arg(long, value_name = "UUID", value_parser = parse_user_id)]
        user: Option<UserId>,
        /// Only events with this email address (case-insensitive).
        #[arg(long, value_name = "ADDR", value_parser = parse_email)]
        email: Option<Email>,
        /// Only this tenant's events: its id (UUID), `default` or `project-owners`.
        #[arg(long, value_name = "TENANT", value_parser = parse_tenant_arg)]
        tenant: Option<TenantId>,
        /// Only events of this kind (repeatable), e.g. sign_in_failed.
        #[arg(long, value_name = "KIND", value_parser = cli::parse_kind)]
        kind: Vec<AuditKind>,
        /// Only events at or after T: RFC 3339, or a duration ago (1h, 7d).
        #[arg(long, value_name = "T", value_parser = cli::parse_time)]
        since: Option<cli::TimeArg>,
        /// Only events before T: RFC 3339, or a duration ago (1h, 7d).
        #[arg(long, value_name = "T", value_parser = cli::parse_time)]
        until: Option<cli::TimeArg>,
        /// At most N events (1 to 100000).
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
    },
    /// Validate the configuration, print it (secrets redacted) and exit.
    CheckConfig,
}

fn parse_user_id(raw: &str) -> Result<UserId, String> {
    UserId::parse(raw.trim()).map_err(|_| format!("{raw:?} is not a user id (UUID)"))
}

fn parse_email(raw: &str) -> Result<Email, String> {
    Email::parse(raw).map_err(|_| format!("{raw:?} is not an email address"))
}

fn parse_tenant_arg(raw: &str) -> Result<TenantId, String> {
    cli::parse_tenant(raw).map_err(|e| e.to_string())
}

/// The formats `latchkey import` reads.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ImportFormat {
    /// JSON Lines: one object per line with the import row's fields.
    Jsonl,
    /// CSV with a header line naming the import row's fields.
    Csv,
    /// The JSON output of `aws cognito-idp list-users`.
    Cognito,
}

/// The formats `latchkey export` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    /// JSON Lines: one object per line with the import row's fields.
    Jsonl,
}

/// The tenant a command acts on: its id (UUID), `default` or `project-owners`.
#[derive(Debug, clap::Args)]
struct TenantArg {
    /// Tenant id (UUID), `default` or `project-owners`.
    #[arg(long, value_name = "TENANT", default_value = "default")]
    tenant: String,
}

/// A tenant that must be named.
#[derive(Debug, clap::Args)]
struct RequiredTenantArg {
    /// Tenant id (UUID), `default` or `project-owners`.
    #[arg(long, value_name = "TENANT")]
    tenant: String,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant; prints its id and its first API key (shown this once).
    Create {
        /// The tenant's name (for operators; 1 to 200 characters).
        #[arg(long)]
        name: String,
    },
    /// List every tenant.
    List,
    /// Manage a tenant's API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create an API key; prints it this once. The other keys keep working.
    Create(RequiredTenantArg),
    /// List the tenant's keys (never the keys themselves).
    List(RequiredTenantArg),
    /// Revoke a key: refused at once on every instance.
    Revoke {
        #[command(flatten)]
        tenant: RequiredTenantArg,
        /// The key's id (from `tenant key list`).
        key: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// List the tenant's users, oldest first, one page at a time.
    List {
        #[command(flatten)]
        tenant: RequiredTenantArg,
        /// Users per page (1 to 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// The page to show, from 1.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        page: u64,
    },
    /// Refuse sign-in and end every session of the user.
    Disable {
        /// The user's email address or id.
        user: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Allow a disabled user to sign in again.
    Enable {
        /// The user's email address or id.
        user: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Delete the user, with their sessions.
    Delete {
        /// The user's email address or id.
        user: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
}

#[derive(Debug, Subcommand)]
enum SessionCommand {
    /// Revoke every session of a user.
    Revoke {
        /// The user's email address or id.
        #[arg(long)]
        user: String,
        #[command(flatten)]
        tenant: TenantArg,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a new current signing key; the previous key keeps verifying until the next
    /// rotation.
    Rotate,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // One line: what was wrong with the command line (clap's message up to its usage
            // section, e.g. "the following required arguments were not provided: --tenant").
            let text = e.to_string();
            let message: Vec<&str> =
                text.lines().map(str::trim).take_while(|l| !l.is_empty() && !l.starts_with("Usage:")).collect();
            eprintln!("latchkey: {}", message.join(" ").trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let json = cli.json;
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
            Command::Tenant { command } => operate(&config, json, tenant_command(command)?).await,
            Command::User { command } => operate(&config, json, user_command(command)?).await,
            Command::Session { command: SessionCommand::Revoke { user, tenant } } => {
                let command = cli::Command::SessionRevoke(cli::parse_tenant(&tenant.tenant)?, cli::parse_user(&user)?);
                operate(&config, json, command).await
            }
            Command::Import { format, tenant, dry_run, file } => {
                let tenant = cli::parse_tenant(&tenant.tenant)?;
                let format = match format {
                    ImportFormat::Jsonl => import::Format::Jsonl,
                    ImportFormat::Csv => import::Format::Csv,
                    ImportFormat::Cognito => import::Format::Cognito,
                };
                let summary =
                    import::run(&config, tenant, format, &file, dry_run, &mut |line| eprintln!("{line}")).await?;
                println!("{}", summary.line(dry_run));
                if summary.failed > 0 {
                    return Err(anyhow::anyhow!("{} rows failed (reported above)", summary.failed));
                }
                Ok(())
            }
            Command::Export { format: ExportFormat::Jsonl, tenant } => {
                let tenant = cli::parse_tenant(&tenant.tenant)?;
                let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
                let written = import::export(&config, tenant, &mut out).await?;
                eprintln!("exported {written}");
                Ok(())
            }
            Command::Audit { user, email, tenant, kind, since, until, limit } => {
                let now = time::OffsetDateTime::now_utc();
                let query = AuditQuery {
                    tenant,
                    user_id: user,
                    email: email.map(|e| e.as_str().to_owned()),
                    kinds: kind,
                    since: since.map(|t| t.resolve(now)),
                    until: until.map(|t| t.resolve(now)),
                    limit,
                };
                let events = cli::audit(&config, &query).await?;
                print!("{}", cli::render_audit(&events, json));
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

/// Runs an operator command and prints its report.
async fn operate(config: &Config, json: bool, command: cli::Command) -> anyhow::Result<()> {
    let report = cli::run(config, command).await?;
    print!("{}", report.render(json));
    if let (false, Some(note)) = (json, &report.note) {
        eprintln!("{note}");
    }
    Ok(())
}

fn tenant_command(command: TenantCommand) -> anyhow::Result<cli::Command> {
    Ok(match command {
        TenantCommand::Create { name } => cli::Command::TenantCreate { name },
        TenantCommand::List => cli::Command::TenantList,
        TenantCommand::Key { command: KeyCommand::Create(t) } => cli::Command::KeyCreate(cli::parse_tenant(&t.tenant)?),
        TenantCommand::Key { command: KeyCommand::List(t) } => cli::Command::KeyList(cli::parse_tenant(&t.tenant)?),
        TenantCommand::Key { command: KeyCommand::Revoke { tenant, key } } => {
            let id = ApiKeyId::parse(&key).map_err(|_| anyhow::anyhow!("key {key:?}: expected a key id (UUID)"))?;
            cli::Command::KeyRevoke(cli::parse_tenant(&tenant.tenant)?, id)
        }
    })
}

fn user_command(command: UserCommand) -> anyhow::Result<cli::Command> {
    let act = |user: &str, tenant: &TenantArg, action| -> anyhow::Result<cli::Command> {
        Ok(cli::Command::User(cli::parse_tenant(&tenant.tenant)?, cli::parse_user(user)?, action))
    };
    match command {
        UserCommand::List { tenant, limit, page } => {
            Ok(cli::Command::UserList { tenant: cli::parse_tenant(&tenant.tenant)?, limit, page })
        }
        UserCommand::Disable { user, tenant } => act(&user, &tenant, cli::UserAction::Disable),
        UserCommand::Enable { user, tenant } => act(&user, &tenant, cli::UserAction::Enable),
        UserCommand::Delete { user, tenant } => act(&user, &tenant, cli::UserAction::Delete),
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
