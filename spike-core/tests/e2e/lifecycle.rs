//! Root-key lifecycle (SPEC §5): init, seal, unseal, restore, recover.

use std::sync::Arc;

use spike_core::{Error, ErrorCode, Nexus, RestoreProgress, Status, WriteOptions};
use spike_storage::MemoryStore;

use crate::{
    RECOVER, RESTORE, RedbFile, SUPERUSER, assert_err, caller, copies, data, memory_nexus, put,
    reopen, same_shares, su, value,
};

#[tokio::test]
async fn init_gives_three_shares_once_even_after_reopen() {
    let file = RedbFile::new();
    let nexus = file.open().await;
    assert_eq!(nexus.status(), Status::Uninitialized);
    assert_err!(nexus.get_secret(&su(), "a", 0), Error::NotInitialized);

    let shares = nexus.init().await.unwrap();
    assert_eq!(shares.len(), 3);
    assert_eq!(shares.iter().map(|s| s.id()).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(nexus.status(), Status::Unsealed);
    assert_eq!(put(&nexus, "db/creds", "one").await, 1);
    assert_eq!(value(&nexus, "db/creds"), "one");

    assert_err!(nexus.init().await, Error::AlreadyInitialized);
    assert_eq!(
        value(&nexus, "db/creds"),
        "one",
        "a refused init changes nothing"
    );

    let nexus = reopen(nexus, &file.path).await;
    assert_err!(nexus.init().await, Error::AlreadyInitialized);
    // A second handle on an uninitialised-looking state must still refuse.
    assert_eq!(
        nexus.status(),
        Status::Sealed {
            threshold: 2,
            shares: 3,
            collected: 0
        }
    );
    nexus.unseal(&shares[..2]).await.unwrap();
    assert_eq!(
        value(&nexus, "db/creds"),
        "one",
        "init after reopen kept the data"
    );
}

#[tokio::test]
async fn sealed_store_refuses_every_data_call() {
    let file = RedbFile::new();
    let (nexus, _shares) = file.init().await;
    put(&nexus, "a/b", "x").await;
    let nexus = reopen(nexus, &file.path).await;
    assert!(matches!(nexus.status(), Status::Sealed { .. }));

    let e = nexus.get_secret(&su(), "a/b", 0).unwrap_err();
    assert!(matches!(e, Error::Sealed));
    assert_eq!(e.code(), ErrorCode::NotReady);
    assert_err!(
        nexus
            .put_secret(&su(), "a/b", data(&[("k", "v")]), WriteOptions::default())
            .await,
        Error::Sealed
    );
    assert_err!(nexus.secret_metadata(&su(), "a/b"), Error::Sealed);
    assert_err!(nexus.delete_secret(&su(), "a/b", &[]).await, Error::Sealed);
    assert_err!(nexus.list_secrets(&su(), ""), Error::Sealed);
    assert_err!(nexus.list_all_secrets(&su()), Error::Sealed);
    assert_err!(
        nexus.list_policies(&su(), &Default::default()),
        Error::Sealed
    );
    assert_err!(nexus.keeper_shares(), Error::Sealed);
    assert_err!(nexus.recover(&caller(RECOVER)), Error::Sealed);
    assert_err!(nexus.kv_config(), Error::Sealed);
}

#[tokio::test]
async fn any_two_of_three_shares_unseal() {
    let file = RedbFile::new();
    let (nexus, shares) = file.init().await;
    put(&nexus, "db/creds", "s3cret").await;
    let mut nexus = reopen(nexus, &file.path).await;
    for pair in [[0, 1], [0, 2], [1, 2], [2, 0], [2, 1]] {
        let two = [shares[pair[0]].try_clone(), shares[pair[1]].try_clone()];
        nexus.unseal(&two).await.unwrap();
        assert_eq!(nexus.status(), Status::Unsealed);
        assert_eq!(value(&nexus, "db/creds"), "s3cret", "shares {pair:?}");
        assert_err!(nexus.unseal(&two).await, Error::AlreadyUnsealed);
        nexus = reopen(nexus, &file.path).await;
    }
    // All three work too.
    nexus.unseal(&shares).await.unwrap();
    assert_eq!(value(&nexus, "db/creds"), "s3cret");
}

#[tokio::test]
async fn wrong_or_too_few_shares_are_refused_and_stay_sealed() {
    let file = RedbFile::new();
    let (nexus, shares) = file.init().await;
    put(&nexus, "db/creds", "s3cret").await;
    let (_other, foreign) = memory_nexus().await;
    let nexus = reopen(nexus, &file.path).await;

    let attempts: Vec<Vec<spike_core::Share>> = vec![
        vec![],
        vec![shares[0].try_clone()],
        vec![shares[2].try_clone()],
        copies(&foreign[..2]),
        vec![shares[0].try_clone(), foreign[1].try_clone()],
    ];
    for (i, attempt) in attempts.iter().enumerate() {
        let e = nexus.unseal(attempt).await.unwrap_err();
        assert!(matches!(e, Error::WrongKey), "attempt {i}: {e:?}");
        assert_eq!(e.code(), ErrorCode::WrongKey);
        assert!(
            matches!(nexus.status(), Status::Sealed { .. }),
            "attempt {i}"
        );
        assert_err!(nexus.get_secret(&su(), "db/creds", 0), Error::Sealed);
    }
    nexus.unseal(&shares[1..]).await.unwrap();
    assert_eq!(value(&nexus, "db/creds"), "s3cret");
}

#[tokio::test]
async fn restore_collects_one_share_at_a_time() {
    let file = RedbFile::new();
    let (nexus, shares) = file.init().await;
    put(&nexus, "db/creds", "s3cret").await;
    let restorer = caller(RESTORE);
    assert_err!(
        nexus.restore(&restorer, shares[0].try_clone()).await,
        Error::AlreadyUnsealed
    );
    let nexus = reopen(nexus, &file.path).await;

    let p = nexus
        .restore(&restorer, shares[0].try_clone())
        .await
        .unwrap();
    assert_eq!(
        p,
        RestoreProgress {
            collected: 1,
            remaining: 1,
            restored: false
        }
    );
    assert_eq!(
        nexus.status(),
        Status::Sealed {
            threshold: 2,
            shares: 3,
            collected: 1
        }
    );
    // The same share again is refused and not counted.
    assert_err!(
        nexus.restore(&restorer, shares[0].try_clone()).await,
        Error::Input(_)
    );
    assert!(matches!(
        nexus.status(),
        Status::Sealed { collected: 1, .. }
    ));
    let p = nexus
        .restore(&restorer, shares[2].try_clone())
        .await
        .unwrap();
    assert_eq!(
        p,
        RestoreProgress {
            collected: 2,
            remaining: 0,
            restored: true
        }
    );
    assert_eq!(nexus.status(), Status::Unsealed);
    assert_eq!(value(&nexus, "db/creds"), "s3cret");
    assert_err!(
        nexus.restore(&restorer, shares[1].try_clone()).await,
        Error::AlreadyUnsealed
    );
}

#[tokio::test]
async fn restore_with_a_wrong_set_starts_over_cleanly() {
    let file = RedbFile::new();
    let (nexus, shares) = file.init().await;
    put(&nexus, "db/creds", "s3cret").await;
    let (_other, foreign) = memory_nexus().await;
    let nexus = reopen(nexus, &file.path).await;
    let restorer = caller(RESTORE);

    nexus
        .restore(&restorer, shares[0].try_clone())
        .await
        .unwrap();
    let e = nexus
        .restore(&restorer, foreign[1].try_clone())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::WrongKey), "{e:?}");
    assert_eq!(
        nexus.status(),
        Status::Sealed {
            threshold: 2,
            shares: 3,
            collected: 0
        },
        "a failed set is forgotten"
    );
    assert_err!(nexus.get_secret(&su(), "db/creds", 0), Error::Sealed);

    // Starting over: share 1 is accepted again, as the first of a new set.
    let p = nexus
        .restore(&restorer, shares[1].try_clone())
        .await
        .unwrap();
    assert_eq!((p.collected, p.remaining, p.restored), (1, 1, false));
    let p = nexus
        .restore(&restorer, shares[0].try_clone())
        .await
        .unwrap();
    assert_eq!((p.collected, p.remaining, p.restored), (2, 0, true));
    assert_eq!(value(&nexus, "db/creds"), "s3cret");
}

