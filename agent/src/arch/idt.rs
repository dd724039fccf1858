//! Traps. Every CPU exception lands in `exception` with the full register state, always on a
//! stack of the agent's: a trap from ring 3 on TSS.RSP0 (switched by the CPU as it delivers the
//! event), a trap in ring 0 on the agent's current stack, and #DB, NMI, #DF, #MC, #VE and #VC on
//! their IST stacks (gdt.rs), whatever the interrupted code was doing. In order:
//!
//! - an NMI is counted and ignored (a stray or host-sent NMI does not end a build);
//! - a system call: the #UD of `syscall` from ring 3 (EFER.SCE is clear, user.rs) is completed
//!   as the instruction would, and goes to the sandbox like the TD's SYSCALL entry;
//! - the timer; `#VC` (SEV-SNP) and `#VE` (TDX) go to `arch::tee`, which emulates what the
//!   hypervisor must do for the guest and resumes after the instruction;
//! - any other exception from ring 3 ends only the process (the sandbox decides);
//! - any other exception in the agent itself is fatal: it prints vector, error code, RIP, CR2
//!   (and "stack overflow" when CR2 is a stack's guard page) and exits QEMU with status
//!   `Failure::Exception + vector`.
use super::gdt::Ist;
use super::power;
use core::arch::{asm, global_asm};
use core::ptr::addr_of;

/// Register state saved by the trap entry code, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// Entry stubs: vectors that push no error code push a 0 so every frame has the same shape.
// Every entry first sets RFLAGS to a known value (`push 2; popfq`): the gate clears IF, TF and
// NT, but not AC (a ring-3 AC would switch SMAP off in the agent) or DF.
//
// The vectors with an IST stack (gdt::Ist) have stubs of their own: the first instruction moves
// the IST pointer down a slice and the one before IRETQ moves it back, so the same event nested
// inside the handler gets a fresh slice. The only instants at which a nested event of the same
// vector can still land on the frame in use are those two instructions: `exception` recognises
// an event interrupting either (its RIP is listed in `ist_windows`) and stops the agent.
//
// `agent_syscall_entry` is LSTAR, used only in a TD (where EFER.SCE cannot be cleared, see
// user::init): it leaves the process's stack for RSP0 at its first two instructions, during
// which only an NMI, #MC or #DB could arrive (SFMASK clears IF and TF), and those have IST
// stacks; then it builds the frame a trap from ring 3 would have (vector 256) and joins the
// common path.
global_asm!(
    r#"
.macro SAVE_CALL_RESTORE
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    push 2
    popfq
    mov rdi, rsp
    call {handler}
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
.endm

.macro STUB vec, has_error
.align 16
exception_stub_\vec:
.if \has_error == 0
    push 0
.endif
    push \vec
    jmp exception_common
.endm

.macro IST_STUB vec, has_error, offset
.align 16
exception_stub_\vec:
ist_entry_\vec:
    sub qword ptr [rip + {tss} + \offset], {slice}
.if \has_error == 0
    push 0
.endif
    push \vec
    SAVE_CALL_RESTORE
    add qword ptr [rip + {tss} + \offset], {slice}
ist_iret_\vec:
    iretq
.endm

.irp v, 0,3,4,5,6,7,9,15,16,19,22,23,24,25,26,27,28,31
    STUB \v, 0
.endr
.irp v, 10,11,12,13,14,17,21,30
    STUB \v, 1
.endr
    IST_STUB 1, 0, {ist_db}
    IST_STUB 2, 0, {ist_nmi}
    IST_STUB 8, 1, {ist_df}
    IST_STUB 18, 0, {ist_mc}
    IST_STUB 20, 0, {ist_ve}
    IST_STUB 29, 1, {ist_vc}
    STUB 32, 0
    STUB 255, 0

exception_common:
    SAVE_CALL_RESTORE
    iretq

.globl agent_syscall_entry
agent_syscall_entry:
    mov [rip + {user_rsp}], rsp
    mov rsp, [rip + {tss} + 4]
    push {user_data}
    push qword ptr [rip + {user_rsp}]
    push r11
    push {user_code}
    push rcx
    push 0
    push {syscall_vector}
    jmp exception_common

.section .rodata
.align 8
.globl exception_stubs
exception_stubs:
.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exception_stub_\v
.endr
.globl interrupt_stubs
interrupt_stubs:
    .quad exception_stub_32
    .quad exception_stub_255
.globl ist_windows
ist_windows:
.irp v, 1,2,8,18,20,29
    .quad \v, ist_entry_\v, ist_iret_\v
.endr
.text
"#,
    handler = sym exception,
    tss = sym super::gdt::TSS,
    slice = const super::gdt::IST_SLICE,
    ist_db = const super::gdt::tss_ist_offset(Ist::Debug),
    ist_nmi = const super::gdt::tss_ist_offset(Ist::Nmi),
    ist_df = const super::gdt::tss_ist_offset(Ist::DoubleFault),
    ist_mc = const super::gdt::tss_ist_offset(Ist::MachineCheck),
    ist_ve = const super::gdt::tss_ist_offset(Ist::Ve),
    ist_vc = const super::gdt::tss_ist_offset(Ist::Vc),
    user_rsp = sym SYSCALL_USER_RSP,
    user_data = const super::gdt::USER_DATA as u64,
    user_code = const super::gdt::USER_CODE as u64,
    syscall_vector = const SYSCALL_VECTOR,
);

