//! How patient the registry client is: timeouts, retries, and the interrupt a solve fires when it
//! is cancelled.
//!
//! - [`RegistryOptions`]: connect timeout, idle (per read/write) timeout, attempts and backoff of
//!   idempotent requests. Defaults: 30 s, 60 s, 3 attempts, 500 ms doubling backoff; the
//!   environment (`KILN_REGISTRY_CONNECT_TIMEOUT`, `KILN_REGISTRY_READ_TIMEOUT`,
//!   `KILN_REGISTRY_RETRIES`) overrides them in [`RegistryOptions::from_env`], which
//!   `EngineOptions::new` uses.
//! - [`Interrupt`]: shuts down the connections of every client registered with it, so a
//!   blocked read or write returns at once; requests started afterwards fail as cancelled.

use crate::error::{Error, Result};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Default time to establish a connection (TCP and TLS).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest wait for any progress of a read or write (not a whole-request limit: a large
/// blob streams as long as bytes keep coming).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default attempts of an idempotent request (the first plus retries).
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// Default wait before the first retry; doubled for each further one.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Environment variable overriding [`RegistryOptions::connect_timeout`] (seconds, may be
/// fractional: `2.5`).
pub const ENV_CONNECT_TIMEOUT: &str = "KILN_REGISTRY_CONNECT_TIMEOUT";
/// Environment variable overriding [`RegistryOptions::read_timeout`] (seconds, may be fractional).
pub const ENV_READ_TIMEOUT: &str = "KILN_REGISTRY_READ_TIMEOUT";
/// Environment variable overriding [`RegistryOptions::attempts`] (1 = no retries).
pub const ENV_RETRIES: &str = "KILN_REGISTRY_RETRIES";

/// Timeouts and retries of registry requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Longest time to establish a connection (name resolution, TCP, TLS).
    pub connect_timeout: Duration,
    /// Longest wait for progress: each read (answer headers, every chunk of a body) and each
    /// write must move data within it. A multi-GB blob streams for as long as it takes.
    pub read_timeout: Duration,
    /// Attempts of an idempotent request (`GET`, `HEAD`, manifest `PUT`), the first included,
    /// on connection errors, timeouts, HTTP 5xx and 429. At least 1. Upload sessions (`POST`,
    /// `PATCH`, the final `PUT` of a blob) are never replayed.
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one, capped at 10 s (a 429's or
    /// 503's `Retry-After` is honoured within that cap).
    pub backoff: Duration,
}

impl Default for RegistryOptions {
    /// The built-in defaults (the environment is not read; see [`RegistryOptions::from_env`]).
    fn default() -> Self {
        RegistryOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            backoff: DEFAULT_BACKOFF,
        }
    }
}

impl RegistryOptions {
    /// The defaults, overridden by `KILN_REGISTRY_CONNECT_TIMEOUT`, `KILN_REGISTRY_READ_TIMEOUT`
    /// (seconds) and `KILN_REGISTRY_RETRIES` (attempts) when set. An unparsable value is an
    /// [`ErrorKind::Option`] error naming the variable.
    pub fn from_env() -> Result<RegistryOptions> {
        let mut o = RegistryOptions::default();
        if let Some(d) = env_seconds(ENV_CONNECT_TIMEOUT)? {
            o.connect_timeout = d;
        }
        if let Some(d) = env_seconds(ENV_READ_TIMEOUT)? {
            o.read_timeout = d;
        }
        if let Some(v) = std::env::var_os(ENV_RETRIES) {
            let s = v.to_string_lossy();
            o.attempts = s
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1 && *n <= 100)
                .ok_or_else(|| Error::option(ENV_RETRIES, s.as_ref(), "a number of attempts from 1 to 100"))?;
        }
        Ok(o)
    }

    /// The options with every value in range (timeouts at least 1 ms, at least one attempt).
    pub(crate) fn sanitized(&self) -> RegistryOptions {
        let min = Duration::from_millis(1);
        RegistryOptions {
            connect_timeout: self.connect_timeout.max(min),
            read_timeout: self.read_timeout.max(min),
            attempts: self.attempts.max(1),
            backoff: self.backoff.min(MAX_BACKOFF),
        }
    }

    /// The wait before retry number `retry` (1-based).
    pub(crate) fn backoff_for(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(MAX_BACKOFF)
    }
}

