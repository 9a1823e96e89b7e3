//! The binaries plexus-install puts on nodes must run on any x86-64 Linux, whatever its libc: they
//! are built statically by hack/build-static.sh (hack/test.sh runs it first). Here the static
//! plexus-install installs the static plexus and sriov (thin mode) and plexus-shim (thick mode)
//! into a temporary host root, and every installed binary is then run inside a chroot holding
//! nothing but that binary: no libc, no loader, no /etc — if it starts and answers VERSION there,
//! it needs nothing from the host. The installer and plexusd (the image is `scratch`) likewise.
//!
//! Needs root (chroot), like the rest of hack/test.sh.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "x86_64-unknown-linux-gnu";
/// coreutils' chroot (absolute: the environment is cleared for the jailed binary).
const CHROOT: &str = "/usr/sbin/chroot";

/// Where hack/build-static.sh put the binaries (override: PLEXUS_STATIC_DIR).
fn static_dir() -> PathBuf {
    if let Ok(d) = std::env::var("PLEXUS_STATIC_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/static")
        .join(TARGET)
        .join("release")
}

fn static_bin(name: &str) -> PathBuf {
    let p = static_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the static binaries first with `bash hack/build-static.sh` \
         (hack/test.sh does this before running the tests)",
        p.display()
    );
    p
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (chroot); run it through hack/test.sh as root"
    );
}

#[test]
fn installed_binaries_answer_version_in_an_empty_chroot() {
    require_root();
    let installer = static_bin("plexus-install");
    let plexus = static_bin("plexus");
    let sriov = static_bin("sriov");

    // A host root with a primary and a service account, and the static installer doing the install
    // (which itself runs the installed plexus once).
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("host");
    let bin_dir = root.join("opt/cni/bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::create_dir_all(root.join("etc/cni/net.d")).unwrap();
    std::fs::write(
        root.join("etc/cni/net.d/10-ptp.conf"),
        json!({"cniVersion":"1.0.0","name":"p","type":"ptp"}).to_string(),
    )
    .unwrap();
    let sa = tmp.path().join("sa");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::write(sa.join("token"), "t").unwrap();
    std::fs::write(sa.join("ca.crt"), "ca").unwrap();
    let out = Command::new(&installer)
        .arg("install")
        .arg("--host-root")
        .arg(&root)
        .arg("--binary")
        .arg(&plexus)
        .arg("--binary")
        .arg(&sriov)
        .arg("--service-account-dir")
        .arg(&sa)
        .args(["--api-server", "https://10.96.0.1:443"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "static plexus-install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Thick mode: the same installer puts the static shim next to it (and checks it answers
    // VERSION there before the rename).
    let out = Command::new(&installer)
        .arg("install")
        .arg("--host-root")
        .arg(&root)
        .args(["--mode", "thick", "--binary"])
        .arg(static_bin("plexus-shim"))
        .arg("--service-account-dir")
        .arg(&sa)
        .args(["--api-server", "https://10.96.0.1:443"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "static plexus-install --mode thick failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The bin dir holds exactly the installed binaries: it is the empty chroot.
    let mut installed: Vec<String> = std::fs::read_dir(&bin_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    installed.sort();
    assert_eq!(installed, vec!["plexus", "plexus-shim", "sriov"]);
    for name in &installed {
        let out = Command::new(CHROOT)
            .arg(&bin_dir)
            .arg(format!("/{name}"))
            .env_clear()
            .env("CNI_COMMAND", "VERSION")
            .stdin(Stdio::null())
            .output()
            .expect("run chroot (coreutils)");
        assert!(
            out.status.success(),
            "{name} does not run without a libc: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{name}: VERSION printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert!(
            v["supportedVersions"]
                .as_array()
                .is_some_and(|a| a.contains(&json!("1.0.0"))),
            "{v}"
        );
    }

    // The installer and thick mode's daemon run from a `scratch` image: same test for them.
    for (name, bin) in [
        ("plexus-install", &installer),
        ("plexusd", &static_bin("plexusd")),
    ] {
        let jail = tmp.path().join(format!("jail-{name}"));
        std::fs::create_dir(&jail).unwrap();
        std::fs::copy(bin, jail.join(name)).unwrap();
        let out = Command::new(CHROOT)
            .arg(&jail)
            .args([format!("/{name}"), "--version".to_owned()])
            .env_clear()
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with(&format!("{name} ")),
            "{name}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
