//! The bounded on-disk store-and-forward queue. Every record bound for the broker is
//! appended here first and removed only when the broker acknowledged it (QoS 1 PUBACK), so a
//! broker outage or a `kill -9` of the runtime loses nothing that [`DiskQueue::sync`]
//! returned for.
//!
//! Format: one append-only log file of frames `[len: u32 LE][crc32: u32 LE][body]`. A body is
//! a put (`1, id: u64, kind: u8, payload`), a removal (`2, id: u64`) or the next id
//! (`3, next: u64`, written first by compaction so ids stay monotonic when the queue
//! empties). Opening replays the log and truncates a torn or corrupt tail (the frames after
//! the last good one were never synced). When removals outweigh live entries the log is
//! rewritten to a temporary file, synced and renamed over the old one.
//!
//! A write that fails (a full disk) is cut back to the last whole frame before the error is
//! returned, so later frames never follow a torn one; a failed compaction leaves the log
//! as it was and is tried again only after as many removals again.
//!
//! At the bound, the oldest telemetry entry goes first; events are never dropped (a queue
//! full of events still takes events, and drops the incoming telemetry instead).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::schema::RecordKind;

const LOG: &str = "queue.log";
const TMP: &str = "queue.log.tmp";
const PUT: u8 = 1;
const DEL: u8 = 2;
const NEXT: u8 = 3;
const KIND_TELEMETRY: u8 = 0;
const KIND_EVENT: u8 = 1;
/// Largest frame body accepted when replaying (a larger length is a corrupt tail).
const MAX_BODY: usize = 16 << 20;
/// Compaction threshold: the log holds at least this many removal frames...
const COMPACT_MIN_DEAD: u64 = 1024;
/// ...and at least twice as many as live entries; or the queue is empty and the log holds
/// at least this many removals.
const COMPACT_EMPTY_DEAD: u64 = 64;

/// Why the queue could not be opened or written.
#[derive(Debug, Error)]
pub enum QueueError {
    /// File system error.
    #[error("telemetry queue {path}: {cause}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        cause: std::io::Error,
    },
    /// The bound is zero.
    #[error("the telemetry queue's capacity must be at least 1")]
    ZeroCapacity,
}

/// One queued record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its id: the record's sequence number, strictly increasing.
    pub id: u64,
    /// Telemetry or event.
    pub kind: RecordKind,
    /// The encoded record.
    pub payload: Vec<u8>,
}

/// What happened to a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Stored; nothing dropped.
    Stored,
    /// Stored; the oldest telemetry entry (this id) was dropped to make room.
    DroppedOldest(u64),
    /// Not stored: the queue is full of events and the new record is telemetry.
    DroppedNew,
}

