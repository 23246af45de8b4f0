//! `cft worker KEY...`: runs stages a coordinator (`cft run`) prepared under
//! `<cache>/work/<key>/`, one after another, then exits. Not for users: `cft run` starts it,
//! and so does a Slurm job; the README's "Worker processes" section describes the folder it
//! reads and the sentinel it leaves.
//!
//! Exit codes: 0 every stage has its sentinel, 130 stopped by SIGINT, SIGTERM or SIGUSR2
//! (after the item in flight), 75 another live worker holds a stage's lease, 1 an error.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use cft::cache::Files;
use cft::exec::{NoEvents, WorkerEnd, run_group};
use cft::stages::Devices;

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The stages to run, by key, in this order.
    #[arg(required = true)]
    pub keys: Vec<String>,
    /// Where model stages run: the devices the worker holds (`cuda:0,cuda:1` for a stage
    /// spread over GPUs; the others use the first).
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda[:N][,cuda:M...]")]
    pub device: Devices,
    /// Threads for the CPU backend's pool (the coordinator passes each worker its share).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Set by SIGINT, SIGTERM (the coordinator, `scancel`) and SIGUSR2 (Slurm, before the time
/// limit): the stage stops after its item in flight.
static STOP: AtomicBool = AtomicBool::new(false);
static USR2: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr2(_: libc::c_int) {
    USR2.store(true, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
}

/// Stopped: 130, or 0 when Slurm asked (SIGUSR2 before the time limit) — the job ends
/// COMPLETED without a sentinel, and the coordinator submits the stage again.
fn stopped() -> ExitCode {
    if USR2.load(Ordering::SeqCst) {
        eprintln!("stopping before the time limit; saved items are kept");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(130)
    }
}

pub fn run(cache: &Path, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    if let Some(n) = args.threads {
        // Before the first parallel call builds the global pool; a pool that exists already
        // (RAYON_NUM_THREADS, when set, sized it) keeps its size.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global();
    }
    let _ = ctrlc::set_handler(|| STOP.store(true, Ordering::SeqCst));
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGUSR2, on_usr2 as *const () as libc::sighandler_t);
    }
    let stop = &STOP;
    let files = Files::open(cache)?;
    let registry = cft::stages::registry();
    cft::stages::annotate::share_model_loads(args.keys.len() > 1);
    let mut code = ExitCode::SUCCESS;
    for (key, end) in run_group(&files, &args.keys, &registry, &args.device, stop, &NoEvents) {
        match end? {
            WorkerEnd::Finished | WorkerEnd::Gone => {}
            // The coordinator reads the sentinel; this line is for the job's log.
            WorkerEnd::Failed(error) => eprintln!("stage {key} failed: {error}"),
            WorkerEnd::Interrupted => code = stopped(),
            WorkerEnd::Leased(holder) => {
                let who = holder.map_or("another worker".into(), |l| {
                    format!("worker pid {} on {}", l.pid, l.host)
                });
                eprintln!("stage {key} is already running in {who}; skipped");
                if code == ExitCode::SUCCESS {
                    code = ExitCode::from(75);
                }
            }
        }
    }
    Ok(code)
}
