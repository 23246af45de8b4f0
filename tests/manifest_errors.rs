//! Every manifest error a user can make names the file, line, column and key, before
//! anything runs; `cft plan`/`cft run` exit with code 2 on them.

mod support;

use std::process::Command;

use support::write;

const VALID: &str = r#"
[experiment]
name = "t"
seed = 1

[[model]]
name = "m"
path = "model"

[data.train]
synthetic = { split = "train", n = 10 }

[[method]]
name = "sft"
kind = "sft"

[[method]]
name = "strict3"
kind = "cft"
rule = "strict"
k = 3

[train]
learning_rate = [1e-5, 2e-5]
batch_size = 8
"#;

/// Loads `text` as `m.toml` and returns the error message.
fn error_of(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "m.toml", text);
    match cft::manifest::load(&path) {
        Ok(_) => panic!("manifest unexpectedly valid:\n{text}"),
        Err(e) => e
            .to_string()
            .replace(&dir.path().display().to_string(), "DIR"),
    }
}

#[test]
fn the_base_manifest_is_valid_and_expands_its_grid() {
    let dir = tempfile::tempdir().unwrap();
    let exp = cft::manifest::load(&write(dir.path(), "m.toml", VALID)).unwrap();
    assert_eq!(exp.methods.len(), 2);
    let labels: Vec<&str> = exp.methods[0]
        .cells
        .iter()
        .map(|c| c.label.as_str())
        .collect();
    assert_eq!(labels, ["lr1e-5", "lr2e-5"]);
}

#[test]
fn unknown_key_suggests_the_closest() {
    let msg = error_of(&VALID.replace("batch_size = 8", "batch_size = 8\nlerning_rate = 1"));
    assert!(msg.contains("DIR/m.toml:26:1"), "{msg}");
    assert!(msg.contains("`train.lerning_rate`"), "{msg}");
    assert!(msg.contains("did you mean `learning_rate`?"), "{msg}");

    let msg = error_of(&VALID.replace("kind = \"sft\"", "kind = \"sft\"\nrulle = \"strict\""));
    assert!(
        msg.contains("m.toml:16:1")
            && msg.contains("`method[0].rulle`")
            && msg.contains("did you mean `rule`?"),
        "{msg}"
    );

    let msg = error_of(&VALID.replace("[experiment]", "[experimnt]"));
    assert!(
        msg.contains("m.toml:2:2")
            && msg.contains("`experimnt`")
            && msg.contains("did you mean `experiment`?"),
        "{msg}"
    );
}

#[test]
fn wrong_types_name_the_expected_type() {
    let msg = error_of(&VALID.replace("batch_size = 8", "batch_size = \"eight\""));
    assert!(
        msg.contains("m.toml:25:14") && msg.contains("`train.batch_size`"),
        "{msg}"
    );
    assert!(
        msg.contains("expected an integer") && msg.contains("found a string"),
        "{msg}"
    );

    let msg = error_of(&VALID.replace("seed = 1", "seed = 1.5"));
    assert!(
        msg.contains("m.toml:4:8")
            && msg.contains("`experiment.seed`")
            && msg.contains("found a float"),
        "{msg}"
    );
}

#[test]
fn k_below_two_is_rejected() {
    let msg = error_of(&VALID.replace("k = 3", "k = 1"));
    assert!(
        msg.contains("m.toml:21:5") && msg.contains("`method[1].k`") && msg.contains("at least 2"),
        "{msg}"
    );
}

#[test]
fn empty_grid_is_rejected() {
    let msg = error_of(&VALID.replace("learning_rate = [1e-5, 2e-5]", "learning_rate = []"));
    assert!(
        msg.contains("m.toml:24:17")
            && msg.contains("`train.learning_rate`")
            && msg.contains("empty grid"),
        "{msg}"
    );
}

#[test]
fn rule_without_k_is_rejected() {
    let msg = error_of(&VALID.replace("k = 3\n", ""));
    assert!(
        msg.contains("m.toml:20:8") && msg.contains("`method[1].k`") && msg.contains("needs `k`"),
        "{msg}"
    );
}

