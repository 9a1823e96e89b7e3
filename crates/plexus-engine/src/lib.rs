//! The meta-plugin logic of Plexus. Effects (Kubernetes API, delegate exec, paths) are behind
//! small traits or parameters so that everything here is unit-testable without root or a cluster.

// Errors are built at most once per CNI call and carry the context an operator needs; boxing
// them to shrink `Result` would buy nothing measurable.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod attach;
pub mod budget;
pub mod cache;
pub mod chaining;
pub mod config;
pub mod config_keys;
pub mod context;
pub mod delegate;
pub mod device;
pub mod engine;
pub mod error;
pub mod exec;
pub mod plan;
pub mod policy;
pub mod request;
pub mod resolve;
pub mod respond;
pub mod routes;
pub mod static_pod;
pub mod teardown;
pub mod testing;

pub use api::{ApiError, EventType, KubeApi, NadInfo, PodEvent, PodInfo};
pub use budget::Budget;
pub use config::PlexusConfig;
pub use device::{DeviceError, DeviceLookup, DeviceMap};
pub use engine::Engine;
pub use error::{EngineError, GcFailure};
pub use exec::{DelegateExec, ProcessExec};
pub use respond::respond;
pub use routes::{IpRoutes, NetnsRoutes};
