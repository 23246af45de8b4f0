//! Report speed: the report of `tests/report.rs`'s fabricated cache (one model, three methods,
//! two sweep cells, two benchmarks of 120 questions, Pass@4, bootstrap intervals) built from
//! the cache and formatted into every file `cft report` writes (markdown, CSV, JSON, HTML,
//! SVG and PNG plots). `cargo bench --bench report` prints the median of 5 after one untimed
//! warm-up.

#[path = "../tests/fabricated/mod.rs"]
mod fabricated;

use std::time::Instant;

use cft::report::files::artifacts;

const ROUNDS: usize = 5;

fn main() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let (plan, _) = fabricated::setup(dir);
    let round = || {
        let t = Instant::now();
        let report = fabricated::report_of(dir, &plan);
        let files = artifacts(&report).expect("report files");
        (t.elapsed().as_secs_f64(), files.len())
    };
    round();
    let mut times = Vec::with_capacity(ROUNDS);
    let mut n_files = 0;
    for _ in 0..ROUNDS {
        let (seconds, files) = round();
        times.push(seconds);
        n_files = files;
    }
    times.sort_by(f64::total_cmp);
    println!(
        "report of a {}-stage plan from its cached records into {n_files} files: {:.1} ms (median of {ROUNDS})",
        plan.order().len(),
        times[ROUNDS / 2] * 1e3
    );
}
