//! A layered stream (TLS) under the flow, played by the scripted stream: the socket's connect
//! and the layer's handshake timed apart, bytes the layer holds read without an edge, output
//! of its own flushed with nothing to send, a goodbye before the close, and the handshake
//! mode's wait for the server's first word. The flow gains no branch for any of it: each is
//! one method of the `Stream` trait, and these tests would pass for any layer that answers
//! them the same way.

use super::*;
use crate::config::TlsSettings;
use crate::fake::Shake;
use crate::record::tls::{HandshakeKind, Negotiated};
use crate::schedule::Wake;
use crate::transport::Session;

fn tls13() -> Negotiated {
    Negotiated {
        version: "TLSv1.3".into(),
        cipher_suite: "TLS13_AES_256_GCM_SHA384".into(),
        group: Some("X25519".into()),
        alpn: None,
    }
}

fn session(kind: HandshakeKind, ticket_pending: bool) -> Session {
    Session {
        kind,
        offered: kind == HandshakeKind::Resumed,
        negotiated: tls13(),
        tickets: u32::from(!ticket_pending),
        ticket_pending,
    }
}

/// `mode` over TLS, measured for a second.
fn over_tls(mode: Mode) -> BenchConfig {
    let mut cfg = settings(mode);
    cfg.tls = Some(TlsSettings::default());
    cfg
}

/// Opens a flow whose socket connects at 1 ms and whose layer's handshake completes at
/// 3 ms as a session of `kind`.
fn layered(cfg: BenchConfig, kind: HandshakeKind, ticket_pending: bool) -> StreamRig {
    let mut rig = StreamRig::stream(cfg);
    rig.open();
    {
        let script = rig.last();
        let mut s = script.borrow_mut();
        s.shakes.push_back(Shake::Connected);
        s.shakes.push_back(Shake::Pending);
        s.session = Some(session(kind, ticket_pending));
    }
    rig.at(ms(1)).writable();
    assert_eq!(rig.phase(), Phase::Connecting, "TCP is up, TLS is not");
    rig.at(ms(2)).readable();
    assert_eq!(rig.phase(), Phase::Connecting);
    rig.at(ms(3)).readable();
    assert_eq!(rig.phase(), Phase::Established);
    rig
}

/// The TCP connect is timed to the socket's completion, the TLS handshake from there to the
/// session: 1 ms and 2 ms, in histograms of their own, by kind.
#[test]
fn connect_and_handshake_are_timed_apart() {
    let rig = layered(over_tls(Mode::Echo), HandshakeKind::Resumed, false);
    let connect = rig.tally().connect.max();
    assert!((990_000..=1_010_000).contains(&connect), "{connect} ns");
    let tls = &rig.tally().tls;
    assert_eq!((tls.full, tls.resumed, tls.offered), (0, 1, 1));
    let took = tls.resumed_latency.max();
    assert!((1_990_000..=2_010_000).contains(&took), "{took} ns");
    assert_eq!(tls.negotiated[&tls13()], 1);
    assert_eq!(rig.written(), rig.requests(0..1), "then the first request");
}

/// A handshake that never finishes after TCP connected is a TLS handshake timeout, not a
/// connect timeout, and the connection counts as failed.
#[test]
fn a_stalled_handshake_is_a_tls_timeout() {
    let mut rig = StreamRig::stream(over_tls(Mode::Echo));
    rig.open();
    rig.last()
        .borrow_mut()
        .shakes
        .extend([Shake::Connected, Shake::Pending]);
    rig.at(ms(1)).writable();
    let timeout = rig.cx.cfg.connect_timeout;
    rig.at(timeout).wakes();
    assert_eq!(rig.phase(), Phase::Failed);
    assert_eq!(rig.errors(ErrorKind::TlsHandshakeTimeout), 1);
    assert_eq!(rig.errors(ErrorKind::ConnectTimeout), 0);
    assert_eq!(rig.tally().failed, 1);
    assert!(
        rig.example().contains("TLS handshake not done"),
        "{}",
        rig.example()
    );
}

/// Bytes the layer read along with its handshake are read at once even when the event that
/// completed it said only "writable": the layer says it holds them, and no readable edge
/// will come for them.
#[test]
fn bytes_held_by_the_layer_are_read_without_an_edge() {
    let mut rig = StreamRig::stream(over_tls(Mode::Recv));
    rig.open();
    {
        let script = rig.last();
        let mut s = script.borrow_mut();
        s.shakes.push_back(Shake::Connected);
        s.session = Some(session(HandshakeKind::Full, false));
        s.reads
            .push_back(Step::Data(b"greeting decrypted with the Finished".to_vec()));
        s.buffered = true;
    }
    rig.at(ms(1)).writable();
    rig.at(ms(2)).writable();
    assert_eq!(rig.phase(), Phase::Established);
    assert_eq!(rig.tally().bytes_received, 36);
}

