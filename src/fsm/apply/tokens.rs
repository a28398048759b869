//! Apply of the access-token commands: create, revoke and the one-time bootstrap seed.

use crate::domain::{
    ClusterState, Role, Token, TokenHash, BOOTSTRAP_TOKEN_NAME, MAX_TOKENS, MAX_TOKEN_NAME_BYTES,
};
use crate::fsm::command::{Rejection, Response};

/// A token name: what `validate_name` allows, at most `MAX_TOKEN_NAME_BYTES` long.
pub fn validate_token_name(name: &str) -> Result<(), Rejection> {
    crate::fsm::validate_name("token name", name)?;
    if name.len() > MAX_TOKEN_NAME_BYTES {
        return Err(Rejection::Invalid(format!(
            "token name is {} bytes long; the limit is {MAX_TOKEN_NAME_BYTES}",
            name.len()
        )));
    }
    Ok(())
}

pub(super) fn create_token(
    state: &mut ClusterState,
    name: String,
    role: Role,
    hash: TokenHash,
    now_ms: u64,
) -> Result<Response, Rejection> {
    validate_token_name(&name)?;
    if let Some(existing) = state.tokens.get(&name) {
        // A retry of a creation whose answer was lost: the same token, not an error.
        if existing.role == role && existing.hash.matches(&hash) {
            return Ok(Response::TokenCreated { name });
        }
        return Err(Rejection::TokenExists(name));
    }
    if crate::domain::find_token(&state.tokens, &hash).is_some() {
        // Only a client that reuses a secret gets here; generated secrets never collide.
        return Err(Rejection::Invalid(
            "another token has this secret; make a new secret".into(),
        ));
    }
    if state.tokens.len() >= MAX_TOKENS {
        return Err(Rejection::Overloaded(format!(
            "the cluster holds {MAX_TOKENS} tokens, the most it keeps; revoke unused ones first"
        )));
    }
    state.tokens.insert(
        name.clone(),
        Token {
            role,
            hash,
            created_ms: now_ms,
        },
    );
    state.tokens_seeded = true;
    Ok(Response::TokenCreated { name })
}

/// `create_token`, and the token's holder submits as `tenant`.
pub(super) fn create_tenant_token(
    state: &mut ClusterState,
    name: String,
    role: Role,
    hash: TokenHash,
    tenant: String,
    now_ms: u64,
) -> Result<Response, Rejection> {
    crate::fsm::validate_tenant(&tenant)?;
    if let Some(existing) = state.tokens.get(&name) {
        // A retry must name the same tenant to be the same token.
        if state.token_tenant(&name) != tenant || !existing.hash.matches(&hash) {
            return Err(Rejection::TokenExists(name));
        }
    }
    let response = create_token(state, name.clone(), role, hash, now_ms)?;
    if tenant != name {
        state.token_tenants.insert(name, tenant);
    }
    Ok(response)
}

pub(super) fn revoke_token(state: &mut ClusterState, name: String) -> Result<Response, Rejection> {
    let Some(token) = state.tokens.get(&name) else {
        return Err(Rejection::UnknownToken(name));
    };
    let admins = state
        .tokens
        .values()
        .filter(|t| t.role == Role::Admin)
        .count();
    if token.role == Role::Admin && admins == 1 {
        return Err(Rejection::LastAdminToken(name));
    }
    state.tokens.remove(&name);
    state.token_tenants.remove(&name);
    Ok(Response::TokenRevoked { name })
}

