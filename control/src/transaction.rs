//! The transaction layer (RFC 3261 §17, with the RFC 6026 `Accepted`
//! states): client and server transactions for INVITE and non-INVITE
//! requests, every timer from A to M, retransmission and absorption of
//! retransmissions, the ACK for a non-2xx final response, transport errors.
//!
//! # Driving contract
//!
//! One input at a time — [`Transactions::handle_request`] or
//! [`Transactions::handle_response`] for a parsed message,
//! [`Transactions::handle_timeout`] when [`Transactions::poll_timeout`] is
//! reached, a TU call ([`Transactions::send_request`],
//! [`Transactions::respond`], [`Transactions::ack_received`],
//! [`Transactions::transport_error`]) — then drain
//! [`Transactions::poll_transmit`] and [`Transactions::poll_event`]. The
//! layer never reads the clock: every call takes `now`.
//!
//! Messages are kept as the bytes the TU built (retransmissions are copies
//! of them), so the layer needs no message model of its own; it parses the
//! stored request once to build the ACK of a non-2xx final response.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use wire::sip::{Message, Method};

use crate::transport::Peer;

/// Timer base values (RFC 3261 §17.1.1.1, table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate (default 500 ms).
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE
    /// responses (default 4 s).
    pub t2: Duration,
    /// Longest time a message stays in the network (default 5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// A transaction handle: slot and generation, so a stale id never reaches
/// a newer transaction in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxnId {
    slot: u32,
    generation: u32,
}

/// What became of an incoming request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestVerdict {
    /// A new server transaction: the TU must answer it with
    /// [`Transactions::respond`].
    New(TxnId),
    /// A retransmission, absorbed (the last response was sent again).
    Retransmission,
    /// An ACK that matched an INVITE server transaction that sent a
    /// non-2xx final response: absorbed.
    AckAbsorbed,
    /// An ACK for a 2xx (it is its own transaction, RFC 3261 §17.1.1.3):
    /// the TU handles it. Carries the INVITE server transaction it matched
    /// by branch, when the UA reused the INVITE's branch (RFC 2543 style).
    Ack,
    /// A CANCEL: a new non-INVITE server transaction (answer it) and the
    /// INVITE server transaction it cancels, if one matches.
    Cancel {
        /// The CANCEL's own transaction.
        txn: TxnId,
        /// The INVITE it targets (RFC 3261 §9.2), if still known.
        invite: Option<TxnId>,
    },
}

/// What became of an incoming response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseVerdict {
    /// Pass to the TU: the response belongs to this client transaction.
    Deliver(TxnId),
    /// Absorbed (a retransmitted final response; the ACK was resent if
    /// the transaction generates one).
    Absorbed,
    /// No transaction matches (RFC 3261 §17.1.3): a 2xx retransmission
    /// after the transaction ended, or a stray; the TU decides.
    Stray,
}

/// What the transaction layer reports to the TU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnEvent {
    /// Timer B or F fired: the request got no final response (the TU acts
    /// as if a 408 had arrived).
    Timeout(TxnId),
    /// A transport error on a client or server transaction.
    TransportError(TxnId),
    /// Timer H or L fired: the final response to an INVITE was never
    /// acknowledged (for a 2xx, the TU should end the dialog with BYE).
    NoAck(TxnId),
    /// The transaction is gone; its id is no longer valid.
    Terminated(TxnId),
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub peer: Peer,
    /// The whole message.
    pub bytes: Vec<u8>,
}

/// RFC 3261 §17 state names (plus RFC 6026 `Accepted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Client INVITE: request sent, no response yet.
    Calling,
    /// Client non-INVITE: request sent, no response yet.
    Trying,
    /// A provisional response was sent or received.
    Proceeding,
    /// A final response (non-2xx for INVITE) was sent or received; waiting
    /// for retransmissions to end.
    Completed,
    /// Server INVITE: ACK received; absorbing ACK retransmissions (Timer I).
    Confirmed,
    /// RFC 6026: a 2xx to an INVITE was sent or received.
    Accepted,
    /// Finished.
    Terminated,
}

/// Counters of the transaction layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxnCounters {
    /// Client transactions created.
    pub client_created: u64,
    /// Server transactions created.
    pub server_created: u64,
    /// Retransmissions sent (requests and responses).
    pub retransmissions: u64,
    /// Retransmitted requests absorbed by a server transaction.
    pub absorbed_requests: u64,
    /// Retransmitted responses absorbed by a client transaction.
    pub absorbed_responses: u64,
    /// Timer B/F expiries.
    pub timeouts: u64,
    /// Transport errors.
    pub transport_errors: u64,
}

/// All transactions of one SIP element. See the [module docs](self).
#[derive(Debug)]
pub struct Transactions {
    config: TimerConfig,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_key: HashMap<Box<str>, u32, rustc_hash::FxBuildHasher>,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxnEvent>,
    scratch: String,
    counters: TxnCounters,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    txn: Option<Txn>,
}

#[derive(Debug)]
struct Txn {
    key: Box<str>,
    kind: Kind,
    state: State,
    peer: Peer,
    /// Client: the request. Server: the last response.
    message: Vec<u8>,
    /// Client INVITE: the ACK for a non-2xx final response, once built.
    ack: Option<Vec<u8>>,
    /// Next retransmission (A, E, G, or 2xx in server `Accepted`).
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// The timer that ends this state (B, D, F, H, I, J, K, L, M).
    deadline: Option<Instant>,
    /// Whether the last response the server sent is a 2xx/final.
    final_sent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(
    clippy::enum_variant_names,
    reason = "the RFC's four transaction kinds"
)]
enum Kind {
    ClientInvite,
    ClientNonInvite,
    ServerInvite,
    ServerNonInvite,
}

