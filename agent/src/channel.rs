//! The channel: frames carried over two virtio-blk disks (see docs/channel.md).
//!
//! A fresh VM runs exactly one job, so the loader knows the whole request before boot: it writes
//! it as a *stream disk* (the agent's input) and gives the agent an empty one for its output,
//! which the loader reads while the VM runs. A stream disk is:
//!
//! ```text
//! byte 0     b"NXAGSTRM"
//! byte 8     committed length L (u64 LE): the bytes of the stream that are valid
//! byte 16    flags (u64 LE; the request disk only): bit 0 = a debug log on the serial port
//! byte 4096  the stream: L bytes of frames
//! ```
//!
//! The agent writes its output stream's data first and the committed length after it, so the
//! loader never reads a half-written frame. Every length here comes from the host and is checked
//! against the disk's size before use.
//!
//! Each disk request is a VM exit (the notification), so the streams make few: the request
//! disk's header and its first window come in one read, an output flush is one write of the
//! new sectors and one of the header, and the output stream's header is first written by the
//! first flush (until then the loader sees no stream, which is what an empty one means).
use crate::proto::{self, Header, HeaderError, Type, HEADER_LEN};
use alloc::vec;
use alloc::vec::Vec;

pub const SECTOR_SIZE: usize = 512;
pub const STREAM_MAGIC: [u8; 8] = *b"NXAGSTRM";
/// Where the stream's bytes start on the disk.
pub const DATA_OFFSET: u64 = 4096;
/// How much is read or written per disk request.
const WINDOW: usize = 1 << 20;
/// Request flag: the loader asks for the agent's log on the serial port as well (`--debug-serial`).
pub const FLAG_DEBUG_SERIAL: u64 = 1;

/// A disk failed a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskError;

/// A block device (virtio-blk in the guest, a `Vec` in tests).
pub trait Disk {
    fn sectors(&self) -> u64;
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError>;
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DiskError>;
}

/// Why a stream disk cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamError {
    Disk,
    /// The disk does not start with `STREAM_MAGIC`.
    NotAStream,
    /// The declared length does not fit on the disk.
    LengthOutOfRange,
    /// The output stream is full.
    Full,
}

impl From<DiskError> for StreamError {
    fn from(_: DiskError) -> Self {
        StreamError::Disk
    }
}

fn capacity(d: &dyn Disk) -> u64 {
    d.sectors().saturating_mul(SECTOR_SIZE as u64).saturating_sub(DATA_OFFSET)
}

/// The input stream: reads the loader's bytes in `WINDOW`-sized disk requests.
pub struct InStream<D: Disk> {
    disk: D,
    len: u64,
    flags: u64,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<D: Disk> InStream<D> {
    /// Reads the header and, in the same disk request, the stream's first window.
    pub fn open(mut disk: D) -> Result<Self, StreamError> {
        let disk_bytes = disk.sectors().saturating_mul(SECTOR_SIZE as u64);
        let first = (DATA_OFFSET + WINDOW as u64).min(disk_bytes).max(SECTOR_SIZE as u64) as usize;
        let mut buf = vec![0u8; first];
        disk.read(0, &mut buf)?;
        if buf[0..8] != STREAM_MAGIC {
            return Err(StreamError::NotAStream);
        }
        let len = u64::from_le_bytes(buf[8..16].try_into().unwrap());
        let flags = u64::from_le_bytes(buf[16..24].try_into().unwrap());
        if len > capacity(&disk) {
            return Err(StreamError::LengthOutOfRange);
        }
        // The stream's bytes that came with the header (none on a disk of one sector).
        let buf = buf.get(DATA_OFFSET as usize..).map(<[u8]>::to_vec).unwrap_or_default();
        Ok(Self { disk, len, flags, pos: 0, buf, buf_start: 0 })
    }

    /// The header's flags ([`FLAG_DEBUG_SERIAL`]; other bits are ignored).
    pub fn flags(&self) -> u64 {
        self.flags
    }

    /// Bytes left in the stream.
    pub fn remaining(&self) -> u64 {
        self.len - self.pos
    }

    /// Copies up to `out.len()` bytes; returns how many (0 at the end of the stream).
    pub fn read(&mut self, out: &mut [u8]) -> Result<usize, StreamError> {
        let mut done = 0;
        while done < out.len() && self.pos < self.len {
            let in_buf = self.pos >= self.buf_start && self.pos < self.buf_start + self.buf.len() as u64;
            if !in_buf {
                // Refill: read the window that starts at the sector holding `pos`.
                let start = self.pos / SECTOR_SIZE as u64 * SECTOR_SIZE as u64;
                let want = ((self.len - start) as usize).min(WINDOW).next_multiple_of(SECTOR_SIZE);
                self.buf.resize(want, 0);
                self.disk.read((DATA_OFFSET + start) / SECTOR_SIZE as u64, &mut self.buf)?;
                self.buf_start = start;
            }
            let off = (self.pos - self.buf_start) as usize;
            let avail = (self.buf.len() - off).min((self.len - self.pos) as usize);
            let n = avail.min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.buf[off..off + n]);
            done += n;
            self.pos += n as u64;
        }
        Ok(done)
    }

