//! LoRA (Hu et al. 2021): see the stage; not yet implemented.
