//! Datagrams: no handshake, matching out of order, loss, a full socket, finishing.

use mio::{Interest, Token};

use super::*;
use crate::fake::Script;
use crate::transport::Datagram;

const LOSS_TIMEOUT: Duration = FakeDatagram::LOSS_TIMEOUT;

/// UDP settings: a connection measured for `secs` with `pipeline` datagrams in flight.
fn udp(secs: u64, pipeline: usize) -> BenchConfig {
    let mut cfg = settings(Mode::Udp);
    cfg.stop = Stop::After(Duration::from_secs(secs));
    cfg.pipeline = pipeline;
    cfg
}

/// A datagram socket has no handshake: it is established as it opens, registered once,
/// and its first datagrams go at once, each with a loss check.
#[test]
fn a_datagram_socket_is_established_at_once() {
    let mut rig = DatagramRig::datagram(udp(1, 2));
    assert_eq!(rig.phase(), Phase::Established);
    let both = Interest::READABLE | Interest::WRITABLE;
    assert_eq!(rig.last().borrow().registered, vec![(Token(0), both)]);
    let expected = vec![rig.message(Dir::Request, 0), rig.message(Dir::Request, 1)];
    assert_eq!(rig.sent(), expected);
    let t = rig.tally();
    assert_eq!((t.established, t.connect.len(), t.udp.sent), (1, 0, 2));
    assert_eq!(rig.cx.wakes.next(), Some(rig.t0 + LOSS_TIMEOUT));
    rig.flow.abandon(&mut rig.cx, false, rig.now);
}

/// Replies match their datagrams in any order; a repeat is late, not an error, and a
/// stranger's datagram is a mismatch that leaves the flow running.
#[test]
fn replies_match_out_of_order() {
    let mut rig = DatagramRig::datagram(udp(1, 3));
    assert_eq!(rig.sent().len(), 3);
    rig.send(rig.message(Dir::Reply, 2));
    rig.send(rig.message(Dir::Reply, 0));
    rig.at(ms(1)).readable();
    assert_eq!(rig.tally().udp.received, 2);
    // 0 is answered and gone; 1 is still out, the answered 2 waits behind it, and 3 takes
    // the free slot.
    assert_eq!(rig.flow.conn().unwrap().in_flight(), 3);
    assert_eq!(rig.sent(), vec![rig.message(Dir::Request, 3)]);
    rig.send(rig.message(Dir::Reply, 0));
    rig.readable();
    assert_eq!(rig.tally().udp.late, 1);
    let mut stranger = Vec::new();
    rig.codec.encode(Dir::Reply, 7, 1, &mut stranger);
    rig.send(stranger);
    rig.readable();
    assert_eq!(rig.errors(ErrorKind::Mismatch), 1);
    assert_eq!(rig.phase(), Phase::Established);
    assert_eq!(rig.tally().messages, 2);
}

/// A datagram unanswered for the loss timeout is lost, the next one goes, and a reply
/// after that is late.
#[test]
fn an_unanswered_datagram_is_lost_then_late() {
    let mut rig = DatagramRig::datagram(udp(10, 1));
    assert_eq!(rig.sent().len(), 1);
    rig.at(LOSS_TIMEOUT).wakes();
    assert_eq!(rig.tally().udp.lost, 1);
    assert_eq!(rig.sent(), vec![rig.message(Dir::Request, 1)]);
    rig.send(rig.message(Dir::Reply, 0));
    rig.at(LOSS_TIMEOUT + ms(100)).readable();
    let u = rig.tally().udp;
    assert_eq!((u.sent, u.received, u.lost, u.late), (2, 0, 1, 1));
    assert_eq!(
        rig.tally().error_total(),
        0,
        "loss is counted, not an error"
    );
}

/// A socket with no room keeps the datagram, and its share of a counted run, for the
/// writable edge.
#[test]
fn a_full_socket_keeps_the_datagram_for_the_writable_edge() {
    let mut cfg = udp(1, 1);
    cfg.stop = Stop::Count(1);
    let (mut dial, sockets) = FakeDial::datagrams();
    dial.prepare(Script {
        window: 0,
        ..Script::default()
    });
    let mut rig: DatagramRig = Rig::with(cfg, Box::new(dial), sockets);
    rig.open();
    assert_eq!(rig.phase(), Phase::Established);
    assert!(rig.sent().is_empty());
    assert_eq!(rig.flow.conn().unwrap().in_flight(), 0);
    rig.last().borrow_mut().window = usize::MAX / 2;
    rig.at(ms(1)).writable();
    assert_eq!(rig.sent(), vec![rig.message(Dir::Request, 0)]);
    rig.send(rig.message(Dir::Reply, 0));
    rig.at(ms(2)).readable();
    assert_eq!(rig.phase(), Phase::Finished, "its share is answered");
}

/// A datagram flow whose every datagram is answered finishes with the window, without
/// waiting for the grace.
#[test]
fn an_answered_datagram_flow_finishes_with_the_window() {
    let mut rig = DatagramRig::datagram(udp(1, 1));
    rig.sent();
    rig.send(rig.message(Dir::Reply, 0));
    rig.at(ms(999)).readable();
    assert_eq!(rig.sent().len(), 1, "message 1 goes");
    rig.send(rig.message(Dir::Reply, 1));
    rig.at(ms(999)).readable(); // message 2 goes
    rig.at(Duration::from_secs(1));
    rig.flow.finish_if_idle(&mut rig.cx, rig.now);
    assert_eq!(rig.phase(), Phase::Established, "message 2 is out");
    rig.send(rig.message(Dir::Reply, 2));
    rig.at(ms(1001)).readable();
    assert_eq!(rig.phase(), Phase::Finished);
    let u = rig.tally().udp;
    assert_eq!((u.sent, u.received, u.lost), (3, 3, 0));
}
