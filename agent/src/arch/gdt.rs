//! The GDT and TSS. Selectors are laid out for SYSCALL/SYSRET (STAR): kernel code 0x08, kernel
//! data 0x10, user data 0x18|3, user code 0x20|3; then the TSS, whose RSP0 is the stack the CPU
//! switches to when ring 3 traps, and whose IST1 is the double-fault stack.
use core::arch::asm;
use core::ptr::addr_of;

pub const KERNEL_CODE: u16 = 0x08;
pub const KERNEL_DATA: u16 = 0x10;
pub const USER_DATA: u16 = 0x18 | 3;
pub const USER_CODE: u16 = 0x20 | 3;
const TSS_SELECTOR: u16 = 0x28;

#[repr(C, packed(4))]
struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

#[repr(C, align(16))]
struct Stack([u8; 0x10000]);

static mut TSS: Tss = Tss {
    _reserved0: 0,
    rsp: [0; 3],
    _reserved1: 0,
    ist: [0; 7],
    _reserved2: 0,
    _reserved3: 0,
    iomap_base: size_of::<Tss>() as u16, // no I/O permission bitmap: ring 3 gets no ports
};
static mut KERNEL_TRAP_STACK: Stack = Stack([0; 0x10000]);
static mut DOUBLE_FAULT_STACK: Stack = Stack([0; 0x10000]);
static mut GDT: [u64; 7] = [
    0,
    0x00AF_9A00_0000_FFFF, // 0x08 kernel code, 64-bit
    0x00CF_9200_0000_FFFF, // 0x10 kernel data
    0x00CF_F200_0000_FFFF, // 0x18 user data (DPL 3)
    0x00AF_FA00_0000_FFFF, // 0x20 user code, 64-bit (DPL 3)
    0,                     // 0x28 TSS (low)
    0,                     // 0x30 TSS (high)
];

#[repr(C, packed)]
struct Descriptor {
    limit: u16,
    base: u64,
}

pub fn init() {
    // SAFETY: runs once on the only vCPU before interrupts or other users of these statics
    // exist; the GDT/TSS statics live for the whole run, as the CPU requires.
    unsafe {
        let tss = addr_of!(TSS) as u64;
        TSS.rsp[0] = addr_of!(KERNEL_TRAP_STACK) as u64 + size_of::<Stack>() as u64;
        TSS.ist[0] = addr_of!(DOUBLE_FAULT_STACK) as u64 + size_of::<Stack>() as u64;
        let limit = size_of::<Tss>() as u64 - 1;
        GDT[5] = limit | ((tss & 0xFF_FFFF) << 16) | (0x89 << 40) | (((tss >> 24) & 0xFF) << 56);
        GDT[6] = tss >> 32;
        let desc = Descriptor { limit: (size_of::<[u64; 7]>() - 1) as u16, base: addr_of!(GDT) as u64 };
        asm!(
            "lgdt [{desc}]",
            // Reload CS with a far return, then the data segments.
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {data:x}",
            "mov es, {data:x}",
            "mov ss, {data:x}",
            "xor {tmp:e}, {tmp:e}",
            "mov fs, {tmp:x}",
            "mov gs, {tmp:x}",
            "ltr {tss:x}",
            desc = in(reg) &desc,
            code = in(reg) u64::from(KERNEL_CODE),
            data = in(reg) u64::from(KERNEL_DATA),
            tss = in(reg) u64::from(TSS_SELECTOR),
            tmp = out(reg) _,
        );
    }
}
