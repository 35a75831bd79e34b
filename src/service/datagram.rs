//! Datagram services: one message in, at most one message out.
//!
//! UDP has what TCP lacks — message boundaries: one `recv_from` is one datagram, whole — and
//! lacks what TCP has: a connection, ordering, retransmission, and any way for a slow peer to
//! push back. A [`DatagramService`] therefore sees one datagram at a time with its sender, and
//! answers through a [`Reply`]; the loop sends the reply to the sender, or queues it, or drops
//! and counts it when the queue is full. The loop keeps no per-peer state, except the
//! fixed-size table of the response rate limit ([`crate::udp::guard`]).
//!
//! A datagram's source address is whatever its sender wrote, so an answer may go to someone
//! who never asked: another server's echo (a loop), or a victim (reflection). A service says
//! what its answers are like ([`DatagramService::replies`]) and its endpoint takes the
//! defences that follow from it.

use std::net::SocketAddr;

/// A handler for the datagrams of one UDP endpoint.
pub trait DatagramService: Send {
    /// `data` arrived from `peer`. Call [`Reply::send`] to answer; not calling it sends
    /// nothing.
    fn on_datagram(&mut self, peer: SocketAddr, data: &[u8], reply: &mut Reply);

    /// What this service's answers are like, which decides the defences of its endpoint (see
    /// [`crate::udp::guard`]). Default: [`Replies::Larger`], the careful assumption for a
    /// service that does not say; one whose answers are never larger than the request says
    /// [`Replies::NoLarger`].
    fn replies(&self) -> Replies {
        Replies::Larger
    }
}

/// What a datagram service's answers are like. A service that answers can be set looping with
/// another one by a single forged datagram; one whose answer can outgrow its request is also
/// a reflection amplifier for a forged source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replies {
    /// It never answers (discard): nothing to defend.
    Never,
    /// An answer is never larger than its request (echo): it can loop, but not amplify.
    NoLarger,
    /// An answer may be larger than its request (chargen; daytime and time answer an empty
    /// datagram): it can loop and amplify.
    Larger,
}

/// Creates the datagram service of each loop's socket for an endpoint.
///
/// Implemented for any `Fn() -> Box<dyn DatagramService>`, so a closure is a factory. Shared
/// by every loop thread, hence `Send + Sync`.
pub trait DatagramFactory: Send + Sync {
    /// A new service for one loop's socket.
    fn new_service(&self) -> Box<dyn DatagramService>;
}

impl<F> DatagramFactory for F
where
    F: Fn() -> Box<dyn DatagramService> + Send + Sync,
{
    fn new_service(&self) -> Box<dyn DatagramService> {
        self()
    }
}

/// The answer to one datagram: nothing, or one datagram of any length, zero included
/// (RFC 862 answers an empty datagram with an empty one).
#[derive(Debug, Default)]
pub struct Reply {
    bytes: Vec<u8>,
    send: bool,
}

impl Reply {
    /// Answers with `data`, replacing any answer given before for the same datagram.
    pub fn send(&mut self, data: &[u8]) {
        self.bytes.clear();
        self.bytes.extend_from_slice(data);
        self.send = true;
    }

    /// The datagram to send, if the service answered.
    pub fn datagram(&self) -> Option<&[u8]> {
        self.send.then_some(self.bytes.as_slice())
    }

    /// Forgets the answer, keeping the buffer for the next datagram.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.send = false;
    }
}

/// RFC 862 over UDP: every datagram goes back to its sender.
#[derive(Debug, Default, Clone, Copy)]
pub struct UdpEcho;

impl DatagramService for UdpEcho {
    fn on_datagram(&mut self, _peer: SocketAddr, data: &[u8], reply: &mut Reply) {
        reply.send(data);
    }

    fn replies(&self) -> Replies {
        Replies::NoLarger
    }
}

/// RFC 863 over UDP: datagrams are counted (by the loop) and dropped.
#[derive(Debug, Default, Clone, Copy)]
pub struct UdpDiscard;

impl DatagramService for UdpDiscard {
    fn on_datagram(&mut self, _peer: SocketAddr, _data: &[u8], _reply: &mut Reply) {}

    fn replies(&self) -> Replies {
        Replies::Never
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echo replies with the datagram, an empty one included; discard replies with nothing.
    #[test]
    fn echo_and_discard() {
        let peer = "127.0.0.1:9".parse().unwrap();
        let mut reply = Reply::default();
        UdpEcho.on_datagram(peer, b"dgram", &mut reply);
        assert_eq!(reply.datagram(), Some(&b"dgram"[..]));
        reply.clear();
        UdpEcho.on_datagram(peer, b"", &mut reply);
        assert_eq!(reply.datagram(), Some(&b""[..]));
        reply.clear();
        UdpDiscard.on_datagram(peer, b"dgram", &mut reply);
        assert_eq!(reply.datagram(), None);
    }
}
