//! `plexus-install`: parses flags, sets up logging, hands over to the library.

use anyhow::Context;
use clap::Parser;
use plexus_install::cli::{Cli, Cmd, forever};
use plexus_install::daemon::{self, Mode};
use plexus_install::{crd, health, installer};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", plexus_cni::report::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(verb) = cli.command.logged_verb() {
        // The build first in every long-running command's log, so a log line can be tied to the
        // image that wrote it during a rollout.
        tracing::info!(
            "plexus-install {} {verb}",
            plexus_cni::build::long_version()
        );
    }
    match cli.command {
        Cmd::Install {
            host,
            config,
            wait_timeout_seconds,
        } => {
            let s = Cli::settings(&host, Some(&config)).context("install")?;
            let timeout = wait_timeout_seconds.map(Duration::from_secs);
            daemon::run(&s, &Mode::Once { timeout }).context("install")
        }
        Cmd::Run {
            host,
            config,
            recheck_interval_seconds,
            health_file,
            cleanup_on_exit,
            skip_binaries,
        } => {
            let mut s = Cli::settings(&host, Some(&config)).context("run")?;
            if skip_binaries {
                s.binaries.clear();
            }
            let mode = forever(recheck_interval_seconds, health_file, cleanup_on_exit);
            daemon::run(&s, &mode).context("run")
        }
        Cmd::Uninstall {
            host,
            cache_dir,
            then_wait,
            done_file,
        } => {
            let s = Cli::settings(&host, None).context("uninstall")?;
            installer::uninstall(&s, cache_dir.as_deref()).context("uninstall")?;
            tracing::info!("uninstalled");
            if then_wait {
                if let Some(f) = &done_file {
                    health::touch(f).context("uninstall")?;
                }
                daemon::wait_for_termination().context("uninstall")?;
            }
            Ok(())
        }
        Cmd::Health {
            health_file,
            max_age_seconds,
        } => {
            let age = health::check(&health_file, Duration::from_secs(max_age_seconds))
                .map_err(anyhow::Error::msg)?;
            tracing::debug!("healthy: last sync {}s ago", age.as_secs());
            Ok(())
        }
        Cmd::Crd => {
            let mut out = std::io::stdout().lock();
            out.write_all(crd::yaml().as_bytes())
                .and_then(|()| out.flush())
                .context("write CRD to stdout")
        }
    }
}
