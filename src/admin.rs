//! The admin endpoint (`--admin ADDR`): HTTP/1.1 `GET` of `/metrics`, `/healthz` and
//! `/readyz`, served by the event loop itself as one more [`Service`].
//!
//! That the loop can serve its own observability through the same trait as echo is the point:
//! the admin service sees only bytes, parses each request with `httparse`, answers it, and
//! keeps the connection open for the next (HTTP/1.1 keep-alive, pipelining in order). It keeps
//! the output contract: a request is answered only while output has room.
//!
//! | path | answer |
//! | --- | --- |
//! | `/metrics` | the counters, Prometheus text format 0.0.4 ([`metrics`]) |
//! | `/healthz` | 200 while every loop runs; 503 once one has failed |
//! | `/readyz` | 200 while the server accepts; 503 from the moment a shutdown begins (before any drain delay), or once a loop has failed |
//!
//! Anything else is refused, with the connection kept: 404 for an unknown path, 405 for a
//! method other than `GET` or `HEAD`. The head is read as the `http` service reads it
//! ([`head`]): a head that cannot be parsed, that could be framed two ways, or that announces
//! a body gets 400 (501 for a transfer coding other than chunked) and the connection is
//! closed after the reply; one whose head exceeds 8 KiB or 64 headers gets 431 and a close.
//! Unlike the `http` service, a request without `Host` is answered: probes leave it out. Slow
//! requests meet the request timeout like any other service's.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use crate::control::{Endpoint, Health, ServerHandle};
use crate::fault::spec::listener_name;
use crate::fault::{FaultSpec, Switch};
use crate::metrics::{self, EndpointSample, Exposition, Kind};
use crate::service::http::head::{self, Body, Head, Parsed};
use crate::service::{ConnInfo, Output, Service, ServiceFactory};

/// The largest request head accepted: the `http` service's default.
pub const MAX_REQUEST: usize = head::MAX_HEAD;

/// What the admin endpoint reports on, shared by the server and every admin connection: the
/// server's loops (their endpoints and counters), its health as the supervisor sets it, and
/// when it started.
pub struct AdminState {
    server: OnceLock<ServerHandle>,
    health: Arc<Health>,
    started: SystemTime,
    /// `POST /faults?…` may change faults (`--fault-admin`).
    fault_changes: bool,
}

impl AdminState {
    /// Reports `health`; the loops are attached once they exist.
    pub fn new(health: Arc<Health>) -> AdminState {
        AdminState {
            server: OnceLock::new(),
            health,
            started: SystemTime::now(),
            fault_changes: false,
        }
    }

    /// Connects the state to the server whose loops it reports on (set once, when the loops
    /// exist).
    /// Allows `POST /faults?…` (`--fault-admin`); off by default.
    pub fn with_fault_changes(mut self, allowed: bool) -> AdminState {
        self.fault_changes = allowed;
        self
    }

    pub(crate) fn attach(&self, server: ServerHandle) {
        let _ = self.server.set(server);
    }

    /// The health `/readyz` and `/healthz` answer with.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Every endpoint's fault switch, once (loop 0's endpoints: the switches are shared).
    fn switches(&self, server: &ServerHandle) -> Vec<(Endpoint, Arc<Switch>)> {
        let Some(first) = server.loops().first() else {
            return Vec::new();
        };
        first
            .endpoints()
            .iter()
            .filter_map(|e| Some((e.clone(), Arc::clone(e.faults.as_ref()?))))
            .collect()
    }

    /// `GET /faults`: each faulted listener as a spec, with what it injected so far.
    pub fn faults(&self) -> String {
        let switches = self
            .server
            .get()
            .map(|s| self.switches(s))
            .unwrap_or_default();
        let mut text = String::new();
        for (_, switch) in &switches {
            text.push_str(&format!("{switch}\n"));
            for kind in switch.kinds() {
                text.push_str(&format!("  {kind} injected {}\n", switch.injected(kind)));
            }
        }
        if switches.is_empty() {
            text.push_str("no faults\n");
        }
        text.push_str(if self.fault_changes {
            "changes: allowed (POST /faults?LISTENER=FAULT;...)"
        } else {
            "changes: off (--fault-admin allows POST /faults)"
        });
        text
    }

