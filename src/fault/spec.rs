//! `--fault` as a person types it, parsed into values: `LISTENER=FAULT[;FAULT…]`, where a
//! fault is `KIND[:VALUE][,OPTION:VALUE…]`.
//!
//! The parser is total: any string gives a value or one clear error, never a panic (a fuzz
//! target holds it to that, `fuzz/fuzz_targets/fault_spec.rs`), and what it parses prints back
//! as a spec that parses to the same value (the form `GET /faults` shows).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

/// What a fault does; the names are the ones the spec uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Hold each reply (TCP) or datagram (UDP) for a time, with optional jitter.
    Delay,
    /// Hold only the first reply of a connection.
    FirstByteDelay,
    /// Pace replies to this many bytes a second.
    Bandwidth,
    /// Split replies into writes of this size, with a gap between them.
    Slice,
    /// FIN after the Nth reply, or after SIZE bytes (the rest of the reply is cut).
    CloseAfter,
    /// FIN after the connection has been idle this long.
    IdleClose,
    /// RST after a time, N replies or SIZE bytes.
    ResetAfter,
    /// Read the request, then close (FIN, or RST with `how:rst`) with no reply.
    CloseBeforeReply,
    /// Accept and read, never reply, never close (the idle timeout still applies).
    Blackhole,
    /// Delay our FIN after the peer's FIN.
    SlowClose,
    /// Stop accepting for a time: connections wait in the backlog.
    StopAccept,
    /// Stop listening for a time: connects are refused.
    Refuse,
    /// Flip one byte of a reply.
    Corrupt,
    /// Do not answer a datagram.
    Drop,
    /// Answer a datagram twice.
    Duplicate,
    /// Send an answer after the next one.
    Reorder,
    /// The first N connections (raw streams) or requests (framed services, datagrams) fail.
    FailFirst,
}

/// Every kind, in the order of the documentation's table.
pub const KINDS: [Kind; 17] = [
    Kind::Delay,
    Kind::FirstByteDelay,
    Kind::Bandwidth,
    Kind::Slice,
    Kind::CloseAfter,
    Kind::IdleClose,
    Kind::ResetAfter,
    Kind::CloseBeforeReply,
    Kind::Blackhole,
    Kind::SlowClose,
    Kind::StopAccept,
    Kind::Refuse,
    Kind::Corrupt,
    Kind::Drop,
    Kind::Duplicate,
    Kind::Reorder,
    Kind::FailFirst,
];

/// Which transports a kind applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Tcp,
    Udp,
    Both,
}

/// What value a kind takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    Nothing,
    Duration,
    /// A duration, or nothing (for the rest of the run).
    MaybeDuration,
    Size,
    Count,
    CountOrSize,
    DurationCountOrSize,
}

