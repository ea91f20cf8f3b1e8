//! Crash consistency with real processes: a child writes concurrently and
//! is killed with SIGKILL at a random moment; every write it acknowledged
//! must be there, whole, after a restart.
//!
//! The test binary re-executes itself (`crash::crash_child`, a no-op
//! unless `SPIKE_CRASH_CHILD_DIR` is set). The child opens the redb file,
//! initialises it (first round: the shares go to a file beside it) or
//! unseals it, then runs [`WRITERS`] tasks that put secrets on a few paths
//! (versions accumulate, across rounds too) and delete or undelete
//! versions. It prints a `try` line before each operation and an `ack`
//! line once the operation returned, and flushes. The parent kills it,
//! reopens the store and checks:
//!
//! - every acknowledged put is there with its version number and data;
//! - every version from earlier rounds is still there, unchanged;
//! - version numbers are consecutive from 1 (nothing pruned: the mount
//!   keeps 1000 versions), and any version not acknowledged holds the data
//!   of a put that was in flight at the kill;
//! - each version's deleted state is one that the acknowledged (or
//!   in-flight) deletes and undeletes allow.
//!
//! Rounds: `SPIKE_CRASH_ROUNDS` (default 8); seed: `SPIKE_CRASH_SEED`
//! (printed, to replay a failure).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use spike_core::{KvConfig, Nexus, VersionRead, WriteOptions};
use spike_storage::RedbStore;

use crate::util::{data, shares_from_text, shares_to_text, superuser};

const CHILD_DIR: &str = "SPIKE_CRASH_CHILD_DIR";
const CHILD_ROUND: &str = "SPIKE_CRASH_CHILD_ROUND";
const CHILD_SEED: &str = "SPIKE_CRASH_CHILD_SEED";
const WRITERS: u64 = 8;
const PATHS: u64 = 6;
/// Rounds that share a set of paths (so versions accumulate across
/// restarts without growing without bound when auditors run many rounds).
const ROUNDS_PER_PATH_SET: u64 = 4;

fn path_of(round: u64, j: u64) -> String {
    format!("crash/g{}/p{j}", round / ROUNDS_PER_PATH_SET)
}

/// One protocol line. Every line ends with ` $` so that a line cut short
/// by the kill is recognised and ignored.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@ {line} $").unwrap();
    out.flush().unwrap();
}

// ---- the child -----------------------------------------------------------------

/// The writer child: a no-op in a normal test run.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let seed: u64 = std::env::var(CHILD_SEED).unwrap().parse().unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(child(Path::new(&dir), round, seed));
}