/// The bounded, crash-safe FIFO (see the module docs).
#[derive(Debug)]
pub struct DiskQueue {
    dir: PathBuf,
    file: File,
    entries: VecDeque<Entry>,
    capacity: usize,
    next_id: u64,
    dead_frames: u64,
    dropped: u64,
    unsynced: bool,
    /// Length of the log's whole frames (bytes).
    len: u64,
    /// Removal frames at the last failed compaction (0: none failed).
    compact_failed_at: u64,
    /// Bytes of room left before writes fail with "no space" (tests only).
    #[cfg(test)]
    space: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |cause| QueueError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

impl DiskQueue {
    /// Opens (or creates) the queue in `dir`, replaying what a previous process left, with
    /// room for `capacity` entries.
    pub fn open(dir: &Path, capacity: usize) -> Result<Self, QueueError> {
        if capacity == 0 {
            return Err(QueueError::ZeroCapacity);
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(LOG);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(io(&path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        let (entries, next_id, dead_frames, good_len) = replay(&bytes);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        if good_len < bytes.len() {
            log::warn!(
                "telemetry queue {}: dropping a torn tail of {} bytes",
                path.display(),
                bytes.len() - good_len
            );
            file.set_len(good_len as u64).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        let mut q = Self {
            dir: dir.to_path_buf(),
            file,
            entries,
            capacity,
            next_id,
            dead_frames,
            dropped: 0,
            unsynced: false,
            len: good_len as u64,
            compact_failed_at: 0,
            #[cfg(test)]
            space: None,
        };
        // A smaller bound than the last run's applies at once.
        while q.entries.len() > q.capacity {
            if q.drop_oldest_telemetry()?.is_none() {
                break;
            }
        }
        Ok(q)
    }

    /// The id the next pushed entry gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Entries queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Telemetry entries dropped at the bound since this queue was opened.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The oldest entry.
    pub fn front(&self) -> Option<&Entry> {
        self.entries.front()
    }

    /// Entries in order, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// The first entry with an id of at least `id`.
    pub fn first_from(&self, id: u64) -> Option<&Entry> {
        let i = self.entries.partition_point(|e| e.id < id);
        self.entries.get(i)
    }

    /// Appends `payload` as entry [`DiskQueue::next_id`] (the caller encoded that id into the
    /// record), dropping the oldest telemetry at the bound. Durable after [`DiskQueue::sync`].
    pub fn push(&mut self, kind: RecordKind, payload: Vec<u8>) -> Result<Pushed, QueueError> {
        let id = self.next_id;
        let mut outcome = Pushed::Stored;
        if self.entries.len() >= self.capacity {
            match self.drop_oldest_telemetry()? {
                Some(old) => outcome = Pushed::DroppedOldest(old),
                None if kind == RecordKind::Telemetry => {
                    self.next_id += 1;
                    self.dropped += 1;
                    self.write_frame(&next_body(self.next_id))?;
                    return Ok(Pushed::DroppedNew);
                }
                None => {}
            }
        }
        let mut body = Vec::with_capacity(payload.len() + 10);
        body.push(PUT);
        body.extend_from_slice(&id.to_le_bytes());
        body.push(match kind {
            RecordKind::Telemetry => KIND_TELEMETRY,
            RecordKind::Event => KIND_EVENT,
        });
        body.extend_from_slice(&payload);
        self.write_frame(&body)?;
        self.entries.push_back(Entry { id, kind, payload });
        self.next_id += 1;
        Ok(outcome)
    }

    /// Makes every push so far durable (one fsync for a batch).
    pub fn sync(&mut self) -> Result<(), QueueError> {
        if self.unsynced {
            let path = self.dir.join(LOG);
            self.file.sync_data().map_err(io(&path))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Removes entry `id` (acknowledged by the broker). Unknown ids are ignored. The removal
    /// is made durable with the next sync; if it is lost in a crash, the entry is sent again.
    pub fn remove(&mut self, id: u64) -> Result<bool, QueueError> {
        let i = self.entries.partition_point(|e| e.id < id);
        if self.entries.get(i).is_none_or(|e| e.id != id) {
            return Ok(false);
        }
        self.entries.remove(i);
        let mut body = Vec::with_capacity(9);
        body.push(DEL);
        body.extend_from_slice(&id.to_le_bytes());
        self.write_frame(&body)?;
        self.dead_frames += 1;
        self.maybe_compact()?;
        Ok(true)
    }

    fn drop_oldest_telemetry(&mut self) -> Result<Option<u64>, QueueError> {
        let Some(old) = self
            .entries
            .iter()
            .find(|e| e.kind == RecordKind::Telemetry)
            .map(|e| e.id)
        else {
            return Ok(None);
        };
        self.remove(old)?;
        self.dropped += 1;
        Ok(Some(old))
    }

    fn write_frame(&mut self, body: &[u8]) -> Result<(), QueueError> {
        let mut frame = Vec::with_capacity(body.len() + 8);
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32(body).to_le_bytes());
        frame.extend_from_slice(body);
        let path = self.dir.join(LOG);
        if let Err(e) = self.append(&frame) {
            // Cut a partly written frame so the next one follows a whole frame.
            if let Err(cut) = self.file.set_len(self.len) {
                log::warn!("telemetry queue {}: {cut}", path.display());
            }
            return Err(io(&path)(e));
        }
        self.len += frame.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    #[cfg(not(test))]
    fn append(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.file.write_all(frame)
    }

    /// Writes as much of `frame` as the test's room allows, then fails like a full disk.
    #[cfg(test)]
    fn append(&mut self, frame: &[u8]) -> std::io::Result<()> {
        let allowed = self.room(frame.len());
        self.file.write_all(&frame[..allowed])?;
        if allowed < frame.len() {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        Ok(())
    }

    /// Takes up to `want` bytes of the test's room; returns how many were granted.
    #[cfg(test)]
    fn room(&self, want: usize) -> usize {
        use std::sync::atomic::Ordering;
        let Some(space) = &self.space else {
            return want;
        };
        let left = space.load(Ordering::SeqCst);
        let granted = left.min(want as u64);
        space.store(left - granted, Ordering::SeqCst);
        granted as usize
    }

    /// Limits the bytes this queue may still write to the room in `space` (tests only).
    #[cfg(test)]
    pub(crate) fn with_space(
        mut self,
        space: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        self.space = Some(space);
        self
    }

    fn maybe_compact(&mut self) -> Result<(), QueueError> {
        let emptied = self.entries.is_empty() && self.dead_frames >= COMPACT_EMPTY_DEAD;
        let mostly_dead = self.dead_frames >= COMPACT_MIN_DEAD
            && self.dead_frames >= 2 * self.entries.len() as u64;
        let retry = self.compact_failed_at == 0 || self.dead_frames >= 2 * self.compact_failed_at;
        if (!emptied && !mostly_dead) || !retry {
            return Ok(());
        }
        if let Err(e) = self.compact() {
            self.compact_failed_at = self.dead_frames.max(1);
            return Err(e);
        }
        self.compact_failed_at = 0;
        Ok(())
    }

    /// Rewrites the log with the live entries only (temp file, fsync, rename).
    fn compact(&mut self) -> Result<(), QueueError> {
        let tmp = self.dir.join(TMP);
        let path = self.dir.join(LOG);
        let mut out = Vec::new();
        push_frame(&mut out, &next_body(self.next_id));
        for e in &self.entries {
            let mut body = Vec::with_capacity(e.payload.len() + 10);
            body.push(PUT);
            body.extend_from_slice(&e.id.to_le_bytes());
            body.push(match e.kind {
                RecordKind::Telemetry => KIND_TELEMETRY,
                RecordKind::Event => KIND_EVENT,
            });
            body.extend_from_slice(&e.payload);
            push_frame(&mut out, &body);
        }
        if let Err(e) = self.write_tmp(&tmp, &out) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        self.dead_frames = 0;
        self.unsynced = false;
        self.len = out.len() as u64;
        Ok(())
    }

    fn write_tmp(&self, tmp: &Path, out: &[u8]) -> Result<(), QueueError> {
        #[cfg(test)]
        if self.room(out.len()) < out.len() {
            return Err(io(tmp)(std::io::Error::from_raw_os_error(28)));
        }
        let mut f = File::create(tmp).map_err(io(tmp))?;
        f.write_all(out).map_err(io(tmp))?;
        f.sync_all().map_err(io(tmp))
    }
}

fn next_body(next: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(9);
    b.push(NEXT);
    b.extend_from_slice(&next.to_le_bytes());
    b
}

fn push_frame(out: &mut Vec<u8>, body: &[u8]) {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32(body).to_le_bytes());
    out.extend_from_slice(body);
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(s))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(s))
}

/// Replays a log: the live entries in id order, the next id, the removal frames counted,
/// and the length of the good prefix.
fn replay(bytes: &[u8]) -> (VecDeque<Entry>, u64, u64, usize) {
    let mut live: std::collections::BTreeMap<u64, Entry> = Default::default();
    let mut next_id = 0u64;
    let mut dead = 0u64;
    let mut at = 0usize;
    while let (Some(len), Some(crc)) = (u32_at(bytes, at), u32_at(bytes, at + 4)) {
        let len = len as usize;
        if len == 0 || len > MAX_BODY {
            break;
        }
        let Some(body) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32(body) != crc {
            break;
        }
        match body.first() {
            Some(&PUT) => {
                let (Some(id), Some(&k)) = (u64_at(body, 1), body.get(9)) else {
                    break;
                };
                let kind = if k == KIND_EVENT {
                    RecordKind::Event
                } else {
                    RecordKind::Telemetry
                };
                let payload = body.get(10..).unwrap_or_default().to_vec();
                next_id = next_id.max(id.saturating_add(1));
                live.insert(id, Entry { id, kind, payload });
            }
            Some(&DEL) => {
                let Some(id) = u64_at(body, 1) else { break };
                live.remove(&id);
                dead += 1;
            }
            Some(&NEXT) => {
                let Some(n) = u64_at(body, 1) else { break };
                next_id = next_id.max(n);
            }
            _ => break,
        }
        at += 8 + len;
    }
    (live.into_values().collect(), next_id, dead, at)
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320).
pub fn crc32(data: &[u8]) -> u32 {
    const fn table() -> [u32; 256] {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    }
    static TABLE: [u32; 256] = table();
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use RecordKind::{Event, Telemetry};

    fn ids(q: &DiskQueue) -> Vec<u64> {
        q.iter().map(|e| e.id).collect()
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn keeps_entries_in_order_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut q = DiskQueue::open(dir.path(), 10).unwrap();
            for i in 0..5u8 {
                q.push(Telemetry, vec![i; 3]).unwrap();
            }
            q.remove(1).unwrap();
            q.sync().unwrap();
        }
        let q = DiskQueue::open(dir.path(), 10).unwrap();
        assert_eq!(ids(&q), vec![0, 2, 3, 4]);
        assert_eq!(q.front().unwrap().payload, vec![0; 3]);
        assert_eq!(q.next_id(), 5);
        assert_eq!(q.first_from(1).unwrap().id, 2);
    }

    #[test]
    fn ids_stay_monotonic_after_the_queue_empties_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut q = DiskQueue::open(dir.path(), 4000).unwrap();
            for _ in 0..3000 {
                q.push(Telemetry, vec![1]).unwrap();
            }
            for id in 0..3000 {
                assert!(q.remove(id).unwrap());
            }
            q.sync().unwrap();
            assert!(q.is_empty());
        }
        let len = std::fs::metadata(dir.path().join(LOG)).unwrap().len();
        assert!(len < 3000 * 10, "log not compacted: {len} bytes");
        let q = DiskQueue::open(dir.path(), 4000).unwrap();
        assert!(q.is_empty());
        assert_eq!(q.next_id(), 3000);
    }

    #[test]
    fn at_the_bound_drops_the_oldest_telemetry_and_never_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = DiskQueue::open(dir.path(), 3).unwrap();
        assert_eq!(q.push(Event, vec![0]).unwrap(), Pushed::Stored);
        assert_eq!(q.push(Telemetry, vec![1]).unwrap(), Pushed::Stored);
        assert_eq!(q.push(Telemetry, vec![2]).unwrap(), Pushed::Stored);
        assert_eq!(
            q.push(Telemetry, vec![3]).unwrap(),
            Pushed::DroppedOldest(1)
        );
        assert_eq!(ids(&q), vec![0, 2, 3]);
        assert_eq!(q.push(Event, vec![4]).unwrap(), Pushed::DroppedOldest(2));
        assert_eq!(q.push(Event, vec![5]).unwrap(), Pushed::DroppedOldest(3));
        // Full of events: events still go in, telemetry does not.
        assert_eq!(q.push(Telemetry, vec![6]).unwrap(), Pushed::DroppedNew);
        assert_eq!(q.push(Event, vec![7]).unwrap(), Pushed::Stored);
        assert_eq!(ids(&q), vec![0, 4, 5, 7]);
        assert_eq!(q.dropped(), 4);
        q.sync().unwrap();
        drop(q);
        let q = DiskQueue::open(dir.path(), 3).unwrap();
        assert_eq!(ids(&q), vec![0, 4, 5, 7]);
        assert_eq!(q.next_id(), 8);
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_and_the_good_prefix_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut q = DiskQueue::open(dir.path(), 10).unwrap();
            for i in 0..3u8 {
                q.push(Telemetry, vec![i; 20]).unwrap();
            }
            q.sync().unwrap();
        }
        let path = dir.path().join(LOG);
        let full = std::fs::read(&path).unwrap();
        // Torn: half of the last frame.
        std::fs::write(&path, &full[..full.len() - 10]).unwrap();
        let mut q = DiskQueue::open(dir.path(), 10).unwrap();
        assert_eq!(ids(&q), vec![0, 1]);
        q.push(Telemetry, vec![9]).unwrap();
        q.sync().unwrap();
        drop(q);
        assert_eq!(
            ids(&DiskQueue::open(dir.path(), 10).unwrap()),
            vec![0, 1, 2]
        );
        // Corrupt: a flipped byte in the second frame's body drops it and everything after.
        let mut bytes = std::fs::read(&path).unwrap();
        let second = 8 + 30 + 8 + 5;
        bytes[second] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(ids(&DiskQueue::open(dir.path(), 10).unwrap()), vec![0]);
    }

