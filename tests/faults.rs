//! Whose fault a failed stage is: a data file the user gave that cannot be read is *bad
//! input* (they can fix it), worded so by `cft run` and recorded so in the cache.

mod support;

use std::process::Command;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/models/llama");

#[test]
fn a_malformed_data_file_is_bad_input_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    support::write(
        dir.path(),
        "train.jsonl",
        "{\"question\": \"What is 1 plus 1?\", \"answer\": \"#### 2\"}\n{\"question\": \"No answer here\"}\n",
    );
    let manifest = support::write(
        dir.path(),
        "m.toml",
        &format!(
            r#"
[experiment]
name = "faults"
[[model]]
name = "llama"
path = "{MODEL}"
[data.train]
path = "train.jsonl"
[annotate]
template = "plain"
max_new_tokens = 4
[[method]]
name = "sft"
kind = "sft"
[eval]
include_base = false
"#
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_cft"))
        .args(["run", "--quiet", "--only", "greedy", "--cache"])
        .arg(dir.path().join("cache"))
        .arg(&manifest)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("train.jsonl:2"), "{stderr}");
    assert!(stderr.contains("missing string `answer`"), "{stderr}");
    assert!(stderr.contains("bad input"), "{stderr}");
    assert!(!stderr.contains("defect"), "{stderr}");

    // `cft plan` reads the same from the record.
    let plan = Command::new(env!("CARGO_BIN_EXE_cft"))
        .args(["plan", "--cache"])
        .arg(dir.path().join("cache"))
        .arg(&manifest)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(text.contains("failed (bad input)"), "{text}");
}
