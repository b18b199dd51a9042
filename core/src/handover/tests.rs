use std::collections::VecDeque;
use std::time::Duration;

use crate::time::Instant;

use proptest::prelude::*;

use super::*;
use crate::test_support::epoch;

const T: Duration = Duration::from_millis(500);

fn drain_old(old: &mut OldInstance) -> Vec<OldAction> {
    std::iter::from_fn(|| old.poll_action()).collect()
}

fn drain_new(new: &mut NewInstance) -> Vec<NewAction> {
    std::iter::from_fn(|| new.poll_action()).collect()
}

#[test]
fn old_happy_path() {
    let t0 = epoch();
    let mut old = OldInstance::new(T);
    assert!(old.is_accepting());
    assert_eq!(old.poll_timeout(), None);
    old.handle_upgrade_request(t0, 7);
    assert_eq!(drain_old(&mut old), [OldAction::SendOffer { conn: 7 }]);
    assert_eq!(old.poll_timeout(), Some(t0 + T));
    assert!(old.is_accepting());
    old.handle_serving(t0, 7);
    assert_eq!(
        drain_old(&mut old),
        [
            OldAction::SendDraining { conn: 7 },
            OldAction::StopAccepting
        ]
    );
    assert_eq!(old.state(), OldState::Draining);
    assert!(!old.is_accepting());
    assert_eq!(old.poll_timeout(), None);
    old.handle_drained(t0);
    assert_eq!(drain_old(&mut old), [OldAction::Exit]);
    assert_eq!(old.state(), OldState::Exited);
}

#[test]
fn old_rolls_back_on_timeout_and_serves_a_later_request() {
    let t0 = epoch();
    let mut old = OldInstance::new(T);
    old.handle_upgrade_request(t0, 1);
    drain_old(&mut old);
    old.handle_timeout(t0 + T / 2);
    assert!(drain_old(&mut old).is_empty(), "not yet due");
    old.handle_timeout(t0 + T);
    assert_eq!(
        drain_old(&mut old),
        [OldAction::Rollback {
            conn: 1,
            reason: RollbackReason::Timeout
        }]
    );
    assert_eq!(old.state(), OldState::Serving);
    // A late `Serving` on the abandoned connection changes nothing.
    old.handle_serving(t0 + T, 1);
    assert!(drain_old(&mut old).is_empty());
    assert!(old.is_accepting());
    old.handle_upgrade_request(t0 + T, 2);
    assert_eq!(drain_old(&mut old), [OldAction::SendOffer { conn: 2 }]);
}

#[test]
fn old_rolls_back_when_the_connection_closes() {
    let t0 = epoch();
    let mut old = OldInstance::new(T);
    old.handle_upgrade_request(t0, 1);
    drain_old(&mut old);
    old.handle_closed(t0, 99);
    assert!(drain_old(&mut old).is_empty(), "another connection");
    old.handle_closed(t0, 1);
    assert_eq!(
        drain_old(&mut old),
        [OldAction::Rollback {
            conn: 1,
            reason: RollbackReason::Closed
        }]
    );
    assert_eq!(old.state(), OldState::Serving);
}

#[test]
fn old_refuses_a_second_request_and_after_the_handover() {
    let t0 = epoch();
    let mut old = OldInstance::new(T);
    old.handle_upgrade_request(t0, 1);
    drain_old(&mut old);
    old.handle_upgrade_request(t0, 2);
    assert_eq!(
        drain_old(&mut old),
        [OldAction::Refuse {
            conn: 2,
            reason: RefuseReason::HandoverInProgress
        }]
    );
    // The refused connection's `Serving` is ignored.
    old.handle_serving(t0, 2);
    assert!(drain_old(&mut old).is_empty());
    old.handle_serving(t0, 1);
    drain_old(&mut old);
    old.handle_upgrade_request(t0, 3);
    assert_eq!(
        drain_old(&mut old),
        [OldAction::Refuse {
            conn: 3,
            reason: RefuseReason::Draining
        }]
    );
    // Closing the handed-over connection after the handover changes nothing.
    old.handle_closed(t0, 1);
    assert!(drain_old(&mut old).is_empty());
    assert_eq!(old.state(), OldState::Draining);
}

#[test]
fn new_happy_path() {
    let t0 = epoch();
    let mut new = NewInstance::new(t0, T);
    assert_eq!(drain_new(&mut new), [NewAction::SendRequest]);
    assert_eq!(new.poll_timeout(), Some(t0 + T));
    assert!(!new.is_accepting());
    let t1 = t0 + Duration::from_millis(10);
    new.handle_offer(t1);
    assert_eq!(new.state(), &NewState::Receiving { deadline: t1 + T });
    new.handle_fds(t1);
    assert_eq!(drain_new(&mut new), [NewAction::StartServing]);
    assert!(!new.is_accepting());
    new.handle_started(t1);
    assert_eq!(drain_new(&mut new), [NewAction::SendServing]);
    assert!(new.is_accepting());
    new.handle_ack(t1);
    assert_eq!(
        drain_new(&mut new),
        [NewAction::Finished { acknowledged: true }]
    );
    assert_eq!(new.state(), &NewState::Done { acknowledged: true });
    assert_eq!(new.poll_timeout(), None);
}

