//! The pod sandbox ("pause") image, made at test time: the `plexus-pause` binary built statically
//! (so the image needs no libc), packed as a one-layer OCI image archive (image layout: `oci-layout`,
//! `index.json`, content-addressed blobs) that `ctr images import` accepts.

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target given explicitly, so that `+crt-static` applies to it and not to build scripts.
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// The path of the statically linked `plexus-pause`, building it first (a no-op when it is
/// current). Like hack/build-static.sh: `+crt-static` for an explicit target, into
/// `<target dir>/static`, apart from the ordinary build. Concurrent test processes are serialised
/// by cargo's own lock on that directory.
pub fn static_pause_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PLEXUS_BIN_PLEXUS_PAUSE_STATIC") {
        return Ok(PathBuf::from(p));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace dir")?
        .to_path_buf();
    // The test executable is in <target>/<profile>/deps/.
    let exe = std::env::current_exe()?;
    let target_dir = exe
        .ancestors()
        .nth(3)
        .context("target dir of the test executable")?
        .to_path_buf();
    let static_dir = target_dir.join("static");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "--offline",
            "--quiet",
            "-p",
            "plexus-pause",
            "--bin",
            "plexus-pause",
        ])
        .args(["--target", STATIC_TARGET, "--target-dir"])
        .arg(&static_dir)
        // The outer build's flags must not override the static flag for this target.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        )
        .output()
        .context("run cargo to build plexus-pause")?;
    if !out.status.success() {
        bail!(
            "building the static plexus-pause failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bin = static_dir
        .join(STATIC_TARGET)
        .join("debug")
        .join("plexus-pause");
    ensure_static(&bin)?;
    Ok(bin)
}

/// Fails unless `path` is an x86-64 ELF without a program interpreter (`PT_INTERP`): a binary the
/// image can run with no dynamic loader or libc in it.
fn ensure_static(path: &Path) -> anyhow::Result<()> {
    let elf = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    ensure!(
        elf.len() > 64 && &elf[..4] == b"\x7fELF" && elf[4] == 2,
        "{} is not a 64-bit ELF",
        path.display()
    );
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([elf[o], elf[o + 1]]));
    let u64_at = |o: usize| -> anyhow::Result<usize> {
        let b: [u8; 8] = elf.get(o..o + 8).context("truncated ELF")?.try_into()?;
        Ok(usize::try_from(u64::from_le_bytes(b))?)
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20)?, u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        let kind = elf
            .get(off..off + 4)
            .context("truncated ELF program header")?;
        // PT_INTERP = 3
        ensure!(
            kind != [3, 0, 0, 0],
            "{} is dynamically linked (it has a program interpreter)",
            path.display()
        );
    }
    Ok(())
}

/// A blob of the image: its bytes and their `sha256:` digest.
struct Blob {
    bytes: Vec<u8>,
    digest: String,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Blob {
        let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
        Blob { bytes, digest }
    }

    fn json(v: &Value) -> Blob {
        Blob::new(serde_json::to_vec(v).expect("JSON serialises"))
    }

    fn descriptor(&self, media_type: &str) -> Value {
        json!({"mediaType": media_type, "digest": self.digest, "size": self.bytes.len()})
    }

    fn path(&self) -> String {
        format!("blobs/sha256/{}", self.digest.trim_start_matches("sha256:"))
    }
}

/// Writes an OCI image archive to `archive` whose only layer holds `binary` as `/pause` and
/// whose entrypoint runs it; `name` (a full reference) is what containerd will call the image.
pub fn write_pause_archive(binary: &Path, name: &str, archive: &Path) -> anyhow::Result<()> {
    let exe = std::fs::read(binary).with_context(|| format!("read {}", binary.display()))?;
    let layer = Blob::new(tar_of(&[("pause", &exe, 0o755)])?);
    // An uncompressed layer's diff ID is its digest.
    let config = Blob::json(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/pause"], "WorkingDir": "/", "Env": ["PATH=/"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        "history": [{"created_by": "plexus-e2e: static plexus-pause as /pause"}]
    }));
    let manifest = Blob::json(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config.descriptor(MEDIA_CONFIG),
        "layers": [layer.descriptor(MEDIA_LAYER)]
    }));
    let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
    let mut manifest_desc = manifest.descriptor(MEDIA_MANIFEST);
    manifest_desc["platform"] = json!({"architecture": "amd64", "os": "linux"});
    manifest_desc["annotations"] = json!({
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": tag
    });
    let index = json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [manifest_desc]});
    let layout = serde_json::to_vec(&json!({"imageLayoutVersion": "1.0.0"}))?;
    let index = serde_json::to_vec(&index)?;
    let (layer_path, config_path, manifest_path) = (layer.path(), config.path(), manifest.path());
    let archive_bytes = tar_of(&[
        ("oci-layout", &layout, 0o644),
        ("index.json", &index, 0o644),
        (&layer_path, &layer.bytes, 0o644),
        (&config_path, &config.bytes, 0o644),
        (&manifest_path, &manifest.bytes, 0o644),
    ])?;
    std::fs::write(archive, archive_bytes).with_context(|| format!("write {}", archive.display()))
}

