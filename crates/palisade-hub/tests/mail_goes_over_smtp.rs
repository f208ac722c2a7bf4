//! MON-3: security notices and account mail leave through a real SMTP server when one
//! is configured (here Python's standard-library SMTP server on loopback, the only
//! place an unencrypted relay is allowed), and a relay that is down delays mail
//! without losing it.

mod common;

use common::TestHub;
use palisade_hub::config::{Smtp, SmtpSecurity};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_verification_mail_arrives_over_smtp() {
    let port = free_port();
    let hub = TestHub::start_with(|c| {
        c.smtp = Some(Smtp {
            host: "127.0.0.1".into(),
            port,
            security: SmtpSecurity::None,
            credentials: None,
            from: "Palisade hub <hub@example.org>".into(),
            ca_file: None,
        })
    })
    .await;
    // Queue mail while the relay is down: it must wait in the outbox, not vanish.
    let mut b = hub.browser();
    b.get("/signup").await;
    let page = b
        .post_form(
            "/signup",
            &[
                ("username", "smtp-sam"),
                ("email", "sam@example.org"),
                ("password", "juniper cobalt harbour violin"),
            ],
        )
        .await;
    assert!(page.body.contains("Check your e-mail"), "{}", page.body);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pending: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND attempts > 0")
            .fetch_one(hub.hub.db.pool())
            .await
            .expect("count");
    assert_eq!(pending, 1, "a failed delivery stays queued for retry");
    // Bring the relay up and let the retry happen now.
    sqlx::query("UPDATE outbox SET next_attempt_at = 0")
        .execute(hub.hub.db.pool())
        .await
        .expect("retry now");
    let mut server = Command::new("python3")
        .args([
            "-u",
            "-W",
            "ignore",
            "-m",
            "smtpd",
            "-n",
            "-c",
            "DebuggingServer",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let mut out = server.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline && !text.contains("------------ END MESSAGE") {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        text
    });
    let received = tokio::task::spawn_blocking(move || reader.join().expect("reader"))
        .await
        .expect("task");
    assert!(
        received.contains("Subject: Confirm your e-mail address"),
        "{received}"
    );
    assert!(received.contains("To: sam@example.org"), "{received}");
    assert!(
        received.contains("From: \"Palisade hub\" <hub@example.org>")
            || received.contains("From: Palisade hub <hub@example.org>"),
        "{received}"
    );
    assert!(received.contains("/verify-email?token="), "{received}");
    assert!(
        !hub.data_dir().join("mail").exists(),
        "with SMTP configured nothing is written to files"
    );
    // Delivered: the stored body (with its one-time link) is dropped. The relay stays up
    // until the hub has recorded the delivery: the server prints the message before it
    // answers `250`, and killing it in between would make the hub (rightly) retry.
    let mut bodies = Vec::new();
    for _ in 0..300 {
        bodies =
            sqlx::query_scalar::<_, String>("SELECT body FROM outbox WHERE sent_at IS NOT NULL")
                .fetch_all(hub.hub.db.pool())
                .await
                .expect("sent rows");
        if !bodies.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(bodies, vec![String::new()]);
    hub.hub.shutdown().await;
}
