//! The Policy Service at work (seed: activation steps 9–12): after a
//! device's transport key is established it sends the user's resolved IT
//! policy, signed with the domain key, through the Dispatcher; waits for the
//! device's confirmation that it applied it; then sends the service books
//! of the services enabled (`[policy] services`); and records each step of
//! the user's activation.
//!
//! Steps are followed by the RefIDs of what was sent and the Dispatcher's
//! delivery events (the device confirms only a policy whose signature
//! checks). Nothing is lost across a restart: each heartbeat round looks for
//! users whose activation stopped at "Encryption verified" or "Policy
//! applied" with nothing on its way (or nothing confirmed within
//! `confirm_timeout_secs`) and sends the step again.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bramble_proto::policy::{ServiceBook, ServiceBooks, Signed};
use bramble_proto::{ContentType, Pin, RefId};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::component::{ComponentContext, ComponentError};
use crate::db::ids::UserId;
use crate::db::models::activation_password::record_status;
use crate::db::models::device::Device;
use crate::db::models::device_key::DeviceKey;
use crate::db::models::user::{ActivationStatus, User};
use crate::db::schema::users;
use crate::db::{Database, DbError};
use crate::dispatcher::{DeliveryEvent, Dispatcher, Outgoing};
use crate::policy::resolve::resolve;
use crate::policy::signing::DomainKey;

/// Every service book the Policy Service knows (seed: "What is a service
/// book?").
pub const SERVICES: [&str; 7] = [
    "CMIME",
    "CICAL",
    "SYNC",
    "IPPP",
    "BrowserConfig",
    "ALP",
    "BBIM",
];

/// `[policy]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicySettings {
    /// The services whose books devices receive (any of [`SERVICES`]).
    pub services: Vec<String>,
    /// An IT policy or the service books not confirmed within this long
    /// are sent again.
    pub confirm_timeout_secs: u64,
    /// The BlackBerry Browser's home page (BrowserConfig book).
    pub browser_homepage: String,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            services: SERVICES.iter().map(|s| (*s).to_owned()).collect(),
            confirm_timeout_secs: 300,
            browser_homepage: "about:blank".to_owned(),
        }
    }
}

impl PolicySettings {
    /// Unknown service names, for a clear start-up error.
    pub fn unknown_services(&self) -> Vec<String> {
        self.services
            .iter()
            .filter(|s| !SERVICES.contains(&s.as_str()))
            .cloned()
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Policy,
    Books,
}

struct Sent {
    user: UserId,
    pin: Pin,
    step: Step,
    at: Instant,
}

/// The service's running state.
pub(crate) struct Desk {
    settings: PolicySettings,
    server_name: String,
    db: Database,
    dispatcher: Dispatcher,
    sent: HashMap<RefId, Sent>,
}

impl Desk {
    pub(crate) fn new(
        settings: PolicySettings,
        server_name: String,
        db: Database,
        dispatcher: Dispatcher,
    ) -> Desk {
        Desk {
            settings,
            server_name,
            db,
            dispatcher,
            sent: HashMap::new(),
        }
    }

