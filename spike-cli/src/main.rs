//! `spike`: the Pilot command line of a spike-rs Nexus.
//!
//! Exit codes: 0 success; 1 an error (Nexus refused or unreachable, bad
//! identity, I/O); 2 a usage error (clap's own, or input found invalid
//! before connecting).

use std::process::ExitCode;

fn main() -> ExitCode {
    match spike_cli::run(spike_cli::parse()) {
        Ok(()) => ExitCode::from(spike_cli::EXIT_OK),
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