    /// `POST /faults?LISTENER=FAULT[;FAULT…]`: replaces the faults of the listeners the spec
    /// names (`LISTENER=` or `LISTENER=none` clears them). The spec is the query string,
    /// percent-decoded, so the endpoint still takes no request body.
    fn change_faults(&self, path: &str) -> Response {
        if !self.fault_changes {
            return Response::text(403, "fault changes are off; start loopd with --fault-admin");
        }
        let Some((_, query)) = path.split_once('?') else {
            return Response::text(
                400,
                "give the spec as the query: POST /faults?echo@7007=delay:2ms",
            );
        };
        let spec: FaultSpec = match percent_decode(query).and_then(|q| q.parse()) {
            Ok(spec) => spec,
            Err(e) => return Response::text(400, &e),
        };
        let switches = self
            .server
            .get()
            .map(|s| self.switches(s))
            .unwrap_or_default();
        let mut changed = Vec::new();
        for (endpoint, switch) in &switches {
            if spec.listener.matches(
                &listener_name(&endpoint.service, endpoint.proxy, endpoint.tls),
                None,
                endpoint.addr,
            ) {
                if let Err(e) = switch.set(spec.faults.clone()) {
                    return Response::text(400, &e);
                }
                log::warn!("faults changed through the admin endpoint: {switch}");
                changed.push(switch.to_string());
            }
        }
        if changed.is_empty() {
            return Response::text(404, &format!("no listener is {}", spec.listener));
        }
        Response::text(200, &changed.join("\n"))
    }

    /// The whole `/metrics` text.
    pub fn metrics(&self) -> String {
        let mut e = Exposition::default();
        if let Some(server) = self.server.get() {
            let loops = server.loops();
            let several = loops.len() > 1;
            let samples: Vec<EndpointSample<'_>> = loops
                .iter()
                .enumerate()
                .flat_map(|(i, h)| {
                    h.endpoints().iter().map(move |endpoint| EndpointSample {
                        loop_index: several.then_some(i),
                        endpoint,
                        snapshot: endpoint.stats.snapshot(),
                    })
                })
                .collect();
            metrics::write_endpoints(&mut e, &samples);
            e.family("loopd_loops", "Event loops running.", Kind::Gauge);
            e.sample("loopd_loops", &[], loops.len());
        }
        e.family(
            "loopd_ready",
            "1 while the server accepts new work; 0 from the start of a shutdown.",
            Kind::Gauge,
        );
        e.sample("loopd_ready", &[], u8::from(self.health.is_ready()));
        e.family(
            "loopd_build_info",
            "The running build; always 1.",
            Kind::Gauge,
        );
        e.sample(
            "loopd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );
        if let Some(server) = self.server.get() {
            let switches = self.switches(server);
            metrics::write_faults(&mut e, &switches);
            metrics::write_fault_windows(&mut e, &switches);
        }
        metrics::write_process(&mut e, self.started);
        e.finish()
    }
}

/// Creates the admin service for each connection.
pub fn factory(state: Arc<AdminState>) -> Arc<dyn ServiceFactory> {
    Arc::new(move |_: &ConnInfo<'_>| {
        Box::new(Admin {
            state: Arc::clone(&state),
        }) as Box<dyn Service>
    })
}

/// One admin connection. See the [module documentation](self).
pub struct Admin {
    state: Arc<AdminState>,
}

/// The answer to one request.
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    /// Headers beyond the standard ones, each ending in CRLF.
    extra: &'static str,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
            extra: "",
        }
    }
}

impl Admin {
    /// The answer to a complete, well-formed request head, and whether the connection may
    /// stay open after it.
    fn answer(&self, req: &Head<'_>) -> (Response, bool) {
        let keep_alive = req.keep_alive;
        if req.body != Body::Length(0) {
            // GET and HEAD carry no body here; rather than read one, refuse.
            return (Response::text(400, "a request body is not accepted"), false);
        }
        if req.method == "POST" && req.path() == "/faults" {
            return (self.state.change_faults(req.target), keep_alive);
        }
        if req.method != "GET" && req.method != "HEAD" {
            let mut r = Response::text(405, "only GET and HEAD");
            r.extra = "Allow: GET, HEAD\r\n";
            return (r, keep_alive);
        }
        let response = match req.path() {
            "/metrics" => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: self.state.metrics(),
                extra: "",
            },
            "/healthz" if self.state.health.is_healthy() => Response::text(200, "ok"),
            "/healthz" => Response::text(503, "a loop has failed"),
            "/readyz" if self.state.health.is_ready() => Response::text(200, "ready"),
            "/readyz" => Response::text(503, "shutting down"),
            "/faults" => Response::text(200, &self.state.faults()),
            _ => Response::text(404, "not found: try /metrics, /healthz or /readyz"),
        };
        (response, keep_alive)
    }
}

fn write(out: &mut Output<'_>, r: &Response, head_only: bool, close: bool) {
    let connection = if close { "Connection: close\r\n" } else { "" };
    out.write(
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{connection}{}\r\n",
            r.status,
            crate::service::http::response::reason(r.status),
            r.content_type,
            r.body.len(),
            r.extra
        )
        .as_bytes(),
    );
    if !head_only {
        out.write(r.body.as_bytes());
    }
}

