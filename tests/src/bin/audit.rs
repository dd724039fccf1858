//! `make audit`: the guest's trusted computing base, counted from the source and from the
//! firmware build's dep-info, so a reviewer can check the figures with one command.
//!
//! - **Own code**: every file the firmware binary compiles (`target/x86_64-unknown-none/firmware/
//!   agent.d`, written by the build itself), counted as *lines of code*: non-blank lines that are
//!   not only a comment (`//`, `/* … */`, doc comments; `#` and `//` comments in assembly), with
//!   every `#[cfg(test)]` item (test modules, test doubles) left out.
//! - **unsafe**: every `unsafe {` block, `unsafe impl` and `unsafe extern` in those files, with
//!   its file:line and whether a `// SAFETY:` comment stands on it or within the 3 lines above.
//! - **Dependencies**: every crate `cargo tree` lists for the firmware build, with the source
//!   files its own dep-info (`deps/<crate>-<hash>.d`) says the compiler read, counted the same way.
//!
//! Usage: `cargo run -p integration-tests --bin audit` after `make agent` (`make audit` does both).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The files a dep-info file lists as inputs (`target: a b c`, spaces escaped as `\ `).
fn dep_info(path: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e} (run `make agent` first)", path.display()));
    let first = text.lines().next().unwrap_or("");
    let (_, inputs) = first.split_once(": ").unwrap_or(("", ""));
    inputs.replace("\\ ", "\u{0}").split_whitespace().map(|s| PathBuf::from(s.replace('\u{0}', " "))).collect()
}

/// The lines of `text` (index, line) outside `#[cfg(test)]` items: the attribute, and the item
/// it applies to through its closing brace (or its `;`).
fn non_test_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut skip_depth: Option<i64> = None; // brace depth inside a #[cfg(test)] item
    let mut pending_cfg_test = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(depth) = skip_depth.as_mut() {
            *depth += braces(line);
            if *depth <= 0 && line.contains('}') {
                skip_depth = None;
            }
        } else if pending_cfg_test {
            pending_cfg_test = false;
            let d = braces(line);
            if d > 0 {
                skip_depth = Some(d);
            }
        } else if line == "#[cfg(test)]" {
            pending_cfg_test = true;
        } else {
            out.push((i, raw));
        }
    }
    out
}

/// Lines of code in `text`: non-blank, not only a comment; `#[cfg(test)]` items skipped.
fn count_lines(text: &str, asm: bool) -> usize {
    let mut n = 0;
    let mut in_block = false;
    for (_, raw) in non_test_lines(text) {
        let line = raw.trim();
        if in_block {
            if line.contains("*/") {
                in_block = false;
            }
            continue;
        }
        if line.is_empty() || line.starts_with("//") || (asm && line.starts_with('#')) {
            continue;
        }
        if line.starts_with("/*") {
            in_block = !line.contains("*/");
            continue;
        }
        n += 1;
    }
    n
}

/// Net `{` minus `}` on a line, outside string and char literals and comments (enough for
/// rustfmt-shaped code).
fn braces(line: &str) -> i64 {
    let code = line.split("//").next().unwrap_or("");
    let mut d = 0;
    let mut in_str = false;
    let mut prev = ' ';
    for c in code.chars() {
        match c {
            '"' if prev != '\\' => in_str = !in_str,
            '{' if !in_str && prev != '\'' => d += 1,
            '}' if !in_str && prev != '\'' => d -= 1,
            _ => {}
        }
        prev = c;
    }
    d
}

struct Unsafe {
    at: String,
    what: &'static str,
    safety: bool,
}

/// Whether the unsafe site on line `i` has its own `SAFETY:` comment: on the line, or in the
/// comment lines right above the statement it belongs to (climbing over that statement's
/// earlier lines, never past another statement's end).
fn has_safety(lines: &[&str], i: usize) -> bool {
    if lines[i].contains("SAFETY:") {
        return true;
    }
    let mut j = i;
    while j > 0 {
        let prev = lines[j - 1].trim();
        if prev.starts_with("//") {
            break;
        }
        if prev.is_empty() || prev.ends_with(';') || prev.ends_with('{') || prev.ends_with('}') {
            return false;
        }
        j -= 1;
    }
    while j > 0 && lines[j - 1].trim().starts_with("//") {
        if lines[j - 1].contains("SAFETY:") {
            return true;
        }
        j -= 1;
    }
    false
}

