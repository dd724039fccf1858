//! Memory: the boot page tables (filled in by `rom32.s`), the shared alias of the direct map,
//! the RAM size, accepting RAM (SEV-SNP/TDX), the heap, and the shared DMA pool.
use super::cpu::{inb, outb};
use super::layout::{self, PAGE_SIZE};
use super::power::{self, Failure};
use agent::tee::{Encryption, Range};
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicUsize, Ordering};
use linked_list_allocator::LockedHeap;

#[repr(C, align(4096))]
pub struct PageTable(pub [u64; 512]);

// The boot page tables and stack, in .bss (zeroed by rom32.s before use). The names are the
// symbols rom32.s refers to.
#[unsafe(no_mangle)]
static mut BOOT_PML4: PageTable = PageTable([0; 512]);
#[unsafe(no_mangle)]
static mut BOOT_PDPT_LOW: PageTable = PageTable([0; 512]);
#[unsafe(no_mangle)]
static mut BOOT_PDPT_HIGH: PageTable = PageTable([0; 512]);
#[unsafe(no_mangle)]
static mut BOOT_PD: [PageTable; 4] = [const { PageTable([0; 512]) }; 4];
/// rom32.s's IDT while it probes SEV_STATUS (only the #GP gate is filled in).
#[unsafe(no_mangle)]
static mut BOOT_IDT32: [u64; 14] = [0; 14];

// The agent's own page tables, built once by [`init_paging`] in the higher half; rom32.s's
// boot tables (2 MiB pages, all writable and executable, the identity map) are unused after it.
static mut KERNEL_PML4: PageTable = PageTable([0; 512]);
// PML4[256]: the direct map of 0..4 GiB (2 MiB pages, 4 KiB pages over the image's regions).
static mut DIRECT_PDPT: PageTable = PageTable([0; 512]);
static mut DIRECT_PD: [PageTable; 4] = [const { PageTable([0; 512]) }; 4];
static mut DIRECT_PT: [PageTable; IMAGE_REGIONS] = [const { PageTable([0; 512]) }; IMAGE_REGIONS];
// PML4[257]: the shared alias, only over what is shared (DMA pool, MMIO, GHCB).
static mut SHARED_PDPT: PageTable = PageTable([0; 512]);
static mut SHARED_PD: [PageTable; 4] = [const { PageTable([0; 512]) }; 4];
static mut SHARED_PT: PageTable = PageTable([0; 512]);
// PML4[511] -> PDPT[510]: the image at KERNEL_BASE + phys, 4 KiB pages, nothing else.
static mut KERNEL_PDPT: PageTable = PageTable([0; 512]);
static mut KERNEL_PD: PageTable = PageTable([0; 512]);
static mut KERNEL_PT: [PageTable; IMAGE_REGIONS] = [const { PageTable([0; 512]) }; IMAGE_REGIONS];

const PRESENT: u64 = 1;
const WRITABLE: u64 = 2;
const USER: u64 = 4;
const HUGE: u64 = 0x80;
const NO_EXECUTE: u64 = 1 << 63;
const TWO_MIB: u64 = 0x20_0000;
/// The image (with .bss) must end below `IMAGE_REGIONS` × 2 MiB: those regions are mapped with
/// 4 KiB pages, in the kernel window and in the direct map.
const IMAGE_REGIONS: usize = 4;

unsafe extern "C" {
    static _text_end: u8;
    static _rodata_end: u8;
}

/// The shared DMA pool's physical range: the first 2 MiB boundary after the image.
pub fn dma_pool_range() -> core::ops::Range<u64> {
    let start = layout::kernel_end_phys().next_multiple_of(TWO_MIB);
    start..start + layout::DMA_POOL
}

/// The physical address of the agent's top-level page table (every process's upper half).
pub fn kernel_pml4_phys() -> u64 {
    layout::virt_to_phys(addr_of!(KERNEL_PML4) as u64)
}