impl Transactions {
    /// An empty layer with these timers.
    pub fn new(config: TimerConfig) -> Self {
        Self {
            config,
            slots: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::default(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            scratch: String::new(),
            counters: TxnCounters::default(),
        }
    }

    /// The timer configuration.
    pub fn config(&self) -> TimerConfig {
        self.config
    }

    /// Counters since start.
    pub fn counters(&self) -> TxnCounters {
        self.counters
    }

    /// Transactions alive now.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when no transaction is alive.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The state of a transaction, `None` once it is gone.
    pub fn state(&self, id: TxnId) -> Option<State> {
        self.get(id).map(|t| t.state)
    }

    /// Matches an incoming request against the server transactions
    /// (RFC 3261 §17.2.3, with the RFC 2543 fallback) and creates one for a
    /// new request. `peer` is where it came from (responses go back there).
    pub fn handle_request(
        &mut self,
        now: Instant,
        peer: Peer,
        msg: &Message<'_>,
    ) -> RequestVerdict {
        let Some(method) = msg.method() else {
            return RequestVerdict::Retransmission;
        };
        let is_ack = method == Method::Ack;
        //= https://www.rfc-editor.org/rfc/rfc3261#section-17.2.3
        //# the request matches a transaction if: 1. the branch parameter in the
        //# request is equal to the one in the top Via header field of the
        //# request that created the transaction, and 2. the sent-by value in
        //# the top Via of the request is equal to the one in the request that
        //# created the transaction, and 3. the method of the request matches
        //# the one that created the transaction, except for ACK, where the
        //# method of the request that created the transaction is INVITE.
        let class = match method {
            Method::Ack | Method::Invite => 'I',
            Method::Cancel => 'C',
            _ => 'N',
        };
        server_key(&mut self.scratch, class, msg);
        if let Some(&slot) = self.by_key.get(self.scratch.as_str()) {
            let generation = self.slots[slot as usize].generation;
            let id = TxnId { slot, generation };
            return self.server_retransmission(now, id, is_ack);
        }
        if is_ack {
            return RequestVerdict::Ack;
        }
        let kind = if method == Method::Invite {
            Kind::ServerInvite
        } else {
            Kind::ServerNonInvite
        };
        let key: Box<str> = self.scratch.as_str().into();
        let state = if kind == Kind::ServerInvite {
            State::Proceeding
        } else {
            State::Trying
        };
        let id = self.insert(Txn {
            key,
            kind,
            state,
            peer,
            message: Vec::new(),
            ack: None,
            retransmit_at: None,
            interval: self.config.t1,
            deadline: None,
            final_sent: false,
        });
        self.counters.server_created += 1;
        if method == Method::Cancel {
            //= https://www.rfc-editor.org/rfc/rfc3261#section-9.2
            //# The CANCEL request matches the transaction if [the INVITE matching
            //# rules apply] except for the method
            server_key(&mut self.scratch, 'I', msg);
            let invite = self.by_key.get(self.scratch.as_str()).map(|&slot| TxnId {
                slot,
                generation: self.slots[slot as usize].generation,
            });
            return RequestVerdict::Cancel { txn: id, invite };
        }
        RequestVerdict::New(id)
    }

    /// Sends a response on a server transaction. `status` is the response's
    /// code; `bytes` the whole message. Responses after a final one are
    /// ignored (returns false).
    pub fn respond(&mut self, now: Instant, id: TxnId, status: u16, bytes: Vec<u8>) -> bool {
        let config = self.config;
        let Some(t) = self.get_mut(id) else {
            return false;
        };
        if t.final_sent || matches!(t.state, State::Terminated) {
            return false;
        }
        let reliable = t.peer.transport.is_reliable();
        let peer = t.peer;
        t.message.clear();
        t.message.extend_from_slice(&bytes);
        let mut timer = None;
        if status >= 200 {
            t.final_sent = true;
            match t.kind {
                Kind::ServerInvite if status < 300 => {
                    //= https://www.rfc-editor.org/rfc/rfc6026#section-7.1
                    //# If, while in the "Proceeding" state, the TU passes a 2xx response
                    //# to the server transaction, the server transaction MUST pass this
                    //# response to the transport layer for transmission. It is not
                    //# retransmitted by the server transaction; retransmissions of 2xx
                    //# responses are handled by the TU. The server transaction MUST then
                    //# transition to the "Accepted" state.
                    // The TU's 2xx retransmission (RFC 3261 §13.3.1.4) is done here
                    // on the TU's behalf, until `ack_received`.
                    t.state = State::Accepted;
                    t.deadline = Some(now + 64 * config.t1); // Timer L
                    if !reliable {
                        t.interval = config.t1;
                        t.retransmit_at = Some(now + config.t1);
                    }
                    timer = Some(());
                }
                Kind::ServerInvite => {
                    //= https://www.rfc-editor.org/rfc/rfc3261#section-17.2.1
                    //# For unreliable transports, timer G is set to fire in T1 seconds,
                    //# and is not set to fire for reliable transports.
                    //# [...] When the "Completed" state is entered, timer H MUST be set to
                    //# fire in 64*T1 seconds for all transports.
                    t.state = State::Completed;
                    if !reliable {
                        t.interval = config.t1;
                        t.retransmit_at = Some(now + config.t1);
                    }
                    t.deadline = Some(now + 64 * config.t1);
                    timer = Some(());
                }
                _ => {
                    //= https://www.rfc-editor.org/rfc/rfc3261#section-17.2.2
                    //# When the server transaction enters the "Completed" state, it MUST
                    //# set Timer J to fire in 64*T1 seconds for unreliable transports,
                    //# and zero seconds for reliable transports.
                    t.state = State::Completed;
                    t.deadline = Some(
                        now + if reliable {
                            Duration::ZERO
                        } else {
                            64 * config.t1
                        },
                    );
                    timer = Some(());
                }
            }
        } else if t.kind == Kind::ServerNonInvite {
            t.state = State::Proceeding;
        }
        if timer.is_some() {
            self.arm(id);
        }
        self.transmits.push_back(Transmit { peer, bytes });
        true
    }

    /// The TU saw the ACK for the 2xx sent on this INVITE server
    /// transaction (matched through the dialog): stop retransmitting it.
    pub fn ack_received(&mut self, now: Instant, id: TxnId) {
        if let Some(t) = self.get_mut(id)
            && t.state == State::Accepted
        {
            t.retransmit_at = None;
            // Keep absorbing INVITE retransmissions until Timer L.
            let _ = now;
        }
    }

    /// Starts a client transaction: sends `bytes` (a request whose top Via
    /// carries `branch`) to `peer`.
    pub fn send_request(
        &mut self,
        now: Instant,
        peer: Peer,
        method: Method<'_>,
        branch: &str,
        bytes: Vec<u8>,
    ) -> TxnId {
        let kind = if method == Method::Invite {
            Kind::ClientInvite
        } else {
            Kind::ClientNonInvite
        };
        client_key(&mut self.scratch, method, branch);
        let key: Box<str> = self.scratch.as_str().into();
        let reliable = peer.transport.is_reliable();
        let t1 = self.config.t1;
        //= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.1.2
        //# If an unreliable transport is being used, the client transaction
        //# MUST start timer A with a value of T1. [...] For any transport, the
        //# client transaction MUST start timer B with a value of 64*T1 seconds
        //= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.2.2
        //# If an unreliable transport is in use, the client transaction MUST
        //# set timer E to fire in T1 seconds. [...] timer F MUST be set to fire
        //# in 64*T1 seconds.
        let txn = Txn {
            key,
            kind,
            state: if kind == Kind::ClientInvite {
                State::Calling
            } else {
                State::Trying
            },
            peer,
            message: bytes.clone(),
            ack: None,
            retransmit_at: (!reliable).then_some(now + t1),
            interval: t1,
            deadline: Some(now + 64 * t1),
            final_sent: false,
        };
        if let Some(old) = self.by_key.get(txn.key.as_ref()).copied() {
            // A TU reusing a live branch: the old transaction is replaced.
            self.remove(old);
        }
        let id = self.insert(txn);
        self.arm(id);
        self.counters.client_created += 1;
        self.transmits.push_back(Transmit { peer, bytes });
        id
    }

    /// Matches a response to a client transaction (RFC 3261 §17.1.3) and
    /// advances it.
    pub fn handle_response(&mut self, now: Instant, msg: &Message<'_>) -> ResponseVerdict {
        let (Some(status), Some(via), Some(cseq)) = (msg.status(), msg.via().next(), msg.cseq())
        else {
            return ResponseVerdict::Stray;
        };
        //= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.3
        //# 1.  If the response has the same value of the branch parameter in
        //# the top Via header field as the branch parameter in the top
        //# Via header field of the request that created the transaction.
        //# 2.  If the method parameter in the CSeq header field matches the
        //# method of the request that created the transaction.
        let Some(branch) = via.branch() else {
            return ResponseVerdict::Stray;
        };
        client_key(&mut self.scratch, cseq.method, branch);
        let Some(&slot) = self.by_key.get(self.scratch.as_str()) else {
            return ResponseVerdict::Stray;
        };
        let id = TxnId {
            slot,
            generation: self.slots[slot as usize].generation,
        };
        let config = self.config;
        let Some(t) = self.get_mut(id) else {
            return ResponseVerdict::Stray;
        };
        let reliable = t.peer.transport.is_reliable();
        match (t.kind, t.state) {
            (Kind::ClientInvite, State::Calling | State::Proceeding) => {
                if status < 200 {
                    //= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.1.2
                    //# If the client transaction receives a provisional response while in
                    //# the "Calling" state, it transitions to the "Proceeding" state. In the
                    //# "Proceeding" state, the client transaction SHOULD NOT retransmit the
                    //# request any longer.
                    t.state = State::Proceeding;
                    t.retransmit_at = None;
                } else if status < 300 {
                    //= https://www.rfc-editor.org/rfc/rfc6026#section-8.4
                    //# the client transaction MUST transition to the "Accepted" state, and
                    //# Timer M MUST be started with a value of 64*T1.
                    t.state = State::Accepted;
                    t.retransmit_at = None;
                    t.deadline = Some(now + 64 * config.t1);
                    self.arm(id);
                } else {
                    //= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.1.2
                    //# When in either the "Calling" or "Proceeding" states, reception of a
                    //# response with status code from 300-699 MUST cause the client
                    //# transaction to transition to "Completed". The client transaction
                    //# MUST pass the received response up to the TU, and the client
                    //# transaction MUST generate an ACK request, even if the transport is
                    //# reliable [...] The client transaction SHOULD start timer D when it
                    //# enters the "Completed" state, with a value of at least 32 seconds
                    //# for unreliable transports, and a value of zero seconds for reliable
                    //# transports.
                    let ack = build_ack(&t.message, msg);
                    t.state = State::Completed;
                    t.retransmit_at = None;
                    t.deadline = Some(
                        now + if reliable {
                            Duration::ZERO
                        } else {
                            Duration::from_secs(32)
                        },
                    );
                    let peer = t.peer;
                    if let Some(ack) = ack {
                        t.ack = Some(ack.clone());
                        self.transmits.push_back(Transmit { peer, bytes: ack });
                    }
                    self.arm(id);
                }
                ResponseVerdict::Deliver(id)
            }
            (Kind::ClientInvite, State::Accepted) if (200..300).contains(&status) => {
                // RFC 6026 §8.4: 2xx retransmissions go to the TU (it re-sends its ACK).
                ResponseVerdict::Deliver(id)
            }
            (Kind::ClientInvite, State::Completed) if status >= 300 => {
                //= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.1.2
                //# Any retransmissions of the final response that are received while in
                //# the "Completed" state MUST cause the ACK to be re-passed to the
                //# transport layer for retransmission
                let peer = t.peer;
                if let Some(ack) = t.ack.clone() {
                    self.transmits.push_back(Transmit { peer, bytes: ack });
                }
                self.counters.absorbed_responses += 1;
                ResponseVerdict::Absorbed
            }
            (Kind::ClientNonInvite, State::Trying | State::Proceeding) => {
                if status < 200 {
                    t.state = State::Proceeding;
                } else {
                    //= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.2.2
                    //# Once the client transaction enters the "Completed" state, it MUST set
                    //# Timer K to fire in T4 seconds for unreliable transports, and zero
                    //# seconds for reliable transports.
                    t.state = State::Completed;
                    t.retransmit_at = None;
                    t.deadline = Some(now + if reliable { Duration::ZERO } else { config.t4 });
                    self.arm(id);
                }
                ResponseVerdict::Deliver(id)
            }
            _ => {
                self.counters.absorbed_responses += 1;
                ResponseVerdict::Absorbed
            }
        }
    }

    /// The transport failed to send for this transaction (ICMP error,
    /// connection refused or reset): it ends and the TU is told
    /// (RFC 3261 §17.1.4, §17.2.4).
    pub fn transport_error(&mut self, id: TxnId) {
        if self.get(id).is_some() {
            self.counters.transport_errors += 1;
            self.events.push_back(TxnEvent::TransportError(id));
            self.remove(id.slot);
        }
    }

    /// Ends a transaction now (the TU abandons it).
    pub fn terminate(&mut self, id: TxnId) {
        if self.get(id).is_some() {
            self.remove(id.slot);
        }
    }

    /// The earliest timer.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            let live = self
                .get(TxnId { slot, generation })
                .is_some_and(|t| t.retransmit_at == Some(at) || t.deadline == Some(at));
            if live {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let id = TxnId { slot, generation };
            self.fire(now, id, at);
        }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<TxnEvent> {
        self.events.pop_front()
    }

    fn fire(&mut self, now: Instant, id: TxnId, at: Instant) {
        let config = self.config;
        let Some(t) = self.get_mut(id) else {
            return;
        };
        if t.retransmit_at == Some(at) {
            //= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.1.2
            //# When timer A fires, the client transaction MUST retransmit the
            //# request by passing it to the transport layer, and MUST reset the
            //# timer with a value of 2*T1.
            //= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.2.2
            //# If timer E fires while still in this state, the timer is reset, but
            //# this time with a value of MIN(2*T1, T2). [...] If Timer E fires while
            //# in the "Proceeding" state, the request MUST be passed to the
            //# transport layer for retransmission, and Timer E MUST be reset with a
            //# value of T2 seconds.
            //= https://www.rfc-editor.org/rfc/rfc3261#section-17.2.1
            //# If timer G fires, the response is passed to the transport layer once
            //# more for retransmission, and timer G is set to fire in MIN(2*T1, T2)
            //# seconds.
            let next = match (t.kind, t.state) {
                (Kind::ClientInvite, _) => t.interval * 2,
                (Kind::ClientNonInvite, State::Proceeding) => config.t2,
                _ => (t.interval * 2).min(config.t2),
            };
            t.interval = next;
            t.retransmit_at = Some(now + next);
            let transmit = Transmit {
                peer: t.peer,
                bytes: t.message.clone(),
            };
            self.transmits.push_back(transmit);
            self.counters.retransmissions += 1;
            self.arm(id);
            return;
        }
        if t.deadline != Some(at) {
            return;
        }
        let event = match (t.kind, t.state) {
            // Timer B, Timer F.
            (Kind::ClientInvite, State::Calling | State::Proceeding)
            | (Kind::ClientNonInvite, State::Trying | State::Proceeding) => {
                self.counters.timeouts += 1;
                Some(TxnEvent::Timeout(id))
            }
            //= https://www.rfc-editor.org/rfc/rfc3261#section-17.2.1
            //# If timer H fires while in the "Completed" state, it implies that the
            //# ACK was never received. In this case, the server transaction MUST
            //# transition to the "Terminated" state, and MUST indicate to the TU
            //# that a transaction failure has occurred.
            (Kind::ServerInvite, State::Completed) => Some(TxnEvent::NoAck(id)),
            // Timer L: NoAck only if the TU was still retransmitting the 2xx.
            (Kind::ServerInvite, State::Accepted) if t.retransmit_at.is_some() => {
                Some(TxnEvent::NoAck(id))
            }
            // Timers D, I, J, K, L, M: plain ends.
            _ => None,
        };
        if let Some(e) = event {
            self.events.push_back(e);
        }
        self.remove(id.slot);
    }

    fn server_retransmission(&mut self, now: Instant, id: TxnId, is_ack: bool) -> RequestVerdict {
        let config = self.config;
        let Some(t) = self.get_mut(id) else {
            return RequestVerdict::Retransmission;
        };
        if is_ack {
            return match (t.kind, t.state) {
                (Kind::ServerInvite, State::Completed) => {
                    //= https://www.rfc-editor.org/rfc/rfc3261#section-17.2.1
                    //# If an ACK is received while the server transaction is in the
                    //# "Completed" state, the server transaction MUST transition to the
                    //# "Confirmed" state. As Timer G is ignored in this state, any
                    //# retransmissions of the response will cease. [...] timer I is set
                    //# to fire in T4 seconds for unreliable transports, and zero seconds
                    //# for reliable transports.
                    let reliable = t.peer.transport.is_reliable();
                    t.state = State::Confirmed;
                    t.retransmit_at = None;
                    t.deadline = Some(now + if reliable { Duration::ZERO } else { config.t4 });
                    self.arm(id);
                    RequestVerdict::AckAbsorbed
                }
                (Kind::ServerInvite, State::Confirmed) => RequestVerdict::AckAbsorbed,
                // An ACK for a 2xx that reuses the INVITE's branch.
                _ => RequestVerdict::Ack,
            };
        }
        //= https://www.rfc-editor.org/rfc/rfc3261#section-17.2.1
        //# If a request retransmission is received while in the "Proceeding"
        //# state, the most recent provisional response that was received from
        //# the TU MUST be passed to the transport layer for retransmission.
        //= https://www.rfc-editor.org/rfc/rfc6026#section-7.1
        //# The server transaction MUST NOT generate 2xx retransmissions on its
        //# own. Any retransmission of the 2xx response passed from the TU to the
        //# transaction while in the "Accepted" state MUST be passed to the
        //# transport layer for transmission.
        let resend = match t.state {
            State::Proceeding | State::Completed => !t.message.is_empty(),
            State::Accepted => t.retransmit_at.is_some(),
            _ => false,
        };
        if resend {
            let transmit = Transmit {
                peer: t.peer,
                bytes: t.message.clone(),
            };
            self.transmits.push_back(transmit);
            self.counters.retransmissions += 1;
        }
        self.counters.absorbed_requests += 1;
        RequestVerdict::Retransmission
    }

    fn insert(&mut self, txn: Txn) -> TxnId {
        let key = txn.key.clone();
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    txn: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        s.txn = Some(txn);
        self.by_key.insert(key, slot);
        TxnId {
            slot,
            generation: s.generation,
        }
    }

    fn remove(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if let Some(t) = s.txn.take() {
            self.by_key.remove(&t.key);
            let id = TxnId {
                slot,
                generation: s.generation,
            };
            s.generation = s.generation.wrapping_add(1);
            self.free.push(slot);
            self.events.push_back(TxnEvent::Terminated(id));
        }
    }

    fn arm(&mut self, id: TxnId) {
        if let Some(t) = self.get(id) {
            for at in [t.retransmit_at, t.deadline].into_iter().flatten() {
                self.timers.push(Reverse((at, id.slot, id.generation)));
            }
        }
    }

    fn get(&self, id: TxnId) -> Option<&Txn> {
        let s = self.slots.get(id.slot as usize)?;
        if s.generation != id.generation {
            return None;
        }
        s.txn.as_ref()
    }

    fn get_mut(&mut self, id: TxnId) -> Option<&mut Txn> {
        let s = self.slots.get_mut(id.slot as usize)?;
        if s.generation != id.generation {
            return None;
        }
        s.txn.as_mut()
    }
}

/// The server matching key of a request: `class` (I for INVITE and ACK, C
/// for CANCEL, N for the rest) + branch + sent-by, or for an RFC 2543
/// branch the tuple of §17.2.3 (Request-URI, To tag, From tag, Call-ID,
/// CSeq number, top Via).
fn server_key(out: &mut String, class: char, msg: &Message<'_>) {
    out.clear();
    out.push(class);
    out.push('s');
    let via = msg.via().next();
    match via {
        Some(v) if v.is_rfc3261_branch() => {
            let _ = write!(
                out,
                "{}|{}:{}",
                v.branch().unwrap_or(""),
                v.host,
                v.port.unwrap_or(0)
            );
        }
        _ => {
            //= https://www.rfc-editor.org/rfc/rfc3261#section-17.2.3
            //# The INVITE request matches a transaction if the Request-URI, To tag,
            //# From tag, Call-ID, CSeq, and top Via header field match those of the
            //# INVITE request which created the transaction.
            // For ACK the To tag is the one the server added, so it is left out
            // of the key (an ACK would otherwise never match); CSeq's number
            // alone (ACK carries the INVITE's number).
            let _ = write!(
                out,
                "2543|{}|{}|{}|{}",
                msg.request_uri().map_or("", |u| u.as_str()),
                msg.from().and_then(|f| f.tag()).unwrap_or(""),
                msg.call_id().unwrap_or(""),
                msg.cseq().map_or(0, |c| c.seq),
            );
            if let Some(v) = via {
                let _ = write!(
                    out,
                    "|{}:{}|{}",
                    v.host,
                    v.port.unwrap_or(0),
                    v.branch().unwrap_or("")
                );
            }
        }
    }
}

fn client_key(out: &mut String, method: Method<'_>, branch: &str) {
    out.clear();
    out.push('c');
    out.push_str(method.as_str());
    out.push('|');
    out.push_str(branch);
}

//= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.1.3
//# The ACK request constructed by the client transaction MUST contain
//# values for the Call-ID, From, and Request-URI that are equal to the
//# values of those header fields in the request passed to the transport
//# by the client transaction (call this the "original request"). The To
//# header field in the ACK MUST equal the To header field in the
//# response being acknowledged [...] the ACK MUST contain a single Via
//# header field, and this MUST be equal to the top Via header field of the
//# original request. The CSeq header field in the ACK MUST contain the same
//# value for the sequence number as was present in the original request,
//# but the method parameter MUST be equal to "ACK". If the INVITE request
//# whose response is being acknowledged had Route header fields, those
//# header fields MUST appear in the ACK.
fn build_ack(original: &[u8], response: &Message<'_>) -> Option<Vec<u8>> {
    let req = Message::parse(original).ok()?;
    let uri = req.request_uri()?;
    let top_via = first_element(req.header("Via")?);
    let mut out = String::with_capacity(400);
    let _ = write!(
        out,
        "ACK {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} ACK\r\n",
        uri.as_str(),
        top_via,
        req.header("From")?,
        response.header("To")?,
        req.call_id()?,
        req.cseq()?.seq,
    );
    for r in req.find("Route") {
        let _ = write!(out, "Route: {}\r\n", r.value);
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

/// The first element of a comma-separated header value (outside quotes).
pub(crate) fn first_element(value: &str) -> &str {
    let mut quoted = false;
    let mut angle = false;
    for (i, b) in value.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => return value[..i].trim(),
            _ => {}
        }
    }
    value.trim()
}

#[cfg(test)]
mod tests {
    //! Every state and timer on virtual time: `now` only moves when a test
    //! says so.

