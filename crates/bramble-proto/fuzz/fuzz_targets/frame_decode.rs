//! Frame::decode on arbitrary bytes: Ok or a typed error, never a panic.
//! On Ok the consumed bytes re-encode exactly, and the stream reader of
//! `bramble_proto::io` (what a socket sees) agrees with `decode` on every
//! input, packet after packet.
#![no_main]

use bramble_proto::frame::{Frame, FrameError, HEADER_LEN, LENGTH_LEN, MAX_PACKET};
use bramble_proto::io::{read_frame, ReadError};
use bramble_proto_fuzz::poll_ready;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    // A stream of packets, as a link carries them; stop at the first error.
    loop {
        let decoded = Frame::decode(rest);
        let mut reader = rest;
        let read = poll_ready(read_frame(&mut reader)).expect("reading from memory never waits");
        match decoded {
            Ok((frame, used)) => {
                assert!(
                    (LENGTH_LEN + HEADER_LEN..=MAX_PACKET).contains(&used),
                    "used {used}"
                );
                assert!(used <= rest.len());
                let again = frame.encode().expect("a decoded frame re-encodes");
                assert_eq!(
                    again,
                    &rest[..used],
                    "re-encoding differs from the bytes decoded"
                );
                assert_eq!(
                    Frame::decode_body(&rest[LENGTH_LEN..used]).as_ref(),
                    Ok(&frame)
                );
                assert!(frame.fragment_index < frame.fragment_count);
                match read {
                    Ok(Some(f)) => assert_eq!(f, frame),
                    other => panic!("decode gave a frame, read_frame gave {other:?}"),
                }
                assert_eq!(
                    rest.len() - reader.len(),
                    used,
                    "read_frame consumed a different length"
                );
                rest = &rest[used..];
                if rest.is_empty() {
                    break;
                }
            }
            Err(FrameError::Incomplete) => {
                if rest.len() >= LENGTH_LEN {
                    let prefix = [rest[0], rest[1], rest[2], rest[3]];
                    let length = Frame::declared_length(prefix)
                        .expect("incomplete only with a valid length");
                    assert!(
                        rest.len() < LENGTH_LEN + length,
                        "incomplete although the packet is all there"
                    );
                }
                match read {
                    Ok(None) => assert!(rest.is_empty()),
                    Err(ReadError::Truncated) => assert!(!rest.is_empty()),
                    other => panic!("decode said incomplete, read_frame gave {other:?}"),
                }
                break;
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                match read {
                    Err(ReadError::Frame(f)) => assert_eq!(f, e),
                    other => panic!("decode said {e:?}, read_frame gave {other:?}"),
                }
                break;
            }
        }
    }
});
