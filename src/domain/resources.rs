//! Resources beyond slots: CPU (in thousandths of a core), memory (bytes) and named countable
//! resources (`gpu=2`). A TaskManager declares what it has, a job asks per shard, a tenant's
//! quota may cap each. Also the isolation level an agent can enforce.
//!
//! Pure data and arithmetic: the parsing of the user's spellings (`0.5`, `512MiB`,
//! `gpu=2,fpga=1`) lives here too, so the CLI, the agent and the API edge agree on them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Most named resources on one TaskManager, one request or one quota.
pub const MAX_NAMED_RESOURCES: usize = 32;
/// Longest resource name, in bytes.
pub const MAX_RESOURCE_NAME_BYTES: usize = 32;
/// The largest count of one named resource.
pub const MAX_RESOURCE_COUNT: u64 = 1_000_000;
/// The most CPU one TaskManager may declare or one shard ask for: 1,000,000 cores.
pub const MAX_CPU_MILLIS: u64 = 1_000_000_000;
/// The most memory: 1 PiB.
pub const MAX_MEMORY_BYTES: u64 = 1 << 50;

/// An amount of each resource. A zero means none (for a request: not asked; for a capacity:
/// none there, except CPU and memory of a TaskManager that declared none, see
/// `TaskManagerResources`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// Named countable resources (`gpu`), lower-case names; counts above zero only.
    pub named: BTreeMap<String, u64>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.cpu_millis == 0 && self.memory_bytes == 0 && self.named.values().all(|n| *n == 0)
    }

    /// `self + other · times`, saturating.
    pub fn add_times(&mut self, other: &Resources, times: u64) {
        self.cpu_millis = self
            .cpu_millis
            .saturating_add(other.cpu_millis.saturating_mul(times));
        self.memory_bytes = self
            .memory_bytes
            .saturating_add(other.memory_bytes.saturating_mul(times));
        for (name, count) in &other.named {
            let have = self.named.entry(name.clone()).or_default();
            *have = have.saturating_add(count.saturating_mul(times));
        }
    }

    /// `self − other`, never below zero; named resources that reach zero are dropped.
    pub fn subtract(&mut self, other: &Resources) {
        self.cpu_millis = self.cpu_millis.saturating_sub(other.cpu_millis);
        self.memory_bytes = self.memory_bytes.saturating_sub(other.memory_bytes);
        for (name, count) in &other.named {
            if let Some(have) = self.named.get_mut(name) {
                *have = have.saturating_sub(*count);
                if *have == 0 {
                    self.named.remove(name);
                }
            }
        }
    }

    /// The dimensions that `used + self` would take past `capacity`, as `"cpu"`, `"memory"`
    /// or a resource name; empty when it fits.
    pub fn over(&self, used: &Resources, capacity: &Resources) -> Vec<String> {
        let mut over = Vec::new();
        if self.cpu_millis > 0
            && used.cpu_millis.saturating_add(self.cpu_millis) > capacity.cpu_millis
        {
            over.push("cpu".to_string());
        }
        if self.memory_bytes > 0
            && used.memory_bytes.saturating_add(self.memory_bytes) > capacity.memory_bytes
        {
            over.push("memory".to_string());
        }
        for (name, count) in &self.named {
            let used = used.named.get(name).copied().unwrap_or(0);
            let have = capacity.named.get(name).copied().unwrap_or(0);
            if *count > 0 && used.saturating_add(*count) > have {
                over.push(name.clone());
            }
        }
        over
    }

    /// Whether `used + self` fits in `capacity` in every dimension `self` asks for (what
    /// `over` says without allocating: the planner asks this per candidate).
    pub fn fits(&self, used: &Resources, capacity: &Resources) -> bool {
        let within =
            |asked: u64, used: u64, have: u64| asked == 0 || used.saturating_add(asked) <= have;
        within(self.cpu_millis, used.cpu_millis, capacity.cpu_millis)
            && within(self.memory_bytes, used.memory_bytes, capacity.memory_bytes)
            && self.named.iter().all(|(name, count)| {
                within(
                    *count,
                    used.named.get(name).copied().unwrap_or(0),
                    capacity.named.get(name).copied().unwrap_or(0),
                )
            })
    }
}

