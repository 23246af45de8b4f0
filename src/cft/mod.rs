//! The method itself: the counterfactual rollouts (Eq. 5-7, `rollout.rs`, the one part that
//! runs a model, through the generation engine) and when a branch may stop early
//! (`answer.rs`), GRPO's rollout (`rl.rs`: n seeded samples per prompt, graded, advantages
//! within each prompt's group; §4.4), which tokens are critical (Eq. 6 and the Table 2 variants), which tokens the
//! selection baselines pick, and what kind of token each is (Figure 5). The rest works on
//! token ids and outcomes alone, and nothing here touches the cache: the stages
//! (`crate::stages`) read and save its inputs and results.

pub mod answer;
pub mod categories;
pub mod criticality;
pub mod rl;
pub mod rollout;
pub mod selection;
