//! The states: WAITING, SYN-SENT, ESTABLISHED, and the ways into CLOSED and FAILED.

use std::io;

use mio::{Interest, Token};

use super::*;
use crate::fake::Shake;

const BOTH: Interest = Interest::READABLE.add(Interest::WRITABLE);

/// Opening dials one socket and registers it once, for both readable and writable; the
/// handshake's completion moves it to ESTABLISHED without another `epoll_ctl`, times the
/// connect, and writes the first request in the same turn.
#[test]
fn open_registers_once_and_the_handshake_keeps_the_interest() {
    let mut rig = StreamRig::stream(settings(Mode::Echo));
    assert_eq!(rig.phase(), Phase::Waiting);
    assert!(rig.sockets.is_empty(), "no socket before the open");
    rig.open();
    assert_eq!(rig.phase(), Phase::Connecting);
    assert_eq!(rig.last().borrow().registered, vec![(Token(0), BOTH)]);
    assert!(rig.last().borrow().written.is_empty());
    let timeout = rig.t0 + rig.cx.cfg.connect_timeout;
    assert_eq!(
        rig.cx.wakes.next(),
        Some(timeout),
        "a connect timeout is asked for"
    );

    rig.at(ms(3)).writable();
    assert_eq!(rig.phase(), Phase::Established);
    assert_eq!(Phase::Connecting.interest(), Phase::Established.interest());
    let script = rig.last();
    assert_eq!(script.borrow().registered.len(), 1);
    assert_eq!(script.borrow().reregistered, 0);
    assert_eq!(rig.written(), rig.requests(0..1));
    assert_eq!((rig.tally().established, rig.cx.open), (1, 1));
    let connect = rig.tally().connect.max();
    assert!((2_990_000..=3_010_000).contains(&connect), "{connect} ns");
}

/// Readiness that does not complete the handshake leaves the flow connecting, with nothing
/// written; the next one completes it.
#[test]
fn spurious_readiness_keeps_connecting() {
    let mut rig = StreamRig::stream(settings(Mode::Echo));
    rig.open();
    rig.last().borrow_mut().shakes.push_back(Shake::Pending);
    rig.at(ms(1)).writable();
    assert_eq!(rig.phase(), Phase::Connecting);
    assert!(rig.last().borrow().written.is_empty());
    rig.at(ms(2)).writable();
    assert_eq!(rig.phase(), Phase::Established);
}

/// A refused handshake fails the flow with its kind, closes the socket, and counts it as a
/// connection that never established.
#[test]
fn a_refused_handshake_fails_with_its_kind() {
    let mut rig = StreamRig::stream(settings(Mode::Echo));
    rig.open();
    let refused = Shake::Fail(io::ErrorKind::ConnectionRefused);
    rig.last().borrow_mut().shakes.push_back(refused);
    rig.at(ms(1)).writable();
    assert_eq!(rig.phase(), Phase::Failed);
    assert_eq!(rig.errors(ErrorKind::ConnectRefused), 1);
    assert_eq!(rig.tally().failed, 1);
    assert!(rig.last().borrow().closed);
    assert_eq!((rig.cx.open, rig.cx.ended), (0, 1));
}

/// The connect timeout fails a flow still connecting; an established flow ignores the
/// timeout of its attempt.
#[test]
fn the_connect_timeout_fails_only_a_flow_still_connecting() {
    let timeout = settings(Mode::Echo).connect_timeout;
    let mut rig = StreamRig::stream(settings(Mode::Echo));
    rig.open();
    rig.at(timeout).wakes();
    assert_eq!(rig.phase(), Phase::Failed);
    assert_eq!(rig.errors(ErrorKind::ConnectTimeout), 1);
    assert!(
        rig.example().contains("not established after 5.0s"),
        "{}",
        rig.example()
    );

    let mut rig = StreamRig::echo();
    rig.at(timeout).wakes();
    assert_eq!(rig.phase(), Phase::Established);
    assert_eq!(rig.errors(ErrorKind::ConnectTimeout), 0);
}

