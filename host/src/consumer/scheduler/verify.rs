//! Anti-entropy inside a grain type's scheduler: every interval, once the
//! type is caught up, one slice of the type's key space is read from the
//! log ([`ReplicationLog::full_state_heads`]: each grain's newest FullState
//! sequence), the next slice starting after the last key, wrapping around
//! at the end. Each grain of the slice is judged against the store
//! ([`anti_entropy::judge`]); a divergent one is logged, counted and read
//! again from the log (a fresh [`GrainProgress`], queued like any due grain).
//!
//! Only idle grains are judged: a grain queued, running, waiting for a
//! retry or for the catch-up scan, or whose newest FullState the last
//! listing has not seen yet, is on its way and left alone.
//!
//! [`ReplicationLog::full_state_heads`]: crate::replication_log::ReplicationLog::full_state_heads

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Progress, Scheduler, Table};
use crate::consumer::anti_entropy::{self, VerifySettings};
use crate::consumer::grain::{GrainProgress, TypeContext};
use crate::repeat_limiter::limited;
use crate::replication_log::{GrainHead, LogError};
use crate::text::escape;

/// What one slice's read answers.
pub(super) type SliceRead = Result<Option<Vec<GrainHead>>, LogError>;

/// One grain type's anti-entropy: its cadence, where it stands in the key
/// space, and the slice being read.
pub(super) struct AntiEntropy {
    /// The settings; `None` when off (or the log cannot serve it).
    settings: Option<VerifySettings>,
    /// When the next slice is due.
    next: Instant,
    /// The last key of the previous slice; `None` to start from the first.
    after: Option<String>,
    /// The slice being read.
    reading: Option<Pin<Box<dyn Future<Output = SliceRead> + Send>>>,
}

impl AntiEntropy {
    /// Anti-entropy with `settings` (off when `None`), first due one
    /// interval after `now`.
    pub(super) fn new(settings: Option<VerifySettings>, now: Instant) -> Self {
        Self {
            next: now + settings.map_or_else(Default::default, |s| s.interval),
            settings,
            after: None,
            reading: None,
        }
    }

    /// When the next slice is due, while none is being read.
    pub(super) fn due_at(&self) -> Option<Instant> {
        (self.settings.is_some() && self.reading.is_none()).then_some(self.next)
    }

    /// Whether a slice is being read.
    pub(super) fn is_reading(&self) -> bool {
        self.reading.is_some()
    }

    /// The slice's read; only polled while [`Self::is_reading`].
    pub(super) async fn read(&mut self) -> SliceRead {
        self.reading.as_mut().expect("guarded by is_reading").await
    }

    /// Starts reading the next slice, if the type is `caught_up` (until
    /// then every grain is on its way anyway); the one after is due an
    /// interval from `now`.
    pub(super) fn start(&mut self, ctx: &Arc<TypeContext>, caught_up: bool, now: Instant) {
        let Some(settings) = self.settings else {
            return;
        };
        self.next = now + settings.interval;
        if !caught_up {
            return;
        }
        let ctx = Arc::clone(ctx);
        let after = self.after.clone();
        self.reading = Some(Box::pin(async move {
            ctx.log
                .full_state_heads(&ctx.grain_type, after.as_deref(), settings.grains)
                .await
        }));
    }

    /// Takes the slice's answer: the heads to judge, and the next slice's
    /// start (the first key again after the last slice).
    pub(super) fn finished(
        &mut self,
        ctx: &TypeContext,
        read: SliceRead,
    ) -> Option<Vec<GrainHead>> {
        self.reading = None;
        let grains = self.settings.map_or(0, |s| s.grains);
        match read {
            Ok(Some(heads)) => {
                self.after = if heads.len() < grains {
                    None
                } else {
                    heads.last().map(|h| h.grain_key.clone())
                };
                Some(heads)
            }
            Ok(None) => {
                tracing::warn!(
                    grain_type = %ctx.grain_type,
                    "the log cannot read FullState heads by key range; anti-entropy is off for this grain type"
                );
                self.settings = None;
                None
            }
            Err(error) => {
                ctx.counters.read_error();
                tracing::warn!(grain_type = %ctx.grain_type, %error, "anti-entropy could not read the log; trying again next interval");
                None
            }
        }
    }
}

impl Scheduler {
    /// Judges a slice's grains against the store and reads the divergent
    /// ones again.
    pub(super) fn check_slice(&self, table: &mut Table, heads: Vec<GrainHead>) {
        let now = Instant::now();
        let in_force = self.ctx.decoded_by.as_deref().map(|d| d.sha256.as_str());
        for head in heads {
            let Some(index) = table.slot_of(&head.grain_key) else {
                continue; // another shard's, or new: discovery brings it
            };
            let slot = &mut table.slots[index as usize];
            let idle = !slot.progress.is_running()
                && !slot.queued
                && !slot.awaiting_scan
                && slot.wake_at.is_none();
            if !idle || head.latest_sequence > slot.head {
                continue;
            }
            let replica = self.ctx.store.get(&self.ctx.grain_type, &head.grain_key);
            let Some(kind) = anti_entropy::judge(head.latest_sequence, replica.as_ref(), in_force)
            else {
                continue;
            };
            self.ctx.counters.verify_mismatch(kind);
            limited(
                &self.ctx.grain_type,
                "verify_mismatch",
                &head.grain_key,
                || {
                    tracing::warn!(
                        grain_type = %self.ctx.grain_type,
                        grain_key = %escape(&head.grain_key),
                        kind = kind.as_str(),
                        log_sequence = head.latest_sequence,
                        held_sequence = replica.as_ref().map_or(0, |r| r.sequence),
                        "anti-entropy: the replica diverges from the log; reading the grain again"
                    );
                },
            );
            slot.progress = Progress::Kept(Box::new(GrainProgress::repair(&self.ctx, &slot.key)));
            self.consider(table, index, now);
        }
    }
}
