//! A write-ahead log that makes the redb engine's synced batches durable with one sequential
//! append and one `fdatasync`.
//!
//! # Why
//!
//! A durable redb commit writes every B-tree page the batch dirtied (the leaves of each key, their
//! branches, the allocator state, the header) with one `pwrite` each, at scattered offsets, and
//! then syncs the file. A one-document update touches three or four keys and so a dozen or more
//! pages: the sync has to wait for all of them. A log turns that into one small sequential write.
//!
//! # How
//!
//! [`super::RedbEngine`] appends a synced batch here and syncs the log; then it applies the batch
//! to redb as a *non-durable* commit (no sync). Every so often (a number of flushes or a log size)
//! it *checkpoints*: one durable redb commit, which makes all earlier commits durable, then the log
//! is emptied. After a crash redb comes back at its last durable commit, or later if some
//! non-durable commits happened to reach the disk; replaying every record of the log in order on
//! top of that is correct either way, because a record holds only absolute puts and deletes.
//! Batches written without `sync` (garbage collection) never enter the log: losing them only
//! leaves garbage that collection removes again, and a replayed record can only bring back an old
//! version together with the newer versions that shadow it, since those newer versions were
//! logged after it.
//!
//! # Segments
//!
//! A checkpoint's durable redb commit writes out every page dirtied since the last one and syncs
//! the data file, which takes milliseconds; held under the log's lock it would stall every
//! writer. So a checkpoint only *rotates* the log under the lock ([`Wal::rotate`]): the records so
//! far are synced and the file is renamed to the *old segment* (`<name>.old`), and a new, empty
//! log takes its place. Writers go on appending there while the durable commit runs without the
//! lock; once it has finished, the old segment is deleted ([`Wal::remove_old`]). After a crash
//! both may exist: the old segment is replayed first, then the log, which keeps their order.
//!
//! # Preallocation
//!
//! The file is grown ahead of the records, [`PREALLOCATE_BYTES`] at a time, by writing zeros.
//! An append that grows a file makes its `fdatasync` commit the file's new size through the file
//! system's journal as well, and that journal is shared with the data file's checkpoints: a
//! commit's sync could wait behind a checkpoint's. An append into space already written needs
//! no metadata, so its sync flushes only the record. (An allocation without zeros, `fallocate`,
//! would not do: the first write to each block changes its metadata.) Reading stops at a record
//! whose header is all zeros, the start of that space; no record is empty, since a batch
//! without operations is never logged.
//!
//! # Format
//!
//! A record is `[payload length: u32 LE][CRC32C of the payload: u32 LE][payload]`; the payload is
//! the batch's operations, each `[tag: u8 (1 put, 2 delete)][key length: u32 LE][key]` followed for
//! a put by `[value length: u32 LE][value]`. Reading stops at the first record that is incomplete
//! or fails its checksum: that is a write cut short by the crash, and it was never acknowledged
//! (the append returns only after the sync). The torn tail is cut off when the log is opened.
//!
//! # Buffering
//!
//! An unsynced append only encodes its record into a buffer in memory; the buffer reaches the
//! file in one `write` when a sync needs it ([`Wal::syncer`]), when a synced record follows, or
//! once it holds [`BUFFER_BYTES`]. An `insert` of a thousand documents is a thousand records
//! and used to be a thousand `write` calls, which cost more than the rest of its work. Nothing
//! is lost that was promised: an unsynced record is acknowledged to nobody until a sync, which
//! writes the buffer first. A killed process loses the buffer, as a crash loses unsynced writes.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{WriteBatch, WriteOp};
use crate::error::{Code, Error, Result};

/// The buffered bytes that make an unsynced append write them out.
const BUFFER_BYTES: usize = 1 << 20;
const PUT: u8 = 1;
const DELETE: u8 = 2;
/// Bytes before each record's payload: its length and checksum.
const HEADER: usize = 8;
/// How much the file grows at a time (see "Preallocation").
const PREALLOCATE_BYTES: u64 = 1 << 20;

/// An append-only log of write batches in one file.
#[derive(Debug)]
pub struct Wal {
    file: File,
    /// Where the old segment lives while a checkpoint makes it redundant (see "Segments").
    old_path: PathBuf,
    /// Whether the old segment exists.
    has_old: bool,
    /// A second handle on the same file for [`Wal::syncer`]: a sync made through it covers
    /// every record appended before it began, and needs no access to the log itself.
    sync_file: Arc<File>,
    path: PathBuf,
    /// The length of the valid log, with the buffered records.
    len: u64,
    /// The length of the log in the file: where the buffer goes.
    written: u64,
    /// The file's length: past `written` it holds zeros (see "Preallocation").
    file_len: u64,
    /// Records appended but not written to the file yet (see "Buffering").
    buffer: Vec<u8>,
}