    use super::*;

    const T1: Duration = Duration::from_millis(500);

    fn udp() -> Peer {
        Peer::udp("192.0.2.2:5060".parse().unwrap())
    }

    fn tcp() -> Peer {
        Peer {
            transport: crate::transport::Transport::Tcp,
            addr: "192.0.2.2:5060".parse().unwrap(),
            conn: Some(crate::transport::ConnId(1)),
        }
    }

    fn request(method: &str, branch: &str) -> Vec<u8> {
        format!(
            "{method} sip:bob@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n\
             Call-ID: call-1\r\nCSeq: 1 {method}\r\nRoute: <sip:192.0.2.7;lr>\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn response(code: u16, method: &str, branch: &str) -> Vec<u8> {
        format!(
            "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
             From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=b1\r\n\
             Call-ID: call-1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "the one real instant virtual time starts from"
    )]
    fn epoch() -> Instant {
        Instant::now()
    }

    /// A layer with one new server transaction for `method`.
    fn server(method: &str, branch: &str, peer: Peer) -> (Transactions, Instant, TxnId, Vec<u8>) {
        let mut t = Transactions::new(TimerConfig::default());
        let now = epoch();
        let req = request(method, branch);
        let RequestVerdict::New(id) = t.handle_request(now, peer, &parse(&req)) else {
            panic!("a new server transaction")
        };
        (t, now, id, req)
    }

    /// A layer with one client transaction for `method`, its request sent.
    fn client(method: Method<'_>, branch: &str, peer: Peer) -> (Transactions, Instant, TxnId) {
        let mut t = Transactions::new(TimerConfig::default());
        let now = epoch();
        let id = t.send_request(now, peer, method, branch, request(method.as_str(), branch));
        (t, now, id)
    }

    fn no_ack_event(t: &mut Transactions) -> bool {
        events(t).iter().any(|e| matches!(e, TxnEvent::NoAck(_)))
    }

    fn parse(b: &[u8]) -> Message<'_> {
        Message::parse(b).unwrap()
    }

