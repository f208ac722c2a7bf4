//! `palisade serve --demo N`: a newcomer's hub comes with N real agents, enrolled
//! through the real API, whose telemetry is stored within a minute; a restart reuses
//! the same devices instead of enrolling new ones.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn serve_demo(data: &std::path::Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args([
            "serve",
            "--demo",
            "3",
            "--data-dir",
            &data.display().to_string(),
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .env("PALISADE_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("palisade starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200))
            && line.starts_with("Demo: 3 simulated devices")
        {
            return child;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("no demo banner within 60 s");
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_devices_enrol_and_send_telemetry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let child = serve_demo(&data);
    let config = palisade_hub::config::Config::for_data_dir(&data);
    let db = palisade_hub::open_database(&config).await.expect("db");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut with_data = 0;
    while Instant::now() < deadline {
        let devices = db.devices().await.expect("devices");
        with_data = 0;
        for d in &devices {
            if !db.telemetry(&d.id, 1).await.expect("telemetry").is_empty() {
                with_data += 1;
            }
        }
        if devices.len() == 3 && with_data == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(with_data, 3, "all three demo devices sent telemetry");
    db.close().await;
    stop(child);

    // A restart reuses the enrolled devices.
    let child = serve_demo(&data);
    let db = palisade_hub::open_database(&config).await.expect("db");
    assert_eq!(
        db.devices().await.expect("devices").len(),
        3,
        "no new devices on restart"
    );
    db.close().await;
    stop(child);
}
