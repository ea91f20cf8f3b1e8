//! The generator's HTTP/1.1 client: one request in flight on a keep-alive
//! connection, written as bytes and framed with `httparse`.
//!
//! Why not hyper's client: the generator shares the cores with the server
//! it measures, so every µs it spends per request is taken from the server.
//! hyper's client hands each request and its answer between the caller and
//! the connection through channels and allocates per request; this client
//! formats the request into a reused buffer, makes one TLS write, and
//! parses the answer in place. It speaks only what the generator needs:
//! `GET` and `POST` with a fixed body; answers framed by `Content-Length`,
//! chunked transfer coding or the connection's close (RFC 9112 §6.3).

use std::io::Write as _;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Error;

/// Largest answer head or body accepted (an answer beyond is an error).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// A transport: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One keep-alive connection.
pub struct Conn {
    io: Box<dyn Io>,
    /// Bytes read and not yet consumed (the start of the next answer).
    read: BytesMut,
    /// The request being written (reused).
    request: Vec<u8>,
    /// The server said it closes the connection after this answer.
    closing: bool,
}

/// What an answer's head says.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    /// Length of the status line and headers, blank line included.
    len: usize,
    body: Body,
    /// `Connection: close`.
    close: bool,
}

/// How the body of an answer is framed.
#[derive(Debug, PartialEq, Eq)]
enum Body {
    Length(usize),
    Chunked,
    /// Up to the end of the connection.
    UntilClose,
}

impl Conn {
    pub fn new(io: Box<dyn Io>) -> Self {
        Self {
            io,
            read: BytesMut::with_capacity(16 * 1024),
            request: Vec::with_capacity(512),
            closing: false,
        }
    }

    /// False once the server has said it closes the connection: open a
    /// new one for the next request.
    pub fn reusable(&self) -> bool {
        !self.closing
    }

    /// Sends `METHOD path` with `headers` (each `Name: value`, no line end)
    /// and `body` (`Content-Length` added when `Some`), reads the whole
    /// answer; `Ok(Err(..))` for a non-2xx answer. An `Err` means the
    /// connection is unusable.
    pub async fn send(
        &mut self,
        method: &str,
        path: impl std::fmt::Display,
        headers: &[impl AsRef<str>],
        body: Option<&[u8]>,
    ) -> Result<Result<(), String>, Error> {
        self.request.clear();
        write!(self.request, "{method} {path} HTTP/1.1\r\n")?;
        for h in headers {
            self.request.extend_from_slice(h.as_ref().as_bytes());
            self.request.extend_from_slice(b"\r\n");
        }
        if let Some(body) = body {
            write!(self.request, "Content-Length: {}\r\n\r\n", body.len())?;
            self.request.extend_from_slice(body);
        } else {
            self.request.extend_from_slice(b"\r\n");
        }
        self.io.write_all(&self.request).await?;
        self.io.flush().await?;
        self.answer().await
    }

    /// Reads one answer, leaving whatever follows it in the buffer.
    async fn answer(&mut self) -> Result<Result<(), String>, Error> {
        let head = loop {
            if let Some(head) = parse_head(&self.read)? {
                if (100..200).contains(&head.status) {
                    // An interim answer (100 Continue): the real one follows.
                    self.read.advance(head.len);
                    continue;
                }
                break head;
            }
            self.fill("answer head").await?;
        };
        self.closing = head.close;
        let body_len = match head.body {
            Body::Length(n) => {
                while self.read.len() < head.len + n {
                    self.fill("answer body").await?;
                }
                n
            }
            Body::Chunked => loop {
                if let Some(n) = chunked_len(&self.read[head.len..])? {
                    break n;
                }
                self.fill("chunked answer body").await?;
            },
            Body::UntilClose => {
                self.closing = true;
                loop {
                    if self.read.len() > MAX_ANSWER {
                        return Err("answer body too large".into());
                    }
                    if self.io.read_buf(&mut self.read).await? == 0 {
                        break self.read.len() - head.len;
                    }
                }
            }
        };
        let outcome = if (200..300).contains(&head.status) {
            Ok(())
        } else {
            let encoded = &self.read[head.len..head.len + body_len];
            let body = match head.body {
                Body::Chunked => chunked_data(encoded),
                _ => encoded.to_vec(),
            };
            let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]);
            Err(format!("HTTP {}: {snippet}", head.status))
        };
        self.read.advance(head.len + body_len);
        Ok(outcome)
    }

    /// Reads more of the answer; the end of the connection is an error.
    async fn fill(&mut self, what: &str) -> Result<(), Error> {
        if self.read.len() > MAX_ANSWER {
            return Err(format!("{what} too large").into());
        }
        if self.io.read_buf(&mut self.read).await? == 0 {
            return Err(format!("connection closed in the {what}").into());
        }
        Ok(())
    }
}

