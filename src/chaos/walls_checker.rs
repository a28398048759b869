//! The walls between tenants, checked over a run with the hostile tenant (`chaos::hostile`):
//! no tenant saw or changed another's job, and no refused call reached the log.

use super::checker::{capped, Verdict};
use super::history::{Answer, Event};
use super::hostile::{
    HOSTILE_CEILING, HOSTILE_PREFIX, HOSTILE_SLOTS, HOSTILE_TENANT, SPY_EXIT, SPY_PREFIX,
};
use crate::pb::api::{JobStatus, QuotaInfo, TokenInfo};
use std::collections::{BTreeMap, BTreeSet};

/// Job names of submissions the cluster must always refuse.
const ALWAYS_REFUSED: [&str; 3] = ["after-", "above-ceiling-", "as-other-tenant-"];

/// What the cluster holds after the run, as an admin sees it.
pub struct FinalState<'a> {
    pub jobs: &'a [JobStatus],
    pub quotas: &'a [QuotaInfo],
    pub tokens: &'a [TokenInfo],
}

pub fn walls(events: &[Event], last: &FinalState) -> Verdict {
    let mut violations = Vec::new();
    let mut answers: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    let mut cancel_targets: BTreeSet<&str> = BTreeSet::new();
    for e in events {
        let Event::Attack {
            attack,
            answer,
            target,
            detail,
            ..
        } = e
        else {
            continue;
        };
        let slot = match answer {
            Answer::Held => 0,
            Answer::Unanswered => 1,
            Answer::Breach => 2,
        };
        answers.entry(attack.as_str()).or_default()[slot] += 1;
        if *answer == Answer::Breach {
            violations.push(format!(
                "{attack} on {}: {detail}",
                target.as_deref().unwrap_or("-")
            ));
        }
        if attack == "cancel-other" {
            if let Some(t) = target {
                cancel_targets.insert(t.as_str());
            }
        }
    }
    for job in last.jobs {
        let hostile_name = job.name.strip_prefix(HOSTILE_PREFIX);
        if let Some(rest) = hostile_name {
            if ALWAYS_REFUSED.iter().any(|p| rest.starts_with(p)) {
                violations.push(format!(
                    "refused submission '{}' reached the log as job {}",
                    job.name, job.job_id
                ));
            }
            if job.tenant != HOSTILE_TENANT {
                violations.push(format!(
                    "the hostile tenant's job {} ('{}') counts as tenant '{}'",
                    job.job_id, job.name, job.tenant
                ));
            }
        } else if job.tenant == HOSTILE_TENANT {
            violations.push(format!(
                "another client's job {} ('{}') belongs to the hostile tenant",
                job.job_id, job.name
            ));
        }
        if job.name.starts_with(SPY_PREFIX) {
            for shard in job.shards.iter().filter(|s| s.exit_code == Some(SPY_EXIT)) {
                violations.push(format!(
                    "a shard of {} ('{}') read what it must not: {}",
                    job.job_id,
                    job.name,
                    shard.error.as_deref().unwrap_or("")
                ));
            }
        }
        if cancel_targets.contains(job.job_id.as_str()) && job.state == "cancelled" {
            violations.push(format!(
                "job {} ('{}') was cancelled; only the hostile tenant tried",
                job.job_id, job.name
            ));
        }
    }
    match last.quotas.iter().find(|q| q.tenant == HOSTILE_TENANT) {
        Some(q) if q.slots == Some(HOSTILE_SLOTS) && q.max_priority == HOSTILE_CEILING => {}
        Some(q) => violations.push(format!(
            "the hostile tenant's quota changed: {} slots, ceiling {}",
            q.slots.map_or("unlimited".to_string(), |s| s.to_string()),
            q.max_priority
        )),
        None => violations.push("the hostile tenant's quota is gone".to_string()),
    }
    for token in last.tokens {
        if token.name.starts_with(HOSTILE_PREFIX) {
            violations.push(format!("the hostile tenant minted token '{}'", token.name));
        }
    }
    let attempts: usize = answers.values().map(|a| a.iter().sum::<usize>()).sum();
    let held: usize = answers.values().map(|a| a[0]).sum();
    let kinds_held = answers.values().filter(|a| a[0] > 0).count();
    Verdict {
        name: "walls".into(),
        checked: format!(
            "{attempts} attacks of {} kinds ({held} held, {kinds_held} kinds held at least once) \
             and {} jobs, quotas and tokens in the final state",
            answers.len(),
            last.jobs.len()
        ),
        violations: capped(violations),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attack(name: &str, answer: Answer, target: &str) -> Event {
        Event::Attack {
            at_ns: 0,
            attack: name.into(),
            answer,
            target: Some(target.into()),
            detail: String::new(),
        }
    }

    fn job(id: &str, name: &str, tenant: &str, state: &str) -> JobStatus {
        JobStatus {
            job_id: id.into(),
            name: name.into(),
            tenant: tenant.into(),
            state: state.into(),
            ..Default::default()
        }
    }

    fn quota() -> QuotaInfo {
        QuotaInfo {
            tenant: HOSTILE_TENANT.into(),
            slots: Some(HOSTILE_SLOTS),
            max_priority: HOSTILE_CEILING,
            ..Default::default()
        }
    }

    #[test]
    fn a_run_where_every_wall_held_passes() {
        let events = vec![
            attack("read-other", Answer::Held, "j-1"),
            attack("cancel-other", Answer::Unanswered, "j-1"),
        ];
        let jobs = vec![
            job("j-1", "c0-1", "default", "finished"),
            job("j-2", "h-own-3", HOSTILE_TENANT, "finished"),
        ];
        let verdict = walls(
            &events,
            &FinalState {
                jobs: &jobs,
                quotas: &[quota()],
                tokens: &[],
            },
        );
        assert!(verdict.ok(), "{:?}", verdict.violations);
    }

    #[test]
    fn every_kind_of_breach_is_named() {
        let events = vec![
            attack("read-other", Answer::Breach, "j-1"),
            attack("cancel-other", Answer::Unanswered, "j-1"),
        ];
        let jobs = vec![
            job("j-1", "c0-1", "default", "cancelled"),
            job("j-2", "h-above-ceiling-4", HOSTILE_TENANT, "finished"),
            job("j-3", "h-as-other-tenant-5", "t0", "finished"),
            job("j-4", "c1-2", HOSTILE_TENANT, "finished"),
        ];
        let mut raised = quota();
        raised.slots = None;
        let tokens = vec![TokenInfo {
            name: "h-token-9".into(),
            ..Default::default()
        }];
        let verdict = walls(
            &events,
            &FinalState {
                jobs: &jobs,
                quotas: &[raised],
                tokens: &tokens,
            },
        );
        let all = verdict.violations.join("\n");
        for expected in [
            "read-other on j-1",
            "'h-above-ceiling-4' reached the log",
            "'h-as-other-tenant-5') counts as tenant 't0'",
            "j-4 ('c1-2') belongs to the hostile tenant",
            "job j-1 ('c0-1') was cancelled",
            "quota changed",
            "minted token 'h-token-9'",
        ] {
            assert!(all.contains(expected), "{expected} missing from:\n{all}");
        }
    }
}
