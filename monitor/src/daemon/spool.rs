//! Crash-safe on-disk overflow spool for evidence records: what does not fit the in-memory queue lands here
//! and is drained, in order, into `PostgreSQL` later. Payloads are opaque bytes.
//!
//! `<dir>/<20-digit id>.seg` are append-only segment files with increasing ids. Appends go to the last
//! (active) one, rotated once it reaches `segment_bytes`; segments from before a restart are never appended
//! to, so a torn tail stays a torn tail. Each record is one little-endian frame:
//!
//! ```text
//! len: u32 (payload bytes, > MAX_RECORD is corrupt) | crc: u32 = crc32c(enqueued_ms bytes ‖ payload)
//! | enqueued_ms: u64 (unix ms when queued) | payload
//! ```
//!
//! `<dir>/cursor` holds `"<segment id> <offset>\n"`, where reading resumes after a restart. It is replaced by
//! rename but never fsynced: re-reading committed records is harmless because the store is idempotent. A
//! segment is deleted only once the commit cursor is past it.
//!
//! Record count: `open` counts frames from headers alone and appends count exactly, but corruption can fool
//! the header walk, so once the reader has passed a segment's end its count becomes the good frames it found.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Largest payload; a bigger length field is corruption.
pub const MAX_RECORD: usize = 16 << 20;
const HEADER: usize = 16;
/// Appends reach the file in chunks of about this size.
const WRITE_BUF: usize = 64 << 10;
const SCAN_WINDOW: u64 = 64 << 10;
const ENOSPC: i32 = 28;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({max_bytes} bytes)")]
    Full { max_bytes: u64 },
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SpoolError {
    pub fn is_no_space(&self) -> bool {
        match self {
            Self::Full { .. } => true,
            Self::Io { source, .. } => source.raw_os_error() == Some(ENOSPC) || source.kind() == ErrorKind::StorageFull,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRecord {
    pub enqueued_ms: u64,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub records: u64, // not yet committed (unread + read-but-uncommitted)
    pub bytes: u64,   // of all segments, including the not yet flushed tail
    pub segments: u64,
    pub corrupt: u64, // corrupt/truncated frames found since open, each counted once
    pub oldest_enqueued_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    seg: u64,
    off: u64,
}

#[derive(Default)]
struct Segment {
    id: u64,
    path: PathBuf,
    len: u64,           // end of the last whole frame, including the active segment's unflushed tail
    estimated: u64,     // frames from the start position (the cursor's offset, else 0): header walk + appends
    exact: Option<u64>, // good frames from the start position, known once the reader has passed the end
    read_good: u64,
    committed_good: u64,
    reported_to: u64, // corruption before this offset was already reported
}

impl Segment {
    fn uncommitted(&self) -> u64 {
        self.exact.unwrap_or(self.estimated.max(self.read_good)).saturating_sub(self.committed_good)
    }
}

/// The active segment's file and the frames not yet written to it.
struct Writer {
    file: File,
    flushed: u64,
    pending: Vec<u8>,
}

impl Writer {
    fn flush(&mut self) -> io::Result<()> {
        if let Err(e) = self.file.write_all_at(&self.pending, self.flushed) {
            // A partial frame on disk would read as corruption after a crash; should truncating fail as
            // well, the next write overwrites it anyway.
            self.file.set_len(self.flushed).ok();
            return Err(e);
        }
        self.flushed += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: Vec<Segment>,
    writer: Option<Writer>, // present while the last segment is the active one
    /// Retired segments written but not yet fdatasync'd (see [`Spool::sync_handles`]).
    unsynced: Vec<File>,
    next_id: u64,
    read: Pos,
    commit: Pos,
    reader: Option<(u64, File)>,
    corrupt: u64,
    oldest: Option<u64>,
}

impl Spool {
    /// Opens the spool, creating `dir` if needed. Corrupt data never fails this; a segment that cannot be
    /// scanned at all is logged and left out (and deleted once the cursor passes its id).
    pub fn open(dir: &Path, max_bytes: u64, segment_bytes: u64) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        // Root only, whatever the state directory's own mode (it is 0711 for the embedded
        // database's sake).
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(io_err(dir))?;
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let name = entry.map_err(io_err(dir))?.file_name();
            let stem = name.to_str().and_then(|n| n.strip_suffix(".seg")).filter(|s| s.len() == 20);
            if let Some(id) = stem.filter(|s| s.bytes().all(|b| b.is_ascii_digit())).and_then(|s| s.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let (cur_seg, cur_off) = read_cursor(dir).unwrap_or((ids.first().copied().unwrap_or(0), 0));
        // New ids must not fall behind the cursor, or a restart would skip them.
        let next_id = ids.last().map_or(0, |last| last + 1).max(cur_seg);
        let mut segments = Vec::new();
        for id in ids {
            let path = dir.join(format!("{id:020}.seg"));
            if id < cur_seg {
                // Committed before the last shutdown; only the deletion was lost.
                if let Err(error) = fs::remove_file(&path) {
                    tracing::warn!(segment = %path.display(), %error, "cannot delete committed spool segment");
                }
                continue;
            }
            match count_frames(&path, if id == cur_seg { cur_off } else { 0 }) {
                Ok((len, estimated)) => segments.push(Segment { id, path, len, estimated, ..Segment::default() }),
                Err(error) => tracing::warn!(segment = %path.display(), %error, "cannot scan spool segment; skipped"),
            }
        }
        let read = match segments.first() {
            Some(s) if s.id == cur_seg => Pos { seg: cur_seg, off: cur_off.min(s.len) },
            first => Pos { seg: first.map_or(next_id, |s| s.id), off: 0 },
        };
        let (dir, commit, writer, reader, corrupt, oldest) = (dir.to_path_buf(), read, None, None, 0, None);
        let mut spool = Self {
            dir,
            max_bytes,
            segment_bytes,
            segments,
            writer,
            unsynced: Vec::new(),
            next_id,
            read,
            commit,
            reader,
            corrupt,
            oldest,
        };
        spool.oldest = spool.peek_oldest();
        Ok(spool)
    }

    /// Appends one record (buffered until [`Spool::sync`] or about 64 KiB).
    pub fn append(&mut self, enqueued_ms: u64, payload: &[u8]) -> Result<(), SpoolError> {
        if payload.len() > MAX_RECORD {
            let source = io::Error::new(ErrorKind::InvalidInput, "record larger than 16 MiB");
            return Err(SpoolError::Io { path: self.dir.clone(), source });
        }
        let (frame_len, bytes) = ((HEADER + payload.len()) as u64, self.bytes());
        // An empty spool takes any one record, so that a single huge one cannot wedge it.
        if bytes > 0 && bytes + frame_len > self.max_bytes {
            return Err(SpoolError::Full { max_bytes: self.max_bytes });
        }
        if self.writer.is_some() && self.segments.last().is_some_and(|s| s.len >= self.segment_bytes) {
            // The old segment must be durable before sync() stops covering it: it is written out
            // now and fdatasync'd with the next sync, off the caller's thread.
            if let (Some(mut w), Some(seg)) = (self.writer.take(), self.segments.last()) {
                w.flush().map_err(io_err(&seg.path))?;
                self.unsynced.push(w.file);
            }
        }
        if self.writer.is_none() {
            self.create_segment()?;
        }
        let (Some(w), Some(seg)) = (self.writer.as_mut(), self.segments.last_mut()) else {
            return Err(SpoolError::Io { path: self.dir.clone(), source: io::Error::other("no active segment") });
        };
        let prev = w.pending.len();
        w.pending.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        w.pending.extend_from_slice(&frame_crc(enqueued_ms, payload).to_le_bytes());
        w.pending.extend_from_slice(&enqueued_ms.to_le_bytes());
        w.pending.extend_from_slice(payload);
        if w.pending.len() >= WRITE_BUF {
            if let Err(source) = w.flush() {
                // Earlier frames stay pending and are retried later; only this one is refused.
                w.pending.truncate(prev);
                return Err(SpoolError::Io { path: seg.path.clone(), source });
            }
        }
        seg.len += frame_len;
        seg.estimated += 1;
        self.oldest.get_or_insert(enqueued_ms);
        Ok(())
    }

    /// Writes out buffered records and fdatasyncs the active segment.
    /// Change the size limit (the daemon lifts it for records that must never be shed).
    pub fn set_max_bytes(&mut self, max_bytes: u64) {
        self.max_bytes = max_bytes;
    }

    pub fn sync(&mut self) -> Result<(), SpoolError> {
        for f in self.sync_handles()? {
            f.sync_data().map_err(io_err(&self.dir))?;
        }
        Ok(())
    }

    /// Write out buffered records and hand back the files that still need an fdatasync, so the
    /// caller can run it without holding up appends (the handles are clones: syncing one syncs
    /// the segment).
    pub fn sync_handles(&mut self) -> Result<Vec<File>, SpoolError> {
        let mut files = std::mem::take(&mut self.unsynced);
        if let (Some(w), Some(seg)) = (self.writer.as_mut(), self.segments.last()) {
            w.flush().map_err(io_err(&seg.path))?;
            files.push(w.file.try_clone().map_err(io_err(&seg.path))?);
        }
        Ok(files)
    }

    /// Reads up to `max_records` / about `max_bytes` (at least one record) after the read cursor, skipping
    /// corrupt frames. The active segment's unflushed frames are served from memory instead of being flushed
    /// first, so that draining, which is what frees space, still works on a full disk.
    pub fn read_batch(&mut self, max_records: usize, max_bytes: usize) -> Result<Vec<SpoolRecord>, SpoolError> {
        let from_commit = self.read == self.commit;
        let (mut out, mut bytes) = (Vec::new(), 0);
        while out.len() < max_records && (out.is_empty() || bytes < max_bytes) {
            self.skip_exhausted();
            let Some(idx) = self.index(self.read.seg) else { break };
            let (off, end) = (self.read.off, self.segments[idx].len);
            if off >= end {
                break; // the active segment, caught up with the writer
            }
            let step = match self.frame_at(idx, off, end) {
                Ok(None) => {
                    self.report_corrupt(idx, off);
                    self.resync(idx, off + 1, end).map(|at| {
                        self.read.off = at.unwrap_or(end);
                        None
                    })
                }
                other => other,
            };
            match step {
                Ok(Some((rec, next))) => {
                    self.segments[idx].read_good += 1;
                    self.read.off = next;
                    bytes += HEADER + rec.payload.len();
                    out.push(rec);
                }
                Ok(None) => {}
                Err(_) if !out.is_empty() => break, // hand out what was read; the error recurs next call
                Err(source) => return Err(SpoolError::Io { path: self.segments[idx].path.clone(), source }),
            }
        }
        self.skip_exhausted();
        if let (true, Some(first)) = (from_commit, out.first()) {
            self.oldest = Some(first.enqueued_ms);
        }
        Ok(out)
    }

    /// Everything read so far is stored: advance the commit cursor and delete the segments behind it.
    pub fn commit(&mut self) -> Result<(), SpoolError> {
        self.skip_exhausted();
        self.segments.iter_mut().for_each(|s| s.committed_good = s.read_good);
        self.commit = self.read;
        let last = self.segments.last().map(|s| Pos { seg: s.id, off: s.len });
        if self.writer.is_some() && last.is_some_and(|l| l.seg == self.read.seg && l.off <= self.read.off) {
            // Retire a fully consumed active segment so it can be deleted instead of growing forever.
            self.writer = None;
            self.read = Pos { seg: self.next_id, off: 0 };
            self.commit = self.read;
        }
        let (tmp, cursor) = (self.dir.join("cursor.tmp"), self.dir.join("cursor"));
        fs::write(&tmp, format!("{} {}\n", self.commit.seg, self.commit.off)).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &cursor).map_err(io_err(&cursor))?;
        while let Some(seg) = self.segments.first().filter(|s| s.id < self.commit.seg) {
            match fs::remove_file(&seg.path) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(io_err(&seg.path)(e)),
                _ => {}
            }
            self.reader.take_if(|(id, _)| *id == seg.id);
            self.segments.remove(0);
        }
        self.oldest = self.peek_oldest();
        Ok(())
    }

    /// The last reads were not stored: they are read again.
    pub fn rewind(&mut self) {
        self.read = self.commit;
        self.segments.iter_mut().for_each(|s| s.read_good = s.committed_good);
    }

    /// No unread bytes (read-but-uncommitted records don't count); a corrupt tail counts as unread until a
    /// `read_batch` has skipped it.
    pub fn is_drained(&self) -> bool {
        self.at_end(self.read)
    }

    /// Nothing uncommitted at all.
    pub fn is_empty(&self) -> bool {
        self.at_end(self.commit)
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            records: self.segments.iter().map(Segment::uncommitted).sum(),
            bytes: self.bytes(),
            segments: self.segments.len() as u64,
            corrupt: self.corrupt,
            oldest_enqueued_ms: if self.is_empty() { None } else { self.oldest },
        }
    }

    fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    fn index(&self, id: u64) -> Option<usize> {
        self.segments.binary_search_by_key(&id, |s| s.id).ok()
    }

    fn at_end(&self, pos: Pos) -> bool {
        match self.index(pos.seg) {
            Some(i) => i + 1 == self.segments.len() && pos.off >= self.segments[i].len,
            None => self.segments.last().is_none_or(|s| s.id < pos.seg),
        }
    }

    fn create_segment(&mut self) -> Result<(), SpoolError> {
        let (id, dir) = (self.next_id, &self.dir);
        let path = dir.join(format!("{id:020}.seg"));
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(io_err(&path))?;
        self.next_id += 1;
        self.segments.push(Segment { id, path, ..Segment::default() });
        self.writer = Some(Writer { file, flushed: 0, pending: Vec::new() });
        // The directory entry must survive a crash as well as the data synced into the file.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
    }

    /// Moves the read cursor past segments it has read to the end, except the active one.
    fn skip_exhausted(&mut self) {
        while let Some(idx) = self.index(self.read.seg) {
            let active = self.writer.is_some() && idx + 1 == self.segments.len();
            let seg = &mut self.segments[idx];
            if active || self.read.off < seg.len {
                return;
            }
            seg.exact = Some(seg.read_good);
            self.read = Pos { seg: self.segments.get(idx + 1).map_or(self.next_id, |s| s.id), off: 0 };
        }
    }

    fn report_corrupt(&mut self, idx: usize, offset: u64) {
        let seg = &mut self.segments[idx];
        if offset >= seg.reported_to {
            seg.reported_to = offset + 1;
            self.corrupt += 1;
            tracing::warn!(segment = %seg.path.display(), offset, "corrupt or truncated spool frame; skipping it");
        }
    }

    /// Reads `buf.len()` bytes at `off`; the active segment's unflushed tail comes from memory.
    fn read_at(&mut self, idx: usize, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let seg = &self.segments[idx];
        if let Some(w) = self.writer.as_ref().filter(|_| idx + 1 == self.segments.len()) {
            let (disk, mem) = buf.split_at_mut((w.flushed.saturating_sub(off) as usize).min(buf.len()));
            w.file.read_exact_at(disk, off)?;
            let from = (off + disk.len() as u64).saturating_sub(w.flushed) as usize;
            mem.copy_from_slice(w.pending.get(from..from + mem.len()).ok_or(ErrorKind::UnexpectedEof)?);
            return Ok(());
        }
        if self.reader.as_ref().is_none_or(|(id, _)| *id != seg.id) {
            self.reader = Some((seg.id, File::open(&seg.path)?));
        }
        self.reader.as_ref().map_or(Err(ErrorKind::NotFound.into()), |(_, file)| file.read_exact_at(buf, off))
    }

    /// The frame at `off` and the offset after it, if it is whole and its CRC matches.
    fn frame_at(&mut self, idx: usize, off: u64, end: u64) -> io::Result<Option<(SpoolRecord, u64)>> {
        let mut h = [0; HEADER];
        if end.saturating_sub(off) < HEADER as u64 {
            return Ok(None);
        }
        self.read_at(idx, off, &mut h)?;
        let (len, crc) = (le32(&h[0..]) as usize, le32(&h[4..]));
        let next = off + (HEADER + len) as u64;
        if len > MAX_RECORD || next > end {
            return Ok(None);
        }
        let enqueued_ms = u64::from(le32(&h[8..])) | u64::from(le32(&h[12..])) << 32;
        let mut payload = vec![0; len];
        self.read_at(idx, off + HEADER as u64, &mut payload)?;
        Ok((frame_crc(enqueued_ms, &payload) == crc).then_some((SpoolRecord { enqueued_ms, payload }, next)))
    }

    /// The first offset at or after `from` where a whole valid frame starts.
    fn resync(&mut self, idx: usize, from: u64, end: u64) -> io::Result<Option<u64>> {
        let (mut base, mut window) = (from, Vec::new());
        while end.saturating_sub(base) >= HEADER as u64 {
            window.resize((end - base).min(SCAN_WINDOW) as usize, 0);
            self.read_at(idx, base, &mut window)?;
            // Lengths are checked in memory first, so that only plausible headers cost a read and a CRC.
            for i in 0..=window.len() - HEADER {
                let at = base + i as u64;
                let len = le32(&window[i..]) as usize;
                if len <= MAX_RECORD && at + (HEADER + len) as u64 <= end && self.frame_at(idx, at, end)?.is_some() {
                    return Ok(Some(at));
                }
            }
            base += (window.len() - HEADER + 1) as u64;
        }
        Ok(None)
    }

    /// `enqueued_ms` of the record at the commit cursor, if it is valid.
    fn peek_oldest(&mut self) -> Option<u64> {
        let mut pos = self.commit;
        loop {
            let idx = self.index(pos.seg)?;
            let end = self.segments[idx].len;
            if pos.off < end {
                return self.frame_at(idx, pos.off, end).ok().flatten().map(|(r, _)| r.enqueued_ms);
            }
            pos = Pos { seg: self.segments.get(idx + 1)?.id, off: 0 };
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(error) = self.sync() {
            tracing::warn!(%error, "cannot sync the spool on close; the latest records may be lost");
        }
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn frame_crc(enqueued_ms: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&enqueued_ms.to_le_bytes()), payload)
}

/// A missing or unreadable cursor means "from the first segment": re-reading is harmless.
fn read_cursor(dir: &Path) -> Option<(u64, u64)> {
    let path = dir.join("cursor");
    let text = fs::read_to_string(&path).map_err(|error| {
        if error.kind() != ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), %error, "cannot read the spool cursor; reading from the start");
        }
    });
    let text = text.ok()?;
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    if let (Some(Ok(seg)), Some(Ok(off)), None) = (parts.next(), parts.next(), parts.next()) {
        return Some((seg, off));
    }
    tracing::warn!(path = %path.display(), "malformed spool cursor; reading from the start");
    None
}

