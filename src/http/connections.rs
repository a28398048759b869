//! How many HTTP connections one client address, and all together, may hold open. A
//! connection over either limit is closed as soon as it is accepted, so the accept loop
//! never stops taking connections: probes from the orchestrator keep getting through while
//! one address holds hundreds of idle ones.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Connections open at once from one address.
pub const PER_ADDRESS: usize = 64;
/// Connections open at once in all.
pub const TOTAL: usize = 1024;

/// Open connections, by client address.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Admitted {
    connections: Arc<Connections>,
    addr: IpAddr,
}

impl Connections {
    /// Admit a connection from `addr`, or say which limit it is over.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Result<Admitted, &'static str> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_addr) = &mut *open;
        if *total >= TOTAL {
            return Err("the server holds as many connections as it may");
        }
        let mine = by_addr.entry(addr).or_default();
        if *mine >= PER_ADDRESS {
            return Err("this address holds as many connections as it may");
        }
        *mine += 1;
        *total += 1;
        Ok(Admitted {
            connections: self.clone(),
            addr,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (total, by_addr) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(mine) = by_addr.get_mut(&self.addr) {
            *mine -= 1;
            if *mine == 0 {
                by_addr.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_cannot_take_every_place_and_places_come_back() {
        let connections = Arc::new(Connections::default());
        let greedy: IpAddr = "10.0.0.1".parse().unwrap();
        let probe: IpAddr = "10.0.0.2".parse().unwrap();
        let held: Vec<Admitted> = (0..PER_ADDRESS)
            .map(|_| connections.admit(greedy).expect("within the limit"))
            .collect();
        assert!(connections.admit(greedy).is_err());
        let probe_conn = connections.admit(probe).expect("another address gets in");
        drop(held);
        drop(probe_conn);
        assert!(connections.admit(greedy).is_ok());
        let open = connections.open.lock().unwrap();
        assert_eq!(open.0, 0, "places come back");
        assert!(open.1.is_empty());
    }
}
