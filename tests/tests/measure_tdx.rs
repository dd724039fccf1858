//! TDX MRTD against reference outputs. No tool that computes an MRTD can be installed from the
//! registries CI reaches, so the expected values were computed once by Intel's td-shim tools
//! (`td-shim-tee-info-hash` and its Python port) and are stored with the inputs they were computed
//! over: small synthetic TDVF images (tests/vectors/tdx/mrtd/, written by make_images.py) and
//! Debian's OVMF.fd, pinned by SHA-256. Provenance: tests/vectors/README.md.
use measurement_tool::measure::tdx;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

fn dir() -> PathBuf {
    integration_tests::root().join("tests/vectors/tdx/mrtd")
}

struct Vector {
    path: PathBuf,
    sha256: String,
    mrtd: String,
}

fn vectors() -> Vec<Vector> {
    let text = std::fs::read_to_string(dir().join("expected.txt")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "{l}");
            let p = Path::new(f[0]);
            Vector { path: if p.is_absolute() { p.to_path_buf() } else { dir().join(p) }, sha256: f[1].into(), mrtd: f[2].into() }
        })
        .collect()
}

fn images_in_dir() -> usize {
    std::fs::read_dir(dir()).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "bin")).count()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn the_synthetic_images_are_what_make_images_writes() {
    let out = std::env::temp_dir().join(format!("tdvf-images-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let ok = Command::new("python3").arg(dir().join("make_images.py")).arg(&out).status().unwrap().success();
    assert!(ok, "make_images.py failed");
    let mut n = 0;
    for v in vectors().iter().filter(|v| v.path.starts_with(dir())) {
        let name = v.path.file_name().unwrap();
        assert_eq!(std::fs::read(out.join(name)).unwrap(), std::fs::read(&v.path).unwrap(), "{}", v.path.display());
        n += 1;
    }
    std::fs::remove_dir_all(&out).unwrap();
    assert_eq!(n, images_in_dir());
}

#[test]
fn mrtd_equals_the_reference_on_the_synthetic_images() {
    let mut n = 0;
    for v in vectors().iter().filter(|v| v.path.starts_with(dir())) {
        let image = std::fs::read(&v.path).unwrap();
        assert_eq!(sha256(&image), v.sha256, "{} is not the file the reference measured", v.path.display());
        assert_eq!(hex::encode(tdx::mrtd(&image).unwrap()), v.mrtd, "{}", v.path.display());
        n += 1;
    }
    assert_eq!(n, images_in_dir(), "every image in {} has a vector", dir().display());
}

/// Debian's OVMF.fd is the real firmware we can reach from CI. A different package version (a
/// Debian update) has no stored reference value: the test says so and checks nothing for it
/// rather than fail CI; the synthetic images above are checked regardless.
#[test]
fn mrtd_equals_the_reference_on_debian_ovmf() {
    for v in vectors().iter().filter(|v| !v.path.starts_with(dir())) {
        let image = std::fs::read(&v.path).unwrap_or_else(|e| panic!("{}: {e} (apt: ovmf)", v.path.display()));
        if sha256(&image) != v.sha256 {
            eprintln!(
                "{}: SHA-256 {} is not the {} the reference measured; no reference MRTD for this version (see tests/vectors/README.md)",
                v.path.display(),
                sha256(&image),
                v.sha256
            );
            continue;
        }
        assert_eq!(hex::encode(tdx::mrtd(&image).unwrap()), v.mrtd, "{}", v.path.display());
    }
}

/// `ovmf-layout.bin` with one field of one section changed (sections: 0 BFV, 1 CFV, 2 and 3
/// TempMem, 4 TD_HOB, 5 TempMem; fields at 0 DataOffset, 4 RawDataSize, 8 MemoryAddress,
/// 16 MemoryDataSize, 24 Type, 28 Attributes).
fn patched(index: usize, field: usize, value: &[u8]) -> Vec<u8> {
    use measurement_tool::measure::footer;
    let mut image = std::fs::read(dir().join("ovmf-layout.bin")).unwrap();
    let table = footer::parse(&image).unwrap();
    let from_end = footer::entry_u32(&table, footer::TDX_METADATA_GUID, "TDX metadata").unwrap() as usize;
    let at = image.len() - from_end + 16 + 32 * index + field;
    image[at..at + value.len()].copy_from_slice(value);
    image
}

/// What QEMU refuses to load, and what it loads differently from the TDVF guide and other
/// calculators, gets an error instead of an MRTD no TD would have.
#[test]
fn images_qemu_would_not_measure_so_are_refused() {
    use measurement_tool::measure::MeasureError;
    let u32b = |v: u32| v.to_le_bytes().to_vec();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (patched(1, 24, &u32b(4)), "has type 4, which QEMU does not load"),
        (patched(0, 28, &u32b(tdx::ATTR_MR_EXTEND | tdx::ATTR_PAGE_AUG)), "PAGE.AUG"),
        (patched(4, 28, &u32b(tdx::ATTR_MR_EXTEND)), "memory the VMM fills"),
        (patched(2, 4, &u32b(0x1000)), "TD_HOB/TempMem with raw data"),
        (patched(1, 4, &u32b(0)), "BFV/CFV with no raw data"),
        (patched(0, 0, &u32b(0x10000)), "past the end of the image"),
        (patched(5, 8, &0xFFFF_FFFF_FFFF_F000u64.to_le_bytes()), "top of the address space"),
        (patched(4, 24, &u32b(tdx::TEMP_MEM)), "one a TD_HOB"),
    ];
    for (image, why) in cases {
        match tdx::mrtd(&image) {
            Err(MeasureError::BadSection { why: w, .. }) | Err(MeasureError::BadMetadata { why: w, .. }) => assert!(w.contains(why), "{w:?} vs {why:?}"),
            other => panic!("{why}: {other:?}"),
        }
    }
    // The unpatched image measures.
    assert!(tdx::mrtd(&patched(0, 0, &0x8000u32.to_le_bytes())).is_ok());
}
