//! The enterprise server's side of the SRP link: connect to the relay over
//! TLS, authenticate with the SRP ID and key, send the basic information
//! packet, and hand back the framed stream.
//!
//! The Bramble Router uses this to open its link; the relay's tests use it
//! as their server. The relay's proof is checked before the server sends
//! its own, so a server never answers an impostor (see
//! [`bramble_proto::control`] for the handshake).
//!
//! ```no_run
//! # async fn example(relay_pem: String) -> Result<(), bramble_relay::client::LinkError> {
//! use bramble_proto::control::Control;
//! use bramble_relay::client::{connect_srp, ClientTls};
//!
//! let info = Control::ServerInfo { server_name: "BES1".into(), version: "5.0".into() };
//! let (reader, writer) =
//!     connect_srp("relay.example:3101", ClientTls::pinned(relay_pem), "S12345", b"key", info).await?;
//! // read_frame(&mut reader) / write_frame(&mut writer, …) from bramble_proto::io
//! # drop((reader, writer)); Ok(()) }
//! ```

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use bramble_proto::control::{
    nonce, proofs_match, reject_code, srp_relay_proof, srp_server_proof, Control,
};
use bramble_proto::io::{read_frame, write_frame, ReadError};
use bramble_proto::{Pin as DevicePin, RefId};
use openssl::ssl::{Ssl, SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::{X509VerifyResult, X509};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_openssl::SslStream;

use crate::reject;

/// Time allowed for connecting, TLS, and each handshake message.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the server trusts the relay's certificate.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// Accept exactly this certificate (PEM) and nothing else; host names
    /// are not checked. Use for a relay with a self-signed certificate.
    pub pinned_cert_pem: Option<String>,
    /// Without a pin: also trust these CA certificates (PEM), besides the
    /// system's, and check the relay's host name.
    pub ca_pem: Option<String>,
    /// Without a pin: the name to check the certificate against, when it
    /// differs from the host in the address.
    pub server_name: Option<String>,
}

impl ClientTls {
    pub fn pinned(cert_pem: impl Into<String>) -> ClientTls {
        ClientTls {
            pinned_cert_pem: Some(cert_pem.into()),
            ..ClientTls::default()
        }
    }

    pub fn with_ca(ca_pem: impl Into<String>) -> ClientTls {
        ClientTls {
            ca_pem: Some(ca_pem.into()),
            ..ClientTls::default()
        }
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("pinned", &self.pinned_cert_pem.is_some())
            .field("ca", &self.ca_pem.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// The TLS stream of a link.
pub type LinkStream = SslStream<TcpStream>;
/// Read packets from it with [`bramble_proto::io::read_frame`].
pub type LinkReader = ReadHalf<LinkStream>;
/// Write packets to it with [`bramble_proto::io::write_frame`] (then flush).
pub type LinkWriter = WriteHalf<LinkStream>;

/// Why a link could not be opened, worded for an administrator.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(
        "the relay refused SRP ID {srp_id}: the SRP authentication key does not match; \
         check Settings → Wireless network"
    )]
    WrongKey { srp_id: String },
    #[error(
        "the relay at {relay} could not prove it knows the SRP authentication key of {srp_id}, \
         so this server did not answer it: either the key in Settings → Wireless network is wrong, \
         or {relay} is not the genuine relay; check the key and the relay address"
    )]
    RelayProofInvalid { srp_id: String, relay: String },
    #[error("the relay refused SRP ID {srp_id}: {reason}; check the SRP ID in Settings → Wireless network")]
    Rejected { srp_id: String, reason: String },
    #[error(
        "the relay has locked out SRP ID {srp_id} ({reason}) after repeated failed or too frequent \
         connections; check that the key in Settings → Wireless network is right and that no other \
         server uses this SRP ID, then wait for the lockout to end"
    )]
    LockedOut { srp_id: String, reason: String },
    #[error(
        "TLS with the relay at {relay} failed: {detail}; check the relay address and the relay \
         certificate in Settings → Wireless network"
    )]
    Tls { relay: String, detail: String },
    #[error("cannot reach the relay at {relay}: {source}; check the relay address, port 3101 and the firewall")]
    Io {
        relay: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the relay at {relay} did not answer in time ({step}); check the network path to the relay"
    )]
    Timeout { relay: String, step: &'static str },
    #[error("the relay at {relay} broke the link protocol ({detail}); check that {relay} is a Bramble relay")]
    Protocol { relay: String, detail: String },
}

