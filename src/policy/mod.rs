//! The BlackBerry Policy Service.
//!
//! Seed: the Policy Service sends IT policies (signed with the domain key), IT administration commands and service books to devices over the wireless network, pushes applications, and handles encryption key regeneration requests.
//!
//! Started and watched by the [Controller](crate::controller). Until its
//! protocol work lands it runs in standby: it reports heartbeats while the
//! Configuration Database answers.

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
