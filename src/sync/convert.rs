//! Organizer records between the server's formats and the device's.
//!
//! vCard (contacts) and iCalendar (VEVENT appointments, VTODO tasks,
//! VJOURNAL memos) are read with the `ical` crate into property lists.
//! Towards the server, a record the device changed is written back into
//! the object as the server last had it: only the properties a device edits
//! are replaced, everything else (photos, addresses, alarms, time zones,
//! other applications' X- properties) is kept as it was.
//!
//! A server object that cannot be read, or whose required values are not
//! what its format says (an appointment without a start, a birthday that is
//! not a date), is [`Unreadable`]: it is reported and skipped, and the
//! other records go on.

use std::io::BufReader;

use bramble_proto::sync::{Contact, Event, Memo, OrganizerDatabase, Phone, Record, Task};
use ical::generator::Emitter;
use ical::parser::ical::component::IcalCalendar;
use ical::parser::vcard::component::VcardContact;
use ical::property::Property;
use time::Date;

const PRODID: &str = "-//Bramble//Synchronization Service//EN";

/// Why a server object was skipped, in words for an administrator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

/// A server object read for one database.
#[allow(clippy::large_enum_variant)] // read and taken apart at once
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Record {
        uid: String,
        record: Record,
    },
    /// The object holds nothing for this database (a task in a collection
    /// shared with appointments, say).
    NotOurs,
}

/// Reads a server object for `database`. `fallback_uid` names objects
/// without a UID (the href's file name).
pub fn parse(
    database: OrganizerDatabase,
    text: &str,
    fallback_uid: &str,
) -> Result<Parsed, Unreadable> {
    match database {
        OrganizerDatabase::Contacts => parse_vcard(text, fallback_uid),
        _ => parse_icalendar(database, text, fallback_uid),
    }
}

fn read_vcard(text: &str) -> Result<VcardContact, Unreadable> {
    let mut parser = ical::VcardParser::new(BufReader::new(text.as_bytes()));
    match parser.next() {
        Some(Ok(card)) => Ok(card),
        Some(Err(e)) => Err(Unreadable(format!("the vCard cannot be read: {e}"))),
        None => Err(Unreadable("the object holds no vCard".into())),
    }
}

fn read_calendar(text: &str) -> Result<IcalCalendar, Unreadable> {
    let mut parser = ical::IcalParser::new(BufReader::new(text.as_bytes()));
    match parser.next() {
        Some(Ok(cal)) => Ok(cal),
        Some(Err(e)) => Err(Unreadable(format!(
            "the iCalendar object cannot be read: {e}"
        ))),
        None => Err(Unreadable("the object holds no iCalendar data".into())),
    }
}

/// The property name without a vCard group (`item1.EMAIL` → `EMAIL`).
fn bare(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

fn find<'a>(props: &'a [Property], name: &str) -> Option<&'a Property> {
    props.iter().find(|p| bare(&p.name) == name)
}

fn text_of(props: &[Property], name: &str) -> String {
    find(props, name)
        .and_then(|p| p.value.as_deref())
        .map(unescape)
        .unwrap_or_default()
}

fn param<'a>(p: &'a Property, name: &str) -> Option<&'a [String]> {
    p.params
        .as_ref()?
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// RFC 6350 / RFC 5545 text values.
pub fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') | Some('N') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ',' => out.push_str("\\,"),
            ';' => out.push_str("\\;"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            other => out.push(other),
        }
    }
    out
}

/// Splits a structured value (`N`, `ORG`) at unescaped semicolons.
fn components(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ';' {
            parts.push(unescape(&current));
            current.clear();
        } else {
            current.push(c);
        }
    }
    parts.push(unescape(&current));
    parts
}

/// `YYYY-MM-DD` from a vCard date (`19700315`, `1970-03-15`, with or
/// without a time after it).
fn vcard_date(value: &str) -> Option<String> {
    let date = value.split('T').next().unwrap_or(value).trim();
    let digits: String = date.chars().filter(|c| *c != '-').collect();
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d) = (&digits[..4], &digits[4..6], &digits[6..8]);
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()?;
    Some(format!("{y}-{m}-{d}"))
}

