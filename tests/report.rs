//! Reports from cached records alone: records are fabricated in a temporary cache (as the
//! greedy, criticality, token-stats, selection, train and eval stages would write them; see
//! `fabricated/`), then the report is built from them, by the library, by `cft report`, and by
//! the `report` stage inside a run. How long building one takes is `cargo bench --bench
//! report`.

mod fabricated;
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use cft::cache::Cache;
use cft::report::files::artifacts;
use cft::report::load::read_output;
use fabricated::{record, report_of, setup};
use serde_json::Value;

#[test]
fn report_from_cached_records_picks_best_cells_and_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (plan, _) = setup(dir);

    let report = report_of(dir, &plan);
    let first = artifacts(&report).unwrap();
    let second = artifacts(&report_of(dir, &plan)).unwrap();
    assert_eq!(first, second, "a regenerated report has the same bytes");

    // Best cell by average: SFT's lr1e-4, CFT's lr2e-4.
    let block = &report.blocks[0];
    let row = |m: &str| block.rows.iter().find(|r| r.method == m).unwrap();
    assert_eq!(block.rows[0].method, "base");
    assert_eq!(row("sft").cell.as_deref(), Some("lr1e-4"));
    assert_eq!(row("strict3").cell.as_deref(), Some("lr2e-4"));
    let cft = row("strict3");
    let delta = cft.delta.unwrap();
    assert!(delta > 5.0 && delta < 25.0, "delta {delta}");
    let ci = cft.delta_ci.unwrap();
    assert!(ci.low < delta && delta < ci.high, "{ci:?} around {delta}");
    assert!(cft.bench_ci.iter().all(Option::is_some));
    assert!(row("sft").delta.is_none(), "the baseline has no delta");

    let md =
        String::from_utf8(first.iter().find(|f| f.0 == "report.md").unwrap().1.clone()).unwrap();
    assert!(md.contains("| CFT | lr2e-4 |"), "{md}");
    assert!(md.contains("Pass@4"));
    assert!(md.contains("41.0"), "Table 4 seconds per 1k");
    // Table 5 from the aligned statistics: critical tokens have confidence 0.9.
    assert!(md.contains("| tiny | CFT | 0.900 | 0.600 |"), "{md}");
    // The entropy method was never trained here: its training row shows dashes.
    assert!(
        md.contains("| tiny | Entropy | lr2e-4 | 20.00 | — | — | — |"),
        "{md}"
    );
    // Tokens trained on are a share of the response tokens, not of the batches' 200.
    assert!(
        md.contains("| tiny | SFT | lr1e-4 | 100.00 | 200 |"),
        "{md}"
    );
    assert!(md.contains("| tiny | CFT | lr2e-4 | 20.00 | 200 |"), "{md}");
    // Table 4's Avg tokens: the correct responses' length, not all responses' 31.5.
    assert!(
        md.contains("| tiny | CFT | 12 / 20 | 60.0 | 10.0 | 20.00 |"),
        "{md}"
    );
    let names: Vec<&str> = first.iter().map(|f| f.0.as_str()).collect();
    for want in [
        "report.csv",
        "report.json",
        "report.html",
        "plots/pass_at-tiny-toy-a.png",
        "plots/training-tiny.svg",
        "plots/categories-tiny-CFT.png",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let png = &first.iter().find(|f| f.0.ends_with(".png")).unwrap().1;
    assert_eq!(&png[1..4], b"PNG");

    if let Ok(keep) = std::env::var("CFT_KEEP_REPORT") {
        cft::report::write_files(Path::new(&keep), &first).unwrap();
    }
}

