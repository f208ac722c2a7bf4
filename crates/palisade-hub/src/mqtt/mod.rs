//! The device side of the hub: MQTT over mutual TLS. A device's identity is its
//! verified client certificate (never the CONNECT packet); it may publish and
//! subscribe only under `devices/{its id}/…`. The wire format is `mqtt-protocol-core`
//! (sans-I/O); connection handling, identity and authorisation are ours.

pub mod events;
pub mod fleet;
pub mod rate;
pub mod server;
mod session;
pub mod topics;

pub use fleet::Fleet;
pub use server::serve_devices;