#[test]
fn new_fails_on_timeout_close_or_refusal_before_serving() {
    let t0 = epoch();
    let mut new = NewInstance::new(t0, T);
    drain_new(&mut new);
    new.handle_timeout(t0 + T);
    assert_eq!(
        drain_new(&mut new),
        [NewAction::Fail(NewFailure::Timeout(NewPhase::Requesting))]
    );
    assert!(!new.is_accepting());

    let mut new = NewInstance::new(t0, T);
    new.handle_offer(t0);
    drain_new(&mut new);
    new.handle_closed(t0);
    assert_eq!(
        drain_new(&mut new),
        [NewAction::Fail(NewFailure::Closed(NewPhase::Receiving))]
    );

    let mut new = NewInstance::new(t0, T);
    new.handle_offer(t0);
    new.handle_fds(t0);
    drain_new(&mut new);
    new.handle_timeout(t0 + T);
    assert_eq!(
        drain_new(&mut new),
        [NewAction::Fail(NewFailure::Timeout(NewPhase::Starting))]
    );
    // A failed instance ignores everything afterwards.
    new.handle_started(t0 + T);
    assert!(drain_new(&mut new).is_empty());

    let mut new = NewInstance::new(t0, T);
    drain_new(&mut new);
    new.handle_refused(t0, RefuseReason::Draining.to_string());
    assert_eq!(
        drain_new(&mut new),
        [NewAction::Fail(NewFailure::Refused(
            "this instance is draining after an upgrade".into()
        ))]
    );
}

#[test]
fn new_keeps_serving_without_an_acknowledgement() {
    let t0 = epoch();
    for close in [false, true] {
        let mut new = NewInstance::new(t0, T);
        new.handle_offer(t0);
        new.handle_fds(t0);
        new.handle_started(t0);
        drain_new(&mut new);
        if close {
            new.handle_closed(t0);
        } else {
            new.handle_timeout(t0 + T);
        }
        assert_eq!(
            drain_new(&mut new),
            [NewAction::Finished {
                acknowledged: false
            }]
        );
        assert!(new.is_accepting());
    }
}

// ---- the model: one old instance, several new ones, lossless ordered channels that close ----

#[derive(Clone, Debug)]
enum ToOld {
    Request,
    Serving,
}

#[derive(Clone, Debug)]
enum ToNew {
    Offer,
    Fds,
    Refuse(String),
    Draining,
}

struct Link {
    new: NewInstance,
    /// The new process is gone (crashed or exited after failing).
    new_gone: bool,
    to_old: VecDeque<ToOld>,
    to_new: VecDeque<ToNew>,
    /// The new side closed its end (the old sees it after the queued messages).
    new_closed: bool,
    /// The old side closed its end.
    old_closed: bool,
    /// The old side has been told about `new_closed`.
    old_saw_close: bool,
    /// The new side has been told about `old_closed`.
    new_saw_close: bool,
}

#[derive(Clone, Debug)]
enum Event {
    StartNew,
    DeliverToOld(usize),
    DeliverToNew(usize),
    Started(usize),
    CrashNew(usize),
    Advance(u64),
    Drained,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        1 => Just(Event::StartNew),
        4 => any::<usize>().prop_map(Event::DeliverToOld),
        4 => any::<usize>().prop_map(Event::DeliverToNew),
        2 => any::<usize>().prop_map(Event::Started),
        1 => any::<usize>().prop_map(Event::CrashNew),
        2 => (0u64..400).prop_map(Event::Advance),
        1 => Just(Event::Drained),
    ]
}

struct Model {
    now: Instant,
    old: OldInstance,
    links: Vec<Link>,
    new_timeout: Duration,
}

