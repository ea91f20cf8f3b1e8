//! Nexus ⇄ Keepers: pushing shares out and pulling them back to unseal.
//!
//! Keeper `i` (1-based, in the configured order) holds share `i`. Nexus
//! pushes after init and then periodically ([`spawn_push_loop`]); on start
//! a sealed Nexus pulls shares with exponential backoff until it holds
//! `threshold` distinct ones that rebuild its key ([`pull_and_unseal`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use spike_api::{ContributeRequest, ShardBytes, ShardResponse, routes};
use spike_core::{Nexus, Share, Status};

/// Per-request timeout of Keeper calls.
pub const KEEPER_TIMEOUT: Duration = Duration::from_secs(5);
/// Combinations tried per round when more shares than needed disagree.
const MAX_COMBINATIONS: usize = 64;

/// Why a Keeper exchange failed. Never carries share bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// The Keeper could not be reached or the exchange broke off.
    #[error("keeper {url}: {reason}")]
    Transport {
        /// The Keeper's base URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The Keeper answered with an unexpected status.
    #[error("keeper {url}: HTTP {status}")]
    Status {
        /// The Keeper's base URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The Keeper's answer is not a share.
    #[error("keeper {url}: malformed answer")]
    Malformed {
        /// The Keeper's base URL.
        url: String,
    },
    /// The store refused (sealed, tampered, …).
    #[error(transparent)]
    Nexus(#[from] spike_core::Error),
    /// The HTTP client could not be built.
    #[error("keeper client: {0}")]
    Client(String),
}

/// A client of one Keeper.
#[derive(Clone, Debug)]
pub struct KeeperClient {
    base: String,
    http: reqwest::Client,
}

impl KeeperClient {
    /// A client of the Keeper at `base_url` (`https://host:port`) using
    /// `http` as it is (tests inject a plain-HTTP client).
    pub fn new(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        let mut base = base_url.into();
        while base.ends_with('/') {
            base.pop();
        }
        Self { base, http }
    }

    /// A client of the Keeper at `base_url` over mTLS with `tls` (from
    /// `spike_tls::client_config`, which checks the Keeper's SPIFFE ID).
    /// No proxy is ever used.
    pub fn with_tls(
        base_url: impl Into<String>,
        tls: rustls::ClientConfig,
    ) -> Result<Self, ShardError> {
        Ok(Self::new(base_url, http_client(tls)?))
    }

    /// The Keeper's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    async fn post(&self, route: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>), ShardError> {
        let transport = |e: reqwest::Error| ShardError::Transport {
            url: self.base.clone(),
            reason: e.to_string(),
        };
        let res = self
            .http
            .post(format!("{}{route}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await.map_err(transport)?;
        Ok((status, bytes.to_vec()))
    }

    /// Hands the Keeper its share.
    pub async fn contribute(&self, share: &Share) -> Result<(), ShardError> {
        let req = ContributeRequest {
            shard: ShardBytes::new(*share.value()),
        };
        let body = zeroize::Zeroizing::new(serde_json::to_vec(&req).map_err(|_| {
            ShardError::Malformed {
                url: self.base.clone(),
            }
        })?);
        match self.post(routes::KEEPER_CONTRIBUTE, body.to_vec()).await? {
            (200, _) => Ok(()),
            (status, _) => Err(ShardError::Status {
                url: self.base.clone(),
                status,
            }),
        }
    }

    /// The Keeper's share value, or `None` if it holds none yet.
    pub async fn shard(&self) -> Result<Option<ShardBytes>, ShardError> {
        let (status, body) = self.post(routes::KEEPER_SHARD, b"{}".to_vec()).await?;
        let body = zeroize::Zeroizing::new(body);
        match status {
            200 => serde_json::from_slice::<ShardResponse>(&body)
                .map(|r| Some(r.shard))
                .map_err(|_| ShardError::Malformed {
                    url: self.base.clone(),
                }),
            404 => Ok(None),
            status => Err(ShardError::Status {
                url: self.base.clone(),
                status,
            }),
        }
    }
}

/// A reqwest client over `tls` (rustls with aws-lc-rs), no proxy, with
/// Keeper timeouts.
pub fn http_client(tls: rustls::ClientConfig) -> Result<reqwest::Client, ShardError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .timeout(KEEPER_TIMEOUT)
        .connect_timeout(KEEPER_TIMEOUT)
        .build()
        .map_err(|e| ShardError::Client(e.to_string()))
}

/// Pushes share `i` to Keeper `i` (1-based, `keepers` in configured order),
/// all Keepers at once. Returns how many accepted; failures are logged.
pub async fn push_all(nexus: &Nexus, keepers: &[KeeperClient]) -> Result<usize, ShardError> {
    let shares = nexus.keeper_shares()?;
    if shares.len() != keepers.len() {
        tracing::warn!(
            shares = shares.len(),
            keepers = keepers.len(),
            "the number of Keepers differs from the number of shares"
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (share, keeper) in shares.iter().zip(keepers) {
        let (share, keeper) = (share.try_clone(), keeper.clone());
        tasks.spawn(async move {
            let r = keeper.contribute(&share).await;
            (keeper.base, r)
        });
    }
    let mut pushed = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => pushed += 1,
            Ok((url, Err(e))) => tracing::warn!(keeper = %url, error = %e, "share push failed"),
            Err(e) => tracing::error!(error = %e, "share push task failed"),
        }
    }
    tracing::debug!(pushed, "shares pushed to Keepers");
    Ok(pushed)
}

/// Pushes with exponential backoff until at least `needed` Keepers hold
/// their share (after init: until then the key lives only in this process).
pub async fn push_until(
    nexus: &Nexus,
    keepers: &[KeeperClient],
    needed: usize,
) -> Result<usize, ShardError> {
    let mut delays = backoff();
    loop {
        let pushed = push_all(nexus, keepers).await?;
        if pushed >= needed.min(keepers.len()) {
            return Ok(pushed);
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        tracing::warn!(pushed, needed, retry_in = ?delay, "not enough Keepers hold their share yet");
        tokio::time::sleep(delay).await;
    }
}

fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Fetches every Keeper's share at once; `(id, value)` of those that hold
/// a valid one.
async fn fetch_all(keepers: &[KeeperClient]) -> Vec<Share> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, keeper) in keepers.iter().enumerate() {
        let keeper = keeper.clone();
        tasks.spawn(async move { (i, keeper.shard().await, keeper.base) });
    }
    let mut shares = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok((i, result, url)) = joined else {
            continue;
        };
        let Ok(id) = u8::try_from(i + 1) else {
            continue;
        };
        match result {
            Ok(Some(bytes)) => match Share::new(id, *bytes.expose()) {
                Ok(share) => shares.push(share),
                Err(e) => tracing::warn!(keeper = %url, error = %e, "keeper sent an invalid share"),
            },
            Ok(None) => tracing::debug!(keeper = %url, "keeper holds no share yet"),
            Err(e) => tracing::debug!(keeper = %url, error = %e, "keeper unreachable"),
        }
    }
    shares.sort_by_key(Share::id);
    shares
}

