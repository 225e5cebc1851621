//! A TCP proxy for the lost-connection tests: forwards connections to a server, and on
//! command cuts every connection it carries, or black-holes them — holds every byte both ways
//! and every new connection, without closing anything, as a network partition does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; dropping it stops it.
pub struct Proxy {
    address: SocketAddr,
    /// Bumped by `cut`: every connection older than the new value closes.
    generation: watch::Sender<u64>,
    black_hole: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free local port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (generation, watching) = watch::channel(0u64);
        let black_hole = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (hole, count) = (black_hole.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let (mut cut, hole) = (watching.clone(), hole.clone());
                let born = *cut.borrow_and_update();
                tokio::spawn(async move {
                    // A new connection during a black hole waits, as a SYN would, unanswered.
                    while hole.load(Ordering::SeqCst) {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = pump(&mut client_read, &mut server_write, &hole);
                    let down = pump(&mut server_read, &mut client_write, &hole);
                    tokio::select! {
                        () = up => {}
                        () = down => {}
                        _ = cut.wait_for(|generation| *generation > born) => {}
                    }
                });
            }
        });
        Self { address, generation, black_hole, accepted, task }
    }

    /// The proxy's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every connection it carries now (new ones go through).
    pub fn cut(&self) {
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// Holds (true) or lets through (false) every byte and every new connection.
    pub fn black_hole(&self, on: bool) {
        self.black_hole.store(on, Ordering::SeqCst);
    }

    /// How many connections it accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Copies bytes from `from` to `to`, holding them while the black hole is on.
async fn pump(from: &mut (impl AsyncReadExt + Unpin), to: &mut (impl AsyncWriteExt + Unpin), hole: &AtomicBool) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let Ok(read) = from.read(&mut buffer).await else { return };
        if read == 0 {
            return;
        }
        while hole.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
