//! The report of a planned experiment, from the records its `report` stage would read,
//! looked up in a cache by key, and its TensorBoard runs from the same records. Nothing runs:
//! a record that is not there shows as "—" (or as no run).

use crate::cache::{Record, Store};
use crate::plan::Plan;

use super::inputs::{Params, Reader, Records};
use super::tensorboard::{self, Run};
use super::{Report, ReportError, build};
use crate::contract::{Kind, Params as _};

pub fn from_store(
    plan: &Plan,
    store: &dyn Store,
    read: &Reader<'_>,
) -> Result<Report, ReportError> {
    let (params, records) = inputs(plan, store, &[])?;
    Ok(build(&params, &Records::new(records, read)))
}

/// The TensorBoard runs of a planned experiment: the report's inputs and, which the report
/// itself does not read, each model's pretraining.
pub fn tensorboard_from_store(
    plan: &Plan,
    store: &dyn Store,
    read: &Reader<'_>,
) -> Result<Vec<Run>, ReportError> {
    let (params, records) = inputs(plan, store, &[Kind::Pretrain])?;
    Ok(tensorboard::runs(&params, &Records::new(records, read)))
}

/// The report stage's params and the records of its inputs, with those of the plan's stages
/// of the `extra` kinds.
fn inputs(
    plan: &Plan,
    store: &dyn Store,
    extra: &[Kind],
) -> Result<(Params, Vec<Record>), ReportError> {
    let order = plan.order();
    let spec = order
        .iter()
        .find(|s| s.kind == "report")
        .ok_or_else(|| ReportError::Params("the plan has no report stage".into()))?;
    let params = Params::from_params(&spec.label, &spec.params)
        .map_err(|e| ReportError::Params(e.to_string()))?;
    let more = order
        .iter()
        .filter(|s| extra.contains(&s.kind))
        .map(|s| &s.key);
    let mut records = Vec::new();
    for key in spec.inputs.iter().chain(more) {
        let record = store
            .record(key)
            .map_err(|e| ReportError::Params(format!("reading record {key}: {e}")))?;
        records.extend(record);
    }
    Ok((params, records))
}

/// Reads a record's output from a cache or the live view of one; `None` when it is missing.
pub fn read_output(store: &dyn Store, record: &Record, name: &str) -> Option<Vec<u8>> {
    store.output(record, name).ok()
}
