//! Memory: the boot page tables (filled in by `rom32.s`), the shared alias of the direct map,
//! the RAM size, accepting RAM (SEV-SNP/TDX), the heap, and the shared DMA pool.
use super::cpu::{inb, outb};
use super::layout::{self, PAGE_SIZE};
use super::power::{self, Failure};
use agent::tee::{Encryption, Range};
use core::ptr::{addr_of, addr_of_mut};
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

// The shared alias (PML4[257] -> SHARED_PDPT -> SHARED_PD[i]: 2 MiB pages over 0..4 GiB).
static mut SHARED_PDPT: PageTable = PageTable([0; 512]);
static mut SHARED_PD: [PageTable; 4] = [const { PageTable([0; 512]) }; 4];

/// Builds the shared alias of the direct map (`layout::SHARED_MAP`) with `enc`'s marking of
/// shared pages. The tables themselves are private memory, like every page table.
pub fn init_shared_map(enc: Encryption) {
    let private = |virt: u64| enc.pte_address(layout::virt_to_phys(virt), false);
    // SAFETY: runs once at boot before anything uses PML4[257]; the tables are statics of this
    // module, written here only; the CR3 reload flushes any stale translation.
    unsafe {
        let pds = &mut *addr_of_mut!(SHARED_PD);
        for (i, pd) in pds.iter_mut().enumerate() {
            for (j, e) in pd.0.iter_mut().enumerate() {
                let phys = ((i as u64) << 30) | ((j as u64) << 21);
                *e = enc.pte_address(phys, true) | 0x83; // present | writable | 2 MiB
            }
        }
        let pdpt = &mut *addr_of_mut!(SHARED_PDPT);
        for (i, pd) in pds.iter().enumerate() {
            pdpt.0[i] = private(pd as *const PageTable as u64) | 0x3;
        }
        (*addr_of_mut!(BOOT_PML4)).0[257] = private(addr_of!(SHARED_PDPT) as u64) | 0x3;
        let cr3: u64;
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack));
        core::arch::asm!("mov cr3, {}", in(reg) cr3, options(nostack));
    }
}

// The key page (issue 15, finding 8). Under SEV-SNP, VMPCK0 is what lets code ask the PSP to
// sign anything; a builder must not be able to reach it even speculatively. So it lives in a
// page no mapping a builder's page tables share can reach: its 2 MiB block is taken off the
// boot page directory (the direct, kernel and identity maps all use it) and the shared alias,
// and the page is mapped only at `layout::KEY_MAP`, through PML4 entry 258, which
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
    // allocated, 2 MiB-aligned, so exactly one 2 MiB entry of each directory maps it) and nothing
    // refers to it through the maps being cut; the tables are statics of this module; the CR3
    // reload flushes every stale translation of the block.
    unsafe {
        (*addr_of_mut!(BOOT_PD))[gib].0[entry] = 0;
        (*addr_of_mut!(SHARED_PD))[gib].0[entry] = 0;
        (*addr_of_mut!(KEY_PT)).0[0] = enc.pte_address(phys, false) | 0x3 | (1 << 63); // present, writable, NX
        (*addr_of_mut!(KEY_PD)).0[0] = private(addr_of!(KEY_PT) as u64) | 0x3;
        (*addr_of_mut!(KEY_PDPT)).0[0] = private(addr_of!(KEY_PD) as u64) | 0x3;
        (*addr_of_mut!(BOOT_PML4)).0[layout::KEY_SLOT] = private(addr_of!(KEY_PDPT) as u64) | 0x3;
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
    // SAFETY: BOOT_PML4 maps the whole agent (every process's upper half is a copy of it), so
    // the agent runs on after the switch; the key page is mapped at KEY_MAP by `init_key_page`
    // and used by nothing else; one CPU, interrupts off, so nothing else holds the reference.
    unsafe {
        core::arch::asm!("mov cr3, {}", in(reg) layout::virt_to_phys(addr_of!(BOOT_PML4) as u64), options(nostack));
        Some(f(&mut *(layout::KEY_MAP as *mut [u8; 4096])))
    }
}

#[repr(C, align(16))]
pub struct BootStack([u8; 0x10000]);
#[unsafe(no_mangle)]
static mut BOOT_STACK: BootStack = BootStack([0; 0x10000]);

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

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
/// above 16 MiB, as SeaBIOS reads them.
fn ram_size() -> u64 {
    let cmos = |reg: u8| {
        outb(0x70, reg);
        u64::from(inb(0x71))
    };
    let above_16m = (cmos(0x34) | (cmos(0x35) << 8)) * 0x1_0000;
    (above_16m + 0x100_0000).min(layout::MAX_RAM)
}

/// RAM after the image: first the DMA pool (made shared), then the heap up to the end of RAM
/// (made private and usable first, beyond what the launch pre-accepted).
pub fn init() {
    let start = layout::kernel_end_phys().next_multiple_of(0x20_0000);
    let pool = start..start + layout::DMA_POOL;
    let end = ram_size();
    if pool.end > layout::PREACCEPTED.end || end < pool.end {
        log::error!("memory: the image and the DMA pool must fit in the first {} MiB of RAM", layout::PREACCEPTED.end >> 20);
        power::fail(Failure::Platform);
    }
    // RAM the launch did not pre-accept (the SEV metadata's / TDVF's sections, arch/footer.s).
    if end > layout::PREACCEPTED.end {
        let rest = Range { start: layout::PREACCEPTED.end, len: end - layout::PREACCEPTED.end };
        if let Err(e) = super::tee::accept(rest) {
            log::error!("memory: accepting {:#x}..{:#x}: {e:?}", rest.start, rest.end());
            power::fail(Failure::Platform);
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
        HEAP.lock().init(layout::phys_to_virt(pool.end) as *mut u8, size as usize);
    }
    HEAP_BYTES.store(size, core::sync::atomic::Ordering::Relaxed);
    log::info!("memory: {} MiB RAM, heap {} MiB at {:#x}, shared DMA pool {} MiB at {:#x}", end >> 20, size >> 20, pool.end, layout::DMA_POOL >> 20, pool.start);
}

/// Bytes of heap not allocated, counting pooled frames as free (what an Exec request's limits
/// are capped by: development image only).
#[cfg(feature = "dev")]
pub fn heap_free() -> u64 {
    // SAFETY: see `frames`.
    let pooled = unsafe { frames() }.free.len() as u64 * PAGE_SIZE;
    HEAP.lock().free() as u64 + pooled
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
    unsafe { core::ptr::write_bytes(layout::phys_to_virt(phys) as *mut u8, 0, PAGE_SIZE as usize) };
    Some(phys)
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
