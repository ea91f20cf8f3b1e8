//! `spike-server nexus` with its SVID from the SPIFFE Workload API (a fake
//! agent in this process): the agent rotates the SVID and new connections
//! get the new certificate, with no restart.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use serde_json::json;
use spike_tls::testing::FakeWorkloadApi;
use spike_tls::{DevCa, TrustBundle};
use tokio_rustls::TlsConnector;

use crate::support::*;

/// Kills the child on drop.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serial number of the certificate Nexus serves on a new connection.
async fn served_serial(nexus: SocketAddr, who: &Ident, bundle: &TrustBundle) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(nexus).await.unwrap();
    let name = ServerName::IpAddress(nexus.ip().into());
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(client_tls(who, bundle)).connect(name, tcp),
    )
    .await
    .expect("handshake timed out")
    .expect("handshake with Nexus");
    let leaf = &conn.get_ref().1.peer_certificates().expect("Nexus's chain")[0];
    serial(leaf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexus_serves_a_rotated_workload_api_svid_without_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let ca = DevCa::load_or_create(&root.join("ca"), TD).unwrap();
    let nexus_id = id("spiffe://spike.ist/spike/nexus");
    let mint = |validity: u64| {
        ca.mint(
            &nexus_id,
            &["localhost"],
            &["127.0.0.1".parse().unwrap()],
            Duration::from_secs(validity),
        )
        .unwrap()
    };
    let first = mint(3600);
    let agent = FakeWorkloadApi::start(&root.join("agent.sock"), &first, &ca.bundle()).unwrap();

    let su_dir = root.join("superuser");
    let su_svid = ca
        .mint(
            &id("spiffe://spike.ist/spike/pilot/role/superuser"),
            &[],
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    ca.write_pem(&su_svid, &su_dir).unwrap();
    let su = Ident::in_dir(&su_dir);

    let addr = free_addrs(1)[0];
    let log = root.join("nexus.log");
    let mut nexus = Reaper(
        Command::new(server_bin())
            .env_clear()
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("SPIFFE_ENDPOINT_SOCKET", agent.endpoint())
            .env("SPIKE_NEXUS_ADDR", addr.to_string())
            .env("SPIKE_NEXUS_DATA_DIR", root.join("nexus"))
            .env("SPIKE_NEXUS_AUDIT_LOG", root.join("audit.log"))
            .env("SPIKE_NEXUS_KEEPER_PEERS", "")
            .env("SPIKE_TRUST_ROOT", TD)
            .arg("nexus")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting spike-server nexus"),
    );
    let nexus_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // No Keepers: it initialises by itself and serves.
    let until = Instant::now() + READY_DEADLINE;
    loop {
        if let Some(status) = nexus.0.try_wait().unwrap() {
            panic!("nexus exited ({status}):\n{}", nexus_log());
        }
        if spike(addr, &su, &["secret", "put", "app/cfg", "v=1"], None).code == 0 {
            break;
        }
        assert!(Instant::now() < until, "nexus not ready:\n{}", nexus_log());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let first_serial = serial(&first.chain()[0]);
    assert_eq!(served_serial(addr, &su, &ca.bundle()).await, first_serial);

    // The agent rotates the SVID (new key and serial) on its open stream.
    let second = mint(7200);
    let second_serial = serial(&second.chain()[0]);
    assert_ne!(first_serial, second_serial);
    agent.rotate(&second, &ca.bundle());
    let until = Instant::now() + Duration::from_secs(20);
    while served_serial(addr, &su, &ca.bundle()).await != second_serial {
        assert!(
            Instant::now() < until,
            "Nexus still serves the old SVID:\n{}",
            nexus_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Same process, still working, with the rotated certificate.
    assert!(nexus.0.try_wait().unwrap().is_none(), "{}", nexus_log());
    let got = spike(
        addr,
        &su,
        &["--format", "json", "secret", "get", "app/cfg"],
        None,
    )
    .ok();
    assert_eq!(got.json(), json!({"data": {"v": "1"}}));
    spike(addr, &su, &["secret", "put", "app/cfg", "v=2"], None).ok();
    let got = spike(
        addr,
        &su,
        &["--format", "json", "secret", "get", "app/cfg"],
        None,
    )
    .ok();
    assert_eq!(got.json(), json!({"data": {"v": "2"}}));

    // And once more.
    let third = mint(10800);
    agent.rotate(&third, &ca.bundle());
    let third_serial = serial(&third.chain()[0]);
    let until = Instant::now() + Duration::from_secs(20);
    while served_serial(addr, &su, &ca.bundle()).await != third_serial {
        assert!(Instant::now() < until, "second rotation not served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    spike(addr, &su, &["secret", "list"], None).ok();
}
