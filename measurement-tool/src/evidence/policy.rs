//! The verifier's policy. The default is strict and fails closed; only an explicit TOML file
//! (`--policy FILE`) relaxes it. Command-line flags may only tighten it, with two explicit,
//! loudly reported exceptions: `--allow-debug` and `--any-measurement`.
//!
//! What the default requires (each check names itself when it fails):
//!
//! | evidence | check | default |
//! |---|---|---|
//! | both | launch measurement | one of `expected_measurements`; **none given = refused** (never "any") |
//! | SNP | guest policy bits 16..63 | only SMT (16) and the must-be-one bit 17: [`SNP_ALLOWED_POLICY`]; DEBUG (19) only with `allow_debug`; MIGRATE_MA (18), SINGLE_SOCKET, CXL_ALLOW, … refused |
//! | SNP | guest policy ABI bits 0..15 | not checked: the PSP refused the launch if its firmware was older; the TCB floor is the verifier's own bound |
//! | SNP | VMPL | 0 |
//! | SNP | REPORTED_TCB | at least the floor of the report's generation ([`builtin_min_tcb`]); a generation without a floor is refused until one is given |
//! | SNP | REPORT_ID_MA | all ones (no migration agent) |
//! | SNP | PLATFORM_INFO | `required_platform_info` bits set (default none: see below) |
//! | SNP | launch parameters (bundles) | vCPUs, vCPU type and SEV_FEATURES in the allow-list ([`SnpLaunch`]) |
//! | TDX | TD attributes | SEPT_VE_DISABLE (28) set; nothing else ([`TD_ALLOWED_ATTRIBUTES`]); DEBUG (0) only with `allow_debug`; MIGRATABLE (29) refused |
//! | TDX | RTMR0..3, SERVTD hashes | all zero (the agent extends no RTMR; it binds no service TD) |
//! | TDX | Intel TCB status | `UpToDate` only |
//!
//! PLATFORM_INFO is allowed as reported by default: SMT_EN only restates guest policy bit 16;
//! TSME_EN, ECC_EN, RAPL_DIS are host configuration that does not weaken SNP's guarantees;
//! ALIAS_CHECK_COMPLETE (bit 5, AMD-SB-3015 "BadRAM") is reported only by newer firmware (the
//! real Milan vector has PLATFORM_INFO 0x1), so requiring it is left to a policy file
//! (`required_platform_info = "0x20"`).
//!
//! ```toml
//! expected_measurements = ["<96 hex digits>", ...]   # any of these (SNP launch digest or MRTD)
//! any_measurement = false                            # true: accept any (reported, never "verified")
//! allow_debug = false
//! require_vmpl0 = true                               # SNP
//! min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }   # SNP; replaces the built-in floor
//! allowed_policy_bits = "0x30000"                    # SNP: guest policy bits 16.. that may be set
//! require_no_migration_agent = true                  # SNP: REPORT_ID_MA all ones
//! required_platform_info = "0x0"                     # SNP: PLATFORM_INFO bits that must be set
//! snp_launch = { vcpus = [1], vcpu_types = ["EPYC-v4"], guest_features = ["0x1"] }
//! required_td_attributes = "0x10000000"              # TDX: SEPT_VE_DISABLE
//! allowed_td_attributes = "0x10000000"               # TDX: bits that may be set (DEBUG: allow_debug)
//! allow_nonzero_rtmrs = false                        # TDX
//! allow_servtd = false                               # TDX: SERVTD hashes must be zero
//! allowed_tcb_statuses = ["UpToDate"]                # TDX: Intel TCB statuses accepted
//! ```
use serde::Deserialize;

/// SNP guest policy bits (above the ABI version, bits 0..15) the default policy allows: SMT
/// (bit 16) and bit 17, which the SNP ABI says must be one. What the loader launches with
/// (`loader::tee::TeeConfig::snp_policy`).
pub const SNP_ALLOWED_POLICY: u64 = 0x30000;
/// The SEV_FEATURES (VMSA offset 0x3B0) the agent is launched with and the verifier accepts:
/// bit 0, SNPActive, only. Part of the launch digest. The single place to change when the guest
/// requires more features (e.g. Restricted Injection, bit 3): the loader records it, `make agent`
/// measures with it and the verifier pins it.
pub const SNP_GUEST_FEATURES: u64 = 0x1;
/// The number of vCPUs the agent runs on (one VMSA each, part of the launch digest).
pub const SNP_VCPUS: u32 = 1;
/// The QEMU vCPU models the loader launches SNP guests with (the VMSA holds the CPU signature,
/// so it is part of the launch digest). `loader` uses the first.
pub const SNP_VCPU_TYPES: &[&str] = &["EPYC-v4"];

