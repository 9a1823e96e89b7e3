//! The attach phase: a guard that holds the container's lock and cache entry while the planned
//! delegates run, and on any error tears down everything made so far.
//!
//! [`Attach::begin`] takes the lock, tears down what a previous attempt of the same container
//! left (a retried ADD), and writes the entry before any delegate runs (its disk sync overlaps
//! the first delegate; [`Attach::run`] succeeds only once it finished).
//! [`Attach::run`] runs the caller's steps (delegates, default-route fix, status write, result
//! conversion): whatever step fails, the attachments made so far are DELed in reverse through
//! [`crate::teardown`], and the error carries what could not be undone. This is the only
//! rollback path of ADD.

use crate::cache::{Cache, CacheEntry, CacheError, ContainerLock, Syncing};
use crate::context::Engine;
use crate::delegate::{Chain, ChainError, Invocation};
use crate::error::EngineError;
use crate::exec::UnderLock;
use crate::plan::Plan;
use crate::resolve::Attachment;
use crate::teardown::{Strictness, TeardownReport, teardown};
use plexus_cni::CniVersion;
use serde_json::Value;
use std::os::fd::AsFd;

/// Holds the lock and the entry of one ADD until it succeeds or is rolled back.
pub struct Attach<'e, 'a> {
    engine: &'e Engine<'a>,
    cache: Cache,
    /// `None` once handed back (unlinked after a clean rollback).
    lock: Option<ContainerLock>,
    entry: CacheEntry,
    /// The first write's disk sync, until [`Attach::run`] waited for it.
    syncing: Option<Syncing>,
    /// Attachments whose ADD ran (the last one may have failed half-way): what a rollback DELs.
    made: usize,
    /// Still responsible for rolling back (cleared by [`Attach::run`]).
    armed: bool,
}

impl std::fmt::Debug for Attach<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attach")
            .field("container", &self.entry.container_id)
            .field("made", &self.made)
            .field("armed", &self.armed)
            .finish_non_exhaustive()
    }
}

impl<'e, 'a> Attach<'e, 'a> {
    /// Locks the container, tears down a previous attempt's attachments (keeping the lock: a DEL
    /// arriving now must wait for this ADD), and writes `plan`'s entry, starting its disk sync.
    ///
    /// A corrupt entry fails the ADD and is left as found: what it described may still exist,
    /// and DEL rebuilds it from the pod's annotations.
    pub fn begin(engine: &'e Engine<'a>, plan: &Plan) -> Result<Self, EngineError> {
        let id = &engine.env.container_id;
        let cache = Cache::new(&engine.config.cni_dir);
        let lock = cache
            .lock(id)
            .map_err(|source| engine.cache_err("lock", source))?;
        match cache.read(id) {
            Ok(None) => {}
            Ok(Some(previous)) => {
                tracing::warn!(container = %id, "cache entry exists at ADD; tearing the previous attempt down first");
                let report = teardown(
                    &UnderLock::new(engine.exec, Some(lock.as_fd())),
                    &previous,
                    engine.env.netns.as_deref(),
                    Strictness::Cached,
                );
                if !report.failures.is_empty() {
                    return Err(EngineError::Del {
                        container: id.clone(),
                        report,
                    });
                }
                cache
                    .remove(id)
                    .map_err(|source| engine.cache_err("remove", source))?;
            }
            Err(source @ CacheError::Corrupt { .. }) => {
                return Err(EngineError::CorruptAtAdd {
                    container: id.clone(),
                    source,
                });
            }
            Err(source) => return Err(engine.cache_err("read", source)),
        }
        let entry = plan.entry(engine);
        let syncing = match cache.write_syncing(&entry) {
            Ok(s) => s,
            Err(source) => {
                // A full disk: nothing ran, so nothing of this container may stay behind.
                let _ = cache.remove(id);
                if let Err(e) = lock.unlink() {
                    tracing::warn!(container = %id, "could not remove the lock file: {e}");
                }
                return Err(engine.cache_err("write", source));
            }
        };
        Ok(Self {
            engine,
            cache,
            lock: Some(lock),
            entry,
            syncing: Some(syncing),
            made: 0,
            armed: true,
        })
    }

    /// Runs `steps`; on error, rolls back everything made so far and returns the error, wrapped
    /// in [`EngineError::RollbackIncomplete`] when the rollback left something behind. On
    /// success, once the first write's disk sync finished (a failed sync fails the ADD like a
    /// failed write), the entry stays and the lock is released.
    pub fn run<T>(
        mut self,
        steps: impl FnOnce(&mut Self) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let outcome = steps(&mut self).and_then(|v| {
            match self.syncing.take().map(Syncing::wait) {
                Some(Err(source)) => Err(self.engine.cache_err("sync", source)),
                _ => Ok(v),
            }
        });
        self.armed = false;
        match outcome {
            Ok(v) => Ok(v),
            Err(cause) => {
                let report = self.rollback();
                if report.is_clean() {
                    Err(cause)
                } else {
                    Err(EngineError::RollbackIncomplete {
                        cause: Box::new(cause),
                        report,
                    })
                }
            }
        }
    }

