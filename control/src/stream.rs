//! Stream transports of the driver (TCP and TLS, RFC 3261 §18): accept
//! loops, one task per connection, messages framed by Content-Length
//! ([`wire::sip::framing`]), the RFC 5626 §4.4.1 CRLF keep-alive answered
//! with a pong, and connection reuse: responses and requests to a peer go
//! out on the connection it came in on, or on one we opened before.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc as tmpsc;
use wire::sip::framing;

use crate::transport::{ConnId, Peer, Transport};

/// Largest amount of unframed bytes a connection may hold (a header
/// section plus a large body).
const MAX_BUFFERED: usize = 256 * 1024;

/// The connection table shared by the core thread and the connection tasks.
#[derive(Clone)]
pub(crate) struct Streams {
    table: Arc<Mutex<Table>>,
    next: Arc<AtomicU64>,
    input: mpsc::Sender<crate::driver::Input>,
    runtime: tokio::runtime::Handle,
}

#[derive(Default)]
struct Table {
    by_id: HashMap<ConnId, (Peer, tmpsc::UnboundedSender<Vec<u8>>)>,
    by_addr: HashMap<(Transport, SocketAddr), ConnId>,
}

impl Streams {
    pub(crate) fn new(
        input: mpsc::Sender<crate::driver::Input>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            table: Arc::default(),
            next: Arc::new(AtomicU64::new(1)),
            input,
            runtime,
        }
    }

    /// Accepts TCP connections on `listener`.
    pub(crate) fn serve_tcp(&self, listener: TcpListener) {
        let this = self.clone();
        self.runtime.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, addr)) => {
                        let _ = stream.set_nodelay(true);
                        this.adopt(stream, Transport::Tcp, addr);
                    }
                    Err(e) => tracing::warn!(error = %e, "SIP TCP accept failed"),
                }
            }
        });
    }

    /// Accepts TLS connections on `listener`.
    pub(crate) fn serve_tls(&self, listener: TcpListener, config: Arc<rustls::ServerConfig>) {
        let this = self.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        self.runtime.spawn(async move {
            loop {
                let (stream, addr) = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "SIP TLS accept failed");
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let this = this.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    match acceptor.accept(stream).await {
                        Ok(tls) => {
                            this.adopt(tls, Transport::Tls, addr);
                        }
                        Err(e) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                    }
                });
            }
        });
    }

    /// Sends on the peer's connection (or one to its address); opens a TCP
    /// connection when there is none. Outgoing TLS needs a connection the
    /// peer opened (UAs behind NAT keep theirs); otherwise it is dropped
    /// and counted by the caller as a send error (returns false).
    pub(crate) fn send(&self, peer: Peer, bytes: Vec<u8>) -> bool {
        let tx = {
            let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            peer.conn
                .and_then(|c| table.by_id.get(&c))
                .or_else(|| {
                    table
                        .by_addr
                        .get(&(peer.transport, peer.addr))
                        .and_then(|c| table.by_id.get(c))
                })
                .map(|(_, tx)| tx.clone())
        };
        match tx {
            Some(tx) => tx.send(bytes).is_ok(),
            None if peer.transport == Transport::Tcp => {
                let this = self.clone();
                self.runtime.spawn(async move {
                    match TcpStream::connect(peer.addr).await {
                        Ok(stream) => {
                            let _ = stream.set_nodelay(true);
                            let tx = this.adopt(stream, Transport::Tcp, peer.addr);
                            let _ = tx.send(bytes);
                        }
                        Err(e) => tracing::debug!(%peer, error = %e, "SIP TCP connect failed"),
                    }
                });
                true
            }
            None => false,
        }
    }

    /// Connections open now.
    pub(crate) fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_id
            .len()
    }

    /// Registers a connection and starts its task.
    fn adopt<S>(
        &self,
        stream: S,
        transport: Transport,
        addr: SocketAddr,
    ) -> tmpsc::UnboundedSender<Vec<u8>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let id = ConnId(self.next.fetch_add(1, Ordering::Relaxed));
        let peer = Peer {
            transport,
            addr,
            conn: Some(id),
        };
        let (tx, rx) = tmpsc::unbounded_channel();
        {
            let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            table.by_id.insert(id, (peer, tx.clone()));
            table.by_addr.insert((transport, addr), id);
        }
        let this = self.clone();
        self.runtime.spawn(async move {
            this.run(stream, peer, rx).await;
            let mut table = this.table.lock().unwrap_or_else(PoisonError::into_inner);
            table.by_id.remove(&id);
            if table.by_addr.get(&(transport, addr)) == Some(&id) {
                table.by_addr.remove(&(transport, addr));
            }
        });
        tx
    }

    async fn run<S>(&self, stream: S, peer: Peer, mut out: tmpsc::UnboundedReceiver<Vec<u8>>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        loop {
            tokio::select! {
                n = rd.read_buf(&mut buf) => {
                    match n {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    match self.frame(&mut buf, peer) {
                        Framing::Ok { pongs } => {
                            for _ in 0..pongs {
                                //= https://www.rfc-editor.org/rfc/rfc5626#section-4.4.1
                                //# When a server receives a double CRLF (a "ping"), it MUST
                                //# send a single CRLF (a "pong") back
                                if wr.write_all(b"\r\n").await.is_err() {
                                    return;
                                }
                            }
                        }
                        Framing::Close => return,
                    }
                }
                msg = out.recv() => {
                    let Some(msg) = msg else { return };
                    if wr.write_all(&msg).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Hands every complete message in `buf` to the core.
    fn frame(&self, buf: &mut Vec<u8>, peer: Peer) -> Framing {
        let mut pongs = 0;
        loop {
            if buf.starts_with(b"\r\n\r\n") {
                buf.drain(..4);
                pongs += 1;
                continue;
            }
            if framing::leading_crlf_len(buf) == buf.len() {
                return Framing::Ok { pongs };
            }
            match framing::message_len(buf) {
                Ok(Some(n)) => {
                    let msg: Vec<u8> = buf.drain(..n).collect();
                    if self
                        .input
                        .send(crate::driver::Input::Datagram(peer, msg))
                        .is_err()
                    {
                        return Framing::Close;
                    }
                }
                Ok(None) if buf.len() <= MAX_BUFFERED => return Framing::Ok { pongs },
                // The stream cannot be resynchronised (RFC 3261 §18.3).
                Ok(None) | Err(_) => {
                    tracing::debug!(%peer, "unframeable SIP stream; closing");
                    return Framing::Close;
                }
            }
        }
    }
}

enum Framing {
    Ok { pongs: usize },
    Close,
}
