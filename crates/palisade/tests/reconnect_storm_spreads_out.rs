//! RES-1, RES-2: a reconnect storm spreads out. 300 real agents (the `palisade-agent`
//! library, in this process, as `palisade serve --demo` runs them) enrol through the
//! hub's real API and connect over mutual TLS. The hub is then restarted — stopped,
//! down for two seconds, started again on the same data directory and ports — and the
//! hub side records when each device is registered again. Checked: every agent comes
//! back within a bounded time (its backoff cap plus slack), and the reconnections are
//! spread by the agents' jittered backoff: no second holds more than 2/3 of them, and
//! the middle 80 % take at least 2 s to arrive. Without jitter all 300 retry at the
//! same instant; the unit test `jitter_spreads_a_fleet_and_its_absence_is_caught`
//! (palisade-agent, backoff.rs) shows both checks fail on such a schedule (the
//! negative case). Distribution only, never wall-clock speed.
//!
//! The bounds leave room for a loaded machine: all 300 agents share this process, so
//! when the machine starves it for a moment, the reconnections due in that moment are
//! seen together (up to about a second of such stalls was seen at load average 16);
//! a real fleet has no such coupling. Full jitter gives about 0.35–0.45 per second.

use palisade_agent::backoff::{busiest_window_share, middle_spread};
use palisade_agent::enroll::{ClaimCode, EnrollOptions, enroll};
use palisade_agent::limits::Limits;
use palisade_agent::run::{RunOptions, run};
use palisade_agent::telemetry::Source;
use palisade_hub::config::Config;
use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel};
use palisade_hub::ids::{DeviceId, ProductId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

const FLEET: usize = 300;
/// How long the hub stays down between stop and start.
const OUTAGE: Duration = Duration::from_secs(2);
/// The agents' backoff: the default first ceiling, and a cap short enough for a test
/// (the default cap is 5 min). Every agent must be back within the cap plus slack for
/// a loaded machine.
const BACKOFF_CAP: Duration = Duration::from_secs(8);
const BACK_WITHIN: Duration = Duration::from_secs(25);
/// No interval this long may hold more than `MAX_SHARE` of the reconnections …
const WINDOW: Duration = Duration::from_secs(1);
const MAX_SHARE: f64 = 2.0 / 3.0;
/// … and the middle 80 % of them must take at least this long.
const MIN_MIDDLE_SPREAD: Duration = Duration::from_secs(2);

/// Raise the soft open-files limit towards the hard one if it is below what 300 agents
/// and their 300 hub-side connections need (sockets, queue and lock files).
fn enough_file_descriptors() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    const NEEDED: u64 = 4096;
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current < NEEDED {
        let hard = limit.maximum.unwrap_or(u64::MAX);
        let mut raised = limit;
        raised.current = Some(NEEDED.min(hard));
        setrlimit(Resource::Nofile, raised).expect("raise RLIMIT_NOFILE");
        assert!(
            NEEDED <= hard,
            "RLIMIT_NOFILE hard limit {hard} is below the {NEEDED} this test needs"
        );
    }
}