    /// ADDs every planned attachment in order, recording each result in the entry; returns the
    /// results (each in its delegate's own version).
    pub fn add_delegates(&mut self, plan: &Plan) -> Result<Vec<Value>, EngineError> {
        let engine = self.engine;
        let mut results: Vec<Value> = Vec::with_capacity(plan.attachments.len());
        for (i, att) in plan.attachments.iter().enumerate() {
            let chain = Chain {
                config: &att.config,
                version: version_of(att, &plan.label)?,
                ifname: &att.ifname,
                runtime_config: &att.runtime_config,
            };
            self.made = i + 1;
            if let Some(device) = &att.device {
                let dirs = crate::device::DeviceInfoDirs::under(&engine.config.device_info_dir);
                // Optional in the device-info spec: a delegate without it still gets its device.
                if let Err(e) = crate::device::copy_device_info(&dirs, device) {
                    tracing::warn!(pod = %plan.label, network = %att.network, "cannot copy the device-info file of {}: {e}", device.device_id);
                }
            }
            // Each attachment has its own `CNI_ARGS` (`IP=`/`MAC=` for NADs without the
            // capability), recorded in the entry so that DEL repeats them.
            let args = self.entry.attachments[i].cni_args.clone();
            let exec = UnderLock::new(engine.exec, self.lock.as_ref().map(AsFd::as_fd));
            let inv = Invocation {
                exec: &exec,
                container_id: &engine.env.container_id,
                netns: engine.env.netns.as_deref(),
                args: &args,
            };
            // The auxiliary chain continues the cluster network's result on its interface.
            let prev = att.auxiliary.then(|| results[0].clone());
            match chain.add_after(&inv, prev) {
                Ok(result) => {
                    self.entry.attachments[i].result = Some(result.clone());
                    results.push(result);
                    self.save()?;
                }
                Err((err, partial)) => {
                    // The rollback hands the last good result of a half-run chain to its DEL.
                    self.entry.attachments[i].result = partial;
                    let (pod, network, ifname) =
                        (plan.label.clone(), att.network.clone(), att.ifname.clone());
                    return Err(match err {
                        ChainError::Exec(source) => EngineError::Delegate {
                            pod,
                            network,
                            ifname,
                            source,
                        },
                        ChainError::BadResult { reason, .. } => EngineError::BadResult {
                            pod,
                            network,
                            ifname,
                            reason,
                        },
                    });
                }
            }
        }
        Ok(results)
    }

    /// Replaces the recorded results (after the default-route fix changed them).
    pub fn record_results(&mut self, results: &[Value]) -> Result<(), EngineError> {
        for (cached, r) in self.entry.attachments.iter_mut().zip(results) {
            cached.result = Some(r.clone());
        }
        self.save()
    }

    /// The entry as recorded so far.
    pub fn entry(&self) -> &CacheEntry {
        &self.entry
    }

    fn save(&self) -> Result<(), EngineError> {
        self.cache
            .update(&self.entry)
            .map_err(|source| self.engine.cache_err("write", source))
    }

    /// DELs attachments `[0, made)` in reverse. Clean: the entry and the lock file go. Otherwise
    /// the entry keeps exactly the attachments that still need a DEL, for the runtime's DEL.
    fn rollback(&mut self) -> TeardownReport {
        let mut partial = self.entry.clone();
        partial.attachments.truncate(self.made);
        let mut report = teardown(
            &UnderLock::new(self.engine.exec, self.lock.as_ref().map(AsFd::as_fd)),
            &partial,
            self.engine.env.netns.as_deref(),
            Strictness::Cached,
        );
        if report.failures.is_empty() {
            match self.cache.remove(&partial.container_id) {
                Ok(()) => {
                    if let Some(Err(e)) = self.lock.take().map(ContainerLock::unlink) {
                        // Only an empty file is left; GC sweeps it.
                        tracing::warn!(container = %partial.container_id, "could not remove the lock file: {e}");
                    }
                }
                Err(e) => report.cache = Some(e),
            }
        } else {
            partial.attachments = report.remaining().to_vec();
            if let Err(e) = self.cache.write(&partial) {
                report.cache = Some(e);
            }
        }
        report
    }
}

impl Drop for Attach<'_, '_> {
    /// A guard dropped while armed (a panic in a step) still undoes what it made.
    fn drop(&mut self) {
        if self.armed {
            self.armed = false;
            let report = self.rollback();
            if !report.is_clean() {
                tracing::error!(container = %self.entry.container_id, "rollback incomplete, DEL will retry: {report}");
            }
        }
    }
}

/// The effective cniVersion of an attachment's config.
pub(crate) fn version_of(att: &Attachment, pod: &str) -> Result<CniVersion, EngineError> {
    att.config
        .effective_version()
        .map_err(|e| EngineError::NetworkConfig {
            pod: pod.to_owned(),
            network: att.network.clone(),
            reason: e.to_string(),
        })
}
