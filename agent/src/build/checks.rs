//! Nix's output checks, as Nix 2.8 applies them after a build
//! (`local-derivation-goal.cc: LocalDerivationGoal::checkOutputs`): `allowedReferences`,
//! `allowedRequisites`, `disallowedReferences`, `disallowedRequisites`, and under structured
//! attributes `outputChecks.<output>.{maxSize, maxClosureSize, …}`.
//!
//! Every reference set used here was computed by the agent: outputs by scanning their NARs,
//! inputs by scanning the input NARs it unpacked. Nothing comes from the host.
use super::json::Json;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// What the agent knows about one store path: its NAR size and its references.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathInfo {
    pub nar_size: u64,
    pub references: BTreeSet<String>,
}

/// A failed check, worded as Nix words it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckError {
    /// `output '…' is not allowed to refer to the following paths: …`
    IllegalReferences { output: String, paths: Vec<String> },
    /// `derivation contains an illegal reference specifier '…'`
    IllegalSpecifier(String),
    /// `path '…' is too large at N bytes; limit is M bytes`
    TooLarge { path: String, size: u64, limit: u64 },
    /// `closure of path '…' is too large at N bytes; limit is M bytes`
    ClosureTooLarge { path: String, size: u64, limit: u64 },
    /// A path in a closure the agent holds no information about (an incomplete input closure).
    UnknownPath(String),
    /// An `outputChecks` attribute of the wrong type.
    BadAttribute(&'static str),
}

impl core::fmt::Display for CheckError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::IllegalReferences { output, paths } => {
                write!(f, "output '{output}' is not allowed to refer to the following paths:")?;
                for p in paths {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
            Self::IllegalSpecifier(s) => write!(f, "derivation contains an illegal reference specifier '{s}'"),
            Self::TooLarge { path, size, limit } => {
                write!(f, "path '{path}' is too large at {size} bytes; limit is {limit} bytes")
            }
            Self::ClosureTooLarge { path, size, limit } => {
                write!(f, "closure of path '{path}' is too large at {size} bytes; limit is {limit} bytes")
            }
            Self::UnknownPath(p) => write!(f, "no information about '{p}' (incomplete input closure)"),
            Self::BadAttribute(a) => write!(f, "attribute '{a}' of 'outputChecks' has the wrong type"),
        }
    }
}

#[derive(Default)]
struct Checks {
    ignore_self_refs: bool,
    max_size: Option<u64>,
    max_closure_size: Option<u64>,
    allowed_references: Option<Vec<String>>,
    allowed_requisites: Option<Vec<String>>,
    disallowed_references: Option<Vec<String>>,
    disallowed_requisites: Option<Vec<String>>,
}

/// Whether `s` has the shape of a store path (`isStorePath`): `/nix/store/<32 nix32>-<name>`.
fn is_store_path(s: &str) -> bool {
    let Some(base) = s.strip_prefix("/nix/store/") else { return false };
    let b = base.as_bytes();
    b.len() > 33
        && b[32] == b'-'
        && b[..32].iter().all(|c| b"0123456789abcdfghijklmnpqrsvwxyz".contains(c))
        && b[33..].iter().all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(c))
        && !base.contains('/')
}

