//! A hostile disk under the agent's channel (issue 20, "a hostile virtio device"), on the host:
//! `agent::channel` reads the request through the `Disk` trait, which the guest implements with
//! its virtio-blk driver. Whatever the device does at that level — change a sector's bytes after
//! it was read, fail any request, lie about its size or the stream's length — the reader delivers
//! exactly the bytes of one read of each sector, in order, or stops with an error. Since the
//! agent hashes a bulk transfer's bytes from the same frames it unpacks (`job.rs: BulkStream`),
//! what it attests is what it used. (Used-ring lengths and ids are the virtqueue driver's to
//! check, in `arch/virtio.rs`, below this trait.)
use agent::channel::{Disk, DiskError, FrameReader, InStream, Incoming, StreamError, DATA_OFFSET, SECTOR_SIZE, STREAM_MAGIC};
use agent::proto::{self, Type};
use std::cell::RefCell;
use std::rc::Rc;

/// A disk image holding a stream of `frames`.
fn stream_disk(frames: &[(Type, Vec<u8>)]) -> Vec<u8> {
    let mut stream = Vec::new();
    for (ty, payload) in frames {
        stream.extend_from_slice(&proto::frame(*ty, payload));
    }
    let mut disk = vec![0u8; DATA_OFFSET as usize];
    disk[..8].copy_from_slice(&STREAM_MAGIC);
    disk[8..16].copy_from_slice(&(stream.len() as u64).to_le_bytes());
    disk.extend_from_slice(&stream);
    disk.resize(disk.len().next_multiple_of(SECTOR_SIZE), 0);
    disk
}