/// TD attribute bit 0: DEBUG (TDX module ABI, "TD Attributes Definition").
pub const TD_DEBUG: u64 = 1;
/// TD attribute bit 28: SEPT_VE_DISABLE: EPT violations on private memory are not turned into
/// #VE, so the host cannot steer the guest through a #VE on pending pages.
pub const TD_SEPT_VE_DISABLE: u64 = 1 << 28;
/// TD attribute bit 29: MIGRATABLE (a migration TD may export the TD's memory).
pub const TD_MIGRATABLE: u64 = 1 << 29;
/// TD attributes the default policy allows: SEPT_VE_DISABLE (QEMU 10.1 sets it by default).
pub const TD_ALLOWED_ATTRIBUTES: u64 = TD_SEPT_VE_DISABLE;

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MinTcb {
    #[serde(default)]
    pub fmc: u8,
    #[serde(default)]
    pub bootloader: u8,
    #[serde(default)]
    pub tee: u8,
    #[serde(default)]
    pub snp: u8,
    #[serde(default)]
    pub microcode: u8,
}

impl MinTcb {
    /// Component by component, the higher of the two.
    pub fn max(self, o: MinTcb) -> MinTcb {
        MinTcb {
            fmc: self.fmc.max(o.fmc),
            bootloader: self.bootloader.max(o.bootloader),
            tee: self.tee.max(o.tee),
            snp: self.snp.max(o.snp),
            microcode: self.microcode.max(o.microcode),
        }
    }

    /// `bootloader=N,tee=N,snp=N,microcode=N[,fmc=N]` (components left out: 0).
    pub fn parse(s: &str) -> Result<MinTcb, String> {
        let mut t = MinTcb::default();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("{part}: expected NAME=VALUE"))?;
            let v: u8 = v.trim().parse().map_err(|e| format!("{part}: {e}"))?;
            match k.trim() {
                "fmc" => t.fmc = v,
                "bootloader" | "bl" => t.bootloader = v,
                "tee" => t.tee = v,
                "snp" => t.snp = v,
                "microcode" | "ucode" => t.microcode = v,
                other => return Err(format!("unknown TCB component {other} (bootloader, tee, snp, microcode, fmc)")),
            }
        }
        Ok(t)
    }
}

/// The built-in minimum SNP TCB of a processor generation, or `None` when this verifier knows
/// none (then a report of that generation is refused until a floor is given).
///
/// Milan: bootloader 3, TEE 0, SNP 8, microcode 115 (0x73) is the REPORTED_TCB of the real
/// Milan report in tests/vectors/snp/report_milan.hex (from virtee/sev), certified by AMD in
/// that report's VCEK (AMD KDS, issued 2023-04-03). It is the lowest TCB for which this project
/// holds genuine AMD-certified evidence, not a statement that it is free of known flaws: later
/// AMD security bulletins raised the SPLs (the GCP Milan report in the same directory, whose VCEK
/// KDS issued 2025-12-05, reports bootloader 4, TEE 0, SNP 27, microcode 222). Raise it with
/// `--min-tcb` or `min_tcb` in a policy file. No Genoa or Turin report is in tests/vectors, so
/// no number is invented for them.
pub fn builtin_min_tcb(generation: super::snp::Generation) -> Option<MinTcb> {
    match generation {
        super::snp::Generation::Milan => Some(MinTcb { fmc: 0, bootloader: 3, tee: 0, snp: 8, microcode: 115 }),
        super::snp::Generation::Genoa | super::snp::Generation::Turin => None,
    }
}

