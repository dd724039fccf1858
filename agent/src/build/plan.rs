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
use crate::nix::hash::{hex, Hash, Hasher};
use crate::nix::store_path::{Method, PathError, StorePath};
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use crate::sha256::Sha256;

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
    /// A resolved derivation ([`plan_resolved`]): `drv_sha256` is the resolved ATerm's, and the
    /// `.drv` path and input-addressed output paths are the client's, not recomputed here.
    pub resolved: bool,
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
    /// A flat fixed output that is not a non-executable regular file.
    FlatNotRegular(String),
    /// A requested input path that is not a store path.
    BadInputPath(String, PathError),
    /// Two input paths with the same hash part.
    DuplicateInput(String),
    /// An input at (the hash part of) one of the derivation's own output paths.
    InputAtOutputPath(String),
    /// `__json` that does not parse.
    StructuredAttrs,
    /// A resolved derivation that still has input derivations.
    ResolvedWithInputDrvs,
    /// A resolved derivation's output path whose name is not the one Nix gives that output.
    ResolvedOutputName { output: String, path: String, expected: String },
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
            // Nix 2.8's words (`LocalDerivationGoal::registerOutputs`).
            Self::FlatNotRegular(p) => write!(
                f,
                "output path '{p}' should be a non-executable regular file since recursive hashing is not enabled (outputHashMode=flat)"
            ),
            Self::BadInputPath(p, e) => write!(f, "'{p}' is not a store path: {e:?}"),
            Self::DuplicateInput(p) => write!(f, "input '{p}' sent twice"),
            Self::InputAtOutputPath(p) => write!(f, "input '{p}' has the hash part of one of the derivation's own outputs"),
            Self::StructuredAttrs => write!(f, "__json is not valid JSON"),
            Self::ResolvedWithInputDrvs => write!(f, "a resolved derivation has no input derivations"),
            Self::ResolvedOutputName { output, path, expected } => {
                write!(f, "output '{output}' of the resolved derivation is '{path}', whose name is not '{expected}'")
            }
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
    // Every input derivation, transitively, checked against its path and its declared output
    // paths — for a fixed-output derivation too, whose own hash does not need them.
    resolver.resolve_inputs(&drv)?;
    let outputs = resolver.check_output_paths(&drv)?;
    let fixed = drv.fixed_output()?;
    let mut roots: BTreeSet<String> = drv.input_srcs.clone();
    let mut fixed_inputs = BTreeMap::new();
    for (dep_path, used) in &drv.input_drvs {
        let (_, dep) = resolver.input(dep_path)?;
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
    Ok(Plan { drv_path: claimed, drv, drv_sha256, outputs, fixed, roots, fixed_inputs, structured, resolved: false })
}