/// A request: a Ping, a 3.5 MiB bulk transfer of varied bytes (several of the reader's 1 MiB
/// windows, frames straddling them), a Shutdown.
fn request() -> Vec<(Type, Vec<u8>)> {
    let total = 7 << 19;
    let data: Vec<u8> = (0..total as u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    let mut frames = vec![(Type::Ping, b"hostile".to_vec()), (Type::BulkBegin, (total as u64).to_le_bytes().to_vec())];
    // Odd-sized chunks, so frame boundaries fall anywhere in a sector.
    for chunk in data.chunks(proto::MAX_PAYLOAD - 4093) {
        frames.push((Type::BulkData, chunk.to_vec()));
    }
    frames.push((Type::Shutdown, Vec::new()));
    frames
}

#[derive(Default)]
struct Log {
    /// Every read: first sector, bytes returned.
    reads: Vec<(u64, Vec<u8>)>,
}

/// The hostile device: after each read it changes every byte it returned (the host rewriting
/// the disk between two reads of a sector); it fails the `fail_at`-th read; it may claim more
/// sectors than it has, and fails reads past its end.
struct Hostile {
    data: Vec<u8>,
    sectors: u64,
    fail_at: Option<usize>,
    log: Rc<RefCell<Log>>,
}

impl Hostile {
    fn new(data: Vec<u8>) -> (Self, Rc<RefCell<Log>>) {
        let log = Rc::new(RefCell::new(Log::default()));
        (Hostile { sectors: (data.len() / SECTOR_SIZE) as u64, data, fail_at: None, log: log.clone() }, log)
    }
}

impl Disk for Hostile {
    fn sectors(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let mut log = self.log.borrow_mut();
        if self.fail_at == Some(log.reads.len()) {
            log.reads.push((sector, Vec::new()));
            return Err(DiskError);
        }
        let start = usize::try_from(sector).ok().and_then(|s| s.checked_mul(SECTOR_SIZE)).ok_or(DiskError)?;
        let range = self.data.get_mut(start..start.checked_add(buf.len()).ok_or(DiskError)?).ok_or(DiskError)?;
        buf.copy_from_slice(range);
        for b in range.iter_mut() {
            *b ^= 0xA5;
        }
        log.reads.push((sector, buf.to_vec()));
        Ok(())
    }

    fn write(&mut self, _: u64, _: &[u8]) -> Result<(), DiskError> {
        Err(DiskError)
    }
}

/// Reads frames until the end or an error.
fn read_all(disk: Hostile) -> (Vec<Incoming>, Result<(), StreamError>) {
    let mut frames = Vec::new();
    let mut reader = match InStream::open(disk) {
        Ok(s) => FrameReader::new(s),
        Err(e) => return (frames, Err(e)),
    };
    loop {
        match reader.next() {
            Ok(Incoming::End) => return (frames, Ok(())),
            Ok(f) => frames.push(f),
            Err(e) => return (frames, Err(e)),
        }
    }
}

fn expected(frames: &[(Type, Vec<u8>)]) -> Vec<Incoming> {
    frames.iter().map(|(t, p)| Incoming::Frame(*t, p.clone())).collect()
}

#[test]
fn a_disk_that_changes_under_the_reader_is_read_once_per_sector() {
    let frames = request();
    let (disk, log) = Hostile::new(stream_disk(&frames));
    let (got, end) = read_all(disk);
    assert_eq!(end, Ok(()));
    // Every byte the disk changed after a read was never read again: the frames are the
    // original ones, not a mixture of two versions.
    assert!(got == expected(&frames), "the frames delivered differ from those on the disk");
    // And no sector was fetched twice (the header sector once, with the stream's first window
    // in the same request, then the stream's in disjoint, ascending windows).
    let log = log.borrow();
    let mut covered: Vec<(u64, u64)> = log.reads.iter().map(|(s, b)| (*s, *s + (b.len() / SECTOR_SIZE) as u64)).collect();
    covered.sort();
    for w in covered.windows(2) {
        assert!(w[0].1 <= w[1].0, "sectors {:?} and {:?} overlap: a double fetch", w[0], w[1]);
    }
    assert_eq!(covered[0].0, 0, "the header sector first");
    assert!(covered.iter().filter(|(start, _)| *start == 0).count() == 1, "the header sector, once");
}

#[test]
fn a_disk_that_fails_any_read_stops_the_reader_after_whole_frames_only() {
    let frames = request();
    let (disk, log) = Hostile::new(stream_disk(&frames));
    let reads = {
        let (_, end) = read_all(disk);
        assert_eq!(end, Ok(()));
        log.borrow().reads.len()
    };
    assert!(reads >= 4, "{reads} reads: the test needs several windows");
    for fail_at in 0..reads {
        let (mut disk, _) = Hostile::new(stream_disk(&frames));
        disk.fail_at = Some(fail_at);
        let (got, end) = read_all(disk);
        assert_eq!(end, Err(StreamError::Disk), "read {fail_at} failed");
        // What was delivered before the failure is a prefix of the request, frame for frame.
        assert!(got.len() < frames.len() && got == expected(&frames[..got.len()]), "read {fail_at}: a frame not on the disk");
    }
}

#[test]
fn a_disk_that_lies_about_its_size_or_the_stream_length_is_refused_or_stops() {
    let frames = request();
    let image = stream_disk(&frames);
    // A stream longer than the disk says it is: refused at once.
    let (mut disk, _) = Hostile::new(image.clone());
    disk.sectors = 9;
    assert_eq!(InStream::open(disk).err(), Some(StreamError::LengthOutOfRange));
    // A disk that claims every sector there is, with a stream length to match: the reader
    // gets the real frames, then the device fails the reads past its end, and it stops.
    for len in [image.len() as u64 - DATA_OFFSET + 4096 * 1024, u64::MAX / 2] {
        let mut lying = image.clone();
        lying[8..16].copy_from_slice(&len.to_le_bytes());
        let (mut disk, _) = Hostile::new(lying);
        disk.sectors = u64::MAX;
        let (got, end) = read_all(disk);
        assert!(got.len() <= frames.len() && got[..frames.len().min(got.len())] == expected(&frames)[..got.len().min(frames.len())]);
        assert!(matches!(end, Err(StreamError::Disk) | Ok(())), "{end:?}");
    }
    // A length past what the disk's sector count allows, by one byte.
    let (disk, _) = Hostile::new(image.clone());
    let cap = disk.sectors * SECTOR_SIZE as u64 - DATA_OFFSET;
    let mut over = image;
    over[8..16].copy_from_slice(&(cap + 1).to_le_bytes());
    let (disk, _) = Hostile::new(over);
    assert_eq!(InStream::open(disk).err(), Some(StreamError::LengthOutOfRange));
}