    pub(crate) async fn serve(mut self, ctx: ComponentContext) -> Result<(), ComponentError> {
        let mut events = self.dispatcher.subscribe();
        let mut beat = tokio::time::interval(ctx.heartbeat_interval);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(Duration::from_secs(
            self.settings.confirm_timeout_secs.clamp(1, 60),
        ));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                _ = beat.tick() => {
                    ctx.db.ping().await.map_err(|e| anyhow::anyhow!("the Configuration Database does not answer: {e}"))?;
                    ctx.heartbeat.set_detail(Some(format!("{} IT policies or service books awaiting confirmation", self.sent.len())));
                    ctx.heartbeat.beat();
                }
                _ = sweep.tick() => {
                    if let Err(e) = self.sweep().await {
                        warn!(target: "bramble::policy", "cannot look for unfinished activations: {e}");
                    }
                }
                event = events.recv() => match event {
                    Ok(DeliveryEvent::KeyEstablished { pin, user }) => self.send_policy(user, pin).await,
                    Ok(DeliveryEvent::Confirmed { ref_id, .. }) => {
                        if let Some(sent) = self.sent.remove(&ref_id) {
                            self.confirmed(sent).await;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(target: "bramble::policy", missed = n, "delivery events were missed; unfinished activations are picked up by the next sweep");
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
    }

    async fn send_policy(&mut self, user: UserId, pin: Pin) {
        let signed = self
            .db
            .write_sealed(move |conn, sealer| {
                let resolved = resolve(conn, user)?;
                let document = resolved.canonical_bytes()?;
                let key = DomainKey::load_or_create(conn, sealer)?;
                let signature = key.sign(&document)?;
                let document = String::from_utf8(document)
                    .map_err(|_| DbError::Invalid("the IT policy is not UTF-8".into()))?;
                Ok(Signed::new(
                    "it_policy",
                    document,
                    &signature,
                    key.public_key(),
                ))
            })
            .await;
        match signed {
            Ok(signed) => {
                self.send(
                    user,
                    pin,
                    Step::Policy,
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

    async fn send_books(&mut self, user: UserId, pin: Pin) {
        let email = match self.db.run(move |conn| User::find_by_id(conn, user)).await {
            Ok(Some(u)) => u.email,
            Ok(None) => return,
            Err(e) => {
                warn!(target: "bramble::policy", %user, "cannot read the user for service books: {e}");
                return;
            }
        };
        let books = service_books(&self.settings, &self.server_name, &email);
        self.send(
            user,
            pin,
            Step::Books,
            ContentType::ServiceBook,
            books.to_bytes(),
        )
        .await
    }

    async fn send(
        &mut self,
        user: UserId,
        pin: Pin,
        step: Step,
        content_type: ContentType,
        plaintext: Vec<u8>,
    ) {
        match self
            .dispatcher
            .send(Outgoing {
                pin,
                content_type,
                plaintext,
                priority: true,
                ref_id: None,
            })
            .await
        {
            Ok(ref_id) => {
                info!(target: "bramble::policy", %pin, %user, %ref_id, "{} sent", step_name(step));
                self.sent.insert(
                    ref_id,
                    Sent {
                        user,
                        pin,
                        step,
                        at: Instant::now(),
                    },
                );
            }
            Err(e) => {
                warn!(target: "bramble::policy", %pin, %user, "cannot send the {}: {e}", step_name(step))
            }
        }
    }

    async fn confirmed(&mut self, sent: Sent) {
        let (user, pin) = (sent.user, sent.pin);
        let status = match sent.step {
            Step::Policy => ActivationStatus::PolicyApplied,
            Step::Books => ActivationStatus::ServicesReceived,
        };
        let recorded = self
            .db
            .write(move |conn| {
                conn.transaction(|conn| {
                    let current = User::find_by_id(conn, user)?.map(|u| u.activation_status);
                    if status == ActivationStatus::PolicyApplied {
                        if let (Some(device), Some(policy)) = (
                            Device::find_by_pin(conn, &pin)?,
                            resolve(conn, user)?.policies.first().map(|p| p.policy_id),
                        ) {
                            Device::record_policy_applied(
                                conn,
                                device.id,
                                policy,
                                crate::db::now(),
                            )?;
                        }
                    }
                    // Only a step forward in an activation is recorded; a
                    // policy update after activation changes no status.
                    if current.and_then(ActivationStatus::next) == Some(status) {
                        record_status(conn, user, status, crate::db::now())?;
                    }
                    Ok(())
                })
            })
            .await;
        if let Err(e) = recorded {
            warn!(target: "bramble::policy", %pin, %user, "cannot record the {} step: {e}", step_name(sent.step));
        }
        info!(target: "bramble::policy", %pin, %user, "{} confirmed by the device", step_name(sent.step));
        if sent.step == Step::Policy {
            self.send_books(user, pin).await;
        }
    }

    /// Sends again what was not confirmed in time, and picks up activations
    /// left half-way (e.g. by a restart).
    async fn sweep(&mut self) -> Result<(), DbError> {
        let timeout = Duration::from_secs(self.settings.confirm_timeout_secs.max(1));
        let late: Vec<RefId> = self
            .sent
            .iter()
            .filter(|(_, s)| s.at.elapsed() >= timeout)
            .map(|(r, _)| *r)
            .collect();
        let waiting: std::collections::HashSet<UserId> = self
            .sent
            .iter()
            .filter(|(r, _)| !late.contains(r))
            .map(|(_, s)| s.user)
            .collect();
        for ref_id in late {
            if let Some(s) = self.sent.remove(&ref_id) {
                warn!(target: "bramble::policy", pin = %s.pin, user = %s.user, "the {} was not confirmed within {}s; sending it again", step_name(s.step), timeout.as_secs());
            }
        }
        let unfinished = self
            .db
            .run(|conn| {
                let rows: Vec<(UserId, String)> = users::table
                    .filter(users::activation_status.eq_any([
                        ActivationStatus::EncryptionVerified.as_str(),
                        ActivationStatus::PolicyApplied.as_str(),
                    ]))
                    .select((users::id, users::activation_status))
                    .limit(500)
                    .load(conn)?;
                let mut out = Vec::new();
                for (user, status) in rows {
                    let keyed = Device::find_by_user(conn, user)?.into_iter().find(|d| {
                        DeviceKey::find_all_for_device(conn, d.id).is_ok_and(|k| !k.is_empty())
                    });
                    if let Some(device) = keyed {
                        out.push((user, device.pin, status));
                    }
                }
                Ok(out)
            })
            .await?;
        for (user, pin, status) in unfinished {
            if waiting.contains(&user) {
                continue;
            }
            if status == ActivationStatus::EncryptionVerified.as_str() {
                self.send_policy(user, pin).await;
            } else {
                self.send_books(user, pin).await;
            }
        }
        Ok(())
    }
}

fn step_name(step: Step) -> &'static str {
    match step {
        Step::Policy => "IT policy",
        Step::Books => "service books",
    }
}

/// The service books for `email`: one per enabled service.
pub fn service_books(settings: &PolicySettings, server: &str, email: &str) -> ServiceBooks {
    let book = |cid: &str, name: &str, settings: &[(&str, &str)]| ServiceBook {
        cid: cid.to_owned(),
        name: name.to_owned(),
        uid: server.to_owned(),
        settings: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    };
    let books = settings
        .services
        .iter()
        .filter_map(|cid| {
            Some(match cid.as_str() {
                "CMIME" => book(
                    "CMIME",
                    "Desktop email",
                    &[("email", email), ("send_through", "enterprise server")],
                ),
                "CICAL" => book("CICAL", "Desktop calendar", &[("email", email)]),
                "SYNC" => book(
                    "SYNC",
                    "Desktop synchronization",
                    &[
                        ("databases", "contacts,calendar,tasks,memos"),
                        ("backup", "on"),
                    ],
                ),
                "IPPP" => book(
                    "IPPP",
                    "Enterprise browsing",
                    &[("proxy", "MDS Connection Service")],
                ),
                "BrowserConfig" => book(
                    "BrowserConfig",
                    "Enterprise browser",
                    &[
                        ("homepage", &settings.browser_homepage),
                        ("transport", "IPPP"),
                    ],
                ),
                "ALP" => book("ALP", "Address lookup", &[("max_results", "20")]),
                "BBIM" => book("BBIM", "Enterprise messenger", &[("email", email)]),
                _ => return None,
            })
        })
        .collect();
    ServiceBooks {
        email: email.to_owned(),
        books,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_book_per_enabled_service_only() {
        let mut settings = PolicySettings::default();
        let all = service_books(&settings, "S1", "a@example.org");
        let cids: Vec<&str> = all.books.iter().map(|b| b.cid.as_str()).collect();
        assert_eq!(cids, SERVICES);
        settings.services = vec!["CMIME".into(), "ALP".into()];
        let some = service_books(&settings, "S1", "a@example.org");
        let cids: Vec<&str> = some.books.iter().map(|b| b.cid.as_str()).collect();
        assert_eq!(cids, ["CMIME", "ALP"]);
        assert_eq!(some.books[0].settings["email"], "a@example.org");
        assert_eq!(
            some.enabled_message(),
            "Services Received. Your email address, a@example.org is now enabled."
        );
        settings.services.push("FAX".into());
        assert_eq!(settings.unknown_services(), ["FAX"]);
    }
}
