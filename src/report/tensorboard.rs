//! TensorBoard runs from the cached records: one run directory per model's pretraining, base
//! model and method sweep cell (`tensorboard/<model>/<method>/<cell>/`), so TensorBoard's run
//! selector and `wandb sync --sync-tensorboard` group a model's runs and a method's cells.
//!
//! Written by `cft report` from records (and by `cft run`'s coordinator again after each
//! pretraining, training or evaluation stage), never by the training stages while they run: a
//! stage's outputs are keyed and deterministic, and a file written beside them on the side
//! would depend on where and when the stage ran, be written by every worker of a shared stage
//! and outlive a `cache gc`. The records already hold what a curve needs (the step metrics
//! the train stage thins to at most 200 steps, the eval metrics), so the files are a function
//! of the records: the same records give the same bytes. The price is that curves appear
//! when a stage has finished, not during it.
//!
//! A record keeps its start and duration, not each step's time, so a step's `wall_time` is
//! spread evenly over the training loop's recorded seconds, ending when the record ended.
//! Under `report.timings = false` every `wall_time` is 0, so the files too depend on the
//! manifest alone.

use serde_json::Value;

use super::inputs::{Params, Records, label};
use super::plots::slug;
use super::tfevents::{Event, encode};
use crate::cache::Record;

/// One run: its directory under the report folder and its events in step order.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub dir: String,
    /// The `wall_time` of the file-version event, and the event file's name.
    pub started: f64,
    pub events: Vec<Event>,
}

impl Run {
    /// `tensorboard/.../events.out.tfevents.<start>.cft` (TensorBoard reads any file with
    /// `tfevents` in its name; the start keeps the name the same for the same records).
    pub fn file_name(&self) -> String {
        format!(
            "{}/events.out.tfevents.{}.cft",
            self.dir, self.started as u64
        )
    }
}

/// The step metrics the train and pretrain stages record, by TensorBoard tag.
const STEP_SCALARS: [(&str, &str); 5] = [
    ("loss", "train/loss"),
    ("lr", "train/learning_rate"),
    ("grad_norm", "train/grad_norm"),
    ("tokens_per_s", "train/tokens_per_s"),
    // Response tokens with non-zero weight / response tokens, in the step's batch.
    ("weighted_fraction", "train/trained_token_share"),
];

/// Every run the records have data for, in manifest order.
pub fn runs(params: &Params, records: &Records<'_>) -> Vec<Run> {
    let timings = params.report.timings;
    let mut out = Vec::new();
    for model in &params.models {
        let root = format!("tensorboard/{}", slug(model));
        if let Some(r) = records.get(&label::pretrain(model)) {
            let (started, events) = training(r, timings);
            out.push(run(format!("{root}/pretrain"), started, events));
        }
        let base: Vec<String> = params
            .benchmarks
            .iter()
            .map(|b| label::eval_base(model, b))
            .collect();
        let events = evaluation(params, records, &base, 0, timings);
        if !events.is_empty() {
            out.push(run(format!("{root}/base"), wall(&events), events));
        }
        for method in &params.methods {
            for cell in &method.cells {
                let (started, mut events) = records
                    .get(&label::train(model, &method.name, cell))
                    .map(|r| training(r, timings))
                    .unwrap_or_default();
                let last_step = events.last().map_or(0, |e| e.step);
                let evals: Vec<String> = params
                    .benchmarks
                    .iter()
                    .map(|b| label::eval(model, &method.name, cell, b))
                    .collect();
                let evaluated = evaluation(params, records, &evals, last_step, timings);
                let started = match events.is_empty() {
                    true => wall(&evaluated),
                    false => started,
                };
                events.extend(evaluated);
                if !events.is_empty() {
                    let dir = format!("{root}/{}/{}", slug(&method.name), slug(cell));
                    out.push(run(dir, started, events));
                }
            }
        }
    }
    out
}

