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

#[cfg(test)]
mod tests {
    //! A two-derivation closure made with the agent's Nix core (equal to Nix 2.8 on the
    //! conformance corpus, tests/tests/nix_corpus.rs): `dep`, and `consumer` using its output.
    use super::*;
    use agent::nix::derivation::Output;
    use serde_json::json;

    const SRC: &str = "/nix/store/00000000000000000000000000000000-busybox";

    /// A derivation with its output paths filled in as Nix computes them; its path and bytes.
    fn finish(name: &str, mut d: Derivation, drvs: &BTreeMap<String, Vec<u8>>) -> (String, Derivation, Vec<u8>) {
        d.outputs.insert("out".into(), Output { path: String::new(), hash_algo: String::new(), hash: String::new() });
        d.env.insert("name".into(), name.into());
        d.env.insert("out".into(), String::new());
        let lookup = |p: &str| drvs.get(p).cloned();
        let out = Resolver::new(&lookup).output_paths(&d).unwrap()["out"].to_path();
        d.outputs.get_mut("out").unwrap().path = out.clone();
        d.env.insert("out".into(), out);
        let bytes = derivation::print(&d).into_bytes();
        (derivation::drv_path(name, &bytes, &d).unwrap().to_path(), d, bytes)
    }

    struct Case {
        drvs: BTreeMap<String, Vec<u8>>,
        consumer: String,
        consumer_out: String,
        dep_out: String,
        statement: serde_json::Value,
    }

    fn case() -> Case {
        let base = Derivation { platform: "x86_64-linux".into(), builder: format!("{SRC}/bin/busybox"), input_srcs: [SRC.to_string()].into(), ..Derivation::default() };
        let mut drvs = BTreeMap::new();
        let (dep_path, dep, dep_bytes) = finish("dep", base.clone(), &drvs);
        drvs.insert(dep_path.clone(), dep_bytes);
        let mut c = base.clone();
        c.input_drvs.insert(dep_path, ["out".to_string()].into());
        let (consumer, c, c_bytes) = finish("consumer", c, &drvs);
        drvs.insert(consumer.clone(), c_bytes);
        let dep_out = dep.outputs["out"].path.clone();
        let consumer_out = c.outputs["out"].path.clone();
        // What the build hook sends: no input derivations, the inputs' closure as sources.
        let resolved = Derivation { input_drvs: BTreeMap::new(), input_srcs: [SRC.to_string(), dep_out.clone()].into(), ..c };
        let digest = hex::encode(Sha256::digest(derivation::print(&resolved).as_bytes()));
        let statement = json!({
            "subject": [{"name": consumer_out, "digest": {"sha256": "00"}, "annotations": {"output": "out", "references": []}}],
            "predicate": {"buildDefinition": {
                "externalParameters": {"derivation": consumer, "resolvedDerivationDigest": {"sha256": digest}},
                "resolvedDependencies": [
                    {"name": SRC, "digest": {"sha256": "00"}, "annotations": {"references": []}},
                    {"name": dep_out, "digest": {"sha256": "00"}, "annotations": {"references": [SRC]}},
                ]}}
        });
        Case { drvs, consumer, consumer_out, dep_out, statement }
    }

    fn check(c: &Case, st: &serde_json::Value) -> Result<DerivationCheck, Rejection> {
        check_derivation(st, &|p| c.drvs.get(p).cloned())
    }

    #[test]
    fn a_resolved_statement_is_re_resolved_from_the_drv_closure() {
        let c = case();
        assert_eq!(check(&c, &c.statement), Ok(DerivationCheck::Resolved));
        // Without the .drv: refused, saying how to get it.
        let none = check_derivation(&c.statement, &|_| None).unwrap_err();
        assert!(none.actual.contains("nix-instantiate"), "{none}");
        // Another digest (the builder built something else).
        let mut st = c.statement.clone();
        st["predicate"]["buildDefinition"]["externalParameters"]["resolvedDerivationDigest"]["sha256"] = json!("ab".repeat(32));
        assert!(check(&c, &st).unwrap_err().actual.starts_with("re-resolved here"));
        // A subject that is not the derivation's output.
        let mut st = c.statement.clone();
        st["subject"][0]["name"] = json!(c.dep_out);
        assert_eq!(check(&c, &st).unwrap_err().check, "outputs");
        // An input more, or one missing.
        let mut st = c.statement.clone();
        st["predicate"]["buildDefinition"]["resolvedDependencies"].as_array_mut().unwrap().push(json!({"name": "/nix/store/11111111111111111111111111111111-extra", "annotations": {"references": []}}));
        assert_eq!(check(&c, &st).unwrap_err().check, "inputs");
        let mut st = c.statement.clone();
        st["predicate"]["buildDefinition"]["resolvedDependencies"].as_array_mut().unwrap().remove(0);
        assert_eq!(check(&c, &st).unwrap_err().check, "inputs");
        // The .drv's bytes at that path are not the .drv (the local store lies).
        let mut drvs = c.drvs.clone();
        let dep_path = drvs.keys().find(|k| **k != c.consumer).unwrap().clone();
        let dep_bytes = drvs[&dep_path].clone();
        drvs.insert(c.consumer.clone(), dep_bytes);
        assert_eq!(check_derivation(&c.statement, &|p| drvs.get(p).cloned()).unwrap_err().check, "derivation");
        assert!(c.consumer_out.ends_with("-consumer"));
    }

    #[test]
    fn a_full_statement_stands_alone_and_matches_its_drv_when_present() {
        let c = case();
        let bytes = c.drvs[&c.consumer].clone();
        let mut st = c.statement.clone();
        st["predicate"]["buildDefinition"]["externalParameters"] = json!({"derivation": c.consumer, "derivationDigest": {"sha256": hex::encode(Sha256::digest(&bytes))}});
        assert_eq!(check(&c, &st), Ok(DerivationCheck::Full { drv_compared: true }));
        assert_eq!(check_derivation(&st, &|_| None), Ok(DerivationCheck::Full { drv_compared: false }));
        st["predicate"]["buildDefinition"]["externalParameters"]["derivationDigest"]["sha256"] = json!("cd".repeat(32));
        assert_eq!(check(&c, &st).unwrap_err().check, "derivation");
        // Both digests, or neither: refused.
        st["predicate"]["buildDefinition"]["externalParameters"]["resolvedDerivationDigest"] = json!({"sha256": "00"});
        assert_eq!(check(&c, &st).unwrap_err().check, "statement");
    }
}
