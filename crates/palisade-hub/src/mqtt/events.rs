//! Device events: the messages on `devices/{id}/events` that are not command results,
//! and the will messages published for a device's ungraceful disconnects. This is the
//! ONE place where an event is validated and stored — and where a named event may
//! trigger hub behaviour ([`record`]).
//!
//! An event is a JSON object of at most [`super::session::MAX_EVENT_BYTES`] bytes with
//! an `event` name of 1–64 characters from `[a-z0-9_.-]`, nested at most
//! [`MAX_DEPTH`] levels; anything else is refused (INPUT-1). Stored events are bounded
//! per device ([`crate::db::device_events::MAX_EVENTS_PER_DEVICE`]).

use crate::db::Db;
use crate::db::device_events::EventSource;
use crate::error::Result;
use crate::ids::DeviceId;
use serde_json::{Map, Value};

/// Longest event name.
pub const MAX_NAME_CHARS: usize = 64;
/// Deepest nesting of arrays and objects in an event document.
pub const MAX_DEPTH: usize = 8;
/// The name under which a will message is stored.
pub const WILL_EVENT: &str = "will";

/// Why an event was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    NotAnObject,
    NoName,
    BadName,
    TooDeep,
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether `name` is a valid event name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// Validate an event document (already size-checked and parsed); returns its name.
pub fn validate(doc: &Value) -> std::result::Result<String, Invalid> {
    let Value::Object(map) = doc else {
        return Err(Invalid::NotAnObject);
    };
    let name = match map.get("event") {
        None => return Err(Invalid::NoName),
        Some(Value::String(name)) => name,
        Some(_) => return Err(Invalid::BadName),
    };
    if !valid_name(name) {
        return Err(Invalid::BadName);
    }
    if depth(doc) > MAX_DEPTH {
        return Err(Invalid::TooDeep);
    }
    Ok(name.clone())
}

/// The event document stored for a will message published to `topic_leaf` (e.g.
/// `state`): the payload itself when it is JSON, else its text (bounded).
pub fn will_document(topic_leaf: &str, payload: &[u8], max_bytes: usize) -> Value {
    let body = if payload.len() > max_bytes {
        Value::String(format!("({} bytes, not stored)", payload.len()))
    } else {
        match serde_json::from_slice::<Value>(payload) {
            Ok(v) if depth(&v) <= MAX_DEPTH => v,
            _ => Value::String(
                String::from_utf8_lossy(payload)
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect(),
            ),
        }
    };
    let mut doc = Map::new();
    doc.insert("event".into(), Value::String(WILL_EVENT.into()));
    doc.insert("topic".into(), Value::String(topic_leaf.into()));
    doc.insert("payload".into(), body);
    Value::Object(doc)
}

/// Store a validated event of `device`. Hooks for named events belong here, after the
/// event is stored (so what triggered them is on record).
pub async fn record(
    db: &Db,
    device: &DeviceId,
    source: EventSource,
    name: &str,
    doc: &Value,
) -> Result<()> {
    let payload = doc.to_string();
    db.insert_device_event(device, crate::telemetry::now_ms(), name, source, &payload)
        .await?;
    tracing::info!(%device, event = name, source = source.as_str(), "device event stored");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_need_a_bounded_name_and_shape() {
        assert_eq!(
            validate(&json!({"event": "door.open", "x": 1})),
            Ok("door.open".into())
        );
        assert_eq!(validate(&json!([1])), Err(Invalid::NotAnObject));
        assert_eq!(validate(&json!({"x": 1})), Err(Invalid::NoName));
        assert_eq!(validate(&json!({"event": 3})), Err(Invalid::BadName));
        assert_eq!(validate(&json!({"event": ""})), Err(Invalid::BadName));
        assert_eq!(
            validate(&json!({"event": "A<script>"})),
            Err(Invalid::BadName)
        );
        assert_eq!(
            validate(&json!({"event": "x".repeat(65)})),
            Err(Invalid::BadName)
        );
        let mut deep = json!(1);
        for _ in 0..10 {
            deep = json!([deep]);
        }
        assert_eq!(
            validate(&json!({"event": "x", "d": deep})),
            Err(Invalid::TooDeep)
        );
    }

    #[test]
    fn a_will_is_stored_as_a_will_event() {
        let doc = will_document("state", br#"{"status":"offline"}"#, 100);
        assert_eq!(validate(&doc), Ok(WILL_EVENT.into()));
        assert_eq!(doc["payload"]["status"], "offline");
        let doc = will_document("state", b"gone\x07", 100);
        assert_eq!(doc["payload"], "gone");
        let doc = will_document("state", &[b'x'; 200], 100);
        assert_eq!(doc["payload"], "(200 bytes, not stored)");
    }
}