impl Kind {
    /// The name in a spec and in the metrics' `fault` label.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Delay => "delay",
            Kind::FirstByteDelay => "first-byte-delay",
            Kind::Bandwidth => "bandwidth",
            Kind::Slice => "slice",
            Kind::CloseAfter => "close-after",
            Kind::IdleClose => "idle-close",
            Kind::ResetAfter => "reset-after",
            Kind::CloseBeforeReply => "close-before-reply",
            Kind::Blackhole => "blackhole",
            Kind::SlowClose => "slow-close",
            Kind::StopAccept => "stop-accept",
            Kind::Refuse => "refuse",
            Kind::Corrupt => "corrupt",
            Kind::Drop => "drop",
            Kind::Duplicate => "duplicate",
            Kind::Reorder => "reorder",
            Kind::FailFirst => "fail-first",
        }
    }

    /// Its position in [`KINDS`], for arrays of counters.
    pub fn index(self) -> usize {
        KINDS.iter().position(|&k| k == self).unwrap_or(0)
    }

    fn on(self) -> On {
        match self {
            Kind::Delay | Kind::Corrupt | Kind::FailFirst => On::Both,
            Kind::Drop | Kind::Duplicate | Kind::Reorder => On::Udp,
            _ => On::Tcp,
        }
    }

    fn takes(self) -> Takes {
        match self {
            Kind::Delay | Kind::FirstByteDelay | Kind::IdleClose | Kind::SlowClose => {
                Takes::Duration
            }
            Kind::StopAccept | Kind::Refuse => Takes::MaybeDuration,
            Kind::Bandwidth | Kind::Slice => Takes::Size,
            Kind::FailFirst => Takes::Count,
            Kind::CloseAfter => Takes::CountOrSize,
            Kind::ResetAfter => Takes::DurationCountOrSize,
            Kind::CloseBeforeReply
            | Kind::Blackhole
            | Kind::Corrupt
            | Kind::Drop
            | Kind::Duplicate
            | Kind::Reorder => Takes::Nothing,
        }
    }

    /// Whether `per:msg` means something for this kind: a choice made for each reply.
    fn per_message(self) -> bool {
        matches!(
            self,
            Kind::Delay | Kind::Corrupt | Kind::CloseBeforeReply | Kind::Blackhole
        ) || self.on() == On::Udp
    }

    /// When the choice is made unless `per:` says otherwise: for each message for the faults
    /// that act on one reply (delay, corrupt, close-before-reply) and for datagrams; once per
    /// connection for the rest.
    pub fn default_per(self) -> Per {
        match self {
            Kind::Delay | Kind::Corrupt | Kind::CloseBeforeReply => Per::Msg,
            _ if self.on() == On::Udp => Per::Msg,
            _ => Per::Conn,
        }
    }

    /// Whether the kind acts on a listening socket rather than on connections.
    pub fn on_listener(self) -> bool {
        matches!(self, Kind::StopAccept | Kind::Refuse)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Kind, String> {
        KINDS
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = KINDS.iter().map(|k| k.name()).collect();
                format!("unknown fault '{s}' (known: {})", names.join(", "))
            })
    }
}

/// A fault's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// None (`blackhole`), or a window to the end of the run (`stop-accept` alone).
    None,
    /// A time.
    Duration(Duration),
    /// Bytes (a size has a unit ending in `B`: `512B`, `1MiB`).
    Bytes(u64),
    /// A count of replies, connections or requests (a plain number).
    Count(u64),
}

/// When a fault's random choice is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// Once, when the connection is accepted: it has the fault or not.
    Conn,
    /// For each message: a reply of a framed service, a read chunk's reply of a raw stream,
    /// a datagram.
    Msg,
}

/// How a connection is closed by `close-before-reply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Our FIN, after a lingering close.
    Fin,
    /// RST (`SO_LINGER` 0).
    Rst,
}

/// The most a percentage can say: parts per million.
pub const CERTAIN: u32 = 1_000_000;

/// One fault with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What it does.
    pub kind: Kind,
    /// Its value.
    pub value: Value,
    /// `p:` — how likely, in parts per million ([`CERTAIN`] = 100%).
    pub ppm: u32,
    /// `per:` — when the choice is made.
    pub per: Per,
    /// `after:` — from how long after start-up the fault applies.
    pub after: Duration,
    /// `for:` — how long it applies from then; `None` = to the end.
    pub window: Option<Duration>,
    /// `jitter:` (delay) — the hold varies uniformly by up to this much either way.
    pub jitter: Duration,
    /// `gap:` (slice) — the pause between two slices.
    pub gap: Duration,
    /// `how:` (close-before-reply, fail-first) — FIN or RST.
    pub how: How,
}

impl Fault {
    /// `kind` with its value and every option at its default.
    pub fn new(kind: Kind, value: Value) -> Fault {
        Fault {
            kind,
            value,
            ppm: CERTAIN,
            per: kind.default_per(),
            after: Duration::ZERO,
            window: None,
            jitter: Duration::ZERO,
            gap: Duration::ZERO,
            how: match kind {
                Kind::FailFirst => How::Rst,
                _ => How::Fin,
            },
        }
    }

    /// The value as a duration (zero if it is not one).
    pub fn duration(&self) -> Duration {
        match self.value {
            Value::Duration(d) => d,
            _ => Duration::ZERO,
        }
    }

    /// Whether the fault applies at `since_start` after start-up (its `after:`/`for:` window).
    pub fn in_window(&self, since_start: Duration) -> bool {
        since_start >= self.after
            && self
                .window
                .is_none_or(|w| since_start < self.after.saturating_add(w))
    }