    #[test]
    fn a_write_on_a_full_disk_fails_cleanly_and_the_queue_resumes_when_room_returns() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let space = Arc::new(AtomicU64::new(100));
        let mut q = DiskQueue::open(dir.path(), 100)
            .unwrap()
            .with_space(space.clone());
        // Each frame is 8 + 10 + 30 = 48 bytes: two fit, the third is cut after 4 bytes.
        assert_eq!(q.push(Telemetry, vec![0; 30]).unwrap(), Pushed::Stored);
        assert_eq!(q.push(Event, vec![1; 30]).unwrap(), Pushed::Stored);
        let mut failures = 0;
        for _ in 0..5 {
            let err = q.push(Telemetry, vec![2; 30]).unwrap_err().to_string();
            assert!(err.contains("No space left"), "{err}");
            failures += 1;
            assert!(q.sync().is_ok());
        }
        assert_eq!(failures, 5);
        assert_eq!(ids(&q), vec![0, 1]);
        assert_eq!(std::fs::metadata(dir.path().join(LOG)).unwrap().len(), 96);
        space.store(u64::MAX, Ordering::SeqCst);
        assert_eq!(q.push(Telemetry, vec![3; 30]).unwrap(), Pushed::Stored);
        q.sync().unwrap();
        drop(q);
        let q = DiskQueue::open(dir.path(), 100).unwrap();
        assert_eq!(ids(&q), vec![0, 1, 2]);
        assert_eq!(q.iter().nth(2).unwrap().payload, vec![3; 30]);
    }

    #[test]
    fn a_compaction_on_a_full_disk_keeps_the_log_and_is_tried_again_later() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let space = Arc::new(AtomicU64::new(u64::MAX));
        let mut q = DiskQueue::open(dir.path(), 1000)
            .unwrap()
            .with_space(space.clone());
        for _ in 0..200 {
            q.push(Telemetry, vec![7; 4]).unwrap();
        }
        // Room for the removal frames, not for the compacted copy.
        let mut compaction_failures = 0;
        for id in 0..200 {
            space.store(17, Ordering::SeqCst);
            if q.remove(id).is_err() {
                compaction_failures += 1;
            }
        }
        assert!(compaction_failures >= 1);
        assert!(q.is_empty());
        assert!(!dir.path().join(TMP).exists());
        q.sync().unwrap();
        space.store(u64::MAX, Ordering::SeqCst);
        for _ in 0..200 {
            let id = q.next_id();
            q.push(Telemetry, vec![8; 4]).unwrap();
            q.remove(id).unwrap();
        }
        q.sync().unwrap();
        let len = std::fs::metadata(dir.path().join(LOG)).unwrap().len();
        assert!(len < 200 * 17, "never compacted again: {len} bytes");
        q.push(Telemetry, vec![9; 4]).unwrap();
        q.sync().unwrap();
        drop(q);
        let q = DiskQueue::open(dir.path(), 1000).unwrap();
        assert_eq!(ids(&q), vec![400]);
    }

    #[test]
    fn survives_a_writer_killed_mid_stream() {
        // A child process appends and syncs as fast as it can and is killed with SIGKILL;
        // every entry it reported as synced must be there, in order, with a valid payload.
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut child = std::process::Command::new(exe)
            .args([
                "--exact",
                "telemetry::queue::tests::queue_writer_child",
                "--nocapture",
            ])
            .env("THERMO_QUEUE_CHILD_DIR", dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut synced = 0u64;
        let mut buf = String::new();
        let mut chunk = [0u8; 4096];
        while synced < 200 {
            let n = out.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
            synced = buf
                .lines()
                .filter_map(|l| l.strip_prefix("synced "))
                .filter_map(|n| n.parse().ok())
                .max()
                .unwrap_or(0);
        }
        child.kill().unwrap();
        let _ = child.wait();
        assert!(synced >= 200, "child reported only {synced}");
        let q = DiskQueue::open(dir.path(), 1_000_000).unwrap();
        let got = ids(&q);
        assert!(got.len() as u64 >= synced, "{} < {synced}", got.len());
        for (i, e) in q.iter().enumerate() {
            assert_eq!(e.id, i as u64);
            assert_eq!(e.payload, e.id.to_le_bytes().repeat(8));
        }
    }

    /// The writer of `survives_a_writer_killed_mid_stream`; does nothing unless started by it.
    #[test]
    fn queue_writer_child() {
        let Some(dir) = std::env::var_os("THERMO_QUEUE_CHILD_DIR") else {
            return;
        };
        let mut q = DiskQueue::open(Path::new(&dir), 1_000_000).unwrap();
        let mut stdout = std::io::stdout();
        for id in 0u64.. {
            q.push(Telemetry, id.to_le_bytes().repeat(8)).unwrap();
            q.sync().unwrap();
            let _ = writeln!(stdout, "synced {}", id + 1);
            let _ = stdout.flush();
        }
    }
}
