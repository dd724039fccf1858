# The reset vector: the vCPU's first instruction, at physical 0xFFFFFFF0 — the last 16 bytes of
# the image. A plain VM and an SEV-SNP guest start here in 16-bit real mode (CS.base =
# 0xFFFF0000, IP = 0xFFF0); a TD starts here in 32-bit protected mode with flat segments
# (TDX module ABI, "Initial State of the TD vCPU"). The first three instructions encode the same
# in both modes, so one image serves both (the technique of OVMF's ResetVectorVtf0.asm):
#
#   0F 20 C0        mov eax, cr0
#   A8 01           test al, 1          CR0.PE: set only in a TD
#   74 05           jz real_mode
#   E9 rel32        jmp rom32_td_entry  (32-bit; never reached in real mode)
#   FA              cli                 real_mode:
#   E9 rel16        jmp rom16_start
.section .reset, "ax"
.code16
.globl reset_vector
reset_vector:                   # 0xFFFFFFF0
    mov %cr0, %eax
    test $1, %al
    jz 1f
    .byte 0xE9
    .long rom32_td_entry - . - 4
1:  cli
    jmp rom16_start             # near jump within the last 64 KiB (same CS)
    .org 16, 0xf4               # exactly 16 bytes: the image ends at 0x1_0000_0000

# Back to 64-bit code in .text: the assembler keeps the mode and the section across the
# global_asm! blocks, whose order the compiler chooses, and what may follow (the trap and
# system-call stubs) is 64-bit code for .text.
.code64
.text
