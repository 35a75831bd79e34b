//! Scripted transports for the sockets-free tests: a byte [`Stream`] and a [`Datagram`]
//! socket whose handshake, reads and writes follow a [`Script`] the test holds, and a
//! [`Dial`] that hands them out. They are to the flow what the server's scripted `Socket`
//! is to its connection: every state and every load policy can be driven, on made-up
//! instants, without a network.
//!
//! The stream fake also plays a layered stream (TLS) where a test asks it to: it can report
//! the socket connected before the layer's handshake is done, hold bytes (`buffered`), owe
//! output of its own, say goodbye on close, and describe a session.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use mio::event::Source;
use mio::{Interest, Registry, Token};

use crate::transport::{Datagram, Dial, Handshake, Layer, Session, Stream};

/// One scripted answer to a read (a stream's bytes, or one datagram).
#[derive(Clone, Debug)]
pub enum Step {
    /// These bytes (a read smaller than them takes a part).
    Data(Vec<u8>),
    /// End of file (streams), for every read from now on.
    Eof,
    /// This error, once.
    Fail(ErrorKind),
}

/// One scripted answer to `handshake`.
#[derive(Clone, Copy, Debug)]
pub enum Shake {
    /// The socket is connected; a layer's handshake goes on.
    Connected,
    /// Still under way.
    Pending,
    /// Refused, reset, ...
    Fail(ErrorKind),
}

/// What a fake socket does, and what was done to it.
#[derive(Debug)]
pub struct Script {
    /// Answers to `handshake`, in order; `Done` once they run out.
    pub shakes: VecDeque<Shake>,
    /// Answers to reads, in order; `WouldBlock` once they run out.
    pub reads: VecDeque<Step>,
    /// Bytes writes still take before `WouldBlock`.
    pub window: usize,
    /// Every error writes return, if set.
    pub write_error: Option<ErrorKind>,
    /// Every byte written (streams).
    pub written: Vec<u8>,
    /// Every datagram sent.
    pub sent: Vec<Vec<u8>>,
    /// Calls to read, and to write.
    pub read_calls: usize,
    /// Calls to write.
    pub write_calls: usize,
    /// Registrations with the poller: token and interest.
    pub registered: Vec<(Token, Interest)>,
    /// Re-registrations.
    pub reregistered: usize,
    /// The socket was dropped: closed.
    pub closed: bool,
    /// What `buffered` answers: the stream holds bytes a short read did not deliver.
    pub buffered: bool,
    /// Output of the stream's own, waiting for the window (written by `flush`).
    pub owed: Vec<u8>,
    /// What `close` queues as output of its own (a layer's goodbye); empty for a socket.
    pub goodbye: Vec<u8>,
    /// Calls to `close`.
    pub close_calls: usize,
    /// What `session` answers once the handshake is done.
    pub session: Option<Session>,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            shakes: VecDeque::new(),
            reads: VecDeque::new(),
            window: usize::MAX / 2,
            write_error: None,
            written: Vec::new(),
            sent: Vec::new(),
            read_calls: 0,
            write_calls: 0,
            registered: Vec::new(),
            reregistered: 0,
            closed: false,
            buffered: false,
            owed: Vec::new(),
            goodbye: Vec::new(),
            close_calls: 0,
            session: None,
        }
    }
}

/// A script shared between a fake socket and the test.
pub type Shared = Rc<RefCell<Script>>;

impl Script {
    fn read(&mut self, buf: &mut [u8], stream: bool) -> io::Result<usize> {
        self.read_calls += 1;
        match self.reads.pop_front() {
            None => Err(ErrorKind::WouldBlock.into()),
            Some(Step::Eof) => {
                self.reads.push_front(Step::Eof);
                Ok(0)
            }
            Some(Step::Fail(kind)) => Err(kind.into()),
            Some(Step::Data(mut data)) => {
                let n = buf.len().min(data.len());
                buf[..n].copy_from_slice(&data[..n]);
                if n < data.len() && stream {
                    self.reads.push_front(Step::Data(data.split_off(n)));
                }
                Ok(n)
            }
        }
    }

    fn refuses_write(&mut self) -> Option<io::Error> {
        self.write_calls += 1;
        match self.write_error {
            Some(kind) => Some(kind.into()),
            None if self.window == 0 => Some(ErrorKind::WouldBlock.into()),
            None => None,
        }
    }
}

macro_rules! source {
    ($fake:ty) => {
        impl Source for $fake {
            fn register(
                &mut self,
                _: &Registry,
                token: Token,
                interest: Interest,
            ) -> io::Result<()> {
                self.0.borrow_mut().registered.push((token, interest));
                Ok(())
            }

            fn reregister(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
                self.0.borrow_mut().reregistered += 1;
                Ok(())
            }

            fn deregister(&mut self, _: &Registry) -> io::Result<()> {
                Ok(())
            }
        }

        impl Drop for $fake {
            fn drop(&mut self) {
                self.0.borrow_mut().closed = true;
            }
        }
    };
}

/// A scripted byte stream.
#[derive(Debug)]
pub struct FakeStream(Shared);

impl Read for FakeStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf, true)
    }
}

