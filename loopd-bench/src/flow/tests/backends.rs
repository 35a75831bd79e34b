//! Per-backend identification (`--per-backend`): `SERVER` first, then the messages.

use super::*;
use crate::payload::Protocol;

/// Echo over the line protocol, asking each connection's server who it is.
fn per_backend() -> BenchConfig {
    let mut cfg = settings(Mode::Echo);
    cfg.protocol = Protocol::Line;
    cfg.per_backend = true;
    cfg
}

/// `SERVER` goes first and nothing else until its answer, which may come in pieces; the
/// connection is then counted under that backend, and so is everything it measures.
#[test]
fn the_server_is_asked_before_any_message() {
    let mut rig = StreamRig::established(per_backend());
    assert_eq!(rig.written(), b"SERVER\n");
    assert!(rig.flow.outstanding(), "the answer is awaited");
    rig.send(b"alpha 127.0.0.1:7100".to_vec());
    rig.at(ms(2)).readable();
    assert!(rig.written().is_empty(), "nothing before the whole answer");
    rig.send(b" 0\r\n".to_vec());
    rig.readable();
    assert_eq!(rig.written(), rig.requests(0..1));
    let b = &rig.tally().backends;
    assert_eq!(
        (b.len(), b[0].server_id.as_str(), b[0].connections),
        (1, "alpha", 1)
    );
    rig.reply(0);
    rig.at(ms(3)).readable();
    let b = &rig.tally().backends[0];
    assert_eq!((b.messages, b.latency.len()), (1, 1));
    assert_eq!(rig.tally().messages, 1);
}

/// An answer of another shape fails the connection with what came back; an answer that
/// never comes is counted when the run gives up.
#[test]
fn a_wrong_or_missing_answer_is_an_error() {
    let mut rig = StreamRig::established(per_backend());
    rig.send(b"ERR unknown command 'SERVER'\r\n".to_vec());
    rig.at(ms(2)).readable();
    assert_eq!(rig.phase(), Phase::Failed);
    assert_eq!(rig.errors(ErrorKind::Mismatch), 1);
    assert!(
        rig.example().contains("SERVER was answered \"ERR"),
        "{}",
        rig.example()
    );

    let mut rig = StreamRig::established(per_backend());
    rig.at(Duration::from_secs(3));
    rig.flow.abandon(&mut rig.cx, false, rig.now);
    assert_eq!(rig.errors(ErrorKind::Unanswered), 1);
    assert!(
        rig.example().contains("SERVER was not answered"),
        "{}",
        rig.example()
    );
}