impl fmt::Display for Resources {
    /// `cpu=0.5,memory=512MiB,gpu=1`, leaving out what is zero; `none` when all is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.cpu_millis > 0 {
            parts.push(format!("cpu={}", format_cpu(self.cpu_millis)));
        }
        if self.memory_bytes > 0 {
            parts.push(format!("memory={}", format_size(self.memory_bytes)));
        }
        for (name, count) in &self.named {
            if *count > 0 {
                parts.push(format!("{name}={count}"));
            }
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

/// What a shard of a job asks for beyond its slots, the isolation it needs and how long each
/// run may take. Kept in the state only for jobs that ask anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRequest {
    pub per_shard: Resources,
    /// Runs only on TaskManagers that report `full` isolation (`submit --isolation full`, or
    /// the cluster's `[security] require_isolation`).
    pub isolation_full: bool,
    /// Each run's wall-clock limit (`submit --timeout`, or the cluster's default): a run past
    /// it is stopped and fails "timed out after ...", counted as an attempt.
    pub timeout_ms: Option<u64>,
}

impl ResourceRequest {
    pub fn is_empty(&self) -> bool {
        self.per_shard.is_empty() && !self.isolation_full && self.timeout_ms.is_none()
    }
}

/// The longest `--timeout`: 30 days.
pub const MAX_TIMEOUT_MS: u64 = 30 * 24 * 3_600_000;

/// Parse a duration: `90s`, `10m`, `2h`, `1h30m`, `500ms`, `1d`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let bad = || format!("'{text}' is not a duration; give e.g. 90s, 10m, 2h or 1h30m");
    if let Ok(secs) = trimmed.parse::<u64>() {
        return checked_duration(secs.saturating_mul(1000), text);
    }
    if trimmed.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = total.saturating_add(number.saturating_mul(scale));
    }
    checked_duration(total, text)
}

fn checked_duration(ms: u64, text: &str) -> Result<u64, String> {
    if ms == 0 {
        return Err(format!("duration '{text}' must be above zero"));
    }
    if ms > MAX_TIMEOUT_MS {
        return Err(format!("duration '{text}' is above the most, 30 days"));
    }
    Ok(ms)
}

/// `600000` → `10m`, `5400000` → `1h30m`, `1500` → `1.5s`.
pub fn format_duration(ms: u64) -> String {
    if ms % 1000 != 0 {
        return if ms < 1000 {
            format!("{ms}ms")
        } else {
            format!("{}s", format_cpu(ms))
        };
    }
    let secs = ms / 1000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// What a TaskManager can enforce around its shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Isolation {
    /// Nothing: shards run as the agent's user, in its view (a non-root agent, or
    /// `--sandbox off`).
    None,
    /// Some walls are up, not all (the report says which are missing).
    Partial,
    /// Own user, own PID namespace and `/proc`, own cgroup with limits.
    Full,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::None => "none",
            Isolation::Partial => "partial",
            Isolation::Full => "full",
        }
    }

    pub fn parse(text: &str) -> Option<Isolation> {
        match text {
            "none" => Some(Isolation::None),
            "partial" => Some(Isolation::Partial),
            "full" => Some(Isolation::Full),
            _ => None,
        }
    }
}

/// What a TaskManager declared at registration: its capacity in each resource and its
/// isolation level. TaskManagers that registered before resources existed have none kept:
/// they are treated as `none` isolation, no named resources, and CPU and memory without
/// limit (their jobs ask none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskManagerResources {
    pub capacity: Resources,
    pub isolation: Isolation,
    /// For `partial`: what is missing, in the agent's words (bounded).
    pub isolation_missing: String,
}

