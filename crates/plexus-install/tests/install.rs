//! `plexus-install` run as a process against a temporary host root: what it writes, when, and
//! what it leaves behind. Waits are polls up to a deadline, never fixed sleeps.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_plexus-install");
const API: &str = "https://10.96.0.1:443";

/// A fake `plexus` that answers VERSION like a CNI plugin.
const FAKE_PLEXUS: &str =
    "#!/bin/sh\necho '{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"1.0.0\",\"1.1.0\"]}'\n";

/// A temporary node: host root with the usual dirs, a service-account dir laid out as the kubelet
/// projects it (`..data` symlink swapped on rotation), and a source dir for binaries.
struct Host {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    sa: PathBuf,
    src: PathBuf,
    generation: u32,
}

impl Host {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("host");
        for d in ["opt/cni/bin", "etc/cni/net.d"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let sa = tmp.path().join("sa");
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&sa).unwrap();
        std::fs::create_dir_all(&src).unwrap();
        let mut h = Host {
            root,
            sa,
            src,
            _tmp: tmp,
            generation: 0,
        };
        h.rotate_token("token-1");
        for name in ["token", "ca.crt"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), h.sa.join(name)).unwrap();
        }
        h.write_src("plexus", FAKE_PLEXUS.as_bytes());
        h
    }

    /// Projects a new token the way the kubelet does: a new timestamped dir, then an atomic
    /// rename of the `..data` symlink.
    fn rotate_token(&mut self, token: &str) {
        self.generation += 1;
        let gen_dir = format!("..gen_{}", self.generation);
        std::fs::create_dir(self.sa.join(&gen_dir)).unwrap();
        std::fs::write(self.sa.join(&gen_dir).join("token"), token).unwrap();
        std::fs::write(self.sa.join(&gen_dir).join("ca.crt"), "CA-PEM\n").unwrap();
        let tmp = self.sa.join("..data_tmp");
        std::os::unix::fs::symlink(&gen_dir, &tmp).unwrap();
        std::fs::rename(&tmp, self.sa.join("..data")).unwrap();
    }

    fn write_src(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.src.join(name);
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn netd(&self) -> PathBuf {
        self.root.join("etc/cni/net.d")
    }
    fn bin(&self) -> PathBuf {
        self.root.join("opt/cni/bin")
    }
    fn our_config(&self) -> PathBuf {
        self.netd().join("00-plexus.conflist")
    }
    fn host_token(&self) -> PathBuf {
        self.netd().join("plexus.d/token")
    }

    /// Writes a primary config atomically (as a well-behaved network plugin does).
    fn put_primary(&self, name: &str, v: &Value) {
        let tmp = self.netd().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, v.to_string()).unwrap();
        std::fs::rename(&tmp, self.netd().join(name)).unwrap();
    }

    fn command(&self, sub: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(EXE);
        c.arg(sub)
            .arg("--host-root")
            .arg(&self.root)
            .arg("--binary")
            .arg(self.src.join("plexus"));
        if sub != "uninstall" {
            c.arg("--service-account-dir")
                .arg(&self.sa)
                .arg("--api-server")
                .arg(API);
        }
        c.args(extra)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run(&self, sub: &str, extra: &[&str]) -> Output {
        self.command(sub, extra).output().unwrap()
    }

    fn spawn(&self, sub: &str, extra: &[&str]) -> Daemon {
        Daemon(self.command(sub, extra).spawn().unwrap())
    }

    fn config(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.our_config()).unwrap()).unwrap()
    }
}

/// A running installer, killed on drop.
struct Daemon(Child);

