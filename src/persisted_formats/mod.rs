//! Golden files of every format the dispatcher persists, and the tests that hold them:
//! today's build reads every committed version of each format, and encodes a fixed sample
//! to exactly the committed file of the format's current version. So a change to a format
//! that leaves its version as it was fails here, and an older version that today's build can
//! no longer read fails here too.
//!
//! | format | what | version constant | golden file |
//! |---|---|---|---|
//! | snapshot | `ClusterState` as `encode_state` writes it (format 10 at cluster version 1) | `SNAPSHOT_FORMAT_VERSION` | `snapshot-v<N>.bin` |
//! | log | write-ahead log records: votes, purges, entries of every command kind | `LOG_FORMAT_VERSION` | `log-v<N>.bin` |
//! | journal | the agent's run journal | `JOURNAL_FORMAT_VERSION` | `journal-v<N>.bin` |
//! | work dir | the agent's work dir: journal, incarnation, run directories, legacy markers | `WORKDIR_LAYOUT_VERSION` | `workdir-v<N>/` |
//!
//! The files live in `tests/golden/`. A new version: bump the constant, make the older
//! version readable, and write the new file with
//! `DISPATCHER_BLESS=1 cargo test --lib persisted_formats` (it writes only missing files;
//! a committed file is never rewritten).

mod samples;
mod workdir;

use crate::domain::{ClusterState, ClusterVersion};
use crate::fsm::COMMAND_KINDS;
use crate::raft::snapshot_store::{decode_state, encode_state, SNAPSHOT_FORMAT_VERSION};
use crate::raft::wal::record::{decode_frame, encode_frame, Frame, LOG_FORMAT_VERSION};
use crate::taskmanager::journal::{self, JOURNAL_FORMAT_VERSION};
use crate::taskmanager::workdir::RunRecord;
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Today's encoding of `format` at `version` is the committed file, byte for byte.
fn check_current(format: &str, version: u32, constant: &str, bytes: &[u8]) {
    let path = golden_dir().join(format!("{format}-v{version}.bin"));
    if !path.exists() && std::env::var("DISPATCHER_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(golden_dir()).expect("the golden dir");
        std::fs::write(&path, bytes).expect("the golden file is written");
    }
    let golden = std::fs::read(&path).unwrap_or_else(|_| {
        panic!(
            "no golden file {}: the {format} format is at version {version}; write it with \
             DISPATCHER_BLESS=1 cargo test --lib persisted_formats",
            path.display()
        )
    });
    assert!(
        golden == bytes,
        "the {format} format changed but {constant} is still {version}: bump it, keep {} \
         (today's build must still read it), and write the new version's file with \
         DISPATCHER_BLESS=1 cargo test --lib persisted_formats",
        path.display()
    );
}

/// Every committed file of `format`: its version and its bytes, oldest first.
fn every_version(format: &str) -> Vec<(u32, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(golden_dir()).expect("tests/golden exists") {
        let path = entry.expect("a golden file").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let version = name
            .strip_prefix(&format!("{format}-v"))
            .and_then(|rest| rest.strip_suffix(".bin"))
            .and_then(|v| v.parse::<u32>().ok());
        if let Some(version) = version {
            found.push((version, std::fs::read(&path).expect("readable")));
        }
    }
    found.sort();
    assert!(!found.is_empty(), "no golden {format} files");
    found
}

/// The records of a log segment's bytes, all of them whole.
fn log_records(bytes: &[u8]) -> Vec<crate::raft::wal::record::Record> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match decode_frame(&bytes[at..]) {
            Frame::Record(record, used) => {
                records.push(*record);
                at += used;
            }
            Frame::End => break,
            Frame::Torn(why) | Frame::Unreadable(why) => {
                panic!("a golden log record does not read at byte {at}: {why}")
            }
        }
    }
    records
}

#[test]
fn every_command_kind_has_a_sample_and_its_id_is_the_tag_it_is_written_with() {
    let covered = samples::kinds_covered();
    let missing: Vec<&str> = (0..COMMAND_KINDS)
        .filter(|id| !covered.contains_key(id))
        .map(|id| crate::fsm::KIND_NAMES[id as usize])
        .collect();
    assert!(missing.is_empty(), "no sample of {missing:?}");
    for command in samples::every_command() {
        let bytes =
            bincode::serde::encode_to_vec(&command, bincode::config::standard()).expect("encodes");
        assert_eq!(
            u32::from(bytes[0]),
            command.kind_id(),
            "{}: its id is not its tag",
            command.kind_name()
        );
    }
}

