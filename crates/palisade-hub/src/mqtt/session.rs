//! One device connection, after the TLS handshake: the MQTT 3.1.1 / 5 session on top of
//! the sans-I/O engine of `mqtt-protocol-core` (which only encodes, decodes and checks
//! the wire protocol). Identity, authorisation, limits and storage are decided here.
//!
//! - Identity is the verified client certificate, looked up before the CONNECT packet
//!   is read; client id, user name and password are ignored for identity. An unknown or
//!   inactive device gets CONNACK "not authorised" (3.1.1 return code 5, v5 reason
//!   0x87) and the connection is closed (AUTH-10).
//! - CONNECT must arrive within `tls_handshake_timeout_secs`; keep-alive is capped at
//!   `mqtt_keep_alive_max_secs` (v5 clients are told with Server Keep Alive) and a
//!   connection silent for 1.5× its keep-alive is closed.
//! - Publish and subscribe only on the device's own topics ([`super::topics`], ACC-2);
//!   at most `mqtt_topics_per_subscribe` filters per SUBSCRIBE and [`MAX_SUBSCRIPTIONS`]
//!   per connection; QoS 2 is not offered (v5 CONNACK says Maximum QoS 1) and a QoS 2
//!   PUBLISH ends the connection; retained messages are not kept (v5 CONNACK says so;
//!   a v3.1.1 retain flag is ignored); packets above `mqtt_max_packet_bytes` end the
//!   connection before they are buffered; a token bucket per device
//!   ([`super::rate`]) enforces `mqtt_publishes_per_minute` (RES-2).
//! - Telemetry is validated against the product model (DATA-1) and queued to the
//!   telemetry writer; a QoS 1 PUBACK is sent only once the writer reports the batch
//!   committed (RES-1). PUBACKs keep the order of the PUBLISH packets, and at most
//!   `mqtt_inflight` QoS 1 messages wait for storage before the connection is read any
//!   further (back-pressure). A failed commit closes the connection without PUBACK, so
//!   the device sends the message again.
//! - Commands (ENC-4): while the device holds a subscription covering
//!   `devices/{id}/commands`, the payloads [`Fleet::send_command`] queues for the
//!   connection are published to it at the granted QoS (QoS 1 normally; at most
//!   [`MAX_OUTBOUND`] unacknowledged, and never beyond a v5 client's Receive Maximum).
//!   When the subscription is made, the commands still pending in the database
//!   (undelivered, unexpired) are sent first. The device's PUBACK marks a command
//!   delivered; at QoS 0 it stays pending until its result arrives (the agent's
//!   sequence check makes a repeat harmless).
//! - Events (`devices/{id}/events`) carrying a `command_seq` are the device's result
//!   for that command: a bounded JSON object whose seq must be one of this device's
//!   commands; the first result is stored before the PUBACK, and a later "rejected"
//!   for a command already answered (a replay the agent refused) is audited. Other
//!   events and state (`…/state`) are authorised and acknowledged. A factory-reset
//!   notice on the events topic decommissions the device and closes the connection
//!   ([`crate::devices_lifecycle`], DATA-3); other events must be valid and are stored
//!   before the PUBACK ([`super::events`], the one place for device events); invalid
//!   ones are refused. Of a state report (`…/state`) only the reported versions are
//!   stored (SUP-3).
//! - Persistent sessions: v3.1.1 clean_session=0 (kept `mqtt_session_expiry_max_secs`)
//!   or v5 clean_start=0 with a Session Expiry Interval (capped at that): the
//!   subscriptions are stored (`mqtt_sessions`), restored on the next connection with
//!   CONNACK session present = 1, and the commands still pending in the database —
//!   undelivered or not PUBACKed — are sent at once. A clean session deletes it. A
//!   connection taken over by a newer one leaves the session to the newer one.
//! - Wills: only on the device's own topics (as PUBLISH; v5 will QoS 2 or retain are
//!   refused). Recorded as a device event when the connection ends without DISCONNECT
//!   (or with v5 reason 0x04); a normal DISCONNECT, or a hub shutdown, discards it.
//! - Certificate renewal (AUTH-10): a PEM CSR on `devices/{id}/certificate/csr` from a
//!   device subscribed to `devices/{id}/certificate` is answered there with a new
//!   certificate for the same device id ([`crate::db::certificates`] decides whether
//!   it is allowed: not too early, not too often, active device only).
//!
//! Refusing a single message: MQTT 5 can say why per message (PUBACK reason codes 0x87
//! not authorised, 0x97 quota exceeded — used for the rate limit, since 0x96 is a
//! DISCONNECT-only code — and 0x99 payload format invalid), so a refused QoS 1 message
//! gets a negative PUBACK and the connection stays up; a refused QoS 0 message can only
//! be answered with DISCONNECT carrying the reason. MQTT 3.1.1 has no negative PUBACK:
//! acknowledging would tell the device its data was accepted, and staying silent would
//! leave the packet id in flight for ever, so a refused message on 3.1.1 closes the
//! connection (after the PUBACKs of earlier, stored messages have been sent). The
//! device sees the failure, and the refusal is logged and, for telemetry, counted in
//! the device's `rejected_messages`.

