//! The write-ahead log beside a [`RedbStore`](super::RedbStore)'s file.
//!
//! # Why
//!
//! A durable redb commit writes every page the transaction dirtied (each
//! B-tree leaf a batch touches, their branches, the allocator's state) with
//! one `pwrite` each and then `fdatasync`s them all. For a group commit of 13
//! records of 1.3 KB that is ~0.45 ms on the 2-core reference VM, and Nexus
//! acknowledges no write before it. The log makes a commit durable with one
//! sequential synchronous write of the batch into a preallocated file
//! (~0.1 ms; see [`log_file`] for how); the batch then goes to an in-memory
//! overlay that reads consult before redb. Every [`CHECKPOINT_COMMITS`]
//! commits (or when the log file is full) a *checkpoint* writes the
//! overlay to redb in one durable redb commit (a key written many times is
//! written once), which makes the logged frames redundant.
//!
//! A checkpoint takes time (at a million keys, ~0.4 s to write ten
//! thousand keys to random places in the B-tree), so it runs in the
//! background while commits go on into the log's *other* file. The log is
//! two files used in turn: a checkpoint covers every frame of the file
//! being left, and a file is written again from offset 0 only once the
//! checkpoint of its frames has finished. A checkpoint due by its count
//! of commits while another runs waits for it to finish; commits wait for
//! a checkpoint only when the other file fills before it has finished.
//!
//! # Format (version 1)
//!
//! The files (`<database file>-wal` and `<database file>-wal2`) each hold
//! frames from offset 0, then bytes of no meaning (zeros, or frames of an
//! earlier cycle). All integers are little-endian.
//!
//! ```text
//! frame   = magic "SKW1" | seq u64 | payload_len u32 | crc u32 | payload
//! payload = op*          (the ops of one WriteBatch, in order)
//! op      = 0x01 | key_len u32 | key | value_len u32 | value     (put)
//!         | 0x02 | key_len u32 | key                             (delete)
//! ```
//!
//! `crc` is CRC-32 (IEEE) of `seq`, `payload_len` and `payload`. It finds
//! torn writes only: the store is untrusted, and the records it carries are
//! sealed and location-bound by spike-core, which detects tampering.
//!
//! # Recovery
//!
//! Every durable redb commit this store makes also records, in table
//! `spike.wal` under key `applied`, the `seq` of the last frame whose batch
//! it contains. A checkpoint always covers every frame up to the last one
//! of a file, so the frame `applied + 1`, if any, is at offset 0 of one of
//! the two files. On open, frames are read from there as long as each has
//! the next `seq` (`applied + 1`, then `+ 2`, …), a whole payload and a good
//! `crc`; where one does not, the frames go on at offset 0 of the other
//! file if the frame there has the next `seq`. The frames read go into
//! memory; the first commit after the open (or closing the store) first
//! applies them to redb in one durable commit, and only then does the log
//! start again at offset 0 of the first file, so that a crash before then
//! finds the same frames again. Opening writes nothing to the files but
//! the first block of each, back as it was (a probe of direct I/O). Each
//! file starts again at offset 0 only once redb holds all its frames, so a
//! frame at offset 0 is either the next one after what redb holds, or
//! stale; a stale frame never has the `seq` looked for, which only grows.
//! Replaying a frame redb already holds changes nothing (its puts and
//! deletes set absolute values), so a crash between a checkpoint and the
//! restart of a file loses nothing either. A store written by an earlier
//! version, with one log file, opens the same way.

mod log_file;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use crate::backend::{WriteBatch, WriteOp};
pub(super) use log_file::LogFile;

/// Marks a frame of this format.
const MAGIC: [u8; 4] = *b"SKW1";
/// magic + seq + payload_len + crc.
const FRAME_HEADER: usize = 4 + 8 + 4 + 4;
const TAG_PUT: u8 = 0x01;
const TAG_DELETE: u8 = 0x02;

/// Commits through the log between two checkpoints (the log's frames then
/// go out of use). More means fewer durable redb commits and a longer
/// replay after a crash.
pub(super) const CHECKPOINT_COMMITS: u32 = 1024;
/// The log grows in zero-filled steps of this size, so that a commit's
/// write overwrites allocated blocks and never has to make the file's size
/// (or a block allocation) durable as well.
const GROW_STEP: u64 = 1024 * 1024;

