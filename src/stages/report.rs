//! `report`: the experiment's tables and plots, built from its input records inside a run
//! (what `cft report` does from the cache). Its outputs are the report's files.

use serde_json::json;

use super::{Output, StageCtx, StageError, StageImpl, StageOutput};
use crate::cache::Record;
use crate::report::{Params, Records, build, files::artifacts};

pub struct Report;

impl StageImpl for Report {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        ctx.set_total(1);
        let params: Params = ctx.params_as()?;
        let shared: &StageCtx<'_> = ctx;
        let read = |r: &Record, name: &str| shared.read(r, name).ok();
        let records = Records::new(shared.inputs().to_vec(), &read);
        let report = build(&params, &records);
        let files = artifacts(&report).map_err(|e| StageError::Failed(e.to_string()))?;
        let metrics = json!({
            "models": report.blocks.len(),
            "rows": report.blocks.iter().map(|b| b.rows.len()).sum::<usize>(),
            "files": files.len(),
        });
        ctx.advance(1);
        Ok(StageOutput {
            outputs: files
                .into_iter()
                .map(|(name, bytes)| (name, Output::Bytes(bytes)))
                .collect(),
            metrics,
        })
    }
}
