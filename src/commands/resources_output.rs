//! How resources print: one JSON map per amount (`{"cpu": 1.5, "memory": 536870912,
//! "slots": 4, "gpu": 2}`, CPU in cores, memory in bytes) and one short text
//! (`cpu=1.5,memory=512MiB,gpu=2`).

use crate::domain::{format_cpu, format_size, Resources};
use crate::pb::api::ResourceAmounts;
use serde_json::{json, Map, Value};

/// The JSON map of an amount, with `slots` when given. CPU and memory appear when set.
pub fn json_map(amounts: Option<&ResourceAmounts>, slots: Option<u32>) -> Value {
    let mut map = Map::new();
    if let Some(a) = amounts {
        if a.cpu_millis > 0 {
            map.insert("cpu".into(), json!(a.cpu_millis as f64 / 1000.0));
        }
        if a.memory_bytes > 0 {
            map.insert("memory".into(), json!(a.memory_bytes));
        }
        let mut named: Vec<(&String, &u64)> = a.named.iter().collect();
        named.sort();
        for (name, count) in named {
            map.insert(name.clone(), json!(count));
        }
    }
    if let Some(slots) = slots {
        map.insert("slots".into(), json!(slots));
    }
    Value::Object(map)
}

/// `used/capacity` of one dimension for a table cell (`-` when the agent declared none).
pub fn used_of(used: Option<&ResourceAmounts>, capacity: Option<&ResourceAmounts>) -> [String; 3] {
    let Some(capacity) = capacity else {
        return ["-".into(), "-".into(), "-".into()];
    };
    let used = used.map(Resources::from).unwrap_or_default();
    let capacity = Resources::from(capacity);
    let named: Vec<String> = capacity
        .named
        .iter()
        .map(|(name, count)| {
            format!(
                "{name} {}/{count}",
                used.named.get(name).copied().unwrap_or(0)
            )
        })
        .collect();
    [
        format!(
            "{}/{}",
            format_cpu(used.cpu_millis),
            format_cpu(capacity.cpu_millis)
        ),
        format!(
            "{}/{}",
            format_size(used.memory_bytes),
            format_size(capacity.memory_bytes)
        ),
        if named.is_empty() {
            "-".into()
        } else {
            named.join(",")
        },
    ]
}