/// Records written before the response-token and correct-length metrics existed still give
/// shares of the response tokens (from the method's weights; SFT and DFT by definition) and
/// Table 4's length of the correct responses (from the criticality record).
#[test]
fn records_of_earlier_builds_still_give_shares_and_lengths() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (plan, _) = setup(dir);
    {
        let cache = Cache::open(&dir.join("cache"), "test").unwrap();
        for spec in plan.order() {
            let mut metrics = cft::cache::Store::record(&cache, &spec.key)
                .unwrap()
                .map(|r| r.metrics)
                .unwrap_or(Value::Null);
            let Some(m) = metrics.as_object_mut() else {
                continue;
            };
            let dropped = match spec.kind.name() {
                "greedy" => m.remove("mean_correct_response_tokens"),
                "train" => m.remove("response_tokens"),
                _ => None,
            };
            if dropped.is_some() {
                record(&cache, spec, metrics, vec![]);
            }
        }
        cache.flush().unwrap();
    }
    let report = report_of(dir, &plan);
    let files = artifacts(&report).unwrap();
    let md =
        String::from_utf8(files.iter().find(|f| f.0 == "report.md").unwrap().1.clone()).unwrap();
    assert!(
        md.contains("| tiny | SFT | lr1e-4 | 100.00 | 200 |"),
        "{md}"
    );
    assert!(md.contains("| tiny | CFT | lr2e-4 | 20.00 | 200 |"), "{md}");
    assert!(
        md.contains("| tiny | CFT | 12 / 20 | 60.0 | 10.0 | 20.00 |"),
        "{md}"
    );
}

#[test]
fn cft_report_writes_files_next_to_the_cache_and_reads_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (plan, file) = setup(dir);
    let records_before = {
        let cache = Cache::open(&dir.join("cache"), "test").unwrap();
        cft::cache::Store::records(&cache).unwrap().len()
    };
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_cft"))
            .args(["--cache", dir.join("cache").to_str().unwrap(), "report"])
            .arg(&file)
            .args(["--format", "csv"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let html = std::fs::read(dir.join("cache/reports/fab/report.html")).unwrap();
        (out.stdout, html)
    };
    let (csv, html) = run();
    let csv = String::from_utf8(csv).unwrap();
    assert!(csv.starts_with("model,method,label,cell,average,delta,ci_low,ci_high,toy-a,toy-b"));
    assert!(csv.contains("tiny,strict3,CFT,lr2e-4,"));
    assert!(
        dir.join("cache/reports/fab/plots/pass_at-tiny-toy-b.svg")
            .is_file()
    );
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains("<svg"), "plots are inline");
    assert!(
        !html.contains("<script") && !html.contains("src=\"http"),
        "no network"
    );
    assert_eq!(run().1, html.into_bytes(), "byte-identical across runs");
    let cache = Cache::open(&dir.join("cache"), "test").unwrap();
    assert_eq!(
        cft::cache::Store::records(&cache).unwrap().len(),
        records_before,
        "cft report runs no stage"
    );
    // The same table side by side with itself: one block, rows tagged by experiment.
    drop(cache);
    let out = Command::new(env!("CARGO_BIN_EXE_cft"))
        .args(["--cache", dir.join("cache").to_str().unwrap(), "compare"])
        .arg(&file)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = String::from_utf8(out.stdout).unwrap();
    let main_table = md.split("## Δ per benchmark").next().unwrap();
    assert_eq!(
        main_table.matches("| fab: CFT | lr2e-4 |").count(),
        2,
        "{md}"
    );
    assert_eq!(
        main_table.matches("| **tiny** |").count(),
        1,
        "one base row"
    );
    assert_eq!(plan.count("report"), 1);
}

#[test]
fn report_stage_inside_a_run_writes_the_same_report() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (plan, _) = setup(dir);
    let expected = artifacts(&report_of(dir, &plan)).unwrap();
    let cache = Cache::open(&dir.join("cache"), "test").unwrap();
    // Stages the report does not read (datasets, pretraining, rollouts, the entropy method's
    // training) run as stubs; the report stage is the real one.
    let mut registry = support::echo_registry(support::leak_counter());
    registry.register(cft::contract::Kind::Report, cft::stages::report::Report);
    let summary = cft::exec::run(
        &plan,
        &cache,
        &cft::exec::Launcher::Threads(&registry),
        &cft::exec::NoEvents,
        &AtomicBool::new(false),
        &cft::exec::Options::default(),
    )
    .unwrap();
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    let spec = plan
        .order()
        .into_iter()
        .find(|s| s.kind == "report")
        .unwrap();
    let rec = cft::cache::Store::record(&cache, &spec.key)
        .unwrap()
        .unwrap();
    let md = read_output(&cache, &rec, "report.md").unwrap();
    // The entropy method's stub training records exist now, with no metrics: still "—".
    let want = &expected.iter().find(|f| f.0 == "report.md").unwrap().1;
    assert_eq!(&md, want);
    assert!(rec.outputs.contains_key("plots/training-tiny.png"));
}
