//! Loading every record into memory at unseal: the secrets (scanned in
//! pages and decoded on every core), the policies, the config and cipher
//! records, all checked against the manifest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use spike_storage::{BackingStore, Entry};
use zeroize::Zeroizing;

use super::{hex8, open_manifest, tampered};
use crate::cipher::StoredCipherKey;
use crate::error::Error;
use crate::keyring::{
    CIPHER_KEY, CONFIG_KEY, MANIFEST_KEY, PREFIX_POLICY, PREFIX_SECRET, xor_into,
};
use crate::nexus::{Keys, StoredConfig};
use crate::path::SecretPath;
use crate::policy::{CompiledPolicy, PolicySet};
use crate::record::{self, Kind, Manifest, RecordError};
use crate::secrets::Secret;

/// Records fetched per scan page at unseal.
const LOAD_PAGE: usize = 16 * 1024;
/// At most this many paths are reserved up front, from the manifest's
/// record count.
const MAX_RESERVED: u64 = 1 << 24;

/// Everything read from the store at unseal.
pub(crate) struct Loaded {
    pub(crate) keys: Keys,
    pub(crate) secrets: BTreeMap<SecretPath, Arc<Secret>>,
    pub(crate) policies: PolicySet,
    pub(crate) config: StoredConfig,
    pub(crate) cipher: StoredCipherKey,
    pub(crate) manifest: Manifest,
}

/// What decoding secret records yields.
#[derive(Default)]
struct Decoded {
    secrets: Vec<(SecretPath, Arc<Secret>)>,
    digest: [u8; 16],
}

/// Decodes the pages it takes from `pages` until the scan ends, and
/// hands each result to `decoded`: one of [`load`]'s decoder threads.
fn decode_pages(
    pages: &std::sync::Mutex<tokio::sync::mpsc::Receiver<Vec<Entry>>>,
    keys: &Keys,
    decoded: &tokio::sync::mpsc::Sender<Decoded>,
) -> Result<(), Error> {
    loop {
        // The lock is held while waiting: the other decoders wait for it
        // instead, and each page still goes to whichever is free first.
        let page = match pages.lock() {
            Ok(mut rx) => rx.blocking_recv(),
            Err(_) => None, // a decoder panicked; its join reports it
        };
        let Some(page) = page else {
            return Ok(());
        };
        let mut out = Decoded::default();
        decode_secrets(&page, keys, &mut out)?;
        if decoded.blocking_send(out).is_err() {
            return Ok(()); // the load gave up
        }
    }
}

/// `pairs` in key order (equal keys kept, so that the caller can refuse
/// them). With two threads or more: partitioned in place around the median
/// key, then the two sides sorted on two threads; no merge, so no second
/// vector (which at 1M secrets cost more memory than the SPEC's budget
/// leaves). A million paths take ~0.2 s to sort on one thread here.
fn sort_by_key<K: Ord + Send, V: Send>(mut pairs: Vec<(K, V)>, threads: usize) -> Vec<(K, V)> {
    if threads < 2 || pairs.len() < 4096 {
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        return pairs;
    }
    let mid = pairs.len() / 2;
    pairs.select_nth_unstable_by(mid, |a, b| a.0.cmp(&b.0));
    let (low, high) = pairs.split_at_mut(mid);
    std::thread::scope(|scope| {
        scope.spawn(|| high.sort_unstable_by(|a, b| a.0.cmp(&b.0)));
        low.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    });
    pairs
}

