//! Shared by the parity tests: the committed fixtures of `scripts/make_model_fixtures.py`.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::backend::Flex;
use cft::model::{LanguageModel, LoadOptions};
pub use cft::parity::Reference;

pub type B = Flex;

pub const FAMILIES: [&str; 4] = cft::parity::FAMILIES;

pub fn fixture(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(family)
}

/// transformers' outputs on a fixture (`cft::parity` reads and compares them).
pub fn reference(family: &str) -> Reference {
    Reference::read(&fixture(family)).unwrap()
}

pub fn load(family: &str) -> LanguageModel<B> {
    LanguageModel::load(
        &fixture(family),
        &Default::default(),
        LoadOptions::default(),
    )
    .unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    cft::parity::max_abs_diff(a, b)
}
