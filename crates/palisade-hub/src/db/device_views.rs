//! Read models for the console's device pages: the fleet filtered by a bounded search
//! and status, and a device's audit trail (entries whose target is the device id).

use super::Db;
use super::devices::{Device, DeviceStatus, device_from_row};
use crate::audit::Entry;
use crate::error::Result;
use sqlx::Row;

/// Longest search text taken from a request (characters); longer text is cut.
pub const MAX_SEARCH_CHARS: usize = 64;
/// Most devices one fleet listing returns.
pub const MAX_FLEET_ROWS: i64 = 500;

/// The search text as used: trimmed, lower-cased, at most [`MAX_SEARCH_CHARS`].
pub fn normalize_search(q: &str) -> String {
    q.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_SEARCH_CHARS)
        .collect::<String>()
        .to_lowercase()
}

/// A `LIKE` pattern matching `text` anywhere, with `\`, `%` and `_` taken literally.
fn contains_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl Db {
    /// Devices whose id or product id contains `search` (see [`normalize_search`]),
    /// optionally only those with `status`; oldest first, at most [`MAX_FLEET_ROWS`].
    pub async fn fleet_devices(
        &self,
        search: &str,
        status: Option<DeviceStatus>,
    ) -> Result<Vec<Device>> {
        const Q: &str = "SELECT id, product_id, status, cert_sha256, cert_not_after, owner_id, \
             firmware_version, agent_version, owned_since_ms, rejected_messages, created_at, last_seen_at FROM devices \
             WHERE (LOWER(id) LIKE $1 ESCAPE '\\' OR LOWER(product_id) LIKE $1 ESCAPE '\\') \
             AND ($2 = '' OR status = $2) ORDER BY created_at, id LIMIT $3";
        sqlx::query(Q)
            .bind(contains_pattern(&normalize_search(search)))
            .bind(status.map_or("", DeviceStatus::as_str))
            .bind(MAX_FLEET_ROWS)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(device_from_row)
            .collect()
    }

    /// The newest audit entries whose target is `target` (a device id), newest first.
    pub async fn audit_entries_for_target(&self, target: &str, limit: i64) -> Result<Vec<Entry>> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, source, action, target, outcome, detail, hash FROM audit_log \
             WHERE target = $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(target)
        .bind(limit.clamp(1, 1000))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Entry {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    source: r.try_get("source")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    outcome: r.try_get("outcome")?,
                    detail: r.try_get("detail")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_is_bounded_and_like_wildcards_are_literal() {
        assert_eq!(normalize_search("  Cam-V2 "), "cam-v2");
        assert_eq!(
            normalize_search(&"x".repeat(500)).chars().count(),
            MAX_SEARCH_CHARS
        );
        assert_eq!(contains_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
        assert_eq!(contains_pattern(""), "%%");
    }
}
