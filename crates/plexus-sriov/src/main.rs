//! `sriov`: the SR-IOV CNI plugin binary. Environment + stdin → [`plexus_sriov::plugin`] →
//! result or error JSON on stdout (nothing else ever goes there); logs go to stderr or `logFile`.
//!
//! Test hooks (docs/sriov.md): `PLEXUS_SYSFS_ROOT` re-roots sysfs, `PLEXUS_SRIOV_STATE_DIR` moves
//! the state directory, and `PLEXUS_SRIOV_SIMULATED_PF=<dir>` replaces the PF's netlink with the
//! simulated PF in `<dir>` (for machines without VFs; the netdev side stays real).

use plexus_cni::{CniEnv, CniError, Command, SUPPORTED_VERSIONS, codes};
use plexus_sriov::config;
use plexus_sriov::ipam::ExecIpam;
use plexus_sriov::link::NetlinkLinks;
use plexus_sriov::pf::{NetlinkPf, PfOps, SIMULATED_PF_ENV, SimulatedPf};
use plexus_sriov::plugin::{Plugin, require_1_1};
use plexus_sriov::state::Store;
use plexus_sysfs::Sysfs;
use std::io::{Read, Write};
use std::time::Duration;

fn main() {
    let (out, ok) = match run() {
        Ok(out) => (out, true),
        Err(e) => (e.to_json(), false),
    };
    if !out.is_empty() {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.write_all(b"\n");
        let _ = stdout.flush();
    }
    std::process::exit(if ok { 0 } else { 1 });
}

fn log(conf: Option<&config::SriovConf>, line: &str) {
    let file = conf.and_then(|c| c.log_file.as_deref());
    let mut sink: Box<dyn Write> = match file.and_then(|f| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
            .ok()
    }) {
        Some(f) => Box::new(f),
        None => Box::new(std::io::stderr()),
    };
    let _ = writeln!(sink, "sriov: {line}");
}

fn run() -> Result<String, CniError> {
    let env = CniEnv::from_lookup(|k| std::env::var(k).ok())?;
    let mut stdin = Vec::new();
    std::io::stdin()
        .read_to_end(&mut stdin)
        .map_err(|e| CniError::new(codes::IO_FAILURE, format!("reading stdin: {e}")))?;
    if env.command == Command::Version {
        let v = serde_json::json!({"cniVersion": "1.1.0", "supportedVersions": SUPPORTED_VERSIONS});
        return Ok(v.to_string());
    }
    let version_of = |s: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(s)
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let req_version = version_of(&stdin);
    let with_version = |e: CniError| e.with_version(req_version.clone());

    let simulated = std::env::var_os(SIMULATED_PF_ENV).filter(|d| !d.is_empty());
    let sim_pf;
    let nl_pf = NetlinkPf;
    let pf: &dyn PfOps = match simulated {
        Some(dir) => {
            sim_pf = SimulatedPf::new(dir);
            &sim_pf
        }
        None => &nl_pf,
    };
    let plugin = Plugin {
        sysfs: Sysfs::from_env(),
        pf,
        links: &NetlinkLinks,
        ipam: &ExecIpam,
        store: Store::from_env(),
        mac_poll: (20, Duration::from_millis(100)),
    };

    match env.command {
        Command::Status | Command::Gc => {
            let v: plexus_cni::CniVersion = req_version.parse().map_err(|_| {
                with_version(CniError::new(
                    codes::INCOMPATIBLE_VERSION,
                    format!("unsupported cniVersion {req_version:?}"),
                ))
            })?;
            require_1_1(v, env.command.as_str()).map_err(with_version)?;
            if env.command == Command::Status {
                plugin.status().map_err(with_version)?;
            } else {
                plugin.gc(&env, &stdin).map_err(with_version)?;
            }
            return Ok(String::new());
        }
        _ => {}
    }
    let conf = config::parse(&stdin, Some(&env.args.to_env_string())).map_err(|e| {
        with_version(CniError::new(
            e.code(),
            format!(
                "{}: {e}",
                plexus_sriov::plugin::context_without_vf(&env, &stdin)
            ),
        ))
    })?;
    let with_version = |e: CniError| e.with_version(conf.cni_version.clone());
    log(
        Some(&conf),
        &format!(
            "{} {} {} {}",
            env.command.as_str(),
            env.container_id,
            env.ifname,
            conf.device_id
        ),
    );
    let out = match env.command {
        Command::Add => plugin.add(&env, &conf, &stdin).map(|v| v.to_string()),
        Command::Del => plugin.del(&env, &conf, &stdin).map(|()| String::new()),
        Command::Check => {
            if !conf.version.supports_check() {
                return Err(with_version(CniError::new(
                    codes::INCOMPATIBLE_VERSION,
                    format!(
                        "CHECK needs cniVersion 0.4.0 or later (the configuration says {})",
                        conf.cni_version
                    ),
                )));
            }
            plugin.check(&env, &conf).map(|()| String::new())
        }
        _ => unreachable!("VERSION, STATUS and GC handled above"),
    };
    out.map_err(|e| {
        log(
            Some(&conf),
            &format!("{} failed: {}", env.command.as_str(), e.msg),
        );
        with_version(e)
    })
}
