//! The audit trail (SPEC §8).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use spike_core::{
    AuditEvent, AuditOptions, AuditSink, Decision, Delivery, Error, ErrorCode, JsonLinesSink,
    MemorySink, Nexus, Permission, PolicyFilter, Share, WriteOptions,
};
use spike_storage::MemoryStore;

use crate::{RECOVER, RESTORE, SUPERUSER, assert_err, caller, data, put, spec, su};

const APP: &str = "spiffe://spike.ist/app";
const SECRET_VALUE: &str = "hunter2-very-secret-value";

async fn audited(options: AuditOptions) -> (Nexus, Arc<MemorySink>, Vec<Share>) {
    let sink = Arc::new(MemorySink::new());
    let nexus = Nexus::builder(Arc::new(MemoryStore::new()))
        .audit(sink.clone(), options)
        .open()
        .await
        .unwrap();
    let shares = nexus.init().await.unwrap();
    (nexus, sink, shares)
}

/// Events recorded since `from`.
fn since(sink: &MemorySink, from: usize) -> Vec<AuditEvent> {
    sink.events()[from..].to_vec()
}

fn json(events: &[AuditEvent]) -> String {
    events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn one_event_per_call_with_who_what_and_why() {
    let (nexus, sink, shares) = audited(AuditOptions::default()).await;
    let app = caller(APP);

    // Each step: the call, then the one event it must leave.
    let n = sink.events().len();
    nexus
        .put_secret(
            &su(),
            "db/creds",
            data(&[("password", SECRET_VALUE)]),
            WriteOptions::default(),
        )
        .await
        .unwrap();
    let e = since(&sink, n);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].caller, SUPERUSER);
    assert_eq!(e[0].action, "secret.put");
    assert_eq!(e[0].path.as_deref(), Some("db/creds"));
    assert_eq!(
        e[0].decision,
        Decision::Allow {
            by: "role:superuser".into()
        }
    );
    assert_eq!(e[0].status, "ok");
    assert_eq!(e[0].api, "embedded");

    let n = sink.events().len();
    assert_err!(nexus.get_secret(&app, "db/creds", 0), Error::Denied);
    let e = since(&sink, n);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].caller, APP);
    assert_eq!(e[0].action, "secret.get");
    assert_eq!(e[0].decision, Decision::Deny);
    assert_eq!(e[0].status, "denied");

    nexus
        .put_policy(&su(), spec("db-read", APP, "db/.*", &[Permission::Read]))
        .await
        .unwrap();
    let n = sink.events().len();
    nexus.get_secret(&app, "db/creds", 0).unwrap();
    let e = since(&sink, n);
    assert_eq!(e.len(), 1);
    assert_eq!(
        e[0].decision,
        Decision::Allow {
            by: "policy:db-read".into()
        }
    );
    assert_eq!(e[0].status, "ok");

    let n = sink.events().len();
    assert_err!(nexus.get_secret(&app, "db/none", 0), Error::NotFound);
    let e = since(&sink, n);
    assert_eq!(e.len(), 1);
    assert_eq!(
        e[0].decision,
        Decision::Allow {
            by: "policy:db-read".into()
        }
    );
    assert_eq!(e[0].status, "not_found");

    let n = sink.events().len();
    assert_err!(
        nexus
            .put_secret(
                &su(),
                "db/creds",
                data(&[("k", "v")]),
                WriteOptions { cas: Some(7) }
            )
            .await,
        Error::CasMismatch { .. }
    );
    let e = since(&sink, n);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].status, "cas_mismatch");

    // Every kind of call leaves exactly one event.
    let calls: Vec<(&str, usize)> = vec![
        ("secret.metadata.get", {
            let n = sink.events().len();
            nexus.secret_metadata(&su(), "db/creds").unwrap();
            n
        }),
        ("secret.delete", {
            let n = sink.events().len();
            nexus.delete_secret(&su(), "db/creds", &[]).await.unwrap();
            n
        }),
        ("secret.undelete", {
            let n = sink.events().len();
            nexus.undelete_secret(&su(), "db/creds", &[]).await.unwrap();
            n
        }),
        ("secret.list", {
            let n = sink.events().len();
            nexus.list_secrets(&su(), "db").unwrap();
            n
        }),
        ("policy.list", {
            let n = sink.events().len();
            nexus
                .list_policies(&su(), &PolicyFilter::default())
                .unwrap();
            n
        }),
        ("operator.recover", {
            let n = sink.events().len();
            nexus.recover(&caller(RECOVER)).unwrap();
            n
        }),
    ];
    let all = sink.events();
    for (i, (action, start)) in calls.iter().enumerate() {
        let end = calls.get(i + 1).map_or(all.len(), |c| c.1);
        assert_eq!(end - start, 1, "{action}");
        assert_eq!(all[*start].action, *action);
    }
    let recover = all.last().unwrap();
    assert_eq!(
        recover.decision,
        Decision::Allow {
            by: "role:recover".into()
        }
    );

    // Restore while sealed: one event per share, none of them holds it.
    nexus.seal().await.unwrap();
    let n = sink.events().len();
    nexus
        .restore(&caller(RESTORE), shares[0].try_clone())
        .await
        .unwrap();
    let e = since(&sink, n);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].action, "operator.restore");
    assert_eq!(
        e[0].decision,
        Decision::Allow {
            by: "role:restore".into()
        }
    );
    let n = sink.events().len();
    assert_err!(
        nexus.restore(&su(), shares[1].try_clone()).await,
        Error::Denied
    );
    let e = since(&sink, n);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].decision, Decision::Deny);
    let n = sink.events().len();
    assert_err!(nexus.get_secret(&su(), "db/creds", 0), Error::Sealed);
    let e = since(&sink, n);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].status, "state_not_ready");

    // No secret value, share or key anywhere in the trail.
    let text = json(&sink.events());
    assert!(!text.contains(SECRET_VALUE));
    for s in &shares {
        let hex: String = s.value().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!text.contains(&hex));
        let ints = serde_json::to_string(&s.value().to_vec()).unwrap();
        assert!(!text.contains(ints.trim_matches(|c| c == '[' || c == ']')));
    }
    // Trail ids are unique.
    let events = sink.events();
    let mut ids: Vec<_> = events.iter().map(|e| e.trail_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), events.len());
}

