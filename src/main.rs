//! The `wechat-oauth-proxy` sidecar binary: load and check the configuration, then serve.
//!
//! ```text
//! wechat-oauth-proxy [--config config.toml] [--check] [--listen ADDR] [--public-url URL] [--state-dir DIR]
//! wechat-oauth-proxy jwt verify --jwks <URL|FILE> [--iss ISS] [--aud AUD] [--alg EdDSA] < token
//! ```
//! Exit codes: 0 after a clean shutdown (or a good `--check`), 64 for a bad configuration,
//! 1 when serving fails. Before serving, the soft open-file limit is raised to the hard one.
//!
//! `jwt verify` (for operators) checks one identity JWT against a JWKS with the library's
//! [`JwksVerifier`]: 0 and the claims as JSON on stdout when it is valid, 1 and the reason on
//! stderr otherwise (2 for wrong usage).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::io::Read as _;

use clap::{Parser, Subcommand};
use wechat_oauth_proxy::app;
use wechat_oauth_proxy::config::{Config, ConfigError, ResolvedSecrets};
use wechat_oauth_proxy::jwt::{Expected, JwksSource, JwksVerifier, JwtAlgorithm};
use wechat_oauth_proxy::logging::{self, LogSettings};

/// WeChat login in front of any upstream: a reverse proxy that runs WeChat web OAuth and forwards
/// requests with a signed identity JWT.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file.
    #[arg(long, short, default_value = "config.toml")]
    config: PathBuf,
    /// Validate the configuration, print every problem, and exit (64 when it is bad).
    #[arg(long)]
    check: bool,
    /// Override `server.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Override `server.public_url`.
    #[arg(long)]
    public_url: Option<url::Url>,
    /// Override `server.state_dir`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// A tool instead of the server.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Identity JWT tools for operators.
    #[command(subcommand)]
    Jwt(JwtCommand),
}

#[derive(Debug, Subcommand)]
enum JwtCommand {
    /// Verify the JWT on standard input against a JWKS (pinned algorithm, key by `kid`, `exp`,
    /// `nbf`, and `iss`/`aud` when given); print its claims as JSON.
    Verify {
        /// The JWKS: an http(s) URL (e.g. https://example.com/_wxauth/jwks.json) or a file.
        #[arg(long)]
        jwks: JwksSource,
        /// The expected `iss` (`[jwt] issuer`); not checked when absent.
        #[arg(long)]
        iss: Option<String>,
        /// The expected `aud` (`[jwt] audience`); not checked when absent.
        #[arg(long)]
        aud: Option<String>,
        /// The one algorithm accepted (`[jwt] algorithm`): EdDSA, ES256 or RS256.
        #[arg(long, default_value = "EdDSA")]
        alg: JwtAlgorithm,
    },
}

/// Largest token `jwt verify` reads from standard input.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// `EX_CONFIG`-style exit code for a bad configuration (sysexits' EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