/// Pulls shares from the Keepers with exponential backoff until
/// `threshold` of them rebuild the root key, then unseals. A stale or
/// wrong share (the key check fails) is worked around by trying other
/// combinations and fetching again. Returns at once if the store is
/// already unsealed (for example restored by an operator meanwhile).
///
/// The threshold the store recorded at init wins over `threshold` if they
/// differ. Runs until it succeeds or the store fails for good (tampered,
/// not initialised): wrap it in a timeout to bound it.
pub async fn pull_and_unseal(
    nexus: &Nexus,
    keepers: &[KeeperClient],
    threshold: u8,
) -> Result<Unsealed, ShardError> {
    let mut delays = backoff();
    let mut round: u64 = 0;
    loop {
        let needed = match nexus.status() {
            Status::Unsealed => return Ok(Unsealed::Meanwhile),
            Status::Sealed { threshold: t, .. } => usize::from(t),
            Status::Uninitialized => return Err(spike_core::Error::NotInitialized.into()),
            _ => usize::from(threshold),
        };
        if needed != usize::from(threshold) && round == 0 {
            tracing::warn!(
                configured = threshold,
                stored = needed,
                "using the store's threshold"
            );
        }
        round += 1;
        let shares = fetch_all(keepers).await;
        if shares.len() >= needed {
            match try_unseal(nexus, &shares, needed).await {
                Ok(Some(Unsealed::FromKeepers)) => {
                    tracing::info!(
                        keepers = shares.len(),
                        round,
                        "unsealed with shares from Keepers"
                    );
                    return Ok(Unsealed::FromKeepers);
                }
                Ok(Some(Unsealed::Meanwhile)) => return Ok(Unsealed::Meanwhile),
                Ok(None) => tracing::warn!(
                    held = shares.len(),
                    "no combination of the Keepers' shares rebuilds the key (stale or wrong shares)"
                ),
                Err(e) => return Err(e),
            }
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        if round % 10 == 1 {
            tracing::info!(held = shares.len(), needed, retry_in = ?delay, "waiting for Keepers");
        }
        tokio::time::sleep(delay).await;
    }
}

/// How [`pull_and_unseal`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsealed {
    /// With shares from the Keepers.
    FromKeepers,
    /// By someone else meanwhile (an operator's restore).
    Meanwhile,
}

