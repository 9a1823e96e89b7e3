//! Plexus test bed: an in-process fake Kubernetes API server ([`fakeapi`]), network namespace
//! helpers ([`netns`]), a fake kubelet (PodResources and device-plugin registration,
//! [`fakekubelet`]), the runtime-like driver of the `plexus` binary ([`cni`]), `plexusd` for thick
//! mode ([`daemon`]), a private containerd driven over CRI like a kubelet does ([`containerd`],
//! [`cri`], [`cri_bed`]), a fake SR-IOV node for the `sriov` plugin ([`sriov`]) and the SR-IOV
//! device-plugin node ([`sriovdp_bed`]).

pub mod bed;
pub mod cni;
pub mod containerd;
pub mod cri;
pub mod cri_bed;
pub mod daemon;
pub mod fakeapi;
pub mod fakekubelet;
pub mod faults;
pub mod lifecycle;
pub mod netns;
pub mod sriov;
pub mod sriovdp_bed;
