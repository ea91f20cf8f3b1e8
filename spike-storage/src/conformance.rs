//! The behaviour every [`BackingStore`] must show, as one async test suite.
//!
//! Store crates (S3-compatible, PostgreSQL, replicas) and spike-core run
//! [`run_all`] against a fresh, empty store in their own tests:
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! # let runtime = tokio::runtime::Builder::new_current_thread().build()?;
//! # runtime.block_on(async {
//! // In a store crate's tests, under #[tokio::test]:
//! let store = spike_storage::MemoryStore::new(); // a fresh, empty store
//! spike_storage::conformance::run_all(&store).await;
//! # });
//! # Ok(())
//! # }
//! ```
//!
//! Checks run in order against the one store, each under its own key
//! namespace, while the suite keeps a model (`BTreeMap`) of everything it
//! wrote; the last check compares a full scan with the model. A failure
//! panics with the name of the check and the store.

// Test support: a failed check must stop the test with a message that names
// it, which is what a panic does.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::{Debug, Display};

use crate::backend::{BackingStore, Entry, WriteBatch, WriteOp};

/// Run every check against `store`, which must start empty. Panics with the
/// name of the first failed check. Leaves the suite's data in the store.
pub async fn run_all(store: &dyn BackingStore) {
    let mut s = Suite {
        store,
        check: "",
        model: BTreeMap::new(),
    };
    s.start("empty store");
    let first = s.scan(b"", None, 1).await;
    if !first.is_empty() {
        s.fail(format_args!(
            "the suite needs an empty store; found a key of {} bytes",
            first[0].key.len()
        ));
    }

    get_missing(&mut s).await;
    put_get(&mut s).await;
    overwrite(&mut s).await;
    delete(&mut s).await;
    delete_missing(&mut s).await;
    batch_ordering(&mut s).await;
    empty_batch(&mut s).await;
    scan_prefix_exact(&mut s).await;
    binary_key_order(&mut s).await;
    start_after_absent_key(&mut s).await;
    limit_zero(&mut s).await;
    large_value(&mut s).await;
    pagination(&mut s).await;
    many_deletes(&mut s).await;
    empty_prefix_scans_all(&mut s).await;
}

struct Suite<'s> {
    store: &'s dyn BackingStore,
    check: &'static str,
    /// Everything the suite has committed, as the store should hold it.
    model: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Suite<'_> {
    fn start(&mut self, check: &'static str) {
        self.check = check;
    }

    #[track_caller]
    fn fail(&self, msg: impl Display) -> ! {
        panic!(
            "conformance check `{}` failed on {}: {msg}",
            self.check,
            self.store.describe()
        )
    }

    #[track_caller]
    fn expect_eq<T: PartialEq + Debug>(&self, what: &str, got: T, want: T) {
        if got != want {
            self.fail(format_args!("{what}: got {got:?}, want {want:?}"));
        }
    }

    async fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.store.get(key).await {
            Ok(v) => v,
            Err(e) => self.fail(format_args!("get of a {}-byte key: {e}", key.len())),
        }
    }

    async fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Vec<Entry> {
        match self.store.scan(prefix, after, limit).await {
            Ok(page) => {
                if page.len() > limit {
                    self.fail(format_args!(
                        "scan returned {} entries with limit {limit}",
                        page.len()
                    ));
                }
                page
            }
            Err(e) => self.fail(format_args!("scan (limit {limit}): {e}")),
        }
    }

    /// Keys of `scan(prefix, after, limit)`.
    async fn keys(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Vec<Key> {
        let page = self.scan(prefix, after, limit).await;
        page.into_iter().map(|e| Key(e.key)).collect()
    }

    /// Every entry under `prefix`, page by page; checks that pages are
    /// ascending, continue strictly after the previous page and match the prefix.
    async fn scan_all(&self, prefix: &[u8], page_size: usize) -> Vec<Entry> {
        let mut all: Vec<Entry> = Vec::new();
        loop {
            let after = all.last().map(|e| e.key.clone());
            let page = self.scan(prefix, after.as_deref(), page_size).await;
            if page.is_empty() {
                return all;
            }
            for entry in page {
                if !entry.key.starts_with(prefix) {
                    self.fail(format_args!(
                        "scan returned key {:?} outside prefix {:?}",
                        Key(entry.key),
                        Key(prefix.to_vec())
                    ));
                }
                if let Some(last) = all.last()
                    && last.key >= entry.key
                {
                    self.fail(format_args!(
                        "scan keys not strictly ascending: {:?} then {:?}",
                        Key(last.key.clone()),
                        Key(entry.key)
                    ));
                }
                all.push(entry);
            }
        }
    }

    async fn commit(&mut self, batch: WriteBatch) {
        if let Err(e) = self.store.commit(batch.clone()).await {
            self.fail(format_args!("commit of {batch:?}: {e}"));
        }
        for op in batch.into_ops() {
            match op {
                WriteOp::Put { key, value } => {
                    self.model.insert(key, value);
                }
                WriteOp::Delete { key } => {
                    self.model.remove(&key);
                }
            }
        }
    }

    async fn put(&mut self, key: &[u8], value: &[u8]) {
        let mut batch = WriteBatch::new();
        batch.put(key, value);
        self.commit(batch).await;
    }

    /// The model's entries under `prefix`.
    fn model_entries(&self, prefix: &[u8]) -> Vec<Entry> {
        self.model
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| Entry {
                key: k.clone(),
                value: v.clone(),
            })
            .collect()
    }
}

