//! Password policy (NIST SP 800-63B-4: length, blocklist, context words; no composition
//! rules) and Argon2id hashing in PHC strings (OWASP: m = 19 MiB, t = 2, p = 1).
//!
//! Passwords are NFKC-normalised before they are measured or hashed, so the same
//! passphrase typed on different keyboards verifies, and their length is counted in
//! Unicode code points. Nothing is ever truncated: a password above the maximum is
//! refused with a message, not shortened.

use crate::{Error, Result, token};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;
use zxcvbn::matching::patterns::MatchPattern;

/// Minimum length when the password is the only authentication factor.
pub const MIN_LEN_SINGLE_FACTOR: usize = 15;
/// Minimum length once the account has a second factor (TOTP).
pub const MIN_LEN_WITH_MFA: usize = 8;
/// Longest password accepted. Far above NIST's 64, low enough that hashing and the
/// strength estimate stay cheap.
pub const MAX_LEN: usize = 256;
/// Argon2id memory cost in KiB (OWASP minimum: 19 MiB).
pub const ARGON2_M_KIB: u32 = 19_456;
/// Argon2id iterations.
pub const ARGON2_T: u32 = 2;
/// Argon2id parallelism.
pub const ARGON2_P: u32 = 1;
/// Estimated guesses below which a password is refused as too easy to guess (an
/// offline attacker against a slow hash manages ~10^8 guesses cheaply).
const MIN_GUESSES_LOG10: f64 = 8.0;
/// Only this many leading characters go to the strength estimator, whose cost grows
/// faster than linearly with length; anything longer is long enough to be safe.
const ESTIMATE_PREFIX: usize = 64;
/// Context words shorter than this are not checked (they match too much by chance).
const MIN_CONTEXT_WORD: usize = 4;

/// A password wrapped so that it is zeroed on drop and never printed.
pub struct Password(Zeroizing<String>);

impl Password {
    /// Normalise (NFKC) what the user typed.
    pub fn new(typed: &str) -> Self {
        Self(Zeroizing::new(typed.nfkc().collect()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in Unicode code points after normalisation.
    pub fn chars(&self) -> usize {
        self.0.chars().count()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(…)")
    }
}

/// Why a new password was refused; `Display` is the message shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("The password must be at least {min} characters long (this one has {actual}).")]
    TooShort { min: usize, actual: usize },
    #[error("The password may be at most {max} characters long (this one has {actual}).")]
    TooLong { max: usize, actual: usize },
    #[error(
        "This password is on a list of common or breached passwords; attackers try those first. Choose another."
    )]
    Common,
    #[error(
        "The password contains \"{0}\", which is part of your account or this product; attackers try those first."
    )]
    ContextWord(String),
    #[error(
        "This password is too easy to guess{0}. A few unrelated words make a strong passphrase."
    )]
    Guessable(String),
}

/// What the policy needs to know about the account the password is for.
#[derive(Debug, Clone, Default)]
pub struct PasswordContext<'a> {
    /// User name, e-mail, display name, product and brand names …
    pub words: Vec<&'a str>,
    /// Whether the account has (or is enrolling) a second factor.
    pub has_mfa: bool,
}

/// Check a new password against the policy. Returns the first reason to refuse it.
pub fn check_policy(password: &Password, context: &PasswordContext<'_>) -> Result<(), Rejection> {
    let actual = password.chars();
    let min = if context.has_mfa {
        MIN_LEN_WITH_MFA
    } else {
        MIN_LEN_SINGLE_FACTOR
    };
    if actual < min {
        return Err(Rejection::TooShort { min, actual });
    }
    if actual > MAX_LEN {
        return Err(Rejection::TooLong {
            max: MAX_LEN,
            actual,
        });
    }
    let lowered = password.expose().to_lowercase();
    let mut inputs: Vec<String> = Vec::new();
    for word in &context.words {
        // An e-mail address contributes its local part and domain labels too.
        for part in std::iter::once(*word).chain(word.split(['@', '.', ' ', '_', '-', '+'])) {
            let part = part.trim().to_lowercase();
            if part.chars().count() >= MIN_CONTEXT_WORD {
                if lowered.contains(&part) {
                    return Err(Rejection::ContextWord(part));
                }
                inputs.push(part);
            }
        }
    }
    let prefix: String = password.expose().chars().take(ESTIMATE_PREFIX).collect();
    let input_refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let estimate = zxcvbn::zxcvbn(&prefix, &input_refs);
    let whole_is_common = estimate.sequence().iter().any(|m| {
        m.i == 0
            && m.j + 1 >= prefix.chars().count()
            // zxcvbn keeps its `DictionaryType` enum private; its Debug name is stable.
            && matches!(&m.pattern, MatchPattern::Dictionary(d) if format!("{:?}", d.dictionary_name) == "Passwords")
    });
    if whole_is_common {
        return Err(Rejection::Common);
    }
    if actual <= ESTIMATE_PREFIX && estimate.guesses_log10() < MIN_GUESSES_LOG10 {
        let why = estimate
            .feedback()
            .and_then(|f| f.warning())
            .map(|w| format!(" ({})", w.to_string().trim_end_matches('.').to_lowercase()))
            .unwrap_or_default();
        return Err(Rejection::Guessable(why));
    }
    Ok(())
}