#[tokio::test]
async fn only_the_restore_role_restores_and_only_recover_recovers() {
    let (nexus, shares) = memory_nexus().await;
    let others = [
        SUPERUSER,
        RECOVER,
        "spiffe://spike.ist/app",
        "spiffe://spike.ist/spike/keeper",
        "spiffe://other.td/spike/pilot/role/restore",
    ];
    nexus.seal().await.unwrap();
    for id in others {
        let e = nexus
            .restore(&caller(id), shares[0].try_clone())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Denied), "{id}: {e:?}");
        assert_eq!(e.code(), ErrorCode::Denied);
    }
    assert!(
        matches!(nexus.status(), Status::Sealed { collected: 0, .. }),
        "a denied restore collects nothing"
    );
    nexus.unseal(&shares[..2]).await.unwrap();
    for id in [
        SUPERUSER,
        RESTORE,
        "spiffe://spike.ist/app",
        "spiffe://spike.ist/spike/nexus",
        "spiffe://other.td/spike/pilot/role/recover",
    ] {
        assert_err!(nexus.recover(&caller(id)), Error::Denied);
    }
    // A suffixed role ID holds the role.
    let got = nexus
        .recover(&caller("spiffe://spike.ist/spike/pilot/role/recover/alice"))
        .unwrap();
    assert_eq!(got.len(), 3);
}

