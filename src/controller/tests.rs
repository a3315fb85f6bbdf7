#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Controller against components that behave, hang and crash, on a
//! paused clock: no test sleeps in real time.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::controller::component::{run_rounds, ComponentError, ComponentId};
use crate::db::models::test_db;

#[derive(Clone, Copy)]
enum Behaviour {
    /// Beats every interval until told to stop.
    Healthy,
    /// Beats once, then never again (stuck).
    HangsAfterFirstBeat,
    /// Beats once, then returns an error.
    FailsAfterFirstBeat,
    /// Beats once, then panics.
    PanicsAfterFirstBeat,
}

struct Probe {
    id: &'static str,
    behaviour: Behaviour,
    runs: Arc<AtomicU32>,
}

impl Component for Probe {
    fn id(&self) -> ComponentId {
        ComponentId::Custom(self.id)
    }

    fn run(&self, ctx: ComponentContext) -> BoxFuture<'static, Result<(), ComponentError>> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let behaviour = self.behaviour;
        async move {
            match behaviour {
                Behaviour::Healthy => run_rounds(ctx, |_| async { Ok(()) }).await,
                Behaviour::HangsAfterFirstBeat => {
                    ctx.heartbeat.beat();
                    std::future::pending::<()>().await;
                    Ok(())
                }
                Behaviour::FailsAfterFirstBeat => {
                    ctx.heartbeat.beat();
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Err(ComponentError::failed(
                        "TEST_CRASH",
                        "mailbox connection lost",
                    ))
                }
                Behaviour::PanicsAfterFirstBeat => {
                    ctx.heartbeat.beat();
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    panic!("probe panicked on purpose");
                }
            }
        }
        .boxed()
    }
}

struct Harness {
    board: StatusBoard,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ComponentError>>,
    runs: Vec<Arc<AtomicU32>>,
    _dir: tempfile::TempDir,
}

fn settings(missed: u32, cap: u32) -> ControllerSettings {
    ControllerSettings {
        heartbeat_interval_secs: 600,
        missed_heartbeats_before_restart: missed,
        max_restarts_per_day: cap,
    }
}

fn start(settings: ControllerSettings, probes: &[(&'static str, Behaviour)]) -> Harness {
    let (dir, db) = test_db();
    let board = StatusBoard::default();
    let mut runs = Vec::new();
    let components: Vec<Arc<dyn Component>> = probes
        .iter()
        .map(|(id, behaviour)| {
            let counter = Arc::new(AtomicU32::new(0));
            runs.push(counter.clone());
            Arc::new(Probe {
                id,
                behaviour: *behaviour,
                runs: counter,
            }) as Arc<dyn Component>
        })
        .collect();
    let controller = Controller::new(settings, db, components, board.clone());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(controller.run(shutdown.clone()));
    Harness {
        board,
        shutdown,
        task,
        runs,
        _dir: dir,
    }
}

/// Lets virtual time pass in small steps so every timer in between fires.
async fn pass(duration: Duration) {
    let step = Duration::from_secs(10);
    let mut left = duration;
    while !left.is_zero() {
        let d = step.min(left);
        tokio::time::sleep(d).await;
        left -= d;
    }
}

/// The database ping runs on a real blocking thread; let it finish.
async fn until_started(h: &Harness) {
    for _ in 0..500 {
        if h.runs.iter().all(|r| r.load(Ordering::SeqCst) > 0) {
            return;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("components never started");
}

fn status(h: &Harness, id: &'static str) -> ComponentStatus {
    h.board.get(ComponentId::Custom(id)).unwrap()
}

#[tokio::test(start_paused = true)]
async fn healthy_component_runs_for_days_without_restart() {
    let h = start(settings(2, 10), &[("healthy", Behaviour::Healthy)]);
    until_started(&h).await;
    pass(Duration::from_secs(3 * 24 * 3600)).await;
    let s = status(&h, "healthy");
    assert_eq!(s.state, ComponentState::Running);
    assert_eq!(s.restarts, 0);
    assert!(s.last_heartbeat.is_some());
    assert_eq!(h.runs[0].load(Ordering::SeqCst), 1);
    h.shutdown.cancel();
    let board = h.board.clone();
    h.task.await.unwrap().unwrap();
    assert_eq!(
        board.get(ComponentId::Custom("healthy")).unwrap().state,
        ComponentState::Stopped
    );
}

#[tokio::test(start_paused = true)]
async fn hung_component_is_restarted_after_two_missed_heartbeats() {
    let h = start(
        settings(2, 10),
        &[
            ("hangs", Behaviour::HangsAfterFirstBeat),
            ("healthy", Behaviour::Healthy),
        ],
    );
    until_started(&h).await;
    // One missed heartbeat is tolerated.
    pass(Duration::from_secs(600 + 300)).await;
    assert_eq!(h.runs[0].load(Ordering::SeqCst), 1);
    assert_eq!(status(&h, "hangs").restarts, 0);
    // The second one is not.
    pass(Duration::from_secs(600)).await;
    assert_eq!(h.runs[0].load(Ordering::SeqCst), 2, "restarted once");
    let s = status(&h, "hangs");
    assert_eq!(s.restarts, 1);
    assert!(
        s.detail.as_deref().unwrap().contains("missed 2 heartbeats"),
        "{:?}",
        s.detail
    );
    // Its neighbour is untouched.
    assert_eq!(h.runs[1].load(Ordering::SeqCst), 1);
    assert_eq!(status(&h, "healthy").restarts, 0);
    h.shutdown.cancel();
    h.task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn missed_heartbeats_zero_never_restarts() {
    let h = start(
        settings(0, 10),
        &[("hangs", Behaviour::HangsAfterFirstBeat)],
    );
    until_started(&h).await;
    pass(Duration::from_secs(24 * 3600)).await;
    assert_eq!(h.runs[0].load(Ordering::SeqCst), 1);
    assert_eq!(status(&h, "hangs").restarts, 0);
    h.shutdown.cancel();
    h.task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn crashing_component_is_restarted_up_to_the_daily_cap() {
    let h = start(settings(2, 3), &[("fails", Behaviour::FailsAfterFirstBeat)]);
    until_started(&h).await;
    pass(Duration::from_secs(600)).await;
    // First run plus three restarts, then the cap holds.
    assert_eq!(h.runs[0].load(Ordering::SeqCst), 4);
    let s = status(&h, "fails");
    assert_eq!(s.state, ComponentState::Failed);
    assert_eq!(s.restarts, 3);
    let detail = s.detail.unwrap();
    assert!(detail.contains("mailbox connection lost"), "{detail}");
    assert!(detail.contains("max_restarts_per_day"), "{detail}");
    // Still stopped hours later…
    pass(Duration::from_secs(12 * 3600)).await;
    assert_eq!(h.runs[0].load(Ordering::SeqCst), 4);
    // …and given another chance once the 24-hour window has passed.
    pass(Duration::from_secs(12 * 3600 + 60)).await;
    assert!(h.runs[0].load(Ordering::SeqCst) > 4);
    h.shutdown.cancel();
    h.task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn panicking_component_is_restarted() {
    let h = start(
        settings(2, 10),
        &[("panics", Behaviour::PanicsAfterFirstBeat)],
    );
    until_started(&h).await;
    pass(Duration::from_secs(20)).await;
    assert!(h.runs[0].load(Ordering::SeqCst) >= 2);
    let s = status(&h, "panics");
    assert!(s.restarts >= 1);
    assert!(s.detail.unwrap().contains("probe panicked on purpose"));
    h.shutdown.cancel();
    h.task.await.unwrap().unwrap();
}
