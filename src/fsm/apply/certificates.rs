//! Apply of `RevokeCertificate`: the revocation list in the replicated state, bounded.

use crate::domain::{ClusterState, Fingerprint, MAX_REVOKED_PARTIES, MAX_REVOKED_PER_PARTY};
use crate::fsm::command::{Rejection, Response};

/// Revoke every certificate naming `party`, or the one with `fingerprint`.
pub(super) fn revoke_certificate(
    state: &mut ClusterState,
    party: String,
    fingerprint: Option<Fingerprint>,
) -> Result<Response, Rejection> {
    crate::fsm::validate_name("party", &party)?;
    if !state.revocations.contains_key(&party) && state.revocations.len() >= MAX_REVOKED_PARTIES {
        return Err(Rejection::Overloaded(format!(
            "{MAX_REVOKED_PARTIES} parties have revoked certificates, the most the cluster keeps; \
             make a new CA and certificates (`dispatcher certs init`) instead"
        )));
    }
    let revoked = state.revocations.entry(party.clone()).or_default();
    match fingerprint {
        None => revoked.whole_party = true,
        Some(fingerprint) => {
            if revoked.certificates.len() >= MAX_REVOKED_PER_PARTY
                && !revoked.certificates.contains(&fingerprint)
            {
                return Err(Rejection::Overloaded(format!(
                    "{party} has {MAX_REVOKED_PER_PARTY} revoked certificates already; revoke \
                     the whole party (`dispatcher certs revoke {party}`) and name it anew"
                )));
            }
            revoked.certificates.insert(fingerprint);
        }
    }
    Ok(Response::CertificateRevoked { party })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{fingerprint, is_revoked};

    #[test]
    fn revocations_are_kept_and_bounded() {
        let mut state = ClusterState::default();
        let one = fingerprint(b"one");
        revoke_certificate(&mut state, "client-x".into(), Some(one)).expect("one");
        assert!(is_revoked(&state.revocations, "client-x", &one));
        assert!(!is_revoked(
            &state.revocations,
            "client-x",
            &fingerprint(b"two")
        ));
        revoke_certificate(&mut state, "tm-a".into(), None).expect("party");
        assert!(is_revoked(&state.revocations, "tm-a", &one));
        assert!(revoke_certificate(&mut state, "has space".into(), None).is_err());
        for i in 0..MAX_REVOKED_PER_PARTY {
            let _ = revoke_certificate(
                &mut state,
                "client-y".into(),
                Some(fingerprint(&i.to_be_bytes())),
            );
        }
        assert!(revoke_certificate(&mut state, "client-y".into(), Some(one)).is_err());
    }
}
