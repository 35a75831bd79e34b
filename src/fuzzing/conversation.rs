//! One connection, its peer and the loop's part, simulated without sockets: what the stream
//! targets drive.
//!
//! The socket is a [`Wire`]: the bytes the peer has sent and the server not yet read, the
//! room in the server's send buffer, and everything the server wrote. The loop's part is
//! played as epoll plays it for an edge-triggered registration, and no more generously:
//!
//! * an event is delivered only for an interest that is registered: READABLE when bytes or
//!   the FIN arrive, WRITABLE when the send buffer had no room and the peer read some;
//! * registering (`EPOLL_CTL_ADD`) and changing the interest (`EPOLL_CTL_MOD`) report what is
//!   ready at that moment, as the kernel does;
//! * a turn that ends in [`Turn::Again`] is run again with no readiness (the run queue).
//!
//! So a connection that forgets something it was told (a lost wakeup) stops, and the
//! conversation reports it as stuck instead of a real loop's silent hang. After every turn
//! the bounds of the output contract are checked.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};

use crate::buffer::Buffer;
use crate::config::Limits;
use crate::connection::{Connection, Context, Ready, State, Turn};
use crate::socket::{Socket, Want};
use crate::stats::{CloseReason, Stats};
use crate::timer::Time;

use super::input::Rng;

/// Room in the send buffer of a peer that reads everything at once.
const UNLIMITED: usize = usize::MAX / 4;

/// Turns one conversation may take before it is declared a hang. Far above what any case
/// needs (a turn moves at least one byte, or changes a state, or it counts as a spin).
const MAX_TURNS: usize = 1_000_000;

/// Turns in a row that may end in [`Turn::Again`] without moving a byte or changing
/// anything the connection holds, before it is declared spinning.
const MAX_IDLE_AGAINS: usize = 16;

/// The socket under the connection: the peer's side of the wire.
#[derive(Debug, Default)]
pub(crate) struct Wire {
    /// Bytes the peer sent that the server has not read.
    inbound: VecDeque<u8>,
    /// The peer sent its FIN after them.
    fin: bool,
    /// Room in the server's send buffer.
    window: usize,
    /// Everything the server wrote.
    written: Vec<u8>,
    /// Bytes the server read.
    read: usize,
    /// The server sent its FIN.
    fin_sent: bool,
    /// The server asked for an abortive close.
    abortive: bool,
}

impl Wire {
    /// Whether a read would return something now: bytes, or the FIN.
    fn readable(&self) -> bool {
        !self.inbound.is_empty() || self.fin
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inbound.is_empty() {
            return if self.fin {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(self.inbound.len());
        for (slot, b) in buf.iter_mut().zip(self.inbound.drain(..n)) {
            *slot = b;
        }
        self.read += n;
        Ok(n)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        assert!(!self.fin_sent, "the server wrote after its FIN");
        if self.window == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.window);
        self.window -= n;
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Socket for Wire {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.fin_sent = true;
        Ok(())
    }

    fn set_abortive(&mut self) {
        self.abortive = true;
    }
}

/// How much a connection may hold after any turn.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Output pending: the high watermark plus one reply, for a service that keeps the
    /// output contract.
    pub(crate) pending: usize,
    /// Input the service has not consumed: its input limit plus one read.
    pub(crate) held: usize,
}

/// How the peer sends and reads.
pub(crate) enum Pace {
    /// The whole stream at once, and every reply read as soon as it is written.
    Whole,
    /// The stream cut into pieces, and the replies read in pieces, between which the
    /// server's send buffer may fill: all chosen by the generator.
    Split(Rng),
}

/// How a conversation ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Every byte the server wrote.
    pub(crate) written: Vec<u8>,
    /// Why the connection closed.
    pub(crate) reason: CloseReason,
    /// The server sent its FIN (a graceful close).
    pub(crate) fin_sent: bool,
    /// The server closed abortively.
    pub(crate) abortive: bool,
}

/// A connection in the simulated loop. See the [module documentation](self).
pub(crate) struct Conversation {
    conn: Connection<Wire>,
    limits: Limits,
    scratch: Vec<u8>,
    out: Buffer,
    /// The loop's handshake budget: unlimited, as a plain connection has no handshake.
    handshakes: usize,
    stats: Stats,
    bounds: Bounds,
    /// The interest registered with the (simulated) poller.
    registered: Option<Want>,
    closed: Option<CloseReason>,
    turns: usize,
}

