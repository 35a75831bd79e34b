//! The echo servers a user would pick instead of loopd, as the comparison runs them: each
//! is the canonical program for its model, with TCP_NODELAY set as loopd sets it and the
//! 1 KiB read buffer of the tokio README's echo example.
//!
//! The comparison bench runs itself again as a child process with `LOOPD_PEER` set to run
//! one of these, so each server is its own process (for RSS and `perf -p`) and can be
//! pinned to a core. Each logs `listening on echo=ADDR` as loopd does.

use std::io::{Read, Write};
use std::net::TcpListener;

/// Buffer per connection, as in the canonical examples.
const BUF: usize = 1024;

/// Runs the peer named by `LOOPD_PEER`, if set; never returns in that case.
pub fn serve_if_asked() {
    match std::env::var("LOOPD_PEER").as_deref() {
        Ok("tokio") => tokio_echo(),
        Ok("threads") => thread_per_connection_echo(),
        Ok(other) => panic!("unknown peer {other}"),
        Err(_) => return,
    }
    std::process::exit(0);
}

/// accept + spawn + read/write_all on a tokio runtime with one worker thread.
fn tokio_echo() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        eprintln!("listening on echo={}", listener.local_addr().unwrap());
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = [0; BUF];
                loop {
                    let n = match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if socket.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// One blocking thread per connection.
fn thread_per_connection_echo() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    eprintln!("listening on echo={}", listener.local_addr().unwrap());
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        s.set_nodelay(true).unwrap();
        // Small stacks: an echo loop needs little, and 10,000 threads must fit.
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut buf = [0; BUF];
                loop {
                    let n = match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            })
            .unwrap();
    }
}
