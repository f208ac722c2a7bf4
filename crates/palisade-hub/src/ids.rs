//! Typed, validated identifiers: a value of these types has passed the edge checks.

use serde::Serialize;

/// Why an identifier was refused; `Display` is the message shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error(
        "A user name has 3 to 32 characters: lower-case letters, digits, '.', '_' or '-', starting with a letter or digit."
    )]
    Username,
    #[error("Enter a valid e-mail address (at most 254 characters).")]
    Email,
    #[error(
        "A product model id has 2 to 40 characters: lower-case letters, digits and '-', starting with a letter."
    )]
    Product,
}

/// A device identifier (128 random bits, hex). It is the certificate's common name
/// and the `{device_id}` of its MQTT topics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DeviceId(String);

impl DeviceId {
    pub fn generate() -> Self {
        Self(data_encoding::HEXLOWER.encode(&palisade_crypto::token::random_bytes::<16>()))
    }
    pub fn parse(s: &str) -> Option<Self> {
        UserId::parse(s).map(|u| Self(u.0))
    }
    pub(crate) fn from_db(s: String) -> Self {
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

/// A product model id, a slug such as `cam-v2`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ProductId(String);

impl ProductId {
    pub fn parse(typed: &str) -> Result<Self, InvalidId> {
        let s = typed.trim();
        let ok = (2..=40).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidId::Product)
        }
    }
    pub(crate) fn from_db(s: String) -> Self {
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ProductId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

/// An opaque user identifier (128 random bits, hex).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn generate() -> Self {
        Self(data_encoding::HEXLOWER.encode(&palisade_crypto::token::random_bytes::<16>()))
    }
    /// Accept an identifier from storage or a URL (32 lower-case hex digits).
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(s.to_owned()))
    }
    pub(crate) fn from_db(s: String) -> Self {
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

/// A user name: lower-cased, 3–32 characters of `[a-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    pub fn parse(typed: &str) -> Result<Self, InvalidId> {
        let s = typed.trim().to_lowercase();
        let ok = (3..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        if ok {
            Ok(Self(s))
        } else {
            Err(InvalidId::Username)
        }
    }
    pub(crate) fn from_db(s: String) -> Self {
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

/// An e-mail address, lower-cased; checked for shape only (a verification link proves it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(typed: &str) -> Result<Self, InvalidId> {
        let s = typed.trim().to_lowercase();
        let ok = s.len() <= 254
            && s.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.len() <= 64
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && domain
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
            })
            && !s.chars().any(|c| {
                c.is_whitespace() || c.is_control() || "<>\"(),;:\\[]".contains(c) && c != '@'
            });
        if ok {
            Ok(Self(s))
        } else {
            Err(InvalidId::Email)
        }
    }
    pub(crate) fn from_db(s: String) -> Self {
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input1_identifiers_are_validated() {
        assert_eq!(
            Username::parse(" Alice.B ").map(|u| u.0),
            Ok("alice.b".into())
        );
        assert!(Username::parse("ab").is_err());
        assert!(Username::parse("-alice").is_err());
        assert!(Username::parse("alice<script>").is_err());
        assert!(Email::parse("Alice@Example.org").is_ok());
        assert!(Email::parse("alice@localhost").is_err());
        assert!(Email::parse("a b@example.org").is_err());
        assert!(Email::parse("a@example.org\r\nBcc: x@y.z").is_err());
        assert!(UserId::parse(UserId::generate().as_str()).is_some());
        assert!(UserId::parse("../../etc").is_none());
    }
}
