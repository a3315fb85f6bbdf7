//! Wireless enterprise activation, the device's side (seed: "Activating a
//! BlackBerry smartphone over the wireless network", steps 2–9; wire in
//! [`bramble_proto::activation`]).
//!
//! [`Device::activate`] connects to the relay, builds `etp.dat` (PIN,
//! routing information, an ephemeral public key and the first SPAKE2
//! message derived from the activation password), asks the relay to e-mail
//! it to the typed address and waits for the server's challenge to *its*
//! request (a challenge naming another `etp.dat` was provoked by someone
//! else under this PIN and is ignored). It then derives the keys, sends its
//! key confirmation first and holds the new transport key as pending until
//! `verified` brings the server's confirmation: only a server that knows
//! the password can make it, so a wrong one means an impostor and the key
//! is thrown away. A refusal counts only if it names this device's request
//! or confirmation. The link stays up for the IT policy and service books
//! that follow. Each step is reported through a callback in the words the
//! device shows its user.
//!
//! [`Device::request_activation`] and [`Device::confirm_activation`] are
//! the two halves of [`Device::activate_prepared`], for callers that act
//! between the challenge and the confirmation (tests of what a stranger can
//! do meanwhile).

use std::time::Duration;

use base64::Engine;
use bramble_proto::activation::{
    ActivationError, ActivationMessage, DeviceExchange, SessionKeys, ETP_FILE, REQUEST_SUBJECT,
};
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

/// An activation the server has answered: the link, the keys derived from
/// the challenge (not yet trusted) and the challenge's RefID, on which the
/// device confirms ([`Device::confirm_activation`]).
pub struct Challenged {
    conn: Connection,
    keys: SessionKeys,
    ref_id: RefId,
    deadline: Instant,
    limit: Duration,
}

impl std::fmt::Debug for Challenged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenged")
            .field("ref_id", &self.ref_id)
            .finish_non_exhaustive()
    }
}

impl Challenged {
    /// The RefID of the server's challenge (the exchange's name on the
    /// server, with the PIN).
    pub fn ref_id(&self) -> RefId {
        self.ref_id
    }

    /// The link the challenge came on.
    pub fn connection(&self) -> &Connection {
        &self.conn
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
        let challenged = self.request_activation(prepared, limit, &mut show).await?;
        self.confirm_activation(challenged, show).await
    }

    /// The first half of [`Device::activate_prepared`]: connects, has the
    /// request e-mailed and waits for the server's challenge to it.
    pub async fn request_activation(
        &self,
        prepared: Prepared,
        limit: Duration,
        mut show: impl FnMut(&str),
    ) -> Result<Challenged, DeviceError> {
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
        let mine = exchange.request();
        let (ref_id, spake, server_key, key_id) = loop {
            match timeout_at(deadline, conn.next_plain()).await {
                Err(_) => return Err(timed_out(limit)),
                Ok(None) => return Err(DeviceError::Closed),
                Ok(Some((
                    ref_id,
                    Plain::Activation(ActivationMessage::Challenge {
                        spake,
                        server_key,
                        key_id,
                        request,
                    }),
                ))) => {
                    if request == mine {
                        break (ref_id, spake, server_key, key_id);
                    }
                    // Someone else's request naming this PIN.
                    tracing::warn!(%pin, %ref_id, "a challenge to another activation request under this PIN; ignored")
                }
                Ok(Some((
                    _,
                    Plain::Activation(ActivationMessage::Refused {
                        code,
                        message,
                        request,
                        ..
                    }),
                ))) => {
                    if request.as_deref() == Some(mine.as_str()) {
                        return Err(DeviceError::activation(
                            "REFUSED",
                            format!("{message} ({code})"),
                        ));
                    }
                    tracing::warn!(%pin, code, "a refusal of another activation request under this PIN; ignored")
                }
                Ok(Some(other)) => {
                    tracing::debug!(%pin, ?other, "ignored while waiting for the challenge")
                }
            }
        };
        let keys = exchange
            .finish(&spake, &server_key, key_id)
            .map_err(|e| DeviceError::activation("PROTOCOL", e.to_string()))?;
        Ok(Challenged {
            conn,
            keys,
            ref_id,
            deadline,
            limit,
        })
    }

