//! TLS client configuration (rustls, ring provider). The only trust anchor is the hub
//! CA given to the agent (pinned); system roots are never consulted; the server's
//! certificate chain, validity period and host name are always verified. There is no
//! way to turn verification off (ENC-2, security invariant 1).

use crate::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::sync::Arc;

/// The crypto provider used for every connection the agent makes.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// All certificates in a PEM document (at least one).
pub fn parse_certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(what, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(Error::invalid(what, "no certificate in PEM"));
    }
    Ok(certs)
}

/// The private key in a PEM document.
pub fn parse_key(pem: &[u8], what: &'static str) -> Result<PrivateKeyDer<'static>> {
    // The error can quote PEM content; keep key material out of messages.
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|_| Error::invalid(what, "no usable private key in PEM"))
}

/// A root store holding only the certificates in `ca_pem`.
pub fn pinned_roots(ca_pem: &[u8]) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem, "hub CA certificate")? {
        roots
            .add(cert)
            .map_err(|e| Error::invalid("hub CA certificate", e.to_string()))?;
    }
    Ok(roots)
}

/// A client configuration trusting only `ca_pem`, optionally presenting a client
/// certificate (whose key must match: checked here).
pub fn client_config(
    ca_pem: &[u8],
    client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid("TLS configuration", e.to_string()))?
        .with_root_certificates(pinned_roots(ca_pem)?);
    match client_auth {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| Error::invalid("device certificate and key", e.to_string())),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The rustls error somewhere in an error's chain (TLS failures reach us wrapped in
/// `std::io::Error` and HTTP client errors).
pub(crate) fn find_rustls_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        // `io::Error::source` skips the error it wraps (and I/O errors get wrapped in
        // I/O errors): step into the wrapped one instead.
        current = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_error_is_found_inside_nested_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, tls.clone());
        let outer = std::io::Error::other(inner);
        assert_eq!(find_rustls_error(&outer), Some(&tls));
        assert_eq!(find_rustls_error(&std::io::Error::other("plain")), None);
    }
}
