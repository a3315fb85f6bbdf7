//! The BlackBerry Policy Service.
//!
//! Seed: the Policy Service sends IT policies (signed with the domain key), IT administration commands and service books to devices over the wireless network, pushes applications, and handles encryption key regeneration requests.
//!
//! Laid out as:
//! - [`activation`]: activation passwords (set or generated, lifetime,
//!   attempts) and the first activation step;
//! - [`catalog`]: the IT policy rules with their types, ranges and defaults;
//! - [`resolve`]: which policy applies to a user, rule by rule, and the
//!   canonical, signed form a device receives;
//! - [`signing`]: the domain signing key (Ed25519, sealed at rest).
//!
//! - [`service`]: the running service — after activation establishes a
//!   device's key it sends the signed IT policy, waits for the device's
//!   confirmation, then sends the service books (`[policy]` settings).
//!
//! Started and watched by the [Controller](crate::controller); without a
//! Dispatcher (some tests) it runs in standby.

pub mod activation;
pub mod catalog;
pub mod resolve;
pub mod service;
pub mod signing;

pub use service::PolicySettings;

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
            service::Desk::new(this.settings, this.server_name, ctx.db.clone(), dispatcher)
                .serve(ctx)
                .await
        }
        .boxed()
    }
}
