//! `cft run FILE [--keep-going] [--quiet]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use cft::cache::Cache;
use cft::exec::{self, Options};
use cft::plan::{self, Status};

use super::progress::{Display, human};
use super::{BadManifest, Interrupted};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The manifest.
    pub file: PathBuf,
    /// Run every stage that does not depend on a failed one, instead of stopping at the first
    /// failure.
    #[arg(long)]
    pub keep_going: bool,
    /// No progress display; only errors and the final line.
    #[arg(long, short)]
    pub quiet: bool,
    /// Stages at once, each in a worker process of its own. On the CPU the workers share the
    /// cores equally. `auto`: one per core on the CPU (fewer where the memory model says that
    /// many of the largest stage would not fit in host memory), one per CUDA device on GPUs.
    #[arg(long, short, default_value = "1", value_name = "N|auto")]
    pub jobs: Jobs,
    /// Where model stages run: cpu, or CUDA devices, each held by one worker at a time
    /// (`cuda:0,cuda:1`; CUDA needs a build with `--features cuda`).
    #[arg(
        long,
        alias = "device",
        value_delimiter = ',',
        default_value = "cpu",
        value_name = "cpu|cuda[:N],..."
    )]
    pub devices: Vec<cft::stages::Device>,
    /// Where stages run: `local` (worker processes on this machine) or `slurm` (one Slurm
    /// job per stage or group of stages; needs `--profile`).
    #[arg(long, default_value = "local", value_name = "local|slurm")]
    pub executor: Executor,
    /// The Slurm profile: partition, account, per-kind resources (see
    /// `experiments/profiles/gpu-cluster.toml`). Never part of a stage key.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// With `--executor slurm`: submit what is ready and exit; a later `cft run` re-attaches
    /// to the jobs and goes on.
    #[arg(long)]
    pub detach: bool,
    /// How often a stage whose worker died (or whose job ended without finishing it) is
    /// started again before it is recorded as failed.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub retries: usize,
    /// Run only stages of these kinds and what they need (e.g. `--only criticality,selection`
    /// to annotate without training).
    #[arg(long, value_delimiter = ',', value_name = "KIND")]
    pub only: Vec<String>,
    #[command(flatten)]
    pub memory: super::memory::MemoryArgs,
    /// Start stages even when the memory model says they cannot fit.
    #[arg(long)]
    pub ignore_memory_check: bool,
}

/// `--jobs`: a number, or `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jobs {
    Auto,
    Count(usize),
}

impl std::str::FromStr for Jobs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Jobs::Auto),
            n => match n.parse::<usize>() {
                Ok(0) | Err(_) => Err(format!(
                    "`{n}`: give a number of stages at once (at least 1) or `auto`"
                )),
                Ok(n) => Ok(Jobs::Count(n)),
            },
        }
    }
}