/// The calendar day of an iCalendar date or date-time value.
pub fn ical_day(value: &str) -> Option<Date> {
    let digits = value.get(..8)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let month = time::Month::try_from(digits[4..6].parse::<u8>().ok()?).ok()?;
    Date::from_calendar_date(digits[..4].parse().ok()?, month, digits[6..8].parse().ok()?).ok()
}

fn parse_vcard(text: &str, fallback_uid: &str) -> Result<Parsed, Unreadable> {
    let card = read_vcard(text)?;
    let props = &card.properties;
    let uid = find(props, "UID")
        .and_then(|p| p.value.clone())
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| fallback_uid.to_owned());
    let n = find(props, "N")
        .and_then(|p| p.value.as_deref())
        .map(components)
        .unwrap_or_default();
    let mut full_name = text_of(props, "FN");
    if full_name.trim().is_empty() {
        // Given name, then family name.
        full_name = [n.get(1), n.first()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
    }
    let organization = find(props, "ORG")
        .and_then(|p| p.value.as_deref())
        .map(components)
        .and_then(|c| c.into_iter().next())
        .unwrap_or_default();
    if full_name.trim().is_empty() && organization.is_empty() {
        return Err(Unreadable(
            "the vCard has no name (FN, N or ORG); a contact needs one".into(),
        ));
    }
    let birthday = match find(props, "BDAY").and_then(|p| p.value.as_deref()) {
        None => None,
        Some(v) if v.trim().is_empty() => None,
        Some(v) => Some(vcard_date(v).ok_or_else(|| {
            Unreadable(format!(
                "the birthday (BDAY) `{v}` is not a date; write it as YYYY-MM-DD"
            ))
        })?),
    };
    let emails = props
        .iter()
        .filter(|p| bare(&p.name) == "EMAIL")
        .filter_map(|p| p.value.as_deref().map(unescape))
        .filter(|v| !v.is_empty())
        .collect();
    let phones = props
        .iter()
        .filter(|p| bare(&p.name) == "TEL")
        .filter_map(|p| {
            let number = unescape(p.value.as_deref()?.trim_start_matches("tel:"));
            let kinds: Vec<String> = param(p, "TYPE")
                .map(|v| {
                    v.iter()
                        .flat_map(|t| t.split(','))
                        .map(|t| t.trim_matches('"').to_ascii_lowercase())
                        .collect()
                })
                .unwrap_or_default();
            let kind = ["cell", "work", "home", "fax", "pager"]
                .into_iter()
                .find(|k| kinds.iter().any(|t| t == k))
                .unwrap_or("")
                .to_owned();
            Some(Phone { kind, number })
        })
        .collect();
    let contact = Contact {
        full_name,
        family_name: n.first().cloned().unwrap_or_default(),
        given_name: n.get(1).cloned().unwrap_or_default(),
        organization,
        title: text_of(props, "TITLE"),
        emails,
        phones,
        birthday,
        note: text_of(props, "NOTE"),
    };
    Ok(Parsed::Record {
        uid,
        record: Record::Contact(contact),
    })
}

/// The component `database` takes from a calendar object: its properties.
fn component_props(cal: &IcalCalendar, database: OrganizerDatabase) -> Option<&Vec<Property>> {
    let is_master = |props: &Vec<Property>| find(props, "RECURRENCE-ID").is_none();
    match database {
        OrganizerDatabase::Calendar => cal
            .events
            .iter()
            .map(|e| &e.properties)
            .find(|p| is_master(p)),
        OrganizerDatabase::Tasks => cal
            .todos
            .iter()
            .map(|t| &t.properties)
            .find(|p| is_master(p)),
        OrganizerDatabase::Memos => cal
            .journals
            .iter()
            .map(|j| &j.properties)
            .find(|p| is_master(p)),
        OrganizerDatabase::Contacts => None,
    }
}

