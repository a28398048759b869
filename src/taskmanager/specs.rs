//! The agent's cache of job specs (command, arguments, environment): fetched once per job
//! from the cluster when its first shard arrives here, shared by every run of that job, and
//! forgotten once no shard of the job is assigned here any more. Assignments carry only
//! ids, so a heartbeat reply stays small however large the jobs' specs are.

use crate::client::{Client, ClientError};
use crate::pb::api::task_managers_client::TaskManagersClient;
use crate::pb::api::{JobSpecReply, JobSpecRequest};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// Largest spec reply the agent accepts (the cluster's own ceiling is well below).
const MAX_SPEC_REPLY_BYTES: usize = 16 * 1024 * 1024;

type Cell = Arc<OnceCell<Arc<JobSpecReply>>>;

#[derive(Clone)]
pub struct SpecCache {
    client: Arc<Client>,
    cells: Arc<Mutex<HashMap<String, Cell>>>,
}

impl SpecCache {
    pub fn new(client: Arc<Client>) -> Self {
        SpecCache {
            client,
            cells: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn cell(&self, job_id: &str) -> Cell {
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        cells.entry(job_id.to_string()).or_default().clone()
    }

    /// The job's spec: from the cache, or fetched once however many runs ask at a time.
    pub async fn get(&self, job_id: &str) -> Result<Arc<JobSpecReply>, ClientError> {
        let cell = self.cell(job_id);
        let spec = cell
            .get_or_try_init(|| async {
                let request = JobSpecRequest {
                    job_id: job_id.to_string(),
                };
                let reply = self
                    .client
                    .call(|ch| {
                        let r = request.clone();
                        async move {
                            TaskManagersClient::new(ch)
                                .max_decoding_message_size(MAX_SPEC_REPLY_BYTES)
                                .get_job_spec(r)
                                .await
                        }
                    })
                    .await?;
                Ok::<_, ClientError>(Arc::new(reply))
            })
            .await?;
        Ok(spec.clone())
    }

    /// Forget the specs of jobs with no shard here any more.
    pub fn retain(&self, jobs: &HashSet<&str>) {
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        cells.retain(|job, _| jobs.contains(job.as_str()));
    }
}