    fn drain(t: &mut Transactions) -> Vec<Transmit> {
        std::iter::from_fn(|| t.poll_transmit()).collect()
    }

    fn events(t: &mut Transactions) -> Vec<TxnEvent> {
        std::iter::from_fn(|| t.poll_event()).collect()
    }

    /// Advances to each timer in turn until `until`, returning how many
    /// messages were retransmitted at which offsets from `start`.
    fn run_until(t: &mut Transactions, start: Instant, until: Instant) -> Vec<Duration> {
        let mut sent = Vec::new();
        while let Some(at) = t.poll_timeout() {
            if at > until {
                break;
            }
            t.handle_timeout(at);
            for _ in drain(t) {
                sent.push(at - start);
            }
        }
        sent
    }

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn client_invite_timer_a_doubles_and_timer_b_times_out() {
        let (mut t, now, id) = client(Method::Invite, "z9hG4bK1", udp());
        assert_eq!(drain(&mut t).len(), 1);
        assert_eq!(t.state(id), Some(State::Calling));
        let sent = run_until(&mut t, now, now + 64 * T1);
        // Timer A: T1, 2T1, 4T1, ... (no cap for INVITE) until Timer B at 64*T1.
        assert_eq!(sent, ms(&[500, 1500, 3500, 7500, 15500, 31500]));
        assert!(events(&mut t).contains(&TxnEvent::Timeout(id)));
        assert_eq!(t.state(id), None);
        assert_eq!(t.counters().timeouts, 1);
    }

