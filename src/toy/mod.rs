//! The built-in toy family: data and models that run the whole paper pipeline on a CPU with
//! no downloads (DESIGN.md, Built-in toy family).

pub mod problems;
