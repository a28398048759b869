//! The agent's work dir as each layout version left it (`tests/golden/workdir-v<N>/`): the
//! run journal, the incarnation record, run directories that the journal knows and one it
//! does not, and the marker files of agents from before the journal. Today's agent must open
//! every version and find every run as it was left; and writing the same runs today must
//! give the current version's journal and names.

use super::{golden_dir, samples};
use crate::taskmanager::identity;
use crate::taskmanager::journal::{JournalRecord, FILE_NAME};
use crate::taskmanager::workdir::{run_dir, RunRecord, WorkDir, WORKDIR_LAYOUT_VERSION};
use std::path::{Path, PathBuf};

/// Every committed work dir version, oldest first.
fn every_version() -> Vec<(u32, PathBuf)> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(golden_dir())
        .expect("tests/golden exists")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let version = name.strip_prefix("workdir-v")?.parse::<u32>().ok()?;
            Some((version, e.path()))
        })
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no golden work dir");
    found
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("a directory");
    for entry in std::fs::read_dir(from).expect("readable") {
        let entry = entry.expect("an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copied");
        }
    }
}

#[test]
fn work_dirs_of_every_version_open_with_every_run_as_left() {
    for (version, golden) in every_version() {
        let dir = tempfile::tempdir().expect("a temp dir");
        copy_tree(&golden, dir.path());
        let claimed = identity::claim(dir.path(), "golden").expect("the work dir is claimed");
        assert_eq!(claimed.successor_of, Some(4242), "work dir {version}");
        let work = WorkDir::open(dir.path()).expect("the work dir opens");
        let record = |job: &str, index: u32, epoch: u64| work.record(job, index, epoch);
        assert!(
            matches!(record("j-3", 0, 7), RunRecord::Ended(r) if r.exit_code == Some(0)),
            "work dir {version}"
        );
        assert!(matches!(record("j-3", 1, 7), RunRecord::Ended(r) if r.cannot_start));
        assert!(matches!(record("j-6", 0, 9), RunRecord::Ended(r) if r.over_limit));
        assert_eq!(record("j-6", 1, 9), RunRecord::Interrupted);
        // Agents from before the journal: marker files in the run's directory.
        assert!(matches!(record("j-9", 0, 2), RunRecord::Ended(r) if r.exit_code == Some(3)));
        assert_eq!(record("j-9", 1, 2), RunRecord::Interrupted);
        assert_eq!(record("j-9", 2, 2), RunRecord::NeverStarted);
        assert_eq!(
            work.leftovers(),
            vec![dir.path().join("j-4").join("shard-0.epoch-1")],
            "work dir {version}: the run the journal does not know"
        );
    }
}

#[tokio::test]
async fn todays_agent_writes_the_current_work_dir_layout() {
    let golden = golden_dir().join(format!("workdir-v{WORKDIR_LAYOUT_VERSION}"));
    assert!(
        golden.is_dir(),
        "no golden work dir {}: the layout is at version {WORKDIR_LAYOUT_VERSION}; make it \
         from an agent's work dir",
        golden.display()
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    let work = WorkDir::open(dir.path()).expect("opens");
    for record in samples::journal_records() {
        match record {
            JournalRecord::Started {
                job_id,
                index,
                epoch,
            } => work.mark_started(&job_id, index, epoch).await,
            JournalRecord::Ended {
                job_id,
                index,
                epoch,
                result,
            } => work.save_result(&job_id, index, epoch, &result).await,
            JournalRecord::EndedOverLimit {
                job_id,
                index,
                epoch,
                mut result,
            } => {
                result.over_limit = true;
                work.save_result(&job_id, index, epoch, &result).await
            }
        }
        .expect("recorded");
    }
    let written = std::fs::read(dir.path().join(FILE_NAME)).expect("the journal");
    let committed = std::fs::read(golden.join(FILE_NAME)).expect("the golden journal");
    // The journal may have zeros written ahead of its records (`zeroed_tail`).
    let same = written.len() >= committed.len()
        && written[..committed.len()] == committed[..]
        && crate::zeroed_tail::is_zeroed(&written[committed.len()..]);
    assert!(
        same,
        "the work dir's journal changed but WORKDIR_LAYOUT_VERSION is still \
         {WORKDIR_LAYOUT_VERSION}: bump it (and the journal's version) and commit a work dir \
         of the new version beside the old"
    );
    for (job, index, epoch) in [("j-3", 0, 7), ("j-6", 1, 9)] {
        let relative = run_dir(Path::new(""), job, index, epoch);
        assert!(
            golden.join(&relative).is_dir(),
            "run directories moved ({}) but WORKDIR_LAYOUT_VERSION is still \
             {WORKDIR_LAYOUT_VERSION}",
            relative.display()
        );
    }
    let identity = identity::claim(dir.path(), "today").expect("claimed");
    identity.record_admitted().expect("recorded");
    let text = std::fs::read_to_string(dir.path().join("incarnation")).expect("the record");
    let golden_text = std::fs::read_to_string(golden.join("incarnation")).expect("golden");
    assert_eq!(
        text.trim().parse::<u64>().is_ok(),
        golden_text.trim().parse::<u64>().is_ok(),
        "the incarnation record's form changed"
    );
}