use super::Fleet;
use super::events;
use super::fleet::Registration;
use super::rate::{self, Budgets, SharedBucket};
use super::topics::{DeviceTopics, OwnTopic, filter_matches};
use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::config::Limits;
use crate::db::Db;
use crate::db::certificates::RenewalRefusal;
use crate::db::commands::{CommandResult, MAX_REASON_CHARS, ResultRecorded};
use crate::db::device_events::EventSource;
use crate::db::devices::DeviceStatus;
use crate::ids::DeviceId;
use crate::telemetry::{self, Schema, Writer};
use mqtt_protocol_core::mqtt;
use mqtt_protocol_core::mqtt::common::Cursor;
use mqtt_protocol_core::mqtt::connection::{ConnectionOptions, Event};
use mqtt_protocol_core::mqtt::packet::{self as pkt, Packet, Property, Qos, v3_1_1, v5_0};
use mqtt_protocol_core::mqtt::prelude::GenericPacketTrait;
use mqtt_protocol_core::mqtt::result_code::{
    ConnectReasonCode, ConnectReturnCode, DisconnectReasonCode, MqttError, PubackReasonCode,
    SubackReasonCode, SubackReturnCode, UnsubackReasonCode,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Distinct topic filters one connection may hold.
pub const MAX_SUBSCRIPTIONS: usize = 32;

/// Commands published to a device and not yet acknowledged, at most.
pub const MAX_OUTBOUND: usize = 16;

/// Commands waiting for a free slot, at most (more are dropped: they stay pending in
/// the database and are sent when the device subscribes again).
const MAX_OUTBOX: usize = 64;

/// Largest event payload read as a command result.
pub const MAX_EVENT_BYTES: usize = 4 * 1024;

/// Bytes read from the connection at a time (the engine assembles packets up to
/// `mqtt_max_packet_bytes` from these pieces).
const READ_CHUNK: usize = 2048;

/// What every connection shares.
pub(super) struct Shared {
    pub db: Db,
    pub fleet: Arc<Fleet>,
    pub writer: Writer,
    pub limits: Limits,
    pub budgets: Budgets,
    /// Issues renewed device certificates.
    pub hub_ca: Arc<palisade_crypto::ca::HubCa>,
}

/// Largest certificate signing request accepted for renewal.
pub const MAX_CSR_BYTES: usize = 8 * 1024;

/// Who the certificate says the peer is, decided before the CONNECT packet is read.
pub(super) enum Admission {
    /// An active device, with its product model's telemetry schema and the SHA-256 of
    /// the certificate it presented.
    Device {
        id: DeviceId,
        schema: Schema,
        fingerprint: String,
    },
    /// Unknown certificate or inactive device: answered "not authorised".
    Refused,
    /// The database could not be asked: answered "server unavailable" (fail closed).
    Unavailable,
}

/// The transport with the MQTT engine and its buffers.
struct Io<S> {
    stream: S,
    conn: mqtt::Connection<mqtt::role::Server>,
    /// Bytes read but not yet fed to the engine (kept when the inflight window is full).
    inbuf: Vec<u8>,
    inpos: usize,
    out: Vec<u8>,
    /// The engine asked to close, or reported a protocol error.
    closed: bool,
    write_timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    fn is_v5(&self) -> bool {
        self.conn.get_protocol_version() == mqtt::Version::V5_0
    }

    fn buffered(&self) -> bool {
        self.inpos < self.inbuf.len()
    }

    /// Read more bytes; false at end of stream or on error.
    async fn read_more(&mut self) -> bool {
        if !self.buffered() {
            self.inbuf.clear();
            self.inpos = 0;
        }
        self.inbuf.reserve(READ_CHUNK);
        matches!(self.stream.read_buf(&mut self.inbuf).await, Ok(n) if n > 0)
    }

    /// Feed buffered bytes to the engine until one packet is complete or the buffer is
    /// used up; returns the packets received (None when nothing was buffered).
    fn parse_one(&mut self) -> Option<Vec<Packet>> {
        if !self.buffered() {
            return None;
        }
        let mut cursor = Cursor::new(&self.inbuf[self.inpos..]);
        let events = self.conn.recv(&mut cursor);
        self.inpos += usize::try_from(cursor.position()).unwrap_or(usize::MAX);
        Some(self.apply(events))
    }

    /// Act on engine events; returns the packets received.
    fn apply(&mut self, events: Vec<Event>) -> Vec<Packet> {
        let mut received = Vec::new();
        for event in events {
            match event {
                Event::NotifyPacketReceived(packet) => received.push(packet),
                Event::RequestSendPacket { packet, .. } => {
                    self.out.extend_from_slice(&packet.to_continuous_buffer());
                }
                Event::RequestClose => self.closed = true,
                Event::NotifyError(e) => {
                    tracing::debug!("MQTT protocol error: {e:?}");
                    self.closed = true;
                }
                // Timers are ours (keep-alive below); packet ids of commands are
                // tracked by the session (`outbound`).
                Event::RequestTimerReset { .. }
                | Event::RequestTimerCancel(_)
                | Event::NotifyPacketIdReleased(_) => {}
            }
        }
        received
    }

    fn send(&mut self, packet: Result<Packet, MqttError>) {
        match packet {
            Ok(packet) => {
                let events = self.conn.send(packet);
                let _ = self.apply(events);
            }
            Err(e) => {
                tracing::warn!("could not build an MQTT packet: {e:?}");
                self.closed = true;
            }
        }
    }

    fn puback(&mut self, packet_id: u16, reason: PubackReasonCode) {
        let packet = if self.is_v5() {
            let builder = v5_0::Puback::builder().packet_id(packet_id);
            let builder = if reason == PubackReasonCode::Success {
                builder
            } else {
                builder.reason_code(reason)
            };
            builder.build().map(Packet::from)
        } else {
            v3_1_1::Puback::builder()
                .packet_id(packet_id)
                .build()
                .map(Packet::from)
        };
        self.send(packet);
    }

    /// v5: DISCONNECT with a reason; either version: close.
    fn disconnect(&mut self, reason: DisconnectReasonCode) {
        if self.is_v5() && !self.closed {
            self.send(
                v5_0::Disconnect::builder()
                    .reason_code(reason)
                    .build()
                    .map(Packet::from),
            );
        }
        self.closed = true;
    }

    /// Write out what is pending; false if the peer does not take it in time.
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let written = tokio::time::timeout(self.write_timeout, async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        })
        .await;
        if self.out.capacity() > 4 * READ_CHUNK {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        matches!(written, Ok(Ok(())))
    }

    /// Write out what is pending and end TLS with close_notify (bounded).
    async fn finish(&mut self) {
        if self.flush().await {
            let _ = tokio::time::timeout(self.write_timeout, self.stream.shutdown()).await;
        }
    }
}

