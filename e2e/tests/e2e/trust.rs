//! Certificates Nexus must not accept are refused in the TLS handshake,
//! before any request: no answer, no audit line, Nexus unaffected.

use std::time::Duration;

use rustls::pki_types::ServerName;
use spike_tls::DevCa;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::TlsConnector;

use crate::support::*;

/// An SVID for `id` from `ca`, written as `svid.pem`/`svid.key`, with
/// `nexus_bundle` as the bundle that verifies Nexus.
fn foreign_ident(
    dir: &std::path::Path,
    ca: &DevCa,
    spiffe_id: &str,
    nexus_bundle: &std::path::Path,
) -> Ident {
    let svid = ca
        .mint(&id(spiffe_id), &[], &[], Duration::from_secs(3600))
        .unwrap();
    ca.write_pem(&svid, dir).unwrap();
    Ident {
        ca: nexus_bundle.to_path_buf(),
        ..Ident::in_dir(dir)
    }
}

#[tokio::test]
async fn foreign_certificates_are_refused_at_the_handshake() {
    let mut dev = Dev::start();
    dev.spike_su(&["secret", "put", "db/creds", "k=v"]).ok();
    let nexus_bundle = dev.superuser().ca;
    let audit_before = dev.audit_lines();

    // Another trust domain, with the superuser's path.
    let evil_ca = DevCa::load_or_create(&dev.scratch.join("evil-ca"), "evil.org").unwrap();
    let evil = foreign_ident(
        &dev.scratch.join("evil"),
        &evil_ca,
        "spiffe://evil.org/spike/pilot/role/superuser",
        &nexus_bundle,
    );
    // The right trust domain, signed by an impostor CA.
    let impostor_ca = DevCa::load_or_create(&dev.scratch.join("impostor-ca"), TD).unwrap();
    let impostor = foreign_ident(
        &dev.scratch.join("impostor"),
        &impostor_ca,
        "spiffe://spike.ist/spike/pilot/role/superuser",
        &nexus_bundle,
    );

    for who in [&evil, &impostor] {
        for args in [&["secret", "get", "db/creds"][..], &["secret", "list"][..]] {
            let out = dev.spike_as(who, args);
            assert_eq!(out.code, 1, "{out:#?}");
            assert!(out.stdout.is_empty(), "{out:#?}");
            // Refused by Nexus in the handshake, not by the API. (The CLI
            // used to take `--ca` as the bundle of the Pilot's own trust
            // domain, so an evil.org Pilot failed on its side, verifying
            // Nexus, and never reached Nexus: see spike-cli config.rs.)
            assert!(!out.stderr.contains("access_unauthorized"), "{out:#?}");
            assert!(
                out.stderr.contains("Nexus refused our certificate"),
                "{out:#?}"
            );
        }
    }

    // A raw TLS client as evil.org: the server aborts the handshake; no
    // HTTP byte comes back.
    let tls = client_tls(
        &evil,
        &spike_tls::TrustBundle::from_pem(TD, &std::fs::read(&nexus_bundle).unwrap()).unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(dev.nexus).await.unwrap();
    let name = ServerName::IpAddress(dev.nexus.ip().into());
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        let mut conn = TlsConnector::from(tls).connect(name, tcp).await?;
        conn.write_all(b"POST /v1/store/secrets?action=list HTTP/1.1\r\nhost: nexus\r\ncontent-length: 2\r\n\r\n{}")
            .await?;
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    })
    .await
    .expect("the refused handshake did not end");
    match outcome {
        Err(_) => {}
        Ok(bytes) => assert!(
            bytes.is_empty(),
            "Nexus answered a foreign client: {}",
            String::from_utf8_lossy(&bytes)
        ),
    }

    // Nothing reached the API: no audit line; Nexus still serves.
    dev.assert_running();
    assert_eq!(dev.audit_lines(), audit_before);
    let got = dev
        .spike_su(&["--format", "json", "secret", "get", "db/creds"])
        .ok();
    assert_eq!(got.json()["data"]["k"], "v");
    assert!(!dev.audit_lines().iter().any(|l| l.contains("evil.org")));
}

#[test]
fn the_cli_refuses_a_server_that_is_not_nexus() {
    let dev = Dev::start();
    // A Keeper of the same trust domain presents spike/keeper, not
    // spike/nexus: the CLI must not talk to it.
    let out = spike(dev.keepers[0], &dev.superuser(), &["secret", "list"], None);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    assert!(
        out.stderr.contains("Nexus's certificate was refused"),
        "{out:#?}"
    );
}