#[tokio::test]
async fn hmac_paths_never_show_the_path() {
    let (nexus, sink, _) = audited(AuditOptions {
        hmac_paths: true,
        fail_closed: false,
    })
    .await;
    let path = "tenants/acme/payroll-db";
    put(&nexus, path, SECRET_VALUE).await;
    nexus.get_secret(&su(), path, 0).unwrap();
    assert_err!(nexus.get_secret(&caller(APP), path, 0), Error::Denied);
    nexus.list_secrets(&su(), "tenants/acme").unwrap();
    let events: Vec<_> = sink
        .events()
        .into_iter()
        .filter(|e| e.action.starts_with("secret."))
        .collect();
    assert_eq!(events.len(), 4);
    let text = json(&events);
    assert!(!text.contains("payroll"), "{text}");
    assert!(!text.contains("acme"), "{text}");
    assert!(!text.contains(SECRET_VALUE));
    let macs: Vec<_> = events.iter().map(|e| e.path.clone().unwrap()).collect();
    for m in &macs {
        assert!(m.starts_with("hmac:"), "{m}");
    }
    // Same path, same MAC (correlatable); other path, other MAC.
    assert_eq!(macs[0], macs[1]);
    assert_eq!(macs[1], macs[2]);
    assert_ne!(macs[0], macs[3]);
}