/// Poll (every 20 ms, at most `within`) until every device is registered with the
/// hub's fleet; returns when each was first seen, relative to `since`, or the devices
/// that never came back.
async fn registration_times(
    hub: &palisade_hub::RunningHub,
    devices: &[DeviceId],
    since: Instant,
    within: Duration,
) -> Result<Vec<Duration>, Vec<DeviceId>> {
    let mut seen: Vec<Option<Duration>> = vec![None; devices.len()];
    let deadline = since + within;
    let mut last_poll = Instant::now();
    let mut max_gap = Duration::ZERO;
    loop {
        let now = Instant::now();
        max_gap = max_gap.max(now - last_poll);
        last_poll = now;
        for (device, at) in devices.iter().zip(seen.iter_mut()) {
            if at.is_none() && hub.state.fleet.is_connected(device) {
                *at = Some(now - since);
            }
        }
        if seen.iter().all(Option::is_some) {
            eprintln!("longest pause between two polls: {max_gap:?}");
            return Ok(seen.into_iter().flatten().collect());
        }
        if now >= deadline {
            return Err(devices
                .iter()
                .zip(&seen)
                .filter(|(_, at)| at.is_none())
                .map(|(d, _)| d.clone())
                .collect());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_reconnecting_after_a_hub_restart_spreads_out() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    enough_file_descriptors();
    let began = Instant::now();
    // State on tmpfs where there is one: this test is about connection timing, not
    // durability, and on a shared disk 300 enrolments' fsyncs take most of a minute.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    let mut config = Config::for_data_dir(&dir.path().join("hub"));
    let hub = palisade_hub::start(config.clone()).await.expect("hub");
    // The restart uses the very same ports: the agents know only this address.
    config.listen = hub.addr;
    config.mqtt_listen = hub.mqtt_addr;

    let product = ProductId::parse("storm-v1").expect("id");
    hub.db
        .create_product(&ProductModel {
            id: product.clone(),
            name: "Storm sensor".into(),
            hardware_revision: "rev-a".into(),
            fields: vec![FieldSpec {
                name: "temperature".into(),
                kind: FieldKind::Number,
                unit: "celsius".into(),
                purpose: "room temperature shown to the owner".into(),
                personal: false,
                retention_days: None,
                optional: false,
            }],
            created_at: 0,
        })
        .await
        .expect("product");
    let codes = hub
        .db
        .create_claim_codes(&product, FLEET, 3600)
        .await
        .expect("codes");
    assert_eq!(codes.len(), FLEET);
    let ca_pem = std::fs::read(&hub.ca_cert_path).expect("ca");

    // Enrol through the real API, a few at a time.
    let gate = Arc::new(Semaphore::new(8));
    let mut enrolments = tokio::task::JoinSet::new();
    for (i, code) in codes.iter().enumerate() {
        let (gate, url, ca_pem) = (gate.clone(), hub.url(), ca_pem.clone());
        let claim = ClaimCode::new(code.claim.clone()).expect("code");
        let state_dir = dir.path().join(format!("agent-{i:03}"));
        enrolments.spawn(async move {
            let _turn = gate.acquire_owned().await.expect("gate");
            enroll(EnrollOptions {
                hub_url: url,
                ca_pem,
                claim_code: claim,
                state_dir,
                limits: Limits::default(),
            })
            .await
            .map(|_| ())
        });
    }
    while let Some(done) = enrolments.join_next().await {
        done.expect("enrol task").expect("the agent enrols");
    }
    let devices: Vec<DeviceId> = hub
        .db
        .devices()
        .await
        .expect("devices")
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(devices.len(), FLEET);
    eprintln!("{FLEET} agents enrolled at {:?}", began.elapsed());

    let limits = Limits {
        backoff_cap: BACKOFF_CAP,
        ..Limits::default()
    };
    assert_eq!(limits.backoff_base, Duration::from_secs(1), "default base");
    let (stop_agents, agents_stopped) = watch::channel(false);
    let mut agents = tokio::task::JoinSet::new();
    for i in 0..FLEET {
        agents.spawn(run(
            RunOptions {
                state_dir: dir.path().join(format!("agent-{i:03}")),
                source: Source::None,
                limits: limits.clone(),
            },
            agents_stopped.clone(),
        ));
    }
    let first = registration_times(&hub, &devices, Instant::now(), Duration::from_secs(60)).await;
    assert!(
        first.is_ok(),
        "agents that never connected: {:?}",
        first.err()
    );

    eprintln!("{FLEET} agents connected at {:?}", began.elapsed());

    // The restart.
    hub.shutdown().await;
    eprintln!("hub stopped at {:?}", began.elapsed());
    tokio::time::sleep(OUTAGE).await;
    let hub = palisade_hub::start(config).await.expect("hub restarts");
    let back = Instant::now();
    let times = match registration_times(&hub, &devices, back, BACK_WITHIN).await {
        Ok(times) => times,
        Err(missing) => panic!(
            "{} of {FLEET} agents not back within {BACK_WITHIN:?}: {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        ),
    };
    let share = busiest_window_share(&times, WINDOW);
    let spread = middle_spread(&times);
    let last = times.iter().max().copied().unwrap_or_default();
    // A histogram per half second for the log: what the spread looked like.
    let mut buckets = vec![0usize; (last.as_millis() / 500) as usize + 1];
    for t in &times {
        buckets[(t.as_millis() / 500) as usize] += 1;
    }
    eprintln!(
        "{FLEET} agents back within {last:?} of the restart; busiest {WINDOW:?} held {:.0} %; middle 80 % over {spread:?}; per 0.5 s: {buckets:?}",
        share * 100.0
    );
    assert!(
        share <= MAX_SHARE,
        "thundering herd: {:.0} % of the fleet reconnected within {WINDOW:?} (per 0.5 s: {buckets:?})",
        share * 100.0
    );
    assert!(
        spread >= MIN_MIDDLE_SPREAD,
        "thundering herd: the middle 80 % of the fleet reconnected within {spread:?} (per 0.5 s: {buckets:?})"
    );

    let _ = stop_agents.send(true);
    let drain = async {
        while let Some(done) = agents.join_next().await {
            done.expect("agent task").expect("agent stops cleanly");
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(20), drain)
            .await
            .is_ok(),
        "agents stop"
    );
    hub.shutdown().await;
}
