//! The dynamic item pipeline (SpeechBrain's `speechbrain.utils.data_pipeline.DataPipeline`):
//! functions of named keys providing named keys, evaluated lazily in dependency order.
//!
//! Semantics kept from SpeechBrain:
//! - a key is looked up in the static data first, then among dynamic items (so the tutorial's
//!   `text_pipeline`, which takes `words` and provides `words` again, reads the manifest's
//!   `words`);
//! - an item added later for the same key replaces the earlier one;
//! - an item may take keys that no item provides yet (they must exist when data is fetched);
//! - only the items the output keys (transitively) need are called, each at most once per
//!   data point.
//!
//! One difference: a SpeechBrain generator item providing several keys is advanced only as
//! far as the requested keys need; here a multi-output function computes all its outputs in
//! one call (Rust closures are not resumable generators). It is still skipped entirely when
//! none of its outputs is needed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::error::{BoxError, DataIoError, Result};
use super::item::Args;
use super::value::Value;

/// The function of a dynamic item: the values of its `takes` keys in, one value per `provides`
/// key out.
pub type ItemFn = dyn Fn(Args<'_>) -> std::result::Result<Vec<Value>, BoxError> + Send + Sync;

/// A dynamic item: `takes` keys, `provides` keys and the function between them.
#[derive(Clone)]
pub struct DynamicItem {
    pub(crate) takes: Vec<String>,
    pub(crate) provides: Vec<String>,
    pub(crate) func: Arc<ItemFn>,
}

impl std::fmt::Debug for DynamicItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicItem")
            .field("takes", &self.takes)
            .field("provides", &self.provides)
            .finish()
    }
}

impl DynamicItem {
    /// A dynamic item. Fails if it provides nothing (as SpeechBrain, which refuses redundant
    /// items).
    pub fn new<F>(takes: &[&str], provides: &[&str], func: F) -> Result<Self>
    where
        F: Fn(Args<'_>) -> std::result::Result<Vec<Value>, BoxError> + Send + Sync + 'static,
    {
        if provides.is_empty() {
            return Err(DataIoError::Invalid(
                "won't add a redundant dynamic item which doesn't provide anything".into(),
            ));
        }
        Ok(Self {
            takes: takes.iter().map(|s| s.to_string()).collect(),
            provides: provides.iter().map(|s| s.to_string()).collect(),
            func: Arc::new(func),
        })
    }

    /// The keys this item takes.
    pub fn takes(&self) -> &[String] {
        &self.takes
    }

    /// The keys this item provides.
    pub fn provides(&self) -> &[String] {
        &self.provides
    }
}

/// Where a key's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A static column (or the id).
    Static,
    /// Output `slot` of dynamic item `item`.
    Dynamic { item: usize, slot: usize },
}

/// The set of dynamic items and the output keys (SpeechBrain's `DataPipeline`).
#[derive(Debug, Clone, Default)]
pub struct DataPipeline {
    static_keys: Vec<String>,
    items: Vec<DynamicItem>,
    /// (output name, internal key), as SpeechBrain's `output_mapping`.
    output: Vec<(String, String)>,
}

/// An evaluation plan: which items to call, in order, for a set of keys.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    /// Dynamic items to call, dependencies first.
    pub order: Vec<usize>,
    /// Static keys read.
    pub static_keys: Vec<String>,
}

impl DataPipeline {
    /// A pipeline over the given static keys (`"id"` is always one).
    pub fn new(static_keys: Vec<String>) -> Self {
        let mut static_keys = static_keys;
        if !static_keys.iter().any(|k| k == "id") {
            static_keys.push("id".into());
        }
        Self {
            static_keys,
            items: Vec::new(),
            output: Vec::new(),
        }
    }

    /// Adds a dynamic item (later items replace earlier ones providing the same key).
    pub fn add_dynamic_item(&mut self, item: DynamicItem) {
        self.items.push(item);
    }

    /// Sets the output keys (validated when data is fetched, as SpeechBrain).
    pub fn set_output_keys(&mut self, keys: &[&str]) {
        self.output = keys
            .iter()
            .map(|k| (k.to_string(), k.to_string()))
            .collect();
    }

    /// Sets output keys as (outside name, internal key) pairs, as SpeechBrain's dict form.
    pub fn set_output_mapping(&mut self, mapping: &[(&str, &str)]) {
        self.output = mapping
            .iter()
            .map(|(o, i)| (o.to_string(), i.to_string()))
            .collect();
    }