#[test]
fn rule_on_a_non_cft_method_is_rejected() {
    let msg = error_of(&VALID.replace("kind = \"sft\"", "kind = \"sft\"\nrule = \"union\""));
    assert!(
        msg.contains("`method[0].rule`") && msg.contains("only `cft` methods"),
        "{msg}"
    );
}

#[test]
fn selection_matched_to_a_missing_method_is_rejected() {
    let text =
        format!("{VALID}\n[[method]]\nname = \"ent\"\nkind = \"entropy\"\nmatch = \"strict2\"\n");
    let msg = error_of(&text);
    assert!(
        msg.contains("m.toml:30:9") && msg.contains("`method[2].match`"),
        "{msg}"
    );
    assert!(
        msg.contains("no method named `strict2`") && msg.contains("did you mean `strict3`?"),
        "{msg}"
    );

    let text =
        format!("{VALID}\n[[method]]\nname = \"ent\"\nkind = \"entropy\"\nmatch = \"sft\"\n");
    let msg = error_of(&text);
    assert!(
        msg.contains("`method[2].match`") && msg.contains("not a `cft` method"),
        "{msg}"
    );

    let text = format!("{VALID}\n[[method]]\nname = \"ent\"\nkind = \"entropy\"\n");
    let msg = error_of(&text);
    assert!(
        msg.contains("`method[2].match`") && msg.contains("needs `match`"),
        "{msg}"
    );
}

#[test]
fn match_scope_is_checked_where_it_is_written() {
    let ent = "\n[[method]]\nname = \"ent\"\nkind = \"entropy\"\nmatch = \"strict3\"\n";
    let msg = error_of(&format!("{VALID}{ent}match_scope = \"globl\"\n"));
    assert!(
        msg.contains("m.toml:31:15")
            && msg.contains("`method[2].match_scope`")
            && msg.contains("did you mean `global`?"),
        "{msg}"
    );
    // Random selections draw positions; there is no score to rank globally.
    let text = format!(
        "{VALID}\n[[method]]\nname = \"rnd\"\nkind = \"random\"\nmatch = \"strict3\"\nmatch_scope = \"global\"\n"
    );
    let msg = error_of(&text);
    assert!(
        msg.contains("m.toml:31:15")
            && msg.contains("`method[2].match_scope`")
            && msg.contains("only entropy and attention"),
        "{msg}"
    );
}

#[test]
fn a_model_template_is_one_of_the_templates() {
    let msg = error_of(&VALID.replace(
        "path = \"model\"",
        "path = \"model\"\ntemplate = \"qwen2.5-math-cot\"",
    ));
    assert!(
        msg.contains("m.toml:9:12")
            && msg.contains("`model[0].template`")
            && msg.contains("did you mean `qwen25-math-cot`?"),
        "{msg}"
    );
}

#[test]
fn unknown_choices_and_benchmarks_suggest() {
    let msg = error_of(&VALID.replace("rule = \"strict\"", "rule = \"strictt\""));
    assert!(
        msg.contains("m.toml:20:8") && msg.contains("did you mean `strict`?"),
        "{msg}"
    );
    let msg = error_of(&format!(
        "{VALID}\n[eval]\ndata_dir = \".\"\nbenchmarks = [\"gsm8k\", \"gsmk8\"]\n"
    ));
    assert!(
        msg.contains("m.toml:29:24")
            && msg.contains("`eval.benchmarks[1]`")
            && msg.contains("(did you mean `gsm8k`?)"),
        "{msg}"
    );
}

#[test]
fn missing_include_is_an_error_at_the_include_line() {
    let msg = error_of(&format!("include = \"base.toml\"\n{VALID}"));
    assert!(
        msg.contains("m.toml:1:11") && msg.contains("`include`") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn syntax_errors_have_positions() {
    let msg = error_of("[experiment]\nname = \"t\nseed = 1\n");
    assert!(msg.contains("m.toml:2:"), "{msg}");
}

#[test]
fn errors_in_an_included_file_name_that_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "base.toml", "[train]\nepochs = 0\n");
    let path = write(
        dir.path(),
        "m.toml",
        &format!("include = \"base.toml\"\n{}", VALID),
    );
    let msg = cft::manifest::load(&path).unwrap_err().to_string();
    assert!(
        msg.contains("base.toml:2:10")
            && msg.contains("`train.epochs`")
            && msg.contains("at least 1"),
        "{msg}"
    );
}