/// A path's HMAC stays the same across restarts (trails correlate) and
/// changes with the root key: from the moment a rotation begins, not only
/// after the next restart.
#[tokio::test]
async fn hmac_paths_change_with_the_root_key_and_only_with_it() {
    let store = Arc::new(MemoryStore::new());
    let sink = Arc::new(MemorySink::new());
    let options = AuditOptions {
        hmac_paths: true,
        fail_closed: false,
    };
    let open = || async {
        Nexus::builder(store.clone())
            .audit(sink.clone(), options)
            .open()
            .await
            .unwrap()
    };
    let path = "tenants/acme/payroll-db";
    let mac = |nexus: &Nexus| {
        nexus.get_secret(&su(), path, 0).unwrap();
        let events = sink.events();
        let last = events.last().unwrap();
        assert_eq!(last.action, "secret.get");
        last.path.clone().unwrap()
    };

    let nexus = open().await;
    let shares = nexus.init().await.unwrap();
    put(&nexus, path, SECRET_VALUE).await;
    let first = mac(&nexus);
    nexus.close().await;
    let nexus = open().await;
    nexus.unseal(&shares[..2]).await.unwrap();
    assert_eq!(
        mac(&nexus),
        first,
        "same root key, same MAC after a restart"
    );

    let delivered = Arc::new(std::sync::Mutex::new(Vec::new()));
    let slot = Arc::clone(&delivered);
    nexus
        .rotate(&su(), move |new: Vec<Share>| {
            *slot.lock().unwrap() = new;
            std::future::ready(Ok::<(), String>(()))
        })
        .await
        .unwrap();
    let rotated = mac(&nexus);
    assert_ne!(rotated, first, "a rotation starts a new audit key at once");
    let new_shares: Vec<Share> = delivered.lock().unwrap().drain(..).collect();
    nexus.close().await;
    let nexus = open().await;
    nexus.unseal(&new_shares[1..]).await.unwrap();
    assert_eq!(mac(&nexus), rotated, "and keeps it after a restart");
}

/// A sink that fails while `failing` is set.
#[derive(Default)]
struct FlakySink {
    failing: AtomicBool,
    inner: MemorySink,
}

impl AuditSink for FlakySink {
    fn record(&self, event: &AuditEvent) -> io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(io::Error::other("disk full"));
        }
        self.inner.record(event)
    }
}

