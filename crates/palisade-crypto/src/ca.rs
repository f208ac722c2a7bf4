//! The hub's own certificate authority: a P-256 CA created at first start, and the TLS
//! server certificates it issues. (Device certificates build on the same issuer.)

use crate::{Error, Result, token};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use sha2::Digest;
use time::{Duration, OffsetDateTime};

/// How long the hub CA is valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long a hub server certificate is valid; it is re-issued at start when less than
/// [`SERVER_RENEW_DAYS`] remain.
pub const SERVER_VALIDITY_DAYS: i64 = 397;
pub const SERVER_RENEW_DAYS: i64 = 30;

/// A PEM certificate with its PEM private key (PKCS#8).
#[derive(Clone)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAndKey")
            .field("key_pem", &"…")
            .finish_non_exhaustive()
    }
}

fn err(e: rcgen::Error) -> Error {
    Error::Certificate(e.to_string())
}

fn random_serial() -> SerialNumber {
    let mut bytes = token::random_bytes::<16>();
    bytes[0] &= 0x7f; // positive INTEGER
    SerialNumber::from_slice(&bytes)
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Palisade");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// The hub CA: its certificate and key, and the issuer built from them.
pub struct HubCa {
    pub common_name: String,
    pub material: CertAndKey,
}

impl HubCa {
    /// Create a new CA with a unique name.
    pub fn generate() -> Result<Self> {
        let suffix = &token::sha256_hex(&token::random_bytes::<16>())[..12];
        let common_name = format!("Palisade hub CA {suffix}");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let mut params = ca_params(&common_name);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(err)?;
        Ok(Self {
            common_name,
            material: CertAndKey {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            },
        })
    }

    /// Load a CA created earlier (its common name is part of its stored metadata).
    pub fn load(common_name: String, material: CertAndKey) -> Self {
        Self {
            common_name,
            material,
        }
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>> {
        let key = KeyPair::from_pem(&self.material.key_pem).map_err(err)?;
        Ok(Issuer::new(ca_params(&self.common_name), key))
    }

    /// Issue a TLS server certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, names: &[String]) -> Result<CertAndKey> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().map_or("palisade-hub", String::as_str),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName).map_err(err),
            })
            .collect::<Result<_>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(SERVER_VALIDITY_DAYS);
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer()?).map_err(err)?;
        Ok(CertAndKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// How long a device certificate is valid by default; the agent renews it over its
/// MQTT connection before it expires (the hub's `device_cert_lifetime_secs` may set
/// another lifetime).
pub const DEVICE_VALIDITY_DAYS: i64 = 30;

/// A device certificate issued from the device's own CSR.
#[derive(Debug, Clone)]
pub struct DeviceCertificate {
    pub cert_pem: String,
    /// SHA-256 of the certificate DER, lower-case hex: how the hub recognises it.
    pub sha256: String,
    /// Unix seconds.
    pub not_after: i64,
}

impl HubCa {
    /// Issue a client certificate for `device_id` from a PEM CSR. The CSR's signature
    /// proves possession of the key (the private key never leaves the device); its
    /// requested names and extensions are ignored: the hub decides what the
    /// certificate says (CN and URI SAN = the device id, client authentication only).
    pub fn issue_device(&self, csr_pem: &str, device_id: &str) -> Result<DeviceCertificate> {
        self.issue_device_for(csr_pem, device_id, DEVICE_VALIDITY_DAYS * 86_400)
    }

    /// [`HubCa::issue_device`] with a lifetime of `validity_secs` seconds.
    pub fn issue_device_for(
        &self,
        csr_pem: &str,
        device_id: &str,
        validity_secs: i64,
    ) -> Result<DeviceCertificate> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, device_id);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            format!("urn:palisade:device:{device_id}")
                .try_into()
                .map_err(err)?,
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::seconds(validity_secs.max(60));
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(&csr.public_key, &self.issuer()?)
            .map_err(err)?;
        Ok(DeviceCertificate {
            sha256: token::sha256_hex(cert.der()),
            cert_pem: cert.pem(),
            not_after: params.not_after.unix_timestamp(),
        })
    }
}

/// A new P-256 key pair and a CSR for it, as a device makes them (PEM key, PEM CSR).
/// Used by the agent and by tests; the hub never calls it for a device.
pub fn device_key_and_csr(common_name: &str) -> Result<(String, String)> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).map_err(err)?;
    Ok((key.serialize_pem(), csr.pem().map_err(err)?))
}

/// SHA-256 of the SubjectPublicKeyInfo of a PEM private key, base64 (the form used
/// for public-key pinning).
pub fn spki_sha256_base64(key_pem: &str) -> Result<String> {
    let key = KeyPair::from_pem(key_pem).map_err(err)?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    Ok(data_encoding::BASE64.encode(&sha2::Sha256::digest(&spki)))
}

/// SHA-256 fingerprint of a DER certificate, as colon-separated upper-case hex (the form
/// browsers and `openssl x509 -fingerprint -sha256` show).
pub fn fingerprint(der: &[u8]) -> String {
    token::sha256_hex(der)
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_server_certificate_from_reloaded_ca() {
        let ca = HubCa::generate().expect("ca");
        let reloaded = HubCa::load(ca.common_name.clone(), ca.material.clone());
        let server = reloaded
            .issue_server(&["localhost".into(), "127.0.0.1".into()])
            .expect("server cert");
        assert!(server.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(server.key_pem.contains("PRIVATE KEY"));
        assert_eq!(fingerprint(b"x").len(), 32 * 3 - 1);
    }

    #[test]
    fn auth10_device_certificate_from_csr_ignores_requested_names() {
        let ca = HubCa::generate().expect("ca");
        let (_key, csr) = device_key_and_csr("attacker-chosen-name").expect("csr");
        let cert = ca
            .issue_device(&csr, "0123456789abcdef0123456789abcdef")
            .expect("issued");
        assert!(cert.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(cert.sha256.len(), 64);
        assert!(
            ca.issue_device(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                "x"
            )
            .is_err()
        );
    }
}
