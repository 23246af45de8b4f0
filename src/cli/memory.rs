//! The memory check of `cft plan --resources` and `cft run`: the budget from the command
//! line (or this machine), the table of estimates, and the refusal `cft run` prints.

use cft::plan::resources::{self, Backend, Budget, ShapeSource, StageMemory, human};
use cft::stages::Device;

use super::BadManifest;

/// Memory flags shared by `plan --resources` and `run`.
#[derive(clap::Args, Debug, Clone)]
pub struct MemoryArgs {
    /// Memory of one GPU (e.g. `80GiB`); with `cft plan`, estimates for CUDA devices. On the
    /// CPU the device's memory is host memory.
    #[arg(long, value_name = "SIZE")]
    pub gpu_memory: Option<String>,
    /// GPUs a stage may use (`zero1` shards over them); default: the CUDA devices given, or 1.
    #[arg(long, value_name = "N")]
    pub gpus: Option<u64>,
    /// Host memory (e.g. `512GiB`); default: this machine's MemTotal.
    #[arg(long, value_name = "SIZE")]
    pub host_memory: Option<String>,
}

fn size(flag: &str, text: &str) -> anyhow::Result<u64> {
    resources::parse_size(text).map_err(|e| BadManifest(format!("--{flag}: {e}")).into())
}

impl MemoryArgs {
    /// The budget of a run on `devices` (`cft plan`: none, so CUDA iff `--gpu-memory`).
    pub fn budget(&self, devices: Option<&[Device]>) -> anyhow::Result<Budget> {
        let cuda = match devices {
            Some(devices) => devices.iter().filter(|d| **d != Device::Cpu).count() as u64,
            None => u64::from(self.gpu_memory.is_some()),
        };
        let backend = match cuda > 0 {
            true => Backend::Cuda,
            false => Backend::Cpu,
        };
        let device = match (&self.gpu_memory, backend) {
            (Some(text), _) => Some(size("gpu-memory", text)?),
            (None, Backend::Cuda) => gpu_memory_of_this_machine(),
            (None, Backend::Cpu) => None,
        };
        let host = match &self.host_memory {
            Some(text) => size("host-memory", text)?,
            None => resources::host_memory().ok_or_else(|| {
                BadManifest("cannot read /proc/meminfo: pass --host-memory".into())
            })?,
        };
        Ok(Budget {
            backend,
            device,
            gpus: self.gpus.unwrap_or(cuda.max(1)),
            host,
        })
    }
}

/// The smallest GPU's memory as `nvidia-smi` reports it, if it runs.
fn gpu_memory_of_this_machine() -> Option<u64> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=memory.total", "--format=csv,noheader,nounits"])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .min()
        .map(|mib| mib << 20)
}

/// `GPU 80.0 GiB x 8, host 512.0 GiB`.
pub fn describe(budget: &Budget) -> String {
    let host = human(budget.host);
    match (budget.backend, budget.device) {
        (Backend::Cpu, _) => format!("CPU (device memory is host memory), host {host}"),
        (Backend::Cuda, Some(d)) => format!("GPU {} x {}, host {host}", human(d), budget.gpus),
        (Backend::Cuda, None) => format!(
            "GPU of unknown memory x {} (pass --gpu-memory to check it), host {host}",
            budget.gpus
        ),
    }
}

fn shape_text(m: &StageMemory) -> String {
    match &m.shape {
        Ok((shape, source)) => {
            let params = shape.params() as f64;
            let count = match params >= 1e9 {
                true => format!("{:.2}B", params / 1e9),
                false => format!("{:.1}M", params / 1e6),
            };
            let from = match source {
                ShapeSource::Config => "config.json".to_string(),
                ShapeSource::Toy => "toy".to_string(),
                ShapeSource::BuiltIn(name) => format!("built-in shape {name}"),
            };
            format!("{count} ({from})")
        }
        Err(e) => e.clone(),
    }
}

/// The table: one line per stage with `all`, else per group of stages with the same model,
/// work and estimate (an evaluation on 11 benchmarks is one line).
pub fn print_table(estimates: &[StageMemory], budget: &Budget, all: bool) {
    println!(
        "\nmemory: {}; prompts assumed at most {} tokens",
        describe(budget),
        resources::PROMPT_TOKENS
    );
    println!(
        "{:<40} {:>6}  {:<34} {:<40} {:>10} {:>10}  fits",
        "stage", "stages", "model", "work", "device", "host"
    );
    let mut rows: Vec<(String, usize, &StageMemory)> = Vec::new();
    for m in estimates {
        let same = |r: &&mut (String, usize, &StageMemory)| {
            !all && r.2.kind == m.kind
                && shape_text(r.2) == shape_text(m)
                && r.2.work == m.work
                && r.2.device_peak == m.device_peak
                && r.2.host_peak == m.host_peak
        };
        match rows.iter_mut().find(same) {
            Some(row) => row.1 += 1,
            None => rows.push((m.label.clone(), 1, m)),
        }
    }
    for (label, n, m) in rows {
        let cell = |v: Option<u64>| v.map_or("-".to_string(), human);
        let fits = match (&m.shape, m.fits()) {
            (Err(_), _) => "?",
            (Ok(_), true) => "yes",
            (Ok(_), false) => "NO",
        };
        let label = match n {
            1 => label,
            _ => format!("{label} (+{})", n - 1),
        };
        println!(
            "{:<40} {:>6}  {:<34} {:<40} {:>10} {:>10}  {fits}",
            clip(&label, 40),
            n,
            clip(&shape_text(m), 34),
            clip(&m.work, 40),
            cell(m.device_peak),
            cell(m.host_peak)
        );
    }
    let over: Vec<&StageMemory> = estimates.iter().filter(|m| !m.fits()).collect();
    match over.first() {
        None => println!("every stage fits"),
        Some(first) => println!(
            "{} of {} stages do not fit; e.g. `{}`: {}",
            over.len(),
            estimates.len(),
            first.label,
            first.over.join("; ")
        ),
    }
}

fn clip(text: &str, width: usize) -> String {
    match text.chars().count() > width {
        true => format!("{}…", text.chars().take(width - 1).collect::<String>()),
        false => text.to_string(),
    }
}

/// What `cft run` says when stages cannot fit: each (up to 5), its numbers, what to change.
pub fn refusal(over: &[&StageMemory], budget: &Budget) -> String {
    let mut out = format!(
        "{} stage(s) would not fit in memory ({}); nothing was started:\n",
        over.len(),
        describe(budget)
    );
    for m in over.iter().take(5) {
        out.push_str(&format!(
            "  {} [{}]: {}\n",
            m.label,
            m.work,
            m.over.join("; ")
        ));
        if let Some(e) = &m.estimate {
            let terms: Vec<String> = e
                .device
                .iter()
                .chain(&e.host)
                .map(|t| format!("{} {}", t.name, human(t.bytes)))
                .collect();
            out.push_str(&format!("    at its {}: {}\n", e.phase, terms.join(", ")));
        }
        out.push_str(&format!("    to fit: {}\n", m.advice.join("; or ")));
    }
    if over.len() > 5 {
        out.push_str(&format!("  ... and {} more\n", over.len() - 5));
    }
    out.push_str(
        "(`cft plan FILE --resources` shows every estimate; --ignore-memory-check runs anyway)",
    );
    out
}
