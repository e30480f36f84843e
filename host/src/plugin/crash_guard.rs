//! [`CrashGuard`]: no crash loop. Which snapshot each decode call is
//! running is kept in a memory-mapped file, so that after the host dies
//! (a runtime bug, the kernel's OOM killer) the next start knows what it
//! was doing, and a snapshot that was being decoded at two unclean exits in
//! a row is quarantined instead of killing the host a third time.
//!
//! Long (about 500 lines before its tests) because the file format, its
//! `unsafe` memory map with the SAFETY argument, and the suspect and
//! quarantine rules that read it are one protocol, reviewed together.
//!
//! # The files (in the state directory, `[store] state_dir`)
//! - `decoding.slots`: one fixed-size slot per running decode call: the
//!   snapshot's identity, written before the guest runs and cleared after.
//!   Writes go to a shared mapping, so they survive the process (the page
//!   cache holds them) without an `fsync` on the hot path; they do not
//!   survive the machine, which a crash loop does not need.
//! - `suspects.json`: the snapshots in flight at the last unclean exit, with
//!   how many unclean exits in a row they were in flight at. Removed by a
//!   clean exit.
//! - `quarantine.json`: the quarantined snapshots. Decode calls of these
//!   fail at once as [`CallErrorKind::Quarantined`], so the grain is
//!   `failing`, keeps its last good state, and other grains replicate.
//! - `lock`: held (`flock`) while a host uses the directory, so two hosts
//!   never share one.
//!
//! A snapshot is identified by a digest of (plugin sha256, grain type,
//! key, sequence): a new plugin build, or a newer snapshot of the grain,
//! is another snapshot, so "decoded again only when its plugin changes"
//! needs no bookkeeping. Suspects (in flight at exactly one unclean exit)
//! are decoded one at a time, so an innocent snapshot that happened to run
//! beside the guilty one is acquitted before the guilty one runs again.
//!
//! [`CallErrorKind::Quarantined`]: crate::decode::CallErrorKind::Quarantined

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use memmap2::MmapMut;
use sha2::{Digest, Sha256};

/// Slots in the file: more than the decode calls that ever run at once
/// (one per core); a call that finds none free runs unguarded.
const SLOTS: usize = 256;
/// Bytes per slot.
const SLOT_BYTES: usize = 512;
/// Where a slot's grain type and key start; what follows holds them.
const NAMES_AT: usize = 96;
/// The file's first bytes: its format.
const MAGIC: &[u8; 8] = b"RHSLOTS1";
/// The header before the first slot.
const HEADER_BYTES: usize = SLOT_BYTES;
/// How many unclean exits in a row quarantine a snapshot.
const CRASHES_TO_QUARANTINE: u32 = 2;

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CrashGuardError {
    /// A file of the directory could not be created, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the directory's lock.
    #[error("{0}: another replica-host uses this state directory")]
    Locked(String),
}

/// One snapshot as the guard knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotRecord {
    /// Hex digest of (plugin, grain type, key, sequence): the identity.
    pub snapshot: String,
    /// Hex sha256 of the plugin that was decoding it.
    pub plugin_sha256: String,
    /// The grain's type.
    pub grain_type: String,
    /// The grain's key (cut when longer than a slot holds; see `key_cut`).
    pub grain_key: String,
    /// Whether `grain_key` was cut.
    #[serde(default)]
    pub key_cut: bool,
    /// The snapshot's sequence.
    pub sequence: u64,
    /// At how many unclean exits in a row it was being decoded.
    pub crashes: u32,
}

/// The snapshot a decode call is about to run, identified.
#[derive(Debug, Clone)]
pub struct SnapshotId<'a> {
    digest: [u8; 32],
    plugin_sha256: [u8; 32],
    grain_type: &'a str,
    grain_key: &'a str,
    sequence: u64,
}

