//! The HTTP server's open connections: the limit (`[http] max_connections`),
//! which one to shed at the limit, and the header and idle timeouts.
//!
//! Every accepted connection is [`Connections::admit`]ted and holds a
//! [`Connection`] until it closes. A connection that has not yet sent a
//! complete request head (a TLS handshake counts as not yet sent) is
//! *waiting*; one between requests is *idle*; one with a request in flight
//! (its response body included, so change streams too) is *busy*. At the
//! limit the oldest waiting connection is shed, else the longest idle one;
//! busy connections are never shed, and when every connection is busy the
//! new one is refused. A sweep closes waiting connections older than the
//! header timeout and idle ones past the idle timeout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::shutdown::StopSignal;

/// The bounds on connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest a connection may take to complete its TLS handshake and send
    /// its first request head.
    pub header_timeout: Duration,
    /// Longest a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
}

/// Why a connection was closed by the host rather than by its client;
/// the label of `replica_http_connections_closed_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Shed at the limit to make room for a new connection.
    Shed,
    /// Refused at the limit: every open connection was busy.
    Refused,
    /// No complete request head within the header timeout.
    HeaderTimeout,
    /// No request within the idle timeout.
    IdleTimeout,
}

impl CloseReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Shed => "shed",
            CloseReason::Refused => "refused",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
        }
    }

    fn count(self) {
        metrics::counter!("replica_http_connections_closed_total", "reason" => self.as_str())
            .increment(1);
    }
}

/// One connection's state as the registry sees it.
struct Entry {
    /// When it was accepted.
    accepted: Instant,
    /// Requests whose head arrived.
    requests: u64,
    /// Requests whose response is not done yet.
    in_flight: u32,
    /// When its last response finished (or it was accepted).
    idle_since: Instant,
    /// Tells its task to close it.
    kill: Arc<Kill>,
}

/// A close order for one connection.
#[derive(Default)]
struct Kill {
    set: AtomicBool,
    notify: Notify,
}

impl Kill {
    fn fire(&self) {
        self.set.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.set.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// The table of open connections, in accept order.
#[derive(Default)]
struct Table {
    next_id: u64,
    open: BTreeMap<u64, Entry>,
}

/// Every open connection of one server.
pub struct Connections {
    limits: ConnectionLimits,
    table: Mutex<Table>,
    /// How many sockets are open: the table's, and those shed or timed out
    /// whose task has not closed them yet.
    alive: watch::Sender<usize>,
}

impl Connections {
    /// An empty registry with these bounds.
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            table: Mutex::new(Table::default()),
            alive: watch::channel(0).0,
        })
    }

    /// The bounds in force.
    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many connections are open (their sockets not closed yet).
    pub fn len(&self) -> usize {
        *self.alive.borrow()
    }

    /// Takes a newly accepted connection in, shedding another at the limit;
    /// `None` when it must be refused (every open connection is busy).
    pub fn admit(self: &Arc<Self>) -> Option<Connection> {
        let now = Instant::now();
        let mut table = self.table();
        if table.open.len() >= self.limits.max_connections {
            let Some(victim) = victim(&table.open) else {
                drop(table);
                CloseReason::Refused.count();
                return None;
            };
            if let Some(entry) = table.open.remove(&victim) {
                entry.kill.fire();
                CloseReason::Shed.count();
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let kill = Arc::new(Kill::default());
        table.open.insert(
            id,
            Entry {
                accepted: now,
                requests: 0,
                in_flight: 0,
                idle_since: now,
                kill: Arc::clone(&kill),
            },
        );
        drop(table);
        self.alive.send_modify(|alive| *alive += 1);
        metrics::gauge!("replica_http_connections").increment(1.0);
        Some(Connection {
            id,
            kill,
            connections: Arc::clone(self),
        })
    }

    /// Closes the connections past their timeouts at `now`; returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let limits = self.limits;
        let mut table = self.table();
        let expired: Vec<(u64, CloseReason)> = table
            .open
            .iter()
            .filter(|(_, e)| e.in_flight == 0)
            .filter_map(|(id, e)| {
                if e.requests == 0 && now.duration_since(e.accepted) >= limits.header_timeout {
                    Some((*id, CloseReason::HeaderTimeout))
                } else if e.requests > 0 && now.duration_since(e.idle_since) >= limits.idle_timeout
                {
                    Some((*id, CloseReason::IdleTimeout))
                } else {
                    None
                }
            })
            .collect();
        for (id, reason) in &expired {
            if let Some(entry) = table.open.remove(id) {
                entry.kill.fire();
                reason.count();
            }
        }
        expired.len()
    }

    /// Sweeps every `period` until `stop`.
    pub async fn sweep_until(self: Arc<Self>, period: Duration, mut stop: StopSignal) {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => { self.sweep(Instant::now()); }
                _ = stop.stopped() => return,
            }
        }
    }

    /// Resolves once no connection is open.
    pub async fn closed(&self) {
        let mut alive = self.alive.subscribe();
        let _ = alive.wait_for(|open| *open == 0).await;
    }

    /// Resolves once a connection may be accepted without holding more
    /// than the limit of sockets plus an eighth: the connections shed to
    /// make room must be closed before more are accepted, so the host never
    /// runs out of descriptors, yet accepting does not wait for each one.
    pub async fn room(&self) {
        let max = self.limits.max_connections;
        let most = max + max / 8;
        let mut alive = self.alive.subscribe();
        let _ = alive.wait_for(|open| *open <= most).await;
    }

    /// A connection's socket closed.
    fn forget(&self, id: u64) {
        self.table().open.remove(&id);
        self.alive
            .send_modify(|alive| *alive = alive.saturating_sub(1));
        metrics::gauge!("replica_http_connections").decrement(1.0);
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut Entry)) {
        if let Some(entry) = self.table().open.get_mut(&id) {
            change(entry);
        }
    }
}