/// The answer head at the start of `buf`, `None` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut answer = httparse::Response::new(&mut headers);
    let len = match answer.parse(buf)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let status = answer.code.ok_or("answer without a status")?;
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    for h in answer.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("bad Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length headers".into());
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked is the last coding when present (RFC 9112 §6.1).
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= h
                .value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        Body::Length(0)
    } else if chunked {
        Body::Chunked
    } else if let Some(n) = length {
        if n > MAX_ANSWER {
            return Err("answer body too large".into());
        }
        Body::Length(n)
    } else {
        Body::UntilClose
    };
    Ok(Some(Head {
        status,
        len,
        body,
        close,
    }))
}

/// The encoded length of the complete chunked body (last chunk and
/// trailers included) at the start of `buf`, `None` while incomplete.
fn chunked_len(buf: &[u8]) -> Result<Option<usize>, Error> {
    chunks(buf, |_| {})
}

/// The data of the complete chunked body at the start of `buf`.
fn chunked_data(buf: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    // An error or an incomplete body leaves what was decoded so far.
    let _ = chunks(buf, |chunk| data.extend_from_slice(chunk));
    data
}

/// Walks the chunked body at the start of `buf`, handing each chunk's data
/// to `on_data`; answers as [`chunked_len`].
fn chunks(buf: &[u8], mut on_data: impl FnMut(&[u8])) -> Result<Option<usize>, Error> {
    let mut pos = 0;
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        let (line, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err("bad chunk size".into()),
        };
        pos += line;
        if size == 0 {
            break;
        }
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| pos.checked_add(s)?.checked_add(2))
            .filter(|&end| end <= MAX_ANSWER)
            .ok_or("answer body too large")?;
        let Some(data_end) = buf.get(end - 2..end) else {
            return Ok(None);
        };
        if data_end != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        on_data(buf.get(pos..end - 2).unwrap_or_default());
        pos = end;
    }
    // Trailer fields, up to an empty line.
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        pos += eol + 2;
        if eol == 0 {
            return Ok(Some(pos));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_says_its_framing_status_and_close() {
        let got = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello").unwrap();
        assert_eq!(
            got,
            Some(Head {
                status: 200,
                len: 39,
                body: Body::Length(12),
                close: false
            })
        );
        let got = parse_head(
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: gzip, Chunked\r\nConnection: keep-alive, close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (got.status, got.body, got.close),
            (404, Body::Chunked, true)
        );
        let got = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(got.body, Body::UntilClose);
        let got = parse_head(b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(got.body, Body::Length(0));
    }

    #[test]
    fn an_incomplete_head_asks_for_more_and_a_bad_one_fails() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                .is_err()
        );
        assert!(parse_head(b"SMTP ready\r\n\r\n").is_err());
    }

    #[test]
    fn a_chunked_body_is_measured_once_complete() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        assert_eq!(chunked_len(body).unwrap(), Some(body.len() - 4));
        for cut in 0..body.len() - 4 {
            assert_eq!(chunked_len(&body[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(chunked_len(b"0\r\n\r\n").unwrap(), Some(5));
        assert_eq!(chunked_data(body), b"hello!");
        assert!(chunked_len(b"5\r\nhelloXX0\r\n\r\n").is_err());
        assert!(chunked_len(b"zz\r\n").is_err());
        assert!(chunked_len(b"ffffffffffffffff\r\n").is_err());
    }

    /// A whole exchange over an in-memory pipe: keep-alive answers framed
    /// both ways, an error status, then a close-delimited answer.
    #[tokio::test]
    async fn answers_are_framed_on_one_connection() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let serve = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let answers: [&[u8]; 3] = [
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\n\r\nuntil close",
            ];
            for answer in answers {
                let n = server.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                server.write_all(answer).await.unwrap();
            }
            drop(server);
            got
        });
        let mut conn = Conn::new(Box::new(client));
        let post = conn
            .send(
                "POST",
                format_args!("/v1/k{}", 1),
                &["Host: h"],
                Some(b"{}"),
            )
            .await
            .unwrap();
        assert_eq!(post, Ok(()));
        assert!(conn.reusable());
        let get = conn
            .send("GET", format_args!("/v1/k2"), &[] as &[&str], None)
            .await
            .unwrap();
        assert_eq!(get, Err("HTTP 400: bad".to_owned()));
        let get = conn
            .send("GET", format_args!("/v1/k3"), &[] as &[&str], None)
            .await
            .unwrap();
        assert_eq!(get, Ok(()));
        assert!(!conn.reusable());
        let sent = String::from_utf8(serve.await.unwrap()).unwrap();
        assert_eq!(
            sent,
            "POST /v1/k1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}\
             GET /v1/k2 HTTP/1.1\r\n\r\n\
             GET /v1/k3 HTTP/1.1\r\n\r\n"
        );
    }
}