/// One of the log's two files and how far it is written.
struct Segment {
    file: LogFile,
    /// Offset of the next frame.
    end: u64,
    /// Bytes from offset 0 known to be allocated (written, or zero-filled).
    allocated: u64,
}

impl Segment {
    fn new(file: LogFile) -> io::Result<Self> {
        let allocated = file.len()?;
        Ok(Self {
            file,
            end: 0,
            allocated,
        })
    }

    /// Written again from offset 0.
    fn restart(&mut self) {
        self.file.restart();
        self.end = 0;
    }
}

/// An open log: which file frames go to, where, and what the next one
/// will be numbered.
pub(super) struct Wal {
    segments: [Segment; 2],
    /// The index in `segments` of the file frames go to.
    current: usize,
    /// Most bytes a log file may hold; a batch whose frame is larger
    /// commits to redb durably, without the log.
    capacity: u64,
    /// `seq` of the next frame.
    next_seq: u64,
    /// Frames written since the last checkpoint began.
    since_checkpoint: u32,
    /// Whether the files hold frames that redb does not hold yet, from
    /// before the store was opened (replayed into memory only): no frame
    /// may be written until redb holds them, or a crash could lose them.
    holds_replayed: bool,
    /// Reused frame buffer.
    buf: Vec<u8>,
}

impl Wal {
    /// The log in `files`, whose frames after `applied` were already
    /// replayed: it starts again at offset 0 of the first file, with `seq`
    /// `next_seq`, once redb holds them ([`Wal::holds_replayed`]).
    pub(super) fn new(
        files: [LogFile; 2],
        capacity: u64,
        next_seq: u64,
        holds_replayed: bool,
    ) -> io::Result<Self> {
        let [first, second] = files;
        Ok(Self {
            segments: [Segment::new(first)?, Segment::new(second)?],
            current: 0,
            capacity: capacity.min(u64::from(u32::MAX)),
            next_seq,
            since_checkpoint: 0,
            holds_replayed,
            buf: Vec::new(),
        })
    }

    /// The `seq` of the last frame written (or assigned), `next_seq - 1`.
    pub(super) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Whether the files hold replayed frames that redb does not hold yet:
    /// redb must take them before the next frame is written.
    pub(super) fn holds_replayed(&self) -> bool {
        self.holds_replayed
    }

    /// redb now holds the replayed frames.
    pub(super) fn replayed_applied(&mut self) {
        self.holds_replayed = false;
    }

    /// Whether a checkpoint is due.
    pub(super) fn checkpoint_due(&self) -> bool {
        self.since_checkpoint >= CHECKPOINT_COMMITS
    }

    /// Whether frames were written since the last checkpoint began.
    pub(super) fn has_frames(&self) -> bool {
        self.since_checkpoint > 0
    }

    /// Whether `batch`'s frame fits in the current file as it is
    /// (`Fit::Now`), only in a file started again (`Fit::AfterCheckpoint`),
    /// or never.
    pub(super) fn fits(&self, batch: &WriteBatch) -> Fit {
        let len = frame_len(batch);
        if self.segments[self.current].end.saturating_add(len) <= self.capacity {
            Fit::Now
        } else if len <= self.capacity {
            Fit::AfterCheckpoint
        } else {
            Fit::Never
        }
    }

    /// Write `batch` as the next frame and make it durable. The caller has
    /// checked that it [fits](Self::fits) now.
    pub(super) fn append(&mut self, batch: &WriteBatch) -> io::Result<()> {
        encode_frame(&mut self.buf, self.next_seq, batch);
        let capacity = self.capacity;
        let segment = &mut self.segments[self.current];
        let frame_end = segment.end + self.buf.len() as u64;
        let mut zero_to = 0;
        if frame_end > segment.allocated {
            zero_to = frame_end
                .div_ceil(GROW_STEP)
                .saturating_mul(GROW_STEP)
                .min(capacity)
                .max(frame_end);
        }
        segment
            .file
            .write_durable(segment.end, &self.buf, zero_to)?;
        segment.allocated = segment.allocated.max(zero_to);
        segment.end = frame_end;
        self.next_seq += 1;
        self.since_checkpoint += 1;
        Ok(())
    }

