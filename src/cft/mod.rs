//! The method itself, free of models and caches: which tokens are critical (Eq. 6 and the
//! Table 2 variants), which tokens the selection baselines pick, and what kind of token each
//! is (Figure 5).

pub mod answer;
pub mod categories;
pub mod criticality;
pub mod rollout;
pub mod selection;
