//! Frames on tokio streams: length first, checked against the limit before
//! the body is read, so a peer cannot make us allocate more than one packet.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::{Frame, FrameError, LENGTH_LEN};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed packet: {0}")]
    Frame(#[from] FrameError),
    #[error("the connection closed in the middle of a packet")]
    Truncated,
}

/// Reads one packet; `Ok(None)` when the peer closed cleanly between packets.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Frame>, ReadError> {
    let mut prefix = [0u8; LENGTH_LEN];
    let mut filled = 0;
    while filled < LENGTH_LEN {
        let n = reader.read(&mut prefix[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(ReadError::Truncated)
            };
        }
        filled += n;
    }
    let length = Frame::declared_length(prefix)?;
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ReadError::Truncated
        } else {
            ReadError::Io(e)
        }
    })?;
    Ok(Some(Frame::decode_body(&body)?))
}

/// Writes one packet (not flushed; call `flush` after a batch).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &Frame,
) -> Result<(), ReadError> {
    let bytes = frame.encode()?;
    writer.write_all(&bytes).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{ContentType, Pin, RefId};

    #[tokio::test]
    async fn reads_what_was_written_and_reports_truncation() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let f = Frame::single(ContentType::Sync, Pin(3), RefId(4), vec![9; 1000]);
        write_frame(&mut a, &f).await.unwrap();
        write_frame(&mut a, &f).await.unwrap();
        a.flush().await.unwrap();
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap(), f);
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap(), f);
        let bytes = f.encode().unwrap();
        a.write_all(&bytes[..500]).await.unwrap();
        drop(a);
        assert!(matches!(
            read_frame(&mut b).await,
            Err(ReadError::Truncated)
        ));

        let (mut a, mut b) = tokio::io::duplex(64);
        drop(a.write_all(&[0xFF, 0xFF, 0xFF, 0xFF]).await);
        assert!(matches!(
            read_frame(&mut b).await,
            Err(ReadError::Frame(FrameError::BadLength(_)))
        ));
        drop(a);
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert!(read_frame(&mut b).await.unwrap().is_none());
    }
}