/// A key that prints as an escaped byte string in failure messages.
#[derive(Clone, PartialEq, Eq)]
struct Key(Vec<u8>);

impl Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

fn keys_of(list: &[&[u8]]) -> Vec<Key> {
    list.iter().map(|k| Key(k.to_vec())).collect()
}

async fn get_missing(s: &mut Suite<'_>) {
    s.start("get missing");
    s.expect_eq("get of a missing key", s.get(b"get/missing").await, None);
}

async fn put_get(s: &mut Suite<'_>) {
    s.start("put then get");
    let every_byte: Vec<u8> = (0..=255).collect();
    s.put(b"pg1/k", &every_byte).await;
    s.expect_eq("value", s.get(b"pg1/k").await, Some(every_byte));
    s.put(b"pg1/empty", b"").await;
    s.expect_eq(
        "empty value (not missing)",
        s.get(b"pg1/empty").await,
        Some(Vec::new()),
    );
    s.expect_eq("neighbour key", s.get(b"pg1/j").await, None);
    s.expect_eq("key prefix", s.get(b"pg1/").await, None);
}

async fn overwrite(s: &mut Suite<'_>) {
    s.start("overwrite");
    s.put(b"ow/k", b"first").await;
    s.put(b"ow/k", b"second, longer").await;
    s.expect_eq(
        "value",
        s.get(b"ow/k").await,
        Some(b"second, longer".to_vec()),
    );
    s.put(b"ow/k", b"3").await;
    s.expect_eq("shorter value", s.get(b"ow/k").await, Some(b"3".to_vec()));
}

async fn delete(s: &mut Suite<'_>) {
    s.start("delete");
    s.put(b"del/k", b"v").await;
    s.put(b"del/l", b"w").await;
    let mut batch = WriteBatch::new();
    batch.delete(*b"del/k");
    s.commit(batch).await;
    s.expect_eq("deleted key", s.get(b"del/k").await, None);
    s.expect_eq("other key", s.get(b"del/l").await, Some(b"w".to_vec()));
    s.expect_eq(
        "scan after delete",
        s.keys(b"del/", None, 10).await,
        keys_of(&[b"del/l"]),
    );
}

