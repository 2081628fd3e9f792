//! The command line; everything it does lives in the library.

use clap::{Parser, Subcommand};
use conclave_agent::config::{self, Config, LogFormat};
use conclave_agent::{agents, bootstrap, ops, service};
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc, with its background thread purging freed pages, instead of glibc's malloc: after a
/// burst of big transactions glibc kept its arenas (233 MiB resident for a minute after ten
/// 20 MB transactions; idle 19 MiB). Measured against glibc and mimalloc with `cargo bench --bench memory`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "conclave-agent", version, about = "The Conclave workspace's Matrix agent (an application service)")]
struct Cli {
    /// Config file [default: $CONCLAVE_CONFIG, then ./conclave.toml]
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a starter config with fresh random tokens (mode 0600).
    Init {
        #[arg(long)]
        server_name: String,
        #[arg(long)]
        homeserver_url: String,
        /// Where to write it [default: the config path]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print (or write, mode 0600) the Synapse registration derived from the config.
    Registration {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run the appservice.
    Serve,
    /// Probe every backend at once, each under a short timeout, and print one line each.
    ///
    /// Lines are `<name> <up|down|off> <N> ms <detail>` for homeserver (reachable, registration
    /// loaded), database, llm (the chat model exists), embedder (one embedding, its dimension),
    /// chroma (heartbeat, the collection's distance), planka (the API key works), browser (a blank
    /// page in a fresh context) and agent:<name> for each coding agent (its command exists); `off`
    /// means not configured. Exits 1 if homeserver or database is down; the others are shown down
    /// without changing the exit code.
    Check,
    /// Have the running agent read a room's earlier history into the search index again.
    Backfill {
        /// The room id (`!abc:server`); the agent must be in it.
        room: String,
        /// Events to read at most [default: chroma.backfill_limit]
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Create the workspace's rooms (alias, name, topic, encryption, invites, power levels) if
    /// missing, and bring the coding agents in; a second run changes nothing.
    Bootstrap {
        /// The rooms file [default: rooms.toml beside the config file]
        #[arg(long)]
        rooms: Option<PathBuf>,
    },
    /// The events set aside after failing too often: list them, or put them back in the inbox for
    /// the running agent to handle again.
    #[command(name = "dead-letters", subcommand)]
    DeadLetters(DeadLetters),
    /// Print a new bearer token of coding agent NAME, once (only its hash is kept).
    ///
    /// Refuses when the agent has one already, unless --rotate, which revokes the old one at once.
    Token {
        #[arg(long, value_name = "NAME")]
        agent: String,
        #[arg(long)]
        rotate: bool,
    },
    // The coding agents' commands ($CONCLAVE_AGENT_URL, $CONCLAVE_AGENT_TOKEN; no config file).
    #[command(flatten)]
    Agent(agents::cli::Command),
}

#[derive(Subcommand)]
enum DeadLetters {
    /// One line each, oldest first: id, room, event id, when, why.
    List,
    /// Put dead letters back at the end of the inbox (attempts reset).
    Replay {
        /// The id `list` shows.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// All of them.
        #[arg(long)]
        all: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config_path = config::resolve_path(cli.config);
    let result = match cli.command {
        Command::Agent(command) => {
            init_logging(LogFormat::Human);
            return agents::cli::run(command);
        }
        Command::Init { server_name, homeserver_url, out, force } => {
            init_logging(LogFormat::Human);
            ops::init(&out.unwrap_or(config_path), &server_name, &homeserver_url, force).map(|()| true)
        }
        command => match Config::load(&config_path) {
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            Ok(config) => {
                init_logging(config.logging.format);
                run(command, config)
            }
        },
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Log records to stderr: readable lines (coloured at a terminal, plain for supervisord's log
/// files), or one JSON object per line with the fields of every enclosing span (`room_id`,
/// `event_id` of the event being handled).
fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(true).init(),
    }
}

fn run(command: Command, config: Config) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match command {
        Command::Registration { out } => ops::registration(&config, out.as_deref()).map(|()| true),
        Command::Check => runtime.block_on(ops::check(&config)),
        Command::Bootstrap { rooms } => {
            let path = rooms.unwrap_or_else(|| bootstrap::default_rooms_path(&config));
            runtime.block_on(bootstrap::run(&config, &path))
        }
        Command::Backfill { room, limit } => runtime.block_on(ops::backfill(&config, &room, limit)).map(|()| true),
        Command::Serve => runtime.block_on(async {
            let addr = config.listen_addr()?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (appservice.listen): {e}"))?;
            service::serve(config, listener, shutdown_signal()).await.map(|()| true)
        }),
        Command::DeadLetters(DeadLetters::List) => runtime.block_on(ops::dead_letters_list(&config)).map(|()| true),
        Command::DeadLetters(DeadLetters::Replay { id, .. }) => {
            runtime.block_on(ops::dead_letters_replay(&config, id)).map(|()| true)
        }
        Command::Token { agent, rotate } => runtime.block_on(agents::tokens::issue(&config, &agent, rotate)),
        Command::Init { .. } | Command::Agent(_) => unreachable!("handled before loading the config"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
