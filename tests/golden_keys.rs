//! Golden keys: the key of every stage of every shipped manifest, pinned. A key is the cache
//! address of a stage's result, so a change that moves one silently throws away what users
//! have computed. A stage whose meaning changes bumps its version and updates
//! `tests/fixtures/golden_keys.json` in the same commit (`CFT_BLESS=1 cargo nextest run
//! --test golden_keys` rewrites it), saying so in the commit message.
//!
//! The manifests are planned from a copy in an empty directory, with `CFT_DATA_DIR` unset, so
//! the models and data they name are missing (they enter their keys as `missing:<path>`) on
//! every machine, whatever it has downloaded.

use std::collections::BTreeMap;
use std::path::Path;

use cft::cache::Snapshot;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/golden_keys.json"
);

/// manifest file name -> stage label -> key
type Keys = BTreeMap<String, BTreeMap<String, String>>;

fn shipped_keys() -> Keys {
    // SAFETY: nextest runs each test in its own process, and this runs before any thread of
    // this test starts.
    unsafe { std::env::remove_var("CFT_DATA_DIR") };
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("experiments");
    std::fs::create_dir(&copy).unwrap();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&here).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::copy(&path, copy.join(&name)).unwrap();
            names.push(name);
        }
    }
    names.sort();
    // A file that others include and that names no model (paper-base.toml) is a base, not
    // an experiment.
    let is_base = |name: &String| {
        let text = std::fs::read_to_string(copy.join(name)).unwrap();
        let value: toml::Value = toml::from_str(&text).unwrap();
        value.get("model").is_none()
    };
    let included: Vec<String> = names
        .iter()
        .flat_map(|n| {
            let text = std::fs::read_to_string(copy.join(n)).unwrap();
            let value: toml::Value = toml::from_str(&text).unwrap();
            match value.get("include") {
                Some(toml::Value::String(s)) => vec![s.clone()],
                Some(toml::Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
                _ => Vec::new(),
            }
        })
        .collect();
    let mut keys = Keys::new();
    for name in names
        .into_iter()
        .filter(|n| !(included.contains(n) && is_base(n)))
    {
        let exp = cft::manifest::load(&copy.join(&name)).unwrap();
        let plan = cft::plan::build(&exp, &Snapshot::default()).unwrap();
        let stages: BTreeMap<String, String> = plan
            .graph
            .node_weights()
            .map(|s| (s.label.clone(), s.key.clone()))
            .collect();
        assert_eq!(
            stages.len(),
            plan.graph.node_count(),
            "{name}: labels unique"
        );
        keys.insert(name, stages);
    }
    keys
}

#[test]
fn every_stage_of_every_shipped_manifest_keeps_its_key() {
    let now = shipped_keys();
    if std::env::var_os("CFT_BLESS").is_some() {
        let text = serde_json::to_string_pretty(&now).unwrap();
        std::fs::write(FIXTURE, text + "\n").unwrap();
        eprintln!("wrote {FIXTURE}");
        return;
    }
    let pinned: Keys = serde_json::from_str(
        &std::fs::read_to_string(FIXTURE).expect("the fixture exists (CFT_BLESS=1 writes it)"),
    )
    .unwrap();
    let mut changed = Vec::new();
    for (manifest, stages) in &pinned {
        let Some(current) = now.get(manifest) else {
            changed.push(format!("{manifest}: no longer shipped"));
            continue;
        };
        for (label, key) in stages {
            match current.get(label) {
                Some(k) if k == key => {}
                Some(k) => changed.push(format!("{manifest}: {label}: {key} -> {k}")),
                None => changed.push(format!("{manifest}: {label}: gone")),
            }
        }
        for label in current.keys().filter(|l| !stages.contains_key(*l)) {
            changed.push(format!("{manifest}: {label}: new"));
        }
    }
    for manifest in now.keys().filter(|m| !pinned.contains_key(*m)) {
        changed.push(format!("{manifest}: new manifest"));
    }
    assert!(
        changed.is_empty(),
        "{} stage keys changed (bump the stage's version if its meaning changed, then \
         CFT_BLESS=1):\n{}",
        changed.len(),
        changed.join("\n")
    );
}