/// File length and the number of frames from `from`, from their headers alone (CRCs are checked on read).
fn count_frames(path: &Path, from: u64) -> io::Result<(u64, u64)> {
    let file = File::open(path)?;
    let (len, mut off, mut count, mut h) = (file.metadata()?.len(), from, 0, [0; 4]);
    while len.saturating_sub(off) >= HEADER as u64 {
        file.read_exact_at(&mut h, off)?;
        let frame = (HEADER + u32::from_le_bytes(h) as usize) as u64;
        if frame - HEADER as u64 > MAX_RECORD as u64 || off + frame > len {
            break;
        }
        (count, off) = (count + 1, off + frame);
    }
    Ok((len, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Range;

    /// A scratch directory, removed when the test ends.
    struct Dir(PathBuf);
    impl Dir {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!("agentmon-spool-{}-{name}", std::process::id()));
            fs::remove_dir_all(&path).ok();
            Self(path)
        }
        fn segs(&self) -> Vec<PathBuf> {
            let entries = fs::read_dir(&self.0).expect("ls").map(|e| e.expect("entry").path());
            let mut v: Vec<_> = entries.filter(|p| p.extension().is_some_and(|e| e == "seg")).collect();
            v.sort();
            v
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            fs::remove_dir_all(&self.0).ok();
        }
    }

    fn payload(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 7 + j) as u8).collect()
    }
    fn recs(range: Range<usize>, len: fn(usize) -> usize) -> Vec<SpoolRecord> {
        range.map(|i| SpoolRecord { enqueued_ms: 1000 + i as u64, payload: payload(i, len(i)) }).collect()
    }
    fn fill(s: &mut Spool, range: Range<usize>, len: fn(usize) -> usize) {
        for r in recs(range, len) {
            s.append(r.enqueued_ms, &r.payload).expect("append");
        }
    }
    fn read_all(s: &mut Spool) -> Vec<SpoolRecord> {
        let mut out = Vec::new();
        loop {
            let batch = s.read_batch(7, 1000).expect("read");
            if batch.is_empty() {
                return out;
            }
            out.extend(batch);
        }
    }
    fn varied(i: usize) -> usize {
        i * 37 % 300
    }
    fn hundred(_: usize) -> usize {
        100 // 116-byte frames
    }

    #[test]
    fn round_trip() {
        let d = Dir::new("round_trip");
        let mut s = Spool::open(&d.0, 1 << 30, 1 << 20).expect("open");
        assert!(s.is_empty() && s.is_drained());
        fill(&mut s, 0..1000, varied);
        let st = s.stats();
        assert_eq!((st.records, st.segments, st.corrupt, st.oldest_enqueued_ms), (1000, 1, 0, Some(1000)));
        assert_eq!(st.bytes, (0..1000).map(|i| 16 + varied(i) as u64).sum::<u64>());
        assert_eq!(read_all(&mut s), recs(0..1000, varied));
        assert!(s.is_drained() && !s.is_empty());
        assert_eq!(s.stats().records, 1000);
        s.commit().expect("commit");
        let st = s.stats();
        assert_eq!((st.records, st.segments, st.bytes, st.oldest_enqueued_ms), (0, 0, 0, None));
        assert!(s.is_empty() && d.segs().is_empty());
    }

    #[test]
    fn rotation_and_deletion() {
        let d = Dir::new("rotation");
        let mut s = Spool::open(&d.0, 1 << 30, 1024).expect("open");
        fill(&mut s, 0..100, hundred); // 9 frames per segment
        assert_eq!((s.stats().segments, d.segs().len()), (12, 12));
        assert_eq!(s.read_batch(20, usize::MAX).expect("read"), recs(0..20, hundred));
        s.commit().expect("commit");
        assert_eq!((s.stats().segments, d.segs().len(), s.stats().records), (10, 10, 80));
        assert_eq!(read_all(&mut s), recs(20..100, hundred));
        assert_eq!(d.segs().len(), 10, "nothing is deleted before commit");
        s.rewind();
        assert!(!s.is_drained());
        assert_eq!(read_all(&mut s), recs(20..100, hundred));
        s.commit().expect("commit");
        assert_eq!((s.stats().segments, d.segs().len(), s.stats().records), (0, 0, 0));
        fill(&mut s, 100..101, hundred);
        assert_eq!(read_all(&mut s), recs(100..101, hundred));
    }

    #[test]
    fn restart_resumes_after_commit() {
        let d = Dir::new("restart");
        let mut s = Spool::open(&d.0, 1 << 30, 2048).expect("open");
        fill(&mut s, 0..200, varied);
        s.sync().expect("sync");
        assert_eq!(s.read_batch(100, usize::MAX).expect("read"), recs(0..100, varied));
        s.commit().expect("commit");
        drop(s);
        let mut s = Spool::open(&d.0, 1 << 30, 2048).expect("reopen");
        assert_eq!((s.stats().records, s.stats().oldest_enqueued_ms), (100, Some(1100)));
        assert_eq!(read_all(&mut s), recs(100..200, varied));
        s.commit().expect("commit");
        drop(s);
        let mut s = Spool::open(&d.0, 1 << 30, 2048).expect("reopen");
        assert_eq!(s.stats().records, 0);
        assert!(read_all(&mut s).is_empty() && s.is_empty());
    }

    /// Writes 30 records of 100 bytes, lets `damage` edit the segment files and reopens, then expects every
    /// record but `lost`, exactly one corrupt frame, and the count to end up exact.
    fn damaged(name: &str, seg_bytes: u64, lost: usize, damage: impl FnOnce(&[PathBuf])) {
        let d = Dir::new(name);
        fill(&mut Spool::open(&d.0, 1 << 30, seg_bytes).expect("open"), 0..30, hundred);
        damage(&d.segs());
        let mut s = Spool::open(&d.0, 1 << 30, seg_bytes).expect("reopen");
        let want: Vec<_> = recs(0..30, hundred).into_iter().filter(|r| r.enqueued_ms != 1000 + lost as u64).collect();
        assert_eq!(read_all(&mut s), want);
        assert_eq!((s.stats().corrupt, s.stats().records), (1, 29));
        s.rewind();
        let again = (read_all(&mut s).len(), s.stats().corrupt, s.stats().records);
        assert_eq!(again, (29, 1, 29), "re-read, reported once");
        s.commit().expect("commit");
        assert_eq!((s.stats().records, s.stats().segments), (0, 0));
    }
    fn cut(path: &Path, bytes: u64) {
        let f = OpenOptions::new().write(true).open(path).expect("open segment");
        f.set_len(f.metadata().expect("stat").len() - bytes).expect("truncate");
    }

    #[test]
    fn truncated_mid_record() {
        // Segments of 9, 9, 9, 3 records: cut into the payload of 17, the second segment's last record,
        // then into the header of 29, the very last one.
        damaged("trunc_mid", 1024, 17, |segs| cut(&segs[1], 50));
        damaged("trunc_last", 1024, 29, |segs| cut(&segs[3], 110));
    }

    #[test]
    fn flipped_byte() {
        // Record 15 starts at 15 * 116: flip a payload byte, then the length's low byte (100 -> 101, still
        // plausible), then its high byte (far too long).
        for (name, at, mask) in [("flip_payload", 26, 0x10), ("flip_len_lo", 0, 1), ("flip_len_hi", 3, 0xff)] {
            damaged(name, 1 << 20, 15, |segs| {
                let mut bytes = fs::read(&segs[0]).expect("read segment");
                bytes[15 * 116 + at] ^= mask;
                fs::write(&segs[0], bytes).expect("write segment");
            });
        }
    }

    #[test]
    fn full_until_commit_frees_space() {
        let d = Dir::new("full");
        let mut s = Spool::open(&d.0, 1000, 300).expect("open"); // 3 frames per segment, room for 8
        fill(&mut s, 0..8, hundred);
        let err = s.append(1, &payload(8, 100)).expect_err("full");
        assert!(matches!(err, SpoolError::Full { max_bytes: 1000 }) && err.is_no_space());
        assert_eq!(s.stats().records, 8);
        assert_eq!(s.read_batch(3, usize::MAX).expect("read").len(), 3);
        s.commit().expect("commit");
        assert_eq!(s.stats().bytes, 5 * 116);
        fill(&mut s, 8..11, hundred);
        assert!(s.append(1, &payload(11, 100)).expect_err("full again").is_no_space());
        assert_eq!(read_all(&mut s), recs(3..11, hundred));
        s.commit().expect("commit");
        s.append(7, &[0; 5000]).expect("an empty spool takes one record of any size");
        assert!(matches!(s.append(8, &[0]), Err(SpoolError::Full { .. })));
        let io = |source| SpoolError::Io { path: d.0.clone(), source };
        assert!(io(io::Error::from_raw_os_error(28)).is_no_space());
        assert!(!io(io::Error::from(ErrorKind::NotFound)).is_no_space());
    }

    #[test]
    fn oldest_enqueued_ms() {
        let d = Dir::new("oldest");
        let mut s = Spool::open(&d.0, 1 << 30, 300).expect("open");
        assert_eq!(s.stats().oldest_enqueued_ms, None);
        fill(&mut s, 0..10, hundred);
        assert_eq!(s.stats().oldest_enqueued_ms, Some(1000));
        s.read_batch(1, usize::MAX).expect("read");
        assert_eq!(s.stats().oldest_enqueued_ms, Some(1000), "read but not committed");
        s.commit().expect("commit");
        assert_eq!(s.stats().oldest_enqueued_ms, Some(1001));
        s.read_batch(4, usize::MAX).expect("read");
        s.commit().expect("commit");
        assert_eq!(s.stats().oldest_enqueued_ms, Some(1005));
        drop(s);
        let mut s = Spool::open(&d.0, 1 << 30, 300).expect("reopen");
        assert_eq!(s.stats().oldest_enqueued_ms, Some(1005));
        read_all(&mut s);
        s.commit().expect("commit");
        assert_eq!(s.stats().oldest_enqueued_ms, None);
        s.append(42, b"x").expect("append");
        assert_eq!(s.stats().oldest_enqueued_ms, Some(42));
    }
}
