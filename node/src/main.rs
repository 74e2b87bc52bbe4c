//! piforge-node binary: parse arguments, set up logging, run one command, map errors to exit
//! codes (1 failure, 2 usage via clap, 0 on a broken pipe).
#![forbid(unsafe_code)]

mod cli;

use std::io::IsTerminal;

use clap::Parser;
use cli::{Cli, Command};

fn main() {
    let args = Cli::parse();
    let default = if args.verbose { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let tty = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if tty {
        fmt.init();
    } else {
        fmt.with_ansi(false).without_time().init();
    }
    let result = match args.command {
        Command::Agent(a) if a.example_config => {
            print!("{}", cli::EXAMPLE_CONFIG);
            Ok(())
        }
        Command::Agent(a) => cli::agent_request(&a).and_then(|req| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(piforge_node::agent::run(req)))
        }),
        other => cli::cmd_client(other),
    };
    if let Err(e) = result {
        let broken_pipe = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            std::process::exit(0);
        }
        eprintln!("piforge-node: {e:#}");
        std::process::exit(1);
    }
}