/// A tar of regular files (`path`, contents, mode), owned by root, with a fixed mtime so the
/// same input always gives the same digest.
fn tar_of(files: &[(&str, &[u8], u32)]) -> anyhow::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, mode) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data)?;
    }
    Ok(b.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_is_a_consistent_oci_layout() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::write(&bin, b"not really an ELF").unwrap();
        let out = dir.path().join("img.tar");
        write_pause_archive(&bin, "registry.test/p/pause:t1", &out).unwrap();

        let mut files = std::collections::BTreeMap::new();
        let mut ar = tar::Archive::new(std::fs::File::open(&out).unwrap());
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            files.insert(p, v);
        }
        let blob =
            |d: &str| files[&format!("blobs/sha256/{}", d.trim_start_matches("sha256:"))].clone();
        let check = |d: &Value| {
            let b = blob(d["digest"].as_str().unwrap());
            assert_eq!(format!("sha256:{:x}", Sha256::digest(&b)), d["digest"]);
            assert_eq!(b.len() as u64, d["size"].as_u64().unwrap());
            b
        };
        let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            "registry.test/p/pause:t1"
        );
        assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], "t1");
        let manifest: Value = serde_json::from_slice(&check(m)).unwrap();
        let config: Value = serde_json::from_slice(&check(&manifest["config"])).unwrap();
        let layer = check(&manifest["layers"][0]);
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            manifest["layers"][0]["digest"]
        );
        assert_eq!(config["config"]["Entrypoint"], json!(["/pause"]));

        let mut ar = tar::Archive::new(&layer[..]);
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_string_lossy(), "pause");
        assert_eq!(e.header().mode().unwrap(), 0o755);
    }

    /// The pause process as a PID namespace's init, where the kernel drops signals that have no
    /// handler: SIGTERM and SIGINT must still end it, with status 0.
    #[test]
    fn pause_exits_on_sigterm_and_sigint_as_pid_1() {
        crate::netns::require_root();
        let bin = static_pause_binary().unwrap();
        for sig in [
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::Signal::SIGINT,
        ] {
            let mut unshare = Command::new("unshare")
                .args(["--pid", "--fork", "--kill-child"])
                .arg(&bin)
                .spawn()
                .unwrap();
            let children = format!("/proc/{0}/task/{0}/children", unshare.id());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let pause = loop {
                let text = std::fs::read_to_string(&children).unwrap_or_default();
                if let Some(pid) = text.split_whitespace().next() {
                    break nix::unistd::Pid::from_raw(pid.parse().unwrap());
                }
                assert!(std::time::Instant::now() < deadline, "pause did not start");
                std::thread::sleep(std::time::Duration::from_millis(10));
            };
            // Sent until it exits: one sent before pause blocked it is dropped by the kernel (an
            // init without a handler), and so is every one if pause does not block them.
            let status = loop {
                nix::sys::signal::kill(pause, sig).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(50));
                if let Some(status) = unshare.try_wait().unwrap() {
                    break status;
                }
                if std::time::Instant::now() > deadline {
                    let _ = unshare.kill();
                    let _ = unshare.wait();
                    panic!("pause as PID 1 ignored {sig}");
                }
            };
            assert_eq!(status.code(), Some(0), "pause after {sig}: {status}");
        }
    }

    #[test]
    fn dynamic_binaries_are_refused() {
        // This test executable is an ordinary (dynamically linked) build.
        let exe = std::env::current_exe().unwrap();
        let err = ensure_static(&exe).unwrap_err();
        assert!(err.to_string().contains("dynamically linked"), "{err}");
    }
}