fn argon2() -> Argon2<'static> {
    #[allow(clippy::expect_used)]
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, Some(32))
        .expect("constant Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hash a password with Argon2id and a fresh 128-bit salt, as a PHC string. CPU- and
/// memory-heavy (~19 MiB, tens of ms): call it off the async threads.
pub fn hash(password: &Password) -> Result<String> {
    let salt_bytes = token::random_bytes::<16>();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| Error::Hash(e.to_string()))?;
    argon2()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Hash(e.to_string()))
}

/// Verify a password against a stored PHC string (using the parameters it records).
pub fn verify(password: &Password, phc: &str) -> Result<bool> {
    let parsed = PasswordHash::new(phc).map_err(|_| Error::BadHash)?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(Error::BadHash);
    }
    Ok(argon2()
        .verify_password(password.expose().as_bytes(), &parsed)
        .is_ok())
}

/// A PHC string computed once per process, verified against when an account does not
/// exist so that a login for an unknown user costs the same time as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        hash(&Password::new(&token::random_token())).unwrap_or_else(|_| {
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()
        })
    })
}

/// The Argon2 variant and (m, t, p) parameters recorded in a PHC string.
pub fn hash_parameters(phc: &str) -> Option<(String, u32, u32, u32)> {
    let parsed = PasswordHash::new(phc).ok()?;
    let params = Params::try_from(&parsed).ok()?;
    Some((
        parsed.algorithm.as_str().to_owned(),
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p: &str, words: &[&str], mfa: bool) -> Result<(), Rejection> {
        check_policy(
            &Password::new(p),
            &PasswordContext {
                words: words.to_vec(),
                has_mfa: mfa,
            },
        )
    }

    #[test]
    fn auth4_length_boundaries() {
        assert_eq!(
            check("tulip-ocean-gr", &[], false),
            Err(Rejection::TooShort {
                min: 15,
                actual: 14
            })
        );
        assert_eq!(check("tulip-ocean-gra", &[], false), Ok(()));
        assert_eq!(check("rv8#qpL2", &[], true), Ok(()));
        assert!(matches!(
            check("rv8#qpL", &[], true),
            Err(Rejection::TooShort { .. })
        ));
        let long64: String = "saffron lantern quietly bends "
            .repeat(3)
            .chars()
            .take(64)
            .collect();
        assert_eq!(long64.chars().count(), 64);
        assert_eq!(check(&long64, &[], false), Ok(()));
        assert!(matches!(
            check(&"x".repeat(300), &[], false),
            Err(Rejection::TooLong { .. })
        ));
    }

    #[test]
    fn auth4_unicode_counts_code_points() {
        // 15 code points, many more bytes.
        let p = "ÿöürğñ日本語の山と川です";
        assert_eq!(check(p, &[], false), Ok(()));
        // NFKC: a full-width passphrase equals its ASCII form.
        assert_eq!(Password::new("ＡＢＣ").expose(), "ABC");
    }

    #[test]
    fn auth6_blocklist_and_context() {
        assert!(check("passwordpassword", &[], false).is_err());
        assert!(check("1234567890123456", &[], false).is_err());
        assert!(check("aaaaaaaaaaaaaaaaaaaa", &[], false).is_err());
        assert!(check("iloveyou12345", &[], true).is_err());
        assert!(matches!(
            check("alice-likes-green-tea", &["alice@example.org"], false),
            Err(Rejection::ContextWord(w)) if w == "alice"
        ));
        assert!(matches!(
            check("my palisade hub passphrase", &["palisade"], false),
            Err(Rejection::ContextWord(_))
        ));
    }

    #[test]
    fn auth9_argon2id_parameters_and_unique_salts() {
        let p = Password::new("correct horse battery staple");
        let a = hash(&p).expect("hash");
        let b = hash(&p).expect("hash");
        assert_ne!(a, b, "salts must differ");
        assert_eq!(
            hash_parameters(&a),
            Some(("argon2id".into(), ARGON2_M_KIB, ARGON2_T, ARGON2_P))
        );
        assert!(verify(&p, &a).expect("verify"));
        assert!(!verify(&Password::new("correct horse battery stapl"), &a).expect("verify"));
    }
}
