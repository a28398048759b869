//! Access tokens as the replicated state holds them: a name, a role and a hash of the secret.
//! Secrets never reach the state or the log; a caller's secret is hashed and compared against
//! every stored hash in constant time.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// At most this many tokens are held (each call compares against all of them).
pub const MAX_TOKENS: usize = 1000;
/// Longest token name, in bytes.
pub const MAX_TOKEN_NAME_BYTES: usize = 64;
/// The name of the admin token seeded by `--bootstrap-token-file`.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap";

/// What a token may do. Each role includes the ones below it, except that only `operator`
/// and `admin` may cancel other clients' jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// Status and lists only.
    Read,
    /// Submit jobs and cancel its own; read.
    Submit,
    /// Drain TaskManagers and cancel any job; read.
    Operator,
    /// Everything, tokens and membership included.
    Admin,
}

/// A kind of call, as far as access is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    Submit,
    /// Cancel: `submit` only for its own jobs (checked against the job's owner).
    Cancel,
    /// Drain TaskManagers, build snapshots.
    Operate,
    /// Tokens, membership, leadership transfer.
    Admin,
}

impl Role {
    pub fn allows(self, permission: Permission) -> bool {
        match permission {
            Permission::Read => true,
            Permission::Submit => matches!(self, Role::Submit | Role::Admin),
            Permission::Cancel => self != Role::Read,
            Permission::Operate => matches!(self, Role::Operator | Role::Admin),
            Permission::Admin => self == Role::Admin,
        }
    }

    /// Whether this role may cancel jobs it did not submit.
    pub fn cancels_any_job(self) -> bool {
        matches!(self, Role::Operator | Role::Admin)
    }

    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Submit, Role::Read];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Submit => "submit",
            Role::Read => "read",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| format!("unknown role '{s}': use admin, operator, submit or read"))
    }
}

/// A hash of a token secret (BLAKE3 in key-derivation mode under a fixed context). Generated
/// secrets are 256 random bits and file-given ones at least 32 characters, so a fast hash is
/// enough: no one can recover a secret from its hash or find another with the same one.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(secret: &str) -> TokenHash {
        TokenHash(blake3::derive_key(
            "dispatcher access token v1",
            secret.as_bytes(),
        ))
    }

    /// Comparison whose time does not depend on where the hashes differ.
    pub fn matches(&self, other: &TokenHash) -> bool {
        blake3::Hash::from_bytes(self.0) == blake3::Hash::from_bytes(other.0)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

/// One token of the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub role: Role,
    pub hash: TokenHash,
    pub created_ms: u64,
}

/// The token whose hash is `hash`, compared against every token so that the time taken
/// does not tell which (if any) matched.
pub fn find_token<'a>(
    tokens: impl IntoIterator<Item = (&'a String, &'a Token)>,
    hash: &TokenHash,
) -> Option<(&'a str, &'a Token)> {
    let mut found = None;
    for (name, token) in tokens {
        if token.hash.matches(hash) {
            found = Some((name.as_str(), token));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn roles_allow_what_the_contract_says() {
        use Permission::*;
        let table = [
            (Role::Admin, [true, true, true, true, true]),
            (Role::Operator, [true, false, true, true, false]),
            (Role::Submit, [true, true, true, false, false]),
            (Role::Read, [true, false, false, false, false]),
        ];
        for (role, allowed) in table {
            for (permission, expected) in [Read, Submit, Cancel, Operate, Admin].iter().zip(allowed)
            {
                assert_eq!(role.allows(*permission), expected, "{role} {permission:?}");
            }
        }
        assert!(!Role::Submit.cancels_any_job());
        assert!(Role::Operator.cancels_any_job());
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn finds_a_token_only_by_its_secret() {
        let mut tokens = BTreeMap::new();
        for (name, secret) in [("a", "secret-a"), ("b", "secret-b")] {
            tokens.insert(
                name.to_string(),
                Token {
                    role: Role::Read,
                    hash: TokenHash::of(secret),
                    created_ms: 0,
                },
            );
        }
        let found = find_token(&tokens, &TokenHash::of("secret-b")).map(|(n, _)| n);
        assert_eq!(found, Some("b"));
        assert!(find_token(&tokens, &TokenHash::of("secret-c")).is_none());
        assert_ne!(TokenHash::of("x"), TokenHash::of("y"));
    }
}
