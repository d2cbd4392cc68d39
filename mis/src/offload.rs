//! The S3 offload retry queue (sans-IO): which finished recordings still
//! have to be uploaded, and when to try each again.
//!
//! Driving contract: [`RetryQueue::handle_enqueue`] for every recording
//! written locally (and for every outbox marker found at start); take work
//! with [`RetryQueue::poll_upload`] until it returns `None`; report each
//! attempt with [`RetryQueue::handle_result`]; sleep until
//! [`RetryQueue::poll_timeout`]. A failed upload is retried after a backoff
//! that doubles from `initial_backoff_ns` up to `max_backoff_ns`, forever:
//! a recording is never dropped because the object store is down (it stays
//! in the local directory and in the outbox meanwhile).

use std::collections::BTreeMap;

use wire::Timestamp;

/// Backoff settings.
#[derive(Clone, Copy, Debug)]
pub struct RetryConfig {
    /// First retry delay, ns.
    pub initial_backoff_ns: u64,
    /// Largest retry delay, ns.
    pub max_backoff_ns: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff_ns: 1_000_000_000,
            max_backoff_ns: 60_000_000_000,
        }
    }
}

/// Recordings waiting for upload.
#[derive(Debug, Default)]
pub struct RetryQueue {
    config: RetryConfig,
    items: BTreeMap<String, Item>,
}

#[derive(Debug)]
struct Item {
    failures: u32,
    next_try: Timestamp,
    in_flight: bool,
}

impl RetryQueue {
    /// An empty queue.
    pub fn new(config: RetryConfig) -> Self {
        Self {
            config,
            items: BTreeMap::new(),
        }
    }

    /// Adds a recording id, due at once (no-op if already queued).
    pub fn handle_enqueue(&mut self, now: Timestamp, id: String) {
        self.items.entry(id).or_insert(Item {
            failures: 0,
            next_try: now,
            in_flight: false,
        });
    }

    /// The next recording due for an upload attempt (marked in flight until
    /// its result is reported).
    pub fn poll_upload(&mut self, now: Timestamp) -> Option<String> {
        let (id, item) = self
            .items
            .iter_mut()
            .filter(|(_, i)| !i.in_flight && i.next_try <= now)
            .min_by_key(|(_, i)| i.next_try)?;
        item.in_flight = true;
        Some(id.clone())
    }

    /// Reports an attempt: success removes the id, failure schedules a
    /// retry.
    pub fn handle_result(&mut self, now: Timestamp, id: &str, ok: bool) {
        if ok {
            self.items.remove(id);
            return;
        }
        if let Some(i) = self.items.get_mut(id) {
            i.in_flight = false;
            i.failures = i.failures.saturating_add(1);
            let shift = (i.failures - 1).min(32);
            let backoff = self
                .config
                .initial_backoff_ns
                .saturating_mul(1u64 << shift)
                .min(self.config.max_backoff_ns);
            i.next_try = Timestamp(now.0.saturating_add(backoff));
        }
    }

    /// When the next waiting (not in-flight) item is due.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.items
            .values()
            .filter(|i| !i.in_flight)
            .map(|i| i.next_try)
            .min()
    }

    /// Recordings not yet uploaded (in flight included).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether everything is uploaded.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn backoff_doubles_to_the_cap_and_nothing_is_dropped() {
        let mut q = RetryQueue::new(RetryConfig {
            initial_backoff_ns: S,
            max_backoff_ns: 8 * S,
        });
        q.handle_enqueue(Timestamp(0), "a".into());
        q.handle_enqueue(Timestamp(0), "a".into());
        q.handle_enqueue(Timestamp(0), "b".into());
        assert_eq!(q.len(), 2);
        // Virtual time: the store is down for 30 s.
        let mut now = Timestamp(0);
        let mut tries_a = Vec::new();
        while now.0 < 30 * S {
            while let Some(id) = q.poll_upload(now) {
                if id == "a" {
                    tries_a.push(now.0 / S);
                }
                q.handle_result(now, &id, false);
            }
            now = q.poll_timeout().unwrap();
        }
        assert_eq!(tries_a, [0, 1, 3, 7, 15, 23]);
        assert_eq!(q.len(), 2);
        // Back up: both go through.
        now = q.poll_timeout().unwrap();
        while let Some(id) = q.poll_upload(now) {
            q.handle_result(now, &id, true);
        }
        assert!(q.is_empty());
        assert_eq!(q.poll_timeout(), None);
    }

    #[test]
    fn in_flight_items_are_not_handed_out_twice() {
        let mut q = RetryQueue::new(RetryConfig::default());
        q.handle_enqueue(Timestamp(5), "x".into());
        assert_eq!(q.poll_upload(Timestamp(4)), None);
        assert_eq!(q.poll_upload(Timestamp(5)).as_deref(), Some("x"));
        assert_eq!(q.poll_upload(Timestamp(99)), None);
        assert_eq!(q.poll_timeout(), None);
        q.handle_result(Timestamp(10), "x", false);
        assert_eq!(q.poll_timeout(), Some(Timestamp(10 + S)));
    }
}
