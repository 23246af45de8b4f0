//! `scripts/gpu-check.sh --device cpu`, the smaller CPU version of the check someone with a
//! GPU runs, with the cft binary of this build: every check is in its table, the parity rows
//! pass, the Python rows say why they were skipped where torch is missing, and a failing step
//! is reported without stopping the others.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The script under `timeout`, which ends it and every process it started past the limit.
fn gpu_check(limit_s: u32, cft: &Path, work: &Path, out: &Path, extra: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gpu-check.sh");
    Command::new("timeout")
        .arg(limit_s.to_string())
        .arg(script)
        .args(["--device", "cpu", "--cft"])
        .arg(cft)
        .arg("--work")
        .arg(work)
        .args(extra)
        .env("OUT", out)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The table's rows as cells: check, cft, transformers, ratio, result, notes.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| check ") && !l.starts_with("| ---"))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn row<'a>(rows: &'a [Vec<String>], check: &str) -> &'a [String] {
    let found: Vec<_> = rows.iter().filter(|r| r[0].starts_with(check)).collect();
    assert_eq!(found.len(), 1, "one row for {check:?} in {rows:#?}");
    found[0]
}

/// Why the Python steps are skipped on this machine (None: torch and transformers import).
fn python_missing() -> Option<&'static str> {
    let imports = |m: &str| {
        Command::new("python3")
            .args(["-c", &format!("import {m}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !imports("sys") {
        Some("python3 not found")
    } else if !imports("torch") {
        Some("torch not installed")
    } else if !imports("transformers") {
        Some("transformers not installed")
    } else {
        None
    }
}

const CHECKS: [&str; 15] = [
    "parity qwen2",
    "parity qwen3",
    "parity llama",
    "parity olmo2",
    "benchmark model",
    "generate batch 1 ",
    "generate batch 8 ",
    "transformers generate",
    "train (",
    "transformers train",
    "reduced quickstart",
    "annotate",
    "train offload (",
    "training state save",
    "f32 matrix products",
];

#[test]
fn the_cpu_check_runs_every_step_and_prints_one_table() {
    let dir = tempfile::tempdir().unwrap();
    let (work, out) = (dir.path().join("work"), dir.path().join("out"));
    std::fs::create_dir_all(&out).unwrap();
    let cft = Path::new(env!("CARGO_BIN_EXE_cft"));
    let run = gpu_check(900, cft, &work, &out, &[]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{:?}\n{stdout}\n{stderr}", run.status);

    // the table, also written to $OUT/gpu-check.md, with the machine and the date on top
    let written = std::fs::read_to_string(out.join("gpu-check.md")).unwrap();
    assert!(stdout.contains(&written), "{stdout}\n---\n{written}");
    let header = written.lines().next().unwrap();
    assert!(
        header.starts_with("`scripts/gpu-check.sh --device cpu` on CPU: "),
        "{header}"
    );
    assert!(header.contains(" cores, 20"), "device and date: {header}");
    let rows = rows(&written);
    assert_eq!(rows.len(), CHECKS.len(), "{rows:#?}");
    assert!(rows.iter().all(|r| r.len() == 6), "{rows:#?}");

    // parity with transformers' saved outputs on all four families
    for family in ["qwen2", "qwen3", "llama", "olmo2"] {
        let r = row(&rows, &format!("parity {family}"));
        assert_eq!(r[4], "PASS", "{r:?}");
        let worst: f64 = r[1].parse().unwrap();
        assert!(worst <= 1e-4, "{r:?}");
        for check in ["logits", "greedy", "batched", "score"] {
            assert!(r[5].contains(check), "{r:?}");
        }
    }

    // cft's own steps pass, with numbers
    for check in [
        "benchmark model",
        "generate batch 1 ",
        "generate batch 8 ",
        "train (",
        "train offload (",
        "training state save",
        "f32 matrix products",
    ] {
        assert_eq!(row(&rows, check)[4], "PASS", "{:?}", row(&rows, check));
    }
    assert!(
        row(&rows, "training state save")[5].contains("peak resident"),
        "{:?}",
        row(&rows, "training state save")
    );
    for check in [
        "generate batch 1 ",
        "generate batch 8 ",
        "train (",
        "annotate",
        "train offload (",
        "training state save",
        "f32 matrix products",
    ] {
        let number: f64 = row(&rows, check)[1].parse().unwrap();
        assert!(number > 0.0, "{:?}", row(&rows, check));
    }
    let reduced = row(&rows, "reduced quickstart");
    assert_eq!(reduced[4], "PASS", "{reduced:?}");
    assert!(reduced[5].contains("report written"), "{reduced:?}");
    let annotate = row(&rows, "annotate");
    assert_eq!(annotate[4], "PASS", "{annotate:?}");
    assert!(
        annotate[5].contains("identical annotations"),
        "{annotate:?}"
    );

    // the transformers side: skipped, saying why, where torch is missing
    for check in ["transformers generate", "transformers train"] {
        let r = row(&rows, check);
        match python_missing() {
            Some(reason) => assert_eq!((r[4].as_str(), r[5].as_str()), ("SKIPPED", reason)),
            None => assert_eq!(r[4], "PASS", "{r:?}"),
        }
    }
    if let Some(reason) = python_missing() {
        let model = row(&rows, "benchmark model");
        assert!(model[5].contains("cft check make-model"), "{model:?}");
        assert!(model[5].contains(reason), "{model:?}");
        assert!(stderr.contains(&format!("Python steps will be SKIPPED: {reason}")));
    }
}

/// A cft that fails every command: each step still runs and is reported, and the exit status
/// says something failed.
#[test]
fn failing_steps_are_reported_and_the_others_still_run() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (work, out) = (dir.path().join("work"), dir.path().join("out"));
    std::fs::create_dir_all(&out).unwrap();
    let cft = dir.path().join("cft");
    std::fs::write(
        &cft,
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'cft 0.0.0'; exit 0; }\n\
         echo \"error: simulated failure of $1 $2\" >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&cft, std::fs::Permissions::from_mode(0o755)).unwrap();
    // without Python, so that the transformers model cannot stand in for cft's
    let run = {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gpu-check.sh");
        Command::new("timeout")
            .args(["120"])
            .arg(script)
            .args(["--device", "cpu", "--cft"])
            .arg(&cft)
            .arg("--work")
            .arg(&work)
            .env("OUT", &out)
            .env("PYTHON", "no-such-python")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{stdout}");
    let rows = rows(&stdout);
    assert_eq!(rows.len(), CHECKS.len(), "{rows:#?}");
    for check in CHECKS {
        let r = row(&rows, check);
        let expected = match check {
            "parity qwen2" | "parity qwen3" | "parity llama" | "parity olmo2" => {
                ("FAIL", "exit 3: error: simulated failure of check parity")
            }
            "benchmark model" => (
                "FAIL",
                "exit 3: error: simulated failure of check make-model",
            ),
            "transformers generate" | "transformers train" => {
                ("SKIPPED", "no-such-python not found")
            }
            "reduced quickstart" => (
                "FAIL",
                "exit 3: error: simulated failure of run experiments/checks/reduced.toml",
            ),
            "annotate" => ("FAIL", "exit 3: error: simulated failure of bench annotate"),
            "f32 matrix products" => ("FAIL", "exit 3: error: simulated failure of bench gemm"),
            _ => ("SKIPPED", "no benchmark model"),
        };
        assert_eq!((r[4].as_str(), r[5].as_str()), expected, "{r:?}");
    }
    // every step that could run ran, and left its log
    for step in ["parity", "model", "reduced", "annotate", "gemm"] {
        assert!(work.join(format!("{step}.log")).is_file(), "{step}");
    }

    // a bad command line is refused before anything runs
    let bad = gpu_check(60, &cft, &work, &out, &["--device", "tpu"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--device tpu: expected cpu, cuda or cuda:N")
    );
}

/// `cft check parity` on a fixture without transformers' outputs, and on no fixtures at all:
/// exit 1, naming the file or the flag.
#[test]
fn check_parity_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let family = dir.path().join("llama");
    std::fs::create_dir_all(&family).unwrap();
    for entry in std::fs::read_dir(fixtures.join("llama")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "reference.safetensors" {
            std::fs::copy(&path, family.join(path.file_name().unwrap())).unwrap();
        }
    }
    let cft = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cft"))
            .args(["check", "parity"])
            .args(args)
            .output()
            .unwrap()
    };
    let fixtures_dir = dir.path().to_str().unwrap();
    let out = cft(&["--fixtures", fixtures_dir, "--families", "llama"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("llama    logits   error  FAIL"), "{stdout}");
    let missing = family.join("reference.safetensors");
    assert!(
        stdout.contains(&format!("{}: No such file", missing.display())),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 parity check(s) failed on cpu"));

    let out = cft(&["--fixtures", "/no/such/dir"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--fixtures /no/such/dir: no such directory")
    );
}
