//! The BlackBerry Messaging Agent.
//!
//! Seed: the Messaging Agent connects to the organization's messaging server (IMAP IDLE, SMTP): it watches every assigned user's mailbox, applies global then individual filters, gives each forwarded message a RefID, keeps statistics, hands messages to the Dispatcher and submits mail sent from devices. It also recognizes activation request e-mail and generates encryption keys.
//!
//! Started and watched by the [Controller](crate::controller). Until its
//! protocol work lands it runs in standby: it reports heartbeats while the
//! Configuration Database answers.

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::component::{standby, Component, ComponentContext, ComponentError, ComponentId};

/// The Messaging Agent component.
#[derive(Debug, Default)]
pub struct MessagingAgent;

impl Component for MessagingAgent {
    fn id(&self) -> ComponentId {
        ComponentId::MessagingAgent
    }

    fn run(&self, ctx: ComponentContext) -> BoxFuture<'static, Result<(), ComponentError>> {
        standby(ctx).boxed()
    }
}