    #[test]
    fn client_invite_provisional_stops_timer_a_and_non_2xx_generates_ack() {
        let (mut t, now, id) = client(Method::Invite, "z9hG4bK1", udp());
        drain(&mut t);
        let r180 = response(180, "INVITE", "z9hG4bK1");
        assert_eq!(
            t.handle_response(now, &parse(&r180)),
            ResponseVerdict::Deliver(id)
        );
        assert_eq!(t.state(id), Some(State::Proceeding));
        assert!(
            run_until(&mut t, now, now + 10 * T1).is_empty(),
            "no retransmission in Proceeding"
        );
        let r486 = response(486, "INVITE", "z9hG4bK1");
        let later = now + 10 * T1;
        assert_eq!(
            t.handle_response(later, &parse(&r486)),
            ResponseVerdict::Deliver(id)
        );
        assert_eq!(t.state(id), Some(State::Completed));
        let ack = drain(&mut t);
        assert_eq!(ack.len(), 1);
        let ack = parse(&ack[0].bytes);
        assert_eq!(ack.method(), Some(Method::Ack));
        assert_eq!(ack.cseq().unwrap().seq, 1);
        assert_eq!(ack.to().unwrap().tag(), Some("b1"), "To of the response");
        assert_eq!(ack.via().next().unwrap().branch(), Some("z9hG4bK1"));
        assert_eq!(ack.route().count(), 1, "Route of the INVITE");
        // A retransmitted 486 is absorbed and the ACK re-sent.
        assert_eq!(
            t.handle_response(later, &parse(&r486)),
            ResponseVerdict::Absorbed
        );
        assert_eq!(drain(&mut t).len(), 1);
        // Timer D (32 s on UDP).
        t.handle_timeout(later + Duration::from_secs(32) - Duration::from_millis(1));
        assert_eq!(t.state(id), Some(State::Completed));
        t.handle_timeout(later + Duration::from_secs(32));
        assert_eq!(t.state(id), None);
        assert!(
            !events(&mut t)
                .iter()
                .any(|e| matches!(e, TxnEvent::Timeout(_)))
        );
    }