    /// Take the next `seq` for a batch committed to redb durably without the
    /// log.
    pub(super) fn assign_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Frames go to the other file from its offset 0, once a checkpoint has
    /// begun that covers every frame so far. The caller has made sure that
    /// redb durably holds every frame of the other file (the checkpoint
    /// that covered them has finished).
    pub(super) fn switch(&mut self) {
        self.current = 1 - self.current;
        self.segments[self.current].restart();
        self.since_checkpoint = 0;
    }

    /// Start the current file again at offset 0: redb now durably holds
    /// every frame so far.
    pub(super) fn restart(&mut self) {
        self.segments[self.current].restart();
        self.since_checkpoint = 0;
    }
}

/// Where a batch's frame fits; see [`Wal::fits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fit {
    Now,
    AfterCheckpoint,
    Never,
}

/// The length of `batch`'s frame.
fn frame_len(batch: &WriteBatch) -> u64 {
    batch.ops().iter().fold(FRAME_HEADER as u64, |len, op| {
        let op_len = match op {
            WriteOp::Put { key, value } => 9 + key.len() as u64 + value.len() as u64,
            WriteOp::Delete { key } => 5 + key.len() as u64,
        };
        len.saturating_add(op_len)
    })
}

/// Encode `batch` as the frame `seq` into `buf` (cleared first). The caller
/// has checked that the frame fits the log, so every length fits a `u32`.
fn encode_frame(buf: &mut Vec<u8>, seq: u64, batch: &WriteBatch) {
    buf.clear();
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&[0; 8]); // payload_len and crc, below
    for op in batch.ops() {
        match op {
            WriteOp::Put { key, value } => {
                buf.push(TAG_PUT);
                put_bytes(buf, key);
                put_bytes(buf, value);
            }
            WriteOp::Delete { key } => {
                buf.push(TAG_DELETE);
                put_bytes(buf, key);
            }
        }
    }
    let payload_len = len_u32(buf.len() - FRAME_HEADER);
    buf[12..16].copy_from_slice(&payload_len.to_le_bytes());
    let crc = frame_crc(&buf[4..16], &buf[FRAME_HEADER..]);
    buf[16..20].copy_from_slice(&crc.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&len_u32(bytes.len()).to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// A length known to fit the log, whose capacity is at most `u32::MAX`.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn frame_crc(seq_and_len: &[u8], payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(seq_and_len);
    crc.update(payload);
    crc.finalize()
}

/// The batches of the frames after `applied` in the log's `files`, in
/// order: from offset 0 of the file whose first frame is `applied + 1`,
/// then on at offset 0 of the other if its first frame follows (see the
/// module docs). Reads no further than the files' first frames when
/// neither is `applied + 1` (the common case, after a clean close).
pub(super) fn read_frames_after(
    mut files: [&mut File; 2],
    applied: u64,
) -> io::Result<Vec<WriteBatch>> {
    let mut batches = Vec::new();
    let mut next = applied + 1;
    let mut read = [false; 2];
    // Each file is read at most once: the frames are in one file, or go on
    // from one into the other.
    while let Some(i) = first_unread_starting_with(&mut files, &read, next)? {
        let mut log = Vec::new();
        files[i].seek(SeekFrom::Start(0))?;
        files[i].read_to_end(&mut log)?;
        let found = read_frames(&log, next);
        next += found.len() as u64;
        batches.extend(found);
        read[i] = true;
    }
    Ok(batches)
}

