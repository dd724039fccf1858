//! Static x86-64 Linux executables (ELF64): checked headers, loadable segments, and the
//! initial process stack (System V x86-64 ABI §3.4.1: argc, argv, envp, auxv).
use alloc::string::String;
use alloc::vec::Vec;

/// Why an executable was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElfError {
    TooShort,
    NotElf,
    /// Not 64-bit little-endian x86-64 Linux/SysV.
    WrongArch,
    /// Neither ET_EXEC nor ET_DYN.
    WrongType,
    /// Has a PT_INTERP: dynamically linked (the sandbox runs static programs).
    Dynamic,
    /// A header or segment points outside the file, overflows, or overlaps another.
    BadSegment(usize),
    NoSegments,
}

/// One PT_LOAD segment, relocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub mem_size: u64,
    pub file_offset: u64,
    pub file_size: u64,
    pub writable: bool,
    pub executable: bool,
}

/// A checked executable, ready to map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub entry: u64,
    pub segments: Vec<Segment>,
    /// Load bias (non-zero for static-PIE).
    pub base: u64,
    /// Where the program headers are in memory (AT_PHDR), their size and count.
    pub phdr: u64,
    pub phent: u64,
    pub phnum: u64,
}

/// Where static-PIE executables are placed.
pub const PIE_BASE: u64 = 0x5555_5555_4000;
/// The highest user address (exclusive) the sandbox maps.
pub const USER_TOP: u64 = 0x0000_7FFF_FFFF_F000;

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