    #[test]
    fn client_invite_2xx_enters_accepted_and_timer_m_ends_it() {
        let (mut t, now, id) = client(Method::Invite, "z9hG4bK1", udp());
        drain(&mut t);
        let ok = response(200, "INVITE", "z9hG4bK1");
        assert_eq!(
            t.handle_response(now, &parse(&ok)),
            ResponseVerdict::Deliver(id)
        );
        assert_eq!(t.state(id), Some(State::Accepted));
        assert!(drain(&mut t).is_empty(), "the TU sends the ACK for a 2xx");
        // 2xx retransmissions reach the TU.
        assert_eq!(
            t.handle_response(now, &parse(&ok)),
            ResponseVerdict::Deliver(id)
        );
        t.handle_timeout(now + 64 * T1);
        assert_eq!(t.state(id), None);
        assert_eq!(
            t.handle_response(now + 64 * T1, &parse(&ok)),
            ResponseVerdict::Stray
        );
    }

    #[test]
    fn client_invite_on_tcp_has_no_timer_a_and_zero_timer_d() {
        let (mut t, now, id) = client(Method::Invite, "z9hG4bK1", tcp());
        drain(&mut t);
        assert!(run_until(&mut t, now, now + 63 * T1).is_empty());
        let r = response(503, "INVITE", "z9hG4bK1");
        t.handle_response(now, &parse(&r));
        assert_eq!(drain(&mut t).len(), 1, "ACK even on a reliable transport");
        t.handle_timeout(now);
        assert_eq!(t.state(id), None, "Timer D is zero on TCP");
    }

