//! Process hardening at start-up (SECURITY.md: a compromised host while
//! unsealed): no core dumps, no ptrace attachment by same-user processes,
//! and memory kept out of swap where the process may lock it.
//!
//! Everything goes through rustix's safe API. A step that fails is logged at
//! `warn` and skipped: hardening never stops a server from starting.

use std::io;

use rustix::process::{DumpableBehavior, Resource, Rlimit};

/// `CAP_IPC_LOCK`: lets a process lock memory beyond `RLIMIT_MEMLOCK`.
const CAP_IPC_LOCK: u32 = 14;

/// What [`harden_process`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hardening {
    /// `RLIMIT_CORE` is 0 (soft and hard): no core file.
    pub core_dumps_disabled: bool,
    /// `PR_SET_DUMPABLE` 0: no core dump, no ptrace attach by the same
    /// user, `/proc/<pid>/mem` and friends owned by root.
    pub not_dumpable: bool,
    /// `mlockall(MCL_CURRENT | MCL_FUTURE)` (with `MCL_ONFAULT` where the
    /// kernel has it): nothing is swapped out.
    pub memory_locked: bool,
}

/// Hardens the calling process; call once, first thing in `main` (before
/// any secret is in memory). Returns what it could do; what it could not is
/// logged at `warn`.
pub fn harden_process() -> Hardening {
    let mut done = Hardening::default();

    match rustix::process::setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    ) {
        Ok(()) => done.core_dumps_disabled = true,
        Err(e) => tracing::warn!(error = %e, "could not disable core dumps (RLIMIT_CORE)"),
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    match rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        Ok(()) => done.not_dumpable = true,
        Err(e) => tracing::warn!(error = %e, "could not set PR_SET_DUMPABLE to 0"),
    }

    match lock_memory() {
        Ok(()) => done.memory_locked = true,
        Err(why) => tracing::warn!("memory not locked (secrets may be swapped out): {why}"),
    }
    tracing::debug!(?done, "process hardening");
    done
}

/// `mlockall`, only where it cannot make later allocations fail: with an
/// unlimited `RLIMIT_MEMLOCK` or `CAP_IPC_LOCK`. Under a finite limit,
/// `MCL_FUTURE` would make every mapping beyond it fail (an allocation
/// failure aborts the process), so it is not attempted.
fn lock_memory() -> Result<(), String> {
    use rustix::mm::MlockAllFlags;
    let limit = rustix::process::getrlimit(Resource::Memlock);
    let unlimited = limit.current.is_none();
    if !unlimited && !has_capability(CAP_IPC_LOCK) {
        return Err(format!(
            "RLIMIT_MEMLOCK is {} bytes and no CAP_IPC_LOCK; raise it (`ulimit -l unlimited`, \
             systemd `LimitMEMLOCK=infinity`) or grant CAP_IPC_LOCK",
            limit.current.unwrap_or(0)
        ));
    }
    let base = MlockAllFlags::CURRENT | MlockAllFlags::FUTURE;
    // ONFAULT (Linux ≥ 4.4) locks pages as they are touched instead of
    // populating every reserved mapping (thread stacks, arenas) at once.
    match rustix::mm::mlockall(base | MlockAllFlags::ONFAULT) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL) => rustix::mm::mlockall(base).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether the effective capability set holds `cap` (from
/// `/proc/self/status`; `false` when it cannot be read).
fn has_capability(cap: u32) -> bool {
    read_status_field("CapEff")
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << cap) != 0)
}

/// A field of `/proc/self/status`.
fn read_status_field(name: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    })
}

/// Whether the process is currently dumpable (`PR_GET_DUMPABLE`).
pub fn is_dumpable() -> io::Result<bool> {
    rustix::process::dumpable_behavior()
        .map(|b| b != DumpableBehavior::NotDumpable)
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// Set in the re-executed child: only there does hardening run, so the
    /// other tests of this binary keep a dumpable process.
    const CHILD: &str = "SPIKE_HARDENING_TEST_CHILD";

    /// The child half: hardens itself and checks the result. A no-op in an
    /// ordinary test run.
    #[test]
    fn hardening_child() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        assert!(is_dumpable().unwrap(), "a test process starts dumpable");
        let done = harden_process();
        assert!(done.core_dumps_disabled && done.not_dumpable, "{done:?}");
        assert!(!is_dumpable().unwrap());
        let core = rustix::process::getrlimit(Resource::Core);
        assert_eq!((core.current, core.maximum), (Some(0), Some(0)));
        if done.memory_locked {
            // VmLck counts locked pages (ONFAULT: those touched so far).
            let vmlck = read_status_field("VmLck").unwrap();
            assert_ne!(vmlck, "0 kB", "mlockall succeeded but nothing is locked");
        }
        // Hardening twice is harmless (core limit already 0, etc.).
        let again = harden_process();
        assert!(again.core_dumps_disabled && again.not_dumpable);
        println!("HARDENED {done:?}");
    }

    /// Re-executes this test binary running only [`hardening_child`].
    #[test]
    fn hardening_in_a_child_process() {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "hardening::tests::hardening_child",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("HARDENED"),
            "child failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // This process is untouched.
        assert!(is_dumpable().unwrap());
    }
}