/// Rights of the image's page at `phys` in the kernel window: .text read-only and executable,
/// .rodata read-only, .data/.bss writable, all but .text no-execute; stack guard pages absent.
fn image_page_flags(phys: u64, guards: &[core::ops::Range<u64>]) -> u64 {
    let text_end = layout::virt_to_phys(addr_of!(_text_end) as u64);
    let rodata_end = layout::virt_to_phys(addr_of!(_rodata_end) as u64);
    if guards.iter().any(|g| g.contains(&phys)) {
        0
    } else if phys < text_end {
        PRESENT
    } else if phys < rodata_end {
        PRESENT | NO_EXECUTE
    } else {
        PRESENT | WRITABLE | NO_EXECUTE
    }
}

/// Builds the agent's page tables and switches to them (once, from `tee::init`, which knows how
/// `enc` marks private and shared pages):
///
/// - the kernel window maps only the image, page by page, W^X (see [`image_page_flags`]), with
///   the guard page under every stack left out;
/// - the direct map covers 0..4 GiB writable and no-execute, except the image's .text and
///   .rodata, which are read-only there too (a writable alias would undo W^X);
/// - the shared alias maps only what the host must see: the DMA pool, the ECAM window, the MMIO window (with the
///   local APIC) and, under SEV-SNP, the GHCB page; no-execute;
/// - the lower half is empty: rom32.s's identity map is gone (the lower half is each
///   process's own).
pub fn init_paging(enc: Encryption) {
    let kernel_start = layout::kernel_start_phys();
    let kernel_end = layout::kernel_end_phys();
    let regions = kernel_end.div_ceil(TWO_MIB) as usize;
    if regions > IMAGE_REGIONS {
        power::fail(Failure::Platform); // a build-time mistake; the serial port is not up yet
    }
    let guards = super::gdt::stack_guards();
    let private = |phys: u64| enc.pte_address(phys, false);
    let table_phys = |t: *const PageTable| private(layout::virt_to_phys(t as u64));
    // SAFETY: runs once on the only vCPU before anything else uses these statics; the tables
    // are .bss pages of this module (4 KiB aligned). The new tables map everything the agent
    // runs on at the moment of the switch (its code, this stack, the statics) at the same
    // virtual addresses, and the CR3 load flushes every translation (CR4.PGE is clear).
    unsafe {
        let pml4 = &mut *addr_of_mut!(KERNEL_PML4);

        // The kernel window.
        let kpt = &mut *addr_of_mut!(KERNEL_PT);
        for (r, pt) in kpt.iter_mut().enumerate().take(regions) {
            for (i, e) in pt.0.iter_mut().enumerate() {
                let phys = r as u64 * TWO_MIB + i as u64 * PAGE_SIZE;
                if (kernel_start..kernel_end).contains(&phys) {
                    let f = image_page_flags(phys, &guards);
                    *e = if f == 0 { 0 } else { private(phys) | f };
                }
            }
            (*addr_of_mut!(KERNEL_PD)).0[r] = table_phys(pt) | PRESENT | WRITABLE;
        }
        (*addr_of_mut!(KERNEL_PDPT)).0[510] = table_phys(addr_of!(KERNEL_PD)) | PRESENT | WRITABLE;
        pml4.0[511] = table_phys(addr_of!(KERNEL_PDPT)) | PRESENT | WRITABLE;

        // The direct map.
        let dpt = &mut *addr_of_mut!(DIRECT_PT);
        let dpd = &mut *addr_of_mut!(DIRECT_PD);
        for (g, pd) in dpd.iter_mut().enumerate() {
            for (j, e) in pd.0.iter_mut().enumerate() {
                let phys = ((g as u64) << 30) | ((j as u64) << 21);
                *e = private(phys) | PRESENT | WRITABLE | HUGE | NO_EXECUTE;
            }
        }
        for (r, pt) in dpt.iter_mut().enumerate().take(regions) {
            for (i, e) in pt.0.iter_mut().enumerate() {
                let phys = r as u64 * TWO_MIB + i as u64 * PAGE_SIZE;
                let image_ro = (kernel_start..kernel_end).contains(&phys) && image_page_flags(phys, &[]) & WRITABLE == 0;
                *e = private(phys) | PRESENT | NO_EXECUTE | if image_ro { 0 } else { WRITABLE };
            }
            dpd[0].0[r] = table_phys(pt) | PRESENT | WRITABLE;
        }
        let dpdpt = &mut *addr_of_mut!(DIRECT_PDPT);
        for (g, pd) in dpd.iter().enumerate() {
            dpdpt.0[g] = table_phys(pd) | PRESENT | WRITABLE;
        }
        pml4.0[256] = table_phys(addr_of!(DIRECT_PDPT)) | PRESENT | WRITABLE;

        // The shared alias.
        let spd = &mut *addr_of_mut!(SHARED_PD);
        let mut share_2m = |range: core::ops::Range<u64>| {
            for phys in range.step_by(TWO_MIB as usize) {
                spd[(phys >> 30) as usize].0[((phys >> 21) & 511) as usize] = enc.pte_address(phys, true) | PRESENT | WRITABLE | HUGE | NO_EXECUTE;
            }
        };
        share_2m(dma_pool_range());
        share_2m(layout::ECAM.start..layout::ECAM.end.next_multiple_of(TWO_MIB));
        share_2m(layout::MMIO_WINDOW);
        share_2m(layout::LOCAL_APIC_REGION);
        if let Encryption::CBit(_) = enc {
            let ghcb = super::tee::ghcb_phys();
            let pt = &mut *addr_of_mut!(SHARED_PT);
            pt.0[((ghcb >> 12) & 511) as usize] = enc.pte_address(ghcb, true) | PRESENT | WRITABLE | NO_EXECUTE;
            spd[(ghcb >> 30) as usize].0[((ghcb >> 21) & 511) as usize] = table_phys(pt) | PRESENT | WRITABLE;
        }
        let spdpt = &mut *addr_of_mut!(SHARED_PDPT);
        for (g, pd) in spd.iter().enumerate() {
            spdpt.0[g] = table_phys(pd) | PRESENT | WRITABLE;
        }
        pml4.0[257] = table_phys(addr_of!(SHARED_PDPT)) | PRESENT | WRITABLE;

        core::arch::asm!("mov cr3, {}", in(reg) kernel_pml4_phys(), options(nostack));
    }
}

