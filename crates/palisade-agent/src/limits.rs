//! The agent's bounds on everything that comes from the network or from a local
//! telemetry source (security invariant 4): sizes, counts, rates and timeouts, in one
//! place.

use std::time::Duration;

/// Bounds applied by the agent. [`Limits::default`] is what `palisade-agent` uses.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest enrolment response body accepted from the hub.
    pub enroll_response_bytes: usize,
    /// Whole enrolment request (connect, TLS, request, response).
    pub enroll_timeout: Duration,
    /// TCP connect + TLS handshake + CONNACK, for one MQTT connection attempt.
    pub connect_timeout: Duration,
    /// Largest MQTT packet the agent accepts (announced to the server in CONNECT).
    pub mqtt_max_packet_bytes: u32,
    /// Most QoS 1 messages the server may have in flight towards the agent.
    pub mqtt_receive_maximum: u16,
    /// Most QoS 1 publishes the agent keeps in flight (further capped by the server's
    /// Receive Maximum).
    pub mqtt_inflight: usize,
    /// MQTT keep-alive announced in CONNECT.
    pub keep_alive: Duration,
    /// How long to wait for PINGRESP before treating the connection as dead.
    pub pingresp_timeout: Duration,
    /// Session expiry requested in CONNECT, so that commands queued by the server while
    /// the device is offline are delivered when it comes back.
    pub session_expiry: Duration,
    /// Largest command payload accepted.
    pub command_bytes: usize,
    /// Most commands handled per second; further ones are rejected with a reason.
    pub commands_per_second: u32,
    /// Longest line accepted from a telemetry command (one JSON object).
    pub telemetry_line_bytes: usize,
    /// Most records in the on-disk telemetry queue; the oldest is dropped (and counted)
    /// when a new one would exceed it.
    pub queue_max_records: usize,
    /// Most bytes of queued records on disk (acknowledgement marks are compacted away
    /// when the file reaches twice this).
    pub queue_max_bytes: u64,
    /// Reconnect backoff: first ceiling and cap (full jitter in between).
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Renew the device certificate when less than this percentage of its lifetime is
    /// left ([`crate::renew`]).
    pub renew_remaining_percent: u8,
    /// Wait before asking again after a refused or unanswered renewal.
    pub renew_retry: Duration,
    /// How long the hub has to answer a renewal request.
    pub renew_answer_timeout: Duration,
    /// Factory reset: the whole attempt to tell the hub (connect, publish, PUBACK)
    /// before the state is wiped anyway.
    pub reset_notice_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            enroll_response_bytes: 64 * 1024,
            enroll_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            mqtt_max_packet_bytes: 64 * 1024,
            mqtt_receive_maximum: 16,
            mqtt_inflight: 32,
            keep_alive: Duration::from_secs(60),
            pingresp_timeout: Duration::from_secs(30),
            session_expiry: Duration::from_secs(7 * 24 * 3600),
            command_bytes: 16 * 1024,
            commands_per_second: 10,
            telemetry_line_bytes: 16 * 1024,
            queue_max_records: 10_000,
            queue_max_bytes: 4 * 1024 * 1024,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            renew_remaining_percent: 33,
            renew_retry: Duration::from_secs(600),
            renew_answer_timeout: Duration::from_secs(60),
            reset_notice_timeout: Duration::from_secs(10),
        }
    }
}
