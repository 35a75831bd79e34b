//! The load policies: closed and open loop, counted runs, churn, upload, download.

use loopd::service::chargen::CYCLE;

use super::*;
use crate::config::Expect;

/// Closed loop keeps `--pipeline` messages in flight: each reply, once whole, frees a slot
/// for the next request, and its latency is timed from its send.
#[test]
fn closed_loop_keeps_the_pipeline_full() {
    let mut cfg = settings(Mode::Echo);
    cfg.pipeline = 3;
    let mut rig = StreamRig::established(cfg);
    assert_eq!(rig.written(), rig.requests(0..3));
    assert_eq!(rig.flow.conn().unwrap().in_flight(), 3);

    rig.reply(0);
    rig.at(ms(2)).readable();
    assert_eq!(rig.written(), rig.requests(3..4));
    assert_eq!(rig.tally().messages, 1);
    let latency = rig.tally().latency.max();
    assert!((990_000..=1_010_000).contains(&latency), "{latency} ns");

    // Half a reply completes nothing; its other half does.
    let reply = rig.message(Dir::Reply, 1);
    rig.send(reply[..30].to_vec());
    rig.at(ms(3)).readable();
    assert_eq!(rig.tally().messages, 1);
    assert!(rig.written().is_empty());
    rig.send(reply[30..].to_vec());
    rig.readable();
    assert_eq!(rig.tally().messages, 2);
    assert_eq!(rig.written(), rig.requests(4..5));
}

/// Open loop: a message goes at its slot, and a slot still ahead asks for a wake-up that
/// sends it then.
#[test]
fn open_loop_waits_for_each_slot() {
    let mut cfg = settings(Mode::Echo);
    cfg.rate = Some(1000.0); // one connection: a slot every millisecond
    cfg.pipeline = 2;
    let mut rig = StreamRig::established(cfg);
    assert_eq!(
        rig.written(),
        rig.requests(0..1),
        "only the slot now is sent"
    );
    assert_eq!(rig.cx.wakes.next(), Some(rig.t0 + ms(2)));
    rig.at(ms(2)).wakes();
    assert_eq!(rig.written(), rig.requests(1..2));
}

/// Open loop against a server that stalls: the message whose slot passed while the
/// pipeline was full goes late, and its latency counts from its slot, not from when it
/// went (no coordinated omission); the lag is recorded.
#[test]
fn open_loop_times_from_the_intended_send() {
    let mut cfg = settings(Mode::Echo);
    cfg.rate = Some(1000.0);
    let mut rig = StreamRig::established(cfg); // message 0 at its slot, 1 ms
    assert_eq!(rig.written(), rig.requests(0..1));
    rig.reply(0);
    rig.at(ms(10)).readable(); // a 9 ms stall; message 1 was due at 2 ms
    assert_eq!(rig.written(), rig.requests(1..2));
    let lag = rig.tally().send_lag.max();
    assert!((7_990_000..=8_010_000).contains(&lag), "{lag} ns");
    rig.reply(1);
    rig.at(ms(11)).readable();
    let t = rig.tally();
    let (corrected, uncorrected) = (t.latency.max(), t.uncorrected.min());
    assert!(
        (8_990_000..=9_010_000).contains(&corrected),
        "{corrected} ns"
    );
    assert!(
        (990_000..=1_010_000).contains(&uncorrected),
        "{uncorrected} ns"
    );
}

/// A counted run measures exactly its share: warm-up messages are free, and the flow
/// finishes once its last measured reply is in.
#[test]
fn a_counted_run_spends_its_share_then_finishes() {
    let mut cfg = settings(Mode::Echo);
    cfg.stop = Stop::Count(2);
    cfg.warmup = ms(10);
    let mut rig = StreamRig::established(cfg); // message 0 in the warm-up
    rig.reply(0);
    rig.at(ms(5)).readable(); // message 1 in the warm-up
    rig.reply(1);
    rig.at(ms(11)).readable(); // message 2 measured
    rig.reply(2);
    rig.at(ms(12)).readable(); // message 3 measured: the share is spent
    assert_eq!(rig.written(), rig.requests(0..4));
    rig.reply(3);
    rig.at(ms(13)).readable();
    assert_eq!(rig.phase(), Phase::Finished);
    let t = rig.tally();
    assert_eq!((t.messages, t.lead_in.messages, t.error_total()), (2, 1, 0));
}

