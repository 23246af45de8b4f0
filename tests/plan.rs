//! Planning: deduplication on the shipped manifests, and exact invalidation after an edit.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use cft::cache::{Cache, Snapshot};
use cft::exec::{self, NoEvents, Options};
use cft::plan::{self, Plan, Status};

fn plan_of(path: &Path) -> Plan {
    let exp = cft::manifest::load(path).unwrap();
    plan::build(&exp, &Snapshot::default()).unwrap()
}

#[test]
fn table2_shares_one_greedy_pass_and_two_rollout_stages() {
    let plan = plan_of(Path::new("experiments/table2.toml"));
    assert_eq!(plan.count("greedy"), 1);
    assert_eq!(
        plan.count("rollout"),
        2,
        "Strict-3, Union and Graded need j=2,3; Strict-2 reuses j=2"
    );
    assert_eq!(plan.count("criticality"), 4);
    assert_eq!(plan.count("train"), 5 * 9);
    assert_eq!(plan.count("dataset"), 1 + 11);
    assert_eq!(plan.count("eval"), (5 * 9 + 1) * 11);
    assert_eq!(plan.count("report"), 1);
    // Union and Graded are present, so rank 3 is rolled out everywhere, not only where 2 failed.
    let r3 = plan
        .graph
        .node_weights()
        .find(|s| s.label.ends_with("j=3"))
        .unwrap();
    assert_eq!(r3.params["only_where_previous_failed"], false);
    // The manifests name models that are not here: the plan says so instead of failing.
    assert!(
        plan.missing
            .iter()
            .any(|m| m.written == "../models/Qwen2.5-7B")
    );
}

#[test]
fn table1_shares_token_statistics_between_entropy_and_attention() {
    let plan = plan_of(Path::new("experiments/table1.toml"));
    assert_eq!(plan.count("greedy"), 5);
    assert_eq!(plan.count("token-stats"), 5);
    assert_eq!(plan.count("selection"), 10);
    assert_eq!(plan.count("train"), 5 * 5 * 9);
    // Every model states its prompt, and that is what its annotation and evaluation use.
    for s in plan
        .graph
        .node_weights()
        .filter(|s| ["greedy", "rollout", "eval"].contains(&s.kind.name()))
    {
        assert_eq!(s.params["template"], "qwen25-math-cot", "{}", s.label);
    }
    // Only Strict rules: rank 3 runs only where rank 2 failed, so it reads rank 2's output.
    for r3 in plan
        .graph
        .node_weights()
        .filter(|s| s.label.ends_with("j=3"))
    {
        assert_eq!(r3.params["only_where_previous_failed"], true);
        let inputs: Vec<&str> = r3
            .inputs
            .iter()
            .map(|k| plan.get(k).unwrap().kind.name())
            .collect();
        assert_eq!(inputs, ["greedy", "rollout"]);
    }
}

