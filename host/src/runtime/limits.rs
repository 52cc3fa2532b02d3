//! One memory budget per plugin instance: every linear memory and every
//! table of the instance counts against it, together. wasmtime's own
//! `StoreLimits` caps each memory separately, so a component with many
//! memories (or a table it keeps growing) could take many times the limit.

use std::fmt;

/// wasmtime stores one pointer per table element.
const TABLE_ELEMENT_BYTES: u64 = std::mem::size_of::<usize>() as u64;
/// A plugin is one component; a handful of core instances, memories and
/// tables is all a real one needs.
const MAX_INSTANCES: usize = 64;
const MAX_MEMORIES: usize = 16;
const MAX_TABLES: usize = 64;

/// What a limiter refused; read by the runtime to name the failure.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tripped {
    pub what: String,
    pub wanted: u64,
    pub budget: u64,
}

impl fmt::Display for Tripped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} growth to {} bytes in all would exceed the plugin's memory limit of {} bytes",
            self.what, self.wanted, self.budget
        )
    }
}

/// Charges each growth's delta to one running total.
#[derive(Debug)]
pub struct InstanceBudget {
    budget: u64,
    used: u64,
    pub tripped: Option<Tripped>,
}

impl InstanceBudget {
    pub fn new(budget: u64) -> Self {
        InstanceBudget {
            budget,
            used: 0,
            tripped: None,
        }
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    /// Grant `delta` more bytes, or remember the refusal.
    fn charge(&mut self, what: &'static str, delta: u64) -> bool {
        let wanted = self.used.saturating_add(delta);
        if wanted > self.budget {
            self.tripped = Some(Tripped {
                what: what.to_string(),
                wanted,
                budget: self.budget,
            });
            return false;
        }
        self.used = wanted;
        true
    }
}

impl wasmtime::ResourceLimiter for InstanceBudget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let delta = desired.saturating_sub(current) as u64;
        if self.charge("memory", delta) {
            Ok(true)
        } else {
            // An error traps the plugin at once: a refused grow would only
            // become an allocation failure deeper in the guest.
            Err(wasmtime::Error::msg("plugin memory limit reached"))
        }
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let delta = (desired.saturating_sub(current) as u64).saturating_mul(TABLE_ELEMENT_BYTES);
        if self.charge("table", delta) {
            Ok(true)
        } else {
            Err(wasmtime::Error::msg("plugin memory limit reached"))
        }
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn memories_and_tables_share_one_budget() {
        let mut b = InstanceBudget::new(1000);
        assert!(b.memory_growing(0, 600, None).unwrap());
        // A second memory alone would fit the limit; together they do not.
        assert!(b.memory_growing(0, 600, None).is_err());
        assert_eq!(b.tripped.as_ref().map(|t| t.what.as_str()), Some("memory"));
        assert_eq!(b.used(), 600);
        // 50 elements = 400 bytes: fits; 1 more element does not.
        assert!(b.table_growing(0, 50, None).unwrap());
        assert!(b.table_growing(50, 51, None).is_err());
        assert_eq!(b.tripped.as_ref().map(|t| t.what.as_str()), Some("table"));
    }

    #[test]
    fn only_the_growth_is_charged() {
        let mut b = InstanceBudget::new(100);
        assert!(b.memory_growing(0, 60, None).unwrap());
        assert!(b.memory_growing(60, 100, None).unwrap());
        assert_eq!(b.used(), 100);
        assert!(b.tripped.is_none());
    }
}
