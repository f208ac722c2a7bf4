//! Palisade's cryptography, without I/O: password policy and Argon2id hashing, TOTP,
//! random tokens and their storage hashes, and the hub's certificate authority.
#![forbid(unsafe_code)]

pub mod ca;
pub mod password;
pub mod sealed;
pub mod token;
pub mod totp;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("stored password hash is not a valid PHC string")]
    BadHash,
    #[error("certificate generation failed: {0}")]
    Certificate(String),
    #[error("TOTP secret is invalid")]
    TotpSecret,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