/// The index of the first of `files` not yet `read` whose frame at offset
/// 0 is numbered `seq`.
fn first_unread_starting_with(
    files: &mut [&mut File; 2],
    read: &[bool; 2],
    seq: u64,
) -> io::Result<Option<usize>> {
    for (i, file) in files.iter_mut().enumerate() {
        if !read[i] && starts_with_frame(file, seq)? {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// Whether the frame at offset 0 of `file` is numbered `seq` (its header
/// only: [`read_frames`] checks the rest).
fn starts_with_frame(file: &mut File, seq: u64) -> io::Result<bool> {
    let mut header = [0u8; FRAME_HEADER];
    file.seek(SeekFrom::Start(0))?;
    match file.read_exact(&mut header) {
        Ok(()) => Ok(header[..4] == MAGIC && header[4..12] == seq.to_le_bytes()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The batches of the frames `first_seq`, `first_seq + 1`, … at the start
/// of `log`, up to the first frame that is missing, torn or out of sequence.
pub(super) fn read_frames(log: &[u8], first_seq: u64) -> Vec<WriteBatch> {
    let mut batches = Vec::new();
    let mut rest = log;
    let mut seq = first_seq;
    while let Some((batch, after)) = read_frame(rest, seq) {
        batches.push(batch);
        rest = after;
        seq += 1;
    }
    batches
}

/// The frame `seq` at the start of `bytes` and what follows it.
fn read_frame(bytes: &[u8], seq: u64) -> Option<(WriteBatch, &[u8])> {
    let header = bytes.get(..FRAME_HEADER)?;
    if header[..4] != MAGIC || header[4..12] != seq.to_le_bytes() {
        return None;
    }
    let payload_len = u32::from_le_bytes(header[12..16].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[16..20].try_into().ok()?);
    let payload = bytes.get(FRAME_HEADER..FRAME_HEADER.checked_add(payload_len)?)?;
    if frame_crc(&header[4..16], payload) != crc {
        return None;
    }
    let batch = decode_payload(payload)?;
    Some((batch, &bytes[FRAME_HEADER + payload_len..]))
}

fn decode_payload(mut payload: &[u8]) -> Option<WriteBatch> {
    let mut batch = WriteBatch::new();
    while let Some((&tag, rest)) = payload.split_first() {
        let (key, rest) = take_bytes(rest)?;
        payload = match tag {
            TAG_PUT => {
                let (value, rest) = take_bytes(rest)?;
                batch.put(key, value);
                rest
            }
            TAG_DELETE => {
                batch.delete(key);
                rest
            }
            _ => return None,
        };
    }
    Some(batch)
}

fn take_bytes(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let value = bytes.get(4..4usize.checked_add(len)?)?;
    Some((value, &bytes[4 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.put(*b"k1", *b"v1").delete(*b"k2");
        batch
    }

    /// The on-disk format, byte for byte: a change here is a format change.
    #[test]
    fn frame_format_is_pinned() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 7, &sample());
        let mut expected = Vec::new();
        expected.extend_from_slice(b"SKW1");
        expected.extend_from_slice(&7u64.to_le_bytes());
        expected.extend_from_slice(&20u32.to_le_bytes()); // (1+4+2+4+2) + (1+4+2)
        // CRC-32 (IEEE) of seq, payload_len and payload, as Python's zlib.crc32 computes it.
        expected.extend_from_slice(&0x3239_D20Bu32.to_le_bytes());
        expected.extend_from_slice(b"\x01\x02\x00\x00\x00k1\x02\x00\x00\x00v1");
        expected.extend_from_slice(b"\x02\x02\x00\x00\x00k2");
        assert_eq!(buf, expected);
        assert_eq!(buf.len() as u64, frame_len(&sample()));
    }

    #[test]
    fn frames_read_back_in_order_until_the_sequence_breaks() {
        let mut log = Vec::new();
        let mut buf = Vec::new();
        for seq in [5, 6, 8] {
            let mut batch = WriteBatch::new();
            batch.put(seq.to_string().into_bytes(), vec![seq as u8; 3]);
            encode_frame(&mut buf, seq, &batch);
            log.extend_from_slice(&buf);
        }
        let batches = read_frames(&log, 5);
        assert_eq!(batches.len(), 2, "seq 8 does not follow 6");
        assert_eq!(batches[1].ops()[0].key(), b"6");
        assert!(read_frames(&log, 4).is_empty(), "stale first frame");
    }

    #[test]
    fn a_torn_or_damaged_frame_ends_the_log() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 1, &sample());
        let mut log = buf.clone();
        encode_frame(&mut buf, 2, &sample());
        log.extend_from_slice(&buf);
        let whole = log.len();
        for cut in [whole - 1, whole - 10, whole - buf.len() + 3] {
            assert_eq!(read_frames(&log[..cut], 1).len(), 1, "cut at {cut}");
        }
        for flip in [whole - 1, whole - buf.len() + 14, whole - buf.len() + 17] {
            let mut damaged = log.clone();
            damaged[flip] ^= 0x40;
            assert_eq!(read_frames(&damaged, 1).len(), 1, "flip at {flip}");
        }
        assert_eq!(read_frames(&log, 1).len(), 2);
    }

    proptest::proptest! {
        /// Whatever the file holds (the store is untrusted), reading it
        /// ends without a panic: random bytes, and valid frames with bytes
        /// changed (lengths included, CRCs fixed up so that the payload
        /// decoder sees them), cut short or extended.
        #[test]
        fn damaged_logs_read_without_panic(
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            flips in proptest::collection::vec((proptest::num::usize::ANY, 1u8..=255), 0..6),
            cut in proptest::num::usize::ANY,
            fix_crc in proptest::bool::ANY,
        ) {
            let _ = read_frames(&noise, 1);
            let mut buf = Vec::new();
            encode_frame(&mut buf, 1, &sample());
            for (at, x) in flips {
                let at = at % buf.len();
                buf[at] ^= x;
            }
            if fix_crc {
                let crc = frame_crc(&buf[4..16], &buf[FRAME_HEADER..]);
                buf[16..20].copy_from_slice(&crc.to_le_bytes());
            }
            buf.extend_from_slice(&noise);
            buf.truncate(cut % (buf.len() + 1));
            let _ = read_frames(&buf, 1);
        }

        /// Any batch reads back as written, op for op, also after a frame
        /// that went before it.
        #[test]
        fn batches_round_trip(ops in proptest::collection::vec(
            (proptest::bool::ANY,
             proptest::collection::vec(proptest::num::u8::ANY, 0..40),
             proptest::collection::vec(proptest::num::u8::ANY, 0..300)),
            1..20,
        )) {
            let mut batch = WriteBatch::new();
            for (put, key, value) in ops {
                if put {
                    batch.put(key, value);
                } else {
                    batch.delete(key);
                }
            }
            let mut log = Vec::new();
            let mut buf = Vec::new();
            encode_frame(&mut buf, 41, &sample());
            log.extend_from_slice(&buf);
            encode_frame(&mut buf, 42, &batch);
            proptest::prop_assert_eq!(buf.len() as u64, frame_len(&batch));
            log.extend_from_slice(&buf);
            let read = read_frames(&log, 41);
            proptest::prop_assert_eq!(read.len(), 2);
            proptest::prop_assert_eq!(read[1].ops(), batch.ops());
        }
    }

    /// Frames go on from one file into the other, whichever holds the
    /// first one after `applied`; stale frames at either start are skipped.
    #[test]
    fn frames_are_read_across_both_files_in_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let file_with = |name: &str, seqs: &[u64]| {
            let mut bytes = Vec::new();
            let mut buf = Vec::new();
            for &seq in seqs {
                let mut batch = WriteBatch::new();
                batch.put(seq.to_be_bytes(), [0u8]);
                encode_frame(&mut buf, seq, &batch);
                bytes.extend_from_slice(&buf);
            }
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            File::open(path).unwrap()
        };
        let read = |first: &[u64], second: &[u64], applied: u64| -> Vec<u64> {
            let (mut a, mut b) = (file_with("a", first), file_with("b", second));
            read_frames_after([&mut a, &mut b], applied)
                .unwrap()
                .iter()
                .map(|batch| u64::from_be_bytes(batch.ops()[0].key().try_into().unwrap()))
                .collect()
        };
        // The second file holds the older frames: it is read first.
        assert_eq!(read(&[5, 6], &[3, 4], 2), [3, 4, 5, 6]);
        assert_eq!(read(&[1, 2], &[3], 0), [1, 2, 3]);
        // The first frame of one file is stale.
        assert_eq!(read(&[5, 6], &[3, 4], 4), [5, 6]);
        assert_eq!(read(&[1, 2], &[3, 4], 2), [3, 4]);
        // Nothing after `applied`, or a gap: nothing more is read.
        assert!(read(&[5, 6], &[3, 4], 6).is_empty());
        assert_eq!(read(&[6, 7], &[3, 4], 2), [3, 4]);
        assert!(read(&[], &[], 0).is_empty());
    }

    #[test]
    fn garbage_is_no_frame() {
        assert!(read_frames(&[], 1).is_empty());
        assert!(read_frames(&[0; 64], 1).is_empty());
        let mut buf = Vec::new();
        encode_frame(&mut buf, 1, &sample());
        // A length field pointing past the end.
        buf[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_frames(&buf, 1).is_empty());
    }
}
