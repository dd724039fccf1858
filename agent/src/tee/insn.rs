//! Decoding the few instructions a `#VC` (SEV-SNP) or `#VE` (TDX) handler must emulate.
//!
//! Neither exception says which register an MMIO access used or which port an IN/OUT named, so
//! the handler reads the faulting instruction (from private memory: the agent's own code) and
//! decodes it. Only the forms the agent's code uses are accepted; anything else is refused
//! rather than guessed:
//!
//! - MMIO: `MOV r/m, r` (88, 89), `MOV r, r/m` (8A, 8B), `MOV r/m, imm` (C6 /0, C7 /0),
//!   `MOVZX r, r/m8|16` (0F B6, 0F B7), with the 66 operand-size prefix and a REX prefix.
//! - Port I/O: `IN`/`OUT` with an imm8 port (E4–E7) or DX (EC–EF), with the 66 prefix.
//! - `RDMSR` (0F 32), `WRMSR` (0F 30), `CPUID` (0F A2).
//!
//! Encodings are from the SDM vol. 2 / APM vol. 3 instruction references ("MOV", "MOVZX", "IN",
//! "OUT") and the ModR/M and SIB tables ("32-Bit Addressing Forms with the ModR/M Byte"; in 64-bit
//! mode mod = 00, r/m = 101 is RIP-relative). Test vectors were assembled with GNU as.

/// The general registers, numbered as in ModR/M and REX: RAX 0, RCX 1, RDX 2, RBX 3, RSP 4,
/// RBP 5, RSI 6, RDI 7, R8–R15 8–15.
pub type Gprs = [u64; 16];

/// A register operand: its number and, for AH/CH/DH/BH (8-bit operands 4–7 without REX), the
/// high byte of register 0–3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg {
    pub num: u8,
    pub high_byte: bool,
}

