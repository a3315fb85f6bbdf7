//! Wireless enterprise activation, the device's side (seed: "Activating a
//! BlackBerry smartphone over the wireless network", steps 2–9; wire in
//! [`bramble_proto::activation`]).
//!
//! [`Device::activate`] connects to the relay, builds `etp.dat` (PIN,
//! routing information, an ephemeral public key and the first SPAKE2
//! message derived from the activation password), asks the relay to e-mail
//! it to the typed address, waits for the server's challenge, checks the
//! server's key confirmation (a mismatch means the password is wrong, and
//! the server is told so), confirms its own, installs the new transport key
//! as current and waits for "verified". The link stays up for the IT policy
//! and service books that follow. Each step is reported through a callback
//! in the words the device shows its user.

use std::time::Duration;

use base64::Engine;
use bramble_proto::activation::{ActivationMessage, DeviceExchange, ETP_FILE, REQUEST_SUBJECT};
use bramble_proto::control::Control;
use bramble_proto::RefId;
use tokio::time::{timeout_at, Instant};

use crate::connection::Plain;
use crate::device::Path;
use crate::{Connection, Device, DeviceError, KeyStore};

/// What the device shows while activating.
pub const SENDING: &str = "Sending activation request";
pub const WAITING: &str = "Waiting for the server";
pub const VERIFIED: &str = "Encryption Verified. Waiting for Services.";

/// An activation request ready to send: the key material derived from the
/// password (slow on purpose) and `etp.dat`.
#[derive(Debug)]
pub struct Prepared {
    relay: std::net::SocketAddr,
    email: String,
    exchange: DeviceExchange,
}

impl Prepared {
    /// `etp.dat` as it will be sent.
    pub fn etp(&self) -> &[u8] {
        &self.exchange.etp
    }
}

impl Device {
    /// Activates over the relay at `relay` for the user `email` with the
    /// activation password `password`; returns the link, now keyed. `show`
    /// receives each step for the user. Gives up after `limit`.
    pub async fn activate(
        &self,
        relay: std::net::SocketAddr,
        email: &str,
        password: &str,
        limit: Duration,
        show: impl FnMut(&str),
    ) -> Result<Connection, DeviceError> {
        let prepared = self.prepare_activation(relay, email, password).await?;
        self.activate_prepared(prepared, limit, show).await
    }

    /// Derives the request's key material from the password (argon2, off
    /// the async threads) and builds `etp.dat`.
    pub async fn prepare_activation(
        &self,
        relay: std::net::SocketAddr,
        email: &str,
        password: &str,
    ) -> Result<Prepared, DeviceError> {
        let config = self.config();
        let pin = config.pin;
        let (password, owned_email) = (password.to_owned(), email.to_owned());
        let (relay_text, model, os) = (
            relay.to_string(),
            config.model.clone(),
            config.os_version.clone(),
        );
        let exchange = tokio::task::spawn_blocking(move || {
            DeviceExchange::start(&password, &owned_email, pin, &relay_text, &model, &os)
        })
        .await
        .map_err(|e| DeviceError::activation("PROTOCOL", e.to_string()))?
        .map_err(|e| DeviceError::activation("PROTOCOL", e.to_string()))?;
        Ok(Prepared {
            relay,
            email: email.trim().to_owned(),
            exchange,
        })
    }