async fn delete_missing(s: &mut Suite<'_>) {
    s.start("delete missing");
    let mut batch = WriteBatch::new();
    batch.delete(*b"dm/never-written").put(*b"dm/k", *b"v");
    s.commit(batch).await;
    s.expect_eq("missing key", s.get(b"dm/never-written").await, None);
    s.expect_eq(
        "rest of the batch",
        s.get(b"dm/k").await,
        Some(b"v".to_vec()),
    );
}

async fn batch_ordering(s: &mut Suite<'_>) {
    s.start("batch ordering");
    s.put(b"bo/existing", b"old").await;
    let mut batch = WriteBatch::new();
    batch
        .put(*b"bo/put-del", *b"v")
        .delete(*b"bo/put-del")
        .delete(*b"bo/del-put")
        .put(*b"bo/del-put", *b"v")
        .put(*b"bo/twice", *b"one")
        .put(*b"bo/twice", *b"two")
        .delete(*b"bo/existing")
        .put(*b"bo/existing", *b"new");
    for i in 0..20u8 {
        batch.put([b"bo/n".as_slice(), &[i]].concat(), [i; 3]);
    }
    s.commit(batch).await;
    s.expect_eq("put then delete", s.get(b"bo/put-del").await, None);
    s.expect_eq(
        "delete then put",
        s.get(b"bo/del-put").await,
        Some(b"v".to_vec()),
    );
    s.expect_eq("put twice", s.get(b"bo/twice").await, Some(b"two".to_vec()));
    s.expect_eq(
        "replace existing",
        s.get(b"bo/existing").await,
        Some(b"new".to_vec()),
    );
    let all = s.scan_all(b"bo/", 1000).await;
    s.expect_eq("batch contents", all, s.model_entries(b"bo/"));
}

async fn empty_batch(s: &mut Suite<'_>) {
    s.start("empty batch");
    let before = s.scan_all(b"", 1000).await.len();
    s.commit(WriteBatch::new()).await;
    s.expect_eq(
        "entries after empty commit",
        s.scan_all(b"", 1000).await.len(),
        before,
    );
}

async fn scan_prefix_exact(s: &mut Suite<'_>) {
    s.start("scan prefix exactness");
    let mut batch = WriteBatch::new();
    for k in [
        "sp/b", "sp/abc", "sp/a", "sp/ab", "sp/ab!", "sp/aa", "sp/ac",
    ] {
        batch.put(k, k);
    }
    s.commit(batch).await;
    let page = s.scan(b"sp/ab", None, 100).await;
    s.expect_eq(
        "keys under sp/ab",
        page.iter().map(|e| Key(e.key.clone())).collect(),
        keys_of(&[b"sp/ab", b"sp/ab!", b"sp/abc"]),
    );
    s.expect_eq("value", page[0].value.clone(), b"sp/ab".to_vec());
    s.expect_eq(
        "keys under sp/a",
        s.keys(b"sp/a", None, 100).await,
        keys_of(&[b"sp/a", b"sp/aa", b"sp/ab", b"sp/ab!", b"sp/abc", b"sp/ac"]),
    );
    s.expect_eq(
        "prefix equal to a whole key",
        s.keys(b"sp/b", None, 100).await,
        keys_of(&[b"sp/b"]),
    );
    s.expect_eq(
        "prefix longer than every key",
        s.keys(b"sp/abcd", None, 100).await,
        keys_of(&[]),
    );
    s.expect_eq(
        "absent prefix",
        s.keys(b"sp/x", None, 100).await,
        keys_of(&[]),
    );
}

