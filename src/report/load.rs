//! The report of a planned experiment, from the records its `report` stage would read,
//! looked up in a cache by key. Nothing runs: a record that is not there shows as "—".

use crate::cache::{Record, Store};
use crate::plan::Plan;

use super::inputs::{Params, Reader, Records};
use super::{Report, ReportError, build};
use crate::contract::Params as _;

pub fn from_store(
    plan: &Plan,
    store: &dyn Store,
    read: &Reader<'_>,
) -> Result<Report, ReportError> {
    let spec = plan
        .order()
        .into_iter()
        .find(|s| s.kind == "report")
        .ok_or_else(|| ReportError::Params("the plan has no report stage".into()))?;
    let params = Params::from_params(&spec.label, &spec.params)
        .map_err(|e| ReportError::Params(e.to_string()))?;
    let mut records = Vec::new();
    for key in &spec.inputs {
        let record = store
            .record(key)
            .map_err(|e| ReportError::Params(format!("reading record {key}: {e}")))?;
        records.extend(record);
    }
    let records = Records::new(records, read);
    Ok(build(&params, &records))
}

/// Reads a record's output from a cache or the live view of one; `None` when it is missing.
pub fn read_output(store: &dyn Store, record: &Record, name: &str) -> Option<Vec<u8>> {
    store.output(record, name).ok()
}