/// What a walk of the agent's own page tables finds (logged at boot, checked by a test).
pub struct PagingReport {
    /// 4 KiB pages both writable and executable (must be 0).
    pub writable_executable: u64,
    /// 4 KiB pages executable (the image's .text).
    pub executable: u64,
    /// Entries in the lower half of the top-level table (must be 0: no identity map).
    pub lower_half_entries: u64,
    /// 4 KiB pages ring 3 could reach (must be 0).
    pub user: u64,
    /// Bytes the shared alias maps.
    pub shared: u64,
}

/// Walks the live top-level table (the agent's own) as the MMU does: a page is writable if every
/// level allows it, executable if no level forbids it.
pub fn paging_report() -> PagingReport {
    fn walk(t: u64, level: u32, top: usize, w: bool, x: bool, u: bool, rep: &mut PagingReport) {
        for i in 0..512usize {
            // SAFETY: `t` is a page table reached from the live PML4 (private RAM below 4 GiB,
            // under the direct map); reading it has no effect.
            let e = unsafe { (*(layout::phys_to_virt(t) as *const PageTable)).0[i] };
            if e & PRESENT == 0 {
                continue;
            }
            let top = if level == 4 { i } else { top };
            if level == 4 && i < 256 {
                rep.lower_half_entries += 1;
                continue;
            }
            let (w, x, u) = (w && e & WRITABLE != 0, x && e & NO_EXECUTE == 0, u && e & USER != 0);
            if level == 1 || (level <= 3 && e & HUGE != 0) {
                let pages = 1u64 << (9 * (level - 1));
                rep.writable_executable += if w && x { pages } else { 0 };
                rep.executable += if x { pages } else { 0 };
                rep.user += if u { pages } else { 0 };
                rep.shared += if top == 257 { pages * PAGE_SIZE } else { 0 };
            } else {
                walk(super::tee::pte_phys(e), level - 1, top, w, x, u, rep);
            }
        }
    }
    let mut rep = PagingReport { writable_executable: 0, executable: 0, lower_half_entries: 0, user: 0, shared: 0 };
    let cr3: u64;
    // SAFETY: reading CR3 has no effect.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags)) };
    walk(cr3 & 0x000F_FFFF_FFFF_F000, 4, 0, true, true, true, &mut rep);
    rep
}

