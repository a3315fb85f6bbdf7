//! The BlackBerry MailStore Service.
//!
//! Seed: the MailStore Service reads users and groups from the organization's directory (LDAP) and copies them into the Configuration Database.
//!
//! Started and watched by the [Controller](crate::controller). Until its
//! protocol work lands it runs in standby: it reports heartbeats while the
//! Configuration Database answers.

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::component::{standby, Component, ComponentContext, ComponentError, ComponentId};

/// The MailStore Service component.
#[derive(Debug, Default)]
pub struct MailStoreService;

impl Component for MailStoreService {
    fn id(&self) -> ComponentId {
        ComponentId::MailStoreService
    }

    fn run(&self, ctx: ComponentContext) -> BoxFuture<'static, Result<(), ComponentError>> {
        standby(ctx).boxed()
    }
}
