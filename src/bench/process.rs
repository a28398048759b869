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
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no side effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some(Duration::from_secs_f64((utime + stime) as f64 / ticks))
}

/// CPU used by a few named processes over a window, in cores (1.0 = one core busy).
pub struct CpuMeter {
    started: std::time::Instant,
    before: Vec<(String, u32, Duration)>,
}

impl CpuMeter {
    pub fn start(processes: &[(String, u32)]) -> CpuMeter {
        CpuMeter {
            started: std::time::Instant::now(),
            before: processes
                .iter()
                .filter_map(|(name, pid)| Some((name.clone(), *pid, cpu_time(*pid)?)))
                .collect(),
        }
    }

    /// Cores each process used since `start`, summed by name.
    pub fn cores(&self) -> std::collections::BTreeMap<String, f64> {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let mut out = std::collections::BTreeMap::new();
        for (name, pid, before) in &self.before {
            if let Some(now) = cpu_time(*pid) {
                *out.entry(name.clone()).or_insert(0.0) +=
                    now.saturating_sub(*before).as_secs_f64() / wall;
            }
        }
        out
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
}
