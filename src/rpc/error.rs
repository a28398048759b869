//! API errors and their one mapping to gRPC status codes.
//!
//! A user mistake maps to `INVALID_ARGUMENT`, `NOT_FOUND` or `FAILED_PRECONDITION` with a
//! message that says what to do. "Not the leader" maps to `UNAVAILABLE` with the leader's id
//! and address in response metadata, which the client library follows.

use crate::fsm::Rejection;
use tonic::{Code, Status};

pub const LEADER_ID_HEADER: &str = "x-leader-id";
pub const LEADER_ADDR_HEADER: &str = "x-leader-addr";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("this replica is not the leader{}", leader_hint(.leader_id, .leader_addr))]
    NotLeader {
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },
    #[error("{0}")]
    Rejected(#[from] Rejection),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// No token, or one this cluster does not know.
    #[error("{0}")]
    Unauthenticated(String),
    /// An identity or role that may not make this call.
    #[error("{0}")]
    PermissionDenied(String),
    /// A position (an event index) no longer held.
    #[error("{0}")]
    OutOfRange(String),
    /// The outcome of a write is unknown (its entry was discarded by a leader change); a
    /// retry with the same idempotency key is safe.
    #[error("outcome unknown, retry: {0}")]
    OutcomeUnknown(String),
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// A caller over its budget (reports per second): retry later.
    #[error("{0}")]
    Exhausted(String),
    #[error("internal error: {0}")]
    Internal(String),
}

fn leader_hint(id: &Option<u64>, addr: &Option<String>) -> String {
    match (id, addr) {
        (Some(id), Some(addr)) => format!("; the leader is replica {id} at {addr}"),
        (Some(id), None) => format!("; the leader is replica {id}"),
        _ => "; no leader is known yet, retry shortly".to_string(),
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        let message = err.to_string();
        match err {
            ApiError::NotLeader {
                leader_id,
                leader_addr,
            } => {
                let mut status = Status::unavailable(message);
                if let Some(id) = leader_id {
                    if let Ok(v) = id.to_string().parse() {
                        status.metadata_mut().insert(LEADER_ID_HEADER, v);
                    }
                }
                if let Some(addr) = leader_addr {
                    if let Ok(v) = addr.parse() {
                        status.metadata_mut().insert(LEADER_ADDR_HEADER, v);
                    }
                }
                status
            }
            ApiError::Rejected(rejection) => {
                let code = match rejection {
                    Rejection::UnknownJob(_)
                    | Rejection::UnknownTaskManager(_)
                    | Rejection::UnknownDependency(_)
                    | Rejection::UnknownSchedule { .. } => Code::NotFound,
                    Rejection::StaleCronTurn { .. } | Rejection::CronStillRunning { .. } => {
                        Code::FailedPrecondition
                    }
                    Rejection::TooManySchedules(_) => Code::ResourceExhausted,
                    Rejection::JobAlreadyEnded { .. } => Code::FailedPrecondition,
                    Rejection::JobTooLarge(_) | Rejection::Invalid(_) => Code::InvalidArgument,
                    Rejection::UnknownShard { .. } => Code::NotFound,
                    Rejection::StaleEpoch { .. } | Rejection::StaleRegistration { .. } => {
                        Code::FailedPrecondition
                    }
                    Rejection::Overloaded(_) => Code::ResourceExhausted,
                    Rejection::IdInUse { .. } | Rejection::TokenExists(_) => Code::AlreadyExists,
                    Rejection::UnknownToken(_) => Code::NotFound,
                    Rejection::LastAdminToken(_) | Rejection::NeedsClusterVersion { .. } => {
                        Code::FailedPrecondition
                    }
                    Rejection::NotOwner(_) | Rejection::AboveCeiling { .. } => {
                        Code::PermissionDenied
                    }
                };
                Status::new(code, message)
            }
            ApiError::InvalidArgument(_) => Status::invalid_argument(message),
            ApiError::NotFound(_) => Status::not_found(message),
            ApiError::FailedPrecondition(_) => Status::failed_precondition(message),
            ApiError::AlreadyExists(_) => Status::already_exists(message),
            ApiError::Unauthenticated(_) => Status::unauthenticated(message),
            ApiError::PermissionDenied(_) => Status::permission_denied(message),
            ApiError::OutOfRange(_) => Status::out_of_range(message),
            ApiError::OutcomeUnknown(_) | ApiError::Unavailable(_) => Status::unavailable(message),
            ApiError::Exhausted(_) => Status::resource_exhausted(message),
            ApiError::Internal(_) => Status::internal(message),
        }
    }
}