/// What an MMIO instruction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mmio {
    /// Load `size` bytes into `dest`; `zero_extend_to` is the destination's width for MOVZX
    /// (else the load's own width).
    Read { dest: Reg, zero_extend_to: u8 },
    Write { src: Reg },
    WriteImm(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioInsn {
    pub len: usize,
    /// Bytes accessed: 1, 2, 4 or 8.
    pub size: u8,
    pub op: Mmio,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsnError {
    /// Ran out of bytes.
    Truncated,
    /// An instruction or form the handlers do not emulate.
    Unsupported,
}

struct Prefixes {
    opsize: bool,
    rex: u8,
    len: usize,
}

fn prefixes(b: &[u8]) -> Prefixes {
    let mut p = Prefixes { opsize: false, rex: 0, len: 0 };
    while let Some(&x) = b.get(p.len) {
        match x {
            0x66 if p.rex == 0 => p.opsize = true,
            // REX must come last, right before the opcode.
            0x40..=0x4F if p.rex == 0 => p.rex = x,
            _ => break,
        }
        p.len += 1;
    }
    p
}

/// The length of a ModR/M memory operand (ModR/M, SIB, displacement); `None` for a register
/// operand (mod = 11), which cannot be MMIO.
fn modrm_len(b: &[u8]) -> Result<Option<(usize, u8)>, InsnError> {
    let modrm = *b.first().ok_or(InsnError::Truncated)?;
    let (md, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
    if md == 3 {
        return Ok(None);
    }
    let mut len = 1;
    if rm == 4 {
        let sib = *b.get(1).ok_or(InsnError::Truncated)?;
        len += 1;
        if md == 0 && sib & 7 == 5 {
            len += 4;
        }
    } else if md == 0 && rm == 5 {
        len += 4; // RIP-relative
    }
    len += match md {
        1 => 1,
        2 => 4,
        _ => 0,
    };
    if b.len() < len {
        return Err(InsnError::Truncated);
    }
    Ok(Some((len, reg)))
}

fn reg(num: u8, rex: u8, size: u8) -> Reg {
    let num = num | if rex & 0x4 != 0 { 8 } else { 0 };
    Reg { num, high_byte: size == 1 && rex == 0 && (4..8).contains(&num) }
}

/// Decodes the MMIO instruction at the start of `b`.
pub fn decode_mmio(b: &[u8]) -> Result<MmioInsn, InsnError> {
    let p = prefixes(b);
    let rest = &b[p.len..];
    let wide = if p.rex & 0x8 != 0 { 8 } else if p.opsize { 2 } else { 4 };
    let (opcode_len, opcode) = match rest.first().ok_or(InsnError::Truncated)? {
        0x0F => (2, 0x0F00 | u16::from(*rest.get(1).ok_or(InsnError::Truncated)?)),
        &x => (1, u16::from(x)),
    };
    let (m, r) = match modrm_len(&rest[opcode_len..])? {
        Some(x) => x,
        None => return Err(InsnError::Unsupported),
    };
    let mut len = p.len + opcode_len + m;
    let (size, op) = match opcode {
        0x88 => (1, Mmio::Write { src: reg(r, p.rex, 1) }),
        0x89 => (wide, Mmio::Write { src: reg(r, p.rex, wide) }),
        0x8A => (1, Mmio::Read { dest: reg(r, p.rex, 1), zero_extend_to: 1 }),
        0x8B => (wide, Mmio::Read { dest: reg(r, p.rex, wide), zero_extend_to: wide }),
        0x0FB6 => (1, Mmio::Read { dest: reg(r, p.rex, wide), zero_extend_to: wide }),
        0x0FB7 => (2, Mmio::Read { dest: reg(r, p.rex, wide), zero_extend_to: wide }),
        0xC6 | 0xC7 if r == 0 => {
            let (size, imm_len) = if opcode == 0xC6 { (1, 1) } else { (wide, wide.min(4) as usize) };
            let imm = b.get(len..len + imm_len).ok_or(InsnError::Truncated)?;
            let mut v = [0u8; 8];
            v[..imm_len].copy_from_slice(imm);
            // imm32 is sign-extended to 64 bits for a 64-bit operand.
            let mut value = u64::from_le_bytes(v);
            if size == 8 && imm[3] & 0x80 != 0 {
                value |= 0xFFFF_FFFF_0000_0000;
            }
            len += imm_len;
            (size, Mmio::WriteImm(value))
        }
        _ => return Err(InsnError::Unsupported),
    };
    Ok(MmioInsn { len, size, op })
}

fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * size)) - 1
    }
}

/// Reads a register operand of `size` bytes.
pub fn read_reg(regs: &Gprs, r: Reg, size: u8) -> u64 {
    if r.high_byte {
        (regs[(r.num - 4) as usize] >> 8) & 0xFF
    } else {
        regs[r.num as usize] & mask(size)
    }
}

/// Writes a register operand as the CPU does: 32-bit writes zero the upper half, 8/16-bit writes
/// keep the rest of the register.
pub fn write_reg(regs: &mut Gprs, r: Reg, size: u8, value: u64) {
    if r.high_byte {
        let full = &mut regs[(r.num - 4) as usize];
        *full = (*full & !0xFF00) | ((value & 0xFF) << 8);
        return;
    }
    let full = &mut regs[r.num as usize];
    *full = match size {
        4 => value & 0xFFFF_FFFF,
        8 => value,
        _ => (*full & !mask(size)) | (value & mask(size)),
    };
}

impl MmioInsn {
    /// The value a write stores.
    pub fn write_value(&self, regs: &Gprs) -> Option<u64> {
        match self.op {
            Mmio::Write { src } => Some(read_reg(regs, src, self.size)),
            Mmio::WriteImm(v) => Some(v & mask(self.size)),
            Mmio::Read { .. } => None,
        }
    }