/// Seeds the bootstrap admin token only while the cluster has no admin token. An admin
/// token, once there, is never the last one to go (`revoke_token`), so this happens on first
/// formation, or after tokens were made only under `--insecure` and none of them is an admin.
pub(super) fn seed_bootstrap_token(
    state: &mut ClusterState,
    hash: TokenHash,
    now_ms: u64,
) -> Response {
    let has_admin = state.tokens.values().any(|t| t.role == Role::Admin);
    if has_admin || state.tokens.contains_key(BOOTSTRAP_TOKEN_NAME) {
        return Response::BootstrapTokenSeeded { seeded: false };
    }
    state.tokens.insert(
        BOOTSTRAP_TOKEN_NAME.to_string(),
        Token {
            role: Role::Admin,
            hash,
            created_ms: now_ms,
        },
    );
    state.tokens_seeded = true;
    Response::BootstrapTokenSeeded { seeded: true }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::apply::apply;
    use crate::fsm::command::Command;

    fn create(state: &mut ClusterState, name: &str, role: Role, secret: &str) -> Response {
        apply(
            state,
            1,
            Command::CreateToken {
                name: name.into(),
                role,
                hash: TokenHash::of(secret),
                now_ms: 5,
            },
        )
    }

    #[test]
    fn bootstrap_seeds_once_and_never_after_a_token_was_made() {
        let mut state = ClusterState::default();
        let seed = |state: &mut ClusterState, secret: &str| {
            apply(
                state,
                1,
                Command::SeedBootstrapToken {
                    hash: TokenHash::of(secret),
                    now_ms: 1,
                },
            )
        };
        assert_eq!(
            seed(&mut state, "s1"),
            Response::BootstrapTokenSeeded { seeded: true }
        );
        assert_eq!(state.tokens[BOOTSTRAP_TOKEN_NAME].role, Role::Admin);
        // A restart with another file, or a second replica's proposal, changes nothing.
        let before = state.clone();
        assert_eq!(
            seed(&mut state, "s2"),
            Response::BootstrapTokenSeeded { seeded: false }
        );
        assert_eq!(state, before);
        // Even once the bootstrap token is revoked, while another admin exists.
        create(&mut state, "ops", Role::Admin, "s3");
        apply(
            &mut state,
            2,
            Command::RevokeToken {
                name: BOOTSTRAP_TOKEN_NAME.into(),
                now_ms: 2,
            },
        );
        assert_eq!(
            seed(&mut state, "s1"),
            Response::BootstrapTokenSeeded { seeded: false }
        );
        assert!(!state.tokens.contains_key(BOOTSTRAP_TOKEN_NAME));
    }

    #[test]
    fn a_cluster_without_an_admin_can_still_be_seeded_and_creation_is_idempotent() {
        let mut state = ClusterState::default();
        create(&mut state, "viewer", Role::Read, "v");
        let seeded = apply(
            &mut state,
            2,
            Command::SeedBootstrapToken {
                hash: TokenHash::of("boot"),
                now_ms: 2,
            },
        );
        assert_eq!(seeded, Response::BootstrapTokenSeeded { seeded: true });
        let before = state.clone();
        assert_eq!(
            create(&mut state, "viewer", Role::Read, "v"),
            Response::TokenCreated {
                name: "viewer".into()
            }
        );
        assert_eq!(state, before);
    }

    #[test]
    fn refusals_change_nothing() {
        let mut state = ClusterState::default();
        create(&mut state, "root", Role::Admin, "a");
        create(&mut state, "ci", Role::Submit, "b");
        let before = state.clone();
        let refused = [
            create(&mut state, "ci", Role::Read, "c"),
            create(&mut state, "dup", Role::Read, "b"),
            create(&mut state, "has space", Role::Read, "d"),
            create(&mut state, &"x".repeat(65), Role::Read, "e"),
            apply(
                &mut state,
                3,
                Command::RevokeToken {
                    name: "nobody".into(),
                    now_ms: 3,
                },
            ),
            apply(
                &mut state,
                3,
                Command::RevokeToken {
                    name: "root".into(),
                    now_ms: 3,
                },
            ),
        ];
        for response in refused {
            assert!(matches!(response, Response::Rejected(_)), "{response:?}");
        }
        assert_eq!(state, before);
        assert!(matches!(
            apply(
                &mut state,
                4,
                Command::RevokeToken {
                    name: "ci".into(),
                    now_ms: 4
                }
            ),
            Response::TokenRevoked { .. }
        ));
        assert!(!state.tokens.contains_key("ci"));
    }
}
