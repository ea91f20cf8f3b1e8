//! Identities and policies (SPEC §2–§3): default deny, anchored patterns,
//! built-in roles, policy administration.

use std::time::Duration;

use spike_core::{
    Error, ErrorCode, InputError, Nexus, Permission, PolicyFilter, SettingsUpdate, TrustRoots,
    VersionRead, WriteOptions,
};
use spike_storage::MemoryStore;
use std::sync::Arc;

use crate::{SUPERUSER, assert_err, caller, data, memory_nexus, put, spec, su};

use Permission::{Execute, List, Read, Super, Write};

const APP: &str = "spiffe://spike.ist/app";

async fn write(nexus: &Nexus, who: &str, path: &str) -> Result<u64, Error> {
    nexus
        .put_secret(
            &caller(who),
            path,
            data(&[("k", "w")]),
            WriteOptions::default(),
        )
        .await
        .map(|v| v.number)
}

fn read(nexus: &Nexus, who: &str, path: &str) -> Result<VersionRead, Error> {
    nexus.get_secret(&caller(who), path, 0)
}

#[tokio::test]
async fn workloads_are_denied_by_default() {
    let (nexus, _) = memory_nexus().await;
    put(&nexus, "db/creds", "x").await;
    let e = read(&nexus, APP, "db/creds").unwrap_err();
    assert!(matches!(e, Error::Denied));
    assert_eq!(e.code(), ErrorCode::Denied);
    // Denied even for a missing secret: no existence oracle.
    assert_err!(read(&nexus, APP, "db/missing"), Error::Denied);
    assert_err!(write(&nexus, APP, "db/new").await, Error::Denied);
    assert_err!(
        nexus.secret_metadata(&caller(APP), "db/creds"),
        Error::Denied
    );
    assert_err!(
        nexus.delete_secret(&caller(APP), "db/creds", &[]).await,
        Error::Denied
    );
    assert_err!(
        nexus.destroy_secret(&caller(APP), "db/creds", &[1]).await,
        Error::Denied
    );
    assert_err!(
        nexus.delete_secret_metadata(&caller(APP), "db/creds").await,
        Error::Denied
    );
    assert!(nexus.list_all_secrets(&caller(APP)).unwrap().is_empty());
    assert_err!(nexus.list_secrets(&caller(APP), ""), Error::Denied);
    assert_err!(
        nexus.list_policies(&caller(APP), &PolicyFilter::default()),
        Error::Denied
    );
    assert_err!(
        nexus
            .put_policy(&caller(APP), spec("p", APP, ".*", &[Super]))
            .await,
        Error::Denied
    );
    assert_eq!(nexus.policy_count().unwrap(), 0);
    assert_err!(
        nexus
            .rotate(&caller(APP), |_| async { Ok::<_, String>(()) })
            .await,
        Error::Denied
    );
    // Nothing changed.
    assert_eq!(
        nexus
            .secret_metadata(&su(), "db/creds")
            .unwrap()
            .current_version,
        1
    );
    assert_err!(nexus.secret_metadata(&su(), "db/new"), Error::NotFound);
}

#[tokio::test]
async fn a_read_policy_grants_read_only_on_its_paths() {
    let (nexus, _) = memory_nexus().await;
    put(&nexus, "db/creds", "x").await;
    put(&nexus, "other/creds", "y").await;
    nexus
        .put_policy(&su(), spec("db-read", APP, "db/.*", &[Read]))
        .await
        .unwrap();
    assert!(matches!(
        read(&nexus, APP, "db/creds").unwrap(),
        VersionRead::Live { .. }
    ));
    assert!(nexus.secret_metadata(&caller(APP), "db/creds").is_ok());
    assert_err!(read(&nexus, APP, "db/missing"), Error::NotFound);
    assert_err!(read(&nexus, APP, "other/creds"), Error::Denied);
    assert_err!(read(&nexus, APP, "db"), Error::Denied);
    assert_err!(write(&nexus, APP, "db/creds").await, Error::Denied);
    assert_err!(
        nexus.delete_secret(&caller(APP), "db/creds", &[]).await,
        Error::Denied
    );
    assert!(
        nexus.list_all_secrets(&caller(APP)).unwrap().is_empty(),
        "no list"
    );
    // Other workloads get nothing from it.
    for other in [
        "spiffe://spike.ist/app2",
        "spiffe://spike.ist/app/sub",
        "spiffe://spike.ist/x/app",
        "spiffe://other.td/app",
    ] {
        assert_err!(read(&nexus, other, "db/creds"), Error::Denied);
    }
}