/// Applies the derivation's output checks.
///
/// `outputs`: output name → (path, info) for every output built; `inputs`: what the agent knows
/// of every input path; `env`: the derivation's environment; `structured`: its parsed `__json`.
pub fn check_outputs(
    outputs: &BTreeMap<String, (String, PathInfo)>,
    inputs: &BTreeMap<String, PathInfo>,
    env: &BTreeMap<String, String>,
    structured: Option<&Json>,
) -> Result<(), CheckError> {
    let by_path: BTreeMap<&str, &PathInfo> = crate::btree::map(outputs.values().map(|(p, i)| (p.as_str(), i)));
    let closure = |start: &str| -> Result<(BTreeSet<String>, u64), CheckError> {
        let mut done = BTreeSet::new();
        let mut size = 0u64;
        let mut left = VecDeque::from([String::from(start)]);
        while let Some(p) = left.pop_front() {
            if done.contains(&p) {
                continue;
            }
            let info = by_path.get(p.as_str()).copied().or_else(|| inputs.get(&p)).ok_or_else(|| CheckError::UnknownPath(p.clone()))?;
            size = size.saturating_add(info.nar_size);
            left.extend(info.references.iter().cloned());
            done.insert(p);
        }
        Ok((done, size))
    };

    for (name, (path, info)) in outputs {
        let checks = match structured {
            Some(Json::Object(attrs)) => {
                let Some(Json::Object(per_output)) = attrs.get("outputChecks") else { continue };
                let Some(Json::Object(c)) = per_output.get(name) else { continue };
                let num = |k: &'static str| match c.get(k) {
                    None => Ok(None),
                    Some(Json::Int(n)) if *n >= 0 => Ok(Some(*n as u64)),
                    Some(_) => Err(CheckError::BadAttribute(k)),
                };
                let list = |k: &'static str| match c.get(k) {
                    None => Ok(None),
                    Some(Json::Array(items)) => items
                        .iter()
                        .map(|v| match v {
                            Json::String(s) => Ok(s.clone()),
                            _ => Err(CheckError::BadAttribute(k)),
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map(Some),
                    Some(_) => Err(CheckError::BadAttribute(k)),
                };
                Checks {
                    ignore_self_refs: false,
                    max_size: num("maxSize")?,
                    max_closure_size: num("maxClosureSize")?,
                    allowed_references: list("allowedReferences")?,
                    allowed_requisites: list("allowedRequisites")?,
                    disallowed_references: list("disallowedReferences")?,
                    disallowed_requisites: list("disallowedRequisites")?,
                }
            }
            _ => {
                // getStringsAttr: the attribute split on whitespace.
                let strings = |k: &str| env.get(k).map(|v| v.split([' ', '\t', '\n', '\r']).filter(|w| !w.is_empty()).map(String::from).collect());
                Checks {
                    ignore_self_refs: true,
                    allowed_references: strings("allowedReferences"),
                    allowed_requisites: strings("allowedRequisites"),
                    disallowed_references: strings("disallowedReferences"),
                    disallowed_requisites: strings("disallowedRequisites"),
                    ..Checks::default()
                }
            }
        };

        if let Some(limit) = checks.max_size {
            if info.nar_size > limit {
                return Err(CheckError::TooLarge { path: path.clone(), size: info.nar_size, limit });
            }
        }
        if let Some(limit) = checks.max_closure_size {
            let size = closure(path)?.1;
            if size > limit {
                return Err(CheckError::ClosureTooLarge { path: path.clone(), size, limit });
            }
        }
        let check_refs = |value: &Option<Vec<String>>, allowed: bool, recursive: bool| -> Result<(), CheckError> {
            let Some(value) = value else { return Ok(()) };
            let mut spec = BTreeSet::new();
            for s in value {
                if is_store_path(s) {
                    spec.insert(s.clone());
                } else if let Some((p, _)) = outputs.get(s) {
                    spec.insert(p.clone());
                } else {
                    return Err(CheckError::IllegalSpecifier(s.clone()));
                }
            }
            let mut used = if recursive { closure(path)?.0 } else { info.references.clone() };
            if recursive && checks.ignore_self_refs {
                used.remove(path);
            }
            let bad: Vec<String> = used.into_iter().filter(|p| spec.contains(p) != allowed).collect();
            if bad.is_empty() {
                Ok(())
            } else {
                Err(CheckError::IllegalReferences { output: path.clone(), paths: bad })
            }
        };
        check_refs(&checks.allowed_references, true, false)?;
        check_refs(&checks.allowed_requisites, true, true)?;
        check_refs(&checks.disallowed_references, false, false)?;
        check_refs(&checks.disallowed_requisites, false, true)?;
    }
    Ok(())
}

