//! `cft cache ls | verify | gc FILE...`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cft::cache::{BlobState, Cache, Files, OutputRef, RecordStatus, Store, View, hash_bytes};
use cft::plan;

#[derive(clap::Subcommand, Debug)]
pub enum CacheCommand {
    /// List the stage records, artifacts and blobs in the cache.
    Ls,
    /// Re-hash every blob and artifact; report corrupt or missing ones and mark their stages
    /// for re-run.
    Verify,
    /// Remove what none of the given manifests references (lists it first; `--yes` removes).
    Gc {
        /// The manifests whose stages to keep.
        #[arg(required = true)]
        manifests: Vec<PathBuf>,
        /// Remove, rather than only list.
        #[arg(long)]
        yes: bool,
    },
}

pub fn run(root: &Path, cmd: CacheCommand) -> anyhow::Result<ExitCode> {
    if !root.join("db").exists() {
        anyhow::bail!("{} is not a cft cache (no db/ inside)", root.display());
    }
    if let CacheCommand::Ls = cmd {
        // A reader: works during a run, from its live view.
        let view = View::open(root, &super::command_line())?;
        return ls(&view, root);
    }
    let cache = Cache::open(root, &super::command_line())?;
    match cmd {
        CacheCommand::Ls => ls(&View::Open(cache), root),
        CacheCommand::Verify => verify(&cache),
        CacheCommand::Gc { manifests, yes } => gc(&cache, &manifests, yes),
    }
}