    /// Sends a prepared request and runs the exchange (see [`Device::activate`]).
    pub async fn activate_prepared(
        &self,
        prepared: Prepared,
        limit: Duration,
        mut show: impl FnMut(&str),
    ) -> Result<Connection, DeviceError> {
        let deadline = Instant::now() + limit;
        let Prepared {
            relay,
            email,
            exchange,
        } = prepared;
        let conn = self.connect(Path::Relay(relay)).await?;
        let pin = self.config().pin;
        show(SENDING);
        let request_ref = RefId::random();
        let mail = Control::SendMail {
            to: email.clone(),
            subject: REQUEST_SUBJECT.to_owned(),
            attachment_name: ETP_FILE.to_owned(),
            attachment: base64::engine::general_purpose::STANDARD.encode(&exchange.etp),
        };
        conn.send_plain(mail.frame(pin, request_ref)).await?;

        // The relay says the request went out, or why not.
        loop {
            let next = tokio::select! {
                plain = conn.next_plain() => Ok(plain),
                error = conn.next_error() => Err(error),
            };
            match timeout_at(deadline, async { next }).await {
                Err(_) => return Err(timed_out(limit)),
                Ok(Ok(Some((_, Plain::MailSent { .. })))) => break,
                Ok(Ok(Some((_, Plain::Activation(other))))) => {
                    tracing::debug!(%pin, ?other, "activation packet before the request was sent; ignored")
                }
                Ok(Err(Some((ref_id, report)))) if ref_id == request_ref => {
                    return Err(DeviceError::activation("MAIL_NOT_SENT", report.message))
                }
                Ok(Err(Some(_))) => {}
                Ok(Ok(None)) | Ok(Err(None)) => return Err(DeviceError::Closed),
            }
        }
        show(WAITING);
        let (challenge_ref, spake, server_key, key_id, confirm) = loop {
            match timeout_at(deadline, conn.next_plain()).await {
                Err(_) => return Err(timed_out(limit)),
                Ok(None) => return Err(DeviceError::Closed),
                Ok(Some((
                    ref_id,
                    Plain::Activation(ActivationMessage::Challenge {
                        spake,
                        server_key,
                        key_id,
                        confirm,
                    }),
                ))) => break (ref_id, spake, server_key, key_id, confirm),
                Ok(Some((_, Plain::Activation(ActivationMessage::Refused { code, message })))) => {
                    return Err(DeviceError::activation(
                        "REFUSED",
                        format!("{message} ({code})"),
                    ))
                }
                Ok(Some(other)) => {
                    tracing::debug!(%pin, ?other, "ignored while waiting for the challenge")
                }
            }
        };
        let keys = match exchange.finish(&spake, &server_key, key_id, &confirm) {
            Ok(keys) => keys,
            Err(bramble_proto::activation::ActivationError::Mismatch) => {
                let _ = conn
                    .send_plain(ActivationMessage::Mismatch.frame(pin, challenge_ref))
                    .await;
                return Err(DeviceError::activation(
                    "WRONG_PASSWORD",
                    "the activation password is not correct; check it with your administrator",
                ));
            }
            Err(e) => return Err(DeviceError::activation("PROTOCOL", e.to_string())),
        };
        // The key is in place before the server can use it.
        self.set_keys(KeyStore::new(keys.transport.clone()));
        conn.send_plain(
            ActivationMessage::Confirm {
                confirm: keys.device_confirmation(),
            }
            .frame(pin, challenge_ref),
        )
        .await?;
        loop {
            match timeout_at(deadline, conn.next_plain()).await {
                Err(_) => return Err(timed_out(limit)),
                Ok(None) => return Err(DeviceError::Closed),
                Ok(Some((_, Plain::Activation(ActivationMessage::Verified)))) => break,
                Ok(Some((_, Plain::Activation(ActivationMessage::Refused { code, message })))) => {
                    self.set_keys(KeyStore::default());
                    return Err(DeviceError::activation(
                        "REFUSED",
                        format!("{message} ({code})"),
                    ));
                }
                Ok(Some(other)) => {
                    tracing::debug!(%pin, ?other, "ignored while waiting for verification")
                }
            }
        }
        show(VERIFIED);
        // The relay now has the new key from the server: this link, opened
        // activation-only, is made a full one for the policy and services.
        conn.prove_key().await?;
        Ok(conn)
    }
}

fn timed_out(limit: Duration) -> DeviceError {
    DeviceError::activation_timeout(limit)
}
