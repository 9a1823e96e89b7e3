//! `fake-sysfs`: lays out a fake sysfs tree (plexus_sysfs::testing) for demos
//! (hack/demo-sriov.sh), prints its root, and keeps it until killed (the caller removes the
//! directory afterwards). Optionally seeds the `sriov` plugin's simulated PF for each PF.
//!
//! `fake-sysfs --pf ADDR=PFNAME:VF,VF... [--pf ...] [--simulated-pf DIR] --root-file FILE`
//! where a VF is `kernel/DRIVER/NETDEV` (its netdev may be a real link, e.g. a veth end) or
//! `vfio/IOMMU_GROUP`.

use anyhow::{Context, bail};
use clap::Parser;
use plexus_sriov::pf::SimulatedPf;
use plexus_sriov::types::VfState;
use plexus_sysfs::testing::{FakePf, FakeSysfs, FakeVf};
use std::path::PathBuf;

#[derive(Parser, Debug)]
struct Args {
    /// `ADDR=PFNAME:VF,VF...`, VF = `kernel/DRIVER/NETDEV` or `vfio/GROUP`.
    #[arg(long, required = true)]
    pf: Vec<String>,
    /// Seed the sriov plugin's simulated PF (PLEXUS_SRIOV_SIMULATED_PF) in this directory.
    #[arg(long)]
    simulated_pf: Option<PathBuf>,
    /// Where to write the tree's root.
    #[arg(long)]
    root_file: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder = FakeSysfs::builder();
    let mut seeds = Vec::new();
    for spec in &args.pf {
        let (addr, rest) = spec
            .split_once('=')
            .with_context(|| format!("--pf {spec:?}: expected ADDR=PFNAME:VFS"))?;
        let (name, vfs) = rest.split_once(':').unwrap_or((rest, ""));
        let mut pf = FakePf::new(addr, name);
        let mut count = 0;
        for vf in vfs.split(',').filter(|v| !v.is_empty()) {
            let parts: Vec<&str> = vf.split('/').collect();
            pf = pf.vf(match parts.as_slice() {
                ["kernel", driver, netdev] => FakeVf::kernel(driver, netdev),
                ["vfio", group] => FakeVf::vfio(group.parse().context("IOMMU group")?),
                _ => bail!("--pf {spec:?}: VF {vf:?} is not kernel/DRIVER/NETDEV or vfio/GROUP"),
            });
            count += 1;
        }
        seeds.push((name.to_owned(), count));
        builder = builder.pf(pf);
    }
    let fake = builder.build().context("build the fake sysfs tree")?;
    if let Some(dir) = &args.simulated_pf {
        let sim = SimulatedPf::new(dir);
        for (pf, n) in &seeds {
            // What a kernel VF starts with: spoof checking on, nothing else set.
            let initial = VfState {
                spoofchk: true,
                ..VfState::default()
            };
            sim.seed(pf, *n, initial)
                .with_context(|| format!("seed the simulated PF {pf}"))?;
        }
    }
    std::fs::write(&args.root_file, fake.root().display().to_string())
        .with_context(|| format!("write {}", args.root_file.display()))?;
    eprintln!("fake sysfs tree at {}", fake.root().display());
    loop {
        std::thread::park();
    }
}