fn ls(view: &View, root: &Path) -> anyhow::Result<ExitCode> {
    let store = view.store();
    let mut records = store.records()?;
    records.sort_by(|a, b| a.slot.cmp(&b.slot));
    println!(
        "{:<8} {:<10} {:<12} {:>10}  stage",
        "key", "status", "kind", "size"
    );
    for r in &records {
        let size: u64 = r
            .outputs
            .values()
            .map(|o| match o {
                OutputRef::Artifact { size, .. } | OutputRef::Blob { size, .. } => *size,
            })
            .sum();
        let status = format!("{:?}", r.status).to_lowercase();
        println!(
            "{:<8} {:<10} {:<12} {:>10}  {}",
            &r.key[..8.min(r.key.len())],
            status,
            r.kind,
            bytes(size),
            r.slot
        );
    }
    let files = Files::at(root);
    let artifacts = match view {
        View::Open(cache) => cache.artifact_hashes()?,
        View::Snapshot(_) => files.artifacts().list()?,
    };
    let blobs = files.blobs().list()?;
    if let Some(owner) = view.live() {
        println!(
            "(a run is in progress: pid {}, `{}`; {} stages in flight under work/)",
            owner.pid,
            owner.command,
            files.work_keys().len()
        );
    }
    println!(
        "\n{} records, {} artifacts ({}), {} blobs ({})",
        records.len(),
        artifacts.len(),
        bytes(artifacts.iter().map(|a| a.1).sum()),
        blobs.len(),
        bytes(blobs.iter().map(|b| b.1).sum())
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(cache: &Cache) -> anyhow::Result<ExitCode> {
    let mut bad_stages = 0;
    let mut checked = 0;
    for r in cache.records()? {
        if r.status != RecordStatus::Done {
            continue;
        }
        let mut problems = Vec::new();
        for (name, out) in &r.outputs {
            checked += 1;
            match out {
                OutputRef::Blob { hash, .. } => match cache.blobs().verify(hash) {
                    BlobState::Ok => {}
                    BlobState::Missing => {
                        problems.push(format!("blob `{name}` ({}) is missing", &hash[..12]))
                    }
                    BlobState::Corrupt { actual } => {
                        problems.push(format!(
                            "blob `{name}` is corrupt: expected {}, found {}",
                            &hash[..12],
                            &actual[..12]
                        ));
                        cache.blobs().remove(hash)?;
                    }
                },
                OutputRef::Artifact { hash, .. } => {
                    match cache.artifact(hash)? {
                        None => {
                            problems.push(format!("artifact `{name}` ({}) is missing", &hash[..12]))
                        }
                        Some(b) if hash_bytes(&b) != *hash => {
                            problems.push(format!("artifact `{name}` is corrupt"));
                            cache.remove_artifact(hash)?;
                        }
                        Some(_) => {}
                    }
                    // The file form is a copy: a bad one goes, and the next run that needs it
                    // writes it again from the database.
                    if let BlobState::Corrupt { .. } = cache.files().artifacts().verify(hash) {
                        println!(
                            "{}: the file form of `{name}` was corrupt; removed",
                            r.label
                        );
                        cache.files().artifacts().remove(hash)?;
                    }
                }
            }
        }
        if !problems.is_empty() {
            bad_stages += 1;
            println!("{} ({}):", r.label, &r.key[..8]);
            for p in problems {
                println!("  {p}");
            }
            // The record goes; the next `cft run` rebuilds the stage and what depends on it.
            cache.remove_record(&r.key)?;
            cache.progress_clear(&r.key)?;
        }
    }
    cache.flush()?;
    if bad_stages == 0 {
        println!("ok: {checked} outputs verified");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{bad_stages} stages marked for re-run ({checked} outputs checked)");
        Ok(ExitCode::from(1))
    }
}

fn gc(cache: &Cache, manifests: &[PathBuf], yes: bool) -> anyhow::Result<ExitCode> {
    let mut keep: HashSet<String> = HashSet::new();
    for m in manifests {
        let exp = super::load(m)?;
        let plan = plan::build(&exp, cache)?;
        keep.extend(plan.graph.node_weights().map(|s| s.key.clone()));
    }
    let records = cache.records()?;
    let (kept, dropped): (Vec<_>, Vec<_>) =
        records.into_iter().partition(|r| keep.contains(&r.key));
    let live: HashSet<&str> = kept
        .iter()
        .flat_map(|r| r.outputs.values().map(|o| o.hash()))
        .collect();
    // Artifacts in the database and as files (a worker's outputs that were never ingested
    // exist only as files).
    let mut all: std::collections::BTreeMap<String, u64> =
        cache.files().artifacts().list()?.into_iter().collect();
    all.extend(cache.artifact_hashes()?);
    let artifacts: Vec<(String, u64)> = all
        .into_iter()
        .filter(|(h, _)| !live.contains(h.as_str()))
        .collect();
    let blobs: Vec<(String, u64)> = cache
        .blobs()
        .list()?
        .into_iter()
        .filter(|(h, _)| !live.contains(h.as_str()))
        .collect();
    // Work folders of stages no manifest keeps (saved items of a cut-off run), unless a live
    // worker holds them.
    let work: Vec<String> = cache
        .files()
        .work_keys()
        .into_iter()
        .filter(|k| !keep.contains(k) && cache.files().work(k).lease_holder().is_none())
        .collect();
    for r in &dropped {
        println!("stage    {:<8} {}", &r.key[..8], r.slot);
    }
    for k in &work {
        println!(
            "work     {:<8} (saved items of an unfinished stage)",
            &k[..8.min(k.len())]
        );
    }
    for (h, size) in &artifacts {
        println!("artifact {:<8} {}", &h[..8.min(h.len())], bytes(*size));
    }
    for (h, size) in &blobs {
        println!("blob     {:<8} {}", &h[..8.min(h.len())], bytes(*size));
    }
    let freed: u64 = artifacts.iter().chain(&blobs).map(|x| x.1).sum();
    if !yes {
        println!(
            "dry run: {} stages, {} artifacts, {} blobs ({}) would be removed; pass --yes to remove them",
            dropped.len(),
            artifacts.len(),
            blobs.len(),
            bytes(freed)
        );
        return Ok(ExitCode::SUCCESS);
    }
    for r in &dropped {
        cache.remove_record(&r.key)?;
        cache.progress_clear(&r.key)?;
        // The linked model directory of a dropped checkpoint, if one was materialised.
        let models = cache.root().join("models").join(&r.key);
        if models.exists() {
            std::fs::remove_dir_all(&models)
                .map_err(|e| anyhow::anyhow!("{}: {e}", models.display()))?;
        }
    }
    for k in &work {
        cache.files().work(k).remove()?;
    }
    for (h, _) in &artifacts {
        cache.remove_artifact(h)?;
        if cache.files().artifacts().path(h).exists() {
            cache.files().artifacts().remove(h)?;
        }
    }
    for (h, _) in &blobs {
        cache.blobs().remove(h)?;
    }
    cache.flush()?;
    println!(
        "removed {} stages, {} artifacts, {} blobs ({})",
        dropped.len(),
        artifacts.len(),
        blobs.len(),
        bytes(freed)
    );
    Ok(ExitCode::SUCCESS)
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
