//! What a process costs, read from /proc: resident memory and CPU time consumed so far.

use std::time::Duration;

fn read_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resident set size in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    read_status_kib(pid, "VmRSS:").map(|kib| kib * 1024)
}

/// User plus system CPU time the process has used.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    cpu_times(pid).map(|t| t.own)
}

/// A process's CPU time: its own threads', and that of the children it has waited for
/// (with theirs in turn), which is where the commands a shard host reaps end up.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    pub own: Duration,
    pub reaped: Duration,
}

/// The numbers of `/proc/<pid>/stat` after the command name (which is in parentheses and
/// may contain spaces): index 0 is the state's field, 1 the parent, 11 and 12 the user and
/// system time, 13 and 14 those of the children waited for.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

pub fn cpu_times(pid: u32) -> Option<CpuTimes> {
    let fields = stat_fields(pid)?;
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // SAFETY: sysconf has no side effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    let seconds = |t: u64| Duration::from_secs_f64(t as f64 / ticks);
    Some(CpuTimes {
        own: seconds(field(11)? + field(12)?),
        reaped: seconds(field(13)? + field(14)?),
    })
}

/// Live children of `pid` whose command line contains `marker`.
pub fn children_named(pid: u32, marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            let parent = stat_fields(*child).and_then(|f| f.get(1)?.parse::<u32>().ok());
            parent == Some(pid)
                && std::fs::read(format!("/proc/{child}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

/// CPU seconds used over a window by groups of processes, each counted as its own threads
/// or as the children it reaped.
pub struct CpuSpent {
    before: Vec<(String, u32, bool, Duration)>,
}

impl CpuSpent {
    /// `(group, pid, reaped)`: `reaped` counts the children the process waited for instead
    /// of the process itself.
    pub fn start(processes: &[(String, u32, bool)]) -> CpuSpent {
        CpuSpent {
            before: processes
                .iter()
                .filter_map(|(group, pid, reaped)| {
                    let t = cpu_times(*pid)?;
                    Some((group.clone(), *pid, *reaped, pick(t, *reaped)))
                })
                .collect(),
        }
    }

    /// CPU seconds per group since `start` (a process gone since counts nothing). `now`
    /// lists the processes again: one that was not there at the start (a shard host started
    /// during the run) counts all its CPU.
    pub fn seconds(&self, now: &[(String, u32, bool)]) -> std::collections::BTreeMap<String, f64> {
        let mut out = std::collections::BTreeMap::new();
        for (group, pid, reaped, before) in &self.before {
            let spent = cpu_times(*pid)
                .map(|t| pick(t, *reaped).saturating_sub(*before).as_secs_f64())
                .unwrap_or(0.0);
            *out.entry(group.clone()).or_insert(0.0) += spent;
        }
        for (group, pid, reaped) in now {
            let known = self
                .before
                .iter()
                .any(|(g, p, r, _)| g == group && p == pid && r == reaped);
            if !known {
                let spent = cpu_times(*pid).map_or(0.0, |t| pick(t, *reaped).as_secs_f64());
                *out.entry(group.clone()).or_insert(0.0) += spent;
            }
        }
        out
    }
}

fn pick(t: CpuTimes, reaped: bool) -> Duration {
    if reaped {
        t.reaped
    } else {
        t.own
    }
}

/// CPU used by a few named processes over a window, in cores (1.0 = one core busy).
pub struct CpuMeter {
    started: std::time::Instant,
    spent: CpuSpent,
}

impl CpuMeter {
    pub fn start(processes: &[(String, u32)]) -> CpuMeter {
        let own: Vec<(String, u32, bool)> = processes
            .iter()
            .map(|(name, pid)| (name.clone(), *pid, false))
            .collect();
        CpuMeter {
            started: std::time::Instant::now(),
            spent: CpuSpent::start(&own),
        }
    }

    /// Cores each process used since `start`, summed by name.
    pub fn cores(&self) -> std::collections::BTreeMap<String, f64> {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let mut cores = self.spent.seconds(&[]);
        cores.values_mut().for_each(|seconds| *seconds /= wall);
        cores
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).is_some_and(|b| b > 1024 * 1024));
        let before = cpu_time(me).expect("cpu time");
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(100) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_time(me).expect("cpu time") > before);
        assert!(rss_bytes(u32::MAX).is_none());
    }

    #[test]
    fn counts_reaped_children_apart_from_the_process() {
        let me = std::process::id();
        let spent = CpuSpent::start(&[("me".into(), me, false), ("children".into(), me, true)]);
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .expect("sh");
        assert!(status.success());
        let seconds = spent.seconds(&[]);
        assert!(seconds["children"] > 0.0, "{seconds:?}");
        // The marker is the shell's $0; the shell stays (a second command follows the sleep).
        let sleeper = std::process::Command::new("sh")
            .args(["-c", "sleep 5; true", "dispatcher-children-named-marker"])
            .spawn()
            .expect("sleep");
        // Until it has exec'd, the child's command line is still this test's.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut found = Vec::new();
        while found.is_empty() && std::time::Instant::now() < deadline {
            found = children_named(me, "dispatcher-children-named-marker");
            std::thread::yield_now();
        }
        assert_eq!(found, vec![sleeper.id()]);
        let mut sleeper = sleeper;
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }
}
