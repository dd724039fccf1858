//! The builder's process environment, exactly as Nix 2.8's sandbox sets it up
//! (`local-derivation-goal.cc`: `initEnv`, `initTmpDir`, `writeStructuredAttrs`, and the argv
//! construction in `runChild`; `parsed-derivations.cc`: `prepareStructuredAttrs`,
//! `writeStructuredAttrsShell`).
//!
//! Differences from Nix, on purpose and documented:
//! - `NIX_BUILD_CORES` is the agent's fixed value (the VM's vCPU count is the host's choice and
//!   must not leak into outputs), given by the caller.
//! - `impureEnvVars` of fixed-output derivations are set to the empty string: the guest has no
//!   host environment to copy them from.
//! - `NIX_ATTRS_JSON_FILE` / `NIX_ATTRS_SH_FILE` point into `/build`. Nix 2.8 sets them to the
//!   host's temporary directory (a path that does not exist inside its own sandbox); later Nix
//!   versions use the sandbox path, as we do.
use super::json::{self, Json, JsonError};
use crate::nix::base32::encode as nix32;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use crate::sha256::Sha256;

/// The directory builds run in (Nix's `sandboxBuildDir`).
pub const BUILD_DIR: &str = "/build";
/// Nix's `homeDir`: deliberately nonexistent.
pub const HOME_DIR: &str = "/homeless-shelter";
/// The store directory.
pub const STORE_DIR: &str = "/nix/store";

/// What the builder process is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderSetup {
    /// The program to execute (the derivation's `builder`).
    pub program: String,
    /// `argv`: the builder's base name, then the derivation's arguments (placeholders rewritten).
    pub argv: Vec<String>,
    /// `envp`: `NAME=value`, sorted by name (Nix keeps them in a `std::map`).
    pub envp: Vec<String>,
    /// Files to create in [`BUILD_DIR`] before starting: (file name, contents).
    pub files: Vec<(String, Vec<u8>)>,
}

/// Why a derivation's environment cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvError {
    /// `__json` is not JSON we can reproduce byte for byte.
    StructuredAttrs(JsonError),
    /// `__json` is valid but not an object.
    StructuredAttrsNotObject,
    /// A feature the agent does not implement yet; the build fails instead of diverging from Nix.
    Unsupported(&'static str),
}

/// The derivation fields the environment depends on.
pub struct DrvEnv<'a> {
    pub builder: &'a str,
    pub args: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    /// Output name → output store path.
    pub outputs: &'a BTreeMap<String, String>,
    /// Whether the derivation is fixed-output.
    pub fixed_output: bool,
}

/// `hashPlaceholder(outputName)`: what `builtins.placeholder` returns.
pub fn hash_placeholder(output: &str) -> String {
    let digest = Sha256::digest(format!("nix-output:{output}").as_bytes());
    format!("/{}", nix32(&digest))
}

/// `rewriteStrings`: replace every placeholder by its output path.
fn rewrite(s: &str, rewrites: &[(String, String)]) -> String {
    let mut s = s.to_string();
    for (from, to) in rewrites {
        if s.contains(from.as_str()) {
            s = s.replace(from.as_str(), to);
        }
    }
    s
}

/// Sets up the builder's argv, environment and `/build` files for one derivation.
pub fn builder_setup(drv: &DrvEnv<'_>, build_cores: u32) -> Result<BuilderSetup, EnvError> {
    // inputRewrites: output placeholders -> output paths (input-addressed and fixed-output
    // derivations know their output paths up front, so no scratch paths are needed).
    let rewrites: Vec<(String, String)> =
        drv.outputs.iter().map(|(name, path)| (hash_placeholder(name), path.clone())).collect();

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut files = Vec::new();
    // initEnv
    env.insert("PATH".into(), "/path-not-set".into());
    env.insert("HOME".into(), HOME_DIR.into());
    env.insert("NIX_STORE".into(), STORE_DIR.into());
    env.insert("NIX_BUILD_CORES".into(), format!("{build_cores}"));
    // initTmpDir
    let structured = match drv.env.get("__json") {
        Some(text) => Some(json::parse(text).map_err(EnvError::StructuredAttrs)?),
        None => None,
    };
    if structured.is_none() {
        let pass_as_file: BTreeSet<&str> = drv
            .env
            .get("passAsFile")
            .map(|s| crate::btree::set(s.split([' ', '\t', '\n', '\r']).filter(|w| !w.is_empty())))
            .unwrap_or_default();
        if drv.env.get("exportReferencesGraph").is_some_and(|s| !s.trim().is_empty()) {
            return Err(EnvError::Unsupported("exportReferencesGraph"));
        }
        for (name, value) in drv.env {
            if pass_as_file.contains(name.as_str()) {
                let file = format!(".attr-{}", nix32(&Sha256::digest(name.as_bytes())));
                env.insert(format!("{name}Path"), format!("{BUILD_DIR}/{file}"));
                files.push((file, rewrite(value, &rewrites).into_bytes()));
            } else {
                env.insert(name.clone(), value.clone());
            }
        }
    }
    for var in ["NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP", "PWD"] {
        env.insert(var.into(), BUILD_DIR.into());
    }
    if drv.fixed_output {
        env.insert("NIX_OUTPUT_CHECKED".into(), "1".into());
        // `impureEnvVars` (a space-separated string; a list under structured attrs).
        let impure: Vec<String> = match &structured {
            Some(Json::Object(m)) => match m.get("impureEnvVars") {
                Some(Json::Array(a)) => a.iter().filter_map(|v| match v {
                    Json::String(s) => Some(s.clone()),
                    _ => None,
                }).collect(),
                _ => Vec::new(),
            },
            _ => drv.env.get("impureEnvVars").map(|s| s.split_whitespace().map(str::to_string).collect()).unwrap_or_default(),
        };
        for var in impure {
            env.insert(var, String::new());
        }
    }
    env.insert("NIX_LOG_FD".into(), "2".into());
    env.insert("TERM".into(), "xterm-256color".into());

    // writeStructuredAttrs
    if let Some(mut value) = structured {
        let Json::Object(attrs) = &mut value else { return Err(EnvError::StructuredAttrsNotObject) };
        let mut attrs = core::mem::take(attrs);
        if matches!(attrs.get("exportReferencesGraph"), Some(Json::Object(_))) {
            return Err(EnvError::Unsupported("exportReferencesGraph"));
        }
        let outputs = crate::btree::map(drv.outputs.iter().map(|(n, p)| (n.clone(), Json::String(p.clone()))));
        attrs.insert("outputs".into(), Json::Object(outputs));
        let attrs = Json::Object(attrs);
        let sh = structured_attrs_shell(&attrs);
        let mut json_text = String::new();
        json::dump(&attrs, &mut json_text);
        files.push((".attrs.sh".into(), rewrite(&sh, &rewrites).into_bytes()));
        env.insert("NIX_ATTRS_SH_FILE".into(), format!("{BUILD_DIR}/.attrs.sh"));
        files.push((".attrs.json".into(), rewrite(&json_text, &rewrites).into_bytes()));
        env.insert("NIX_ATTRS_JSON_FILE".into(), format!("{BUILD_DIR}/.attrs.json"));
    }

    let base = drv.builder.rsplit('/').next().unwrap_or(drv.builder);
    let mut argv = Vec::with_capacity(drv.args.len() + 1);
    argv.push(base.to_string());
    argv.extend(drv.args.iter().map(|a| rewrite(a, &rewrites)));
    let envp = env.iter().map(|(k, v)| rewrite(&format!("{k}={v}"), &rewrites)).collect();
    Ok(BuilderSetup { program: drv.builder.to_string(), argv, envp, files })
}