/// Opens and decodes `entries` into `out`.
fn decode_secrets(entries: &[Entry], keys: &Keys, out: &mut Decoded) -> Result<(), Error> {
    out.secrets.reserve(entries.len());
    // One plaintext buffer for the whole page: no allocation per record.
    let mut pt = Zeroizing::new(Vec::new());
    for entry in entries {
        let what = || format!("secret record {}", hex8(&entry.key));
        let header = record::open_into(
            |e| keys.for_epoch(e).map(|k| &k.cipher),
            &entry.key,
            &entry.value,
            &mut pt,
        )
        .map_err(|e| tampered(&what(), e))?;
        if header.kind != Kind::Secret {
            return Err(tampered(
                &what(),
                RecordError::UnknownKind(header.kind as u8),
            ));
        }
        let (path, secret) = record::decode_secret(&pt, header.revision, header.epoch)
            .map_err(|e| tampered(&what(), e))?;
        let path = SecretPath::parse(path).map_err(|_| Error::Tampered {
            what: format!("{}: invalid path", what()),
        })?;
        if let Some(k) = keys.for_epoch(header.epoch) {
            xor_into(&mut out.digest, &k.digest_share(&entry.key, &header));
        }
        out.secrets.push((path, Arc::new(secret)));
    }
    Ok(())
}