/// What a rejection means: by its code, or (from a relay that sends none)
/// by its reason's wording.
fn rejection(srp_id: &str, reason: String, code: Option<&str>, after_response: bool) -> LinkError {
    let srp_id = srp_id.to_owned();
    let locked = code.map_or(reason.starts_with(reject::LOCKED_OUT), |c| {
        c == reject_code::LOCKED_OUT
    });
    let bad_key = code.map_or(reason.starts_with(reject::BAD_KEY), |c| {
        c == reject_code::BAD_KEY
    });
    if locked {
        LinkError::LockedOut { srp_id, reason }
    } else if after_response && bad_key {
        LinkError::WrongKey { srp_id }
    } else {
        LinkError::Rejected { srp_id, reason }
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> String {
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some((host, _)) = rest.split_once(']') {
            return host.to_owned();
        }
    }
    match addr.rsplit_once(':') {
        Some((host, _)) => host.to_owned(),
        None => addr.to_owned(),
    }
}

fn client_ssl(tls: &ClientTls, host: &str) -> Result<Ssl, String> {
    let e = |e: openssl::error::ErrorStack| e.to_string();
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(e)?;
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(e)?;
    if let Some(ca) = &tls.ca_pem {
        let certs = X509::stack_from_pem(ca.as_bytes())
            .map_err(|err| format!("the CA certificates are not PEM: {err}"))?;
        for cert in certs {
            builder.cert_store_mut().add_cert(cert).map_err(e)?;
        }
    }
    let connector = builder.build();
    let mut config = connector.configure().map_err(e)?;
    if let Some(pem) = &tls.pinned_cert_pem {
        let pinned = pinned_der(pem)?;
        config.set_verify_hostname(false);
        config.set_verify_callback(SslVerifyMode::PEER, move |_, ctx| {
            // The pin decides: the leaf must be the pinned certificate;
            // whatever else the chain holds does not matter.
            if ctx.error_depth() != 0 {
                return true;
            }
            ctx.current_cert()
                .and_then(|c| c.to_der().ok())
                .is_some_and(|der| der == pinned)
        });
    }
    config.into_ssl(host).map_err(e)
}

fn pinned_der(pem: &str) -> Result<Vec<u8>, String> {
    X509::from_pem(pem.as_bytes())
        .and_then(|c| c.to_der())
        .map_err(|e| format!("the pinned relay certificate is not a PEM certificate: {e}"))
}

/// Opens TCP and TLS to the relay at `addr` (`host:port`), checking its
/// certificate as `tls` says.
pub async fn connect_tls(addr: &str, tls: &ClientTls) -> Result<LinkStream, LinkError> {
    let relay = addr.to_owned();
    let tls_err = |detail: String| LinkError::Tls {
        relay: relay.clone(),
        detail,
    };
    let tcp = timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| LinkError::Timeout {
            relay: relay.clone(),
            step: "connecting",
        })?
        .map_err(|source| LinkError::Io {
            relay: relay.clone(),
            source,
        })?;
    // Packets are small and interactive.
    let _ = tcp.set_nodelay(true);
    let host = tls.server_name.clone().unwrap_or_else(|| host_of(addr));
    let ssl = client_ssl(tls, &host).map_err(tls_err)?;
    let mut stream = SslStream::new(ssl, tcp).map_err(|e| tls_err(e.to_string()))?;
    let handshake = timeout(HANDSHAKE_TIMEOUT, Pin::new(&mut stream).connect())
        .await
        .map_err(|_| LinkError::Timeout {
            relay: relay.clone(),
            step: "TLS handshake",
        })?;
    if let Err(e) = handshake {
        let verify = stream.ssl().verify_result();
        let detail = if verify != X509VerifyResult::OK {
            if tls.pinned_cert_pem.is_some() {
                "the relay's certificate is not the pinned one".to_owned()
            } else {
                format!(
                    "the relay's certificate is not trusted: {}",
                    verify.error_string()
                )
            }
        } else {
            e.to_string()
        };
        return Err(tls_err(detail));
    }
    if let Some(pem) = &tls.pinned_cert_pem {
        let pinned = pinned_der(pem).map_err(tls_err)?;
        let presented = stream
            .ssl()
            .peer_certificate()
            .and_then(|c| c.to_der().ok());
        if presented.as_deref() != Some(pinned.as_slice()) {
            return Err(tls_err(
                "the relay's certificate is not the pinned one".to_owned(),
            ));
        }
    }
    Ok(stream)
}

async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    relay: &str,
    control: &Control,
) -> Result<(), LinkError> {
    let frame = control.frame(DevicePin(0), RefId(0));
    let io = |source| LinkError::Io {
        relay: relay.to_owned(),
        source,
    };
    write_frame(stream, &frame).await.map_err(|e| match e {
        ReadError::Io(source) => io(source),
        other => LinkError::Protocol {
            relay: relay.to_owned(),
            detail: other.to_string(),
        },
    })?;
    stream.flush().await.map_err(io)
}

