//! The BlackBerry Policy Service.
//!
//! Seed: the Policy Service sends IT policies (signed with the domain key), IT administration commands and service books to devices over the wireless network, pushes applications, and handles encryption key regeneration requests.
//!
//! Laid out as:
//! - [`activation`]: activation passwords (set or generated, lifetime,
//!   attempts) and the first activation step;
//! - [`catalog`]: the IT policy rules with their types, ranges and defaults
//!   (defined with the wire, [`bramble_proto::catalog`]);
//! - [`resolve`]: which policy applies to a user, rule by rule, and the
//!   canonical, signed form a device receives;
//! - [`signing`]: the domain signing key (Ed25519, sealed at rest);
//! - [`service_books`]: which service books a user's device receives;
//! - [`settings`]: `[policy]` settings.
//!
//! The running service, one job per module:
//! - `activation_steps`: after activation establishes a device's key, the
//!   signed IT policy, the device's confirmation, then the service books
//!   (seed steps 9–12), sent again after a restart or a timeout;
//! - `delivery`: IT policy delivery, also to the devices a changed policy
//!   or assignment affects;
//! - `commands`: IT admin commands (lock, wipe, wipe work data, new key):
//!   sending, acknowledgement, refusal, expiry;
//! - `rekey`: transport key regeneration (by request, command or age);
//! - `confirmations`: what was sent and awaits the device's confirmation;
//! - [`service`]: the loop that owns these jobs and hands them events.
//!
//! Started and watched by the [Controller](crate::controller); without a
//! Dispatcher (some tests) it runs in standby.

pub mod activation;
mod activation_steps;
pub mod catalog;
mod commands;
mod confirmations;
mod delivery;
mod rekey;
pub mod resolve;
pub mod service;
pub mod service_books;
pub mod settings;
pub mod signing;

pub use settings::PolicySettings;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::controller::component::{
    standby, Component, ComponentContext, ComponentError, ComponentId,
};

/// The Policy Service component.
#[derive(Debug, Default, Clone)]
pub struct PolicyService {
    settings: PolicySettings,
    server_name: String,
}

impl PolicyService {
    pub fn new(settings: PolicySettings, server_name: impl Into<String>) -> PolicyService {
        PolicyService {
            settings,
            server_name: server_name.into(),
        }
    }
}

impl Component for PolicyService {
    fn id(&self) -> ComponentId {
        ComponentId::PolicyService
    }

    fn run(&self, ctx: ComponentContext) -> BoxFuture<'static, Result<(), ComponentError>> {
        let this = self.clone();
        async move {
            let Some(dispatcher) = ctx.dispatcher.clone() else {
                return standby(ctx).await;
            };
            service::run(this.settings, this.server_name, ctx, dispatcher).await
        }
        .boxed()
    }
}
