//! Entry point for the API fuzz target (`tests/fuzz`): every request message a replica
//! decodes, with the validation and conversion the services apply. Must never panic.

use crate::domain::{InputLimits, JobId, JobSpec};
use crate::fsm::{validate_name, validate_registration, validate_spec};
use crate::pb::api;
use prost::Message;

pub fn decode_api_requests(data: &[u8]) {
    if let Ok(req) = api::SubmitRequest::decode(data) {
        if let Some(spec) = req.spec {
            let spec: JobSpec = spec.into();
            let _ = validate_spec(&req.name, &spec, &InputLimits::DEFAULT);
        }
        let _ = validate_name("idempotency key", &req.idempotency_key);
    }
    if let Ok(req) = api::JobRequest::decode(data) {
        let _ = req.job_id.parse::<JobId>();
    }
    if let Ok(req) = api::RegisterTaskManagerRequest::decode(data) {
        let labels = req.labels.into_iter().collect();
        let _ = validate_registration(
            &req.id,
            &req.addr,
            req.slots,
            &labels,
            &InputLimits::DEFAULT,
        );
    }
    if let Ok(req) = api::HeartbeatRequest::decode(data) {
        let _ = validate_name("TaskManager id", &req.taskmanager_id);
    }
    if let Ok(req) = api::ShardReport::decode(data) {
        let _ = req.job_id.parse::<JobId>();
        let _ = api::ReportKind::try_from(req.kind);
    }
    let _ = api::DrainTaskManagerRequest::decode(data);
    let _ = api::AddMemberRequest::decode(data).map(|r| crate::fsm::validate_address(&r.addr));
    let _ = api::ClusterStatusRequest::decode(data);
    let _ = api::JobSpecRequest::decode(data).map(|r| r.job_id.parse::<JobId>());
    let _ = api::RejoinRequest::decode(data);
}

#[cfg(test)]
mod tests {
    #[test]
    fn api_decoders_survive_garbage() {
        for len in 0..128u8 {
            let input: Vec<u8> = (0..len)
                .map(|i| i.wrapping_mul(91).wrapping_add(len))
                .collect();
            super::decode_api_requests(&input);
        }
    }
}
