//! Random secrets (session tokens, setup and recovery codes, API tokens) and the
//! one-way digests the hub stores instead of them.

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD, HEXLOWER};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// 32 random bytes from the operating system's CSPRNG, URL-safe base64 (256 bits).
pub fn random_token() -> String {
    BASE64URL_NOPAD.encode(&random_bytes::<32>())
}

/// `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    fill_random(&mut bytes);
    bytes
}

/// Fill `buf` from the operating system's CSPRNG. A machine without one cannot run
/// Palisade safely, so this panics rather than continue with weak secrets (fail closed).
pub fn fill_random(buf: &mut [u8]) {
    #[allow(clippy::expect_used)]
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// A human-typable code with `bits` of entropy (rounded up to whole base32 groups of
/// 5 bits), shown in groups of four separated by dashes, e.g. `K7QF-2M4D-…`.
pub fn human_code(bits: usize) -> String {
    let bytes = bits.div_ceil(8);
    let mut raw = vec![0u8; bytes];
    fill_random(&mut raw);
    let encoded = BASE32_NOPAD.encode(&raw);
    encoded
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// Canonical form of a human code as typed: upper case, no spaces or dashes. Codes are
/// compared in this form, so `k7qf 2m4d` and `K7QF-2M4D` are the same code.
pub fn normalize_code(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_uppercase)
        .collect()
}

/// The digest under which a secret is stored: SHA-256, lower-case hex. Secrets handled
/// here carry ≥128 bits of entropy, so a fast hash is appropriate (unlike passwords).
pub fn digest(secret: &str) -> String {
    HEXLOWER.encode(&Sha256::digest(secret.as_bytes()))
}

/// SHA-256 of arbitrary bytes, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    HEXLOWER.encode(&Sha256::digest(bytes))
}

/// Constant-time equality for secrets of equal length.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_long() {
        let a = random_token();
        assert_ne!(a, random_token());
        assert_eq!(a.len(), 43);
    }

    #[test]
    fn human_code_has_requested_entropy_and_normalizes() {
        let code = human_code(130);
        let canonical = normalize_code(&code.to_lowercase().replace('-', " "));
        assert!(canonical.len() * 5 >= 130, "{code}");
        assert_eq!(canonical, normalize_code(&code));
    }
}
