//! A relay in front of the registration server that mends one header.
//!
//! The kubelet's plugin-registration client sends the socket's path,
//! percent-encoded, as the HTTP/2 `:authority`. That is no valid authority,
//! and the h2 server under tonic resets the stream (PROTOCOL_ERROR). The
//! kubelet fixed this for its CSI calls (it names `localhost` there), not
//! for registration, so this relay decodes each request header block the
//! kubelet sends, sets `:authority` to `localhost`, and encodes it again;
//! every other frame, and everything the server answers, passes unchanged.
//!
//! HTTP/2 frames (RFC 9113 §4.1): a 9-byte header (24-bit length, type,
//! flags, 31-bit stream id), then the payload.

use std::path::{Path, PathBuf};

use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame read: the HTTP/2 default maximum frame size, which
/// the registration server does not raise.
const MAX_FRAME: usize = 16 * 1024;
/// The largest header block, continuations included.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// One frame's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub length: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

pub fn parse_header(bytes: &[u8; 9]) -> FrameHeader {
    FrameHeader {
        length: usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]),
        kind: bytes[3],
        flags: bytes[4],
        stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
    }
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = payload.len();
    let mut out = Vec::with_capacity(9 + length);
    out.extend_from_slice(&[
        (length >> 16) as u8,
        (length >> 8) as u8,
        length as u8,
        kind,
        flags,
    ]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A HEADERS frame's header block fragment, without padding or priority.
pub fn fragment(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    let mut start = 0;
    let mut end = payload.len();
    if flags & PADDED != 0 {
        let pad = usize::from(*payload.first()?);
        start += 1;
        end = end.checked_sub(pad)?;
    }
    if flags & PRIORITY != 0 {
        start += 5;
    }
    payload.get(start..end)
}

/// Decodes `block`, names `localhost` as the authority, encodes it again.
pub fn mend(decoder: &mut Decoder<'_>, encoder: &mut Encoder<'_>, block: &[u8]) -> Option<Vec<u8>> {
    let headers = decoder.decode(block).ok()?;
    let mended: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|(name, value)| {
            if name.as_slice() == b":authority" {
                (name.as_slice(), b"localhost".as_slice())
            } else {
                (name.as_slice(), value.as_slice())
            }
        })
        .collect();
    Some(encoder.encode(mended))
}

/// Relays every connection to `listener` to the server at `upstream`.
pub async fn relay(listener: UnixListener, upstream: PathBuf) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Err(error) = connection(client, &upstream).await {
                tracing::debug!(%error, "a registration connection ended");
            }
        });
    }
}

async fn connection(client: UnixStream, upstream: &Path) -> std::io::Result<()> {
    let server = UnixStream::connect(upstream).await?;
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let answers = tokio::io::copy(&mut from_server, &mut to_client);
    let requests = async {
        let mut preface = [0u8; 24];
        from_client.read_exact(&mut preface).await?;
        if preface != PREFACE {
            return Err(std::io::Error::other("not an HTTP/2 client"));
        }
        to_server.write_all(&preface).await?;
        let (mut decoder, mut encoder) = (Decoder::new(), Encoder::new());
        loop {
            let (header, payload) = read_frame(&mut from_client).await?;
            if header.kind != HEADERS {
                to_server
                    .write_all(&frame(header.kind, header.flags, header.stream, &payload))
                    .await?;
                continue;
            }
            let mut block = fragment(header.flags, &payload)
                .ok_or_else(|| std::io::Error::other("a malformed HEADERS frame"))?
                .to_vec();
            let mut flags = header.flags;
            while flags & END_HEADERS == 0 {
                let (next, more) = read_frame(&mut from_client).await?;
                if next.kind != CONTINUATION || block.len() + more.len() > MAX_HEADER_BLOCK {
                    return Err(std::io::Error::other("a malformed header block"));
                }
                block.extend_from_slice(&more);
                flags |= next.flags & END_HEADERS;
            }
            let mended = mend(&mut decoder, &mut encoder, &block)
                .ok_or_else(|| std::io::Error::other("an undecodable header block"))?;
            let flags = (header.flags & END_STREAM) | END_HEADERS;
            to_server
                .write_all(&frame(HEADERS, flags, header.stream, &mended))
                .await?;
        }
    };
    tokio::select! {
        result = answers => result.map(|_| ()),
        result = requests => result,
    }
}

async fn read_frame(
    reader: &mut tokio::net::unix::OwnedReadHalf,
) -> std::io::Result<(FrameHeader, Vec<u8>)> {
    let mut head = [0u8; 9];
    reader.read_exact(&mut head).await?;
    let header = parse_header(&head);
    if header.length > MAX_FRAME {
        return Err(std::io::Error::other("a frame larger than allowed"));
    }
    let mut payload = vec![0u8; header.length];
    reader.read_exact(&mut payload).await?;
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let bytes = frame(HEADERS, END_HEADERS | END_STREAM, 3, b"abc");
        let header = parse_header(bytes[..9].try_into().unwrap());
        assert_eq!(
            header,
            FrameHeader {
                length: 3,
                kind: HEADERS,
                flags: 5,
                stream: 3
            }
        );
        assert_eq!(&bytes[9..], b"abc");
    }

    #[test]
    fn padding_and_priority_are_stripped() {
        assert_eq!(fragment(0, b"xyz"), Some(&b"xyz"[..]));
        assert_eq!(fragment(PADDED, b"\x02xyz\0\0"), Some(&b"xyz"[..]));
        assert_eq!(fragment(PRIORITY, b"\0\0\0\x01\x10xyz"), Some(&b"xyz"[..]));
        assert_eq!(fragment(PADDED, b"\x09xy"), None);
    }

    #[test]
    fn the_authority_becomes_localhost_and_the_rest_is_kept() {
        let kubelet = [
            (&b":method"[..], &b"POST"[..]),
            (
                b":authority",
                b"%2Fvar%2Flib%2Fkubelet%2Fplugins_registry%2Fx-reg.sock",
            ),
            (b":path", b"/pluginregistration.Registration/GetInfo"),
            (b"content-type", b"application/grpc"),
        ];
        let mut client = Encoder::new();
        let (mut decoder, mut encoder) = (Decoder::new(), Encoder::new());
        let mut server = Decoder::new();
        // Twice: the second block refers to the dynamic table the first filled.
        for _ in 0..2 {
            let sent = client.encode(kubelet.iter().copied());
            let mended = mend(&mut decoder, &mut encoder, &sent).unwrap();
            let seen = server.decode(&mended).unwrap();
            let authority = seen.iter().find(|(n, _)| n == b":authority").unwrap();
            assert_eq!(authority.1, b"localhost");
            assert_eq!(seen.len(), 4);
            assert!(
                seen.iter()
                    .any(|(n, v)| n == b":path" && v.ends_with(b"GetInfo"))
            );
        }
        assert!(mend(&mut decoder, &mut encoder, &[0xff, 0xff, 0xff]).is_none());
    }
}
