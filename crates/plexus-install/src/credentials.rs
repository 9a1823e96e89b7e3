//! The plugin's credentials on the host: a copy of the service-account token and CA, and a
//! kubeconfig that points at them by path.
//!
//! The kubeconfig names a `tokenFile` instead of embedding the token, so the plugin (which re-reads
//! the file) always uses whatever is there now, and the installer only has to keep that one file
//! current when the kubelet rotates the projected token (hourly by default). Nothing written here
//! outlives the token it copies: it is rewritten on every rotation and removed by `uninstall`.

use crate::atomic;
use crate::error::{Error, Result};
use serde_json::json;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// File names inside the plexus dir on the host.
pub const TOKEN_FILE: &str = "token";
pub const CA_FILE: &str = "ca.crt";
pub const KUBECONFIG_FILE: &str = "plexus.kubeconfig";

/// Token and CA as currently projected into the installer's pod.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub token: Vec<u8>,
    pub ca: Vec<u8>,
}

// Never print the token.
impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("token", &format_args!("<{} bytes>", self.token.len()))
            .field("ca", &format_args!("<{} bytes>", self.ca.len()))
            .finish()
    }
}

impl ServiceAccount {
    /// Reads `token` and `ca.crt` from the projected service-account dir.
    pub fn read(sa_dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let p = sa_dir.join(name);
            std::fs::read(&p).map_err(Error::io("read service-account file", p))
        };
        let token = read(TOKEN_FILE)?;
        if token.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::InvalidFile {
                what: "service-account token",
                path: sa_dir.join(TOKEN_FILE),
                reason: "the file is empty".into(),
            });
        }
        Ok(Self {
            token,
            ca: read(CA_FILE)?,
        })
    }
}

/// The API server URL for the kubeconfig: `--api-server` when given, else the in-cluster
/// `KUBERNETES_SERVICE_HOST`/`_PORT`. The host must be an IP address: the installed plugin is a
/// static binary, and glibc cannot resolve host names in a static binary (NSS modules are loaded
/// dynamically), so a name would fail on the first pod instead of here.
pub fn api_server(flag: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Result<String> {
    let url = match flag {
        Some(u) => u.to_owned(),
        None => {
            let host = env("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty());
            let port = env("KUBERNETES_SERVICE_PORT").filter(|p| !p.is_empty());
            let (Some(host), Some(port)) = (host, port) else {
                return Err(Error::InvalidSetting {
                    flag: "--api-server",
                    reason:
                        "not given, and KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set"
                            .into(),
                });
            };
            match host.parse::<IpAddr>() {
                Ok(IpAddr::V6(_)) => format!("https://[{host}]:{port}"),
                _ => format!("https://{host}:{port}"),
            }
        }
    };
    let uri: http::Uri = url.parse().map_err(|e| Error::InvalidSetting {
        flag: "--api-server",
        reason: format!("{url:?} is not a URL: {e}"),
    })?;
    let host = uri.host().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if !matches!(uri.scheme_str(), Some("https" | "http")) || bare.parse::<IpAddr>().is_err() {
        return Err(Error::InvalidSetting {
            flag: "--api-server",
            reason: format!(
                "{url:?} must be http(s)://<IP address>:<port>: the installed plugin is statically \
                 linked and cannot resolve host names"
            ),
        });
    }
    // The scheme is case-insensitive (RFC 3986 §3.1); every later check compares text, so the
    // URL carries it in lower case from here on (`HTTPS://…` must still get the CA).
    let (scheme, rest) = url.split_once(':').unwrap_or_default();
    Ok(format!("{}:{rest}", scheme.to_ascii_lowercase()))
}

/// True when `url`'s scheme is `http`, in any case: `HTTP://10.0.0.1:8080` is plain HTTP too.
fn is_plain_http(url: &str) -> bool {
    match url.parse::<http::Uri>() {
        // `http::Uri` lower-cases the standard schemes.
        Ok(uri) => uri.scheme_str() == Some("http"),
        Err(_) => url
            .trim_start()
            .split_once(':')
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("http")),
    }
}

/// Refuses a plain-HTTP API server unless `insecure_http` (`--insecure-http`) says the operator
/// means it: the kubeconfig always carries the service-account token, which would then cross the
/// network in clear text on every CNI call (anyone on the path could replay it).
pub fn check_transport(url: &str, insecure_http: bool) -> Result<()> {
    let plain = is_plain_http(url);
    if plain && !insecure_http {
        return Err(Error::InvalidSetting {
            flag: "--api-server",
            reason: format!(
                "{url:?} is plain HTTP: the plugin's bearer token would travel in clear text; \
                 use https, or pass --insecure-http if this is a test cluster on a trusted link"
            ),
        });
    }
    if plain {
        tracing::warn!(
            "--insecure-http: the kubeconfig points at plain-HTTP {url}; the token travels in clear text"
        );
    }
    Ok(())
}

/// Where the credential files go on the host (`dir` is the host path; `on_disk` is where the
/// installer sees it).
#[derive(Debug, Clone)]
pub struct CredentialPaths {
    pub dir: PathBuf,
    pub on_disk: PathBuf,
}

impl CredentialPaths {
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join(KUBECONFIG_FILE)
    }
}

/// The kubeconfig text (YAML) for `server`, with CA and token referenced by host path.
pub fn kubeconfig_text(server: &str, paths: &CredentialPaths) -> String {
    let mut cluster = json!({"server": server});
    if server.starts_with("https:") {
        cluster["certificate-authority"] = json!(paths.dir.join(CA_FILE));
    }
    let v = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "plexus", "cluster": cluster}],
        "users": [{"name": "plexus", "user": {"tokenFile": paths.dir.join(TOKEN_FILE)}}],
        "contexts": [{"name": "plexus", "context": {"cluster": "plexus", "user": "plexus"}}],
        "current-context": "plexus",
    });
    format!(
        "# Written by plexus-install; rewritten when the token rotates. Do not edit.\n{}",
        serde_yaml::to_string(&v).unwrap_or_default()
    )
}