    /// Whether this fault can act on a listener of that transport; the error says why not.
    pub fn check_transport(&self, datagram: bool) -> Result<(), String> {
        match (self.kind.on(), datagram) {
            (On::Tcp, true) => Err(format!(
                "{} acts on TCP connections; this listener is UDP",
                self.kind
            )),
            (On::Udp, false) => Err(format!(
                "{} acts on UDP datagrams; this listener is TCP",
                self.kind
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Fault {
    /// The canonical spec: the value, then only the options that differ from the default.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.name())?;
        match self.value {
            Value::None => {}
            Value::Duration(d) => write!(f, ":{}", Millis(d))?,
            Value::Bytes(b) => write!(f, ":{b}B")?,
            Value::Count(n) => write!(f, ":{n}")?,
        }
        if !self.jitter.is_zero() {
            write!(f, ",jitter:{}", Millis(self.jitter))?;
        }
        if !self.gap.is_zero() {
            write!(f, ",gap:{}", Millis(self.gap))?;
        }
        if self.how != Fault::new(self.kind, Value::None).how {
            let how = match self.how {
                How::Fin => "fin",
                How::Rst => "rst",
            };
            write!(f, ",how:{how}")?;
        }
        if self.ppm != CERTAIN {
            let (whole, frac) = (self.ppm / 10_000, self.ppm % 10_000);
            if frac == 0 {
                write!(f, ",p:{whole}%")?;
            } else {
                let digits = format!("{frac:04}");
                write!(f, ",p:{whole}.{}%", digits.trim_end_matches('0'))?;
            }
        }
        if self.per != self.kind.default_per() {
            f.write_str(match self.per {
                Per::Conn => ",per:conn",
                Per::Msg => ",per:msg",
            })?;
        }
        if !self.after.is_zero() {
            write!(f, ",after:{}", Millis(self.after))?;
        }
        if let Some(w) = self.window {
            write!(f, ",for:{}", Millis(w))?;
        }
        Ok(())
    }
}

/// A duration printed in whole milliseconds (the loop's resolution), `0` for zero.
struct Millis(Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_millis() {
            0 => f.write_str("0"),
            ms => write!(f, "{ms}ms"),
        }
    }
}

/// Which listener a spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The service, as `--listen` names it (`echo`, `udp-echo`), or under socket activation
    /// the socket's name (`echo,proxy`).
    pub service: String,
    /// The address, if given (`echo@[::1]:7007`).
    pub ip: Option<IpAddr>,
    /// The port, if given (`echo@7007`). Matches the port given to `--listen` (`0` for an
    /// ephemeral one) or the port bound.
    pub port: Option<u16>,
}

impl Selector {
    /// Whether the listener `name` (its service, with its options as a socket's name has
    /// them: `echo,proxy`), given as `configured` and bound at `bound`, is this one. A
    /// selector with options names only listeners with exactly those, in any order; one
    /// without names the service's listeners whatever their options.
    pub fn matches(&self, name: &str, configured: Option<SocketAddr>, bound: SocketAddr) -> bool {
        let split = |s: &str| {
            let mut parts = s.split(',');
            let service = parts.next().unwrap_or_default().to_string();
            let mut options: Vec<String> = parts.map(str::to_string).collect();
            options.sort();
            (service, options)
        };
        let ((want, want_options), (service, options)) = (split(&self.service), split(name));
        if want != service || (!want_options.is_empty() && want_options != options) {
            return false;
        }
        let port_ok = self
            .port
            .is_none_or(|p| p == bound.port() || configured.is_some_and(|c| c.port() == p));
        let ip_ok = self
            .ip
            .is_none_or(|ip| ip == bound.ip() || configured.is_some_and(|c| c.ip() == ip));
        port_ok && ip_ok
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.service)?;
        match (self.ip, self.port) {
            (Some(ip), Some(port)) => write!(f, "@{}", SocketAddr::new(ip, port)),
            (None, Some(port)) => write!(f, "@{port}"),
            (Some(IpAddr::V6(ip)), None) => write!(f, "@[{ip}]"),
            (Some(ip), None) => write!(f, "@{ip}"),
            (None, None) => Ok(()),
        }
    }
}

impl FromStr for Selector {
    type Err = String;

