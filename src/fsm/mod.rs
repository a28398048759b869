//! The replicated commands and their deterministic apply.
//!
//! `apply` is a pure function of (state, log index, command): no clock (the leader stamps
//! time into commands), no randomness, no I/O. Business rejections — an unknown TaskManager,
//! a stale placement, a job that is too large — are ordinary `Response`s and leave the state
//! untouched; they are never storage errors. This module imports no tokio, tonic, openraft
//! or sled.

mod apply;
mod command;
pub mod dispatch;
pub mod events;
mod kinds;
mod validate;

pub use apply::{
    apply, check_admission, check_report, gang_is_split, gang_too_large, needs_above,
    validate_token_name,
};
pub use command::{
    Command, CronTurn, OutputReport, Placement, PlacementOutcome, Rejection, Report,
    ResourceLimits, Response, ShardOutcome, SlotLimit,
};
pub use kinds::{COMMAND_KINDS, KIND_CLUSTER_VERSIONS, KIND_NAMES};
pub use validate::{
    validate_address, validate_labels, validate_max_priority, validate_name, validate_name_within,
    validate_options, validate_registration, validate_resource_pin, validate_spec, validate_tenant,
    validate_weight,
};