fn parse_icalendar(
    database: OrganizerDatabase,
    text: &str,
    fallback_uid: &str,
) -> Result<Parsed, Unreadable> {
    let cal = read_calendar(text)?;
    let Some(props) = component_props(&cal, database) else {
        return Ok(Parsed::NotOurs);
    };
    let uid = find(props, "UID")
        .and_then(|p| p.value.clone())
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| fallback_uid.to_owned());
    let record = match database {
        OrganizerDatabase::Calendar => {
            let start = find(props, "DTSTART")
                .ok_or_else(|| Unreadable("the appointment has no start (DTSTART)".into()))?;
            let start_value = start.value.clone().unwrap_or_default();
            if ical_day(&start_value).is_none() {
                return Err(Unreadable(format!(
                    "the appointment's start (DTSTART) `{start_value}` is not a date"
                )));
            }
            let all_day = param(start, "VALUE")
                .is_some_and(|v| v.iter().any(|t| t.eq_ignore_ascii_case("DATE")))
                || start_value.len() == 8;
            let end = find(props, "DTEND").and_then(|p| p.value.clone());
            if let Some(end) = &end {
                if ical_day(end).is_none() {
                    return Err(Unreadable(format!(
                        "the appointment's end (DTEND) `{end}` is not a date"
                    )));
                }
            }
            Record::Event(Event {
                summary: text_of(props, "SUMMARY"),
                location: text_of(props, "LOCATION"),
                description: text_of(props, "DESCRIPTION"),
                start: start_value,
                end,
                tzid: param(start, "TZID").and_then(|v| v.first().cloned()),
                all_day,
                recurrence: find(props, "RRULE").and_then(|p| p.value.clone()),
            })
        }
        OrganizerDatabase::Tasks => {
            let status = text_of(props, "STATUS");
            let priority = match find(props, "PRIORITY").and_then(|p| p.value.as_deref()) {
                None => None,
                Some(v) => match v.trim().parse::<u8>() {
                    Ok(0) => None,
                    Ok(p) if p <= 9 => Some(p),
                    _ => {
                        return Err(Unreadable(format!(
                            "the task's priority `{v}` is not a number from 0 to 9"
                        )))
                    }
                },
            };
            Record::Task(Task {
                summary: text_of(props, "SUMMARY"),
                description: text_of(props, "DESCRIPTION"),
                due: find(props, "DUE").and_then(|p| p.value.clone()),
                completed: status.eq_ignore_ascii_case("COMPLETED")
                    || find(props, "COMPLETED").is_some(),
                priority,
            })
        }
        OrganizerDatabase::Memos => Record::Memo(Memo {
            title: text_of(props, "SUMMARY"),
            body: text_of(props, "DESCRIPTION"),
        }),
        OrganizerDatabase::Contacts => return Ok(Parsed::NotOurs),
    };
    Ok(Parsed::Record { uid, record })
}

/// Whether an appointment falls in the window sent to devices: it ends no
/// more than `past_days` ago and starts at most `future_days` ahead.
/// Recurring appointments are always sent.
pub fn in_window(record: &Record, today: Date, past_days: u32, future_days: Option<u32>) -> bool {
    let Record::Event(event) = record else {
        return true;
    };
    if event.recurrence.is_some() {
        return true;
    }
    let Some(start) = ical_day(&event.start) else {
        return true;
    };
    let end = event.end.as_deref().and_then(ical_day).unwrap_or(start);
    let from = today - time::Duration::days(i64::from(past_days));
    if end < from {
        return false;
    }
    match future_days {
        Some(days) => start <= today + time::Duration::days(i64::from(days)),
        None => true,
    }
}

fn prop(name: &str, params: Vec<(&str, &str)>, value: impl Into<String>) -> Property {
    Property {
        name: name.to_owned(),
        params: if params.is_empty() {
            None
        } else {
            Some(
                params
                    .into_iter()
                    .map(|(n, v)| (n.to_owned(), vec![v.to_owned()]))
                    .collect(),
            )
        },
        value: Some(value.into()),
    }
}

/// Replaces the properties named in `owned` with `new`, keeping the rest.
fn replace(props: &mut Vec<Property>, owned: &[&str], new: Vec<Property>) {
    props.retain(|p| !owned.contains(&bare(&p.name)));
    props.extend(new);
}

fn utc_stamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// The server object for `record`: `existing` (the object as the server
/// has it) with the device's fields written in, or a new object.
pub fn render(uid: &str, record: &Record, existing: Option<&str>) -> String {
    match record {
        Record::Contact(c) => render_vcard(uid, c, existing),
        other => render_icalendar(uid, other, existing),
    }
}

