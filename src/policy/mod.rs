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
//! Started and watched by the [Controller](crate::controller). Until its
//! protocol work lands the component runs in standby: it reports heartbeats
//! while the Configuration Database answers.

pub mod activation;
pub mod catalog;
pub mod resolve;
pub mod signing;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::component::{standby, Component, ComponentContext, ComponentError, ComponentId};

/// The Policy Service component.
#[derive(Debug, Default)]
pub struct PolicyService;

impl Component for PolicyService {
    fn id(&self) -> ComponentId {
        ComponentId::PolicyService
    }

    fn run(&self, ctx: ComponentContext) -> BoxFuture<'static, Result<(), ComponentError>> {
        standby(ctx).boxed()
    }
}