/// Longest `isolation_missing` kept.
pub const MAX_ISOLATION_NOTE_BYTES: usize = 256;

/// Parse a CPU amount in cores (`2`, `0.5`, `1.25`) into thousandths of a core.
pub fn parse_cpu(text: &str) -> Result<u64, String> {
    let cores: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number of cores; give e.g. 2 or 0.5"))?;
    if !cores.is_finite() || cores <= 0.0 {
        return Err(format!("CPU must be above 0 cores, not '{text}'"));
    }
    let millis = (cores * 1000.0).round();
    if millis < 1.0 {
        return Err(format!(
            "CPU '{text}' is below the smallest step, 0.001 of a core"
        ));
    }
    if millis > MAX_CPU_MILLIS as f64 {
        return Err(format!(
            "CPU '{text}' is above the most, {} cores",
            MAX_CPU_MILLIS / 1000
        ));
    }
    Ok(millis as u64)
}

/// `1500` → `1.5`.
pub fn format_cpu(millis: u64) -> String {
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        let text = format!("{}.{:03}", millis / 1000, millis % 1000);
        text.trim_end_matches('0').to_string()
    }
}

/// Parse a size: bytes (`1048576`), or with a unit `KiB`, `MiB`, `GiB`, `TiB` (powers of
/// 1024) or `K`/`KB`, `M`/`MB`, `G`/`GB`, `T`/`TB` (powers of 1000), fractions allowed
/// (`1.5GiB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size; give e.g. 512MiB, 2GiB or 1000000"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "'{other}' in '{text}' is not a size unit; use KiB, MiB, GiB, TiB (or K, M, G, T)"
            ))
        }
    };
    let bytes = (number * scale).round();
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(format!("size '{text}' must be at least 1 byte"));
    }
    if bytes > MAX_MEMORY_BYTES as f64 {
        return Err(format!("size '{text}' is above the most, 1PiB"));
    }
    Ok(bytes as u64)
}

/// `536870912` → `512MiB`; sizes that are not a whole number of a binary unit keep a
/// decimal (`1.5GiB`) or fall back to bytes.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes >= size {
            if bytes % size == 0 {
                return format!("{}{unit}", bytes / size);
            }
            let tenths = bytes * 10 / size;
            if tenths * size == bytes * 10 {
                return format!("{}.{}{unit}", tenths / 10, tenths % 10);
            }
        }
    }
    format!("{bytes}B")
}

/// Check one resource name: 1..=32 bytes of lower-case letters, digits, `_` and `-`,
/// starting with a letter (it becomes part of an environment variable's name). `cpu`,
/// `memory` and `slots` are the built-in dimensions, not names.
pub fn validate_resource_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_RESOURCE_NAME_BYTES
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        return Err(format!(
            "resource name '{name}' must be 1 to {MAX_RESOURCE_NAME_BYTES} lower-case letters, \
             digits, '_' or '-', starting with a letter (e.g. gpu)"
        ));
    }
    if matches!(name, "cpu" | "memory" | "slots") {
        return Err(format!(
            "'{name}' is a built-in dimension, not a named resource; use --{name} for it"
        ));
    }
    Ok(())
}

/// Check a map of named resources: valid names, counts 1..=1,000,000, at most 32.
pub fn validate_named(named: &BTreeMap<String, u64>) -> Result<(), String> {
    if named.len() > MAX_NAMED_RESOURCES {
        return Err(format!(
            "{} named resources given; at most {MAX_NAMED_RESOURCES}",
            named.len()
        ));
    }
    for (name, count) in named {
        validate_resource_name(name)?;
        if *count == 0 || *count > MAX_RESOURCE_COUNT {
            return Err(format!(
                "resource {name}={count}: the count must be 1 to {MAX_RESOURCE_COUNT}"
            ));
        }
    }
    Ok(())
}