    fn from_str(s: &str) -> Result<Selector, String> {
        let (service, at) = match s.split_once('@') {
            Some((service, at)) => (service, Some(at)),
            None => (s, None),
        };
        let service_ok = !service.is_empty()
            && service
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_,.".contains(&b));
        if !service_ok {
            return Err(format!(
                "'{s}' does not name a listener: SERVICE@PORT, SERVICE@ADDR:PORT or a socket's name"
            ));
        }
        let (ip, port) = match at {
            None => (None, None),
            Some(at) => {
                if let Ok(port) = at.parse::<u16>() {
                    (None, Some(port))
                } else if let Ok(addr) = at.parse::<SocketAddr>() {
                    (Some(addr.ip()), Some(addr.port()))
                } else {
                    let bare = at.trim_start_matches('[').trim_end_matches(']');
                    let ip = bare.parse::<IpAddr>().map_err(|_| {
                        format!("'{at}' in '{s}' is not PORT, ADDR:PORT ([::1]:7007) or ADDR")
                    })?;
                    (Some(ip), None)
                }
            }
        };
        Ok(Selector {
            service: service.to_string(),
            ip,
            port,
        })
    }
}

/// A listener as a socket's name gives it, and as a [`Selector`] with options matches it:
/// the service, then `,proxy` and `,tls` if it has them.
pub fn listener_name(service: &str, proxy: bool, tls: bool) -> String {
    let mut name = service.to_string();
    for (option, on) in [("proxy", proxy), ("tls", tls)] {
        if on {
            name.push(',');
            name.push_str(option);
        }
    }
    name
}

/// One `--fault LISTENER=FAULT[;FAULT…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSpec {
    /// The listener.
    pub listener: Selector,
    /// Its faults, in order; empty clears the listener's faults (at run time).
    pub faults: Vec<Fault>,
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=", self.listener)?;
        for (i, fault) in self.faults.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{fault}")?;
        }
        Ok(())
    }
}

/// The longest spec accepted: far more than any real one, and a bound on what a parse or a
/// `POST /faults` can cost.
pub const MAX_SPEC: usize = 4096;

impl FromStr for FaultSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<FaultSpec, String> {
        if s.len() > MAX_SPEC {
            return Err(format!("a fault spec is at most {MAX_SPEC} bytes"));
        }
        let (listener, faults) = s.split_once('=').ok_or_else(|| {
            format!("'{s}' is not LISTENER=FAULT[;FAULT…] (for example echo@7007=delay:2ms)")
        })?;
        let listener: Selector = listener.parse()?;
        let faults = faults
            .split(';')
            .map(str::trim)
            .filter(|f| !f.is_empty() && *f != "none")
            .map(str::parse)
            .collect::<Result<Vec<Fault>, String>>()?;
        Ok(FaultSpec { listener, faults })
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Fault, String> {
        let mut parts = s.split(',');
        let head = parts.next().unwrap_or_default();
        let (kind, value) = match head.split_once(':') {
            Some((k, v)) => (k, Some(v)),
            None => (head, None),
        };
        let kind: Kind = kind.trim().parse()?;
        let value = parse_value(kind, value.map(str::trim))?;
        let mut fault = Fault::new(kind, value);
        let mut per_given = false;
        for option in parts {
            let (name, v) = option
                .split_once(':')
                .ok_or_else(|| format!("option '{option}' of {kind} is not NAME:VALUE"))?;
            let v = v.trim();
            match name.trim() {
                "p" => fault.ppm = parse_percent(v)?,
                "per" => {
                    per_given = true;
                    fault.per = match v {
                        "conn" => Per::Conn,
                        "msg" => Per::Msg,
                        _ => return Err(format!("per:{v}: give per:conn or per:msg")),
                    }
                }
                "after" => fault.after = duration(v)?,
                "for" if kind.on_listener() => {
                    return Err(format!(
                        "{kind} takes its duration as its value ({kind}:5s), not for:"
                    ))
                }
                "for" => fault.window = Some(duration(v)?).filter(|d| !d.is_zero()),
                "jitter" if kind == Kind::Delay => fault.jitter = duration(v)?,
                "gap" if kind == Kind::Slice => fault.gap = duration(v)?,
                "how" if matches!(kind, Kind::CloseBeforeReply | Kind::FailFirst) => {
                    fault.how = match v {
                        "fin" => How::Fin,
                        "rst" => How::Rst,
                        _ => return Err(format!("how:{v}: give how:fin or how:rst")),
                    }
                }
                other => {
                    return Err(format!(
                        "{kind} has no option '{other}' (options: p, per, after, for{})",
                        match kind {
                            Kind::Delay => ", jitter",
                            Kind::Slice => ", gap",
                            Kind::CloseBeforeReply | Kind::FailFirst => ", how",
                            _ => "",
                        }
                    ))
                }
            }
        }
        if fault.per == Per::Msg && !kind.per_message() {
            return Err(format!(
                "{kind} is chosen once per connection; per:msg is for delay, corrupt, \
                 close-before-reply, blackhole and the UDP faults"
            ));
        }
        if kind.on() == On::Udp && fault.per == Per::Conn && per_given {
            return Err(format!(
                "{kind} is chosen for each datagram; per:conn means nothing"
            ));
        }
        if kind.on_listener() && (fault.ppm != CERTAIN || per_given) {
            return Err(format!(
                "{kind} acts on the listener: it takes no p: or per:"
            ));
        }
        Ok(fault)
    }
}

