//! Criticality rules (paper Eq. 6 and §4.5, Table 2).
//!
//! For a correct response y_1..y_T and each alternative rank j = 2..k, the rollout stage
//! records whether the branch that substitutes the j-th most likely token at position t and
//! continues greedily still ends in a correct answer. A rule turns those outcomes into a
//! per-token weight c_t:
//!
//! - Strict-k: c_t = 1 iff every rank 2..k fails (Eq. 6, the paper's default with k = 3);
//! - Union: c_t = 1 iff any rank 2..k fails;
//! - Graded: c_t = the number of failing ranks (1 = weak, 2 = strong critical for k = 3).
//!
//! A rank may be missing at a position (`None`) only when the Strict shortcut skipped it
//! because an earlier rank already succeeded; Union and Graded need every rank.

use crate::manifest::Rule;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CriticalityError {
    #[error("rank {rank} has {got} positions, rank 2 has {expected}")]
    Length {
        rank: usize,
        got: usize,
        expected: usize,
    },
    #[error("rank {rank} was not rolled out at position {position}, which the {rule:?} rule needs")]
    Missing {
        rank: usize,
        position: usize,
        rule: Rule,
    },
    #[error("k = {k} needs ranks 2..={k}, but {given} were given")]
    Ranks { k: usize, given: usize },
}

/// `fails[r][t]`: did the branch with alternative rank `r + 2` at position `t` end wrong?
/// Returns c_t for every position.
pub fn weights(
    rule: Rule,
    k: usize,
    fails: &[Vec<Option<bool>>],
) -> Result<Vec<f32>, CriticalityError> {
    if k < 2 || fails.len() < k - 1 {
        return Err(CriticalityError::Ranks {
            k,
            given: fails.len(),
        });
    }
    let ranks = &fails[..k - 1];
    let len = ranks[0].len();
    for (r, v) in ranks.iter().enumerate() {
        if v.len() != len {
            return Err(CriticalityError::Length {
                rank: r + 2,
                got: v.len(),
                expected: len,
            });
        }
    }
    (0..len)
        .map(|t| {
            let at = |r: usize| ranks[r][t];
            match rule {
                Rule::Strict => {
                    // Scan ranks in order: the first success decides (later ranks may be
                    // skipped); a missing rank before any success is an error.
                    for r in 0..ranks.len() {
                        match at(r) {
                            Some(false) => return Ok(0.0),
                            Some(true) => {}
                            None => {
                                return Err(CriticalityError::Missing {
                                    rank: r + 2,
                                    position: t,
                                    rule,
                                });
                            }
                        }
                    }
                    Ok(1.0)
                }
                Rule::Union | Rule::Graded => {
                    let mut failed = 0;
                    for r in 0..ranks.len() {
                        match at(r) {
                            Some(true) => failed += 1,
                            Some(false) => {}
                            None => {
                                return Err(CriticalityError::Missing {
                                    rank: r + 2,
                                    position: t,
                                    rule,
                                });
                            }
                        }
                    }
                    Ok(match rule {
                        Rule::Union => f32::from(u8::from(failed > 0)),
                        _ => failed as f32,
                    })
                }
            }
        })
        .collect()
}

/// Positions where rank `j + 1` must be rolled out under the Strict shortcut: those where
/// every rank up to `j` failed.
pub fn still_open(previous: &[Vec<Option<bool>>]) -> Vec<bool> {
    let Some(first) = previous.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|t| previous.iter().all(|rank| rank[t] == Some(true)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Option<bool> = Some(true); // the branch failed
    const S: Option<bool> = Some(false); // the branch stayed correct
    const N: Option<bool> = None;

    #[test]
    fn table2_rules_on_the_four_outcome_pairs() {
        // Positions: (fail, fail), (fail, ok), (ok, fail), (ok, ok) for ranks 2 and 3.
        let fails = vec![vec![F, F, S, S], vec![F, S, F, S]];
        assert_eq!(
            weights(Rule::Strict, 3, &fails).unwrap(),
            [1.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(
            weights(Rule::Strict, 2, &fails).unwrap(),
            [1.0, 1.0, 0.0, 0.0]
        );
        assert_eq!(
            weights(Rule::Union, 3, &fails).unwrap(),
            [1.0, 1.0, 1.0, 0.0]
        );
        assert_eq!(
            weights(Rule::Graded, 3, &fails).unwrap(),
            [2.0, 1.0, 1.0, 0.0]
        );
    }

    #[test]
    fn strict_accepts_ranks_skipped_after_a_success_and_union_does_not() {
        let fails = vec![vec![F, S], vec![F, N]];
        assert_eq!(weights(Rule::Strict, 3, &fails).unwrap(), [1.0, 0.0]);
        assert_eq!(
            weights(Rule::Union, 3, &fails),
            Err(CriticalityError::Missing {
                rank: 3,
                position: 1,
                rule: Rule::Union
            })
        );
        assert_eq!(still_open(&fails[..1]), [true, false]);
    }

    #[test]
    fn mismatched_lengths_and_too_few_ranks_are_errors() {
        assert!(matches!(
            weights(Rule::Strict, 3, &[vec![F, F], vec![F]]),
            Err(CriticalityError::Length { rank: 3, .. })
        ));
        assert!(matches!(
            weights(Rule::Strict, 3, &[vec![F]]),
            Err(CriticalityError::Ranks { k: 3, given: 1 })
        ));
    }
}
