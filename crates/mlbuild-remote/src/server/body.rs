//! Streaming bodies between hyper's async side and blocking file, hash and zstd work.
//!
//! A multi-GiB blob must never sit in memory, and zstd and BLAKE3 are synchronous, CPU
//! bound code: so a blocking thread does the work and a bounded channel carries chunks
//! to or from the connection. The bound is the server's memory per transfer
//! (`CHANNEL_CHUNKS` x `CHUNK`). Main types: [`ChannelBody`], [`ChannelReader`].

use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// Bytes per chunk read from a file.
pub const CHUNK: usize = 256 << 10;
/// Chunks in flight per transfer.
pub const CHANNEL_CHUNKS: usize = 4;

/// A response body fed by a blocking producer.
pub struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    len: Option<u64>,
}

impl ChannelBody {
    /// A body and the sender its producer writes to; `len` is the exact length when known
    /// (sent as `Content-Length`).
    pub fn new(len: Option<u64>) -> (ChannelBody, mpsc::Sender<io::Result<Bytes>>) {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        (ChannelBody { rx, len }, tx)
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        match self.len {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// A blocking `Read` over chunks an async task receives from a request body.
pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    pub fn new() -> (ChannelReader, mpsc::Sender<io::Result<Bytes>>) {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        (
            ChannelReader {
                rx,
                current: Bytes::new(),
            },
            tx,
        )
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A writer that forwards what it is given to a [`ChannelBody`] in chunks, so a zstd
/// encoder can stream its output to the connection from a blocking thread.
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    /// Bytes handed to the connection.
    pub sent: u64,
}

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
            sent: 0,
        }
    }

    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.sent += chunk.len() as u64;
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send_buf()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}
