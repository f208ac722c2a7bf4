//! `palisade bench privacy`: export and deletion of a large account (DATA-3, DATA-4).
//! A hub in this process (fresh data directory, embedded SQLite) gets an owner with
//! `--devices` devices and `--rows` telemetry rows (bulk inserts, 10,000 rows per
//! transaction); other devices then ingest telemetry continuously through the hub's
//! telemetry writer (the path MQTT messages take after validation, group commit and
//! acknowledgement included) while the owner's data is exported over HTTPS
//! (`GET /api/v1/me/export`, the body counted and discarded) and then the account is
//! deleted. Printed: seeding, export and deletion times, export size, the hub's peak
//! resident memory (VmHWM, reset before each operation through `/proc/self/clear_refs`)
//! and the committed ingest rate before and during each operation.

use anyhow::{Context, Result, bail};
use palisade_crypto::password::Password;
use palisade_hub::config::Config;
use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel};
use palisade_hub::db::users::{NewUser, Role, Status};
use palisade_hub::ids::{DeviceId, Email, ProductId, Username};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PASSWORD: &str = "bench owner password of some length";
/// Rows per bulk-insert transaction while seeding.
const SEED_BATCH: usize = 10_000;
/// Devices that keep ingesting during the operations, and messages in flight.
const INGEST_DEVICES: usize = 4;
const INGEST_IN_FLIGHT: usize = 32;

fn vm(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

/// Reset the peak-RSS counter (Linux: writing 5 to clear_refs resets VmHWM).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub async fn run(devices: u32, rows: u64, work: &Path) -> Result<()> {
    if work.exists() && std::fs::read_dir(work)?.next().is_some() {
        bail!("{} is not empty", work.display());
    }
    let config = Config::for_data_dir(&work.join("hub"));
    let hub = palisade_hub::start(config)
        .await
        .context("starting the hub")?;
    let result = measure(&hub, devices, rows).await;
    hub.shutdown().await;
    result
}

