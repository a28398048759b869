//! Security: the cluster's certificates (`certs`). Transport security (mutual TLS) and
//! tokens with roles build on them.

pub mod certs;
