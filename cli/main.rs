//! streamctl: the shell client of streamd. Starts, stops and lists the daemon's
//! services, publishes events and follows the live event stream.
//!
//! `main` only maps the outcome of [`run`] to an exit status; each concern lives in
//! its own module.

mod args;
mod bench;
mod client;
mod commands;
mod error;
mod format;
mod json;
mod plot;
mod render;
mod subscribe;
mod table;
mod term;
mod top;

use std::process::ExitCode;

use clap::Parser;

use crate::{
    args::{Cli, Command},
    error::Error,
};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`| head -1`) is not a failure.
        Err(Error::BrokenPipe) => ExitCode::SUCCESS,
        // Already explained on stderr, line by line.
        Err(Error::Reported) => ExitCode::FAILURE,
        Err(err) => {
            term::warn(&err.to_string());
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line and runs the chosen command to completion.
fn run() -> Result<(), Error> {
    let mut cli = Cli::parse();
    cli.addr.access = client::Access::read(&cli.access, &cli.addr)?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|err| Error::Other(format!("cannot start the async runtime: {err}")))?;
    runtime.block_on(async {
        match cli.command {
            Command::Start(args) => commands::start(&cli.addr, args).await,
            Command::Stop(args) => commands::stop(&cli.addr, args).await,
            Command::List => commands::list(&cli.addr).await,
            Command::Nodes => commands::nodes(&cli.addr).await,
            Command::Top => top::run(&cli.addr).await,
            Command::Show { name } => commands::show(&cli.addr, &name).await,
            Command::Publish(args) => commands::publish(&cli.addr, args).await,
            Command::Subscribe(args) => subscribe::run(&cli.addr, args).await,
            Command::Bench(args) => bench::run(&cli.addr, *args).await,
        }
    })
}
