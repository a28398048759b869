//! The client's calls of the `Periodic` service (`dispatcher cron ...`), led to the leader
//! like every other call.

use super::{new_idempotency_key, Client, ClientChannel, ClientError};
use crate::pb::api::periodic_client::PeriodicClient;
use crate::pb::api::*;

fn periodic(channel: ClientChannel) -> PeriodicClient<ClientChannel> {
    PeriodicClient::new(channel)
}

impl Client {
    /// Add a schedule, or give one of that name a new definition.
    pub async fn add_schedule(&self, req: AddScheduleRequest) -> Result<ScheduleInfo, ClientError> {
        self.call(|ch| {
            let req = req.clone();
            async move { periodic(ch).add_schedule(req).await }
        })
        .await
    }

    pub async fn list_schedules(&self) -> Result<Vec<ScheduleInfo>, ClientError> {
        let reply = self
            .call(|ch| async move { periodic(ch).list_schedules(ListSchedulesRequest {}).await })
            .await?;
        Ok(reply.schedules)
    }

    pub async fn get_schedule(
        &self,
        name: &str,
        tenant: &str,
    ) -> Result<ScheduleInfo, ClientError> {
        let req = ScheduleRequest {
            name: name.to_string(),
            tenant: tenant.to_string(),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { periodic(ch).get_schedule(req).await }
        })
        .await
    }

    pub async fn suspend_schedule(
        &self,
        name: &str,
        tenant: &str,
        suspended: bool,
    ) -> Result<ScheduleInfo, ClientError> {
        let req = SuspendScheduleRequest {
            name: name.to_string(),
            tenant: tenant.to_string(),
            suspended,
        };
        self.call(|ch| {
            let req = req.clone();
            async move { periodic(ch).suspend_schedule(req).await }
        })
        .await
    }

    pub async fn delete_schedule(
        &self,
        name: &str,
        tenant: &str,
    ) -> Result<DeleteScheduleReply, ClientError> {
        let req = ScheduleRequest {
            name: name.to_string(),
            tenant: tenant.to_string(),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { periodic(ch).delete_schedule(req).await }
        })
        .await
    }

    /// Fire a schedule now. One key for every retry of this call, so a retry whose first
    /// try did land makes no second job.
    pub async fn run_schedule(&self, name: &str, tenant: &str) -> Result<SubmitReply, ClientError> {
        let req = RunScheduleRequest {
            name: name.to_string(),
            tenant: tenant.to_string(),
            request_key: new_idempotency_key(),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { periodic(ch).run_schedule(req).await }
        })
        .await
    }
}