impl Model {
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(a) = self.old.poll_action() {
                progressed = true;
                match a {
                    OldAction::SendOffer { conn } => {
                        let l = &mut self.links[conn as usize];
                        l.to_new.push_back(ToNew::Offer);
                        l.to_new.push_back(ToNew::Fds);
                    }
                    OldAction::Refuse { conn, reason } => {
                        let l = &mut self.links[conn as usize];
                        l.to_new.push_back(ToNew::Refuse(reason.to_string()));
                        l.old_closed = true;
                    }
                    OldAction::Rollback { conn, .. } => {
                        self.links[conn as usize].old_closed = true;
                    }
                    OldAction::StopAccepting => {
                        // Invariant 2: the old stops only after the new serves.
                        assert!(
                            self.links
                                .iter()
                                .any(|l| !l.new_gone && l.new.is_accepting()),
                            "the old stopped accepting before any new instance served"
                        );
                    }
                    OldAction::SendDraining { conn } => {
                        self.links[conn as usize].to_new.push_back(ToNew::Draining);
                    }
                    OldAction::Exit => {}
                }
            }
            for l in &mut self.links {
                while let Some(a) = l.new.poll_action() {
                    progressed = true;
                    match a {
                        NewAction::SendRequest => l.to_old.push_back(ToOld::Request),
                        NewAction::SendServing => l.to_old.push_back(ToOld::Serving),
                        NewAction::StartServing | NewAction::Finished { .. } => {}
                        NewAction::Fail(_) => {
                            l.new_gone = true;
                            l.new_closed = true;
                        }
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn step(&mut self, e: Event) {
        let n = self.links.len();
        match e {
            Event::StartNew if n < 4 => {
                self.links.push(Link {
                    new: NewInstance::new(self.now, self.new_timeout),
                    new_gone: false,
                    to_old: VecDeque::new(),
                    to_new: VecDeque::new(),
                    new_closed: false,
                    old_closed: false,
                    old_saw_close: false,
                    new_saw_close: false,
                });
            }
            Event::DeliverToOld(i) if n > 0 => {
                let conn = i % n;
                let l = &mut self.links[conn];
                if l.old_closed {
                    l.to_old.clear();
                } else if let Some(m) = l.to_old.pop_front() {
                    match m {
                        ToOld::Request => self.old.handle_upgrade_request(self.now, conn as u64),
                        ToOld::Serving => self.old.handle_serving(self.now, conn as u64),
                    }
                } else if l.new_closed && !l.old_saw_close {
                    l.old_saw_close = true;
                    self.old.handle_closed(self.now, conn as u64);
                }
            }
            Event::DeliverToNew(i) if n > 0 => {
                let l = &mut self.links[i % n];
                if l.new_gone {
                    l.to_new.clear();
                } else if let Some(m) = l.to_new.pop_front() {
                    match m {
                        ToNew::Offer => l.new.handle_offer(self.now),
                        ToNew::Fds => l.new.handle_fds(self.now),
                        ToNew::Refuse(r) => l.new.handle_refused(self.now, r),
                        ToNew::Draining => l.new.handle_ack(self.now),
                    }
                } else if l.old_closed && !l.new_saw_close {
                    l.new_saw_close = true;
                    l.new.handle_closed(self.now);
                }
            }
            Event::Started(i) if n > 0 => {
                let l = &mut self.links[i % n];
                if !l.new_gone && matches!(l.new.state(), NewState::Starting { .. }) {
                    l.new.handle_started(self.now);
                }
            }
            Event::CrashNew(i) if n > 0 => {
                // A crash of the new instance halfway: before it told the old it serves.
                // (A crash after that is an ordinary crash of the serving process.)
                let l = &mut self.links[i % n];
                if !l.new.is_accepting() {
                    l.new_gone = true;
                    l.new_closed = true;
                }
            }
            Event::Advance(ms) => {
                self.now += Duration::from_millis(ms);
                if self.old.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.old.handle_timeout(self.now);
                }
                for l in &mut self.links {
                    if !l.new_gone && l.new.poll_timeout().is_some_and(|t| t <= self.now) {
                        l.new.handle_timeout(self.now);
                    }
                }
            }
            Event::Drained => self.old.handle_drained(self.now),
            _ => {}
        }
        self.pump();
    }

    fn check(&self) {
        let serving: Vec<&Link> = self
            .links
            .iter()
            .filter(|l| !l.new_gone && l.new.is_accepting())
            .collect();
        // Invariant 1: someone accepts, always.
        assert!(
            self.old.is_accepting() || !serving.is_empty(),
            "nobody accepts: old {:?}",
            self.old.state()
        );
        // An acknowledged new instance means the old one no longer accepts.
        if self
            .links
            .iter()
            .any(|l| l.new.state() == &NewState::Done { acknowledged: true })
        {
            assert!(!self.old.is_accepting());
        }
        // A failed new instance is gone and never accepts.
        for l in &self.links {
            if let NewState::Failed(_) = l.new.state() {
                assert!(!l.new.is_accepting());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn someone_always_accepts(
        old_ms in 50u64..1000,
        new_ms in 50u64..1000,
        events in proptest::collection::vec(event(), 1..120),
    ) {
        let mut m = Model {
            now: epoch(),
            old: OldInstance::new(Duration::from_millis(old_ms)),
            links: Vec::new(),
            new_timeout: Duration::from_millis(new_ms),
        };
        for e in events {
            m.step(e);
            m.check();
        }
        // The old acknowledges one handover at most.
        let acknowledged = m
            .links
            .iter()
            .filter(|l| l.new.state() == &NewState::Done { acknowledged: true })
            .count();
        prop_assert!(acknowledged <= 1);
    }
}

/// The model itself reaches a full handover (so the property test explores real handovers).
#[test]
fn the_model_completes_a_handover() {
    let mut m = Model {
        now: epoch(),
        old: OldInstance::new(T),
        links: Vec::new(),
        new_timeout: T,
    };
    for e in [
        Event::StartNew,
        Event::DeliverToOld(0),
        Event::DeliverToNew(0),
        Event::DeliverToNew(0),
        Event::Started(0),
        Event::DeliverToOld(0),
        Event::DeliverToNew(0),
        Event::Drained,
    ] {
        m.step(e);
        m.check();
    }
    assert_eq!(m.old.state(), OldState::Exited);
    assert_eq!(
        m.links[0].new.state(),
        &NewState::Done { acknowledged: true }
    );
}
