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
    if name == INTEGRITY_EVENT && source == EventSource::Device {
        integrity_alert(db, device, doc).await?;
    }
    Ok(())
}

/// The event a device's agent publishes when its software integrity check fails at
/// start (INT-1); it sends nothing else until repaired.
pub const INTEGRITY_EVENT: &str = "integrity";
/// Findings quoted in the alert (each bounded).
const MAX_FINDINGS: usize = 16;

/// What the device found, as printable bounded lines.
fn integrity_findings(doc: &Value) -> Vec<String> {
    doc.get("what")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .take(MAX_FINDINGS)
                .map(|w| w.chars().filter(|c| !c.is_control()).take(200).collect())
                .collect()
        })
        .unwrap_or_default()
}

/// Raise a device's integrity alert (INT-1): an audit entry, and a security notice in
/// the inbox of the owner and of every staff account, each e-mailed once. A device
/// that repeats the same findings at every start tells each person once (the notice's
/// unique key is the device and a digest of the findings).
async fn integrity_alert(db: &Db, device: &DeviceId, doc: &Value) -> Result<()> {
    use crate::db::notices::NoticeKind;
    use sha2::{Digest, Sha256};
    let findings = integrity_findings(doc);
    let summary = if findings.is_empty() {
        "no details given".to_owned()
    } else {
        findings.join("; ")
    };
    let actor = crate::accounts::Actor {
        name: format!("device:{device}"),
        source: "mqtt".into(),
    };
    crate::accounts::audit(
        db,
        &actor,
        "device.integrity_alert",
        device.as_str(),
        crate::audit::Outcome::Failure,
        &summary,
    )
    .await?;
    tracing::warn!(%device, "integrity alert: {summary}");
    let digest = data_encoding::HEXLOWER.encode(&Sha256::digest(summary.as_bytes())[..8]);
    let about = format!("integrity:{device}:{digest}");
    let subject =
        format!("Integrity alert: device {device} found its software or configuration changed");
    let mut body = format!(
        "At its start, device {device} found that its software or configuration on disk is not what was installed or sealed:\n\n"
    );
    for f in &findings {
        body.push_str(&format!("- {f}\n"));
    }
    body.push_str(
        "\nThe device now sends nothing but this alert: no telemetry, no command results, no updates. \
         Someone may have tampered with it, or its storage is failing. Check the device; install a verified \
         firmware image (`palisade-agent update`) or reset and re-enrol it. Its events are on its device page.\n",
    );
    let mut people = db.staff_user_ids().await?;
    if let Some(owner) = db.device(device).await?.and_then(|d| d.owner_id)
        && !people.contains(&owner)
    {
        people.push(owner);
    }
    for id in people {
        let Some(user) = db.user(&id).await? else {
            continue;
        };
        if db
            .insert_notice(&user.id, NoticeKind::Security, &about, &subject, &body)
            .await?
        {
            db.enqueue_mail(
                user.email.as_str(),
                &subject,
                &body,
                crate::mail::Category::Security,
            )
            .await?;
        }
    }
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
    fn int1_integrity_findings_are_bounded_and_printable() {
        let doc = json!({"event": "integrity", "what": ["a\u{1b}[31m", 3, "x".repeat(500)]});
        let found = integrity_findings(&doc);
        assert_eq!(found, vec!["a[31m".to_owned(), "x".repeat(200)]);
        assert!(integrity_findings(&json!({"event": "integrity"})).is_empty());
        let many: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        assert_eq!(
            integrity_findings(&json!({"event": "integrity", "what": many})).len(),
            MAX_FINDINGS
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
