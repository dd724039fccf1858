//! The verifier's policy: flags on the command line, or a small TOML file.
//!
//! ```toml
//! expected_measurements = ["<96 hex digits>", ...]   # any of these
//! allow_debug = false
//! require_vmpl0 = true                               # SNP
//! min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }   # SNP, per component
//! allowed_policy_bits = "0x30000"                    # SNP: guest policy bits 16.. that may be set
//! allowed_td_attributes = "0x0"                      # TDX: TD attribute bits that may be set
//! max_age_secs = 86400                               # where the evidence has a timestamp
//! allowed_tcb_statuses = ["UpToDate"]                # TDX: Intel TCB statuses accepted
//! ```
use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
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

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub expected_measurements: Vec<String>,
    /// Expected REPORT_DATA (hex), when the caller knows it.
    #[serde(default)]
    pub report_data: Option<String>,
    #[serde(default)]
    pub allow_debug: bool,
    #[serde(default = "yes")]
    pub require_vmpl0: bool,
    #[serde(default)]
    pub min_tcb: Option<MinTcb>,
    /// SNP guest-policy bits (above the ABI version) that may be set; `None`: any.
    #[serde(default, deserialize_with = "hex_opt")]
    pub allowed_policy_bits: Option<u64>,
    /// TDX TD attributes that may be set (DEBUG is governed by `allow_debug`); `None`: any.
    #[serde(default, deserialize_with = "hex_opt")]
    pub allowed_td_attributes: Option<u64>,
    #[serde(default)]
    pub max_age_secs: Option<u64>,
    /// TDX: Intel TCB statuses accepted (default: up to date, or needing only configuration or
    /// software hardening).
    #[serde(default = "default_tcb_statuses")]
    pub allowed_tcb_statuses: Vec<String>,
}

pub fn default_tcb_statuses() -> Vec<String> {
    ["UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"].map(String::from).to_vec()
}

fn yes() -> bool {
    true
}

fn hex_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(serde::de::Error::custom)).transpose()
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            expected_measurements: Vec::new(),
            report_data: None,
            allow_debug: false,
            require_vmpl0: true,
            min_tcb: None,
            allowed_policy_bits: None,
            allowed_td_attributes: None,
            max_age_secs: None,
            allowed_tcb_statuses: default_tcb_statuses(),
        }
    }
}

impl Policy {
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

impl Policy {
    /// The checks every kind of evidence shares: the launch measurement (named `what`: the SNP
    /// measurement, the TDX MRTD) is one of the expected ones, and REPORT_DATA is the expected one.
    pub fn check_measurement_and_report_data(&self, what: &'static str, measurement: &[u8], report_data: &[u8]) -> Result<(), super::Rejection> {
        if !self.expected_measurements.is_empty() {
            let m = hex::encode(measurement);
            if !self.expected_measurements.iter().any(|e| e.eq_ignore_ascii_case(&m)) {
                return Err(super::Rejection::new(what, self.expected_measurements.join(" or "), m));
            }
        }
        if let Some(rd) = &self.report_data {
            let got = hex::encode(report_data);
            if !rd.eq_ignore_ascii_case(&got) {
                return Err(super::Rejection::new("report data", rd.clone(), got));
            }
        }
        Ok(())
    }
}
