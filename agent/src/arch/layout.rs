//! Every fixed address the agent uses, named once. See docs/memory-layout.md.

/// Where the image's Rust code runs: virtual = physical + `KERNEL_BASE` (for phys < 1 GiB).
pub const KERNEL_BASE: u64 = 0xFFFF_FFFF_8000_0000;
/// Physical address the image is copied to from ROM (linker.ld and rom32.s use the same value).
#[allow(dead_code)]
pub const KERNEL_PHYS: u64 = 0x10_0000;
/// All physical memory below 4 GiB is mapped at `DIRECT_MAP + phys` (writable, no-execute; the
/// image's .text and .rodata read-only).
pub const DIRECT_MAP: u64 = 0xFFFF_8000_0000_0000;
/// Physical memory mapped *shared* with the host (no C-bit under SEV-SNP, the shared bit under
/// TDX; on a plain VM simply a second mapping), at `SHARED_MAP + phys`, but only where the host
/// must read or write: the DMA pool (virtio bounce buffers and queues, guest-request and quote
/// buffers), the MMIO window and local APIC, and under SEV-SNP the GHCB page
/// (`memory::init_paging`). No-execute. PML4 entry 257.
pub const SHARED_MAP: u64 = 0xFFFF_8080_0000_0000;
/// The key page (SEV-SNP's VMPCK0, arch/memory.rs `init_key_page`): PML4 entry 258, present in
/// the agent's own tables only, never in a process's, and its frame removed from the direct
/// map, the kernel and identity maps and the shared alias.
pub const KEY_SLOT: usize = 258;
pub const KEY_MAP: u64 = 0xFFFF_8100_0000_0000;
/// The end of what the direct map covers.
pub const DIRECT_MAP_END_PHYS: u64 = 0x1_0000_0000;
/// q35's ECAM window for bus 0 (1 MiB: 32 devices × 8 functions × 4 KiB), where `pci` places
/// it (PCIEXBAR); mapped by the shared alias as the 2 MiB region that holds it.
pub const ECAM: core::ops::Range<u64> = 0xB000_0000..0xB010_0000;
/// Where PCI BARs are placed (q35's 32-bit PCI hole, above the ECAM window at 0xB0000000).
pub const MMIO_WINDOW: core::ops::Range<u64> = 0xC000_0000..0xFEC0_0000;
/// The 2 MiB region holding the local APIC's registers (0xFEE00000; used through the shared
/// alias on a plain VM, where the timer programs the xAPIC).
pub const LOCAL_APIC_REGION: core::ops::Range<u64> = 0xFEE0_0000..0xFF00_0000;
/// The most RAM the agent uses: q35 keeps guest RAM below 2.75 GiB entirely under 4 GiB.
pub const MAX_RAM: u64 = 0xB000_0000;
/// Page size.
pub const PAGE_SIZE: u64 = 4096;

/// Physical address → direct-map virtual address.
pub fn phys_to_virt(phys: u64) -> u64 {
    debug_assert!(phys < DIRECT_MAP_END_PHYS);
    phys + DIRECT_MAP
}

/// Physical address → its shared alias (only for memory made shared, and device registers).
pub fn shared_phys_to_virt(phys: u64) -> u64 {
    debug_assert!(phys < DIRECT_MAP_END_PHYS);
    phys + SHARED_MAP
}

/// The memory the launch made private and usable before the agent can accept more (SNP
/// pre-validated, TDX TempMem: arch/footer.s): the image, .bss and the DMA pool live in it.
pub const PREACCEPTED: core::ops::Range<u64> = 0x10_0000..0x100_0000;
/// Bytes of shared memory for virtio bounce buffers and queues (and the attesters' buffers):
/// the channel moves at most 1 MiB per request (`agent::channel`), so this is ample.
pub const DMA_POOL: u64 = 8 << 20;

/// Kernel or direct-map virtual address → physical address.
pub fn virt_to_phys(virt: u64) -> u64 {
    if virt >= KERNEL_BASE {
        virt - KERNEL_BASE
    } else if virt >= SHARED_MAP {
        virt - SHARED_MAP
    } else {
        virt - DIRECT_MAP
    }
}

unsafe extern "C" {
    static _kernel_start: u8;
    static _kernel_end: u8;
}

/// Physical start of the image in RAM.
pub fn kernel_start_phys() -> u64 {
    virt_to_phys(core::ptr::addr_of!(_kernel_start) as u64)
}

/// Physical end of the image in RAM (code, data and .bss).
pub fn kernel_end_phys() -> u64 {
    virt_to_phys(core::ptr::addr_of!(_kernel_end) as u64)
}
