//! Figure 4 (paper §5.1-5.2) through the binary: the shipped toy manifests
//! `experiments/quickstart-sampled.toml` and `quickstart-transfer.toml`, reduced as the
//! quickstart's tests reduce it, resample, transfer, score, train the four methods of each
//! panel and show them in the report's "Training responses (Figure 4)" table and bar chart.

mod reduced;

use std::path::{Path, PathBuf};

use reduced::{cft, output};
use serde_json::Value;

fn report(manifest: &Path, cache: &Path, name: &str) -> (Value, String, PathBuf) {
    output(cft(&["run", "--quiet", "--jobs", "2"], manifest, cache));
    output(cft(&["report"], manifest, cache));
    let dir = cache.join("reports").join(name);
    let json: Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    (json, md, dir)
}

/// The record of the stage `label` of the manifest's plan.
fn record(manifest: &Path, cache: &Path, label: &str) -> cft::cache::Record {
    use cft::cache::Store;
    let cache = cft::cache::Cache::open(cache, "test").unwrap();
    let exp = cft::manifest::load(manifest).unwrap();
    let plan = cft::plan::build(&exp, &cache).unwrap();
    let spec = plan
        .graph
        .node_weights()
        .find(|s| s.label == label)
        .unwrap_or_else(|| panic!("no stage {label}"));
    cache.record(&spec.key).unwrap().unwrap()
}

/// The cells of a Figure 4 table: per row label, the averages by column.
fn cells(table: &Value) -> Vec<(String, Vec<Option<f64>>)> {
    table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let label = r["label"].as_str().unwrap().to_string();
            let cells = r["cells"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["average"].as_f64())
                .collect();
            (label, cells)
        })
        .collect()
}

#[test]
fn sampled_responses_train_sft_and_cft_and_the_report_draws_figure_4a() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = reduced::reduced("quickstart-sampled.toml", dir.path());
    let cache = dir.path().join("cache");
    let (json, md, report_dir) = report(&manifest, &cache, "quickstart-reduced");
    let tables = json["responses"].as_array().unwrap();
    assert_eq!(tables.len(), 1, "{tables:?}");
    let t = &tables[0];
    assert_eq!(t["model"], "toy");
    assert_eq!(
        t["columns"],
        serde_json::json!(["Greedy", "Greedy + sampled"])
    );
    let cells = cells(t);
    assert_eq!(cells.len(), 2, "{cells:?}");
    for (label, row) in &cells {
        for c in row {
            let c = c.unwrap_or_else(|| panic!("{label}: every cell evaluated"));
            assert!((0.0..=100.0).contains(&c));
        }
    }
    // The sampling: the questions greedy decoding got wrong, how many a sample solved.
    let s = &t["sampling"];
    let (questions, solved) = (
        s["questions"].as_u64().unwrap(),
        s["solved"].as_u64().unwrap(),
    );
    assert!(questions > 0 && solved > 0 && solved <= questions, "{s}");
    assert_eq!(s["limit"], 16);
    let mean = s["attempts_mean"].as_f64().unwrap();
    assert!((1.0..=16.0).contains(&mean), "{s}");
    // The sampled CFT's scored share: the top 15% of each sampled response, rounded up.
    let score = record(&manifest, &cache, "score toy cft-sampled");
    let fraction = score.metrics["fraction"].as_f64().unwrap();
    assert!((0.15..0.5).contains(&fraction), "{}", score.metrics);
    assert_eq!(score.metrics["reused"], false);

    assert!(md.contains("## Training responses (Figure 4)"), "{md}");
    assert!(md.contains("Sampling (§5.1):"), "{md}");
    assert!(
        md.contains(&format!("{solved} of {questions} questions")),
        "{md}"
    );
    assert!(report_dir.join("plots/responses.svg").is_file());
}

/// The reduced quickstart-transfer: the source's and two targets' models made smaller (the
/// targets' differ from the source's in their attention heads or their family); one target's
/// tokenizer is trained as the source's (the same file), the other's on a smaller vocabulary.
fn reduced_transfer(dir: &Path) -> PathBuf {
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/quickstart-transfer.toml");
    let base = reduced::reduced("quickstart-transfer.toml", dir);
    let text = std::fs::read_to_string(&base).unwrap();
    // The reduced file's single [[model]] becomes three.
    let model = |name: &str, vocab: u64, arch: &str, kv: u64| {
        format!(
            r#"
[[model]]
name = "{name}"
[model.toy]
architecture = "{arch}"
hidden_size = 96
num_layers = 2
num_heads = 4
num_kv_heads = {kv}
intermediate_size = 288
max_position = 192
vocab_size = {vocab}
[model.toy.pretrain]
steps = 300
batch_size = 16
learning_rate = 4e-3
warmup_ratio = 0.05
corpus = {{ synthetic = {{ split = "train", n = 4000, seed = 1, max_steps = 1 }} }}
"#
        )
    };
    let start = text.find("[[model]]").unwrap();
    let end = text.find("[data.train]").unwrap();
    let models = [
        model("toy", 384, "llama", 2),
        model("toy-narrow", 384, "llama", 4),
        model("toy-other-bpe", 320, "qwen2", 2),
    ]
    .concat();
    // A target that answers few questions still trains: the short last batch.
    let rest = text[end..].replace("[train]\n", "[train]\nlast_batch = \"short\"\n");
    let text = format!("{}{models}\n{rest}", &text[..start]);
    assert!(text.contains(&shipped.display().to_string()));
    let path = dir.join("quickstart-transfer-reduced.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn transferred_responses_reuse_or_score_and_the_report_draws_figure_4b() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = reduced_transfer(dir.path());
    let cache = dir.path().join("cache");
    let (json, md, report_dir) = report(&manifest, &cache, "quickstart-reduced");
    // toy-narrow's tokenizer, trained as toy's, is the same file: its ids and masks are
    // reused; toy-other-bpe's is another: its responses are tokenised again and scored.
    for (target, same) in [("toy-narrow", true), ("toy-other-bpe", false)] {
        let t = record(&manifest, &cache, &format!("transfer {target} from toy"));
        assert_eq!(t.metrics["same_tokenizer"], same, "{target}: {}", t.metrics);
        let s = record(&manifest, &cache, &format!("score {target} cft-transfer"));
        assert_eq!(s.metrics["reused"], same, "{target}: {}", s.metrics);
    }
    let tables = json["responses"].as_array().unwrap();
    let models: Vec<&str> = tables.iter().filter_map(|t| t["model"].as_str()).collect();
    assert_eq!(models, ["toy", "toy-narrow", "toy-other-bpe"]);
    for t in tables {
        assert_eq!(
            t["columns"],
            serde_json::json!(["Greedy", "Transferred from toy"])
        );
        let cells = cells(t);
        assert_eq!(cells.len(), 2, "{cells:?}");
        for (label, row) in &cells {
            assert!(row[0].is_some(), "{label}: greedy cell of {}", t["model"]);
            // toy's own responses are not "transferred" to it.
            assert_eq!(
                row[1].is_some(),
                t["model"] != "toy",
                "{label} of {}",
                t["model"]
            );
        }
    }
    assert!(md.contains("## Training responses (Figure 4)"), "{md}");
    assert!(md.contains("Transferred from toy"), "{md}");
    assert!(report_dir.join("plots/responses.svg").is_file());
}
