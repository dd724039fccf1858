# 32-bit protected mode, running from ROM: copy the image to RAM, build the boot page tables,
# enter long mode. Physical addresses only (no paging yet): a symbol's physical address is its
# link address minus KERNEL_BASE.
.section .rom32, "ax"
.code32
.set KERNEL_BASE, 0xFFFFFFFF80000000
.set ROM_BASE, 0xFFF00000
.set BOOT_STACK_SIZE, 0x10000
.globl rom32_start
rom32_start:                    # 0xFFFFE000
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

    # Page tables (defined in Rust, arch/paging.rs, all in .bss, 4 KiB aligned):
    #   PML4[0]   -> PDPT_LOW   identity map of 0..4 GiB (boot only, removed before user code)
    #   PML4[256] -> PDPT_LOW   direct map: phys 0..4 GiB at 0xFFFF800000000000
    #   PML4[511] -> PDPT_HIGH  PDPT_HIGH[510] -> PD[0]: kernel at 0xFFFFFFFF80000000
    #   PDPT_LOW[i] -> PD[i], i < 4; PD[i][j] = 2 MiB page (i GiB + j * 2 MiB)
    mov $(BOOT_PD - KERNEL_BASE), %edi
    xor %ecx, %ecx              # entry index 0..2047
1:  mov %ecx, %eax
    shl $21, %eax               # physical address low bits (i * 2 MiB mod 4 GiB)
    or $0x83, %eax              # present | writable | page size
    mov %eax, (%edi,%ecx,8)     # high dword stays 0: everything is below 4 GiB
    inc %ecx
    cmp $2048, %ecx
    jne 1b

    mov $(BOOT_PDPT_LOW - KERNEL_BASE), %edi
    mov $(BOOT_PD - KERNEL_BASE + 0x003), %eax
    mov %eax, 0(%edi)
    add $0x1000, %eax
    mov %eax, 8(%edi)
    add $0x1000, %eax
    mov %eax, 16(%edi)
    add $0x1000, %eax
    mov %eax, 24(%edi)

    mov $(BOOT_PDPT_HIGH - KERNEL_BASE), %edi
    movl $(BOOT_PD - KERNEL_BASE + 0x003), 510*8(%edi)

    mov $(BOOT_PML4 - KERNEL_BASE), %edi
    movl $(BOOT_PDPT_LOW - KERNEL_BASE + 0x003), 0(%edi)
    movl $(BOOT_PDPT_LOW - KERNEL_BASE + 0x003), 256*8(%edi)
    movl $(BOOT_PDPT_HIGH - KERNEL_BASE + 0x003), 511*8(%edi)

    # MTRRs: at reset they are off, which makes all memory uncachable. We are the firmware, so
    # we set them: enabled, default type write-back (MMIO is below 4 GiB above RAM; virtio's
    # registers are accessed with plain loads/stores that trap to the VMM either way).
    mov $0x2FF, %ecx            # IA32_MTRR_DEF_TYPE
    xor %edx, %edx
    mov $((1 << 11) | 6), %eax  # E = 1, type = WB
    wrmsr

    # CR4: PAE | OSFXSR | OSXMMEXCPT (SSE for sha2's SHA-NI path and for user programs).
    mov %cr4, %eax
    or $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    mov %eax, %cr4
    mov $(BOOT_PML4 - KERNEL_BASE), %eax
    mov %eax, %cr3
    # EFER: LME | NXE.
    mov $0xC0000080, %ecx
    rdmsr
    or $((1 << 8) | (1 << 11)), %eax
    wrmsr
    # CR0: PG | PE | MP | NE; clear EM, and clear CD/NW: the reset value disables the caches,
    # which under KVM makes every memory access uncached.
    mov %cr0, %eax
    and $~((1 << 2) | (1 << 29) | (1 << 30)), %eax
    or $((1 << 31) | (1 << 0) | (1 << 1) | (1 << 5)), %eax
    mov %eax, %cr0
    ljmpl $0x18, $rom64_start

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
