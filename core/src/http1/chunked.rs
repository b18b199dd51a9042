//! The chunked body scanner (RFC 9112 §7.1).
//!
//! It neither copies nor re-encodes: it tells how many of the bytes given belong to the body,
//! where each run of chunk data lies ([`ChunkedDecoder::feed_payload`]), where the trailer
//! section starts and where the body (trailers included) ends. What the driver does with that
//! depends on the direction: a chunked *response* body goes to an HTTP/1.1 client as the
//! upstream framed it (the bytes as they came; the scanner finds its end) and to an HTTP/2
//! client as its payload runs and trailer section; a chunked *request* body is decoded into its
//! data runs and trailer section and re-framed for the upstream (the client's chunk sizes kept,
//! extensions dropped, the trailer fields a trailer must not carry sifted out) — never forwarded
//! as it came.
//!
//! ## States
//!
//! ```text
//!        hex digit (≤ 16)        ";"/ws          CR          LF, size > 0
//!   Size ───────────────▶ Size ───────▶ Ext ───────▶ SizeLf ────────────▶ Data ──▶ DataCr ─▶ DataLf ─┐
//!    ▲                     │ CR                        ▲ │ LF, size = 0                                │
//!    │                     └───────────────────────────┘ ▼                                            │
//!    │          TrailerStart ─ tchar ─▶ TrailerName ─ ":" ─▶ TrailerValue ─ CR ─▶ TrailerLf ─ LF ─┐     │
//!    │              ▲  │ CR                                                                     │     │
//!    │              │  ▼                                                                        │     │
//!    │              │ FinalLf ─ LF ─▶ Done                                                      │     │
//!    │              └───────────────────────────────────────────────────────────────────────────┘     │
//!    └────────────────────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Any unexpected byte moves to `Failed(error)`, which every later [`ChunkedDecoder::feed`]
//! returns again. Line endings are strictly CRLF (a bare LF is an error), a chunk size has at most
//! 16 hex digits, a size line's extensions at most [`MAX_CHUNK_EXTENSION_BYTES`], and the
//! trailer section (its field lines) at most `max_trailer_bytes`.
//!
//! ## Invariants
//!
//! - `consumed` never exceeds the input given, and `NeedMore` always consumes all of it;
//! - splitting the input differently never changes the result (the scanner keeps no lookahead).

use super::{HttpError, is_tchar, is_value_ctl};

/// The most bytes of chunk extensions (from the `;` or whitespace after the size up to the CR)
/// accepted on one chunk size line.
pub const MAX_CHUNK_EXTENSION_BYTES: usize = 4096;

/// What [`ChunkedDecoder::feed`] found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Chunked {
    /// All the input belongs to the body, which continues.
    NeedMore {
        /// Always the whole input length.
        consumed: usize,
    },
    /// The body ended after `consumed` bytes of the input; the rest belongs to the next message.
    Done {
        /// Bytes of the input that belong to the body.
        consumed: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Size { digits: u8, size: u64 },
    SizeWs { size: u64 },
    Ext { size: u64, len: usize },
    SizeLf { size: u64 },
    Data { remaining: u64 },
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
    Failed(HttpError),
}

/// Streaming scanner of one chunked body. Create one per body.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    max_trailer_bytes: usize,
    trailer_bytes: usize,
    payload: u64,
    /// Bytes consumed by earlier feeds.
    offset: u64,
    /// Where the trailer section starts (right after the last-chunk line), once reached.
    trailers_at: Option<u64>,
}

