//! `plexus-install`: the Plexus DaemonSet's entrypoint, as a library so tests can drive each step.
//!
//! What it gets right that Multus's installer does not (see docs/install.md): binaries and configs
//! are replaced atomically (no "text file busy", no half-written file), nothing is written before
//! the primary network (and the readiness indicator) exists, the kubeconfig points at a token file
//! kept current through rotations, and SIGTERM leaves the config in place so pods do not silently
//! lose their extra networks while the DaemonSet restarts.

pub mod atomic;
pub mod cli;
pub mod cniconf;
pub mod crd;
pub mod credentials;
pub mod daemon;
pub mod error;
pub mod health;
pub mod installer;
pub mod token;
pub mod tokenrequest;

pub use error::{Error, Result};
