//! What this host has, for an agent that does not say (`--cpus`, `--memory`): the CPUs this
//! process may use and the host's memory.

/// CPUs this process may run on, in thousandths of a core.
pub fn host_cpu_millis() -> u64 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    cpus as u64 * 1000
}

/// The host's memory (`MemTotal` of /proc/meminfo), if it can be read.
pub fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_host_has_cpus_and_memory() {
        assert!(super::host_cpu_millis() >= 1000);
        assert!(super::host_memory_bytes().is_some_and(|m| m > 1 << 20));
    }
}
