//! Address lookup (`lookup` envelopes): a device searches the
//! organization's directory through its enterprise server (the ALP service
//! book) and gets at most [`MAX_RESULTS`] people back.
//!
//! The device sends a [`LookupRequest`] with an `id` of its choosing; the
//! server answers with [`LookupReply`] (the people found, and `truncated`
//! when more matched than were sent) or a [`LookupRefusal`] in words for
//! the user, both carrying the same `id`. Every packet has a fresh RefID.

use serde::{Deserialize, Serialize};

/// At most this many people in one answer (as BES 5.0 returns to devices).
pub const MAX_RESULTS: u32 = 20;
/// A query needs at least this many characters (after trimming spaces).
pub const MIN_QUERY_CHARS: usize = 2;
/// A query has at most this many characters.
pub const MAX_QUERY_CHARS: usize = 256;

/// Refusal codes.
pub mod codes {
    /// The request could not be read (its `id` is then 0).
    pub const MALFORMED: &str = "LOOKUP_MALFORMED";
    /// Fewer than [`super::MIN_QUERY_CHARS`] characters.
    pub const QUERY_TOO_SHORT: &str = "LOOKUP_QUERY_TOO_SHORT";
    /// More than [`super::MAX_QUERY_CHARS`] characters.
    pub const QUERY_TOO_LONG: &str = "LOOKUP_QUERY_TOO_LONG";
    /// The user's ALP service is turned off.
    pub const DISABLED: &str = "LOOKUP_DISABLED";
    /// The device belongs to no user.
    pub const NO_USER: &str = "LOOKUP_NO_USER";
    /// The directory could not be searched (the message names it).
    pub const DIRECTORY_FAILED: &str = "LOOKUP_DIRECTORY_FAILED";
    /// Something on the server failed (its database).
    pub const SERVER_ERROR: &str = "LOOKUP_SERVER_ERROR";
}

/// One Address lookup message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Lookup {
    Request(LookupRequest),
    Results(LookupReply),
    Refused(LookupRefusal),
}

/// From the device: people whose name, e-mail address or login contains
/// `query` (any case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupRequest {
    /// Chosen by the device; repeated in the answer.
    pub id: u64,
    pub query: String,
    /// At most this many results (1–[`MAX_RESULTS`]; more is taken as
    /// [`MAX_RESULTS`]).
    #[serde(default = "default_max")]
    pub max: u32,
}

fn default_max() -> u32 {
    MAX_RESULTS
}

/// From the server: the people found, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupReply {
    pub id: u64,
    pub results: Vec<Person>,
    /// More people matched than were sent: the user should search with
    /// more of the name.
    pub truncated: bool,
}

/// One person found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub name: String,
    pub email: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub login: String,
}

/// From the server: why the lookup was not done, for the device's user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupRefusal {
    pub id: u64,
    /// One of [`codes`].
    pub code: String,
    pub message: String,
}

/// Why bytes are not a [`Lookup`] message.
#[derive(Debug, thiserror::Error)]
#[error("not an address lookup message: {0}")]
pub struct LookupDecodeError(#[from] serde_json::Error);

impl Lookup {
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing these plain data types cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Lookup, LookupDecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The `id` the message carries.
    pub fn id(&self) -> u64 {
        match self {
            Lookup::Request(r) => r.id,
            Lookup::Results(r) => r.id,
            Lookup::Refused(r) => r.id,
        }
    }
}

impl LookupRequest {
    /// Why the server would refuse this query, before searching anything:
    /// `(code, message for the user)`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let chars = self.query.trim().chars().count();
        if chars < MIN_QUERY_CHARS {
            return Err((
                codes::QUERY_TOO_SHORT,
                format!(
                    "type at least {MIN_QUERY_CHARS} characters of the name or e-mail address to look up"
                ),
            ));
        }
        if chars > MAX_QUERY_CHARS {
            return Err((
                codes::QUERY_TOO_LONG,
                format!("a lookup can be at most {MAX_QUERY_CHARS} characters long"),
            ));
        }
        Ok(())
    }

    /// How many results to send at most: `max` within 1–[`MAX_RESULTS`].
    pub fn limit(&self) -> usize {
        self.max.clamp(1, MAX_RESULTS) as usize
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let request = Lookup::Request(LookupRequest {
            id: 7,
            query: "ali".into(),
            max: 20,
        });
        assert_eq!(
            String::from_utf8(request.to_bytes()).unwrap(),
            r#"{"type":"request","id":7,"query":"ali","max":20}"#
        );
        let reply = Lookup::Results(LookupReply {
            id: 7,
            results: vec![Person {
                name: "Alice Example".into(),
                email: "alice@example.com".into(),
                login: "alice".into(),
            }],
            truncated: false,
        });
        assert_eq!(
            String::from_utf8(reply.to_bytes()).unwrap(),
            r#"{"type":"results","id":7,"results":[{"name":"Alice Example","email":"alice@example.com","login":"alice"}],"truncated":false}"#
        );
        let refused = Lookup::Refused(LookupRefusal {
            id: 7,
            code: codes::DISABLED.into(),
            message: "off".into(),
        });
        for m in [request, reply, refused] {
            assert_eq!(Lookup::from_bytes(&m.to_bytes()).unwrap(), m);
        }
        // `max` may be left out; `login` too.
        let m = Lookup::from_bytes(br#"{"type":"request","id":1,"query":"bo"}"#).unwrap();
        assert_eq!(m.id(), 1);
        assert!(matches!(m, Lookup::Request(ref r) if r.limit() == 20));
        let m = Lookup::from_bytes(
            br#"{"type":"results","id":2,"results":[{"name":"B","email":"b@x"}],"truncated":true}"#,
        )
        .unwrap();
        assert_eq!(m.id(), 2);
        assert!(Lookup::from_bytes(b"{\"type\":\"nope\"}").is_err());
        assert!(Lookup::from_bytes(b"\xff\x00").is_err());
        assert!(Lookup::from_bytes(br#"{"type":"request","id":-1,"query":"x"}"#).is_err());
    }

    #[test]
    fn queries_are_checked_and_limits_clamped() {
        let q = |query: &str, max: u32| LookupRequest {
            id: 0,
            query: query.into(),
            max,
        };
        assert_eq!(q(" a ", 20).check().unwrap_err().0, codes::QUERY_TOO_SHORT);
        assert_eq!(q("", 20).check().unwrap_err().0, codes::QUERY_TOO_SHORT);
        assert!(q("al", 20).check().is_ok());
        assert!(q("ü€", 20).check().is_ok(), "characters, not bytes");
        assert_eq!(
            q(&"x".repeat(MAX_QUERY_CHARS + 1), 20)
                .check()
                .unwrap_err()
                .0,
            codes::QUERY_TOO_LONG
        );
        assert_eq!(q("al", 0).limit(), 1);
        assert_eq!(q("al", 5).limit(), 5);
        assert_eq!(q("al", 1000).limit(), 20);
    }
}
