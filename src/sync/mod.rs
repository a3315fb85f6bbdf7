//! The BlackBerry Synchronization Service.
//!
//! Seed: the Synchronization Service synchronizes organizer data (contacts, calendar, tasks, memos) against the organization's CalDAV/CardDAV server, gathers device diagnostics, and backs up and restores device configuration wirelessly.
//!
//! Started and watched by the [Controller](crate::controller). Until its
//! protocol work lands it runs in standby: it reports heartbeats while the
//! Configuration Database answers.

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::component::{standby, Component, ComponentContext, ComponentError, ComponentId};

/// The Synchronization Service component.
#[derive(Debug, Default)]
pub struct SynchronizationService;

impl Component for SynchronizationService {
    fn id(&self) -> ComponentId {
        ComponentId::SynchronizationService
    }

    fn run(&self, ctx: ComponentContext) -> BoxFuture<'static, Result<(), ComponentError>> {
        standby(ctx).boxed()
    }
}