/// The error of a failed log operation.
pub(super) fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(Code::InternalError, format!("write-ahead log {}: {what}: {e}", path.display()))
}

impl Wal {
    /// Opens (creating if needed) the log at `path` and returns it with the batches it holds, in
    /// the order they were appended: an old segment's first (see "Segments"). A torn record at
    /// the end is dropped from the file. For tests: the engine replays with [`Wal::open_with`].
    #[cfg(test)]
    pub fn open(path: impl AsRef<Path>) -> Result<(Wal, Vec<WriteBatch>)> {
        let mut batches = Vec::new();
        let wal = Wal::open_with(path, |batch| {
            batches.push(batch);
            Ok(())
        })?;
        Ok((wal, batches))
    }

    /// [`Wal::open`], handing each batch to `each` as it is read instead of collecting them:
    /// the replay at open holds one record in memory at a time, not the whole log (which can
    /// hold a thousand flushes' writes) twice over, as bytes and as batches. An error from
    /// `each` stops the replay and is returned; the log is left as it was.
    pub fn open_with(
        path: impl AsRef<Path>,
        mut each: impl FnMut(WriteBatch) -> Result<()>,
    ) -> Result<Wal> {
        let path = path.as_ref().to_path_buf();
        let old_path = old_segment_path(&path);
        let has_old = old_path.exists();
        if has_old {
            // Synced whole before it was renamed; a torn tail would be a disk's fault, and what
            // precedes it is still good.
            let old = File::open(&old_path).map_err(|e| io_error("open", &old_path, e))?;
            read_records(old, &old_path, &mut each)?;
        }
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error("open", &path, e))?;
        if !existed {
            // The new file's directory entry must survive a crash too.
            sync_parent(&path)?;
        }
        let reader = file.try_clone().map_err(|e| io_error("open", &path, e))?;
        let (valid, total, zeros) = read_records(reader, &path, &mut each)?;
        if valid < total {
            if !zeros {
                tracing::warn!(
                    path = %path.display(),
                    dropped = total - valid,
                    "write-ahead log ends in a torn record (a write cut short by a crash); dropping it"
                );
            }
            // Preallocated space too: what follows the valid records is grown again on demand.
            file.set_len(valid).map_err(|e| io_error("truncate", &path, e))?;
            file.sync_all().map_err(|e| io_error("sync", &path, e))?;
        }
        // Appends go after the valid records: `write_buffer` seeks to `written` before each.
        let sync_file = Arc::new(file.try_clone().map_err(|e| io_error("open", &path, e))?);
        Ok(Wal {
            file,
            old_path,
            has_old,
            sync_file,
            path,
            len: valid,
            written: valid,
            file_len: valid,
            buffer: Vec::new(),
        })
    }

    /// Starts a new segment (see "Segments"): the records so far are written and synced (a
    /// later [`Wal::syncer`] syncs only the new file, and commits appended without a sync may
    /// still be owed one), the file becomes the old segment, and an empty log replaces it.
    /// Refused while an old segment exists: the checkpoint that would retire it has not
    /// finished (or a failed rotation could not rename the log back, and the live log is there:
    /// it is then never rotated again, and replayed at the next start). On failure the log is as
    /// it was: appends go on to the same file.
    pub fn rotate(&mut self) -> Result<()> {
        if self.has_old || self.old_path.exists() {
            return Err(Error::new(
                Code::InternalError,
                "write-ahead log: the previous segment has not been retired yet",
            ));
        }
        self.write_buffer()?;
        self.file.sync_data().map_err(|e| io_error("sync", &self.path, e))?;
        std::fs::rename(&self.path, &self.old_path)
            .map_err(|e| io_error("rename to the old segment", &self.path, e))?;
        let fresh = (|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.path)
                .map_err(|e| io_error("create", &self.path, e))?;
            let sync_file = file.try_clone().map_err(|e| io_error("open", &self.path, e))?;
            // Both names must be settled on disk before a record in the new file is
            // acknowledged: `fdatasync` of a file does not persist its directory entry.
            sync_parent(&self.path)?;
            Ok((file, sync_file))
        })();
        match fresh {
            Ok((file, sync_file)) => {
                self.file = file;
                self.sync_file = Arc::new(sync_file);
                self.has_old = true;
                self.len = 0;
                self.written = 0;
                self.file_len = 0;
                Ok(())
            }
            Err(e) => {
                // Back under its name: the open handle keeps appending to this file, which must
                // never be retired as an old segment. (Should even this fail, the file stays
                // there, which stops every later rotation; `has_old` stays false, so nothing
                // retires it, and the next start replays it first.)
                let _ = std::fs::rename(&self.old_path, &self.path);
                Err(e)
            }
        }
    }

    /// Whether an old segment waits to be retired.
    pub fn has_old(&self) -> bool {
        self.has_old
    }

    /// Where the old segment is, to retire it without the log's lock ([`retire_old_segment`]).
    pub fn old_path(&self) -> &Path {
        &self.old_path
    }

    /// Deletes the old segment, once a durable checkpoint holds everything it logged.
    pub fn remove_old(&mut self) -> Result<()> {
        if self.has_old {
            retire_old_segment(&self.old_path)?;
            self.has_old = false;
        }
        Ok(())
    }

    /// Notes that the old segment was deleted by [`retire_old_segment`].
    pub fn old_removed(&mut self) {
        self.has_old = false;
    }

    /// Appends a batch and makes it durable before returning.
    pub fn append(&mut self, batch: &WriteBatch) -> Result<()> {
        self.append_record(batch, true)
    }

    /// Appends a batch without waiting for the disk: it becomes durable at the next
    /// [`Wal::sync`] or synced append (appends are sequential, so a sync covers every earlier
    /// record).
    pub fn append_unsynced(&mut self, batch: &WriteBatch) -> Result<()> {
        self.append_record(batch, false)
    }

    fn append_record(&mut self, batch: &WriteBatch, sync: bool) -> Result<()> {
        let before = self.buffer.len();
        // An empty record would read as preallocated space (see "Preallocation"); a sync that
        // logs nothing still makes the earlier records durable.
        if !batch.ops.is_empty() {
            encode_record_into(batch, &mut self.buffer);
        }
        let record_len = self.buffer.len() - before;
        if sync {
            let written = self
                .write_buffer()
                .and_then(|()| self.file.sync_data().map_err(|e| io_error("sync", &self.path, e)));
            if let Err(e) = written {
                // The record was reported as failed: it must not reach the log later.
                self.buffer.truncate(before);
                return Err(e);
            }
        } else if self.buffer.len() >= BUFFER_BYTES {
            // Written out now only to bound the memory: a failure here is the next sync's.
            if let Err(e) = self.write_buffer() {
                tracing::warn!("writing the write-ahead log's buffer failed: {e}");
            }
        }
        self.len += record_len as u64;
        Ok(())
    }

    /// Writes the buffered records to the end of the file (not synced). On failure whatever part
    /// reached the file is cut off again and the buffer is kept.
    pub fn write_buffer(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let at = self.written;
        let end = at + self.buffer.len() as u64;
        let result = (|| {
            use std::io::{Seek, SeekFrom};
            self.file.seek(SeekFrom::Start(at))?;
            self.file.write_all(&self.buffer)?;
            if end > self.file_len {
                // Zeros after the records, up to the next whole step (see "Preallocation").
                let grown = end.div_ceil(PREALLOCATE_BYTES) * PREALLOCATE_BYTES;
                let zeros = [0u8; 1 << 16];
                let mut left = grown - end;
                while left > 0 {
                    let n = left.min(zeros.len() as u64) as usize;
                    self.file.write_all(&zeros[..n])?;
                    left -= n as u64;
                }
                self.file_len = grown;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.written = end;
                self.buffer.clear();
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(at);
                self.file_len = at;
                Err(io_error("append", &self.path, e))
            }
        }
    }

    /// What makes the records appended so far durable without holding the log: writes the
    /// buffer out, and returns the file handle whose sync (`fdatasync` of the same file) may run
    /// while later records are appended.
    pub fn syncer(&mut self) -> Result<(Arc<File>, PathBuf)> {
        self.write_buffer()?;
        Ok((Arc::clone(&self.sync_file), self.path.clone()))
    }

    /// Empties the log and deletes any old segment (after a checkpoint made everything in them
    /// durable elsewhere, the buffered records included).
    pub fn reset(&mut self) -> Result<()> {
        self.remove_old()?;
        self.buffer.clear();
        self.file.set_len(0).map_err(|e| io_error("truncate", &self.path, e))?;
        self.file.sync_data().map_err(|e| io_error("sync", &self.path, e))?;
        self.len = 0;
        self.written = 0;
        self.file_len = 0;
        Ok(())
    }

    /// The log's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log holds no records.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A log closed cleanly keeps its buffered records (a clean close loses nothing).
impl Drop for Wal {
    fn drop(&mut self) {
        if let Err(e) = self.write_buffer() {
            tracing::warn!("closing the write-ahead log: buffered records not written: {e}");
        }
    }
}

/// The old segment's path beside the log's (see "Segments").
fn old_segment_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".old");
    path.with_file_name(name)
}