impl<'a> SnapshotId<'a> {
    /// Identifies a snapshot of `grain_type`/`grain_key` at `sequence` as
    /// decoded by the plugin whose file has hex sha256 `plugin_sha256`.
    pub fn new(
        plugin_sha256: &str,
        grain_type: &'a str,
        grain_key: &'a str,
        sequence: u64,
    ) -> Self {
        let mut plugin = [0u8; 32];
        // A sha256 we computed ourselves; anything else identifies by zeros.
        let _ = hex::decode_to_slice(plugin_sha256, &mut plugin);
        Self::of(plugin, grain_type, grain_key, sequence)
    }

    /// As [`SnapshotId::new`], with the plugin's sha256 as bytes (a decode
    /// call's way: no hex to read per snapshot).
    pub fn of(plugin: [u8; 32], grain_type: &'a str, grain_key: &'a str, sequence: u64) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"replica-host crash guard 1\0");
        hasher.update(plugin);
        for part in [grain_type.as_bytes(), grain_key.as_bytes()] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher.update(sequence.to_le_bytes());
        Self {
            digest: hasher.finalize().into(),
            plugin_sha256: plugin,
            grain_type,
            grain_key,
            sequence,
        }
    }
}

/// What the guard says about a snapshot before it is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Never seen at a crash: decode it.
    Clear,
    /// In flight at one unclean exit: decode it, alone.
    Suspect,
    /// In flight at two unclean exits in a row: do not decode it.
    Quarantined,
}

/// What the guard found at startup.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Snapshots in flight when the previous run died (none after a clean exit).
    pub in_flight: Vec<SnapshotRecord>,
    /// Those quarantined now, at their second unclean exit in a row.
    pub newly_quarantined: Vec<SnapshotRecord>,
}

/// The crash guard of one host; see the module docs.
pub struct CrashGuard {
    /// The state directory.
    dir: PathBuf,
    /// The directory's lock, held while this guard lives.
    _lock: File,
    /// The slots file, mapped shared.
    slots: SlotFile,
    /// Slots free now.
    free: Mutex<Vec<usize>>,
    /// In flight at exactly one unclean exit, by digest; removed when one
    /// decodes without killing the host.
    suspects: Mutex<HashMap<[u8; 32], SnapshotRecord>>,
    /// Quarantined, by digest.
    quarantined: RwLock<HashMap<[u8; 32], SnapshotRecord>>,
    /// Held while a suspect decodes, so suspects run one at a time.
    one_suspect: Mutex<()>,
}

impl CrashGuard {
    /// Opens (creating) the state directory `dir`, takes its lock, reads
    /// what the previous run left, quarantines the snapshots in flight at a
    /// second unclean exit in a row, drops quarantine entries of plugins no
    /// longer configured (`plugins`: the hex sha256 of each plugin in
    /// force), and starts with every slot free.
    pub fn open(dir: &Path, plugins: &[&str]) -> Result<(Self, Recovery), CrashGuardError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| CrashGuardError::Io { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(CrashGuardError::Locked(dir.display().to_string()));
        }

