//! Telemetry ingest: payloads validated against the product model's declared fields
//! (DATA-1, INPUT-1), then stored durably by one writer task with group commit, so a
//! QoS 1 message is acknowledged only after the transaction that holds it has committed
//! (RES-1).
//!
//! Validation: the payload is a JSON object whose every key is a declared field with a
//! value of the declared type (`number` accepts integers and decimals, `integer` only
//! integers, `boolean`, `string` of at most [`MAX_STRING_CHARS`] characters). Anything
//! else — undeclared field, wrong type, not JSON, not an object, empty — is refused.
//! The size is bounded by `limits.mqtt_max_packet_bytes` (the packet that carried it)
//! and the number of keys by the number of declared fields.
//!
//! Storage: [`Writer`] queues messages on a bounded channel (back-pressure reaches the
//! device connections when storage falls behind), collects up to
//! `limits.telemetry_batch_max` of them — waiting at most [`LINGER`] after the first —
//! and stores them with one transaction. Every message's acknowledgement channel then
//! says whether its batch committed.

use crate::config::Limits;
use crate::db::Db;
use crate::db::devices::{FieldKind, ProductModel};
use crate::ids::DeviceId;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Longest string value accepted in a telemetry field, in characters.
pub const MAX_STRING_CHARS: usize = 256;

/// How long the writer waits for more messages after the first of a batch.
pub const LINGER: Duration = Duration::from_millis(2);

/// Why a telemetry payload was refused. Messages name the field, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the payload is not a JSON object")]
    NotAnObject,
    #[error("the payload has no fields")]
    Empty,
    #[error("field {0:?} is not declared by the product model")]
    Undeclared(String),
    #[error("field {0:?} does not have its declared type")]
    WrongType(String),
    #[error("field {0:?} is longer than {MAX_STRING_CHARS} characters")]
    TooLong(String),
}

/// The declared telemetry fields of a product model, ready to check payloads against.
#[derive(Debug, Clone)]
pub struct Schema {
    fields: HashMap<String, FieldKind>,
}

impl Schema {
    pub fn new(model: &ProductModel) -> Self {
        Self {
            fields: model
                .fields
                .iter()
                .map(|f| (f.name.clone(), f.kind))
                .collect(),
        }
    }

    /// Check a payload; returns the JSON to store (compact, as validated).
    pub fn validate(&self, payload: &[u8]) -> Result<String, Invalid> {
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|_| Invalid::NotAnObject)?;
        let serde_json::Value::Object(map) = &value else {
            return Err(Invalid::NotAnObject);
        };
        if map.is_empty() {
            return Err(Invalid::Empty);
        }
        for (name, v) in map {
            let Some(kind) = self.fields.get(name) else {
                return Err(Invalid::Undeclared(truncate(name)));
            };
            let ok = match kind {
                FieldKind::Number => v.is_number(),
                FieldKind::Integer => v.is_i64() || v.is_u64(),
                FieldKind::Boolean => v.is_boolean(),
                FieldKind::String => match v.as_str() {
                    Some(s) if s.chars().count() > MAX_STRING_CHARS => {
                        return Err(Invalid::TooLong(name.clone()));
                    }
                    Some(_) => true,
                    None => false,
                },
            };
            if !ok {
                return Err(Invalid::WrongType(name.clone()));
            }
        }
        Ok(value.to_string())
    }
}

/// An undeclared field name as it may appear in a log line (bounded).
fn truncate(name: &str) -> String {
    name.chars().take(64).collect()
}

/// One message on its way to storage.
struct Record {
    device: DeviceId,
    received_at_ms: i64,
    payload: String,
    /// `Some` for QoS 1: told `true` once the batch committed, `false` if it failed.
    ack: Option<oneshot::Sender<bool>>,
}

/// The writer is gone (the hub is stopping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("telemetry storage has stopped")]
pub struct Stopped;

/// A handle to the telemetry writer; cheap to clone, one per connection.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Record>,
}

impl Writer {
    /// Start the writer task. It ends when every `Writer` handle has been dropped, after
    /// storing what was queued.
    pub fn spawn(db: Db, limits: &Limits) -> (Writer, JoinHandle<()>) {
        let batch_max = limits.telemetry_batch_max.max(1);
        // Room for two batches: one filling while the previous one commits.
        let (tx, rx) = mpsc::channel(batch_max * 2);
        let task = tokio::spawn(run(db, rx, batch_max));
        (Writer { tx }, task)
    }