#[tokio::test]
async fn patterns_are_anchored_at_both_ends() {
    let (nexus, _) = memory_nexus().await;
    for p in ["app", "x/app", "app/x", "myapp"] {
        put(&nexus, p, "v").await;
    }
    // A pattern that would match as a substring in upstream SPIKE.
    nexus
        .put_policy(
            &su(),
            spec("sub", "spiffe://spike.ist/app", "app", &[Read, Write]),
        )
        .await
        .unwrap();
    assert!(read(&nexus, APP, "app").is_ok());
    for path in ["x/app", "app/x", "myapp"] {
        assert_err!(read(&nexus, APP, path), Error::Denied);
    }
    assert_err!(
        read(&nexus, "spiffe://spike.ist/app2", "app"),
        Error::Denied
    );
    assert_err!(
        read(&nexus, "spiffe://spike.ist/app/evil", "app"),
        Error::Denied
    );
    // Explicit anchors mean the same; alternation stays inside the anchors.
    nexus
        .put_policy(
            &su(),
            spec(
                "alt",
                "^spiffe://spike.ist/(a|b)$",
                "^x/app|myapp$",
                &[Read],
            ),
        )
        .await
        .unwrap();
    let b = "spiffe://spike.ist/b";
    assert!(read(&nexus, b, "x/app").is_ok());
    assert!(read(&nexus, b, "myapp").is_ok());
    assert_err!(read(&nexus, b, "app"), Error::Denied);
    assert_err!(
        read(&nexus, "spiffe://spike.ist/bb", "myapp"),
        Error::Denied
    );
}

#[tokio::test]
async fn super_permission_grants_everything_on_its_paths() {
    let (nexus, _) = memory_nexus().await;
    nexus
        .put_policy(&su(), spec("team", APP, "team/.*", &[Super]))
        .await
        .unwrap();
    assert_eq!(write(&nexus, APP, "team/a").await.unwrap(), 1);
    assert_eq!(write(&nexus, APP, "team/a").await.unwrap(), 2);
    assert!(read(&nexus, APP, "team/a").is_ok());
    nexus
        .delete_secret(&caller(APP), "team/a", &[1])
        .await
        .unwrap();
    nexus
        .undelete_secret(&caller(APP), "team/a", &[1])
        .await
        .unwrap();
    nexus
        .destroy_secret(&caller(APP), "team/a", &[1])
        .await
        .unwrap();
    nexus
        .update_secret_metadata(&caller(APP), "team/a", SettingsUpdate::default())
        .await
        .unwrap();
    assert_eq!(nexus.list_all_secrets(&caller(APP)).unwrap(), ["team/a"]);
    nexus
        .delete_secret_metadata(&caller(APP), "team/a")
        .await
        .unwrap();
    assert_err!(write(&nexus, APP, "elsewhere").await, Error::Denied);
    // Super on secrets is not policy admin.
    assert_err!(
        nexus.list_policies(&caller(APP), &PolicyFilter::default()),
        Error::Denied
    );
}

#[tokio::test]
async fn listing_is_filtered_per_path() {
    let (nexus, _) = memory_nexus().await;
    for p in ["db/a", "db/b", "db/x/deep", "web/a", "top"] {
        put(&nexus, p, "v").await;
    }
    nexus
        .put_policy(&su(), spec("db-list", APP, "db/.*", &[List]))
        .await
        .unwrap();
    assert_eq!(
        nexus.list_all_secrets(&caller(APP)).unwrap(),
        ["db/a", "db/b", "db/x/deep"]
    );
    assert_eq!(
        nexus.list_secrets(&caller(APP), "db").unwrap(),
        ["a", "b", "x/"]
    );
    // Nothing visible under a folder the caller may not list: denied, as
    // Vault answers 403 there.
    assert_err!(nexus.list_secrets(&caller(APP), "web"), Error::Denied);
    // An empty folder the caller may list: not found.
    assert_err!(nexus.list_secrets(&caller(APP), "db/none"), Error::NotFound);
    let root = nexus.list_secrets(&caller(APP), "").unwrap();
    assert!(!root.contains(&"web/".to_owned()) && !root.contains(&"top".to_owned()));
    // Listing grants no read.
    assert_err!(read(&nexus, APP, "db/a"), Error::Denied);

    // `list` on spike/system/secret sees everything.
    let lister = "spiffe://spike.ist/lister";
    nexus
        .put_policy(
            &su(),
            spec("all-list", lister, "spike/system/secret", &[List]),
        )
        .await
        .unwrap();
    assert_eq!(
        nexus.list_all_secrets(&caller(lister)).unwrap(),
        ["db/a", "db/b", "db/x/deep", "top", "web/a"]
    );
    assert_eq!(
        nexus.list_secrets(&caller(lister), "").unwrap(),
        ["db/", "top", "web/"]
    );
    assert_err!(read(&nexus, lister, "top"), Error::Denied);
}