        let slots_path = dir.join("decoding.slots");
        let in_flight = match std::fs::read(&slots_path) {
            Ok(bytes) => read_slots(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&slots_path)(e)),
        };
        let suspects_path = dir.join("suspects.json");
        let quarantine_path = dir.join("quarantine.json");
        let previous: Vec<SnapshotRecord> = read_json(&suspects_path);
        let mut quarantined: Vec<SnapshotRecord> = read_json(&quarantine_path);
        quarantined.retain(|r| plugins.contains(&r.plugin_sha256.as_str()));

        let mut recovery = Recovery::default();
        let mut suspects = Vec::new();
        for mut record in in_flight {
            record.crashes = previous
                .iter()
                .find(|p| p.snapshot == record.snapshot)
                .map_or(0, |p| p.crashes)
                + 1;
            recovery.in_flight.push(record.clone());
            if record.crashes >= CRASHES_TO_QUARANTINE {
                if !quarantined.iter().any(|q| q.snapshot == record.snapshot) {
                    quarantined.push(record.clone());
                }
                recovery.newly_quarantined.push(record);
            } else {
                suspects.push(record);
            }
        }
        write_json(&suspects_path, &suspects).map_err(io(&suspects_path))?;
        write_json(&quarantine_path, &quarantined).map_err(io(&quarantine_path))?;
        let slots = SlotFile::create(&slots_path).map_err(io(&slots_path))?;

        let by_digest = |records: Vec<SnapshotRecord>| {
            records
                .into_iter()
                .filter_map(|r| Some((digest_of(&r.snapshot)?, r)))
                .collect::<HashMap<_, _>>()
        };
        let guard = Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            slots,
            free: Mutex::new((0..SLOTS).rev().collect()),
            suspects: Mutex::new(by_digest(suspects)),
            quarantined: RwLock::new(by_digest(quarantined)),
            one_suspect: Mutex::new(()),
        };
        Ok((guard, recovery))
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether any snapshot is quarantined: when none is, no snapshot
    /// needs its identity to be refused.
    pub fn quarantines_any(&self) -> bool {
        !self
            .quarantined
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Whether `id` may be decoded, and how.
    pub fn verdict(&self, id: &SnapshotId<'_>) -> Verdict {
        let quarantined = self
            .quarantined
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if quarantined.contains_key(&id.digest) {
            Verdict::Quarantined
        } else if lock(&self.suspects).contains_key(&id.digest) {
            Verdict::Suspect
        } else {
            Verdict::Clear
        }
    }

    /// Marks `id` as being decoded until the returned guard is dropped. A
    /// suspect also waits for, and holds, the one-suspect-at-a-time lock.
    pub fn enter<'g>(&'g self, id: &SnapshotId<'_>, verdict: &Verdict) -> InFlight<'g> {
        let alone = (*verdict == Verdict::Suspect).then(|| lock(&self.one_suspect));
        let slot = lock(&self.free).pop();
        if let Some(slot) = slot {
            self.slots.write(slot, id);
        }
        InFlight {
            guard: self,
            slot,
            _alone: alone,
        }
    }

    /// A suspect decoded (or failed) without killing the host: acquitted.
    pub fn acquit(&self, id: &SnapshotId<'_>) {
        lock(&self.suspects).remove(&id.digest);
    }

    /// The quarantined snapshots, by grain type.
    pub fn quarantined(&self) -> Vec<SnapshotRecord> {
        let mut all: Vec<_> = self
            .quarantined
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| (&a.grain_type, &a.grain_key).cmp(&(&b.grain_type, &b.grain_key)));
        all
    }

    /// How many quarantined snapshots each grain type has under the plugin
    /// now in force (`plugins`: grain type and hex sha256).
    pub fn quarantined_counts<'a>(
        &self,
        plugins: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<(String, usize)> {
        let all = self.quarantined();
        plugins
            .into_iter()
            .map(|(grain_type, sha256)| {
                let n = all
                    .iter()
                    .filter(|r| r.grain_type == grain_type && r.plugin_sha256 == sha256)
                    .count();
                (grain_type.to_string(), n)
            })
            .collect()
    }

    /// A clean exit: nothing was in flight, so no snapshot is a suspect any
    /// more (the exits were not "in a row").
    pub fn close(&self) {
        let _ = std::fs::remove_file(self.dir.join("suspects.json"));
    }
}

impl std::fmt::Debug for CrashGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashGuard")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A decode call in flight; clears its slot when dropped (also when the
/// call panics: a panic is not the host dying).
pub struct InFlight<'g> {
    guard: &'g CrashGuard,
    slot: Option<usize>,
    _alone: Option<MutexGuard<'g, ()>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.guard.slots.clear(slot);
            lock(&self.guard.free).push(slot);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The slots file, mapped shared and writable.
struct SlotFile {
    /// The mapping; kept alive for `base`.
    _map: MmapMut,
    /// Its first byte.
    base: *mut u8,
}

// SAFETY: `base` points into `_map`, which lives as long as the SlotFile.
// Each slot is written by one thread at a time: a slot index is handed out
// by the free list to one `InFlight`, which alone writes and clears it.
unsafe impl Send for SlotFile {}
// SAFETY: as above; no two threads write the same bytes.
unsafe impl Sync for SlotFile {}