/// The pseudo-vector `agent_syscall_entry` puts in its frame.
pub const SYSCALL_VECTOR: u64 = 256;
/// The process's RSP for the two instructions of `agent_syscall_entry` that switch stacks.
static mut SYSCALL_USER_RSP: u64 = 0;
/// NMIs received (each is counted and ignored; `user::run` logs them).
pub static NMIS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// Where the last NMI interrupted the vCPU.
pub static NMI_RIP: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The IST vector of each gate (the rest run on the interrupted kernel stack or on RSP0).
fn ist_of(vector: usize) -> Option<Ist> {
    match vector {
        1 => Some(Ist::Debug),
        2 => Some(Ist::Nmi),
        8 => Some(Ist::DoubleFault),
        18 => Some(Ist::MachineCheck),
        20 => Some(Ist::Ve),
        29 => Some(Ist::Vc),
        _ => None,
    }
}

unsafe extern "C" {
    static exception_stubs: [u64; 32];
    static interrupt_stubs: [u64; 2];
    static ist_windows: [[u64; 3]; 6];
}

/// Whether an event of this vector interrupted the first or last instruction of its own IST
/// stub: then its frame lies on the one the interrupted handler is using (see above).
fn in_ist_window(f: &TrapFrame) -> bool {
    // SAFETY: a table of addresses in .rodata, defined above.
    let windows = unsafe { &*addr_of!(ist_windows) };
    f.cs & 3 == 0 && windows.iter().any(|w| w[0] == f.vector && (f.rip == w[1] || f.rip == w[2]))
}

#[repr(C, align(16))]
struct Idt([[u64; 2]; 256]);

static mut IDT: Idt = Idt([[0; 2]; 256]);

const NAMES: [&str; 32] = [
    "#DE divide error", "#DB debug", "NMI", "#BP breakpoint", "#OF overflow", "#BR bound range",
    "#UD invalid opcode", "#NM device not available", "#DF double fault", "coprocessor overrun",
    "#TS invalid TSS", "#NP segment not present", "#SS stack fault", "#GP general protection",
    "#PF page fault", "reserved", "#MF x87 error", "#AC alignment check", "#MC machine check",
    "#XM SIMD error", "#VE virtualization exception", "#CP control protection", "reserved",
    "reserved", "reserved", "reserved", "reserved", "reserved", "#HV hypervisor injection",
    "#VC VMM communication", "#SX security exception", "reserved",
];

