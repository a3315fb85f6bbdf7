//! The IT policy rule catalog: every rule a policy may set, with its type,
//! range, default and which value is the more restrictive one (for the
//! server's merge of several policies).
//!
//! It lives with the wire because server and device must agree on it: the
//! server stores rules as name → JSON value and calls [`validate`] before a
//! value is saved, so an out-of-range or unknown rule never reaches its
//! database; the reference device is to enforce the same rules. Names
//! follow the BES rule names without spaces (`MinimumPasswordLength`);
//! [`Rule::title`] is the name an administrator reads.

use serde_json::Value;

/// What kind of value a rule takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `true` or `false`; `restrictive` is the value that restricts the
    /// device more.
    Bool { default: bool, restrictive: bool },
    /// A whole number in `min..=max`.
    Int {
        min: i64,
        max: i64,
        default: i64,
        unit: &'static str,
        order: Restrictive,
    },
    /// One of `options`, listed from least to most restrictive.
    Choice {
        options: &'static [&'static str],
        default: &'static str,
    },
    /// A list of application names; `restrictive` says how two lists
    /// combine into the more restrictive one.
    List { restrictive: ListMerge },
}

/// Which of two numbers restricts the device more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restrictive {
    Higher,
    Lower,
    /// Lower, but 0 means "no limit" and is the least restrictive.
    LowerZeroUnlimited,
}

/// How two application lists combine into the more restrictive one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListMerge {
    /// Only what both allow (allowed applications).
    Intersection,
    /// Everything either forbids (disallowed applications).
    Union,
}

/// One rule of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Stored name, e.g. `MinimumPasswordLength`.
    pub name: &'static str,
    /// The administrator's name, e.g. "Minimum Password Length".
    pub title: &'static str,
    pub kind: Kind,
}

/// Password pattern checks, from none to the strictest (BES "Password
/// Pattern Checks" 1–4).
pub const PASSWORD_PATTERNS: &[&str] = &[
    "none",
    "letters_and_numbers",
    "letters_numbers_and_special",
    "upper_lower_and_numbers",
];

/// Every rule, in the order the console lists them.
pub const RULES: &[Rule] = &[
    Rule {
        name: "PasswordRequired",
        title: "Password Required",
        kind: Kind::Bool {
            default: false,
            restrictive: true,
        },
    },
    Rule {
        name: "MinimumPasswordLength",
        title: "Minimum Password Length",
        kind: Kind::Int {
            min: 4,
            max: 14,
            default: 4,
            unit: "characters",
            order: Restrictive::Higher,
        },
    },
    Rule {
        name: "MaximumSecurityTimeout",
        title: "Maximum Security Timeout",
        kind: Kind::Int {
            min: 10,
            max: 480,
            default: 60,
            unit: "minutes",
            order: Restrictive::Lower,
        },
    },
    Rule {
        name: "MaximumPasswordAge",
        title: "Maximum Password Age",
        kind: Kind::Int {
            min: 0,
            max: 65_535,
            default: 0,
            unit: "days (0 = never expires)",
            order: Restrictive::LowerZeroUnlimited,
        },
    },
    Rule {
        name: "UserCanDisablePassword",
        title: "User Can Disable Password",
        kind: Kind::Bool {
            default: true,
            restrictive: false,
        },
    },
    Rule {
        name: "PasswordPattern",
        title: "Password Pattern Checks",
        kind: Kind::Choice {
            options: PASSWORD_PATTERNS,
            default: "none",
        },
    },
    Rule {
        name: "DisableCamera",
        title: "Disable Camera",
        kind: Kind::Bool {
            default: false,
            restrictive: true,
        },
    },
    Rule {
        name: "AllowSms",
        title: "Allow SMS",
        kind: Kind::Bool {
            default: true,
            restrictive: false,
        },
    },
    Rule {
        name: "DisableBluetooth",
        title: "Disable Bluetooth",
        kind: Kind::Bool {
            default: false,
            restrictive: true,
        },
    },
    Rule {
        name: "ContentProtection",
        title: "Content Protection",
        kind: Kind::Bool {
            default: false,
            restrictive: true,
        },
    },
    Rule {
        name: "AllowedApplications",
        title: "Allowed Applications",
        kind: Kind::List {
            restrictive: ListMerge::Intersection,
        },
    },
    Rule {
        name: "DisallowedApplications",
        title: "Disallowed Applications",
        kind: Kind::List {
            restrictive: ListMerge::Union,
        },
    },
];

/// Why a rule value is refused. The message names the rule and what it
/// accepts, for an administrator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error(
        "there is no IT policy rule named `{0}`; the rules are listed in the operations guide"
    )]
    Unknown(String),
    #[error("{title} must be between {min} and {max}; got {got}")]
    OutOfRange {
        title: &'static str,
        min: i64,
        max: i64,
        got: String,
    },
    #[error("{title} must be {expected}; got {got}")]
    WrongType {
        title: &'static str,
        expected: String,
        got: String,
    },
}