/// The boot stack (rom32.s sets RSP to its top; the agent's own code runs on it for good), with
/// an unmapped guard page below it. rom32.s's BOOT_STACK_SIZE is the size of the whole.

// The key page (issue 15, finding 8). Under SEV-SNP, VMPCK0 is what lets code ask the PSP to
// sign anything; a builder must not be able to reach it even speculatively. So it lives in a
// page no mapping a builder's page tables share can reach: its 2 MiB block is taken off the
// direct map (the kernel window maps only the image, the shared alias only what is shared, and
// there is no identity map: `init_paging`), and the page is mapped only at `layout::KEY_MAP`, through PML4 entry 258, which
// `AddressSpace::new` leaves out of every process's tables. The agent reaches it only on its own
// tables (`with_key_page` loads them), which no ring-3 code ever runs on.
static mut KEY_PDPT: PageTable = PageTable([0; 512]);
static mut KEY_PD: PageTable = PageTable([0; 512]);
static mut KEY_PT: PageTable = PageTable([0; 512]);
static KEY_PAGE_READY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Sets up the key page (once, after `init`, before any process exists). The 2 MiB block is
/// heap memory never freed; only its first page is used.
pub fn init_key_page(enc: Encryption) -> bool {
    const BLOCK: usize = 0x20_0000;
    let Ok(layout) = core::alloc::Layout::from_size_align(BLOCK, BLOCK) else { return false };
    // SAFETY: a non-zero-sized layout; the block is never freed.
    let Some(block) = core::ptr::NonNull::new(unsafe { alloc::alloc::alloc_zeroed(layout) }) else { return false };
    let phys = layout::virt_to_phys(block.as_ptr() as u64);
    let (gib, entry) = ((phys >> 30) as usize, ((phys >> 21) & 511) as usize);
    let private = |virt: u64| enc.pte_address(layout::virt_to_phys(virt), false);
    // SAFETY: runs once at boot with interrupts off, before any process; the block is ours (just
    // allocated, 2 MiB-aligned, above the image's 4 KiB-mapped regions, so exactly one 2 MiB
    // entry of the direct map maps it, checked below) and nothing refers to it through the maps
    // being cut; the tables are statics of this module; the CR3 reload flushes every stale
    // translation of the block.
    unsafe {
        let direct = &mut (*addr_of_mut!(DIRECT_PD))[gib].0[entry];
        if *direct & HUGE == 0 {
            return false;
        }
        *direct = 0;
        (*addr_of_mut!(SHARED_PD))[gib].0[entry] = 0; // never shared; cut all the same
        (*addr_of_mut!(KEY_PT)).0[0] = enc.pte_address(phys, false) | 0x3 | (1 << 63); // present, writable, NX
        (*addr_of_mut!(KEY_PD)).0[0] = private(addr_of!(KEY_PT) as u64) | 0x3;
        (*addr_of_mut!(KEY_PDPT)).0[0] = private(addr_of!(KEY_PD) as u64) | 0x3;
        (*addr_of_mut!(KERNEL_PML4)).0[layout::KEY_SLOT] = private(addr_of!(KEY_PDPT) as u64) | 0x3;
        let cr3: u64;
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack));
        core::arch::asm!("mov cr3, {}", in(reg) cr3, options(nostack));
    }
    KEY_PAGE_READY.store(true, core::sync::atomic::Ordering::Relaxed);
    true
}