fn parse_value(kind: Kind, v: Option<&str>) -> Result<Value, String> {
    let need = |what: &str| format!("{kind} needs {what} ({kind}:{})", example(kind));
    let v = match (kind.takes(), v) {
        (Takes::Nothing, None) | (Takes::MaybeDuration, None) => return Ok(Value::None),
        (Takes::Nothing, Some(v)) => return Err(format!("{kind} takes no value, not '{v}'")),
        (_, None) => return Err(need("a value")),
        (_, Some(v)) => v,
    };
    let value = match kind.takes() {
        Takes::Nothing => Value::None,
        Takes::Duration | Takes::MaybeDuration => Value::Duration(duration(v)?),
        Takes::Size => Value::Bytes(size(v)?),
        Takes::Count => Value::Count(count(v)?),
        Takes::CountOrSize if is_count(v) => Value::Count(count(v)?),
        Takes::CountOrSize => Value::Bytes(size(v)?),
        Takes::DurationCountOrSize if is_count(v) => Value::Count(count(v)?),
        Takes::DurationCountOrSize if is_size(v) => Value::Bytes(size(v)?),
        Takes::DurationCountOrSize => Value::Duration(duration(v)?),
    };
    let zero = matches!(value, Value::Bytes(0) | Value::Count(0))
        || (value == Value::Duration(Duration::ZERO) && kind != Kind::Delay);
    if zero && !matches!(kind, Kind::FailFirst) {
        return Err(format!(
            "{kind}:{v} would do nothing or everything at once; give more than 0"
        ));
    }
    Ok(value)
}

fn example(kind: Kind) -> &'static str {
    match kind.takes() {
        Takes::Duration | Takes::MaybeDuration => "250ms",
        Takes::Size => "64KiB",
        Takes::Count => "3",
        Takes::CountOrSize => "3 or 1MiB",
        Takes::DurationCountOrSize => "2s, 3 or 1MiB",
        Takes::Nothing => "",
    }
}

fn is_count(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())
}

fn is_size(v: &str) -> bool {
    v.ends_with(['B', 'b'])
}

fn count(v: &str) -> Result<u64, String> {
    v.parse()
        .map_err(|_| format!("'{v}' is not a count (a whole number)"))
}

