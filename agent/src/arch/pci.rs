//! PCI configuration space through ECAM (q35's MMCONFIG window), and BAR placement — we are the
//! firmware, so nobody else assigns the devices' addresses.
//!
//! Every configuration access is a VM exit (under SEV-SNP and TDX a #VC/#VE round trip through
//! the hypervisor and QEMU), so the agent makes few: the window is switched on with one write
//! through the legacy 0xCF8/0xCFC ports (2 exits), after which an access is one exit for up to
//! 8 bytes (an aligned 64-bit load or store: QEMU splits it into two dword accesses for the
//! device). A [`Function`] reads its configuration space in aligned 8-byte chunks and keeps
//! what it read, so a capability list walked from the back costs one exit per chunk touched.
use super::cpu::outl;
use super::layout;

/// The MCH (device 0:0.0) register that places and enables the ECAM window (Intel Q35
/// datasheet, PCIEXBAR: base in bits 35:28 for 256 buses, length 00 = 256 MiB, bit 0 enable).
const PCIEXBAR: u32 = 0x60;

/// Places q35's ECAM window at [`layout::ECAM`] and enables it: the only legacy-port accesses.
/// (PCIEXBAR's upper dword is 0 after reset, which is what a window below 4 GiB needs.)
pub fn enable_ecam() {
    outl(0xCF8, 0x8000_0000 | PCIEXBAR);
    outl(0xCFC, layout::ECAM.start as u32 | 1);
    ECAM_ON.store(true, core::sync::atomic::Ordering::Relaxed);
}

static ECAM_ON: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether [`enable_ecam`] ran.
pub fn ecam_enabled() -> bool {
    ECAM_ON.load(core::sync::atomic::Ordering::Relaxed)
}

/// Where [`read`] and [`write`] may go: the shared alias (one PML4 entry, 512 GiB), which maps
/// only memory the host shares (the DMA pool, the MMIO window and ECAM, the local APIC, the GHCB)
/// and never a Rust object: an access there cannot break the agent's memory safety, only a
/// device's or the host's view (an unmapped address is a page fault, which is fatal).
fn in_shared_alias<T>(addr: u64) -> bool {
    let end = addr.checked_add(core::mem::size_of::<T>() as u64);
    addr >= layout::SHARED_MAP
        && end.is_some_and(|e| e <= layout::SHARED_MAP + (1 << 39))
        && addr % core::mem::align_of::<T>() as u64 == 0
}

/// A volatile load from a device register or shared ring memory (one MMIO exit for a
/// register; none for the rings). Callers pass a `T`-aligned address in the shared alias
/// (`layout::SHARED_MAP`) of device registers the agent placed (ECAM, a BAR slot in the MMIO
/// window) or of a DMA-pool page it owns; anything else outside the alias is refused (fatal),
/// so this safe function cannot read a Rust object. Private to `arch`.
pub(super) fn read<T: Copy>(addr: u64) -> T {
    assert!(in_shared_alias::<T>(addr), "pci::read outside the shared alias: {addr:#x}");
    // SAFETY: checked just above: aligned, inside the shared alias, which holds no Rust object
    // (an unmapped address faults, and the fault is fatal).
    unsafe { (addr as *const T).read_volatile() }
}

/// A volatile store to a device register or shared ring memory, on [`read`]'s terms (the store
/// changes a device's state or a shared page, never a Rust object). Private to `arch`.
pub(super) fn write<T: Copy>(addr: u64, value: T) {
    assert!(in_shared_alias::<T>(addr), "pci::write outside the shared alias: {addr:#x}");
    // SAFETY: as in `read`: checked aligned and inside the shared alias, outside every Rust object.
    unsafe { (addr as *mut T).write_volatile(value) }
}

/// One function's configuration space on bus 0, with the chunks read so far.
pub struct Function {
    pub device: u8,
    pub function: u8,
    /// Shared-alias virtual address of the function's 4 KiB of ECAM.
    base: u64,
    cache: [Option<u64>; 32],
}

impl Function {
    pub fn new(device: u8, function: u8) -> Self {
        let phys = layout::ECAM.start + (u64::from(device & 31) << 15) + (u64::from(function & 7) << 12);
        Function { device, function, base: layout::shared_phys_to_virt(phys), cache: [None; 32] }
    }

    /// The aligned 8 bytes at `offset & !7` (one exit the first time).
    fn chunk(&mut self, offset: u8) -> u64 {
        let i = usize::from(offset >> 3);
        if let Some(v) = self.cache[i] {
            return v;
        }
        // An aligned address inside this function's ECAM page (offset < 256), mapped by the
        // shared alias (layout::ECAM, memory::init_paging).
        let v = read(self.base + u64::from(offset & !7));
        self.cache[i] = Some(v);
        v
    }

    pub fn read64(&mut self, offset: u8) -> u64 {
        self.chunk(offset)
    }

    pub fn read32(&mut self, offset: u8) -> u32 {
        (self.chunk(offset) >> ((offset & 4) * 8)) as u32
    }

    pub fn read8(&mut self, offset: u8) -> u8 {
        (self.chunk(offset) >> ((offset & 7) * 8)) as u8
    }

    /// A store of `size` bytes (1, 2, 4 or 8; `offset` aligned to it): one exit. Configuration
    /// writes change the device's state, never the agent's memory (the callers write BARs
    /// inside the MMIO window, the command register, the LPC's power-management base).
    fn write(&mut self, offset: u8, size: u8, value: u64) {
        debug_assert!(offset % size == 0);
        self.cache[usize::from(offset >> 3)] = None;
        let p = self.base + u64::from(offset);
        match size {
            1 => write(p, value as u8),
            2 => write(p, value as u16),
            4 => write(p, value as u32),
            _ => write(p, value),
        }
    }

    pub fn write16(&mut self, offset: u8, value: u16) {
        self.write(offset, 2, value.into())
    }

    pub fn write32(&mut self, offset: u8, value: u32) {
        self.write(offset, 4, value.into())
    }

    pub fn write64(&mut self, offset: u8, value: u64) {
        self.write(offset, 8, value)
    }

    /// Vendor and device ID (0xFFFF vendor: nothing there).
    pub fn ids(&mut self) -> (u16, u16) {
        let v = self.read32(0);
        (v as u16, (v >> 16) as u16)
    }
}

impl core::fmt::Display for Function {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        write!(f, "00:{:02x}.{}", self.device, self.function)
    }
}

/// Command register bits: memory decoding and bus mastering (DMA).
pub const COMMAND_MEMORY_BUS_MASTER: u16 = 0x6;

/// Places memory BAR `index` at `addr` (an address whose lowest set bit is bit 20: see
/// `virtio::slot`) with one store: 8 bytes for an even index, which also clears the upper
/// half of a 64-bit BAR (and leaves a 32-bit neighbour at 0, which QEMU treats as unmapped),
/// 4 bytes for BAR 5. The BAR's size and type are not read: a device that decodes elsewhere
/// than asked fails the status check that follows (`virtio`).
pub fn place_bar(f: &mut Function, index: u8, addr: u32) {
    let offset = 0x10 + 4 * index;
    if index % 2 == 0 {
        f.write64(offset, u64::from(addr));
    } else {
        f.write32(offset, addr);
    }
}