/// `shellEscape`: single-quote, with `'` written as `'\''`.
fn shell_escape(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `handleSimpleType` in `writeStructuredAttrsShell`.
fn simple(value: &Json) -> Option<String> {
    match value {
        Json::String(s) => Some(shell_escape(s)),
        // `std::to_string(value.get<int>())`: a C++ narrowing to 32 bits, kept as is.
        Json::Int(n) => Some(format!("{}", *n as i32)),
        Json::Null => Some("''".into()),
        Json::Bool(b) => Some(if *b { "1".into() } else { String::new() }),
        _ => None,
    }
}

fn is_sh_var_name(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some('A'..='Z' | 'a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'A'..='Z' | 'a'..='z' | '0'..='9' | '_'))
}

/// `writeStructuredAttrsShell`: bash `declare`s for every attribute representable in bash.
pub fn structured_attrs_shell(attrs: &Json) -> String {
    let mut sh = String::new();
    let Json::Object(map) = attrs else { return sh };
    for (key, value) in map {
        if !is_sh_var_name(key) {
            continue;
        }
        if let Some(s) = simple(value) {
            sh.push_str(&format!("declare {key}={s}\n"));
        } else if let Json::Array(items) = value {
            let parts: Option<Vec<String>> = items.iter().map(simple).collect();
            if let Some(parts) = parts {
                let body: String = parts.iter().map(|p| format!("{p} ")).collect();
                sh.push_str(&format!("declare -a {key}=({body})\n"));
            }
        } else if let Json::Object(inner) = value {
            let parts: Option<Vec<String>> =
                inner.iter().map(|(k, v)| simple(v).map(|s| format!("[{}]={s} ", shell_escape(k)))).collect();
            if let Some(parts) = parts {
                sh.push_str(&format!("declare -A {key}=({})\n", parts.concat()));
            }
        }
    }
    sh
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn shell_declares() {
        let attrs = json::parse(r#"{"a":"it's","b":[1,true,null],"c":{"k":false},"d":[[1]],"bad-name":1,"n":4294967297}"#).unwrap();
        assert_eq!(
            structured_attrs_shell(&attrs),
            "declare a='it'\\''s'\ndeclare -a b=(1 1 '' )\ndeclare -A c=(['k']= )\ndeclare n=1\n"
        );
    }

    #[test]
    fn plain_env_is_sorted_and_has_nix_variables() {
        let env: BTreeMap<String, String> =
            [("zz", "1"), ("PATH", "/mine"), ("out", "/nix/store/x-out")].iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let outputs = [("out".to_string(), "/nix/store/x-out".to_string())].into_iter().collect();
        let args = vec!["-c".to_string(), "echo".to_string()];
        let s = builder_setup(&DrvEnv { builder: "/nix/store/b-bb/bin/busybox", args: &args, env: &env, outputs: &outputs, fixed_output: false }, 1).unwrap();
        assert_eq!(s.argv, ["busybox", "-c", "echo"]);
        let mut sorted = s.envp.clone();
        sorted.sort();
        assert_eq!(s.envp, sorted);
        // The derivation's PATH wins over /path-not-set, as in Nix (env is set after initEnv's PATH).
        assert!(s.envp.contains(&"PATH=/mine".to_string()));
        assert!(s.envp.contains(&"HOME=/homeless-shelter".to_string()));
        assert!(s.envp.contains(&"NIX_BUILD_TOP=/build".to_string()));
        assert!(!s.envp.iter().any(|e| e.starts_with("NIX_OUTPUT_CHECKED")));
        assert!(s.files.is_empty());
    }
}