    /// Queue a validated message; waits while the queue is full (back-pressure).
    pub async fn submit(
        &self,
        device: DeviceId,
        received_at_ms: i64,
        payload: String,
        ack: Option<oneshot::Sender<bool>>,
    ) -> Result<(), Stopped> {
        self.tx
            .send(Record {
                device,
                received_at_ms,
                payload,
                ack,
            })
            .await
            .map_err(|_| Stopped)
    }
}

async fn run(db: Db, mut rx: mpsc::Receiver<Record>, batch_max: usize) {
    let mut batch: Vec<Record> = Vec::with_capacity(batch_max);
    loop {
        if rx.recv_many(&mut batch, batch_max).await == 0 {
            return; // every sender dropped and the queue is empty
        }
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < batch_max {
            let room = batch_max - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let mut rows = Vec::with_capacity(batch.len());
        let mut acks = Vec::with_capacity(batch.len());
        for record in batch.drain(..) {
            rows.push((record.device, record.received_at_ms, record.payload));
            acks.extend(record.ack);
        }
        let committed = match db.insert_telemetry_batch(&rows).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(messages = rows.len(), "telemetry batch not stored: {e}");
                false
            }
        };
        for ack in acks {
            let _ = ack.send(committed);
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::devices::FieldSpec;
    use crate::ids::ProductId;

    fn schema() -> Schema {
        let field = |name: &str, kind| FieldSpec {
            name: name.into(),
            kind,
            unit: String::new(),
            purpose: "test".into(),
            personal: false,
            retention_days: None,
            optional: false,
        };
        Schema::new(&ProductModel {
            id: ProductId::parse("cam-v2").expect("id"),
            name: "Cam".into(),
            hardware_revision: "2".into(),
            fields: vec![
                field("temperature", FieldKind::Number),
                field("count", FieldKind::Integer),
                field("on", FieldKind::Boolean),
                field("label", FieldKind::String),
            ],
            created_at: 0,
        })
    }

    #[test]
    fn data1_declared_fields_with_their_types_are_accepted() {
        let s = schema();
        assert_eq!(
            s.validate(br#"{"temperature": 21.5, "count": 3, "on": true, "label": "x"}"#),
            Ok(r#"{"count":3,"label":"x","on":true,"temperature":21.5}"#.into())
        );
        assert!(s.validate(br#"{"temperature": 21}"#).is_ok());
        assert!(s.validate(br#"{"count": -4}"#).is_ok());
        assert!(
            s.validate(format!(r#"{{"label": "{}"}}"#, "é".repeat(256)).as_bytes())
                .is_ok()
        );
    }

    #[test]
    fn data1_undeclared_fields_and_wrong_types_are_refused() {
        let s = schema();
        assert_eq!(
            s.validate(br#"{"temperature": 1, "location": "home"}"#),
            Err(Invalid::Undeclared("location".into()))
        );
        assert_eq!(
            s.validate(br#"{"count": 1.5}"#),
            Err(Invalid::WrongType("count".into()))
        );
        assert_eq!(
            s.validate(br#"{"temperature": "hot"}"#),
            Err(Invalid::WrongType("temperature".into()))
        );
        assert_eq!(
            s.validate(br#"{"on": 1}"#),
            Err(Invalid::WrongType("on".into()))
        );
        assert_eq!(
            s.validate(br#"{"temperature": {"value": 1}}"#),
            Err(Invalid::WrongType("temperature".into()))
        );
        assert_eq!(
            s.validate(format!(r#"{{"label": "{}"}}"#, "a".repeat(257)).as_bytes()),
            Err(Invalid::TooLong("label".into()))
        );
    }

    #[test]
    fn input1_payloads_that_are_not_json_objects_are_refused() {
        let s = schema();
        for bad in [
            &b"21.5"[..],
            b"[1, 2]",
            b"not json",
            b"",
            b"{\"temperature\": 1",
            b"\xff\xfe",
            b"null",
        ] {
            assert_eq!(s.validate(bad), Err(Invalid::NotAnObject), "{bad:?}");
        }
        assert_eq!(s.validate(b"{}"), Err(Invalid::Empty));
    }
}