/// What [`sync`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changes {
    pub token: bool,
    pub ca: bool,
    pub kubeconfig: bool,
}

/// Brings the host's copies up to date with `sa` and `server`, writing only files whose content
/// differs. Files are 0600 in a 0700 dir: the token is a credential.
pub fn sync(sa: &ServiceAccount, server: &str, paths: &CredentialPaths) -> Result<Changes> {
    ensure_private_dir(&paths.on_disk)?;
    let mut changes = Changes::default();
    let put = |name: &str, data: &[u8]| -> Result<bool> {
        let p = paths.on_disk.join(name);
        if atomic::same_content(&p, data) {
            return Ok(false);
        }
        atomic::write(&p, data, 0o600)?;
        Ok(true)
    };
    // Token and CA before the kubeconfig that references them.
    changes.token = put(TOKEN_FILE, &sa.token)?;
    changes.ca = put(CA_FILE, &sa.ca)?;
    changes.kubeconfig = put(KUBECONFIG_FILE, kubeconfig_text(server, paths).as_bytes())?;
    Ok(changes)
}

/// Creates `dir` (0700) if missing.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::io("create directory", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(Error::io("chmod", dir))
}

/// Removes the credential files and, when empty, the dir. Returns the removed paths (host view).
pub fn remove(paths: &CredentialPaths) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for name in [KUBECONFIG_FILE, TOKEN_FILE, CA_FILE] {
        if atomic::remove(&paths.on_disk.join(name))? {
            removed.push(paths.dir.join(name));
        }
    }
    atomic::remove_leftovers(&paths.on_disk)?;
    if std::fs::remove_dir(&paths.on_disk).is_ok() {
        removed.push(paths.dir.clone());
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_server_from_env_and_flag() {
        let env = |k: &str| match k {
            "KUBERNETES_SERVICE_HOST" => Some("10.96.0.1".to_owned()),
            "KUBERNETES_SERVICE_PORT" => Some("443".to_owned()),
            _ => None,
        };
        assert_eq!(api_server(None, env).unwrap(), "https://10.96.0.1:443");
        let env6 = |k: &str| match k {
            "KUBERNETES_SERVICE_HOST" => Some("fd00::1".to_owned()),
            "KUBERNETES_SERVICE_PORT" => Some("6443".to_owned()),
            _ => None,
        };
        assert_eq!(api_server(None, env6).unwrap(), "https://[fd00::1]:6443");
        assert!(api_server(None, |_| None).is_err());
        assert_eq!(
            api_server(Some("http://127.0.0.1:8080"), |_| None).unwrap(),
            "http://127.0.0.1:8080"
        );
        let e = api_server(Some("https://kubernetes.default.svc:443"), |_| None).unwrap_err();
        assert!(e.to_string().contains("cannot resolve host names"), "{e}");
    }

    #[test]
    fn plain_http_needs_the_explicit_flag() {
        let e = check_transport("http://127.0.0.1:8080", false).unwrap_err();
        assert!(
            e.to_string().contains("--insecure-http") && e.to_string().contains("clear text"),
            "{e}"
        );
        assert!(check_transport("http://127.0.0.1:8080", true).is_ok());
        assert!(check_transport("https://10.96.0.1:443", false).is_ok());
        // The scheme is case-insensitive: a prefix test let these through.
        for url in [
            "HTTP://10.0.0.1:8080",
            "Http://10.0.0.1:8080",
            "hTtP://[fd00::1]:80",
        ] {
            let e = check_transport(url, false).unwrap_err();
            assert!(e.to_string().contains("clear text"), "{url}: {e}");
            assert!(check_transport(url, true).is_ok());
        }
        assert!(check_transport("HTTPS://10.96.0.1:443", false).is_ok());
        // What the installer writes has its scheme in lower case (an upper-case `HTTPS` used to
        // lose the CA in the kubeconfig).
        assert_eq!(
            api_server(Some("HTTP://10.0.0.1:8080"), |_| None).unwrap(),
            "http://10.0.0.1:8080"
        );
        assert_eq!(
            api_server(Some("HTTPS://10.0.0.1:443"), |_| None).unwrap(),
            "https://10.0.0.1:443"
        );
    }

    #[test]
    fn sync_writes_private_files_once() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let paths = CredentialPaths {
            dir: "/etc/cni/net.d/plexus.d".into(),
            on_disk: d.path().join("plexus.d"),
        };
        let sa = ServiceAccount {
            token: b"t1".to_vec(),
            ca: b"ca".to_vec(),
        };
        let c = sync(&sa, "https://10.0.0.1:443", &paths).unwrap();
        assert_eq!(
            c,
            Changes {
                token: true,
                ca: true,
                kubeconfig: true
            }
        );
        assert_eq!(
            sync(&sa, "https://10.0.0.1:443", &paths).unwrap(),
            Changes::default()
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&paths.on_disk), 0o700);
        assert_eq!(mode(&paths.on_disk.join(TOKEN_FILE)), 0o600);
        let kc = std::fs::read_to_string(paths.on_disk.join(KUBECONFIG_FILE)).unwrap();
        assert!(
            kc.contains("tokenFile: /etc/cni/net.d/plexus.d/token"),
            "{kc}"
        );
        assert!(!format!("{sa:?}").contains("t1"));
        remove(&paths).unwrap();
        assert!(!paths.on_disk.exists());
    }
}
