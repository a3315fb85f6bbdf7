//! HTTPS for the Administration Service.
//!
//! On loopback the console speaks plain HTTP (nothing leaves the machine).
//! Bound to another address — or with `[admin] tls = true` — it serves TLS
//! (OpenSSL, Mozilla's intermediate settings) with the certificate the
//! administrator names (`tls_certificate`, `tls_key`) or, without one, a
//! self-signed certificate made on first start and kept in the data folder
//! (`tls/admin-cert.pem`, key readable by its owner only). Its SHA-256
//! fingerprint is logged so that browsers' warnings can be checked against
//! it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509NameBuilder, X509};

use super::ConsoleSettings;

/// Days a generated certificate is valid (the longest browsers accept).
const GENERATED_DAYS: u32 = 397;

/// Why HTTPS could not be set up; the server does not start then.
#[derive(Debug, thiserror::Error)]
#[error("the console's HTTPS could not be set up: {0}")]
pub struct TlsError(String);

/// The folder for a generated certificate.
pub fn generated_paths(settings: &ConsoleSettings) -> (PathBuf, PathBuf) {
    let dir = settings.data_dir.join("tls");
    (dir.join("admin-cert.pem"), dir.join("admin-key.pem"))
}

/// The acceptor when HTTPS is on (see the module doc), `None` otherwise.
pub fn acceptor(settings: &ConsoleSettings) -> Result<Option<SslAcceptor>, TlsError> {
    if !settings.admin.tls_enabled() {
        return Ok(None);
    }
    let (cert, key) = match (&settings.admin.tls_certificate, &settings.admin.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        (None, None) => {
            let (cert, key) = generated_paths(settings);
            if !cert.exists() || !key.exists() {
                generate(settings, &cert, &key)?;
            }
            (cert, key)
        }
        _ => {
            return Err(TlsError(
                "set both [admin] tls_certificate and tls_key, or neither (a certificate is then generated)".into(),
            ))
        }
    };
    let fail = |what: &str, path: &Path, e: openssl::error::ErrorStack| {
        TlsError(format!("{what} {} cannot be used ({e})", path.display()))
    };
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| TlsError(e.to_string()))?;
    builder
        .set_certificate_chain_file(&cert)
        .map_err(|e| fail("the certificate", &cert, e))?;
    builder
        .set_private_key_file(&key, SslFiletype::PEM)
        .map_err(|e| fail("the private key", &key, e))?;
    builder.check_private_key().map_err(|e| {
        TlsError(format!(
            "the private key {} does not belong to the certificate {} ({e})",
            key.display(),
            cert.display()
        ))
    })?;
    let pem = std::fs::read(&cert).map_err(|e| TlsError(format!("{}: {e}", cert.display())))?;
    if let Ok(x509) = X509::from_pem(&pem) {
        if let Ok(digest) = x509.digest(MessageDigest::sha256()) {
            let fingerprint: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
            tracing::info!(target: "bramble::admin", certificate = %cert.display(), sha256 = %fingerprint.join(":"), "the console is served over HTTPS");
        }
    }
    Ok(Some(builder.build()))
}

/// A self-signed certificate for the server's name, `localhost` and the
/// listen address.
fn generate(settings: &ConsoleSettings, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let e = |e: openssl::error::ErrorStack| TlsError(format!("cannot make a certificate: {e}"));
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(e)?;
    let key = PKey::from_ec_key(EcKey::generate(&group).map_err(e)?).map_err(e)?;
    let mut name = X509NameBuilder::new().map_err(e)?;
    name.append_entry_by_nid(Nid::COMMONNAME, &settings.server_name)
        .map_err(e)?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Bramble Administration Service")
        .map_err(e)?;
    let name = name.build();
    let mut builder = X509::builder().map_err(e)?;
    builder.set_version(2).map_err(e)?;
    let mut serial = BigNum::new().map_err(e)?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false).map_err(e)?;
    let serial = serial.to_asn1_integer().map_err(e)?;
    builder.set_serial_number(&serial).map_err(e)?;
    builder.set_subject_name(&name).map_err(e)?;
    builder.set_issuer_name(&name).map_err(e)?;
    builder.set_pubkey(&key).map_err(e)?;
    let not_before = Asn1Time::days_from_now(0).map_err(e)?;
    let not_after = Asn1Time::days_from_now(GENERATED_DAYS).map_err(e)?;
    builder.set_not_before(&not_before).map_err(e)?;
    builder.set_not_after(&not_after).map_err(e)?;
    let mut san = SubjectAlternativeName::new();
    san.dns("localhost").ip("127.0.0.1").ip("::1");
    if !settings.server_name.is_empty() && !settings.server_name.contains(char::is_whitespace) {
        san.dns(&settings.server_name);
    }
    let ip: IpAddr = settings.admin.listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        san.ip(&ip.to_string());
    }
    let san = san.build(&builder.x509v3_context(None, None)).map_err(e)?;
    builder.append_extension(san).map_err(e)?;
    builder
        .append_extension(BasicConstraints::new().critical().build().map_err(e)?)
        .map_err(e)?;
    builder
        .append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .build()
                .map_err(e)?,
        )
        .map_err(e)?;
    builder
        .append_extension(ExtendedKeyUsage::new().server_auth().build().map_err(e)?)
        .map_err(e)?;
    builder.sign(&key, MessageDigest::sha256()).map_err(e)?;
    let cert = builder.build();

    let folder = cert_path.parent().unwrap_or(Path::new("."));
    let io = |path: &Path, err: std::io::Error| {
        TlsError(format!("cannot write {} ({err})", path.display()))
    };
    crate::db::create_private_dir(folder).map_err(|err| io(folder, err))?;
    write_private(key_path, &key.private_key_to_pem_pkcs8().map_err(e)?)
        .map_err(|err| io(key_path, err))?;
    std::fs::write(cert_path, cert.to_pem().map_err(e)?).map_err(|err| io(cert_path, err))?;
    tracing::info!(target: "bramble::admin", certificate = %cert_path.display(), "made a self-signed certificate for the console");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}
