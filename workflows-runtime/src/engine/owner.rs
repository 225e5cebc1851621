//! Who owns an execution, in a form another process on the same host can check.
//!
//! An engine's owner id names its process so that a process on the same host can tell whether
//! that process is still there: `host:<boot id>:<pid namespace>:<pid>:<start time>:<engine>`,
//! where the boot id and the pid namespace say which kernel and which process table the pid
//! belongs to, and the start time (in clock ticks since boot, from `/proc/<pid>/stat`) tells the
//! process from a later one that got the same pid. When all four match a process that is gone,
//! its executions can be taken over at once instead of after their leases expire: a restart
//! after a crash resumes at once. Anything else (another host, another container's processes, a
//! platform without `/proc`) cannot be told apart from a live owner, and waits for the lease.

use std::sync::OnceLock;

/// This process, as other processes on the host can check it (`None`: it cannot be checked).
fn this_process() -> Option<&'static Process> {
    static THIS: OnceLock<Option<Process>> = OnceLock::new();
    THIS.get_or_init(|| {
        let pid = std::process::id();
        Some(Process { host: host()?, pid, start: start_time(pid)? })
    })
    .as_ref()
}

/// A process: the host it runs on (boot and pid namespace), its pid, and when it started.
#[derive(Debug, PartialEq, Eq)]
struct Process {
    host: String,
    pid: u32,
    start: u64,
}

/// This process as people name it: `host:pid` (the host's name, else `localhost`).
pub(crate) fn process_label() -> std::sync::Arc<str> {
    static LABEL: OnceLock<std::sync::Arc<str>> = OnceLock::new();
    LABEL
        .get_or_init(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".to_owned());
            format!("{host}:{}", std::process::id()).into()
        })
        .clone()
}

/// The owner id of a new engine in this process: unique per engine instance.
pub(crate) fn new_owner_id() -> String {
    let engine = crate::execution::ExecutionId::new();
    match this_process() {
        Some(Process { host, pid, start }) => format!("host:{host}:{pid}:{start}:{engine}"),
        None => format!("{}-{engine}", std::process::id()),
    }
}

/// True if `owner` is an engine of a process on this host that is gone (so its executions can
/// be taken over now); false if it is alive, or if this cannot be told.
pub(crate) fn is_gone(owner: &str) -> bool {
    let Some(this) = this_process() else { return false };
    let Some(owner) = parse(owner) else { return false };
    if owner.host != this.host {
        return false;
    }
    // Gone (or a zombie, dead but not reaped yet), or its pid now belongs to a process that
    // started later.
    live_start_time(owner.pid) != Some(owner.start)
}

/// The pid of the process an owner id names, if it names one this host can check.
pub(crate) fn pid_of(owner: &str) -> Option<u32> {
    parse(owner).map(|p| p.pid)
}

fn parse(owner: &str) -> Option<Process> {
    let rest = owner.strip_prefix("host:")?;
    let mut parts = rest.rsplitn(4, ':');
    let _engine = parts.next()?;
    let start = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    let host = parts.next()?.to_owned();
    Some(Process { host, pid, start })
}

/// This kernel's boot and this process's pid namespace: pids are comparable only within both.
fn host() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let namespace = std::fs::read_link("/proc/self/ns/pid").ok()?;
    // `pid:[4026531836]` -> `4026531836`
    let namespace = namespace.to_str()?.trim_start_matches("pid:[").trim_end_matches(']').to_owned();
    Some(format!("{}:{namespace}", boot.trim()))
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`), if
/// it exists.
fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|(_, start)| start)
}

/// When process `pid` started, if it exists and is alive: a zombie (`Z`: it died and its parent
/// has not reaped it yet — a PID 1 that reaps slowly, a container without an init) or a dead
/// one (`X`) runs nothing any more.
fn live_start_time(pid: u32) -> Option<u64> {
    stat(pid).filter(|(state, _)| !matches!(state, 'Z' | 'X')).map(|(_, start)| start)
}

/// Process `pid`'s state (field 3 of `/proc/<pid>/stat`) and start time (field 22).
fn stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18)?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_name_a_checkable_process_and_a_gone_one_is_recognised() {
        let id = new_owner_id();
        if this_process().is_none() {
            // No `/proc` here: nothing can be told, and nothing is taken for gone.
            assert!(!is_gone(&id));
            return;
        }
        assert!(id.starts_with("host:"), "{id}");
        assert_eq!(pid_of(&id), Some(std::process::id()));
        assert!(!is_gone(&id), "this process is alive");
        let this = this_process().unwrap();
        // The same pid with another start time: a later process reusing the pid.
        let reused = format!("host:{}:{}:{}:x", this.host, this.pid, this.start + 1);
        assert!(is_gone(&reused));
        // Another host (or container): cannot be told, so never taken for gone.
        let elsewhere = format!("host:other-boot:123:{}:{}:x", this.pid, this.start + 1);
        assert!(!is_gone(&elsewhere));
        assert!(!is_gone("1234-018f0000-0000-7000-8000-000000000000"), "old owner ids cannot be checked");
    }

    #[test]
    fn a_zombie_is_gone() {
        let Some(this) = this_process() else { return };
        let mut child = std::process::Command::new("sleep").arg("600").spawn().unwrap();
        let pid = child.id();
        let owner = format!("host:{}:{pid}:{}:x", this.host, start_time(pid).unwrap());
        assert!(!is_gone(&owner), "alive");
        // Killed and not reaped (no wait yet): a zombie, as under a PID 1 that reaps slowly.
        sigkill(pid);
        let zombie = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            stat(pid).is_some_and(|(state, _)| state == 'Z')
        });
        assert!(zombie, "the child became a zombie");
        assert!(is_gone(&owner), "a zombie runs nothing: its executions can be taken over");
        child.wait().unwrap();
        assert!(is_gone(&owner));
    }

    /// SIGKILL through `kill(1)` (no libc dependency for one test).
    fn sigkill(pid: u32) {
        let status = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status().unwrap();
        assert!(status.success());
    }
}