    #[test]
    fn client_non_invite_timer_e_caps_at_t2_and_timer_f_times_out() {
        let (mut t, now, id) = client(Method::Bye, "z9hG4bK2", udp());
        drain(&mut t);
        assert_eq!(t.state(id), Some(State::Trying));
        let sent = run_until(&mut t, now, now + 64 * T1);
        // 0.5, 1.5, 3.5, 7.5 then every T2 = 4 s until 32 s.
        assert_eq!(
            sent,
            ms(&[
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ])
        );
        assert!(events(&mut t).contains(&TxnEvent::Timeout(id)));
    }

    #[test]
    fn client_non_invite_proceeding_retransmits_every_t2_then_timer_k() {
        let (mut t, now, id) = client(Method::Options, "z9hG4bK3", udp());
        drain(&mut t);
        t.handle_response(now, &parse(&response(100, "OPTIONS", "z9hG4bK3")));
        assert_eq!(t.state(id), Some(State::Proceeding));
        let sent = run_until(&mut t, now, now + Duration::from_millis(8600));
        // Timer E was armed at T1; in Proceeding each firing re-arms with T2.
        assert_eq!(sent, ms(&[500, 4500, 8500]));
        let at = now + Duration::from_secs(9);
        assert_eq!(
            t.handle_response(at, &parse(&response(200, "OPTIONS", "z9hG4bK3"))),
            ResponseVerdict::Deliver(id)
        );
        assert_eq!(t.state(id), Some(State::Completed));
        assert_eq!(
            t.handle_response(at, &parse(&response(200, "OPTIONS", "z9hG4bK3"))),
            ResponseVerdict::Absorbed
        );
        t.handle_timeout(at + Duration::from_secs(5)); // Timer K = T4
        assert_eq!(t.state(id), None);
    }

    #[test]
    fn responses_match_by_branch_and_cseq_method() {
        let mut t = Transactions::new(TimerConfig::default());
        let now = epoch();
        let inv = t.send_request(
            now,
            udp(),
            Method::Invite,
            "z9hG4bK9",
            request("INVITE", "z9hG4bK9"),
        );
        let cancel = t.send_request(
            now,
            udp(),
            Method::Cancel,
            "z9hG4bK9",
            request("CANCEL", "z9hG4bK9"),
        );
        assert_ne!(inv, cancel);
        assert_eq!(
            t.handle_response(now, &parse(&response(200, "CANCEL", "z9hG4bK9"))),
            ResponseVerdict::Deliver(cancel)
        );
        assert_eq!(
            t.handle_response(now, &parse(&response(487, "INVITE", "z9hG4bK9"))),
            ResponseVerdict::Deliver(inv)
        );
        assert_eq!(
            t.handle_response(now, &parse(&response(200, "INVITE", "z9hG4bKother"))),
            ResponseVerdict::Stray
        );
    }

    #[test]
    fn server_invite_absorbs_retransmissions_and_timer_g_h() {
        let (mut t, now, id, inv) = server("INVITE", "z9hG4bKs1", udp());
        assert_eq!(t.state(id), Some(State::Proceeding));
        // Retransmitted INVITE before any response: absorbed, nothing to resend.
        assert_eq!(
            t.handle_request(now, udp(), &parse(&inv)),
            RequestVerdict::Retransmission
        );
        assert!(drain(&mut t).is_empty());
        t.respond(now, id, 180, response(180, "INVITE", "z9hG4bKs1"));
        drain(&mut t);
        assert_eq!(
            t.handle_request(now, udp(), &parse(&inv)),
            RequestVerdict::Retransmission
        );
        assert_eq!(drain(&mut t).len(), 1, "the last provisional is resent");
        t.respond(now, id, 486, response(486, "INVITE", "z9hG4bKs1"));
        drain(&mut t);
        assert_eq!(t.state(id), Some(State::Completed));
        assert!(
            !t.respond(now, id, 500, response(500, "INVITE", "z9hG4bKs1")),
            "one final"
        );
        let sent = run_until(&mut t, now, now + 64 * T1);
        // Timer G: T1, 2T1, 4T1, then T2, until Timer H at 64*T1.
        assert_eq!(
            sent,
            ms(&[
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ])
        );
        assert!(events(&mut t).contains(&TxnEvent::NoAck(id)));
        assert_eq!(t.state(id), None);
    }

    #[test]
    fn server_invite_ack_confirms_and_timer_i_ends() {
        let (mut t, now, id, _) = server("INVITE", "z9hG4bKs2", udp());
        t.respond(now, id, 404, response(404, "INVITE", "z9hG4bKs2"));
        drain(&mut t);
        let ack = request("ACK", "z9hG4bKs2");
        assert_eq!(
            t.handle_request(now, udp(), &parse(&ack)),
            RequestVerdict::AckAbsorbed
        );
        assert_eq!(t.state(id), Some(State::Confirmed));
        assert!(run_until(&mut t, now, now + Duration::from_millis(4999)).is_empty());
        assert_eq!(
            t.handle_request(now, udp(), &parse(&ack)),
            RequestVerdict::AckAbsorbed
        );
        t.handle_timeout(now + Duration::from_secs(5)); // Timer I = T4
        assert_eq!(t.state(id), None);
        assert!(!no_ack_event(&mut t));
    }

