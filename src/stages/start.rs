//! A method's checkpoint as another stage's starting point: GRPO's start (paper §4.4) and
//! §5.1's M_cft. The planner gives the stage the cells' train stages and, when there are
//! several, their evaluations; the cell is the one `[report] select` picks, as the report
//! picks it.

use std::path::PathBuf;

use crate::cache::Record;
use crate::contract::MethodStart;
use crate::report::select::{Candidate, Selection, choose};

use super::{StageCtx, StageError};

fn fail(message: String) -> StageError {
    StageError::Failed(message)
}

/// `report.select` as the planner wrote it.
fn selection(written: &str) -> Result<Selection, StageError> {
    match written.split_once(':') {
        None if written == "best-average" => Ok(Selection::BestAverage),
        Some(("best", b)) => Ok(Selection::BestOn(b.to_string())),
        Some(("cell", c)) => Ok(Selection::Cell(c.to_string())),
        _ => Err(fail(format!("unknown cell selection `{written}`"))),
    }
}

/// The checkpoint of a method's cell and the cell: the only one, or the one `select` picks
/// by the accuracies of the eval inputs among `rest` (as the report picks it).
pub fn chosen_checkpoint(
    ctx: &StageCtx<'_>,
    method: &MethodStart,
    rest: &[Record],
) -> Result<(PathBuf, String), StageError> {
    let trains: Vec<&Record> = rest.iter().filter(|r| r.kind == "train").collect();
    let evals: Vec<&Record> = rest.iter().filter(|r| r.kind == "eval").collect();
    if trains.len() != method.cells.len()
        || evals.len() != method.cells.len() * method.select_on.len()
    {
        return Err(fail(format!(
            "stage `{}`: {} train and {} eval inputs for {} cells",
            ctx.spec.label,
            trains.len(),
            evals.len(),
            method.cells.len()
        )));
    }
    let chosen = match method.cells.len() {
        1 => 0,
        _ => {
            let per = method.select_on.len();
            let scores: Vec<Vec<Option<f64>>> = (0..method.cells.len())
                .map(|c| {
                    evals[c * per..(c + 1) * per]
                        .iter()
                        .map(|r| r.metrics["accuracy"].as_f64().map(|a| a * 100.0))
                        .collect()
                })
                .collect();
            let candidates: Vec<Candidate<'_>> = method
                .cells
                .iter()
                .zip(&scores)
                .map(|(label, s)| Candidate { label, scores: s })
                .collect();
            let rule = selection(&method.select)?;
            choose(&rule, &method.select_on, &candidates).ok_or_else(|| {
                StageError::Input(format!(
                    "no cell of `{}` has the evaluations `{}` chooses by",
                    method.method, method.select
                ))
            })?
        }
    };
    Ok((ctx.model_dir(trains[chosen])?, method.cells[chosen].clone()))
}
