//! Progress display for `cft run`: indicatif bars on a terminal (the overall bar and one per
//! running stage: kind, label, device, items, rate, ETA), plain lines otherwise, nothing with
//! `--quiet`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use cft::exec::{Begin, Events, Progress, StageEnd};
use cft::plan::StageSpec;

pub enum Display {
    Bars(Bars),
    Lines(Lines),
    Quiet,
}

impl Display {
    pub fn new(quiet: bool) -> Display {
        if quiet {
            Display::Quiet
        } else if std::io::stderr().is_terminal() {
            Display::Bars(Bars::new())
        } else {
            Display::Lines(Lines::default())
        }
    }

    pub fn events(&self) -> &dyn Events {
        match self {
            Display::Bars(b) => b,
            Display::Lines(l) => l,
            Display::Quiet => &cft::exec::NoEvents,
        }
    }
}

pub struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    /// One bar per running stage, by key.
    stages: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new() -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix:>11} [{bar:30.cyan/blue}] {pos}/{len} stages, {elapsed_precise} elapsed",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        overall.set_prefix("run");
        overall.enable_steady_tick(Duration::from_millis(500));
        Bars {
            multi,
            overall,
            stages: Mutex::new(HashMap::new()),
        }
    }

    fn with_bar(&self, key: &str, f: impl FnOnce(&ProgressBar)) {
        if let Ok(guard) = self.stages.lock()
            && let Some(bar) = guard.get(key)
        {
            f(bar);
        }
    }
}

impl Progress for Bars {
    fn stage_total(&self, key: &str, total: u64) {
        self.with_bar(key, |bar| {
            if bar.length() == Some(total) {
                return;
            }
            bar.set_length(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>11} [{bar:30.green/white}] {pos}/{len} {msg} ({rate}, ETA {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.1}/s", state.per_sec());
                    },
                )
                .progress_chars("=> "),
            );
        });
    }

    fn stage_progress(&self, key: &str, done: u64) {
        self.with_bar(key, |bar| bar.set_position(done));
    }
}

impl Events for Bars {
    fn begin(&self, to_run: usize, cached: usize) {
        self.overall.set_length(to_run as u64);
        if cached > 0 {
            let _ = self.multi.println(format!("{cached} stages cached"));
        }
    }

    fn stage_begin(&self, spec: &StageSpec, begin: &Begin) {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{prefix:>11} {spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(spec.kind.name());
        bar.set_message(stage_message(spec, begin));
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut guard) = self.stages.lock() {
            guard.insert(spec.key.clone(), bar);
        }
    }

    fn stage_end(&self, spec: &StageSpec, end: &StageEnd) {
        if let Ok(mut guard) = self.stages.lock()
            && let Some(bar) = guard.remove(&spec.key)
        {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.overall.inc(1);
        let _ = self.multi.println(line_for(spec, end));
    }
}

/// A running stage: its label, where it runs and whether it resumes.
fn stage_message(spec: &StageSpec, begin: &Begin) -> String {
    let on = if spec.kind.uses_model() {
        format!(" on {}", begin.device)
    } else {
        String::new()
    };
    format!(
        "{}{on}{}",
        spec.label,
        if begin.resumed { " (resumed)" } else { "" }
    )
}

/// Plain lines for logs and pipes: one at each stage's start and end, and a progress line per
/// running stage at most every ten seconds.
#[derive(Default)]
pub struct Lines {
    state: Mutex<HashMap<String, LineState>>,
}

struct LineState {
    label: String,
    total: Option<u64>,
    started: Instant,
    last: Instant,
}

impl Progress for Lines {
    fn stage_total(&self, key: &str, total: u64) {
        if let Ok(mut s) = self.state.lock()
            && let Some(st) = s.get_mut(key)
        {
            st.total = Some(total);
        }
    }

    fn stage_progress(&self, key: &str, done: u64) {
        let Ok(mut s) = self.state.lock() else { return };
        let Some(st) = s.get_mut(key) else { return };
        let now = Instant::now();
        if now - st.last < Duration::from_secs(10) {
            return;
        }
        st.last = now;
        let elapsed = (now - st.started).as_secs_f64();
        let rate = if elapsed > 0.0 {
            done as f64 / elapsed
        } else {
            0.0
        };
        match st.total {
            Some(total) if rate > 0.0 => {
                let eta = (total.saturating_sub(done)) as f64 / rate;
                eprintln!(
                    "         {}: {done}/{total} items, {rate:.1}/s, ETA {}",
                    st.label,
                    human(eta)
                );
            }
            _ => eprintln!("         {}: {done} items", st.label),
        }
    }
}

impl Events for Lines {
    fn begin(&self, to_run: usize, cached: usize) {
        eprintln!("{to_run} stages to run, {cached} cached");
    }

    fn stage_begin(&self, spec: &StageSpec, begin: &Begin) {
        if let Ok(mut s) = self.state.lock() {
            s.insert(
                spec.key.clone(),
                LineState {
                    label: spec.label.clone(),
                    total: None,
                    started: Instant::now(),
                    last: Instant::now(),
                },
            );
        }
        eprintln!(
            "[{}/{}] {}",
            begin.index,
            begin.of,
            stage_message(spec, begin)
        );
    }

    fn stage_end(&self, spec: &StageSpec, end: &StageEnd) {
        if let Ok(mut s) = self.state.lock() {
            s.remove(&spec.key);
        }
        eprintln!("{}", line_for(spec, end));
    }
}

/// How a failure is worded: an input the user can fix, or a defect to report.
pub fn whose(fault: cft::exec::Fault) -> &'static str {
    match fault {
        cft::exec::Fault::Input => "bad input: fix what it names and run again",
        cft::exec::Fault::Defect => "a defect in cft: please report it with this message",
    }
}

fn line_for(spec: &StageSpec, end: &StageEnd) -> String {
    match end {
        StageEnd::Done { elapsed_s } => format!("    done {} in {}", spec.label, human(*elapsed_s)),
        StageEnd::Failed { error, fault } => {
            format!("  FAILED {}: {error} ({})", spec.label, whose(*fault))
        }
        StageEnd::Interrupted => format!("  interrupted {} (saved items are kept)", spec.label),
        StageEnd::Skipped { because } => format!(" skipped {}: {because}", spec.label),
    }
}

pub fn human(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else if seconds < 3600.0 {
        format!(
            "{}m{:02}s",
            (seconds / 60.0) as u64,
            (seconds % 60.0) as u64
        )
    } else {
        format!(
            "{}h{:02}m",
            (seconds / 3600.0) as u64,
            ((seconds % 3600.0) / 60.0) as u64
        )
    }
}