/// The SNP launch parameters the verifier accepts (each part of the launch digest). A bundle's
/// recorded values are compared with these, never adopted.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnpLaunch {
    #[serde(default = "default_vcpus")]
    pub vcpus: Vec<u32>,
    #[serde(default = "default_vcpu_types")]
    pub vcpu_types: Vec<String>,
    #[serde(default = "default_guest_features", deserialize_with = "hex_vec")]
    pub guest_features: Vec<u64>,
}

fn default_vcpus() -> Vec<u32> {
    vec![SNP_VCPUS]
}
fn default_vcpu_types() -> Vec<String> {
    SNP_VCPU_TYPES.iter().map(|s| s.to_string()).collect()
}
fn default_guest_features() -> Vec<u64> {
    vec![SNP_GUEST_FEATURES]
}

impl Default for SnpLaunch {
    fn default() -> Self {
        SnpLaunch { vcpus: default_vcpus(), vcpu_types: default_vcpu_types(), guest_features: default_guest_features() }
    }
}

impl SnpLaunch {
    /// Every allowed combination (vCPUs, vCPU type, SEV_FEATURES).
    pub fn combinations(&self) -> Vec<(u32, String, u64)> {
        let mut v = Vec::new();
        for &n in &self.vcpus {
            for t in &self.vcpu_types {
                for &f in &self.guest_features {
                    v.push((n, t.clone(), f));
                }
            }
        }
        v
    }

    /// Refuses launch parameters outside the allow-list.
    pub fn check(&self, vcpus: u32, vcpu_type: &str, guest_features: u64) -> Result<(), super::Rejection> {
        if !self.vcpus.contains(&vcpus) {
            return Err(super::Rejection::new("launch vCPUs", format!("{:?} (the verifier's allow-list)", self.vcpus), vcpus.to_string()));
        }
        if !self.vcpu_types.iter().any(|t| t == vcpu_type) {
            return Err(super::Rejection::new("launch vCPU type", format!("{:?} (the verifier's allow-list)", self.vcpu_types), vcpu_type));
        }
        if !self.guest_features.contains(&guest_features) {
            let allowed: Vec<String> = self.guest_features.iter().map(|f| format!("{f:#x}")).collect();
            return Err(super::Rejection::new("launch SEV_FEATURES", format!("{} (the verifier's allow-list)", allowed.join(" or ")), format!("{guest_features:#x}")));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Launch measurements accepted (hex; SNP launch digest or TDX MRTD). Empty: refused, unless
    /// `any_measurement`.
    #[serde(default)]
    pub expected_measurements: Vec<String>,
    /// Accept any launch measurement. Nothing then says which code ran; the output says so.
    #[serde(default)]
    pub any_measurement: bool,
    /// Expected REPORT_DATA (hex), when the caller knows it.
    #[serde(default)]
    pub report_data: Option<String>,
    #[serde(default)]
    pub allow_debug: bool,
    #[serde(default = "yes")]
    pub require_vmpl0: bool,
    /// SNP: the minimum TCB; `None`: the built-in floor of the report's generation.
    #[serde(default)]
    pub min_tcb: Option<MinTcb>,
    /// SNP: raised on top of `min_tcb` / the built-in floor (`--min-tcb`; never lowers it).
    #[serde(skip)]
    pub raise_tcb: Option<MinTcb>,
    /// SNP guest-policy bits (16 and up) that may be set; DEBUG (19) is governed by `allow_debug`.
    #[serde(default = "snp_allowed_policy", deserialize_with = "hex")]
    pub allowed_policy_bits: u64,
    /// SNP: REPORT_ID_MA must be all ones (the guest has no migration agent).
    #[serde(default = "yes")]
    pub require_no_migration_agent: bool,
    /// SNP: PLATFORM_INFO bits that must be set.
    #[serde(default, deserialize_with = "hex")]
    pub required_platform_info: u64,
    /// SNP: launch parameters accepted.
    #[serde(default)]
    pub snp_launch: SnpLaunch,
    /// TDX: TD attribute bits that must be set.
    #[serde(default = "td_required", deserialize_with = "hex")]
    pub required_td_attributes: u64,
    /// TDX: TD attribute bits that may be set (DEBUG is governed by `allow_debug`).
    #[serde(default = "td_allowed", deserialize_with = "hex")]
    pub allowed_td_attributes: u64,
    /// TDX: accept non-zero RTMRs (the agent extends none).
    #[serde(default)]
    pub allow_nonzero_rtmrs: bool,
    /// TDX: accept non-zero SERVTD hashes (a service TD bound to this TD).
    #[serde(default)]
    pub allow_servtd: bool,
    /// TDX: Intel TCB statuses accepted (default: UpToDate only).
    #[serde(default = "default_tcb_statuses")]
    pub allowed_tcb_statuses: Vec<String>,
}

pub fn default_tcb_statuses() -> Vec<String> {
    vec!["UpToDate".to_string()]
}

fn yes() -> bool {
    true
}
fn snp_allowed_policy() -> u64 {
    SNP_ALLOWED_POLICY
}
fn td_required() -> u64 {
    TD_SEPT_VE_DISABLE
}
fn td_allowed() -> u64 {
    TD_ALLOWED_ATTRIBUTES
}

fn parse_hex(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| format!("{s}: {e}"))
}

fn hex<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    parse_hex(&s).map_err(serde::de::Error::custom)
}

