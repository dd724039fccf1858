//! Loading static x86_64 Linux executables and building the initial stack.
//!
//! Accepts what Linux's `fs/binfmt_elf.c: load_elf_binary` accepts: ELF64,
//! little-endian, `EM_X86_64`, `ET_EXEC` or `ET_DYN` (PIE), static or naming an
//! interpreter (`PT_INTERP`, the dynamic loader `ld.so`), which the kernel
//! maps next to the program as Linux does (`Image::interp`; the interpreter
//! itself must not name one). Every offset, size and address is checked
//! against the file and the user half of the address space; nothing is trusted.
//! PIE images are placed at the fixed [`PIE_BASE`], interpreters at
//! [`INTERP_BASE`] (no ASLR: builds are deterministic). `#!` scripts follow
//! `fs/binfmt_script.c`.
//!
//! [`build_stack`] lays out what `create_elf_tables` gives a new process:
//! argc, argv, envp, the auxiliary vector, then the strings, with `rsp`
//! 16-byte aligned at argc.

use alloc::vec::Vec;

/// Where a static-PIE image is placed (Linux's `ELF_ET_DYN_BASE` for a 47-bit
/// address space is 2/3 of it, page-rounded; any fixed value works).
pub const PIE_BASE: u64 = 0x5555_5555_4000;
/// Where a program's interpreter (`ld.so`) is placed: Linux puts it in the mmap area, below
/// the stack; with ASLR off it lands at 0x7fff_f7fc_x000. A fixed page-aligned value well
/// below the stack and above where `mmap` starts placing ([`crate::sandbox::process::MMAP_TOP`]).
pub const INTERP_BASE: u64 = 0x7fff_f000_0000;
/// The first address past user memory: the user half (PML4 entries 0..255) minus its top page,
/// as Linux's `TASK_SIZE_MAX`. The last page stays unmappable so no instruction a process runs
/// ends at the non-canonical 0x800000000000: a `syscall` in the top two bytes would give a
/// return address (RCX) no IRETQ/SYSRET can take without faulting in ring 0.
pub const USER_END: u64 = 0x0000_7FFF_FFFF_F000;
/// Page size.
pub const PAGE: u64 = 4096;

/// Why an executable was refused (the syscall answers `ENOEXEC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    NotElf,
    /// Not ELF64 little-endian x86_64 version 1.
    WrongArch,
    /// Not `ET_EXEC` or `ET_DYN`.
    WrongType,
    /// An interpreter that itself names an interpreter, or a bad `PT_INTERP` string.
    Dynamic,
    /// A header, offset or size outside the file or the user address space.
    Malformed,
    NoLoadSegment,
    /// argv/envp/strings do not fit the stack.
    TooBig,
}

/// Segment permissions (`PF_R`, `PF_W`, `PF_X`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prot {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

/// A `PT_LOAD` segment, already relocated by the load bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub prot: Prot,
}

impl Segment {
    /// Page-aligned start and end of the memory it needs.
    pub fn pages(&self) -> (u64, u64) {
        (self.vaddr & !(PAGE - 1), (self.vaddr + self.memsz + PAGE - 1) & !(PAGE - 1))
    }
}

/// A parsed executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub pie: bool,
    /// Added to every address in the file (0 for `ET_EXEC`).
    pub bias: u64,
    pub entry: u64,
    /// Address of the program headers in memory (`AT_PHDR`).
    pub phdr: u64,
    pub phent: u64,
    pub phnum: u64,
    pub segments: Vec<Segment>,
    /// First page past the highest segment: where `brk` starts.
    pub brk: u64,
    /// The path in `PT_INTERP` (without its NUL), if the program names an interpreter.
    pub interp: Option<Vec<u8>>,
}

fn u16_at(b: &[u8], o: usize) -> Result<u16, ElfError> {
    let s = b.get(o..o.checked_add(2).ok_or(ElfError::Malformed)?).ok_or(ElfError::Malformed)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}
fn u32_at(b: &[u8], o: usize) -> Result<u32, ElfError> {
    let s = b.get(o..o.checked_add(4).ok_or(ElfError::Malformed)?).ok_or(ElfError::Malformed)?;
    Ok(u32::from_le_bytes(s.try_into().map_err(|_| ElfError::Malformed)?))
}
fn u64_at(b: &[u8], o: usize) -> Result<u64, ElfError> {
    let s = b.get(o..o.checked_add(8).ok_or(ElfError::Malformed)?).ok_or(ElfError::Malformed)?;
    Ok(u64::from_le_bytes(s.try_into().map_err(|_| ElfError::Malformed)?))
}

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;

