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

use cft::cache::{Cache, Store};
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
    assert!(!md.contains("AVX-512"), "no kernels named: {md}");
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
    // The TensorBoard runs beside them, and none left from an earlier report.
    let event_file =
        dir.join("cache/reports/fab/tensorboard/tiny/strict3/lr2e-4/events.out.tfevents.0.cft");
    let events = cft::report::tfevents::decode(&std::fs::read(&event_file).unwrap()).unwrap();
    assert_eq!(
        events.len(),
        1 + 5 + 2 + 1,
        "file version, 5 steps, the two benchmarks' evaluations, their average"
    );
    let stale = dir.join("cache/reports/fab/tensorboard/gone/events.out.tfevents.1.cft");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(&stale, b"").unwrap();
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains("<svg"), "plots are inline");
    assert!(
        !html.contains("<script") && !html.contains("src=\"http"),
        "no network"
    );
    let events_bytes = std::fs::read(&event_file).unwrap();
    assert_eq!(run().1, html.into_bytes(), "byte-identical across runs");
    assert_eq!(std::fs::read(&event_file).unwrap(), events_bytes);
    assert!(
        !stale.exists(),
        "a run the records no longer have is removed"
    );
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

/// Stages computed by a build with the `avx512` feature (CPU-dependent bytes) are named in the
/// report, counted per kernel set; records of the default kernels (or of earlier builds, which
/// name none) are not.
#[test]
fn report_names_stages_computed_with_cpu_dependent_kernels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (plan, _) = setup(dir);
    let evals = {
        let cache = Cache::open(&dir.join("cache"), "test").unwrap();
        let mut evals = 0;
        for mut r in cache.records().unwrap() {
            r.kernels = Some(match r.kind == "eval" {
                true => {
                    evals += 1;
                    "avx512-when-present".into()
                }
                false => cft::model::kernels::KERNELS.into(),
            });
            cache.put_record(&r).unwrap();
        }
        assert!(evals > 0);
        cache.flush().unwrap();
        evals
    };
    {
        let report = report_of(dir, &plan);
        assert_eq!(
            report.cpu_dependent,
            vec![("avx512-when-present".to_string(), evals)]
        );
        let files = artifacts(&report).unwrap();
        let md = String::from_utf8(files.iter().find(|f| f.0 == "report.md").unwrap().1.clone())
            .unwrap();
        let sentence =
            format!("{evals} with `avx512-when-present` ran with CPU kernels that choose AVX-512");
        assert!(md.contains(&sentence), "{md}");
    }
}