pub fn parse(file: &[u8]) -> Result<Image, ElfError> {
    if file.len() < 64 {
        return Err(ElfError::TooShort);
    }
    if file[0..4] != *b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    // 64-bit, little-endian, version 1, SysV or Linux ABI, x86-64.
    if file[4] != 2 || file[5] != 1 || file[6] != 1 || !matches!(file[7], 0 | 3) || u16_at(file, 18) != 62 {
        return Err(ElfError::WrongArch);
    }
    let e_type = u16_at(file, 16);
    let base = match e_type {
        2 => 0,
        3 => PIE_BASE,
        _ => return Err(ElfError::WrongType),
    };
    let (phoff, phentsize, phnum) = (u64_at(file, 32), u16_at(file, 54) as u64, u16_at(file, 56) as u64);
    if phentsize != 56 || phnum == 0 || phnum > 256 {
        return Err(ElfError::BadSegment(0));
    }
    let table_end = phoff.checked_add(phentsize * phnum).ok_or(ElfError::BadSegment(0))?;
    if table_end > file.len() as u64 {
        return Err(ElfError::BadSegment(0));
    }
    let mut segments: Vec<Segment> = Vec::new();
    let mut phdr = None;
    for i in 0..phnum as usize {
        let h = &file[phoff as usize + 56 * i..phoff as usize + 56 * (i + 1)];
        let (p_type, flags) = (u32_at(h, 0), u32_at(h, 4));
        let (offset, vaddr, filesz, memsz) = (u64_at(h, 8), u64_at(h, 16), u64_at(h, 32), u64_at(h, 40));
        match p_type {
            3 => return Err(ElfError::Dynamic), // PT_INTERP
            6 => phdr = Some(vaddr.wrapping_add(base)), // PT_PHDR
            1 => {
                let vaddr = vaddr.checked_add(base).ok_or(ElfError::BadSegment(i))?;
                let end = vaddr.checked_add(memsz).ok_or(ElfError::BadSegment(i))?;
                let file_end = offset.checked_add(filesz).ok_or(ElfError::BadSegment(i))?;
                if filesz > memsz || file_end > file.len() as u64 || end > USER_TOP || vaddr < 0x1_0000 {
                    return Err(ElfError::BadSegment(i));
                }
                if segments.iter().any(|s| vaddr < s.vaddr + s.mem_size && s.vaddr < end) {
                    return Err(ElfError::BadSegment(i));
                }
                segments.push(Segment { vaddr, mem_size: memsz, file_offset: offset, file_size: filesz, writable: flags & 2 != 0, executable: flags & 1 != 0 });
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(ElfError::NoSegments);
    }
    // Without PT_PHDR, the headers are where the segment holding file offset `phoff` maps them.
    let phdr = phdr.or_else(|| {
        segments.iter().find(|s| s.file_offset <= phoff && table_end <= s.file_offset + s.file_size).map(|s| s.vaddr + (phoff - s.file_offset))
    });
    let entry = u64_at(file, 24).checked_add(base).ok_or(ElfError::BadSegment(0))?;
    if !segments.iter().any(|s| s.executable && s.vaddr <= entry && entry < s.vaddr + s.mem_size) {
        return Err(ElfError::BadSegment(0));
    }
    Ok(Image { entry, segments, base, phdr: phdr.unwrap_or(0), phent: 56, phnum })
}

/// Auxiliary vector keys (linux/auxvec.h).
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
    pub const EXECFN: u64 = 31;
}

/// The initial stack: the bytes to place so that they end at `top`, and the resulting RSP.
pub struct InitialStack {
    pub bytes: Vec<u8>,
    pub rsp: u64,
}

/// Builds the stack Linux gives a new process (`fs/binfmt_elf.c: create_elf_tables`): strings
/// at the top, then 16 random bytes (AT_RANDOM, deterministic here: `random`), then auxv, envp,
/// argv and argc, with RSP 16-byte aligned at argc.
pub fn initial_stack(top: u64, img: &Image, argv: &[String], envp: &[String], random: [u8; 16], uid: u64, gid: u64) -> InitialStack {
    let mut strings: Vec<u8> = Vec::new();
    let place = |s: &[u8], strings: &mut Vec<u8>| -> u64 {
        strings.extend_from_slice(s);
        strings.push(0);
        strings.len() as u64
    };
    // Offsets are from the top, computed after the fact.
    let argv_ends: Vec<u64> = argv.iter().map(|a| place(a.as_bytes(), &mut strings)).collect();
    let envp_ends: Vec<u64> = envp.iter().map(|e| place(e.as_bytes(), &mut strings)).collect();
    let platform_end = place(b"x86_64", &mut strings);
    let total_strings = strings.len() as u64;
    let str_base = top - total_strings;
    let addr_of = |end: u64, len: usize| str_base + end - len as u64 - 1;
    let random_addr = (str_base - 16) & !15;
    let execfn = argv.first().map(|a| addr_of(argv_ends[0], a.len())).unwrap_or(0);
    let mut words: Vec<u64> = Vec::new();
    words.push(argv.len() as u64);
    for (a, end) in argv.iter().zip(&argv_ends) {
        words.push(addr_of(*end, a.len()));
    }
    words.push(0);
    for (e, end) in envp.iter().zip(&envp_ends) {
        words.push(addr_of(*end, e.len()));
    }
    words.push(0);
    let aux = [
        (at::PHDR, img.phdr),
        (at::PHENT, img.phent),
        (at::PHNUM, img.phnum),
        (at::PAGESZ, 4096),
        (at::BASE, 0),
        (at::FLAGS, 0),
        (at::ENTRY, img.entry),
        (at::UID, uid),
        (at::EUID, uid),
        (at::GID, gid),
        (at::EGID, gid),
        (at::PLATFORM, addr_of(platform_end, 6)),
        (at::HWCAP, 0x178b_fbff),
        (at::CLKTCK, 100),
        (at::SECURE, 0),
        (at::RANDOM, random_addr),
        (at::EXECFN, execfn),
        (at::NULL, 0),
    ];
    for (k, v) in aux {
        words.push(k);
        words.push(v);
    }
    let table_bytes = words.len() as u64 * 8;
    let rsp = (random_addr - table_bytes) & !15;
    let mut bytes = alloc::vec![0u8; (top - rsp) as usize];
    for (i, w) in words.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    let r = (random_addr - rsp) as usize;
    bytes[r..r + 16].copy_from_slice(&random);
    let s = (str_base - rsp) as usize;
    bytes[s..].copy_from_slice(&strings);
    InitialStack { bytes, rsp }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    /// A minimal ET_EXEC with one RX segment at 0x400000.
    pub fn tiny_elf() -> Vec<u8> {
        let mut f = vec![0u8; 0x1000];
        f[0..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        f[24..32].copy_from_slice(&0x400078u64.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        let h = &mut f[64..120];
        h[0..4].copy_from_slice(&1u32.to_le_bytes());
        h[4..8].copy_from_slice(&5u32.to_le_bytes());
        h[16..24].copy_from_slice(&0x400000u64.to_le_bytes());
        h[32..40].copy_from_slice(&0x1000u64.to_le_bytes());
        h[40..48].copy_from_slice(&0x1000u64.to_le_bytes());
        f
    }

    #[test]
    fn parses_and_rejects() {
        let img = parse(&tiny_elf()).unwrap();
        assert_eq!(img.entry, 0x400078);
        assert_eq!(img.phdr, 0x400040);
        let mut bad = tiny_elf();
        bad[18] = 3;
        assert_eq!(parse(&bad), Err(ElfError::WrongArch));
        let mut big = tiny_elf();
        big[64 + 32..64 + 40].copy_from_slice(&0x2000u64.to_le_bytes());
        assert_eq!(parse(&big), Err(ElfError::BadSegment(0)));
        let mut interp = tiny_elf();
        interp[64..68].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(parse(&interp), Err(ElfError::Dynamic));
        assert_eq!(parse(&tiny_elf()[..40]), Err(ElfError::TooShort));
        let mut kernel = tiny_elf();
        kernel[64 + 16..64 + 24].copy_from_slice(&0xFFFF_8000_0000_0000u64.to_le_bytes());
        assert_eq!(parse(&kernel), Err(ElfError::BadSegment(0)));
    }

    #[test]
    fn stack_layout() {
        let img = parse(&tiny_elf()).unwrap();
        let top = 0x7fff_0000_0000u64;
        let st = initial_stack(top, &img, &["prog".to_string(), "a1".to_string()], &["K=V".to_string()], [7; 16], 1000, 100);
        assert_eq!(st.rsp % 16, 0);
        assert_eq!(st.rsp + st.bytes.len() as u64, top);
        let word = |i: usize| u64::from_le_bytes(st.bytes[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(word(0), 2);
        let s = |addr: u64| {
            let o = (addr - st.rsp) as usize;
            let end = st.bytes[o..].iter().position(|&b| b == 0).unwrap();
            core::str::from_utf8(&st.bytes[o..o + end]).unwrap().to_string()
        };
        assert_eq!(s(word(1)), "prog");
        assert_eq!(s(word(2)), "a1");
        assert_eq!(word(3), 0);
        assert_eq!(s(word(4)), "K=V");
        assert_eq!(word(5), 0);
        // auxv: find AT_RANDOM and check its 16 bytes.
        let mut i = 6;
        let mut random = 0;
        while word(i) != at::NULL {
            if word(i) == at::RANDOM {
                random = word(i + 1);
            }
            i += 2;
        }
        let o = (random - st.rsp) as usize;
        assert_eq!(st.bytes[o..o + 16], [7; 16]);
    }
}
