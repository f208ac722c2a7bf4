//! VULN-6, WEB-2: `/advisories.atom` is a well-formed Atom 1.0 feed (parsed by
//! Python's `xml.etree`, an independent parser) with one entry per published
//! advisory, each with id, title, updated and a link to its page. Negative cases:
//! markup in a summary (`<script>`, `&`, quotes) is escaped — it comes back from the
//! parser as the same text and never as an element; drafts are not in the feed.

mod common;

use common::TestHub;
use palisade_hub::accounts::Actor;
use palisade_hub::vuln::advisories::{self, AdvisoryInput};
use std::process::Command;

const PARSE: &str = r#"
import sys, json, xml.etree.ElementTree as ET
A = "{http://www.w3.org/2005/Atom}"
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == A + "feed", root.tag
for need in ("id", "title", "updated", "author"):
    assert root.find(A + need) is not None, need
entries = []
for e in root.findall(A + "entry"):
    for need in ("id", "title", "updated"):
        assert e.find(A + need) is not None, need
    title = e.find(A + "title")
    assert len(list(title)) == 0, "title has child elements"
    entries.append({"title": title.text, "link": e.find(A + "link").get("href"),
                    "summary": e.find(A + "summary").text})
print(json.dumps(entries))
"#;

fn input(summary: &str) -> AdvisoryInput {
    AdvisoryInput {
        summary: summary.into(),
        details: "Details.".into(),
        affected: "thermo-1 1.0.0 1.0.1".into(),
        fixed_version: "1.0.1".into(),
        remediation: "Update <now> & \"reboot\".".into(),
        ..AdvisoryInput::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atom_feed_parses_and_escapes() {
    let hub = TestHub::start().await;
    hub.create_product("thermo-1").await;
    let db = &hub.hub.db;
    let actor = Actor::cli();
    let mut anon = hub.browser();

    // An empty feed is still a valid feed.
    let dir = tempfile::tempdir().expect("tmp");
    let parse = |body: &str| -> Vec<serde_json::Value> {
        let file = dir.path().join("feed.xml");
        std::fs::write(&file, body).expect("write");
        let out = Command::new("python3")
            .args(["-c", PARSE])
            .arg(&file)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "not well-formed Atom: {}\n{body}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let page = anon.get("/advisories.atom").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .starts_with("application/atom+xml")
    );
    assert!(parse(&page.body).is_empty());

    let nasty = "<script>alert(\"x\")</script> & 'friends' ]]>";
    let published = advisories::create(db, &actor, &input(nasty))
        .await
        .expect("create");
    let a = db
        .advisory(&published)
        .await
        .expect("db")
        .expect("advisory");
    advisories::publish(db, &hub.hub.state.config, &actor, &a)
        .await
        .expect("publish");
    let draft = advisories::create(db, &actor, &input("Secret draft"))
        .await
        .expect("create");

    let page = anon.get("/advisories.atom").await;
    assert!(!page.body.contains("<script"), "{}", page.body);
    assert!(!page.body.contains(draft.as_str()) && !page.body.contains("Secret draft"));
    let entries = parse(&page.body);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        entries[0]["title"],
        format!("{published}: {nasty}"),
        "escaped, not altered"
    );
    assert!(
        entries[0]["link"]
            .as_str()
            .expect("link")
            .ends_with(&format!("/advisories/{published}"))
    );
    let summary = entries[0]["summary"].as_str().expect("summary");
    assert!(summary.contains("Update <now> & \"reboot\"."), "{summary}");
    assert!(
        summary.contains("thermo-1 1.0.0 to before 1.0.1"),
        "{summary}"
    );
    hub.hub.shutdown().await;
}