#[tokio::test]
async fn recovered_shares_unseal_and_are_stable() {
    let file = RedbFile::new();
    let (nexus, init_shares) = file.init().await;
    put(&nexus, "db/creds", "s3cret").await;
    let recovered = nexus.recover(&caller(RECOVER)).unwrap();
    assert_eq!(recovered.len(), 3);
    let keeper = nexus.keeper_shares().unwrap();
    assert!(same_shares(&recovered, &keeper), "recover == keeper_shares");
    assert!(
        same_shares(&recovered, &nexus.recover(&caller(RECOVER)).unwrap()),
        "deterministic"
    );
    assert!(
        same_shares(&recovered, &init_shares),
        "the shares init handed out are the ones Keepers get"
    );

    nexus.seal().await.unwrap();
    nexus.unseal(&recovered[1..]).await.unwrap();
    assert!(same_shares(&nexus.keeper_shares().unwrap(), &keeper));
    let nexus = reopen(nexus, &file.path).await;
    nexus
        .unseal(&[recovered[2].try_clone(), recovered[0].try_clone()])
        .await
        .unwrap();
    assert!(
        same_shares(&nexus.keeper_shares().unwrap(), &keeper),
        "stable across restarts"
    );
    assert_eq!(value(&nexus, "db/creds"), "s3cret");
}

#[tokio::test]
async fn custom_share_counts() {
    let store = Arc::new(MemoryStore::new());
    let nexus = Nexus::builder(store.clone())
        .shares(5, 3)
        .open()
        .await
        .unwrap();
    let shares = nexus.init().await.unwrap();
    assert_eq!(shares.len(), 5);
    put(&nexus, "x", "five").await;
    nexus.seal().await.unwrap();
    assert_eq!(
        nexus.status(),
        Status::Sealed {
            threshold: 3,
            shares: 5,
            collected: 0
        }
    );
    assert_err!(nexus.unseal(&shares[..2]).await, Error::WrongKey);
    assert_err!(nexus.unseal(&shares[3..]).await, Error::WrongKey);
    for pick in [[0, 1, 2], [2, 3, 4], [4, 0, 2]] {
        let three: Vec<_> = pick.iter().map(|&i| shares[i].try_clone()).collect();
        nexus.unseal(&three).await.unwrap();
        assert_eq!(value(&nexus, "x"), "five");
        nexus.seal().await.unwrap();
    }
    // The share parameters are the store's, not the new handle's builder's.
    let other = Nexus::builder(store).open().await.unwrap();
    assert!(matches!(
        other.status(),
        Status::Sealed {
            threshold: 3,
            shares: 5,
            ..
        }
    ));
    other.unseal(&shares[1..4]).await.unwrap();
    assert_eq!(other.keeper_shares().unwrap().len(), 5);

    let bad = Nexus::builder(Arc::new(MemoryStore::new()))
        .shares(2, 3)
        .open()
        .await;
    assert_err!(bad, Error::Input(_));
    let bad = Nexus::builder(Arc::new(MemoryStore::new()))
        .shares(3, 0)
        .open()
        .await;
    assert_err!(bad, Error::Input(_));
}