#[tokio::test]
async fn fail_closed_refuses_answers_without_an_audit_line() {
    let sink = Arc::new(FlakySink::default());
    let nexus = Nexus::builder(Arc::new(MemoryStore::new()))
        .audit(
            sink.clone(),
            AuditOptions {
                hmac_paths: false,
                fail_closed: true,
            },
        )
        .open()
        .await
        .unwrap();
    nexus.init().await.unwrap();
    let before = sink.inner.events().len();
    put(&nexus, "a", SECRET_VALUE).await;
    // A change leaves a line before its commit, then the call's own line.
    let lines = since(&sink.inner, before);
    let statuses: Vec<_> = lines.iter().map(|e| (e.action, e.status)).collect();
    assert_eq!(
        statuses,
        [("secret.put", "started"), ("secret.put", "ok")],
        "{}",
        json(&lines)
    );
    assert_eq!(lines[0].path.as_deref(), Some("a"));
    assert_eq!(lines[0].decision, lines[1].decision);
    assert_eq!(
        lines[0].trail_id, lines[1].trail_id,
        "one call, one trail id"
    );
    let trails: std::collections::HashSet<_> = sink
        .inner
        .events()
        .into_iter()
        .map(|e| e.trail_id)
        .collect();
    assert_eq!(
        trails.len(),
        sink.inner.events().len() - 1,
        "ids are unique across calls"
    );

    sink.failing.store(true, Ordering::SeqCst);
    let e = nexus.get_secret(&su(), "a", 0).unwrap_err();
    assert!(matches!(e, Error::Audit(_)), "{e:?}");
    assert_eq!(e.code(), ErrorCode::Unavailable);
    assert!(!e.to_string().contains(SECRET_VALUE));
    assert_err!(nexus.list_all_secrets(&su()), Error::Audit(_));
    assert_err!(nexus.get_secret(&caller(APP), "a", 0), Error::Audit(_));
    assert_err!(
        nexus
            .put_secret(&su(), "b", data(&[("k", "v")]), WriteOptions::default())
            .await,
        Error::Audit(_)
    );
    assert_err!(
        nexus
            .put_policy(&su(), spec("p", APP, "b", &[Permission::Read]))
            .await,
        Error::Audit(_)
    );
    assert_err!(nexus.delete_secret(&su(), "a", &[]).await, Error::Audit(_));
    sink.failing.store(false, Ordering::SeqCst);
    // The refused changes were not made: no line, no change.
    assert!(nexus.get_secret(&su(), "a", 0).is_ok());
    assert_err!(nexus.get_secret(&su(), "b", 0), Error::NotFound);
    assert_err!(nexus.get_policy(&su(), "p"), Error::NotFound);

    // Fail-open (the default): the call answers, the failure is only logged.
    let sink = Arc::new(FlakySink::default());
    let nexus = Nexus::builder(Arc::new(MemoryStore::new()))
        .audit(sink.clone(), AuditOptions::default())
        .open()
        .await
        .unwrap();
    nexus.init().await.unwrap();
    sink.failing.store(true, Ordering::SeqCst);
    nexus
        .put_secret(&su(), "a", data(&[("k", "v")]), WriteOptions::default())
        .await
        .unwrap();
    assert!(nexus.get_secret(&su(), "a", 0).is_ok());
}

#[tokio::test]
async fn json_lines_file_gets_one_line_per_call() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let nexus = Nexus::builder(Arc::new(MemoryStore::new()))
        .audit(
            Arc::new(JsonLinesSink::file(&log, Delivery::Synchronous).unwrap()),
            AuditOptions::default(),
        )
        .open()
        .await
        .unwrap();
    nexus.init().await.unwrap();
    let before = std::fs::read_to_string(&log).unwrap().lines().count();
    let calls = 5;
    for i in 0..calls {
        put(&nexus, &format!("s/{i}"), SECRET_VALUE).await;
    }
    assert_err!(nexus.get_secret(&caller(APP), "s/0", 0), Error::Denied);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<_> = text.lines().skip(before).collect();
    assert_eq!(lines.len(), calls + 1);
    for (i, line) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if i < calls {
            assert_eq!(v["action"], "secret.put");
            assert_eq!(v["path"], format!("s/{i}"));
            assert_eq!(v["decision"]["result"], "allow");
            assert_eq!(v["decision"]["by"], "role:superuser");
            assert_eq!(v["status"], "ok");
        } else {
            assert_eq!(v["caller"], APP);
            assert_eq!(v["decision"]["result"], "deny");
            assert_eq!(v["status"], "denied");
        }
        for field in ["time", "trail_id", "caller", "api", "action", "duration_us"] {
            assert!(v.get(field).is_some(), "{field} missing in {line}");
        }
    }
    assert!(!text.contains(SECRET_VALUE));
}

#[tokio::test]
async fn batched_json_lines_are_all_written_by_the_time_nexus_closes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let sink = Arc::new(JsonLinesSink::file(&log, Delivery::Batched).unwrap());
    assert_eq!(sink.delivery(), Delivery::Batched);
    let nexus = Nexus::builder(Arc::new(MemoryStore::new()))
        .audit(sink, AuditOptions::default())
        .open()
        .await
        .unwrap();
    nexus.init().await.unwrap();
    let calls = 200;
    for i in 0..calls {
        let _ = nexus.get_secret(&su(), &format!("s/{i}"), 0);
    }
    nexus.close().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let gets = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["action"] == "secret.get")
        .count();
    assert_eq!(gets, calls);
}