impl SlotFile {
    /// Creates (truncating) the file with every slot free, and maps it.
    fn create(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)?;
        file.set_len((HEADER_BYTES + SLOTS * SLOT_BYTES) as u64)?;
        // SAFETY: the file is ours (the directory's lock is held), so no
        // other process changes or truncates it while it is mapped.
        let mut map = unsafe { MmapMut::map_mut(&file)? };
        map[..8].copy_from_slice(MAGIC);
        map[8..12].copy_from_slice(&(SLOTS as u32).to_le_bytes());
        map[12..16].copy_from_slice(&(SLOT_BYTES as u32).to_le_bytes());
        let base = map.as_mut_ptr();
        Ok(Self { _map: map, base })
    }

    /// The bytes of `slot`.
    fn slot(&self, slot: usize) -> *mut u8 {
        assert!(slot < SLOTS);
        // SAFETY: in bounds: the mapping holds the header and SLOTS slots.
        unsafe { self.base.add(HEADER_BYTES + slot * SLOT_BYTES) }
    }

    /// The slot's state word: 0 free, 1 in use.
    fn state(&self, slot: usize) -> &AtomicU64 {
        // SAFETY: 8-byte aligned (the mapping is page-aligned, the header
        // and slots are multiples of 8) and inside the mapping.
        unsafe { AtomicU64::from_ptr(self.slot(slot).cast::<u64>()) }
    }

    /// Writes `id` into `slot`, then marks it in use. Only the bytes the
    /// names take are written: a reader goes by the lengths, so what a
    /// longer earlier occupant left after them is never read.
    fn write(&self, slot: usize, id: &SnapshotId<'_>) {
        let mut bytes = [0u8; SLOT_BYTES];
        bytes[8..40].copy_from_slice(&id.digest);
        bytes[40..72].copy_from_slice(&id.plugin_sha256);
        bytes[72..80].copy_from_slice(&id.sequence.to_le_bytes());
        let room = SLOT_BYTES - NAMES_AT;
        let grain_type = cut(id.grain_type, room / 4);
        let grain_key = cut(id.grain_key, room - grain_type.len());
        bytes[80..82].copy_from_slice(&(grain_type.len() as u16).to_le_bytes());
        bytes[82..84].copy_from_slice(&(grain_key.len() as u16).to_le_bytes());
        bytes[84] = u8::from(grain_key.len() < id.grain_key.len());
        let names = &mut bytes[NAMES_AT..];
        names[..grain_type.len()].copy_from_slice(grain_type.as_bytes());
        names[grain_type.len()..grain_type.len() + grain_key.len()]
            .copy_from_slice(grain_key.as_bytes());
        let used = NAMES_AT + grain_type.len() + grain_key.len();
        // SAFETY: the slot is this thread's (see the Sync impl); the state
        // word (bytes 0..8) is left to the atomic store below; `used` is
        // at most SLOT_BYTES (the names are cut to the room after NAMES_AT).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes[8..].as_ptr(), self.slot(slot).add(8), used - 8)
        };
        self.state(slot).store(1, Ordering::Release);
    }

    /// Marks `slot` free.
    fn clear(&self, slot: usize) {
        self.state(slot).store(0, Ordering::Release);
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The slots in use in a slots file's bytes (a file of another format,
/// or cut short, yields what it can).
fn read_slots(bytes: &[u8]) -> Vec<SnapshotRecord> {
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Vec::new();
    }
    bytes[HEADER_BYTES..]
        .chunks_exact(SLOT_BYTES)
        .filter(|s| s[0] == 1)
        .filter_map(|s| {
            let type_len = usize::from(u16::from_le_bytes([s[80], s[81]]));
            let key_len = usize::from(u16::from_le_bytes([s[82], s[83]]));
            let names = s.get(NAMES_AT..NAMES_AT + type_len + key_len)?;
            Some(SnapshotRecord {
                snapshot: hex::encode(&s[8..40]),
                plugin_sha256: hex::encode(&s[40..72]),
                grain_type: String::from_utf8_lossy(&names[..type_len]).into_owned(),
                grain_key: String::from_utf8_lossy(&names[type_len..]).into_owned(),
                key_cut: s[84] == 1,
                sequence: u64::from_le_bytes(s[72..80].try_into().ok()?),
                crashes: 0,
            })
        })
        .collect()
}

