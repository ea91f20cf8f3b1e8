//! How the group-commit thread asks the OS to schedule it (public so that
//! other latency-tolerant threads, such as the load generator's in
//! `benches/`, can ask the same).
//!
//! The `spike-writer` thread wakes up several times per commit: when a
//! write is queued while it is idle, when the log write is done, when the
//! disk's cache flush is done. Under Linux's default policy each of those
//! wake-ups preempts whatever runs on that CPU, usually a thread serving
//! requests, which then finishes its work later and at the cost of a
//! context switch. Under `SCHED_BATCH` a wake-up does not preempt: the
//! thread runs when the current one blocks or uses up its time slice, and
//! meanwhile more writes join the next commit. Its share of CPU is the same
//! (same nice value); only wake-up preemption changes. On an idle CPU it
//! runs at once, as before.
//!
//! On the project's 2-core VM a 90%-read mix over 32 connections served
//! 22% more requests this way, with commits gathering twice as many writes
//! and writes' median latency up by 0.3 ms; writes alone moved within the
//! VM's noise (`benches/writer-sched.sh`; README, Performance).

/// Puts the calling thread under `SCHED_BATCH` at its current nice value.
/// Where the policy cannot be set (not Linux, a seccomp filter) the error
/// says why and the thread keeps the policy it had.
pub fn batch_scheduling() -> std::io::Result<()> {
    set_batch().map_err(std::io::Error::other)
}

#[cfg(target_os = "linux")]
fn set_batch() -> Result<(), String> {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    use thread_priority::{ThreadPriority, ThreadPriorityValue};

    let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
    let nice = rustix::process::getpriority_process(None).map_err(|e| e.to_string())?;
    // thread-priority sets a normal policy's nice value with it, given as
    // one of its 0–99 priorities: take the one that maps to the thread's
    // own nice value, so that only the policy changes (an unprivileged
    // thread could not lower its nice value back).
    let priority = (0..=99u8)
        .filter_map(|p| ThreadPriorityValue::try_from(p).ok())
        .map(ThreadPriority::Crossplatform)
        .find(|p| p.to_posix(policy).ok() == Some(nice))
        .ok_or_else(|| format!("no priority maps to nice value {nice}"))?;
    set_thread_priority_and_policy(thread_native_id(), priority, policy).map_err(|e| e.to_string())
}

#[cfg(not(target_os = "linux"))]
fn set_batch() -> Result<(), String> {
    Err("SCHED_BATCH is Linux's".to_owned())
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, thread_schedule_policy,
    };

    use super::*;

    /// Only the policy changes: a thread started at nice 0 and one whose
    /// nice value was raised keep theirs.
    #[test]
    fn batch_scheduling_changes_the_policy_and_keeps_the_nice_value() {
        for nice in [None, Some(7)] {
            std::thread::spawn(move || {
                if let Some(nice) = nice {
                    rustix::process::setpriority_process(None, nice).expect("raise nice");
                }
                let before = rustix::process::getpriority_process(None).expect("nice");
                assert_eq!(before, nice.unwrap_or(before));
                batch_scheduling().expect("SCHED_BATCH");
                assert_eq!(
                    thread_schedule_policy().expect("policy"),
                    ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch)
                );
                assert_eq!(
                    rustix::process::getpriority_process(None).expect("nice"),
                    before
                );
            })
            .join()
            .expect("the probe thread panicked");
        }
    }

    /// The scheduling policy of each thread of this process with that name
    /// (`/proc/self/task/*/stat`, field 41: 0 = other, 3 = batch).
    fn policies_of(name: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").expect("tasks") {
            let dir = task.expect("task").path();
            let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
                continue; // the thread has exited
            };
            let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
                continue;
            };
            if comm.trim_end() != name {
                continue;
            }
            // Fields after the parenthesised name start at field 3.
            let rest = &stat[stat.rfind(')').expect("stat") + 1..];
            let policy = rest.split_whitespace().nth(41 - 3).expect("policy field");
            out.push(policy.parse().expect("a number"));
        }
        out
    }

    /// An unsealed Nexus's group-commit thread runs under `SCHED_BATCH`.
    #[tokio::test]
    async fn the_group_commit_thread_runs_under_sched_batch() {
        let store = std::sync::Arc::new(spike_storage::MemoryStore::new());
        let nexus = crate::Nexus::builder(store).open().await.expect("open");
        nexus.init().await.expect("init");
        // The thread names itself and sets its policy once it runs: wait
        // for that (bounded), not for any speed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut policies = policies_of("spike-writer");
        while (policies.is_empty() || policies.iter().any(|&p| p != 3))
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            policies = policies_of("spike-writer");
        }
        assert!(!policies.is_empty(), "no spike-writer thread");
        assert!(policies.iter().all(|&p| p == 3), "policies {policies:?}");
    }
}
