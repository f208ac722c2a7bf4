//! One MQTT v5 connection to the hub over mutual TLS: the sans-I/O protocol engine of
//! `mqtt-protocol-core` (client role) driven over a tokio-rustls stream.
//!
//! The server is verified against the pinned hub CA and the hub's host name; the device
//! presents its own certificate (its identity: the hub ignores the CONNECT client id
//! for authentication). The session is persistent (clean start off, a session expiry)
//! so commands sent while the device is offline are delivered when it returns.
//!
//! [`Session::wait`] is cancel-safe (it only reads and sleeps) and may be used in
//! `tokio::select!`; everything that writes runs outside of it.

use crate::limits::Limits;
use crate::{Error, Result, tls};
use mqtt_protocol_core::mqtt::connection::{ConnectionOptions, TimerKind};
use mqtt_protocol_core::mqtt::packet::{Qos, SessionExpiryInterval, SubEntry, SubOpts, v5_0};
use mqtt_protocol_core::mqtt::prelude::*;
use mqtt_protocol_core::mqtt::{self, Connection, Version, role};
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Where and as whom to connect.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub device_id: String,
    /// Trusts only the hub CA; carries the device certificate and key.
    pub tls: Arc<rustls::ClientConfig>,
}

impl Target {
    pub fn peer(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn topic(&self, leaf: &str) -> String {
        format!("devices/{}/{leaf}", self.device_id)
    }
}

/// Open a TCP connection and complete a TLS handshake, verifying the server against the
/// pinned CA and `host`. Certificate problems come back as [`Error::Tls`].
pub async fn connect_tls(
    host: &str,
    port: u16,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>> {
    let peer = format!("{host}:{port}");
    let server_name = ServerName::try_from(host.to_owned()).map_err(|_| {
        Error::invalid(
            "MQTT host",
            format!("{host:?} is not a DNS name or IP address"),
        )
    })?;
    let attempt = async {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| Error::Connect {
                peer: peer.clone(),
                reason: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .map_err(|e| stream_error(&peer, e))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| Error::Timeout {
            what: "connecting to the MQTT server",
            secs: timeout.as_secs(),
        })?
}

/// Map an I/O error on the TLS stream, surfacing the TLS error inside if there is one.
fn stream_error(peer: &str, e: std::io::Error) -> Error {
    match tls::find_rustls_error(&e) {
        Some(t) => Error::Tls {
            peer: peer.to_owned(),
            source: t.clone(),
        },
        None => Error::Connect {
            peer: peer.to_owned(),
            reason: e.to_string(),
        },
    }
}

/// Outcome of a QoS 1 publish, from the server's PUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubOutcome {
    /// Stored by the hub: remove from the queue.
    Accepted,
    /// Refused for good (not authorised, invalid payload, …): do not resend.
    Refused(String),
    /// Refused for now (quota): keep it and resend later.
    Retry(String),
}

/// Something the application must act on.
#[derive(Debug)]
pub enum Incoming {
    Acked {
        packet_id: u16,
        outcome: PubOutcome,
    },
    Subscribed {
        granted: bool,
        reason: String,
    },
    /// A message from the server. If `packet_id` is set (QoS 1), call
    /// [`Session::puback`] once it has been handled.
    Message {
        packet_id: Option<u16>,
        topic: String,
        payload: Vec<u8>,
    },
}

/// What woke [`Session::wait`].
#[derive(Debug)]
pub enum Wake {
    Data(usize),
    Timer(TimerKind),
    Eof,
    Failed(std::io::Error),
}

/// An established MQTT session.
pub struct Session {
    stream: TlsStream<TcpStream>,
    conn: Connection<role::Client>,
    timers: Vec<(TimerKind, Instant)>,
    buf: Box<[u8]>,
    peer: String,
    connected: bool,
    session_present: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

fn mqtt_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Mqtt(format!("{what}: {e:?}"))
}

impl Session {
    /// Connect, send CONNECT (with `will` as the Last Will on the state topic) and wait
    /// for a successful CONNACK, all within `limits.connect_timeout`.
    pub async fn establish(
        target: &Target,
        limits: &Limits,
        will: &serde_json::Value,
    ) -> Result<Self> {
        let deadline = Instant::now() + limits.connect_timeout;
        let stream = connect_tls(
            &target.host,
            target.port,
            target.tls.clone(),
            limits.connect_timeout,
        )
        .await?;
        let options = ConnectionOptions::new()
            .maximum_packet_size_recv(limits.mqtt_max_packet_bytes)
            .receive_maximum(limits.mqtt_receive_maximum);
        let mut conn = Connection::<role::Client>::with_options(Version::V5_0, options);
        conn.set_auto_pub_response(false);
        conn.set_pingresp_recv_timeout(
            u64::try_from(limits.pingresp_timeout.as_millis()).unwrap_or(u64::MAX),
        );
        let mut session = Self {
            stream,
            conn,
            timers: Vec::new(),
            buf: vec![0u8; 16 * 1024].into_boxed_slice(),
            peer: target.peer(),
            connected: false,
            session_present: false,
        };
        let keep_alive = u16::try_from(limits.keep_alive.as_secs()).unwrap_or(u16::MAX);
        let expiry = u32::try_from(limits.session_expiry.as_secs()).unwrap_or(u32::MAX);
        let will_payload = serde_json::to_vec(will).map_err(|e| Error::json("will message", e))?;
        let connect = v5_0::Connect::builder()
            .client_id(target.device_id.as_str())
            .map_err(|e| mqtt_err("client id", e))?
            .clean_start(false)
            .keep_alive(keep_alive)
            .props(vec![
                SessionExpiryInterval::new(expiry)
                    .map_err(|e| mqtt_err("session expiry", e))?
                    .into(),
            ])
            .will_message(
                target.topic("state").as_str(),
                will_payload,
                Qos::AtLeastOnce,
                false,
            )
            .map_err(|e| mqtt_err("will message", e))?
            .build()
            .map_err(|e| mqtt_err("CONNECT", e))?;
        let events = session.conn.checked_send(connect);
        session.process(events).await?;

        // Wait for CONNACK (a refusal comes back from process() as an error).
        while !session.connected {
            let wake = tokio::time::timeout_at(deadline, session.wait())
                .await
                .map_err(|_| Error::Timeout {
                    what: "waiting for CONNACK",
                    secs: limits.connect_timeout.as_secs(),
                })?;
            let incoming = session.handle(wake).await?;
            if !incoming.is_empty() {
                return Err(Error::Mqtt("message received before CONNACK".into()));
            }
        }
        Ok(session)
    }

    /// Did the server still hold our session (subscriptions, queued commands)?
    pub fn session_present(&self) -> bool {
        self.session_present
    }

    /// How many more QoS 1 publishes the server accepts in flight right now (`None`:
    /// no limit announced).
    pub fn send_vacancy(&self) -> Option<u16> {
        self.conn.get_receive_maximum_vacancy_for_send()
    }

    /// Subscribe to one topic filter at QoS 1. The SUBACK arrives as
    /// [`Incoming::Subscribed`].
    pub async fn subscribe(&mut self, filter: &str) -> Result<Vec<Incoming>> {
        let packet_id = self
            .conn
            .acquire_packet_id()
            .map_err(|e| mqtt_err("packet id", e))?;
        let entry = SubEntry::new(filter, SubOpts::new().set_qos(Qos::AtLeastOnce))
            .map_err(|e| mqtt_err("topic filter", e))?;
        let subscribe = v5_0::Subscribe::builder()
            .entries(vec![entry])
            .packet_id(packet_id)
            .build()
            .map_err(|e| mqtt_err("SUBSCRIBE", e))?;
        let events = self.conn.checked_send(subscribe);
        self.process(events).await
    }

    /// Publish at QoS 1. The outer error ends the session; the inner one refuses this
    /// message only (e.g. larger than the server accepts) and the session goes on.
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        user_properties: &[(&str, String)],
    ) -> Result<std::result::Result<u16, String>> {
        let packet_id = self
            .conn
            .acquire_packet_id()
            .map_err(|e| mqtt_err("packet id", e))?;
        let mut props: Vec<mqtt::packet::Property> = Vec::new();
        for (key, value) in user_properties {
            props.push(
                mqtt::packet::UserProperty::new(*key, value.as_str())
                    .map_err(|e| mqtt_err("user property", e))?
                    .into(),
            );
        }
        let mut builder = v5_0::Publish::builder()
            .topic_name(topic)
            .map_err(|e| mqtt_err("topic", e))?
            .qos(Qos::AtLeastOnce)
            .packet_id(packet_id)
            .payload(payload.to_vec());
        if !props.is_empty() {
            builder = builder.props(props);
        }
        let publish = match builder.build() {
            Ok(p) => p,
            Err(e) => {
                let _ = self.conn.release_packet_id(packet_id);
                return Ok(Err(format!("{e:?}")));
            }
        };
        let events = self.conn.checked_send(publish);
        if let Some(problem) = events.iter().find_map(|e| match e {
            mqtt::connection::Event::NotifyError(err) => Some(format!("{err:?}")),
            _ => None,
        }) {
            let _ = self.conn.release_packet_id(packet_id);
            return Ok(Err(problem));
        }
        let incoming = self.process(events).await?;
        debug_assert!(incoming.is_empty());
        Ok(Ok(packet_id))
    }

    /// Acknowledge a QoS 1 message from the server (after it has been handled).
    pub async fn puback(&mut self, packet_id: u16) -> Result<Vec<Incoming>> {
        let puback = v5_0::Puback::builder()
            .packet_id(packet_id)
            .build()
            .map_err(|e| mqtt_err("PUBACK", e))?;
        let events = self.conn.checked_send(puback);
        self.process(events).await
    }

    /// Wait for input or a protocol timer. Cancel-safe.
    pub async fn wait(&mut self) -> Wake {
        let next_timer = self.timers.iter().min_by_key(|(_, at)| *at).copied();
        let timer = async {
            match next_timer {
                Some((kind, at)) => {
                    tokio::time::sleep_until(at).await;
                    kind
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = self.stream.read(&mut self.buf) => match read {
                Ok(0) => Wake::Eof,
                Ok(n) => Wake::Data(n),
                Err(e) => Wake::Failed(e),
            },
            kind = timer => Wake::Timer(kind),
        }
    }

    /// Act on what woke [`Session::wait`]: feed bytes to the protocol engine, fire
    /// timers, write what it asks for. Returns what the application must handle.
    pub async fn handle(&mut self, wake: Wake) -> Result<Vec<Incoming>> {
        match wake {
            Wake::Data(n) => {
                let data = self.buf[..n].to_vec();
                let mut cursor = mqtt::common::Cursor::new(data.as_slice());
                let mut incoming = Vec::new();
                while (cursor.position() as usize) < data.len() {
                    let before = cursor.position();
                    let events = self.conn.recv(&mut cursor);
                    incoming.extend(self.process(events).await?);
                    if cursor.position() == before {
                        break;
                    }
                }
                Ok(incoming)
            }
            Wake::Timer(kind) => {
                self.timers.retain(|(k, _)| *k != kind);
                let events = self.conn.notify_timer_fired(kind);
                self.process(events).await
            }
            Wake::Eof => {
                let _ = self.conn.notify_closed();
                Err(Error::Closed)
            }
            Wake::Failed(e) => {
                let _ = self.conn.notify_closed();
                Err(stream_error(&self.peer, e))
            }
        }
    }

    /// Say goodbye: DISCONNECT (normal: the server drops the will) and TLS close_notify.
    pub async fn disconnect(mut self) {
        if let Ok(disconnect) = v5_0::Disconnect::builder()
            .reason_code(mqtt::result_code::DisconnectReasonCode::NormalDisconnection)
            .build()
        {
            let events = self.conn.checked_send(disconnect);
            let _ = self.process(events).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.stream.shutdown()).await;
    }

    /// Carry out the engine's requests and translate what it received.
    async fn process(&mut self, events: Vec<mqtt::connection::Event>) -> Result<Vec<Incoming>> {
        use mqtt::connection::Event;
        use mqtt::packet::Packet;
        let mut incoming = Vec::new();
        let mut wrote = false;
        let mut close = false;
        let mut problem: Option<String> = None;
        for event in events {
            match event {
                Event::RequestSendPacket { packet, .. } => {
                    let bytes = packet.to_continuous_buffer();
                    self.stream
                        .write_all(&bytes)
                        .await
                        .map_err(|e| stream_error(&self.peer, e))?;
                    wrote = true;
                }
                Event::RequestTimerReset { kind, duration_ms } => {
                    self.timers.retain(|(k, _)| *k != kind);
                    self.timers
                        .push((kind, Instant::now() + Duration::from_millis(duration_ms)));
                }
                Event::RequestTimerCancel(kind) => self.timers.retain(|(k, _)| *k != kind),
                Event::NotifyPacketIdReleased(_) => {}
                Event::NotifyError(e) => problem = Some(format!("{e:?}")),
                Event::RequestClose => close = true,
                Event::NotifyPacketReceived(packet) => match packet {
                    Packet::V5_0Connack(connack) => {
                        let code = connack.reason_code();
                        if code != mqtt::result_code::ConnectReasonCode::Success {
                            return Err(Error::ConnectRefused(code.to_string()));
                        }
                        self.connected = true;
                        self.session_present = connack.session_present();
                    }
                    Packet::V5_0Puback(puback) => {
                        use mqtt::result_code::PubackReasonCode as R;
                        let outcome = match puback.reason_code() {
                            None | Some(R::Success | R::NoMatchingSubscribers) => {
                                PubOutcome::Accepted
                            }
                            Some(R::QuotaExceeded) => {
                                PubOutcome::Retry(R::QuotaExceeded.to_string())
                            }
                            Some(other) => PubOutcome::Refused(other.to_string()),
                        };
                        incoming.push(Incoming::Acked {
                            packet_id: puback.packet_id(),
                            outcome,
                        });
                    }
                    Packet::V5_0Suback(suback) => {
                        let codes = suback.reason_codes();
                        let granted = !codes.is_empty() && codes.iter().all(|c| c.is_success());
                        let reason = codes
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(",");
                        incoming.push(Incoming::Subscribed { granted, reason });
                    }
                    Packet::V5_0Publish(publish) => {
                        incoming.push(Incoming::Message {
                            packet_id: publish.packet_id(),
                            topic: publish.topic_name().to_owned(),
                            payload: publish.payload().as_slice().to_vec(),
                        });
                    }
                    Packet::V5_0Disconnect(disconnect) => {
                        let reason = disconnect
                            .reason_code()
                            .map_or_else(|| "normal".to_owned(), |c| c.to_string());
                        problem = Some(format!("server sent DISCONNECT ({reason})"));
                        close = true;
                    }
                    _ => {}
                },
            }
        }
        if wrote {
            self.stream
                .flush()
                .await
                .map_err(|e| stream_error(&self.peer, e))?;
        }
        if close {
            let _ = self.conn.notify_closed();
            return Err(Error::Mqtt(problem.unwrap_or_else(|| {
                "the protocol engine closed the connection".into()
            })));
        }
        if let Some(p) = problem {
            tracing::warn!(peer = %self.peer, "MQTT: {p}");
        }
        Ok(incoming)
    }
}
