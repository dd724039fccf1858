//! virtio-blk over PCI (virtio 1.2 §4.1, §5.2): the agent's own small driver, written for few
//! VM exits. Every register access is an exit (under SEV-SNP and TDX a #VC/#VE round trip
//! through the hypervisor and QEMU); ring memory is not. So:
//! - device discovery reads configuration space in 8-byte chunks through ECAM (`pci`), and
//!   only on the slots it must (it stops at the disks it needs);
//! - the BAR is placed with one store at an address that bounds its size (`place_bar`);
//! - initialisation makes the accesses virtio §3.1.1 asks for and no more: ACKNOWLEDGE|DRIVER,
//!   the high feature word (the only one with a bit the agent accepts), FEATURES_OK and its
//!   read-back, one queue of 8 entries, DRIVER_OK, the capacity;
//! - a request is three descriptors and one notification (a 2-byte store); completion is
//!   polled in the used ring (memory), with interrupts suppressed (`VIRTQ_AVAIL_F_NO_INTERRUPT`).
//!
//! The device sees *bounce buffers* only: every request's bytes are copied into pages of the
//! shared DMA pool (arch/memory.rs) and back, so the device never sees the agent's own memory
//! and the agent parses only its private copy (no time-of-check/time-of-use on shared memory).
//! Under SEV-SNP and TDX that pool is the only RAM shared with the host; device registers are
//! reached through the same shared alias. Everything the device writes (the used ring, the
//! status byte) is read once and checked.
use super::layout::{self, PAGE_SIZE};
use super::memory;
use super::pci::{self, Function};
use agent::virtio::{self as v, common, status};
use alloc::vec::Vec;
use core::sync::atomic::{fence, Ordering};

/// Entries in the agent's queue: a request uses 3 descriptors, one request is in flight.
const QUEUE_SIZE: u16 = 4;
/// virtio-blk request types (§5.2.6).
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
/// Descriptor flags (§2.7.5).
const DESC_NEXT: u16 = 1;
const DESC_WRITE: u16 = 2;
const AVAIL_NO_INTERRUPT: u16 = 1;
/// The virtio-blk sector.
pub const SECTOR_SIZE: usize = 512;
const _: () = assert!(SECTOR_SIZE == agent::channel::SECTOR_SIZE);

/// Where things are in the queue page (one zeroed DMA page): the descriptor table, the driver
/// (available) ring, the device (used) ring, the request header and the status byte.
const DESC: usize = 0;
const AVAIL: usize = 256;
const USED: usize = 512;
const HEADER: usize = 1024;
const STATUS: usize = 1040;

/// How long a request may take before the agent gives up on the device (TSC cycles: about a
/// minute at 2-4 GHz; TCG is slow).
const REQUEST_TIMEOUT: u64 = 200_000_000_000;

/// A virtio-blk disk, seen by the portable channel code as an [`agent::channel::Disk`].
pub struct BlkDisk {
    name: Function,
    /// Shared-alias virtual addresses: the common configuration, queue 0's notification
    /// register, the device configuration.
    common: u64,
    notify: u64,
    /// The queue page: physical and shared-alias virtual.
    queue_phys: u64,
    queue: u64,
    /// The next index in the available ring, and the used-ring index seen last.
    avail_idx: u16,
    used_idx: u16,
    capacity: u64,
}

// Register access through the shared alias (each one exit), and the queue page's memory:
// `pci::read`/`pci::write`, whose contract every address here meets (a register in a BAR slot
// this module placed, or this device's own queue page).
fn read8(addr: u64) -> u8 {
    pci::read(addr)
}
fn read16(addr: u64) -> u16 {
    pci::read(addr)
}
fn read32(addr: u64) -> u32 {
    pci::read(addr)
}
fn read64(addr: u64) -> u64 {
    pci::read(addr)
}
fn write8(addr: u64, value: u8) {
    pci::write(addr, value)
}
fn write16(addr: u64, value: u16) {
    pci::write(addr, value)
}
fn write32(addr: u64, value: u32) {
    pci::write(addr, value)
}
fn write64(addr: u64, value: u64) {
    pci::write(addr, value)
}

/// The BAR slot of the `k`-th disk: odd MiB of the MMIO window, so the address's lowest set bit
/// is bit 20 and a BAR that keeps it decodes at most [`v::BAR_SLOT`] bytes, inside the slot.
fn slot(k: usize) -> u64 {
    layout::MMIO_WINDOW.start + (2 * k as u64 + 1) * v::BAR_SLOT
}

/// Finds the first `want` virtio-blk devices on bus 0 (function 0 of each slot, in slot order;
/// slot 0 is q35's host bridge) and initialises them. Stops as soon as it has them.
pub fn disks(want: usize) -> Vec<BlkDisk> {
    pci::enable_ecam();
    let mut found = Vec::new();
    for device in 1..32 {
        if found.len() == want {
            break;
        }
        let mut f = Function::new(device, 0);
        if f.ids() != (v::VENDOR, v::DEVICE_BLK_MODERN) {
            continue;
        }
        let at = slot(found.len());
        match BlkDisk::new(f, at) {
            Ok(d) => found.push(d),
            Err(e) => log::error!("virtio-blk at 00:{device:02x}.0: {e}"),
        }
    }
    found
}

