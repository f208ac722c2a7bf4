//! PRIV-3: the real agent against the real hub. The owner switches an optional field
//! off through the API: from then on the hub stores none of it, the hub publishes the
//! setting on `devices/{id}/config`, the agent keeps it in its state directory and
//! stops sending the field (the hub's count of messages that still carry it stops
//! growing while telemetry keeps arriving). Switching it on again resumes it.
//! Negative cases: a required field cannot be switched off (400, clear message), an
//! undeclared field is refused, and only the owner may switch (an operator gets 403).

mod owned_agent;

use owned_agent::{OwnedAgent, eventually};
use palisade_agent::fields::FIELDS_FILE;
use palisade_agent::limits::Limits;
use palisade_agent::run::{RunOptions, run};
use palisade_agent::telemetry::{Source, parse_fields};
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switched_off_field_is_neither_stored_nor_sent() {
    let OwnedAgent {
        hub,
        dir: _dir,
        state_dir,
        device,
        client,
        owner,
        operator,
    } = OwnedAgent::start().await;
    let switch = async |token: &str, field: &str, enabled: bool| {
        let response = client
            .post(format!(
                "{}/api/v1/devices/{}/telemetry-fields",
                hub.url(),
                device.id
            ))
            .bearer_auth(token)
            .json(&json!({ "field": field, "enabled": enabled }))
            .send()
            .await
            .expect("POST telemetry-fields");
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.expect("json"))
    };

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(run(
        RunOptions {
            state_dir: state_dir.clone(),
            source: Source::Simulate {
                fields: parse_fields("temperature:number,location:number").expect("fields"),
                interval: Duration::from_millis(200),
            },
            limits: Limits::default(),
        },
        stopped,
    ));
    let stored = async || hub.db.telemetry(&device.id, 100_000).await.expect("rows");
    assert!(
        eventually(async || stored().await.iter().any(|(_, p)| p.contains("location"))).await,
        "while on, the optional field is stored"
    );

    // Negative cases first: nothing changes.
    let (status, body) = switch(&owner, "temperature", false).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("required"),
        "{body}"
    );
    let (status, body) = switch(&owner, "heart_rate", false).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = switch(&operator, "location", false).await;
    assert_eq!(status, 403, "only the owner switches: {body}");
    assert!(
        hub.db
            .disabled_fields(&device.id)
            .await
            .expect("settings")
            .is_empty()
    );

    // Switched off: stored no more, at once.
    let (status, body) = switch(&owner, "location", false).await;
    assert_eq!(status, 200, "{body}");
    let location = body
        .as_array()
        .and_then(|fields| fields.iter().find(|f| f["name"] == "location"))
        .cloned()
        .expect("location listed");
    assert_eq!(location["enabled"], false, "{body}");
    // The agent receives and keeps the setting (the hub reloaded it before sending).
    let settings = state_dir.join(FIELDS_FILE);
    assert!(
        eventually(
            async || std::fs::read_to_string(&settings).is_ok_and(|t| t.contains("location"))
        )
        .await,
        "the agent keeps the setting in its state directory"
    );
    let switched_at_ms = palisade_hub::telemetry::now_ms();
    // Messages the agent published before it read the setting arrive first (one
    // ordered connection): let a few newer ones through before counting.
    let seen = stored().await.len();
    assert!(eventually(async || stored().await.len() >= seen + 3).await);
    // From now on the agent sends no location: the hub sees no more messages with it,
    // while temperature keeps arriving.
    let carried = hub.state.fleet.switched_off_received();
    let before = stored().await.len();
    assert!(
        eventually(async || stored().await.len() >= before + 8).await,
        "telemetry keeps arriving"
    );
    assert_eq!(
        hub.state.fleet.switched_off_received(),
        carried,
        "the agent stopped sending the switched-off field"
    );
    let rows = stored().await;
    let after: Vec<&String> = rows
        .iter()
        .filter(|(at, _)| *at > switched_at_ms)
        .map(|(_, p)| p)
        .collect();
    assert!(!after.is_empty());
    assert!(
        after
            .iter()
            .all(|p| p.contains("temperature") && !p.contains("location")),
        "nothing of the field is stored after the switch: {after:?}"
    );

    // The agent restarts (and reconnects to its persistent session): the kept setting
    // applies from the first reading on.
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(run(
        RunOptions {
            state_dir: state_dir.clone(),
            source: Source::Simulate {
                fields: parse_fields("temperature:number,location:number").expect("fields"),
                interval: Duration::from_millis(200),
            },
            limits: Limits::default(),
        },
        stopped,
    ));
    let before = stored().await.len();
    assert!(
        eventually(async || stored().await.len() >= before + 5).await,
        "the restarted agent sends again"
    );
    assert_eq!(
        hub.state.fleet.switched_off_received(),
        carried,
        "the restarted agent does not send the switched-off field either"
    );

    // Switched on again: it resumes.
    let (status, body) = switch(&owner, "location", true).await;
    assert_eq!(status, 200, "{body}");
    let on_at_ms = palisade_hub::telemetry::now_ms();
    assert!(
        eventually(async || stored()
            .await
            .iter()
            .any(|(at, p)| *at > on_at_ms && p.contains("location")))
        .await,
        "the field is sent and stored again"
    );
    assert!(
        std::fs::read_to_string(&settings).is_ok_and(|t| !t.contains("location")),
        "the agent's setting is cleared"
    );
    // Each change is in the audit log.
    let entries = hub
        .db
        .audit_entries_for_target(device.id.as_str(), 100)
        .await
        .expect("audit");
    let switches: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e.action == "device.telemetry_field")
        .map(|e| (e.outcome.as_str(), e.detail.as_str()))
        .collect();
    assert!(
        switches.contains(&("success", "location off")),
        "{switches:?}"
    );
    assert!(
        switches.contains(&("success", "location on")),
        "{switches:?}"
    );
    assert!(switches.iter().any(|(o, _)| *o == "denied"), "{switches:?}");

    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    hub.shutdown().await;
}