async fn measure(hub: &palisade_hub::RunningHub, devices: u32, rows: u64) -> Result<()> {
    let db = &hub.db;
    let product = ProductId::parse("bench-meter").map_err(|e| anyhow::anyhow!("{e}"))?;
    db.create_product(&ProductModel {
        id: product.clone(),
        name: "Bench meter".into(),
        hardware_revision: "r1".into(),
        fields: vec![FieldSpec {
            name: "watts".into(),
            kind: FieldKind::Number,
            unit: "W".into(),
            purpose: "benchmark".into(),
            personal: false,
            retention_days: None,
            optional: false,
        }],
        created_at: 0,
    })
    .await?;
    let hash = hub
        .state
        .auth
        .hash(Password::new(PASSWORD))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let owner = db
        .insert_user(NewUser {
            username: &Username::parse("bench-owner").map_err(|e| anyhow::anyhow!("{e}"))?,
            email: &Email::parse("bench-owner@example.org").map_err(|e| anyhow::anyhow!("{e}"))?,
            role: Role::Owner,
            status: Status::Active,
            password_hash: Some(&hash),
        })
        .await?;
    // The owner's devices, claimed with their pairing codes, and the ingesting ones.
    let total = devices as usize + INGEST_DEVICES;
    let codes = db.create_claim_codes(&product, total, 3600).await?;
    let mut owned = Vec::new();
    let mut others = Vec::new();
    for (i, code) in codes.iter().enumerate() {
        let id = DeviceId::generate();
        db.enroll_device(&code.claim, &id, &format!("{i:064x}"), i64::MAX / 2)
            .await?
            .context("enrolment")?;
        if i < devices as usize {
            db.claim_device(&code.pairing, &owner.id).await?;
            owned.push(id);
        } else {
            others.push(id);
        }
    }
    let started = Instant::now();
    let base = palisade_hub::telemetry::now_ms();
    let mut batch = Vec::with_capacity(SEED_BATCH);
    for n in 0..rows {
        let device = &owned[(n % owned.len() as u64) as usize];
        let at = base + (n / owned.len() as u64) as i64;
        batch.push((
            device.clone(),
            at,
            format!(r#"{{"watts":{}.{}}}"#, n % 3000, n % 10),
        ));
        if batch.len() == SEED_BATCH {
            db.insert_telemetry_batch(&batch).await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        db.insert_telemetry_batch(&batch).await?;
    }
    let seed_secs = started.elapsed().as_secs_f64();
    println!(
        "seeded: {} devices, {rows} telemetry rows in {seed_secs:.1} s ({:.0} rows/s)",
        owned.len(),
        rows as f64 / seed_secs
    );

    // Continuous ingest from other devices through the telemetry writer.
    let (writer, writer_task) =
        palisade_hub::telemetry::Writer::spawn(db.clone(), &hub.state.config.limits);
    let committed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut ingest = tokio::task::JoinSet::new();
    for k in 0..INGEST_IN_FLIGHT {
        let (writer, committed, stop) = (writer.clone(), committed.clone(), stop.clone());
        let device = others[k % others.len()].clone();
        ingest.spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (ack, acked) = tokio::sync::oneshot::channel();
                let payload = format!(r#"{{"watts":{seq}}}"#);
                if writer
                    .submit(
                        device.clone(),
                        palisade_hub::telemetry::now_ms(),
                        payload,
                        Some(ack),
                    )
                    .await
                    .is_err()
                {
                    return;
                }
                if acked.await.unwrap_or(false) {
                    committed.fetch_add(1, Ordering::Relaxed);
                }
                seq += 1;
            }
        });
    }
    drop(writer);
    let rate_over = |from: (Instant, u64)| {
        let secs = from.0.elapsed().as_secs_f64();
        (committed.load(Ordering::Relaxed) - from.1) as f64 / secs.max(1e-9)
    };
    let mark = || (Instant::now(), committed.load(Ordering::Relaxed));

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = mark();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_rate = rate_over(before);
    println!("ingest before: {idle_rate:.0} messages/s committed");

    // Export over HTTPS, the body discarded.
    let (_, token) = db.create_api_token(&owner.id, "bench", 3600).await?;
    let ca_pem = std::fs::read(&hub.ca_cert_path)?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(palisade_agent::tls::client_config(&ca_pem, None)?)
        .build()?;
    reset_peak();
    let rss_before = vm("VmRSS:");
    let during = mark();
    let started = Instant::now();
    let mut response = client
        .get(format!("{}/api/v1/me/export", hub.url()))
        .bearer_auth(&token)
        .header("x-palisade-password", PASSWORD)
        .send()
        .await?
        .error_for_status()?;
    let mut bytes = 0u64;
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
    }
    let export_secs = started.elapsed().as_secs_f64();
    let export_rate = rate_over(during);
    let export_peak = vm("VmHWM:");
    println!(
        "export: {bytes} bytes ({:.1} MiB) in {export_secs:.1} s; hub RSS before {} MiB, peak during {} MiB; ingest during {export_rate:.0} messages/s ({:.0}% of before)",
        bytes as f64 / 1_048_576.0,
        rss_before / 1024,
        export_peak / 1024,
        100.0 * export_rate / idle_rate.max(1e-9)
    );

    // Deletion, the same way the console's button does it.
    reset_peak();
    let rss_before = vm("VmRSS:");
    let during = mark();
    let started = Instant::now();
    let erased =
        palisade_hub::privacy::erase::erase_account(db, &owner, "bench", "Palisade").await?;
    let delete_secs = started.elapsed().as_secs_f64();
    let delete_rate = rate_over(during);
    let delete_peak = vm("VmHWM:");
    println!(
        "delete: {} telemetry rows, {} devices released in {delete_secs:.1} s; hub RSS before {} MiB, peak during {} MiB; ingest during {delete_rate:.0} messages/s ({:.0}% of before)",
        erased.telemetry_deleted,
        erased.devices_released,
        rss_before / 1024,
        delete_peak / 1024,
        100.0 * delete_rate / idle_rate.max(1e-9)
    );

    stop.store(true, Ordering::Relaxed);
    while ingest.join_next().await.is_some() {}
    let _ = writer_task.await;
    if erased.telemetry_deleted != rows {
        bail!(
            "deleted {} telemetry rows, seeded {rows}",
            erased.telemetry_deleted
        );
    }
    Ok(())
}
