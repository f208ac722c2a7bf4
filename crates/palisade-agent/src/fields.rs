//! The telemetry fields the device's owner switched off (PRIV-3). The hub publishes
//! `{"disabled_fields": ["location", ...]}` on `devices/{id}/config` (QoS 1, again on
//! every connection); the agent keeps the list in its state directory
//! (`telemetry_config.json`, 0600) so it applies before the first connection after a
//! restart, and removes those fields from every reading before it is queued or sent.

use crate::state::StateDir;
use crate::{Error, Result, fsutil};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// The file in the state directory.
pub const FIELDS_FILE: &str = "telemetry_config.json";
/// Most field names accepted in one message (a product declares at most 64).
pub const MAX_DISABLED: usize = 64;
/// Largest config message or file read.
const MAX_BYTES: u64 = 16 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    disabled_fields: BTreeSet<String>,
    /// The owner's automatic-install switch from the console (UPD-3), read by
    /// [`crate::update::Policy::from_config`]; not kept in this file.
    #[serde(default, skip_serializing)]
    auto_update: Option<Value>,
}

/// The switched-off fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisabledFields(BTreeSet<String>);

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

impl DisabledFields {
    /// Parse the hub's message (bounded; unknown keys and odd names refused).
    pub fn parse(payload: &[u8]) -> Result<DisabledFields> {
        if payload.len() as u64 > MAX_BYTES {
            return Err(Error::invalid("telemetry config", "too large"));
        }
        let doc: Document =
            serde_json::from_slice(payload).map_err(|e| Error::json("telemetry config", e))?;
        if doc.disabled_fields.len() > MAX_DISABLED {
            return Err(Error::invalid("telemetry config", "too many fields"));
        }
        if !doc.disabled_fields.iter().all(|n| valid_name(n)) {
            return Err(Error::invalid(
                "telemetry config",
                "a field name is not valid",
            ));
        }
        Ok(DisabledFields(doc.disabled_fields))
    }

    /// The list kept in the state directory (none when there is no file yet).
    pub fn load(state: &StateDir) -> Result<DisabledFields> {
        let path = state.path(FIELDS_FILE);
        if !path.exists() {
            return Ok(DisabledFields::default());
        }
        let bytes = fsutil::read_bounded(&path, MAX_BYTES)?;
        DisabledFields::parse(&bytes)
    }

    /// Keep the list (atomically, 0600).
    pub fn save(&self, state: &StateDir) -> Result<()> {
        let doc = Document {
            disabled_fields: self.0.clone(),
            auto_update: None,
        };
        let bytes = serde_json::to_vec(&doc).map_err(|e| Error::json("telemetry config", e))?;
        fsutil::write_private(&state.path(FIELDS_FILE), &bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    /// Remove the switched-off fields from a reading; `None` when nothing is left.
    pub fn apply(&self, mut sample: Map<String, Value>) -> Option<Map<String, Value>> {
        if !self.0.is_empty() {
            sample.retain(|name, _| !self.0.contains(name));
        }
        (!sample.is_empty()).then_some(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priv3_switched_off_fields_are_removed_before_sending() {
        let off = DisabledFields::parse(br#"{"disabled_fields":["location"]}"#).expect("parse");
        let sample: Map<String, Value> =
            serde_json::from_str(r#"{"temperature": 21.5, "location": "home"}"#).expect("json");
        let sent = off.apply(sample).expect("something left");
        assert!(sent.contains_key("temperature") && !sent.contains_key("location"));
        let only: Map<String, Value> =
            serde_json::from_str(r#"{"location": "home"}"#).expect("json");
        assert_eq!(
            off.apply(only),
            None,
            "nothing of a switched-off field is sent"
        );
    }

    #[test]
    fn priv3_malformed_config_messages_are_refused() {
        for bad in [
            &br#"{"disabled_fields": "location"}"#[..],
            br#"{"disabled_fields": ["a b"]}"#,
            br#"{"disabled_fields": [], "other": 1}"#,
            b"not json",
        ] {
            assert!(DisabledFields::parse(bad).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_DISABLED).map(|i| format!("f{i}")).collect();
        let doc = serde_json::json!({ "disabled_fields": many }).to_string();
        assert!(DisabledFields::parse(doc.as_bytes()).is_err());
    }
}
