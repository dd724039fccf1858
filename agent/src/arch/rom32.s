# 32-bit protected mode, running from ROM: copy the image to RAM, find out which platform this
# is, build the boot page tables, enter long mode. Physical addresses only (no paging yet): a
# symbol's physical address is its link address minus KERNEL_BASE.
#
# The platform, as far as page tables care (BOOT_PLATFORM, read again by arch/tee.rs):
#   0  plain VM: nothing special.
#   1  SEV-SNP guest (SEV_STATUS MSR bit 2): every page-table entry for private memory carries
#      the C-bit, whose position comes from the CPUID page the PSP checked at launch.
#   2  TD (entered at rom32_td_entry from the reset vector): private pages need no bit (the
#      shared bit marks the others, set later in Rust); MTRRs are not the TD's to write.
.section .rom32, "ax"
.code32
.set KERNEL_BASE, 0xFFFFFFFF80000000
.set ROM_BASE, 0xFFF00000
.set BOOT_STACK_SIZE, 0x11000     # arch/memory.rs: a 4 KiB guard page, then the 64 KiB stack
.set SNP_CPUID_PAGE, 0x0009E000      # arch/footer.s: the SEV metadata's CPUID section
.set MSR_SEV_STATUS, 0xC0010131
.set MSR_GHCB, 0xC0010130

# A TD starts at the reset vector in 32-bit mode with no GDT of ours: load it, then carry on as
# every platform does, with EBP saying "TDX".
#
# Every vCPU of a TD starts here (there is no SIPI), with ESI = its VCPU_INDEX (TDX module ABI,
# "Initial State of the TD VCPU"; OVMF's ResetVector reads it from ESI too). Only vCPU 0 goes
# on: any other would copy the image again and zero .bss under the running agent. The others
# spin here, touching no memory, with interrupts off (RFLAGS = 2 at entry) and no IDT (in 32-bit
# mode they cannot even TDCALL to halt: R10-R15 do not exist). arch/tee.rs also refuses a TD
# with more than one vCPU (TDG.VP.INFO NUM_VCPUS), so this only has to hold until then.
.globl rom32_td_entry
rom32_td_entry:
    test %esi, %esi
    jnz td_park
    lgdtl gdt32_descriptor
    ljmpl $0x08, $1f
1:  mov $2, %ebp
    jmp rom32_common

.globl td_park
td_park:
    pause
    jmp td_park

.globl rom32_start
rom32_start:                    # from rom16.s (plain VM or SEV-SNP guest)
    xor %ebp, %ebp
rom32_common:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss

    # Copy .text/.rodata/.data from ROM to RAM at KERNEL_PHYS.
    mov $ROM_BASE, %esi
    mov $(_kernel_start - KERNEL_BASE), %edi
    mov $_kernel_load_size, %ecx
    shr $2, %ecx
    rep movsl

    # Zero .bss (it holds the page tables and the boot stack).
    mov $(_kernel_load_end - KERNEL_BASE), %edi
    mov $_kernel_bss_size, %ecx
    shr $2, %ecx
    xor %eax, %eax
    rep stosl
    mov $(BOOT_STACK - KERNEL_BASE + BOOT_STACK_SIZE), %esp

    # EDX = the high half of every private page-table entry: the C-bit under SEV-SNP, else 0.
    xor %edx, %edx
    test %ebp, %ebp
    jnz page_tables             # TDX: nothing to probe
    call probe_snp              # sets EBP = 1 and EDX = C-bit mask if this is an SNP guest
page_tables:
    mov %ebp, (BOOT_PLATFORM - KERNEL_BASE)

    # Page tables (defined in Rust, arch/memory.rs, all in .bss, 4 KiB aligned):
    #   PML4[0]   -> PDPT_LOW   identity map of 0..4 GiB (boot only: arch/memory.rs switches to
    #                           its own tables, without it, before anything else runs)
    #   PML4[256] -> PDPT_LOW   direct map: phys 0..4 GiB at 0xFFFF800000000000
    #   PML4[511] -> PDPT_HIGH  PDPT_HIGH[510] -> PD[0]: kernel at 0xFFFFFFFF80000000
    #   PDPT_LOW[i] -> PD[i], i < 4; PD[i][j] = 2 MiB page (i GiB + j * 2 MiB)
    # All writable and executable: arch/memory.rs (init_paging) replaces them with W^X tables
    # without the identity map as soon as Rust runs.
    mov $(BOOT_PD - KERNEL_BASE), %edi
    xor %ecx, %ecx              # entry index 0..2047
