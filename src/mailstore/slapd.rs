//! A real OpenLDAP server on loopback, for tests and pilots: a temporary
//! folder with `slapd.conf` and an mdb database loaded with `slapadd`, the
//! server started on a free port, ready once it accepts a TCP connection,
//! and always killed when the [`Slapd`] is dropped.
//!
//! Needs the Debian packages `slapd` and `ldap-utils`.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The suffix, root DN and root password of every test directory.
pub const SUFFIX: &str = "dc=example,dc=com";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=com";
pub const ROOT_PASSWORD: &str = "secret";

/// A running slapd.
#[derive(Debug)]
pub struct Slapd {
    dir: tempfile::TempDir,
    child: Child,
    addr: SocketAddr,
    /// The `ldaps://` listener, when started with TLS.
    tls_addr: Option<SocketAddr>,
}

/// Why slapd could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SlapdError {
    #[error("{tool} is not installed or failed to run ({source}); install the Debian packages slapd and ldap-utils")]
    Missing {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} failed: {output}")]
    Failed { tool: &'static str, output: String },
    #[error("slapd did not accept connections on {0} within 10 s")]
    NotReady(SocketAddr),
    #[error("cannot make a test certificate: {0}")]
    Certificate(#[from] openssl::error::ErrorStack),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Slapd {
    /// Starts slapd with the entries of `ldif` (the suffix entry is added
    /// first) and `extra_conf` appended to the database section (limits,
    /// more access rules).
    pub fn start(ldif: &str, extra_conf: &str) -> Result<Slapd, SlapdError> {
        Self::start_with(ldif, extra_conf, false)
    }

    /// Like [`Slapd::start`], with TLS: a self-signed certificate for
    /// 127.0.0.1 (its PEM at [`Slapd::certificate`]), StartTLS on the
    /// `ldap://` port and a second, `ldaps://` port.
    pub fn start_tls(ldif: &str, extra_conf: &str) -> Result<Slapd, SlapdError> {
        Self::start_with(ldif, extra_conf, true)
    }

    fn start_with(ldif: &str, extra_conf: &str, tls: bool) -> Result<Slapd, SlapdError> {
        let dir = tempfile::Builder::new()
            .prefix("bramble-slapd-")
            .tempdir()?;
        let d = dir.path();
        std::fs::create_dir(d.join("db"))?;
        let tls_conf = if tls {
            write_certificate(d)?;
            format!(
                "TLSCertificateFile {d}/cert.pem\nTLSCertificateKeyFile {d}/key.pem\n",
                d = d.display()
            )
        } else {
            String::new()
        };
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             {tls_conf}\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             pidfile {d}/slapd.pid\n\
             argsfile {d}/slapd.args\n\
             database mdb\n\
             maxsize 1073741824\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"{ROOT_DN}\"\n\
             rootpw {ROOT_PASSWORD}\n\
             directory {d}/db\n\
             index objectClass eq\n\
             index entryCSN,modifyTimestamp eq\n\
             access to attrs=userPassword by self write by anonymous auth by * none\n\
             access to * by * read\n\
             {extra_conf}\n",
            d = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf)?;
        let data = format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n{ldif}"
        );
        std::fs::write(d.join("data.ldif"), data)?;
        let conf_path = d.join("slapd.conf");
        run_checked(
            "slaptest",
            Command::new("slaptest").arg("-f").arg(&conf_path).arg("-u"),
        )?;
        run_checked(
            "slapadd",
            // -q: no consistency checks while loading, much faster for
            // the large directories of benchmarks.
            Command::new("slapadd")
                .arg("-q")
                .arg("-f")
                .arg(&conf_path)
                .arg("-l")
                .arg(d.join("data.ldif")),
        )?;
        let addr = free_port()?;
        let tls_addr = if tls { Some(free_port()?) } else { None };
        let mut listen = format!("ldap://{addr}/");
        if let Some(tls_addr) = tls_addr {
            listen.push_str(&format!(" ldaps://{tls_addr}/"));
        }
        let child = Command::new("slapd")
            .arg("-d")
            .arg("0")
            .arg("-h")
            .arg(listen)
            .arg("-f")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| SlapdError::Missing {
                tool: "slapd",
                source,
            })?;
        let slapd = Slapd {
            dir,
            child,
            addr,
            tls_addr,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in std::iter::once(addr).chain(tls_addr) {
            while TcpStream::connect(addr).is_err() {
                if Instant::now() > deadline {
                    return Err(SlapdError::NotReady(addr));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(slapd)
    }

    /// `ldaps://127.0.0.1:PORT`, when started with TLS.
    pub fn ldaps_url(&self) -> Option<String> {
        self.tls_addr.map(|a| format!("ldaps://{a}"))
    }

    /// The PEM certificate to trust, when started with TLS.
    pub fn certificate(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// `ldap://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("ldap://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn folder(&self) -> &Path {
        self.dir.path()
    }

    /// Runs an ldap-utils tool (`ldapmodify`, `ldapdelete`, `ldapmodrdn`,
    /// `ldapsearch`) against this server as the root DN, with `stdin`.
    pub fn tool(
        &self,
        tool: &'static str,
        args: &[&str],
        stdin: &str,
    ) -> Result<Output, SlapdError> {
        let mut child = Command::new(tool)
            .args(["-x", "-H", &self.url(), "-D", ROOT_DN, "-w", ROOT_PASSWORD])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| SlapdError::Missing { tool, source })?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        if !output.status.success() {
            return Err(SlapdError::Failed {
                tool,
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            });
        }
        Ok(output)
    }

    /// Applies an LDIF of changes (`changetype: add|modify|delete|modrdn`).
    pub fn modify(&self, ldif: &str) -> Result<(), SlapdError> {
        self.tool("ldapmodify", &[], ldif).map(|_| ())
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_checked(tool: &'static str, command: &mut Command) -> Result<(), SlapdError> {
    let output = command
        .output()
        .map_err(|source| SlapdError::Missing { tool, source })?;
    if !output.status.success() {
        return Err(SlapdError::Failed {
            tool,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        });
    }
    Ok(())
}

/// A self-signed certificate for 127.0.0.1 (`cert.pem`, `key.pem` in `d`).
fn write_certificate(d: &Path) -> Result<(), SlapdError> {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
    use openssl::x509::{X509NameBuilder, X509};

    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", "127.0.0.1")?;
    let name = name.build();
    let mut cert = X509::builder()?;
    cert.set_version(2)?;
    cert.set_serial_number(BigNum::from_u32(1)?.to_asn1_integer()?.as_ref())?;
    cert.set_subject_name(&name)?;
    cert.set_issuer_name(&name)?;
    cert.set_pubkey(&key)?;
    cert.set_not_before(Asn1Time::days_from_now(0)?.as_ref())?;
    cert.set_not_after(Asn1Time::days_from_now(2)?.as_ref())?;
    cert.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .dns("localhost")
        .build(&cert.x509v3_context(None, None))?;
    cert.append_extension(san)?;
    cert.sign(&key, MessageDigest::sha256())?;
    std::fs::write(d.join("cert.pem"), cert.build().to_pem()?)?;
    std::fs::write(d.join("key.pem"), key.private_key_to_pem_pkcs8()?)?;
    Ok(())
}

fn free_port() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.local_addr()
}