/// Parses an executable (`load_elf_binary`'s checks); a PIE goes at [`PIE_BASE`].
pub fn parse(file: &[u8]) -> Result<Image, ElfError> {
    parse_at(file, PIE_BASE)
}

/// Parses an interpreter (`ld.so`): placed at [`INTERP_BASE`] if it is `ET_DYN`, refused if it
/// names an interpreter itself (Linux's `load_elf_interp` does not follow a second one).
pub fn parse_interp(file: &[u8]) -> Result<Image, ElfError> {
    let img = parse_at(file, INTERP_BASE)?;
    if img.interp.is_some() {
        return Err(ElfError::Dynamic);
    }
    Ok(img)
}

/// [`parse`] with `ET_DYN` images placed at `base`.
pub fn parse_at(file: &[u8], base: u64) -> Result<Image, ElfError> {
    if file.len() < 64 || &file[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    // EI_CLASS=ELFCLASS64, EI_DATA=ELFDATA2LSB, EI_VERSION=1, e_machine=EM_X86_64, e_version=1.
    if file[4] != 2 || file[5] != 1 || file[6] != 1 || u16_at(file, 18)? != 62 || u32_at(file, 20)? != 1 {
        return Err(ElfError::WrongArch);
    }
    let pie = match u16_at(file, 16)? {
        2 => false,
        3 => true,
        _ => return Err(ElfError::WrongType),
    };
    let bias = if pie { base } else { 0 };
    let entry = u64_at(file, 24)?;
    let phoff = u64_at(file, 32)?;
    let phent = u16_at(file, 54)? as u64;
    let phnum = u16_at(file, 56)? as u64;
    if phent != 56 || phnum == 0 || phnum > 128 {
        return Err(ElfError::Malformed);
    }
    let phend = phoff.checked_add(phent * phnum).ok_or(ElfError::Malformed)?;
    if phend > file.len() as u64 {
        return Err(ElfError::Malformed);
    }
    let mut segments = Vec::new();
    let mut phdr = None;
    let mut interp = None;
    for i in 0..phnum {
        let o = (phoff + i * phent) as usize;
        let p_type = u32_at(file, o)?;
        let flags = u32_at(file, o + 4)?;
        let offset = u64_at(file, o + 8)?;
        let vaddr = u64_at(file, o + 16)?;
        let filesz = u64_at(file, o + 32)?;
        let memsz = u64_at(file, o + 40)?;
        let align = u64_at(file, o + 48)?;
        match p_type {
            PT_INTERP => {
                // A NUL-terminated path inside the file (binfmt_elf: at least 2 bytes, at most
                // PATH_MAX, the last one NUL); only one PT_INTERP counts.
                let end = offset.checked_add(filesz).ok_or(ElfError::Malformed)?;
                if filesz < 2 || filesz > 4096 || end > file.len() as u64 || interp.is_some() {
                    return Err(ElfError::Dynamic);
                }
                let s = &file[offset as usize..end as usize];
                if s[s.len() - 1] != 0 {
                    return Err(ElfError::Dynamic);
                }
                // The path is the C string at its start (Linux opens up to the first NUL).
                let path = &s[..s.iter().position(|&b| b == 0).unwrap_or(0)];
                if path.is_empty() {
                    return Err(ElfError::Dynamic);
                }
                interp = Some(path.to_vec());
            }
            PT_PHDR => phdr = Some(vaddr.checked_add(bias).ok_or(ElfError::Malformed)?),
            PT_LOAD => {
                let vaddr = vaddr.checked_add(bias).ok_or(ElfError::Malformed)?;
                let end = vaddr.checked_add(memsz).ok_or(ElfError::Malformed)?;
                let fend = offset.checked_add(filesz).ok_or(ElfError::Malformed)?;
                if filesz > memsz || fend > file.len() as u64 || end > USER_END || vaddr < PAGE {
                    return Err(ElfError::Malformed);
                }
                // Linux maps file pages at page granularity: offset and address must agree mod the page size.
                if vaddr % PAGE != offset % PAGE || (align > 1 && !align.is_power_of_two()) {
                    return Err(ElfError::Malformed);
                }
                if let Some(last) = segments.last() {
                    let last: &Segment = last;
                    if vaddr < last.vaddr + last.memsz {
                        return Err(ElfError::Malformed); // unsorted or overlapping
                    }
                }
                segments.push(Segment { vaddr, memsz, offset, filesz, prot: Prot { read: flags & 4 != 0, write: flags & 2 != 0, exec: flags & 1 != 0 } });
            }
            _ => {}
        }
    }
    let first = *segments.first().ok_or(ElfError::NoLoadSegment)?;
    // Without PT_PHDR, the headers are where the file's first page maps (binfmt_elf's `load_addr + e_phoff`).
    let phdr = match phdr {
        Some(p) => p,
        None => {
            let seg = segments.iter().find(|s| s.offset <= phoff && phend <= s.offset + s.filesz).ok_or(ElfError::Malformed)?;
            seg.vaddr - seg.offset + phoff
        }
    };
    let entry = entry.checked_add(bias).ok_or(ElfError::Malformed)?;
    if !segments.iter().any(|s| s.prot.exec && s.vaddr <= entry && entry < s.vaddr + s.memsz) {
        return Err(ElfError::Malformed);
    }
    let _ = first;
    let last = segments[segments.len() - 1];
    let brk = (last.vaddr + last.memsz + PAGE - 1) & !(PAGE - 1);
    Ok(Image { pie, bias, entry, phdr, phent, phnum, segments, brk, interp })
}

/// A `#!` line (`fs/binfmt_script.c`): the interpreter and its one optional
/// argument. `None` when the file does not start with `#!`; an empty
/// interpreter is `ENOEXEC`. The line is cut at 255 bytes (BINPRM_BUF_SIZE).
#[allow(clippy::type_complexity)]
pub fn shebang(file: &[u8]) -> Option<Result<(Vec<u8>, Option<Vec<u8>>), ElfError>> {
    if !file.starts_with(b"#!") {
        return None;
    }
    let head = &file[2..file.len().min(256)];
    let line = match head.iter().position(|&b| b == b'\n') {
        Some(n) => &head[..n],
        None => head,
    };
    let ws = |b: &u8| *b == b' ' || *b == b'\t';
    let start = line.iter().position(|b| !ws(b)).unwrap_or(line.len());
    let line = &line[start..];
    let end = line.iter().rposition(|b| !ws(b)).map(|p| p + 1).unwrap_or(0);
    let line = &line[..end];
    if line.is_empty() {
        return Some(Err(ElfError::NotElf));
    }
    let split = line.iter().position(ws).unwrap_or(line.len());
    let interp = line[..split].to_vec();
    let rest = &line[split..];
    let a = rest.iter().position(|b| !ws(b)).map(|p| rest[p..].to_vec());
    Some(Ok((interp, a)))
}

/// Auxiliary vector keys (`include/uapi/linux/auxvec.h`).
pub mod at {
    pub const NULL: u64 = 0;
    pub const PHDR: u64 = 3;
    pub const PHENT: u64 = 4;
    pub const PHNUM: u64 = 5;
    pub const PAGESZ: u64 = 6;
    pub const BASE: u64 = 7;
    pub const FLAGS: u64 = 8;
    pub const ENTRY: u64 = 9;
    pub const UID: u64 = 11;
    pub const EUID: u64 = 12;
    pub const GID: u64 = 13;
    pub const EGID: u64 = 14;
    pub const PLATFORM: u64 = 15;
    pub const HWCAP: u64 = 16;
    pub const CLKTCK: u64 = 17;
    pub const SECURE: u64 = 23;
    pub const RANDOM: u64 = 25;
    pub const HWCAP2: u64 = 26;
    pub const EXECFN: u64 = 31;
}

/// What the new process gets besides its image.
pub struct StackSpec<'a> {
    pub argv: &'a [Vec<u8>],
    pub envp: &'a [Vec<u8>],
    /// The path execve was given (`AT_EXECFN`).
    pub execfn: &'a [u8],
    /// The 16 bytes `AT_RANDOM` points to (from the sandbox's fixed-seed generator).
    pub random: [u8; 16],
    pub uid: u64,
    pub gid: u64,
    /// `AT_HWCAP`: CPUID.1:EDX, as Linux reports it.
    pub hwcap: u64,
    /// `AT_BASE`: where the interpreter was loaded (0 for a static program).
    pub base: u64,
}

