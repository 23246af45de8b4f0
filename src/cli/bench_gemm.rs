//! `cft bench gemm`: the f32 matrix-product rate the backend reaches on this machine, so every
//! other benchmark reads as a share of it: square products (the machine's peak as burn gets
//! it) and the products of a decoding step of the ~135M Llama shape (hidden 576, intermediate
//! 1536, vocabulary 49,152) at the batch sizes `bench generate` runs.

use std::time::Instant;

use anyhow::Context;
use burn::prelude::*;
use clap::Args;

use cft::model::LoadOptions;
use cft::rng::Rng;

use super::device::{DeviceArg, OnDevice, dispatch};

#[derive(Args, Debug)]
pub struct BenchGemmArgs {
    /// Square sizes n (an n × n by n × n product each).
    #[arg(long, default_value = "512,1024,2048", value_delimiter = ',')]
    pub square: Vec<usize>,
    /// Rows m of the decoding-step products [m, 576] x [576, 1536] and [m, 576] x [576, 49152].
    #[arg(long, default_value = "1,8,32,64", value_delimiter = ',')]
    pub rows: Vec<usize>,
    /// Seconds each product is repeated for (after one untimed run).
    #[arg(long, default_value_t = 0.5)]
    pub seconds: f64,
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda[:N]")]
    pub device: DeviceArg,
}

pub fn run(args: BenchGemmArgs) -> anyhow::Result<()> {
    let device = args.device;
    dispatch(device, args)
}

impl OnDevice for BenchGemmArgs {
    fn run<B: Backend>(self, device: B::Device, _: LoadOptions) -> anyhow::Result<()> {
        let threads = rayon::current_num_threads();
        println!("f32 matrix products on {device:?} ({threads} threads in the CPU pool)");
        let mut shapes: Vec<(String, [usize; 3])> = self
            .square
            .iter()
            .map(|&n| (format!("square {n}"), [n, n, n]))
            .collect();
        for &m in &self.rows {
            shapes.push((format!("decode mlp, {m} rows"), [m, 576, 1536]));
            shapes.push((format!("decode head, {m} rows"), [m, 576, 49_152]));
        }
        let mut best = 0.0f64;
        for (name, [m, k, n]) in shapes {
            let rate = gflops::<B>(&device, m, k, n, self.seconds)
                .with_context(|| format!("{name}: [{m}, {k}] x [{k}, {n}]"))?;
            best = best.max(rate);
            println!("{name:<24} [{m:>5}, {k:>5}] x [{k:>5}, {n:>6}]: {rate:>8.1} GFLOP/s");
        }
        println!("peak: {best:.1} GFLOP/s");
        Ok(())
    }
}

/// GFLOP/s of `[m, k] x [k, n]`, repeated for `seconds` after one untimed run.
fn gflops<B: Backend>(
    device: &B::Device,
    m: usize,
    k: usize,
    n: usize,
    seconds: f64,
) -> anyhow::Result<f64> {
    let mut rng = Rng::new(1);
    let mut random = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    };
    let a = Tensor::<B, 2>::from_data(TensorData::new(random(m * k), [m, k]), device);
    let b = Tensor::<B, 2>::from_data(TensorData::new(random(k * n), [k, n]), device);
    let sync = || B::sync(device).map_err(|e| anyhow::anyhow!("{e:?}"));
    let _ = a.clone().matmul(b.clone());
    sync()?;
    let (start, mut runs) = (Instant::now(), 0u64);
    while runs == 0 || start.elapsed().as_secs_f64() < seconds {
        let c = a.clone().matmul(b.clone());
        drop(c);
        sync()?;
        runs += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(2.0 * (m * k * n) as f64 * runs as f64 / elapsed / 1e9)
}
