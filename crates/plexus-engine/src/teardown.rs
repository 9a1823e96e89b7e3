//! The teardown phase: DEL of every attachment a cache entry describes, in reverse order,
//! continuing past failures. One implementation serves the three callers that undo attachments:
//! the ADD rollback ([`crate::attach`]), DEL and GC.

use crate::cache::{CacheEntry, CacheError, CachedAttachment};
use crate::delegate::{Chain, Invocation};
use crate::exec::{DelegateExec, ExecError};
use plexus_cni::{CniVersion, NetworkConfig};
use std::path::Path;

/// How DEL failures of attachments without a result count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// A DEL failure of an attachment that never returned a result is a warning: its ADD failed
    /// (or never ran), and a plugin whose ADD fails must clean up after itself (CNI spec). A
    /// config whose DEL can never succeed (a macvlan master that does not exist) would otherwise
    /// block the pod's teardown forever.
    Cached,
    /// Every failure counts. For entries rebuilt from the pod's annotations after the cached one
    /// was lost: no attachment has a result there, yet most of them were added.
    Rebuilt,
}

/// Why one attachment could not be torn down.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TeardownCause {
    /// The cached config text does not parse any more (a hand-edited or damaged entry).
    #[error("cached config unreadable: {0}")]
    Config(String),
    /// A plugin of the attachment failed its DEL.
    #[error(transparent)]
    Delegate(ExecError),
}

/// One attachment that is still (possibly) in place after a teardown.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{network} ({ifname}): {cause}")]
pub struct TeardownFailure {
    /// `ns/name` of the NAD, or the cluster network's name.
    pub network: String,
    pub ifname: String,
    pub cause: TeardownCause,
}

/// What a teardown could not undo. Empty means everything is gone.
#[derive(Debug, Clone, Default)]
pub struct TeardownReport {
    /// One entry per failed plugin DEL (an attachment may appear more than once for a conflist).
    pub failures: Vec<TeardownFailure>,
    /// The cache entry could not be removed or rewritten afterwards.
    pub cache: Option<CacheError>,
    /// Attachments of `failures`, for the entry that keeps what still needs a DEL.
    pub(crate) remaining: Vec<CachedAttachment>,
}

impl TeardownReport {
    /// True when every attachment was torn down and the cache followed.
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty() && self.cache.is_none()
    }

    /// The attachments whose DEL failed, in their original (ADD) order.
    pub fn remaining(&self) -> &[CachedAttachment] {
        &self.remaining
    }
}

impl std::fmt::Display for TeardownReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for failure in &self.failures {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{failure}")?;
        }
        if let Some(e) = &self.cache {
            if !first {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// DELs every attachment of `entry` in reverse order, in `netns` (`None` when the sandbox is
/// gone: plugins then release what lives outside it, such as IP leases). Never stops early.
pub fn teardown(
    exec: &dyn DelegateExec,
    entry: &CacheEntry,
    netns: Option<&Path>,
    strictness: Strictness,
) -> TeardownReport {
    let mut report = TeardownReport::default();
    for att in entry.attachments.iter().rev() {
        let failures = teardown_one(exec, &entry.container_id, att, netns, strictness);
        if !failures.is_empty() {
            report.remaining.insert(0, att.clone());
            report.failures.extend(failures);
        }
    }
    report
}

fn teardown_one(
    exec: &dyn DelegateExec,
    container_id: &str,
    att: &CachedAttachment,
    netns: Option<&Path>,
    strictness: Strictness,
) -> Vec<TeardownFailure> {
    let failure = |cause| TeardownFailure {
        network: att.network.clone(),
        ifname: att.ifname.clone(),
        cause,
    };
    let config = match NetworkConfig::from_slice(att.config.as_bytes()) {
        Ok(c) => c,
        Err(e) => return vec![failure(TeardownCause::Config(e.to_string()))],
    };
    let version = config.effective_version().unwrap_or(CniVersion::V0_1_0);
    let chain = Chain {
        config: &config,
        version,
        ifname: &att.ifname,
        runtime_config: &att.runtime_config,
    };
    let inv = Invocation {
        exec,
        container_id,
        netns,
        args: &att.cni_args,
    };
    let mut out = Vec::new();
    for e in chain.del(&inv, att.result.as_ref()) {
        let f = failure(TeardownCause::Delegate(e));
        if att.result.is_none() && strictness == Strictness::Cached {
            tracing::warn!("ignoring DEL failure of an attachment that was never added: {f}");
        } else {
            out.push(f);
        }
    }
    out
}
