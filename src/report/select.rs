//! Which sweep cell stands for a method in the tables. The paper reports each method's best
//! hyper-parameter configuration (§4.1); the manifest says best by what (`report.select`).

/// The rule, from `report.select`.
#[derive(Clone, Debug, PartialEq)]
pub enum Selection {
    /// Highest average accuracy over the benchmarks (the paper's choice).
    BestAverage,
    /// Highest accuracy on one benchmark.
    BestOn(String),
    /// A fixed cell label.
    Cell(String),
}

impl Selection {
    pub fn from_select(select: &crate::manifest::Select) -> Selection {
        match select {
            crate::manifest::Select::BestAverage => Selection::BestAverage,
            crate::manifest::Select::BestOn(b) => Selection::BestOn(b.clone()),
            crate::manifest::Select::Cell(c) => Selection::Cell(c.clone()),
        }
    }

    /// As the manifest writes it.
    pub fn describe(&self) -> String {
        match self {
            Selection::BestAverage => "best-average".into(),
            Selection::BestOn(b) => format!("best:{b}"),
            Selection::Cell(c) => format!("cell:{c}"),
        }
    }
}

/// One cell of a method: its label and its accuracy per benchmark (`None`: not evaluated).
pub struct Candidate<'a> {
    pub label: &'a str,
    pub scores: &'a [Option<f64>],
}

/// The mean of the scores when every benchmark has one.
pub fn complete_average(scores: &[Option<f64>]) -> Option<f64> {
    let all: Option<Vec<f64>> = scores.iter().copied().collect();
    all.filter(|v| !v.is_empty())
        .map(|v| v.iter().sum::<f64>() / v.len() as f64)
}

/// The index of the chosen cell. Ties go to the cell listed first (sweep order), so the
/// choice is stable. With best-average, cells missing a benchmark are only considered when no
/// cell is complete (a sweep still running): then the most complete cell wins, by the mean of
/// what it has.
pub fn choose(rule: &Selection, benchmarks: &[String], cells: &[Candidate<'_>]) -> Option<usize> {
    let best_by = |key: &dyn Fn(&Candidate<'_>) -> Option<f64>| -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for (i, c) in cells.iter().enumerate() {
            if let Some(v) = key(c)
                && best.is_none_or(|(_, b)| v > b)
            {
                best = Some((i, v));
            }
        }
        best.map(|(i, _)| i)
    };
    match rule {
        Selection::Cell(label) => cells.iter().position(|c| c.label == label),
        Selection::BestOn(bench) => {
            let at = benchmarks.iter().position(|b| b == bench)?;
            best_by(&|c| c.scores.get(at).copied().flatten())
        }
        Selection::BestAverage => best_by(&|c| complete_average(c.scores)).or_else(|| {
            let most = cells
                .iter()
                .map(|c| c.scores.iter().flatten().count())
                .max()
                .filter(|&m| m > 0)?;
            best_by(&|c| {
                let have: Vec<f64> = c.scores.iter().flatten().copied().collect();
                (have.len() == most).then(|| have.iter().sum::<f64>() / most as f64)
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn benches() -> Vec<String> {
        vec!["gsm8k".into(), "math".into()]
    }

    #[test]
    fn best_average_best_on_and_fixed_cell() {
        let a = [Some(70.0), Some(40.0)]; // avg 55
        let b = [Some(60.0), Some(52.0)]; // avg 56
        let c = [Some(75.0), Some(30.0)]; // avg 52.5, best on gsm8k
        let cells = [
            Candidate {
                label: "a",
                scores: &a,
            },
            Candidate {
                label: "b",
                scores: &b,
            },
            Candidate {
                label: "c",
                scores: &c,
            },
        ];
        assert_eq!(choose(&Selection::BestAverage, &benches(), &cells), Some(1));
        assert_eq!(
            choose(&Selection::BestOn("gsm8k".into()), &benches(), &cells),
            Some(2)
        );
        assert_eq!(
            choose(&Selection::BestOn("math".into()), &benches(), &cells),
            Some(1)
        );
        assert_eq!(
            choose(&Selection::Cell("a".into()), &benches(), &cells),
            Some(0)
        );
        assert_eq!(
            choose(&Selection::Cell("zz".into()), &benches(), &cells),
            None
        );
    }

    #[test]
    fn ties_go_to_the_first_cell_and_incomplete_cells_wait() {
        let a = [Some(50.0), Some(50.0)];
        let b = [Some(60.0), Some(40.0)];
        let partial = [Some(99.0), None];
        let cells = [
            Candidate {
                label: "a",
                scores: &a,
            },
            Candidate {
                label: "b",
                scores: &b,
            },
            Candidate {
                label: "p",
                scores: &partial,
            },
        ];
        assert_eq!(choose(&Selection::BestAverage, &benches(), &cells), Some(0));
        // Nothing complete: the most complete cells compete on what they have.
        let none = [None, None];
        let q = [None, Some(10.0)];
        let cells = [
            Candidate {
                label: "n",
                scores: &none,
            },
            Candidate {
                label: "p",
                scores: &partial,
            },
            Candidate {
                label: "q",
                scores: &q,
            },
        ];
        assert_eq!(choose(&Selection::BestAverage, &benches(), &cells), Some(1));
        let cells = [Candidate {
            label: "n",
            scores: &none,
        }];
        assert_eq!(choose(&Selection::BestAverage, &benches(), &cells), None);
    }
}
