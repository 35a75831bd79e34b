//! Datagram services: one message in, at most one message out.
//!
//! UDP has what TCP lacks — message boundaries: one `recv_from` is one datagram, whole — and
//! lacks what TCP has: a connection, ordering, retransmission, and any way for a slow peer to
//! push back. A [`DatagramService`] therefore sees one datagram at a time with its sender, and
//! replies by filling a buffer; the loop sends the reply to the sender, or queues it, or drops
//! and counts it when the queue is full. No per-peer state is kept by the loop.

use std::net::SocketAddr;

/// A handler for the datagrams of one UDP endpoint.
pub trait DatagramService: Send {
    /// `data` arrived from `peer`. Append a reply to `reply` (which is empty) to send one.
    fn on_datagram(&mut self, peer: SocketAddr, data: &[u8], reply: &mut Vec<u8>);
}

/// RFC 862 over UDP: every datagram goes back to its sender.
#[derive(Debug, Default, Clone, Copy)]
pub struct UdpEcho;

impl DatagramService for UdpEcho {
    fn on_datagram(&mut self, _peer: SocketAddr, data: &[u8], reply: &mut Vec<u8>) {
        reply.extend_from_slice(data);
    }
}

/// RFC 863 over UDP: datagrams are counted (by the loop) and dropped.
#[derive(Debug, Default, Clone, Copy)]
pub struct UdpDiscard;

impl DatagramService for UdpDiscard {
    fn on_datagram(&mut self, _peer: SocketAddr, _data: &[u8], _reply: &mut Vec<u8>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echo replies with the datagram; discard replies with nothing.
    #[test]
    fn echo_and_discard() {
        let peer = "127.0.0.1:9".parse().unwrap();
        let mut reply = Vec::new();
        UdpEcho.on_datagram(peer, b"dgram", &mut reply);
        assert_eq!(reply, b"dgram");
        let mut reply = Vec::new();
        UdpDiscard.on_datagram(peer, b"dgram", &mut reply);
        assert!(reply.is_empty());
    }
}
