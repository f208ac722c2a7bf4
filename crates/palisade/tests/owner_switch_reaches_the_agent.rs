//! UPD-3: the real agent against the real hub. The owner switches automatic install
//! off through the hub (API; the console form calls the same function): the hub sends
//! `"auto_update": "off"` in the device's config message on `devices/{id}/config`
//! (next to `disabled_fields`), and the agent keeps it in `update-policy.json` exactly
//! as its local `palisade-agent auto-update off` does, so its updater does not install
//! offers (`Policy::allows` refuses, the path `auto_update_can_be_postponed.rs` tests).
//! Postponing and switching on again reach the agent the same way. Negative cases: an
//! operator cannot switch a device's updates (403), a postponement in the past is
//! refused (400), and a setting the agent never received leaves its local choice alone.

mod owned_agent;

use owned_agent::{OwnedAgent, eventually};
use palisade_agent::limits::Limits;
use palisade_agent::run::{RunOptions, run};
use palisade_agent::state::StateDir;
use palisade_agent::telemetry::{Source, parse_fields};
use palisade_agent::update::{Policy, load_policy};
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_switch_reaches_the_agent_and_stops_automatic_install() {
    let OwnedAgent {
        hub,
        dir: _dir,
        state_dir,
        device,
        client,
        owner,
        operator,
    } = OwnedAgent::start().await;
    let switch = async |token: &str, choice: Value| {
        let response = client
            .post(format!(
                "{}/api/v1/devices/{}/auto-update",
                hub.url(),
                device.id
            ))
            .bearer_auth(token)
            .json(&json!({ "auto_update": choice }))
            .send()
            .await
            .expect("POST auto-update");
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.expect("json"))
    };

    let state = StateDir::new(&state_dir);
    // The owner had switched automatic install off on the device itself; a hub that
    // never got a console choice must not override it.
    palisade_agent::update::save_policy(
        &state,
        &Policy {
            off: true,
            postpone_until: None,
        },
    )
    .expect("local choice");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(run(
        RunOptions {
            state_dir: state_dir.clone(),
            source: Source::Simulate {
                fields: parse_fields("temperature:number").expect("fields"),
                interval: Duration::from_millis(200),
            },
            limits: Limits::default(),
        },
        stopped,
    ));
    assert!(
        eventually(async || !hub
            .db
            .telemetry(&device.id, 10)
            .await
            .expect("rows")
            .is_empty())
        .await,
        "the agent is connected"
    );
    assert!(
        load_policy(&state).expect("policy").off,
        "the local choice stands"
    );

    // Refused: an operator; a postponement in the past.
    let (status, body) = switch(&operator, json!("on")).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = switch(&owner, json!({ "postpone_until": 1_000_000 })).await;
    assert_eq!(status, 400, "{body}");
    assert!(load_policy(&state).expect("policy").off);

    // On from the console: the agent follows.
    let (status, body) = switch(&owner, json!("on")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["warning"].is_null());
    assert!(
        eventually(async || load_policy(&state).expect("policy") == Policy::default()).await,
        "the agent keeps the owner's 'on'"
    );

    // Off: a warning, and the agent's updater refuses to install.
    let (status, body) = switch(&owner, json!("off")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["warning"]
            .as_str()
            .unwrap_or("")
            .contains("security fixes will not be installed"),
        "{body}"
    );
    assert!(
        eventually(async || load_policy(&state).expect("policy").off).await,
        "the agent keeps the owner's 'off'"
    );
    let why = load_policy(&state)
        .expect("policy")
        .allows(palisade_hub::db::now())
        .expect_err("no automatic install");
    assert!(why.contains("security updates are NOT installed"), "{why}");

    // Postponed by a week.
    let until = palisade_hub::db::now() + 7 * 86_400;
    let (status, body) = switch(&owner, json!({ "postpone_until": until })).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        eventually(async || load_policy(&state).expect("policy").postpone_until == Some(until))
            .await,
        "the agent keeps the postponement"
    );
    let policy = load_policy(&state).expect("policy");
    assert!(!policy.off);
    assert!(policy.allows(palisade_hub::db::now()).is_err());
    assert!(policy.allows(until + 1).is_ok());

    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    hub.shutdown().await;
}
