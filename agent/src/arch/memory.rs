//! Memory: the boot page tables (filled in by `rom32.s`), the RAM size, the heap and DMA pages.
use super::cpu::{inb, outb};
use super::layout::{self, PAGE_SIZE};
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
#[repr(C, align(16))]
pub struct BootStack([u8; 0x10000]);
#[unsafe(no_mangle)]
static mut BOOT_STACK: BootStack = BootStack([0; 0x10000]);

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

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

/// Heap = RAM from the end of the image to the end of RAM, used through the direct map.
pub fn init() {
    let start = layout::kernel_end_phys().next_multiple_of(0x20_0000);
    let end = ram_size();
    let size = end.saturating_sub(start);
    // SAFETY: [start, end) is RAM that nothing else uses (the image ends below `start`), it is
    // mapped by the direct map, and `init` runs once before any allocation.
    unsafe { HEAP.lock().init(layout::phys_to_virt(start) as *mut u8, size as usize) };
    HEAP_BYTES.store(size, core::sync::atomic::Ordering::Relaxed);
    log::info!("memory: {} MiB RAM, heap {} MiB at {:#x}", end >> 20, size >> 20, start);
}

/// Bytes of heap not allocated, counting pooled frames as free (what the sandbox's limits are
/// capped by).
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
                if let Some((phys, _)) = alloc_dma_pages(n) {
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

/// Allocates zeroed, page-aligned memory for device DMA. Returns (physical, virtual).
pub fn alloc_dma_pages(pages: usize) -> Option<(u64, core::ptr::NonNull<u8>)> {
    let layout = core::alloc::Layout::from_size_align(pages * PAGE_SIZE as usize, PAGE_SIZE as usize).ok()?;
    // SAFETY: the layout has non-zero size (pages >= 1 is the virtio-drivers contract).
    let ptr = core::ptr::NonNull::new(unsafe { alloc::alloc::alloc_zeroed(layout) })?;
    Some((layout::virt_to_phys(ptr.as_ptr() as u64), ptr))
}

/// Frees pages from [`alloc_dma_pages`].
///
/// # Safety
/// `ptr` and `pages` must come from one `alloc_dma_pages` call, freed once.
pub unsafe fn free_dma_pages(ptr: core::ptr::NonNull<u8>, pages: usize) {
    let layout = core::alloc::Layout::from_size_align(pages * PAGE_SIZE as usize, PAGE_SIZE as usize).unwrap();
    // SAFETY: per this function's contract.
    unsafe { alloc::alloc::dealloc(ptr.as_ptr(), layout) }
}
