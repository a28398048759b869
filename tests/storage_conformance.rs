//! openraft's storage conformance suite, run against the write-ahead log store and the
//! snapshotting state machine exactly as a replica opens them.

use dispatcher::raft::snapshot_store::SnapshotStore;
use dispatcher::raft::{StateMachineStore, TypeConfig, WalLogStore};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;

struct WalStoreBuilder;

impl StoreBuilder<TypeConfig, WalLogStore, StateMachineStore, tempfile::TempDir>
    for WalStoreBuilder
{
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, WalLogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = WalLogStore::open(&dir.path().join("raft-log")).expect("open log store");
        let snapshots =
            SnapshotStore::open(dir.path().join("snapshots")).expect("open snapshot dir");
        let metrics = std::sync::Arc::new(dispatcher::metrics::Metrics::new(
            log.sync_stats().fsync_seconds.clone(),
        ));
        let sm = StateMachineStore::open(snapshots, metrics).expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_store_passes_openraft_conformance_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(WalStoreBuilder).await?;
    Ok(())
}
