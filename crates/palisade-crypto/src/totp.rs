//! Time-based one-time passwords (RFC 6238: HMAC-SHA1, 6 digits, 30 s steps, ±1 step)
//! and recovery codes. Replay protection needs state, so `verify` returns the matched
//! time step and the caller refuses any step not newer than the last one accepted.

use crate::{Error, Result, token};
use data_encoding::BASE32_NOPAD;

/// Seconds per TOTP step.
pub const STEP_SECONDS: u64 = 30;

/// A TOTP shared secret (160 random bits, as RFC 4226 recommends).
#[derive(Clone)]
pub struct TotpSecret(Vec<u8>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(…)")
    }
}

impl TotpSecret {
    pub fn generate() -> Self {
        Self(token::random_bytes::<20>().to_vec())
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        if bytes.len() < 16 {
            return Err(Error::TotpSecret);
        }
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret as authenticator apps take it: base32 without padding.
    pub fn to_base32(&self) -> String {
        BASE32_NOPAD.encode(&self.0)
    }

    /// `otpauth://` URI for authenticator apps.
    pub fn provisioning_uri(&self, issuer: &str, account: &str) -> String {
        format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits=6&period={}",
            percent_encode(issuer),
            percent_encode(account),
            self.to_base32(),
            percent_encode(issuer),
            STEP_SECONDS
        )
    }

    fn totp(&self) -> Result<totp_rs::Totp> {
        totp_rs::Builder::new()
            .with_secret(self.0.clone())
            .with_skew(1)
            .with_step_duration(STEP_SECONDS)
            .build()
            .map_err(|_| Error::TotpSecret)
    }

    /// The time step a code matches at `unix_seconds` (allowing one step of clock skew
    /// either way), or `None`.
    pub fn verify(&self, code: &str, unix_seconds: u64) -> Option<u64> {
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.totp().ok()?.check(&code, unix_seconds)
    }

    /// The code for `unix_seconds` (used by tests and the enrolment page's self-check).
    pub fn code_at(&self, unix_seconds: u64) -> Result<String> {
        Ok(self.totp()?.generate(unix_seconds).to_string())
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Ten single-use recovery codes, 80 bits each.
pub fn recovery_codes() -> Vec<String> {
    (0..10).map(|_| token::human_code(80)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B, SHA-1 secret "12345678901234567890", T = 59 → 94287082 (8 digits);
        // the 6-digit code is the last six digits.
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec()).expect("secret");
        assert_eq!(secret.code_at(59).expect("code"), "287082");
        assert_eq!(secret.verify("287082", 59), Some(1));
        assert_eq!(secret.verify("287 082", 59), Some(1));
        assert_eq!(secret.verify("000000", 59), None);
        assert_eq!(secret.verify("28708", 59), None);
    }

    #[test]
    fn skew_is_one_step() {
        let secret = TotpSecret::generate();
        let code = secret.code_at(1_000_000).expect("code");
        assert!(secret.verify(&code, 1_000_000 + 30).is_some());
        assert!(secret.verify(&code, 1_000_000 + 95).is_none());
    }
}
