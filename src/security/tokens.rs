//! Token secrets on the client side: made from 256 random bits, read from a flag, the
//! environment or a file, and sent as `authorization: Bearer <secret>`. A `Secret` never
//! prints itself (its `Debug` is redacted), so it cannot end up in a log line by accident.

use super::SecurityError;
use crate::domain::TokenHash;
use std::path::Path;

/// Longest secret accepted from a caller, in bytes (generated ones are 68).
pub const MAX_SECRET_BYTES: usize = 256;
/// Shortest secret accepted from a file (`--bootstrap-token-file`): a person writes that
/// one, and it must not be guessable (`head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'`).
pub const MIN_FILE_SECRET_BYTES: usize = 32;
const PREFIX: &str = "dsp_";

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// A new secret from the operating system's random source: `dsp_` and 64 hex digits.
    pub fn generate() -> Result<Secret, SecurityError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| SecurityError::Token(format!("no random source: {e}")))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Secret(format!("{PREFIX}{hex}")))
    }

    /// A secret given by a person (flag, environment, file): trimmed, non-empty, bounded, and
    /// made of visible ASCII so that it fits an HTTP header.
    pub fn parse(text: &str) -> Result<Secret, SecurityError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SecurityError::Token("the token is empty".into()));
        }
        if text.len() > MAX_SECRET_BYTES {
            return Err(SecurityError::Token(format!(
                "the token is {} bytes long; tokens are at most {MAX_SECRET_BYTES}",
                text.len()
            )));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecurityError::Token(
                "the token contains spaces or characters outside visible ASCII".into(),
            ));
        }
        Ok(Secret(text.to_string()))
    }

    /// The secret in a file (the whole file, trimmed), e.g. `--bootstrap-token-file`.
    /// At least `MIN_FILE_SECRET_BYTES` long.
    pub fn from_file(path: &Path) -> Result<Secret, SecurityError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SecurityError::Token(format!("{}: {e}", path.display())))?;
        let secret = Secret::parse(&text)
            .map_err(|e| SecurityError::Token(format!("{}: {e}", path.display())))?;
        if secret.0.len() < MIN_FILE_SECRET_BYTES {
            return Err(SecurityError::Token(format!(
                "{}: the token is {} characters long; use at least {MIN_FILE_SECRET_BYTES} \
                 random ones, e.g. `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'`",
                path.display(),
                secret.0.len()
            )));
        }
        Ok(secret)
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }

    /// The secret itself: to print once when created, or to put in a request header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value of the `authorization` header.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

/// The secret of an `authorization: Bearer <secret>` header value.
pub fn parse_bearer(value: &str) -> Option<&str> {
    let (scheme, secret) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| secret.trim())
        .filter(|s| !s.is_empty() && s.len() <= MAX_SECRET_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_long_distinct_and_redacted() {
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), PREFIX.len() + 64);
        assert_eq!(format!("{a:?}"), "Secret(<redacted>)");
        assert_eq!(Secret::parse(a.expose()).unwrap(), a);
        assert_eq!(parse_bearer(&a.bearer()), Some(a.expose()));
    }

    #[test]
    fn a_token_file_must_hold_a_long_secret() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "hunter2\n").unwrap();
        assert!(Secret::from_file(&short).is_err());
        let long = dir.path().join("long");
        let secret = Secret::generate().unwrap();
        std::fs::write(&long, format!("{}\n", secret.expose())).unwrap();
        assert_eq!(Secret::from_file(&long).unwrap(), secret);
    }

    #[test]
    fn refuses_secrets_that_cannot_be_headers() {
        for bad in [
            "",
            "  ",
            "with space",
            "naïve",
            &"x".repeat(MAX_SECRET_BYTES + 1),
        ] {
            assert!(Secret::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_bearer("Basic abc"), None);
        assert_eq!(parse_bearer("Bearer "), None);
        assert_eq!(parse_bearer("bearer abc"), Some("abc"));
    }
}
