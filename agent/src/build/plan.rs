//! What a build needs, worked out from bytes the agent holds, before anything runs.
//!
//! The loader sends a `.drv` path with its ATerm, the ATerms of the input derivations and a list
//! of input store paths. [`plan`] trusts none of it: the `.drv` path is recomputed from the
//! ATerm, every input derivation is checked against its path, every output path is recomputed
//! (`hashDerivationModulo`), and the store paths the builder needs (input sources and the used
//! outputs of input derivations) are derived from the ATerms. After the input NARs arrive,
//! [`check_inputs`] checks that exactly the closure of those paths was sent, using references
//! the agent found by scanning the NARs itself, and that fixed-output inputs carry their
//! declared content.
use super::json::{self, Json};
use crate::nix::derivation::{self, Derivation, DrvError, FixedOutput, Resolver};
use crate::nix::hash::{hex, Algo};
use crate::nix::store_path::{Method, StorePath};
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use sha2::{Digest, Sha256, Sha512};

/// The only platform the agent builds for.
pub const SYSTEM: &str = "x86_64-linux";

/// A build the agent has agreed to run.
#[derive(Debug)]
pub struct Plan {
    pub drv_path: StorePath,
    pub drv: Derivation,
    /// SHA-256 of the ATerm bytes (the statement's `derivationDigest`).
    pub drv_sha256: [u8; 32],
    /// Output name → output path, as the agent computed them.
    pub outputs: BTreeMap<String, StorePath>,
    /// The derivation's own fixed output, if it is fixed-output.
    pub fixed: Option<FixedOutput>,
    /// Store paths the builder uses directly: input sources and used input-derivation outputs.
    pub roots: BTreeSet<String>,
    /// Inputs that are outputs of fixed-output derivations, with their declared content hash.
    pub fixed_inputs: BTreeMap<String, FixedOutput>,
    /// `__json`, parsed, for structured-attribute derivations.
    pub structured: Option<Json>,
}

/// Why a build request is refused (before or after the inputs arrive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    Derivation(DrvError),
    /// The `.drv` path sent is not the path of the ATerm sent.
    DrvPathMismatch { claimed: String, computed: String },
    /// Not a derivation for this machine.
    WrongSystem(String),
    /// An input the derivation needs was not sent.
    MissingInput(String),
    /// A path was sent that is not in the closure of the derivation's inputs.
    UnexpectedInput(String),
    /// An input refers to a path that was not sent (an incomplete closure).
    IncompleteClosure { path: String, reference: String },
    /// A fixed-output input whose contents do not have the declared hash.
    FixedInputMismatch { path: String, expected: String, got: String },
    /// A fixed-output input the agent cannot check (hash algorithm or shape).
    FixedInputUnchecked { path: String, why: &'static str },
    /// `__json` that does not parse.
    StructuredAttrs,
}

impl core::fmt::Display for PlanError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Derivation(e) => write!(f, "derivation rejected: {e:?}"),
            Self::DrvPathMismatch { claimed, computed } => {
                write!(f, "the derivation sent as '{claimed}' has the path '{computed}'")
            }
            Self::WrongSystem(s) => write!(f, "a '{s}' derivation cannot be built here (only {SYSTEM})"),
            Self::MissingInput(p) => write!(f, "input '{p}' was not sent"),
            Self::UnexpectedInput(p) => write!(f, "'{p}' was sent but is not an input of the derivation"),
            Self::IncompleteClosure { path, reference } => {
                write!(f, "input '{path}' refers to '{reference}', which was not sent")
            }
            Self::FixedInputMismatch { path, expected, got } => {
                write!(f, "fixed-output input '{path}' has hash {got}, but its derivation declares {expected}")
            }
            Self::FixedInputUnchecked { path, why } => write!(f, "fixed-output input '{path}' cannot be checked: {why}"),
            Self::StructuredAttrs => write!(f, "__json is not valid JSON"),
        }
    }
}