/// The event that completes the handshake can carry data the server sent at once; it is
/// read in that same turn, since that edge will not come again.
#[test]
fn data_arriving_with_the_handshake_is_read_at_once() {
    let mut rig = StreamRig::stream(settings(Mode::Recv));
    rig.open();
    rig.send(b"a greeting".to_vec());
    rig.at(ms(1)).event(Readiness {
        readable: true,
        writable: true,
        closed: false,
    });
    assert_eq!(rig.phase(), Phase::Established);
    assert_eq!(rig.tally().bytes_received, 10);
    assert!(rig.flow.conn().unwrap().served());
}

/// A dial that finds no local port left fails with the remedy in its description.
#[test]
fn a_failed_dial_names_the_remedy() {
    let (mut dial, sockets) = FakeDial::streams();
    dial.refuse(io::Error::from_raw_os_error(libc::EADDRNOTAVAIL));
    let mut rig: StreamRig = Rig::with(settings(Mode::Echo), Box::new(dial), sockets);
    rig.open();
    assert_eq!(rig.phase(), Phase::Failed);
    assert_eq!(rig.errors(ErrorKind::ConnectOther), 1);
    assert!(
        rig.example().contains("add addresses with --source"),
        "{}",
        rig.example()
    );
    assert!(rig.sockets.is_empty());
}

/// A flow whose turn to open (`--ramp`) comes after the measurement is not opened at all.
#[test]
fn a_ramp_that_outlasts_the_run_closes_without_a_socket() {
    let mut rig = StreamRig::stream(settings(Mode::Echo));
    rig.at(Duration::from_secs(2)).open();
    assert_eq!(rig.phase(), Phase::Finished);
    assert!(rig.sockets.is_empty());
    assert_eq!((rig.cx.ended, rig.tally().error_total()), (1, 0));
}

/// The server ending a connection the flow still uses is told by how: between replies, in
/// the middle of one, or with a reset.
#[test]
fn the_server_ending_a_connection_is_told_by_how() {
    let mut rig = StreamRig::echo();
    rig.last().borrow_mut().reads.push_back(Step::Eof);
    rig.at(ms(2)).readable();
    assert_eq!(rig.phase(), Phase::Failed);
    assert_eq!(rig.errors(ErrorKind::UnexpectedClose), 1);
    assert!(rig.example().contains("with 1 replies outstanding"));

    let mut rig = StreamRig::echo();
    let reply = rig.message(Dir::Reply, 0);
    rig.send(reply[..10].to_vec());
    rig.last().borrow_mut().reads.push_back(Step::Eof);
    rig.at(ms(2)).readable();
    assert_eq!(rig.errors(ErrorKind::ShortEcho), 1);
    let example = rig.example();
    assert!(
        example.contains("closed after 10 of 64 reply bytes of message 0"),
        "{example}"
    );

    let mut rig = StreamRig::echo();
    let reset = Step::Fail(io::ErrorKind::ConnectionReset);
    rig.last().borrow_mut().reads.push_back(reset);
    rig.at(ms(2)).readable();
    assert_eq!(rig.errors(ErrorKind::Reset), 1);
    assert!(rig.last().borrow().closed);
}

/// A reply byte that differs from the request fails the flow, located to the byte.
#[test]
fn a_mismatch_fails_the_flow_at_its_byte() {
    let mut rig = StreamRig::echo();
    let mut reply = rig.message(Dir::Reply, 0);
    reply[40] ^= 1;
    rig.send(reply);
    rig.at(ms(2)).readable();
    assert_eq!(rig.phase(), Phase::Failed);
    assert_eq!(rig.errors(ErrorKind::Mismatch), 1);
    assert!(
        rig.example().contains("message 0: byte 40"),
        "{}",
        rig.example()
    );
}
