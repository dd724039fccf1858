//! The frame reader on an arbitrary request stream: never panics, always terminates.
#![no_main]
use agent::channel::{Disk, DiskError, FrameReader, InStream, Incoming, DATA_OFFSET, SECTOR_SIZE, STREAM_MAGIC};
use libfuzzer_sys::fuzz_target;

struct Ram(Vec<u8>);
impl Disk for Ram {
    fn sectors(&self) -> u64 {
        (self.0.len() / SECTOR_SIZE) as u64
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let s = sector as usize * SECTOR_SIZE;
        buf.copy_from_slice(self.0.get(s..s + buf.len()).ok_or(DiskError)?);
        Ok(())
    }
    fn write(&mut self, _: u64, _: &[u8]) -> Result<(), DiskError> {
        Err(DiskError)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut disk = vec![0u8; (DATA_OFFSET as usize + data.len()).next_multiple_of(SECTOR_SIZE)];
    disk[..8].copy_from_slice(&STREAM_MAGIC);
    disk[8..16].copy_from_slice(&(data.len() as u64).to_le_bytes());
    disk[DATA_OFFSET as usize..DATA_OFFSET as usize + data.len()].copy_from_slice(data);
    let Ok(stream) = InStream::open(Ram(disk)) else { return };
    let mut r = FrameReader::new(stream);
    for _ in 0..data.len() + 2 {
        match r.next() {
            Ok(Incoming::End) | Ok(Incoming::Truncated) | Err(_) => return,
            Ok(_) => {}
        }
    }
    panic!("the reader did not terminate");
});