extern "C" fn exception(frame: &mut TrapFrame) {
    if in_ist_window(frame) {
        super::serial::emergency_print(format_args!("agent: vector {} nested inside its own IST entry at RIP {:#x}\n", frame.vector, frame.rip));
        power::fail_with(power::Failure::Exception as u8 + (frame.vector as u8 & 31))
    }
    if frame.vector == 2 {
        // An NMI (from the host, or a stray one): nothing to do; the build goes on.
        NMI_RIP.store(frame.rip, core::sync::atomic::Ordering::Relaxed);
        NMIS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        return;
    }
    if frame.vector == SYSCALL_VECTOR {
        super::user::syscall_from_user(frame); // agent_syscall_entry (TD)
    }
    // With EFER.SCE clear, `syscall` in ring 3 raises #UD: taken on RSP0 by the CPU itself,
    // then completed here as the instruction would (RCX = next RIP, R11 = RFLAGS).
    if frame.vector == 6 && frame.cs & 3 == 3 && super::user::at_syscall(frame.rip) {
        frame.rip += 2;
        frame.rcx = frame.rip;
        frame.r11 = frame.rflags & !(1 << 16); // RF is never saved by SYSCALL
        super::user::syscall_from_user(frame);
    }
    if frame.vector == u64::from(super::timer::VECTOR) {
        super::timer::end_of_interrupt();
        if frame.cs & 3 == 3 {
            // The tick preempted the process: the sandbox decides what runs next.
            super::user::timer_from_user(frame);
        }
        return;
    }
    if frame.vector == u64::from(super::timer::SPURIOUS) {
        return; // no end-of-interrupt for a spurious interrupt
    }
    // SEV-SNP #VC and TDX #VE: CPUID, port I/O, MSRs and MMIO the hypervisor must emulate.
    if frame.vector == 29 && super::tee::vc(frame) {
        return;
    }
    if frame.vector == 20 && super::tee::vm_exception(frame) {
        return;
    }
    let vector = frame.vector as usize & 31;
    let cr2 = if vector == 14 { super::cpu::read_cr2() } else { 0 };
    if frame.cs & 3 == 3 {
        // The builder faulted: it ends, the agent goes on.
        super::user::fault_from_user(frame, cr2);
    }
    let cr2 = if vector == 8 { super::cpu::read_cr2() } else { cr2 };
    if matches!(vector, 8 | 14) && super::gdt::stack_guards().iter().any(|g| g.contains(&super::layout::virt_to_phys(cr2))) && cr2 >= super::layout::KERNEL_BASE {
        // The #PF a full stack could not push its frame for (a #DF), or one it could.
        super::serial::emergency_print(format_args!("agent exception: stack overflow (guard page at CR2 {cr2:#x})\n"));
    }
    super::serial::emergency_print(format_args!(
        "agent exception: vector {} ({}), error code {:#x}, RIP {:#x}, CR2 {:#x}, RSP {:#x}\n",
        vector, NAMES[vector], frame.error_code, frame.rip, cr2, frame.rsp
    ));
    power::fail_with(power::Failure::Exception as u8 + vector as u8)
}

pub fn init() {
    // SAFETY: runs once before interrupts can fire; the IDT static lives for the whole run and
    // each gate points at an entry stub defined above in this file.
    unsafe {
        let stubs = &*addr_of!(exception_stubs);
        let gate = |addr: u64, ist: u64| {
            let low = (addr & 0xFFFF)
                | (u64::from(super::gdt::KERNEL_CODE) << 16)
                | (ist << 32)
                | (0x8E << 40) // present, DPL 0, 64-bit interrupt gate
                | ((addr >> 16) & 0xFFFF) << 48;
            [low, addr >> 32]
        };
        for (v, &addr) in stubs.iter().enumerate() {
            IDT.0[v] = gate(addr, ist_of(v).map_or(0, |i| i as u64));
        }
        // `int3` from ring 3 raises #BP (SIGTRAP), as on Linux, rather than #GP: DPL 3. The
        // handler sees a ring-3 frame and ends only the process.
        IDT.0[3][0] |= 3 << 45;
        let irqs = &*addr_of!(interrupt_stubs);
        IDT.0[super::timer::VECTOR as usize] = gate(irqs[0], 0);
        IDT.0[super::timer::SPURIOUS as usize] = gate(irqs[1], 0);
        #[repr(C, packed)]
        struct Descriptor {
            limit: u16,
            base: u64,
        }
        let desc = Descriptor { limit: (size_of::<Idt>() - 1) as u16, base: addr_of!(IDT) as u64 };
        asm!("lidt [{}]", in(reg) &desc, options(nostack));
    }
}

/// Deliberately faults (test images only): executes `ud2`.
#[cfg(feature = "fault-test")]
pub fn deliberate_fault() -> ! {
    // SAFETY: `ud2` raises #UD, which the handler above turns into a failure exit.
    unsafe { asm!("ud2", options(noreturn)) }
}

/// Deliberately overflows the boot stack (test images only), as a deep recursion over host data
/// would: the guard page below the stack must turn it into a #DF report, not a write into
/// whatever lies below.
#[cfg(feature = "stack-overflow-test")]
pub fn deliberate_stack_overflow() -> ! {
    #[inline(never)]
    fn deeper(depth: u64) -> u64 {
        let mut frame = [0u8; 256];
        frame[depth as usize % 256] = depth as u8;
        core::hint::black_box(&mut frame);
        if depth == u64::MAX {
            return 0;
        }
        deeper(depth + 1) + u64::from(frame[0])
    }
    log::info!("stack-overflow-test: recursing on the boot stack");
    let depth = deeper(0);
    panic!("the recursion ended at {depth}")
}