/// Runs `f` on the key page, on the agent's own page tables (switching to them: after a build
/// the last process's tables may still be loaded, and they do not map the page).
pub fn with_key_page<R>(f: impl FnOnce(&mut [u8; 4096]) -> R) -> Option<R> {
    if !KEY_PAGE_READY.load(core::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    // SAFETY: KERNEL_PML4 maps the whole agent (every process's upper half is a copy of it), so
    // the agent runs on after the switch; the key page is mapped at KEY_MAP by `init_key_page`
    // and used by nothing else; one CPU, interrupts off, so nothing else holds the reference.
    unsafe {
        core::arch::asm!("mov cr3, {}", in(reg) kernel_pml4_phys(), options(nostack));
        Some(f(&mut *(layout::KEY_MAP as *mut [u8; 4096])))
    }
}

#[unsafe(no_mangle)]
static mut BOOT_STACK: super::gdt::GuardedStack<0x1000, 0x10000> = super::gdt::GuardedStack::new();

/// The boot stack's guard page (physical).
pub fn boot_stack_guard() -> core::ops::Range<u64> {
    // SAFETY: only the address is taken.
    let s = unsafe { &*addr_of!(BOOT_STACK) };
    s.guard_phys()
}

#[global_allocator]
static HEAP: Heap = Heap { heap: LockedHeap::empty(), peak: AtomicUsize::new(0) };

/// The heap allocator (linked_list_allocator's first-fit heap behind its lock) and the most it
/// ever had allocated at once: a build's peak memory, logged when it ends.
struct Heap {
    heap: LockedHeap,
    peak: AtomicUsize,
}

// SAFETY: `alloc` hands out what the first-fit heap allocates under its lock (memory no one
// else owns, of the layout's size and alignment, or null); `dealloc` gives it back the same
// way, under the caller's guarantee that `ptr` came from `alloc` with this layout.
unsafe impl core::alloc::GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        let mut heap = self.heap.lock();
        let p = heap.allocate_first_fit(layout).map_or(core::ptr::null_mut(), |p| p.as_ptr());
        self.peak.fetch_max(heap.used(), Ordering::Relaxed);
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        // SAFETY: the caller's (GlobalAlloc's contract): `ptr` came from `alloc` with `layout`.
        unsafe { self.heap.dealloc(ptr, layout) }
    }
}

/// The most heap the agent had allocated at once since boot (bytes): one build per VM, so a
/// build's peak (its file system, its processes' memory and page tables, the agent's buffers).
pub fn heap_peak() -> u64 {
    HEAP.peak.load(Ordering::Relaxed) as u64
}

/// Shared memory for devices (and the attesters' host-visible buffers), used through the
/// shared alias. Nothing private is ever allocated from it, and its bookkeeping is a bitmap in
/// private memory (`agent::tee::pool`): the host can rewrite the pool, never the allocator.
struct Dma {
    pool: agent::tee::pool::PagePool<{ (layout::DMA_POOL / PAGE_SIZE / 64) as usize }>,
    /// Physical address of the pool's first page.
    base: u64,
}

static mut DMA: Dma = Dma { pool: agent::tee::pool::PagePool::new(0), base: 0 };

/// # Safety
/// As for `frames`: one CPU, interrupts off in the agent, the reference never held across
/// another call here.
unsafe fn dma() -> &'static mut Dma {
    // SAFETY: per this function's contract.
    unsafe { &mut *core::ptr::addr_of_mut!(DMA) }
}

/// Bytes of heap (set once by `init`).
static HEAP_BYTES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The heap's size: what a build's limits are cut from.
pub fn heap_bytes() -> u64 {
    HEAP_BYTES.load(core::sync::atomic::Ordering::Relaxed)
}

