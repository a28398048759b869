use super::*;
use openraft::testing::{blank_ent, log_id};
use openraft::type_config::TypeConfigExt;
use std::sync::atomic::Ordering;

type C = TypeConfig;

fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range.map(|i| blank_ent::<C>(1, 1, i)).collect()
}

/// Append and wait for the callback, as openraft does before it counts the entries.
async fn append_durably(store: &mut WalLogStore, batch: Vec<Entry>) {
    let (tx, rx) = C::oneshot();
    store
        .append(batch, IOFlushed::signal(tx))
        .await
        .expect("append");
    rx.await.expect("callback fired").expect("durable");
}

/// The newest segment file, and where its records end: the zeros written ahead of them
/// begin there.
fn newest_segment_and_end(dir: &std::path::Path) -> (std::path::PathBuf, usize) {
    let (_, path) = segment::list(dir).expect("list").pop().expect("a segment");
    let bytes = std::fs::read(&path).expect("read");
    let mut end = 0;
    while let record::Frame::Record(_, used) = record::decode_frame(&bytes[end..]) {
        end += used;
    }
    assert!(end < bytes.len() && crate::zeroed_tail::is_zeroed(&bytes[end..]));
    (path, end)
}

/// Write `bytes` into the segment file at `path` from `offset` on.
fn write_at(path: &std::path::Path, offset: usize, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    std::os::unix::fs::FileExt::write_all_at(&file, bytes, offset as u64).expect("write");
}

async fn indexes(store: &mut WalLogStore) -> Vec<u64> {
    store
        .try_get_log_entries(..)
        .await
        .expect("read")
        .iter()
        .map(|e| e.log_id.index())
        .collect()
}

#[tokio::test]
async fn everything_comes_back_after_a_reopen() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let mut store = WalLogStore::open(dir.path()).expect("open");
        append_durably(&mut store, entries(1..=10)).await;
        store
            .truncate_after(Some(log_id::<C>(1, 1, 8)))
            .await
            .expect("truncate");
        append_durably(&mut store, vec![blank_ent::<C>(2, 1, 9)]).await;
        store.purge(log_id::<C>(1, 1, 3)).await.expect("purge");
        store
            .save_committed(Some(log_id::<C>(1, 1, 5)))
            .await
            .expect("committed");
        store.save_vote(&Vote::new(2, 1)).await.expect("vote");
    }
    let mut store = WalLogStore::open(dir.path()).expect("reopen");
    assert_eq!(indexes(&mut store).await, vec![4, 5, 6, 7, 8, 9]);
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id::<C>(1, 1, 3)));
    assert_eq!(state.last_log_id, Some(log_id::<C>(2, 1, 9)));
    assert_eq!(
        store.read_vote().await.expect("vote"),
        Some(Vote::new(2, 1))
    );
    assert_eq!(
        store.read_committed().await.expect("committed"),
        Some(log_id::<C>(1, 1, 5))
    );
}

#[tokio::test]
async fn a_torn_write_at_the_end_is_cut_off_and_the_log_goes_on() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let mut store = WalLogStore::open(dir.path()).expect("open");
        append_durably(&mut store, entries(1..=5)).await;
    }
    let (path, end) = newest_segment_and_end(dir.path());
    // The crash cut the last record short: its last bytes never reached the disk.
    write_at(&path, end - 3, &[0, 0, 0]);
    let mut store = WalLogStore::open(dir.path()).expect("reopen");
    assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4]);
    append_durably(&mut store, entries(5..=6)).await;
    drop(store);
    let mut store = WalLogStore::open(dir.path()).expect("reopen again");
    assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn an_intact_record_from_a_newer_release_refuses_to_open_and_is_kept() {
    // Once, any record that did not decode counted as torn: at the end of the newest
    // segment it was cut off, and a replica started on an older release lost entries a
    // newer one had written and acknowledged.
    let dir = tempfile::tempdir().expect("dir");
    {
        let mut store = WalLogStore::open(dir.path()).expect("open");
        append_durably(&mut store, entries(1..=5)).await;
    }
    let (path, end) = newest_segment_and_end(dir.path());
    // A record kind this build does not know (its checksum whole).
    let payload = [9u8, 1, 2, 3];
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    write_at(&path, end, &frame);
    let written = std::fs::read(&path).expect("read");
    let refused = WalLogStore::open(dir.path()).err().expect("refused");
    assert!(refused.to_string().contains("newer release"), "{refused}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        written,
        "nothing was cut off"
    );
}

