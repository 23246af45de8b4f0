//! Figure 6 (App. C.3) through the binary: the shipped toy manifest
//! `experiments/quickstart-number.toml`, reduced as the quickstart's tests reduce it, trains
//! SFT, CFT, SFT-Number and CFT-Number, and the report shows them side by side as a table and
//! as a bar chart.

mod reduced;

use reduced::{cft, output};
use serde_json::Value;

#[test]
fn number_only_methods_train_on_numbers_and_the_report_draws_figure_6() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = reduced::reduced("quickstart-number.toml", dir.path());
    let cache = dir.path().join("cache");
    output(cft(&["run", "--quiet", "--jobs", "2"], &manifest, &cache));
    output(cft(&["report"], &manifest, &cache));
    let report_dir = cache.join("reports/quickstart-reduced");
    let json: Value =
        serde_json::from_slice(&std::fs::read(report_dir.join("report.json")).unwrap()).unwrap();
    let figure = &json["number_only"];
    assert_eq!(figure.as_array().map(Vec::len), Some(1), "{figure}");
    assert_eq!(figure[0]["model"], "toy");
    let bars = figure[0]["bars"].as_array().unwrap();
    let labels: Vec<&str> = bars.iter().filter_map(|b| b["label"].as_str()).collect();
    assert_eq!(labels, ["SFT", "CFT", "SFT-Number", "CFT-Number"]);
    let fraction = |i: usize| bars[i]["fraction"].as_f64().unwrap();
    for (i, b) in bars.iter().enumerate() {
        let avg = b["average"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&avg), "{b}");
        assert!(fraction(i) > 0.0, "{b}");
    }
    // SFT trains on every response token; the numbers are a part of them, and the numbers
    // among the critical tokens a part of both the critical tokens and the numbers.
    assert_eq!(fraction(0), 1.0);
    assert!(fraction(2) < 1.0, "SFT-Number {}", fraction(2));
    assert!(fraction(3) <= fraction(1) && fraction(3) <= fraction(2));
    assert!(fraction(3) < fraction(1).max(fraction(2)));

    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    assert!(md.contains("## Number-only fine-tuning (Figure 6)"), "{md}");
    for label in [
        "| toy | SFT |",
        "| toy | CFT |",
        "| toy | SFT-Number |",
        "| toy | CFT-Number |",
    ] {
        assert!(md.contains(label), "{label} in\n{md}");
    }
    let svg = std::fs::read_to_string(report_dir.join("plots/number-only.svg")).unwrap();
    for label in labels {
        assert!(
            svg.contains(&format!("\n{label}\n")),
            "the bar chart names {label}"
        );
    }
    assert!(report_dir.join("plots/number-only.png").is_file());
    let html = std::fs::read_to_string(report_dir.join("report.html")).unwrap();
    assert!(html.contains("Number-only fine-tuning"));
}
