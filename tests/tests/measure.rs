//! Launch measurements against the independent reference, sev-snp-measure (PyPI, installed
//! into a virtualenv under target/ at test time), and the bad-image suite.
use measurement_tool::measure::{snp, tdx, MeasureError};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn reference() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let venv = integration_tests::root().join("target/snp-venv");
        let bin = venv.join("bin/sev-snp-measure");
        if !bin.exists() {
            let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().unwrap().success()
                && Command::new(venv.join("bin/pip")).args(["install", "-q", "sev-snp-measure"]).status().unwrap().success();
            assert!(ok, "installing sev-snp-measure from PyPI into {}", venv.display());
        }
        bin
    })
}

fn reference_digest(image: &Path, vcpus: u32, vcpu_type: &str, features: u64) -> String {
    let out = Command::new(reference())
        .args(["--mode", "snp", "--vcpus", &vcpus.to_string(), "--vcpu-type", vcpu_type])
        .args(["--guest-features", &format!("{features:#x}"), "--ovmf"])
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn ours(image: &Path, vcpus: u32, vcpu_type: &str, features: u64) -> String {
    let bytes = std::fs::read(image).unwrap();
    hex::encode(snp::launch_digest(&bytes, vcpus, snp::vcpu_signature(vcpu_type).unwrap(), features).unwrap())
}

fn images() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd"]
        .iter()
        .map(PathBuf::from)
        .collect();
    for p in &v {
        assert!(p.exists(), "{} missing (apt: ovmf)", p.display());
    }
    v.push(integration_tests::agent_bin());
    v
}

#[test]
fn snp_digests_equal_sev_snp_measure() {
    let mut combos = Vec::new();
    for vcpus in [1, 2, 4, 16] {
        combos.push((vcpus, "EPYC-v4", 0x1));
    }
    for ty in ["EPYC", "EPYC-Rome", "EPYC-Milan", "EPYC-Genoa", "EPYC-Turin"] {
        combos.push((2, ty, 0x1));
    }
    for features in [0x0, 0x21, 0x3f] {
        combos.push((4, "EPYC-Milan", features));
    }
    let mut checked = 0;
    for image in images() {
        for &(vcpus, ty, features) in &combos {
            assert_eq!(ours(&image, vcpus, ty, features), reference_digest(&image, vcpus, ty, features), "{} {vcpus} {ty} {features:#x}", image.display());
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * 12);
}

#[test]
fn the_cli_prints_the_same_digest() {
    let image = integration_tests::agent_bin();
    let out = Command::new(integration_tests::bin("measurement-tool"))
        .args(["measure", "--snp"])
        .arg(&image)
        .args(["--vcpus", "2", "--vcpu-type", "EPYC-Genoa"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), reference_digest(&image, 2, "EPYC-Genoa", 1));
}

/// What `make agent` records as the reference (`measurement-tool reference`, what `verify` expects
/// by default) is sev-snp-measure's digest of the image under the verifier's pinned launch
/// parameters, and the image's MRTD.
#[test]
fn the_reference_measurements_are_sev_snp_measures_digest_with_the_pinned_parameters() {
    use measurement_tool::evidence::policy::{SNP_GUEST_FEATURES, SNP_VCPUS, SNP_VCPU_TYPES};
    use measurement_tool::evidence::reference::Reference;
    let image = integration_tests::agent_bin();
    let out_file = integration_tests::root().join(format!("target/reference-test-{}.json", std::process::id()));
    let out = Command::new(integration_tests::bin("measurement-tool")).arg("reference").arg(&image).arg("--out").arg(&out_file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Reference = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out_file);
    assert_eq!((SNP_VCPUS, SNP_VCPU_TYPES, SNP_GUEST_FEATURES), (1, &["EPYC-v4"][..], 0x1));
    assert_eq!(r.sev_snp.len(), 1);
    assert_eq!(r.sev_snp[0].launch_digest, reference_digest(&image, 1, "EPYC-v4", 0x1));
    let bytes = std::fs::read(&image).unwrap();
    assert_eq!(r.tdx_mrtd, hex::encode(tdx::mrtd(&bytes).unwrap()));
    use sha2::Digest;
    assert_eq!(r.image_sha256, hex::encode(sha2::Sha256::digest(&bytes)));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains(&r.sev_snp[0].launch_digest) && printed.contains(&r.tdx_mrtd), "{printed}");
}