/// Run one connection to its end.
pub(super) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    admission: Admission,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) {
    let limits = &shared.limits;
    let connect_timeout = Duration::from_secs(limits.tls_handshake_timeout_secs);
    let options = ConnectionOptions::new()
        .maximum_packet_size_recv(u32::try_from(limits.mqtt_max_packet_bytes).unwrap_or(u32::MAX))
        .receive_maximum(u16::try_from(limits.mqtt_inflight).unwrap_or(u16::MAX));
    let mut conn =
        mqtt::Connection::<mqtt::role::Server>::with_options(mqtt::Version::Undetermined, options);
    conn.set_auto_pub_response(false);
    conn.set_auto_ping_response(true);
    let mut io = Io {
        stream,
        conn,
        inbuf: Vec::new(),
        inpos: 0,
        out: Vec::new(),
        closed: false,
        write_timeout: connect_timeout.max(Duration::from_secs(10)),
    };

    // CONNECT, within the deadline.
    let deadline = Instant::now() + connect_timeout;
    let connect = loop {
        if io.closed || *stop.borrow() {
            io.finish().await;
            return;
        }
        if let Some(mut packets) = io.parse_one() {
            if !packets.is_empty() {
                break packets.swap_remove(0);
            }
            continue;
        }
        tokio::select! {
            more = tokio::time::timeout_at(deadline, io.read_more()) => {
                if !matches!(more, Ok(true)) {
                    tracing::debug!(%peer, "no CONNECT in time");
                    io.finish().await;
                    return;
                }
            }
            _ = stop.changed() => {
                io.finish().await;
                return;
            }
        }
    };
    let info = ConnectInfo::of(&connect);
    let Some(info) = info else {
        return; // the engine only lets CONNECT through first; anything else is a bug
    };
    let (device, schema, fingerprint) = match admission {
        Admission::Device {
            id,
            schema,
            fingerprint,
        } => (id, schema, fingerprint),
        Admission::Refused => {
            tracing::info!(%peer, "device connection refused: unknown or inactive certificate");
            refuse_connect(&mut io, ConnectRefusal::NotAuthorized);
            io.finish().await;
            return;
        }
        Admission::Unavailable => {
            refuse_connect(&mut io, ConnectRefusal::ServerUnavailable);
            io.finish().await;
            return;
        }
    };
    let topics = DeviceTopics::new(&device);
    if let Some(will) = &info.will {
        // The same ACL as PUBLISH (ACC-2); v5 is told precisely what it asked for that
        // is not offered (CONNACK says Maximum QoS 1, Retain Available 0).
        let refusal = if !topics.may_publish(&will.topic) {
            tracing::warn!(%device, "CONNECT with a will outside the device's topics refused");
            Some(ConnectRefusal::NotAuthorized)
        } else if io.is_v5() && will.qos == Qos::ExactlyOnce {
            Some(ConnectRefusal::QosNotSupported)
        } else if io.is_v5() && will.retain {
            Some(ConnectRefusal::RetainNotSupported)
        } else {
            None
        };
        if let Some(why) = refusal {
            refuse_connect(&mut io, why);
            io.finish().await;
            return;
        }
    }
    if info.auth_method {
        refuse_connect(&mut io, ConnectRefusal::BadAuthenticationMethod);
        io.finish().await;
        return;
    }
    if !io.is_v5() && info.client_id_empty && !info.clean {
        // MQTT-3.1.3-8: a zero-length client id needs a clean session.
        refuse_connect(&mut io, ConnectRefusal::IdentifierRejected);
        io.finish().await;
        return;
    }

    let max_keep_alive = limits.mqtt_keep_alive_max_secs.max(1);
    let keep_alive = match u64::from(info.keep_alive) {
        0 => max_keep_alive,
        k => k.min(max_keep_alive),
    };
    let Registration {
        id: registration,
        closed,
        commands,
        listening,
        updates,
        config,
    } = shared.fleet.register(&device);
    // Revocation sets the status, then drops live connections. Checking the status
    // again now that this connection is registered closes the gap since `admit`: a
    // revocation either finds this connection registered, or is visible here.
    let still = match shared.db.device_by_certificate(&fingerprint).await {
        // Connected with the current certificate while a renewal left the previous
        // one accepted: retire it (below, once CONNACK is decided).
        Ok(Some(d)) if d.id == device && d.status == DeviceStatus::Active => {
            Ok(d.previous_cert_sha256.is_some() && d.cert_sha256 == fingerprint)
        }
        Ok(_) => Err(ConnectRefusal::NotAuthorized),
        Err(e) => {
            tracing::warn!(%device, "device lookup failed: {e}");
            Err(ConnectRefusal::ServerUnavailable)
        }
    };
    let retire_previous = match still {
        Ok(retire) => retire,
        Err(why) => {
            refuse_connect(&mut io, why);
            io.finish().await;
            shared.fleet.unregister(&device, registration);
            return;
        }
    };
    if let Err(e) = shared.db.touch_device(&device).await {
        tracing::warn!(%device, "could not record last seen: {e}");
    }
    // Persistent session: v3.1.1 clean_session=0 keeps it for the hub's maximum; v5
    // asks for an expiry (0: ends with the connection), capped at the maximum.
    let max_expiry = limits.mqtt_session_expiry_max_secs;
    let session_expiry = if io.is_v5() {
        u64::from(info.session_expiry).min(max_expiry)
    } else if info.clean {
        0
    } else {
        max_expiry
    };
    // A read (cheap) first: a clean connection deletes only a session that exists.
    let restored = match shared.db.mqtt_session(&device, i64::MIN).await {
        Ok(Some(_)) if info.clean => shared.db.delete_mqtt_session(&device).await.map(|()| None),
        Ok(Some(s)) if s.1 > crate::db::now() => Ok(Some(s.0)),
        Ok(_) => Ok(None),
        Err(e) => Err(e),
    };
    let restored = match restored {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%device, "could not load the MQTT session: {e}");
            refuse_connect(&mut io, ConnectRefusal::ServerUnavailable);
            io.finish().await;
            shared.fleet.unregister(&device, registration);
            return;
        }
    };
    let session_present = restored.is_some();
    // An expired row is replaced or deleted at the end like a live one.
    let stored = restored.is_some();
    accept_connect(
        &mut io,
        &info,
        keep_alive,
        &device,
        session_present,
        session_expiry,
    );
    tracing::debug!(%device, %peer, v5 = io.is_v5(), session_present, "device connected");
    // First use of a renewed certificate: the one it replaced is no longer accepted.
    if retire_previous {
        match shared
            .db
            .retire_previous_certificate(&device, &fingerprint)
            .await
        {
            Ok(true) => {
                tracing::info!(%device, "renewed certificate in use; the previous one is retired")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(%device, "could not retire the previous certificate: {e}"),
        }
    }

    // PRIV-3: optional fields the owner switched off are not stored from the first
    // message on.
    let disabled = match shared.db.disabled_fields(&device).await {
        Ok(fields) => fields.into_iter().collect(),
        Err(e) => {
            tracing::warn!(%device, "could not load the device's telemetry settings: {e}");
            refuse_connect(&mut io, ConnectRefusal::ServerUnavailable);
            io.finish().await;
            shared.fleet.unregister(&device, registration);
            return;
        }
    };
    // UPD-3: the owner's automatic-install switch travels in the same config message.
    let auto_update = match crate::updates::auto_update::config_value(&shared.db, &device).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(%device, "could not load the device's update setting: {e}");
            refuse_connect(&mut io, ConnectRefusal::ServerUnavailable);
            io.finish().await;
            shared.fleet.unregister(&device, registration);
            return;
        }
    };
    let mut session = Live {
        auto_update,
        io,
        shared: &shared,
        device: device.clone(),
        topics,
        schema,
        pending: VecDeque::new(),
        inflight: limits.mqtt_inflight.max(1),
        bucket: shared
            .budgets
            .bucket(&device, limits.mqtt_publishes_per_minute),
        subscriptions: restored
            .unwrap_or_default()
            .into_iter()
            .map(|(f, q)| {
                let qos = if q == 0 {
                    Qos::AtMostOnce
                } else {
                    Qos::AtLeastOnce
                };
                (f, qos)
            })
            .collect(),
        silence: Duration::from_millis(keep_alive * 1500),
        last_heard: Instant::now(),
        end: None,
        peer,
        commands_topic: DeviceTopics::new(&device).commands(),
        commands,
        listening,
        update_topic: DeviceTopics::new(&device).update(),
        updates,
        outbound: HashMap::new(),
        outbox: VecDeque::new(),
        loaded: HashSet::new(),
        fingerprint,
        certificate_topic: DeviceTopics::new(&device).certificate(),
        will: info.will,
        session_expiry,
        hub_stopping: false,
        renewal_refusal_audited: false,
        registration,
        stored,
        config_topic: DeviceTopics::new(&device).config(),
        disabled,
    };
    // The telemetry settings and the update offer are sent when the device subscribes to
    // their topics (the agent does on every connection), not with a restored
    // subscription here: a client may refuse a message that arrives together with its
    // CONNACK.
    if session.commands_qos().is_some() {
        // A restored subscription covers the commands: send what is pending.
        session.start_listening().await;
    }
    session.serve(closed, config, &mut stop).await;
    session.listening.store(false, Ordering::Release);
    session.end_session().await;
    shared.budgets.release(&device, session.bucket);
    shared.fleet.unregister(&device, registration);
    tracing::debug!(%device, "device disconnected");
}

/// The parts of a CONNECT packet the session looks at.
struct ConnectInfo {
    keep_alive: u16,
    client_id_empty: bool,
    clean: bool,
    will: Option<Will>,
    /// v5 Session Expiry Interval (0 when absent); v3.1.1 uses `clean`.
    session_expiry: u32,
    /// v5 enhanced authentication was asked for (not offered: the certificate is it).
    auth_method: bool,
}

impl ConnectInfo {
    fn of(packet: &Packet) -> Option<Self> {
        match packet {
            Packet::V3_1_1Connect(c) => Some(Self {
                keep_alive: c.keep_alive(),
                client_id_empty: c.client_id().is_empty(),
                clean: c.clean_session(),
                will: Will::of(
                    c.will_topic(),
                    c.will_payload(),
                    c.will_qos(),
                    c.will_retain(),
                ),
                session_expiry: 0,
                auth_method: false,
            }),
            Packet::V5_0Connect(c) => Some(Self {
                keep_alive: c.keep_alive(),
                client_id_empty: c.client_id().is_empty(),
                clean: c.clean_start(),
                will: Will::of(
                    c.will_topic(),
                    c.will_payload(),
                    c.will_qos(),
                    c.will_retain(),
                ),
                session_expiry: c
                    .props()
                    .iter()
                    .find_map(|p| match p {
                        Property::SessionExpiryInterval(e) => Some(e.val()),
                        _ => None,
                    })
                    .unwrap_or(0),
                auth_method: c
                    .props()
                    .iter()
                    .any(|p| matches!(p, Property::AuthenticationMethod(_))),
            }),
            _ => None,
        }
    }
}

/// A will message from CONNECT: recorded as a device event if the connection ends
/// without a normal DISCONNECT (v5: also on DISCONNECT with reason 0x04).
struct Will {
    topic: String,
    payload: Vec<u8>,
    qos: Qos,
    retain: bool,
}

impl Will {
    fn of(topic: Option<&str>, payload: Option<&[u8]>, qos: Qos, retain: bool) -> Option<Self> {
        Some(Self {
            topic: topic?.to_owned(),
            payload: payload.unwrap_or_default().to_vec(),
            qos,
            retain,
        })
    }
}

enum ConnectRefusal {
    NotAuthorized,
    QosNotSupported,
    RetainNotSupported,
    ServerUnavailable,
    BadAuthenticationMethod,
    IdentifierRejected,
}

fn refuse_connect<S: AsyncRead + AsyncWrite + Unpin>(io: &mut Io<S>, why: ConnectRefusal) {
    let packet = if io.is_v5() {
        let reason = match why {
            ConnectRefusal::NotAuthorized => ConnectReasonCode::NotAuthorized,
            ConnectRefusal::ServerUnavailable => ConnectReasonCode::ServerUnavailable,
            ConnectRefusal::BadAuthenticationMethod => ConnectReasonCode::BadAuthenticationMethod,
            ConnectRefusal::IdentifierRejected => ConnectReasonCode::ClientIdentifierNotValid,
            ConnectRefusal::QosNotSupported => ConnectReasonCode::QosNotSupported,
            ConnectRefusal::RetainNotSupported => ConnectReasonCode::RetainNotSupported,
        };
        v5_0::Connack::builder()
            .session_present(false)
            .reason_code(reason)
            .build()
            .map(Packet::from)
    } else {
        let code = match why {
            ConnectRefusal::IdentifierRejected => ConnectReturnCode::IdentifierRejected,
            ConnectRefusal::ServerUnavailable => ConnectReturnCode::ServerUnavailable,
            _ => ConnectReturnCode::NotAuthorized,
        };
        v3_1_1::Connack::builder()
            .session_present(false)
            .return_code(code)
            .build()
            .map(Packet::from)
    };
    io.send(packet);
    io.closed = true;
}