/// The longest duration a fault takes: a day is longer than any test, and keeps every sum
/// of a time and a duration far from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A duration, rounded up to whole milliseconds: the loop's clock counts milliseconds, so
/// that is what a fault can do, and what its spec prints (`250us` is `1ms`).
fn duration(v: &str) -> Result<Duration, String> {
    let d = if v == "0" {
        Duration::ZERO
    } else {
        humantime::parse_duration(v)
            .map_err(|e| format!("'{v}' is not a duration like 250ms or 2s ({e})"))?
    };
    let d = Duration::from_millis(d.as_nanos().div_ceil(1_000_000).min(u64::MAX as u128) as u64);
    if d > MAX_DURATION {
        return Err(format!(
            "'{v}' is longer than a day, the longest a fault takes"
        ));
    }
    Ok(d)
}

/// The largest size a fault takes (1 GiB, the largest size setting).
pub const MAX_BYTES: u64 = 1 << 30;

fn size(v: &str) -> Result<u64, String> {
    if !is_size(v) {
        return Err(format!(
            "'{v}' is not a size: give a unit, like 512B or 64KiB"
        ));
    }
    let s: bytesize::ByteSize = v
        .parse()
        .map_err(|e| format!("'{v}' is not a size like 512B or 64KiB ({e})"))?;
    if s.as_u64() > MAX_BYTES {
        return Err(format!(
            "'{v}' is more than 1GiB, the largest a fault takes"
        ));
    }
    Ok(s.as_u64())
}