#[test]
fn includes_merge_with_later_values_winning() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "base.toml",
        "[train]\nepochs = 5\nbatch_size = [16, 32]\nlearning_rate = 1e-4\n",
    );
    let path = write(
        dir.path(),
        "m.toml",
        &format!("include = \"base.toml\"\n{VALID}"),
    );
    let exp = cft::manifest::load(&path).unwrap();
    let cells = &exp.methods[0].cells;
    // m.toml overrides learning_rate (a list) and batch_size; epochs comes from base.toml.
    assert_eq!(cells.len(), 2);
    assert!(
        cells
            .iter()
            .all(|c| c.params.epochs == 5 && c.params.batch_size == 8)
    );
}

#[test]
fn include_cycles_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", "include = \"b.toml\"\n");
    write(dir.path(), "b.toml", "include = \"a.toml\"\n");
    let msg = cft::manifest::load(&dir.path().join("a.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("b.toml:1:11") && msg.contains("includes itself"),
        "{msg}"
    );
}

#[test]
fn bad_manifest_exits_2_and_missing_inputs_block_run_but_not_plan() {
    let dir = tempfile::tempdir().unwrap();
    let cft = env!("CARGO_BIN_EXE_cft");
    let bad = write(dir.path(), "bad.toml", &VALID.replace("k = 3", "k = 0"));
    let out = Command::new(cft)
        .args(["plan", bad.to_str().unwrap(), "--cache"])
        .arg(dir.path().join("c"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml:21:5"));

    // `path = "model"` does not exist: plan lists it, run refuses with exit 2 naming it.
    let good = write(dir.path(), "good.toml", VALID);
    let out = Command::new(cft)
        .args(["plan", good.to_str().unwrap(), "--cache"])
        .arg(dir.path().join("c"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("missing inputs") && stdout.contains("good.toml:8:8 `model[0].path`"),
        "{stdout}"
    );
    let out = Command::new(cft)
        .args(["run", good.to_str().unwrap(), "--cache"])
        .arg(dir.path().join("c"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("good.toml:8:8")
            && stderr.contains("`model[0].path`")
            && stderr.contains("does not exist"),
        "{stderr}"
    );
}

/// The training recipe's keys (`min_lr_ratio`, `loss_normalization`, `last_batch`,
/// `append_eos`): a bad value names file, line, column and key.
#[test]
fn training_recipe_values_are_checked() {
    let with = |extra: &str| {
        error_of(&VALID.replace("batch_size = 8", &format!("batch_size = 8\n{extra}")))
    };
    let msg = with("loss_normalization = \"mean\"");
    assert!(
        msg.contains("m.toml:26:22")
            && msg.contains("`train.loss_normalization`")
            && msg.contains("not one of batch, micro-batch, dataset"),
        "{msg}"
    );
    let msg = with("last_batch = \"skip\"");
    assert!(
        msg.contains("m.toml:26:14")
            && msg.contains("`train.last_batch`")
            && msg.contains("not one of short, drop"),
        "{msg}"
    );
    let msg = with("append_eos = \"yes\"");
    assert!(
        msg.contains("m.toml:26:14")
            && msg.contains("`train.append_eos`")
            && msg.contains("expected true or false")
            && msg.contains("found a string"),
        "{msg}"
    );
    let msg = with("min_lr_ratio = 1.5");
    assert!(
        msg.contains("m.toml:26:16")
            && msg.contains("`train.min_lr_ratio`")
            && msg.contains("in [0, 1)"),
        "{msg}"
    );
    let msg = with("schedule = \"linear\"\nmin_lr_ratio = 0.1");
    assert!(
        msg.contains("m.toml:27:16")
            && msg.contains("`train.min_lr_ratio`")
            && msg.contains("needs schedule = \"cosine\""),
        "{msg}"
    );
}

/// Like every `[train]` key, the recipe's may be lists that expand into the sweep grid.
#[test]
fn training_recipe_values_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let text = VALID.replace(
        "learning_rate = [1e-5, 2e-5]",
        "learning_rate = 1e-5\nappend_eos = [false, true]\nloss_normalization = [\"micro-batch\", \"dataset\"]",
    );
    let exp = cft::manifest::load(&write(dir.path(), "m.toml", &text)).unwrap();
    let cells = &exp.methods[0].cells;
    let labels: Vec<&str> = cells.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "loss_normalizationmicro-batch-eosfalse",
            "loss_normalizationmicro-batch-eostrue",
            "loss_normalizationdataset-eosfalse",
            "loss_normalizationdataset-eostrue"
        ]
    );
    assert!(cells[1].params.append_eos && !cells[0].params.append_eos);
    // absent keys keep the behaviour from before they existed
    assert_eq!(cells[0].params.min_lr_ratio, 0.0);
    assert_eq!(cells[0].params.last_batch.name(), "short");
    assert_eq!(cells[0].params.adam_beta2, 0.999);
}

/// One pass reports every mistake, one per line, sorted by line, then how many: here a
/// wrong type, a misspelt key, a value out of range and an unknown benchmark, in four
/// different tables.
#[test]
fn every_mistake_is_reported_in_one_pass_sorted_by_line() {
    let text = VALID
        .replace("seed = 1", "seed = \"one\"")
        .replace("kind = \"sft\"", "kind = \"sft\"\nrulle = \"strict\"")
        .replace("k = 3", "k = 1")
        + "\n[eval]\nbenchmarks = [\"gsm8\", \"math\"]\ndata_dir = \"data\"\n";
    let msg = error_of(&text);
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(lines.len(), 5, "{msg}");
    assert!(
        lines[0].starts_with("DIR/m.toml:4:8: `experiment.seed`")
            && lines[0].contains("expected an integer"),
        "{msg}"
    );
    assert!(
        lines[1].starts_with("error: DIR/m.toml:16:1: `method[0].rulle`")
            && lines[1].contains("did you mean `rule`?"),
        "{msg}"
    );
    assert!(
        lines[2].starts_with("error: DIR/m.toml:22:5: `method[1].k`")
            && lines[2].contains("at least 2"),
        "{msg}"
    );
    assert!(
        lines[3].starts_with("error: DIR/m.toml:29:15:")
            && lines[3].contains("`eval.benchmarks[0]`")
            && lines[3].contains("did you mean `gsm8k`?"),
        "{msg}"
    );
    assert_eq!(lines[4], "error: 4 errors in the manifest", "{msg}");
}

/// A wrong value is reported once, not again as the missing key it is then read as; a
/// misspelt table is not reported again as the missing table it was meant to be.
#[test]
fn a_mistake_is_not_reported_twice() {
    let msg = error_of(&VALID.replace("name = \"t\"", "name = 7"));
    assert_eq!(msg.lines().count(), 1, "{msg}");
    assert!(
        msg.contains("`experiment.name`") && msg.contains("expected a string"),
        "{msg}"
    );
    let msg = error_of(&VALID.replace("[data.train]", "[dta.train]"));
    assert_eq!(msg.lines().count(), 1, "{msg}");
    assert!(msg.contains("did you mean `data`?"), "{msg}");
}

/// A shipped base manifest checked on its own names its typos beside what it lacks (the
/// `[[model]]` and `[[method]]` its including manifests add).
#[test]
fn plan_on_a_base_manifest_names_its_typos() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/paper-base.toml"),
    )
    .unwrap();
    let typo = base.replace("max_new_tokens = 1024\n", "max_new_tokns = 1024\n");
    assert_ne!(
        typo, base,
        "paper-base.toml no longer sets annotate.max_new_tokens"
    );
    let path = write(dir.path(), "paper-base.toml", &typo);
    let out = Command::new(env!("CARGO_BIN_EXE_cft"))
        .args(["plan", path.to_str().unwrap(), "--cache"])
        .arg(dir.path().join("c"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`annotate.max_new_tokns`: unknown key; did you mean `max_new_tokens`?"),
        "{stderr}"
    );
    assert!(
        stderr.contains("at least one `[[model]]` is required")
            && stderr.contains("at least one `[[method]]` is required"),
        "{stderr}"
    );
}

