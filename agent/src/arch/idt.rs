//! Traps. Every CPU exception lands in `exception` with the full register state. `#VC` (SEV-SNP)
//! and `#VE` (TDX) go to `arch::tee` first, which emulates what the hypervisor must do for the
//! guest and resumes after the instruction. Any other exception in the agent itself is fatal: it prints vector, error code, RIP (and CR2 for a page fault)
//! and exits QEMU with status `Failure::Exception + vector`. Exceptions from ring 3 will be
//! routed to the sandbox instead (they end only the builder).
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
global_asm!(
    r#"
.macro STUB vec, has_error
.align 16
exception_stub_\vec:
.if \has_error == 0
    push 0
.endif
    push \vec
    jmp exception_common
.endm
.irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    STUB \v, 0
.endr
.irp v, 8,10,11,12,13,14,17,21,29,30
    STUB \v, 1
.endr
    STUB 32, 0
    STUB 255, 0

exception_common:
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
    cld
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
    iretq

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
.text
"#,
    handler = sym exception,
);

unsafe extern "C" {
    static exception_stubs: [u64; 32];
    static interrupt_stubs: [u64; 2];
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
            IDT.0[v] = gate(addr, if v == 8 { 1 } else { 0 }); // double fault on its own stack
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