/// The connection to shed: the oldest that has sent no complete request
/// head, else the one idle the longest; never one with a request in flight.
fn victim(open: &BTreeMap<u64, Entry>) -> Option<u64> {
    let idle = || open.iter().filter(|(_, e)| e.in_flight == 0);
    idle()
        .find(|(_, e)| e.requests == 0)
        .or_else(|| idle().min_by_key(|(_, e)| e.idle_since))
        .map(|(id, _)| *id)
}

/// One open connection; dropping it takes it out of the registry.
pub struct Connection {
    id: u64,
    kill: Arc<Kill>,
    connections: Arc<Connections>,
}

impl Connection {
    /// Resolves once the host decided to close this connection (shed, or a
    /// timeout).
    pub async fn killed(&self) {
        self.kill.wait().await;
    }

    /// A request's head arrived; the connection is busy until the returned
    /// guard (held by the response body) is dropped.
    pub fn request(&self) -> InFlight {
        self.connections.update(self.id, |e| {
            e.requests += 1;
            e.in_flight += 1;
        });
        InFlight {
            id: self.id,
            connections: Arc::clone(&self.connections),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.connections.forget(self.id);
    }
}

/// A request in flight on a connection.
pub struct InFlight {
    id: u64,
    connections: Arc<Connections>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.connections.update(self.id, |e| {
            e.in_flight = e.in_flight.saturating_sub(1);
            e.idle_since = Instant::now();
        });
    }
}

/// The default `[http] max_connections`: the soft limit on open files less
/// a quarter (at least 128) kept for the log, plugins and the process.
pub fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    };
    max_connections_for(soft)
}

/// [`default_max_connections`] for a descriptor limit of `soft`.
pub fn max_connections_for(soft: u64) -> usize {
    let soft = usize::try_from(soft).unwrap_or(usize::MAX).min(1 << 20);
    let headroom = (soft / 4).max(128);
    soft.saturating_sub(headroom).max(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: max,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn at_the_limit_the_oldest_waiting_connection_is_shed() {
        let connections = Connections::new(limits(3));
        let busy = connections.admit().unwrap();
        let _request = busy.request();
        let oldest_waiting = connections.admit().unwrap();
        let newer_waiting = connections.admit().unwrap();
        let newest = connections.admit().unwrap();
        tokio::time::timeout(Duration::from_secs(1), oldest_waiting.killed())
            .await
            .expect("the oldest waiting connection is shed");
        assert!(!newer_waiting.kill.set.load(Ordering::Acquire));
        assert!(!busy.kill.set.load(Ordering::Acquire), "busy is never shed");
        assert_eq!(connections.len(), 4, "the shed socket is not closed yet");
        drop(oldest_waiting);
        assert_eq!(connections.len(), 3);
        drop((newer_waiting, newest));
        assert_eq!(connections.len(), 1);
    }

    #[test]
    fn idle_connections_go_after_waiting_ones_and_busy_ones_never() {
        let connections = Connections::new(limits(2));
        let a = connections.admit().unwrap();
        let b = connections.admit().unwrap();
        drop(a.request()); // a: idle after one request
        let _b_busy = b.request();
        let c = connections.admit().unwrap(); // sheds the idle a
        assert!(a.kill.set.load(Ordering::Acquire));
        let _c_busy = c.request();
        assert!(connections.admit().is_none(), "every connection is busy");
    }

    #[test]
    fn the_sweep_closes_slow_heads_and_idle_connections() {
        let connections = Connections::new(ConnectionLimits {
            max_connections: 10,
            header_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(300),
        });
        let silent = connections.admit().unwrap();
        let idle = connections.admit().unwrap();
        drop(idle.request());
        let busy = connections.admit().unwrap();
        let _in_flight = busy.request();
        let now = Instant::now();
        assert_eq!(connections.sweep(now), 0);
        assert_eq!(connections.sweep(now + Duration::from_millis(150)), 1);
        assert!(silent.kill.set.load(Ordering::Acquire));
        assert_eq!(connections.sweep(now + Duration::from_millis(400)), 1);
        assert!(idle.kill.set.load(Ordering::Acquire));
        assert!(!busy.kill.set.load(Ordering::Acquire));
        assert_eq!(connections.sweep(now + Duration::from_secs(3600)), 0);
    }

    #[test]
    fn the_default_limit_keeps_headroom() {
        assert_eq!(max_connections_for(1024), 768);
        assert_eq!(max_connections_for(256), 128);
        assert_eq!(max_connections_for(100), 16);
        assert!(default_max_connections() >= 16);
    }
}