fn parse_percent(v: &str) -> Result<u32, String> {
    let bad = || format!("p:{v} is not a percentage from 0 to 100 (p:5%, p:0.1)");
    let number = v.strip_suffix('%').unwrap_or(v);
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() || whole.len() > 3 || frac.len() > 4 || !is_count(whole) {
        return Err(bad());
    }
    if !frac.is_empty() && !is_count(frac) {
        return Err(bad());
    }
    let whole: u32 = whole.parse().map_err(|_| bad())?;
    let frac: u32 = format!("{frac:0<4}").parse().map_err(|_| bad())?;
    let ppm = whole * 10_000 + frac;
    if ppm > CERTAIN {
        return Err(bad());
    }
    Ok(ppm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> FaultSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// The example parses, options and all.
    #[test]
    fn the_example_parses() {
        let s = spec("echo@7007=delay:2ms,jitter:1ms,p:10%;reset-after:1MiB,per:conn,p:5%");
        assert_eq!(s.listener.service, "echo");
        assert_eq!(s.listener.port, Some(7007));
        assert_eq!(s.faults.len(), 2);
        let d = &s.faults[0];
        assert_eq!(
            (d.kind, d.value, d.jitter, d.ppm),
            (
                Kind::Delay,
                Value::Duration(Duration::from_millis(2)),
                Duration::from_millis(1),
                100_000
            )
        );
        let r = &s.faults[1];
        assert_eq!(
            (r.kind, r.value, r.ppm),
            (Kind::ResetAfter, Value::Bytes(1 << 20), 50_000)
        );
    }

    /// Every kind parses with an example value.
    #[test]
    fn every_kind_parses() {
        for kind in KINDS {
            let text = match kind.takes() {
                Takes::Nothing | Takes::MaybeDuration => kind.name().to_string(),
                _ => format!(
                    "{kind}:{}",
                    example(kind)
                        .split(' ')
                        .next()
                        .unwrap()
                        .trim_end_matches(',')
                ),
            };
            let f: Fault = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(f.kind, kind);
        }
    }

    /// Counts, sizes and durations are told apart by their units.
    #[test]
    fn values_by_unit() {
        let v = |s: &str| s.parse::<Fault>().unwrap().value;
        assert_eq!(v("reset-after:3"), Value::Count(3));
        assert_eq!(v("reset-after:1KiB"), Value::Bytes(1024));
        assert_eq!(v("reset-after:2s"), Value::Duration(Duration::from_secs(2)));
        assert_eq!(v("close-after:10"), Value::Count(10));
        assert_eq!(v("close-after:100B"), Value::Bytes(100));
        assert_eq!(v("bandwidth:64KiB"), Value::Bytes(65536));
        assert_eq!(v("stop-accept"), Value::None);
    }

    /// Listeners by port, by address and port (IPv6 too), or by name.
    #[test]
    fn selectors() {
        let s = spec("udp-echo@[::1]:7007=drop,p:1%").listener;
        assert_eq!(s.ip, Some("::1".parse().unwrap()));
        assert_eq!(s.port, Some(7007));
        let s = spec("echo,proxy=blackhole").listener;
        assert_eq!((s.service.as_str(), s.port), ("echo,proxy", None));
        let bound: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let configured: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(spec("echo@0=corrupt")
            .listener
            .matches("echo", Some(configured), bound));
        assert!(spec("echo@40000=corrupt")
            .listener
            .matches("echo", None, bound));
        assert!(spec("echo=corrupt")
            .listener
            .matches("echo,proxy", None, bound));
        let named = |selector: &str, name: &str| {
            spec(&format!("{selector}=corrupt"))
                .listener
                .matches(name, None, bound)
        };
        assert!(named("echo,tls,proxy", "echo,proxy,tls"));
        assert!(!named("echo,proxy", "echo"));
        assert!(!named("echo,proxy", "echo,proxy,tls"));
        assert!(!spec("line@40000=corrupt")
            .listener
            .matches("echo", None, bound));
        assert!(!spec("echo@7=corrupt")
            .listener
            .matches("echo", Some(configured), bound));
    }

    /// Bad specs get one clear error each.
    #[test]
    fn errors_are_clear() {
        for (bad, says) in [
            ("echo", "LISTENER=FAULT"),
            ("echo=teleport", "unknown fault 'teleport'"),
            ("echo=delay", "delay needs a value"),
            ("echo=delay:soon", "not a duration"),
            ("echo=bandwidth:10", "give a unit"),
            ("echo=blackhole:3", "takes no value"),
            ("echo=delay:1ms,p:101%", "percentage"),
            ("echo=delay:1ms,p:", "percentage"),
            ("echo=delay:1ms,per:day", "per:conn or per:msg"),
            ("echo=reset-after:3,per:msg", "once per connection"),
            ("echo=delay:1ms,gap:1ms", "no option 'gap'"),
            ("echo=stop-accept:1s,p:50%", "takes no p:"),
            ("echo=refuse:1s,for:2s", "not for:"),
            ("echo=close-after:0", "more than 0"),
            ("echo@seven=corrupt", "is not PORT"),
            ("=corrupt", "does not name a listener"),
            ("echo=delay:1000d", "longer than a day"),
        ] {
            let e = bad.parse::<FaultSpec>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    /// What a spec prints parses back to the same value.
    #[test]
    fn display_round_trips() {
        for s in [
            "echo@7007=delay:2ms,jitter:1ms,p:10%;reset-after:1MiB,p:5%",
            "udp-echo@[::1]:7007=drop,p:0.25%;duplicate;reorder,p:3%;delay:5ms",
            "line=close-after:3;fail-first:2,how:fin;idle-close:1s,after:2s,for:3s",
            "echo@127.0.0.1:9=stop-accept:2s,after:1s;refuse;slice:10B,gap:5ms",
            "echo=close-before-reply,how:rst,per:conn,p:50%;corrupt;blackhole,per:msg",
        ] {
            let a = spec(s);
            let printed = a.to_string();
            assert_eq!(spec(&printed), a, "{s} printed as {printed}");
        }
    }

    /// Durations are whole milliseconds, rounded up: what the loop can do, and what prints
    /// back (found by the fuzz target: `delay:166666.66us` printed as `166ms`).
    #[test]
    fn durations_are_whole_milliseconds() {
        let f: Fault = "delay:166666.66us".parse().unwrap();
        assert_eq!(f.value, Value::Duration(Duration::from_millis(167)));
        let f: Fault = "delay:250us,jitter:1ns".parse().unwrap();
        assert_eq!(
            (f.duration(), f.jitter),
            (Duration::from_millis(1), Duration::from_millis(1))
        );
    }

    /// Which transport each kind can act on.
    #[test]
    fn transports() {
        let f = |s: &str| s.parse::<Fault>().unwrap();
        assert!(f("drop").check_transport(false).is_err());
        assert!(f("drop").check_transport(true).is_ok());
        assert!(f("blackhole").check_transport(true).is_err());
        assert!(f("delay:1ms").check_transport(true).is_ok());
        assert!(f("delay:1ms").check_transport(false).is_ok());
    }
}