/// Check a whole amount against the ceilings.
pub fn validate_resources(resources: &Resources) -> Result<(), String> {
    if resources.cpu_millis > MAX_CPU_MILLIS {
        return Err(format!(
            "cpu {} is above the most, {} cores",
            format_cpu(resources.cpu_millis),
            MAX_CPU_MILLIS / 1000
        ));
    }
    if resources.memory_bytes > MAX_MEMORY_BYTES {
        return Err("memory is above the most, 1PiB".to_string());
    }
    validate_named(&resources.named)
}

/// Parse `gpu=2,fpga=1` (names lower-cased; a name given twice is refused).
pub fn parse_named(text: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut named = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, count) = part
            .split_once('=')
            .ok_or_else(|| format!("'{part}' is not <name>=<count>; give e.g. gpu=2"))?;
        let name = name.trim().to_ascii_lowercase();
        let count: u64 = count
            .trim()
            .parse()
            .map_err(|_| format!("'{part}': the count must be a whole number, e.g. gpu=2"))?;
        if named.insert(name.clone(), count).is_some() {
            return Err(format!("resource '{name}' is given twice"));
        }
    }
    validate_named(&named)?;
    Ok(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_sizes_parse_and_print_back() {
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert!(parse_cpu("0").is_err() && parse_cpu("-1").is_err() && parse_cpu("x").is_err());
        assert!(parse_cpu("0.0001").is_err());
        assert_eq!(format_cpu(1500), "1.5");
        assert_eq!(format_cpu(2000), "2");
        assert_eq!(format_cpu(125), "0.125");
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs").is_err() && parse_size("0").is_err());
        assert!(parse_size("2PiB").is_err() && parse_size("99999TiB").is_err());
        assert_eq!(format_size(512 << 20), "512MiB");
        assert_eq!(format_size(3 << 29), "1.5GiB");
        assert_eq!(format_size(1000), "1000B");
    }

    #[test]
    fn durations_parse_and_print_back() {
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert_eq!(parse_duration("10m"), Ok(600_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("45"), Ok(45_000));
        for bad in ["", "m", "10x", "0s", "31d", "1.5h", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(600_000), "10m");
        assert_eq!(format_duration(5_400_000), "1h30m");
        assert_eq!(format_duration(1_500), "1.5s");
        assert_eq!(format_duration(250), "250ms");
        assert_eq!(format_duration(3_600_000), "1h");
    }

    #[test]
    fn named_resources_are_checked() {
        let named = parse_named("gpu=2, FPGA=1").expect("valid");
        assert_eq!(named.get("gpu"), Some(&2));
        assert_eq!(named.get("fpga"), Some(&1));
        assert!(parse_named("gpu").is_err());
        assert!(parse_named("gpu=0").is_err());
        assert!(parse_named("gpu=1,gpu=2").is_err());
        assert!(parse_named("cpu=2").is_err());
        assert!(parse_named("1gpu=2").is_err());
        assert!(parse_named("g$u=2").is_err());
        assert!(parse_named("").expect("empty").is_empty());
    }

    #[test]
    fn fitting_is_checked_in_every_dimension_asked_for() {
        let capacity = Resources {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            named: [("gpu".to_string(), 2)].into(),
        };
        let mut used = Resources::default();
        let shard = Resources {
            cpu_millis: 1500,
            memory_bytes: 1 << 30,
            named: [("gpu".to_string(), 1)].into(),
        };
        assert!(shard.fits(&used, &capacity));
        used.add_times(&shard, 2);
        assert_eq!(shard.over(&used, &capacity), vec!["cpu", "gpu"]);
        used.subtract(&shard);
        assert!(shard.fits(&used, &capacity));
        let fpga = Resources {
            named: [("fpga".to_string(), 1)].into(),
            ..Resources::default()
        };
        assert_eq!(fpga.over(&used, &capacity), vec!["fpga"]);
        assert!(!fpga.fits(&used, &capacity));
        assert!(Resources::default().fits(&used, &capacity));
        assert_eq!(shard.to_string(), "cpu=1.5,memory=1GiB,gpu=1");
    }
}