/// `--jobs auto`: one worker per CUDA device given, else one per core, as many as host memory
/// holds of the largest stage to run (its host peak by the memory model; a stage whose model
/// shape is unknown does not limit it).
fn auto_jobs(devices: &[cft::stages::Device], host: u64, peaks: &[Option<u64>]) -> (usize, String) {
    let gpus = devices
        .iter()
        .filter(|d| matches!(d, cft::stages::Device::Cuda(_)))
        .count();
    if gpus > 0 {
        return (gpus, format!("one per CUDA device ({gpus})"));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let largest = peaks.iter().flatten().copied().max().unwrap_or(0);
    let fit = match largest {
        0 => cores,
        peak => (host / peak).max(1) as usize,
    };
    let jobs = cores.min(fit).max(1);
    let why = match fit < cores {
        true => format!(
            "{cores} cores, but host memory holds {fit} of the largest stage ({} MiB)",
            largest >> 20
        ),
        false => format!("one per core ({cores})"),
    };
    (jobs, why)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Executor {
    Local,
    Slurm,
}

pub fn run(cache_dir: &Path, args: RunArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let exp = super::load(&args.file)?;
    let missing = exp.missing_inputs();
    if !missing.is_empty() {
        let lines: Vec<String> = missing
            .iter()
            .map(|m| {
                format!(
                    "{}: `{}`: `{}` does not exist (resolved to {})",
                    m.loc,
                    m.key,
                    m.written,
                    m.path.display()
                )
            })
            .collect();
        return Err(BadManifest(format!("missing inputs:\n  {}", lines.join("\n  "))).into());
    }
    let cache = Cache::open(cache_dir, &super::command_line())?;
    // The whole plan stays, for the TensorBoard runs of a restricted run (its report stage).
    let whole = plan::build(&exp, &cache)?;
    let restricted;
    let mut plan = &whole;
    if !args.only.is_empty() {
        if let Some(bad) = args
            .only
            .iter()
            .find(|k| !plan::KINDS.contains(&k.as_str()))
        {
            return Err(BadManifest(format!(
                "--only: `{bad}` is not a stage kind ({})",
                plan::KINDS.join(", ")
            ))
            .into());
        }
        restricted = whole.restricted(|s| args.only.iter().any(|k| s.kind == k.as_str()));
        plan = &restricted;
    }
    let status = plan::statuses(plan, &cache, false)?;
    let pending = status
        .values()
        .filter(|s| s.status != Status::Cached)
        .count();
    if pending == 0 {
        print_tables(cache, plan, &args.file)?;
        println!(
            "nothing to do: all {} stages of `{}` are cached ({})",
            plan.len(),
            exp.name,
            human(started.elapsed().as_secs_f64())
        );
        return Ok(ExitCode::SUCCESS);
    }

    // Stages that cannot fit are refused before anything starts, so nothing computed is lost
    // (the Slurm profile's per-kind resources decide there: no check).
    let mut jobs = match args.jobs {
        Jobs::Count(n) => n,
        Jobs::Auto => 1,
    };
    if args.executor == Executor::Local && (!args.ignore_memory_check || args.jobs == Jobs::Auto) {
        let budget = args.memory.budget(Some(&args.devices))?;
        let estimates = plan::resources::estimate_plan(plan, &budget, |s| {
            status
                .get(&s.key)
                .is_some_and(|st| st.status != Status::Cached)
        });
        let over: Vec<_> = estimates.iter().filter(|m| !m.fits()).collect();
        if !over.is_empty() && !args.ignore_memory_check {
            return Err(BadManifest(super::memory::refusal(&over, &budget)).into());
        }
        if args.jobs == Jobs::Auto {
            let peaks: Vec<Option<u64>> = estimates.iter().map(|m| m.host_peak).collect();
            let (n, why) = auto_jobs(&args.devices, budget.host, &peaks);
            jobs = n;
            if !args.quiet {
                eprintln!("--jobs auto: {n} at once ({why})");
            }
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // First Ctrl-C: finish the item in flight, flush, stop. Second: leave at once.
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after the current item (Ctrl-C again to quit at once)");
    });

    let exe = std::env::current_exe()?;
    let launcher = match (args.executor, &args.profile) {
        (Executor::Local, None) if !args.detach => exec::Launcher::Processes { exe },
        (Executor::Local, _) => {
            return Err(
                BadManifest("--profile and --detach are for `--executor slurm`".into()).into(),
            );
        }
        (Executor::Slurm, None) => {
            return Err(BadManifest(
                "--executor slurm needs --profile FILE (see experiments/profiles/gpu-cluster.toml)"
                    .into(),
            )
            .into());
        }
        (Executor::Slurm, Some(path)) => {
            let profile =
                exec::slurm::Profile::load(path).map_err(|e| BadManifest(e.to_string()))?;
            exec::Launcher::Slurm(Box::new(exec::slurm::SlurmLauncher {
                exe: profile.cft.clone().unwrap_or(exe),
                profile,
                run_id: run_id(),
                detach: args.detach,
            }))
        }
    };
    let display = Display::new(args.quiet);
    let curves = Curves {
        inner: display.events(),
        plan: &whole,
        cache: &cache,
        dir: cache_dir.join("reports").join(&exp.name),
        warned: AtomicBool::new(false),
    };
    let summary = exec::run(
        plan,
        &cache,
        &launcher,
        &curves,
        &stop,
        &Options {
            keep_going: args.keep_going,
            jobs,
            devices: args.devices.clone(),
            retries: args.retries,
            ..Options::default()
        },
    )?;
    drop(curves);
    drop(display);
    let took = human(started.elapsed().as_secs_f64());
    if summary.detached > 0 {
        println!(
            "submitted {} jobs and detached ({} stages ran here, {took}); `cft status {}` follows them, `cft run` again picks up",
            summary.detached,
            summary.ran,
            args.file.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !summary.uncancelled.is_empty() {
        eprintln!(
            "warning: Slurm still shows these jobs of the run after cancelling them: {} \
             (cancel them with `scancel {}`)",
            summary.uncancelled.join(", "),
            summary.uncancelled.join(" ")
        );
    }
    if summary.interrupted {
        eprintln!(
            "ran {} stages before the interruption ({took})",
            summary.ran
        );
        return Err(Interrupted.into());
    }
    if !summary.failed.is_empty() {
        for (label, error, fault) in &summary.failed {
            eprintln!(
                "failed: {label}: {error}\n  ({})",
                super::progress::whose(*fault)
            );
        }
        let not_run = pending.saturating_sub(summary.ran + summary.failed.len() + summary.skipped);
        eprintln!(
            "{} stages ran, {} failed, {} skipped because they depend on a failure, {} not started, {} cached ({took}); `cft status {}` shows the errors",
            summary.ran,
            summary.failed.len(),
            summary.skipped,
            not_run,
            summary.cached,
            args.file.display()
        );
        return Ok(ExitCode::from(1));
    }
    print_tables(cache, plan, &args.file)?;
    println!(
        "done: {} stages ran, {} cached ({took})",
        summary.ran, summary.cached
    );
    Ok(ExitCode::SUCCESS)
}

/// The experiment's main tables, when the plan includes its report.
fn print_tables(cache: Cache, plan: &plan::Plan, file: &Path) -> anyhow::Result<()> {
    if plan.graph.node_weights().any(|s| s.kind == "report") {
        let view = cft::cache::View::Open(cache);
        let report = super::report::report_of(&view, plan)?;
        print!("{}", cft::report::markdown::summary(&report));
        println!("\n(the full report: `cft report {}`)", file.display());
    }
    Ok(())
}

/// Keeps `<cache>/reports/<experiment>/tensorboard/` current while the run goes on: each time
/// a pretraining, training or evaluation stage finishes, the TensorBoard runs are made again
/// from the records (as `cft report` makes them) and each event file that changed is
/// brought up to date. A file whose old bytes begin the new ones (a cell's evaluations come
/// after its training steps) only gets the new records appended, so a TensorBoard already
/// reading it sees them; any other change replaces the file. A failure to write is a warning
/// (once): the curves are a side product, and `cft report` writes them again.
struct Curves<'a> {
    inner: &'a dyn exec::Events,
    plan: &'a plan::Plan,
    cache: &'a Cache,
    dir: PathBuf,
    warned: AtomicBool,
}

impl Curves<'_> {
    fn update(&self) -> anyhow::Result<()> {
        let read = |r: &cft::cache::Record, name: &str| {
            cft::report::load::read_output(self.cache, r, name)
        };
        let runs = cft::report::load::tensorboard_from_store(self.plan, self.cache, &read)?;
        for (name, bytes) in cft::report::tensorboard::files(&runs) {
            update_file(&self.dir.join(name), &bytes)?;
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` unless it holds them already; appends when its bytes are a prefix.
fn update_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;

    use anyhow::Context;
    let old = std::fs::read(path).unwrap_or_default();
    if old == bytes {
        return Ok(());
    }
    let context = || path.display().to_string();
    if !old.is_empty() && bytes.starts_with(&old) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(context)?;
        f.write_all(&bytes[old.len()..]).with_context(context)?;
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(context)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(context)?;
    std::fs::rename(&tmp, path).with_context(context)?;
    Ok(())
}

impl cft::stages::Progress for Curves<'_> {
    fn stage_total(&self, key: &str, total: u64) {
        self.inner.stage_total(key, total);
    }
    fn stage_progress(&self, key: &str, done: u64) {
        self.inner.stage_progress(key, done);
    }
}

impl exec::Events for Curves<'_> {
    fn begin(&self, to_run: usize, cached: usize) {
        self.inner.begin(to_run, cached);
    }
    fn stage_begin(&self, spec: &cft::plan::StageSpec, begin: &exec::Begin) {
        self.inner.stage_begin(spec, begin);
    }
    fn stage_end(&self, spec: &cft::plan::StageSpec, end: &exec::StageEnd) {
        self.inner.stage_end(spec, end);
        use cft::contract::Kind;
        let curve = matches!(spec.kind, Kind::Pretrain | Kind::Train | Kind::Eval);
        if curve
            && matches!(end, exec::StageEnd::Done { .. })
            && let Err(e) = self.update()
            && !self.warned.swap(true, Ordering::SeqCst)
        {
            eprintln!(
                "warning: the TensorBoard files under {} could not be updated: {e:#} \
                 (`cft report` writes them)",
                self.dir.display()
            );
        }
    }
}

/// A short id for this coordinator's jobs: seconds since the epoch and its process id, in
/// base 36 (two coordinators started in the same second differ; Ctrl-C cancels the jobs
/// named after its own).
fn run_id() -> String {
    format!(
        "{}{}",
        base36(cft::cache::now_secs()),
        base36(u64::from(std::process::id()))
    )
}

fn base36(mut n: u64) -> String {
    let mut out = Vec::new();
    while n > 0 {
        let d = (n % 36) as u8;
        out.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        n /= 36;
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cft::stages::Device;

    #[test]
    fn jobs_are_a_count_or_auto() {
        assert_eq!("auto".parse::<Jobs>(), Ok(Jobs::Auto));
        assert_eq!("3".parse::<Jobs>(), Ok(Jobs::Count(3)));
        for bad in ["0", "-1", "two", ""] {
            let err = bad.parse::<Jobs>().unwrap_err();
            assert!(err.contains("at least 1") && err.contains("auto"), "{err}");
        }
    }

    #[test]
    fn auto_jobs_take_the_cores_as_far_as_host_memory_holds_the_largest_stage() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let gib = 1u64 << 30;
        // Small stages: one per core; an unknown shape does not limit.
        assert_eq!(
            auto_jobs(&[Device::Cpu], 16 * gib, &[Some(gib), None]).0,
            cores
        );
        // A stage of 10 GiB in 16 GiB: one at a time.
        let (n, why) = auto_jobs(&[Device::Cpu], 16 * gib, &[Some(gib), Some(10 * gib)]);
        assert_eq!(n, 1);
        if cores > 1 {
            assert!(why.contains("host memory holds 1"), "{why}");
        }
        // On GPUs: one per device.
        let gpus = [Device::Cuda(0), Device::Cuda(1), Device::Cuda(2)];
        assert_eq!(auto_jobs(&gpus, gib, &[Some(10 * gib)]).0, 3);
    }
}
