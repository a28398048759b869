//! Where a command is proposed: a kind newer than the cluster version is refused there,
//! before it reaches the log, so a replica of an older release never receives an entry it
//! cannot read. The refusal names the replicas that hold the cluster back.

use super::survey::Round;
use crate::domain::ClusterVersion;
use crate::fsm::Command;

/// What to do with a proposal.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Its kind is within the cluster version.
    Pass,
    /// This replica does not lead: the leader's state and survey decide.
    AskLeader,
    /// Refused, with the one line to show.
    Refuse(String),
}

/// Judge `command` against the cluster version `current`, on a replica that `leads` or not,
/// with a round of version pings: the leader's last, or on another replica one asked now.
/// A replica that does not lead refuses only when a member is surely behind (the version
/// cannot have been raised past it); otherwise the leader decides.
pub fn judge(
    command: &Command,
    current: ClusterVersion,
    leads: bool,
    round: Option<&Round>,
) -> Verdict {
    let needed = command.needs_cluster_version();
    if needed <= current {
        return Verdict::Pass;
    }
    let head = format!(
        "{} needs cluster version {needed}, and the cluster runs at {current}",
        command.kind_name()
    );
    let Some(round) = round else {
        if !leads {
            return Verdict::AskLeader;
        }
        return Verdict::Refuse(format!(
            "{head}: the leader has not yet asked every replica what it runs; try again in a \
             few seconds"
        ));
    };
    let behind = round.behind(needed.0);
    if !leads && (behind.is_empty() || round.common_version().is_none()) {
        return Verdict::AskLeader;
    }
    if behind.is_empty() {
        return Verdict::Refuse(format!(
            "{head}: every replica reads it now and the leader raises the version within a \
             second; try again"
        ));
    }
    let (them, it) = if behind.len() == 1 {
        ("replica", "does not read it yet; upgrade it")
    } else {
        ("replicas", "do not read it yet; upgrade them")
    };
    Verdict::Refuse(format!(
        "{head}: {them} {} {it}, and the leader raises the version within seconds of the \
         last (see `dispatcher cluster status`)",
        behind.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::survey::MemberVersion;
    use std::collections::BTreeMap;
    use std::time::Instant;

    fn undrain() -> Command {
        Command::UndrainTaskManager {
            id: "tm-a".into(),
            now_ms: 1,
        }
    }

    fn round(answers: &[(u64, Option<u32>)]) -> Round {
        Round {
            at: Instant::now(),
            members: answers
                .iter()
                .map(|(id, max)| {
                    let answer = max.map(|m| (format!("0.{m}.0"), m));
                    let addr = format!("h:{id}");
                    let held = false;
                    (*id, MemberVersion { addr, answer, held })
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn older_kinds_pass_and_newer_ones_name_who_holds_the_cluster_back() {
        let v1 = ClusterVersion::FIRST;
        let drain = Command::DrainTaskManager {
            id: "tm-a".into(),
            deadline_ms: 1,
            now_ms: 1,
        };
        assert_eq!(judge(&drain, v1, false, None), Verdict::Pass);
        assert_eq!(
            judge(&undrain(), ClusterVersion(2), false, None),
            Verdict::Pass
        );
        assert_eq!(judge(&undrain(), v1, false, None), Verdict::AskLeader);
        // Away from the leader: a member surely behind refuses; one that did not answer
        // or none behind leaves it to the leader.
        let old_member = round(&[(1, Some(2)), (2, Some(1))]);
        assert!(matches!(
            judge(&undrain(), v1, false, Some(&old_member)),
            Verdict::Refuse(_)
        ));
        let silent = round(&[(1, Some(2)), (2, None)]);
        assert_eq!(
            judge(&undrain(), v1, false, Some(&silent)),
            Verdict::AskLeader
        );
        let mixed = round(&[(1, Some(2)), (2, Some(1)), (3, None)]);
        let Verdict::Refuse(why) = judge(&undrain(), v1, true, Some(&mixed)) else {
            panic!("not refused")
        };
        assert!(
            why.starts_with("UndrainTaskManager needs cluster version 2, and the cluster runs at 1: replicas 2 at h:2 (0.1.0, up to version 1), 3 at h:3 (did not answer) do not read it yet"),
            "{why}"
        );
        let ready = round(&[(1, Some(2)), (2, Some(2))]);
        let Verdict::Refuse(why) = judge(&undrain(), v1, true, Some(&ready)) else {
            panic!("not refused")
        };
        assert!(why.contains("try again"), "{why}");
        assert!(matches!(
            judge(&undrain(), v1, true, None),
            Verdict::Refuse(_)
        ));
    }
}
