//! Bytes of resident memory per idle connection.
//!
//! Run with `cargo bench -p loopd-bench --bench footprint`. The release `loopd` runs as its own process;
//! 10,000 echo connections each make one 64-byte round trip and then sit idle. The growth of
//! the server's resident set (VmRSS) divided by 10,000 is the cost of an idle connection in
//! user memory (kernel socket memory is not in RSS and is the same for any server). Target:
//! at most 128 bytes.

mod support;

use support::start_loopd;

const IDLE_CONNECTIONS: usize = 10_000;

fn main() {
    loopd::rlimit::raise_nofile_limit().expect("raise the open-files limit");
    let server = start_loopd(None, &["--max-connections", "20000"]);
    let per = support::idle_footprint(&server, IDLE_CONNECTIONS);
    println!("resident memory per idle connection ({IDLE_CONNECTIONS} echo connections, one round trip each)");
    println!("  loopd: {per:.0} bytes per connection (target <= 128)");
    println!(
        "  in-process: Connection is {} bytes; idle buffers own 0 bytes",
        std::mem::size_of::<loopd::connection::Connection<mio::net::TcpStream>>()
    );
}