/// The TensorBoard runs read back: one run per base model and method cell, the train
/// record's step metrics as scalars at their steps, each cell's evaluations at its last
/// step, and the same bytes from the same records.
#[test]
fn tensorboard_event_files_round_trip_from_cached_records() {
    use cft::report::tensorboard;
    use cft::report::tfevents::{FILE_VERSION, decode};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (plan, _) = setup(dir);
    // A pretraining record too, which the report does not read but TensorBoard shows.
    {
        let cache = Cache::open(&dir.join("cache"), "test").unwrap();
        let spec = plan
            .order()
            .into_iter()
            .find(|s| s.kind == "pretrain")
            .unwrap();
        let steps: Vec<Value> = (0..3)
            .map(|i| serde_json::json!({"step": 10 * i + 1, "loss": 5.0 - i as f64, "lr": 3e-3, "grad_norm": 2.0, "tokens_per_s": 900.0, "weighted_fraction": 1.0}))
            .collect();
        record(
            &cache,
            spec,
            serde_json::json!({"steps": steps, "seconds": 1.0}),
            vec![],
        );
        cache.flush().unwrap();
    }
    let runs = || {
        let cache = Cache::open(&dir.join("cache"), "test").unwrap();
        let read = |r: &cft::cache::Record, name: &str| read_output(&cache, r, name);
        cft::report::load::tensorboard_from_store(&plan, &cache, &read).unwrap()
    };
    let first = tensorboard::files(&runs());
    assert_eq!(
        first,
        tensorboard::files(&runs()),
        "same records, same bytes"
    );
    let names: Vec<&str> = first.iter().map(|f| f.0.as_str()).collect();
    let mut want = vec![
        "tensorboard/tiny/pretrain".to_string(),
        "tensorboard/tiny/base".into(),
    ];
    for method in ["sft", "strict3", "entropy"] {
        for cell in ["lr1e-4", "lr2e-4"] {
            want.push(format!("tensorboard/tiny/{method}/{cell}"));
        }
    }
    let dirs: Vec<String> = names
        .iter()
        .map(|n| {
            let (dir, file) = n.rsplit_once('/').unwrap();
            assert!(file.starts_with("events.out.tfevents."), "{n}");
            dir.to_string()
        })
        .collect();
    assert_eq!(dirs, want);

    let events = |run: &str| {
        let bytes = &first
            .iter()
            .find(|f| f.0.starts_with(&format!("{run}/")))
            .unwrap()
            .1;
        decode(bytes).unwrap()
    };
    let value = |events: &[cft::report::tfevents::Event], tag: &str| -> Vec<(i64, f32)> {
        events
            .iter()
            .flat_map(|e| {
                e.scalars
                    .iter()
                    .filter(|s| s.0 == tag)
                    .map(|s| (e.step, s.1))
            })
            .collect()
    };
    let cft = events("tensorboard/tiny/strict3/lr2e-4");
    assert_eq!(cft[0].file_version.as_deref(), Some(FILE_VERSION));
    let loss = value(&cft, "train/loss");
    let expected: Vec<(i64, f32)> = (1..=5).map(|s| (s, (2.0 / s as f64) as f32)).collect();
    assert_eq!(loss, expected);
    for tag in [
        "train/learning_rate",
        "train/grad_norm",
        "train/tokens_per_s",
        "train/trained_token_share",
    ] {
        assert_eq!(value(&cft, tag).len(), 5, "{tag}");
    }
    assert_eq!(value(&cft, "train/trained_token_share")[0].1, 0.2);
    // Evaluations at the cell's last step, as the report's numbers (percent).
    let report = report_of(dir, &plan);
    let row = report.blocks[0]
        .rows
        .iter()
        .find(|r| r.method == "strict3")
        .unwrap();
    assert_eq!(row.cell.as_deref(), Some("lr2e-4"));
    let acc = value(&cft, "eval/toy-a/accuracy");
    assert_eq!(acc, vec![(5, row.scores[0].unwrap() as f32)]);
    assert_eq!(
        value(&cft, "eval/average/accuracy"),
        vec![(5, row.average.unwrap() as f32)]
    );
    let pass = report
        .pass_at
        .iter()
        .find(|c| c.method == "CFT" && c.benchmark == "toy-b")
        .unwrap();
    assert_eq!(
        value(&cft, "eval/toy-b/pass@4"),
        vec![(5, pass.values[3] as f32)]
    );
    // Wall times from the record (it started at 0 and took 1 s), never decreasing.
    let walls: Vec<f64> = cft.iter().map(|e| e.wall_time).collect();
    assert!(walls.windows(2).all(|w| w[0] <= w[1]), "{walls:?}");
    assert!(walls.iter().all(|w| (0.0..=2.0).contains(w)), "{walls:?}");
    // Untrained (the entropy method has no train records): evaluations at step 0.
    let entropy = events("tensorboard/tiny/entropy/lr1e-4");
    assert!(value(&entropy, "train/loss").is_empty());
    assert_eq!(value(&entropy, "eval/toy-a/accuracy")[0].0, 0);
    let base = events("tensorboard/tiny/base");
    assert_eq!(value(&base, "eval/toy-b/pass@1").len(), 1);
    let pretrain = events("tensorboard/tiny/pretrain");
    assert_eq!(
        value(&pretrain, "train/loss"),
        vec![(1, 5.0), (11, 4.0), (21, 3.0)]
    );

    // Without timings, no time of the run enters the files.
    let cache = Cache::open(&dir.join("cache"), "test").unwrap();
    let spec = plan
        .order()
        .into_iter()
        .find(|s| s.kind == "report")
        .unwrap();
    let mut params =
        <cft::report::Params as cft::contract::Params>::from_params(&spec.label, &spec.params)
            .unwrap();
    params.report.timings = true;
    let mut timed = cache.records().unwrap();
    timed.iter_mut().for_each(|r| r.started_at = 1_800_000_000);
    let read = |r: &cft::cache::Record, name: &str| read_output(&cache, r, name);
    let records = cft::report::Records::new(timed, &read);
    let with_times = tensorboard::runs(&params, &records);
    assert!(
        with_times
            .iter()
            .all(|r| r.started > 1.7e9 && r.events[0].wall_time > 1.7e9)
    );
    params.report.timings = false;
    let untimed = tensorboard::runs(&params, &records);
    assert_eq!(untimed.len(), first.len());
    for run in &untimed {
        assert!(run.events.iter().all(|e| e.wall_time == 0.0), "{}", run.dir);
        assert!(run.file_name().ends_with("events.out.tfevents.0.cft"));
    }
}

