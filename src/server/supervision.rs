//! Supervision: what the daemon tells its service manager (sd_notify `READY`, `STATUS`,
//! `STOPPING`, `MAINPID`) and the watchdog pings.

use std::time::{Duration, Instant};

use log::debug;

use crate::systemd::Notifier;

/// How often at most `STATUS=` is sent to systemd while registrations change.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Supervision's state.
#[derive(Debug, Default)]
pub struct Supervisor {
    notifier: Option<Notifier>,
    /// Watchdog interval and the next ping.
    watchdog: Option<(Duration, Instant)>,
    /// The next time `STATUS=` may be sent, while the registration count has changed.
    status_due: Option<Instant>,
    last_status_count: Option<usize>,
    ready_sent: bool,
}

impl Supervisor {
    /// Sends sd_notify messages to `notifier` and pings the watchdog every `watchdog` when
    /// set.
    pub fn set_notifier(&mut self, notifier: Option<Notifier>, watchdog: Option<Duration>) {
        self.notifier = notifier;
        self.watchdog = watchdog.map(|d| (d, Instant::now()));
    }

    /// The service manager's notification socket, if any.
    pub fn notifier(&self) -> Option<&Notifier> {
        self.notifier.as_ref()
    }

    /// Sends `state`; a failure is only logged.
    pub fn notify(&self, state: &str) {
        if let Some(n) = &self.notifier {
            if let Err(e) = n.notify(state) {
                debug!("sd_notify {state:?} failed: {e}");
            }
        }
    }

    /// The loop starts (or resumes) serving with `registrations` registered: `READY` the
    /// first time, and the status.
    pub fn serving(&mut self, registrations: usize) {
        if !self.ready_sent {
            self.notify(&format!("READY=1\nMAINPID={}", std::process::id()));
            self.ready_sent = true;
        }
        self.send_status(registrations);
    }

    fn send_status(&mut self, count: usize) {
        if self.last_status_count != Some(count) {
            self.notify(&format!(
                "STATUS=Processing port mapping requests; {count} nodes registered"
            ));
            self.last_status_count = Some(count);
        }
        self.status_due = None;
    }

    /// A loop turn at `now` with `registrations` registered: pings the watchdog and sends
    /// the status when due, and schedules a status once the count changed.
    pub fn tick(&mut self, now: Instant, registrations: usize) {
        if let Some((every, next)) = self.watchdog {
            if next <= now {
                self.notify("WATCHDOG=1");
                self.watchdog = Some((every, now + every));
            }
        }
        if self.status_due.is_some_and(|t| t <= now) {
            self.send_status(registrations);
        }
    }

    /// After the turn's work: a status is scheduled once the registration count changed.
    pub fn schedule_status(&mut self, now: Instant, registrations: usize) {
        if self.notifier.is_some()
            && self.status_due.is_none()
            && self.last_status_count != Some(registrations)
        {
            self.status_due = Some(now + STATUS_INTERVAL);
        }
    }

    /// When the loop must wake up next for supervision.
    pub fn next_wakeup(&self) -> Option<Instant> {
        [self.watchdog.map(|(_, next)| next), self.status_due]
            .into_iter()
            .flatten()
            .min()
    }
}
