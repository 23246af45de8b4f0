//! `cft worker KEY...`: runs stages a coordinator (`cft run`) prepared under
//! `<cache>/work/<key>/`, one after another, then exits. Not for users: `cft run` starts it,
//! and so does a Slurm job; the README's "Worker processes" section describes the folder it
//! reads and the sentinel it leaves.
//!
//! Exit codes: 0 every stage has its sentinel, 130 stopped by SIGINT or SIGTERM (after the
//! item in flight), 75 another live worker holds a stage's lease, 1 an error.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cft::cache::Files;
use cft::exec::{NoEvents, WorkerEnd, run_stage};
use cft::stages::Device;

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The stages to run, by key, in this order.
    #[arg(required = true)]
    pub keys: Vec<String>,
    /// Where model stages run.
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda[:N]")]
    pub device: Device,
    /// Threads for the CPU backend (the coordinator also sets RAYON_NUM_THREADS).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(cache: &Path, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    if let Some(n) = args.threads {
        // Before the first parallel call builds the global pool; a pool that exists already
        // (RAYON_NUM_THREADS set it) keeps its size.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    let files = Files::open(cache)?;
    let registry = cft::stages::registry();
    cft::stages::annotate::share_model_loads(args.keys.len() > 1);
    let mut code = ExitCode::SUCCESS;
    for key in &args.keys {
        if stop.load(Ordering::SeqCst) {
            return Ok(ExitCode::from(130));
        }
        match run_stage(&files, key, &registry, args.device, &stop, &NoEvents)? {
            WorkerEnd::Finished => {}
            WorkerEnd::Interrupted => return Ok(ExitCode::from(130)),
            WorkerEnd::Leased(holder) => {
                let who = holder.map_or("another worker".into(), |l| {
                    format!("worker pid {} on {}", l.pid, l.host)
                });
                eprintln!("stage {key} is already running in {who}; skipped");
                code = ExitCode::from(75);
            }
        }
    }
    Ok(code)
}
