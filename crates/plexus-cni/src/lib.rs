//! CNI specification types for spec versions 0.1.0 through 1.1.0.
//!
//! This crate is pure: serde types, validation and conversions, no I/O. A meta plugin is both a CNI
//! plugin (it answers the runtime) and a CNI runtime (it invokes delegates), so this crate covers both
//! sides: parsing the runtime's environment and stdin, and building delegate configs and converting
//! delegate results between spec versions.

pub mod args;
pub mod build;
pub mod config;
pub mod env;
pub mod error;
pub mod report;
pub mod result;
pub mod version;

pub use args::CniArgs;
pub use config::{ConfigError, NetworkConfig};
pub use env::{CniEnv, Command};
pub use error::{CniError, codes};
pub use result::{CniResult, Dns, Interface, IpConfig, ResultError, Route};
pub use version::{CniVersion, SUPPORTED_VERSIONS, VersionError};