fn accept_connect<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Io<S>,
    info: &ConnectInfo,
    keep_alive: u64,
    device: &DeviceId,
    session_present: bool,
    session_expiry: u64,
) {
    let packet = if io.is_v5() {
        // Maximum Packet Size and Receive Maximum are added by the engine from its options.
        let mut props: Vec<Property> = Vec::new();
        let mut push = |p: Result<Property, MqttError>| {
            if let Ok(p) = p {
                props.push(p);
            }
        };
        push(pkt::MaximumQos::new(1).map(Property::from));
        push(pkt::RetainAvailable::new(0).map(Property::from));
        push(pkt::SharedSubscriptionAvailable::new(0).map(Property::from));
        if u64::from(info.keep_alive) != keep_alive {
            push(
                pkt::ServerKeepAlive::new(u16::try_from(keep_alive).unwrap_or(u16::MAX))
                    .map(Property::from),
            );
        }
        if info.client_id_empty {
            push(pkt::AssignedClientIdentifier::new(device.as_str()).map(Property::from));
        }
        if u64::from(info.session_expiry) != session_expiry {
            // The hub caps the expiry: say which one applies.
            push(
                pkt::SessionExpiryInterval::new(u32::try_from(session_expiry).unwrap_or(u32::MAX))
                    .map(Property::from),
            );
        }
        v5_0::Connack::builder()
            .session_present(session_present)
            .reason_code(ConnectReasonCode::Success)
            .props(props)
            .build()
            .map(Packet::from)
    } else {
        v3_1_1::Connack::builder()
            .session_present(session_present)
            .return_code(ConnectReturnCode::Accepted)
            .build()
            .map(Packet::from)
    };
    io.send(packet);
}

/// A QoS 1 message whose PUBACK is not sent yet, in arrival order.
enum Pending {
    /// Waiting for the telemetry writer's commit.
    Stored {
        packet_id: u16,
        ack: oneshot::Receiver<bool>,
    },
    /// Decided already (refused on v5, or not stored); sent when its turn comes.
    Reply {
        packet_id: u16,
        reason: PubackReasonCode,
    },
}

/// How the session ends.
enum End {
    /// Send the PUBACKs of messages already stored, then (v5) DISCONNECT and close.
    Graceful(Option<DisconnectReasonCode>),
    /// Close now (protocol error, peer gone, revoked, storage failed).
    Now(Option<DisconnectReasonCode>),
}

/// A connected device's session.
struct Live<'a, S> {
    io: Io<S>,
    shared: &'a Shared,
    device: DeviceId,
    topics: DeviceTopics,
    schema: Schema,
    pending: VecDeque<Pending>,
    inflight: usize,
    bucket: SharedBucket,
    /// Filters held, with the QoS granted.
    subscriptions: Vec<(String, Qos)>,
    silence: Duration,
    last_heard: Instant,
    end: Option<End>,
    peer: std::net::SocketAddr,
    /// `devices/{id}/commands`.
    commands_topic: String,
    /// Command payloads from [`Fleet::send_command`].
    commands: mpsc::Receiver<Vec<u8>>,
    /// Set while a subscription covers the commands topic (read by the fleet).
    listening: Arc<AtomicBool>,
    /// `devices/{id}/update`.
    update_topic: String,
    /// Update offers from [`crate::mqtt::Fleet::send_update`].
    updates: mpsc::Receiver<Vec<u8>>,
    /// QoS 1 commands published and not yet acknowledged: packet id → seq.
    outbound: HashMap<u16, u64>,
    /// Commands waiting for a free outbound slot: (seq, payload).
    outbox: VecDeque<(u64, Vec<u8>)>,
    /// Seqs sent from the database when the subscription was made, so the same
    /// command arriving through the fleet queue as well is not sent twice.
    loaded: HashSet<u64>,
    /// SHA-256 of the certificate this connection presented.
    fingerprint: String,
    /// `devices/{id}/certificate`.
    certificate_topic: String,
    /// Recorded when the connection ends ungracefully; dropped by a normal DISCONNECT.
    will: Option<Will>,
    /// Seconds the session outlives the connection (0: it ends with it).
    session_expiry: u64,
    /// The hub is shutting down (the will is not the device's doing then).
    hub_stopping: bool,
    /// One refused renewal per connection is audited; more are only logged.
    renewal_refusal_audited: bool,
    /// This connection's number in the fleet registry.
    registration: u64,
    /// A row for this session may exist in `mqtt_sessions` (restored or saved), so a
    /// session that ends with the connection must delete it.
    stored: bool,
    /// `devices/{id}/config`.
    config_topic: String,
    /// Optional telemetry fields the owner switched off (PRIV-3): dropped before
    /// storage and sent to the device so it stops sending them.
    disabled: HashSet<String>,
    /// The owner's automatic-install switch (UPD-3), sent with the telemetry settings;
    /// `None` when the owner never set one in the console.
    auto_update: Option<serde_json::Value>,
}