impl From<DrvError> for PlanError {
    fn from(e: DrvError) -> Self {
        PlanError::Derivation(e)
    }
}

/// Checks a build request and works out what it needs. `input_drvs` maps input `.drv` paths
/// to the bytes sent for them (each is checked against its path when it is first used).
pub fn plan(drv_path: &str, aterm: &[u8], input_drvs: &BTreeMap<String, Vec<u8>>) -> Result<Plan, PlanError> {
    let claimed = StorePath::parse(drv_path).map_err(DrvError::Path)?;
    let drv = derivation::parse(aterm)?;
    let name = claimed.name().strip_suffix(".drv").ok_or(DrvError::Unsupported("a .drv path must end in .drv"))?;
    let computed = derivation::drv_path(name, aterm, &drv)?;
    if computed != claimed {
        return Err(PlanError::DrvPathMismatch { claimed: drv_path.to_string(), computed: computed.to_path() });
    }
    if drv.platform != SYSTEM {
        return Err(PlanError::WrongSystem(drv.platform.clone()));
    }
    let lookup = |p: &str| input_drvs.get(p).cloned();
    let mut resolver = Resolver::new(&lookup);
    let outputs = resolver.check_output_paths(&drv)?;
    let fixed = drv.fixed_output()?;
    let mut roots: BTreeSet<String> = drv.input_srcs.clone();
    let mut fixed_inputs = BTreeMap::new();
    for (dep_path, used) in &drv.input_drvs {
        // check_output_paths resolved every input derivation, so each was checked against its
        // path already; parse it again for its outputs.
        let bytes = input_drvs.get(dep_path).ok_or_else(|| DrvError::MissingInput(dep_path.clone()))?;
        let dep = derivation::parse(bytes)?;
        let dep_fixed = dep.fixed_output()?;
        for o in used {
            let out = dep.outputs.get(o).ok_or_else(|| DrvError::MissingOutput { drv: dep_path.clone(), output: o.clone() })?;
            roots.insert(out.path.clone());
            if let Some(f) = &dep_fixed {
                fixed_inputs.insert(out.path.clone(), f.clone());
            }
        }
    }
    let structured = match drv.env.get("__json") {
        Some(text) => Some(json::parse(text).map_err(|_| PlanError::StructuredAttrs)?),
        None => None,
    };
    let drv_sha256 = Sha256::digest(aterm).into();
    Ok(Plan { drv_path: claimed, drv, drv_sha256, outputs, fixed, roots, fixed_inputs, structured })
}

/// What the agent learnt about one input while unpacking it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputInfo {
    pub nar_sha256: [u8; 32],
    pub nar_size: u64,
    /// References found by scanning its NAR for the hash parts of all inputs.
    pub references: BTreeSet<String>,
}

/// Checks that the inputs sent are exactly the closure of the plan's roots.
pub fn check_inputs(plan: &Plan, inputs: &BTreeMap<String, InputInfo>) -> Result<(), PlanError> {
    for r in &plan.roots {
        if !inputs.contains_key(r) {
            return Err(PlanError::MissingInput(r.clone()));
        }
    }
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<&String> = plan.roots.iter().collect();
    while let Some(p) = queue.pop_front() {
        if !seen.insert(p.clone()) {
            continue;
        }
        for r in &inputs[p].references {
            if !inputs.contains_key(r) {
                return Err(PlanError::IncompleteClosure { path: p.clone(), reference: r.clone() });
            }
            queue.push_back(r);
        }
    }
    if let Some(extra) = inputs.keys().find(|p| !seen.contains(*p)) {
        return Err(PlanError::UnexpectedInput(extra.clone()));
    }
    Ok(())
}