/// RAM below 4 GiB as QEMU reports it in CMOS (bytes): registers 0x34/0x35 count 64 KiB blocks
/// above 16 MiB, as SeaBIOS reads them. Only the high byte (0x35) is read: 16 MiB steps, two
/// port exits fewer; RAM that is not a multiple of 16 MiB loses its last part (never more than
/// there is), and the loader gives whole multiples.
fn ram_size() -> u64 {
    outb(0x70, 0x35);
    let above_16m = u64::from(inb(0x71)) << 24;
    (above_16m + 0x100_0000).min(layout::MAX_RAM)
}

/// RAM after the image: first the DMA pool (made shared), then the heap up to the end of RAM
/// (made private and usable first, beyond what the launch pre-accepted).
pub fn init() {
    let pool = dma_pool_range();
    let end = ram_size();
    if pool.end > layout::PREACCEPTED.end || end < pool.end {
        log::error!("memory: the image and the DMA pool must fit in the first {} MiB of RAM", layout::PREACCEPTED.end >> 20);
        power::fail(Failure::Platform);
    }
    // RAM the launch did not pre-accept (the SEV metadata's / TDVF's sections, arch/footer.s).
    if end > layout::PREACCEPTED.end {
        let rest = Range { start: layout::PREACCEPTED.end, len: end - layout::PREACCEPTED.end };
        let t0 = super::cpu::rdtsc();
        if let Err(e) = super::tee::accept(rest) {
            log::error!("memory: accepting {:#x}..{:#x}: {e:?}", rest.start, rest.end());
            power::fail(Failure::Platform);
        }
        // What acceptance cost (docs/running-on-snp.md, "Accepting memory"): seconds when the
        // host backs the guest with 4 KiB pages.
        if super::tee::kind() != agent::tee::Kind::None {
            log::info!("memory: accepted {} MiB in {} Mcycles", rest.len >> 20, (super::cpu::rdtsc() - t0) >> 20);
        }
    }
    if let Err(e) = super::tee::set_shared(Range { start: pool.start, len: layout::DMA_POOL }, true) {
        log::error!("memory: sharing the DMA pool: {e:?}");
        power::fail(Failure::Platform);
    }
    let size = end - pool.end;
    // SAFETY: the pool and the heap are RAM nothing else uses (the image ends below `start`);
    // the pool is now shared and used only through the shared alias, the heap is private and
    // used through the direct map; `init` runs once before any allocation.
    unsafe {
        *dma() = Dma { pool: agent::tee::pool::PagePool::new((layout::DMA_POOL / PAGE_SIZE) as usize), base: pool.start };
        HEAP.heap.lock().init(layout::phys_to_virt(pool.end) as *mut u8, size as usize);
    }
    HEAP_BYTES.store(size, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: see `holders`; the heap is ready, nothing has been shared yet.
    let h = unsafe { holders() };
    h.base = pool.end;
    h.extra = alloc::vec![0; (size / PAGE_SIZE) as usize];
    log::info!("memory: {} MiB RAM, heap {} MiB at {:#x}, shared DMA pool {} MiB at {:#x}", end >> 20, size >> 20, pool.end, layout::DMA_POOL >> 20, pool.start);
}

/// Bytes of heap not allocated, counting pooled frames as free (what an Exec request's limits
/// are capped by: development image only).
#[cfg(feature = "dev")]
pub fn heap_free() -> u64 {
    // SAFETY: see `frames`.
    let pooled = unsafe { frames() }.free.len() as u64 * PAGE_SIZE;
    HEAP.heap.lock().free() as u64 + pooled
}

/// Page frames for user address spaces: taken from the heap a chunk at a time and handed out
/// one frame at a time from a stack of free ones, so the page allocations of a builder (a
/// million, for a large build) neither walk nor fragment the heap's free list. Frames go back
/// to the stack, never to the heap.
struct Frames {
    /// Physical addresses of free frames; its capacity covers every frame ever pooled, so
    /// freeing never allocates.
    free: alloc::vec::Vec<u64>,
    /// Frames pooled so far.
    total: usize,
}

static mut FRAMES: Frames = Frames { free: alloc::vec::Vec::new(), total: 0 };

/// # Safety
/// One CPU, interrupts off in the agent, and no caller holds the reference across another
/// call here: nothing can observe the pool mid-update.
unsafe fn frames() -> &'static mut Frames {
    // SAFETY: per this function's contract.
    unsafe { &mut *core::ptr::addr_of_mut!(FRAMES) }
}

