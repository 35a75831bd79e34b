//! The loop's TLS connections: the slab they live in, and what the loop counts and logs as
//! one of them closes. Accepting one is `accept.rs`'s, like any connection: a `TlsSocket`
//! over the accepted TCP socket, with a handshake stage before serving.

use log::info;

use super::slot::{Conns, Family, Slot, TlsSocket};
use super::token::Kind;
use crate::connection::Connection;
use crate::stats::{CloseReason, Stats};
use crate::tls::layer::PeerClose;
use slab::Slab;

impl Family for TlsSocket {
    const KIND: Kind = Kind::Tls;

    #[inline]
    fn slab(conns: &mut Conns) -> &mut Slab<Slot<TlsSocket>> {
        &mut conns.tls
    }

    /// A session's end, as the layer saw it: the peer's `close_notify` or a bare FIN (a
    /// truncation, which a close the state machine calls clean is counted as), and the
    /// error that ended a session the layer refused (its one log line).
    fn closing(conn: &Connection<TlsSocket>, reason: CloseReason, stats: &Stats) -> CloseReason {
        let socket = conn.socket();
        if reason == CloseReason::Tls {
            if let Some(e) = socket.stream().error() {
                info!("conn {}: TLS: {e}; closing", conn.id());
            }
        }
        if reason == CloseReason::Handshake {
            // Counted by the handshake stage, with how it failed.
            return reason;
        }
        match socket.peer_close() {
            Some(PeerClose::CloseNotify) => {
                stats.tls.peer_ended(true);
                reason
            }
            Some(PeerClose::Truncated) => {
                stats.tls.peer_ended(false);
                match reason {
                    CloseReason::Peer | CloseReason::Server => CloseReason::Truncated,
                    other => other,
                }
            }
            None => reason,
        }
    }
}
