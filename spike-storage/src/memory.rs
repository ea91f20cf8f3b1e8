//! [`MemoryStore`]: a `BTreeMap` behind a lock, for tests of the layers above.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{PoisonError, RwLock};

use crate::backend::{BackingStore, Entry, StoreFuture, WriteBatch, WriteOp, scan_bounds};

/// An in-memory store. Nothing survives the process; "durable" means
/// visible to every later call. Meant for tests.
#[derive(Default)]
pub struct MemoryStore {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys stored.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    // A panic while the lock is held cannot leave the map half-updated (each
    // commit applies under one write guard and nothing in it panics short of
    // an allocation failure), so a poisoned lock is safe to keep using.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn scan_now(&self, prefix: &[u8], start_after: Option<&[u8]>, limit: usize) -> Vec<Entry> {
        if limit == 0 {
            return Vec::new();
        }
        let Some(bounds) = scan_bounds(prefix, start_after) else {
            return Vec::new();
        };
        self.read()
            .range::<[u8], _>(bounds.range())
            .take(limit)
            .map(|(k, v)| Entry {
                key: k.clone(),
                value: v.clone(),
            })
            .collect()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("len", &self.len())
            .finish()
    }
}

impl BackingStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_owned()
    }

    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Vec<u8>>> {
        let value = self.read().get(key).cloned();
        Box::pin(std::future::ready(Ok(value)))
    }

    fn scan<'a>(
        &'a self,
        prefix: &'a [u8],
        start_after: Option<&'a [u8]>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Entry>> {
        let page = self.scan_now(prefix, start_after, limit);
        Box::pin(std::future::ready(Ok(page)))
    }

    fn commit<'a>(&'a self, batch: WriteBatch) -> StoreFuture<'a, ()> {
        if !batch.is_empty() {
            let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
            for op in batch.into_ops() {
                match op {
                    WriteOp::Put { key, value } => {
                        map.insert(key, value);
                    }
                    WriteOp::Delete { key } => {
                        map.remove(&key);
                    }
                }
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }
}
