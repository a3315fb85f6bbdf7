//! Reading mailbox messages (with mail-parser) into what the smartphone
//! sees, and what filters look at.

use bramble_proto::cmime::{self, AttachmentInfo, MailItem};
use mail_parser::{Address, MessageParser, MimeHeaders};

use crate::db::models::message_filter::Importance;

/// A mailbox message, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub subject: String,
    pub date: Option<String>,
    pub importance: Importance,
    pub message_id: String,
    /// The whole text (HTML reduced to text when there is no plain part).
    pub text: String,
    pub attachments: Vec<AttachmentInfo>,
    /// The `etp.dat` of a device's activation request (an attachment of
    /// that name in a message marked `X-Bramble-Activation` or with the
    /// request's subject), if this is one.
    pub activation_request: Option<Vec<u8>>,
}

fn addresses(address: Option<&Address<'_>>) -> Vec<String> {
    address
        .map(|a| {
            a.iter()
                .map(|addr| match (addr.name(), addr.address()) {
                    (Some(name), Some(email)) => format!("{name} <{email}>"),
                    (None, Some(email)) => email.to_owned(),
                    (Some(name), None) => name.to_owned(),
                    (None, None) => String::new(),
                })
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Reads a raw message. Never fails: a message mail-parser cannot read
/// still reaches the user, with a note saying so (seed: nothing is lost).
pub fn parse(raw: &[u8]) -> Parsed {
    let Some(message) = MessageParser::default().parse(raw) else {
        return Parsed {
            from: String::new(),
            to: Vec::new(),
            cc: Vec::new(),
            bcc: Vec::new(),
            subject: "(message could not be read)".to_owned(),
            date: None,
            importance: Importance::Normal,
            message_id: String::new(),
            text: "This message is not valid MIME and could not be read on the server. \
                   Open it in the mailbox from a computer."
                .to_owned(),
            attachments: Vec::new(),
            activation_request: None,
        };
    };
    let importance = importance(
        message.header("Importance").and_then(|h| h.as_text()),
        message.header("X-Priority").and_then(|h| h.as_text()),
    );
    let mut text = message
        .body_text(0)
        .map(|t| t.into_owned())
        .unwrap_or_default();
    if text.is_empty() && message.attachments().next().is_none() && message.subject().is_none() {
        // Nothing mail-parser recognized: show the bytes as text rather
        // than an empty message.
        text = String::from_utf8_lossy(&raw[..raw.len().min(64 * 1024)]).into_owned();
    }
    let marked = message.header("X-Bramble-Activation").is_some()
        || message.subject() == Some(bramble_proto::activation::REQUEST_SUBJECT);
    let activation_request = marked
        .then(|| {
            message
                .attachments()
                .find(|part| part.attachment_name() == Some(bramble_proto::activation::ETP_FILE))
                .map(|part| part.contents().to_vec())
        })
        .flatten();
    let attachments = message
        .attachments()
        .enumerate()
        .map(|(index, part)| AttachmentInfo {
            index,
            name: part
                .attachment_name()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("attachment-{}", index + 1)),
            content_type: part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{sub}", ct.ctype()),
                    None => ct.ctype().to_owned(),
                })
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
            size: part.contents().len(),
        })
        .collect();
    Parsed {
        from: addresses(message.from())
            .into_iter()
            .next()
            .unwrap_or_default(),
        to: addresses(message.to()),
        cc: addresses(message.cc()),
        bcc: addresses(message.bcc()),
        subject: message.subject().unwrap_or("").to_owned(),
        date: message.date().map(|d| d.to_rfc3339()),
        importance,
        message_id: message.message_id().unwrap_or("").to_owned(),
        text,
        attachments,
        activation_request,
    }
}

/// `Importance: high` or `X-Priority: 1 (Highest)` / `2`.
fn importance(header: Option<&str>, x_priority: Option<&str>) -> Importance {
    if let Some(h) = header {
        match h.trim().to_ascii_lowercase().as_str() {
            "high" => return Importance::High,
            "low" => return Importance::Low,
            _ => {}
        }
    }
    match x_priority.and_then(|p| p.trim().chars().next()) {
        Some('1') | Some('2') => Importance::High,
        Some('4') | Some('5') => Importance::Low,
        _ => Importance::Normal,
    }
}

/// One attachment's bytes, by index in the order of [`Parsed::attachments`].
pub fn attachment(raw: &[u8], index: usize) -> Option<(AttachmentInfo, Vec<u8>)> {
    let message = MessageParser::default().parse(raw)?;
    let parsed = parse(raw);
    let info = parsed.attachments.get(index)?.clone();
    let part = message.attachments().nth(index)?;
    Some((info, part.contents().to_vec()))
}