    /// Completes a read with the `value` the device returned.
    pub fn complete_read(&self, regs: &mut Gprs, value: u64) {
        if let Mmio::Read { dest, zero_extend_to } = self.op {
            write_reg(regs, dest, zero_extend_to, value & mask(self.size));
        }
    }
}

/// The linear address an MMIO instruction (a form [`decode_mmio`] accepts) accesses: the
/// ModR/M memory operand's base + index * scale + displacement (SDM vol. 2 "Specifying an Offset";
/// RIP-relative operands count from the end of the instruction, `rip + len`). A `#VC` reports
/// no address (APM vol. 2 "#VC Exception": the error code is only the exit code), so the SNP
/// handler computes it and translates it itself; a `#VE` carries the GPA and needs none of this.
pub fn mmio_address(b: &[u8], regs: &Gprs, rip: u64) -> Result<u64, InsnError> {
    let insn = decode_mmio(b)?;
    let p = prefixes(b);
    let rest = &b[p.len..];
    let opcode_len = if rest.first() == Some(&0x0F) { 2 } else { 1 };
    let m = &rest[opcode_len..];
    let modrm = m[0];
    let (md, rm) = (modrm >> 6, modrm & 7);
    let rex_b = if p.rex & 1 != 0 { 8 } else { 0 };
    let rex_x = if p.rex & 2 != 0 { 8 } else { 0 };
    let disp_at;
    let mut addr: u64;
    if rm == 4 {
        let sib = m[1];
        let (scale, index, base) = (sib >> 6, ((sib >> 3) & 7) | rex_x, sib & 7);
        // Index 100b without REX.X means "no index".
        addr = if index == 4 { 0 } else { regs[index as usize] << scale };
        if md == 0 && base == 5 {
            // No base: a disp32 follows (it is added below as a mod 00 special case).
            addr = addr.wrapping_add(i32::from_le_bytes(m[2..6].try_into().unwrap()) as i64 as u64);
            return Ok(addr);
        }
        addr = addr.wrapping_add(regs[(base | rex_b) as usize]);
        disp_at = 2;
    } else if md == 0 && rm == 5 {
        let disp = i32::from_le_bytes(m[1..5].try_into().unwrap()) as i64 as u64;
        return Ok(rip.wrapping_add(insn.len as u64).wrapping_add(disp));
    } else {
        addr = regs[(rm | rex_b) as usize];
        disp_at = 1;
    }
    let disp = match md {
        1 => m[disp_at] as i8 as i64 as u64,
        2 => i32::from_le_bytes(m[disp_at..disp_at + 4].try_into().unwrap()) as i64 as u64,
        _ => 0,
    };
    Ok(addr.wrapping_add(disp))
}

/// An IN or OUT instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoInsn {
    pub len: usize,
    /// The port: the immediate, or DX's low 16 bits.
    pub port: u16,
    pub size: u8,
    pub is_in: bool,
}

/// Decodes IN/OUT (E4–E7 with imm8, EC–EF with DX); the port is read from `rdx` for the DX forms.
pub fn decode_io(b: &[u8], rdx: u64) -> Result<IoInsn, InsnError> {
    let p = prefixes(b);
    if p.rex != 0 {
        return Err(InsnError::Unsupported);
    }
    let op = *b.get(p.len).ok_or(InsnError::Truncated)?;
    let size = match (op & 1, p.opsize) {
        (0, _) => 1,
        (_, true) => 2,
        _ => 4,
    };
    let (port, len) = match op {
        0xE4..=0xE7 => (u16::from(*b.get(p.len + 1).ok_or(InsnError::Truncated)?), p.len + 2),
        0xEC..=0xEF => (rdx as u16, p.len + 1),
        _ => return Err(InsnError::Unsupported),
    };
    Ok(IoInsn { len, port, size, is_in: matches!(op, 0xE4 | 0xE5 | 0xEC | 0xED) })
}

/// The two-byte instructions the handlers emulate by opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simple {
    Cpuid,
    Rdmsr,
    Wrmsr,
    Rdtsc,
}

