//! piforge-firstboot binary: parse arguments, set up logging (plain, no colours or timestamps:
//! journald adds its own), run one library function, map the result to an exit code.
#![forbid(unsafe_code)]

mod cli;

use clap::Parser;
use piforge_firstboot::apply::RealSystem;
use piforge_firstboot::{Outcome, run_firstboot, run_host_keys, run_reidentify};
use tracing_subscriber::EnvFilter;

fn main() {
    let args = cli::Cli::parse();
    let level = match args.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .init();
    // The kernel hostname is ours to set only when we configure the running system.
    let mut sys = RealSystem::new(args.root == std::path::Path::new("/"));
    let result = match args.request() {
        cli::Request::Firstboot(r) => run_firstboot(&r, &mut sys),
        cli::Request::Reidentify(r) => run_reidentify(&r, &mut sys),
        cli::Request::HostKeys(r) => run_host_keys(&r, &mut sys),
    };
    match result {
        Ok(Outcome::Configured {
            hostname, changed, ..
        }) => {
            println!("configured {hostname}: {} changes", changed.len());
        }
        Ok(Outcome::NoCard { reason, .. }) => println!("card not applied: {reason}"),
        Ok(Outcome::HostKeys { changed }) => println!("host keys: {} changes", changed.len()),
        Ok(Outcome::Reidentify { hostname, changed }) => println!(
            "{}: {} changes",
            hostname.as_deref().unwrap_or("(no identity)"),
            changed.len()
        ),
        Err(e) => {
            eprintln!("piforge-firstboot: error: {e:#}");
            std::process::exit(1);
        }
    }
}
