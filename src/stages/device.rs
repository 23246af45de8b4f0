//! Which device the model stages run on: a run-time choice (`cft run --device`), never part
//! of a stage key — the same stage gives the same result wherever it runs (up to the
//! precision of the backend: f32 on the CPU, bf16 weights on CUDA).

use crate::model::LoadOptions;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(Device::Cuda(n)),
                _ => Err(format!("expected cpu, cuda or cuda:N, got {other:?}")),
            },
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Device {
    /// This GPU's free memory now, as `nvidia-smi` reports it; `None` on the CPU or when
    /// `nvidia-smi` does not answer. Under `CUDA_VISIBLE_DEVICES` (a Slurm job's GPUs), CUDA's
    /// device `n` is the list's `n`-th entry, which `nvidia-smi -i` takes as it is.
    pub fn free_memory(self) -> Option<u64> {
        let Device::Cuda(n) = self else {
            return None;
        };
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        let id = visible
            .as_deref()
            .and_then(|v| v.split(',').nth(n))
            .map_or_else(|| n.to_string(), |v| v.trim().to_string());
        let out = std::process::Command::new("nvidia-smi")
            .args([
                "--query-gpu=memory.free",
                "--format=csv,noheader,nounits",
                "-i",
                &id,
            ])
            .output()
            .ok()?;
        mebibytes(&String::from_utf8_lossy(&out.stdout))
    }

    /// bf16 weights stay bf16 on CUDA; the CPU backend computes in f32.
    pub fn load_options(self) -> LoadOptions {
        LoadOptions {
            keep_half: self != Device::Cpu,
            dtype: None,
        }
    }
}

/// `nvidia-smi`'s one-number answer in MiB, as bytes.
fn mebibytes(text: &str) -> Option<u64> {
    text.lines()
        .next()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|mib| mib << 20)
}

/// The devices a stage's worker holds: one, or several for a stage that spreads over the
/// GPUs of a node (`[train] strategy = "zero1"`). Written `cuda:0,cuda:1`; the first is where
/// a one-device stage runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Devices(Vec<Device>);

impl Devices {
    pub fn one(device: Device) -> Devices {
        Devices(vec![device])
    }

    /// `None` when `devices` is empty.
    pub fn new(devices: Vec<Device>) -> Option<Devices> {
        (!devices.is_empty()).then_some(Devices(devices))
    }

    pub fn first(&self) -> Device {
        self.0.first().copied().unwrap_or_default()
    }

    pub fn all(&self) -> &[Device] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The CUDA device numbers among them.
    pub fn cuda(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().filter_map(|d| match d {
            Device::Cuda(n) => Some(*n),
            Device::Cpu => None,
        })
    }
}

impl Default for Devices {
    fn default() -> Self {
        Devices::one(Device::Cpu)
    }
}

impl std::str::FromStr for Devices {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let devices = s
            .split(',')
            .map(|d| d.trim().parse())
            .collect::<Result<Vec<Device>, _>>()?;
        Devices::new(devices).ok_or_else(|| "no device given".to_string())
    }
}

impl std::fmt::Display for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.0.iter().map(Device::to_string).collect();
        f.write_str(&names.join(","))
    }
}

/// The GPUs the worker holds as backend `B`'s devices (`device` is the first of them, whose
/// device type the others share); empty on the CPU.
pub fn gpus<B: burn::prelude::Backend>(devices: &Devices, device: &B::Device) -> Vec<B::Device> {
    use burn::tensor::backend::{Device as _, DeviceId};
    let kind = device.to_id().type_id;
    devices
        .cuda()
        .map(|n| B::Device::from_id(DeviceId::new(kind, n as u16)))
        .collect()
}

/// Copies of `lm` on the worker's GPUs after the first (none on the CPU or with one GPU).
pub fn replicas<B: burn::prelude::Backend>(
    devices: &Devices,
    lm: &crate::model::CausalLm<B>,
    device: &B::Device,
) -> Vec<crate::model::CausalLm<B>> {
    use burn::module::Module;
    gpus::<B>(devices, device)
        .iter()
        .skip(1)
        .map(|d| lm.clone().fork(d))
        .collect()
}

/// `run` on every part, in parallel threads when there are several (one per model copy), the
/// results in the parts' order; a panicking thread is an error.
pub fn in_parallel<T: Send, R: Send>(
    parts: Vec<T>,
    run: impl Fn(T) -> Result<R, super::StageError> + Sync,
) -> Result<Vec<R>, super::StageError> {
    if parts.len() < 2 {
        return parts.into_iter().map(run).collect();
    }
    let run = &run;
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|p| scope.spawn(move || run(p)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(super::StageError::Failed(
                        "a decoding thread panicked".into(),
                    ))
                })
            })
            .collect()
    })
}