/// Frames per chunk (2 MiB), and the smallest chunk tried when the heap is short.
const CHUNK_FRAMES: usize = 512;

/// A zeroed frame for page tables or user pages (physical address).
pub fn alloc_frame() -> Option<u64> {
    // SAFETY: see `frames`; the reference lives only in this function.
    let pool = unsafe { frames() };
    if pool.free.is_empty() {
        let mut n = CHUNK_FRAMES;
        let chunk = loop {
            // Room to hold every pooled frame at once, so `free_frame` never allocates.
            if pool.free.try_reserve_exact(pool.total + n).is_ok() {
                if let Some(phys) = alloc_heap_pages(n) {
                    break phys;
                }
            }
            if n == 1 {
                return None;
            }
            n /= 8;
        };
        pool.total += n;
        pool.free.extend((0..n as u64).rev().map(|i| chunk + i * PAGE_SIZE));
    }
    let phys = pool.free.pop()?;
    // SAFETY: a pooled frame belongs to nobody until handed out here; it is RAM under the
    // direct map.
    unsafe { fill_zero(layout::phys_to_virt(phys) as *mut u8, PAGE_SIZE as usize) };
    Some(phys)
}

/// How many address spaces hold each user frame, beyond the first: a forked child shares its
/// parent's pages copy-on-write (arch/user.rs), and a frame goes back to the pool only when
/// its last holder lets go. One count per heap frame (2 bytes per 4 KiB), indexed from the
/// heap's start: every frame comes from the heap.
struct Holders {
    base: u64,
    extra: alloc::vec::Vec<u16>,
}

static mut HOLDERS: Holders = Holders { base: 0, extra: alloc::vec::Vec::new() };

/// # Safety
/// As for `frames`.
unsafe fn holders() -> &'static mut Holders {
    // SAFETY: per this function's contract.
    unsafe { &mut *core::ptr::addr_of_mut!(HOLDERS) }
}

fn holder_slot(phys: u64) -> Option<&'static mut u16> {
    // SAFETY: see `holders`; the reference is used by the caller at once and not kept.
    let h = unsafe { holders() };
    let i = (phys.checked_sub(h.base)? / PAGE_SIZE) as usize;
    h.extra.get_mut(i)
}

/// One more address space holds `phys`. False when it cannot be counted (then it must be
/// copied, not shared).
pub fn share_frame(phys: u64) -> bool {
    match holder_slot(phys) {
        Some(n) if *n < u16::MAX => {
            *n += 1;
            true
        }
        _ => false,
    }
}

/// Whether more than one address space holds `phys`.
pub fn frame_shared(phys: u64) -> bool {
    holder_slot(phys).is_some_and(|n| *n > 0)
}

/// An address space lets go of user frame `phys`: freed when it was the last holder.
pub fn release_frame(phys: u64) {
    match holder_slot(phys) {
        Some(n) if *n > 0 => *n -= 1,
        _ => free_frame(phys),
    }
}

/// Copies `n` bytes, eight at a time with plain moves where source and destination are
/// equally aligned. What `copy_nonoverlapping` compiles to here is `rep movsq`, which QEMU's TCG
/// runs one element per step, several times slower than a loop of ordinary moves: page copies
/// (loading programs, copy-on-write, system-call buffers) are most of an `execve`'s cost under
/// TCG. On hardware both are fast. The accesses are volatile so the compiler does not turn the
/// loop back into `memcpy`.
///
/// # Safety
/// `src..src+n` readable, `dst..dst+n` writable, the two not overlapping.
pub unsafe fn copy_bytes(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: per this function's contract; every access stays inside the two ranges.
    unsafe {
        let mut i = 0;
        if (dst as usize ^ src as usize) & 7 == 0 {
            while i < n && (dst as usize + i) & 7 != 0 {
                *dst.add(i) = *src.add(i);
                i += 1;
            }
            while i + 64 <= n {
                let (d, s) = (dst.add(i) as *mut u64, src.add(i) as *const u64);
                for k in 0..8 {
                    core::ptr::write_volatile(d.add(k), core::ptr::read_volatile(s.add(k)));
                }
                i += 64;
            }
        }
        core::ptr::copy_nonoverlapping(src.add(i), dst.add(i), n - i);
    }
}