/// The message Nix prints for a failed check (for the Error frame and the log).
pub fn describe(e: &CheckError) -> String {
    format!("{e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const DEP: &str = "/nix/store/i7xam6944gbbbcxcgxpsmk5y54i71mfz-dep";
    const LIB: &str = "/nix/store/00000000000000000000000000000000-lib";
    const OUT: &str = "/nix/store/m8rz9ssncy10n52kh11fdd71jwrpiwhj-x";

    fn refs(r: &[&str]) -> BTreeSet<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    fn setup(out_refs: &[&str]) -> (BTreeMap<String, (String, PathInfo)>, BTreeMap<String, PathInfo>) {
        let outputs = [("out".to_string(), (OUT.to_string(), PathInfo { nar_size: 100, references: refs(out_refs) }))].into_iter().collect();
        let inputs = [
            (DEP.to_string(), PathInfo { nar_size: 10, references: refs(&[LIB]) }),
            (LIB.to_string(), PathInfo { nar_size: 1, references: refs(&[]) }),
        ]
        .into_iter()
        .collect();
        (outputs, inputs)
    }

    fn env(k: &str, v: &str) -> BTreeMap<String, String> {
        [(k.to_string(), v.to_string())].into_iter().collect()
    }

    #[test]
    fn disallowed_reference_is_reported_as_nix_words_it() {
        let (o, i) = setup(&[DEP]);
        let e = check_outputs(&o, &i, &env("disallowedReferences", DEP), None).unwrap_err();
        assert_eq!(
            describe(&e),
            alloc::format!("output '{OUT}' is not allowed to refer to the following paths:\n  {DEP}")
        );
        assert!(check_outputs(&o, &i, &env("disallowedReferences", LIB), None).is_ok());
        // …but LIB is a requisite.
        assert!(check_outputs(&o, &i, &env("disallowedRequisites", LIB), None).is_err());
    }

    #[test]
    fn allowed_references_count_self_references_but_requisites_ignore_them() {
        let (o, i) = setup(&[DEP, OUT]);
        assert!(check_outputs(&o, &i, &env("allowedReferences", DEP), None).is_err());
        assert!(check_outputs(&o, &i, &env("allowedReferences", &alloc::format!("{DEP} out")), None).is_ok());
        assert!(check_outputs(&o, &i, &env("allowedRequisites", &alloc::format!("{DEP}  {LIB}")), None).is_ok());
        assert_eq!(
            check_outputs(&o, &i, &env("allowedReferences", "nonsense"), None),
            Err(CheckError::IllegalSpecifier("nonsense".into()))
        );
    }

    #[test]
    fn structured_output_checks() {
        let (o, i) = setup(&[DEP]);
        let j = |s: &str| super::super::json::parse(s).unwrap();
        assert!(check_outputs(&o, &i, &BTreeMap::new(), Some(&j(r#"{"outputChecks":{"out":{"maxSize":100}}}"#))).is_ok());
        assert!(matches!(
            check_outputs(&o, &i, &BTreeMap::new(), Some(&j(r#"{"outputChecks":{"out":{"maxSize":99}}}"#))),
            Err(CheckError::TooLarge { size: 100, limit: 99, .. })
        ));
        assert!(matches!(
            check_outputs(&o, &i, &BTreeMap::new(), Some(&j(r#"{"outputChecks":{"out":{"maxClosureSize":110}}}"#))),
            Err(CheckError::ClosureTooLarge { size: 111, limit: 110, .. })
        ));
        // Legacy attributes are ignored under structured attrs.
        assert!(check_outputs(&o, &i, &env("disallowedReferences", DEP), Some(&j("{}"))).is_ok());
    }

    #[test]
    fn incomplete_closure_is_an_error() {
        let (o, mut i) = setup(&[DEP]);
        i.remove(LIB);
        assert_eq!(
            check_outputs(&o, &i, &env("allowedRequisites", DEP), None),
            Err(CheckError::UnknownPath(LIB.into()))
        );
    }
}