    /// Skips `n` bytes (or to the end).
    pub fn skip(&mut self, n: u64) {
        self.pos = self.pos.saturating_add(n).min(self.len);
    }
}

/// The output stream: appends bytes, and commits them (data, then length) on `flush`.
pub struct OutStream<D: Disk> {
    disk: D,
    /// Bytes already on disk and committed, except the partial last sector kept in `pending`.
    flushed: u64,
    /// The committed length the header on disk holds (None: no header written yet).
    committed: Option<u64>,
    pending: Vec<u8>,
    cap: u64,
}

impl<D: Disk> OutStream<D> {
    /// An output stream on `disk`; its header is written by the first flush.
    pub fn create(disk: D) -> Result<Self, StreamError> {
        let cap = capacity(&disk);
        if cap == 0 {
            return Err(StreamError::LengthOutOfRange);
        }
        Ok(Self { disk, flushed: 0, committed: None, pending: Vec::new(), cap })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        if self.flushed + self.pending.len() as u64 + bytes.len() as u64 > self.cap {
            return Err(StreamError::Full);
        }
        if self.pending.capacity() == 0 {
            // Room for a window, the write that crosses it and the sector padding: no
            // reallocation after this one.
            self.pending.reserve(WINDOW + proto::MAX_PAYLOAD + HEADER_LEN + 2 * SECTOR_SIZE);
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= WINDOW {
            self.flush()?;
        }
        Ok(())
    }

    /// Bytes the stream can still take.
    pub fn room(&self) -> u64 {
        self.cap.saturating_sub(self.flushed + self.pending.len() as u64)
    }

    /// Writes everything pending (whole sectors; the partial tail is rewritten next time) and
    /// then the committed length.
    pub fn flush(&mut self) -> Result<(), StreamError> {
        let end = self.flushed + self.pending.len() as u64;
        if self.committed == Some(end) {
            return Ok(()); // nothing new: no disk request
        }
        if !self.pending.is_empty() {
            // Padded to whole sectors in place, and the partial last sector moved to the front
            // afterwards: `pending` keeps its capacity from one flush to the next, so a byte is
            // copied twice on its way out (into `pending`, into the bounce buffer), never by a
            // reallocation (under TCG every copy is emulated).
            let len = self.pending.len();
            let tail = len % SECTOR_SIZE;
            let whole = len - tail;
            self.pending.resize(len.next_multiple_of(SECTOR_SIZE), 0);
            let written = self.disk.write((DATA_OFFSET + self.flushed) / SECTOR_SIZE as u64, &self.pending);
            self.pending.truncate(len);
            written?;
            // Keep the partial sector for the next flush.
            self.pending.drain(..whole);
            self.flushed += whole as u64;
        }
        // Then the committed length (an empty stream: the header alone, length 0).
        let mut head = [0u8; SECTOR_SIZE];
        head[0..8].copy_from_slice(&STREAM_MAGIC);
        head[8..16].copy_from_slice(&end.to_le_bytes());
        self.disk.write(0, &head)?;
        self.committed = Some(end);
        Ok(())
    }
}

/// What reading the next frame gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Frame(Type, Vec<u8>),
    /// A frame that failed its checks; the reader has re-synchronised past it.
    Malformed(HeaderError),
    /// The stream ended in the middle of a frame.
    Truncated,
    /// The stream ended cleanly.
    End,
}