#[test]
fn the_agent_image_declares_its_snp_and_tdx_layout() {
    let image = std::fs::read(integration_tests::agent_bin()).unwrap();
    let table = measurement_tool::measure::footer::parse(&image).unwrap();
    let sev = snp::metadata(&image, &table).unwrap();
    assert_eq!(sev.iter().map(|s| s.kind).collect::<Vec<_>>(), [snp::SectionType::SnpSecMem, snp::SectionType::SnpSecrets, snp::SectionType::Cpuid]);
    let td = tdx::metadata(&image).unwrap();
    assert_eq!(td.iter().map(|s| s.kind).collect::<Vec<_>>(), [0, 3, 2]); // BFV, TempMem, TD_HOB
    assert_eq!((td[0].memory_address, td[0].memory_data_size), (0xFFF0_0000, image.len() as u64));
    assert_eq!(td[0].attributes, tdx::ATTR_MR_EXTEND);
    // MRTD depends on every byte of the image (BFV is MR.EXTENDed) and on nothing else.
    let m = tdx::mrtd(&image).unwrap();
    let mut flipped = image.clone();
    flipped[0x1234] ^= 1;
    assert_ne!(tdx::mrtd(&flipped).unwrap(), m);
    assert_eq!(tdx::mrtd(&image).unwrap(), m);
}

/// Writes `image` with `f` applied, for the bad-image cases.
fn mutate(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut image = std::fs::read(integration_tests::agent_bin()).unwrap();
    f(&mut image);
    image
}

fn sev_metadata_offset(image: &[u8]) -> usize {
    let table = measurement_tool::measure::footer::parse(image).unwrap();
    let off = u32::from_le_bytes(table[measurement_tool::measure::footer::SEV_METADATA_GUID][..4].try_into().unwrap());
    image.len() - off as usize
}

fn tdx_metadata_offset(image: &[u8]) -> usize {
    let table = measurement_tool::measure::footer::parse(image).unwrap();
    let off = u32::from_le_bytes(table[measurement_tool::measure::footer::TDX_METADATA_GUID][..4].try_into().unwrap());
    image.len() - off as usize
}

#[test]
fn bad_images_get_clear_errors() {
    let d = |img: &[u8]| snp::launch_digest(img, 1, snp::vcpu_signature("EPYC").unwrap(), 1);
    // No footer table.
    let none = mutate(|i| {
        let n = i.len();
        i[n - 32 - 16..n - 32].fill(0);
    });
    assert!(matches!(d(&none), Err(MeasureError::NoFooterTable(_))));
    assert!(matches!(tdx::mrtd(&none), Err(MeasureError::NoFooterTable(_))));
    // Not a whole number of pages.
    let odd = mutate(|i| {
        i.remove(0);
    });
    assert_eq!(d(&odd), Err(MeasureError::NotPageAligned(odd.len())));
    // Footer size running past the table.
    let huge = mutate(|i| {
        let at = i.len() - 32 - 18;
        i[at..at + 2].copy_from_slice(&0xFFF0u16.to_le_bytes());
    });
    assert!(matches!(d(&huge), Err(MeasureError::BadFooterTable(_))));
    // Truncated / corrupt SEV metadata.
    let sig = mutate(|i| {
        let at = sev_metadata_offset(i);
        i[at] = b'X';
    });
    assert!(matches!(d(&sig), Err(MeasureError::BadMetadata { what: "SEV metadata", .. })));
    let count = mutate(|i| {
        let at = sev_metadata_offset(i) + 12;
        i[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    });
    assert!(matches!(d(&count), Err(MeasureError::BadMetadata { .. })));
    // A section that is not page aligned, one that overlaps another, one past 4 GiB, one over
    // the image.
    let section = |gpa: u32, size: u32| {
        mutate(move |i| {
            let at = sev_metadata_offset(i) + 16 + 12; // second section (secrets)
            i[at..at + 4].copy_from_slice(&gpa.to_le_bytes());
            i[at + 4..at + 8].copy_from_slice(&size.to_le_bytes());
        })
    };
    for (gpa, size, why) in [
        (0x9F800, 0x1000, "whole number of pages"),
        (0x200000, 0x1000, "overlaps section 0"),
        (0xFFFFF000, 0x2000, "past 4 GiB"),
        (0xFFF00000, 0x1000, "overlaps the firmware image"),
    ] {
        match d(&section(gpa, size)) {
            Err(MeasureError::BadSection { why: w, .. }) => assert!(w.contains(why), "{w} vs {why}"),
            other => panic!("{gpa:#x}: {other:?}"),
        }
    }
    // TDX: overlapping and out-of-range sections.
    let tdx_overlap = mutate(|i| {
        let at = tdx_metadata_offset(i) + 16 + 2 * 32 + 8; // TD_HOB memory address
        i[at..at + 8].copy_from_slice(&0x0020_0000u64.to_le_bytes());
    });
    assert!(matches!(tdx::mrtd(&tdx_overlap), Err(MeasureError::BadSection { .. })));
    let tdx_raw = mutate(|i| {
        let at = tdx_metadata_offset(i) + 16 + 4; // BFV raw size
        i[at..at + 4].copy_from_slice(&0x0020_0000u32.to_le_bytes());
    });
    assert!(matches!(tdx::mrtd(&tdx_raw), Err(MeasureError::BadSection { .. })));
}