fn unsafe_sites(rel: &str, text: &str) -> Vec<Unsafe> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, raw) in non_test_lines(text) {
        let line = raw.trim();
        if line.starts_with("//") {
            continue;
        }
        let code = line.split("//").next().unwrap_or("");
        let what = if code.contains("unsafe {") {
            "block"
        } else if code.contains("unsafe impl") {
            "impl"
        } else if code.contains("unsafe extern") {
            "extern"
        } else {
            continue;
        };
        out.push(Unsafe { at: format!("{rel}:{}", i + 1), what, safety: has_safety(&lines, i) });
    }
    out
}

fn main() {
    let root = root();
    let firmware = root.join("target/x86_64-unknown-none/firmware");
    // Own code: the firmware binary's own inputs.
    let own: Vec<PathBuf> = dep_info(&firmware.join("agent.d")).into_iter().filter(|p| p.starts_with(root.join("agent"))).collect();
    let mut by_file = Vec::new();
    let mut sites = Vec::new();
    for p in &own {
        let rel = p.strip_prefix(&root).unwrap().display().to_string();
        let text = std::fs::read_to_string(p).unwrap();
        let asm = rel.ends_with(".s");
        let n = count_lines(&text, asm);
        let s = if asm { Vec::new() } else { unsafe_sites(&rel, &text) };
        by_file.push((rel, n, s.iter().filter(|u| u.what == "block").count()));
        sites.extend(s);
    }
    let layer = |f: &str| -> &'static str {
        let f = f.trim_start_matches("agent/src/");
        if f.starts_with("arch/") {
            "arch (boot, traps, paging, devices, platform instructions: the only unsafe code)"
        } else if f.starts_with("nix/") {
            "store (Nix: ATerm, NAR, store paths, references)"
        } else if f.starts_with("sandbox/") {
            "sandbox (ELF, system calls, processes, file system)"
        } else if f.starts_with("build/") || f == "job.rs" || f == "statement.rs" {
            "hash + attest (the build, the statement)"
        } else if f.starts_with("tee/") {
            "platform (SEV-SNP, TDX protocol logic)"
        } else if f == "channel.rs" || f == "proto.rs" {
            "channel (frames, stream disks)"
        } else {
            "entry (main, lib, development requests)"
        }
    };
    let mut layers: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (f, n, u) in &by_file {
        let e = layers.entry(layer(f)).or_default();
        e.0 += n;
        e.1 += u;
    }
    let own_total: usize = by_file.iter().map(|f| f.1).sum();
    let blocks = sites.iter().filter(|s| s.what == "block").count();
    // `unsafe extern` blocks only declare symbols (the assembly's, the linker script's): listed,
    // but the SAFETY comment is owed where they are used.
    let missing: Vec<&Unsafe> = sites.iter().filter(|s| !s.safety && s.what != "extern").collect();

    // Dependencies: what cargo says the firmware build links, and what each crate's dep-info
    // says the compiler read.
    let tree = Command::new(env!("CARGO"))
        .args(["tree", "-p", "agent", "--features", "firmware", "--target", "x86_64-unknown-none", "-e", "normal", "--prefix", "none", "--locked"])
        .current_dir(&root)
        .output()
        .expect("cargo tree");
    let mut deps: BTreeMap<(String, String), ()> = BTreeMap::new();
    for line in String::from_utf8_lossy(&tree.stdout).lines() {
        let mut w = line.split_whitespace();
        if let (Some(name), Some(ver)) = (w.next(), w.next()) {
            if name != "agent" {
                deps.insert((name.to_string(), ver.trim_start_matches('v').to_string()), ());
            }
        }
    }
    let mut dep_rows = Vec::new();
    for (name, ver) in deps.keys() {
        // The library's file stem: the package name with `-` as `_` (or dropped, as md-5's
        // `md5`).
        let stems = [name.replace('-', "_"), name.replace('-', "")];
        // The newest dep-info of that crate in the firmware build (older ones may linger).
        let newest = std::fs::read_dir(firmware.join("deps"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                stems.iter().any(|stem| n.starts_with(&format!("{stem}-"))) && n.ends_with(".d")
            })
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
        let Some(d) = newest else {
            dep_rows.push((name.clone(), ver.clone(), 0, 0, "no dep-info: a proc-macro or build-only crate (not in the image)"));
            continue;
        };
        let files: Vec<PathBuf> = dep_info(&d.path()).into_iter().filter(|p| p.extension().is_some_and(|e| e == "rs")).collect();
        let lines: usize = files.iter().map(|p| count_lines(&std::fs::read_to_string(p).unwrap_or_default(), false)).sum();
        dep_rows.push((name.clone(), ver.clone(), files.len(), lines, ""));
    }
    let dep_total: usize = dep_rows.iter().map(|r| r.3).sum();

    println!("# The guest's TCB (`make audit`)\n");
    println!("Counted from the source and the firmware build's dep-info (method: tests/src/bin/audit.rs).");
    println!("Lines = non-blank lines that are not only a comment; `#[cfg(test)]` items excluded.\n");
    println!("| | figure | goal |\n|---|---|---|");
    println!("| own guest code | {own_total} lines in {} files | ≤ 8,000 |", by_file.len());
    println!("| `unsafe {{` blocks | {blocks} (and {} `unsafe impl`/`extern`); {} block or impl without a SAFETY comment | ≤ 60 |", sites.len() - blocks, missing.len());
    println!("| dependencies compiled into the image | {dep_total} lines in {} crates | ≤ 25,000 |\n", dep_rows.iter().filter(|r| r.2 > 0).count());
    println!("## Own code, by layer (in the order the machine runs it: docs/audit.md)\n");
    println!("| layer | lines | unsafe blocks |\n|---|---|---|");
    for (l, (n, u)) in &layers {
        println!("| {l} | {n} | {u} |");
    }
    println!("\n## Own code, by file\n\n| file | lines | unsafe blocks |\n|---|---|---|");
    for (f, n, u) in &by_file {
        println!("| {f} | {n} | {u} |");
    }
    println!("\n## Every unsafe site\n\n| where | what | SAFETY comment |\n|---|---|---|");
    for s in &sites {
        let note = match (s.safety, s.what) {
            (true, _) => "yes",
            (false, "extern") => "declaration (owed where used)",
            _ => "**no**",
        };
        println!("| {} | unsafe {} | {note} |", s.at, s.what);
    }
    println!("\n## Dependencies compiled into the image\n\n| crate | version | files | lines |\n|---|---|---|---|");
    for (n, v, f, l, note) in &dep_rows {
        if note.is_empty() {
            println!("| {n} | {v} | {f} | {l} |");
        }
    }
    let build_only: Vec<String> = dep_rows.iter().filter(|r| !r.4.is_empty()).map(|r| format!("{} {}", r.0, r.1)).collect();
    println!("\nBuild-time only (proc macros and their dependencies: they run in the compiler, nothing of them is in the image): {}.", build_only.join(", "));
    if !missing.is_empty() {
        eprintln!("audit: {} unsafe site(s) without a SAFETY comment", missing.len());
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_skips_comments_blank_lines_and_test_modules() {
        let src = "//! doc\n\nfn a() {\n    // c\n    let x = 1; /* not only */\n}\n/* block\n still */\n#[cfg(test)]\nmod tests {\n    fn t() { let s = \"}\"; }\n}\nfn b() {}\n";
        assert_eq!(count_lines(src, false), 4); // fn a, let, }, fn b
        assert_eq!(count_lines("# c\n  mov %eax, %ebx\n\n// c\n", true), 1);
    }

    #[test]
    fn unsafe_sites_need_a_safety_comment_near() {
        let src = "fn f() {\n    // SAFETY: reasons.\n    unsafe { x() };\n    unsafe { y() };\n}\n";
        let s = unsafe_sites("f.rs", src);
        assert_eq!(s.len(), 2);
        assert!(s[0].safety && s[0].at == "f.rs:3");
        // The second has none of its own: the comment above belongs to the first.
        assert!(!s[1].safety);
        // A comment above a statement that opens its unsafe block a line further down.
        let multi = unsafe_sites("h.rs", "    // SAFETY: ok.\n    let v = f(a,\n        unsafe { z() });\n");
        assert!(multi[0].safety);
    }
}
