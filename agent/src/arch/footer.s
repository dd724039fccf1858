# The firmware's self-description, read by QEMU (and `measurement-tool measure`) exactly as it
# reads OVMF's: a GUID footer table ending 32 bytes before the end of the image, pointing at the
# SEV metadata (pages SEV-SNP pre-validates or fills at launch), the SEV-ES reset block (where
# application processors start) and the TDX metadata (TDVF descriptor: what the TDX module adds
# and measures). Addresses are documented in docs/memory-layout.md.
#
#   0x0009D000  TD HOB (TDX, one page)
#   0x0009E000  CPUID page (SEV-SNP)
#   0x0009F000  secrets page (SEV-SNP)
#   0x00100000 - 0x00FFFFFF  memory the agent uses before it can accept/validate more
#                            (image copy, .bss, first heap): SNP pre-validated, TDX TempMem
#   0xFFF00000 - 0xFFFFFFFF  this image (TDX BFV, measured page by page)
.section .footer, "a"
.code16
footer_start:                   # 0xFFFFF000

.align 16
sev_metadata:                   # OvmfSevMetadata: "ASEV", size, version 1, sections
    .ascii "ASEV"
    .long sev_metadata_end - sev_metadata
    .long 1
    .long 3
    .long 0x00100000, 0x00F00000, 1     # SNP_SEC_MEM: pre-validated, zero
    .long 0x0009F000, 0x00001000, 2     # SNP_SECRETS
    .long 0x0009E000, 0x00001000, 3     # CPUID
sev_metadata_end:

.align 16
tdx_metadata:                   # TDVF descriptor: "TDVF", length, version 1, sections
    .ascii "TDVF"
    .long tdx_metadata_end - tdx_metadata
    .long 1
    .long 3
    # data offset, raw size, memory address, memory size, type, attributes
    .long 0, 0x00100000
    .quad 0xFFF00000, 0x00100000
    .long 0, 1                          # BFV (this image), MR.EXTEND
    .long 0, 0
    .quad 0x00100000, 0x00F00000
    .long 3, 0                          # TempMem
    .long 0, 0
    .quad 0x0009D000, 0x00001000
    .long 2, 0                          # TD_HOB
tdx_metadata_end:

# Application processors (SEV-ES reset block): park them; the agent runs on one vCPU.
ap_reset:
    cli
    hlt
    jmp ap_reset

# The GUID table, ending at 0xFFFFFFE0 (32 bytes before the end of the image). Entries are read
# backwards from the footer: [data][u16 entry size][GUID]. Offsets are counted from the end of
# the image: footer_end is 0xFFFFFFF0, 16 bytes before it.
.org 0xFE0 - 84
table_start:
    .long footer_end - tdx_metadata + 0x10
    .word 22
    .byte 0x35, 0x65, 0x7a, 0xe4, 0x4a, 0x98, 0x98, 0x47, 0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2
    .long footer_end - sev_metadata + 0x10
    .word 22
    .byte 0x66, 0x65, 0x88, 0xdc, 0x4a, 0x98, 0x98, 0x47, 0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc
    .long ap_reset
    .word 22
    .byte 0xde, 0x71, 0xf7, 0x00, 0x7e, 0x1a, 0xcb, 0x4f, 0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e
    .word 84                            # the whole table, this footer entry included
    .byte 0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d
table_end:                      # 0xFFFFFFE0
.org 0xFF0
footer_end:                     # 0xFFFFFFF0: the reset vector follows (.reset)

# Back to 64-bit code in .text: the assembler keeps the mode and the section across the
# global_asm! blocks, whose order the compiler chooses, and what may follow (the trap and
# system-call stubs) is 64-bit code for .text.
.code64
.text
