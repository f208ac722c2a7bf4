//! `/.well-known/security.txt` (RFC 9116, VULN-2), computed on every request from the
//! configuration: nothing is stored, so `Expires` can never lapse while the hub runs.
//! With an OpenPGP key configured it is served cleartext-signed (`openpgp.rs`); what can
//! lapse then is the key, and administrators are warned 30 days before.

use crate::config::Config;

const DAY: i64 = 24 * 3600;

/// The `Expires` time: the start of the current UTC day plus the configured days, so
/// it moves forward daily, stays the same within a day, and is always less than a
/// year ahead (the configuration allows at most 364 days).
pub fn expires_at(config: &Config, now: i64) -> i64 {
    now - now.rem_euclid(DAY) + config.disclosure.security_txt_days * DAY
}

/// RFC 3339 in UTC with a `Z`, as RFC 9116 §2.5.5 asks.
fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// The file's text.
pub fn render(config: &Config, now: i64) -> String {
    let base = &config.public_url;
    let d = &config.disclosure;
    let mut out = format!(
        "# Security contact for {product} (RFC 9116). Report vulnerabilities at\n# {base}/security; see the policy there for response times and safe harbour.\n",
        product = config.product_name.replace(['\r', '\n'], " ")
    );
    if let Some(email) = &d.contact_email {
        out.push_str(&format!("Contact: mailto:{email}\n"));
    }
    out.push_str(&format!("Contact: {base}/security\n"));
    out.push_str(&format!("Expires: {}\n", rfc3339(expires_at(config, now))));
    out.push_str(&format!("Policy: {base}/security\n"));
    out.push_str(&format!("Preferred-Languages: {}\n", d.preferred_languages));
    out.push_str(&format!("Canonical: {base}/.well-known/security.txt\n"));
    out
}

/// A warning for administrators when the OpenPGP key that signs security.txt stops
/// signing within [`EXPIRY_WARNING_SECS`](super::openpgp::EXPIRY_WARNING_SECS).
pub fn key_warning(config: &Config, now: i64) -> Option<String> {
    let key = config.security_txt_key.as_ref()?;
    let at = key.expires_at.filter(|_| key.expires_soon(now))?;
    let when = super::openpgp::utc(at);
    Some(if at <= now {
        format!(
            "The OpenPGP key {} that signs /.well-known/security.txt expired on {when}: the last signed file is served until its own Expires. Extend the key (gpg --quick-set-expire), export it again and restart the hub.",
            key.fingerprint
        )
    } else {
        format!(
            "The OpenPGP key {} that signs /.well-known/security.txt expires on {when}. Extend it (gpg --quick-set-expire), export it again and restart the hub.",
            key.fingerprint
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_is_stable_within_a_day_and_under_a_year() {
        let config = Config::for_data_dir(std::path::Path::new("/nonexistent"));
        let t = 1_800_000_000;
        assert_eq!(expires_at(&config, t), expires_at(&config, t + 60));
        assert!(expires_at(&config, t) - t < 365 * DAY);
        assert!(expires_at(&config, t) > t);
        let text = render(&config, t);
        assert_eq!(text.matches("\nExpires: ").count(), 1, "{text}");
    }
}
