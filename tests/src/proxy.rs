//! A TCP proxy on loopback for tests that cut a connection mid-run and reopen it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};

use anyhow::Result;

/// A TCP proxy on loopback that a test can cut and reopen, to break connections mid-run.
pub struct Proxy {
    pub addr: SocketAddr,
    inner: std::sync::Arc<ProxyInner>,
}

struct ProxyInner {
    open: std::sync::atomic::AtomicBool,
    conns: std::sync::Mutex<Vec<TcpStream>>,
}

impl Proxy {
    /// Listens on `ip` (a free port) and forwards to `upstream`.
    pub fn start(ip: Ipv4Addr, upstream: SocketAddr) -> Result<Proxy> {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind((ip, 0))?;
        let addr = listener.local_addr()?;
        let inner = std::sync::Arc::new(ProxyInner {
            open: std::sync::atomic::AtomicBool::new(true),
            conns: std::sync::Mutex::new(Vec::new()),
        });
        let shared = inner.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !shared.open.load(Ordering::SeqCst) {
                    drop(client); // refused while cut
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let pipes = [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ];
                if let Ok(mut conns) = shared.conns.lock() {
                    conns.push(client);
                    conns.push(server);
                }
                for pipe in pipes {
                    if let (Ok(mut from), Ok(mut to)) = pipe {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                }
            }
        });
        Ok(Proxy { addr, inner })
    }

    /// Breaks every connection and refuses new ones.
    pub fn cut(&self) {
        use std::sync::atomic::Ordering;
        self.inner.open.store(false, Ordering::SeqCst);
        if let Ok(mut conns) = self.inner.conns.lock() {
            for c in conns.drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Accepts connections again.
    pub fn reopen(&self) {
        self.inner.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
