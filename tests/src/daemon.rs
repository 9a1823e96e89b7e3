//! `plexusd` as a test bed runs it: the real binary, started against the fake API server with
//! the bed's plexus config, its socket in the node's temporary directory. Stopped (SIGKILL) and
//! reaped on drop.

use crate::cni::bin_path;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon may take to sync its caches and open its socket.
const START_LIMIT: Duration = Duration::from_secs(30);

/// How to start a [`Daemon`].
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// `--max-inflight`.
    pub max_inflight: usize,
    /// `--queue`.
    pub queue: usize,
    /// `NODE_NAME`.
    pub node: String,
    /// `PLEXUSD_LOG` (the bench logs at warn: a debug log would be part of what it measures).
    pub log: String,
    /// `--nad-namespace` (empty: every namespace).
    pub nad_namespaces: Vec<String>,
    /// `--chroot-dir`.
    pub chroot_dir: Option<PathBuf>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            max_inflight: 16,
            queue: 64,
            node: "node-1".to_owned(),
            log: "debug".to_owned(),
            nad_namespaces: Vec::new(),
            chroot_dir: None,
        }
    }
}

/// A running `plexusd`.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub health: SocketAddr,
    /// Its stderr (JSON log lines).
    pub log: PathBuf,
    config: PathBuf,
    opts: DaemonOptions,
}

/// A free TCP port on 127.0.0.1 (bound and released; the daemon binds it a moment later).
fn free_port() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

impl Daemon {
    /// Writes `config` (the thin plugin's config) to `dir/plexusd.conf` and starts the daemon
    /// with its socket at `dir/run/plexusd.sock`; returns once the socket is there (caches
    /// synced).
    pub fn start(dir: &Path, config: &Value, opts: DaemonOptions) -> Result<Daemon> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("plexusd.conf");
        std::fs::write(&path, config.to_string())?;
        let mut d = Daemon {
            child: None,
            socket: dir.join("run").join("plexusd.sock"),
            health: free_port()?,
            log: dir.join("plexusd.log"),
            config: path,
            opts,
        };
        d.spawn()?;
        d.wait_ready()?;
        Ok(d)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(bin_path("plexusd"));
        if let Some(dir) = &self.opts.chroot_dir {
            cmd.arg("--chroot-dir").arg(dir);
        }
        for ns in &self.opts.nad_namespaces {
            cmd.arg("--nad-namespace").arg(ns);
        }
        let child = cmd
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NODE_NAME", &self.opts.node)
            .env("PLEXUSD_LOG", &self.opts.log)
            .arg("--config")
            .arg(&self.config)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--health-addr")
            .arg(self.health.to_string())
            .arg("--max-inflight")
            .arg(self.opts.max_inflight.to_string())
            .arg("--queue")
            .arg(self.opts.queue.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn plexusd")?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let end = Instant::now() + START_LIMIT;
        while Instant::now() < end {
            // Accepting, not merely present: a killed daemon leaves its socket file behind, and
            // a restarted one replaces it only once its caches have synced.
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!("plexusd exited ({status}): {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "plexusd not ready within {START_LIMIT:?}: {}",
            self.log_text()
        )
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs the daemon (a crash or an OOM kill) and reaps it. The socket file stays, as it
    /// does after a real crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs the daemon (graceful shutdown) and waits for it to exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        c.wait().ok()
    }

    /// Starts the daemon again (same config, socket and ports) and waits until it is ready.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_ready()
    }

    /// `GET <path>` on the health address: `(status, body)`.
    pub fn health_get(&self, path: &str) -> Result<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.health)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let status = raw
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("status line")?;
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// `GET /v1/status` over the daemon socket.
    pub fn status(&self) -> Result<Value> {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET /v1/status HTTP/1.1\r\nHost: plexusd\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        Ok(serde_json::from_str(body)?)
    }

    /// Waits until the daemon's `cache` (`pods` or `nads`) has seen resourceVersion `rv` (a
    /// change made through the fake API server), so that a test's next call is not racing the
    /// watch. False after 10 s.
    pub fn wait_version(&self, cache: &str, rv: u64) -> bool {
        crate::bed::wait_for(Duration::from_secs(10), || {
            self.status()
                .ok()
                .and_then(|s| {
                    s["caches"][cache]["resourceVersion"]
                        .as_str()
                        .and_then(|v| v.parse::<u64>().ok())
                })
                .is_some_and(|seen| seen >= rv)
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