/// Reads every record: secrets (in parallel pages), policies, config and
/// the manifest, and checks the record set against the manifest.
pub(super) async fn load(store: &dyn BackingStore, keys: Keys) -> Result<Loaded, Error> {
    let started = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut digest = [0u8; 16];

    // Read first for its count, which sizes the path table; checked last.
    let manifest = match store.get(MANIFEST_KEY).await? {
        Some(bytes) => open_manifest(&keys, &bytes)?,
        None => Manifest::default(),
    };

    // The scan (a store's own threads do the reading) hands pages to
    // `threads` decoder threads, each taking the next page as soon as it is
    // free (no barrier per page: the cores stay busy), and this task
    // gathers what they decode into one table, sized up front. The
    // decoders share the keys until they end.
    let keys = Arc::new(keys);
    let (pages_tx, pages_rx) = tokio::sync::mpsc::channel::<Vec<Entry>>(1);
    let (decoded_tx, mut decoded_rx) = tokio::sync::mpsc::channel::<Decoded>(threads);
    let pages_rx = Arc::new(std::sync::Mutex::new(pages_rx));
    let decoders: Vec<_> = (0..threads)
        .map(|_| {
            let (pages, keys) = (Arc::clone(&pages_rx), Arc::clone(&keys));
            let decoded = decoded_tx.clone();
            tokio::task::spawn_blocking(move || decode_pages(&pages, &keys, &decoded))
        })
        .collect();
    drop((pages_rx, decoded_tx));
    // Owns `pages_tx`: once the scan ends, the decoders drain the channel
    // and stop.
    let scan = async move {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store
                .scan(&[PREFIX_SECRET], after.as_deref(), LOAD_PAGE)
                .await?;
            let Some(last) = page.last() else {
                return Ok::<(), Error>(());
            };
            after = Some(last.key.clone());
            if pages_tx.send(page).await.is_err() {
                // Every decoder stopped (they failed): their errors are
                // reported.
                return Ok(());
            }
        }
    };
    let reserve = usize::try_from(manifest.count.min(MAX_RESERVED)).unwrap_or(0);
    let mut secrets: Vec<(SecretPath, Arc<Secret>)> = Vec::with_capacity(reserve);
    let gather = async {
        while let Some(d) = decoded_rx.recv().await {
            xor_into(&mut digest, &d.digest);
            secrets.extend(d.secrets);
        }
    };
    let (scanned, ()) = tokio::join!(scan, gather);
    for decoder in decoders {
        decoder.await.unwrap_or_else(|_| {
            Err(Error::Tampered {
                what: "a record decoder thread panicked".to_owned(),
            })
        })?;
    }
    scanned?;
    #[allow(
        clippy::expect_used,
        reason = "each decoder's clone of the keys went with it, and every decoder has ended"
    )]
    let keys = Arc::into_inner(keys).expect("the decoders have ended");
    let loaded = secrets.len();
    let mut count = loaded as u64;
    let secrets: BTreeMap<_, _> = sort_by_key(secrets, threads).into_iter().collect();
    // The map keeps one record per path: fewer entries than records means
    // two records claim the same path. (Counting beats a pass comparing
    // neighbours: at 1M paths that pass missed the cache for ~15 ms.)
    if secrets.len() != loaded {
        return Err(Error::Tampered {
            what: "two secret records claim the same path".to_owned(),
        });
    }

    let mut policies = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan(&[PREFIX_POLICY], after.as_deref(), LOAD_PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        for entry in &page {
            let what = || format!("policy record {}", hex8(&entry.key));
            let (header, pt) = record::open(
                |e| keys.for_epoch(e).map(|k| &k.cipher),
                &entry.key,
                &entry.value,
            )
            .map_err(|e| tampered(&what(), e))?;
            if header.kind != Kind::Policy {
                return Err(tampered(
                    &what(),
                    RecordError::UnknownKind(header.kind as u8),
                ));
            }
            let policy = record::decode_policy(&pt, header.revision, header.epoch)
                .map_err(|e| tampered(&what(), e))?;
            let compiled = CompiledPolicy::stored(policy);
            if let Some(k) = keys.for_epoch(header.epoch) {
                xor_into(&mut digest, &k.digest_share(&entry.key, &header));
            }
            count += 1;
            policies.push(Arc::new(compiled));
        }
    }

    let mut config = StoredConfig::default();
    if let Some(bytes) = store.get(CONFIG_KEY).await? {
        let (header, pt) =
            record::open(|e| keys.for_epoch(e).map(|k| &k.cipher), CONFIG_KEY, &bytes)
                .map_err(|e| tampered("config record", e))?;
        if header.kind != Kind::Config {
            return Err(tampered(
                "config record",
                RecordError::UnknownKind(header.kind as u8),
            ));
        }
        config = StoredConfig {
            config: record::decode_config(&pt).map_err(|e| tampered("config record", e))?,
            revision: header.revision,
            epoch: header.epoch,
            stored: true,
        };
        if let Some(k) = keys.for_epoch(header.epoch) {
            xor_into(&mut digest, &k.digest_share(CONFIG_KEY, &header));
        }
        count += 1;
    }

    let mut cipher = StoredCipherKey::default();
    if let Some(bytes) = store.get(CIPHER_KEY).await? {
        let (stored, share) = crate::cipher::open_record(&keys, &bytes)?;
        cipher = stored;
        xor_into(&mut digest, &share);
        count += 1;
    }

    if manifest.digest != digest || manifest.count != count {
        return Err(Error::Tampered {
            what: format!(
                "the stored records do not match the manifest ({count} found, {} expected): \
                 a record was added, removed, or replaced by an older copy",
                manifest.count
            ),
        });
    }
    tracing::info!(
        secrets = secrets.len(),
        policies = policies.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "records loaded"
    );
    Ok(Loaded {
        keys,
        secrets,
        policies: PolicySet::new(policies),
        config,
        cipher,
        manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_by_key_sorts_and_keeps_equal_keys_on_any_thread_count() {
        let mut rng = fastrand::Rng::with_seed(11);
        for len in [0, 1, 4095, 4096, 4097, 20_000] {
            // Few distinct keys, so that equal keys straddle the halves.
            let pairs: Vec<(u32, usize)> = (0..len)
                .map(|i| (rng.u32(..len as u32 / 3 + 1), i))
                .collect();
            let mut want: Vec<u32> = pairs.iter().map(|p| p.0).collect();
            want.sort_unstable();
            for threads in [1, 2, 8] {
                let sorted = sort_by_key(pairs.clone(), threads);
                let keys: Vec<u32> = sorted.iter().map(|p| p.0).collect();
                assert_eq!(keys, want, "len {len}, {threads} threads");
                let mut values: Vec<usize> = sorted.iter().map(|p| p.1).collect();
                values.sort_unstable();
                assert!(values.iter().copied().eq(0..len), "every pair kept");
            }
        }
    }
}