impl Daemon {
    fn terminate(mut self) -> Output {
        kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM).unwrap();
        let out = wait_output(&mut self.0, Duration::from_secs(10));
        std::mem::forget(self);
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_output(child: &mut Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "plexus-install did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status: child.wait().unwrap(),
        stdout,
        stderr,
    }
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "plexus-install failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn conf_primary_gives_full_config_kubeconfig_and_binary() {
    let h = Host::new();
    h.put_primary(
        "10-bridge.conf",
        &json!({"cniVersion":"0.4.0","name":"cbr0","type":"bridge","capabilities":{"portMappings":true}}),
    );
    let out = h.run(
        "install",
        &["--log-level", "debug", "--namespace-isolation", "true"],
    );
    assert_ok(&out);
    assert_eq!(
        h.config(),
        json!({"cniVersion":"0.4.0","name":"plexus-cni-network","plugins":[{
            "type":"plexus",
            "clusterNetwork":"/etc/cni/net.d/10-bridge.conf",
            "kubeconfig":"/etc/cni/net.d/plexus.d/plexus.kubeconfig",
            "binDir":"/opt/cni/bin",
            "logLevel":"debug",
            "namespaceIsolation":true,
            "capabilities":{"portMappings":true,"io.kubernetes.cri.pod-annotations":true}
        }]})
    );
    // The binary, byte for byte, executable.
    let bin = h.bin().join("plexus");
    assert_eq!(std::fs::read(&bin).unwrap(), FAKE_PLEXUS.as_bytes());
    assert_eq!(mode(&bin), 0o755);
    // Credentials: private, pointing at each other by host path.
    assert_eq!(std::fs::read_to_string(h.host_token()).unwrap(), "token-1");
    assert_eq!(mode(&h.host_token()), 0o600);
    assert_eq!(mode(&h.netd().join("plexus.d")), 0o700);
    let kc: Value = serde_yaml::from_str(
        &std::fs::read_to_string(h.netd().join("plexus.d/plexus.kubeconfig")).unwrap(),
    )
    .unwrap();
    assert_eq!(kc["clusters"][0]["cluster"]["server"], API);
    assert_eq!(
        kc["clusters"][0]["cluster"]["certificate-authority"],
        "/etc/cni/net.d/plexus.d/ca.crt"
    );
    assert_eq!(
        kc["users"][0]["user"]["tokenFile"],
        "/etc/cni/net.d/plexus.d/token"
    );
    // One readable line per action, and the token never logged.
    let log = stderr(&out);
    assert!(
        log.contains("wrote /etc/cni/net.d/00-plexus.conflist"),
        "{log}"
    );
    assert!(log.contains("installed "), "{log}");
    assert!(!log.contains("token-1"), "{log}");
    // Idempotent: a second run changes nothing.
    let before = std::fs::metadata(h.our_config())
        .unwrap()
        .modified()
        .unwrap();
    assert_ok(&h.run(
        "install",
        &["--log-level", "debug", "--namespace-isolation", "true"],
    ));
    assert_eq!(
        std::fs::metadata(h.our_config())
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
}

#[test]
fn conflist_primary_gives_union_of_capabilities_and_template_options() {
    let h = Host::new();
    h.put_primary(
        "10-flannel.conflist",
        &json!({"cniVersion":"1.0.0","name":"cbr0","plugins":[
            {"type":"flannel","delegate":{"hairpinMode":true}},
            {"type":"portmap","capabilities":{"portMappings":true}},
            {"type":"bandwidth","capabilities":{"bandwidth":true}}]}),
    );
    // Not a primary: a later name, and a non-config file.
    h.put_primary(
        "99-other.conf",
        &json!({"cniVersion":"0.3.1","name":"x","type":"ptp"}),
    );
    std::fs::write(h.netd().join("README"), "hello").unwrap();
    let template = h.src.join("template.json");
    std::fs::write(
        &template,
        json!({"logLevel":"info","cniDir":"/var/lib/cni/plexus","globalNamespaces":"default,infra","capabilities":{"ips":true}}).to_string(),
    )
    .unwrap();
    let out = h.run(
        "install",
        &[
            "--config-template",
            template.to_str().unwrap(),
            "--log-level",
            "error",
            "--set",
            "apiTimeoutSeconds=5",
        ],
    );
    assert_ok(&out);
    assert_eq!(
        h.config(),
        json!({"cniVersion":"1.0.0","name":"plexus-cni-network","plugins":[{
            "type":"plexus",
            "clusterNetwork":"/etc/cni/net.d/10-flannel.conflist",
            "kubeconfig":"/etc/cni/net.d/plexus.d/plexus.kubeconfig",
            "binDir":"/opt/cni/bin",
            "logLevel":"error",
            "cniDir":"/var/lib/cni/plexus",
            "globalNamespaces":"default,infra",
            "apiTimeoutSeconds":5,
            "capabilities":{"portMappings":true,"bandwidth":true,"ips":true,
                "io.kubernetes.cri.pod-annotations":true}
        }]})
    );
}

#[test]
fn no_primary_yet_waits_without_writing_then_writes_when_it_appears() {
    let h = Host::new();
    let mut d = h.spawn("install", &[]);
    // It is waiting (it says so) and has written no config and no credentials.
    assert!(
        eventually(Duration::from_secs(5), || h.bin().join("plexus").exists()),
        "binary not installed"
    );
    std::thread::sleep(Duration::from_millis(200)); // let it reach the wait
    assert!(
        d.0.try_wait().unwrap().is_none(),
        "exited without a primary"
    );
    assert!(!h.our_config().exists());
    assert!(!h.netd().join("plexus.d").exists());
    h.put_primary(
        "10-ptp.conf",
        &json!({"cniVersion":"1.1.0","name":"p","type":"ptp"}),
    );
    let out = wait_output(&mut d.0, Duration::from_secs(10));
    assert_ok(&out);
    assert!(
        stderr(&out).contains("waiting: no primary CNI config"),
        "{}",
        stderr(&out)
    );
    assert_eq!(h.config()["cniVersion"], "1.1.0");
    assert_eq!(
        h.config()["plugins"][0]["clusterNetwork"],
        "/etc/cni/net.d/10-ptp.conf"
    );
}

#[test]
fn waits_for_readiness_indicator_before_writing() {
    let h = Host::new();
    h.put_primary(
        "10-ptp.conf",
        &json!({"cniVersion":"1.0.0","name":"p","type":"ptp"}),
    );
    std::fs::create_dir_all(h.root.join("run/flannel")).unwrap();
    let mut d = h.spawn(
        "install",
        &["--readiness-indicator-file", "/run/flannel/subnet.env"],
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        d.0.try_wait().unwrap().is_none(),
        "did not wait for the indicator"
    );
    assert!(!h.our_config().exists());
    std::fs::write(h.root.join("run/flannel/subnet.env"), "FLANNEL_MTU=1450\n").unwrap();
    assert_ok(&wait_output(&mut d.0, Duration::from_secs(10)));
    assert_eq!(
        h.config()["plugins"][0]["readinessindicatorfile"],
        "/run/flannel/subnet.env"
    );
}

#[test]
fn install_timeout_fails_with_clear_message() {
    let h = Host::new();
    let out = h.run("install", &["--wait-timeout-seconds", "1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("gave up waiting: no primary CNI config"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_plexus_that_cannot_start_fails_the_install_loudly_and_keeps_the_old_one() {
    let h = Host::new();
    // First install, while the primary is not there yet: the broken binary must fail before any
    // config is written.
    h.write_src(
        "plexus",
        b"#!/bin/sh\necho 'cannot load libc' >&2\nexit 127\n",
    );
    let out = h.run("install", &["--wait-timeout-seconds", "30"]);
    assert!(!out.status.success());
    let log = stderr(&out);
    assert!(
        log.contains("installed binary /opt/cni/bin/plexus does not work"),
        "{log}"
    );
    assert!(log.contains("cannot load libc"), "{log}");
    assert!(!h.bin().join("plexus").exists(), "broken binary made live");
    assert!(
        !h.our_config().exists(),
        "config written for a broken binary"
    );

    // Upgrade from a working binary to a broken one: the working one stays.
    h.put_primary(
        "10-ptp.conf",
        &json!({"cniVersion":"1.0.0","name":"p","type":"ptp"}),
    );
    h.write_src("plexus", FAKE_PLEXUS.as_bytes());
    assert_ok(&h.run("install", &[]));
    h.write_src("plexus", b"\x7fELF truncated");
    let out = h.run("install", &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not work"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(h.bin().join("plexus")).unwrap(),
        FAKE_PLEXUS.as_bytes()
    );
    let names: Vec<String> = std::fs::read_dir(h.bin())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["plexus"], "temporary file left behind");
}

#[test]
fn the_sriov_plugin_is_installed_next_to_plexus_and_checked_like_it() {
    let h = Host::new();
    h.put_primary(
        "10-ptp.conf",
        &json!({"cniVersion":"1.0.0","name":"p","type":"ptp"}),
    );
    h.write_src(
        "sriov",
        b"#!/bin/sh\necho 'sriov: cannot start' >&2\nexit 1\n",
    );
    let sriov = h.src.join("sriov");
    let out = h.run("install", &["--binary", sriov.to_str().unwrap()]);
    assert!(!out.status.success(), "a broken sriov went live");
    assert!(
        stderr(&out).contains("sriov: cannot start"),
        "{}",
        stderr(&out)
    );
    assert!(!h.bin().join("sriov").exists());
    h.write_src("sriov", FAKE_PLEXUS.as_bytes());
    assert_ok(&h.run("install", &["--binary", sriov.to_str().unwrap()]));
    assert_eq!(
        std::fs::read(h.bin().join("sriov")).unwrap(),
        FAKE_PLEXUS.as_bytes()
    );
    assert!(h.bin().join("plexus").exists());
}

#[test]
fn binary_replacement_is_atomic_and_running_binary_keeps_running() {
    let h = Host::new();
    h.put_primary(
        "10-ptp.conf",
        &json!({"cniVersion":"1.0.0","name":"p","type":"ptp"}),
    );
    // Two different large versions of a second binary: a running ELF (sleep) and another ELF.
    let sleep = std::fs::read("/bin/sleep").unwrap();
    let mut other = std::fs::read("/bin/true").unwrap();
    other.resize(4 << 20, 0); // padded: a partial copy would be easy to observe
    let versions = [sleep.clone(), other.clone()];
    let src = h.write_src("pxtool", &versions[0]);
    let args = ["--binary", src.to_str().unwrap()];
    assert_ok(&h.run("install", &args));
    let dest = h.bin().join("pxtool");

    // A process running the installed binary; replacing it must not fail with "text file busy"
    // nor disturb the process.
    let mut running = Command::new(&dest).arg("30").spawn().unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (dest, stop, versions) = (dest.clone(), stop.clone(), versions.clone());
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let data = std::fs::read(&dest).expect("installed binary always present");
                assert!(
                    versions.contains(&data),
                    "reader saw a partial binary ({} bytes)",
                    data.len()
                );
                reads += 1;
            }
            reads
        })
    };
    for i in 1..=6 {
        h.write_src("pxtool", &versions[i % 2]);
        assert_ok(&h.run("install", &args));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("reader saw only whole binaries");
    assert!(reads > 0);
    assert!(
        running.try_wait().unwrap().is_none(),
        "the old binary stopped running"
    );
    running.kill().unwrap();
    running.wait().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(h.bin())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn run_regenerates_when_primary_changes_appears_or_is_replaced() {
    let h = Host::new();
    h.put_primary(
        "20-a.conflist",
        &json!({"cniVersion":"0.4.0","name":"a","plugins":[{"type":"bridge"}]}),
    );
    let d = h.spawn("run", &["--recheck-interval-seconds", "3600"]);
    let cluster = |h: &Host| {
        std::fs::read(h.our_config())
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|v| {
                (
                    v["cniVersion"].clone(),
                    v["plugins"][0]["clusterNetwork"].clone(),
                )
            })
    };
    let want = |v: &str, f: &str| Some((json!(v), json!(format!("/etc/cni/net.d/{f}"))));
    assert!(eventually(Duration::from_secs(10), || cluster(&h)
        == want("0.4.0", "20-a.conflist")));
    // The primary changes in place (new version).
    h.put_primary(
        "20-a.conflist",
        &json!({"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"}]}),
    );
    assert!(eventually(Duration::from_secs(10), || cluster(&h)
        == want("1.0.0", "20-a.conflist")));
    // A new primary sorts first.
    h.put_primary(
        "10-b.conf",
        &json!({"cniVersion":"0.3.1","name":"b","type":"ptp"}),
    );
    assert!(eventually(Duration::from_secs(10), || cluster(&h)
        == want("0.3.1", "10-b.conf")));
    // It goes away: back to the other one.
    std::fs::remove_file(h.netd().join("10-b.conf")).unwrap();
    assert!(eventually(Duration::from_secs(10), || cluster(&h)
        == want("1.0.0", "20-a.conflist")));
    // Our own file is never the primary, even under another name.
    std::fs::copy(h.our_config(), h.netd().join("01-copy.conflist")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cluster(&h), want("1.0.0", "20-a.conflist"));
    let out = d.terminate();
    assert_ok(&out);
}

