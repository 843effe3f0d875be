//! Who gets the AWS write budget next. Writes wait here for a token of the write bucket; when
//! tokens are scarce the most urgent waiting write goes first, and writes of one urgency go in
//! the order they arrived. A target group's writes are serialized, so a group never has more than
//! one write waiting: arrival order is a round robin across groups.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// How soon a write must go out, most urgent first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Urgency {
    /// Takes out targets whose endpoints are terminating or gone: traffic to them is failing.
    Remove,
    /// Adds targets, or the security-group rules targets need: capacity waits for them.
    Add,
    /// Repairs what a drift check found; nothing changed in the cluster.
    Repair,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Remove => "remove",
            Self::Add => "add",
            Self::Repair => "repair",
        }
    }
}

/// When a write may go: its urgency, and (optionally) what makes it stale while it waits.
#[derive(Clone, Debug)]
pub struct Turn {
    pub urgency: Urgency,
    /// Changes to the inputs the write was decided from: once this has changed, a write still
    /// waiting is dropped (never one already sent), so the binding decides again.
    pub stale_when: Option<watch::Receiver<u64>>,
}

impl Turn {
    pub fn new(urgency: Urgency) -> Self {
        Self { urgency, stale_when: None }
    }
}

/// The write was dropped before it was sent: its inputs changed while it waited.
#[derive(Debug, PartialEq, Eq)]
pub struct Stale;

/// A token bucket whose waiters are served by [`Urgency`], then arrival.
#[derive(Debug)]
pub struct WriteQueue {
    rate: f64,
    burst: f64,
    state: Mutex<State>,
    /// Wakes the waiters when the head of the queue changes.
    head_changed: Notify,
}

type Ticket = (Urgency, u64);

#[derive(Debug)]
struct State {
    tokens: f64,
    refilled: Instant,
    waiting: BTreeSet<Ticket>,
    arrivals: u64,
}

/// What a waiter does next.
#[derive(Debug, PartialEq)]
enum Next {
    Go,
    /// The head of the queue: a token comes in this long.
    Sleep(Duration),
    /// Someone else is ahead.
    Wait,
}

impl State {
    fn enqueue(&mut self, urgency: Urgency) -> Ticket {
        self.arrivals += 1;
        let ticket = (urgency, self.arrivals);
        self.waiting.insert(ticket);
        ticket
    }