1:  mov %ecx, %eax
    shl $21, %eax               # physical address low bits (i * 2 MiB mod 4 GiB)
    or $0x83, %eax              # present | writable | page size
    mov %eax, (%edi,%ecx,8)
    mov %edx, 4(%edi,%ecx,8)    # everything is below 4 GiB: only the C-bit, if any
    inc %ecx
    cmp $2048, %ecx
    jne 1b

    mov $(BOOT_PDPT_LOW - KERNEL_BASE), %edi
    mov $(BOOT_PD - KERNEL_BASE + 0x003), %eax
    xor %ecx, %ecx
2:  mov %eax, (%edi,%ecx,8)
    mov %edx, 4(%edi,%ecx,8)
    add $0x1000, %eax
    inc %ecx
    cmp $4, %ecx
    jne 2b

    mov $(BOOT_PDPT_HIGH - KERNEL_BASE), %edi
    movl $(BOOT_PD - KERNEL_BASE + 0x003), 510*8(%edi)
    mov %edx, 510*8+4(%edi)

    mov $(BOOT_PML4 - KERNEL_BASE), %edi
    movl $(BOOT_PDPT_LOW - KERNEL_BASE + 0x003), 0(%edi)
    mov %edx, 4(%edi)
    movl $(BOOT_PDPT_LOW - KERNEL_BASE + 0x003), 256*8(%edi)
    mov %edx, 256*8+4(%edi)
    movl $(BOOT_PDPT_HIGH - KERNEL_BASE + 0x003), 511*8(%edi)
    mov %edx, 511*8+4(%edi)

    # MTRRs: at reset they are off, which makes all memory uncachable. On a plain VM we are the
    # firmware, so we set them: enabled, default type write-back (MMIO is below 4 GiB above RAM;
    # virtio's registers are accessed with plain loads/stores that trap to the VMM either way).
    # In a TD or an SNP guest the write would trap (#VE/#VC, and no handler exists yet); there
    # the memory type is the host's and the hardware's business.
    test %ebp, %ebp
    jnz 3f
    mov $0x2FF, %ecx            # IA32_MTRR_DEF_TYPE
    xor %edx, %edx
    mov $((1 << 11) | 6), %eax  # E = 1, type = WB
    wrmsr
3:
    # CR4: PAE | OSFXSR | OSXMMEXCPT (SSE for sha2's SHA-NI path and for user programs),
    # TSD (bit 2: RDTSC/RDTSCP in ring 3 raise #GP, and the sandbox answers them: sandbox/cpu.rs).
    mov %cr4, %eax
    or $((1 << 2) | (1 << 5) | (1 << 9) | (1 << 10)), %eax
    mov %eax, %cr4
    mov $(BOOT_PML4 - KERNEL_BASE), %eax
    mov %eax, %cr3
    # EFER: LME | NXE — written only if they are not set already: a TD starts with both set,
    # and writing EFER in a TD raises #VE (Linux avoids the write for the same reason).
    mov $0xC0000080, %ecx
    rdmsr
    mov %eax, %ebx
    or $((1 << 8) | (1 << 11)), %eax
    cmp %eax, %ebx
    je 4f
    wrmsr
4:
.globl rom32_paging_on           # (a name for tests/boot_asm: everything before is checked there)
rom32_paging_on:
    # CR0: PG | PE | MP | NE; clear EM, and clear CD/NW: the reset value disables the caches,
    # which under KVM makes every memory access uncached.
    mov %cr0, %eax
    and $~((1 << 2) | (1 << 29) | (1 << 30)), %eax
    or $((1 << 31) | (1 << 0) | (1 << 1) | (1 << 5)), %eax
    mov %eax, %cr0
    ljmpl $0x18, $rom64_start