    #[test]
    fn server_invite_2xx_is_retransmitted_until_ack_then_timer_l() {
        let (mut t, now, id, inv) = server("INVITE", "z9hG4bKs3", udp());
        t.respond(now, id, 200, response(200, "INVITE", "z9hG4bKs3"));
        drain(&mut t);
        assert_eq!(t.state(id), Some(State::Accepted));
        let sent = run_until(&mut t, now, now + Duration::from_secs(4));
        assert_eq!(sent, ms(&[500, 1500, 3500]));
        t.ack_received(now + Duration::from_secs(4), id);
        assert!(run_until(&mut t, now, now + Duration::from_secs(31)).is_empty());
        // INVITE retransmissions are absorbed in Accepted without a resend.
        assert_eq!(
            t.handle_request(now, udp(), &parse(&inv)),
            RequestVerdict::Retransmission
        );
        assert!(drain(&mut t).is_empty());
        t.handle_timeout(now + 64 * T1); // Timer L
        assert_eq!(t.state(id), None);
        assert!(!no_ack_event(&mut t));
    }

    #[test]
    fn server_invite_2xx_never_acked_reports_no_ack() {
        let (mut t, now, id, _) = server("INVITE", "z9hG4bKs4", udp());
        t.respond(now, id, 200, response(200, "INVITE", "z9hG4bKs4"));
        run_until(&mut t, now, now + 64 * T1);
        assert!(events(&mut t).contains(&TxnEvent::NoAck(id)));
    }

    #[test]
    fn server_non_invite_timer_j_and_retransmission() {
        let (mut t, now, id, bye) = server("BYE", "z9hG4bKs5", udp());
        assert_eq!(t.state(id), Some(State::Trying));
        assert_eq!(
            t.handle_request(now, udp(), &parse(&bye)),
            RequestVerdict::Retransmission
        );
        assert!(drain(&mut t).is_empty(), "nothing to resend in Trying");
        t.respond(now, id, 100, response(100, "BYE", "z9hG4bKs5"));
        assert_eq!(t.state(id), Some(State::Proceeding));
        t.respond(now, id, 200, response(200, "BYE", "z9hG4bKs5"));
        drain(&mut t);
        assert_eq!(t.state(id), Some(State::Completed));
        assert_eq!(
            t.handle_request(now, udp(), &parse(&bye)),
            RequestVerdict::Retransmission
        );
        let resent = drain(&mut t);
        assert_eq!(
            Message::parse(&resent[0].bytes).unwrap().status(),
            Some(200)
        );
        t.handle_timeout(now + 64 * T1 - Duration::from_millis(1));
        assert_eq!(t.state(id), Some(State::Completed));
        t.handle_timeout(now + 64 * T1); // Timer J
        assert_eq!(t.state(id), None);
    }

    #[test]
    fn server_non_invite_on_tcp_ends_at_once() {
        let mut t = Transactions::new(TimerConfig::default());
        let now = epoch();
        let RequestVerdict::New(id) =
            t.handle_request(now, tcp(), &parse(&request("OPTIONS", "z9hG4bKs6")))
        else {
            panic!()
        };
        t.respond(now, id, 200, response(200, "OPTIONS", "z9hG4bKs6"));
        t.handle_timeout(now);
        assert_eq!(t.state(id), None);
    }

    #[test]
    fn cancel_finds_its_invite_and_ack_for_2xx_goes_to_the_tu() {
        let mut t = Transactions::new(TimerConfig::default());
        let now = epoch();
        let RequestVerdict::New(inv) =
            t.handle_request(now, udp(), &parse(&request("INVITE", "z9hG4bKc")))
        else {
            panic!()
        };
        let v = t.handle_request(now, udp(), &parse(&request("CANCEL", "z9hG4bKc")));
        let RequestVerdict::Cancel { txn, invite } = v else {
            panic!("{v:?}")
        };
        assert_ne!(txn, inv);
        assert_eq!(invite, Some(inv));
        let v = t.handle_request(now, udp(), &parse(&request("CANCEL", "z9hG4bKnone")));
        assert!(matches!(v, RequestVerdict::Cancel { invite: None, .. }));
        // An ACK with its own branch (for a 2xx) is not a transaction.
        assert_eq!(
            t.handle_request(now, udp(), &parse(&request("ACK", "z9hG4bKack"))),
            RequestVerdict::Ack
        );
    }

    #[test]
    fn rfc2543_requests_match_without_a_magic_cookie() {
        let (mut t, now, id, inv) = server("INVITE", "old1", udp());
        assert_eq!(
            t.handle_request(now, udp(), &parse(&inv)),
            RequestVerdict::Retransmission
        );
        t.respond(now, id, 486, response(486, "INVITE", "old1"));
        // The ACK of an RFC 2543 client carries the To tag we added.
        let ack = String::from_utf8(request("ACK", "old1")).unwrap().replace(
            "To: <sip:bob@example.com>",
            "To: <sip:bob@example.com>;tag=b1",
        );
        assert_eq!(
            t.handle_request(now, udp(), &parse(ack.as_bytes())),
            RequestVerdict::AckAbsorbed
        );
        let other = String::from_utf8(inv)
            .unwrap()
            .replace("Call-ID: call-1", "Call-ID: call-2");
        assert!(matches!(
            t.handle_request(now, udp(), &parse(other.as_bytes())),
            RequestVerdict::New(_)
        ));
    }

    #[test]
    fn transport_error_ends_the_transaction_and_tells_the_tu() {
        let (mut t, _, id) = client(Method::Invite, "z9hG4bKe", udp());
        t.transport_error(id);
        assert_eq!(t.state(id), None);
        assert_eq!(events(&mut t)[0], TxnEvent::TransportError(id));
        assert!(t.is_empty());
    }

    #[test]
    fn configured_t1_scales_every_timer() {
        let cfg = TimerConfig {
            t1: Duration::from_millis(100),
            t2: Duration::from_millis(400),
            t4: Duration::from_millis(1000),
        };
        let mut t = Transactions::new(cfg);
        let now = epoch();
        t.send_request(
            now,
            udp(),
            Method::Bye,
            "z9hG4bKt",
            request("BYE", "z9hG4bKt"),
        );
        drain(&mut t);
        let sent = run_until(&mut t, now, now + 64 * cfg.t1);
        assert_eq!(
            sent,
            ms(&[
                100, 300, 700, 1100, 1500, 1900, 2300, 2700, 3100, 3500, 3900, 4300, 4700, 5100,
                5500, 5900, 6300
            ])
        );
    }
}