/// Deletes an old segment (a missing one is already retired).
pub fn retire_old_segment(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("remove the old segment", path, e)),
    }
}

/// Syncs the directory holding `path`, so that a file created or renamed there survives a crash.
fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("sync directory", path, e)),
        None => Ok(()),
    }
}

/// A record of `batch`, as it is stored (see "Format").
#[cfg(test)]
fn encode_record(batch: &WriteBatch) -> Vec<u8> {
    let mut record = Vec::new();
    encode_record_into(batch, &mut record);
    record
}

/// Appends a record of `batch` to `out`: encoded in place, its header patched in afterwards,
/// so that a large batch is neither regrown nor copied on its way into the buffer.
fn encode_record_into(batch: &WriteBatch, out: &mut Vec<u8>) {
    let payload_len: usize = batch
        .ops
        .iter()
        .map(|op| match op {
            WriteOp::Put(k, v) => 1 + 4 + k.len() + 4 + v.len(),
            WriteOp::Delete(k) => 1 + 4 + k.len(),
        })
        .sum();
    out.reserve(HEADER + payload_len);
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    for op in &batch.ops {
        match op {
            WriteOp::Put(k, v) => {
                out.push(PUT);
                put_bytes(out, k);
                put_bytes(out, v);
            }
            WriteOp::Delete(k) => {
                out.push(DELETE);
                put_bytes(out, k);
            }
        }
    }
    let crc = crc32c::crc32c(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads the records of `file` from its start, handing each batch to `each`, and stops at the
/// first incomplete or corrupt one, or at preallocated space. Returns the length of the valid
/// prefix, the file's length, and whether the records ended at preallocated space (a header of
/// zeros) rather than at a torn record. A record's length is checked against what the file
/// holds before its payload is read, so a corrupt length cannot make the replay allocate more
/// than the file.
fn read_records(
    file: File,
    path: &Path,
    each: &mut impl FnMut(WriteBatch) -> Result<()>,
) -> Result<(u64, u64, bool)> {
    let total = file.metadata().map_err(|e| io_error("stat", path, e))?.len();
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut valid = 0u64;
    let mut record = Vec::new();
    loop {
        let mut header = [0u8; HEADER];
        if total - valid < HEADER as u64 {
            break;
        }
        reader.read_exact(&mut header).map_err(|e| io_error("read", path, e))?;
        if header == [0; HEADER] {
            return Ok((valid, total, true));
        }
        let len = u32_at(&header, 0).unwrap_or(0) as u64;
        if len > total - valid - HEADER as u64 {
            break;
        }
        record.clear();
        record.extend_from_slice(&header);
        record.resize(HEADER + len as usize, 0);
        reader.read_exact(&mut record[HEADER..]).map_err(|e| io_error("read", path, e))?;
        let Some((batch, _)) = decode_record(&record, 0) else {
            break;
        };
        each(batch)?;
        valid += HEADER as u64 + len;
    }
    Ok((valid, total, false))
}

fn decode_record(bytes: &[u8], at: usize) -> Option<(WriteBatch, usize)> {
    let len = u32_at(bytes, at)? as usize;
    let crc = u32_at(bytes, at + 4)?;
    let start = at + HEADER;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let mut batch = WriteBatch::new();
    let mut p = 0;
    while p < payload.len() {
        let tag = payload[p];
        p += 1;
        let key = bytes_at(payload, &mut p)?;
        match tag {
            PUT => {
                let value = bytes_at(payload, &mut p)?;
                batch.put(key, value);
            }
            DELETE => batch.delete(key),
            _ => return None,
        }
    }
    Some((batch, start + len))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn bytes_at(payload: &[u8], p: &mut usize) -> Option<Vec<u8>> {
    let len = u32_at(payload, *p)? as usize;
    let start = *p + 4;
    let out = payload.get(start..start.checked_add(len)?)?.to_vec();
    *p = start + len;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: u8) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.put(vec![n], vec![n; n as usize]);
        b.delete(vec![n, n]);
        b
    }

    /// An empty log in a fresh directory (kept alive by the returned guard), and its path.
    fn new_log() -> (tempfile::TempDir, PathBuf, Wal) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (wal, old) = Wal::open(&path).unwrap();
        assert!(old.is_empty());
        (dir, path, wal)
    }

    /// A closed log holding `batch(1)` to `batch(3)`, and its path.
    fn log_of_three() -> (tempfile::TempDir, PathBuf) {
        let (dir, path, mut wal) = new_log();
        for n in 1..=3 {
            wal.append(&batch(n)).unwrap();
        }
        (dir, path)
    }

    #[test]
    fn records_round_trip_in_order() {
        let (_dir, path) = log_of_three();
        let (wal, batches) = Wal::open(&path).unwrap();
        assert_eq!(batches, vec![batch(1), batch(2), batch(3)]);
        assert_eq!(wal.len(), std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn a_torn_tail_is_dropped_and_later_appends_follow_the_valid_prefix() {
        let (_dir, path, mut wal) = new_log();
        wal.append(&batch(1)).unwrap();
        wal.append(&batch(2)).unwrap();
        let full = wal.len();
        drop(wal);
        // Every cut inside the second record leaves exactly the first.
        let first = encode_record(&batch(1)).len() as u64;
        for cut in first + 1..full {
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(cut).unwrap();
            drop(f);
            let (mut wal, batches) = Wal::open(&path).unwrap();
            assert_eq!(batches, vec![batch(1)], "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), first);
            wal.append(&batch(2)).unwrap();
            drop(wal);
            let (_, batches) = Wal::open(&path).unwrap();
            assert_eq!(batches, vec![batch(1), batch(2)]);
        }
    }

    #[test]
    fn the_file_grows_ahead_of_the_records_with_zeros_that_end_the_replay() {
        let (_dir, path, mut wal) = new_log();
        wal.append(&batch(1)).unwrap();
        let first = wal.len();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, PREALLOCATE_BYTES, "grown a whole step at once");
        assert!(bytes[first as usize..].iter().all(|&b| b == 0));
        // Records past the first step grow it by another.
        let big = {
            let mut b = WriteBatch::new();
            b.put(b"big".to_vec(), vec![7; PREALLOCATE_BYTES as usize]);
            b
        };
        wal.append(&big).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * PREALLOCATE_BYTES);
        // An empty batch is never a record: it would read as preallocated space.
        let len = wal.len();
        wal.append(&WriteBatch::new()).unwrap();
        assert_eq!(wal.len(), len);
        wal.append(&batch(2)).unwrap();
        drop(wal);
        // The replay stops at the zeros, the file is cut back to the records, and appends go on
        // after them.
        let (mut wal, batches) = Wal::open(&path).unwrap();
        assert_eq!(batches, vec![batch(1), big.clone(), batch(2)]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), wal.len());
        wal.append(&batch(3)).unwrap();
        drop(wal);
        assert_eq!(Wal::open(&path).unwrap().1, vec![batch(1), big, batch(2), batch(3)]);
    }

    #[test]
    fn a_corrupt_record_ends_the_log() {
        let (_dir, path) = log_of_three();
        let mut bytes = std::fs::read(&path).unwrap();
        let second = encode_record(&batch(1)).len() + HEADER;
        bytes[second] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, batches) = Wal::open(&path).unwrap();
        assert_eq!(batches, vec![batch(1)]);
    }

    #[test]
    fn unsynced_records_reach_the_file_in_order_at_the_next_sync() {
        let (_dir, path, mut wal) = new_log();
        wal.append_unsynced(&batch(1)).unwrap();
        wal.append_unsynced(&batch(2)).unwrap();
        // Buffered: the file does not have them yet, the log's length does.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        let (file, _) = wal.syncer().unwrap();
        file.sync_data().unwrap();
        // Written, in preallocated space (see "Preallocation").
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREALLOCATE_BYTES);
        assert_eq!(wal.written, wal.len());
        // A synced append writes what is buffered before it.
        wal.append_unsynced(&batch(3)).unwrap();
        wal.append(&batch(4)).unwrap();
        // A clean close writes the rest.
        wal.append_unsynced(&batch(5)).unwrap();
        drop(wal);
        let (_, batches) = Wal::open(&path).unwrap();
        assert_eq!(batches, (1..=5).map(batch).collect::<Vec<_>>());
    }

    #[test]
    fn reset_drops_the_buffer_with_the_log() {
        let (_dir, path, mut wal) = new_log();
        wal.append(&batch(1)).unwrap();
        wal.append_unsynced(&batch(2)).unwrap();
        wal.reset().unwrap();
        wal.append_unsynced(&batch(3)).unwrap();
        drop(wal);
        let (_, batches) = Wal::open(&path).unwrap();
        assert_eq!(batches, vec![batch(3)]);
    }

    #[test]
    fn a_replay_stopped_by_its_consumer_leaves_the_log_whole() {
        let (_dir, path) = log_of_three();
        let len = std::fs::metadata(&path).unwrap().len();
        let mut seen = Vec::new();
        let stopped = Wal::open_with(&path, |b| {
            seen.push(b);
            if seen.len() == 2 { Err(Error::new(Code::InternalError, "stop")) } else { Ok(()) }
        });
        assert!(stopped.is_err());
        assert_eq!(seen, vec![batch(1), batch(2)], "one record at a time, in order");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        let (_, batches) = Wal::open(&path).unwrap();
        assert_eq!(batches, vec![batch(1), batch(2), batch(3)]);
    }

    #[test]
    fn a_length_past_the_end_of_the_file_is_a_torn_tail() {
        let (_dir, path, mut wal) = new_log();
        wal.append(&batch(1)).unwrap();
        let first = wal.len();
        drop(wal);
        // A header claiming 4 GiB of payload: dropped without reading or allocating it.
        let mut f = OpenOptions::new().write(true).open(&path).unwrap();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(first)).unwrap();
        f.write_all(&u32::MAX.to_le_bytes()).unwrap();
        f.write_all(&[0; 4]).unwrap();
        f.write_all(&[7; 100]).unwrap();
        drop(f);
        let (mut wal, batches) = Wal::open(&path).unwrap();
        assert_eq!(batches, vec![batch(1)]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), first);
        wal.append(&batch(2)).unwrap();
        drop(wal);
        assert_eq!(Wal::open(&path).unwrap().1, vec![batch(1), batch(2)]);
    }

    #[test]
    fn a_rotated_log_replays_its_old_segment_first_until_it_is_retired() {
        let (_dir, path, mut wal) = new_log();
        wal.append(&batch(1)).unwrap();
        wal.append_unsynced(&batch(2)).unwrap();
        wal.rotate().unwrap();
        assert!(wal.has_old() && wal.old_path().exists());
        assert_eq!(wal.len(), 0, "the new segment starts empty");
        // The unsynced record went out with the rotation, synced.
        let mut old = Vec::new();
        let file = File::open(wal.old_path()).unwrap();
        read_records(file, wal.old_path(), &mut |b| {
            old.push(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(old, vec![batch(1), batch(2)]);
        assert!(wal.rotate().is_err(), "one old segment at a time");
        wal.append(&batch(3)).unwrap();
        drop(wal);
        // A crash before the checkpoint finished: both segments, the old one first.
        let (mut wal, batches) = Wal::open(&path).unwrap();
        assert_eq!(batches, vec![batch(1), batch(2), batch(3)]);
        assert!(wal.has_old());
        wal.remove_old().unwrap();
        assert!(!wal.old_path().exists());
        wal.rotate().unwrap();
        wal.append(&batch(4)).unwrap();
        drop(wal);
        let (mut wal, batches) = Wal::open(&path).unwrap();
        assert_eq!(batches, vec![batch(3), batch(4)]);
        // A reset retires the old segment too.
        wal.reset().unwrap();
        assert!(!wal.has_old() && !wal.old_path().exists());
        drop(wal);
        assert_eq!(Wal::open(&path).unwrap().1, vec![]);
    }

    #[test]
    fn reset_empties_the_log() {
        let (_dir, path, mut wal) = new_log();
        wal.append(&batch(1)).unwrap();
        wal.reset().unwrap();
        assert!(wal.is_empty());
        wal.append(&batch(2)).unwrap();
        drop(wal);
        let (_, batches) = Wal::open(&path).unwrap();
        assert_eq!(batches, vec![batch(2)]);
    }
}
