//! The descriptor tree of one domain and envoyproxy/ratelimit's matching rules:
//!
//! - a request descriptor with N entries can only match a node at depth N;
//! - at each level the entry's `key` selects the nodes; among them an exact `value` wins,
//!   then the first `*` pattern (in file order) that matches, then the node without a value;
//! - the walk descends only through the node chosen at each level (no backtracking).

use std::collections::HashMap;
use std::sync::Arc;

use smallvec::SmallVec;

use super::glob::Glob;
use super::{Domain, Policy};
use crate::descriptor::Entry;
use crate::key::{CounterKey, KeyHasher};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// A node of the tree: a `key` (+ optional `value`) with an optional policy and children.
#[derive(Debug, Default)]
pub(crate) struct Node {
    pub(crate) policy: Option<u32>,
    pub(crate) children: Level,
    /// With `share_threshold`, the pattern that stands in for the value in counter keys, so
    /// all values matching it share one counter.
    pub(crate) share_pattern: Option<Box<str>>,
}

/// The nodes at one depth under one parent, grouped by key.
#[derive(Debug, Default)]
pub(crate) struct Level {
    keys: FastMap<Box<str>, KeyGroup>,
}

#[derive(Debug, Default)]
struct KeyGroup {
    exact: FastMap<Box<str>, u32>,
    wildcards: Vec<(Glob, u32)>,
    any: Option<u32>,
}

/// The outcome of the insertion of a node that already exists at that level.
#[derive(Debug)]
pub(crate) struct Duplicate;

impl Level {
    /// Registers `node` under `key` (and `value`, exact or with `*`).
    pub(crate) fn insert(
        &mut self,
        key: &str,
        value: Option<&str>,
        node: u32,
    ) -> Result<(), Duplicate> {
        let group = self.keys.entry(key.into()).or_default();
        match value {
            None => {
                if group.any.replace(node).is_some() {
                    return Err(Duplicate);
                }
            }
            Some(v) => match Glob::new(v) {
                Some(glob) => {
                    if group.wildcards.iter().any(|(g, _)| g == &glob) {
                        return Err(Duplicate);
                    }
                    group.wildcards.push((glob, node));
                }
                None => {
                    if group.exact.insert(v.into(), node).is_some() {
                        return Err(Duplicate);
                    }
                }
            },
        }
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    #[inline]
    fn lookup(&self, entry: &Entry<'_>) -> Option<u32> {
        let group = self.keys.get(entry.key)?;
        if let Some(&n) = group.exact.get(entry.value) {
            return Some(n);
        }
        group
            .wildcards
            .iter()
            .find(|(g, _)| g.matches(entry.value))
            .map(|&(_, n)| n)
            .or(group.any)
    }
}

/// A descriptor matched to a policy, with the path of nodes it took.
#[derive(Debug, Clone)]
pub struct Match<'d> {
    /// The policy of the node the descriptor landed on.
    pub policy: &'d Arc<Policy>,
    path: SmallVec<[u32; 8]>,
}

impl Domain {
    /// Finds the policy for one descriptor, by envoyproxy/ratelimit's rules (see module docs).
    #[inline]
    pub fn find(&self, entries: &[Entry<'_>]) -> Option<Match<'_>> {
        let mut level = &self.root;
        let mut path = SmallVec::new();
        let last = entries.len().checked_sub(1)?;
        for (i, entry) in entries.iter().enumerate() {
            let index = level.lookup(entry)?;
            path.push(index);
            let node = &self.nodes[index as usize];
            if i == last {
                let policy = &self.policies[node.policy? as usize];
                return Some(Match { policy, path });
            }
            if node.children.is_empty() {
                return None;
            }
            level = &node.children;
        }
        None
    }

    /// The counter key for a matched descriptor: the domain, the algorithm and every entry,
    /// with `share_threshold` patterns standing in for the values they matched.
    pub fn counter_key(
        &self,
        m: &Match<'_>,
        entries: &[Entry<'_>],
        tag: u8,
        keys: &KeyHasher,
    ) -> CounterKey {
        let mut b = keys.start(tag, &self.name);
        for (entry, &index) in entries.iter().zip(&m.path) {
            b.str(entry.key);
            match &self.nodes[index as usize].share_pattern {
                Some(pattern) => {
                    b.byte(1);
                    b.str(pattern);
                }
                None => {
                    b.byte(0);
                    b.str(entry.value);
                }
            }
        }
        b.finish()
    }

    /// The counter key for a descriptor that carries its own limit (no policy involved).
    pub fn override_key(domain: &str, entries: &[Entry<'_>], keys: &KeyHasher) -> CounterKey {
        let mut b = keys.start(0xff, domain);
        for entry in entries {
            b.str(entry.key);
            b.str(entry.value);
        }
        b.finish()
    }

    pub(crate) fn new(name: Arc<str>, source: Arc<str>) -> Self {
        Self {
            name,
            source,
            policies: Vec::new(),
            nodes: Vec::new(),
            root: Level::default(),
        }
    }

    /// Adds a node under `parent` (`None` for the top level). Returns its index.
    pub(crate) fn add_node(
        &mut self,
        parent: Option<u32>,
        key: &str,
        value: Option<&str>,
        policy: Option<Policy>,
        share_pattern: Option<Box<str>>,
    ) -> Result<u32, Duplicate> {
        let index = u32::try_from(self.nodes.len()).map_err(|_| Duplicate)?;
        let level = match parent {
            None => &mut self.root,
            Some(p) => &mut self.nodes[p as usize].children,
        };
        level.insert(key, value, index)?;
        let policy = policy.map(|p| {
            self.policies.push(Arc::new(p));
            (self.policies.len() - 1) as u32
        });
        self.nodes.push(Node {
            policy,
            children: Level::default(),
            share_pattern,
        });
        Ok(index)
    }
}