    /// The second half of [`Device::activate_prepared`]: confirms the keys
    /// on the challenge's RefID and waits for `verified`, whose server
    /// confirmation must check before the key becomes current.
    pub async fn confirm_activation(
        &self,
        challenged: Challenged,
        mut show: impl FnMut(&str),
    ) -> Result<Connection, DeviceError> {
        let Challenged {
            conn,
            keys,
            ref_id,
            deadline,
            limit,
        } = challenged;
        let confirm = keys.device_confirmation();
        // Pending, not current: the server may seal the IT policy with it
        // right after `verified`, but nothing is sent under it and it
        // becomes current only once the server has proved the password.
        self.install_pending_key(keys.transport.clone());
        let outcome = self
            .await_verified(&conn, &keys, ref_id, &confirm, deadline, limit)
            .await;
        match outcome {
            Ok(()) => {
                self.set_keys(KeyStore::new(keys.transport.clone()));
                show(VERIFIED);
                // The relay now has the new key from the server: this
                // link, opened activation-only, is made a full one for the
                // policy and services that follow.
                conn.prove_key().await?;
                Ok(conn)
            }
            Err(e) => {
                let mut store = self.keys();
                if store.pending.as_ref() == Some(&keys.transport) {
                    store.pending = None;
                    self.set_keys(store);
                }
                Err(e)
            }
        }
    }

    async fn await_verified(
        &self,
        conn: &Connection,
        keys: &SessionKeys,
        challenge_ref: RefId,
        confirm: &str,
        deadline: Instant,
        limit: Duration,
    ) -> Result<(), DeviceError> {
        let pin = self.config().pin;
        conn.send_plain(
            ActivationMessage::Confirm {
                confirm: confirm.to_owned(),
            }
            .frame(pin, challenge_ref),
        )
        .await?;
        loop {
            match timeout_at(deadline, conn.next_plain()).await {
                Err(_) => return Err(timed_out(limit)),
                Ok(None) => return Err(DeviceError::Closed),
                Ok(Some((
                    _,
                    Plain::Activation(ActivationMessage::Verified {
                        confirm: server_confirm,
                    }),
                ))) => {
                    return match keys.check_server(&server_confirm) {
                        Ok(()) => Ok(()),
                        Err(ActivationError::Mismatch) => Err(DeviceError::activation(
                            "SERVER_NOT_VERIFIED",
                            "the server could not prove that it knows the activation password, so this device did not keep the new key; \
                             someone may be posing as your organization's server. Tell your administrator",
                        )),
                        Err(e) => Err(DeviceError::activation("PROTOCOL", e.to_string())),
                    };
                }
                Ok(Some((
                    _,
                    Plain::Activation(ActivationMessage::Refused {
                        code,
                        message,
                        confirm: refused,
                        ..
                    }),
                ))) => {
                    if refused.as_deref() != Some(confirm) {
                        // A refusal of what someone else sent under this PIN.
                        tracing::warn!(%pin, code, "a refusal of another key confirmation under this PIN; ignored");
                        continue;
                    }
                    return Err(if code == "WRONG_PASSWORD" {
                        DeviceError::activation(
                            "WRONG_PASSWORD",
                            format!("the activation password is not correct; check it with your administrator ({message})"),
                        )
                    } else {
                        DeviceError::activation("REFUSED", format!("{message} ({code})"))
                    });
                }
                Ok(Some(other)) => {
                    tracing::debug!(%pin, ?other, "ignored while waiting for verification")
                }
            }
        }
    }
}

fn timed_out(limit: Duration) -> DeviceError {
    DeviceError::activation_timeout(limit)
}
