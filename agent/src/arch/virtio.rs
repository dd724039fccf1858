//! virtio devices. The `Hal` gives devices *bounce buffers*: a request's bytes are copied into
//! pages of the shared DMA pool (arch/memory.rs) and back, so the device never sees the agent's
//! own memory. Under SEV-SNP and TDX that pool is the only RAM shared with the host; device
//! registers are reached through the same shared alias (their accesses trap as #VC/#VE MMIO,
//! which arch/tee.rs emulates). On a plain VM the code path is the same.
use super::layout::{self, PAGE_SIZE};
use super::memory;
use super::pci::{self, PortCam};
use alloc::vec::Vec;
use core::ptr::NonNull;
use virtio_drivers::device::blk::{SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::transport::pci::bus::PciRoot;
use virtio_drivers::transport::pci::{PciTransport, virtio_device_type};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

pub struct AgentHal;

fn pages(len: usize) -> usize {
    len.div_ceil(PAGE_SIZE as usize)
}

// SAFETY: dma_alloc returns zeroed, page-aligned, exclusively owned memory from the shared DMA
// pool (mapped by the shared alias, so the physical address is exact); mmio_phys_to_virt maps
// BAR addresses (below 4 GiB, assigned by us) through the shared alias; share/unshare copy
// through freshly allocated DMA pages that nothing else aliases.
unsafe impl Hal for AgentHal {
    fn dma_alloc(pages: usize, _dir: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match memory::alloc_dma_pages(pages) {
            Some((phys, virt)) => (phys as PhysAddr, virt),
            None => super::power::fail(super::power::Failure::OutOfMemory),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: virtio-drivers passes back exactly what dma_alloc returned.
        unsafe { memory::free_dma_pages(vaddr, pages) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(layout::shared_phys_to_virt(paddr as u64) as *mut u8).expect("shared alias is non-null")
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let len = buffer.len();
        // Not zeroed: a driver-to-device buffer is overwritten below, a device-to-driver one by
        // the device, and only `len` bytes are ever copied back.
        let Some((phys, bounce)) = memory::alloc_bounce_pages(pages(len)) else {
            super::power::fail(super::power::Failure::OutOfMemory)
        };
        if direction != BufferDirection::DeviceToDriver {
            // SAFETY: `buffer` is valid for `len` bytes (caller contract); `bounce` has at least
            // `len` bytes and does not overlap it.
            unsafe { core::ptr::copy_nonoverlapping(buffer.as_ptr() as *const u8, bounce.as_ptr(), len) };
        }
        phys
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let len = buffer.len();
        let bounce = layout::shared_phys_to_virt(paddr as u64) as *mut u8;
        if direction != BufferDirection::DriverToDevice {
            // SAFETY: the bounce buffer from `share` holds `len` bytes; `buffer` is valid for them.
            unsafe { core::ptr::copy_nonoverlapping(bounce, buffer.as_ptr() as *mut u8, len) };
        }
        // SAFETY: allocated by `share` above with the same page count.
        unsafe { memory::free_dma_pages(NonNull::new_unchecked(bounce), pages(len)) };
    }
}

/// A virtio-blk disk, seen by the portable channel code as a [`agent::channel::Disk`].
pub struct BlkDisk(VirtIOBlk<AgentHal, PciTransport>);

impl agent::channel::Disk for BlkDisk {
    fn sectors(&self) -> u64 {
        self.0.capacity()
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), agent::channel::DiskError> {
        self.0.read_blocks(sector as usize, buf).map_err(|_| agent::channel::DiskError)
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), agent::channel::DiskError> {
        self.0.write_blocks(sector as usize, buf).map_err(|_| agent::channel::DiskError)
    }
}

const _: () = assert!(SECTOR_SIZE == agent::channel::SECTOR_SIZE);

/// Finds every virtio-blk device on bus 0, in slot order, and initialises it.
pub fn disks() -> Vec<BlkDisk> {
    let mut root = PciRoot::new(PortCam);
    let mut next_bar = layout::MMIO_WINDOW.start;
    let mut found = Vec::new();
    let functions: Vec<_> = root.enumerate_bus(0).collect();
    for (f, info) in functions {
        if virtio_device_type(&info) != Some(DeviceType::Block) {
            continue;
        }
        if let Err(e) = pci::assign_bars(&mut root, f, &mut next_bar) {
            log::error!("virtio-blk at {f}: {e}");
            continue;
        }
        match PciTransport::new::<AgentHal, _>(&mut root, f).map_err(|_| "transport").and_then(|t| VirtIOBlk::new(t).map_err(|_| "device")) {
            Ok(blk) => found.push(BlkDisk(blk)),
            Err(e) => log::error!("virtio-blk at {f}: {e}"),
        }
    }
    found
}
