//! The durable outgoing queue (RES-1): telemetry and command results are appended to a
//! file in the state directory (and fsynced) before anything is sent, and leave it only
//! when the hub has acknowledged them (MQTT PUBACK). After a crash, power loss or
//! restart, unacknowledged records are sent again, oldest first. Delivery is therefore
//! at least once.
//!
//! File format (`telemetry.queue`), one JSON document per line:
//!
//! ```text
//! {"seq":1,"at":1767225600000,"kind":"telemetry","payload":{"temperature":21.5}}
//! {"seq":2,"at":1767225610000,"kind":"event","payload":{"command_seq":5,"result":"ok","reason":null}}
//! {"ack":1}
//! {"drop":2}
//! ```
//!
//! A record line is appended when a record is queued; `ack` marks one acknowledged by
//! the hub (or refused by it for good), `drop` one evicted because the queue was full.
//! The file is bounded: at most `max_records` records and `max_bytes` bytes of records
//! are kept; when a new record would exceed that, the oldest is dropped and counted.
//! When no record is pending the file is truncated to zero bytes; when marks make it
//! larger than twice `max_bytes` it is rewritten with the pending records only (atomic
//! rename). A torn last line (a crash in the middle of an append) is ignored on load.
//! The drop and refusal counters live in `telemetry.queue.meta`.

use crate::state::{QUEUE_FILE, QUEUE_META_FILE};
use crate::{Error, Result, fsutil};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where a record is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// `devices/{id}/telemetry`
    Telemetry,
    /// `devices/{id}/events`
    Event,
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the queue (increasing).
    pub seq: u64,
    /// When it was recorded, Unix milliseconds.
    pub at: u64,
    pub kind: RecordKind,
    /// The message body (a JSON object).
    pub payload: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Line {
    Record(Record),
    Ack { ack: u64 },
    Drop { drop: u64 },
}

#[derive(Serialize)]
struct AckLine {
    ack: u64,
}

#[derive(Serialize)]
struct DropLine {
    drop: u64,
}

/// Counters kept across restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounters {
    /// Records evicted because the queue was full.
    pub dropped: u64,
    /// Records the hub refused for good (a PUBACK with an error reason code).
    pub refused: u64,
}

/// The on-disk queue. Not shared between processes (the state directory lock ensures
/// one agent per directory).
#[derive(Debug)]
pub struct DiskQueue {
    path: PathBuf,
    meta_path: PathBuf,
    file: File,
    /// Pending records by seq, with the size of their line.
    pending: BTreeMap<u64, (Record, u64)>,
    pending_bytes: u64,
    file_bytes: u64,
    next_seq: u64,
    counters: QueueCounters,
    max_records: usize,
    max_bytes: u64,
}

impl DiskQueue {
    /// Open (or create) the queue in `dir`, loading the records still pending.
    pub fn open(dir: &Path, max_records: usize, max_bytes: u64) -> Result<Self> {
        let path = dir.join(QUEUE_FILE);
        let meta_path = dir.join(QUEUE_META_FILE);
        let counters = match std::fs::read(&meta_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => QueueCounters::default(),
        };
        let mut queue = Self {
            file: open_append(&path)?,
            path,
            meta_path,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            file_bytes: 0,
            next_seq: 1,
            counters,
            max_records: max_records.max(1),
            max_bytes: max_bytes.max(1024),
        };
        queue.load()?;
        Ok(queue)
    }

