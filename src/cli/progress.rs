//! Progress display for `cft run`: indicatif bars on a terminal (overall and per stage, with
//! items/s and ETA), plain lines otherwise, nothing with `--quiet`.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use cft::exec::{Events, Progress, StageEnd};
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
    stage: Mutex<Option<ProgressBar>>,
}

impl Bars {
    fn new() -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{bar:30.cyan/blue}] {pos}/{len} stages, {elapsed_precise} elapsed",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        overall.set_prefix("run");
        overall.enable_steady_tick(Duration::from_millis(500));
        Bars {
            multi,
            overall,
            stage: Mutex::new(None),
        }
    }
}

impl Progress for Bars {
    fn stage_total(&self, total: u64) {
        if let Ok(guard) = self.stage.lock()
            && let Some(bar) = guard.as_ref()
        {
            bar.set_length(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>8} [{bar:30.green/white}] {pos}/{len} {msg} ({rate}, ETA {eta})",
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
        }
    }

    fn stage_progress(&self, done: u64) {
        if let Ok(guard) = self.stage.lock()
            && let Some(bar) = guard.as_ref()
        {
            bar.set_position(done);
        }
    }
}

impl Events for Bars {
    fn begin(&self, to_run: usize, cached: usize) {
        self.overall.set_length(to_run as u64);
        if cached > 0 {
            let _ = self.multi.println(format!("{cached} stages cached"));
        }
    }

    fn stage_begin(&self, spec: &StageSpec, _index: usize, _of: usize, resumed: bool) {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{prefix:>8} {spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(spec.kind.name());
        bar.set_message(format!(
            "{}{}",
            spec.label,
            if resumed { " (resumed)" } else { "" }
        ));
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut guard) = self.stage.lock() {
            *guard = Some(bar);
        }
    }

    fn stage_end(&self, spec: &StageSpec, end: &StageEnd) {
        if let Ok(mut guard) = self.stage.lock()
            && let Some(bar) = guard.take()
        {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.overall.inc(1);
        let _ = self.multi.println(line_for(spec, end));
    }
}

/// Plain lines for logs and pipes: one at each stage's start and end, and a progress line at
/// most every ten seconds.
#[derive(Default)]
pub struct Lines {
    state: Mutex<LineState>,
}

#[derive(Default)]
struct LineState {
    total: Option<u64>,
    started: Option<Instant>,
    last: Option<Instant>,
}

impl Progress for Lines {
    fn stage_total(&self, total: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.total = Some(total);
        }
    }

    fn stage_progress(&self, done: u64) {
        let Ok(mut s) = self.state.lock() else { return };
        let now = Instant::now();
        if s.last.is_some_and(|l| now - l < Duration::from_secs(10)) {
            return;
        }
        s.last = Some(now);
        let elapsed = s.started.map_or(0.0, |t| (now - t).as_secs_f64());
        let rate = if elapsed > 0.0 {
            done as f64 / elapsed
        } else {
            0.0
        };
        match s.total {
            Some(total) if rate > 0.0 => {
                let eta = (total.saturating_sub(done)) as f64 / rate;
                eprintln!(
                    "         {done}/{total} items, {rate:.1}/s, ETA {}",
                    human(eta)
                );
            }
            _ => eprintln!("         {done} items"),
        }
    }
}

impl Events for Lines {
    fn begin(&self, to_run: usize, cached: usize) {
        eprintln!("{to_run} stages to run, {cached} cached");
    }

    fn stage_begin(&self, spec: &StageSpec, index: usize, of: usize, resumed: bool) {
        if let Ok(mut s) = self.state.lock() {
            *s = LineState {
                started: Some(Instant::now()),
                last: Some(Instant::now()),
                total: None,
            };
        }
        eprintln!(
            "[{index}/{of}] {}{}",
            spec.label,
            if resumed { " (resuming)" } else { "" }
        );
    }

    fn stage_end(&self, spec: &StageSpec, end: &StageEnd) {
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