/// What a turn may change: when none of it changes, the turn did nothing.
#[derive(PartialEq, Eq)]
struct Progress(usize, usize, usize, usize, State);

impl Conversation {
    /// `make` builds the connection on the wire; `scratch` is the loop's read buffer size and
    /// `window` the room in the send buffer to begin with.
    pub(crate) fn new(
        make: impl FnOnce(Wire) -> Connection<Wire>,
        limits: Limits,
        scratch: usize,
        window: usize,
        bounds: Bounds,
    ) -> Conversation {
        let wire = Wire {
            window,
            ..Wire::default()
        };
        Conversation {
            conn: make(wire),
            limits,
            scratch: vec![0; scratch],
            out: Buffer::new(),
            handshakes: usize::MAX,
            stats: Stats::default(),
            bounds,
            registered: None,
            closed: None,
            turns: 0,
        }
    }

    /// The peer sends `stream` at `pace`, then its FIN, then reads until the server closes.
    /// Panics if a bound is broken, if the connection stops while it still has work (a lost
    /// wakeup) or spins, or if it never closes.
    pub(crate) fn run(mut self, stream: &[u8], pace: Pace) -> Outcome {
        self.open();
        match pace {
            Pace::Whole => {
                self.wire().window = UNLIMITED;
                if !stream.is_empty() {
                    self.send(stream);
                }
            }
            Pace::Split(mut rng) => {
                let mut rest = stream;
                while self.closed.is_none() && !rest.is_empty() {
                    if rng.below(3) == 0 {
                        let n = rng.size(4096);
                        self.peer_reads(n);
                    } else {
                        let n = rng.size(rest.len());
                        self.send(&rest[..n]);
                        rest = &rest[n..];
                    }
                }
            }
        }
        if self.closed.is_none() {
            self.wire().fin = true;
            self.edge(Ready {
                readable: true,
                writable: false,
                closed: true,
                urgent: false,
            });
        }
        // From here on the peer reads everything: only a full send buffer can still be owed
        // an event. A connection that is open with none owed waits for nothing that will come.
        while self.closed.is_none() {
            if self.wire().window > 0 {
                panic!(
                    "stuck: the connection waits, but nothing is left to tell it \
                     (registered {:?}, wants {:?}): {:?}",
                    self.registered,
                    self.conn.want(),
                    self
                );
            }
            self.peer_reads(UNLIMITED);
        }
        let reason = self.closed.expect("closed");
        let wire = self.wire();
        Outcome {
            written: std::mem::take(&mut wire.written),
            reason,
            fin_sent: wire.fin_sent,
            abortive: wire.abortive,
        }
    }

    fn wire(&mut self) -> &mut Wire {
        self.conn.socket_mut()
    }

    /// The connection starts, is registered, and is told what is ready at once.
    fn open(&mut self) {
        let turn = {
            let mut cx = Context {
                now: Time(0),
                limits: &self.limits,
                scratch: &mut self.scratch,
                out_scratch: &mut self.out,
                out_borrowed: None,
                stats: &self.stats,
                handshakes: &mut self.handshakes,
            };
            self.conn.open(&mut cx)
        };
        self.check();
        if let Turn::Closed(reason) = turn {
            self.closed = Some(reason);
            return;
        }
        let want = self.conn.want();
        let registered = if want.interest().is_some() {
            want
        } else {
            Want::READ
        };
        self.registered = Some(registered);
        let ready = self.level(registered);
        match (turn, ready) {
            (_, Some(ready)) => self.dispatch(ready),
            (Turn::Again, None) => self.dispatch(Ready::NONE),
            _ => {}
        }
    }

    /// The peer sends `bytes`: a readable edge.
    fn send(&mut self, bytes: &[u8]) {
        self.wire().inbound.extend(bytes);
        self.edge(Ready {
            readable: true,
            writable: false,
            closed: false,
            urgent: false,
        });
    }

