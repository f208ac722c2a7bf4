//! Which devices are connected right now, and the switch that drops a connection
//! (revocation takes effect at once, AUTH-10; a second connection with the same
//! identity replaces the first, as MQTT does for a reused client id).

use crate::ids::DeviceId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// The registry of live device connections.
#[derive(Default)]
pub struct Fleet {
    live: Mutex<HashMap<DeviceId, (u64, watch::Sender<bool>)>>,
    next: AtomicU64,
}

/// A registered connection: its number and the signal that tells it to close.
pub struct Registration {
    pub id: u64,
    pub closed: watch::Receiver<bool>,
}

impl Fleet {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, (u64, watch::Sender<bool>)>> {
        // A poisoned lock only means another connection task panicked; the map is
        // still consistent (every operation is a single insert or remove).
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a connection for `device`, closing any earlier one of the same device.
    pub fn register(&self, device: &DeviceId) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = watch::channel(false);
        if let Some((_, previous)) = self.lock().insert(device.clone(), (id, tx)) {
            let _ = previous.send(true);
        }
        Registration { id, closed: rx }
    }

    /// Forget a connection that ended (only if it is still the registered one).
    pub fn unregister(&self, device: &DeviceId, id: u64) {
        let mut live = self.lock();
        if live.get(device).is_some_and(|(current, _)| *current == id) {
            live.remove(device);
        }
    }

    /// Drop the device's live connection, if any; true if there was one.
    pub fn disconnect(&self, device: &DeviceId) -> bool {
        match self.lock().remove(device) {
            Some((_, tx)) => {
                let _ = tx.send(true);
                true
            }
            None => false,
        }
    }

    pub fn is_connected(&self, device: &DeviceId) -> bool {
        self.lock().contains_key(device)
    }

    pub fn connected(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_connection_replaces_the_first_and_disconnect_signals() {
        let fleet = Fleet::default();
        let device = DeviceId::generate();
        let first = fleet.register(&device);
        let second = fleet.register(&device);
        assert!(
            *first.closed.borrow(),
            "the first connection is told to close"
        );
        assert!(!*second.closed.borrow());
        fleet.unregister(&device, first.id); // the old one ending does not remove the new one
        assert!(fleet.is_connected(&device));
        assert!(fleet.disconnect(&device));
        assert!(*second.closed.borrow());
        assert!(!fleet.is_connected(&device));
        assert_eq!(fleet.connected(), 0);
    }
}
