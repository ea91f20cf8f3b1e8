//! Nexus ⇄ Keepers with real Keeper routers on loopback (plain HTTP, the
//! peer identity injected; the mTLS path is in `tls.rs`).

use std::sync::Arc;
use std::time::Duration;

use spike_core::{Nexus, Status, TrustRoots};
use spike_server::keeper_api::{self, KeeperState};
use spike_server::shards::{self, KeeperClient};

use crate::support::*;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn keepers(n: usize) -> (Vec<KeeperClient>, Vec<KeeperState>) {
    let mut clients = Vec::new();
    let mut states = Vec::new();
    for _ in 0..n {
        let state = KeeperState::new(TrustRoots::default());
        let addr = serve_plain(keeper_api::router(state.clone()), NEXUS).await;
        clients.push(KeeperClient::new(format!("http://{addr}/"), client()));
        states.push(state);
    }
    (clients, states)
}

async fn reopen(store: Arc<spike_storage::MemoryStore>) -> Nexus {
    let n = Nexus::builder(store).open().await.unwrap();
    assert!(matches!(n.status(), Status::Sealed { .. }));
    n
}

#[tokio::test]
async fn push_then_pull_unseals() {
    let (n, store, _) = nexus().await;
    let (clients, states) = keepers(3).await;
    assert_eq!(shards::push_all(&n, &clients).await.unwrap(), 3);
    assert!(states.iter().all(KeeperState::has_shard));
    // Keeper i holds share i.
    let shares = n.keeper_shares().unwrap();
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(
            c.shard().await.unwrap().unwrap().expose(),
            shares[i].value()
        );
    }
    n.close().await;
    let n = reopen(store).await;
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        shards::pull_and_unseal(&n, &clients, 2),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got, shards::Unsealed::FromKeepers);
    assert_eq!(n.status(), Status::Unsealed);
}

#[tokio::test]
async fn a_keeper_down_still_unseals() {
    let (n, store, _) = nexus().await;
    let (mut clients, _) = keepers(2).await;
    let dead = dead_addr().await;
    clients.insert(1, KeeperClient::new(format!("http://{dead}"), client()));
    assert_eq!(shards::push_all(&n, &clients).await.unwrap(), 2);
    n.close().await;
    let n = reopen(store).await;
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        shards::pull_and_unseal(&n, &clients, 2),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got, shards::Unsealed::FromKeepers);
    assert_eq!(n.status(), Status::Unsealed);
}

#[tokio::test]
async fn a_keeper_with_a_wrong_share_is_worked_around() {
    let (n, store, _) = nexus().await;
    let (clients, _) = keepers(3).await;
    shards::push_all(&n, &clients).await.unwrap();
    // Keeper 1 now holds a share of another store's key (stale/mixed).
    let (other, _, _) = nexus().await;
    let foreign = other.keeper_shares().unwrap();
    clients[0].contribute(&foreign[0]).await.unwrap();
    n.close().await;
    let n = reopen(store).await;
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        shards::pull_and_unseal(&n, &clients, 2),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got, shards::Unsealed::FromKeepers);
    assert_eq!(n.status(), Status::Unsealed);
}

#[tokio::test]
async fn pull_waits_for_enough_keepers() {
    let (n, store, _) = nexus().await;
    let (clients, _) = keepers(3).await;
    // Only keeper 3 holds its share: one is not enough; then keeper 1 gets
    // its share and the pull completes.
    let shares = n.keeper_shares().unwrap();
    clients[2].contribute(&shares[2]).await.unwrap();
    n.close().await;
    let n = reopen(store).await;
    let pull = {
        let (n, clients) = (n.clone(), clients.clone());
        tokio::spawn(async move { shards::pull_and_unseal(&n, &clients, 2).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(n.status(), Status::Sealed { .. }));
    clients[0].contribute(&shares[0]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), pull)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(n.status(), Status::Unsealed);
}

#[tokio::test]
async fn a_pull_overtaken_by_an_operator_restore_says_so() {
    let (n, store, _) = nexus().await;
    let (clients, _) = keepers(3).await;
    let shares = n.keeper_shares().unwrap();
    n.close().await;
    let n = reopen(store).await;
    // The Keepers hold nothing: the pull waits, and an operator unseals.
    let pull = {
        let (n, clients) = (n.clone(), clients.clone());
        tokio::spawn(async move { shards::pull_and_unseal(&n, &clients, 2).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    n.unseal(&[shares[0].try_clone(), shares[2].try_clone()])
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), pull)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, shards::Unsealed::Meanwhile);
}

#[tokio::test]
async fn push_loop_pushes_periodically_and_stops() {
    let (n, _, _) = nexus().await;
    let (clients, states) = keepers(3).await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = shards::spawn_push_loop(
        n.clone(),
        clients.into(),
        Duration::from_millis(50),
        async move {
            let _ = rx.await;
        },
    );
    tokio::time::timeout(Duration::from_secs(5), async {
        while !states.iter().all(KeeperState::has_shard) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}
