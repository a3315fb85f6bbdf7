//! TLS on the server port (openssl): the relay's identity, a self-signed
//! certificate when none is configured, and the acceptor.

use std::path::Path;
use std::pin::Pin;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{Ssl, SslAcceptor, SslMethod, SslVersion};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509NameBuilder, X509};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_openssl::SslStream;

use crate::config::TlsIdentity;
use crate::RelayError;

/// A certificate chain (leaf first) and its private key.
#[derive(Clone)]
pub struct Identity {
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
}

impl Identity {
    /// The leaf certificate as PEM: what a server pins.
    pub fn certificate_pem(&self) -> String {
        self.chain
            .first()
            .and_then(|c| c.to_pem().ok())
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .unwrap_or_default()
    }

    /// SHA-256 of the leaf certificate, as colon-separated hex, for an
    /// administrator to compare.
    pub fn fingerprint(&self) -> String {
        self.chain
            .first()
            .and_then(|c| c.digest(MessageDigest::sha256()).ok())
            .map(|d| {
                d.iter()
                    .map(|b| format!("{b:02X}"))
                    .collect::<Vec<_>>()
                    .join(":")
            })
            .unwrap_or_default()
    }

    /// The private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> Result<String, ErrorStack> {
        self.key
            .private_key_to_pem_pkcs8()
            .map(|p| String::from_utf8_lossy(&p).into_owned())
    }

    /// Parses PEM text: one or more certificates (leaf first) and a key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Identity, ErrorStack> {
        let chain = X509::stack_from_pem(cert_pem)?;
        let key = PKey::private_key_from_pem(key_pem)?;
        Ok(Identity { chain, key })
    }

    /// Loads, generates or generates-and-saves the configured identity.
    pub fn from_config(tls: &TlsIdentity) -> Result<Identity, RelayError> {
        let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
            return self_signed()
                .map_err(|e| RelayError::Tls(format!("cannot generate a certificate: {e}")));
        };
        if tls.generate_if_missing && !cert.exists() && !key.exists() {
            let identity = self_signed()
                .map_err(|e| RelayError::Tls(format!("cannot generate a certificate: {e}")))?;
            write_identity(&identity, cert, key)?;
            return Ok(identity);
        }
        let read = |p: &Path| {
            std::fs::read(p)
                .map_err(|e| RelayError::Tls(format!("cannot read {}: {e}", p.display())))
        };
        let identity = Identity::from_pem(&read(cert)?, &read(key)?).map_err(|e| {
            RelayError::Tls(format!(
                "{} / {} are not a PEM certificate and private key: {e}",
                cert.display(),
                key.display()
            ))
        })?;
        if identity.chain.is_empty() {
            return Err(RelayError::Tls(format!(
                "{} holds no certificate",
                cert.display()
            )));
        }
        Ok(identity)
    }

    /// A TLS server context for this identity (TLS 1.2 or later).
    pub fn acceptor(&self) -> Result<SslAcceptor, ErrorStack> {
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
        builder.set_min_proto_version(Some(SslVersion::TLS1_2))?;
        builder.set_private_key(&self.key)?;
        let mut certs = self.chain.iter();
        if let Some(leaf) = certs.next() {
            builder.set_certificate(leaf)?;
        }
        for extra in certs {
            builder.add_extra_chain_cert(extra.clone())?;
        }
        builder.check_private_key()?;
        Ok(builder.build())
    }
}

fn write_identity(identity: &Identity, cert: &Path, key: &Path) -> Result<(), RelayError> {
    use std::io::Write;
    let fail = |p: &Path, e: &dyn std::fmt::Display| {
        RelayError::Tls(format!("cannot write {}: {e}", p.display()))
    };
    let key_pem = identity.key_pem().map_err(|e| fail(key, &e))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(key).map_err(|e| fail(key, &e))?;
    file.write_all(key_pem.as_bytes())
        .map_err(|e| fail(key, &e))?;
    std::fs::write(cert, identity.certificate_pem()).map_err(|e| fail(cert, &e))?;
    Ok(())
}

/// A self-signed certificate for `localhost`, 127.0.0.1 and ::1 with a
/// fresh P-256 key, valid from yesterday for 825 days.
pub fn self_signed() -> Result<Identity, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;

    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, "Bramble relay")?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Bramble")?;
    let name = name.build();

    let mut serial = BigNum::new()?;
    serial.rand(127, openssl::bn::MsbOption::MAYBE_ZERO, false)?;
    let serial = Asn1Integer::from_bn(&serial)?;

    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(&name)?;
    builder.set_pubkey(&key)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let not_before = Asn1Time::from_unix(now - 86_400)?;
    let not_after = Asn1Time::from_unix(now + 825 * 86_400)?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;
    builder.append_extension(BasicConstraints::new().critical().build()?)?;
    builder.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
    builder.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .ip("::1")
        .build(&builder.x509v3_context(None, None))?;
    builder.append_extension(san)?;
    builder.sign(&key, MessageDigest::sha256())?;
    Ok(Identity {
        chain: vec![builder.build()],
        key,
    })
}

/// Accepts TLS on `stream`.
pub async fn accept<S>(acceptor: &SslAcceptor, stream: S) -> Result<SslStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ssl = Ssl::new(acceptor.context()).map_err(|e| e.to_string())?;
    let mut tls = SslStream::new(ssl, stream).map_err(|e| e.to_string())?;
    Pin::new(&mut tls)
        .accept()
        .await
        .map_err(|e| e.to_string())?;
    Ok(tls)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn self_signed_round_trips_through_pem_and_files() {
        let id = self_signed().unwrap();
        assert!(id
            .certificate_pem()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(id.fingerprint().len(), 32 * 3 - 1);
        id.acceptor().unwrap();
        let again = Identity::from_pem(
            id.certificate_pem().as_bytes(),
            id.key_pem().unwrap().as_bytes(),
        )
        .unwrap();
        assert_eq!(again.certificate_pem(), id.certificate_pem());

        let dir = tempfile::tempdir().unwrap();
        let tls = TlsIdentity {
            cert: Some(dir.path().join("cert.pem")),
            key: Some(dir.path().join("key.pem")),
            generate_if_missing: true,
        };
        let first = Identity::from_config(&tls).unwrap();
        let second = Identity::from_config(&tls).unwrap();
        assert_eq!(
            first.certificate_pem(),
            second.certificate_pem(),
            "kept across restarts"
        );

        let missing = TlsIdentity::files(dir.path().join("none.pem"), dir.path().join("key.pem"));
        let err = Identity::from_config(&missing).err().unwrap().to_string();
        assert!(err.contains("none.pem"), "{err}");
    }
}