impl Write for FakeStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// Takes what fits in the window from the slices in order, like `writev`.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut s = self.0.borrow_mut();
        if let Some(e) = s.refuses_write() {
            return Err(e);
        }
        let mut n = 0;
        for buf in bufs {
            let take = buf.len().min(s.window);
            s.written.extend_from_slice(&buf[..take]);
            s.window -= take;
            n += take;
        }
        Ok(n)
    }

    /// Writes the output of its own that fits the window; `WouldBlock` if some is left.
    fn flush(&mut self) -> io::Result<()> {
        let mut s = self.0.borrow_mut();
        let take = s.owed.len().min(s.window);
        let owed: Vec<u8> = s.owed.drain(..take).collect();
        s.written.extend_from_slice(&owed);
        s.window -= take;
        if s.owed.is_empty() {
            Ok(())
        } else {
            Err(ErrorKind::WouldBlock.into())
        }
    }
}

impl Stream for FakeStream {
    fn handshake(&mut self) -> Handshake {
        match self.0.borrow_mut().shakes.pop_front() {
            None => Handshake::Done,
            Some(Shake::Connected) => Handshake::Connected,
            Some(Shake::Pending) => Handshake::Pending,
            Some(Shake::Fail(kind)) => Handshake::Failed(kind.into()),
        }
    }
}

impl Layer for FakeStream {
    fn buffered(&self) -> bool {
        self.0.borrow().buffered
    }

    fn owes_output(&self) -> bool {
        !self.0.borrow().owed.is_empty()
    }

    fn close(&mut self) {
        {
            let mut s = self.0.borrow_mut();
            s.close_calls += 1;
            let goodbye = std::mem::take(&mut s.goodbye);
            s.owed.extend_from_slice(&goodbye);
        }
        let _ = self.flush();
    }

    fn session(&self) -> Option<Session> {
        self.0.borrow().session.clone()
    }
}

source!(FakeStream);

/// A scripted datagram socket: each read step is one datagram, and a send takes the whole
/// datagram if it fits the window.
#[derive(Debug)]
pub struct FakeDatagram(Shared);

impl Layer for FakeDatagram {}

impl Datagram for FakeDatagram {
    const LOSS_TIMEOUT: Duration = Duration::from_secs(1);

    fn send(&mut self, datagram: &[u8]) -> io::Result<usize> {
        let mut s = self.0.borrow_mut();
        if let Some(e) = s.refuses_write() {
            return Err(e);
        }
        if datagram.len() > s.window {
            return Err(ErrorKind::WouldBlock.into());
        }
        s.window -= datagram.len();
        s.sent.push(datagram.to_vec());
        Ok(datagram.len())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf, false)
    }
}

source!(FakeDatagram);

/// Hands out fake sockets of type `T`, each with a fresh script (or the next one
/// [`FakeDial::prepare`]d), keeping a handle to every script for the test.
pub struct FakeDial<T> {
    made: Rc<RefCell<Vec<Shared>>>,
    prepared: VecDeque<Script>,
    refusals: VecDeque<io::Error>,
    wrap: fn(Shared) -> T,
}

/// The test's side of a [`FakeDial`]: the scripts of every socket dialed so far.
#[derive(Clone, Debug)]
pub struct Sockets(Rc<RefCell<Vec<Shared>>>);

impl Sockets {
    /// How many sockets were dialed.
    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The script of the `k`-th socket dialed.
    pub fn get(&self, k: usize) -> Shared {
        self.0.borrow()[k].clone()
    }
}

impl<T> FakeDial<T> {
    fn with(wrap: fn(Shared) -> T) -> (FakeDial<T>, Sockets) {
        let made = Rc::new(RefCell::new(Vec::new()));
        let dial = FakeDial {
            made: made.clone(),
            prepared: VecDeque::new(),
            refusals: VecDeque::new(),
            wrap,
        };
        (dial, Sockets(made))
    }

    /// The next socket dialed follows `script`.
    pub fn prepare(&mut self, script: Script) {
        self.prepared.push_back(script);
    }

    /// The next dial fails with `e`.
    pub fn refuse(&mut self, e: io::Error) {
        self.refusals.push_back(e);
    }
}

impl FakeDial<FakeStream> {
    /// A dial of scripted streams.
    pub fn streams() -> (FakeDial<FakeStream>, Sockets) {
        FakeDial::with(FakeStream)
    }
}

impl FakeDial<FakeDatagram> {
    /// A dial of scripted datagram sockets.
    pub fn datagrams() -> (FakeDial<FakeDatagram>, Sockets) {
        FakeDial::with(FakeDatagram)
    }
}

impl<T> Dial for FakeDial<T> {
    type Transport = T;

    fn dial(&mut self, _: SocketAddr, _: Option<IpAddr>) -> io::Result<T> {
        if let Some(e) = self.refusals.pop_front() {
            return Err(e);
        }
        let script = self.prepared.pop_front().unwrap_or_default();
        let shared = Rc::new(RefCell::new(script));
        self.made.borrow_mut().push(shared.clone());
        Ok((self.wrap)(shared))
    }
}
