//! Which devices the kubelet allocated to a pod: the kubelet PodResources v1 API over its unix
//! socket (`Get` for this pod where the kubelet serves it, `List` otherwise), with bounded retries
//! while the kubelet is busy, and the device manager's checkpoint file as the last fallback (no
//! socket, or a socket nobody listens on).
//!
//! [`KubeletDevices`] implements the engine's [`plexus_engine::DeviceLookup`]. The client is
//! blocking (it runs its own current-thread tokio runtime), so the engine stays free of async.

pub mod checkpoint;
pub mod client;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use client::{KubeletDevices, KubeletError, PodId, Source, connect};

/// Generated from `proto/podresources.proto` (package `v1`).
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod proto {
    tonic::include_proto!("v1");
}
