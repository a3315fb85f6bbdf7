//! CMIME: the e-mail service's messages, inside `Cmime` envelopes.
//!
//! The plaintext of a [`ContentType::Cmime`](crate::ContentType::Cmime)
//! envelope is one [`Cmime`] value as JSON (the envelope compresses it).
//! The packet's RefID says which message it is about:
//!
//! | From   | Message          | RefID of the packet                     |
//! |--------|------------------|-----------------------------------------|
//! | server | [`MailItem`]     | the new message's RefID                 |
//! | server | `more`           | a fresh RefID; `of` names the message   |
//! | server | `attachment`     | a fresh RefID; `of` names the message   |
//! | server | `state`          | a fresh RefID; `of` names the message   |
//! | server | `send_status`    | a fresh RefID; `of` names the compose   |
//! | device | [`Compose`]      | the new message's RefID (its identity:  |
//! |        |                  | sent twice, it is submitted once)       |
//! | device | `more_request`, `attachment_request`, `state` | fresh    |
//!
//! Seed: the Messaging Agent sends the first part of a message (here the
//! first [`FIRST_PART`] bytes of text) and the list of attachments; the user
//! asks for "More" and for attachments; a reply or forward from the
//! smartphone names the original by RefID and the server adds the original
//! text from the mailbox, so the smartphone never sends it back.

use serde::{Deserialize, Serialize};

use crate::RefId;

/// Bytes of body text sent with a new message and with each "More".
pub const FIRST_PART: usize = 2048;

/// One CMIME message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Cmime {
    /// A new message from the user's mailbox.
    Mail(MailItem),
    /// The next part of a message's text.
    More {
        of: RefId,
        offset: usize,
        text: String,
        /// More text follows after this part.
        more: bool,
    },
    /// One attachment, on request.
    Attachment {
        of: RefId,
        index: usize,
        name: String,
        content_type: String,
        /// Standard base64.
        data_base64: String,
    },
    /// Read/unread or deleted, either direction (wireless reconciliation).
    State {
        of: RefId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        read: Option<bool>,
        #[serde(default)]
        deleted: bool,
    },
    /// What became of a message the device sent.
    SendStatus {
        of: RefId,
        status: SendState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A message written on the device.
    Compose(Compose),
    /// "More": the text after `offset` of message `of`.
    MoreRequest { of: RefId, offset: usize },
    /// An attachment of message `of`.
    AttachmentRequest { of: RefId, index: usize },
    /// The server could not do what the device asked about `of`.
    Failed {
        of: RefId,
        code: String,
        message: String,
    },
}

/// A new message as the smartphone first sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailItem {
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    pub subject: String,
    /// RFC 3339, when the message says; else when it arrived.
    pub date: String,
    #[serde(default)]
    pub priority: bool,
    /// The first part of the text (HTML reduced to text).
    pub text: String,
    /// Length of the whole text, in bytes.
    pub text_len: usize,
    /// More text follows: ask with `more_request`.
    pub more: bool,
    #[serde(default)]
    pub attachments: Vec<AttachmentInfo>,
    #[serde(default)]
    pub read: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentInfo {
    pub index: usize,
    pub name: String,
    pub content_type: String,
    pub size: usize,
}

/// A message written on the smartphone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Compose {
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    #[serde(default)]
    pub bcc: Vec<String>,
    pub subject: String,
    pub text: String,
    /// A reply to this message (its original text is added by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<RefId>,
    /// A forward of this message (its text is added by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_of: Option<RefId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendState {
    /// Stored by the server; it will be submitted (and retried) from there.
    Accepted,
    /// Submitted to the mail server.
    Sent,
    /// The mail server refused it for good.
    Failed,
}

/// Why bytes are not a CMIME message.
#[derive(Debug, thiserror::Error)]
#[error("not a CMIME message: {0}")]
pub struct CmimeError(#[from] serde_json::Error);

impl Cmime {
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing these types cannot fail (no maps with non-string keys).
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Cmime, CmimeError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// The part of `text` from byte `offset` of at most [`FIRST_PART`] bytes,
/// cut on a character boundary; and whether more follows.
pub fn part(text: &str, offset: usize) -> (&str, bool) {
    let mut start = offset.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (start + FIRST_PART).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[start..end], end < text.len())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_and_names_the_type() {
        let m = Cmime::MoreRequest {
            of: RefId(0xAB),
            offset: 2048,
        };
        let bytes = m.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"type\":\"more_request\""), "{text}");
        assert!(text.contains("00000000000000AB"), "{text}");
        assert_eq!(Cmime::from_bytes(&bytes).unwrap(), m);
        assert!(Cmime::from_bytes(b"{\"type\":\"nope\"}").is_err());
    }

    #[test]
    fn parts_cut_on_character_boundaries() {
        let text = "é".repeat(2000); // 4000 bytes
        let (first, more) = part(&text, 0);
        assert!(more);
        assert!(first.len() <= FIRST_PART && first.len() >= FIRST_PART - 1);
        let (second, more) = part(&text, first.len());
        assert!(!more);
        assert_eq!(first.len() + second.len(), text.len());
        assert_eq!(part("short", 0), ("short", false));
        assert_eq!(part("short", 99), ("", false));
    }
}
