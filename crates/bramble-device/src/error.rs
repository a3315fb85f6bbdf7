//! What can go wrong on a device's link.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bramble_proto::envelope::EnvelopeError;
use bramble_proto::frame::FrameError;
use bramble_proto::io::ReadError;
use bramble_proto::ContentType;

/// Why a link could not be made, or ended, or a message could not be sent.
///
/// Cloneable, so the reason a link ended can be handed to every caller of
/// [`Connection::closed`](crate::Connection::closed).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("no answer to the device hello within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("the link was refused: {0}")]
    Refused(String),
    #[error("the peer closed the connection before accepting the device")]
    HandshakeClosed,
    #[error("unexpected during the handshake: {0}")]
    Unexpected(String),
    #[error("connection failed: {0}")]
    Io(#[source] Arc<std::io::Error>),
    #[error("malformed packet from the peer: {0}")]
    Malformed(#[source] FrameError),
    #[error("the peer closed the connection in the middle of a packet")]
    Truncated,
    #[error("writing to the peer took longer than {0:?}")]
    WriteTimeout(Duration),
    #[error("the connection is closed")]
    Closed,
    #[error("this device has no current transport key (it is not activated)")]
    NoKey,
    #[error("message of {size} bytes is larger than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("{0:?} packets are not end-to-end messages and cannot be sent with send()")]
    NotAMessage(ContentType),
    #[error("cannot seal the message: {0}")]
    Envelope(#[source] EnvelopeError),
    #[error("cannot frame the message: {0}")]
    Frame(#[source] FrameError),
    #[error("address lookup refused ({code}): {message}")]
    Lookup {
        /// `NO_SERVICE_BOOK` (refused by the device itself), `TIMEOUT`, or
        /// the server's code (`LOOKUP_QUERY_TOO_SHORT`, `LOOKUP_DISABLED`,
        /// `LOOKUP_DIRECTORY_FAILED`, …).
        code: String,
        message: String,
    },
    #[error("activation failed: {message}")]
    Activation {
        /// A stable code: `WRONG_PASSWORD`, `MAIL_NOT_SENT`, `REFUSED`
        /// (with the server's code in the message), `SERVER_NOT_VERIFIED`
        /// (the answer did not prove knowledge of the password: an
        /// impostor), `TIMEOUT`, `PROTOCOL`.
        code: &'static str,
        message: String,
    },
}

impl DeviceError {
    /// The activation did not finish within `limit`.
    pub fn activation_timeout(limit: Duration) -> DeviceError {
        DeviceError::activation(
            "TIMEOUT",
            format!("no answer from the enterprise server within {limit:?}; check the e-mail address and try again"),
        )
    }

    pub(crate) fn activation(code: &'static str, message: impl Into<String>) -> DeviceError {
        DeviceError::Activation {
            code,
            message: message.into(),
        }
    }
}

impl From<ReadError> for DeviceError {
    fn from(e: ReadError) -> DeviceError {
        match e {
            ReadError::Io(e) => DeviceError::Io(Arc::new(e)),
            ReadError::Frame(e) => DeviceError::Malformed(e),
            ReadError::Truncated => DeviceError::Truncated,
        }
    }
}

impl From<std::io::Error> for DeviceError {
    fn from(e: std::io::Error) -> DeviceError {
        DeviceError::Io(Arc::new(e))
    }
}

impl From<EnvelopeError> for DeviceError {
    fn from(e: EnvelopeError) -> DeviceError {
        DeviceError::Envelope(e)
    }
}

impl From<FrameError> for DeviceError {
    fn from(e: FrameError) -> DeviceError {
        DeviceError::Frame(e)
    }
}
