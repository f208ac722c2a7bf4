//! Which devices are connected right now, and the switch that drops a connection
//! (revocation takes effect at once, AUTH-10; a second connection with the same
//! identity replaces the first, as MQTT does for a reused client id), and the
//! bounded queue through which commands reach a connection (ENC-4).

use crate::ids::DeviceId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Command payloads waiting for one connection, at most; beyond that `send_command`
/// answers false (the command stays pending in the database and is sent when the
/// device next subscribes).
pub const COMMAND_QUEUE: usize = 16;
/// Update offers waiting for one connection, at most (only the newest matters).
pub const UPDATE_QUEUE: usize = 4;

/// One live connection as the registry holds it.
struct Live {
    id: u64,
    close: watch::Sender<bool>,
    commands: mpsc::Sender<Vec<u8>>,
    /// The connection holds a subscription covering `devices/{id}/commands`.
    listening: Arc<AtomicBool>,
    /// Update offers for `devices/{id}/update` (issue 4).
    updates: mpsc::Sender<Vec<u8>>,
    /// Bumped when the device's telemetry settings change (PRIV-3).
    config: watch::Sender<u64>,
}

/// The registry of live device connections.
#[derive(Default)]
pub struct Fleet {
    live: Mutex<HashMap<DeviceId, Live>>,
    next: AtomicU64,
    /// Telemetry messages that arrived with a switched-off field (PRIV-3), which the
    /// hub dropped: it should stop growing once the device has its settings.
    switched_off_received: AtomicU64,
}

/// A registered connection: its number, the signal that tells it to close, the
/// commands queued for it, and the flag it sets while subscribed to its commands.
pub struct Registration {
    pub id: u64,
    pub closed: watch::Receiver<bool>,
    pub commands: mpsc::Receiver<Vec<u8>>,
    pub listening: Arc<AtomicBool>,
    /// Update offers to publish on `devices/{id}/update`.
    pub updates: mpsc::Receiver<Vec<u8>>,
    /// Changes when the device's telemetry settings change: reload and resend them.
    pub config: watch::Receiver<u64>,
}

impl Fleet {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Live>> {
        // A poisoned lock only means another connection task panicked; the map is
        // still consistent (every operation is a single insert or remove).
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a connection for `device`, closing any earlier one of the same device.
    pub fn register(&self, device: &DeviceId) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (close, closed) = watch::channel(false);
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let listening = Arc::new(AtomicBool::new(false));
        let (updates_tx, updates) = mpsc::channel(UPDATE_QUEUE);
        let (config_tx, config) = watch::channel(0);
        let live = Live {
            id,
            close,
            commands: commands_tx,
            listening: listening.clone(),
            updates: updates_tx,
            config: config_tx,
        };
        if let Some(previous) = self.lock().insert(device.clone(), live) {
            let _ = previous.close.send(true);
        }
        Registration {
            id,
            closed,
            commands,
            listening,
            updates,
            config,
        }
    }

    /// Count a telemetry message that carried a switched-off field.
    pub fn note_switched_off_received(&self) {
        self.switched_off_received.fetch_add(1, Ordering::Relaxed);
    }

    /// How many telemetry messages carried a switched-off field since the hub started.
    pub fn switched_off_received(&self) -> u64 {
        self.switched_off_received.load(Ordering::Relaxed)
    }

    /// The device's telemetry settings changed (PRIV-3): its live connection, if any,
    /// reloads them at once and sends them to the device.
    pub fn config_changed(&self, device: &DeviceId) {
        if let Some(conn) = self.lock().get(device) {
            conn.config.send_modify(|generation| *generation += 1);
        }
    }

    /// Queue a command payload (`{"seq", "expires_at", "name", "args"}`) for the
    /// device's live connection, which publishes it on `devices/{id}/commands`. True
    /// if a connection subscribed to its commands took it; false if the device is not
    /// connected, not subscribed, or its queue is full.
    pub fn send_command(&self, device: &DeviceId, payload: Vec<u8>) -> bool {
        let live = self.lock();
        match live.get(device) {
            Some(conn) if conn.listening.load(Ordering::Acquire) => {
                conn.commands.try_send(payload).is_ok()
            }
            _ => false,
        }
    }

    /// Queue an update offer for the device's live connection, which publishes it on
    /// `devices/{id}/update` if subscribed there. False if not connected or the queue
    /// is full (the device gets the offer again when it next subscribes).
    pub fn send_update(&self, device: &DeviceId, payload: Vec<u8>) -> bool {
        match self.lock().get(device) {
            Some(conn) => conn.updates.try_send(payload).is_ok(),
            None => false,
        }
    }

    /// Forget a connection that ended (only if it is still the registered one).
    pub fn unregister(&self, device: &DeviceId, id: u64) {
        let mut live = self.lock();
        if live.get(device).is_some_and(|current| current.id == id) {
            live.remove(device);
        }
    }

    /// Drop the device's live connection, if any; true if there was one.
    pub fn disconnect(&self, device: &DeviceId) -> bool {
        match self.lock().remove(device) {
            Some(conn) => {
                let _ = conn.close.send(true);
                true
            }
            None => false,
        }
    }

    /// Whether connection `id` is still the registered one of `device` (not replaced
    /// by a newer connection, nor dropped by revocation).
    pub fn is_current(&self, device: &DeviceId, id: u64) -> bool {
        self.lock().get(device).is_some_and(|c| c.id == id)
    }

    /// Whether the device's live connection holds a subscription covering its
    /// commands topic.
    pub fn is_listening(&self, device: &DeviceId) -> bool {
        self.lock()
            .get(device)
            .is_some_and(|c| c.listening.load(Ordering::Acquire))
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

    #[test]
    fn commands_reach_only_a_listening_connection_and_the_queue_is_bounded() {
        let fleet = Fleet::default();
        let device = DeviceId::generate();
        assert!(
            !fleet.send_command(&device, b"{}".to_vec()),
            "not connected"
        );
        let mut conn = fleet.register(&device);
        assert!(
            !fleet.send_command(&device, b"{}".to_vec()),
            "not subscribed"
        );
        conn.listening.store(true, Ordering::Release);
        for _ in 0..COMMAND_QUEUE {
            assert!(fleet.send_command(&device, b"{}".to_vec()));
        }
        assert!(!fleet.send_command(&device, b"{}".to_vec()), "queue full");
        assert_eq!(conn.commands.try_recv().ok(), Some(b"{}".to_vec()));
    }
}
