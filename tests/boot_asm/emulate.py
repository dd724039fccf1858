#!/usr/bin/env python3
"""Runs the agent's 32-bit boot code (agent/src/arch/reset.s, rom32.s) in the Unicorn CPU
emulator (QEMU's x86 core as a library) with a modelled platform, up to the instruction that
turns paging on, and prints what it built as JSON. Driven by tests/tests/boot_asm.rs.

Platforms (argv[3]):
  plain       enters at rom32_start (from rom16.s), SEV_STATUS reads 0
  snp         enters at rom32_start, SEV_STATUS = SEV|SEV-ES|SNP, a CPUID page whose
              0x8000001F EBX gives the C-bit (argv[4], default 51)
  snp-nocpuid SNP, but the CPUID page lacks leaf 0x8000001F
  sev-es      SEV_STATUS = SEV|SEV-ES without SNP
  tdx         enters at the reset vector 0xFFFFFFF0 in 32-bit protected mode, as a TD does
              (TDX module ABI "Initial State of the TD vCPU"), with EFER.LME|NXE already set
"""
import json
import sys

from unicorn import Uc, UcError, UC_ARCH_X86, UC_MODE_32, UC_HOOK_CODE, UC_PROT_ALL
from unicorn.x86_const import (
    UC_X86_REG_EAX, UC_X86_REG_EDX, UC_X86_REG_EIP, UC_X86_REG_CR0, UC_X86_REG_CR3, UC_X86_REG_CR4,
    UC_X86_REG_GDTR, UC_X86_REG_ESP, UC_X86_REG_ECX, UC_X86_REG_ESI,
)

KERNEL_BASE = 0xFFFFFFFF80000000
ROM_BASE = 0xFFF00000
MSR_SEV_STATUS, MSR_GHCB, MSR_EFER, MSR_MTRR_DEF_TYPE = 0xC0010131, 0xC0010130, 0xC0000080, 0x2FF


def symbols(nm_path):
    syms = {}
    for line in open(nm_path):
        parts = line.split()
        if len(parts) == 3:
            syms[parts[2]] = int(parts[0], 16)
    return syms


def phys(v):
    return v - KERNEL_BASE if v >= KERNEL_BASE else v


