//! `--device cpu|cuda[:N]`: picks the burn backend at run time. The CPU backend (`flex`) is
//! always built; CUDA only with the `cuda` cargo feature.

use burn::prelude::Backend;

use cft::model::LoadOptions;

/// The same device choice the pipeline stages take.
pub use cft::stages::Device as DeviceArg;

/// Work generic over the backend, run on the one `--device` names.
pub trait OnDevice {
    fn run<B: Backend>(self, device: B::Device, load: LoadOptions) -> anyhow::Result<()>;
}

pub fn dispatch<T: OnDevice>(device: DeviceArg, task: T) -> anyhow::Result<()> {
    match device {
        // The CPU backend computes in f32: half-precision weights are widened on load.
        DeviceArg::Cpu => {
            task.run::<burn::backend::Flex>(Default::default(), LoadOptions::default())
        }
        #[cfg(feature = "cuda")]
        DeviceArg::Cuda(n) => task.run::<burn::backend::Cuda>(
            burn::backend::cuda::CudaDevice::new(n),
            LoadOptions {
                keep_half: true,
                dtype: None,
            },
        ),
        #[cfg(not(feature = "cuda"))]
        DeviceArg::Cuda(_) => anyhow::bail!("this cft was built without the `cuda` feature"),
    }
}