/// More lines than the palette has colours: every line of the figure is still drawn in a
/// style of its own (colour and dash pattern), the baseline's included.
#[test]
fn every_line_of_a_figure_has_its_own_colour_and_dash() {
    use cft::report::plots::{line_style, plots};
    use std::collections::BTreeSet;
    let styles: Vec<_> = (0..60).map(|i| line_style(i, i == 3 || i == 13)).collect();
    let distinct: BTreeSet<_> = styles.iter().map(|s| (s.colour, s.dash)).collect();
    assert_eq!(distinct.len(), styles.len(), "{styles:?}");
    assert!(styles[3].dash.is_some(), "the baseline is dashed");
    assert!(
        styles[..10]
            .iter()
            .enumerate()
            .all(|(i, s)| i == 3 || s.dash.is_none())
    );

    // A Pass@N figure of 14 lines, as SVG: ten colours, and the lines that repeat a colour
    // are drawn in dashes (many short paths) where the first of that colour is one path.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (plan, _) = setup(dir);
    let mut report = report_of(dir, &plan);
    let curve = report
        .pass_at
        .iter()
        .find(|c| c.benchmark == "toy-a")
        .unwrap()
        .clone();
    report.pass_at.retain(|c| c.benchmark != "toy-a");
    for i in 0..14 {
        let mut c = curve.clone();
        c.method = format!("method {i}");
        c.values = c.values.iter().map(|v| v + i as f64).collect();
        report.pass_at.push(c);
    }
    let figure = plots(&report)
        .unwrap()
        .into_iter()
        .find(|p| p.name == "pass_at-tiny-toy-a")
        .unwrap();
    let mut paths_by_colour: std::collections::BTreeMap<String, usize> = Default::default();
    for line in figure.svg.lines().filter(|l| l.contains("<polyline")) {
        if !line.contains("stroke-width=\"2\"") {
            continue;
        }
        let colour = line
            .split("stroke=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        *paths_by_colour.entry(colour.to_string()).or_default() += 1;
    }
    assert_eq!(paths_by_colour.len(), 10, "{paths_by_colour:?}");
    let blue = paths_by_colour["#1F77B4"];
    let olive = paths_by_colour["#BCBD22"];
    // Blue: one solid line and one dashed; olive (the ninth colour): one solid line, and
    // its legend sample: two paths.
    assert_eq!(olive, 2, "{paths_by_colour:?}");
    assert!(blue > 6, "{paths_by_colour:?}");
}
