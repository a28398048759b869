//! Input checks shared by the API edge (to refuse bad input with a clear message before it
//! reaches the log, against the configured `InputLimits`) and apply (so that no command,
//! however it got there, breaks the state: against `InputLimits::CEILING`).

use super::command::Rejection;
use crate::domain::{
    InputLimits, JobScheduling, JobSpec, Labels, DEFAULT_PRIORITY, MAX_AFTER, MAX_ATTEMPTS,
    MAX_PRIORITY, MAX_SLOTS_PER_SHARD, MAX_TASKMANAGER_SLOTS, MAX_TENANT_BYTES, MAX_WEIGHT,
};

fn invalid(msg: impl Into<String>) -> Rejection {
    Rejection::Invalid(msg.into())
}

/// "the limit is N (limits.KEY)": where a refusal says which setting raises it.
fn limit(value: impl std::fmt::Display, key: &str) -> String {
    format!("the limit is {value} (limits.{key} in the replica's config file)")
}

/// A name or id: non-empty, not too long, printable without spaces.
pub fn validate_name(what: &str, value: &str) -> Result<(), Rejection> {
    validate_name_within(what, value, &InputLimits::CEILING)
}

/// `validate_name` against given limits.
pub fn validate_name_within(
    what: &str,
    value: &str,
    limits: &InputLimits,
) -> Result<(), Rejection> {
    if value.is_empty() {
        return Err(invalid(format!("{what} must not be empty")));
    }
    if value.len() > limits.name_bytes {
        return Err(invalid(format!(
            "{what} is {} bytes long; {}",
            value.len(),
            limit(limits.name_bytes, "name_bytes")
        )));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(format!(
            "{what} '{value}' contains whitespace or control characters"
        )));
    }
    Ok(())
}

pub fn validate_labels(labels: &Labels, limits: &InputLimits) -> Result<(), Rejection> {
    if labels.len() > limits.labels {
        return Err(invalid(format!(
            "{} labels given; {}",
            labels.len(),
            limit(limits.labels, "labels")
        )));
    }
    for (k, v) in labels {
        validate_name_within("label key", k, limits)?;
        if v.len() > limits.name_bytes {
            return Err(invalid(format!(
                "label '{k}' value is {} bytes long; {}",
                v.len(),
                limit(limits.name_bytes, "name_bytes")
            )));
        }
    }
    Ok(())
}

/// A TaskManager registration: an id, a host:port address and at least one slot. Port 0
/// is allowed: the agent takes no inbound connections (it pulls work with heartbeats).
pub fn validate_registration(
    id: &str,
    addr: &str,
    slots: u32,
    labels: &Labels,
    limits: &InputLimits,
) -> Result<(), Rejection> {
    validate_name_within("TaskManager id", id, limits)?;
    // A host name and a port.
    if addr.len() > limits.name_bytes + 6 {
        return Err(invalid(format!(
            "address is {} bytes long; {}",
            addr.len(),
            limit(limits.name_bytes + 6, "name_bytes")
        )));
    }
    match addr.rsplit_once(':') {
        Some((host, "0")) => validate_address(&format!("{host}:1"))?,
        _ => validate_address(addr)?,
    }
    if slots == 0 {
        return Err(invalid("slots must be at least 1"));
    }
    if slots > MAX_TASKMANAGER_SLOTS {
        return Err(invalid(format!(
            "slots is {slots}; the limit is {MAX_TASKMANAGER_SLOTS}"
        )));
    }
    validate_labels(labels, limits)
}

/// `host:port` with a non-empty host and a port in 1..=65535.
pub fn validate_address(addr: &str) -> Result<(), Rejection> {
    let bad = || {
        invalid(format!(
            "address '{addr}' is not host:port (for example 127.0.0.1:7001)"
        ))
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad()),
    }
}