/// Reads frames from an input stream, re-synchronising on 8-byte boundaries after bad headers.
pub struct FrameReader<D: Disk> {
    stream: InStream<D>,
    /// Bytes read ahead of the stream position (a candidate header after a bad one).
    carry: Vec<u8>,
    /// A frame handed back with `put_back`, returned by the next `next`.
    back: Option<Incoming>,
}

impl<D: Disk> FrameReader<D> {
    pub fn new(stream: InStream<D>) -> Self {
        Self { stream, carry: Vec::new(), back: None }
    }

    /// Hands a frame back: the next `next` returns it (one frame of look-ahead, for a reader
    /// that skips frames until one it does not own).
    pub fn put_back(&mut self, frame: Incoming) {
        debug_assert!(self.back.is_none());
        self.back = Some(frame);
    }

    // Not an Iterator: a frame reader ends with `Incoming::End`, and its errors are the stream's.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Incoming, StreamError> {
        if let Some(f) = self.back.take() {
            return Ok(f);
        }
        let mut h = [0u8; HEADER_LEN];
        let have = self.carry.len();
        h[..have].copy_from_slice(&self.carry);
        self.carry.clear();
        let got = have + self.stream.read(&mut h[have..])?;
        if got == 0 {
            return Ok(Incoming::End);
        }
        if got < HEADER_LEN {
            return Ok(Incoming::Truncated);
        }
        match proto::decode_header(&h) {
            Ok(Header { ty, len }) => {
                let padded = proto::padded(len);
                if (padded as u64) > self.stream.remaining() {
                    self.stream.skip(u64::MAX);
                    return Ok(Incoming::Truncated);
                }
                let mut payload = vec![0u8; padded];
                self.stream.read(&mut payload)?;
                payload.truncate(len);
                Ok(Incoming::Frame(ty, payload))
            }
            Err(e @ HeaderError::UnknownType { len, .. }) => {
                self.stream.skip(proto::padded(len as usize) as u64);
                Ok(Incoming::Malformed(e))
            }
            Err(e) => {
                // The length cannot be trusted: try again 8 bytes further on.
                self.carry.extend_from_slice(&h[8..]);
                Ok(Incoming::Malformed(e))
            }
        }
    }
}

/// Where the agent's log lines come from: hands each waiting line to the callback as
/// (level, text) and forgets it (the firmware's ring, `arch::serial::drain`).
pub type LogSource = fn(&mut dyn FnMut(u8, &[u8]));

/// Room a `Log` frame must leave in the output stream: log lines never take the space the
/// agent's own answers (an Error, Bye) need.
pub const LOG_RESERVE: u64 = 64 << 10;

/// Writes frames to an output stream.
pub struct FrameWriter<D: Disk> {
    stream: OutStream<D>,
    log: Option<LogSource>,
}

impl<D: Disk> FrameWriter<D> {
    pub fn new(stream: OutStream<D>) -> Self {
        Self { stream, log: None }
    }

    /// From now on, the log lines waiting in `source` go out as `Log` frames ahead of each
    /// frame sent and each flush.
    pub fn set_log(&mut self, source: LogSource) {
        self.log = Some(source);
    }

    /// The waiting log lines, as `Log` frames (`[level u8][text]`), while they leave
    /// [`LOG_RESERVE`] bytes of room; lines that do not fit are dropped.
    fn send_log(&mut self) {
        let Some(source) = self.log else { return };
        let stream = &mut self.stream;
        source(&mut |level, text| {
            let len = 1 + text.len().min(proto::MAX_PAYLOAD - 1);
            if (HEADER_LEN + proto::padded(len)) as u64 + LOG_RESERVE > stream.room() {
                return;
            }
            let _ = stream
                .write(&proto::encode_header(Type::Log, len))
                .and_then(|()| stream.write(&[level]))
                .and_then(|()| stream.write(&text[..len - 1]))
                .and_then(|()| stream.write(&[0u8; 8][..proto::padded(len) - len]));
        });
    }

