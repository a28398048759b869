//! How resources print as text: one short form (`cpu=1.5,memory=512MiB,gpu=2`) and table
//! cells of use against capacity. (Their JSON is `rpc::resources_json`.)

use crate::domain::{format_cpu, format_size, Resources};
use crate::pb::api::ResourceAmounts;

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