/// Tries combinations of `needed` shares; `Some` once unsealed.
async fn try_unseal(
    nexus: &Nexus,
    shares: &[Share],
    needed: usize,
) -> Result<Option<Unsealed>, ShardError> {
    let mut tried = 0;
    let mut combo: Vec<usize> = (0..needed).collect();
    loop {
        let picked: Vec<Share> = combo.iter().map(|&i| shares[i].try_clone()).collect();
        match nexus.unseal(&picked).await {
            Ok(()) => return Ok(Some(Unsealed::FromKeepers)),
            Err(spike_core::Error::AlreadyUnsealed) => return Ok(Some(Unsealed::Meanwhile)),
            Err(spike_core::Error::WrongKey) => {}
            Err(e) if e.code() == spike_core::ErrorCode::Unavailable => {
                tracing::warn!(error = %e, "store unavailable while unsealing");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
        tried += 1;
        if tried >= MAX_COMBINATIONS || !next_combination(&mut combo, shares.len()) {
            return Ok(None);
        }
    }
}

/// Advances `combo` (sorted indices into `0..n`) to the next combination.
fn next_combination(combo: &mut [usize], n: usize) -> bool {
    let k = combo.len();
    let mut i = k;
    while i > 0 {
        i -= 1;
        if combo[i] < n - k + i {
            combo[i] += 1;
            for j in i + 1..k {
                combo[j] = combo[j - 1] + 1;
            }
            return true;
        }
    }
    false
}

/// Pushes shares every `interval` while the store is unsealed, until
/// `shutdown` resolves. The first push happens at once.
pub fn spawn_push_loop(
    nexus: Nexus,
    keepers: Arc<[KeeperClient]>,
    interval: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticks.tick() => {}
            }
            if !matches!(nexus.status(), Status::Unsealed) {
                continue;
            }
            match push_all(&nexus, &keepers).await {
                Ok(n) if n < keepers.len() => {
                    tracing::warn!(
                        pushed = n,
                        keepers = keepers.len(),
                        "some Keepers missed their share"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "periodic share push failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_in_order() {
        let mut c = vec![0, 1];
        let mut all = vec![c.clone()];
        while next_combination(&mut c, 4) {
            all.push(c.clone());
        }
        assert_eq!(
            all,
            vec![
                vec![0, 1],
                vec![0, 2],
                vec![0, 3],
                vec![1, 2],
                vec![1, 3],
                vec![2, 3]
            ]
        );
        let mut one = vec![0, 1, 2];
        assert!(!next_combination(&mut one, 3));
    }
}