/// Parses a positive number of seconds (`30`, `0.5`) from `var`, if set.
fn env_seconds(var: &str) -> Result<Option<Duration>> {
    let Some(v) = std::env::var_os(var) else { return Ok(None) };
    let s = v.to_string_lossy();
    let secs = s
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n > 0.0 && *n <= 86_400.0)
        .ok_or_else(|| Error::option(var, s.as_ref(), "a number of seconds greater than 0 (e.g. 30 or 0.5)"))?;
    Ok(Some(Duration::from_secs_f64(secs)))
}

/// A one-shot interrupt shared by every registry client of one solve. Firing it shuts down the
/// connections of the registered clients (a read or write blocked on them returns at once) and
/// makes every later request — and every backoff wait — end with [`Error::Cancelled`].
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    inner: Arc<InterruptInner>,
}

#[derive(Debug, Default)]
struct InterruptInner {
    state: Mutex<InterruptState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct InterruptState {
    fired: bool,
    /// Agents of live clients (dropped clients leave dead entries, pruned on registration).
    agents: Vec<Weak<ureq::Agent>>,
}

impl Interrupt {
    /// An interrupt not fired yet.
    pub fn new() -> Interrupt {
        Interrupt::default()
    }

    fn state(&self) -> MutexGuard<'_, InterruptState> {
        // The state is a flag and a list: consistent even if a holder panicked.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fires the interrupt (idempotent): every registered client's connections are shut down.
    pub fn fire(&self) {
        let agents = {
            let mut s = self.state();
            s.fired = true;
            std::mem::take(&mut s.agents)
        };
        self.inner.changed.notify_all();
        for a in agents.iter().filter_map(Weak::upgrade) {
            // `shutdown` consumes an agent handle; clones share the connection pool.
            (*a).clone().shutdown();
        }
    }

    /// True once fired.
    pub fn is_fired(&self) -> bool {
        self.state().fired
    }

    /// Registers a client's agent; shut down at once when already fired.
    pub(crate) fn register(&self, agent: &Arc<ureq::Agent>) {
        let mut s = self.state();
        if s.fired {
            drop(s);
            (**agent).clone().shutdown();
            return;
        }
        s.agents.retain(|w| w.strong_count() > 0);
        s.agents.push(Arc::downgrade(agent));
    }

    /// Waits `d` (a retry's backoff) unless fired first; `Err(Cancelled)` when fired.
    pub(crate) fn wait(&self, d: Duration) -> Result<()> {
        let deadline = Instant::now() + d;
        let mut s = self.state();
        // Bounded: each pass either returns or waits until the deadline.
        loop {
            if s.fired {
                return Err(Error::Cancelled);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            s = match self.inner.changed.wait_timeout(s, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let o = RegistryOptions { backoff: Duration::from_millis(500), ..RegistryOptions::default() };
        assert_eq!(o.backoff_for(1), Duration::from_millis(500));
        assert_eq!(o.backoff_for(2), Duration::from_secs(1));
        assert_eq!(o.backoff_for(3), Duration::from_secs(2));
        assert_eq!(o.backoff_for(40), MAX_BACKOFF);
    }

    #[test]
    fn sanitized_keeps_values_in_range() {
        let o = RegistryOptions {
            connect_timeout: Duration::ZERO,
            read_timeout: Duration::ZERO,
            attempts: 0,
            backoff: Duration::from_secs(3600),
        }
        .sanitized();
        assert!(o.connect_timeout > Duration::ZERO && o.read_timeout > Duration::ZERO);
        assert_eq!(o.attempts, 1);
        assert_eq!(o.backoff, MAX_BACKOFF);
    }

    #[test]
    fn interrupt_ends_a_wait() {
        let i = Interrupt::new();
        assert!(i.wait(Duration::from_millis(1)).is_ok());
        let j = i.clone();
        let t = std::thread::spawn(move || j.wait(Duration::from_secs(600)));
        i.fire();
        assert!(matches!(t.join().map_err(|_| ()), Ok(Err(Error::Cancelled))));
        assert!(i.is_fired());
    }
}