impl Service for Admin {
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> usize {
        let mut used = 0;
        // The output contract: one answer at a time, only while output has room.
        while used < input.len() && out.room() > 0 {
            // head::parse reads only the first MAX_REQUEST bytes, so that the answer is the
            // same however the request arrived.
            let (response, keep) = match head::parse(&input[used..], MAX_REQUEST) {
                Parsed::Partial => break,
                Parsed::Complete(req) => {
                    let (response, keep) = self.answer(&req);
                    write(out, &response, req.is_head(), !keep);
                    used += req.len;
                    if keep {
                        continue;
                    }
                    out.finish();
                    return input.len();
                }
                Parsed::Refused(refusal) => (Response::text(refusal.status, refusal.reason), false),
            };
            write(out, &response, false, !keep);
            out.finish();
            return input.len();
        }
        used
    }

    fn input_limit(&self) -> Option<usize> {
        Some(MAX_REQUEST + 1)
    }
}

/// Decodes `%XX` escapes (and `+` as a space) in a query string.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad escape in the query at byte {i}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "the query is not UTF-8".to_string())
}

/// Where the admin endpoint listens, for logs.
pub fn describe(addr: SocketAddr) -> String {
    format!("admin=http://{addr}/metrics")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Harness;

    fn admin() -> Harness<Admin> {
        Harness::new(Admin {
            state: Arc::new(AdminState::new(Arc::default())),
        })
    }

    fn ask(h: &mut Harness<Admin>, request: &[u8]) -> (usize, String) {
        let used = h.input(request);
        (used, String::from_utf8(h.take_output()).unwrap())
    }

    /// Health and readiness, and readiness turning with the state.
    #[test]
    fn health_and_readiness() {
        let mut h = admin();
        let (_, r) = ask(&mut h, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nok\n"),
            "{r}"
        );
        let (_, r) = ask(&mut h, b"GET /readyz HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        h.service.state.health.not_ready();
        let (_, r) = ask(&mut h, b"GET /readyz HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        let (_, r) = ask(&mut h, b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n"),
            "health is not readiness: {r}"
        );
        assert!(!h.finished, "keep-alive");
    }

    /// Pipelined requests are answered in order; a partial one waits.
    #[test]
    fn pipelined_and_partial() {
        let mut h = admin();
        let two = b"GET /healthz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nGET /rea";
        let (used, r) = ask(&mut h, two);
        assert_eq!(used, two.len() - 8);
        let answers: Vec<&str> = r.split("HTTP/1.1 ").skip(1).collect();
        assert_eq!(answers.len(), 2, "{r}");
        assert!(
            answers[0].starts_with("200") && answers[1].starts_with("404"),
            "{r}"
        );
    }

    /// Refusals: 405 keeps the connection, 400 and 431 close it after the reply.
    #[test]
    fn refusals() {
        let mut h = admin();
        let (_, r) = ask(&mut h, b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 405 ") && r.contains("Allow: GET, HEAD\r\n"),
            "{r}"
        );
        assert!(!h.finished);
        let (_, r) = ask(
            &mut h,
            b"GET /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert!(
            r.starts_with("HTTP/1.1 400 ") && r.contains("Connection: close"),
            "{r}"
        );
        assert!(h.finished);

        let mut h = admin();
        let (_, r) = ask(&mut h, b"\x00\x01garbage\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        assert!(h.finished);

        let mut h = admin();
        let mut big = b"GET / HTTP/1.1\r\nX-Fill: ".to_vec();
        big.extend(vec![b'a'; MAX_REQUEST]);
        let (used, r) = ask(&mut h, &big);
        assert_eq!(used, big.len());
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        assert!(h.finished);
    }

    /// A head over the limit is refused with 431 however it arrives: whole (a malformed byte
    /// past the limit was once answered 400) or a little at a time. Found by the `admin` fuzz
    /// target.
    #[test]
    fn oversize_head_is_431_whatever_the_reads() {
        let mut request = b"GET / HTTP/1.1\r\nX-Fill: ".to_vec();
        request.extend(vec![b'a'; MAX_REQUEST]);
        request.extend(b"\x01\r\n\r\n");
        let mut h = admin();
        let (_, whole) = ask(&mut h, &request);
        let mut h = admin();
        assert_eq!(h.input(&request[..MAX_REQUEST]), 0, "a partial head waits");
        let (_, split) = ask(&mut h, &request);
        for r in [whole, split] {
            assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        }
    }

    /// HEAD gets the head only; HTTP/1.0 closes unless asked to keep alive.
    #[test]
    fn head_and_http_1_0() {
        let mut h = admin();
        let (_, r) = ask(&mut h, b"HEAD /healthz HTTP/1.1\r\n\r\n");
        assert!(r.ends_with("Content-Length: 3\r\n\r\n"), "{r}");
        let (_, r) = ask(&mut h, b"GET /healthz HTTP/1.0\r\n\r\n");
        assert!(r.contains("Connection: close"), "{r}");
        assert!(h.finished);
    }

    /// The metrics text names the process figures and the build even before the server is
    /// attached.
    #[test]
    fn metrics_without_a_server() {
        let text = AdminState::new(Arc::default()).metrics();
        for name in [
            "loopd_ready 1",
            "loopd_build_info{version=",
            "process_cpu_seconds_total ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
    }
}