    /// The peer reads `n` bytes, which frees as much room in the send buffer: a writable
    /// edge if there was none.
    fn peer_reads(&mut self, n: usize) {
        let wire = self.wire();
        let was_full = wire.window == 0;
        wire.window = wire.window.saturating_add(n).min(UNLIMITED);
        if was_full {
            self.edge(Ready {
                readable: false,
                writable: true,
                closed: false,
                urgent: false,
            });
        }
    }

    /// Something changed on the socket: an event, for the interest registered.
    fn edge(&mut self, happened: Ready) {
        let Some(registered) = self.registered else {
            return;
        };
        let ready = Ready {
            readable: happened.readable && registered.read,
            writable: happened.writable && registered.write,
            closed: happened.closed && registered.read,
            urgent: false,
        };
        if ready.readable || ready.writable {
            self.dispatch(ready);
        }
    }

    /// What is ready now for `interest`: what registering it reports at once.
    fn level(&mut self, interest: Want) -> Option<Ready> {
        let wire = self.wire();
        let ready = Ready {
            readable: interest.read && wire.readable(),
            writable: interest.write && wire.window > 0,
            closed: interest.read && wire.fin,
            urgent: false,
        };
        (ready.readable || ready.writable).then_some(ready)
    }

    /// Runs turns, as the loop does, until the connection waits or closes.
    fn dispatch(&mut self, mut ready: Ready) {
        let mut idle_agains = 0;
        loop {
            if self.closed.is_some() {
                return;
            }
            self.turns += 1;
            assert!(
                self.turns < MAX_TURNS,
                "no end after {MAX_TURNS} turns: {self:?}"
            );
            let before = self.progress();
            let turn = {
                let mut cx = Context {
                    now: Time(0),
                    limits: &self.limits,
                    scratch: &mut self.scratch,
                    out_scratch: &mut self.out,
                    out_borrowed: None,
                    stats: &self.stats,
                    handshakes: &mut self.handshakes,
                };
                self.conn.turn(&mut cx, ready)
            };
            assert!(
                self.out.is_empty(),
                "the loop's output scratch was left full"
            );
            self.check();
            if let Turn::Closed(reason) = turn {
                self.closed = Some(reason);
                return;
            }
            if turn == Turn::Again && self.progress() == before {
                idle_agains += 1;
                assert!(
                    idle_agains < MAX_IDLE_AGAINS,
                    "spinning: {idle_agains} turns asked to run again and did nothing: {self:?}"
                );
            } else {
                idle_agains = 0;
            }
            // The poller follows the interest the connection wants now; a change reports
            // what is ready at once. The run queue runs a turn that asked for one.
            let event = self.follow();
            ready = match (turn, event) {
                (_, Some(event)) => event,
                (Turn::Again, None) => Ready::NONE,
                _ => return,
            };
        }
    }

    /// Re-registers when the wanted interest changed (wanting nothing keeps the registration,
    /// as the loop does); returns what the change reports as ready.
    fn follow(&mut self) -> Option<Ready> {
        let want = self.conn.want();
        if want.interest().is_none() || Some(want) == self.registered {
            return None;
        }
        self.registered = Some(want);
        self.level(want)
    }

    fn progress(&mut self) -> Progress {
        let (pending, held, state) = (
            self.conn.pending_output(),
            self.conn.held_input(),
            self.conn.state(),
        );
        let wire = self.wire();
        Progress(wire.read, wire.written.len(), pending, held, state)
    }

    /// The bounds of the output contract, after every turn.
    fn check(&self) {
        let (pending, held) = (self.conn.pending_output(), self.conn.held_input());
        assert!(
            pending <= self.bounds.pending,
            "{pending} bytes of output pending, over the bound of {} (high watermark {} plus \
             one reply): {self:?}",
            self.bounds.pending,
            self.limits.high_watermark
        );
        assert!(
            held <= self.bounds.held,
            "{held} bytes of input held, over the bound of {} (the input limit plus one read): \
             {self:?}",
            self.bounds.held
        );
    }
}

impl fmt::Debug for Conversation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conversation")
            .field("conn", &self.conn)
            .field("limits", &self.limits)
            .field("scratch", &self.scratch.len())
            .field("registered", &self.registered)
            .field("turns", &self.turns)
            .finish_non_exhaustive()
    }
}
