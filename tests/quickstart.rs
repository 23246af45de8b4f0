//! The quickstart, reduced to minutes: `experiments/quickstart.toml` with a smaller toy model,
//! fewer questions and one learning rate runs end to end through the real binary (pretrain,
//! greedy, rollouts, criticality, token statistics, selections, nine fine-tunings,
//! evaluation, report); a second run reuses everything; runs with 2 and 4 workers give the
//! same bytes as one; and a run whose coordinator is killed with `kill -9` at several points,
//! whose workers are killed, and which is stopped with Ctrl-C, ends with the same stage outputs
//! and a byte-identical report, no stage having run in two workers at once.

mod reduced;
mod support;

use reduced::{cft, output, reduced_manifest, stages};

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

/// The bytes of every stage output of the cache (`support::results`). Timings live in
/// metrics, not in outputs, so two runs of the same manifest must agree on all of it.
fn outputs(cache: &Path) -> Vec<(String, String, Vec<u8>)> {
    support::results(&cft::cache::Cache::open(cache, "test").unwrap())
}

/// What to do to a run once a stage of some kind has begun.
#[derive(Clone, Copy, Debug)]
enum Disturb {
    /// SIGKILL the coordinator (its workers live on).
    KillCoordinator,
    /// SIGKILL the worker running the stage (the coordinator starts the stage again).
    KillWorker,
    /// SIGINT the coordinator, as Ctrl-C does: it stops its workers after their item in flight.
    Interrupt,
}

/// Runs `cft run --jobs N` and, `after` the first stage of `kind` begins (its progress lines
/// name it), disturbs it. Returns the pids of workers it killed, or `None` if the run
/// finished first.
fn disturb(
    manifest: &Path,
    cache: &Path,
    jobs: usize,
    kind: &str,
    after: Duration,
    how: Disturb,
) -> Option<Vec<u32>> {
    let mut child = cft(&["run", "--jobs", &jobs.to_string()], manifest, cache)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Progress goes to stderr: plain lines when it is not a terminal.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut begun = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        // "[6/52] greedy toy"
        begun = line.starts_with('[')
            && line
                .split_once("] ")
                .is_some_and(|(_, rest)| rest.starts_with(&format!("{kind} ")));
        if begun {
            break;
        }
    }
    if !begun {
        child.wait().unwrap();
        return None;
    }
    std::thread::sleep(after);
    if child.try_wait().unwrap().is_some() {
        return None;
    }
    let mut killed = Vec::new();
    match how {
        Disturb::KillCoordinator => {
            child.kill().unwrap(); // SIGKILL: no chance to clean up
            child.wait().unwrap();
        }
        Disturb::KillWorker => {
            let files = cft::cache::Files::at(cache);
            let running = files.work_keys().into_iter().find_map(|k| {
                let work = files.work(&k);
                let task = work.task().ok()?;
                let lease = work.lease_holder()?;
                (task.spec.kind == kind).then_some((task.spec.label, lease))
            });
            let Some((label, lease)) = running else {
                child.kill().unwrap();
                child.wait().unwrap();
                return None;
            };
            // SAFETY: kill(2) of the worker process the lease names.
            unsafe { libc::kill(lease.pid as i32, libc::SIGKILL) };
            killed.push(lease.pid);
            // The coordinator sees its worker die and starts the stage again; then the
            // coordinator is killed too, leaving the new worker to the next run.
            let again = lines
                .by_ref()
                .map_while(Result::ok)
                .any(|line| line.starts_with('[') && line.contains(&format!("] {label} ")));
            assert!(again, "{label} was not started again after its worker died");
            child.kill().unwrap();
            child.wait().unwrap();
        }
        Disturb::Interrupt => {
            // SAFETY: kill(2) of the child process this test started and has not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            std::thread::spawn(move || for _ in lines.by_ref() {});
            let status = child.wait().unwrap();
            assert_eq!(status.code(), Some(130), "interrupted runs exit 130");
            // It waited for its workers: none is left running.
            let files = cft::cache::Files::at(cache);
            for k in files.work_keys() {
                assert_eq!(
                    files.work(&k).lease_holder(),
                    None,
                    "worker of {k} still runs"
                );
            }
        }
    }
    Some(killed)
}

/// Checks `log/workers.jsonl`: no stage started in a worker while another worker (other than
/// one the test killed) still ran it.
fn no_stage_ran_twice_at_once(cache: &Path, killed: &[u32]) {
    let text = std::fs::read_to_string(cache.join("log/workers.jsonl")).unwrap();
    let mut running: std::collections::HashMap<String, u64> = Default::default();
    let mut starts = 0;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let key = v["key"].as_str().unwrap().to_string();
        let pid = v["pid"].as_u64().unwrap();
        match v["event"].as_str().unwrap() {
            "start" => {
                starts += 1;
                if let Some(other) = running.insert(key.clone(), pid) {
                    assert!(
                        killed.contains(&(other as u32)),
                        "stage {key} started in worker {pid} while worker {other} ran it"
                    );
                }
            }
            _ => {
                running.remove(&key);
            }
        }
    }
    assert!(starts > 0, "the journal records the workers");
}