    fn load(&mut self) -> Result<()> {
        let reader = BufReader::new(
            File::open(&self.path)
                .map_err(|e| Error::io(format!("open {}", self.path.display()), e))?,
        );
        let mut max_seen = 0u64;
        let mut skipped = 0usize;
        let mut evicted = 0u64;
        for segment in reader.split(b'\n') {
            let segment =
                segment.map_err(|e| Error::io(format!("read {}", self.path.display()), e))?;
            if segment.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Line>(&segment) {
                Ok(Line::Record(record)) => {
                    max_seen = max_seen.max(record.seq);
                    let size = segment.len() as u64 + 1;
                    if size > self.max_bytes {
                        skipped += 1;
                        continue;
                    }
                    if let Some((_, old)) = self.pending.insert(record.seq, (record, size)) {
                        self.pending_bytes -= old;
                    }
                    self.pending_bytes += size;
                    // Limits may have been lowered since the file was written.
                    while self.pending.len() > self.max_records
                        || self.pending_bytes > self.max_bytes
                    {
                        if let Some((_, (_, size))) = self.pending.pop_first() {
                            self.pending_bytes -= size;
                            evicted += 1;
                        }
                    }
                }
                Ok(Line::Ack { ack: seq } | Line::Drop { drop: seq }) => {
                    max_seen = max_seen.max(seq);
                    if let Some((_, size)) = self.pending.remove(&seq) {
                        self.pending_bytes -= size;
                    }
                }
                // A torn append (crash mid-write) or damage: skip the line.
                Err(_) => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(
                lines = skipped,
                "skipped unreadable lines in the telemetry queue"
            );
        }
        if evicted > 0 {
            self.counters.dropped += evicted;
            self.save_counters()?;
        }
        self.next_seq = max_seen.saturating_add(1);
        // Start from a clean file: pending records only.
        self.compact()
    }

    /// Rewrite the file with only the pending records (empty when none).
    fn compact(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            self.file
                .set_len(0)
                .and_then(|()| self.file.sync_all())
                .map_err(|e| Error::io(format!("truncate {}", self.path.display()), e))?;
            self.file_bytes = 0;
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(usize::try_from(self.pending_bytes).unwrap_or(0));
        for (record, _) in self.pending.values() {
            bytes.extend_from_slice(&to_line(record)?);
        }
        fsutil::write_private(&self.path, &bytes)?;
        self.file = open_append(&self.path)?;
        self.file_bytes = bytes.len() as u64;
        Ok(())
    }

    fn append(&mut self, line: &[u8]) -> Result<()> {
        self.file
            .write_all(line)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(format!("append to {}", self.path.display()), e))?;
        self.file_bytes += line.len() as u64;
        Ok(())
    }

    fn save_counters(&self) -> Result<()> {
        let json =
            serde_json::to_vec(&self.counters).map_err(|e| Error::json("queue counters", e))?;
        fsutil::write_private(&self.meta_path, &json)
    }

    /// Append a record (durably) and return its seq. When the queue is full, the oldest
    /// records are dropped first and counted.
    pub fn push(&mut self, kind: RecordKind, payload: serde_json::Value) -> Result<u64> {
        let record = Record {
            seq: self.next_seq,
            at: crate::unix_now_ms(),
            kind,
            payload,
        };
        let line = to_line(&record)?;
        let size = line.len() as u64;
        if size > self.max_bytes {
            return Err(Error::invalid(
                "queued record",
                format!(
                    "{size} bytes is more than the queue holds ({})",
                    self.max_bytes
                ),
            ));
        }
        let mut dropped = 0u64;
        while self.pending.len() >= self.max_records || self.pending_bytes + size > self.max_bytes {
            let Some((seq, (_, old))) = self.pending.pop_first() else {
                break;
            };
            self.pending_bytes -= old;
            self.append(&mark_line(&DropLine { drop: seq })?)?;
            dropped += 1;
        }
        if dropped > 0 {
            self.counters.dropped += dropped;
            tracing::warn!(
                dropped,
                total_dropped = self.counters.dropped,
                "telemetry queue full: dropped the oldest records"
            );
            self.save_counters()?;
        }
        self.append(&line)?;
        self.next_seq += 1;
        self.pending_bytes += size;
        let seq = record.seq;
        self.pending.insert(seq, (record, size));
        self.maybe_compact()?;
        Ok(seq)
    }

    fn maybe_compact(&mut self) -> Result<()> {
        if self.pending.is_empty() && self.file_bytes > 0 {
            return self.compact();
        }
        if self.file_bytes > self.max_bytes.saturating_mul(2) {
            return self.compact();
        }
        Ok(())
    }

    /// The hub acknowledged `seq`: remove it. Returns false if it was not pending.
    pub fn ack(&mut self, seq: u64) -> Result<bool> {
        let Some((_, size)) = self.pending.remove(&seq) else {
            return Ok(false);
        };
        self.pending_bytes -= size;
        if self.pending.is_empty() {
            self.compact()?;
        } else {
            self.append(&mark_line(&AckLine { ack: seq })?)?;
            self.maybe_compact()?;
        }
        Ok(true)
    }

    /// The hub refused `seq` for good: remove it and count it.
    pub fn refuse(&mut self, seq: u64) -> Result<bool> {
        let removed = self.ack(seq)?;
        if removed {
            self.counters.refused += 1;
            self.save_counters()?;
        }
        Ok(removed)
    }

    /// Pending records, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Record> {
        self.pending.values().map(|(r, _)| r)
    }

    pub fn get(&self, seq: u64) -> Option<&Record> {
        self.pending.get(&seq).map(|(r, _)| r)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn counters(&self) -> QueueCounters {
        self.counters
    }

    /// Size of the queue file as written so far.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))
}

fn to_line(record: &Record) -> Result<Vec<u8>> {
    let mut line = serde_json::to_vec(record).map_err(|e| Error::json("queue record", e))?;
    line.push(b'\n');
    Ok(line)
}