    /// The output mapping (outside name, internal key).
    pub fn output_mapping(&self) -> &[(String, String)] {
        &self.output
    }

    /// The dynamic items.
    pub fn items(&self) -> &[DynamicItem] {
        &self.items
    }

    /// The static keys.
    pub fn static_keys(&self) -> &[String] {
        &self.static_keys
    }

    /// True if `key` is static or provided by some dynamic item.
    pub fn knows(&self, key: &str) -> bool {
        self.source(key).is_some()
    }

    pub(crate) fn source(&self, key: &str) -> Option<Source> {
        if self.static_keys.iter().any(|k| k == key) {
            return Some(Source::Static);
        }
        self.items.iter().enumerate().rev().find_map(|(i, it)| {
            it.provides
                .iter()
                .position(|p| p == key)
                .map(|slot| Source::Dynamic { item: i, slot })
        })
    }

    fn unknown(&self, key: &str) -> DataIoError {
        DataIoError::UnknownKey {
            key: key.to_string(),
            available: self.static_keys.join(", "),
        }
    }

    /// The plan computing `keys`: a depth-first topological order of the needed items.
    pub(crate) fn plan(&self, keys: &[&str]) -> Result<Plan> {
        let mut plan = Plan::default();
        let mut done: HashSet<usize> = HashSet::new();
        let mut visiting: HashSet<usize> = HashSet::new();
        let mut statics: HashSet<String> = HashSet::new();
        for key in keys {
            self.visit(key, &mut plan, &mut done, &mut visiting, &mut statics)?;
        }
        Ok(plan)
    }

    fn visit(
        &self,
        key: &str,
        plan: &mut Plan,
        done: &mut HashSet<usize>,
        visiting: &mut HashSet<usize>,
        statics: &mut HashSet<String>,
    ) -> Result<()> {
        match self.source(key).ok_or_else(|| self.unknown(key))? {
            Source::Static => {
                if statics.insert(key.to_string()) {
                    plan.static_keys.push(key.to_string());
                }
            }
            Source::Dynamic { item, .. } => {
                if done.contains(&item) {
                    return Ok(());
                }
                if !visiting.insert(item) {
                    return Err(DataIoError::Cycle {
                        key: key.to_string(),
                    });
                }
                for t in &self.items[item].takes {
                    self.visit(t, plan, done, visiting, statics)?;
                }
                visiting.remove(&item);
                done.insert(item);
                plan.order.push(item);
            }
        }
        Ok(())
    }

    /// Runs `plan` for one data point whose static values are given by `get_static`, then
    /// returns the values of `keys` (cloned: tensors share storage, so this is cheap).
    pub(crate) fn run(
        &self,
        id: &str,
        plan: &Plan,
        get_static: &dyn Fn(&str) -> Result<Value>,
        keys: &[&str],
    ) -> Result<Vec<Value>> {
        let mut statics: HashMap<&str, Value> = HashMap::with_capacity(plan.static_keys.len());
        for k in &plan.static_keys {
            statics.insert(k.as_str(), get_static(k)?);
        }
        let mut outputs: HashMap<usize, Vec<Value>> = HashMap::with_capacity(plan.order.len());
        let lookup = |key: &str, outputs: &HashMap<usize, Vec<Value>>| -> Result<Value> {
            match self.source(key).ok_or_else(|| self.unknown(key))? {
                Source::Static => statics.get(key).cloned().ok_or_else(|| self.unknown(key)),
                Source::Dynamic { item, slot } => outputs
                    .get(&item)
                    .map(|v| v[slot].clone())
                    .ok_or_else(|| self.unknown(key)),
            }
        };
        for &i in &plan.order {
            let item = &self.items[i];
            let args: Vec<Value> = item
                .takes
                .iter()
                .map(|k| lookup(k, &outputs))
                .collect::<Result<_>>()?;
            let out = (item.func)(Args::new(id, &item.takes, &args)).map_err(|source| {
                DataIoError::DynamicItem {
                    id: id.to_string(),
                    provides: item.provides.clone(),
                    source,
                }
            })?;
            if out.len() != item.provides.len() {
                return Err(DataIoError::DynamicItem {
                    id: id.to_string(),
                    provides: item.provides.clone(),
                    source: format!(
                        "returned {} values for {} provided keys",
                        out.len(),
                        item.provides.len()
                    )
                    .into(),
                });
            }
            outputs.insert(i, out);
        }
        keys.iter().map(|k| lookup(k, &outputs)).collect()
    }
}