impl RuleError {
    /// Stable code for administrators and the console.
    pub fn code(&self) -> &'static str {
        match self {
            RuleError::Unknown(_) => "POLICY_RULE_UNKNOWN",
            RuleError::OutOfRange { .. } => "POLICY_RULE_OUT_OF_RANGE",
            RuleError::WrongType { .. } => "POLICY_RULE_WRONG_TYPE",
        }
    }
}

/// The rule named `name`.
pub fn find(name: &str) -> Option<&'static Rule> {
    RULES.iter().find(|rule| rule.name == name)
}

/// Checks `value` for the rule named `name`.
pub fn validate(name: &str, value: &Value) -> Result<(), RuleError> {
    let rule = find(name).ok_or_else(|| RuleError::Unknown(name.to_owned()))?;
    rule.validate(value)
}

fn shorten(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

impl Rule {
    /// Checks a value against the rule's type and range.
    pub fn validate(&self, value: &Value) -> Result<(), RuleError> {
        let wrong = |expected: String| RuleError::WrongType {
            title: self.title,
            expected,
            got: shorten(value),
        };
        match self.kind {
            Kind::Bool { .. } => match value {
                Value::Bool(_) => Ok(()),
                _ => Err(wrong("true or false".into())),
            },
            Kind::Int { min, max, .. } => {
                let range = || format!("a whole number between {min} and {max}");
                match value.as_i64() {
                    Some(n) if (min..=max).contains(&n) => Ok(()),
                    Some(_) => Err(RuleError::OutOfRange {
                        title: self.title,
                        min,
                        max,
                        got: shorten(value),
                    }),
                    // A large unsigned number is out of range, not of type.
                    None if value.is_u64() => Err(RuleError::OutOfRange {
                        title: self.title,
                        min,
                        max,
                        got: shorten(value),
                    }),
                    None => Err(wrong(range())),
                }
            }
            Kind::Choice { options, .. } => match value.as_str() {
                Some(text) if options.contains(&text) => Ok(()),
                _ => Err(wrong(format!("one of {}", options.join(", ")))),
            },
            Kind::List { .. } => match value.as_array() {
                Some(items) if items.iter().all(|item| item.is_string()) => Ok(()),
                _ => Err(wrong("a list of application names".into())),
            },
        }
    }

    /// The value a device uses when no policy sets the rule. Lists default
    /// to empty (for allowed applications: no list, everything allowed).
    pub fn default_value(&self) -> Value {
        match self.kind {
            Kind::Bool { default, .. } => Value::Bool(default),
            Kind::Int { default, .. } => Value::from(default),
            Kind::Choice { default, .. } => Value::from(default),
            Kind::List { .. } => Value::Array(Vec::new()),
        }
    }

    /// A human description of the accepted values, for the operations
    /// guide and the console.
    pub fn accepts(&self) -> String {
        match self.kind {
            Kind::Bool { .. } => "true / false".into(),
            Kind::Int { min, max, unit, .. } => format!("{min}–{max} {unit}"),
            Kind::Choice { options, .. } => options.join(", "),
            Kind::List { .. } => "list of application names".into(),
        }
    }

    /// Of two valid values, the one that restricts the device more (for
    /// the merge mode). Equal restrictiveness keeps `a`.
    pub fn more_restrictive(&self, a: &Value, b: &Value) -> Value {
        match self.kind {
            Kind::Bool { restrictive, .. } => {
                if a.as_bool() == Some(restrictive) || b.as_bool() != Some(restrictive) {
                    a.clone()
                } else {
                    b.clone()
                }
            }
            Kind::Int { order, .. } => {
                let (x, y) = (a.as_i64().unwrap_or(0), b.as_i64().unwrap_or(0));
                let keep_a = match order {
                    Restrictive::Higher => x >= y,
                    Restrictive::Lower => x <= y,
                    Restrictive::LowerZeroUnlimited => match (x, y) {
                        (_, 0) => true,
                        (0, _) => false,
                        _ => x <= y,
                    },
                };
                if keep_a {
                    a.clone()
                } else {
                    b.clone()
                }
            }
            Kind::Choice { options, .. } => {
                let rank = |v: &Value| {
                    v.as_str()
                        .and_then(|s| options.iter().position(|o| *o == s))
                        .unwrap_or(0)
                };
                if rank(a) >= rank(b) {
                    a.clone()
                } else {
                    b.clone()
                }
            }
            Kind::List { restrictive } => {
                let items = |v: &Value| -> Vec<String> {
                    v.as_array()
                        .map(|items| {
                            items
                                .iter()
                                .filter_map(|i| i.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let (xs, ys) = (items(a), items(b));
                let mut merged: Vec<String> = match restrictive {
                    ListMerge::Intersection => xs.into_iter().filter(|x| ys.contains(x)).collect(),
                    ListMerge::Union => xs.into_iter().chain(ys).collect(),
                };
                merged.sort();
                merged.dedup();
                Value::from(merged)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn out_of_range_values_name_the_rule_and_range() {
        let err = validate("MinimumPasswordLength", &json!(20)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Minimum Password Length must be between 4 and 14; got 20"
        );
        assert_eq!(err.code(), "POLICY_RULE_OUT_OF_RANGE");
        assert_eq!(
            validate("MaximumSecurityTimeout", &json!(9))
                .unwrap_err()
                .to_string(),
            "Maximum Security Timeout must be between 10 and 480; got 9"
        );
        assert!(validate("MaximumPasswordAge", &json!(65_536)).is_err());
        assert!(validate("MaximumPasswordAge", &json!(u64::MAX))
            .unwrap_err()
            .to_string()
            .contains("between 0 and 65535"));
        for (rule, ok) in [
            ("MinimumPasswordLength", json!(4)),
            ("MinimumPasswordLength", json!(14)),
            ("MaximumSecurityTimeout", json!(10)),
            ("MaximumSecurityTimeout", json!(480)),
            ("MaximumPasswordAge", json!(0)),
            ("MaximumPasswordAge", json!(65_535)),
        ] {
            assert_eq!(validate(rule, &ok), Ok(()), "{rule} = {ok}");
        }
        for (rule, bad) in [
            ("MinimumPasswordLength", json!(3)),
            ("MinimumPasswordLength", json!(15)),
            ("MaximumSecurityTimeout", json!(481)),
            ("MaximumPasswordAge", json!(-1)),
        ] {
            assert!(
                matches!(validate(rule, &bad), Err(RuleError::OutOfRange { .. })),
                "{rule} = {bad}"
            );
        }
    }

    #[test]
    fn wrong_types_and_unknown_rules_are_refused() {
        assert!(validate("PasswordRequired", &json!(true)).is_ok());
        let err = validate("PasswordRequired", &json!("yes")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Password Required must be true or false; got \"yes\""
        );
        assert!(validate("MinimumPasswordLength", &json!(8.5)).is_err());
        assert!(validate("MinimumPasswordLength", &json!("8")).is_err());
        assert!(validate("PasswordPattern", &json!("letters_and_numbers")).is_ok());
        assert!(validate("PasswordPattern", &json!("emoji"))
            .unwrap_err()
            .to_string()
            .contains("one of none, letters_and_numbers"));
        assert!(validate("AllowedApplications", &json!(["mail", "browser"])).is_ok());
        assert!(validate("DisallowedApplications", &json!(["games", 3])).is_err());
        let unknown = validate("DisallowedApps", &json!(["games"])).unwrap_err();
        assert_eq!(unknown.code(), "POLICY_RULE_UNKNOWN");
        assert!(unknown.to_string().contains("`DisallowedApps`"));
    }

    #[test]
    fn every_default_is_valid_and_names_are_unique() {
        for rule in RULES {
            assert_eq!(
                rule.validate(&rule.default_value()),
                Ok(()),
                "{}",
                rule.name
            );
            assert_eq!(
                RULES.iter().filter(|r| r.name == rule.name).count(),
                1,
                "{}",
                rule.name
            );
        }
        assert!(RULES.len() >= 12);
    }

    #[test]
    fn more_restrictive_per_rule() {
        let pick = |name: &str, a: Value, b: Value| find(name).unwrap().more_restrictive(&a, &b);
        assert_eq!(
            pick("PasswordRequired", json!(false), json!(true)),
            json!(true)
        );
        assert_eq!(pick("AllowSms", json!(true), json!(false)), json!(false));
        assert_eq!(
            pick("UserCanDisablePassword", json!(false), json!(true)),
            json!(false)
        );
        assert_eq!(
            pick("MinimumPasswordLength", json!(6), json!(10)),
            json!(10)
        );
        assert_eq!(
            pick("MaximumSecurityTimeout", json!(30), json!(10)),
            json!(10)
        );
        assert_eq!(pick("MaximumPasswordAge", json!(0), json!(90)), json!(90));
        assert_eq!(pick("MaximumPasswordAge", json!(30), json!(0)), json!(30));
        assert_eq!(pick("MaximumPasswordAge", json!(30), json!(90)), json!(30));
        assert_eq!(
            pick(
                "PasswordPattern",
                json!("upper_lower_and_numbers"),
                json!("letters_and_numbers")
            ),
            json!("upper_lower_and_numbers")
        );
        assert_eq!(
            pick(
                "AllowedApplications",
                json!(["mail", "browser"]),
                json!(["browser", "maps"])
            ),
            json!(["browser"])
        );
        assert_eq!(
            pick(
                "DisallowedApplications",
                json!(["games"]),
                json!(["maps", "games"])
            ),
            json!(["games", "maps"])
        );
    }
}