fn mark_line<T: Serialize>(mark: &T) -> Result<Vec<u8>> {
    let mut line = serde_json::to_vec(mark).map_err(|e| Error::json("queue mark", e))?;
    line.push(b'\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file(dir: &Path) -> String {
        std::fs::read_to_string(dir.join(QUEUE_FILE)).expect("queue file")
    }

    #[test]
    fn file_format_is_one_json_record_per_line_with_ack_marks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut q = DiskQueue::open(dir.path(), 100, 1 << 20).expect("open");
        let a = q
            .push(RecordKind::Telemetry, json!({"temperature": 21.5}))
            .expect("push");
        let b = q
            .push(RecordKind::Event, json!({"command_seq": 5, "result": "ok"}))
            .expect("push");
        assert_eq!((a, b), (1, 2));
        let text = file(dir.path());
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["seq"], 1);
        assert_eq!(lines[0]["kind"], "telemetry");
        assert_eq!(lines[0]["payload"], json!({"temperature": 21.5}));
        assert!(lines[0]["at"].as_u64().expect("at") > 1_600_000_000_000);
        assert_eq!(lines[1]["kind"], "event");
        assert!(text.ends_with('\n'));

        assert!(q.ack(1).expect("ack"));
        assert!(!q.ack(1).expect("ack twice"));
        assert_eq!(file(dir.path()).lines().last(), Some(r#"{"ack":1}"#));
        // The last pending record acknowledged: the file is empty.
        assert!(q.ack(2).expect("ack"));
        assert_eq!(file(dir.path()), "");
        assert!(q.is_empty());
    }

    #[test]
    fn unacknowledged_records_survive_reopen_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut q = DiskQueue::open(dir.path(), 100, 1 << 20).expect("open");
            for i in 0..5 {
                q.push(RecordKind::Telemetry, json!({ "n": i }))
                    .expect("push");
            }
            q.ack(2).expect("ack");
        }
        let mut q = DiskQueue::open(dir.path(), 100, 1 << 20).expect("reopen");
        let seqs: Vec<u64> = q.pending().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 3, 4, 5]);
        assert_eq!(
            q.pending().next().map(|r| r.payload.clone()),
            Some(json!({"n": 0}))
        );
        // Compacted on open: no marks left.
        assert!(!file(dir.path()).contains("ack"));
        // New records continue after the highest seq seen.
        assert_eq!(q.push(RecordKind::Telemetry, json!({})).expect("push"), 6);
    }

    #[test]
    fn torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut q = DiskQueue::open(dir.path(), 100, 1 << 20).expect("open");
            q.push(RecordKind::Telemetry, json!({"n": 1}))
                .expect("push");
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(QUEUE_FILE))
            .expect("open");
        f.write_all(br#"{"seq":2,"at":1,"kind":"telem"#)
            .expect("write");
        drop(f);
        let q = DiskQueue::open(dir.path(), 100, 1 << 20).expect("reopen");
        assert_eq!(q.len(), 1);
        assert_eq!(file(dir.path()).lines().count(), 1);
    }

    #[test]
    fn full_queue_drops_oldest_and_counts_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut q = DiskQueue::open(dir.path(), 3, 1 << 20).expect("open");
            for i in 0..5 {
                q.push(RecordKind::Telemetry, json!({ "n": i }))
                    .expect("push");
            }
            assert_eq!(q.len(), 3);
            assert_eq!(q.counters().dropped, 2);
            let ns: Vec<_> = q.pending().map(|r| r.payload["n"].clone()).collect();
            assert_eq!(ns, vec![json!(2), json!(3), json!(4)]);
        }
        let q = DiskQueue::open(dir.path(), 3, 1 << 20).expect("reopen");
        assert_eq!(q.len(), 3);
        assert_eq!(q.counters().dropped, 2);
    }

    #[test]
    fn file_size_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let max_bytes = 4096;
        let mut q = DiskQueue::open(dir.path(), 1000, max_bytes).expect("open");
        let filler = "x".repeat(100);
        for i in 0..500u64 {
            let seq = q
                .push(RecordKind::Telemetry, json!({ "n": i, "f": filler }))
                .expect("push");
            if i % 3 == 0 {
                q.ack(seq).expect("ack");
            }
            let on_disk = std::fs::metadata(dir.path().join(QUEUE_FILE))
                .expect("meta")
                .len();
            assert!(
                on_disk <= 2 * max_bytes + 200,
                "queue file grew to {on_disk}"
            );
        }
        assert!(q.counters().dropped > 0);
        let oversized = "y".repeat(5000);
        assert!(
            q.push(RecordKind::Telemetry, json!({ "f": oversized }))
                .is_err()
        );
    }
}