/// Paper §5.1-5.2's keys: `responses`, `responses_from` and `score` are checked where they are
/// written.
#[test]
fn sampled_and_transferred_responses_are_checked_where_they_are_written() {
    let method = |body: &str| format!("{VALID}\n[[method]]\nname = \"x\"\n{body}");
    let cases: [(&str, &[&str]); 9] = [
        (
            "kind = \"sft\"\nresponses = \"sampled\"\n",
            &["m.toml:30:13", "`method[2].responses`", "greedy+sampled"],
        ),
        (
            "kind = \"sft\"\nresponses_from = \"mm\"\n",
            &[
                "m.toml:30:18",
                "`method[2].responses_from`",
                "no model named `mm`",
                "did you mean `m`?",
            ],
        ),
        (
            "kind = \"sft\"\nresponses = \"greedy+sampled\"\nresponses_from = \"m\"\n",
            &["`method[2].responses_from`", "not both"],
        ),
        (
            "kind = \"entropy\"\nmatch = \"strict3\"\nresponses = \"greedy+sampled\"\n",
            &["`method[2].responses`", "only sft, dft and cft"],
        ),
        (
            "kind = \"cft\"\nrule = \"strict\"\nk = 3\nresponses = \"greedy+sampled\"\n",
            &["`method[2].score`", "needs `score = { by"],
        ),
        (
            "kind = \"sft\"\nresponses = \"greedy+sampled\"\nscore = { by = \"strict3\" }\n",
            &["`method[2].score`", "only a `cft` method"],
        ),
        (
            "kind = \"cft\"\nrule = \"strict\"\nk = 3\nresponses = \"greedy+sampled\"\nscore = { by = \"strict\" }\n",
            &[
                "`method[2].score.by`",
                "no method named `strict`",
                "did you mean `strict3`?",
            ],
        ),
        (
            "kind = \"cft\"\nrule = \"strict\"\nk = 3\nresponses = \"greedy+sampled\"\nscore = { by = \"sft\" }\n",
            &["`method[2].score.by`", "must be a `cft` method"],
        ),
        (
            "kind = \"cft\"\nrule = \"strict\"\nk = 3\nresponses = \"greedy+sampled\"\nscore = { by = \"strict3\", top = 1.5 }\n",
            &["`method[2].score.top`", "in (0, 1]"],
        ),
    ];
    for (body, wants) in cases {
        let msg = error_of(&method(body));
        for want in wants {
            assert!(msg.contains(want), "{want} not in:\n{msg}\nfor:\n{body}");
        }
    }
    let msg = error_of(&format!(
        "{VALID}\n[sample]\nattempts = 0\ntemperature = 0\n"
    ));
    assert!(msg.contains("`sample.attempts`"), "{msg}");
    // A valid one: the sampled CFT scored by Strict-3's checkpoint, at the paper's 15%.
    let dir = tempfile::tempdir().unwrap();
    let text = method(
        "kind = \"cft\"\nrule = \"strict\"\nk = 3\nresponses = \"greedy+sampled\"\nscore = { by = \"strict3\" }\n",
    );
    let exp = cft::manifest::load(&write(dir.path(), "m.toml", &text)).unwrap();
    let x = exp.method("x").unwrap();
    assert_eq!(x.responses, cft::manifest::Responses::GreedySampled);
    let score = x.score.as_ref().unwrap();
    assert_eq!((score.by.as_str(), score.top), ("strict3", 0.15));
    assert_eq!(exp.sample.attempts, 100);
    assert_eq!(exp.sample.temperature, 1.0);
}
