//! loopd behind real load balancers, started by the tests: HAProxy (`send-proxy`,
//! `send-proxy-v2`, `check-send-proxy` health checks) and nginx's `stream` module
//! (`proxy_protocol on`). Through each, 10 MiB echo byte-exact with the client's half-close
//! carried through, and `WHOAMI` answers with the test client's address, not the proxy's.
//! (loopd-bench's tests put two loopd backends behind HAProxy for `--per-backend`.)

mod common;

use std::net::{SocketAddr, TcpStream};

use common::daemon::Daemon;
use common::*;

/// Every `SERVICE=ADDR` the daemon listens on, in order (services may repeat).
fn listeners(daemon: &Daemon, service: &str) -> Vec<SocketAddr> {
    daemon
        .addrs()
        .into_iter()
        .filter(|(s, _)| s == service)
        .map(|(_, a)| a)
        .collect()
}

/// The value of one of loopd's per-listener samples.
fn sample(admin: SocketAddr, name: &str, service: &str, addr: SocketAddr, extra: &str) -> f64 {
    let text = http_get(admin, "/metrics").body;
    let s = format!("{name}{{service=\"{service}\",listener=\"{addr}\"{extra}}}");
    metric(&text, &s).unwrap_or_else(|| panic!("no {s} in\n{text}"))
}

/// Connects once the proxy listens on `port`.
fn connect_when_up(port: u16, proxy: &Daemon) -> TcpStream {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let c = wait_until(&format!("the proxy on {addr} ({:?})", proxy.log()), || {
        TcpStream::connect(addr).ok()
    });
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.set_write_timeout(Some(PATIENCE)).unwrap();
    c
}

/// Through the proxy on `port`: 10 MiB echoed byte-exact, the client's FIN carried to loopd
/// and loopd's back (the exchange ends in EOF only if both half-closes pass through).
fn ten_mib_with_half_close(port: u16, proxy: &Daemon, seed: u64) {
    let data = pattern(seed, 10 << 20);
    let mut c = connect_when_up(port, proxy);
    let echoed = exchange(&mut c, &data, 64 * 1024);
    assert_eq!(echoed.len(), data.len(), "10 MiB back");
    assert!(echoed == data, "echoed bytes differ");
}

/// `WHOAMI` through the proxy on `port` names this client's own address.
fn whoami_is_the_client(port: u16, proxy: &Daemon) {
    let mut c = connect_when_up(port, proxy);
    let me = c.local_addr().unwrap().to_string();
    std::io::Write::write_all(&mut c, b"WHOAMI\n").unwrap();
    let answer = read_n(&mut c, me.len() + 2);
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("{me}\r\n"),
        "the client's address, not the proxy's"
    );
}

#[test]
fn behind_haproxy_v1_and_v2() {
    let loopd = Daemon::start(&[
        "-l",
        "echo=127.0.0.1:0,proxy",
        "-l",
        "echo=127.0.0.1:0,proxy",
        "-l",
        "line=127.0.0.1:0,proxy",
        "--admin",
        "127.0.0.1:0",
    ]);
    let echo = listeners(&loopd, "echo");
    let (v1_echo, v2_echo) = (echo[0], echo[1]);
    let line = loopd.addr_of("line");
    let admin = loopd.addr_of("admin");
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let config = format!(
        "{HAPROXY_DEFAULTS}
listen echo_v1
    bind 127.0.0.1:{p0}
    server loopd {v1_echo} send-proxy check check-send-proxy inter 100ms
listen echo_v2
    bind 127.0.0.1:{p1}
    server loopd {v2_echo} send-proxy-v2 check check-send-proxy inter 100ms
listen line_v1
    bind 127.0.0.1:{p2}
    server loopd {line} send-proxy
listen line_v2
    bind 127.0.0.1:{p3}
    server loopd {line} send-proxy-v2
",
        p0 = ports[0],
        p1 = ports[1],
        p2 = ports[2],
        p3 = ports[3],
    );
    let (proxy, _scratch) = haproxy(&config);

    ten_mib_with_half_close(ports[0], &proxy, 1);
    ten_mib_with_half_close(ports[1], &proxy, 2);
    whoami_is_the_client(ports[2], &proxy);
    whoami_is_the_client(ports[3], &proxy);

    // The health checks carry a header too: v2 checks are LOCAL (the proxy's own
    // connection), and no check or connection was refused.
    let outcome = |addr: SocketAddr, o: &str| {
        sample(
            admin,
            "loopd_proxy_connections_total",
            "echo",
            addr,
            &format!(",outcome=\"{o}\""),
        )
    };
    wait_until("v2 health checks (LOCAL) arriving", || {
        (outcome(v2_echo, "local") >= 2.0).then_some(())
    });
    for addr in [v1_echo, v2_echo] {
        for refusal in ["untrusted", "malformed", "too_long", "timeout", "truncated"] {
            assert_eq!(outcome(addr, refusal), 0.0, "{refusal} on {addr}");
        }
        assert!(outcome(addr, "proxied") >= 1.0);
    }
    // The transfers ended with the client's FIN, passed through HAProxy.
    let closed_by_peer = |addr| {
        sample(
            admin,
            "loopd_connections_closed_total",
            "echo",
            addr,
            ",reason=\"peer\"",
        )
    };
    assert!(closed_by_peer(v1_echo) >= 1.0 && closed_by_peer(v2_echo) >= 1.0);
}

#[test]
fn behind_nginx_stream() {
    let module = nginx_stream_module();
    let loopd = Daemon::start(&[
        "-l",
        "echo=127.0.0.1:0,proxy",
        "-l",
        "line=127.0.0.1:0,proxy",
        "--admin",
        "127.0.0.1:0",
    ]);
    let (echo, line, admin) = (
        loopd.addr_of("echo"),
        loopd.addr_of("line"),
        loopd.addr_of("admin"),
    );
    let (p_echo, p_line) = (free_port(), free_port());
    let scratch = Scratch::new("nginx");
    let config = format!(
        "load_module {module};
daemon off;
worker_processes 1;
error_log stderr warn;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
stream {{
    server {{
        listen 127.0.0.1:{p_echo};
        proxy_pass {echo};
        proxy_protocol on;
        proxy_half_close on;
    }}
    server {{
        listen 127.0.0.1:{p_line};
        proxy_pass {line};
        proxy_protocol on;
    }}
}}
",
        module = module.display(),
        dir = scratch.0.display(),
    );
    let proxy = Nginx::start(&scratch, &config);
    let proxy = &proxy.0;

    ten_mib_with_half_close(p_echo, proxy, 3);
    whoami_is_the_client(p_line, proxy);
    let proxied = sample(
        admin,
        "loopd_proxy_connections_total",
        "echo",
        echo,
        ",outcome=\"proxied\"",
    );
    assert!(proxied >= 1.0);
    let closed_by_peer = sample(
        admin,
        "loopd_connections_closed_total",
        "echo",
        echo,
        ",reason=\"peer\"",
    );
    assert!(
        closed_by_peer >= 1.0,
        "the client's FIN passed through nginx"
    );
}