#[test]
fn reduced_quickstart_runs_end_to_end_reuses_its_cache_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = reduced_manifest(dir.path());
    let cache_a = dir.path().join("cache-a");

    // 1. From a clean cache, uninterrupted: every stage runs and the table is printed.
    let out = output(cft(&["run", "--quiet"], &manifest, &cache_a));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    for label in [
        "SFT", "Union", "Graded", "Strict-2", "Strict-3", "DFT", "Entropy", "Attn", "Random",
    ] {
        assert!(
            stdout.contains(&format!("| {label} ")),
            "{label}:\n{stdout}"
        );
    }
    let all = stages(&manifest, &cache_a);
    let count = |kind: &str| all.iter().filter(|s| s["kind"] == kind).count();
    assert!(all.iter().all(|s| s["status"] == "cached"), "{all:?}");
    // 4 datasets (corpus, train, two benchmarks); one greedy pass; rollouts of ranks 2 and 3
    // shared by the four CFT rules; one token-statistics stage for Entropy and Attention;
    // 9 fine-tunings; 2 benchmarks x (9 checkpoints + the base model).
    let expected = [
        ("dataset", 4),
        ("pretrain", 1),
        ("greedy", 1),
        ("rollout", 2),
        ("criticality", 4),
        ("token-stats", 1),
        ("selection", 3),
        ("train", 9),
        ("eval", 20),
        ("report", 1),
    ];
    for (kind, n) in expected {
        assert_eq!(count(kind), n, "{kind}");
    }
    assert_eq!(all.len(), expected.iter().map(|(_, n)| n).sum::<usize>());

    // The report states what the toy run shows.
    let report = output(cft(&["report", "--format", "md"], &manifest, &cache_a));
    let report_a = report.stdout;
    let text = String::from_utf8_lossy(&report_a).to_string();
    for needle in [
        "Greedy decoding and annotation (Table 4)",
        "Pass@N (Figure 2)",
        "Critical ratio (%)",
        "| **toy** |", // the base model's row
    ] {
        assert!(text.contains(needle), "{needle}:\n{text}");
    }
    use cft::cache::Store;
    let greedy = cft::cache::Cache::open(&cache_a, "test")
        .unwrap()
        .records()
        .unwrap()
        .into_iter()
        .find(|r| r.kind == "greedy")
        .unwrap();
    let correct = greedy.metrics["correct"].as_u64().unwrap();
    assert!(
        correct > 0 && correct < 48,
        "the toy model should answer some but not all of the 48 questions: {correct}"
    );

    // The evaluations of a checkpoint on both benchmarks ran in one worker that loaded the
    // model once (one worker slot: nothing to split for).
    let journal = std::fs::read_to_string(cache_a.join("log/workers.jsonl")).unwrap();
    let events: Vec<Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut evals_per_pid: std::collections::HashMap<u64, usize> = Default::default();
    for e in events.iter().filter(|e| e["event"] == "start") {
        if e["label"].as_str().unwrap().starts_with("eval ") {
            *evals_per_pid.entry(e["pid"].as_u64().unwrap()).or_default() += 1;
        }
    }
    let grouped: Vec<u64> = evals_per_pid
        .iter()
        .filter(|(_, n)| **n >= 2)
        .map(|(pid, _)| *pid)
        .collect();
    assert!(!grouped.is_empty(), "no worker ran two evaluations");
    for pid in grouped {
        let loads = events
            .iter()
            .filter(|e| e["event"] == "end" && e["pid"] == pid)
            .filter_map(|e| e["model_loads"].as_u64())
            .max();
        assert_eq!(
            loads,
            Some(1),
            "worker {pid} loaded its model more than once"
        );
    }

    // 2. Running it again does nothing.
    let out = output(cft(&["run", "--quiet"], &manifest, &cache_a));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("nothing to do") && stdout.contains("| Strict-3 "),
        "{stdout}"
    );
    let before = outputs(&cache_a);

    // Exports: the report's chosen Strict-3 checkpoint and the pretrained base model as HF
    // directories, which score exactly as the checkpoints in the cache do.
    let exported = dir.path().join("strict3");
    let out_arg = exported.to_str().unwrap();
    let export_strict3 = || {
        let args = ["export", "--method", "strict3", "--best", "--out", out_arg];
        cft(&args, &manifest, &cache_a)
    };
    let out = output(export_strict3());
    assert!(String::from_utf8_lossy(&out.stdout).contains("generation_config.json"));
    let score = |model: &Path| -> Vec<u8> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cft"))
            .args(["score", "--ids", "3,17,42,9,100,5", "--json", "--model"])
            .arg(model)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let key = all
        .iter()
        .find(|s| {
            s["kind"] == "train" && s["label"].as_str().is_some_and(|l| l.contains(" strict3 "))
        })
        .and_then(|s| s["key"].as_str())
        .unwrap()
        .to_string();
    assert_eq!(score(&exported), score(&cache_a.join("models").join(&key)));
    // A non-empty folder is refused without --force; the base model exports too.
    let again = export_strict3().output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let base = dir.path().join("base");
    output(cft(
        &["export", "--base", "--out", base.to_str().unwrap()],
        &manifest,
        &cache_a,
    ));
    assert_ne!(
        score(&base),
        score(&exported),
        "the fine-tuning changed the model"
    );
    // The annotated examples: D_correct with every method's weights, one per response token.
    let jsonl = dir.path().join("annotations.jsonl");
    output(cft(
        &["export", "--annotations", "--out", jsonl.to_str().unwrap()],
        &manifest,
        &cache_a,
    ));
    let lines: Vec<Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len() as u64,
        correct,
        "one line per correct greedy response"
    );
    let (mut critical, mut tokens) = (0, 0);
    for l in &lines {
        let n = l["response_ids"].as_array().unwrap().len();
        assert!(
            !l["question"].as_str().unwrap().is_empty() && !l["gold"].as_str().unwrap().is_empty()
        );
        let weights = l["weights"].as_object().unwrap();
        assert_eq!(weights.len(), 9, "every method");
        for (method, w) in weights {
            assert_eq!(w.as_array().unwrap().len(), n, "{method}");
        }
        assert!(weights["sft"].as_array().unwrap().iter().all(|w| *w == 1.0));
        critical += weights["strict3"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| **w != 0.0)
            .count();
        tokens += n;
    }
    assert!(critical > 0 && critical < tokens, "{critical} of {tokens}");
    // The same records as parquet: every field, weights equal as the f32s they are.
    let parquet = dir.path().join("annotations.parquet");
    output(cft(
        &[
            "export",
            "--annotations",
            "--out",
            parquet.to_str().unwrap(),
        ],
        &manifest,
        &cache_a,
    ));
    let rows = cft::eval::records::read_records(&parquet).unwrap();
    assert_eq!(rows.len(), lines.len());
    let as_f32 = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    for ((_, row), line) in rows.iter().zip(&lines) {
        for field in [
            "idx",
            "question",
            "gold",
            "prompt_ids",
            "response_ids",
            "response",
            "pieces",
        ] {
            assert_eq!(
                row[field], line[field],
                "{field} of example {}",
                line["idx"]
            );
        }
        let (ours, theirs) = (
            row["weights"].as_object().unwrap(),
            line["weights"].as_object().unwrap(),
        );
        assert_eq!(ours.len(), theirs.len());
        for (method, w) in theirs {
            assert_eq!(as_f32(&ours[method]), as_f32(w), "{method}");
        }
    }

    // 3. Two and four workers at once: the same bytes as one.
    for jobs in [2, 4] {
        let cache = dir.path().join(format!("cache-jobs{jobs}"));
        output(cft(
            &["run", "--quiet", "--jobs", &jobs.to_string()],
            &manifest,
            &cache,
        ));
        assert!(outputs(&cache) == before, "--jobs {jobs}: outputs differ");
        let report = output(cft(&["report", "--format", "md"], &manifest, &cache)).stdout;
        assert!(report == report_a, "--jobs {jobs}: the report differs");
        no_stage_ran_twice_at_once(&cache, &[]);
    }

    // 4. With two workers, the coordinator killed with SIGKILL inside each kind of long stage
    //    (its workers live on and the next run adopts them), workers killed (their stages
    //    resume from their saved items), and a Ctrl-C; then resumed: the same outputs and the
    //    same report bytes, and no stage ever ran in two workers at once.
    let cache_b = dir.path().join("cache-b");
    let mut disturbed = Vec::new();
    let mut killed = Vec::new();
    for (kind, ms, how) in [
        ("pretrain", 1500, Disturb::KillCoordinator),
        ("pretrain", 1000, Disturb::KillWorker),
        ("greedy", 100, Disturb::KillCoordinator),
        ("rollout", 300, Disturb::KillWorker),
        ("train", 300, Disturb::KillCoordinator),
        ("train", 300, Disturb::Interrupt),
        ("eval", 200, Disturb::KillWorker),
        ("eval", 300, Disturb::KillCoordinator),
    ] {
        if let Some(pids) = disturb(&manifest, &cache_b, 2, kind, Duration::from_millis(ms), how) {
            disturbed.push((kind, how));
            killed.extend(pids);
        }
    }
    eprintln!("disturbed {disturbed:?}; killed workers {killed:?}");
    assert!(disturbed.len() >= 6, "disturbed only {disturbed:?}");
    output(cft(&["run", "--quiet", "--jobs", "2"], &manifest, &cache_b));
    assert!(outputs(&cache_b) == before, "resumed outputs differ");
    let report_b = output(cft(&["report", "--format", "md"], &manifest, &cache_b)).stdout;
    assert!(report_a == report_b, "the resumed report differs");
    no_stage_ran_twice_at_once(&cache_b, &killed);
    assert!(
        !cache_b.join("work").exists()
            || std::fs::read_dir(cache_b.join("work"))
                .unwrap()
                .next()
                .is_none(),
        "every work folder is ingested and removed"
    );
}