async fn child(dir: &Path, round: u64, seed: u64) {
    let store = Arc::new(RedbStore::open(dir.join("spike.redb")).unwrap());
    let nexus = Nexus::builder(store).open().await.unwrap();
    let shares_file = dir.join("shares.txt");
    if shares_file.exists() {
        let text: Vec<String> = std::fs::read_to_string(&shares_file)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        nexus.unseal(&shares_from_text(&text[..2])).await.unwrap();
    } else {
        let shares = nexus.init().await.unwrap();
        let config = KvConfig {
            max_versions: 1000,
            ..KvConfig::default()
        };
        nexus.set_kv_config(&superuser(), config).await.unwrap();
        let tmp = dir.join("shares.tmp");
        std::fs::write(&tmp, shares_to_text(&shares).join("\n")).unwrap();
        std::fs::rename(&tmp, &shares_file).unwrap();
    }
    say(format_args!("ready"));
    let deadline = Instant::now() + Duration::from_secs(20); // if the parent dies
    let tasks: Vec<_> = (0..WRITERS)
        .map(|t| {
            let nexus = nexus.clone();
            tokio::spawn(async move {
                let su = superuser();
                let mut rng = fastrand::Rng::with_seed(seed ^ (round << 32) ^ (t + 1));
                for i in 0.. {
                    assert!(
                        Instant::now() < deadline,
                        "the crash child was never killed"
                    );
                    let path = path_of(round, rng.u64(..PATHS));
                    let roll = rng.u64(..10);
                    let current = nexus
                        .secret_metadata(&su, &path)
                        .map_or(0, |m| m.current_version);
                    if roll < 8 || current == 0 {
                        let value = format!("r{round}-t{t}-i{i}");
                        say(format_args!("try put {path} {value}"));
                        let version = nexus
                            .put_secret(
                                &su,
                                &path,
                                data([("v", value.as_str())]),
                                WriteOptions::default(),
                            )
                            .await
                            .unwrap();
                        say(format_args!("ack put {path} {} {value}", version.number));
                    } else {
                        let n = 1 + rng.u64(..current);
                        let (op, result) = if roll == 8 {
                            say(format_args!("try del {path} {n}"));
                            ("del", nexus.delete_secret(&su, &path, &[n]).await)
                        } else {
                            say(format_args!("try undel {path} {n}"));
                            ("undel", nexus.undelete_secret(&su, &path, &[n]).await)
                        };
                        result.unwrap();
                        say(format_args!("ack {op} {path} {n}"));
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

// ---- the parent ----------------------------------------------------------------

/// A parsed protocol line.
#[derive(Debug, Clone, PartialEq)]
enum Line {
    Ready,
    TryPut {
        path: String,
        value: String,
    },
    AckPut {
        path: String,
        version: u64,
        value: String,
    },
    /// `deleted`: true for a delete, false for an undelete.
    TryState {
        path: String,
        version: u64,
        deleted: bool,
    },
    AckState {
        path: String,
        version: u64,
        deleted: bool,
    },
}

fn parse(line: &str) -> Option<Line> {
    let body = &line[line.find("@@ ")? + 3..];
    let body = body.strip_suffix(" $")?; // cut short by the kill: ignore
    let words: Vec<&str> = body.split(' ').collect();
    let num = |s: &str| s.parse::<u64>().unwrap();
    Some(match words.as_slice() {
        ["ready"] => Line::Ready,
        ["try", "put", path, value] => Line::TryPut {
            path: path.to_string(),
            value: value.to_string(),
        },
        ["ack", "put", path, n, value] => Line::AckPut {
            path: path.to_string(),
            version: num(n),
            value: value.to_string(),
        },
        ["try", op @ ("del" | "undel"), path, n] => Line::TryState {
            path: path.to_string(),
            version: num(n),
            deleted: *op == "del",
        },
        ["ack", op @ ("del" | "undel"), path, n] => Line::AckState {
            path: path.to_string(),
            version: num(n),
            deleted: *op == "del",
        },
        _ => panic!("unexpected line from the child: {line:?}"),
    })
}

/// Runs one child round and kills it `kill_after` after it is ready;
/// returns its protocol lines, in order.
fn run_child(dir: &Path, round: u64, seed: u64, kill_after: Duration) -> Vec<Line> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_ROUND, round.to_string())
        .env(CHILD_SEED, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(parsed) = parse(&line)
                && tx.send(parsed).is_err()
            {
                break;
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Line::Ready) => {}
        Ok(other) => panic!("line before ready: {other:?}"),
        Err(e) => panic!("the child never got ready: {e} ({:?})", child.try_wait()),
    }
    std::thread::sleep(kill_after);
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap(); // SIGKILL on unix
    child.wait().unwrap();
    assert!(still_running, "the child exited before it was killed");
    reader.join().unwrap();
    // Lines already in the pipe were printed before the kill: they count.
    rx.try_iter().collect()
}

/// One stored version: its data's `v` value and whether it is deleted.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    value: String,
    deleted: bool,
}

type State = BTreeMap<String, BTreeMap<u64, Stored>>;

/// Unseals the store in `dir` and reads every secret and version.
fn read_state(dir: &Path) -> State {
    let text: Vec<String> = std::fs::read_to_string(dir.join("shares.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    crate::util::block_on(async {
        let store = Arc::new(RedbStore::open(dir.join("spike.redb")).unwrap());
        let nexus = Nexus::builder(store).open().await.unwrap();
        nexus.unseal(&shares_from_text(&text[1..])).await.unwrap();
        let su = superuser();
        let mut state = State::new();
        for path in nexus.list_all_secrets(&su).unwrap() {
            let meta = nexus.secret_metadata(&su, &path).unwrap();
            let numbers: Vec<u64> = meta.versions.iter().map(|v| v.number).collect();
            let want: Vec<u64> = (1..=meta.current_version).collect();
            assert_eq!(numbers, want, "{path}: versions are not consecutive from 1");
            assert_eq!(meta.oldest_version, 1, "{path}: a version was pruned");
            let mut versions = BTreeMap::new();
            for v in &meta.versions {
                let deleted = matches!(
                    nexus.get_secret(&su, &path, v.number).unwrap(),
                    VersionRead::Gone(_)
                );
                // Data of soft-deleted versions too: undelete, read, delete
                // again (the deleted state is what the next round checks).
                if deleted {
                    nexus
                        .undelete_secret(&su, &path, &[v.number])
                        .await
                        .unwrap();
                }
                let VersionRead::Live { data, .. } =
                    nexus.get_secret(&su, &path, v.number).unwrap()
                else {
                    panic!("{path} v{}: no data", v.number);
                };
                if deleted {
                    nexus.delete_secret(&su, &path, &[v.number]).await.unwrap();
                }
                let object = data.to_object();
                versions.insert(
                    v.number,
                    Stored {
                        value: object["v"].as_str().unwrap().to_owned(),
                        deleted,
                    },
                );
            }
            state.insert(path, versions);
        }
        state
    })
}

/// A delete or undelete seen in the child's output.
struct StateOp {
    deleted: bool,
    tried_at: usize,
    acked_at: Option<usize>,
}

/// Checks the state after a round against the state before it and the
/// child's output. Returns the acknowledged operations verified.
fn verify(round: u64, before: &State, after: &State, lines: &[Line]) -> usize {
    let ctx = |what: String| format!("round {round}: {what}");
    // Puts in flight at the kill: their data may or may not have landed.
    let mut in_flight: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut acked_puts = 0;
    let mut ops: BTreeMap<(&str, u64), Vec<StateOp>> = BTreeMap::new();
    for (at, line) in lines.iter().enumerate() {
        match line {
            Line::TryPut { path, value } => in_flight.entry(path).or_default().push(value),
            Line::AckPut {
                path,
                version,
                value,
            } => {
                in_flight
                    .get_mut(path.as_str())
                    .unwrap()
                    .retain(|v| v != value);
                let stored = after
                    .get(path)
                    .and_then(|vs| vs.get(version))
                    .unwrap_or_else(|| {
                        panic!("{}", ctx(format!("acked {path} v{version} is missing")))
                    });
                assert_eq!(
                    stored.value,
                    *value,
                    "{}",
                    ctx(format!("{path} v{version}"))
                );
                acked_puts += 1;
            }
            Line::TryState {
                path,
                version,
                deleted,
            } => ops.entry((path, *version)).or_default().push(StateOp {
                deleted: *deleted,
                tried_at: at,
                acked_at: None,
            }),
            Line::AckState {
                path,
                version,
                deleted,
            } => {
                let op = ops
                    .get_mut(&(path.as_str(), *version))
                    .and_then(|ops| {
                        ops.iter_mut()
                            .find(|o| o.deleted == *deleted && o.acked_at.is_none())
                    })
                    .unwrap_or_else(|| panic!("{}", ctx(format!("ack without try: {line:?}"))));
                op.acked_at = Some(at);
            }
            Line::Ready => {}
        }
    }
    let acked_states = ops
        .values()
        .flatten()
        .filter(|o| o.acked_at.is_some())
        .count();

    // Nothing from earlier rounds went missing or changed its data.
    for (path, versions) in before {
        for (n, old) in versions {
            let now = after.get(path).and_then(|vs| vs.get(n)).unwrap_or_else(|| {
                panic!(
                    "{}",
                    ctx(format!("{path} v{n} from an earlier round is gone"))
                )
            });
            assert_eq!(
                now.value,
                old.value,
                "{}",
                ctx(format!("{path} v{n} changed"))
            );
        }
    }
    for (path, versions) in after {
        for (n, stored) in versions {
            let acked = lines.iter().any(
                |l| matches!(l, Line::AckPut { path: p, version, .. } if p == path && version == n),
            );
            let earlier = before.get(path).and_then(|vs| vs.get(n));
            if earlier.is_none() && !acked {
                // Not acknowledged: the data of a put in flight at the kill.
                let flying = in_flight.entry(path).or_default();
                let i = flying
                    .iter()
                    .position(|v| *v == stored.value)
                    .unwrap_or_else(|| {
                        panic!(
                            "{}",
                            ctx(format!(
                                "{path} v{n} holds {:?}, never written",
                                stored.value
                            ))
                        )
                    });
                flying.remove(i);
            }
            // The deleted state: what the last operation to commit left. An
            // acknowledged op that finished before another acknowledged op on
            // the version began cannot be last; an op in flight may be.
            let initial = earlier.is_some_and(|e| e.deleted);
            let ops = ops.get(&(path.as_str(), *n)).map_or(&[][..], Vec::as_slice);
            let last_ack_try = ops
                .iter()
                .filter(|o| o.acked_at.is_some())
                .map(|o| o.tried_at)
                .max();
            let mut allowed: Vec<bool> = ops
                .iter()
                .filter(|o| match (o.acked_at, last_ack_try) {
                    (None, _) => true,
                    (Some(acked), Some(latest_try)) => acked > latest_try,
                    (Some(_), None) => unreachable!(),
                })
                .map(|o| o.deleted)
                .collect();
            if last_ack_try.is_none() {
                allowed.push(initial);
            }
            assert!(
                allowed.contains(&stored.deleted),
                "{}",
                ctx(format!(
                    "{path} v{n} deleted={} but the operations allow only {allowed:?}",
                    stored.deleted
                ))
            );
        }
    }
    acked_puts + acked_states
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return; // in a child
    }
    let rounds: u64 = std::env::var("SPIKE_CRASH_ROUNDS")
        .map_or(8, |r| r.parse().expect("SPIKE_CRASH_ROUNDS is a number"));
    let seed: u64 = std::env::var("SPIKE_CRASH_SEED").map_or_else(
        |_| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        },
        |s| s.parse().expect("SPIKE_CRASH_SEED is a number"),
    );
    eprintln!("crash: {rounds} rounds, SPIKE_CRASH_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut state = State::new();
    let mut verified = 0;
    for round in 0..rounds {
        let kill_after = Duration::from_millis(10 + rng.u64(..300));
        let lines = run_child(dir.path(), round, rng.u64(..), kill_after);
        let after = read_state(dir.path());
        let n = verify(round, &state, &after, &lines);
        eprintln!(
            "crash round {round}: killed after {kill_after:?}, {n} acknowledged operations verified"
        );
        verified += n;
        state = after;
    }
    let versions: usize = state.values().map(BTreeMap::len).sum();
    eprintln!(
        "crash: {rounds} rounds, {verified} acknowledged writes verified, \
         {versions} versions stored, {:?}",
        started.elapsed()
    );
    assert!(rounds == 0 || verified > 0, "no write was acknowledged");
}