fn hex_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    let v: Vec<String> = Vec::deserialize(d)?;
    v.iter().map(|s| parse_hex(s).map_err(serde::de::Error::custom)).collect()
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            expected_measurements: Vec::new(),
            any_measurement: false,
            report_data: None,
            allow_debug: false,
            require_vmpl0: true,
            min_tcb: None,
            raise_tcb: None,
            allowed_policy_bits: SNP_ALLOWED_POLICY,
            require_no_migration_agent: true,
            required_platform_info: 0,
            snp_launch: SnpLaunch::default(),
            required_td_attributes: TD_SEPT_VE_DISABLE,
            allowed_td_attributes: TD_ALLOWED_ATTRIBUTES,
            allow_nonzero_rtmrs: false,
            allow_servtd: false,
            allowed_tcb_statuses: default_tcb_statuses(),
        }
    }
}

/// How to get the expected measurement, for the refusal when none is given.
pub const HOW_TO_PIN: &str = "a pinned launch measurement: pass --expected-measurement HEX, --agent agent.bin or a --policy file naming them (`make agent` prints the agent's SNP launch digest and TDX MRTD and writes target/reference-measurements.json; or run `measurement-tool measure --snp target/agent.bin` / `measurement-tool measure --tdx target/agent.bin`); --any-measurement accepts any code and proves nothing about what ran";

impl Policy {
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The checks every kind of evidence shares: the launch measurement (named `what`: the SNP
    /// measurement, the TDX MRTD) is one of the expected ones — an empty list is refused unless
    /// `any_measurement` — and REPORT_DATA is the expected one.
    pub fn check_measurement_and_report_data(&self, what: &'static str, measurement: &[u8], report_data: &[u8]) -> Result<(), super::Rejection> {
        let m = hex::encode(measurement);
        if self.expected_measurements.is_empty() {
            if !self.any_measurement {
                return Err(super::Rejection::new(what, HOW_TO_PIN, format!("none given (this evidence's is {m})")));
            }
        } else if !self.expected_measurements.iter().any(|e| e.eq_ignore_ascii_case(&m)) {
            return Err(super::Rejection::new(what, self.expected_measurements.join(" or "), m));
        }
        if let Some(rd) = &self.report_data {
            let got = hex::encode(report_data);
            if !rd.eq_ignore_ascii_case(&got) {
                return Err(super::Rejection::new("report data", rd.clone(), got));
            }
        }
        Ok(())
    }

    /// Whether a measurement is pinned (the evidence says which code ran).
    pub fn measurement_pinned(&self) -> bool {
        !self.expected_measurements.is_empty()
    }

    /// The SNP TCB floor for a generation: the policy file's, else the built-in one, raised by
    /// `raise_tcb`. `None`: no floor is known.
    pub fn min_tcb_for(&self, generation: super::snp::Generation) -> Option<MinTcb> {
        let base = self.min_tcb.or_else(|| builtin_min_tcb(generation));
        match (base, self.raise_tcb) {
            (Some(b), Some(r)) => Some(b.max(r)),
            (b, r) => b.or(r),
        }
    }
}