#[tokio::test]
async fn policy_admin_needs_the_acl_path() {
    let (nexus, _) = memory_nexus().await;
    let admin = "spiffe://spike.ist/policy-admin";
    // Write alone does not let it read or list policies.
    nexus
        .put_policy(&su(), spec("acl-w", admin, "spike/system/acl", &[Write]))
        .await
        .unwrap();
    let created = nexus
        .put_policy(&caller(admin), spec("app-db", APP, "db/.*", &[Read]))
        .await
        .unwrap();
    assert_eq!(created.created_by, admin);
    assert_err!(nexus.get_policy(&caller(admin), "app-db"), Error::Denied);
    assert_err!(
        nexus.list_policies(&caller(admin), &PolicyFilter::default()),
        Error::Denied
    );
    // With read and list it can.
    nexus
        .put_policy(
            &su(),
            spec("acl-rl", admin, "spike/system/acl", &[Read, List]),
        )
        .await
        .unwrap();
    assert_eq!(
        nexus.get_policy(&caller(admin), "app-db").unwrap().spec,
        spec("app-db", APP, "db/.*", &[Read])
    );
    let names: Vec<_> = nexus
        .list_policies(&caller(admin), &PolicyFilter::default())
        .unwrap()
        .into_iter()
        .map(|p| p.spec.name)
        .collect();
    assert_eq!(names, ["acl-rl", "acl-w", "app-db"]);
    let filtered = nexus
        .list_policies(
            &caller(admin),
            &PolicyFilter {
                spiffeid_pattern: Some(admin.to_owned()),
                path_pattern: Some("spike/system/acl".to_owned()),
            },
        )
        .unwrap();
    assert_eq!(filtered.len(), 2);
    // The policy it made takes effect.
    put(&nexus, "db/x", "v").await;
    assert!(read(&nexus, APP, "db/x").is_ok());
    nexus.delete_policy(&caller(admin), "app-db").await.unwrap();
    assert_err!(read(&nexus, APP, "db/x"), Error::Denied);
    assert_err!(nexus.get_policy(&su(), "app-db"), Error::NotFound);
    assert_err!(nexus.delete_policy(&su(), "app-db").await, Error::NotFound);
    // Not the KV mount config: that needs super on the ACL path.
    assert_err!(
        nexus
            .set_kv_config(&caller(admin), spike_core::KvConfig::default())
            .await,
        Error::Denied
    );
    // Policy admin does not open secrets.
    assert_err!(read(&nexus, admin, "db/x"), Error::Denied);
}

#[tokio::test]
async fn bad_policies_are_refused_and_store_nothing() {
    let (nexus, _) = memory_nexus().await;
    let bad = [
        spec("p", "(", ".*", &[Read]),
        spec("p", APP, "[z-a]", &[Read]),
        spec("p", APP, "", &[Read]),
        spec("p", APP, &"a".repeat(501), &[Read]),
        spec("p", APP, "(a{100}){100}", &[Read]),
        spec("", APP, ".*", &[Read]),
        spec("bad name", APP, ".*", &[Read]),
        spec("p", APP, ".*", &[]),
    ];
    for s in bad {
        let e = nexus.put_policy(&su(), s.clone()).await.unwrap_err();
        assert!(
            matches!(e, Error::Input(InputError::Policy { .. })),
            "{s:?}: {e:?}"
        );
        assert_eq!(e.code(), ErrorCode::BadRequest);
    }
    assert_eq!(nexus.policy_count().unwrap(), 0);
    assert!(
        nexus
            .list_policies(&su(), &PolicyFilter::default())
            .unwrap()
            .is_empty()
    );
    // A bad replacement leaves the good policy in force.
    nexus
        .put_policy(&su(), spec("p", APP, "db/.*", &[Read]))
        .await
        .unwrap();
    assert_err!(
        nexus.put_policy(&su(), spec("p", APP, "(", &[Super])).await,
        Error::Input(_)
    );
    assert_eq!(
        nexus.get_policy(&su(), "p").unwrap().spec.path_pattern,
        "db/.*"
    );
    put(&nexus, "db/a", "v").await;
    assert!(read(&nexus, APP, "db/a").is_ok());
}

