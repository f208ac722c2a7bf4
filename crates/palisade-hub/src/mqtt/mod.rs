//! The device side of the hub: MQTT over mutual TLS. A device's identity is its
//! verified client certificate (never the CONNECT packet); it may publish and
//! subscribe only under `devices/{its id}/…`.

pub mod fleet;

pub use fleet::Fleet;