/// Micro-batches a training stage runs side by side (`Trainer::with_lanes`): on the CPU one
/// per core the worker's thread pool has; on a GPU one (its kernels fill it).
pub fn cpu_lanes(ctx: &super::StageCtx<'_>) -> usize {
    match ctx.device() {
        Device::Cpu => rayon::current_num_threads(),
        Device::Cuda(_) => 1,
    }
}

/// The engines a decoding stage runs: one per GPU the worker holds, each on its own copy of
/// the model (`lm` first, then `replicas`); on the CPU the `engines` binding (default 1) runs
/// that many side by side on the one model.
pub fn engine_models<'m, B: burn::prelude::Backend>(
    ctx: &super::StageCtx<'_>,
    lm: &'m crate::model::CausalLm<B>,
    replicas: &'m [crate::model::CausalLm<B>],
) -> Vec<&'m crate::model::CausalLm<B>> {
    match replicas.is_empty() {
        true => {
            let n = ctx.bindings()["engines"].as_u64().unwrap_or(1).max(1) as usize;
            vec![lm; n]
        }
        false => std::iter::once(lm).chain(replicas.iter()).collect(),
    }
}

/// `flat` (one entry per element of `chunks`, in order) cut back into one vector per chunk.
pub fn split_as<T, C>(flat: Vec<T>, chunks: &[&[C]]) -> Vec<Vec<T>> {
    let mut rest = flat.into_iter();
    chunks
        .iter()
        .map(|c| rest.by_ref().take(c.len()).collect())
        .collect()
}

/// The items `{prefix}-{i}` of `chunks`, computed in waves across `engines`: a wave holds
/// `per_engine` chunks per engine; its unsaved chunks go in contiguous shares, one per engine,
/// run in parallel, and `run(engine, share)` returns one item per chunk of its share. Each
/// chunk is saved as its own item with `len` units of progress, and the items come back in
/// chunk order, so what a stage writes depends neither on the engines nor on the wave width
/// (each request decodes the same whatever shares its batch), and a wave may mix chunks saved
/// by an interrupted run with computed ones.
pub fn items_in_waves<'c, C: Sync, E: Sync, I: super::Item + Send>(
    ctx: &mut super::StageCtx<'_>,
    prefix: &str,
    chunks: &[&'c [C]],
    engines: &[E],
    per_engine: usize,
    run: impl Fn(&E, &[&'c [C]]) -> Result<Vec<I>, super::StageError> + Sync,
) -> Result<Vec<I>, super::StageError> {
    let per_wave = per_engine.max(1) * engines.len().max(1);
    let mut out = Vec::with_capacity(chunks.len());
    for (w, wave) in chunks.chunks(per_wave).enumerate() {
        let names: Vec<(String, u64)> = wave
            .iter()
            .enumerate()
            .map(|(j, chunk)| (format!("{prefix}-{}", w * per_wave + j), chunk.len() as u64))
            .collect();
        let done = ctx.items(&names, |missing| {
            let missing: Vec<&'c [C]> = missing.iter().map(|&j| wave[j]).collect();
            let share = missing.len().div_ceil(engines.len().max(1));
            let work: Vec<(&E, &[&'c [C]])> = engines.iter().zip(missing.chunks(share)).collect();
            let run = &run;
            let parts = in_parallel(work, |(engine, part)| {
                let items = run(engine, part)?;
                match items.len() == part.len() {
                    true => Ok(items),
                    false => Err(super::StageError::Failed(format!(
                        "{} items for {} chunks",
                        items.len(),
                        part.len()
                    ))),
                }
            })?;
            Ok(parts.into_iter().flatten().collect())
        })?;
        out.extend(done);
    }
    Ok(out)
}

/// Calls the generic stage body `$f::<B>(ctx, &device)` on the backend of `ctx.device()`.
#[macro_export]
macro_rules! on_device {
    ($ctx:expr, $f:ident) => {
        match $ctx.device() {
            $crate::stages::Device::Cpu => $f::<burn::backend::Flex>($ctx, &Default::default()),
            #[cfg(feature = "cuda")]
            $crate::stages::Device::Cuda(n) => {
                $f::<burn::backend::Cuda>($ctx, &burn::backend::cuda::CudaDevice::new(n))
            }
            #[cfg(not(feature = "cuda"))]
            $crate::stages::Device::Cuda(_) => Err($crate::stages::StageError::Failed(
                "this cft was built without the `cuda` feature".into(),
            )),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_print_and_answer_for_their_gpus() {
        let d: Devices = "cuda:0, cuda:3".parse().unwrap();
        assert_eq!(d.to_string(), "cuda:0,cuda:3");
        assert_eq!(d.cuda().collect::<Vec<_>>(), [0, 3]);
        assert_eq!(d.first(), Device::Cuda(0));
        assert!("".parse::<Devices>().is_err());
        assert!("cuda:x".parse::<Devices>().is_err());
        assert_eq!(Device::Cpu.free_memory(), None);
        assert_eq!(mebibytes("81037\n"), Some(81037 << 20));
        assert_eq!(mebibytes("[N/A]"), None);
    }
}
