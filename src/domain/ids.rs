//! Identifiers. Job ids are allocated by apply from the log index of the submission, so
//! every replica derives the same id without coordination.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A job's id: `j-<n>` where `n` is the log index of the command that created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "j-{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a job id; job ids look like 'j-42'")]
pub struct ParseJobIdError(pub String);

impl FromStr for JobId {
    type Err = ParseJobIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix("j-")
            .and_then(|n| n.parse::<u64>().ok())
            .map(JobId)
            .ok_or_else(|| ParseJobIdError(s.to_string()))
    }
}

/// A TaskManager's id, chosen by the operator (`--id tm-1`).
pub type TaskManagerId = String;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_round_trips_through_text() {
        let id = JobId(42);
        assert_eq!(id.to_string(), "j-42");
        assert_eq!("j-42".parse::<JobId>(), Ok(id));
        assert!("42".parse::<JobId>().is_err());
        assert!("j-x".parse::<JobId>().is_err());
    }
}
