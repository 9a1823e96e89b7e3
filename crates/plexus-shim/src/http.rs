//! The smallest HTTP/1.1 client that speaks to plexusd: one request per connection
//! (`Connection: close`), a body with `Content-Length`, and an answer read to the end. The daemon
//! is our own (hyper) and local, so chunked transfer, redirects, TLS and keep-alive are not
//! needed; see the crate docs for why this is not an HTTP client crate.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The daemon's largest answer we read (a CNI result is a few KiB).
const MAX_REPLY: u64 = 16 << 20;

/// What the first read of the answer (and of stdin) is sized for.
pub const READ_CHUNK: usize = 64 << 10;

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why no answer came.
#[derive(Debug)]
pub enum Error {
    /// No daemon listening (no socket, refused): nothing was sent.
    Connect(std::io::Error),
    /// The connection broke or timed out after the request was (perhaps) sent: the daemon died,
    /// restarted or hung mid-request.
    Exchange(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "cannot connect: {e}"),
            Error::Exchange(e) => write!(f, "no answer: {e}"),
        }
    }
}

/// POSTs `body` (JSON) to `path` on the daemon at `socket`; `timeout` bounds each read and write.
pub fn post(socket: &Path, path: &str, body: &[u8], timeout: Duration) -> Result<Reply, Error> {
    let mut stream = UnixStream::connect(socket).map_err(Error::Connect)?;
    let ex = |e: std::io::Error| Error::Exchange(e.to_string());
    stream.set_read_timeout(Some(timeout)).map_err(ex)?;
    stream.set_write_timeout(Some(timeout)).map_err(ex)?;
    // One write for head and body: one system call here, and the daemon finds the whole request
    // in its first read instead of waking up once for each part.
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: plexusd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).map_err(ex)?;
    stream.flush().map_err(ex)?;
    // A CNI result fits: read in one go rather than from a small first guess upwards.
    let mut raw = Vec::with_capacity(READ_CHUNK);
    (&mut stream)
        .take(MAX_REPLY)
        .read_to_end(&mut raw)
        .map_err(ex)?;
    parse(&raw).map_err(Error::Exchange)
}

/// Parses a whole `Connection: close` answer.
fn parse(raw: &[u8]) -> Result<Reply, String> {
    if raw.is_empty() {
        return Err("the connection closed without an answer".to_owned());
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("an incomplete answer")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "a non-text header")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or("a bad status line")?;
    let mut body = raw[split + 4..].to_vec();
    let mut length = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            }
            if k.eq_ignore_ascii_case("transfer-encoding") {
                return Err(format!("unsupported transfer encoding {}", v.trim()));
            }
        }
    }
    if let Some(n) = length {
        if body.len() < n {
            return Err(format!(
                "the answer was cut short ({} of {n} bytes)",
                body.len()
            ));
        }
        body.truncate(n);
    }
    Ok(Reply { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_content_length_answer() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
    }

    #[test]
    fn refuses_cut_short_empty_and_chunked_answers() {
        assert!(parse(b"").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}").is_err());
        assert!(
            parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
                .is_err()
        );
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-le").is_err());
    }
}