fn render_vcard(uid: &str, c: &Contact, existing: Option<&str>) -> String {
    let mut card = existing
        .and_then(|text| read_vcard(text).ok())
        .unwrap_or_else(|| VcardContact {
            properties: vec![prop("VERSION", vec![], "3.0"), prop("UID", vec![], uid)],
        });
    if find(&card.properties, "UID").is_none() {
        card.properties.push(prop("UID", vec![], uid));
    }
    let mut new = vec![
        prop("FN", vec![], escape(&c.full_name)),
        prop(
            "N",
            vec![],
            format!("{};{};;;", escape(&c.family_name), escape(&c.given_name)),
        ),
    ];
    if !c.organization.is_empty() {
        new.push(prop("ORG", vec![], escape(&c.organization)));
    }
    if !c.title.is_empty() {
        new.push(prop("TITLE", vec![], escape(&c.title)));
    }
    for email in &c.emails {
        new.push(prop("EMAIL", vec![("TYPE", "INTERNET")], escape(email)));
    }
    for phone in &c.phones {
        let params = if phone.kind.is_empty() {
            vec![]
        } else {
            vec![("TYPE", phone.kind.as_str())]
        };
        new.push(prop("TEL", params, escape(&phone.number)));
    }
    if let Some(b) = &c.birthday {
        new.push(prop("BDAY", vec![], b.clone()));
    }
    if !c.note.is_empty() {
        new.push(prop("NOTE", vec![], escape(&c.note)));
    }
    replace(
        &mut card.properties,
        &["FN", "N", "ORG", "TITLE", "EMAIL", "TEL", "BDAY", "NOTE"],
        new,
    );
    card.generate()
}

fn render_icalendar(uid: &str, record: &Record, existing: Option<&str>) -> String {
    let database = record.database();
    let mut cal = existing
        .and_then(|text| read_calendar(text).ok())
        .filter(|cal| component_props(cal, database).is_some())
        .unwrap_or_else(|| {
            let mut cal = IcalCalendar::new();
            cal.properties = vec![
                prop("VERSION", vec![], "2.0"),
                prop("PRODID", vec![], PRODID),
            ];
            let base = vec![
                prop("UID", vec![], uid),
                prop("DTSTAMP", vec![], utc_stamp()),
            ];
            match database {
                OrganizerDatabase::Calendar => {
                    let mut e = ical::parser::ical::component::IcalEvent::new();
                    e.properties = base;
                    cal.events.push(e);
                }
                OrganizerDatabase::Tasks => {
                    let mut t = ical::parser::ical::component::IcalTodo::new();
                    t.properties = base;
                    cal.todos.push(t);
                }
                _ => {
                    let mut j = ical::parser::ical::component::IcalJournal::new();
                    j.properties = base;
                    cal.journals.push(j);
                }
            }
            cal
        });
    let is_master = |props: &Vec<Property>| find(props, "RECURRENCE-ID").is_none();
    let props = match database {
        OrganizerDatabase::Calendar => cal
            .events
            .iter_mut()
            .map(|e| &mut e.properties)
            .find(|p| is_master(p)),
        OrganizerDatabase::Tasks => cal
            .todos
            .iter_mut()
            .map(|t| &mut t.properties)
            .find(|p| is_master(p)),
        _ => cal
            .journals
            .iter_mut()
            .map(|j| &mut j.properties)
            .find(|p| is_master(p)),
    };
    let Some(props) = props else {
        return cal.generate();
    };
    match record {
        Record::Event(e) => {
            let mut new = vec![prop("SUMMARY", vec![], escape(&e.summary))];
            if !e.location.is_empty() {
                new.push(prop("LOCATION", vec![], escape(&e.location)));
            }
            if !e.description.is_empty() {
                new.push(prop("DESCRIPTION", vec![], escape(&e.description)));
            }
            let mut time_params = Vec::new();
            if e.all_day {
                time_params.push(("VALUE", "DATE"));
            } else if let Some(tz) = &e.tzid {
                time_params.push(("TZID", tz.as_str()));
            }
            new.push(prop("DTSTART", time_params.clone(), e.start.clone()));
            if let Some(end) = &e.end {
                new.push(prop("DTEND", time_params, end.clone()));
            }
            if let Some(rule) = &e.recurrence {
                new.push(prop("RRULE", vec![], rule.clone()));
            }
            let owned = [
                "SUMMARY",
                "LOCATION",
                "DESCRIPTION",
                "DTSTART",
                "DTEND",
                "RRULE",
            ];
            // A device end replaces a duration; without one, the duration stays.
            if e.end.is_some() {
                props.retain(|p| bare(&p.name) != "DURATION");
            }
            replace(props, &owned, new);
        }
        Record::Task(t) => {
            let mut new = vec![prop("SUMMARY", vec![], escape(&t.summary))];
            if !t.description.is_empty() {
                new.push(prop("DESCRIPTION", vec![], escape(&t.description)));
            }
            if let Some(due) = &t.due {
                let params = if due.len() == 8 {
                    vec![("VALUE", "DATE")]
                } else {
                    vec![]
                };
                new.push(prop("DUE", params, due.clone()));
            }
            let was_completed = text_of(props, "STATUS").eq_ignore_ascii_case("COMPLETED");
            let mut owned = vec!["SUMMARY", "DESCRIPTION", "DUE", "PRIORITY"];
            if t.completed != was_completed || find(props, "STATUS").is_none() {
                owned.extend(["STATUS", "COMPLETED"]);
                if t.completed {
                    new.push(prop("STATUS", vec![], "COMPLETED"));
                    new.push(prop("COMPLETED", vec![], utc_stamp()));
                } else {
                    new.push(prop("STATUS", vec![], "NEEDS-ACTION"));
                }
            }
            if let Some(p) = t.priority {
                new.push(prop("PRIORITY", vec![], p.to_string()));
            }
            replace(props, &owned, new);
        }
        Record::Memo(m) => {
            let mut new = vec![prop("SUMMARY", vec![], escape(&m.title))];
            if !m.body.is_empty() {
                new.push(prop("DESCRIPTION", vec![], escape(&m.body)));
            }
            replace(props, &["SUMMARY", "DESCRIPTION"], new);
        }
        Record::Contact(_) => {}
    }
    cal.generate()
}

