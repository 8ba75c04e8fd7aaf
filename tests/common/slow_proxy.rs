//! A loopback TCP proxy in front of a real Redis that holds every reply for a set delay.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback TCP proxy that holds every reply from Redis for `delay` before passing it on.
pub struct SlowProxy {
    pub port: u16,
    delay_ms: Arc<AtomicU64>,
    /// Replies read from Redis and not yet passed on.
    held: Arc<AtomicUsize>,
}

impl SlowProxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        let held = Arc::new(AtomicUsize::new(0));
        let held_by_task = held.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let delay = delay.clone();
                let held = held_by_task.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let (mut client_rx, mut client_tx) = client.into_split();
                    let (mut server_rx, mut server_tx) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = server_rx.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        held.fetch_add(1, Ordering::SeqCst);
                        let ms = delay.load(Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        let sent = client_tx.write_all(&buf[..n]).await;
                        held.fetch_sub(1, Ordering::SeqCst);
                        if sent.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self {
            port,
            delay_ms,
            held,
        }
    }

    /// Replies held back right now; 0 once every delayed reply has been passed on.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(u64::try_from(delay.as_millis()).unwrap(), Ordering::SeqCst);
    }
}