#[tokio::test]
async fn upsert_keeps_created_and_policies_persist() {
    let store = Arc::new(MemoryStore::new());
    let nexus = Nexus::builder(store.clone()).open().await.unwrap();
    let shares = nexus.init().await.unwrap();
    let first = nexus
        .put_policy(&su(), spec("p", APP, "db/.*", &[Read]))
        .await
        .unwrap();
    assert_eq!(first.created, first.updated);
    assert_eq!(first.created_by, SUPERUSER);
    tokio::time::sleep(Duration::from_millis(2)).await;
    let second = nexus
        .put_policy(
            &caller("spiffe://spike.ist/spike/pilot/role/superuser/bob"),
            spec("p", APP, "db/.*|web/.*", &[Read, List]),
        )
        .await
        .unwrap();
    assert_eq!(second.created, first.created);
    assert!(second.updated > first.updated);
    assert_eq!(second.created_by, SUPERUSER, "the creator is kept");
    assert_eq!(nexus.policy_count().unwrap(), 1);
    nexus
        .put_policy(&su(), spec("q", "spiffe://spike.ist/q", "q", &[Execute]))
        .await
        .unwrap();
    put(&nexus, "web/a", "v").await;

    nexus.seal().await.unwrap();
    nexus.unseal(&shares[..2]).await.unwrap();
    let after = nexus.get_policy(&su(), "p").unwrap();
    assert_eq!(
        (&after.spec, after.created, after.updated, &after.created_by),
        (
            &second.spec,
            second.created,
            second.updated,
            &second.created_by
        )
    );
    assert!(read(&nexus, APP, "web/a").is_ok());
    // A fresh handle on the same store loads them too.
    nexus.close().await;
    let nexus = Nexus::builder(store).open().await.unwrap();
    nexus.unseal(&shares[1..]).await.unwrap();
    let all = nexus
        .list_policies(&su(), &PolicyFilter::default())
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (&all[0].spec, all[0].created, all[0].updated),
        (&second.spec, second.created, second.updated)
    );
    assert_eq!(
        all[1].spec,
        spec("q", "spiffe://spike.ist/q", "q", &[Execute])
    );
    assert!(read(&nexus, APP, "web/a").is_ok());
}

#[tokio::test]
async fn built_in_roles_other_than_superuser_get_no_data() {
    let (nexus, _) = memory_nexus().await;
    put(&nexus, "db/a", "v").await;
    // A policy whose pattern matches everyone, roles included.
    nexus
        .put_policy(
            &su(),
            spec("everyone", "spiffe://spike\\.ist/.*", ".*", &[Super]),
        )
        .await
        .unwrap();
    assert!(read(&nexus, APP, "db/a").is_ok(), "the policy works");
    for role in [
        "spiffe://spike.ist/spike/pilot/role/recover",
        "spiffe://spike.ist/spike/pilot/role/restore",
        "spiffe://spike.ist/spike/keeper",
        "spiffe://spike.ist/spike/keeper/2",
        "spiffe://spike.ist/spike/nexus",
    ] {
        assert_err!(read(&nexus, role, "db/a"), Error::Denied);
        assert_err!(write(&nexus, role, "db/a").await, Error::Denied);
        assert_err!(nexus.list_secrets(&caller(role), ""), Error::Denied);
        assert_err!(
            nexus.list_policies(&caller(role), &PolicyFilter::default()),
            Error::Denied
        );
    }
    // The superuser role with a suffix is the superuser.
    let alice = "spiffe://spike.ist/spike/pilot/role/superuser/alice";
    assert!(read(&nexus, alice, "db/a").is_ok());
    assert_eq!(write(&nexus, alice, "db/b").await.unwrap(), 1);
    // ...but not a lookalike without the '/'.
    nexus.delete_policy(&su(), "everyone").await.unwrap();
    assert_err!(
        read(
            &nexus,
            "spiffe://spike.ist/spike/pilot/role/superuserx",
            "db/a"
        ),
        Error::Denied
    );
}

#[tokio::test]
async fn only_configured_trust_roots_carry_roles() {
    let (nexus, _) = memory_nexus().await;
    put(&nexus, "db/a", "v").await;
    let foreign = "spiffe://evil.td/spike/pilot/role/superuser";
    assert_err!(read(&nexus, foreign, "db/a"), Error::Denied);
    assert_err!(write(&nexus, foreign, "db/a").await, Error::Denied);
    assert_err!(
        nexus
            .put_policy(&caller(foreign), spec("p", ".*", ".*", &[Super]))
            .await,
        Error::Denied
    );

    // A store configured for other.td honours other.td's roles only.
    let other = Nexus::builder(Arc::new(MemoryStore::new()))
        .trust_roots(TrustRoots::new(["other.td"]).unwrap())
        .open()
        .await
        .unwrap();
    other.init().await.unwrap();
    let other_su = caller("spiffe://other.td/spike/pilot/role/superuser");
    other
        .put_secret(&other_su, "x", data(&[("k", "v")]), WriteOptions::default())
        .await
        .unwrap();
    assert_err!(other.get_secret(&su(), "x", 0), Error::Denied);
    assert!(other.get_secret(&other_su, "x", 0).is_ok());
}