    /// Takes a token for `ticket` if it heads the queue and one is there.
    fn next(&mut self, ticket: Ticket, now: Instant, rate: f64, burst: f64) -> Next {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.refilled = now;
        if self.waiting.first() != Some(&ticket) {
            return Next::Wait;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.waiting.remove(&ticket);
            Next::Go
        } else {
            Next::Sleep(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

impl WriteQueue {
    pub fn new(rate_per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        let state = State { tokens: burst, refilled: Instant::now(), waiting: BTreeSet::new(), arrivals: 0 };
        Self { rate: rate_per_second.max(0.001), burst, state: Mutex::new(state), head_changed: Notify::new() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the state consistent; a poisoned lock changes nothing.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for this write's turn and takes a token; `Err(Stale)` when `turn.stale_when` changed first.
    pub async fn take(&self, turn: &Turn) -> Result<(), Stale> {
        let mut stale_when = turn.stale_when.clone();
        let ticket = self.state().enqueue(turn.urgency);
        // Leaves the queue however this future ends (a token taken, stale, or dropped).
        let _leave = Leave { queue: self, ticket };
        loop {
            let head_changed = self.head_changed.notified();
            tokio::pin!(head_changed);
            head_changed.as_mut().enable();
            if let Some(changes) = &stale_when {
                match changes.has_changed() {
                    Ok(true) => return Err(Stale),
                    Ok(false) => {}
                    // Nobody can report a change any more.
                    Err(_) => stale_when = None,
                }
            }
            let next = self.state().next(ticket, Instant::now(), self.rate, self.burst);
            // Resolves with `false` on a change, `true` when nobody can report one any more.
            let stale = async {
                match &mut stale_when {
                    Some(changes) => changes.changed().await.is_err(),
                    None => std::future::pending().await,
                }
            };
            // `changed()` marks the change as seen: once it fires the write is stale, whatever
            // `has_changed()` says next time.
            match next {
                Next::Go => return Ok(()),
                Next::Sleep(wait) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = &mut head_changed => {}
                        gone = stale => if !gone { return Err(Stale) },
                    }
                }
                Next::Wait => {
                    tokio::select! {
                        _ = &mut head_changed => {}
                        gone = stale => if !gone { return Err(Stale) },
                    }
                }
            }
        }
    }
}

struct Leave<'a> {
    queue: &'a WriteQueue,
    ticket: Ticket,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.queue.state().waiting.remove(&self.ticket);
        self.queue.head_changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn spent(now: Instant) -> State {
        State { tokens: 0.0, refilled: now, waiting: BTreeSet::new(), arrivals: 0 }
    }

    #[test]
    fn the_most_urgent_goes_first_then_arrival_order() {
        let now = Instant::now();
        let mut state = spent(now);
        let repair = state.enqueue(Urgency::Repair);
        let add_a = state.enqueue(Urgency::Add);
        let add_b = state.enqueue(Urgency::Add);
        let remove = state.enqueue(Urgency::Remove);
        let second = now + Duration::from_millis(250);
        for ticket in [repair, add_a, add_b] {
            assert_eq!(state.next(ticket, second, 4.0, 20.0), Next::Wait);
        }
        assert_eq!(state.next(remove, second, 4.0, 20.0), Next::Go);
        let mut order = Vec::new();
        let mut t = second;
        while !state.waiting.is_empty() {
            t += Duration::from_millis(250);
            for ticket in [repair, add_b, add_a] {
                if state.waiting.contains(&ticket) && state.next(ticket, t, 4.0, 20.0) == Next::Go {
                    order.push(ticket);
                }
            }
        }
        assert_eq!(order, vec![add_a, add_b, repair]);
    }

    #[test]
    fn the_head_sleeps_until_its_token_and_burst_is_kept() {
        let now = Instant::now();
        let mut state = spent(now);
        let head = state.enqueue(Urgency::Add);
        match state.next(head, now, 4.0, 20.0) {
            Next::Sleep(wait) => assert!((wait.as_secs_f64() - 0.25).abs() < 1e-6, "{wait:?}"),
            other => panic!("expected to sleep, got {other:?}"),
        }
        let mut state = spent(now);
        let later = now + Duration::from_secs(3600);
        let tickets: Vec<_> = (0..3).map(|_| state.enqueue(Urgency::Add)).collect();
        assert_eq!(state.next(tickets[0], later, 4.0, 2.0), Next::Go);
        assert_eq!(state.next(tickets[1], later, 4.0, 2.0), Next::Go);
        assert!(matches!(state.next(tickets[2], later, 4.0, 2.0), Next::Sleep(_)), "never more than the burst");
    }

    #[tokio::test]
    async fn waiting_writes_are_served_by_urgency_then_arrival() {
        let queue = Arc::new(WriteQueue::new(20.0, 1));
        queue.take(&Turn::new(Urgency::Add)).await.expect("the burst token");
        let served = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, urgency) in
            [("repair", Urgency::Repair), ("add 1", Urgency::Add), ("add 2", Urgency::Add), ("remove", Urgency::Remove)]
        {
            let (queue, served) = (queue.clone(), served.clone());
            tasks.push(tokio::spawn(async move {
                queue.take(&Turn::new(urgency)).await.expect("served");
                served.lock().expect("lock").push(name);
            }));
            // Each write is queued before the next arrives (the test runtime has one thread).
            tokio::task::yield_now().await;
        }
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(5), task).await.expect("served in time").expect("task");
        }
        assert_eq!(*served.lock().expect("lock"), vec!["remove", "add 1", "add 2", "repair"]);
    }

    #[tokio::test]
    async fn a_stale_write_leaves_the_queue_and_the_next_one_takes_its_place() {
        // No token for a long time: only staleness or leaving can end a wait.
        let queue = Arc::new(WriteQueue::new(0.001, 1));
        queue.take(&Turn::new(Urgency::Add)).await.expect("the burst token");
        let (changes, seen) = watch::channel(0u64);
        let turn = Turn { urgency: Urgency::Remove, stale_when: Some(seen) };
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.take(&turn).await }
        });
        tokio::task::yield_now().await;
        changes.send_modify(|n| *n += 1);
        let ended = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(ended.expect("a stale wait ends").expect("task"), Err(Stale));
        assert!(queue.state().waiting.is_empty(), "the stale write left the queue");
    }

    #[tokio::test]
    async fn a_dropped_waiter_never_blocks_the_queue() {
        let queue = WriteQueue::new(2.0, 1);
        queue.take(&Turn::new(Urgency::Add)).await.expect("the burst token");
        let dropped = tokio::time::timeout(Duration::from_millis(1), queue.take(&Turn::new(Urgency::Remove))).await;
        assert!(dropped.is_err(), "the next token comes in 500 ms");
        assert!(queue.state().waiting.is_empty());
        let next = tokio::time::timeout(Duration::from_secs(5), queue.take(&Turn::new(Urgency::Repair))).await;
        assert_eq!(next.expect("served"), Ok(()));
    }
}
