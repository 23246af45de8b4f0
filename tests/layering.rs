//! The layers of the library, top to bottom: a module may use only the modules below it. The
//! order is the one DESIGN.md sketches, as the code has found it (README, Design; `lib.rs`):
//! `stages` sits above `report` (the report stage builds a report) and `cache` below `plan`
//! and `stages` (both read and write records); `contract` (stage kinds, params, artifacts)
//! sits below everything that plans, runs or reports stages.
//!
//! Every `crate::<module>` path in the code of a module counts (in `use` lines and inline),
//! comments do not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top to bottom. A new top-level module must be placed here.
const ORDER: [&str; 16] = [
    "exec", "stages", "report", "plan", "cache", "cft", "parity", "generate", "train", "eval",
    "toy", "model", "contract", "manifest", "rng", "lib",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None`: the binary).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    match first.as_str() {
        "main.rs" | "cli" => None,
        "lib.rs" => Some("lib".into()),
        other => Some(other.trim_end_matches(".rs").to_string()),
    }
}

/// The modules named by `crate::<name>` in code (line comments stripped), with a line each.
fn dependencies(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for part in inner.split(',') {
                    let name = part.trim().split("::").next().unwrap_or("").trim();
                    if !name.is_empty() {
                        out.push((name.to_string(), n + 1));
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // `crate::on_device!` is a macro exported at the root, not a module
                if !rest[name.len()..].starts_with('!') {
                    out.push((name, n + 1));
                }
            }
        }
    }
    out
}

#[test]
fn no_module_imports_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let rank: BTreeMap<&str, usize> = ORDER.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let mut upward = Vec::new();
    let mut checked = 0;
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(&own) = rank.get(module.as_str()) else {
            panic!(
                "{}: module `{module}` is not in the layer order",
                file.display()
            );
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (dep, line) in dependencies(&text) {
            if dep == module || module == "lib" {
                continue;
            }
            checked += 1;
            match rank.get(dep.as_str()) {
                Some(&r) if r > own => {}
                Some(_) => upward.push(format!(
                    "{}:{line}: `{module}` uses `{dep}`, which is above it",
                    file.strip_prefix(&src).unwrap().display()
                )),
                None => upward.push(format!(
                    "{}:{line}: `crate::{dep}` is not a module in the layer order",
                    file.strip_prefix(&src).unwrap().display()
                )),
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} imports seen: the scan is broken"
    );
    assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
}

#[test]
fn the_scan_sees_grouped_and_inline_paths_and_skips_comments() {
    let deps = dependencies(
        "use crate::{plan::Plan, cache};\nlet x = crate::exec::run(); // crate::report\n/// [`crate::model`]\ncrate::on_device!(ctx, run)\n",
    );
    let names: Vec<&str> = deps.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(names, ["plan", "cache", "exec"]);
}