def main():
    image, nm_path, platform = sys.argv[1], sys.argv[2], sys.argv[3]
    cbit = int(sys.argv[4]) if len(sys.argv) > 4 else 51
    syms = symbols(nm_path)
    rom = open(image, "rb").read()
    assert len(rom) == 0x100000

    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 64 << 20, UC_PROT_ALL)             # RAM (the launch pre-accepts 1-16 MiB)
    uc.mem_map(ROM_BASE, 0x100000, UC_PROT_ALL)       # the image, as -bios maps it
    uc.mem_write(ROM_BASE, rom)
    # Whatever RAM holds before the image's code zeroes .bss must not matter: fill with junk.
    uc.mem_write(0x100000, b"\xA5" * (15 << 20))

    if platform.startswith("snp"):
        page = bytearray(4096)
        leaves = [(0x0, 0, (0x10, 0x68747541, 0x444D4163, 0x69746E65)), (0x80000000, 0, (0x80000021, 0, 0, 0))]
        if platform != "snp-nocpuid":
            leaves.append((0x8000001F, 0, (0x1B, 0x40 | cbit | (1 << 6), 0, 0)))
        page[0:4] = len(leaves).to_bytes(4, "little")
        for i, (leaf, sub, regs) in enumerate(leaves):
            e = 0x10 + i * 0x30
            page[e:e + 4] = leaf.to_bytes(4, "little")
            page[e + 4:e + 8] = sub.to_bytes(4, "little")
            for j, r in enumerate(regs):
                page[e + 0x18 + 4 * j:e + 0x1C + 4 * j] = r.to_bytes(4, "little")
        uc.mem_write(0x9E000, bytes(page))

    sev_status = {"plain": 0, "snp": 0x7, "snp-nocpuid": 0x7, "sev-es": 0x3, "tdx": None, "tdx-ap": None}[platform]
    events = {"rdmsr_sev_status": 0, "wrmsr": [], "vmgexit": False}

    rdmsr_at = syms["sev_status_rdmsr"]

    def on_code(uc, address, size, _):
        if address == rdmsr_at:
            # The model's SEV_STATUS (MSR 0xC001_0131): skip the RDMSR, give its value.
            events["rdmsr_sev_status"] += 1
            uc.reg_write(UC_X86_REG_EAX, sev_status & 0xFFFFFFFF)
            uc.reg_write(UC_X86_REG_EDX, 0)
            uc.reg_write(UC_X86_REG_EIP, address + 2)
        elif uc.mem_read(address, 4) == b"\xf3\x0f\x01\xd9":
            events["vmgexit"] = True
            uc.emu_stop()
        elif uc.mem_read(address, 2) == b"\x0f\x30":
            # WRMSR: recorded, then performed by the emulator.
            value = (uc.reg_read(UC_X86_REG_EDX) << 32) | uc.reg_read(UC_X86_REG_EAX)
            events["wrmsr"].append([uc.reg_read(UC_X86_REG_ECX), value])

    uc.hook_add(UC_HOOK_CODE, on_code, begin=0xFFFFE000, end=0xFFFFFFFF)

    gdt = syms["gdt32_descriptor"]
    gdt_limit = int.from_bytes(rom[gdt - ROM_BASE:gdt - ROM_BASE + 2], "little")
    gdt_base = int.from_bytes(rom[gdt - ROM_BASE + 2:gdt - ROM_BASE + 6], "little")
    if platform in ("tdx", "tdx-ap"):
        # A TD's first instruction: 32-bit flat mode, CR0.PE = 1, no GDT of the guest's.
        start = 0xFFFFFFF0
        uc.reg_write(UC_X86_REG_CR0, 0x21)   # PE | NE
        uc.reg_write(UC_X86_REG_CR4, 0x40)   # MCE
        uc.msr_write(MSR_EFER, (1 << 8) | (1 << 11))
        uc.reg_write(UC_X86_REG_GDTR, (0, 0, 0, 0))
        # ESI = VCPU_INDEX (TDX module ABI, "Initial State of the TD VCPU"): 0 for the first
        # vCPU, 1 for a second one the host started.
        uc.reg_write(UC_X86_REG_ESI, 1 if platform == "tdx-ap" else 0)
    else:
        # As rom16.s leaves it: the ROM GDT loaded, CS = 0x08 (flat 32-bit), CR0.PE = 1.
        start = syms["rom32_start"]
        uc.reg_write(UC_X86_REG_CR0, 0x60000011)
        uc.reg_write(UC_X86_REG_GDTR, (0, gdt_base, gdt_limit, 0))
    uc.reg_write(UC_X86_REG_ESP, 0)

    stop = syms["rom32_paging_on"]
    error = None
    try:
        uc.emu_start(start, stop, count=50_000_000 if platform != "tdx-ap" else 100_000)
    except UcError as e:
        error = str(e)
    eip = uc.reg_read(UC_X86_REG_EIP)

    def q(addr):
        return int.from_bytes(uc.mem_read(addr, 8), "little")

    pd = phys(syms["BOOT_PD"])
    out = {
        "error": error,
        "eip": eip,
        "reached_paging_on": eip == stop,
        "td_park": syms.get("td_park"),
        "events": events,
        "platform": int.from_bytes(uc.mem_read(phys(syms["BOOT_PLATFORM"]), 4), "little"),
        "cbit": int.from_bytes(uc.mem_read(phys(syms["BOOT_CBIT"]), 4), "little"),
        "pd": [q(pd + 8 * i) for i in range(2048)],
        "pdpt_low": [q(phys(syms["BOOT_PDPT_LOW"]) + 8 * i) for i in range(4)],
        "pdpt_high_510": q(phys(syms["BOOT_PDPT_HIGH"]) + 8 * 510),
        "pml4": {str(i): q(phys(syms["BOOT_PML4"]) + 8 * i) for i in (0, 256, 511)},
        "pml4_phys": phys(syms["BOOT_PML4"]),
        "pd_phys": pd,
        "pdpt_low_phys": phys(syms["BOOT_PDPT_LOW"]),
        "pdpt_high_phys": phys(syms["BOOT_PDPT_HIGH"]),
        "cr3": uc.reg_read(UC_X86_REG_CR3),
        "cr4": uc.reg_read(UC_X86_REG_CR4),
        "efer": uc.msr_read(MSR_EFER),
        "ghcb_msr": uc.msr_read(MSR_GHCB),
        # RAM was filled with 0xA5 before the code ran: .bss must come out zeroed.
        "boot_stack_sample": list(uc.mem_read(phys(syms["BOOT_STACK"]), 16)),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
