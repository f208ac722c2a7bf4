//! DATA-2, MON-1: retention prunes audit entries past their period without breaking
//! the hash chain: the entries that remain verify from the checkpoint (the last pruned
//! entry's sequence number and hash), entries appended afterwards verify, and a second
//! pruning verifies too. Tampering is still detected after pruning: an edited entry,
//! a deleted entry, a checkpoint moved forward to hide entries (it no longer matches
//! the `audit.prune` entry that recorded it), and a checkpoint moved back.

use palisade_hub::audit::{ChainReport, Event, Outcome};
use palisade_hub::config::Retention;
use palisade_hub::db::Db;
use palisade_hub::retention::run_once;

const DAY: i64 = 86_400;

async fn append(db: &Db, action: &str, n: usize) -> i64 {
    let mut last = 0;
    for i in 0..n {
        last = db
            .audit(Event {
                actor: "test",
                source: "-",
                action,
                target: &i.to_string(),
                outcome: Outcome::Success,
                detail: "detail",
            })
            .await
            .expect("audit");
    }
    last
}

/// A database with 5 entries past the audit period and 3 within it, pruned by the
/// retention job. Returns the database and the first remaining sequence number.
async fn pruned(dir: &tempfile::TempDir, name: &str) -> (Db, i64) {
    let url = format!("sqlite://{}?mode=rwc", dir.path().join(name).display());
    let db = Db::connect(&url).await.expect("db");
    append(&db, "old.entry", 5).await;
    // The period boundary falls between the two groups (a second apart).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let first_new = append(&db, "new.entry", 1).await;
    append(&db, "new.entry", 2).await;
    let at = db
        .audit_entries(1, Some(first_new + 1))
        .await
        .expect("entry")[0]
        .at;
    let retention = Retention {
        batch_rows: 2,
        pause_ms: 0,
        ..Retention::default()
    };
    let now = at + i64::from(retention.audit_days) * DAY;
    let report = run_once(&db, &retention, now).await.expect("run");
    let audit = report
        .counts
        .iter()
        .find(|c| c.key == "audit")
        .expect("audit count");
    assert_eq!(audit.deleted, 5);
    (db, first_new)
}

fn intact(report: &ChainReport) -> bool {
    report.first_broken.is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_chain_verifies_and_keeps_verifying() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, first_new) = pruned(&dir, "a.db").await;
    assert_eq!(first_new, 6);
    let report = db.verify_audit_chain().await.expect("verify");
    assert!(intact(&report), "{report:?}");
    let remaining: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(db.pool())
        .await
        .expect("count");
    assert_eq!(report.entries, remaining);
    let (through, _) = db.audit_checkpoint().await.expect("checkpoint");
    assert_eq!(through, 5);
    let oldest: i64 = sqlx::query_scalar("SELECT MIN(seq) FROM audit_log")
        .fetch_one(db.pool())
        .await
        .expect("min");
    assert_eq!(oldest, 6, "exactly the entries past their period went");

    // New entries after pruning verify; so does a second pruning.
    append(&db, "later.entry", 3).await;
    assert!(intact(&db.verify_audit_chain().await.expect("verify")));
    let pruned_again = db.prune_audit(i64::MAX, 4).await.expect("prune");
    assert_eq!(pruned_again, 4);
    let report = db.verify_audit_chain().await.expect("verify");
    assert!(intact(&report), "{report:?}");
    assert_eq!(db.audit_checkpoint().await.expect("checkpoint").0, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected_after_pruning() {
    let dir = tempfile::tempdir().expect("tempdir");

    // An edited entry.
    let (db, first) = pruned(&dir, "edit.db").await;
    sqlx::query("UPDATE audit_log SET detail = 'rewritten' WHERE seq = $1")
        .bind(first + 1)
        .execute(db.pool())
        .await
        .expect("tamper");
    assert_eq!(
        db.verify_audit_chain().await.expect("verify").first_broken,
        Some(first + 1)
    );

    // The oldest remaining entry deleted (as if pruned, without a checkpoint).
    let (db, first) = pruned(&dir, "delete.db").await;
    sqlx::query("DELETE FROM audit_log WHERE seq = $1")
        .bind(first)
        .execute(db.pool())
        .await
        .expect("tamper");
    assert_eq!(
        db.verify_audit_chain().await.expect("verify").first_broken,
        Some(first)
    );

    // The checkpoint moved forward over an entry still in its period, to hide it.
    let (db, first) = pruned(&dir, "forward.db").await;
    let hash: String = sqlx::query_scalar("SELECT hash FROM audit_log WHERE seq = $1")
        .bind(first)
        .fetch_one(db.pool())
        .await
        .expect("hash");
    sqlx::query("DELETE FROM audit_log WHERE seq = $1")
        .bind(first)
        .execute(db.pool())
        .await
        .expect("tamper");
    sqlx::query("UPDATE audit_checkpoint SET seq = $1, hash = $2 WHERE id = 1")
        .bind(first)
        .bind(&hash)
        .execute(db.pool())
        .await
        .expect("tamper");
    let report = db.verify_audit_chain().await.expect("verify");
    assert!(
        !intact(&report),
        "a moved checkpoint must not verify: {report:?}"
    );

    // The checkpoint moved back (pruned entries claimed never to have existed).
    let (db, _) = pruned(&dir, "back.db").await;
    sqlx::query("UPDATE audit_checkpoint SET seq = 0, hash = $1 WHERE id = 1")
        .bind("0".repeat(64))
        .execute(db.pool())
        .await
        .expect("tamper");
    assert_eq!(
        db.verify_audit_chain().await.expect("verify").first_broken,
        Some(1)
    );
}