#[test]
fn snapshots_of_every_version_read_and_todays_is_unchanged() {
    let state = samples::state();
    assert!(state.jobs.len() >= 3 && !state.tokens.is_empty() && !state.quotas.is_empty());
    // The periodic samples applied: a schedule that fired on time and by `cron run`, with
    // the times it missed noted.
    let nightly = &state.cron.schedules[&("team".to_string(), "nightly".to_string())];
    assert_eq!(nightly.history.len(), 2, "{nightly:?}");
    assert!(nightly.last_skip.is_some() && state.cron.origins.len() == 2);
    assert_eq!(state.resource_pins["tm-b"].named["gpu"], 2);
    assert_eq!(state.format_version(), SNAPSHOT_FORMAT_VERSION);
    check_current(
        "snapshot",
        SNAPSHOT_FORMAT_VERSION,
        "SNAPSHOT_FORMAT_VERSION",
        &encode_state(&state),
    );
    // Below the newest cluster version a replica writes the format of that version, byte
    // for byte as the release of it did (format 10 as v0.1.0): an older replica reads what a
    // newer one sends it and what a downgrade leaves.
    let older: Vec<(u32, ClusterState)> = [(1, 10), (2, 11), (3, 12)]
        .into_iter()
        .map(|(cluster_version, format)| {
            let state = samples::state_at(ClusterVersion(cluster_version));
            assert_eq!(state.format_version(), format);
            let constant = format!("the encoding at cluster version {cluster_version}");
            check_current("snapshot", format, &constant, &encode_state(&state));
            (format, state)
        })
        .collect();
    for (version, bytes) in every_version("snapshot") {
        let read = decode_state(&bytes)
            .unwrap_or_else(|e| panic!("snapshot format {version} no longer reads: {e}"));
        if version == SNAPSHOT_FORMAT_VERSION {
            assert_eq!(read, state);
        }
        if let Some((_, older)) = older.iter().find(|(format, _)| *format == version) {
            assert_eq!(&read, older);
        }
    }
}

#[test]
fn a_downgraded_state_is_written_in_the_older_format() {
    let mut state = samples::state();
    let down = || crate::fsm::Command::SetClusterVersion {
        version: 1,
        now_ms: 2_000,
    };
    // Resource pins hold a downgrade back until they are taken back.
    let refused = crate::fsm::apply(&mut state, 999, down());
    assert!(
        matches!(&refused, crate::fsm::Response::Rejected(r) if r.to_string().contains("`dispatcher tm pin tm-b --labels zone=b --slots 4`")),
        "{refused:?}"
    );
    crate::fsm::apply(
        &mut state,
        999,
        crate::fsm::Command::PinTaskManagerWithResources {
            id: "tm-b".into(),
            labels: [("zone".to_string(), "b".to_string())].into(),
            slots: Some(4),
            resources: Default::default(),
            now_ms: 2_000,
        },
    );
    assert!(state.resource_pins.is_empty() && state.pins.contains_key("tm-b"));
    // Schedules hold a downgrade back until they are deleted.
    let refused = crate::fsm::apply(&mut state, 1_000, down());
    assert!(
        matches!(&refused, crate::fsm::Response::Rejected(r) if r.to_string().contains("cron delete")),
        "{refused:?}"
    );
    crate::fsm::apply(
        &mut state,
        1_001,
        crate::fsm::Command::CronDelete {
            tenant: "team".into(),
            name: "nightly".into(),
            now_ms: 2_000,
        },
    );
    let back = crate::fsm::apply(&mut state, 1_002, down());
    assert!(state.cron.is_empty(), "the jobs forget their schedule too");
    assert!(matches!(
        back,
        crate::fsm::Response::ClusterVersionSet { version: 1 }
    ));
    assert_eq!(state.format_version(), 10);
    let read = decode_state(&encode_state(&state)).expect("reads");
    assert_eq!(read, state);
}

#[test]
fn logs_of_every_version_read_and_todays_is_unchanged() {
    let mut bytes = Vec::new();
    for record in samples::log_records() {
        encode_frame(&record, &mut bytes).expect("encodes");
    }
    check_current("log", LOG_FORMAT_VERSION, "LOG_FORMAT_VERSION", &bytes);
    for (version, golden) in every_version("log") {
        let records = log_records(&golden);
        assert!(
            records.len() > COMMAND_KINDS as usize,
            "log format {version}"
        );
        // Every version's records are written today exactly as that version wrote them:
        // a cluster version's kinds travel to, and are left on disk for, older replicas.
        let mut again = Vec::new();
        for record in &records {
            encode_frame(record, &mut again).expect("encodes");
        }
        assert!(
            again == golden,
            "log format {version} is not written today as it was"
        );
    }
}

#[test]
fn journals_of_every_version_read_and_todays_is_unchanged() {
    let mut bytes = Vec::new();
    for record in samples::journal_records() {
        crate::framing::encode_frame(&record, journal::MAX_RECORD_BYTES, &mut bytes)
            .expect("encodes");
    }
    check_current(
        "journal",
        JOURNAL_FORMAT_VERSION,
        "JOURNAL_FORMAT_VERSION",
        &bytes,
    );
    for (version, golden) in every_version("journal") {
        let (runs, used) = journal::replay(&golden)
            .unwrap_or_else(|e| panic!("journal format {version} no longer reads: {e}"));
        assert_eq!(used, golden.len(), "journal format {version} reads whole");
        let run = |job: &str, index: u32, epoch: u64| runs.get(&(job.to_string(), index, epoch));
        assert!(
            matches!(run("j-3", 0, 7), Some(RunRecord::Ended(r)) if r.exit_code == Some(0)),
            "journal format {version}: {runs:?}"
        );
        assert!(matches!(run("j-3", 1, 7), Some(RunRecord::Ended(r)) if r.cannot_start));
        assert!(matches!(run("j-6", 0, 9), Some(RunRecord::Ended(r)) if r.over_limit));
        assert_eq!(run("j-6", 1, 9), Some(&RunRecord::Interrupted));
    }
}
