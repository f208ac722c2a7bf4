//! `palisade serve --demo N`: N simulated devices, each a real `palisade-agent`
//! (library) enrolled through the hub's real enrolment API with a fresh claim code and
//! sending simulated telemetry over MQTT with its own certificate. Their state lives in
//! `DATA_DIR/demo/`, so a restart reuses the same devices.

use anyhow::{Context, Result};
use palisade_agent::enroll::{ClaimCode, EnrollOptions, enroll};
use palisade_agent::limits::Limits;
use palisade_agent::run::{RunOptions, run};
use palisade_agent::telemetry::{Source, parse_fields};
use palisade_hub::RunningHub;
use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel};
use palisade_hub::ids::ProductId;
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const PRODUCT: &str = "demo-thermometer";

fn field(name: &str, unit: &str, purpose: &str) -> FieldSpec {
    FieldSpec {
        name: name.into(),
        kind: FieldKind::Number,
        unit: unit.into(),
        purpose: purpose.into(),
        personal: false,
        retention_days: None,
        optional: false,
    }
}

/// Enrol (first time only) and start `count` simulated devices.
pub async fn start(
    hub: &RunningHub,
    dir: &Path,
    count: u16,
    stop: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>> {
    let product = ProductId::parse(PRODUCT).map_err(|e| anyhow::anyhow!("{e}"))?;
    if hub.db.product(&product).await?.is_none() {
        hub.db
            .create_product(&ProductModel {
                id: product.clone(),
                name: "Demo thermometer".into(),
                hardware_revision: "sim-1".into(),
                fields: vec![
                    field(
                        "temperature",
                        "celsius",
                        "room temperature shown to the owner",
                    ),
                    field(
                        "humidity",
                        "percent",
                        "relative humidity shown to the owner",
                    ),
                ],
                created_at: 0,
            })
            .await?;
    }
    let ca_pem = std::fs::read(&hub.ca_cert_path).context("reading the hub CA")?;
    // Devices reach the hub on loopback, a name its certificate always covers.
    let hub_url = format!("https://127.0.0.1:{}", hub.addr.port());
    let mut tasks = Vec::new();
    for i in 0..count {
        let state_dir = dir.join(format!("device-{i:02}"));
        if !state_dir.join("agent.json").exists() {
            let code = hub.db.create_claim_codes(&product, 1, 600).await?;
            let claim = code
                .first()
                .map(|c| c.claim.clone())
                .context("no claim code made")?;
            enroll(EnrollOptions {
                hub_url: hub_url.clone(),
                ca_pem: ca_pem.clone(),
                claim_code: ClaimCode::new(claim)?,
                state_dir: state_dir.clone(),
                limits: Limits::default(),
            })
            .await
            .with_context(|| format!("enrolling demo device {i}"))?;
        }
        let options = RunOptions {
            state_dir,
            source: Source::Simulate {
                fields: parse_fields("temperature:number,humidity:number")?,
                interval: Duration::from_secs(5),
            },
            limits: Limits::default(),
        };
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = run(options, stop).await {
                eprintln!("demo device stopped: {e}");
            }
        }));
    }
    Ok(tasks)
}
