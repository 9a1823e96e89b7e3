//! `plexus-sriovdp`: the SR-IOV network device plugin daemon (one per SR-IOV node).

use clap::Parser;
use plexus_sriovdp::daemon::{Daemon, Options};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// SR-IOV network device plugin: advertises the node's VFs to the kubelet under the resource
/// config of the reference device plugin.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// The resource config (`resourceList`), the reference's format.
    #[arg(long, alias = "config-file", default_value = "/etc/pcidp/config.json")]
    config: PathBuf,
    /// Prefix of the resources whose entry has no `resourcePrefix`.
    #[arg(long, default_value = plexus_sriovdp::config::DEFAULT_PREFIX)]
    resource_prefix: String,
    /// The sysfs root (a fake tree in tests).
    #[arg(long, env = "PLEXUS_SYSFS_ROOT", default_value = "/sys")]
    sysfs_root: PathBuf,
    /// The kubelet's device-plugin directory (`kubelet.sock` and the plugins' sockets).
    #[arg(long, default_value = plexus_sriovdp::DEVICE_PLUGIN_DIR)]
    device_plugin_dir: PathBuf,
    /// Root of the NPWG device-info files (this plugin writes `dp/`).
    #[arg(long, default_value = "/var/run/k8s.cni.cncf.io/devinfo")]
    device_info_dir: PathBuf,
    /// The kubelet's PodResources socket (which devices pods still hold).
    #[arg(long, default_value = "/var/lib/kubelet/pod-resources/kubelet.sock")]
    pod_resources_socket: PathBuf,
    /// Seconds between re-discoveries of the VFs (also on SIGHUP); 1 to 86400 (a larger period
    /// would overflow the timer's clock arithmetic).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    rediscover_seconds: u64,
    /// Milliseconds between checks of the kubelet socket (re-registration after a restart);
    /// 10 to 600000.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    watch_millis: u64,
    /// Seconds a device-info file of a device no pod holds is kept after it was written.
    #[arg(long, default_value_t = 60)]
    device_info_grace_seconds: u64,
}

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
    let cli = Cli::parse();
    // The build first, so a log line can be tied to the image that wrote it during a rollout.
    tracing::info!(
        "plexus-sriovdp {} starting",
        plexus_cni::build::long_version()
    );
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", plexus_cni::report::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let opts = Options {
        config_file: cli.config,
        resource_prefix: cli.resource_prefix,
        sysfs_root: cli.sysfs_root,
        plugin_dir: cli.device_plugin_dir,
        device_info_dir: cli.device_info_dir,
        pod_resources_socket: cli.pod_resources_socket,
        rediscover_every: Duration::from_secs(cli.rediscover_seconds),
        watch_every: Duration::from_millis(cli.watch_millis),
        device_info_grace: Duration::from_secs(cli.device_info_grace_seconds),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let daemon = Daemon::new(opts)?;
        for p in daemon.pools() {
            tracing::info!(resource = %p.resource, "pool: {} VFs", p.devices().len());
        }
        daemon
            .run(async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            })
            .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The periods feed tokio intervals, whose next tick is `tick + period`: a period past the
    /// clock's range is refused here instead of panicking after the first tick.
    #[test]
    fn the_periods_are_range_checked_naming_the_flag() {
        let parse = |flag: &str, n: &str| Cli::try_parse_from(["plexus-sriovdp", flag, n]);
        let ok = parse("--rediscover-seconds", "86400").unwrap();
        assert_eq!(ok.rediscover_seconds, 86_400);
        assert_eq!(parse("--watch-millis", "10").unwrap().watch_millis, 10);
        for (flag, bad) in [
            ("--rediscover-seconds", "0"),
            ("--rediscover-seconds", "86401"),
            ("--rediscover-seconds", "18446744073709551615"),
            ("--watch-millis", "9"),
            ("--watch-millis", "18446744073709551615"),
        ] {
            let e = parse(flag, bad).unwrap_err().to_string();
            assert!(e.contains(flag) && e.contains(bad), "{flag} {bad}: {e}");
        }
    }
}