#[test]
fn token_rotation_reaches_the_host_token_file_within_a_second() {
    let mut h = Host::new();
    h.put_primary(
        "10-ptp.conf",
        &json!({"cniVersion":"1.0.0","name":"p","type":"ptp"}),
    );
    let d = h.spawn("run", &["--recheck-interval-seconds", "3600"]);
    assert!(eventually(Duration::from_secs(10), || h
        .our_config()
        .exists()));
    assert_eq!(std::fs::read_to_string(h.host_token()).unwrap(), "token-1");
    for n in 2..=3 {
        let token = format!("token-{n}");
        h.rotate_token(&token);
        assert!(
            eventually(Duration::from_secs(1), || {
                std::fs::read_to_string(h.host_token()).is_ok_and(|t| t == token)
            }),
            "rotated token not in the host token file within 1 s"
        );
    }
    assert_eq!(mode(&h.host_token()), 0o600);
    let out = d.terminate();
    assert!(!stderr(&out).contains("token-3"), "token logged");
}

#[test]
fn sigterm_keeps_the_config_and_cleanup_on_exit_removes_it() {
    let h = Host::new();
    h.put_primary(
        "10-ptp.conf",
        &json!({"cniVersion":"1.0.0","name":"p","type":"ptp"}),
    );
    let health = h.src.join("run/health");
    let d = h.spawn("run", &["--health-file", health.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(10), || health.exists()));
    let ok = Command::new(EXE)
        .args(["health", "--health-file", health.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ok(&ok);
    let out = d.terminate();
    assert_ok(&out);
    assert!(
        stderr(&out).contains("leaving /etc/cni/net.d/00-plexus.conflist in place"),
        "{}",
        stderr(&out)
    );
    assert!(h.our_config().exists(), "SIGTERM removed the config");

    let d = h.spawn("run", &["--cleanup-on-exit"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_ok(&d.terminate());
    assert!(
        !h.our_config().exists(),
        "--cleanup-on-exit kept the config"
    );
}

/// Every path under `root` with its type and mode, and file contents' length.
fn listing(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            out.push(format!(
                "{rel} {:o} {}",
                md.permissions().mode(),
                if md.is_dir() { 0 } else { md.len() }
            ));
            if md.is_dir() {
                walk(root, &e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn uninstall_leaves_the_host_as_it_was() {
    let h = Host::new();
    h.put_primary(
        "10-ptp.conf",
        &json!({"cniVersion":"1.0.0","name":"p","type":"ptp"}),
    );
    std::fs::write(h.bin().join("bridge"), "other plugin").unwrap();
    let before = listing(&h.root);
    assert_ok(&h.run("install", &[]));
    assert_ne!(listing(&h.root), before);
    let out = h.run("uninstall", &[]);
    assert_ok(&out);
    assert_eq!(listing(&h.root), before);
    assert!(
        stderr(&out).contains("removed /opt/cni/bin/plexus"),
        "{}",
        stderr(&out)
    );
    // Uninstalling twice is fine.
    assert_ok(&h.run("uninstall", &[]));
}

#[test]
fn a_plain_http_api_server_needs_insecure_http() {
    // The scheme is case-insensitive: `HTTP://` used to pass a prefix test unnoticed.
    for server in ["http://10.96.0.1:8080", "HTTP://10.96.0.1:8080"] {
        let h = Host::new();
        h.put_primary(
            "10-bridge.conf",
            &json!({"cniVersion":"0.4.0","name":"cbr0","type":"bridge"}),
        );
        let install = |extra: &[&str]| {
            Command::new(EXE)
                .arg("install")
                .arg("--host-root")
                .arg(&h.root)
                .arg("--binary")
                .arg(h.src.join("plexus"))
                .arg("--service-account-dir")
                .arg(&h.sa)
                .args(["--api-server", server])
                .args(extra)
                .env_remove("KUBERNETES_SERVICE_HOST")
                .output()
                .unwrap()
        };
        let out = install(&[]);
        assert!(!out.status.success(), "{server}");
        assert!(
            stderr(&out).contains("clear text") && stderr(&out).contains("--insecure-http"),
            "{server}: {}",
            stderr(&out)
        );
        assert!(!h.our_config().exists(), "{server}: nothing written");
        assert!(!h.host_token().exists(), "{server}: no token copied");

        let out = install(&["--insecure-http"]);
        assert_ok(&out);
        let kc = std::fs::read_to_string(h.netd().join("plexus.d/plexus.kubeconfig")).unwrap();
        assert!(
            kc.contains("server: http://10.96.0.1:8080"),
            "{server}: {kc}"
        );
    }
}

#[test]
fn api_server_must_be_an_ip_address() {
    let h = Host::new();
    let out = Command::new(EXE)
        .arg("install")
        .arg("--host-root")
        .arg(&h.root)
        .arg("--service-account-dir")
        .arg(&h.sa)
        .args(["--api-server", "https://kubernetes.default.svc:443"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot resolve host names"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn first_log_line_names_the_build_version() {
    let h = Host::new();
    h.put_primary(
        "10-ptp.conf",
        &json!({"cniVersion":"1.0.0","name":"p","type":"ptp"}),
    );
    for sub in ["install", "uninstall"] {
        let out = h.run(sub, &[]);
        assert_ok(&out);
        let first = stderr(&out).lines().next().unwrap_or_default().to_owned();
        assert!(
            first.contains(&format!(
                "plexus-install {} (commit {}) {sub}",
                env!("CARGO_PKG_VERSION"),
                plexus_cni::build::COMMIT
            )),
            "{first}"
        );
    }
}

#[test]
fn an_os_error_is_said_once() {
    let h = Host::new();
    h.put_primary(
        "10-ptp.conf",
        &json!({"cniVersion":"1.0.0","name":"p","type":"ptp"}),
    );
    let out = h.run("install", &["--binary", "/nonexistent/plexus"]);
    assert!(!out.status.success());
    let log = stderr(&out);
    let os = std::io::Error::from_raw_os_error(2).to_string();
    assert!(log.contains("/nonexistent/plexus"), "{log}");
    assert_eq!(log.matches(&os).count(), 1, "{log}");
}

#[test]
fn a_config_sorting_before_ours_is_refused_naming_the_winner() {
    let h = Host::new();
    h.put_primary(
        "10-flannel.conflist",
        &json!({"cniVersion":"0.3.1","name":"cbr0","plugins":[{"type":"flannel"}]}),
    );
    // A leftover of Multus thick mode.
    h.put_primary(
        "00-multus.conf",
        &json!({"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus-shim"}),
    );
    let out = h.run("install", &["--wait-timeout-seconds", "1"]);
    assert!(
        !out.status.success(),
        "installed although 00-multus.conf wins"
    );
    let err = stderr(&out);
    assert!(
        err.contains(
            "refusing to install: /etc/cni/net.d/00-multus.conf sorts before 00-plexus.conflist"
        ) && err.contains("00-multus.conf (a multus-shim config) wins"),
        "{err}"
    );
    assert!(
        !h.our_config().exists(),
        "wrote a config that is never used"
    );
    assert!(!err.contains("installed and current"), "{err}");

    // `run`: not healthy while refused; healthy as soon as the leftover is gone.
    let health = h.src.join("run/health");
    let d = h.spawn("run", &["--health-file", health.to_str().unwrap()]);
    let probe = || {
        Command::new(EXE)
            .args(["health", "--health-file", health.to_str().unwrap()])
            .output()
            .unwrap()
            .status
            .success()
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(!probe(), "healthy while refusing");
    std::fs::remove_file(h.netd().join("00-multus.conf")).unwrap();
    assert!(eventually(Duration::from_secs(10), probe), "never healthy");
    assert!(h.our_config().exists());
    // A leftover appearing later makes the probe fail at once.
    h.put_primary(
        "00-aaa.conf",
        &json!({"cniVersion":"0.3.1","name":"x","type":"ptp"}),
    );
    assert!(
        eventually(Duration::from_secs(10), || !probe()),
        "still healthy with 00-aaa.conf winning"
    );
    let out = d.terminate();
    assert!(
        stderr(&out).contains("/etc/cni/net.d/00-aaa.conf sorts before 00-plexus.conflist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_meta_plugin_primary_is_refused() {
    let h = Host::new();
    h.put_primary(
        "10-multus.conf",
        &json!({"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus",
            "delegates":[{"type":"flannel"}]}),
    );
    h.put_primary(
        "20-flannel.conflist",
        &json!({"cniVersion":"0.3.1","name":"cbr0","plugins":[{"type":"flannel"}]}),
    );
    let out = h.run("install", &["--wait-timeout-seconds", "1"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(
            "the primary CNI config /etc/cni/net.d/10-multus.conf is itself a meta plugin (type multus)"
        ),
        "{err}"
    );
    assert!(!h.our_config().exists());
    std::fs::remove_file(h.netd().join("10-multus.conf")).unwrap();
    assert_ok(&h.run("install", &[]));
    assert_eq!(
        h.config()["plugins"][0]["clusterNetwork"],
        "/etc/cni/net.d/20-flannel.conflist"
    );
}

#[test]
fn uninstall_restores_the_primary_first_and_removes_the_cache_only_without_live_entries() {
    let h = Host::new();
    h.put_primary(
        "10-ptp.conf",
        &json!({"cniVersion":"1.0.0","name":"p","type":"ptp"}),
    );
    assert_ok(&h.run("install", &["--cache-dir", "/var/lib/cni/plexus-test"]));
    let cache = h.root.join("var/lib/cni/plexus-test");
    std::fs::create_dir_all(&cache).unwrap();
    // A pod still attached through Plexus: its entry (and lock) must survive.
    std::fs::write(cache.join("c1.json"), "{}").unwrap();
    std::fs::write(cache.join("c1.lock"), "").unwrap();
    let out = h.run("uninstall", &[]);
    assert_ok(&out);
    let err = stderr(&out);
    let pos = |needle: &str| {
        err.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not logged: {err}"))
    };
    // The config goes first: from then on the runtime uses the primary.
    assert!(
        pos("removed /etc/cni/net.d/00-plexus.conflist")
            < pos("the container runtime now uses /etc/cni/net.d/10-ptp.conf")
    );
    assert!(
        pos("the container runtime now uses") < pos("removed /opt/cni/bin/plexus"),
        "{err}"
    );
    // The cache dir came from the installed config's cniDir.
    assert!(
        err.contains("kept the cache dir /var/lib/cni/plexus-test: 1 attachment(s)"),
        "{err}"
    );
    assert!(cache.join("c1.json").exists() && cache.join("c1.lock").exists());
    // Once the pod is gone (its DEL removed the entry), uninstall removes the dir.
    std::fs::remove_file(cache.join("c1.json")).unwrap();
    let out = h.run("uninstall", &["--cache-dir", "/var/lib/cni/plexus-test"]);
    assert_ok(&out);
    assert!(!cache.exists(), "{}", stderr(&out));
    // Something that is not the plugin's is never removed with it.
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("notes.txt"), "mine").unwrap();
    assert_ok(&h.run("uninstall", &["--cache-dir", "/var/lib/cni/plexus-test"]));
    assert!(cache.join("notes.txt").exists());
}

#[test]
fn uninstall_then_wait_signals_done_and_stays_until_sigterm() {
    let h = Host::new();
    h.put_primary(
        "10-ptp.conf",
        &json!({"cniVersion":"1.0.0","name":"p","type":"ptp"}),
    );
    assert_ok(&h.run("install", &[]));
    let done = h.src.join("run/uninstalled");
    let d = h.spawn(
        "uninstall",
        &["--then-wait", "--done-file", done.to_str().unwrap()],
    );
    assert!(eventually(Duration::from_secs(10), || done.exists()));
    assert!(!h.our_config().exists());
    let probe = Command::new(EXE)
        .args(["health", "--health-file", done.to_str().unwrap()])
        .args(["--max-age-seconds", "31536000"])
        .output()
        .unwrap();
    assert_ok(&probe);
    assert_ok(&d.terminate());
}

/// A fake `plexus-shim`: answers VERSION like the real one.
const FAKE_SHIM: &str =
    "#!/bin/sh\necho '{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"1.0.0\",\"1.1.0\"]}'\n";

impl Host {
    /// `install` in thick mode with the shim in the image.
    fn install_thick(&self, extra: &[&str]) -> Output {
        let shim = self.write_src("plexus-shim", FAKE_SHIM.as_bytes());
        let mut args = vec!["--mode", "thick", "--binary", shim.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.run("install", &args)
    }
}

#[test]
fn thick_mode_installs_the_shim_and_writes_the_thin_config_with_the_shim_type_and_socket() {
    let h = Host::new();
    h.put_primary(
        "10-bridge.conf",
        &json!({"cniVersion":"1.0.0","name":"cbr0","type":"bridge"}),
    );
    let out = h.install_thick(&["--namespace-isolation", "true"]);
    assert_ok(&out);
    assert_eq!(
        h.config(),
        json!({"cniVersion":"1.0.0","name":"plexus-cni-network","plugins":[{
            "type":"plexus-shim",
            "daemonSocket":"/run/plexus/plexusd.sock",
            "clusterNetwork":"/etc/cni/net.d/10-bridge.conf",
            "kubeconfig":"/etc/cni/net.d/plexus.d/plexus.kubeconfig",
            "binDir":"/opt/cni/bin",
            "namespaceIsolation":true,
            "capabilities":{"io.kubernetes.cri.pod-annotations":true}
        }]})
    );
    let shim = h.bin().join("plexus-shim");
    assert_eq!(std::fs::read(&shim).unwrap(), FAKE_SHIM.as_bytes());
    assert_eq!(mode(&shim), 0o755);
    assert!(
        stderr(&out).contains(
            "thick mode, plugin plexus-shim forwarding to plexusd at /run/plexus/plexusd.sock"
        ),
        "{}",
        stderr(&out)
    );
    // Another socket path, from the flag.
    assert_ok(&h.install_thick(&["--daemon-socket", "/var/run/plexus/d.sock"]));
    assert_eq!(
        h.config()["plugins"][0]["daemonSocket"],
        "/var/run/plexus/d.sock"
    );
    let out = h.install_thick(&["--daemon-socket", "run/d.sock"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid setting --daemon-socket"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn thick_mode_without_the_shim_binary_fails_before_writing_anything() {
    let h = Host::new();
    h.put_primary(
        "10-bridge.conf",
        &json!({"cniVersion":"1.0.0","name":"cbr0","type":"bridge"}),
    );
    // The Host's command gives only `--binary .../plexus`.
    let out = h.run("install", &["--mode", "thick"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("names the plugin plexus-shim, but no --binary is named plexus-shim"),
        "{}",
        stderr(&out)
    );
    assert!(!h.our_config().exists());
    assert_eq!(std::fs::read_dir(h.bin()).unwrap().count(), 0);
}

/// Reads our config in a loop until stopped; returns every distinct (type, daemonSocket) seen.
/// A read that is not a complete config (a half-written file) panics the reader.
fn watch_config(
    path: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, std::collections::BTreeSet<String>)> {
    std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        let mut reads = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let Ok(bytes) = std::fs::read(&path) else {
                panic!("{} vanished during a mode switch", path.display());
            };
            let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "a reader saw a partial config ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            let p = &v["plugins"][0];
            seen.insert(format!("{} {}", p["type"], p["daemonSocket"]));
            reads += 1;
        }
        (reads, seen)
    })
}

#[test]
fn switching_modes_replaces_the_config_in_one_rename_and_keeps_both_plugins() {
    let h = Host::new();
    h.put_primary(
        "10-bridge.conf",
        &json!({"cniVersion":"1.0.0","name":"cbr0","type":"bridge"}),
    );
    assert_ok(&h.run("install", &[]));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = watch_config(h.our_config(), stop.clone());
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let mut last = inode(&h.our_config());
    for _ in 0..5 {
        assert_ok(&h.install_thick(&[]));
        assert_eq!(h.config()["plugins"][0]["type"], "plexus-shim");
        assert_ne!(inode(&h.our_config()), last, "rewritten in place");
        last = inode(&h.our_config());
        assert_ok(&h.run("install", &[]));
        assert_eq!(h.config()["plugins"][0]["type"], "plexus");
        assert!(h.config()["plugins"][0].get("daemonSocket").is_none());
        assert_ne!(inode(&h.our_config()), last, "rewritten in place");
        last = inode(&h.our_config());
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (reads, seen) = reader.join().expect("the reader saw a broken config");
    assert!(reads > 0);
    // Only the two complete configs were ever visible.
    for s in &seen {
        assert!(
            s == "\"plexus\" null" || s == "\"plexus-shim\" \"/run/plexus/plexusd.sock\"",
            "{seen:?}"
        );
    }
    // No temporary file left; both plugins stay installed (a runtime may still run either one
    // with a config it loaded before the switch).
    let mut names: Vec<String> = std::fs::read_dir(h.netd())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["00-plexus.conflist", "10-bridge.conf", "plexus.d"]
    );
    assert!(h.bin().join("plexus").is_file() && h.bin().join("plexus-shim").is_file());
}

#[test]
fn the_keeper_switches_modes_from_its_environment() {
    // The DaemonSet switches by the `PLEXUS_MODE` of its ConfigMap: the restarted keeper rewrites
    // the config it finds in the other mode.
    let h = Host::new();
    h.put_primary(
        "10-bridge.conf",
        &json!({"cniVersion":"1.0.0","name":"cbr0","type":"bridge"}),
    );
    assert_ok(&h.install_thick(&[]));
    let mut keeper = h.command("run", &["--skip-binaries"]);
    keeper.env("PLEXUS_MODE", "thin");
    let d = Daemon(keeper.spawn().unwrap());
    assert!(
        eventually(Duration::from_secs(10), || h.config()["plugins"][0]["type"]
            == "plexus"),
        "the keeper did not switch to thin mode"
    );
    assert_ok(&d.terminate());
    let mut keeper = h.command("run", &["--skip-binaries"]);
    keeper.env("PLEXUS_MODE", "thick");
    let d = Daemon(keeper.spawn().unwrap());
    assert!(
        eventually(Duration::from_secs(10), || h.config()["plugins"][0]["type"]
            == "plexus-shim"),
        "the keeper did not switch to thick mode"
    );
    assert_ok(&d.terminate());
}

#[test]
fn uninstall_removes_both_modes_plugins() {
    let h = Host::new();
    h.put_primary(
        "10-ptp.conf",
        &json!({"cniVersion":"1.0.0","name":"p","type":"ptp"}),
    );
    let before = listing(&h.root);
    assert_ok(&h.run("install", &[]));
    assert_ok(&h.install_thick(&[]));
    // The uninstall mode's command names only `plexus` (deploy/components/uninstall).
    let out = h.run("uninstall", &[]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("removed /opt/cni/bin/plexus-shim"),
        "{}",
        stderr(&out)
    );
    assert_eq!(listing(&h.root), before);
}
