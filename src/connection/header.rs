//! The PROXY protocol header stage: the header is read before the service exists, parsed
//! by [`crate::proxy`], and what it says — the client and the address it connected to —
//! becomes the service's [`ConnInfo`](crate::service::ConnInfo).
//!
//! Reads collect the header (bounded by the protocol's size limits, and by the header
//! timeout from accept); bytes that came after it in the same read are the client's first
//! bytes, handed to the service once it has greeted. A header that is refused, late, or cut
//! short by the peer's FIN closes the connection before any service sees a byte, each with
//! its own counter.

use log::{debug, warn};

use super::{Context, Io, Read};
use crate::buffer::Buffer;
use crate::proxy::{self, Origin, Parse, Refusal};
use crate::socket::Socket;
use crate::stats::{CloseReason, Stats};

/// What the log calls this stage when a read fails in it.
const STAGE: &str = "PROXY-HEADER";

/// The header read so far.
#[derive(Debug, Default)]
pub(crate) struct Header {
    /// Headers are short (at most a few hundred bytes in practice, and bounded by the
    /// protocol's limits): collecting them costs one small copy.
    bytes: Buffer,
}

impl Header {
    /// Heap bytes held.
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Reads until the header is complete — then what it says, and the bytes that followed
    /// it — or there is nothing more to read now (`None`), within `budget`. An error is the
    /// reason the connection ends.
    pub(crate) fn turn<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
        budget: &mut usize,
    ) -> Result<Option<(Origin, Buffer)>, CloseReason> {
        while io.read_ready && *budget > 0 {
            let want = cx.scratch.len().min(*budget).min(cx.limits.high_watermark);
            match io.read(&mut cx.scratch[..want], cx.now, &STAGE) {
                Read::Data(n) => {
                    *budget -= n;
                    self.bytes.extend(&cx.scratch[..n]);
                    if let Some(done) = self.parse(io, cx)? {
                        return Ok(Some(done));
                    }
                }
                Read::Fin => return Err(self.truncated(io, cx)),
                Read::Drained => {}
                Read::Failed(reason) => return Err(reason),
            }
        }
        Ok(None)
    }

    /// Looks at what has arrived: not yet a whole header, a refusal, or a header and the
    /// bytes after it.
    fn parse<S>(
        &mut self,
        io: &Io<S>,
        cx: &Context<'_>,
    ) -> Result<Option<(Origin, Buffer)>, CloseReason> {
        let (len, version, origin) = match proxy::parse(self.bytes.as_slice()) {
            Parse::Incomplete => return Ok(None),
            Parse::Refused(refusal) => {
                warn!("conn {}: {refusal}; closing", io.id);
                let counter = match refusal {
                    Refusal::Malformed(_) => &cx.stats.proxy_malformed,
                    Refusal::TooLong { .. } => &cx.stats.proxy_too_long,
                };
                Stats::incr(counter);
                return Err(CloseReason::Proxy);
            }
            Parse::Done {
                len,
                version,
                origin,
            } => (len, version, origin),
        };
        match origin {
            Origin::Client(p) => {
                Stats::incr(&cx.stats.proxy_proxied);
                debug!(
                    "conn {}: PROXY v{version}: client {} to {}",
                    io.id, p.source, p.destination
                );
            }
            Origin::Proxy => {
                Stats::incr(&cx.stats.proxy_local);
                debug!(
                    "conn {}: PROXY v{version}: the proxy's own connection",
                    io.id
                );
            }
        }
        self.bytes.consume(len);
        Ok(Some((origin, std::mem::take(&mut self.bytes))))
    }

    /// The peer sent FIN before the header was complete.
    fn truncated<S>(&self, io: &Io<S>, cx: &Context<'_>) -> CloseReason {
        let held = self.bytes.len();
        if held == 0 {
            // A proxy's plain TCP health check connects and closes without a header.
            debug!("conn {}: closed before sending a PROXY header", io.id);
        } else {
            warn!(
                "conn {}: closed after {held} bytes of an incomplete PROXY header",
                io.id
            );
        }
        Stats::incr(&cx.stats.proxy_truncated);
        CloseReason::Proxy
    }

    /// The header timeout passed.
    pub(crate) fn timed_out<S>(&self, io: &Io<S>, cx: &Context<'_>) {
        warn!(
            "conn {}: PROXY header incomplete after {:?} ({} bytes); closing",
            io.id,
            cx.limits.proxy_timeout,
            self.bytes.len()
        );
        Stats::incr(&cx.stats.proxy_timeout);
    }
}
