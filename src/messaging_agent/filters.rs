//! Message filters (seed: global filters first, then the user's own; the
//! first filter that matches decides; no match forwards the message).

use crate::db::models::message_filter::{Condition, FilterAction, MessageFilter};

use super::mime::Parsed;

fn contains(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

fn any_contains(list: &[String], needle: &str) -> bool {
    list.iter().any(|s| contains(s, needle))
}

fn matches(condition: &Condition, m: &Parsed) -> bool {
    match condition {
        Condition::FromContains { text } => contains(&m.from, text),
        Condition::ToContains { text } => any_contains(&m.to, text),
        Condition::CcContains { text } => any_contains(&m.cc, text),
        Condition::BccContains { text } => any_contains(&m.bcc, text),
        Condition::SubjectContains { text } => contains(&m.subject, text),
        Condition::ImportanceIs { importance } => m.importance == *importance,
    }
}

/// What happens to `message` under `filters` (global ones first, as
/// [`MessageFilter::find_applicable`] orders them), and the name of the
/// filter that decided, if one did.
pub fn decide<'a>(
    filters: &'a [MessageFilter],
    message: &Parsed,
) -> (FilterAction, Option<&'a str>) {
    for filter in filters.iter().filter(|f| f.enabled) {
        if filter.conditions.iter().all(|c| matches(c, message)) {
            return (filter.action, Some(&filter.name));
        }
    }
    (FilterAction::Forward, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::ids::MessageFilterId;
    use crate::db::models::message_filter::Importance;

    fn filter(
        id: i64,
        global: bool,
        conditions: Vec<Condition>,
        action: FilterAction,
    ) -> MessageFilter {
        MessageFilter {
            id: MessageFilterId(id),
            user_id: if global {
                None
            } else {
                Some(crate::db::ids::UserId(1))
            },
            name: format!("f{id}"),
            position: id as i32,
            enabled: true,
            conditions,
            action,
        }
    }

    fn message(subject: &str, importance: Importance) -> Parsed {
        Parsed {
            from: "Boss <boss@example.com>".into(),
            to: vec!["me@example.com".into()],
            cc: vec![],
            bcc: vec![],
            subject: subject.into(),
            date: None,
            importance,
            message_id: String::new(),
            text: String::new(),
            attachments: vec![],
            activation_request: None,
        }
    }

    #[test]
    fn first_match_decides_global_before_own() {
        let filters = vec![
            filter(
                1,
                true,
                vec![Condition::SubjectContains {
                    text: "NEWSLETTER".into(),
                }],
                FilterAction::DoNotForward,
            ),
            filter(
                2,
                false,
                vec![Condition::FromContains {
                    text: "boss@".into(),
                }],
                FilterAction::ForwardPriority,
            ),
            filter(
                3,
                false,
                vec![Condition::ImportanceIs {
                    importance: Importance::Low,
                }],
                FilterAction::DoNotForward,
            ),
        ];
        assert_eq!(
            decide(&filters, &message("Weekly newsletter", Importance::Normal)),
            (FilterAction::DoNotForward, Some("f1"))
        );
        assert_eq!(
            decide(&filters, &message("Budget", Importance::Low)),
            (FilterAction::ForwardPriority, Some("f2"))
        );
        let mut other = message("Hi", Importance::Low);
        other.from = "x@example.com".into();
        assert_eq!(
            decide(&filters, &other),
            (FilterAction::DoNotForward, Some("f3"))
        );
        other.importance = Importance::Normal;
        assert_eq!(decide(&filters, &other), (FilterAction::Forward, None));
        // All conditions of one filter must hold.
        let both = vec![filter(
            4,
            true,
            vec![
                Condition::FromContains {
                    text: "boss".into(),
                },
                Condition::ToContains {
                    text: "nobody".into(),
                },
            ],
            FilterAction::DoNotForward,
        )];
        assert_eq!(
            decide(&both, &message("x", Importance::Normal)).0,
            FilterAction::Forward
        );
    }
}