impl BlkDisk {
    fn new(mut f: Function, bar_at: u64) -> Result<BlkDisk, &'static str> {
        // Status bit 4: a capability list; its pointer at 0x34.
        if f.read64(0) >> 48 & 0x10 == 0 {
            return Err("no capability list");
        }
        let pointer = f.read8(0x34);
        let s = v::find_structures(pointer, 8, |o| f.read32(o)).map_err(|e| match e {
            v::CapError::NoList => "no capability list",
            v::CapError::Loop => "a capability list that loops",
            v::CapError::Short => "a virtio capability shorter than its structure",
            v::CapError::Missing(what) | v::CapError::BadRegion(what) => what,
        })?;
        pci::place_bar(&mut f, s.common.bar, bar_at as u32);
        f.write16(0x04, pci::COMMAND_MEMORY_BUS_MASTER);
        let base = layout::shared_phys_to_virt(bar_at);
        let common = base + u64::from(s.common.offset);
        let device = base + u64::from(s.device.offset);

        // virtio 1.2 §3.1.1. The device is fresh from power-on (status 0, every select 0):
        // no reset needed. ACKNOWLEDGE and DRIVER together, then the high feature word.
        write8(common + common::DEVICE_STATUS, status::ACKNOWLEDGE | status::DRIVER);
        write32(common + common::DEVICE_FEATURE_SELECT, 1);
        let offered = u64::from(read32(common + common::DEVICE_FEATURE)) << 32;
        if offered & v::F_VERSION_1 == 0 {
            return Err("the device does not offer VIRTIO_F_VERSION_1");
        }
        let accepted = offered & (v::F_VERSION_1 | v::F_ACCESS_PLATFORM);
        // driver_feature_select = 1 and driver_feature = the high word, in one 8-byte store
        // (QEMU splits it into the two dword registers, in order).
        write64(common + common::DRIVER_FEATURE_SELECT, 1 | accepted);
        write8(common + common::DEVICE_STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        let after_features = read8(common + common::DEVICE_STATUS);
        log::info!(
            "virtio-blk at {f}: features offered {offered:#x}, accepted {accepted:#x}; status after FEATURES_OK {after_features:#x}"
        );
        if after_features & status::FEATURES_OK == 0 || after_features & (status::DEVICE_NEEDS_RESET | status::FAILED) != 0 {
            write8(common + common::DEVICE_STATUS, status::FAILED);
            return Err("the device refused FEATURES_OK");
        }

        // Queue 0 (queue_select is 0 after reset).
        let max = read16(common + common::QUEUE_SIZE);
        if max < QUEUE_SIZE {
            return Err("queue 0 is missing or too small");
        }
        let notify_off = read16(common + common::QUEUE_NOTIFY_OFF);
        let notify = v::notify_offset(&s, notify_off).ok_or("queue 0's notification address lies outside the notification area")?;
        let Some((queue_phys, queue)) = memory::alloc_dma_pages(1) else {
            super::power::fail(super::power::Failure::OutOfMemory)
        };
        let queue = queue.as_ptr() as u64;
        write64(common + common::QUEUE_DESC, queue_phys + DESC as u64);
        write64(common + common::QUEUE_DRIVER, queue_phys + AVAIL as u64);
        write64(common + common::QUEUE_DEVICE, queue_phys + USED as u64);
        // queue_size = 4 and queue_enable = 1 in one 8-byte store (queue_msix_vector gets 0
        // inside the first dword, which QEMU takes as the size register's; there is no MSI-X).
        write64(common + common::QUEUE_SIZE, u64::from(QUEUE_SIZE) | 1 << 32);
        const _: () = assert!(common::QUEUE_ENABLE == common::QUEUE_SIZE + 4);
        write16(queue + AVAIL as u64, AVAIL_NO_INTERRUPT); // the driver ring's flags
        write8(common + common::DEVICE_STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
        let capacity = read64(device);
        Ok(BlkDisk { name: f, common, notify: base + u64::from(notify), queue_phys, queue, avail_idx: 0, used_idx: 0, capacity })
    }

    /// One request: `kind` on `len` bytes at `sector`, through the bounce buffer at `buf`
    /// (physical). Waits for its completion and checks it.
    fn request(&mut self, kind: u32, sector: u64, buf: u64, len: u32) -> Result<(), agent::channel::DiskError> {
        let q = self.queue;
        let desc = |i: u64, addr: u64, len: u32, flags: u16, next: u16| {
            let d = q + DESC as u64 + 16 * i;
            write64(d, addr);
            write32(d + 8, len);
            write16(d + 12, flags);
            write16(d + 14, next);
        };
        write32(q + HEADER as u64, kind);
        write32(q + HEADER as u64 + 4, 0);
        write64(q + HEADER as u64 + 8, sector);
        write8(q + STATUS as u64, 0xFF);
        desc(0, self.queue_phys + HEADER as u64, 16, DESC_NEXT, 1);
        desc(1, buf, len, DESC_NEXT | if kind == T_IN { DESC_WRITE } else { 0 }, 2);
        desc(2, self.queue_phys + STATUS as u64, 1, DESC_WRITE, 0);
        let slot = u64::from(self.avail_idx % QUEUE_SIZE);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        write16(q + AVAIL as u64 + 4 + 2 * slot, 0);
        fence(Ordering::SeqCst); // the descriptors and the entry before the index
        write16(q + AVAIL as u64 + 2, self.avail_idx);
        fence(Ordering::SeqCst); // the index before the notification
        write16(self.notify, 0);
        let start = super::cpu::rdtsc();
        // A plain spin on the used index, no `pause`: under TCG each `pause` leaves the
        // translated code and takes QEMU's global lock, which the thread completing the request
        // needs (guest → host bulk fell from ~280 to ~150 MB/s with it); under KVM it invites
        // pause-loop exits. The clock is read only every 4,096 polls.
        let mut polls = 0u32;
        let used = loop {
            let idx = read16(q + USED as u64 + 2); // the used ring's index (the device writes it)
            if idx != self.used_idx {
                break idx;
            }
            polls = polls.wrapping_add(1);
            if polls % 4096 == 0 && super::cpu::rdtsc().wrapping_sub(start) > REQUEST_TIMEOUT {
                let st = read8(self.common + common::DEVICE_STATUS);
                log::error!("virtio-blk at {}: a request did not complete (device status {st:#x})", self.name);
                return Err(agent::channel::DiskError);
            }
        };
        fence(Ordering::SeqCst); // the index before the entry and the status byte
        let entry = q + USED as u64 + 4 + 8 * u64::from(self.used_idx % QUEUE_SIZE);
        let (id, st) = (read32(entry), read8(q + STATUS as u64));
        // One request in flight: exactly one completion, naming descriptor 0, status OK (0).
        if used != self.used_idx.wrapping_add(1) || id != 0 {
            log::error!("virtio-blk at {}: the device completed what was not asked (used index {used}, id {id})", self.name);
            return Err(agent::channel::DiskError);
        }
        self.used_idx = used;
        if st != 0 {
            log::error!("virtio-blk at {}: request failed with status {st}", self.name);
            return Err(agent::channel::DiskError);
        }
        Ok(())
    }

    /// Moves whole sectors through a bounce buffer: `read` copies device → `buf` afterwards,
    /// otherwise `buf` → device before.
    fn transfer(&mut self, kind: u32, sector: u64, len: usize, copy_in: impl FnOnce(*mut u8), copy_out: impl FnOnce(*const u8)) -> Result<(), agent::channel::DiskError> {
        if len % SECTOR_SIZE != 0 || len > u32::MAX as usize {
            return Err(agent::channel::DiskError);
        }
        let end = sector.checked_add((len / SECTOR_SIZE) as u64).ok_or(agent::channel::DiskError)?;
        if end > self.capacity {
            return Err(agent::channel::DiskError);
        }
        let pages = len.div_ceil(PAGE_SIZE as usize).max(1);
        // Not zeroed: a write's buffer is overwritten below, a read's by the device, and only
        // `len` bytes are ever copied back.
        let Some((phys, bounce)) = memory::alloc_bounce_pages(pages) else {
            super::power::fail(super::power::Failure::OutOfMemory)
        };
        copy_in(bounce.as_ptr());
        let r = self.request(kind, sector, phys, len as u32);
        if r.is_ok() {
            copy_out(bounce.as_ptr());
        }
        // SAFETY: allocated above with the same page count; the device is done with it (the
        // request completed or the agent gave up on the device).
        unsafe { memory::free_dma_pages(bounce, pages) };
        r
    }
}

impl agent::channel::Disk for BlkDisk {
    fn sectors(&self) -> u64 {
        self.capacity
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), agent::channel::DiskError> {
        let (len, dst) = (buf.len(), buf.as_mut_ptr());
        self.transfer(T_IN, sector, len, |_| {}, |bounce| {
            // SAFETY: the bounce buffer holds `len` bytes the device wrote; `buf` is valid for
            // them and does not overlap it (private memory vs the shared pool).
            unsafe { core::ptr::copy_nonoverlapping(bounce, dst, len) }
        })
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), agent::channel::DiskError> {
        let (len, src) = (buf.len(), buf.as_ptr());
        self.transfer(T_OUT, sector, len, |bounce| {
            // SAFETY: the bounce buffer has room for `len` bytes; `buf` is valid for them and
            // does not overlap it.
            unsafe { core::ptr::copy_nonoverlapping(src, bounce, len) }
        }, |_| {})
    }
}
