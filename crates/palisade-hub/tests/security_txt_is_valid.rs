//! VULN-2 (RFC 9116 §§2.3, 2.5, 3), VULN-1: `/.well-known/security.txt` is served over
//! HTTPS as `text/plain; charset=utf-8` and parses per RFC 9116: at least one Contact
//! (the configured e-mail and the report page), exactly one Expires, in the future and
//! less than a year ahead, a Policy that answers without sign-in, Preferred-Languages,
//! and a Canonical equal to the URL it was served from. Negative cases: the file is not
//! served in plaintext (no HTTP answer on the hub's port without TLS), a hub with no
//! contact e-mail configured still publishes a valid file (the report page is a
//! contact), and an unsafe expiry setting is refused by the configuration check.

mod common;

use common::TestHub;
use common::security_txt::{fields, parse_expires};
use palisade_hub::config::{Config, Overrides};
use std::io::{Read, Write};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_txt_parses_per_rfc_9116_and_canonical_is_the_served_url() {
    let port = free_port();
    let hub = TestHub::start_with(|c| {
        c.listen = ([127, 0, 0, 1], port).into();
        c.public_url = format!("https://127.0.0.1:{port}");
        c.disclosure.contact_email = Some("security@example.com".into());
        c.disclosure.preferred_languages = "en, de".into();
    })
    .await;
    let served = hub.url("/.well-known/security.txt");
    let mut b = hub.browser();
    let page = b.get("/.well-known/security.txt").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/plain; charset=utf-8");
    let f = fields(&page.body);
    let all = |n: &str| -> Vec<&str> {
        f.iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let contacts = all("contact");
    assert!(
        contacts.contains(&"mailto:security@example.com"),
        "{contacts:?}"
    );
    assert!(
        contacts.contains(&hub.url("/security").as_str()),
        "{contacts:?}"
    );
    for c in &contacts {
        assert!(c.starts_with("mailto:") || c.starts_with("https://"), "{c}");
    }
    let expires = all("expires");
    assert_eq!(expires.len(), 1, "exactly one Expires: {}", page.body);
    let at = parse_expires(expires[0]);
    let now = common::now() as i64;
    assert!(at > now, "Expires is in the future");
    assert!(at - now < 365 * 86_400, "Expires is less than a year ahead");
    assert_eq!(
        all("canonical"),
        vec![served.as_str()],
        "Canonical is the served URL"
    );
    assert_eq!(all("preferred-languages"), vec!["en, de"]);
    let policy = all("policy");
    assert_eq!(policy.len(), 1);
    assert!(policy[0].starts_with("https://"));
    // The policy answers without sign-in and states contact and response times (VULN-1).
    let path = policy[0]
        .strip_prefix(&hub.hub.url())
        .expect("our own page");
    let policy_page = hub.browser().get(path).await;
    assert_eq!(policy_page.status, 200);
    assert!(policy_page.body.contains("security@example.com"));
    assert!(
        policy_page
            .body
            .contains("acknowledge every report within 3 days")
    );
    assert!(policy_page.body.contains("at least every 14 days"));
    assert!(policy_page.body.contains("id=\"safe-harbour\""));

    // Attack/negative: no plaintext answer on the same port.
    let addr = hub.hub.addr;
    let plain = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(b"GET /.well-known/security.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf
    })
    .await
    .expect("join");
    assert!(
        !String::from_utf8_lossy(&plain).contains("Contact:"),
        "security.txt must never be served without TLS"
    );
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_contact_email_the_report_page_is_the_contact() {
    let hub = TestHub::start().await;
    let page = hub.browser().get("/.well-known/security.txt").await;
    assert_eq!(page.status, 200);
    let f = fields(&page.body);
    let contacts: Vec<_> = f.iter().filter(|(k, _)| k == "contact").collect();
    assert_eq!(contacts.len(), 1, "{}", page.body);
    assert!(contacts[0].1.ends_with("/security"));
    assert_eq!(f.iter().filter(|(k, _)| k == "expires").count(), 1);
    hub.hub.shutdown().await;
}

#[test]
fn an_expiry_of_a_year_or_more_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("palisade.toml");
    std::fs::write(&file, "[disclosure]\nsecurity_txt_days = 365\n").expect("write");
    let overrides = Overrides {
        config_file: Some(file),
        ..Overrides::default()
    };
    let problems = Config::load(&overrides, &|_| None).expect_err("refused");
    assert!(format!("{problems:?}").contains("security_txt_days"));
}
