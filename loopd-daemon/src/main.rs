//! `loopd`, the daemon: flags in, a validated [`Config`] out, then the library serves it.
//!
//! This package is the program around the `loopd` library: the command line ([`args`], with
//! clap) and the logger ([`logger`], env_logger and its JSON lines). The library carries neither,
//! so a program embedding it compiles no flag parser and chooses its own logger.
//!
//! Exit status: 0 after a graceful shutdown, 1 on a runtime failure or a second signal,
//! 2 for bad flags.

mod args;
mod logger;

use std::process::ExitCode;

use clap::Parser;
use log::{error, info, warn};

use loopd::config::Config;
use loopd::{rlimit, Exit, Server};

use args::Args;

/// Raises the open-files limit and lowers the connection limit if it still cannot fit.
fn fit_descriptors(config: &mut Config) {
    match rlimit::raise_nofile_limit() {
        Ok(nofile) => {
            let fit = rlimit::connections_that_fit(nofile);
            let cap = &mut config.deployment.max_connections;
            if *cap > fit {
                warn!("open-files limit is {nofile}: lowering max connections from {cap} to {fit}");
                *cap = fit.max(1);
            }
        }
        Err(e) => warn!("cannot read or raise the open-files limit: {e}"),
    }
}

/// Parses the command line. Help and version go to stdout with status 0; any error is one
/// line on stderr and status 2.
fn parse_args() -> Result<Args, ExitCode> {
    Args::try_parse().map_err(|e| {
        if !e.use_stderr() {
            e.exit();
        }
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        eprintln!(
            "loopd: {} (see loopd --help)",
            first.trim_end_matches(['.', ' '])
        );
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(status) => return status,
    };
    logger::init(args.log_level(), args.log_format);
    let mut config = match args.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("loopd: error: {e}");
            return ExitCode::from(2);
        }
    };
    fit_descriptors(&mut config);

    // Sockets handed over by systemd take the place of --listen and --admin.
    let server = match loopd::systemd::activated_endpoints(config.services) {
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
        Ok(Some(endpoints)) => {
            info!(
                "socket activation: serving {} socket(s) from the service manager",
                endpoints.len()
            );
            Server::with_endpoints(&config.deployment, &config.loops, endpoints)
        }
        Ok(None) => Server::new(&config),
    };
    let mut server = match server {
        Ok(server) => server,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = server.handle_signals() {
        error!("cannot install signal handlers: {e}");
        return ExitCode::from(1);
    }
    let listening: Vec<String> = server.endpoints().iter().map(|e| e.to_string()).collect();
    let loops = server.loops();
    let server_id = config.loops.server_id.as_str();
    info!(
        loops,
        max_connections = config.deployment.max_connections,
        server_id;
        "listening on {} (max {} connections, {loops} loop(s), server id {server_id})",
        listening.join(" "),
        config.deployment.max_connections,
    );
    if server.endpoints().iter().any(|e| e.proxy) {
        info!(
            "PROXY protocol headers accepted from {} (--proxy-from)",
            config.loops.proxy_from
        );
    }

    match server.run() {
        Ok(Exit::Drained | Exit::DrainTimeout { .. }) => ExitCode::SUCCESS,
        Ok(Exit::Interrupted { .. }) => ExitCode::from(1),
        Err(e) => {
            error!("server failed: {e}");
            ExitCode::from(1)
        }
    }
}