/// Output the layer owes (a Finished the socket refused) is flushed on the writable edge
/// even though the flow has nothing to send: the request is answered, and nothing else is
/// queued.
#[test]
fn owed_output_is_flushed_with_nothing_to_send() {
    let mut rig = StreamRig::echo();
    assert_eq!(rig.written(), rig.requests(0..1));
    {
        let script = rig.last();
        let mut s = script.borrow_mut();
        s.owed = b"key update".to_vec();
        s.window = 0;
    }
    rig.at(ms(2)).writable();
    assert!(rig.written().is_empty(), "the socket takes nothing yet");
    rig.last().borrow_mut().window = 1 << 20;
    rig.at(ms(3)).writable();
    assert_eq!(rig.written(), b"key update");
    assert_eq!(
        rig.flow.conn().unwrap().in_flight(),
        1,
        "no request was added"
    );
}

/// A connection the layer still owes output on is not idle: a churning flow does not drop
/// it (with its goodbye) until the writable edge has flushed it, then opens the next.
#[test]
fn the_goodbye_leaves_before_the_socket_is_dropped() {
    let mut rig = StreamRig::established(settings(Mode::Connect));
    assert_eq!(rig.written(), rig.requests(0..1));
    {
        let script = rig.last();
        let mut s = script.borrow_mut();
        s.goodbye = b"close_notify".to_vec();
        s.window = 4;
    }
    rig.reply(0);
    rig.at(ms(2)).readable();
    assert_eq!(rig.tally().messages, 1);
    assert_eq!(
        rig.sockets.len(),
        1,
        "not replaced while its goodbye is owed"
    );
    assert!(!rig.last().borrow().closed);
    assert_eq!(rig.last().borrow().close_calls, 1);
    rig.last().borrow_mut().window = 1 << 20;
    rig.at(ms(3)).writable();
    let first = rig.sockets.get(0);
    assert_eq!(first.borrow().written, b"close_notify");
    assert!(first.borrow().closed, "dropped once its goodbye left");
    assert_eq!(rig.sockets.len(), 2, "and the next connection opened");
}

/// Handshake mode: a TLS 1.3 connection waits after its handshake for the server's first
/// word — here its session ticket — then closes (with its goodbye) and opens the next.
/// Each handshake is the run's message.
#[test]
fn handshake_mode_waits_for_the_ticket() {
    let mut rig = layered(over_tls(Mode::Handshake), HandshakeKind::Full, true);
    assert_eq!(rig.tally().messages, 1);
    assert_eq!(rig.sockets.len(), 1, "waiting for the ticket");
    assert!(rig.written().is_empty(), "nothing is sent");
    {
        let script = rig.last();
        let mut s = script.borrow_mut();
        s.session = Some(session(HandshakeKind::Full, false));
        s.goodbye = b"close_notify".to_vec();
    }
    rig.at(ms(4)).readable();
    assert_eq!(rig.sockets.get(0).borrow().written, b"close_notify");
    assert!(rig.sockets.get(0).borrow().closed);
    assert_eq!(rig.sockets.len(), 2);
    assert_eq!(rig.phase(), Phase::Connecting);
}

/// Handshake mode: a server's bytes or its close answer as well as a ticket; nothing
/// answering within the connect timeout of the dial closes the connection and says so,
/// without an error.
#[test]
fn handshake_mode_takes_bytes_or_a_close_and_waits_no_longer_than_the_timeout() {
    let mut rig = layered(over_tls(Mode::Handshake), HandshakeKind::Full, true);
    rig.send(b"hello\n".to_vec());
    rig.at(ms(4)).readable();
    assert_eq!(rig.sockets.len(), 2, "bytes answered");

    let mut rig = layered(over_tls(Mode::Handshake), HandshakeKind::Full, true);
    rig.last().borrow_mut().reads.push_back(Step::Eof);
    rig.at(ms(4)).readable();
    assert_eq!(rig.sockets.len(), 2, "a close answered");
    assert_eq!(rig.tally().error_total(), 0);

    let mut rig = layered(over_tls(Mode::Handshake), HandshakeKind::Full, true);
    let timeout = rig.cx.cfg.connect_timeout;
    rig.cx
        .wakes
        .push(rig.t0 + timeout, 0, Wake::ConnectTimeout(1));
    rig.at(timeout).wakes();
    assert_eq!(rig.tally().tls.waited_out, 1);
    assert_eq!(rig.tally().error_total(), 0);
    assert!(rig.sockets.get(0).borrow().closed);
}
