//! UPD-1, UPD-2, UPD-6, issue 4 end to end: `palisade keys init` → `palisade release
//! init-repo` → `palisade release publish` of 1.0.0 and 2.0.0 (a security update)
//! with the offline keys against a live hub; the agent's TUF client, trusting only the
//! shipped root, downloads and verifies 2.0.0 from the hub's repository; the release
//! list shows both. Attacks: publishing a version not newer than the published one is
//! refused, and so is a version that is not MAJOR.MINOR.PATCH.

mod release_kit;

use release_kit::{Device, Kit, MODEL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_v1_and_v2_and_a_device_downloads_v2() {
    let kit = Kit::start().await;
    let keys = kit.keys_init("offline-keys");
    kit.init_repo(&keys);
    let root = kit.shipped_root().await;

    let v1 = vec![1u8; 100_000];
    let out = kit.publish(&keys, "1.0.0", &v1, false);
    assert!(
        out.status.success(),
        "publish 1.0.0: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SUP-1: the model's published support end travels in the signed target from now on.
    kit.hub
        .db
        .set_support_end(
            &palisade_hub::ids::ProductId::parse(MODEL).expect("id"),
            "2031-12-31",
        )
        .await
        .expect("support end");
    let v2: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let out = kit.publish(&keys, "2.0.0", &v2, true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "publish 2.0.0: {stderr}");
    assert!(
        stderr.contains("100%"),
        "a progress bar was drawn: {stderr}"
    );

    let relay = kit.relay().await;
    let device = Device::new(&root);
    let got = device
        .download(&relay, &format!("{MODEL}-2.0.0.img"))
        .await
        .expect("v2 downloads and verifies");
    assert_eq!(got, v2);

    // The reference client (python-tuf 7.0, if installed) accepts the hub's repository too.
    if let Some(python) = release_kit::python_tuf() {
        let dir = kit.path("python-tuf");
        std::fs::create_dir_all(dir.join("metadata")).expect("dir");
        std::fs::create_dir_all(dir.join("out")).expect("dir");
        std::fs::copy(&root, dir.join("metadata/root.json")).expect("root");
        let script = "import sys\nfrom tuf.ngclient import Updater\nmd, url, name, out = sys.argv[1:]\n\
            u = Updater(metadata_dir=md, metadata_base_url=url + 'metadata/', target_dir=out, target_base_url=url + 'targets/', bootstrap=open(md + '/root.json', 'rb').read())\n\
            u.refresh()\ninfo = u.get_targetinfo(name)\nassert info is not None, 'target not listed'\n\
            print(u.download_target(info))\n";
        let relay_for_python = relay.clone();
        let md = dir.join("metadata");
        let out_dir = dir.join("out");
        let name = format!("{MODEL}-2.0.0.img");
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(python)
                .args(["-c", script])
                .arg(&md)
                .arg(&relay_for_python)
                .arg(&name)
                .arg(&out_dir)
                .output()
                .expect("run python")
        })
        .await
        .expect("join");
        assert!(
            out.status.success(),
            "python-tuf: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(std::fs::read(path).expect("python-tuf download"), v2);
    }

    // The release list (API) shows both, the newest flagged as a security update.
    let releases: serde_json::Value = kit
        .client()
        .get(format!("{}/api/v1/releases", kit.hub.url()))
        .bearer_auth(&kit.token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let list = releases.as_array().expect("array");
    assert_eq!(list.len(), 2, "{releases}");
    let v2_row = list
        .iter()
        .find(|r| r["version"] == "2.0.0")
        .expect("2.0.0 listed");
    assert_eq!(v2_row["security"], true);
    assert_eq!(v2_row["target"], format!("{MODEL}-2.0.0.img"));
    assert_eq!(v2_row["length"], 300_000);

    // The offline key signed what the agent relies on: version, product, security flag and
    // the support end it shows in `palisade-agent status`.
    let targets: serde_json::Value = kit
        .client()
        .get(format!(
            "{}/tuf/{MODEL}/metadata/targets.json",
            kit.hub.url()
        ))
        .send()
        .await
        .expect("targets.json")
        .json()
        .await
        .expect("json");
    let custom = &targets["signed"]["targets"][format!("{MODEL}-2.0.0.img")]["custom"];
    assert_eq!(custom["version"], "2.0.0", "{targets}");
    assert_eq!(custom["product"], MODEL, "{targets}");
    assert_eq!(custom["security"], true, "{targets}");
    assert_eq!(custom["support_until"], "2031-12-31", "{targets}");
    let custom_v1 = &targets["signed"]["targets"][format!("{MODEL}-1.0.0.img")]["custom"];
    assert!(
        custom_v1.get("support_until").is_none(),
        "no date was published for 1.0.0"
    );

    // Attacks: an older or equal version, and a version that is not semver.
    for version in ["1.5.0", "2.0.0"] {
        let out = kit.publish(&keys, version, b"again", false);
        assert!(!out.status.success(), "{version} must be refused");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not newer"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = kit.publish(&keys, "3.0", b"x", false);
    assert!(!out.status.success());
    // Still only two releases, and the device still gets 2.0.0.
    let got = device
        .download(&relay, &format!("{MODEL}-2.0.0.img"))
        .await
        .expect("still fine");
    assert_eq!(got, v2);
}