#[tokio::test]
async fn segments_rotate_and_purged_ones_are_deleted() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let mut store = WalLogStore::open_with_segment_size(dir.path(), 256).expect("open");
        for i in 1..=200 {
            append_durably(&mut store, entries(i..=i)).await;
        }
        store.save_vote(&Vote::new(4, 2)).await.expect("vote");
        let before = segment::list(dir.path()).expect("list").len();
        assert!(before > 5, "only {before} segments");
        store.purge(log_id::<C>(1, 1, 150)).await.expect("purge");
        let after = segment::list(dir.path()).expect("list").len();
        assert!(after < before, "{after} segments left of {before}");
    }
    let mut store = WalLogStore::open_with_segment_size(dir.path(), 256).expect("reopen");
    assert_eq!(indexes(&mut store).await, (151..=200).collect::<Vec<_>>());
    assert_eq!(
        store.read_vote().await.expect("vote"),
        Some(Vote::new(4, 2))
    );
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id.map(|l| l.index()), Some(150));
}

#[tokio::test]
async fn damage_before_the_newest_segment_refuses_to_open() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let mut store = WalLogStore::open_with_segment_size(dir.path(), 128).expect("open");
        for i in 1..=50 {
            append_durably(&mut store, entries(i..=i)).await;
        }
    }
    let segments = segment::list(dir.path()).expect("list");
    assert!(segments.len() > 2);
    let (_, oldest) = &segments[0];
    let mut bytes = std::fs::read(oldest).expect("read");
    let middle = bytes.len() - 10;
    bytes[middle] ^= 0xff;
    std::fs::write(oldest, bytes).expect("write");
    let err = WalLogStore::open_with_segment_size(dir.path(), 128)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("damaged"), "{err}");
}

/// The durability contract, counted in the storage layer: no append is acknowledged before
/// an fdatasync that followed it, and one sync may serve many appends (group commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_append_is_synced_first() {
    let dir = tempfile::tempdir().expect("dir");
    let mut store = WalLogStore::open(dir.path()).expect("open");
    let stats = store.sync_stats();

    // One at a time: nothing to group, one sync per append.
    for i in 1..=20 {
        let syncs_before = stats.syncs.load(Ordering::SeqCst);
        append_durably(&mut store, entries(i..=i)).await;
        assert!(
            stats.syncs.load(Ordering::SeqCst) > syncs_before,
            "append {i} was acknowledged without a sync"
        );
    }
    assert_eq!(stats.appends_acknowledged.load(Ordering::SeqCst), 20);

    // Pipelined, as openraft issues them: callbacks wait for syncs, which may be shared.
    let syncs_before = stats.syncs.load(Ordering::SeqCst);
    let mut waiting = Vec::new();
    for i in 21..=220 {
        let (tx, rx) = C::oneshot();
        store
            .append(entries(i..=i), IOFlushed::signal(tx))
            .await
            .expect("append");
        waiting.push(rx);
    }
    for rx in waiting {
        rx.await.expect("callback").expect("durable");
    }
    let syncs = stats.syncs.load(Ordering::SeqCst) - syncs_before;
    assert_eq!(stats.appends_acknowledged.load(Ordering::SeqCst), 220);
    assert!((1..=200).contains(&syncs), "{syncs} syncs for 200 appends");
    eprintln!("200 pipelined appends took {syncs} syncs");
}