impl ChunkedDecoder {
    /// A scanner at the start of a body, accepting at most `max_trailer_bytes` of trailer field
    /// lines.
    #[must_use]
    pub fn new(max_trailer_bytes: usize) -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0, size: 0 },
            max_trailer_bytes,
            trailer_bytes: 0,
            payload: 0,
            offset: 0,
            trailers_at: None,
        }
    }

    /// Scans the next bytes of the body. After `Done`, further calls return
    /// `Done { consumed: 0 }`; after an error, the same error.
    pub fn feed(&mut self, input: &[u8]) -> Result<Chunked, HttpError> {
        let mut i = 0;
        loop {
            match &mut self.state {
                State::Done => {
                    self.offset += i as u64;
                    return Ok(Chunked::Done { consumed: i });
                }
                State::Failed(e) => return Err(e.clone()),
                _ if i == input.len() => {
                    self.offset += i as u64;
                    return Ok(Chunked::NeedMore { consumed: i });
                }
                State::Data { remaining } => {
                    let available = (input.len() - i) as u64;
                    let take = (*remaining).min(available);
                    *remaining -= take;
                    // take ≤ available, a usize.
                    i += take as usize;
                    self.payload += take;
                    if *remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    let b = input[i];
                    i += 1;
                    if let Err(e) = self.step(b) {
                        self.state = State::Failed(e.clone());
                        return Err(e);
                    }
                    if self.trailers_at.is_none() && self.state == State::TrailerStart {
                        self.trailers_at = Some(self.offset + i as u64);
                    }
                }
            }
        }
    }

    /// Like [`ChunkedDecoder::feed`], but stops after the first run of chunk data and says
    /// where it lies in `input`: for a driver that forwards the payload without the chunked
    /// framing (as HTTP/2 DATA). Returns what was consumed (the framing before the run and the
    /// run itself) and the run, if one was reached.
    pub fn feed_payload(
        &mut self,
        input: &[u8],
    ) -> Result<(Chunked, Option<std::ops::Range<usize>>), HttpError> {
        let mut i = 0;
        loop {
            if let State::Data { remaining } = self.state
                && i < input.len()
            {
                let take = remaining.min((input.len() - i) as u64) as usize;
                self.feed(&input[i..i + take])?;
                return Ok((Chunked::NeedMore { consumed: i + take }, Some(i..i + take)));
            }
            // Framing: one byte at a time, so that the scan stops where the data starts.
            let end = (i + 1).min(input.len());
            match self.feed(&input[i..end])? {
                Chunked::Done { consumed } => {
                    return Ok((
                        Chunked::Done {
                            consumed: i + consumed,
                        },
                        None,
                    ));
                }
                Chunked::NeedMore { consumed } => {
                    i += consumed;
                    if i == input.len() {
                        return Ok((Chunked::NeedMore { consumed: i }, None));
                    }
                }
            }
        }
    }

    /// Data bytes of the current chunk still to come: more than 0 only inside a chunk's data
    /// (a driver that re-frames the payload learns from it where a chunk ends, and so how large
    /// the chunk a run starts is).
    #[must_use]
    pub fn chunk_left(&self) -> u64 {
        match self.state {
            State::Data { remaining } => remaining,
            _ => 0,
        }
    }

    /// Bytes of chunk data scanned so far (without the framing).
    #[must_use]
    pub fn payload_bytes(&self) -> u64 {
        self.payload
    }

    /// Where the trailer section (its field lines, then the final CRLF) starts, counted in body
    /// bytes from the start of the body, once the last chunk's size line was scanned: a driver
    /// that rewrites the trailers forwards the body up to here as it came.
    #[must_use]
    pub fn trailers_start(&self) -> Option<u64> {
        self.trailers_at
    }

    /// Whether the body ended.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn step(&mut self, b: u8) -> Result<(), HttpError> {
        self.state = match self.state {
            State::Size { digits, size } => match (b, hex(b)) {
                (_, Some(v)) if digits < 16 => State::Size {
                    digits: digits + 1,
                    size: size << 4 | v,
                },
                (_, Some(_)) => return Err(HttpError::ChunkSizeTooLong),
                _ if digits == 0 => return Err(HttpError::InvalidChunkSize { byte: b }),
                (b'\r', _) => State::SizeLf { size },
                (b';', _) => State::Ext { size, len: 1 },
                (b' ' | b'\t', _) => State::SizeWs { size },
                (b'\n', _) => return Err(HttpError::ChunkSizeLineEnding),
                _ => return Err(HttpError::InvalidChunkSize { byte: b }),
            },
            // Whitespace after the size is only allowed before an extension (BWS ";").
            State::SizeWs { size } => match b {
                b' ' | b'\t' => State::SizeWs { size },
                b';' => State::Ext { size, len: 1 },
                _ => return Err(HttpError::InvalidChunkSize { byte: b }),
            },
            State::Ext { size, len } => match b {
                b'\r' => State::SizeLf { size },
                b'\n' => return Err(HttpError::ChunkSizeLineEnding),
                _ if is_value_ctl(b) => return Err(HttpError::InvalidChunkSize { byte: b }),
                _ if len >= MAX_CHUNK_EXTENSION_BYTES => {
                    return Err(HttpError::ChunkExtensionTooLong {
                        limit: MAX_CHUNK_EXTENSION_BYTES,
                    });
                }
                _ => State::Ext { size, len: len + 1 },
            },
            State::SizeLf { size } => match b {
                b'\n' if size == 0 => State::TrailerStart,
                b'\n' => {
                    // The sizes so far must still add up within a u64.
                    self.payload
                        .checked_add(size)
                        .ok_or(HttpError::ChunkedBodyTooLarge)?;
                    State::Data { remaining: size }
                }
                _ => return Err(HttpError::ChunkSizeLineEnding),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(HttpError::ChunkDataNotTerminated),
            },
            State::DataLf => match b {
                b'\n' => State::Size { digits: 0, size: 0 },
                _ => return Err(HttpError::ChunkDataNotTerminated),
            },
            State::TrailerStart => match b {
                b'\r' => State::FinalLf,
                _ if is_tchar(b) => {
                    self.count_trailer()?;
                    State::TrailerName
                }
                _ => return Err(HttpError::InvalidTrailer),
            },
            State::TrailerName => {
                self.count_trailer()?;
                match b {
                    b':' => State::TrailerValue,
                    _ if is_tchar(b) => State::TrailerName,
                    _ => return Err(HttpError::InvalidTrailer),
                }
            }
            State::TrailerValue => {
                self.count_trailer()?;
                match b {
                    b'\r' => State::TrailerLf,
                    _ if is_value_ctl(b) => return Err(HttpError::InvalidTrailer),
                    _ => State::TrailerValue,
                }
            }
            State::TrailerLf => {
                self.count_trailer()?;
                match b {
                    b'\n' => State::TrailerStart,
                    _ => return Err(HttpError::InvalidTrailer),
                }
            }
            State::FinalLf => match b {
                b'\n' => State::Done,
                _ => return Err(HttpError::InvalidTrailer),
            },
            State::Data { .. } | State::Done | State::Failed(_) => {
                unreachable!("feed handles {:?}", self.state)
            }
        };
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), HttpError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.max_trailer_bytes {
            return Err(HttpError::TrailersTooLarge {
                limit: self.max_trailer_bytes,
            });
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}
