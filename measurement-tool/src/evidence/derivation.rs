//! What a statement says about its derivation, checked against the `.drv` files a verifier holds.
//!
//! A statement from a full build (`loader build`) carries `derivationDigest`, the SHA-256 of the
//! `.drv` ATerm: the agent itself recomputed the `.drv` path and every output path from the
//! `.drv` closure it was sent, so the statement stands on its own; with the `.drv` at hand the
//! verifier also compares its digest.
//!
//! A statement from a remote build (`loader --serve`, what a Nix 2.8 build hook sends) may be
//! about a *resolved* derivation: `resolvedDerivationDigest`, the SHA-256 of the derivation
//! with its input derivations removed and its input sources replaced by the closure of all its
//! inputs. The agent could not recompute the `.drv` path or the output paths (it was not sent
//! the `.drv` closure), so the verifier does, from the `.drv` closure it holds
//! ([`check_derivation`]):
//!
//! 1. the `.drv` the statement names, read from the verifier's store, has that path (its ATerm
//!    hashed as Nix names `.drv` files), and its output paths are the ones Nix computes
//!    (`hashDerivationModulo` over its input derivations, each checked against its path);
//! 2. every subject is one of those outputs, at the path computed for it;
//! 3. the resolution is redone: the roots are the `.drv`'s input sources and the outputs it uses
//!    of its input derivations; their closure under the references the agent recorded for its
//!    inputs must be exactly the inputs the statement lists; the `.drv` with no input
//!    derivations and that closure as input sources, printed as an ATerm, must have the digest
//!    the statement carries.
use super::Rejection;
use agent::nix::derivation::{self, Derivation, Resolver};
use agent::nix::store_path::StorePath;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DerivationCheck {
    /// A full build's statement; `drv_compared`: the `.drv` was at hand and has the digest.
    Full { drv_compared: bool },
    /// A resolved derivation, re-resolved from the `.drv` closure: digest and outputs equal.
    Resolved,
}

fn reject(check: &'static str, expected: impl Into<String>, actual: impl Into<String>) -> Rejection {
    Rejection::new(check, expected, actual)
}

fn digest_field(v: &serde_json::Value) -> Option<String> {
    v["sha256"].as_str().map(str::to_string)
}

/// Checks the statement's derivation against the `.drv` files `read` gives (by store path;
/// `None` when the verifier's store does not have it).
pub fn check_derivation(statement: &serde_json::Value, read: &dyn Fn(&str) -> Option<Vec<u8>>) -> Result<DerivationCheck, Rejection> {
    let params = &statement["predicate"]["buildDefinition"]["externalParameters"];
    let drv_path = params["derivation"].as_str().ok_or_else(|| reject("statement", "the derivation's path", "none"))?;
    match (digest_field(&params["derivationDigest"]), digest_field(&params["resolvedDerivationDigest"])) {
        (Some(d), None) => {
            let Some(bytes) = read(drv_path) else { return Ok(DerivationCheck::Full { drv_compared: false }) };
            let got = hex::encode(Sha256::digest(&bytes));
            if got != d {
                return Err(reject("derivation", format!("{drv_path} with ATerm SHA-256 {d} (the statement's)"), format!("the local {drv_path} has SHA-256 {got}")));
            }
            Ok(DerivationCheck::Full { drv_compared: true })
        }
        (None, Some(d)) => check_resolved(statement, drv_path, &d, read).map(|()| DerivationCheck::Resolved),
        _ => Err(reject("statement", "one of derivationDigest and resolvedDerivationDigest", "neither or both")),
    }
}

fn check_resolved(statement: &serde_json::Value, drv_path: &str, digest: &str, read: &dyn Fn(&str) -> Option<Vec<u8>>) -> Result<(), Rejection> {
    let drv_err = |e: derivation::DrvError| reject("derivation", format!("a valid .drv closure for {drv_path}"), format!("{e:?}"));
    // 1. The `.drv`, at its path, and its output paths.
    let bytes = read(drv_path).ok_or_else(|| {
        reject("derivation", format!("{drv_path} in the local store: the statement is about a resolved derivation (a remote build), which only the .drv closure can tie to its outputs"), "not there (instantiate the expression, e.g. nix-instantiate, and check again)")
    })?;
    let d = derivation::parse(&bytes).map_err(drv_err)?;
    let sp = StorePath::parse(drv_path).map_err(|e| reject("derivation", "a store path", format!("{drv_path}: {e:?}")))?;
    let name = sp.name().strip_suffix(".drv").ok_or_else(|| reject("derivation", "a .drv path", drv_path))?;
    let computed = derivation::drv_path(name, &bytes, &d).map_err(drv_err)?.to_path();
    if computed != drv_path {
        return Err(reject("derivation", drv_path, format!("the local file's ATerm has the path {computed}")));
    }
    let lookup = |p: &str| read(p);
    let mut resolver = Resolver::new(&lookup);
    resolver.resolve_inputs(&d).map_err(drv_err)?;
    let outputs = resolver.check_output_paths(&d).map_err(drv_err)?;
    // 2. The subjects are those outputs.
    for s in statement["subject"].as_array().ok_or_else(|| reject("statement", "subjects", "none"))? {
        let path = s["name"].as_str().unwrap_or_default();
        let output = s["annotations"]["output"].as_str().unwrap_or_default();
        match outputs.get(output) {
            Some(p) if p.to_path() == path => {}
            Some(p) => return Err(reject("outputs", format!("output '{output}' of {drv_path} at {}", p.to_path()), path)),
            None => return Err(reject("outputs", format!("an output of {drv_path}"), format!("'{output}' ({path})"))),
        }
    }
    // 3. The resolution, redone.
    let mut roots: BTreeSet<String> = d.input_srcs.clone();
    for (dep, used) in &d.input_drvs {
        let (_, dep_drv) = resolver.input(dep).map_err(drv_err)?;
        for o in used {
            let out = dep_drv.outputs.get(o).ok_or_else(|| reject("derivation", format!("output '{o}' of {dep}"), "none"))?;
            roots.insert(out.path.clone());
        }
    }
    let mut refs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in statement["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().ok_or_else(|| reject("statement", "inputs", "none"))? {
        let path = i["name"].as_str().unwrap_or_default().to_string();
        let r = i["annotations"]["references"].as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default();
        refs.insert(path, r);
    }
    let mut closure = BTreeSet::new();
    let mut queue: VecDeque<String> = roots.iter().cloned().collect();
    while let Some(p) = queue.pop_front() {
        if !closure.insert(p.clone()) {
            continue;
        }
        let r = refs.get(&p).ok_or_else(|| reject("inputs", format!("{p} (an input of {drv_path}) among the statement's inputs"), "missing"))?;
        queue.extend(r.iter().cloned());
    }
    let listed: BTreeSet<String> = refs.keys().cloned().collect();
    if listed != closure {
        let extra: Vec<&String> = listed.difference(&closure).collect();
        return Err(reject("inputs", format!("exactly the closure of {drv_path}'s inputs"), format!("also {extra:?}")));
    }
    let resolved = Derivation { input_drvs: BTreeMap::new(), input_srcs: if d.input_drvs.is_empty() { d.input_srcs.clone() } else { closure }, ..d };
    let got = hex::encode(Sha256::digest(derivation::print(&resolved).as_bytes()));
    if got != digest {
        return Err(reject("derivation", format!("{drv_path} resolved to an ATerm with SHA-256 {digest} (the statement's)"), format!("re-resolved here: {got}")));
    }
    Ok(())
}