/// `match_scope` is in the selection's key: the paper manifests rank globally, and without
/// the key the same manifest selects per example, in selections of their own, while the
/// stages they read are shared.
#[test]
fn match_scope_enters_the_selection_key() {
    let t1 = plan_of(Path::new("experiments/table1.toml"));
    let dir = tempfile::tempdir().unwrap();
    for file in ["paper-base.toml", "table1.toml"] {
        let text = std::fs::read_to_string(Path::new("experiments").join(file)).unwrap();
        support::write(
            dir.path(),
            file,
            &text.replace("match_scope = \"global\"\n", ""),
        );
    }
    let default = plan_of(&dir.path().join("table1.toml"));
    let selections = |p: &Plan| -> Vec<(String, String, String)> {
        let mut v: Vec<_> = p
            .graph
            .node_weights()
            .filter(|s| s.kind == "selection")
            .map(|s| {
                (
                    s.label.clone(),
                    s.params["match_scope"].as_str().unwrap_or("").to_string(),
                    s.key.clone(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let (global, per_example) = (selections(&t1), selections(&default));
    assert_eq!(global.len(), 10);
    assert!(global.iter().all(|s| s.1 == "global"), "{global:?}");
    assert!(
        per_example.iter().all(|s| s.1 == "example"),
        "{per_example:?}"
    );
    for (g, e) in global.iter().zip(&per_example) {
        assert_eq!(g.0, e.0);
        assert_ne!(g.2, e.2, "{} has the same key in both scopes", g.0);
    }
    let keys = |p: &Plan, kind: &str| -> HashSet<String> {
        p.graph
            .node_weights()
            .filter(|s| s.kind == kind)
            .map(|s| s.key.clone())
            .collect()
    };
    for kind in ["token-stats", "criticality", "greedy"] {
        assert_eq!(keys(&t1, kind), keys(&default, kind), "{kind} is shared");
    }
}

/// A model's own `template` is the prompt of its greedy pass, its rollouts and every one of
/// its evaluations; the other models keep `[annotate]`'s and `[eval]`'s, and their stages
/// are unchanged by it.
#[test]
fn a_model_template_overrides_annotation_and_evaluation_prompts_of_that_model_only() {
    let dir = tempfile::tempdir().unwrap();
    let text = |own: &str| {
        format!(
            r#"
[experiment]
name = "t"
[[model]]
name = "llama"
path = "llama"
{own}
[[model]]
name = "qwen"
path = "qwen"
[data.train]
synthetic = {{ split = "train", n = 10 }}
[annotate]
template = "qwen25-math-cot"
[[method]]
name = "strict3"
kind = "cft"
rule = "strict"
k = 3
[eval]
template = "qwen-boxed"
benchmarks = [{{ name = "toy", synthetic = {{ split = "test", n = 5 }} }}]
"#
        )
    };
    let with = plan_of(&support::write(
        dir.path(),
        "a.toml",
        &text("template = \"cot\""),
    ));
    let without = plan_of(&support::write(dir.path(), "b.toml", &text("")));
    let template = |p: &Plan, label: &str| -> (String, String) {
        let s = p.graph.node_weights().find(|s| s.label == label).unwrap();
        (
            s.params["template"].as_str().unwrap().to_string(),
            s.key.clone(),
        )
    };
    for (label, own, default) in [
        ("greedy llama", "cot", "qwen25-math-cot"),
        ("rollout llama j=2", "cot", "qwen25-math-cot"),
        ("eval llama base toy", "cot", "qwen-boxed"),
        ("eval llama strict3 default toy", "cot", "qwen-boxed"),
    ] {
        assert_eq!(template(&with, label).0, own, "{label}");
        assert_eq!(template(&without, label).0, default, "{label}");
    }
    for label in [
        "greedy qwen",
        "rollout qwen j=3",
        "eval qwen strict3 default toy",
    ] {
        assert_eq!(template(&with, label), template(&without, label), "{label}");
    }
}

#[test]
fn table6_differs_from_table1_only_in_training_and_what_follows() {
    let t1 = plan_of(Path::new("experiments/table1.toml"));
    let t6 = plan_of(Path::new("experiments/table6-lora.toml"));
    let keys = |p: &Plan, kind: &str| -> HashSet<String> {
        p.graph
            .node_weights()
            .filter(|s| s.kind == kind)
            .map(|s| s.key.clone())
            .collect()
    };
    for kind in [
        "dataset",
        "greedy",
        "rollout",
        "criticality",
        "token-stats",
        "selection",
    ] {
        assert_eq!(keys(&t1, kind), keys(&t6, kind), "{kind} stages are shared");
    }
    assert!(keys(&t1, "train").is_disjoint(&keys(&t6, "train")));
    let train = t6.graph.node_weights().find(|s| s.kind == "train").unwrap();
    assert_eq!(train.params["adapter"]["kind"], "lora");
    assert_eq!(train.params["adapter"]["rank"], 16);
}

#[test]
fn plan_json_has_the_documented_shape() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cft"))
        .args(["plan", "experiments/table2.toml", "--json", "--cache"])
        .arg(tempfile::tempdir().unwrap().path().join("c"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stages = v["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 572);
    let kinds: HashSet<&str> = plan::KINDS.into_iter().collect();
    let keys: HashSet<&str> = stages.iter().map(|s| s["key"].as_str().unwrap()).collect();
    for s in stages {
        assert!(kinds.contains(s["kind"].as_str().unwrap()));
        assert!(
            ["cached", "pending", "running", "failed"].contains(&s["status"].as_str().unwrap())
        );
        assert!(s["label"].is_string());
        for d in s["deps"].as_array().unwrap() {
            assert!(
                keys.contains(d.as_str().unwrap()),
                "deps name stages of the plan"
            );
        }
    }
}

/// Runs a manifest's plan with echo stages; returns how many stages ran.
fn run_echo(cache: &Cache, manifest: &Path) -> usize {
    let counter = support::leak_counter();
    let exp = cft::manifest::load(manifest).unwrap();
    let plan = plan::build(&exp, cache).unwrap();
    let stop = AtomicBool::new(false);
    let summary = exec::run(
        &plan,
        cache,
        &exec::Launcher::Threads(&support::echo_registry(counter)),
        &NoEvents,
        &stop,
        &Options::default(),
    )
    .unwrap();
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    assert_eq!(summary.ran, counter.load(Ordering::SeqCst));
    summary.ran
}

fn status_by_label(cache: &Cache, manifest: &Path) -> HashMap<String, (Status, String)> {
    let exp = cft::manifest::load(manifest).unwrap();
    let plan = plan::build(&exp, cache).unwrap();
    let st = plan::statuses(&plan, cache, false).unwrap();
    plan.graph
        .node_weights()
        .map(|s| (s.label.clone(), (st[&s.key].status, st[&s.key].why.clone())))
        .collect()
}

#[test]
fn a_parameter_change_invalidates_exactly_what_depends_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = support::toy_manifest(dir.path(), "[1e-3, 2e-3]");
    let cache = Cache::open(&dir.path().join("cache"), "test").unwrap();
    let total = run_echo(&cache, &manifest);
    assert_eq!(
        run_echo(&cache, &manifest),
        0,
        "a finished manifest runs nothing"
    );

    // A scalar change (epochs) makes every training cell stale, with the reason, and their
    // evaluations and the report; nothing upstream of training.
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("[train]\n", "[train]\nepochs = 4\n");
    std::fs::write(&manifest, text).unwrap();
    let st = status_by_label(&cache, &manifest);
    let pending: Vec<&String> = st
        .iter()
        .filter(|(_, (s, _))| *s != Status::Cached)
        .map(|(l, _)| l)
        .collect();
    let trains = pending.iter().filter(|l| l.starts_with("train ")).count();
    let evals = pending.iter().filter(|l| l.starts_with("eval ")).count();
    assert_eq!(
        (trains, evals, pending.len()),
        (12, 12, 12 + 12 + 1),
        "{pending:?}"
    );
    let (_, why) = &st["train tiny sft lr1e-3-bs4"];
    assert_eq!(why, "stale: params changed: hparams.epochs 3 → 4");
    let (_, why) = &st["eval tiny sft lr1e-3-bs4 toy-test"];
    assert!(
        why.starts_with("stale: input `train tiny sft lr1e-3-bs4` changed"),
        "{why}"
    );
    assert_eq!(st["eval tiny base toy-test"].0, Status::Cached);
    assert_eq!(run_echo(&cache, &manifest), 25);

    // A grid change: only the new cells (2 per method), their evals and the report run.
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("[1e-3, 2e-3]", "[1e-3, 5e-3]");
    std::fs::write(&manifest, text).unwrap();
    let st = status_by_label(&cache, &manifest);
    assert_eq!(st["train tiny strict3 lr5e-3-bs8"].1, "not run yet");
    assert_eq!(st["train tiny strict3 lr1e-3-bs8"].0, Status::Cached);
    assert_eq!(run_echo(&cache, &manifest), 3 * 2 + 3 * 2 + 1);
    assert!(total > 25);
}

#[test]
fn cache_gc_keeps_what_the_named_manifests_reference() {
    let dir = tempfile::tempdir().unwrap();
    let a_dir = dir.path().join("a");
    let b_dir = dir.path().join("b");
    let a = support::toy_manifest(&a_dir, "[1e-3, 2e-3]");
    let b = support::toy_manifest(&b_dir, "[1e-3, 5e-3]");
    let cache_dir = dir.path().join("cache");
    {
        let cache = Cache::open(&cache_dir, "test").unwrap();
        run_echo(&cache, &a);
        assert_eq!(
            run_echo(&cache, &b),
            3 * 2 + 3 * 2 + 1,
            "b shares all but its new cells"
        );
    }
    let gc = |yes: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cft"));
        cmd.args([
            "cache",
            "gc",
            a.to_str().unwrap(),
            "--cache",
            cache_dir.to_str().unwrap(),
        ]);
        if yes {
            cmd.arg("--yes");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listing = gc(false);
    assert!(listing.contains("dry run: 13 stages"), "{listing}");
    assert!(
        listing.contains("toy/train tiny sft lr5e-3-bs4"),
        "{listing}"
    );
    let removed = gc(true);
    assert!(removed.contains("removed 13 stages"), "{removed}");

    let cache = Cache::open(&cache_dir, "test").unwrap();
    let st_a = status_by_label(&cache, &a);
    assert!(
        st_a.values().all(|(s, _)| *s == Status::Cached),
        "a keeps everything"
    );
    let st_b = status_by_label(&cache, &b);
    assert_eq!(
        st_b.values().filter(|(s, _)| *s != Status::Cached).count(),
        13
    );
}

/// The paper's manifests train as OpenRLHF's SFT trainer does where the paper is silent
/// (`experiments/paper-base.toml`); table6-lora inherits it through table1.
#[test]
fn paper_manifests_take_openrlhf_training_recipe() {
    for manifest in ["table1", "table2", "table6-lora"] {
        let plan = plan_of(Path::new(&format!("experiments/{manifest}.toml")));
        let mut trains = plan.graph.node_weights().filter(|s| s.kind == "train");
        let train = trains.next().unwrap();
        let hp = &train.params["hparams"];
        assert_eq!(hp["adam_beta1"], 0.9, "{manifest}");
        assert_eq!(hp["adam_beta2"], 0.95, "{manifest}");
        assert_eq!(hp["min_lr_ratio"], 0.1, "{manifest}");
        assert_eq!(hp["schedule"], "cosine", "{manifest}");
        assert_eq!(hp["warmup_ratio"], 0.03, "{manifest}");
        assert_eq!(hp["loss_normalization"], "micro-batch", "{manifest}");
        assert_eq!(hp["last_batch"], "drop", "{manifest}");
        assert_eq!(hp["append_eos"], true, "{manifest}");
    }
}

/// `[annotate] draft_tokens` changes how branches decode, not what they say: it reaches the
/// rollout stages as a binding (default 0: none) and leaves every key as it was.
#[test]
fn draft_tokens_is_a_binding_of_the_rollouts_not_part_of_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string("experiments/quickstart.toml").unwrap();
    let with = text.replacen("[annotate]\n", "[annotate]\ndraft_tokens = 8\n", 1);
    assert_ne!(with, text, "the quickstart has an [annotate] table");
    let path = dir.path().join("quickstart.toml");
    std::fs::write(&path, with).unwrap();
    let (plain, on) = (
        plan_of(Path::new("experiments/quickstart.toml")),
        plan_of(&path),
    );
    let keys = |p: &Plan| p.order().iter().map(|s| s.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&plain), keys(&on));
    let drafts = |p: &Plan| -> Vec<serde_json::Value> {
        p.order()
            .iter()
            .filter(|s| s.kind.name() == "rollout")
            .map(|s| s.bindings["draft_tokens"].clone())
            .collect()
    };
    assert_eq!(drafts(&plain), vec![serde_json::json!(0); 2]);
    assert_eq!(drafts(&on), vec![serde_json::json!(8); 2]);
}
