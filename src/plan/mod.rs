//! Plans: a manifest resolved into a DAG of stages (petgraph), deduplicated by key.
//!
//! Two stages with the same kind, version, params and inputs are the same stage: the graph
//! holds it once however many methods or sweep cells need it. That is how Table 2's four CFT
//! rules share one greedy pass and two rollout stages.

mod build;
pub mod resources;
mod status;

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};

pub use crate::contract::stage::{KINDS, StageSpec, stage_key};
pub use build::build;
pub use status::{StageStatus, Status, statuses};

/// A file or directory the manifest names that is not there.
#[derive(Clone, Debug)]
pub struct MissingInput {
    pub what: String,
    pub written: String,
    pub at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Default)]
pub struct Plan {
    pub graph: DiGraph<StageSpec, ()>,
    index: HashMap<String, NodeIndex>,
    pub missing: Vec<MissingInput>,
}

impl Plan {
    /// Adds a stage unless one with the same key exists; returns its key either way.
    pub fn add(&mut self, spec: StageSpec) -> String {
        if let Some(&i) = self.index.get(&spec.key) {
            return self.graph[i].key.clone();
        }
        let key = spec.key.clone();
        let deps: Vec<NodeIndex> = spec
            .inputs
            .iter()
            .filter_map(|k| self.index.get(k).copied())
            .collect();
        let node = self.graph.add_node(spec);
        for dep in deps {
            self.graph.add_edge(dep, node, ());
        }
        self.index.insert(key.clone(), node);
        key
    }

    pub fn get(&self, key: &str) -> Option<&StageSpec> {
        self.index.get(key).map(|&i| &self.graph[i])
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    pub fn count(&self, kind: &str) -> usize {
        self.graph.node_weights().filter(|s| s.kind == kind).count()
    }

    /// The stages `keep` selects and everything they need, in the same order.
    pub fn restricted(&self, keep: impl Fn(&StageSpec) -> bool) -> Plan {
        let order = self.order();
        let mut needed: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for spec in order.iter().rev() {
            if keep(spec) || needed.contains(spec.key.as_str()) {
                needed.insert(&spec.key);
                needed.extend(spec.inputs.iter().map(String::as_str));
            }
        }
        let mut out = Plan {
            missing: self.missing.clone(),
            ..Plan::default()
        };
        for spec in self.graph.node_weights() {
            if needed.contains(spec.key.as_str()) {
                out.add(spec.clone());
            }
        }
        out
    }

    /// Stages in dependency order; among ready stages, the one added first goes first, so the
    /// order is the same on every run.
    pub fn order(&self) -> Vec<&StageSpec> {
        let mut indegree: Vec<usize> = self
            .graph
            .node_indices()
            .map(|n| {
                self.graph
                    .neighbors_directed(n, petgraph::Direction::Incoming)
                    .count()
            })
            .collect();
        let mut ready: std::collections::BTreeSet<usize> =
            (0..indegree.len()).filter(|&i| indegree[i] == 0).collect();
        let mut out = Vec::with_capacity(indegree.len());
        while let Some(i) = ready.pop_first() {
            let n = NodeIndex::new(i);
            out.push(&self.graph[n]);
            for next in self
                .graph
                .neighbors_directed(n, petgraph::Direction::Outgoing)
            {
                indegree[next.index()] -= 1;
                if indegree[next.index()] == 0 {
                    ready.insert(next.index());
                }
            }
        }
        out
    }

    /// Graphviz, for `cft plan --dot`.
    pub fn dot(&self, status: &HashMap<String, Status>) -> String {
        let mut out = String::from(
            "digraph plan {\n  rankdir=LR;\n  node [shape=box, style=filled, fontname=\"Helvetica\"];\n",
        );
        for spec in self.graph.node_weights() {
            let color = match status.get(&spec.key) {
                Some(Status::Cached) => "palegreen",
                Some(Status::Running) => "lightskyblue",
                Some(Status::Failed) => "salmon",
                _ => "white",
            };
            out.push_str(&format!(
                "  \"{}\" [label=\"{}\\n{}\", fillcolor={color}];\n",
                spec.key,
                spec.label.replace('"', "'"),
                &spec.key[..8.min(spec.key.len())]
            ));
        }
        for e in self.graph.edge_indices() {
            if let Some((a, b)) = self.graph.edge_endpoints(e) {
                out.push_str(&format!(
                    "  \"{}\" -> \"{}\";\n",
                    self.graph[a].key, self.graph[b].key
                ));
            }
        }
        out.push_str("}\n");
        out
    }
}