/// Checks a fixed-output path's contents against its declared hash: for `r:` the NAR's hash,
/// for flat the bytes of the single regular file (`file` is `None` when the NAR is not one).
pub fn check_fixed(path: &str, fixed: &FixedOutput, nar_sha256: &[u8; 32], file: Option<&[u8]>) -> Result<(), PlanError> {
    let got: Vec<u8> = match (fixed.method, fixed.hash.algo) {
        (Method::Recursive, Algo::Sha256) => nar_sha256.to_vec(),
        (Method::Recursive, _) => {
            return Err(PlanError::FixedInputUnchecked { path: path.into(), why: "only SHA-256 recursive hashes are checked" })
        }
        (Method::Flat, algo) => {
            let Some(bytes) = file else {
                return Err(PlanError::FixedInputUnchecked { path: path.into(), why: "a flat fixed output must be one regular file" });
            };
            match algo {
                Algo::Sha256 => Sha256::digest(bytes).to_vec(),
                Algo::Sha512 => Sha512::digest(bytes).to_vec(),
                Algo::Sha1 => return Err(PlanError::FixedInputUnchecked { path: path.into(), why: "SHA-1 is not checked" }),
            }
        }
    };
    if got != fixed.hash.bytes {
        return Err(PlanError::FixedInputMismatch {
            path: path.into(),
            expected: format!("{}:{}", fixed.hash.algo.name(), hex(&fixed.hash.bytes)),
            got: format!("{}:{}", fixed.hash.algo.name(), hex(&got)),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::hash::Hash;
    use alloc::vec;

    fn info(refs: &[&str]) -> InputInfo {
        InputInfo { nar_sha256: [0; 32], nar_size: 8, references: refs.iter().map(|s| s.to_string()).collect() }
    }

    fn plan_with_roots(roots: &[&str]) -> Plan {
        Plan {
            drv_path: StorePath::parse("/nix/store/00000000000000000000000000000000-x.drv").unwrap(),
            drv: Derivation::default(),
            drv_sha256: [0; 32],
            outputs: BTreeMap::new(),
            fixed: None,
            roots: roots.iter().map(|s| s.to_string()).collect(),
            fixed_inputs: BTreeMap::new(),
            structured: None,
        }
    }

    #[test]
    fn inputs_must_be_exactly_the_closure() {
        let p = plan_with_roots(&["/a"]);
        let mut inputs = BTreeMap::from([("/a".to_string(), info(&["/b", "/a"])), ("/b".to_string(), info(&[]))]);
        assert_eq!(check_inputs(&p, &inputs), Ok(()));
        inputs.insert("/c".into(), info(&[]));
        assert_eq!(check_inputs(&p, &inputs), Err(PlanError::UnexpectedInput("/c".into())));
        inputs.remove("/c");
        inputs.remove("/b");
        assert_eq!(check_inputs(&p, &inputs), Err(PlanError::IncompleteClosure { path: "/a".into(), reference: "/b".into() }));
        assert_eq!(check_inputs(&plan_with_roots(&["/z"]), &BTreeMap::new()), Err(PlanError::MissingInput("/z".into())));
    }

    #[test]
    fn fixed_inputs_are_checked_by_method() {
        let content = b"fixed content\n";
        let flat = FixedOutput { method: Method::Flat, hash: Hash { algo: Algo::Sha256, bytes: Sha256::digest(content).to_vec() } };
        assert_eq!(check_fixed("/p", &flat, &[0; 32], Some(content)), Ok(()));
        assert!(matches!(check_fixed("/p", &flat, &[0; 32], Some(b"other")), Err(PlanError::FixedInputMismatch { .. })));
        assert!(matches!(check_fixed("/p", &flat, &[0; 32], None), Err(PlanError::FixedInputUnchecked { .. })));
        let rec = FixedOutput { method: Method::Recursive, hash: Hash { algo: Algo::Sha256, bytes: vec![7; 32] } };
        assert_eq!(check_fixed("/p", &rec, &[7; 32], None), Ok(()));
        assert!(check_fixed("/p", &rec, &[8; 32], None).is_err());
    }
}
