//! The end of a run: late replies, the grace, abandoning, and unserved connections.

use super::*;

/// After the window no new message goes, and the flow finishes when its last reply is in:
/// a reply that arrives late, inside the grace, is still timed.
#[test]
fn late_replies_are_waited_for_and_timed() {
    let mut rig = StreamRig::echo();
    rig.reply(0);
    rig.at(ms(2)).readable(); // served; message 1 goes
    assert_eq!(rig.written(), rig.requests(0..2));
    rig.at(ms(1500));
    rig.flow.finish_if_idle(&mut rig.cx, rig.now);
    assert_eq!(rig.phase(), Phase::Established, "a reply is outstanding");
    assert!(rig.written().is_empty(), "nothing new after the window");
    rig.reply(1);
    rig.readable();
    assert_eq!(rig.phase(), Phase::Finished);
    let t = rig.tally();
    assert_eq!((t.messages, t.error_total()), (2, 0));
    let late = t.latency.max();
    assert!((1_497_000_000..=1_499_500_000).contains(&late), "{late} ns");
}

/// When the grace runs out, or nothing moved for the stall timeout, what is outstanding is
/// counted: replies as unanswered, unwritten requests as stalled, a connect as timed out.
#[test]
fn abandoning_counts_what_was_outstanding() {
    let mut rig = StreamRig::echo();
    rig.at(Duration::from_secs(3));
    rig.flow.abandon(&mut rig.cx, false, rig.now);
    assert_eq!(rig.phase(), Phase::Finished);
    assert_eq!(rig.errors(ErrorKind::Unanswered), 1);
    assert_eq!(rig.errors(ErrorKind::Unserved), 0, "counted once");
    let example = rig.example();
    assert!(
        example.contains("1 replies outstanding, not done within 2s"),
        "{example}"
    );

    let mut rig = StreamRig::stream(settings(Mode::Echo));
    rig.open();
    rig.last().borrow_mut().window = 10;
    rig.at(ms(1)).writable();
    rig.at(Duration::from_secs(11));
    rig.flow.abandon(&mut rig.cx, true, rig.now);
    assert_eq!(rig.errors(ErrorKind::Stalled), 1);
    let example = rig.example();
    assert!(
        example.contains("54 request bytes could not be written (nothing moved for 10s)"),
        "{example}"
    );

    let mut rig = StreamRig::stream(settings(Mode::Echo));
    rig.open();
    rig.at(Duration::from_secs(3));
    rig.flow.abandon(&mut rig.cx, false, rig.now);
    assert_eq!(rig.phase(), Phase::Failed);
    assert_eq!(rig.errors(ErrorKind::ConnectTimeout), 1);
    assert!(rig
        .example()
        .contains("still connecting when the run ended"));
}

/// A connection that got nothing back inside the window is unserved whatever the warm-up:
/// its message went out during the warm-up or inside the window, and the reply came only
/// after the window (a server at its connection cap answers it once others leave).
#[test]
fn a_starved_connection_is_unserved_with_or_without_a_warmup() {
    for warmup in [Duration::ZERO, ms(500)] {
        let mut cfg = settings(Mode::Echo);
        cfg.warmup = warmup;
        let mut rig = StreamRig::established(cfg); // message 0 at 1 ms
        let after = warmup + Duration::from_millis(1100);
        rig.at(after);
        rig.flow.finish_if_idle(&mut rig.cx, rig.now);
        rig.reply(0);
        rig.readable();
        assert_eq!(rig.phase(), Phase::Finished, "warm-up {warmup:?}");
        assert_eq!(rig.errors(ErrorKind::Unserved), 1, "warm-up {warmup:?}");
        assert_eq!(rig.tally().served, 0);
    }
}

/// A connection whose handshake completed only after the window (its SYN retransmitted
/// past a full accept queue) was asked for and never served: unserved too.
#[test]
fn a_connection_established_after_the_window_is_unserved() {
    let mut rig = StreamRig::stream(settings(Mode::Echo));
    rig.open();
    rig.at(ms(1200)).writable();
    assert_eq!(rig.phase(), Phase::Finished);
    assert!(rig.last().borrow().written.is_empty(), "too late to send");
    assert_eq!(rig.errors(ErrorKind::Unserved), 1);
    assert_eq!(rig.tally().established, 1);
}
