//! openraft's storage conformance suite, run against the sled log store and the
//! snapshotting state machine exactly as a replica opens them.

use dispatcher::raft::snapshot_store::SnapshotStore;
use dispatcher::raft::{SledLogStore, StateMachineStore, TypeConfig};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;

struct SledStoreBuilder;

impl StoreBuilder<TypeConfig, SledLogStore, StateMachineStore, tempfile::TempDir>
    for SledStoreBuilder
{
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, SledLogStore, StateMachineStore), StorageError<TypeConfig>>
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = sled::Config::new()
            .path(dir.path().join("raft.sled"))
            .open()
            .expect("open sled");
        let log = SledLogStore::open(db).expect("open log store");
        let snapshots =
            SnapshotStore::open(dir.path().join("snapshots")).expect("open snapshot dir");
        let sm = StateMachineStore::open(snapshots).expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_store_passes_openraft_conformance_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(SledStoreBuilder).await?;
    Ok(())
}