# Is this an SEV-SNP guest? The SEV_STATUS MSR says (APM vol. 2 "SEV_STATUS MSR"): it is never
# intercepted, so reading it raises no #VC inside an SEV-ES/SNP guest; outside one the MSR may
# not exist and RDMSR raises #GP, which the one-gate IDT below turns into "0". No CPUID is
# executed (it would raise #VC in an SNP guest). On SNP: EBP = 1, EDX = C-bit mask (high half).
probe_snp:
    # IDT gate 13 (#GP) -> gp_at_rdmsr: offset 15:0, selector 0x08, 32-bit interrupt gate,
    # offset 31:16.
    mov $gp_at_rdmsr, %eax
    mov $(BOOT_IDT32 - KERNEL_BASE + 13 * 8), %edi
    mov %ax, 0(%edi)
    movw $0x08, 2(%edi)
    movw $0x8E00, 4(%edi)
    shr $16, %eax
    mov %ax, 6(%edi)
    lidtl idt32_descriptor
    mov $MSR_SEV_STATUS, %ecx
sev_status_rdmsr:
    rdmsr                       # #GP -> EAX = EDX = 0
    test $1, %eax               # SEV active?
    jz 9f                       # no: a plain VM
    test $4, %eax               # SNP active?
    jz snp_fail                 # SEV or SEV-ES without SNP: nothing here can be attested
    # The C-bit position: CPUID 0x8000001F EBX[5:0], from the CPUID page (u32 count at +0,
    # entries of 0x30 bytes from +0x10: EAX_in at +0, EBX out at +0x1C).
    mov $SNP_CPUID_PAGE, %esi
    mov (%esi), %ecx
    cmp $64, %ecx
    ja snp_fail
    lea 0x10(%esi), %edi
4:  test %ecx, %ecx
    jz snp_fail                 # the leaf is missing
    cmpl $0x8000001F, (%edi)
    je 5f
    add $0x30, %edi
    dec %ecx
    jmp 4b
5:  mov 0x1C(%edi), %ecx
    and $0x3F, %ecx
    cmp $32, %ecx               # the C-bit must lie above the 4 GiB the agent maps
    jb snp_fail
    cmp $51, %ecx
    ja snp_fail
    mov %ecx, (BOOT_CBIT - KERNEL_BASE)
    sub $32, %ecx
    mov $1, %edx
    shl %cl, %edx
    mov $1, %ebp
    lidtl idt32_none            # no IDT until Rust installs its own
    ret
9:  xor %edx, %edx
    lidtl idt32_none
    ret

# #GP handler for the probe: only the RDMSR above may fault, meaning "no SEV". The frame
# (error code, EIP, CS, EFLAGS) is dropped and the probe goes on at its "plain VM" exit; no
# IRET (this host's nested KVM fails to emulate an IRET executed from ROM).
gp_at_rdmsr:
    cmpl $sev_status_rdmsr, 4(%esp)   # [esp] = error code, [esp+4] = EIP
    jne 1f
    add $16, %esp
    jmp 9b
1:  hlt
    jmp 1b

# An SNP guest this image cannot run as: ask the hypervisor to terminate it (GHCB MSR protocol
# 0x100, reason set 1 "agent", reason 1 "unsupported SEV configuration"). The GHCB MSR is never
# intercepted.
snp_fail:
    mov $MSR_GHCB, %ecx
    mov $(0x100 | (1 << 12) | (1 << 16)), %eax
    xor %edx, %edx
    wrmsr
    .byte 0xf3, 0x0f, 0x01, 0xd9    # VMGEXIT
1:  hlt
    jmp 1b

.align 8
idt32_descriptor:
    .word 14 * 8 - 1
    .long BOOT_IDT32 - KERNEL_BASE
idt32_none:
    .word 0
    .long 0

.code64
rom64_start:
    # Still at the identity-mapped ROM address: jump to the higher-half kernel.
    xor %eax, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    movabs $(BOOT_STACK + BOOT_STACK_SIZE), %rsp
    movabs $rust_start, %rax
    jmp *%rax

# Back to .text (see the end of footer.s).
.text