#[tokio::test]
async fn a_new_segment_then_a_purge_leaves_no_record_written_before() {
    let dir = tempfile::tempdir().expect("dir");
    let mut store = WalLogStore::open(dir.path()).expect("open");
    append_durably(&mut store, entries(1..=10)).await;
    store.save_vote(&Vote::new(4, 2)).await.expect("vote");
    let upto = store.start_new_segment().expect("new segment");
    assert_eq!(upto, Some(10));
    assert_eq!(store.older_segments(), 1);
    // Nothing in the new segment yet: a second call starts none.
    assert_eq!(store.start_new_segment().expect("again"), Some(10));
    assert_eq!(store.older_segments(), 1);
    append_durably(&mut store, entries(11..=12)).await;
    store.purge(log_id::<C>(1, 1, 10)).await.expect("purge");
    assert_eq!(store.older_segments(), 0);
    assert_eq!(segment::list(dir.path()).expect("list").len(), 1);
    drop(store);
    let mut store = WalLogStore::open(dir.path()).expect("reopen");
    assert_eq!(indexes(&mut store).await, vec![11, 12]);
    assert_eq!(
        store.read_vote().await.expect("vote"),
        Some(Vote::new(4, 2))
    );
}

#[tokio::test]
async fn an_entry_of_a_command_kind_this_release_does_not_know_is_named() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let mut store = WalLogStore::open(dir.path()).expect("open");
        append_durably(&mut store, entries(1..=5)).await;
    }
    let (path, end) = newest_segment_and_end(dir.path());
    // What a release with more kinds writes: Record::Entry, a log id, EntryPayload::Normal,
    // then command kind 40 and its fields.
    let newer = (
        0u32,
        log_id::<C>(1, 1, 6),
        1u32,
        40u32,
        "fields".to_string(),
    );
    let mut frame = Vec::new();
    crate::framing::encode_frame(&newer, record::MAX_RECORD_BYTES, &mut frame).expect("frame");
    write_at(&path, end, &frame);
    let refused = WalLogStore::open(dir.path()).err().expect("refused");
    let said = refused.to_string();
    assert!(
        said.contains("command kind 40") && said.contains("cluster versions up to"),
        "{said}"
    );
}

/// Reads served from the newest entries kept in memory give what the files give, across an
/// overwrite (entries of a new term replacing a deposed leader's) and a purge.
#[tokio::test]
async fn the_newest_entries_read_from_memory_match_the_files() {
    let dir = tempfile::tempdir().expect("dir");
    let ids = |entries: Vec<Entry>| -> Vec<(u64, u64)> {
        entries
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index()))
            .collect()
    };
    let from_memory = {
        let mut store = WalLogStore::open(dir.path()).expect("open");
        append_durably(&mut store, entries(1..=10)).await;
        // A new leader overwrites 6.. with entries of term 2, then more follow.
        let newer: Vec<Entry> = (6..=12).map(|i| blank_ent::<C>(2, 2, i)).collect();
        append_durably(&mut store, newer).await;
        store.purge(log_id::<C>(1, 1, 3)).await.expect("purge");
        let read = store.try_get_log_entries(..).await.expect("read");
        let middle = store.try_get_log_entries(5..=8).await.expect("read");
        assert_eq!(ids(middle), vec![(1, 5), (2, 6), (2, 7), (2, 8)]);
        // A range that ends before it starts (openraft asks for such) is empty, not a panic.
        #[allow(clippy::reversed_empty_ranges)]
        let none = store.try_get_log_entries(9..5).await.expect("read");
        assert!(none.is_empty());
        ids(read)
    };
    let mut reopened = WalLogStore::open(dir.path()).expect("reopen");
    let from_files = ids(reopened.try_get_log_entries(..).await.expect("read"));
    assert_eq!(from_memory, from_files);
    assert_eq!(from_files.first(), Some(&(1, 4)));
    assert_eq!(from_files.last(), Some(&(2, 12)));
}