    /// Appends one frame (payloads over MAX_PAYLOAD are a bug in the agent, not host input).
    pub fn send(&mut self, ty: Type, payload: &[u8]) -> Result<(), StreamError> {
        assert!(payload.len() <= proto::MAX_PAYLOAD);
        self.send_log();
        // All or nothing: a frame that does not fit leaves no header behind.
        if (HEADER_LEN + proto::padded(payload.len())) as u64 > self.stream.room() {
            return Err(StreamError::Full);
        }
        self.stream.write(&proto::encode_header(ty, payload.len()))?;
        self.stream.write(payload)?;
        let pad = proto::padded(payload.len()) - payload.len();
        self.stream.write(&[0u8; 8][..pad])
    }

    pub fn flush(&mut self) -> Result<(), StreamError> {
        self.send_log();
        self.stream.flush()
    }

    /// Bytes of frames (headers included) the stream can still take.
    pub fn room(&self) -> u64 {
        self.stream.room()
    }
}

#[cfg(test)]
pub mod tests {
    extern crate std;
    use super::*;
    use alloc::rc::Rc;
    use core::cell::RefCell;

    /// A RAM disk shared between a test and the stream under test; it counts the requests
    /// made of it (each one a VM exit in the guest).
    #[derive(Clone)]
    pub struct RamDisk(pub Rc<RefCell<Vec<u8>>>, pub Rc<core::cell::Cell<usize>>);

    impl RamDisk {
        pub fn new(bytes: usize) -> Self {
            RamDisk(Rc::new(RefCell::new(vec![0; bytes])), Rc::default())
        }
        pub fn requests(&self) -> usize {
            self.1.get()
        }
        /// A stream disk holding `stream`, with room to spare.
        pub fn with_stream(stream: &[u8]) -> Self {
            let d = Self::new((DATA_OFFSET as usize + stream.len()).next_multiple_of(SECTOR_SIZE) + 4096);
            let mut b = d.0.borrow_mut();
            b[0..8].copy_from_slice(&STREAM_MAGIC);
            b[8..16].copy_from_slice(&(stream.len() as u64).to_le_bytes());
            b[DATA_OFFSET as usize..DATA_OFFSET as usize + stream.len()].copy_from_slice(stream);
            drop(b);
            d
        }
        /// The committed stream of an output disk.
        pub fn stream(&self) -> Vec<u8> {
            let b = self.0.borrow();
            assert_eq!(b[0..8], STREAM_MAGIC);
            let len = u64::from_le_bytes(b[8..16].try_into().unwrap()) as usize;
            b[DATA_OFFSET as usize..DATA_OFFSET as usize + len].to_vec()
        }
    }