pub fn decode_simple(b: &[u8]) -> Result<Simple, InsnError> {
    match b.get(..2).ok_or(InsnError::Truncated)? {
        [0x0F, 0xA2] => Ok(Simple::Cpuid),
        [0x0F, 0x32] => Ok(Simple::Rdmsr),
        [0x0F, 0x30] => Ok(Simple::Wrmsr),
        [0x0F, 0x31] => Ok(Simple::Rdtsc),
        _ => Err(InsnError::Unsupported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(num: u8) -> Reg {
        Reg { num, high_byte: false }
    }

    /// Encodings assembled with GNU as 2.40 (`as --64`, Intel syntax) and disassembled with
    /// objdump to get each instruction's length.
    #[test]
    fn mmio_forms() {
        let cases: &[(&[u8], MmioInsn)] = &[
            // mov eax, [rdi]
            (&[0x8B, 0x07], MmioInsn { len: 2, size: 4, op: Mmio::Read { dest: r(0), zero_extend_to: 4 } }),
            // mov rax, [rdi+8]
            (&[0x48, 0x8B, 0x47, 0x08], MmioInsn { len: 4, size: 8, op: Mmio::Read { dest: r(0), zero_extend_to: 8 } }),
            // mov [rsi], ecx
            (&[0x89, 0x0E], MmioInsn { len: 2, size: 4, op: Mmio::Write { src: r(1) } }),
            // mov [rax], cx
            (&[0x66, 0x89, 0x08], MmioInsn { len: 3, size: 2, op: Mmio::Write { src: r(1) } }),
            // mov [rax], dl
            (&[0x88, 0x10], MmioInsn { len: 2, size: 1, op: Mmio::Write { src: r(2) } }),
            // mov dword [rax], 0x12345678
            (&[0xC7, 0x00, 0x78, 0x56, 0x34, 0x12], MmioInsn { len: 6, size: 4, op: Mmio::WriteImm(0x1234_5678) }),
            // mov qword [rax], -2 (imm32 sign-extended)
            (&[0x48, 0xC7, 0x00, 0xFE, 0xFF, 0xFF, 0xFF], MmioInsn { len: 7, size: 8, op: Mmio::WriteImm(0xFFFF_FFFF_FFFF_FFFE) }),
            // mov word [rbx], 0x1234
            (&[0x66, 0xC7, 0x03, 0x34, 0x12], MmioInsn { len: 5, size: 2, op: Mmio::WriteImm(0x1234) }),
            // mov byte [rax+0x10], 0x7f
            (&[0xC6, 0x40, 0x10, 0x7F], MmioInsn { len: 4, size: 1, op: Mmio::WriteImm(0x7F) }),
            // movzx eax, byte [rdi]
            (&[0x0F, 0xB6, 0x07], MmioInsn { len: 3, size: 1, op: Mmio::Read { dest: r(0), zero_extend_to: 4 } }),
            // movzx ecx, word [rdx+2]
            (&[0x0F, 0xB7, 0x4A, 0x02], MmioInsn { len: 4, size: 2, op: Mmio::Read { dest: r(1), zero_extend_to: 4 } }),
            // mov r8d, [rsp] (SIB)
            (&[0x44, 0x8B, 0x04, 0x24], MmioInsn { len: 4, size: 4, op: Mmio::Read { dest: r(8), zero_extend_to: 4 } }),
            // mov eax, [rip+0x10]
            (&[0x8B, 0x05, 0x10, 0, 0, 0], MmioInsn { len: 6, size: 4, op: Mmio::Read { dest: r(0), zero_extend_to: 4 } }),
            // mov ah, [rbx+1]
            (&[0x8A, 0x63, 0x01], MmioInsn { len: 3, size: 1, op: Mmio::Read { dest: Reg { num: 4, high_byte: true }, zero_extend_to: 1 } }),
            // mov r15, [r12+r13*4+0x12345678]
            (&[0x4F, 0x8B, 0xBC, 0xAC, 0x78, 0x56, 0x34, 0x12], MmioInsn { len: 8, size: 8, op: Mmio::Read { dest: r(15), zero_extend_to: 8 } }),
            // mov [rbp+0x40], r9d
            (&[0x44, 0x89, 0x4D, 0x40], MmioInsn { len: 4, size: 4, op: Mmio::Write { src: r(9) } }),
            // mov sil, [rax] (REX: SIL, not DH)
            (&[0x40, 0x8A, 0x30], MmioInsn { len: 3, size: 1, op: Mmio::Read { dest: r(6), zero_extend_to: 1 } }),
            // movzx r10, word [r11]
            (&[0x4D, 0x0F, 0xB7, 0x13], MmioInsn { len: 4, size: 2, op: Mmio::Read { dest: r(10), zero_extend_to: 8 } }),
            // mov eax, [rbx*4+0x1000] (SIB, no base: disp32)
            (&[0x8B, 0x04, 0x9D, 0x00, 0x10, 0x00, 0x00], MmioInsn { len: 7, size: 4, op: Mmio::Read { dest: r(0), zero_extend_to: 4 } }),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode_mmio(bytes), Ok(*want), "{bytes:02x?}");
            assert_eq!(decode_mmio(&bytes[..bytes.len() - 1]), Err(InsnError::Truncated), "{bytes:02x?} cut short");
        }
        // Register operands, other opcodes (add [rax], eax = 01 00), and C7 /1 are refused.
        assert_eq!(decode_mmio(&[0x89, 0xC8]), Err(InsnError::Unsupported));
        assert_eq!(decode_mmio(&[0x01, 0x00]), Err(InsnError::Unsupported));
        assert_eq!(decode_mmio(&[0xC7, 0x08, 0, 0, 0, 0]), Err(InsnError::Unsupported));
    }

    /// The same encodings as `mmio_forms`, with registers chosen so each address part shows.
    #[test]
    fn mmio_addresses() {
        let mut g: Gprs = [0; 16];
        for (i, r) in g.iter_mut().enumerate() {
            *r = 0x1000_0000 * (i as u64 + 1);
        }
        let rip = 0xFFFF_FFFF_8010_0000;
        let cases: &[(&[u8], u64)] = &[
            (&[0x8B, 0x07], g[7]),                                                  // mov eax, [rdi]
            (&[0x48, 0x8B, 0x47, 0x08], g[7] + 8),                                  // mov rax, [rdi+8]
            (&[0x66, 0x89, 0x08], g[0]),                                            // mov [rax], cx
            (&[0xC6, 0x40, 0x10, 0x7F], g[0] + 0x10),                               // mov byte [rax+0x10], 0x7f
            (&[0x0F, 0xB7, 0x4A, 0x02], g[2] + 2),                                  // movzx ecx, word [rdx+2]
            (&[0x44, 0x8B, 0x04, 0x24], g[4]),                                      // mov r8d, [rsp]
            (&[0x8B, 0x05, 0x10, 0, 0, 0], rip + 6 + 0x10),                         // mov eax, [rip+0x10]
            (&[0x4F, 0x8B, 0xBC, 0xAC, 0x78, 0x56, 0x34, 0x12], g[12] + g[13] * 4 + 0x1234_5678), // [r12+r13*4+disp32]
            (&[0x44, 0x89, 0x4D, 0x40], g[5] + 0x40),                               // mov [rbp+0x40], r9d
            (&[0x4D, 0x0F, 0xB7, 0x13], g[11]),                                     // movzx r10, word [r11]
            (&[0x8B, 0x04, 0x9D, 0x00, 0x10, 0x00, 0x00], g[3] * 4 + 0x1000),        // mov eax, [rbx*4+0x1000]
            (&[0x8B, 0x47, 0xF8], g[7] - 8),                                        // mov eax, [rdi-8]
            (&[0x41, 0x8B, 0x44, 0x24, 0x04], g[12] + 4),                           // mov eax, [r12+4] (SIB, no index)
            (&[0x42, 0x8B, 0x04, 0x20], g[0] + g[12]),                              // mov eax, [rax+r12] (REX.X)
        ];
        for (bytes, want) in cases {
            assert_eq!(mmio_address(bytes, &g, rip), Ok(*want), "{bytes:02x?}");
        }
        assert_eq!(mmio_address(&[0x89, 0xC8], &g, rip), Err(InsnError::Unsupported));
    }

    #[test]
    fn register_semantics() {
        let mut g: Gprs = [0; 16];
        g[0] = 0xAAAA_BBBB_CCCC_DDDD;
        // 32-bit loads zero-extend, 16/8-bit loads merge, AH is bits 15:8 of RAX.
        decode_mmio(&[0x8B, 0x07]).unwrap().complete_read(&mut g, 0x1122_3344);
        assert_eq!(g[0], 0x1122_3344);
        g[0] = 0xAAAA_BBBB_CCCC_DDDD;
        decode_mmio(&[0x8A, 0x63, 0x01]).unwrap().complete_read(&mut g, 0x99);
        assert_eq!(g[0], 0xAAAA_BBBB_CCCC_99DD);
        decode_mmio(&[0x4D, 0x0F, 0xB7, 0x13]).unwrap().complete_read(&mut g, 0xFFFF_1234);
        assert_eq!(g[10], 0x1234);
        g[2] = 0x1234_5678_9ABC_DEF0;
        assert_eq!(decode_mmio(&[0x88, 0x10]).unwrap().write_value(&g), Some(0xF0));
        assert_eq!(decode_mmio(&[0x66, 0xC7, 0x03, 0x34, 0x12]).unwrap().write_value(&g), Some(0x1234));
        assert_eq!(decode_mmio(&[0x8B, 0x07]).unwrap().write_value(&g), None);
    }

    #[test]
    fn io_and_simple_forms() {
        // in al, 0x71 / in eax, dx / out dx, al / out 0x80, al / in ax, dx / out dx, eax
        assert_eq!(decode_io(&[0xE4, 0x71], 0), Ok(IoInsn { len: 2, port: 0x71, size: 1, is_in: true }));
        assert_eq!(decode_io(&[0xED], 0xCFC), Ok(IoInsn { len: 1, port: 0xCFC, size: 4, is_in: true }));
        assert_eq!(decode_io(&[0xEE], 0x3F8), Ok(IoInsn { len: 1, port: 0x3F8, size: 1, is_in: false }));
        assert_eq!(decode_io(&[0xE6, 0x80], 0), Ok(IoInsn { len: 2, port: 0x80, size: 1, is_in: false }));
        assert_eq!(decode_io(&[0x66, 0xED], 0x1_0071), Ok(IoInsn { len: 2, port: 0x71, size: 2, is_in: true }));
        assert_eq!(decode_io(&[0xEF], 0xF4), Ok(IoInsn { len: 1, port: 0xF4, size: 4, is_in: false }));
        assert_eq!(decode_io(&[0x6C], 0), Err(InsnError::Unsupported), "INSB (string I/O)");
        assert_eq!(decode_io(&[0xE4], 0), Err(InsnError::Truncated));
        assert_eq!(decode_simple(&[0x0F, 0xA2]), Ok(Simple::Cpuid));
        assert_eq!(decode_simple(&[0x0F, 0x32]), Ok(Simple::Rdmsr));
        assert_eq!(decode_simple(&[0x0F, 0x30]), Ok(Simple::Wrmsr));
        assert_eq!(decode_simple(&[0x0F, 0x31]), Ok(Simple::Rdtsc));
        assert_eq!(decode_simple(&[0x0F]), Err(InsnError::Truncated));
    }
}