/// A flow whose share of a counted run is nothing sends nothing, finishes at once, and is
/// not counted as unserved: the run did not ask it for anything.
#[test]
fn a_flow_with_no_share_finishes_without_error() {
    let mut cfg = settings(Mode::Echo);
    cfg.connections = 2; // the rig's flow is the second: quota(1 of 2) = 0
    cfg.stop = Stop::Count(1);
    let mut rig = StreamRig::stream(cfg);
    rig.open();
    rig.at(ms(1)).writable();
    assert_eq!(rig.phase(), Phase::Finished);
    assert!(rig.last().borrow().written.is_empty());
    assert_eq!(rig.tally().error_total(), 0);
}

/// Churn: one round trip per connection, whatever the pipeline; then the connection
/// closes and the next opens, continuing the sequence numbers.
#[test]
fn churn_makes_one_round_trip_per_connection() {
    let mut cfg = settings(Mode::Connect);
    cfg.pipeline = 4;
    let mut rig = StreamRig::established(cfg);
    assert_eq!(rig.written(), rig.requests(0..1));
    rig.reply(0);
    rig.at(ms(2)).readable();
    assert!(rig.sockets.get(0).borrow().closed);
    assert_eq!(rig.sockets.len(), 2);
    assert_eq!(rig.phase(), Phase::Connecting);
    rig.at(ms(3)).writable();
    assert_eq!(rig.written(), rig.requests(1..2), "the sequence continues");
    let t = rig.tally();
    assert_eq!((t.established, t.connect.len(), t.messages), (2, 2, 1));
}

/// Upload keeps writing while the socket takes it, queueing whole messages ahead; a spent
/// budget asks for another turn, a full socket waits for the writable edge, and at the end
/// of the window the flow finishes once everything queued is written.
#[test]
fn upload_writes_while_the_socket_takes_it() {
    let mut rig = StreamRig::established(settings(Mode::Send));
    assert!(
        rig.flow.wants_turn(),
        "the budget stopped it, not the socket"
    );
    let before = rig.written().len() as u64;
    assert_eq!(rig.tally().messages, before / 64, "whole messages written");
    let per_turn = super::super::SEND_BUDGET;
    rig.flow.resume(&mut rig.cx, rig.now);
    assert_eq!(rig.written().len(), per_turn, "one budget per turn");
    assert!(rig.flow.wants_turn());

    rig.last().borrow_mut().window = 100;
    rig.flow.resume(&mut rig.cx, rig.now);
    assert_eq!(rig.written().len(), 100);
    assert!(!rig.flow.wants_turn(), "a full socket waits for its edge");

    rig.last().borrow_mut().window = usize::MAX / 2;
    rig.at(Duration::from_secs(2));
    rig.flow.finish_if_idle(&mut rig.cx, rig.now);
    assert_eq!(
        rig.phase(),
        Phase::Established,
        "blocked: no write before the edge"
    );
    rig.writable();
    assert_eq!(rig.phase(), Phase::Finished);
    assert_eq!(rig.tally().error_total(), 0);
}

/// Download reads what the server sends, checks it against RFC 864, and fails at the first
/// byte that differs, located in the stream.
#[test]
fn download_checks_the_chargen_stream() {
    let mut cfg = settings(Mode::Recv);
    cfg.expect = Some(Expect::Chargen);
    let mut rig = StreamRig::established(cfg);
    assert!(rig.written().is_empty(), "a download sends nothing");
    rig.send(CYCLE[..100].to_vec());
    rig.at(ms(2)).readable();
    assert_eq!(rig.tally().bytes_received, 100);
    let mut bad = CYCLE[100..200].to_vec();
    bad[7] ^= 1;
    rig.send(bad);
    rig.readable();
    assert_eq!(rig.errors(ErrorKind::Mismatch), 1);
    let example = rig.example();
    assert!(example.contains("chargen stream byte 107"), "{example}");
}

/// Drain or remember: a read pass stops at the receive budget with data left and asks for
/// another turn, which reads on without a new edge.
#[test]
fn the_receive_budget_is_remembered() {
    let mut rig = StreamRig::established(settings(Mode::Recv));
    let budget = super::super::RECV_BUDGET;
    rig.send(vec![b'x'; budget + 1000]);
    rig.at(ms(2)).readable();
    assert_eq!(rig.tally().bytes_received, budget as u64);
    assert!(rig.flow.wants_turn());
    rig.flow.resume(&mut rig.cx, rig.now);
    assert_eq!(rig.tally().bytes_received, budget as u64 + 1000);
    assert!(!rig.flow.wants_turn());
}
