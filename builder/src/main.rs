//! The `piforge` binary: parse arguments, set up logging, run one command, map errors to exit
//! codes (1 failure, 2 usage; a closed stdout is not an error).
#![forbid(unsafe_code)]

mod cli;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("piforge: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // A bar on a terminal, a plain line every few seconds otherwise (journald, CI logs).
    let progress = !cli.quiet;
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Images(a) => piforge::commands::cmd_images(a.json, &mut out)?,
        Command::Build(a) => piforge::commands::cmd_build(a.into_request(progress)?, &mut out)?,
        Command::Export(a) => piforge::commands::cmd_export(a.into_request(progress), &mut out)?,
        Command::Inspect(a) => piforge::commands::cmd_inspect(&a.image, a.json, &mut out)?,
        Command::Inventory(a) => {
            out.write_all(piforge::cluster::inventory::run(&a.into_request()?)?.as_bytes())?
        }
        Command::Flash(a) => piforge::commands::cmd_flash(&a.into_request(progress), &mut out)?,
        Command::Devices(a) => piforge::devices::cmd_devices(a.json, &mut out)?,
        Command::Completions(a) => cli::manual::completions(a.shell, &mut out)?,
        Command::Manpages(a) => {
            for p in cli::manual::manpages(&a.dir)? {
                writeln!(out, "{}", p.display())?;
            }
        }
        Command::Status(a) => piforge::cluster::status::run(&a.into_request()?, &mut out)?,
        Command::KnownHosts(a) => piforge::commands::cmd_known_hosts(&a.out, &mut out)?,
    }
    out.flush()?;
    Ok(())
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "piforge=info",
        1 => "piforge=debug",
        _ => "piforge=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .init();
}
