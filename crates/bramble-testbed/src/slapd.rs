//! A real OpenLDAP server on loopback, for tests, benchmarks and the
//! testbed: a folder with `slapd.conf` and an mdb database loaded with
//! `slapadd`, the server started on a free (or given) port, ready once it
//! accepts a TCP connection. A [`Slapd`] kills its server when dropped,
//! unless [`Slapd::detach`]ed for `bramble testbed up`.
//!
//! Needs the Debian package `slapd` (and `ldap-utils` for [`Slapd::tool`]).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, locate};

/// The suffix, root DN and root password of every test directory.
pub const SUFFIX: &str = "dc=example,dc=com";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=com";
pub const ROOT_PASSWORD: &str = "secret";

/// Where a slapd keeps its configuration and database.
#[derive(Debug)]
enum Folder {
    /// Removed with the [`Slapd`] (tests, benchmarks).
    Temporary(tempfile::TempDir),
    /// Kept (the testbed's `D/slapd`).
    Kept(PathBuf),
}

/// A running slapd.
#[derive(Debug)]
pub struct Slapd {
    folder: Folder,
    /// `None` once detached.
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    /// The `ldaps://` listener, when started with TLS.
    tls_addr: Option<SocketAddr>,
    root_password: String,
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

/// How to start a slapd beyond its entries.
#[derive(Debug, Clone, Default)]
pub struct SlapdOptions {
    /// Appended to the database section (limits, more access rules).
    pub extra_conf: String,
    /// A self-signed certificate for 127.0.0.1 (its PEM at
    /// [`Slapd::certificate`]), StartTLS on the `ldap://` port and a
    /// second, `ldaps://` port.
    pub tls: bool,
    /// The `ldap://` port; `None`: a free one.
    pub port: Option<u16>,
    /// The root DN's password; `None`: [`ROOT_PASSWORD`].
    pub root_password: Option<String>,
}

impl Slapd {
    /// Starts slapd in a temporary folder with the entries of `ldif` (the
    /// suffix entry is added first) and `extra_conf` appended to the
    /// database section (limits, more access rules).
    pub fn start(ldif: &str, extra_conf: &str) -> Result<Slapd, SlapdError> {
        let options = SlapdOptions {
            extra_conf: extra_conf.to_owned(),
            ..SlapdOptions::default()
        };
        Self::start_with(temporary()?, ldif, &options)
    }

    /// Like [`Slapd::start`], with TLS (see [`SlapdOptions::tls`]).
    pub fn start_tls(ldif: &str, extra_conf: &str) -> Result<Slapd, SlapdError> {
        let options = SlapdOptions {
            extra_conf: extra_conf.to_owned(),
            tls: true,
            ..SlapdOptions::default()
        };
        Self::start_with(temporary()?, ldif, &options)
    }

    /// Starts slapd in `folder` (created; a database left there is
    /// replaced), which is kept when the server stops.
    pub fn start_in(
        folder: &Path,
        ldif: &str,
        options: &SlapdOptions,
    ) -> Result<Slapd, SlapdError> {
        if folder.join("db").exists() {
            std::fs::remove_dir_all(folder.join("db"))?;
        }
        std::fs::create_dir_all(folder)?;
        Self::start_with(Folder::Kept(folder.to_owned()), ldif, options)
    }