async fn binary_key_order(s: &mut Suite<'_>) {
    s.start("binary key order");
    // Unsigned byte order, shorter key first on a common prefix; includes
    // 0x00 and 0xFF bytes and a top-byte 0xFF prefix (no successor).
    let want: [&[u8]; 12] = [
        &[0x00],
        &[0x00, 0x00],
        &[0x00, 0x00, 0x01],
        &[0x00, 0xFF],
        &[0x01],
        &[0x7F],
        &[0x80],
        &[0xFE, 0xFF],
        &[0xFF],
        &[0xFF, 0x00],
        &[0xFF, 0xFF],
        &[0xFF, 0xFF, 0xFF],
    ];
    let mut batch = WriteBatch::new();
    for k in want.iter().rev() {
        batch.put(*k, [k.len() as u8]);
    }
    s.commit(batch).await;
    s.expect_eq(
        "keys under 0x00",
        s.keys(&[0x00], None, 100).await,
        keys_of(&want[..4]),
    );
    s.expect_eq(
        "keys under 0xFF",
        s.keys(&[0xFF], None, 100).await,
        keys_of(&want[8..]),
    );
    s.expect_eq(
        "keys under 0xFF 0xFF",
        s.keys(&[0xFF, 0xFF], None, 100).await,
        keys_of(&want[10..]),
    );
    s.expect_eq(
        "keys under 0xFF after 0xFF 0x00",
        s.keys(&[0xFF], Some(&[0xFF, 0x00]), 100).await,
        keys_of(&want[10..]),
    );
    // The whole keyspace: the binary keys sort around the ASCII namespaces.
    let all = s.keys(b"", None, 10_000).await;
    let binary: Vec<Key> = all
        .into_iter()
        .filter(|k| want.contains(&k.0.as_slice()))
        .collect();
    s.expect_eq("binary keys in a full scan", binary, keys_of(&want));
    let first = s.keys(b"", None, 1).await;
    s.expect_eq("first key of the store", first, keys_of(&want[..1]));
    let after_top = s.keys(b"", Some(&[0xFF, 0xFF, 0xFF]), 10).await;
    s.expect_eq("keys after the greatest key", after_top, keys_of(&[]));
}

async fn start_after_absent_key(s: &mut Suite<'_>) {
    s.start("start_after not a present key");
    let mut batch = WriteBatch::new();
    batch
        .put(*b"sa/b", *b"1")
        .put(*b"sa/d", *b"2")
        .put(*b"sa/f", *b"3");
    s.commit(batch).await;
    let all = keys_of(&[b"sa/b", b"sa/d", b"sa/f"]);
    s.expect_eq(
        "after sa/c",
        s.keys(b"sa/", Some(b"sa/c"), 10).await,
        all[1..].to_vec(),
    );
    s.expect_eq(
        "after sa/d",
        s.keys(b"sa/", Some(b"sa/d"), 10).await,
        all[2..].to_vec(),
    );
    s.expect_eq(
        "after sa/c, limit 1",
        s.keys(b"sa/", Some(b"sa/c"), 1).await,
        all[1..2].to_vec(),
    );
    s.expect_eq(
        "after the prefix itself",
        s.keys(b"sa/", Some(b"sa/"), 10).await,
        all.clone(),
    );
    s.expect_eq(
        "after a key before the prefix",
        s.keys(b"sa/", Some(b"s"), 10).await,
        all.clone(),
    );
    s.expect_eq(
        "after an empty key",
        s.keys(b"sa/", Some(b""), 10).await,
        all.clone(),
    );
    s.expect_eq(
        "after the last key",
        s.keys(b"sa/", Some(b"sa/f"), 10).await,
        keys_of(&[]),
    );
    s.expect_eq(
        "after sa/z",
        s.keys(b"sa/", Some(b"sa/z"), 10).await,
        keys_of(&[]),
    );
    s.expect_eq(
        "after the prefix range",
        s.keys(b"sa/", Some(b"sb"), 10).await,
        keys_of(&[]),
    );
    s.expect_eq(
        "after a key far past it",
        s.keys(b"sa/", Some(&[0xFF; 4]), 10).await,
        keys_of(&[]),
    );
}

async fn limit_zero(s: &mut Suite<'_>) {
    s.start("limit 0");
    s.expect_eq(
        "page with limit 0",
        s.scan(b"sa/", None, 0).await,
        Vec::new(),
    );
    s.expect_eq(
        "full scan with limit 0",
        s.scan(b"", None, 0).await,
        Vec::new(),
    );
}

