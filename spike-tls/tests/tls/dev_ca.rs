//! The development CA: persistence, file modes, trust domain checks.

use std::os::unix::fs::PermissionsExt;

use spike_tls::{DevCa, PeerPolicy, PemSource, TlsError, client_config, server_config};

use crate::common::*;

#[tokio::test]
async fn persists_across_loads_with_private_key_mode() {
    let dir = tempfile::tempdir().unwrap();
    let first = DevCa::load_or_create(dir.path(), TD).unwrap();
    let second = DevCa::load_or_create(dir.path(), TD).unwrap();
    assert_eq!(first.bundle(), second.bundle());
    assert_eq!(second.trust_domain(), TD);
    let mode = std::fs::metadata(dir.path().join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // SVIDs minted by the reloaded CA and the first one trust each other.
    let policy = PeerPolicy::TrustDomains(vec![TD.into()]);
    let server = server_config(source(&first, &nexus_id()), policy.clone()).unwrap();
    let client = client_config(source(&second, &pilot_id()), policy).unwrap();
    connect_ok(server, client).await;
}

#[test]
fn refuses_other_trust_domain_and_readable_key() {
    let dir = tempfile::tempdir().unwrap();
    DevCa::load_or_create(dir.path(), TD).unwrap();
    let err = DevCa::load_or_create(dir.path(), "other.org").unwrap_err();
    assert!(matches!(err, TlsError::TrustDomainMismatch { .. }), "{err}");

    let key = dir.path().join("ca.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = DevCa::load_or_create(dir.path(), TD).unwrap_err();
    assert!(matches!(err, TlsError::KeyFilePermissions { .. }), "{err}");
    assert!(DevCa::load_or_create(dir.path(), "Not A Domain").is_err());
}

#[test]
fn concurrent_creation_yields_one_ca() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca");
    let bundles: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| DevCa::load_or_create(&path, TD).unwrap().bundle()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(bundles.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn write_pem_then_load_gives_a_working_source() {
    let (_ca_dir, ca) = dev_ca(TD);
    let out = tempfile::tempdir().unwrap();
    let svid = ca.mint(&pilot_id(), &[], &[], HOUR).unwrap();
    ca.write_pem(&svid, out.path()).unwrap();
    let key = out.path().join("svid.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let source = PemSource::load(
        &out.path().join("svid.pem"),
        &key,
        &out.path().join("bundle.pem"),
    )
    .unwrap();
    use spike_tls::IdentitySource as _;
    assert_eq!(source.svid().unwrap().id(), &pilot_id());
    assert_eq!(source.bundle(TD), Some(ca.bundle()));
    assert_eq!(source.bundle("other.org"), None);

    // Rewritten files are picked up by reload().
    let next = ca.mint(&pilot_id(), &[], &[], 2 * HOUR).unwrap();
    ca.write_pem(&next, out.path()).unwrap();
    source.reload().unwrap();
    assert_eq!(source.svid().unwrap().chain(), next.chain());
}