/// Checks a *resolved* build request: what a Nix 2.8 build hook sends a remote builder
/// (`cmdBuildDerivation`) for a derivation with input derivations — the derivation with its
/// input derivations removed and its input sources replaced by the closure of all its inputs.
/// The original `.drv` and its input derivations are not sent, so the `.drv` path and the
/// output paths of an input-addressed derivation cannot be recomputed here; the statement
/// names the `.drv` path as claimed, with the SHA-256 of the resolved ATerm
/// (`resolvedDerivationDigest`), and a verifier holding the `.drv` closure re-resolves it and
/// compares (docs/build.md, "Resolved derivations"). What is still checked: the ATerm parses
/// strictly and has no input derivations, the platform, each output path is a store path with
/// the name Nix gives that output, a fixed output's path is recomputed from its declared hash,
/// and (after the NARs arrive) the inputs are exactly the closure of the input sources.
pub fn plan_resolved(drv_path: &str, aterm: &[u8]) -> Result<Plan, PlanError> {
    let claimed = StorePath::parse(drv_path).map_err(DrvError::Path)?;
    let drv = derivation::parse(aterm)?;
    let name = claimed.name().strip_suffix(".drv").ok_or(DrvError::Unsupported("a .drv path must end in .drv"))?;
    if !drv.input_drvs.is_empty() {
        return Err(PlanError::ResolvedWithInputDrvs);
    }
    if drv.platform != SYSTEM {
        return Err(PlanError::WrongSystem(drv.platform.clone()));
    }
    let fixed = drv.fixed_output()?;
    let outputs = if fixed.is_some() {
        // A fixed output's path depends only on its declared hash and name.
        let lookup = |_: &str| None;
        Resolver::new(&lookup).check_output_paths(&drv)?
    } else {
        let mut outputs = BTreeMap::new();
        for (o, out) in &drv.outputs {
            let path = StorePath::parse(&out.path).map_err(DrvError::Path)?;
            let expected = crate::nix::store_path::output_path_name(name, o);
            if path.name() != expected {
                return Err(PlanError::ResolvedOutputName { output: o.clone(), path: out.path.clone(), expected });
            }
            outputs.insert(o.clone(), path);
        }
        outputs
    };
    let structured = match drv.env.get("__json") {
        Some(text) => Some(json::parse(text).map_err(|_| PlanError::StructuredAttrs)?),
        None => None,
    };
    let drv_sha256 = Sha256::digest(aterm).into();
    let roots = drv.input_srcs.clone();
    Ok(Plan { drv_path: claimed, drv, drv_sha256, outputs, fixed, roots, fixed_inputs: BTreeMap::new(), structured, resolved: true })
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

/// A fixed output's contents, as the agent holds them.
#[derive(Clone, Copy, Debug)]
pub struct FixedContent<'a> {
    /// The hash of the path's NAR with the declared algorithm (needed for `r:`).
    pub nar_hash: Option<&'a Hash>,
    /// When the path is one regular file: its bytes and whether it is executable.
    pub file: Option<(&'a [u8], bool)>,
}

/// Checks a fixed-output path's contents against its declared hash, as Nix 2.8 does: for `r:`
/// the NAR's hash, for flat the bytes of the path, which must be a non-executable regular file
/// (`registerOutputs`). Every algorithm Nix accepts is checked (md5, sha1, sha256, sha512); what
/// attests the contents is the statement's own SHA-256 of the NAR, the declared hash is only
/// what Nix would compare.
pub fn check_fixed(path: &str, fixed: &FixedOutput, content: FixedContent<'_>) -> Result<(), PlanError> {
    let algo = fixed.hash.algo;
    let got: Hash = match fixed.method {
        Method::Recursive => match content.nar_hash {
            Some(h) if h.algo == algo => h.clone(),
            _ => return Err(PlanError::FixedInputUnchecked { path: path.into(), why: "no NAR hash with the declared algorithm" }),
        },
        Method::Flat => match content.file {
            Some((bytes, false)) => Hasher::digest(algo, bytes),
            _ => return Err(PlanError::FlatNotRegular(path.into())),
        },
    };
    if got != fixed.hash {
        return Err(PlanError::FixedInputMismatch {
            path: path.into(),
            expected: format!("{}:{}", algo.name(), hex(&fixed.hash.bytes)),
            got: format!("{}:{}", algo.name(), hex(&got.bytes)),
        });
    }
    Ok(())
}

/// Checks the list of input paths a request names, before any of their bytes are read: each is
/// a store path, no two share a hash part, and none has the hash part of one of the
/// derivation's own outputs (an "input" there would pre-create the output the builder is to
/// make, and stand for it in the reference scan). Returns hash part → path.
pub fn check_input_paths(plan: &Plan, paths: &[String]) -> Result<BTreeMap<String, String>, PlanError> {
    let outputs: BTreeSet<&str> = crate::btree::set(plan.outputs.values().map(|p| p.hash_part()));
    let mut by_hash = BTreeMap::new();
    for p in paths {
        let sp = StorePath::parse(p).map_err(|e| PlanError::BadInputPath(p.clone(), e))?;
        if outputs.contains(sp.hash_part()) {
            return Err(PlanError::InputAtOutputPath(p.clone()));
        }
        if by_hash.insert(sp.hash_part().to_string(), p.clone()).is_some() {
            return Err(PlanError::DuplicateInput(p.clone()));
        }
    }
    Ok(by_hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::hash::Algo;

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
            resolved: false,
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
    fn fixed_inputs_are_checked_by_method_and_algorithm() {
        let content = b"fixed content\n";
        let file = |bytes: &'static [u8], x: bool| FixedContent { nar_hash: None, file: Some((bytes, x)) };
        for algo in [Algo::Md5, Algo::Sha1, Algo::Sha256, Algo::Sha512] {
            let flat = FixedOutput { method: Method::Flat, hash: Hasher::digest(algo, content) };
            assert_eq!(check_fixed("/p", &flat, file(content, false)), Ok(()), "{algo:?}");
            assert!(matches!(check_fixed("/p", &flat, file(b"other", false)), Err(PlanError::FixedInputMismatch { .. })));
            // Nix 2.8 refuses an executable flat output, and one that is not a regular file.
            assert_eq!(check_fixed("/p", &flat, file(content, true)), Err(PlanError::FlatNotRegular("/p".into())));
            assert_eq!(check_fixed("/p", &flat, FixedContent { nar_hash: None, file: None }), Err(PlanError::FlatNotRegular("/p".into())));
            let nar = Hasher::digest(algo, b"a NAR");
            let rec = FixedOutput { method: Method::Recursive, hash: nar.clone() };
            assert_eq!(check_fixed("/p", &rec, FixedContent { nar_hash: Some(&nar), file: None }), Ok(()), "{algo:?}");
            let other = Hasher::digest(algo, b"another NAR");
            assert!(matches!(check_fixed("/p", &rec, FixedContent { nar_hash: Some(&other), file: None }), Err(PlanError::FixedInputMismatch { .. })));
        }
        // A NAR hash of another algorithm is never compared with the declared one.
        let rec = FixedOutput { method: Method::Recursive, hash: Hasher::digest(Algo::Md5, b"x") };
        let sha = Hash::sha256(b"x");
        assert!(matches!(check_fixed("/p", &rec, FixedContent { nar_hash: Some(&sha), file: None }), Err(PlanError::FixedInputUnchecked { .. })));
    }

    #[test]
    fn input_paths_are_store_paths_unique_and_never_an_output() {
        let mut p = plan_with_roots(&[]);
        let out = StorePath::parse("/nix/store/m8rz9ssncy10n52kh11fdd71jwrpiwhj-x").unwrap();
        p.outputs.insert("out".into(), out);
        let dep = "/nix/store/i7xam6944gbbbcxcgxpsmk5y54i71mfz-dep".to_string();
        let m = check_input_paths(&p, core::slice::from_ref(&dep)).unwrap();
        assert_eq!(m.get("i7xam6944gbbbcxcgxpsmk5y54i71mfz"), Some(&dep));
        for at_output in ["/nix/store/m8rz9ssncy10n52kh11fdd71jwrpiwhj-x", "/nix/store/m8rz9ssncy10n52kh11fdd71jwrpiwhj-other"] {
            assert_eq!(check_input_paths(&p, &[dep.clone(), at_output.into()]), Err(PlanError::InputAtOutputPath(at_output.into())));
        }
        let twin = "/nix/store/i7xam6944gbbbcxcgxpsmk5y54i71mfz-twin".to_string();
        assert_eq!(check_input_paths(&p, &[dep.clone(), twin.clone()]), Err(PlanError::DuplicateInput(twin)));
        assert!(matches!(check_input_paths(&p, &["/tmp/x".into()]), Err(PlanError::BadInputPath(..))));
    }

    /// A derivation with no inputs whose output path is the one Nix computes; its `.drv` path
    /// and bytes.
    fn leaf(name: &str) -> (String, Vec<u8>) {
        let mut d = Derivation { platform: SYSTEM.into(), builder: "/bin/sh".into(), ..Derivation::default() };
        d.outputs.insert("out".into(), derivation::Output { path: String::new(), hash_algo: String::new(), hash: String::new() });
        d.env.insert("name".into(), name.into());
        d.env.insert("out".into(), String::new());
        let none = |_: &str| None;
        let out = Resolver::new(&none).output_paths(&d).unwrap()["out"].to_path();
        d.outputs.get_mut("out").unwrap().path = out.clone();
        d.env.insert("out".into(), out);
        let bytes = derivation::print(&d).into_bytes();
        (derivation::drv_path(name, &bytes, &d).unwrap().to_path(), bytes)
    }

    #[test]
    fn a_fixed_output_derivations_own_inputs_are_checked_against_their_paths() {
        let (dep_path, dep) = leaf("dep");
        let (_, other) = leaf("other");
        let hash = Hash::sha256(b"content");
        let out = crate::nix::store_path::make_fixed_output_path(Method::Flat, &hash, "fod").unwrap().to_path();
        let mut d = Derivation { platform: SYSTEM.into(), builder: "/bin/sh".into(), ..Derivation::default() };
        d.outputs.insert("out".into(), derivation::Output { path: out.clone(), hash_algo: "sha256".into(), hash: hash.to_hex() });
        d.input_drvs.insert(dep_path.clone(), BTreeSet::from([String::from("out")]));
        d.env.insert("name".into(), "fod".into());
        d.env.insert("out".into(), out);
        let aterm = derivation::print(&d).into_bytes();
        let path = derivation::drv_path("fod", &aterm, &d).unwrap().to_path();
        let honest = BTreeMap::from([(dep_path.clone(), dep)]);
        let p = plan(&path, &aterm, &honest).unwrap();
        assert!(p.fixed.is_some() && p.roots.len() == 1);
        // Another derivation's bytes sent for the input: its outputs would become the roots.
        let forged = BTreeMap::from([(dep_path.clone(), other)]);
        assert_eq!(plan(&path, &aterm, &forged).unwrap_err(), PlanError::Derivation(DrvError::InputMismatch(dep_path)));
    }

    /// A resolved request: the ATerm's own outputs are taken as named (by the right names),
    /// a fixed output's path is recomputed, input derivations are refused, the roots are the
    /// input sources.
    #[test]
    fn a_resolved_derivation_is_checked_for_what_its_bytes_can_show() {
        let (dep_path, _) = leaf("dep");
        let claimed = "/nix/store/00000000000000000000000000000000-consumer.drv";
        let out = "/nix/store/11111111111111111111111111111111-consumer";
        let mut d = Derivation { platform: SYSTEM.into(), builder: "/bin/sh".into(), ..Derivation::default() };
        d.outputs.insert("out".into(), derivation::Output { path: out.into(), hash_algo: String::new(), hash: String::new() });
        d.input_srcs.insert("/nix/store/22222222222222222222222222222222-dep".into());
        d.env.insert("name".into(), "consumer".into());
        d.env.insert("out".into(), out.into());
        let aterm = derivation::print(&d).into_bytes();
        let p = plan_resolved(claimed, &aterm).unwrap();
        assert!(p.resolved && p.fixed_inputs.is_empty());
        assert_eq!(p.roots, d.input_srcs);
        assert_eq!(p.outputs["out"].to_path(), out);
        assert_eq!(p.drv_sha256, <[u8; 32]>::from(Sha256::digest(&aterm)));
        // The full check refuses the same bytes: the path is not theirs.
        assert!(matches!(plan(claimed, &aterm, &BTreeMap::new()), Err(PlanError::DrvPathMismatch { .. })));
        // An output under another name.
        let mut wrong = d.clone();
        wrong.outputs.get_mut("out").unwrap().path = "/nix/store/11111111111111111111111111111111-other".into();
        let e = plan_resolved(claimed, derivation::print(&wrong).as_bytes()).unwrap_err();
        assert!(matches!(e, PlanError::ResolvedOutputName { ref expected, .. } if expected == "consumer"), "{e:?}");
        // Input derivations left in.
        let mut with_drvs = d.clone();
        with_drvs.input_drvs.insert(dep_path, BTreeSet::from([String::from("out")]));
        assert_eq!(plan_resolved(claimed, derivation::print(&with_drvs).as_bytes()).unwrap_err(), PlanError::ResolvedWithInputDrvs);
        // A fixed output at a path its hash does not give.
        let mut fod = d.clone();
        let hash = Hash::sha256(b"content");
        fod.outputs.insert("out".into(), derivation::Output { path: out.into(), hash_algo: "sha256".into(), hash: hash.to_hex() });
        assert!(matches!(plan_resolved(claimed, derivation::print(&fod).as_bytes()), Err(PlanError::Derivation(DrvError::WrongOutputPath { .. }))));
        let right = crate::nix::store_path::make_fixed_output_path(Method::Flat, &hash, "consumer").unwrap().to_path();
        fod.outputs.get_mut("out").unwrap().path = right.clone();
        assert_eq!(plan_resolved(claimed, derivation::print(&fod).as_bytes()).unwrap().outputs["out"].to_path(), right);
    }
}