/// A digest of a record as the device holds it: equal digests mean the
/// device already has this version (so an echo of our own write, or a
/// server change to fields the device does not keep, is not sent).
pub fn digest(record: &Record) -> String {
    let bytes = serde_json::to_vec(record).unwrap_or_default();
    openssl::sha::sha256(&bytes)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The UID a new record's href is named after, safe as a file name.
pub fn href_for(collection: &str, uid: &str, extension: &str) -> String {
    format!(
        "{collection}{}.{extension}",
        crate::sync::settings::encode_segment(uid)
    )
}

/// The file name of an href without its extension (the UID of objects
/// that have none).
pub fn uid_from_href(href: &str) -> String {
    let name = href
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(href);
    name.rsplit_once('.')
        .map(|(stem, _)| stem)
        .unwrap_or(name)
        .to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn record(parsed: Result<Parsed, Unreadable>) -> (String, Record) {
        match parsed.unwrap() {
            Parsed::Record { uid, record } => (uid, record),
            Parsed::NotOurs => panic!("not ours"),
        }
    }

    const CARD: &str = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:ada-1\r\nFN:Ada Lovelace\r\nN:Lovelace;Ada;;;\r\nORG:Analytical Engines\\, Ltd;Research\r\nitem1.EMAIL;TYPE=INTERNET:ada@example.com\r\nTEL;TYPE=CELL,VOICE:+44 1\r\nTEL:+44 2\r\nBDAY:18151210\r\nNOTE:First line\\nsecond\\; more\r\nPHOTO;ENCODING=b;TYPE=JPEG:AAAA\r\nX-CUSTOM:kept\r\nEND:VCARD\r\n";

    #[test]
    fn vcard_to_contact_and_back_keeps_what_the_device_does_not_know() {
        let (uid, rec) = record(parse(OrganizerDatabase::Contacts, CARD, "x"));
        assert_eq!(uid, "ada-1");
        let Record::Contact(c) = &rec else { panic!() };
        assert_eq!(c.full_name, "Ada Lovelace");
        assert_eq!(
            (c.family_name.as_str(), c.given_name.as_str()),
            ("Lovelace", "Ada")
        );
        assert_eq!(c.organization, "Analytical Engines, Ltd");
        assert_eq!(c.emails, ["ada@example.com"]);
        assert_eq!(c.phones[0].kind, "cell");
        assert_eq!(c.phones[1].kind, "");
        assert_eq!(c.birthday.as_deref(), Some("1815-12-10"));
        assert_eq!(c.note, "First line\nsecond; more");

        let mut edited = c.clone();
        edited.full_name = "Ada King".into();
        edited.emails.push("ada@king.example".into());
        let text = render(&uid, &Record::Contact(edited.clone()), Some(CARD));
        assert!(text.contains("PHOTO;ENCODING=b;TYPE=JPEG:AAAA"), "{text}");
        assert!(text.contains("X-CUSTOM:kept"));
        assert!(text.contains("UID:ada-1"));
        let (_, back) = record(parse(OrganizerDatabase::Contacts, &text, "x"));
        assert_eq!(back, Record::Contact(edited));
        assert_eq!(digest(&back), digest(&back.clone()));
    }

    #[test]
    fn new_records_round_trip() {
        let records = [
            Record::Contact(Contact {
                full_name: "Bob, the builder".into(),
                family_name: "Builder".into(),
                given_name: "Bob".into(),
                phones: vec![Phone {
                    kind: "work".into(),
                    number: "555".into(),
                }],
                ..Contact::default()
            }),
            Record::Event(Event {
                summary: "Review; plan".into(),
                location: "Room 1".into(),
                start: "20261127T090000Z".into(),
                end: Some("20261127T100000Z".into()),
                ..Event::default()
            }),
            Record::Event(Event {
                summary: "Holiday".into(),
                start: "20261224".into(),
                end: Some("20261225".into()),
                all_day: true,
                recurrence: Some("FREQ=YEARLY".into()),
                ..Event::default()
            }),
            Record::Task(Task {
                summary: "File report".into(),
                due: Some("20261201".into()),
                completed: true,
                priority: Some(1),
                ..Task::default()
            }),
            Record::Memo(Memo {
                title: "Ideas".into(),
                body: "one\ntwo".into(),
            }),
        ];
        for r in records {
            let text = render("u-1", &r, None);
            let (uid, back) = record(parse(r.database(), &text, "x"));
            assert_eq!(uid, "u-1");
            assert_eq!(back, r, "{text}");
        }
    }

    #[test]
    fn unreadable_objects_say_why() {
        let bad_birthday =
            "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:b\r\nFN:Bad\r\nBDAY:notadate\r\nEND:VCARD\r\n";
        let e = parse(OrganizerDatabase::Contacts, bad_birthday, "b").unwrap_err();
        assert!(e.0.contains("`notadate` is not a date"), "{e}");
        let no_start = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:e\r\nSUMMARY:x\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let e = parse(OrganizerDatabase::Calendar, no_start, "e").unwrap_err();
        assert!(e.0.contains("no start"), "{e}");
        assert!(parse(OrganizerDatabase::Contacts, "nothing", "x").is_err());
        // A task in a shared collection is not an appointment.
        let todo = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTODO\r\nUID:t\r\nSUMMARY:x\r\nEND:VTODO\r\nEND:VCALENDAR\r\n";
        assert_eq!(
            parse(OrganizerDatabase::Calendar, todo, "t").unwrap(),
            Parsed::NotOurs
        );
    }

    #[test]
    fn the_calendar_window() {
        let today = Date::from_calendar_date(2026, time::Month::November, 27).unwrap();
        let event = |start: &str, end: Option<&str>| {
            Record::Event(Event {
                start: start.into(),
                end: end.map(Into::into),
                ..Event::default()
            })
        };
        assert!(in_window(&event("20261027T090000Z", None), today, 31, None));
        assert!(!in_window(
            &event("20261026T090000Z", None),
            today,
            31,
            None
        ));
        assert!(in_window(
            &event("20261001T090000Z", Some("20261101T090000Z")),
            today,
            31,
            None
        ));
        assert!(!in_window(&event("20270101", None), today, 31, Some(30)));
        assert!(in_window(&event("20270101", None), today, 31, None));
    }

    #[test]
    fn hrefs_and_uids() {
        assert_eq!(
            href_for("/u/contacts/", "a b", "vcf"),
            "/u/contacts/a%20b.vcf"
        );
        assert_eq!(uid_from_href("/u/contacts/abc.vcf"), "abc");
    }
}