impl Parsed {
    /// What the smartphone gets first: headers, the first part of the text,
    /// the list of attachments. `cut` notes a message fetched only in part.
    pub fn item(&self, priority: bool, read: bool, cut: Option<u64>) -> MailItem {
        let mut text = self.text.clone();
        if let Some(size) = cut {
            text.push_str(&format!(
                "\n\n[This message is {} MB; only its beginning was sent to the smartphone.]",
                size / (1024 * 1024)
            ));
        }
        let (first, more) = cmime::part(&text, 0);
        MailItem {
            from: self.from.clone(),
            to: self.to.clone(),
            cc: self.cc.clone(),
            subject: self.subject.clone(),
            date: self.date.clone().unwrap_or_default(),
            priority,
            text: first.to_owned(),
            text_len: text.len(),
            more,
            attachments: self.attachments.clone(),
            read,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn headers_text_and_attachments() {
        let raw = b"From: Alice <alice@example.com>\r\nTo: bob@example.com, carol@example.com\r\n\
Cc: dave@example.com\r\nSubject: Quarterly =?utf-8?q?r=C3=A9sum=C3=A9?=\r\nImportance: High\r\n\
Message-ID: <q1@example.com>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
<p>Hello <b>Bob</b></p>\r\n--XX\r\nContent-Type: application/pdf; name=r.pdf\r\n\
Content-Disposition: attachment; filename=r.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--XX--\r\n";
        let p = parse(raw);
        assert_eq!(p.from, "Alice <alice@example.com>");
        assert_eq!(p.to, vec!["bob@example.com", "carol@example.com"]);
        assert_eq!(p.cc, vec!["dave@example.com"]);
        assert_eq!(p.subject, "Quarterly résumé");
        assert_eq!(p.importance, Importance::High);
        assert_eq!(p.message_id, "q1@example.com");
        assert!(p.text.contains("Hello") && p.text.contains("Bob") && !p.text.contains("<b>"));
        assert_eq!(p.attachments.len(), 1);
        assert_eq!(p.attachments[0].name, "r.pdf");
        assert_eq!(p.attachments[0].content_type, "application/pdf");
        let (info, bytes) = attachment(raw, 0).unwrap();
        assert_eq!(info.name, "r.pdf");
        assert_eq!(bytes, b"%PDF-");
    }

    #[test]
    fn unknown_charsets_and_garbage_still_read() {
        let raw = b"Subject: x\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\nplain words\r\n";
        let p = parse(raw);
        assert!(p.text.contains("plain words"), "{p:?}");
        let p = parse(b"");
        assert!(p.subject.contains("could not be read"));
        let p = parse(b"\x00\xff\xfe not a message at all");
        assert!(!p.subject.is_empty() || !p.text.is_empty());
    }

    #[test]
    fn an_activation_request_is_recognized_by_its_mark_and_attachment() {
        let request = |header: &str, name: &str| {
            format!(
                "Subject: hello\r\n{header}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
                 --b\r\nContent-Type: text/plain\r\n\r\nrequest\r\n\
                 --b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename={name}\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\neyJ4IjoxfQ==\r\n--b--\r\n"
            )
        };
        let marked = parse(request("X-Bramble-Activation: 1\r\n", "etp.dat").as_bytes());
        assert_eq!(
            marked.activation_request.as_deref(),
            Some(&br#"{"x":1}"#[..])
        );
        // The attachment alone, or the mark on another attachment, is mail.
        assert!(parse(request("", "etp.dat").as_bytes())
            .activation_request
            .is_none());
        assert!(
            parse(request("X-Bramble-Activation: 1\r\n", "other.dat").as_bytes())
                .activation_request
                .is_none()
        );
    }

    #[test]
    fn first_part_is_two_kilobytes() {
        let p = Parsed {
            from: "a".into(),
            to: vec![],
            cc: vec![],
            bcc: vec![],
            subject: "s".into(),
            date: None,
            importance: Importance::Normal,
            message_id: String::new(),
            text: "x".repeat(5000),
            attachments: vec![],
            activation_request: None,
        };
        let item = p.item(false, false, None);
        assert_eq!(item.text.len(), cmime::FIRST_PART);
        assert!(item.more);
        assert_eq!(item.text_len, 5000);
        assert!(!p.item(true, false, None).text.is_empty());
    }
}