/// The commit result of the oldest pending message (never resolves if it has none).
async fn front_ack(pending: &mut VecDeque<Pending>) -> bool {
    match pending.front_mut() {
        Some(Pending::Stored { ack, .. }) => ack.await.unwrap_or(false),
        _ => std::future::pending().await,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Live<'_, S> {
    async fn serve(
        &mut self,
        mut closed: watch::Receiver<bool>,
        mut config: watch::Receiver<u64>,
        stop: &mut watch::Receiver<bool>,
    ) {
        if *closed.borrow() || *stop.borrow() {
            self.end = Some(End::Now(Some(DisconnectReasonCode::AdministrativeAction)));
        }
        while self.end.is_none() {
            // Parse what is buffered, as far as the inflight window allows.
            while self.end.is_none() && self.pending.len() < self.inflight {
                let Some(packets) = self.io.parse_one() else {
                    break;
                };
                for packet in packets {
                    self.last_heard = Instant::now();
                    self.on_packet(packet).await;
                    if self.end.is_some() {
                        break;
                    }
                }
                if self.io.closed && self.end.is_none() {
                    self.end = Some(End::Now(None));
                }
            }
            self.send_decided();
            self.send_commands();
            if !self.io.flush().await {
                return;
            }
            if self.end.is_some() {
                break;
            }
            let can_read = self.pending.len() < self.inflight && !self.io.buffered();
            let awaiting_commit = matches!(self.pending.front(), Some(Pending::Stored { .. }));
            let silent_until = self.last_heard + self.silence;
            tokio::select! {
                _ = closed.changed() => {
                    // Revoked, or replaced by a newer connection of the same device.
                    let reason = if self.shared.fleet.is_connected(&self.device) {
                        DisconnectReasonCode::SessionTakenOver
                    } else {
                        DisconnectReasonCode::AdministrativeAction
                    };
                    tracing::info!(device = %self.device, "device connection dropped by the hub");
                    self.end = Some(End::Now(Some(reason)));
                }
                _ = stop.changed() => {
                    self.hub_stopping = true;
                    self.end = Some(End::Now(Some(DisconnectReasonCode::ServerShuttingDown)));
                }
                committed = front_ack(&mut self.pending), if awaiting_commit => {
                    self.last_heard = Instant::now();
                    if committed {
                        if let Some(Pending::Stored { packet_id, .. }) = self.pending.pop_front() {
                            self.io.puback(packet_id, PubackReasonCode::Success);
                        }
                    } else {
                        // Not stored: no PUBACK; the device will send it again.
                        self.end = Some(End::Now(Some(DisconnectReasonCode::UnspecifiedError)));
                    }
                }
                Some(payload) = self.commands.recv() => self.on_command(payload),
                Some(payload) = self.updates.recv() => self.send_offer(payload),
                Ok(()) = config.changed() => self.reload_config().await,
                more = self.io.read_more(), if can_read => {
                    if !more {
                        self.end = Some(End::Now(None));
                    }
                }
                _ = tokio::time::sleep_until(silent_until) => {
                    tracing::debug!(device = %self.device, "keep-alive expired");
                    self.end = Some(End::Graceful(Some(DisconnectReasonCode::KeepAliveTimeout)));
                }
            }
        }
        match self.end.take() {
            Some(End::Graceful(reason)) => {
                self.drain().await;
                if let Some(reason) = reason {
                    self.io.disconnect(reason);
                }
            }
            Some(End::Now(Some(reason))) => self.io.disconnect(reason),
            Some(End::Now(None)) | None => {}
        }
        self.io.finish().await;
    }

    /// Send PUBACKs whose turn has come and that need no commit.
    fn send_decided(&mut self) {
        while let Some(Pending::Reply { packet_id, reason }) = self.pending.front() {
            let (packet_id, reason) = (*packet_id, *reason);
            self.pending.pop_front();
            self.io.puback(packet_id, reason);
        }
    }

    /// Before a graceful close: acknowledge what was stored (bounded wait).
    async fn drain(&mut self) {
        let deadline = Instant::now() + self.io.write_timeout;
        while let Some(front) = self.pending.pop_front() {
            match front {
                Pending::Reply { packet_id, reason } => self.io.puback(packet_id, reason),
                Pending::Stored { packet_id, ack } => {
                    match tokio::time::timeout_at(deadline, ack).await {
                        Ok(Ok(true)) => self.io.puback(packet_id, PubackReasonCode::Success),
                        _ => break,
                    }
                }
            }
        }
        self.pending.clear();
    }

    async fn on_packet(&mut self, packet: Packet) {
        match packet {
            Packet::V3_1_1Publish(p) => {
                let payload = p.payload().as_slice();
                self.on_publish(p.qos(), p.packet_id(), p.topic_name(), payload, false)
                    .await;
            }
            Packet::V5_0Publish(p) => {
                let payload = p.payload().as_slice();
                self.on_publish(p.qos(), p.packet_id(), p.topic_name(), payload, p.retain())
                    .await;
            }
            Packet::V3_1_1Subscribe(s) => {
                let filters = s
                    .entries()
                    .iter()
                    .map(|e| (e.topic_filter().to_owned(), e.sub_opts().qos()))
                    .collect();
                self.on_subscribe(s.packet_id(), filters).await;
            }
            Packet::V5_0Subscribe(s) => {
                let filters = s
                    .entries()
                    .iter()
                    .map(|e| (e.topic_filter().to_owned(), e.sub_opts().qos()))
                    .collect();
                self.on_subscribe(s.packet_id(), filters).await;
            }
            Packet::V3_1_1Unsubscribe(u) => {
                let filters = u.entries().iter().map(|f| f.as_str().to_owned()).collect();
                self.on_unsubscribe(u.packet_id(), filters).await;
            }
            Packet::V5_0Unsubscribe(u) => {
                let filters = u.entries().iter().map(|f| f.as_str().to_owned()).collect();
                self.on_unsubscribe(u.packet_id(), filters).await;
            }
            Packet::V3_1_1Puback(a) => self.on_puback(a.packet_id(), true).await,
            Packet::V5_0Puback(a) => {
                let accepted = matches!(
                    a.reason_code(),
                    None | Some(
                        PubackReasonCode::Success | PubackReasonCode::NoMatchingSubscribers
                    )
                );
                self.on_puback(a.packet_id(), accepted).await;
            }
            // PINGRESP is sent by the engine; the packet only refreshes `last_heard`.
            Packet::V3_1_1Pingreq(_) | Packet::V5_0Pingreq(_) => {}
            Packet::V3_1_1Disconnect(_) => {
                self.will = None; // a normal DISCONNECT discards the will
                self.end = Some(End::Now(None));
            }
            Packet::V5_0Disconnect(d) => {
                if d.reason_code() != Some(DisconnectReasonCode::DisconnectWithWillMessage) {
                    self.will = None;
                }
                // v5 may shorten (or, from non-zero, change) the session expiry.
                if self.session_expiry > 0
                    && let Some(expiry) = d.props().iter().flatten().find_map(|p| match p {
                        Property::SessionExpiryInterval(e) => Some(e.val()),
                        _ => None,
                    })
                {
                    self.session_expiry =
                        u64::from(expiry).min(self.shared.limits.mqtt_session_expiry_max_secs);
                }
                self.end = Some(End::Now(None));
            }
            other => {
                tracing::debug!(device = %self.device, "unexpected {:?} from a device", other.packet_type());
                self.end = Some(End::Now(Some(DisconnectReasonCode::ProtocolError)));
            }
        }
    }

    /// Refuse one PUBLISH: v5 QoS 1 gets a negative PUBACK in its turn; v5 QoS 0 gets
    /// DISCONNECT with the reason; 3.1.1 (no negative PUBACK) ends the connection.
    fn refuse(
        &mut self,
        qos: Qos,
        packet_id: Option<u16>,
        puback: PubackReasonCode,
        disconnect: DisconnectReasonCode,
    ) {
        match (self.io.is_v5(), qos, packet_id) {
            (true, Qos::AtLeastOnce, Some(packet_id)) => self.pending.push_back(Pending::Reply {
                packet_id,
                reason: puback,
            }),
            (true, ..) => self.end = Some(End::Graceful(Some(disconnect))),
            (false, ..) => self.end = Some(End::Graceful(None)),
        }
    }

    async fn on_publish(
        &mut self,
        qos: Qos,
        packet_id: Option<u16>,
        topic: &str,
        payload: &[u8],
        retain: bool,
    ) {
        if qos == Qos::ExactlyOnce {
            // Not offered (v5 CONNACK says Maximum QoS 1; 3.1.1 cannot say it).
            tracing::debug!(device = %self.device, "QoS 2 PUBLISH refused");
            self.end = Some(End::Graceful(Some(DisconnectReasonCode::QosNotSupported)));
            return;
        }
        if retain {
            // v5 only (the 3.1.1 flag is ignored): CONNACK said Retain Available 0.
            self.end = Some(End::Graceful(Some(
                DisconnectReasonCode::RetainNotSupported,
            )));
            return;
        }
        if !rate::take(&self.bucket) {
            tracing::warn!(device = %self.device, "device publish rate over the limit");
            self.refuse(
                qos,
                packet_id,
                PubackReasonCode::QuotaExceeded,
                DisconnectReasonCode::MessageRateTooHigh,
            );
            return;
        }
        let ack_after = |pending: &mut VecDeque<Pending>| {
            if let (Qos::AtLeastOnce, Some(packet_id)) = (qos, packet_id) {
                pending.push_back(Pending::Reply {
                    packet_id,
                    reason: PubackReasonCode::Success,
                });
            }
        };
        match self.topics.publish(topic) {
            None => {
                tracing::warn!(device = %self.device, topic = %truncate(topic), "PUBLISH outside the device's topics refused");
                self.refuse(
                    qos,
                    packet_id,
                    PubackReasonCode::NotAuthorized,
                    DisconnectReasonCode::NotAuthorized,
                );
            }
            Some(OwnTopic::Events) if crate::devices_lifecycle::is_factory_reset(payload) => {
                // DATA-3: decommissioned and audited before the PUBACK; then the
                // connection is closed (no DISCONNECT, so the PUBACK is read first).
                let source = self.peer.ip().to_string();
                if let Err(e) =
                    crate::devices_lifecycle::factory_reset(&self.shared.db, &self.device, &source)
                        .await
                {
                    tracing::warn!(device = %self.device, "could not decommission after a reset: {e}");
                    self.end = Some(End::Now(Some(DisconnectReasonCode::UnspecifiedError)));
                    return;
                }
                ack_after(&mut self.pending);
                self.end = Some(End::Graceful(None));
            }
            Some(OwnTopic::Events) => match self.on_event(payload).await {
                Err(e) => {
                    // Not recorded: no PUBACK; the device sends it again.
                    tracing::warn!(device = %self.device, "could not record an event: {e}");
                    self.end = Some(End::Now(Some(DisconnectReasonCode::UnspecifiedError)));
                }
                Ok(true) => ack_after(&mut self.pending),
                Ok(false) => self.refuse(
                    qos,
                    packet_id,
                    PubackReasonCode::PayloadFormatInvalid,
                    DisconnectReasonCode::PayloadFormatInvalid,
                ),
            },
            Some(OwnTopic::CertificateCsr) => match self.on_csr(payload).await {
                Err(e) => {
                    tracing::warn!(device = %self.device, "certificate renewal failed: {e}");
                    self.end = Some(End::Now(Some(DisconnectReasonCode::UnspecifiedError)));
                }
                Ok(None) => ack_after(&mut self.pending),
                Ok(Some((puback, disconnect))) => self.refuse(qos, packet_id, puback, disconnect),
            },
            Some(OwnTopic::UpdateStatus) => {
                match crate::updates::parse_status(&self.shared.db, &self.device, payload).await {
                    Err(e) => {
                        tracing::warn!(device = %self.device, "could not check an update report: {e}");
                        self.end = Some(End::Now(Some(DisconnectReasonCode::UnspecifiedError)));
                    }
                    Ok(Err(why)) => {
                        tracing::info!(device = %self.device, "update report refused: {why}");
                        self.refuse(
                            qos,
                            packet_id,
                            PubackReasonCode::PayloadFormatInvalid,
                            DisconnectReasonCode::PayloadFormatInvalid,
                        );
                    }
                    Ok(Ok(report)) => {
                        if let Err(e) = self
                            .shared
                            .db
                            .insert_update_report(&self.device, &report)
                            .await
                        {
                            tracing::warn!(device = %self.device, "could not store an update report: {e}");
                            self.end = Some(End::Now(Some(DisconnectReasonCode::UnspecifiedError)));
                            return;
                        }
                        ack_after(&mut self.pending);
                    }
                }
            }
            Some(OwnTopic::State) => {
                if let Err(e) = self.on_state(payload).await {
                    tracing::warn!(device = %self.device, "could not record the device's version: {e}");
                    self.end = Some(End::Now(Some(DisconnectReasonCode::UnspecifiedError)));
                    return;
                }
                ack_after(&mut self.pending);
            }
            Some(OwnTopic::Telemetry) => match self.schema.validate(payload) {
                Err(why) => {
                    tracing::info!(device = %self.device, "telemetry refused: {why}");
                    if let Err(e) = self.shared.db.add_rejected_messages(&self.device, 1).await {
                        tracing::warn!(device = %self.device, "could not count a refused message: {e}");
                    }
                    self.refuse(
                        qos,
                        packet_id,
                        PubackReasonCode::PayloadFormatInvalid,
                        DisconnectReasonCode::PayloadFormatInvalid,
                    );
                }
                Ok(json) => {
                    let Some(json) = self.without_disabled(json) else {
                        // Only switched-off fields: acknowledged, nothing stored.
                        ack_after(&mut self.pending);
                        return;
                    };
                    let (tx, rx) = match (qos, packet_id) {
                        (Qos::AtLeastOnce, Some(id)) => {
                            let (tx, rx) = oneshot::channel();
                            (Some(tx), Some((id, rx)))
                        }
                        _ => (None, None),
                    };
                    let queued = self
                        .shared
                        .writer
                        .submit(self.device.clone(), telemetry::now_ms(), json, tx)
                        .await;
                    if queued.is_err() {
                        self.end = Some(End::Now(Some(DisconnectReasonCode::ServerShuttingDown)));
                        return;
                    }
                    if let Some((packet_id, ack)) = rx {
                        self.pending.push_back(Pending::Stored { packet_id, ack });
                    }
                }
            },
        }
    }

    async fn on_subscribe(&mut self, packet_id: u16, filters: Vec<(String, Qos)>) {
        let was_listening = self.commands_qos().is_some();
        // A subscription covering the update topic gets the current offer, if any (the
        // agent ignores an offer it already has).
        let subscribed_update = filters
            .iter()
            .any(|(f, _)| filter_matches(f, &self.update_topic) && self.topics.may_subscribe(f));
        // A new subscription covering the config topic gets the current settings.
        let subscribed_config = filters
            .iter()
            .any(|(f, _)| filter_matches(f, &self.config_topic) && self.topics.may_subscribe(f));
        let too_many = filters.len() > self.shared.limits.mqtt_topics_per_subscribe;
        let mut granted: Vec<Result<Qos, SubackReasonCode>> = Vec::with_capacity(filters.len());
        for (filter, qos) in filters {
            let result = if too_many {
                Err(SubackReasonCode::QuotaExceeded)
            } else if !self.topics.may_subscribe(&filter) {
                tracing::warn!(device = %self.device, filter = %truncate(&filter), "SUBSCRIBE outside the device's topics refused");
                Err(SubackReasonCode::NotAuthorized)
            } else if let Some(held) = self.subscriptions.iter_mut().find(|(f, _)| *f == filter) {
                held.1 = qos.min(Qos::AtLeastOnce);
                Ok(held.1)
            } else if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                Err(SubackReasonCode::QuotaExceeded)
            } else {
                self.subscriptions.push((filter, qos.min(Qos::AtLeastOnce)));
                Ok(qos.min(Qos::AtLeastOnce))
            };
            granted.push(result);
        }
        let packet = if self.io.is_v5() {
            let codes = granted
                .iter()
                .map(|g| match g {
                    Ok(Qos::AtMostOnce) => SubackReasonCode::GrantedQos0,
                    Ok(_) => SubackReasonCode::GrantedQos1,
                    Err(code) => *code,
                })
                .collect::<Vec<_>>();
            v5_0::Suback::builder()
                .packet_id(packet_id)
                .reason_codes(codes)
                .build()
                .map(Packet::from)
        } else {
            let codes = granted
                .iter()
                .map(|g| match g {
                    Ok(Qos::AtMostOnce) => SubackReturnCode::SuccessMaximumQos0,
                    Ok(_) => SubackReturnCode::SuccessMaximumQos1,
                    Err(_) => SubackReturnCode::Failure,
                })
                .collect::<Vec<_>>();
            v3_1_1::Suback::builder()
                .packet_id(packet_id)
                .return_codes(codes)
                .build()
                .map(Packet::from)
        };
        self.io.send(packet);
        if self.session_expiry > 0 {
            self.save_session().await;
        }
        if !was_listening && self.commands_qos().is_some() {
            self.start_listening().await;
        }
        if subscribed_config {
            self.send_config();
        }
        if subscribed_update && self.qos_for(&self.update_topic).is_some() {
            self.offer_update().await;
        }
    }

    /// The device now listens for offers: send the release [`crate::updates::offer`]
    /// picks for it, if any.
    async fn offer_update(&mut self) {
        let db = &self.shared.db;
        let offer = match db.device(&self.device).await {
            Ok(Some(device)) => crate::updates::offer(db, &device).await,
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match offer {
            Ok(Some(offer)) => self.send_offer(offer.payload()),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(device = %self.device, "could not decide an update offer: {e}")
            }
        }
    }

    /// Publish an update offer at the granted QoS (at most 1). A QoS 1 offer whose
    /// PUBACK is lost is offered again at the next subscription.
    fn send_offer(&mut self, payload: Vec<u8>) {
        let Some(qos) = self.qos_for(&self.update_topic) else {
            return;
        };
        let packet_id = if qos == Qos::AtLeastOnce {
            match self.io.conn.acquire_packet_id() {
                Ok(id) => Some(id),
                Err(_) => {
                    tracing::warn!(device = %self.device, "no packet id free for an update offer");
                    return;
                }
            }
        } else {
            None
        };
        let topic = self.update_topic.clone();
        self.publish(topic, payload, qos, packet_id);
        tracing::debug!(device = %self.device, "update offer sent");
    }

    /// The owner changed the device's telemetry settings: reload them and tell the
    /// device.
    async fn reload_config(&mut self) {
        let loaded = match self.shared.db.disabled_fields(&self.device).await {
            Ok(fields) => crate::updates::auto_update::config_value(&self.shared.db, &self.device)
                .await
                .map(|a| (fields, a)),
            Err(e) => Err(e),
        };
        match loaded {
            Ok((fields, auto_update)) => {
                self.disabled = fields.into_iter().collect();
                self.auto_update = auto_update;
                if self.qos_for(&self.config_topic).is_some() {
                    self.send_config();
                }
            }
            Err(e) => {
                // Fail closed: without the settings, nothing optional can be known to
                // be allowed, so the connection ends and the device reconnects.
                tracing::warn!(device = %self.device, "could not reload telemetry settings: {e}");
                self.end = Some(End::Now(Some(DisconnectReasonCode::UnspecifiedError)));
            }
        }
    }

    /// Publish `{"disabled_fields": [...]}` on `devices/{id}/config` (PRIV-3).
    fn send_config(&mut self) {
        let Some(qos) = self.qos_for(&self.config_topic) else {
            return;
        };
        let mut fields: Vec<&String> = self.disabled.iter().collect();
        fields.sort();
        let mut doc = serde_json::json!({ "disabled_fields": fields });
        if let Some(choice) = &self.auto_update {
            doc["auto_update"] = choice.clone();
        }
        let payload = doc.to_string().into_bytes();
        let packet_id = if qos == Qos::AtLeastOnce {
            match self.io.conn.acquire_packet_id() {
                Ok(id) => Some(id),
                Err(_) => {
                    tracing::warn!(device = %self.device, "no packet id free for the telemetry settings");
                    return;
                }
            }
        } else {
            None
        };
        let topic = self.config_topic.clone();
        self.publish(topic, payload, qos, packet_id);
    }

    /// The validated payload without switched-off fields; `None` when nothing is left.
    fn without_disabled(&self, json: String) -> Option<String> {
        if self.disabled.is_empty() {
            return Some(json);
        }
        let Ok(serde_json::Value::Object(mut map)) = serde_json::from_str(&json) else {
            return Some(json);
        };
        let before = map.len();
        map.retain(|name, _| !self.disabled.contains(name));
        if map.len() < before {
            self.shared.fleet.note_switched_off_received();
        }
        (!map.is_empty()).then(|| serde_json::Value::Object(map).to_string())
    }

    async fn on_unsubscribe(&mut self, packet_id: u16, filters: Vec<String>) {
        let codes = filters
            .iter()
            .map(
                |filter| match self.subscriptions.iter().position(|(s, _)| s == filter) {
                    Some(i) => {
                        self.subscriptions.swap_remove(i);
                        UnsubackReasonCode::Success
                    }
                    None => UnsubackReasonCode::NoSubscriptionExisted,
                },
            )
            .collect::<Vec<_>>();
        let packet = if self.io.is_v5() {
            v5_0::Unsuback::builder()
                .packet_id(packet_id)
                .reason_codes(codes)
                .build()
                .map(Packet::from)
        } else {
            v3_1_1::Unsuback::builder()
                .packet_id(packet_id)
                .build()
                .map(Packet::from)
        };
        self.io.send(packet);
        if self.commands_qos().is_none() {
            self.listening.store(false, Ordering::Release);
            self.outbox.clear();
        }
        if self.session_expiry > 0 {
            self.save_session().await;
        }
    }

    /// The QoS at which commands reach the device: the highest granted to a filter
    /// covering its commands topic, or `None` when none covers it.
    fn commands_qos(&self) -> Option<Qos> {
        self.qos_for(&self.commands_topic)
    }

    /// The device now listens for commands: tell the fleet, then send what is pending
    /// in the database (a command stored after this query arrives through the queue).
    async fn start_listening(&mut self) {
        self.listening.store(true, Ordering::Release);
        // Anything queued before now is in the database too (the API stores first).
        while self.commands.try_recv().is_ok() {}
        match self.shared.db.pending_commands(&self.device).await {
            Ok(pending) => {
                if self.loaded.len() > 4 * MAX_OUTBOX {
                    self.loaded.clear();
                }
                for command in pending {
                    self.loaded.insert(command.seq);
                    self.queue_command(command.seq, command.payload());
                }
            }
            Err(e) => {
                tracing::warn!(device = %self.device, "could not load pending commands: {e}")
            }
        }
    }

    /// A payload from the fleet queue.
    fn on_command(&mut self, payload: Vec<u8>) {
        if self.commands_qos().is_none() {
            return; // stays pending in the database; sent on the next subscription
        }
        let seq = serde_json::from_slice::<serde_json::Value>(&payload)
            .ok()
            .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64));
        match seq {
            Some(seq) if self.loaded.remove(&seq) => {} // sent from the database already
            Some(seq) => self.queue_command(seq, payload),
            None => tracing::warn!(device = %self.device, "command payload without a seq dropped"),
        }
    }

    fn queue_command(&mut self, seq: u64, payload: Vec<u8>) {
        if self.outbox.len() >= MAX_OUTBOX {
            tracing::warn!(device = %self.device, seq, "command outbox full; left pending");
            return;
        }
        self.outbox.push_back((seq, payload));
    }

    /// Publish waiting commands as far as the outbound window allows.
    fn send_commands(&mut self) {
        let Some(qos) = self.commands_qos() else {
            return;
        };
        while !self.io.closed && self.end.is_none() && self.outbound.len() < MAX_OUTBOUND {
            if qos == Qos::AtLeastOnce
                && self
                    .io
                    .conn
                    .get_receive_maximum_vacancy_for_send()
                    .is_some_and(|v| v == 0)
            {
                return;
            }
            let Some((seq, payload)) = self.outbox.pop_front() else {
                return;
            };
            let packet_id = if qos == Qos::AtLeastOnce {
                match self.io.conn.acquire_packet_id() {
                    Ok(id) => Some(id),
                    Err(_) => {
                        self.outbox.push_front((seq, payload));
                        return;
                    }
                }
            } else {
                None
            };
            let topic = self.commands_topic.clone();
            self.publish(topic, payload, qos, packet_id);
            if let Some(id) = packet_id {
                self.outbound.insert(id, seq);
            }
            tracing::debug!(device = %self.device, seq, "command sent");
        }
    }

    /// The device acknowledged a command: record it delivered.
    async fn on_puback(&mut self, packet_id: u16, accepted: bool) {
        let Some(seq) = self.outbound.remove(&packet_id) else {
            return;
        };
        if !accepted {
            tracing::info!(device = %self.device, seq, "the device refused a command");
            return;
        }
        if let Err(e) = self
            .shared
            .db
            .mark_command_delivered(&self.device, seq)
            .await
        {
            tracing::warn!(device = %self.device, seq, "could not record a command delivered: {e}");
        }
    }

    /// A state report: the maker's firmware version and the agent's version (SUP-3).
    async fn on_state(&mut self, payload: &[u8]) -> crate::error::Result<()> {
        crate::devices_lifecycle::record_state(&self.shared.db, &self.device, payload).await
    }

    /// An event: a command result is validated and recorded against its command;
    /// any other event must be valid ([`events::validate`]) and is stored. False: the
    /// event is refused (too large, not a JSON object, no valid name).
    async fn on_event(&mut self, payload: &[u8]) -> crate::error::Result<bool> {
        if payload.len() > MAX_EVENT_BYTES {
            tracing::info!(device = %self.device, "event larger than {MAX_EVENT_BYTES} bytes refused");
            return Ok(false);
        }
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(payload) else {
            tracing::info!(device = %self.device, "event that is not JSON refused");
            return Ok(false);
        };
        let is_result = doc.get("command_seq").is_some_and(|v| !v.is_null());
        if !is_result {
            return match events::validate(&doc) {
                Ok(name) => {
                    events::record(
                        &self.shared.db,
                        &self.device,
                        EventSource::Device,
                        &name,
                        &doc,
                    )
                    .await?;
                    Ok(true)
                }
                Err(why) => {
                    tracing::info!(device = %self.device, "event refused: {why:?}");
                    Ok(false)
                }
            };
        }
        let serde_json::Value::Object(event) = doc else {
            return Ok(false);
        };
        let seq = event.get("command_seq").and_then(serde_json::Value::as_u64);
        let result = event
            .get("result")
            .and_then(serde_json::Value::as_str)
            .and_then(CommandResult::parse);
        let (Some(seq), Some(result)) = (seq, result) else {
            tracing::info!(device = %self.device, "malformed command result ignored");
            return Ok(true);
        };
        let reason: Option<String> =
            event
                .get("reason")
                .and_then(serde_json::Value::as_str)
                .map(|r| {
                    r.chars()
                        .filter(|c| !c.is_control())
                        .take(MAX_REASON_CHARS)
                        .collect()
                });
        let recorded = self
            .shared
            .db
            .record_command_result(&self.device, seq, result, reason.as_deref())
            .await?;
        match (recorded, result) {
            (ResultRecorded::Recorded, _) => {
                tracing::info!(device = %self.device, seq, result = result.as_str(), "command result recorded");
            }
            (ResultRecorded::AlreadyRecorded, CommandResult::Rejected) => {
                // The agent refused a repeated delivery (a replay): a security event.
                let actor = Actor {
                    name: format!("device:{}", self.device),
                    source: self.peer.ip().to_string(),
                };
                let detail = format!(
                    "device rejected a repeated delivery of command {seq}: {}",
                    reason.as_deref().unwrap_or("-")
                );
                accounts::audit(
                    &self.shared.db,
                    &actor,
                    "device.command",
                    self.device.as_str(),
                    Outcome::Denied,
                    &detail,
                )
                .await?;
            }
            (ResultRecorded::AlreadyRecorded, CommandResult::Ok) => {
                tracing::warn!(device = %self.device, seq, "second \"ok\" for a command already answered; kept the first");
            }
            (ResultRecorded::Unknown, _) => {
                tracing::info!(device = %self.device, seq, "result for a command this device does not have ignored");
            }
        }
        Ok(true)
    }

    /// A certificate renewal request (AUTH-10, ENC-3): a PEM CSR made on the device
    /// with a new key. The hub issues a certificate for THIS device (names from the
    /// hub, never from the CSR), records it — the certificate of this connection stays
    /// accepted until the new one is first used — audits it and publishes it on
    /// `devices/{id}/certificate`. `Some(reasons)`: refused.
    async fn on_csr(
        &mut self,
        payload: &[u8],
    ) -> crate::error::Result<Option<(PubackReasonCode, DisconnectReasonCode)>> {
        let invalid = Some((
            PubackReasonCode::PayloadFormatInvalid,
            DisconnectReasonCode::PayloadFormatInvalid,
        ));
        if payload.len() > MAX_CSR_BYTES {
            return Ok(invalid);
        }
        let Ok(csr) = std::str::from_utf8(payload) else {
            return Ok(invalid);
        };
        if self.qos_for(&self.certificate_topic).is_none() {
            // The certificate could not be delivered: sign nothing.
            tracing::info!(device = %self.device, "renewal refused: not subscribed to its certificate topic");
            return Ok(Some((
                PubackReasonCode::ImplementationSpecificError,
                DisconnectReasonCode::ImplementationSpecificError,
            )));
        }
        let now = crate::db::now();
        let db = &self.shared.db;
        if let Err(refusal) = db
            .renewal_allowed(&self.device, &self.fingerprint, now)
            .await?
        {
            self.renewal_refused(&refusal.describe()).await?;
            let codes = match refusal {
                RenewalRefusal::TooEarly { .. } | RenewalRefusal::TooOften => (
                    PubackReasonCode::QuotaExceeded,
                    DisconnectReasonCode::QuotaExceeded,
                ),
                RenewalRefusal::NotActive | RenewalRefusal::Superseded => (
                    PubackReasonCode::NotAuthorized,
                    DisconnectReasonCode::NotAuthorized,
                ),
            };
            return Ok(Some(codes));
        }
        let lifetime = self.shared.limits.device_cert_lifetime_secs;
        let cert = match self
            .shared
            .hub_ca
            .issue_device_for(csr, self.device.as_str(), lifetime)
        {
            Ok(cert) => cert,
            Err(e) => {
                self.renewal_refused(&format!("CSR not valid: {e}")).await?;
                return Ok(invalid);
            }
        };
        let recorded = db
            .record_renewed_certificate(
                &self.device,
                &self.fingerprint,
                &cert.sha256,
                cert.not_after,
                now,
            )
            .await?;
        if !recorded {
            // Revoked (or renewed through another connection) since the check.
            self.renewal_refused("device no longer active").await?;
            return Ok(Some((
                PubackReasonCode::NotAuthorized,
                DisconnectReasonCode::NotAuthorized,
            )));
        }
        accounts::audit(
            db,
            &self.device_actor(),
            "device.certificate.renew",
            self.device.as_str(),
            Outcome::Success,
            &format!(
                "certificate sha256 {} (until {}); previous {} accepted until first use",
                cert.sha256, cert.not_after, self.fingerprint
            ),
        )
        .await?;
        let body = serde_json::json!({
            "certificate_pem": cert.cert_pem,
            "sha256": cert.sha256,
            "not_after": cert.not_after,
        });
        let topic = self.certificate_topic.clone();
        // QoS 0 needs no packet id: if it is lost with the connection, the device
        // asks again (its old certificate stays accepted).
        self.publish(topic, body.to_string().into_bytes(), Qos::AtMostOnce, None);
        tracing::info!(device = %self.device, sha256 = %cert.sha256, "device certificate renewed");
        Ok(None)
    }

    fn device_actor(&self) -> Actor {
        Actor {
            name: format!("device:{}", self.device),
            source: self.peer.ip().to_string(),
        }
    }

    /// Audit the first refused renewal of this connection (later ones only log, so a
    /// device cannot flood the audit log).
    async fn renewal_refused(&mut self, why: &str) -> crate::error::Result<()> {
        tracing::info!(device = %self.device, "certificate renewal refused: {why}");
        if !self.renewal_refusal_audited {
            self.renewal_refusal_audited = true;
            accounts::audit(
                &self.shared.db,
                &self.device_actor(),
                "device.certificate.renew",
                self.device.as_str(),
                Outcome::Denied,
                why,
            )
            .await?;
        }
        Ok(())
    }

    /// The QoS at which a message on `topic` reaches the device: the highest granted
    /// to a filter covering it, or `None` when none covers it.
    fn qos_for(&self, topic: &str) -> Option<Qos> {
        self.subscriptions
            .iter()
            .filter(|(filter, _)| filter_matches(filter, topic))
            .map(|(_, qos)| *qos)
            .max_by_key(|qos| *qos as u8)
    }

    /// Build and send one PUBLISH to the device.
    fn publish(&mut self, topic: String, payload: Vec<u8>, qos: Qos, packet_id: Option<u16>) {
        let packet = if self.io.is_v5() {
            let builder = v5_0::Publish::builder().topic_name(topic).map(|b| {
                let b = b.qos(qos).payload(payload);
                match packet_id {
                    Some(id) => b.packet_id(id),
                    None => b,
                }
            });
            builder.and_then(|b| b.build()).map(Packet::from)
        } else {
            let builder = v3_1_1::Publish::builder().topic_name(topic).map(|b| {
                let b = b.qos(qos).payload(payload);
                match packet_id {
                    Some(id) => b.packet_id(id),
                    None => b,
                }
            });
            builder.and_then(|b| b.build()).map(Packet::from)
        };
        self.io.send(packet);
    }

    /// Store the session's subscriptions (it outlives the connection).
    async fn save_session(&mut self) {
        let subs: Vec<(String, u8)> = self
            .subscriptions
            .iter()
            .map(|(f, q)| (f.clone(), *q as u8))
            .collect();
        let expires_at =
            crate::db::now().saturating_add(i64::try_from(self.session_expiry).unwrap_or(i64::MAX));
        if let Err(e) = self
            .shared
            .db
            .save_mqtt_session(&self.device, &subs, expires_at)
            .await
        {
            tracing::warn!(device = %self.device, "could not store the MQTT session: {e}");
        }
        self.stored = true;
    }

    /// The connection has ended: record the will if it ended ungracefully, and keep
    /// the session for its expiry or forget it.
    async fn end_session(&mut self) {
        if let Some(will) = self.will.take()
            && !self.hub_stopping
        {
            let leaf = self.topics.leaf(&will.topic).unwrap_or("").to_owned();
            let doc = events::will_document(&leaf, &will.payload, MAX_EVENT_BYTES);
            if let Err(e) = events::record(
                &self.shared.db,
                &self.device,
                EventSource::Will,
                events::WILL_EVENT,
                &doc,
            )
            .await
            {
                tracing::warn!(device = %self.device, "could not record the will message: {e}");
            }
        }
        if !self
            .shared
            .fleet
            .is_current(&self.device, self.registration)
        {
            // Taken over by a newer connection (which owns the session now) or dropped
            // by revocation: leave the stored session alone.
        } else if self.session_expiry > 0 {
            self.save_session().await;
        } else if self.stored
            && let Err(e) = self.shared.db.delete_mqtt_session(&self.device).await
        {
            tracing::warn!(device = %self.device, "could not delete the MQTT session: {e}");
        }
    }
}

/// A topic as it may appear in a log line (bounded).
fn truncate(topic: &str) -> String {
    topic.chars().take(128).collect()
}
