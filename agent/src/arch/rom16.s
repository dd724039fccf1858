# 16-bit real mode -> 32-bit protected mode, running from ROM.
.section .rom16, "ax"
.code16
.globl rom16_start
rom16_start:                    # 0xFFFFEE00
    cld
    # Load the ROM GDT. In real mode the operand is CS-relative: CS.base = 0xFFFF0000.
    lgdtl %cs:(gdt32_descriptor - 0xFFFF0000)
    mov %cr0, %eax
    or $1, %eax                 # CR0.PE
    mov %eax, %cr0
    ljmpl $0x08, $rom32_start   # reload CS with the flat 32-bit code segment

.align 8
# The accessed bit is preset in every descriptor: this GDT is in ROM, and a CPU that tries to
# set it on a segment load would write to ROM (KVM cannot complete that write and hangs).
gdt32:
    .quad 0                     # 0x00 null
    .quad 0x00CF9B000000FFFF    # 0x08 32-bit code, flat 4 GiB
    .quad 0x00CF93000000FFFF    # 0x10 data, flat 4 GiB
    .quad 0x00AF9B000000FFFF    # 0x18 64-bit code
gdt32_end:
.globl gdt32_descriptor
gdt32_descriptor:
    .word gdt32_end - gdt32 - 1
    .long gdt32

# Back to 64-bit code in .text: the assembler keeps the mode and the section across the
# global_asm! blocks, whose order the compiler chooses, and what may follow (the trap and
# system-call stubs) is 64-bit code for .text.
.code64
.text
