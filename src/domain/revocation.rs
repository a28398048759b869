//! Certificates the cluster no longer accepts (`certs revoke`): a whole party (every
//! certificate naming it), or single certificates by fingerprint (a party whose key leaked
//! gets a new certificate under the same name). Checked on every call, on every replica, as
//! soon as the revocation is applied.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Most parties with revocations kept.
pub const MAX_REVOKED_PARTIES: usize = 10_000;
/// Most revoked certificates kept per party.
pub const MAX_REVOKED_PER_PARTY: usize = 64;

/// A certificate's fingerprint: BLAKE3 of its DER encoding.
pub type Fingerprint = [u8; 32];

/// The fingerprint of a DER certificate.
pub fn fingerprint(der: &[u8]) -> Fingerprint {
    *blake3::hash(der).as_bytes()
}

/// What is revoked of one party.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// Every certificate that names the party.
    pub whole_party: bool,
    /// These certificates only.
    pub certificates: BTreeSet<Fingerprint>,
}

/// Revocations by party name (`replica-1`, `tm-a`, `client-ops`).
pub type Revocations = BTreeMap<String, Revoked>;

/// Whether the certificate of `party` with `fingerprint` is revoked.
pub fn is_revoked(revocations: &Revocations, party: &str, fingerprint: &Fingerprint) -> bool {
    revocations
        .get(party)
        .is_some_and(|r| r.whole_party || r.certificates.contains(fingerprint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_party_or_one_certificate_of_it_is_revoked() {
        let mut revocations = Revocations::new();
        let (old, new) = (fingerprint(b"old"), fingerprint(b"new"));
        revocations
            .entry("client-x".into())
            .or_default()
            .certificates
            .insert(old);
        assert!(is_revoked(&revocations, "client-x", &old));
        assert!(!is_revoked(&revocations, "client-x", &new));
        assert!(!is_revoked(&revocations, "client-y", &old));
        revocations.entry("tm-a".into()).or_default().whole_party = true;
        assert!(is_revoked(&revocations, "tm-a", &new));
    }
}