/// The same allocator as the sidecar binary (feature `mimalloc`, on by default).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Jwt(JwtCommand::Verify {
        jwks,
        iss,
        aud,
        alg,
    })) = cli.command
    {
        let expected = Expected {
            algorithm: alg,
            issuer: iss,
            audience: aud,
        };
        return jwt_verify(&jwks, expected);
    }

    let env: HashMap<String, String> = std::env::vars().collect();
    let overrides = Overrides {
        listen: cli.listen,
        public_url: cli.public_url.clone(),
        state_dir: cli.state_dir.clone(),
    };
    let loaded = load_valid(&cli.config, &overrides, &env);
    // The log as `[log]` says (text at `info` when the file is unusable), before anything logs.
    init_tracing(
        loaded
            .as_ref()
            .map(|(c, _)| c.log.settings())
            .unwrap_or_default(),
    );
    let (config, secrets) = match loaded.map_err(|err| err.to_string()).and_then(checked) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("{}: {err}", cli.config.display());
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if cli.check {
        println!("{}: configuration OK", cli.config.display());
        return ExitCode::SUCCESS;
    }

    raise_fd_limit();
    let runtime = match wechat_oauth_proxy::server::runtime(config.server.runtime_threads()) {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // SIGHUP reloads the same file exactly as it was loaded here.
    let path = cli.config.clone();
    let source = app::ConfigSource {
        path: cli.config.clone(),
        overridden: overrides.keys(),
        load: Box::new(move || load(&path, &overrides, &env)),
    };
    match runtime.block_on(app::run_reloadable(
        config,
        secrets,
        Some(source),
        wechat_oauth_proxy::server::shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "wechat-oauth-proxy stopped");
            eprintln!("wechat-oauth-proxy: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The command-line values that replace the file's.
struct Overrides {
    listen: Option<SocketAddr>,
    public_url: Option<url::Url>,
    state_dir: Option<PathBuf>,
}

impl Overrides {
    /// The keys they replace.
    fn keys(&self) -> Vec<&'static str> {
        [
            ("server.listen", self.listen.is_some()),
            ("server.public_url", self.public_url.is_some()),
            ("server.state_dir", self.state_dir.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, given)| given.then_some(key))
        .collect()
    }
}

/// The configuration at `path` with the command-line overrides, validated, and what start-up
/// would build from it built once without I/O (`app::check`): `--check`, start-up and a
/// `SIGHUP` reload refuse exactly the same files.
fn load(
    path: &Path,
    overrides: &Overrides,
    env: &HashMap<String, String>,
) -> Result<(Config, ResolvedSecrets), String> {
    load_valid(path, overrides, env)
        .map_err(|err| err.to_string())
        .and_then(checked)
}

/// [`load`] up to `validate` (the log can be set up from it before `app::check` logs).
fn load_valid(
    path: &Path,
    overrides: &Overrides,
    env: &HashMap<String, String>,
) -> Result<(Config, ResolvedSecrets), ConfigError> {
    let (mut config, secrets) = Config::load(path, env)?;
    // Overrides are applied before validating again, so --check sees the effective config.
    if let Some(listen) = overrides.listen {
        config.server.listen = listen;
    }
    if let Some(url) = overrides.public_url.clone() {
        config.server.public_url = url;
    }
    if let Some(dir) = overrides.state_dir.clone() {
        config.server.state_dir = dir;
    }
    let problems = config.validate(&secrets);
    if problems.is_empty() {
        Ok((config, secrets))
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// What start-up would build, built once without I/O: `--check` refuses exactly what
/// start-up refuses.
fn checked(
    (config, secrets): (Config, ResolvedSecrets),
) -> Result<(Config, ResolvedSecrets), String> {
    app::check(&config, &secrets).map_err(|err| err.to_string())?;
    Ok((config, secrets))
}

/// `jwt verify`: the token from standard input, the verdict of the library's `JwksVerifier`.
fn jwt_verify(jwks: &JwksSource, expected: Expected) -> ExitCode {
    for (claim, value) in [("iss", &expected.issuer), ("aud", &expected.audience)] {
        if value.is_none() {
            eprintln!("note: {claim} is not checked (no --{claim})");
        }
    }
    let mut token = String::new();
    if let Err(err) = std::io::stdin()
        .take(MAX_TOKEN_BYTES)
        .read_to_string(&mut token)
    {
        eprintln!("rejected: cannot read the token from standard input: {err}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let verified = runtime.block_on(JwksVerifier::load(jwks, expected));
    match verified.and_then(|verifier| verifier.verify(token.trim())) {
        Ok(claims) => match serde_json::to_string(&claims) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("rejected: {err}");
                ExitCode::FAILURE
            }
        },
        Err(err) => {
            eprintln!("rejected: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so that every connection the timeouts
/// allow can get a file descriptor (distributions often default to a soft limit of 1 024).
/// A failure is logged and serving goes on with the limit as it is.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open file limit (RLIMIT_NOFILE)"),
        Err(error) => tracing::warn!(%error, "cannot raise the open file limit (RLIMIT_NOFILE)"),
    }
}

/// The process-wide log: `[log]`'s format and level, `RUST_LOG` overriding the level.
fn init_tracing(settings: LogSettings) {
    if let Err(err) = logging::init(&settings) {
        eprintln!("cannot set up logging: {err}");
    }
}
