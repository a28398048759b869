//! Upgrades without a pause: the cluster version every replica must read, raised by the
//! leader once every member's release reads the next one, lowered only on purpose.
//!
//! - `survey`: what each member runs (asked by ping), and this replica's own hold during a
//!   downgrade. It also serializes the proposals of a newer kind with a downgrade.
//! - `hold_record`: that hold on the data dir, so a restart of the same binary keeps it.
//! - `raise`: the leader-only loop that proposes `SetClusterVersion` upward.
//! - `proposal_gate`: a command of a kind newer than the cluster version is refused where
//!   it is proposed, naming the replicas that hold the cluster back.
//! - `compaction`: what a replica does for a downgrade: a snapshot in the older format, a
//!   fresh log segment and everything before it purged, so an older release starts on its
//!   data dir.
//!
//! Nothing here decides what a version means: the kinds' versions and apply's checks live in
//! `fsm`, the state's version in `domain`.

pub mod compaction;
pub mod hold_record;
pub mod proposal_gate;
pub mod raise;
pub mod survey;

pub use survey::VersionSurvey;
