//! What the Policy Service sent and awaits the device's confirmation of:
//! IT policies, service books and IT admin commands, by RefID. The
//! Dispatcher's delivery events name only the RefID; this table says what
//! was sent, for whom and when, so a confirmation moves the right step on
//! and a step not confirmed in time is sent again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bramble_proto::{ContentType, Pin, RefId};
use tracing::{info, warn};

use crate::db::ids::{AdminCommandId, DeviceId, ItPolicyId, UserId};
use crate::db::models::admin_command::CommandKind;
use crate::dispatcher::{Dispatcher, Outgoing};

/// What a device is asked to confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// The IT policy: the named policy it came from (`None`: no policy is
    /// assigned and there is no default one, so the catalog's defaults),
    /// and whether the service books follow once it is confirmed.
    Policy {
        policy: Option<ItPolicyId>,
        books_after: bool,
    },
    Books,
    Command(AdminCommandId, DeviceId, CommandKind),
}

impl Step {
    /// How the step is named in the log.
    pub(super) fn name(self) -> &'static str {
        match self {
            Step::Policy { .. } => "IT policy",
            Step::Books => "service books",
            Step::Command(..) => "IT admin command",
        }
    }
}

/// One message awaiting its confirmation.
pub(super) struct Sent {
    pub(super) user: UserId,
    pub(super) pin: Pin,
    pub(super) step: Step,
    pub(super) at: Instant,
}

/// The messages awaiting confirmation, by RefID; shared by the tasks that
/// send them and the loop that receives the delivery events.
#[derive(Clone, Default)]
pub(super) struct Confirmations(Arc<Mutex<HashMap<RefId, Sent>>>);

impl Confirmations {
    /// Awaits the device's confirmation of `ref_id`.
    pub(super) fn expect(&self, ref_id: RefId, sent: Sent) {
        if let Ok(mut awaited) = self.0.lock() {
            awaited.insert(ref_id, sent);
        }
    }

    /// The entry for `ref_id`, if it is awaited.
    pub(super) fn take(&self, ref_id: RefId) -> Option<Sent> {
        self.0.lock().ok()?.remove(&ref_id)
    }

    /// Forgets the policies and service books not confirmed within
    /// `timeout` (so the next look for unfinished activations sends them
    /// again) and returns the users still awaiting a confirmation in time.
    pub(super) fn forget_late(&self, timeout: Duration) -> HashSet<UserId> {
        let Ok(mut awaited) = self.0.lock() else {
            return HashSet::new();
        };
        awaited.retain(|_, s| {
            let late = !matches!(s.step, Step::Command(..)) && s.at.elapsed() >= timeout;
            if late {
                warn!(target: "bramble::policy", pin = %s.pin, user = %s.user, "the {} was not confirmed within {}s; sending it again", s.step.name(), timeout.as_secs());
            }
            !late
        });
        awaited.values().map(|s| s.user).collect()
    }
}

/// Queues `plaintext` for `pin` under a fresh RefID and awaits its
/// confirmation as `step`. The entry is made before the message is queued,
/// so a confirmation can never arrive before it.
pub(super) async fn send_awaited(
    dispatcher: &Dispatcher,
    confirmations: &Confirmations,
    user: UserId,
    pin: Pin,
    step: Step,
    content_type: ContentType,
    plaintext: Vec<u8>,
) {
    let ref_id = RefId::random();
    confirmations.expect(
        ref_id,
        Sent {
            user,
            pin,
            step,
            at: Instant::now(),
        },
    );
    let queued = dispatcher
        .send(Outgoing {
            pin,
            content_type,
            plaintext,
            priority: true,
            ref_id: Some(ref_id),
        })
        .await;
    match queued {
        Ok(_) => {
            info!(target: "bramble::policy", %pin, %user, %ref_id, "{} sent", step.name());
        }
        Err(e) => {
            confirmations.take(ref_id);
            warn!(target: "bramble::policy", %pin, %user, "cannot send the {}: {e}", step.name())
        }
    }
}
