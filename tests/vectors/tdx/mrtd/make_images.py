#!/usr/bin/env python3
"""Writes the synthetic TDVF images the MRTD vectors are computed over (stdlib only, deterministic).

Each image is laid out as edk2's OVMF is: the TDVF metadata (its GUID, then the `TDVF`
descriptor and its 32-byte sections) somewhere in the image, and the GUID footer table ending
32 bytes before the end of the image, whose TDX-metadata entry holds the descriptor's offset from
the end. Page contents are SHAKE-256 output, so every 256-byte MR.EXTEND chunk is distinct.
The expected MRTDs in expected.txt were computed from these files by the reference tools named
in tests/vectors/README.md, never by this repository's code.

Usage: make_images.py OUTDIR
"""
import hashlib
import struct
import sys
import uuid

PAGE = 0x1000
FOOTER_GUID = "96b582de-1fb2-45f7-baea-a366c55a082d"
TDX_METADATA_OFFSET_GUID = "e47a6535-984a-4798-865e-4685a7bf8ec2"
TDX_METADATA_GUID = "e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae"  # precedes the descriptor in OVMF
OTHER_GUID = "00f771de-1a7e-4fcb-890e-68c77e2fb44e"  # SEV-ES reset block: an entry to walk past
BFV, CFV, TD_HOB, TEMP_MEM = 0, 1, 2, 3
MR_EXTEND = 1


def guid(s):
    return uuid.UUID(s).bytes_le


def section(data_offset, raw_size, gpa, mem_size, kind, attributes):
    return struct.pack("<IIQQII", data_offset, raw_size, gpa, mem_size, kind, attributes)


def image(name, size, metadata_at, sections):
    """`size` bytes of SHAKE-256(name), the metadata at `metadata_at`, the footer at the end."""
    img = bytearray(hashlib.shake_256(name.encode()).digest(size))
    body = b"".join(section(*s) for s in sections)
    desc = b"TDVF" + struct.pack("<III", 16 + len(body), 1, len(sections)) + body
    meta = guid(TDX_METADATA_GUID) + desc
    img[metadata_at:metadata_at + len(meta)] = meta
    descriptor_from_end = size - (metadata_at + 16)
    entries = struct.pack("<I", 0x12345678) + struct.pack("<H", 4 + 18) + guid(OTHER_GUID)
    entries += struct.pack("<I", descriptor_from_end) + struct.pack("<H", 4 + 18) + guid(TDX_METADATA_OFFSET_GUID)
    table = entries + struct.pack("<H", len(entries) + 18) + guid(FOOTER_GUID)
    end = size - 32
    img[end - len(table):end] = table
    return bytes(img)


IMAGES = {
    # OVMF.fd's shape at a smaller scale: CFV (vars, not extended) then BFV (code, extended)
    # in the file, BFV listed first; then TempMem, TD_HOB, TempMem in OVMF's order.
    "ovmf-layout.bin": (0x20000, 0x1F000, [
        (0x8000, 0x18000, 0xFFFE8000, 0x18000, BFV, MR_EXTEND),
        (0x0000, 0x08000, 0xFFFE0000, 0x08000, CFV, 0),
        (0, 0, 0x810000, 0x10000, TEMP_MEM, 0),
        (0, 0, 0x80B000, 0x2000, TEMP_MEM, 0),
        (0, 0, 0x809000, 0x2000, TD_HOB, 0),
        (0, 0, 0x800000, 0x6000, TEMP_MEM, 0),
    ]),
    # The agent's shape: the whole image is the BFV, ending at 4 GiB; 15 MiB of TempMem; the
    # TD HOB page below 1 MiB.
    "agent-layout.bin": (0x10000, 0x8000, [
        (0, 0x10000, 0xFFFF0000, 0x10000, BFV, MR_EXTEND),
        (0, 0, 0x100000, 0xF00000, TEMP_MEM, 0),
        (0, 0, 0x9D000, 0x1000, TD_HOB, 0),
    ]),
    # Corners: an extended CFV; a BFV whose RawDataSize is a page short of its MemoryDataSize
    # (QEMU loads MemoryDataSize bytes of the image from DataOffset); sections listed out of
    # address order; a TempMem above 4 GiB (the GPA's high half is measured).
    "edge-cases.bin": (0x10000, 0x7000, [
        (0x0000, 0x3000, 0x7FF00000, 0x4000, BFV, MR_EXTEND),
        (0x8000, 0x2000, 0xFFFF8000, 0x2000, CFV, MR_EXTEND),
        (0x4000, 0x1000, 0xFFFF7000, 0x1000, CFV, 0),
        (0, 0, 0x1_2345_6000, 0x3000, TEMP_MEM, 0),
        (0, 0, 0x100000, 0x1000, TD_HOB, 0),
    ]),
}

if __name__ == "__main__":
    out = sys.argv[1]
    for name, (size, metadata_at, sections) in IMAGES.items():
        with open(f"{out}/{name}", "wb") as f:
            f.write(image(name, size, metadata_at, sections))
