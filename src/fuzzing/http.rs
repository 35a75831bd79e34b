//! The HTTP parsers on their own: the request head ([`http_head`]) and the chunked decoder
//! ([`chunked`]). The `http` service in a whole connection is [`super::stream::http`].

use crate::service::http::chunked::{self, ChunkError};
use crate::service::http::head::{self, Parsed};

use super::input::{Input, Rng};

/// The request head parser on every prefix of the input, with a head limit the first two
/// bytes choose. Once an answer is given (a head, or a refusal) every longer prefix gives
/// the same answer: what follows a head cannot change it, so the answer never depends on how
/// the bytes arrived. `Partial` never outlasts the limit, and a head is never longer than
/// the bytes given or than the limit.
pub fn http_head(data: &[u8]) {
    let mut input = Input::new(data);
    let max_head = 1 + usize::from(input.u16()) % (2 * head::MAX_HEAD);
    let stream = input.rest();
    let mut settled: Option<(usize, Parsed<'_>)> = None;
    for n in 0..=stream.len() {
        let parsed = head::parse(&stream[..n], max_head);
        match (&settled, parsed) {
            (Some((at, first)), now) => assert!(
                *first == now,
                "the answer at {at} bytes changed at {n}: {first:?} then {now:?}"
            ),
            (None, Parsed::Partial) => {
                assert!(
                    n <= max_head,
                    "still partial at {n} bytes, limit {max_head}"
                )
            }
            (None, Parsed::Complete(h)) => {
                assert!(h.len <= n && h.len <= max_head, "{h:?} from {n} bytes");
                settled = Some((n, parsed));
            }
            (None, Parsed::Refused(_)) => settled = Some((n, parsed)),
        }
    }
}

/// The chunked decoder: the body whole, then cut where the seed says (as the connection
/// offers what it holds followed by new bytes). The data, where the body ends, and the
/// error, are the same however it is cut; the data is never longer than the body; a body
/// that ends is accepted again as the exact prefix that made it.
pub fn chunked(data: &[u8]) {
    let mut input = Input::new(data);
    let seed = u64::from(input.u32());
    let body = input.rest();
    let whole = chunked::decode_all(body, &[]);
    let mut rng = Rng::new(seed);
    let cuts: Vec<usize> = (0..rng.below(8))
        .map(|_| rng.below(body.len() + 1))
        .collect();
    let split = chunked::decode_all(body, &cuts);
    assert_eq!(whole, split, "cut at {cuts:?}");
    match whole {
        Ok((data, Some(rest))) => {
            assert!(data.len() < body.len());
            let end = body.len() - rest;
            assert_eq!(chunked::decode_all(&body[..end], &[]), Ok((data, Some(0))));
        }
        Ok((data, None)) => assert!(data.len() <= body.len()),
        Err(ChunkError::Malformed | ChunkError::SizeOverflow | ChunkError::FramingTooLong) => {}
    }
}
