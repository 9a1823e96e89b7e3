//! What this build of Plexus is: the package version and the git commit it was built from.
//!
//! One place for every binary and client to name the build: `plexus --version`, the extra field
//! of the CNI VERSION answer, the first log line of each call, and the HTTP User-Agent.

/// The workspace version (`Cargo.toml`), e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The abbreviated git commit of the build, or `unknown` when built without git metadata (set
/// `PLEXUS_GIT_COMMIT` at build time to name it then).
pub const COMMIT: &str = env!("PLEXUS_GIT_COMMIT");

/// `plexus/<version> (<commit>)`, for the User-Agent header of API requests.
pub const USER_AGENT: &str = concat!(
    "plexus/",
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("PLEXUS_GIT_COMMIT"),
    ")"
);

/// `<version> (commit <commit>)`, for humans.
pub fn long_version() -> String {
    format!("{VERSION} (commit {COMMIT})")
}

/// The build as a JSON object: `{"version": ..., "commit": ...}`.
pub fn json() -> serde_json::Value {
    serde_json::json!({"version": VERSION, "commit": COMMIT})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_version_and_commit() {
        assert_eq!(VERSION, env!("CARGO_PKG_VERSION"));
        assert!(!COMMIT.is_empty());
        assert_eq!(USER_AGENT, format!("plexus/{VERSION} ({COMMIT})"));
        assert!(long_version().contains(COMMIT));
        assert_eq!(json()["commit"], COMMIT);
    }
}