async fn receive<S: AsyncRead + Unpin>(
    stream: &mut S,
    relay: &str,
    step: &'static str,
) -> Result<Control, LinkError> {
    let protocol = |detail: String| LinkError::Protocol {
        relay: relay.to_owned(),
        detail,
    };
    let read = timeout(HANDSHAKE_TIMEOUT, read_frame(stream))
        .await
        .map_err(|_| LinkError::Timeout {
            relay: relay.to_owned(),
            step,
        })?;
    match read {
        Ok(Some(frame)) => {
            Control::from_frame(&frame).map_err(|e| protocol(format!("{step}: {e}")))
        }
        Ok(None) => Err(protocol(format!(
            "the relay closed the connection ({step})"
        ))),
        Err(ReadError::Io(source)) => Err(LinkError::Io {
            relay: relay.to_owned(),
            source,
        }),
        Err(e) => Err(protocol(format!("{step}: {e}"))),
    }
}

/// Runs the SRP handshake on an open stream to the relay at `relay` (used
/// in messages), then sends `server_info`. On success the stream carries
/// packets.
pub async fn srp_handshake<S>(
    stream: &mut S,
    relay: &str,
    srp_id: &str,
    key: &[u8],
    server_info: &Control,
) -> Result<(), LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let server_nonce = nonce();
    send(
        stream,
        relay,
        &Control::SrpHello {
            srp_id: srp_id.to_owned(),
            nonce: server_nonce.clone(),
        },
    )
    .await?;
    let relay_nonce = match receive(stream, relay, "waiting for the SRP challenge").await? {
        Control::SrpChallenge { nonce, proof } => {
            let expected = srp_relay_proof(key, srp_id, &server_nonce, &nonce);
            if !proofs_match(&proof, &expected) {
                return Err(LinkError::RelayProofInvalid {
                    srp_id: srp_id.to_owned(),
                    relay: relay.to_owned(),
                });
            }
            nonce
        }
        Control::SrpRejected { reason, code } => {
            return Err(rejection(srp_id, reason, code.as_deref(), false))
        }
        other => {
            return Err(LinkError::Protocol {
                relay: relay.to_owned(),
                detail: format!("expected an SRP challenge, got {other:?}"),
            })
        }
    };
    let proof = srp_server_proof(key, srp_id, &server_nonce, &relay_nonce);
    send(stream, relay, &Control::SrpResponse { proof }).await?;
    match receive(stream, relay, "waiting for the SRP result").await? {
        Control::SrpAccepted => {}
        Control::SrpRejected { reason, code } => {
            return Err(rejection(srp_id, reason, code.as_deref(), true))
        }
        other => {
            return Err(LinkError::Protocol {
                relay: relay.to_owned(),
                detail: format!("expected the SRP result, got {other:?}"),
            })
        }
    }
    send(stream, relay, server_info).await
}

/// Connects to the relay at `addr` (`host:port`), authenticates as
/// `srp_id` with `key`, sends `server_info` (a [`Control::ServerInfo`]:
/// the basic information packet) and returns the link, split.
pub async fn connect_srp(
    addr: &str,
    tls: ClientTls,
    srp_id: &str,
    key: &[u8],
    server_info: Control,
) -> Result<(LinkReader, LinkWriter), LinkError> {
    if !matches!(server_info, Control::ServerInfo { .. }) {
        return Err(LinkError::Protocol {
            relay: addr.to_owned(),
            detail: format!("the first packet must be the basic information packet (server_info), not {server_info:?}"),
        });
    }
    let mut stream = connect_tls(addr, &tls).await?;
    let result = srp_handshake(&mut stream, addr, srp_id, key, &server_info).await;
    if let Err(e) = result {
        let _ = timeout(Duration::from_secs(1), stream.shutdown()).await;
        return Err(e);
    }
    Ok(tokio::io::split(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_part_of_addresses() {
        assert_eq!(host_of("relay.example:3101"), "relay.example");
        assert_eq!(host_of("127.0.0.1:3101"), "127.0.0.1");
        assert_eq!(host_of("[::1]:3101"), "::1");
        assert_eq!(host_of("relay"), "relay");
    }

    #[test]
    fn rejections_are_classified() {
        let locked = rejection(
            "S1",
            format!("{} 2030-01-01T00:00:00Z", reject::LOCKED_OUT),
            None,
            false,
        );
        assert!(matches!(locked, LinkError::LockedOut { .. }));
        let wrong = rejection("S1", reject::BAD_KEY.to_owned(), None, true);
        assert!(matches!(wrong, LinkError::WrongKey { .. }));
        assert!(wrong
            .to_string()
            .contains("check Settings → Wireless network"));
        assert!(wrong
            .to_string()
            .starts_with("the relay refused SRP ID S1: the SRP authentication key does not match"));
        let unknown = rejection("S9", format!("{} S9", reject::UNKNOWN_SRP_ID), None, false);
        assert!(matches!(unknown, LinkError::Rejected { .. }));
        // With a code, the wording does not matter.
        let coded = rejection("S1", "nope".into(), Some(reject_code::BAD_KEY), true);
        assert!(matches!(coded, LinkError::WrongKey { .. }));
        let coded = rejection("S1", "later".into(), Some(reject_code::LOCKED_OUT), false);
        assert!(matches!(coded, LinkError::LockedOut { .. }));
    }
}