    impl Disk for RamDisk {
        fn sectors(&self) -> u64 {
            (self.0.borrow().len() / SECTOR_SIZE) as u64
        }
        fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
            assert_eq!(buf.len() % SECTOR_SIZE, 0);
            self.1.set(self.1.get() + 1);
            let s = sector as usize * SECTOR_SIZE;
            let b = self.0.borrow();
            buf.copy_from_slice(b.get(s..s + buf.len()).ok_or(DiskError)?);
            Ok(())
        }
        fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DiskError> {
            assert_eq!(buf.len() % SECTOR_SIZE, 0);
            self.1.set(self.1.get() + 1);
            let s = sector as usize * SECTOR_SIZE;
            let mut b = self.0.borrow_mut();
            b.get_mut(s..s + buf.len()).ok_or(DiskError)?.copy_from_slice(buf);
            Ok(())
        }
    }

    fn reader(stream: &[u8]) -> FrameReader<RamDisk> {
        FrameReader::new(InStream::open(RamDisk::with_stream(stream)).unwrap())
    }

    #[test]
    fn reads_frames_then_end() {
        let mut s = proto::frame(Type::Ping, b"hello");
        s.extend(proto::frame(Type::Shutdown, b""));
        let mut r = reader(&s);
        assert_eq!(r.next().unwrap(), Incoming::Frame(Type::Ping, b"hello".to_vec()));
        assert_eq!(r.next().unwrap(), Incoming::Frame(Type::Shutdown, vec![]));
        assert_eq!(r.next().unwrap(), Incoming::End);
    }

    #[test]
    fn a_frame_put_back_comes_next() {
        let mut s = proto::frame(Type::Ping, b"a");
        s.extend(proto::frame(Type::Ping, b"b"));
        let mut r = reader(&s);
        let a = r.next().unwrap();
        r.put_back(a);
        assert_eq!(r.next().unwrap(), Incoming::Frame(Type::Ping, b"a".to_vec()));
        assert_eq!(r.next().unwrap(), Incoming::Frame(Type::Ping, b"b".to_vec()));
        r.put_back(Incoming::End);
        assert_eq!(r.next().unwrap(), Incoming::End);
        assert_eq!(r.next().unwrap(), Incoming::End);
    }

    #[test]
    fn resynchronises_after_each_kind_of_bad_frame() {
        let ping = proto::frame(Type::Ping, b"p");
        let mut bad_magic = proto::frame(Type::Ping, b"x");
        bad_magic[0] = 0;
        let mut too_long = proto::encode_header(Type::Ping, 0).to_vec();
        too_long[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut unknown = proto::frame(Type::Ping, b"123456789");
        unknown[6] = 0xEE;
        for (bad, want) in [
            (bad_magic, HeaderError::BadMagic),
            (too_long, HeaderError::TooLong(u32::MAX)),
            (unknown, HeaderError::UnknownType { ty: 0xEE, len: 9 }),
        ] {
            let mut s = bad.clone();
            s.extend(&ping);
            let mut r = reader(&s);
            assert_eq!(r.next().unwrap(), Incoming::Malformed(want));
            // Zero or more further complaints while re-synchronising, then the Ping.
            loop {
                match r.next().unwrap() {
                    Incoming::Malformed(_) => continue,
                    other => {
                        assert_eq!(other, Incoming::Frame(Type::Ping, b"p".to_vec()));
                        break;
                    }
                }
            }
            assert_eq!(r.next().unwrap(), Incoming::End);
        }
    }

    #[test]
    fn truncated_payload_and_header() {
        let mut s = proto::frame(Type::Ping, &[7; 100]);
        s.truncate(50);
        assert_eq!(reader(&s).next().unwrap(), Incoming::Truncated);
        assert_eq!(reader(&s[..10]).next().unwrap(), Incoming::Truncated);
    }

    #[test]
    fn stream_length_is_checked_against_the_disk() {
        let d = RamDisk::with_stream(b"12345678");
        d.0.borrow_mut()[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(InStream::open(d).err(), Some(StreamError::LengthOutOfRange));
        let d = RamDisk::new(8192);
        assert_eq!(InStream::open(d).err(), Some(StreamError::NotAStream));
    }

    #[test]
    fn output_stream_commits_after_each_flush() {
        let disk = RamDisk::new(8 << 20);
        let mut w = FrameWriter::new(OutStream::create(disk.clone()).unwrap());
        assert_eq!(disk.0.borrow()[0..8], [0; 8], "no header before the first flush");
        w.send(Type::Pong, b"abc").unwrap();
        assert_eq!(disk.0.borrow()[0..8], [0; 8]); // not yet flushed
        assert_eq!(disk.requests(), 0);
        w.flush().unwrap();
        assert_eq!(disk.stream(), proto::frame(Type::Pong, b"abc"));
        assert_eq!(disk.requests(), 2, "a flush is one data write and one header write");
        w.flush().unwrap();
        assert_eq!(disk.requests(), 2, "a flush with nothing new makes no request");
        let big = vec![9u8; 3 << 20];
        let mut want = proto::frame(Type::Pong, b"abc");
        for chunk in big.chunks(proto::MAX_PAYLOAD) {
            w.send(Type::BulkData, chunk).unwrap();
            want.extend(proto::frame(Type::BulkData, chunk));
        }
        w.flush().unwrap();
        assert_eq!(disk.stream(), want);
        // Reading it back as an input stream gives the same frames.
        let mut r = FrameReader::new(InStream::open(disk.clone()).unwrap());
        assert_eq!(r.next().unwrap(), Incoming::Frame(Type::Pong, b"abc".to_vec()));
    }

    #[test]
    fn an_empty_output_stream_is_committed_by_its_first_flush() {
        let disk = RamDisk::new(8192);
        let mut w = FrameWriter::new(OutStream::create(disk.clone()).unwrap());
        w.flush().unwrap();
        assert_eq!(disk.stream(), Vec::<u8>::new());
        assert_eq!(disk.requests(), 1);
    }

    #[test]
    fn the_request_header_and_first_window_come_in_one_read() {
        let mut s = proto::frame(Type::Ping, b"hello");
        s.extend(proto::frame(Type::Shutdown, b""));
        let disk = RamDisk::with_stream(&s);
        disk.0.borrow_mut()[16..24].copy_from_slice(&FLAG_DEBUG_SERIAL.to_le_bytes());
        let mut r = FrameReader::new(InStream::open(disk.clone()).unwrap());
        assert_eq!(r.stream.flags(), FLAG_DEBUG_SERIAL);
        assert_eq!(r.next().unwrap(), Incoming::Frame(Type::Ping, b"hello".to_vec()));
        assert_eq!(r.next().unwrap(), Incoming::Frame(Type::Shutdown, vec![]));
        assert_eq!(r.next().unwrap(), Incoming::End);
        assert_eq!(disk.requests(), 1);
        // A stream longer than the first window is read on, a window at a time.
        let big = proto::frame(Type::BulkData, &[7; proto::MAX_PAYLOAD]);
        let mut s = big.clone();
        s.extend(&big);
        let disk = RamDisk::with_stream(&s);
        let mut r = FrameReader::new(InStream::open(disk.clone()).unwrap());
        assert_eq!(r.stream.flags(), 0);
        for _ in 0..2 {
            assert!(matches!(r.next().unwrap(), Incoming::Frame(Type::BulkData, p) if p.len() == proto::MAX_PAYLOAD));
        }
        assert_eq!(r.next().unwrap(), Incoming::End);
        assert_eq!(disk.requests(), 3);
    }

    std::thread_local! {
        static LINES: RefCell<Vec<(u8, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
    }

    fn test_log(f: &mut dyn FnMut(u8, &[u8])) {
        for (level, text) in LINES.with(|l| core::mem::take(&mut *l.borrow_mut())) {
            f(level, &text);
        }
    }

    #[test]
    fn log_lines_go_out_as_log_frames_ahead_of_frames_and_flushes() {
        let disk = RamDisk::new(8 << 20);
        let mut w = FrameWriter::new(OutStream::create(disk.clone()).unwrap());
        w.set_log(test_log);
        LINES.with(|l| l.borrow_mut().push((3, b"booted".to_vec())));
        w.send(Type::Hello, b"h").unwrap();
        LINES.with(|l| l.borrow_mut().push((2, b"late".to_vec())));
        w.flush().unwrap();
        let mut want = proto::frame(Type::Log, b"\x03booted");
        want.extend(proto::frame(Type::Hello, b"h"));
        want.extend(proto::frame(Type::Log, b"\x02late"));
        assert_eq!(disk.stream(), want);
        // Log lines never take the room the agent's own frames need.
        let small = RamDisk::new(DATA_OFFSET as usize + LOG_RESERVE as usize + 64);
        let mut w = FrameWriter::new(OutStream::create(small.clone()).unwrap());
        w.set_log(test_log);
        LINES.with(|l| l.borrow_mut().push((3, vec![b'x'; 100])));
        w.send(Type::Bye, b"").unwrap();
        w.flush().unwrap();
        assert_eq!(small.stream(), proto::frame(Type::Bye, b""));
    }

    #[test]
    fn output_stream_refuses_to_overflow() {
        let disk = RamDisk::new(DATA_OFFSET as usize + 1024);
        let mut w = FrameWriter::new(OutStream::create(disk).unwrap());
        assert_eq!(w.room(), 1024);
        assert_eq!(w.send(Type::BulkData, &[0; 2000]), Err(StreamError::Full));
        w.send(Type::Ping, &[0; 8]).unwrap();
        assert_eq!(w.room(), 1024 - 24);
    }
}
