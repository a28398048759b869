//! What each member of the cluster runs, as the leader's last round of pings found it, and
//! this replica's hold during a downgrade.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::hold_record::HoldRecord;
use crate::security::Transport;

/// One member's answer to a version ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberVersion {
    pub addr: String,
    /// Its release and the newest cluster version it runs in; `None` when it did not answer.
    pub answer: Option<(String, u32)>,
    /// A downgrade holds it at `answer`'s version.
    pub held: bool,
}

/// The leader's last round of version pings.
#[derive(Debug, Clone)]
pub struct Round {
    pub at: Instant,
    pub members: BTreeMap<u64, MemberVersion>,
}

impl Round {
    /// The newest cluster version every member runs in; `None` while one did not answer.
    pub fn common_version(&self) -> Option<u32> {
        self.members
            .values()
            .map(|m| m.answer.as_ref().map(|(_, max)| *max))
            .collect::<Option<Vec<u32>>>()?
            .into_iter()
            .min()
    }

    /// The members that do not (or may not) read `version`, said for an operator:
    /// "2 at 127.0.0.1:7002 (0.1.0, up to version 1)".
    pub fn behind(&self, version: u32) -> Vec<String> {
        self.members
            .iter()
            .filter_map(|(id, m)| match &m.answer {
                Some((release, max)) if *max < version && m.held => Some(format!(
                    "{id} at {} ({release}, held at version {max} by a downgrade: \
                     `dispatcher cluster downgrade --cancel` lifts it)",
                    m.addr
                )),
                Some((release, max)) if *max < version => Some(format!(
                    "{id} at {} ({release}, up to version {max})",
                    m.addr
                )),
                Some(_) => None,
                None => Some(format!("{id} at {} (did not answer)", m.addr)),
            })
            .collect()
    }
}

/// Shared by the ping handler, the raise loop, the proposal gate and the downgrade.
#[derive(Debug, Default)]
pub struct VersionSurvey {
    /// A downgrade holds this replica at a version (0: no hold) until the downgrade is
    /// cancelled or the replica starts as another release: it reports no newer version, so
    /// the leader does not raise the cluster straight back up before the binaries are
    /// replaced.
    hold: AtomicU32,
    /// Where the hold is kept across restarts (none in unit tests).
    record: Option<HoldRecord>,
    last: Mutex<Option<Round>>,
    /// Proposals of a kind newer than version 1 hold it shared from their check to their
    /// commit (and `cluster add` from its check of the new member's release to the member
    /// change); raising and lowering the version hold it alone, so that no proposal checked
    /// against the version before slips into the log after a downgrade, and no member joins
    /// between a raise's round of pings and the raise.
    proposals: tokio::sync::RwLock<()>,
}

/// How long a proposal, a member change, a raise or a downgrade waits for the others.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Another change of the cluster version held the lock past `LOCK_WAIT`.
#[derive(Debug)]
pub struct Busy;

impl VersionSurvey {
    /// The survey of a replica starting on `data_dir`: holding where a downgrade left it, if
    /// this same release took the hold (`hold_record`).
    pub fn open(data_dir: &std::path::Path) -> std::io::Result<Self> {
        use super::hold_record::Found;
        let record = HoldRecord::in_dir(data_dir);
        let release = crate::formats::release();
        let held_at = match record.load(release)? {
            Found::None => None,
            Found::Hold(version) => {
                tracing::warn!(
                    version,
                    "a downgrade holds this replica at cluster version {version} (it was taken \
                     before the restart); replace the binary, or lift it with \
                     `dispatcher cluster downgrade --cancel`"
                );
                Some(version)
            }
            Found::Dropped {
                version,
                release: by,
            } => {
                tracing::info!(
                    version,
                    "the hold at cluster version {version} that release {by} took for a \
                     downgrade is dropped: this is release {release}"
                );
                None
            }
        };
        Ok(Self::with_record(record, held_at))
    }

    /// A replica's survey, holding at what `record` kept for this release.
    pub fn with_record(record: HoldRecord, held_at: Option<u32>) -> Self {
        VersionSurvey {
            hold: AtomicU32::new(held_at.unwrap_or(0)),
            record: Some(record),
            ..VersionSurvey::default()
        }
    }

    /// The newest cluster version this replica runs in now: its release's, or the hold.
    pub fn max_cluster_version(&self) -> u32 {
        let release = crate::formats::MAX_CLUSTER_VERSION;
        match self.hold.load(Ordering::SeqCst) {
            0 => release,
            held => held.min(release),
        }
    }

    /// The version a downgrade holds this replica at, if any.
    pub fn held_at(&self) -> Option<u32> {
        Some(self.hold.load(Ordering::SeqCst)).filter(|v| *v != 0)
    }

    /// Hold at `version` (0: no hold), on disk before in effect: a hold this replica
    /// answered for survives its restart.
    pub fn hold_at(&self, version: u32) -> std::io::Result<()> {
        // A downgrade asks again at its compaction step: the record already says so.
        if self.hold.load(Ordering::SeqCst) == version {
            return Ok(());
        }
        if let Some(record) = &self.record {
            record.store(version, crate::formats::release())?;
        }
        self.hold.store(version, Ordering::SeqCst);
        Ok(())
    }

