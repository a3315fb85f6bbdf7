//! IT policy delivery: the user's resolved IT policy ([`super::resolve`]),
//! signed with the domain key, sent to the device and awaited like every
//! step ([`super::confirmations`]). When a policy or an assignment changes,
//! every activated device whose resolved policy is not the one it was last
//! sent gets it again (signed, confirmed like the first).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bramble_proto::policy::{Binding, Signed, KIND_IT_POLICY};
use bramble_proto::{ContentType, Pin};
use tracing::warn;

use super::confirmations::{send_awaited, Confirmations, Step};
use crate::clock::Clock;
use crate::db::ids::UserId;
use crate::db::models::device::Device;
use crate::db::models::device_key::DeviceKey;
use crate::db::models::user::{ActivationStatus, User};
use crate::db::{Conn, Database, DbError, Sealer};
use crate::dispatcher::Dispatcher;
use crate::policy::resolve::{resolve, ResolvedPolicy};
use crate::policy::signing::DomainKey;

/// Sends IT policies and remembers which one each device was sent last.
#[derive(Clone)]
pub(super) struct PolicyDelivery {
    db: Database,
    dispatcher: Dispatcher,
    confirmations: Confirmations,
    clock: Clock,
    /// How long a signed policy is valid (`[policy] signed_lifetime_secs`).
    lifetime_secs: u64,
    /// SHA-256 of the last policy document sent to each device.
    last_sent: Arc<Mutex<HashMap<Pin, [u8; 32]>>>,
}

impl PolicyDelivery {
    pub(super) fn new(
        db: Database,
        dispatcher: Dispatcher,
        confirmations: Confirmations,
        clock: Clock,
        lifetime_secs: u64,
    ) -> PolicyDelivery {
        PolicyDelivery {
            db,
            dispatcher,
            confirmations,
            clock,
            lifetime_secs,
            last_sent: Arc::default(),
        }
    }

    /// Sends the user's resolved IT policy, signed; the service books
    /// follow its confirmation when `books_after`.
    pub(super) async fn send(&self, user: UserId, pin: Pin, books_after: bool) {
        let binding = binding(
            &self.clock,
            self.lifetime_secs,
            KIND_IT_POLICY,
            pin,
            bramble_proto::RefId::random().0,
        );
        let signed = self
            .db
            .write_sealed(move |conn, sealer| {
                let resolved = resolve(conn, user)?;
                let policy = resolved.policies.first().map(|p| p.policy_id);
                let bytes = resolved.canonical_bytes()?;
                let digest = policy_digest(&resolved, &bytes);
                let document = String::from_utf8(bytes).map_err(|e| DbError::Encoding {
                    what: "read the IT policy as text",
                    message: e.to_string(),
                })?;
                Ok((
                    policy,
                    digest,
                    signed_by_domain(conn, sealer, binding, document)?,
                ))
            })
            .await;
        match signed {
            Ok((policy, digest, signed)) => {
                if let Ok(mut last) = self.last_sent.lock() {
                    last.insert(pin, digest);
                }
                send_awaited(
                    &self.dispatcher,
                    &self.confirmations,
                    user,
                    pin,
                    Step::Policy {
                        policy,
                        books_after,
                    },
                    ContentType::ItPolicy,
                    signed.to_bytes(),
                )
                .await
            }
            Err(e) => {
                warn!(target: "bramble::policy", %pin, %user, "cannot prepare the IT policy: {e}")
            }
        }
    }

    /// The activated devices (with a transport key) whose resolved policy
    /// is not the one they were last sent.
    pub(super) async fn find_outdated(&self) -> Result<Vec<(UserId, Pin)>, DbError> {
        let devices = self
            .db
            .run(|conn| {
                let activated = User::find_by_activation_status(
                    conn,
                    &[
                        ActivationStatus::PolicyApplied,
                        ActivationStatus::ServicesReceived,
                        ActivationStatus::Synchronizing,
                        ActivationStatus::Completed,
                    ],
                )?;
                let mut out = Vec::new();
                for user in activated.into_iter().map(|u| u.id) {
                    let resolved = resolve(conn, user)?;
                    let digest = policy_digest(&resolved, &resolved.canonical_bytes()?);
                    for device in Device::find_by_user(conn, user)? {
                        if !DeviceKey::find_all_for_device(conn, device.id)?.is_empty() {
                            out.push((user, device.pin, digest));
                        }
                    }
                }
                Ok(out)
            })
            .await?;
        let last = self
            .last_sent
            .lock()
            .map(|last| last.clone())
            .unwrap_or_default();
        Ok(devices
            .into_iter()
            .filter(|(_, pin, digest)| last.get(pin) != Some(digest))
            .map(|(user, pin, _)| (user, pin))
            .collect())
    }
}

/// What a document of `kind` for `pin` is bound to when signed now: valid
/// from now for `lifetime_secs`, with `id` (a command's number, a fresh
/// number for a policy).
pub(super) fn binding(clock: &Clock, lifetime_secs: u64, kind: &str, pin: Pin, id: u64) -> Binding {
    let issued_at = u64::try_from(clock.now().unix_timestamp()).unwrap_or(0);
    Binding {
        kind: kind.to_owned(),
        targets: vec![pin],
        issued_at,
        expires_at: issued_at.saturating_add(lifetime_secs),
        id,
    }
}

/// `document` bound to `binding` and signed with the domain key, as a
/// device receives it.
pub(super) fn signed_by_domain(
    conn: &mut Conn,
    sealer: &Sealer,
    binding: Binding,
    document: String,
) -> Result<Signed, DbError> {
    let key = DomainKey::load_or_create(conn, sealer)?;
    Signed::seal(binding, document, key.public_key(), |bytes| key.sign(bytes))
}

/// What tells one policy sent to a device from another: the named policy
/// it came from (a device records which one it applied) and its document.
fn policy_digest(resolved: &ResolvedPolicy, document: &[u8]) -> [u8; 32] {
    let mut hasher = openssl::sha::Sha256::new();
    let id = resolved.policies.first().map_or(0, |p| p.policy_id.0);
    hasher.update(&id.to_be_bytes());
    hasher.update(document);
    hasher.finish()
}
