//! Security: the cluster's certificates (`certs`), mutual TLS 1.3 on every connection (`tls`,
//! `transport`), the identity a caller's certificate names (`party`), the rule that a server
//! must present a replica's certificate (`server_party`), this process's own pair, reloadable
//! on SIGHUP (`identity`), and bearer tokens (`tokens`). Which call needs which identity or role is decided in one table,
//! `rpc::access`; nothing here looks at requests.

pub mod certs;
mod choose;
pub mod identity;
pub mod party;
pub mod server_party;
pub mod tls;
pub mod tokens;
pub mod transport;

pub use choose::{choose_transport, only_client_certificate, require_own_party};
pub use party::Party;
pub use tls::{TlsConfig, TlsFiles};
pub use tokens::Secret;
pub use transport::{Credentials, Transport};

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A certificate, key or CA file that is missing, unreadable or does not fit.
    #[error("{0}")]
    Material(String),
    /// Neither certificates nor `--insecure` were given.
    #[error(
        "no certificates: give --tls-dir <dir> (env DISPATCHER_TLS_DIR) with the cluster CA and \
         this party's certificate (make them with `dispatcher certs init --out <dir> ...`), or \
         --insecure to run without TLS and tokens on one machine for development"
    )]
    NoCertificates,
    #[error("{0}")]
    Token(String),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
}