    /// Shared with other proposals and member changes (see `proposals`).
    pub async fn shared(&self) -> Result<tokio::sync::RwLockReadGuard<'_, ()>, Busy> {
        tokio::time::timeout(LOCK_WAIT, self.proposals.read())
            .await
            .map_err(|_| Busy)
    }

    /// Alone: a raise, a downgrade or its cancel.
    pub async fn alone(&self) -> Result<tokio::sync::RwLockWriteGuard<'_, ()>, Busy> {
        tokio::time::timeout(LOCK_WAIT, self.proposals.write())
            .await
            .map_err(|_| Busy)
    }

    pub fn record(&self, round: Round) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(round);
    }

    /// Forget the last round (its answers no longer hold: a downgrade changed them).
    pub fn forget_round(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn last_round(&self) -> Option<Round> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How long a member has to answer a version ping.
pub const PING_TIMEOUT: Duration = Duration::from_millis(500);

/// Every voter and learner of `raft`'s membership, by id and address.
pub fn member_addresses(raft: &crate::raft::Raft) -> Vec<(u64, String)> {
    use openraft::async_runtime::watch::WatchReceiver;
    let metrics = raft.metrics().borrow_watched().clone();
    metrics
        .membership_config
        .membership()
        .nodes()
        .map(|(id, node)| (*id, node.addr.clone()))
        .collect()
}

/// Ask every member in `members` (id, address) at once what it runs; this replica answers
/// for itself.
pub async fn ask_members(
    transport: &Transport,
    own_id: u64,
    own: &VersionSurvey,
    members: Vec<(u64, String)>,
) -> Round {
    let asked = members.into_iter().map(|(id, addr)| async move {
        let (answer, held) = if id == own_id {
            let release = crate::formats::release().to_string();
            (
                Some((release, own.max_cluster_version())),
                own.held_at().is_some(),
            )
        } else {
            match crate::rpc::version_of(transport, &addr, PING_TIMEOUT).await {
                // A release before versions were reported answers without them.
                Some(p) => {
                    let release = if p.version.is_empty() {
                        "unknown".to_string()
                    } else {
                        p.version
                    };
                    let held = p.held_at_version.is_some();
                    (Some((release, p.max_cluster_version.max(1))), held)
                }
                None => (None, false),
            }
        };
        (id, MemberVersion { addr, answer, held })
    });
    Round {
        at: Instant::now(),
        members: futures::future::join_all(asked).await.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(addr: &str, answer: Option<(&str, u32)>) -> MemberVersion {
        MemberVersion {
            addr: addr.into(),
            answer: answer.map(|(r, v)| (r.to_string(), v)),
            held: false,
        }
    }

    #[test]
    fn the_common_version_is_the_lowest_and_needs_every_answer() {
        let mut round = Round {
            at: Instant::now(),
            members: BTreeMap::from([
                (1, member("a:1", Some(("0.2.0", 2)))),
                (2, member("a:2", Some(("0.1.0", 1)))),
                (3, member("a:3", Some(("0.2.0", 2)))),
            ]),
        };
        assert_eq!(round.common_version(), Some(1));
        assert_eq!(round.behind(2), vec!["2 at a:2 (0.1.0, up to version 1)"]);
        round.members.insert(2, member("a:2", None));
        assert_eq!(round.common_version(), None);
        assert_eq!(round.behind(2), vec!["2 at a:2 (did not answer)"]);
        round.members.insert(2, member("a:2", Some(("0.2.0", 2))));
        assert_eq!(round.common_version(), Some(2));
        assert!(round.behind(2).is_empty());
    }

    #[test]
    fn a_hold_caps_what_this_replica_reports_until_cleared() {
        let survey = VersionSurvey::default();
        assert_eq!(
            survey.max_cluster_version(),
            crate::formats::MAX_CLUSTER_VERSION
        );
        survey.hold_at(1).expect("hold");
        assert_eq!(survey.max_cluster_version(), 1);
        assert_eq!(survey.held_at(), Some(1));
        survey.hold_at(0).expect("lift");
        assert_eq!(survey.held_at(), None);
        assert_eq!(
            survey.max_cluster_version(),
            crate::formats::MAX_CLUSTER_VERSION
        );
    }

    #[test]
    fn a_recorded_hold_is_back_after_a_restart_of_the_same_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = HoldRecord::in_dir(dir.path());
        let survey = VersionSurvey::with_record(record.clone(), None);
        survey.hold_at(2).expect("hold");
        drop(survey);
        let release = crate::formats::release();
        let found = record.load(release).expect("load");
        assert_eq!(found, super::super::hold_record::Found::Hold(2));
        let restarted = VersionSurvey::with_record(record.clone(), Some(2));
        assert_eq!(restarted.max_cluster_version(), 2);
        restarted.hold_at(0).expect("lift");
        let found = record.load(release).expect("load");
        assert_eq!(found, super::super::hold_record::Found::None);
    }
}
