//! Plexus test bed: an in-process fake Kubernetes API server ([`fakeapi`]), network namespace
//! helpers ([`netns`]) and the runtime-like driver of the `plexus` binary ([`cni`]).

pub mod bed;
pub mod cni;
pub mod fakeapi;
pub mod faults;
pub mod netns;
