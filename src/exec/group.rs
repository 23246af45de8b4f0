//! Which ready stages share a worker. Stages that load the same model (the evaluations of one
//! checkpoint on every benchmark; the greedy, rollout and token-statistics stages of one
//! model) run in one worker that loads it once — unless that would leave free worker slots
//! idle, in which case a group is split. Grouping never changes a stage's key or outputs; it
//! only decides which process runs it.

/// A ready stage as the grouping sees it: its key and, for a stage that may share a model
/// load, the model it loads.
pub struct Ready<'a> {
    pub key: &'a str,
    pub model: Option<String>,
}

/// Splits `ready` (in plan order) into at most `free` units to launch, each one worker's
/// stages in order. Stages on the same model form one unit, placed where its first stage
/// is; while there are fewer units than free slots, the largest is halved.
pub fn units(ready: &[Ready<'_>], free: usize) -> Vec<Vec<String>> {
    let mut units: Vec<(Option<&str>, Vec<String>)> = Vec::new();
    for r in ready {
        let joined = r.model.as_deref().and_then(|m| {
            units
                .iter_mut()
                .find(|(model, _)| *model == Some(m))
                .map(|(_, keys)| keys.push(r.key.to_string()))
        });
        if joined.is_none() {
            units.push((r.model.as_deref(), vec![r.key.to_string()]));
        }
    }
    let mut units: Vec<Vec<String>> = units.into_iter().map(|(_, keys)| keys).collect();
    while units.len() < free {
        let Some((at, _)) = units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.len() > 1)
            .max_by_key(|(i, u)| (u.len(), std::cmp::Reverse(*i)))
        else {
            break;
        };
        let half = units[at].len().div_ceil(2);
        let tail = units[at].split_off(half);
        units.insert(at + 1, tail);
    }
    units.truncate(free);
    units
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready<'a>(items: &[(&'a str, Option<&str>)]) -> Vec<Ready<'a>> {
        items
            .iter()
            .map(|(key, model)| Ready {
                key,
                model: model.map(str::to_string),
            })
            .collect()
    }

    #[test]
    fn stages_on_one_model_share_a_worker_when_slots_are_scarce() {
        let r = ready(&[
            ("e1", Some("ckpt-a")),
            ("d", None),
            ("e2", Some("ckpt-a")),
            ("f1", Some("ckpt-b")),
            ("e3", Some("ckpt-a")),
        ]);
        assert_eq!(units(&r, 2), vec![vec!["e1", "e2", "e3"], vec!["d"]]);
        assert_eq!(
            units(&r, 3),
            vec![vec!["e1", "e2", "e3"], vec!["d"], vec!["f1"]]
        );
    }

    #[test]
    fn groups_are_split_rather_than_leave_slots_idle() {
        let r = ready(&[("e1", Some("a")), ("e2", Some("a")), ("e3", Some("a"))]);
        assert_eq!(units(&r, 1), vec![vec!["e1", "e2", "e3"]]);
        assert_eq!(units(&r, 2), vec![vec!["e1", "e2"], vec!["e3"]]);
        assert_eq!(units(&r, 4), vec![vec!["e1"], vec!["e2"], vec!["e3"]]);
        assert!(units(&r, 0).is_empty());
    }
}
