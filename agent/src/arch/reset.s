# The reset vector: the vCPU starts here, in 16-bit real mode, with CS.base = 0xFFFF0000 and
# IP = 0xFFF0, i.e. at physical 0xFFFFFFF0 — the last 16 bytes of the image.
.section .reset, "ax"
.code16
.globl reset_vector
reset_vector:                   # 0xFFFFFFF0
    cli
    jmp rom16_start             # near jump within the last 64 KiB (same CS)
    .org 16, 0xf4               # pad with hlt to the end of the image: 0x1_0000_0000
