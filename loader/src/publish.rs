//! `loader publish`: evidence into a binary cache, beside the NARs `nix copy --to file:///DIR`
//! wrote. For every `<hash-part>.narinfo` in the cache whose output the builder kept evidence
//! for (`LOADER_EVIDENCE_DIR/<hash-part>.attestation.json`, [`crate::serve`]), the evidence is
//! copied to `<hash-part>.attestation.json` in the cache, where `measurement-tool verify-path
//! --cache` finds it. The evidence is checked on the way: it must be a bundle whose statement
//! names that store path among its outputs with the NarHash the narinfo gives (a cache whose
//! narinfo disagrees with the attested hash gets no evidence, and is reported).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0} is not a file:// binary cache")]
    NotFileCache(String),
}

/// What was published.
#[derive(Debug, Default)]
pub struct Published {
    /// Store paths whose evidence is now in the cache.
    pub published: Vec<String>,
    /// Store paths in the cache without evidence here (built elsewhere, or not attested).
    pub without_evidence: Vec<String>,
    /// Store paths whose evidence does not match the cache's narinfo: path and why.
    pub mismatched: Vec<(String, String)>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PublishError {
    let what = what.into();
    move |source| PublishError::Io { what, source }
}

/// `file:///DIR` → DIR.
pub fn cache_dir(url: &str) -> Result<PathBuf, PublishError> {
    url.strip_prefix("file://").filter(|d| d.starts_with('/')).map(|d| PathBuf::from(d.split('?').next().unwrap_or(d))).ok_or_else(|| PublishError::NotFileCache(url.into()))
}

fn narinfo_fields(text: &str) -> BTreeMap<&str, &str> {
    text.lines().filter_map(|l| l.split_once(": ")).collect()
}

/// The subject of a bundle's statement for `path`: its NAR SHA-256 (hex).
fn attested_hash(bundle: &[u8], path: &str) -> Result<String, String> {
    let b: measurement_tool::evidence::bundle::Bundle = serde_json::from_slice(bundle).map_err(|e| format!("not an evidence bundle: {e}"))?;
    let st = b.statement_bytes().map_err(|e| format!("statement: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&st).map_err(|e| format!("statement: {e}"))?;
    v["subject"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == path))
        .and_then(|s| s["digest"]["sha256"].as_str().map(String::from))
        .ok_or_else(|| format!("its statement does not name {path}"))
}

/// Publishes the evidence in `evidence_dir` for every narinfo in `cache`.
pub fn publish(evidence_dir: &Path, cache: &Path) -> Result<Published, PublishError> {
    let mut report = Published::default();
    let mut names: Vec<String> = std::fs::read_dir(cache)
        .map_err(io(format!("reading {}", cache.display())))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".narinfo"))
        .collect();
    names.sort();
    for n in names {
        let hash_part = n.trim_end_matches(".narinfo");
        let text = std::fs::read_to_string(cache.join(&n)).map_err(io(format!("reading {}", cache.join(&n).display())))?;
        let fields = narinfo_fields(&text);
        let Some(path) = fields.get("StorePath").map(|s| s.to_string()) else { continue };
        let src = evidence_dir.join(format!("{hash_part}.attestation.json"));
        let bytes = match std::fs::read(&src) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                report.without_evidence.push(path);
                continue;
            }
            Err(e) => return Err(io(format!("reading {}", src.display()))(e)),
        };
        let narinfo_hash = fields.get("NarHash").and_then(|h| h.strip_prefix("sha256:")).and_then(|h| agent::nix::hash::Hash::parse_unprefixed(h, agent::nix::hash::Algo::Sha256)).map(|h| h.to_hex());
        match attested_hash(&bytes, &path) {
            Ok(h) if Some(&h) == narinfo_hash.as_ref() => {}
            Ok(h) => {
                report.mismatched.push((path, format!("the narinfo's NarHash is sha256 {}, the attested hash sha256 {h}", narinfo_hash.unwrap_or_default())));
                continue;
            }
            Err(why) => {
                report.mismatched.push((path, format!("{}: {why}", src.display())));
                continue;
            }
        }
        let dst = cache.join(format!("{hash_part}.attestation.json"));
        let tmp = cache.join(format!(".{hash_part}.attestation.json.partial"));
        std::fs::write(&tmp, &bytes).map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &dst).map_err(io(format!("writing {}", dst.display())))?;
        report.published.push(path);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_file_caches() {
        assert_eq!(cache_dir("file:///srv/cache").unwrap(), PathBuf::from("/srv/cache"));
        assert_eq!(cache_dir("file:///srv/cache?compression=none").unwrap(), PathBuf::from("/srv/cache"));
        assert!(cache_dir("s3://bucket").is_err());
        assert!(cache_dir("file://relative").is_err());
    }
}