    fn start_with(folder: Folder, ldif: &str, options: &SlapdOptions) -> Result<Slapd, SlapdError> {
        let d = match &folder {
            Folder::Temporary(dir) => dir.path().to_owned(),
            Folder::Kept(path) => path.clone(),
        };
        let d = d.as_path();
        std::fs::create_dir(d.join("db"))?;
        let root_password = options
            .root_password
            .clone()
            .unwrap_or_else(|| ROOT_PASSWORD.to_owned());
        let tls_conf = if options.tls {
            write_certificate(d)?;
            format!(
                "TLSCertificateFile {d}/cert.pem\nTLSCertificateKeyFile {d}/key.pem\n",
                d = d.display()
            )
        } else {
            String::new()
        };
        // entryCSN and modifyTimestamp are what incremental syncs search
        // by; an eq index also serves their >= filters.
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
             rootpw {root_password}\n\
             directory {d}/db\n\
             index objectClass eq\n\
             index entryCSN,modifyTimestamp eq\n\
             access to attrs=userPassword by self write by anonymous auth by * none\n\
             access to * by * read\n\
             {extra_conf}\n",
            d = d.display(),
            extra_conf = options.extra_conf,
        );
        std::fs::write(d.join("slapd.conf"), conf)?;
        let data = format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n{ldif}"
        );
        std::fs::write(d.join("data.ldif"), data)?;
        let conf_path = d.join("slapd.conf");
        run_checked(
            "slaptest",
            Command::new(binary("slaptest")?)
                .arg("-f")
                .arg(&conf_path)
                .arg("-u"),
        )?;
        run_checked(
            "slapadd",
            // -q: no consistency checks while loading, much faster for
            // the large directories of benchmarks.
            Command::new(binary("slapadd")?)
                .arg("-q")
                .arg("-f")
                .arg(&conf_path)
                .arg("-l")
                .arg(d.join("data.ldif")),
        )?;
        let addr = match options.port {
            Some(port) => SocketAddr::from(([127, 0, 0, 1], port)),
            None => free_port()?,
        };
        let tls_addr = if options.tls {
            Some(free_port()?)
        } else {
            None
        };
        let mut listen = format!("ldap://{addr}/");
        if let Some(tls_addr) = tls_addr {
            listen.push_str(&format!(" ldaps://{tls_addr}/"));
        }
        let log = std::fs::File::create(d.join("slapd.log"))?;
        let child = Command::new(binary("slapd")?)
            .arg("-d")
            .arg("0")
            .arg("-h")
            .arg(listen)
            .arg("-f")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|source| SlapdError::Missing {
                tool: "slapd",
                source,
            })?;
        let mut slapd = Slapd {
            folder,
            pid: child.id(),
            child: Some(child),
            addr,
            tls_addr,
            root_password,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in std::iter::once(addr).chain(tls_addr) {
            while TcpStream::connect(addr).is_err() {
                let exited = slapd
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                if exited || Instant::now() > deadline {
                    return Err(SlapdError::NotReady(addr));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(slapd)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Leaves the server running (`bramble testbed up`); returns its PID.
    /// A temporary folder is kept too.
    pub fn detach(mut self) -> u32 {
        self.child = None;
        if let Folder::Temporary(dir) =
            std::mem::replace(&mut self.folder, Folder::Kept(PathBuf::new()))
        {
            let _ = dir.keep();
        }
        self.pid
    }

    /// The root DN's password.
    pub fn root_password(&self) -> &str {
        &self.root_password
    }

    /// `ldaps://127.0.0.1:PORT`, when started with TLS.
    pub fn ldaps_url(&self) -> Option<String> {
        self.tls_addr.map(|a| format!("ldaps://{a}"))
    }

    /// The PEM certificate to trust, when started with TLS.
    pub fn certificate(&self) -> PathBuf {
        self.folder().join("cert.pem")
    }

    /// `ldap://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("ldap://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn folder(&self) -> &Path {
        match &self.folder {
            Folder::Temporary(dir) => dir.path(),
            Folder::Kept(path) => path,
        }
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
            .args([
                "-x",
                "-H",
                &self.url(),
                "-D",
                ROOT_DN,
                "-w",
                &self.root_password,
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| SlapdError::Missing { tool, source })?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes())?;
        }
        succeeded(tool, child.wait_with_output()?)
    }

    /// Applies an LDIF of changes (`changetype: add|modify|delete|modrdn`).
    pub fn modify(&self, ldif: &str) -> Result<(), SlapdError> {
        self.tool("ldapmodify", &[], ldif).map(|_| ())
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn temporary() -> Result<Folder, SlapdError> {
    Ok(Folder::Temporary(
        tempfile::Builder::new()
            .prefix("bramble-slapd-")
            .tempdir()?,
    ))
}

/// slapd and its tools live in `/usr/sbin`, often not on a user's PATH.
fn binary(tool: &'static str) -> Result<PathBuf, SlapdError> {
    locate(tool).ok_or_else(|| SlapdError::Missing {
        tool,
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "not found on PATH or in /usr/sbin",
        ),
    })
}

fn run_checked(tool: &'static str, command: &mut Command) -> Result<(), SlapdError> {
    let output = command
        .output()
        .map_err(|source| SlapdError::Missing { tool, source })?;
    succeeded(tool, output).map(|_| ())
}

/// The output of a tool that exited successfully, else what it said.
fn succeeded(tool: &'static str, output: Output) -> Result<Output, SlapdError> {
    if output.status.success() {
        return Ok(output);
    }
    Err(SlapdError::Failed {
        tool,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
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