/// A job spec the dispatcher can run.
pub fn validate_spec(name: &str, spec: &JobSpec, limits: &InputLimits) -> Result<(), Rejection> {
    validate_name_within("job name", name, limits)?;
    if spec.command.trim().is_empty() {
        return Err(invalid(
            "the command is empty; give it after `--`, e.g. `-- /bin/echo hi`",
        ));
    }
    if spec.shard_count == 0 {
        return Err(invalid("a job needs at least 1 shard"));
    }
    if spec.shard_count > limits.shards_per_job {
        return Err(Rejection::JobTooLarge(format!(
            "{} shards requested; {}",
            spec.shard_count,
            limit(limits.shards_per_job, "shards_per_job")
        )));
    }
    if spec.slots_per_shard == 0 {
        return Err(invalid("slots per shard must be at least 1"));
    }
    if spec.slots_per_shard > MAX_SLOTS_PER_SHARD {
        return Err(Rejection::JobTooLarge(format!(
            "{} slots per shard requested; the limit is {MAX_SLOTS_PER_SHARD}",
            spec.slots_per_shard
        )));
    }
    if spec.max_attempts == 0 || spec.max_attempts > MAX_ATTEMPTS {
        return Err(invalid(format!(
            "max attempts must be between 1 and {MAX_ATTEMPTS}"
        )));
    }
    validate_labels(&spec.selector, limits)?;
    let size = spec.encoded_len_estimate();
    if size > limits.spec_bytes {
        return Err(Rejection::JobTooLarge(format!(
            "the job spec (command, args, env, labels) is {size} bytes; {}; pass large inputs \
             through files",
            limit(format!("{} bytes", limits.spec_bytes), "spec_bytes")
        )));
    }
    Ok(())
}

/// A tenant's name: a name of at most `MAX_TENANT_BYTES`.
pub fn validate_tenant(tenant: &str) -> Result<(), Rejection> {
    validate_name("tenant", tenant)?;
    if tenant.len() > MAX_TENANT_BYTES {
        return Err(invalid(format!(
            "tenant '{tenant}' is {} bytes long; the limit is {MAX_TENANT_BYTES}",
            tenant.len()
        )));
    }
    Ok(())
}

/// A tenant's highest priority (`quota set --max-priority`).
pub fn validate_max_priority(max: u32) -> Result<(), Rejection> {
    if max > MAX_PRIORITY {
        return Err(invalid(format!(
            "--max-priority {max} is out of range: give 0 to {MAX_PRIORITY}"
        )));
    }
    Ok(())
}

/// A job's scheduling options, on their own (apply checks that the `--after` jobs exist).
pub fn validate_options(options: &JobScheduling) -> Result<(), Rejection> {
    if options.priority > MAX_PRIORITY {
        return Err(invalid(format!(
            "priority {} is out of range: give 0 to {MAX_PRIORITY} (default {DEFAULT_PRIORITY})",
            options.priority
        )));
    }
    if options.after.len() > MAX_AFTER {
        return Err(invalid(format!(
            "--after names {} jobs; the limit is {MAX_AFTER}",
            options.after.len()
        )));
    }
    if options.after.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err(invalid("--after must name each job once, in order"));
    }
    validate_tenant(&options.tenant)
}

/// A quota change: a weight of 1 to `MAX_WEIGHT`.
pub fn validate_weight(weight: u32) -> Result<(), Rejection> {
    if weight == 0 || weight > MAX_WEIGHT {
        return Err(invalid(format!(
            "weight {weight} is out of range: give 1 to {MAX_WEIGHT} (default 1)"
        )));
    }
    Ok(())
}

/// A resource pin within the ceilings every declaration is held to.
pub fn validate_resource_pin(pin: &crate::domain::ResourcePin) -> Result<(), Rejection> {
    if pin.cpu_millis == Some(0) || pin.memory_bytes == Some(0) {
        return Err(Rejection::Invalid(
            "a pin of no CPU or no memory leaves the agent nothing to offer; give at least \
             0.001 CPUs and 1 byte, or leave --cpus and --memory out"
                .into(),
        ));
    }
    let whole = crate::domain::Resources {
        cpu_millis: pin.cpu_millis.unwrap_or(0),
        memory_bytes: pin.memory_bytes.unwrap_or(0),
        named: pin.named.clone(),
    };
    crate::domain::validate_resources(&whole).map_err(Rejection::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(validate_address("127.0.0.1:7001").is_ok());
        assert!(validate_address("host.example:1").is_ok());
        assert!(validate_address("[::1]:80").is_ok());
        for bad in [
            "",
            "nohost",
            ":80",
            "h:0",
            "h:99999",
            "h:x",
            "a b:1",
            "http://h:1",
        ] {
            assert!(validate_address(bad).is_err(), "{bad} accepted");
        }
    }
}