/// A LoRA fine-tuning exports as its merged weights with the PEFT adapter beside them, and
/// the export scores exactly as the checkpoint in the cache.
#[test]
fn a_lora_checkpoint_exports_with_its_peft_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let reduced = reduced_manifest(dir.path());
    let manifest = dir.path().join("lora.toml");
    std::fs::write(
        &manifest,
        format!(
            "include = \"{}\"\n[experiment]\nname = \"quickstart-lora\"\n[adapter]\nkind = \"lora\"\nrank = 4\nalpha = 8\n",
            reduced.display()
        ),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    output(cft(
        &["run", "--quiet", "--only", "train"],
        &manifest,
        &cache,
    ));
    // `cft run` keeps the TensorBoard runs current as stages finish, without `cft report`.
    let board = cache.join("reports/quickstart-lora/tensorboard");
    let runs = tree(&board);
    for run in ["toy/pretrain/", "toy/sft/default/", "toy/strict3/default/"] {
        assert!(
            runs.keys()
                .any(|p| p.starts_with(run) && p.contains("tfevents")),
            "{run}: {:?}",
            runs.keys()
        );
    }
    let out = dir.path().join("sft");
    let said = output(cft(
        &["export", "--method", "sft", "--out", out.to_str().unwrap()],
        &manifest,
        &cache,
    ));
    let said = String::from_utf8_lossy(&said.stdout).to_string();
    for file in [
        "model.safetensors",
        "generation_config.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
    ] {
        assert!(out.join(file).is_file(), "{file}: {said}");
    }
    let key = stages(&manifest, &cache)
        .iter()
        .find(|s| s["kind"] == "train" && s["label"].as_str().is_some_and(|l| l.contains(" sft ")))
        .and_then(|s| s["key"].as_str().map(str::to_string))
        .unwrap();
    let merged = std::fs::read(out.join("model.safetensors")).unwrap();
    let cached = std::fs::read(cache.join("models").join(&key).join("model.safetensors")).unwrap();
    assert!(
        merged == cached,
        "the exported weights are the cached checkpoint's"
    );

    // Every reading command works while a run holds the cache: here the run evaluating
    // these checkpoints, which `cache ls` confirms is in progress.
    let mut run = cft(&["run", "--jobs", "1"], &manifest, &cache)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(run.stderr.take().unwrap()).lines();
    let evaluating = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with('[') && l.contains("] eval "));
    assert!(evaluating, "the run evaluated nothing");
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).count());
    let mut ls = std::process::Command::new(env!("CARGO_BIN_EXE_cft"));
    ls.args(["cache", "ls", "--cache"]).arg(&cache);
    let ls = String::from_utf8_lossy(&output(ls).stdout).to_string();
    assert!(ls.contains("a run is in progress"), "{ls}");
    output(cft(&["plan"], &manifest, &cache));
    output(cft(&["status"], &manifest, &cache));
    output(cft(&["report", "--format", "md"], &manifest, &cache));
    let during = dir.path().join("strict3-during");
    output(cft(
        &[
            "export",
            "--method",
            "strict3",
            "--out",
            during.to_str().unwrap(),
        ],
        &manifest,
        &cache,
    ));
    assert!(during.join("adapter/adapter_model.safetensors").is_file());
    // SAFETY: kill(2) of the child this test started and has not reaped.
    unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
    run.wait().unwrap();
    rest.join().unwrap();
    // The files the run brought up to date (appending each evaluation to its cell's file) are
    // the ones `cft report` writes from scratch.
    let live = tree(&board);
    output(cft(&["report", "--format", "md"], &manifest, &cache));
    assert!(
        live == tree(&board),
        "the live TensorBoard files differ from the report's"
    );
}

/// Every file under `dir`, by path relative to it.
fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}