/// Zeroes `n` bytes from the 8-byte aligned `dst` (see [`copy_bytes`] for why not `write_bytes`).
///
/// # Safety
/// `dst..dst+n` writable, `dst` 8-byte aligned, `n` a multiple of 64.
pub unsafe fn fill_zero(dst: *mut u8, n: usize) {
    // SAFETY: per this function's contract.
    unsafe {
        let d = dst as *mut u64;
        for k in 0..n / 8 {
            core::ptr::write_volatile(d.add(k), 0);
        }
    }
}

/// Returns a frame from [`alloc_frame`] to the pool.
pub fn free_frame(phys: u64) {
    // SAFETY: see `frames`; the capacity reserved when the frame was pooled makes this push
    // allocation-free.
    unsafe { frames() }.free.push(phys);
}

/// Page-aligned private memory from the heap, never freed (the frame pool keeps it).
fn alloc_heap_pages(pages: usize) -> Option<u64> {
    let layout = core::alloc::Layout::from_size_align(pages * PAGE_SIZE as usize, PAGE_SIZE as usize).ok()?;
    // SAFETY: the layout has non-zero size (the callers ask for at least one page).
    let ptr = core::ptr::NonNull::new(unsafe { alloc::alloc::alloc(layout) })?;
    Some(layout::virt_to_phys(ptr.as_ptr() as u64))
}

/// Page-aligned *shared* memory from the DMA pool, as it is: what a device or the host may read
/// and write. Returns (physical, shared-alias virtual). For bounce buffers, which are
/// overwritten before use; the old contents were shared already, so nothing leaks.
pub fn alloc_bounce_pages(pages: usize) -> Option<(u64, core::ptr::NonNull<u8>)> {
    // SAFETY: see `dma`; the reference lives only in this function.
    let dma = unsafe { dma() };
    let first = dma.pool.alloc(pages.max(1))?;
    let phys = dma.base + first as u64 * PAGE_SIZE;
    Some((phys, core::ptr::NonNull::new(layout::shared_phys_to_virt(phys) as *mut u8)?))
}

/// [`alloc_bounce_pages`], zeroed (virtio queues, request pages).
pub fn alloc_dma_pages(pages: usize) -> Option<(u64, core::ptr::NonNull<u8>)> {
    let (phys, virt) = alloc_bounce_pages(pages)?;
    // SAFETY: pages just taken from the pool, mapped by the shared alias, owned by nobody else.
    unsafe { core::ptr::write_bytes(virt.as_ptr(), 0, pages.max(1) * PAGE_SIZE as usize) };
    Some((phys, virt))
}

/// Frees pages from [`alloc_dma_pages`] or [`alloc_bounce_pages`].
///
/// # Safety
/// `ptr` and `pages` must come from one allocation above, freed once, and nothing may
/// use the pages afterwards.
pub unsafe fn free_dma_pages(ptr: core::ptr::NonNull<u8>, pages: usize) {
    // SAFETY: see `dma`.
    let dma = unsafe { dma() };
    let phys = layout::virt_to_phys(ptr.as_ptr() as u64);
    let first = (phys.wrapping_sub(dma.base) / PAGE_SIZE) as usize;
    if !dma.pool.free(first, pages.max(1)) {
        log::error!("memory: freeing DMA pages the pool did not give out ({phys:#x}, {pages})");
        power::fail(Failure::Platform);
    }
}