/// Each run's event file, by path under the report folder.
pub fn files(runs: &[Run]) -> Vec<(String, Vec<u8>)> {
    runs.iter()
        .map(|r| (r.file_name(), encode(r.started, &r.events)))
        .collect()
}

fn run(dir: String, started: f64, events: Vec<Event>) -> Run {
    Run {
        dir,
        started,
        events,
    }
}

fn wall(events: &[Event]) -> f64 {
    events.first().map_or(0.0, |e| e.wall_time)
}

/// A train or pretrain record's step metrics, one event per recorded step, and when its
/// training loop began.
fn training(record: &Record, timings: bool) -> (f64, Vec<Event>) {
    let m = &record.metrics;
    let steps: &[Value] = m["steps"].as_array().map_or(&[], Vec::as_slice);
    let last = steps
        .iter()
        .filter_map(|s| s["step"].as_u64())
        .max()
        .unwrap_or(0);
    // The loop's seconds end where the record does; before them the model loaded.
    let end = record.started_at as f64 + record.elapsed_s;
    let seconds = m["seconds"]
        .as_f64()
        .unwrap_or(record.elapsed_s)
        .clamp(0.0, record.elapsed_s.max(0.0));
    let at = |step: u64| match (timings, last) {
        (false, _) => 0.0,
        (true, 0) => end,
        (true, _) => end - seconds * (1.0 - step as f64 / last as f64),
    };
    let events = steps
        .iter()
        .filter_map(|s| {
            let step = s["step"].as_u64()?;
            let scalars = STEP_SCALARS
                .iter()
                .filter_map(|(key, tag)| Some((tag.to_string(), s[*key].as_f64()? as f32)))
                .collect();
            Some(Event {
                wall_time: at(step),
                step: step as i64,
                file_version: None,
                scalars,
            })
        })
        .collect();
    let started = match timings {
        true => end - seconds,
        false => 0.0,
    };
    (started, events)
}

/// Events at `step` with the accuracy and Pass@N (%) of each benchmark's eval record in
/// `labels` (in the order of `params.benchmarks`), and their average when every benchmark has
/// one (the report's Avg.); none when no benchmark has a record. One event per benchmark, in
/// the order of `params.benchmarks`, then the average: a benchmark evaluated after those
/// before it only adds events after theirs, so `cft run` appends it to a file a TensorBoard
/// is reading.
fn evaluation(
    params: &Params,
    records: &Records<'_>,
    labels: &[String],
    step: i64,
    timings: bool,
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut accuracies = Vec::new();
    let mut latest: f64 = 0.0;
    for (bench, label) in params.benchmarks.iter().zip(labels) {
        let Some(r) = records.get(label) else {
            continue;
        };
        let ended = r.started_at as f64 + r.elapsed_s;
        latest = latest.max(ended);
        let mut scalars = Vec::new();
        if let Some(a) = r.metrics["accuracy"].as_f64() {
            accuracies.push(a * 100.0);
            scalars.push((format!("eval/{bench}/accuracy"), (a * 100.0) as f32));
        }
        if let Some(curve) = r.metrics["pass_at"].as_object() {
            let mut points: Vec<(u64, f64)> = curve
                .iter()
                .filter_map(|(n, v)| Some((n.parse().ok()?, v.as_f64()?)))
                .collect();
            points.sort_by_key(|p| p.0);
            for (n, v) in points {
                scalars.push((format!("eval/{bench}/pass@{n}"), (v * 100.0) as f32));
            }
        }
        if !scalars.is_empty() {
            events.push(Event {
                wall_time: if timings { ended } else { 0.0 },
                step,
                file_version: None,
                scalars,
            });
        }
    }
    if !events.is_empty() && accuracies.len() == params.benchmarks.len() {
        let mean = accuracies.iter().sum::<f64>() / accuracies.len() as f64;
        events.push(Event {
            wall_time: if timings { latest } else { 0.0 },
            step,
            file_version: None,
            scalars: vec![("eval/average/accuracy".into(), mean as f32)],
        });
    }
    events
}