fn digest_of(hex_digest: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut digest).ok()?;
    Some(digest)
}

/// A JSON list file; missing or unreadable is empty (the guard then forgets,
/// it never fails startup).
fn read_json(path: &Path) -> Vec<SnapshotRecord> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "unreadable crash-guard file ignored");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

/// Writes `records` to `path` through a temporary file and a rename, synced:
/// startup only, never on the hot path.
fn write_json(path: &Path, records: &[SnapshotRecord]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(records).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLUGIN: &str = "ab00000000000000000000000000000000000000000000000000000000000000";

    /// What the host leaves behind when it dies with `ids` in flight.
    fn die_while_decoding(dir: &Path, ids: &[SnapshotId<'_>]) {
        let (guard, _) = CrashGuard::open(dir, &[PLUGIN]).unwrap();
        for id in ids {
            std::mem::forget(guard.enter(id, &Verdict::Clear));
        }
        // The process dies: no clean close, no slot cleared.
        std::mem::forget(guard);
    }

    #[test]
    fn a_snapshot_in_flight_at_two_unclean_exits_in_a_row_is_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let poison = SnapshotId::new(PLUGIN, "Counter", "poison", 7);
        let bystander = SnapshotId::new(PLUGIN, "Counter", "other", 3);

        die_while_decoding(dir.path(), &[poison.clone(), bystander.clone()]);
        // The flock dies with the process; a forgotten guard keeps it, so
        // release it as the kernel would.
        release_lock(dir.path());
        let (guard, recovery) = CrashGuard::open(dir.path(), &[PLUGIN]).unwrap();
        assert_eq!(recovery.in_flight.len(), 2);
        assert!(recovery.newly_quarantined.is_empty());
        assert_eq!(guard.verdict(&poison), Verdict::Suspect);
        assert_eq!(guard.verdict(&bystander), Verdict::Suspect);
        // The bystander decodes fine; the poison kills the host again.
        drop(guard.enter(&bystander, &Verdict::Suspect));
        guard.acquit(&bystander);
        std::mem::forget(guard.enter(&poison, &Verdict::Suspect));
        std::mem::forget(guard);
        release_lock(dir.path());

        let (guard, recovery) = CrashGuard::open(dir.path(), &[PLUGIN]).unwrap();
        assert_eq!(recovery.newly_quarantined.len(), 1);
        let record = &recovery.newly_quarantined[0];
        assert_eq!(
            (record.grain_key.as_str(), record.sequence, record.crashes),
            ("poison", 7, 2)
        );
        assert!(guard.quarantines_any());
        assert_eq!(guard.verdict(&poison), Verdict::Quarantined);
        assert_eq!(guard.verdict(&bystander), Verdict::Clear);
        // A newer snapshot of the grain, or another plugin build, is clear.
        assert_eq!(
            guard.verdict(&SnapshotId::new(PLUGIN, "Counter", "poison", 8)),
            Verdict::Clear
        );
        let other_plugin = "cd".repeat(32);
        assert_eq!(
            guard.verdict(&SnapshotId::new(&other_plugin, "Counter", "poison", 7)),
            Verdict::Clear
        );
        assert_eq!(
            guard.quarantined_counts([("Counter", PLUGIN), ("Other", PLUGIN)]),
            vec![("Counter".to_string(), 1), ("Other".to_string(), 0)]
        );
        guard.close();
        drop(guard);

        // It stays quarantined across clean restarts, until the plugin changes.
        let (guard, _) = CrashGuard::open(dir.path(), &[PLUGIN]).unwrap();
        assert_eq!(guard.verdict(&poison), Verdict::Quarantined);
        guard.close();
        drop(guard);
        let (guard, _) = CrashGuard::open(dir.path(), &[other_plugin.as_str()]).unwrap();
        assert!(guard.quarantined().is_empty());
    }

    #[test]
    fn exits_that_are_not_in_a_row_quarantine_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let id = SnapshotId::new(PLUGIN, "Counter", "k", 1);
        die_while_decoding(dir.path(), std::slice::from_ref(&id));
        release_lock(dir.path());
        // A run that ends cleanly in between.
        let (guard, _) = CrashGuard::open(dir.path(), &[PLUGIN]).unwrap();
        assert_eq!(guard.verdict(&id), Verdict::Suspect);
        guard.close();
        drop(guard);
        die_while_decoding(dir.path(), std::slice::from_ref(&id));
        release_lock(dir.path());
        let (guard, recovery) = CrashGuard::open(dir.path(), &[PLUGIN]).unwrap();
        assert!(recovery.newly_quarantined.is_empty());
        assert_eq!(guard.verdict(&id), Verdict::Suspect);
    }

    #[test]
    fn long_keys_are_cut_in_the_slot_but_identified_whole() {
        let dir = tempfile::tempdir().unwrap();
        let key = "é".repeat(1000);
        let id = SnapshotId::new(PLUGIN, "Counter", &key, 1);
        die_while_decoding(dir.path(), std::slice::from_ref(&id));
        release_lock(dir.path());
        let (guard, recovery) = CrashGuard::open(dir.path(), &[PLUGIN]).unwrap();
        let record = &recovery.in_flight[0];
        assert!(record.key_cut);
        assert!(key.starts_with(&record.grain_key));
        assert_eq!(guard.verdict(&id), Verdict::Suspect);
        let other = format!("{key}x");
        assert_eq!(
            guard.verdict(&SnapshotId::new(PLUGIN, "Counter", &other, 1)),
            Verdict::Clear
        );
    }

    #[test]
    fn a_slot_reused_by_a_shorter_key_reads_back_only_that_key() {
        let dir = tempfile::tempdir().unwrap();
        let (guard, _) = CrashGuard::open(dir.path(), &[PLUGIN]).unwrap();
        assert!(!guard.quarantines_any());
        // Every slot once held a long key; a short one is in flight at a kill.
        let long = "k".repeat(300);
        let long_id = SnapshotId::new(PLUGIN, "Counter", &long, 1);
        let held: Vec<_> = (0..SLOTS)
            .map(|_| guard.enter(&long_id, &Verdict::Clear))
            .collect();
        drop(held);
        let short = SnapshotId::of(hex_bytes(PLUGIN), "Counter", "s", 2);
        std::mem::forget(guard.enter(&short, &Verdict::Clear));
        std::mem::forget(guard);
        release_lock(dir.path());
        let (_guard, recovery) = CrashGuard::open(dir.path(), &[PLUGIN]).unwrap();
        let found: Vec<_> = recovery
            .in_flight
            .iter()
            .map(|r| (r.grain_key.as_str(), r.sequence, r.key_cut))
            .collect();
        assert_eq!(found, [("s", 2, false)]);
        assert_eq!(
            recovery.in_flight[0].snapshot,
            hex::encode(SnapshotId::new(PLUGIN, "Counter", "s", 2).digest)
        );
    }

    /// A hex sha256 as bytes.
    fn hex_bytes(hex_sha256: &str) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_sha256, &mut bytes).unwrap();
        bytes
    }

    #[test]
    fn a_second_host_cannot_share_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (_first, _) = CrashGuard::open(dir.path(), &[]).unwrap();
        assert!(matches!(
            CrashGuard::open(dir.path(), &[]),
            Err(CrashGuardError::Locked(_))
        ));
    }

    /// Drops the lock a forgotten guard holds, as the kernel does when the
    /// process that held it dies: a new open file description of the same
    /// file cannot take it, so unlock through /proc's view of our own fds.
    fn release_lock(dir: &Path) {
        let lock = dir.join("lock");
        for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            if std::fs::read_link(entry.path()).ok().as_deref() == Some(lock.as_path())
                && let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>()
            {
                // SAFETY: unlocking (and closing) an fd of this process
                // that a forgotten guard leaked; nothing else uses it.
                unsafe {
                    libc::flock(fd, libc::LOCK_UN);
                    libc::close(fd);
                }
            }
        }
    }
}
