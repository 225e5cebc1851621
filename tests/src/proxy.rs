//! A TCP proxy for the lost-connection tests: forwards connections to a server, and on
//! command cuts every connection it carries, or black-holes them — holds every byte both ways
//! and every new connection, without closing anything, as a network partition does —, or
//! loses the reply to a request: the request reaches the server, which carries it out and
//! commits, and the connection breaks before the client hears a byte of the answer.

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
    lose: Arc<LostReplies>,
    task: tokio::task::JoinHandle<()>,
}

/// The replies to lose: to the next `count` requests whose bytes contain `pattern` — or, with
/// `at_commit`, to the `COMMIT`s of the next `count` transactions one of whose requests does.
#[derive(Default)]
struct LostReplies {
    armed: std::sync::Mutex<Armed>,
    lost: AtomicU64,
}

#[derive(Default)]
struct Armed {
    pattern: Vec<u8>,
    count: u32,
    at_commit: bool,
}

fn contains(bytes: &[u8], pattern: &[u8]) -> bool {
    !pattern.is_empty() && bytes.windows(pattern.len()).any(|w| w == pattern)
}

impl LostReplies {
    /// True (and one fewer to lose) if `bytes` is a request whose reply is to be lost;
    /// `seen` is whether the connection's transaction sent the pattern already.
    fn take(&self, bytes: &[u8], seen: &mut bool) -> bool {
        let mut armed = self.armed.lock().unwrap();
        let matched = contains(bytes, &armed.pattern);
        let commit = contains(bytes, b"COMMIT");
        let lose = armed.count > 0
            && match armed.at_commit {
                false => matched,
                true => commit && (*seen || matched),
            };
        *seen = (*seen || matched) && !commit;
        if lose {
            armed.count -= 1;
            self.lost.fetch_add(1, Ordering::SeqCst);
        }
        lose
    }
}

impl Proxy {
    /// Listens on a free local port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (generation, watching) = watch::channel(0u64);
        let black_hole = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let lose = Arc::new(LostReplies::default());
        let (hole, count, losing) = (black_hole.clone(), accepted.clone(), lose.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let (mut cut, hole, losing) = (watching.clone(), hole.clone(), losing.clone());
                let born = *cut.borrow_and_update();
                tokio::spawn(async move {
                    // A new connection during a black hole waits, as a SYN would, unanswered.
                    while hole.load(Ordering::SeqCst) {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let swallow = AtomicBool::new(false);
                    let up = pump_requests(&mut client_read, &mut server_write, &hole, &losing, &swallow);
                    let down = pump_replies(&mut server_read, &mut client_write, &hole, &swallow);
                    tokio::select! {
                        () = up => {}
                        () = down => {}
                        _ = cut.wait_for(|generation| *generation > born) => {}
                    }
                });
            }
        });
        Self { address, generation, black_hole, accepted, lose, task }
    }

    /// Loses the replies to the next `count` requests that contain `pattern` (an execution's
    /// id among a statement's parameters, or `COMMIT`): each request goes to the server,
    /// which carries it out to the end of its transaction (committed, or autocommitted); then
    /// the connection is cut, and the client hears nothing of it.
    pub fn lose_replies(&self, pattern: &str, count: u32) {
        *self.lose.armed.lock().unwrap() = Armed { pattern: pattern.as_bytes().to_vec(), count, at_commit: false };
    }

    /// Loses the replies to the `COMMIT`s of the next `count` transactions one of whose
    /// requests contains `pattern` (a statement's parameter): the server commits, and the
    /// connection is cut before the client hears it.
    pub fn lose_commit_replies(&self, pattern: &str, count: u32) {
        *self.lose.armed.lock().unwrap() = Armed { pattern: pattern.as_bytes().to_vec(), count, at_commit: true };
    }

    /// How many replies it lost so far.
    pub fn lost(&self) -> u64 {
        self.lose.lost.load(Ordering::SeqCst)
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

/// Copies requests from the client to the server, holding them while the black hole is on;
/// a request whose reply is to be lost sets `swallow` before it goes.
async fn pump_requests(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    hole: &AtomicBool,
    lose: &LostReplies,
    swallow: &AtomicBool,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    let mut seen = false;
    loop {
        let Ok(read) = from.read(&mut buffer).await else { return };
        if read == 0 {
            return;
        }
        while hole.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if !swallow.load(Ordering::SeqCst) && lose.take(&buffer[..read], &mut seen) {
            swallow.store(true, Ordering::SeqCst);
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// PostgreSQL's ReadyForQuery with the session idle: the server finished what it was sent
/// and no transaction is open (it committed, or the statement autocommitted).
const READY_IDLE: &[u8] = b"Z\0\0\0\x05I";

/// Copies replies from the server to the client, holding them while the black hole is on;
/// once `swallow` is set, drops every byte until the server says it is idle again, then
/// returns (the connection is cut).
async fn pump_replies(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    hole: &AtomicBool,
    swallow: &AtomicBool,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    let mut swallowed: Vec<u8> = Vec::new();
    loop {
        let Ok(read) = from.read(&mut buffer).await else { return };
        if read == 0 {
            return;
        }
        while hole.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if swallow.load(Ordering::SeqCst) {
            swallowed.extend_from_slice(&buffer[..read]);
            if swallowed.windows(READY_IDLE.len()).any(|w| w == READY_IDLE) {
                return;
            }
            continue;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
