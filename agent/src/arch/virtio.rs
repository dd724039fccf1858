//! virtio devices. The `Hal` gives devices *bounce buffers*: a request's bytes are copied into
//! pages of the shared DMA pool (arch/memory.rs) and back, so the device never sees the agent's
//! own memory. Under SEV-SNP and TDX that pool is the only RAM shared with the host; device
//! registers are reached through the same shared alias (their accesses trap as #VC/#VE MMIO,
//! which arch/tee.rs emulates). On a plain VM the code path is the same.
use super::layout::{self, PAGE_SIZE};
use super::memory;
use super::pci::{self, PortCam};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::ptr::NonNull;
use virtio_drivers::device::blk::{SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::transport::pci::bus::PciRoot;
use virtio_drivers::transport::pci::{PciTransport, virtio_device_type};
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
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

/// VIRTIO_F_ACCESS_PLATFORM (virtio 1.x §6): the device accesses memory through the platform's
/// DMA translation. QEMU offers it, and *requires* it, whenever `iommu_platform=on`, which it
/// forces for SEV-SNP and TDX guests (`virtio_validate_features`, hw/virtio/virtio.c: a driver
/// that does not accept it gets FEATURES_OK refused). The agent's buffers are bounce pages in
/// the shared pool at their physical addresses, which is what the platform translation (none,
/// with no vIOMMU) yields.
const ACCESS_PLATFORM: u64 = 1 << 33;

/// The PCI transport, with the two things virtio-drivers 0.13 leaves out of device
/// initialisation (virtio 1.x §3.1.1): accepting ACCESS_PLATFORM when offered, and reading the
/// status back after FEATURES_OK and DRIVER_OK ("re-read device status to ensure the
/// FEATURES_OK bit is still set: otherwise, the device does not support our subset of features
/// and the device is unusable"). What the device answered is kept for [`disks`] to check.
pub struct Negotiated {
    inner: PciTransport,
    record: Rc<RefCell<Negotiation>>,
}

/// What one device's initialisation exchanged.
#[derive(Clone, Copy, Debug, Default)]
struct Negotiation {
    offered: u64,
    accepted: u64,
    /// Status read back after the write that set FEATURES_OK, and after DRIVER_OK.
    features_ok: Option<DeviceStatus>,
    driver_ok: Option<DeviceStatus>,
}

impl Transport for Negotiated {
    fn device_type(&self) -> DeviceType {
        self.inner.device_type()
    }
    fn read_device_features(&mut self) -> u64 {
        let offered = self.inner.read_device_features();
        self.record.borrow_mut().offered = offered;
        offered
    }
    fn write_driver_features(&mut self, features: u64) {
        let mut r = self.record.borrow_mut();
        r.accepted = features | (r.offered & ACCESS_PLATFORM);
        self.inner.write_driver_features(r.accepted)
    }
    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.inner.max_queue_size(queue)
    }
    fn notify(&mut self, queue: u16) {
        self.inner.notify(queue)
    }
    fn get_status(&self) -> DeviceStatus {
        self.inner.get_status()
    }
    fn set_status(&mut self, status: DeviceStatus) {
        self.inner.set_status(status);
        let mut r = self.record.borrow_mut();
        if status.contains(DeviceStatus::DRIVER_OK) {
            r.driver_ok = Some(self.inner.get_status());
        } else if status.contains(DeviceStatus::FEATURES_OK) {
            r.features_ok = Some(self.inner.get_status());
        }
    }
    fn set_guest_page_size(&mut self, size: u32) {
        self.inner.set_guest_page_size(size)
    }
    fn requires_legacy_layout(&self) -> bool {
        self.inner.requires_legacy_layout()
    }
    fn queue_set(&mut self, queue: u16, size: u32, descriptors: PhysAddr, driver_area: PhysAddr, device_area: PhysAddr) {
        self.inner.queue_set(queue, size, descriptors, driver_area, device_area)
    }
    fn queue_unset(&mut self, queue: u16) {
        self.inner.queue_unset(queue)
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.inner.queue_used(queue)
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.inner.ack_interrupt()
    }
    fn read_config_generation(&self) -> u32 {
        self.inner.read_config_generation()
    }
    fn read_config_space<T: zerocopy::FromBytes + zerocopy::IntoBytes>(&self, offset: usize) -> virtio_drivers::Result<T> {
        self.inner.read_config_space(offset)
    }
    fn write_config_space<T: zerocopy::IntoBytes + zerocopy::Immutable>(&mut self, offset: usize, value: T) -> virtio_drivers::Result<()> {
        self.inner.write_config_space(offset, value)
    }
}

/// Whether initialisation went as virtio 1.x §3.1.1 requires: the status read back keeps
/// FEATURES_OK, then DRIVER_OK, and never shows DEVICE_NEEDS_RESET or FAILED.
fn check_negotiation(t: &Negotiation) -> Result<(), &'static str> {
    let bad = DeviceStatus::DEVICE_NEEDS_RESET | DeviceStatus::FAILED;
    match (t.features_ok, t.driver_ok) {
        (Some(s), _) if !s.contains(DeviceStatus::FEATURES_OK) || s.intersects(bad) => Err("the device refused FEATURES_OK"),
        (_, Some(s)) if !s.contains(DeviceStatus::DRIVER_OK) || s.intersects(bad) => Err("the device refused DRIVER_OK"),
        (Some(_), Some(_)) => Ok(()),
        _ => Err("initialisation incomplete"),
    }
}

/// A virtio-blk disk, seen by the portable channel code as a [`agent::channel::Disk`].
pub struct BlkDisk(VirtIOBlk<AgentHal, Negotiated>);

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
        let record = Rc::new(RefCell::new(Negotiation::default()));
        let blk = PciTransport::new::<AgentHal, _>(&mut root, f)
            .map_err(|_| "transport")
            .and_then(|inner| VirtIOBlk::<AgentHal, _>::new(Negotiated { inner, record: record.clone() }).map_err(|_| "device"));
        let n = *record.borrow();
        log::info!(
            "virtio-blk at {f}: features offered {:#x}, accepted {:#x}; status after FEATURES_OK {:#x}, after DRIVER_OK {:#x}",
            n.offered,
            n.accepted,
            n.features_ok.map_or(0, |s| s.bits()),
            n.driver_ok.map_or(0, |s| s.bits())
        );
        // A device that refused our features is unusable (§3.1.1); it is dropped (reset).
        match blk.and_then(|b| check_negotiation(&n).map(|()| b)) {
            Ok(b) => found.push(BlkDisk(b)),
            Err(e) => log::error!("virtio-blk at {f}: {e}"),
        }
    }
    found
}