async fn large_value(s: &mut Suite<'_>) {
    s.start("large value");
    let len = (1 << 20) + 4321;
    let value: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let mut batch = WriteBatch::new();
    batch
        .put(*b"lv/big", value.clone())
        .put(*b"lv/small", *b"s");
    s.commit(batch).await;
    let got = s.get(b"lv/big").await;
    if got.as_ref() != Some(&value) {
        s.fail(format_args!(
            "get of a {len}-byte value returned {:?} bytes, or different bytes",
            got.map(|v| v.len())
        ));
    }
    let page = s.scan(b"lv/", None, 10).await;
    s.expect_eq("entries", page.len(), 2);
    if page[0].value != value {
        s.fail("scan returned different bytes for the large value");
    }
}

const PAGINATION_KEYS: u32 = 2_500;

fn pagination_key(i: u32) -> Vec<u8> {
    // Big-endian, so byte order is numeric order; varying tail lengths.
    let mut key = b"pn/".to_vec();
    key.extend_from_slice(&i.to_be_bytes());
    key.extend(std::iter::repeat_n(0xA5, (i % 4) as usize));
    key
}

async fn pagination(s: &mut Suite<'_>) {
    s.start("pagination");
    // Written out of order, in three batches.
    for part in 0..3u32 {
        let mut batch = WriteBatch::new();
        for i in (0..PAGINATION_KEYS).rev().filter(|i| i % 3 == part) {
            batch.put(pagination_key(i), i.to_le_bytes());
        }
        s.commit(batch).await;
    }
    let want: Vec<Vec<u8>> = (0..PAGINATION_KEYS).map(pagination_key).collect();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut pages = 0;
    loop {
        let after = got.last().cloned();
        let page = s.scan(b"pn/", after.as_deref(), 100).await;
        if page.is_empty() {
            break;
        }
        pages += 1;
        if pages > 100 {
            s.fail("more than 100 pages of 100 for 2,500 keys: the scan does not advance");
        }
        for entry in page {
            let i = got.len() as u32;
            if entry.value != i.to_le_bytes() {
                s.fail(format_args!("value of key #{i} is wrong"));
            }
            got.push(entry.key);
        }
    }
    s.expect_eq("pages of 100", pages, 25);
    if got != want {
        let first_diff = got.iter().zip(&want).position(|(g, w)| g != w);
        s.fail(format_args!(
            "paged scan returned {} keys, want {} (first difference at #{first_diff:?})",
            got.len(),
            want.len()
        ));
    }
    let odd = s.scan_all(b"pn/", 7).await;
    s.expect_eq("keys in pages of 7", odd.len(), want.len());
}

async fn many_deletes(s: &mut Suite<'_>) {
    s.start("many deletes in one batch");
    let mut batch = WriteBatch::new();
    for i in (0..PAGINATION_KEYS).filter(|i| i % 2 == 0) {
        batch.delete(pagination_key(i));
    }
    s.commit(batch).await;
    let left = s.scan_all(b"pn/", 100).await;
    s.expect_eq("keys left", left, s.model_entries(b"pn/"));
}

async fn empty_prefix_scans_all(s: &mut Suite<'_>) {
    s.start("empty prefix scans all");
    let want = s.model_entries(b"");
    let all = s.scan_all(b"", 97).await;
    if all != want {
        let got_keys: Vec<&Vec<u8>> = all.iter().map(|e| &e.key).collect();
        let want_keys: Vec<&Vec<u8>> = want.iter().map(|e| &e.key).collect();
        if got_keys != want_keys {
            let missing = want_keys.iter().filter(|k| !got_keys.contains(k)).count();
            let extra = got_keys.iter().filter(|k| !want_keys.contains(k)).count();
            s.fail(format_args!(
                "full scan: {} keys, want {}; {missing} missing, {extra} unexpected",
                got_keys.len(),
                want_keys.len()
            ));
        }
        s.fail("full scan: right keys, but some values differ from what was committed");
    }
}
