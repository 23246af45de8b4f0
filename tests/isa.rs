//! The CPU computes the same bytes whatever its instruction-set extensions and however many
//! threads it is given: `cft check bytes` (logits, greedy decoding with alternatives, seeded
//! sampling, two training steps) prints the same digests natively, with 1 and 2 threads, and
//! under `qemu-x86_64` emulating an AMD EPYC-Rome (AVX2, no AVX-512) and an Intel Haswell
//! (AVX2, no AVX-512, Intel's cache descriptors). On an AVX-512 machine this is the check that
//! no kernel picks AVX-512 and adds in another order (it failed before burn-flex's `simd` and
//! gemm's `x86-v4` features were turned off: every digest differed).
//!
//! It needs qemu's user-mode emulator (`apt-get install qemu-user`), so it is `#[ignore]` with
//! that reason (nextest lists it as skipped); CI installs it and runs it with
//! `--run-ignored only`.

use std::path::Path;
use std::process::Command;

fn cft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cft"))
}

/// The digests `check bytes` prints, run by `command`.
fn digests(mut command: Command, what: &str) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 6, "{what}: {stdout}");
    stdout
}

fn check_bytes(model: &Path) -> Vec<String> {
    vec![
        "check".into(),
        "bytes".into(),
        "--model".into(),
        model.display().to_string(),
    ]
}

#[test]
#[ignore = "needs qemu-x86_64 (apt-get install qemu-user): cft under emulated CPUs without AVX-512"]
fn the_same_bytes_on_every_avx2_cpu_and_thread_count() {
    let qemu = Command::new("qemu-x86_64").arg("--version").output();
    assert!(
        qemu.is_ok_and(|o| o.status.success()),
        "qemu-x86_64 is not installed here: `apt-get install qemu-user`"
    );
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    let made = cft()
        .args(["check", "make-model", "--shape", "tiny"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");

    let mut native = cft();
    native.args(check_bytes(&model));
    let expected = digests(native, "native");
    for threads in ["1", "2"] {
        let mut c = cft();
        c.args(check_bytes(&model))
            .env("RAYON_NUM_THREADS", threads);
        let got = digests(c, &format!("native, {threads} threads"));
        assert_eq!(got, expected, "{threads} threads");
    }
    for cpu in ["EPYC-Rome", "Haswell"] {
        let mut c = Command::new("qemu-x86_64");
        c.args(["-cpu", cpu, env!("CARGO_BIN_EXE_cft")])
            .args(check_bytes(&model));
        let got = digests(c, cpu);
        assert_eq!(got, expected, "under qemu-x86_64 -cpu {cpu}");
    }
}