/// Most bytes of argv + envp strings (Linux allows a quarter of the stack
/// rlimit; the sandbox uses a fixed 2 MiB, `E2BIG` beyond).
pub const MAX_ARG_BYTES: usize = 2 << 20;

/// Builds the initial stack ending at `top` (exclusive, 16-aligned): returns
/// the bytes to place at `[sp, top)` and `sp` (which points at argc).
pub fn build_stack(top: u64, image: &Image, spec: &StackSpec<'_>) -> Result<(Vec<u8>, u64), ElfError> {
    if !top.is_multiple_of(16) {
        return Err(ElfError::Malformed);
    }
    let strings: usize = spec.argv.iter().chain(spec.envp).map(|s| s.len() + 1).sum::<usize>() + spec.execfn.len() + 1;
    if strings > MAX_ARG_BYTES || spec.argv.len() + spec.envp.len() > MAX_ARG_BYTES / 8 {
        return Err(ElfError::TooBig);
    }
    if spec.argv.iter().chain(spec.envp).any(|s| s.contains(&0)) || spec.execfn.contains(&0) {
        return Err(ElfError::Malformed);
    }
    // Strings area, built downward from top: execfn last (highest), like Linux.
    let mut hi: Vec<u8> = Vec::new(); // bytes from `str_base` to `top`
    let mut offs_argv = Vec::with_capacity(spec.argv.len());
    let mut offs_env = Vec::with_capacity(spec.envp.len());
    for a in spec.argv {
        offs_argv.push(hi.len());
        hi.extend_from_slice(a);
        hi.push(0);
    }
    for e in spec.envp {
        offs_env.push(hi.len());
        hi.extend_from_slice(e);
        hi.push(0);
    }
    let off_execfn = hi.len();
    hi.extend_from_slice(spec.execfn);
    hi.push(0);
    let off_platform = hi.len();
    hi.extend_from_slice(b"x86_64\0");
    let off_random = hi.len();
    hi.extend_from_slice(&spec.random);
    while !hi.len().is_multiple_of(16) {
        hi.push(0);
    }
    let str_base = top - hi.len() as u64;
    let at = |o: usize| str_base + o as u64;
    let auxv: [(u64, u64); 19] = [
        (at::HWCAP, spec.hwcap),
        (at::PAGESZ, PAGE),
        (at::CLKTCK, 100),
        (at::PHDR, image.phdr),
        (at::PHENT, image.phent),
        (at::PHNUM, image.phnum),
        (at::BASE, spec.base),
        (at::FLAGS, 0),
        (at::ENTRY, image.entry),
        (at::UID, spec.uid),
        (at::EUID, spec.uid),
        (at::GID, spec.gid),
        (at::EGID, spec.gid),
        (at::SECURE, 0),
        (at::RANDOM, at(off_random)),
        (at::HWCAP2, 0),
        (at::EXECFN, at(off_execfn)),
        (at::PLATFORM, at(off_platform)),
        (at::NULL, 0),
    ];
    let words = 1 + spec.argv.len() + 1 + spec.envp.len() + 1 + 2 * auxv.len();
    let mut sp = str_base - 8 * words as u64;
    sp &= !15;
    let mut out: Vec<u64> = Vec::with_capacity(words);
    out.push(spec.argv.len() as u64);
    out.extend(offs_argv.iter().map(|&o| at(o)));
    out.push(0);
    out.extend(offs_env.iter().map(|&o| at(o)));
    out.push(0);
    for (k, v) in auxv {
        out.push(k);
        out.push(v);
    }
    let mut bytes = Vec::with_capacity((top - sp) as usize);
    for w in &out {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    bytes.resize((str_base - sp) as usize, 0);
    bytes.extend_from_slice(&hi);
    if sp < PAGE {
        return Err(ElfError::TooBig);
    }
    Ok((bytes, sp))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use alloc::vec;

    /// A minimal ELF: one RX PT_LOAD covering the file at `vaddr`.
    fn tiny(ty: u16, vaddr: u64, extra_ph: &[(u32, u64, u64, u64, u64, u32)]) -> Vec<u8> {
        let phnum = 1 + extra_ph.len();
        let mut f = vec![0u8; 64 + 56 * phnum + 16];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&ty.to_le_bytes());
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        let len = f.len() as u64;
        f[24..32].copy_from_slice(&(vaddr + 64 + 56 * phnum as u64).to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        let mut put = |i: usize, (t, off, va, fsz, msz, fl): (u32, u64, u64, u64, u64, u32)| {
            let o = 64 + 56 * i;
            f[o..o + 4].copy_from_slice(&t.to_le_bytes());
            f[o + 4..o + 8].copy_from_slice(&fl.to_le_bytes());
            f[o + 8..o + 16].copy_from_slice(&off.to_le_bytes());
            f[o + 16..o + 24].copy_from_slice(&va.to_le_bytes());
            f[o + 32..o + 40].copy_from_slice(&fsz.to_le_bytes());
            f[o + 40..o + 48].copy_from_slice(&msz.to_le_bytes());
            f[o + 48..o + 56].copy_from_slice(&PAGE.to_le_bytes());
        };
        put(0, (PT_LOAD, 0, vaddr, len, len + 100, 5));
        for (i, p) in extra_ph.iter().enumerate() {
            put(i + 1, *p);
        }
        f
    }

    #[test]
    fn exec_and_static_pie() {
        let f = tiny(2, 0x400000, &[]);
        let img = parse(&f).unwrap();
        assert!(!img.pie);
        assert_eq!(img.entry, 0x400000 + 64 + 56);
        assert_eq!(img.phdr, 0x400040);
        assert_eq!(img.brk, 0x401000);
        let p = parse(&tiny(3, 0, &[])).unwrap();
        assert!(p.pie);
        assert_eq!(p.segments[0].vaddr, PIE_BASE);
        assert_eq!(p.entry, PIE_BASE + 120);
    }

    #[test]
    fn rejects_bad_files() {
        let good = tiny(2, 0x400000, &[]);
        assert_eq!(parse(&good[..63]), Err(ElfError::NotElf));
        assert_eq!(parse(b"#!/bin/sh\n"), Err(ElfError::NotElf));
        let mut f = good.clone();
        f[18] = 3; // EM_386
        assert_eq!(parse(&f), Err(ElfError::WrongArch));
        let mut f = good.clone();
        f[16] = 4; // ET_CORE
        assert_eq!(parse(&f), Err(ElfError::WrongType));
        assert_eq!(parse(&tiny(2, 0x400000, &[(PT_INTERP, 0, 0, 0, 0, 4)])), Err(ElfError::Dynamic));
        // An interpreter string past the file or without its NUL.
        assert_eq!(parse(&tiny(2, 0x400000, &[(PT_INTERP, 0, 0, 1 << 20, 0, 4)])), Err(ElfError::Dynamic));
        assert_eq!(parse(&tiny(2, 0x400000, &[(PT_INTERP, 1, 0, 3, 0, 4)])), Err(ElfError::Dynamic));
        // Segment past the file, past the user half, at page 0, overlapping, misaligned.
        for ph in [
            (PT_LOAD, 0, 0x500000, 1 << 20, 1 << 20, 4),
            (PT_LOAD, 0, 0x7fff_ffff_f000, 16, 0x2000, 4),
            (PT_LOAD, 0, u64::MAX - 10, 16, 16, 4),
            (PT_LOAD, 0, 0x400010, 16, 16, 4),
            (PT_LOAD, 1, 0x500000, 16, 16, 4),
            (PT_LOAD, 0, 0x500000, 32, 16, 4),
        ] {
            assert_eq!(parse(&tiny(2, 0x400000, &[ph])), Err(ElfError::Malformed), "{ph:?}");
        }
        assert_eq!(parse(&tiny(2, 0, &[])), Err(ElfError::Malformed));
        // Program headers past the end of the file.
        let mut f = good.clone();
        f[32..40].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
        assert_eq!(parse(&f), Err(ElfError::Malformed));
        // Entry outside any executable segment.
        let mut f = good.clone();
        f[24..32].copy_from_slice(&0x900000u64.to_le_bytes());
        assert_eq!(parse(&f), Err(ElfError::Malformed));
        // Every truncation fails cleanly.
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
        }
    }

    #[test]
    fn busybox_matches_readelf() {
        let Ok(bytes) = std::fs::read("/bin/busybox") else {
            panic!("/bin/busybox missing: install busybox-static (make setup)");
        };
        let img = parse(&bytes).unwrap();
        let out = std::process::Command::new("readelf").args(["-lhW", "/bin/busybox"]).output().expect("readelf (binutils)");
        let text = std::string::String::from_utf8(out.stdout).unwrap();
        let entry = text.lines().find(|l| l.contains("Entry point address")).unwrap();
        let entry = u64::from_str_radix(entry.split("0x").nth(1).unwrap().trim(), 16).unwrap();
        assert_eq!(img.entry, entry);
        let loads: Vec<(u64, u64, u64, u64)> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("LOAD"))
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let h = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
                (h(w[1]), h(w[2]), h(w[4]), h(w[5]))
            })
            .collect();
        let mine: Vec<(u64, u64, u64, u64)> = img.segments.iter().map(|s| (s.offset, s.vaddr, s.filesz, s.memsz)).collect();
        assert_eq!(mine, loads);
    }

    #[test]
    fn dynamic_programs_name_their_interpreter_as_readelf_says() {
        // Debian's bash: a PIE naming /lib64/ld-linux-x86-64.so.2; ld.so itself names none.
        let bash = std::fs::read("/bin/bash").expect("/bin/bash");
        let img = parse(&bash).unwrap();
        assert!(img.pie);
        let out = std::process::Command::new("readelf").args(["-lW", "/bin/bash"]).output().expect("readelf (binutils)");
        let text = std::string::String::from_utf8(out.stdout).unwrap();
        let want = text.split("[Requesting program interpreter: ").nth(1).unwrap().split(']').next().unwrap();
        assert_eq!(img.interp.as_deref(), Some(want.as_bytes()));
        let ld = std::fs::read(want).unwrap();
        let i = parse_interp(&ld).unwrap();
        assert_eq!((i.interp, i.bias), (None, INTERP_BASE));
        assert_eq!(parse_interp(&bash), Err(ElfError::Dynamic), "an interpreter naming an interpreter");
    }

    #[test]
    fn shebang_lines() {
        assert_eq!(shebang(b"\x7fELF"), None);
        assert_eq!(shebang(b"#!/bin/sh\necho"), Some(Ok((b"/bin/sh".to_vec(), None))));
        assert_eq!(shebang(b"#! /bin/sh  -e -x \n"), Some(Ok((b"/bin/sh".to_vec(), Some(b"-e -x".to_vec())))));
        assert_eq!(shebang(b"#!   \n"), Some(Err(ElfError::NotElf)));
        assert_eq!(shebang(b"#!/x"), Some(Ok((b"/x".to_vec(), None))));
    }

    #[test]
    fn initial_stack_layout() {
        let img = parse(&tiny(2, 0x400000, &[])).unwrap();
        let argv = [b"sh".to_vec(), b"-c".to_vec(), b"echo hi".to_vec()];
        let envp = [b"HOME=/homeless-shelter".to_vec(), b"PWD=/build".to_vec()];
        let spec = StackSpec { argv: &argv, envp: &envp, execfn: b"/bin/sh", random: [7; 16], uid: 1000, gid: 100, hwcap: 0x178bfbff, base: 0 };
        let top = 0x7fff_ffff_0000u64;
        let (bytes, sp) = build_stack(top, &img, &spec).unwrap();
        assert_eq!(sp % 16, 0);
        assert_eq!(sp + bytes.len() as u64, top);
        let word = |va: u64| u64::from_le_bytes(bytes[(va - sp) as usize..(va - sp) as usize + 8].try_into().unwrap());
        let cstr = |va: u64| {
            let s = &bytes[(va - sp) as usize..];
            s[..s.iter().position(|&b| b == 0).unwrap()].to_vec()
        };
        assert_eq!(word(sp), 3);
        for (i, a) in argv.iter().enumerate() {
            assert_eq!(&cstr(word(sp + 8 + 8 * i as u64)), a);
        }
        assert_eq!(word(sp + 32), 0);
        for (i, e) in envp.iter().enumerate() {
            assert_eq!(&cstr(word(sp + 40 + 8 * i as u64)), e);
        }
        assert_eq!(word(sp + 56), 0);
        let mut aux = std::collections::BTreeMap::new();
        let mut p = sp + 64;
        loop {
            let (k, v) = (word(p), word(p + 8));
            if k == 0 {
                break;
            }
            aux.insert(k, v);
            p += 16;
        }
        assert_eq!(aux[&at::PAGESZ], 4096);
        assert_eq!(aux[&at::ENTRY], img.entry);
        assert_eq!(aux[&at::PHDR], img.phdr);
        assert_eq!(aux[&at::PHNUM], 1);
        assert_eq!(aux[&at::UID], 1000);
        assert_eq!(aux[&at::EGID], 100);
        assert_eq!(aux[&at::SECURE], 0);
        assert_eq!(cstr(aux[&at::EXECFN]), b"/bin/sh");
        assert_eq!(cstr(aux[&at::PLATFORM]), b"x86_64");
        let r = aux[&at::RANDOM];
        assert_eq!(&bytes[(r - sp) as usize..(r - sp) as usize + 16], &[7; 16]);
        let big = [vec![b'a'; MAX_ARG_BYTES]];
        let spec = StackSpec { argv: &big, ..spec };
        assert_eq!(build_stack(top, &img, &spec).map(|_| ()), Err(ElfError::TooBig));
    }
}
