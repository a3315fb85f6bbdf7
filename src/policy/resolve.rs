//! Which IT policy applies to a user, rule by rule, and where each value
//! came from.
//!
//! [`MergeMode::Precedence`] (the default, as in BES): the policy assigned
//! to the user wins; otherwise the policy of the user's highest-ranked
//! group (rank 1 is the highest; on equal ranks the earlier assignment);
//! otherwise the default policy. Rules the winning policy does not set take
//! the catalog default.
//!
//! [`MergeMode::MostRestrictive`]: every policy assigned to the user or to
//! one of the user's groups counts (the default policy only when none is
//! assigned), and each rule takes the most restrictive value any of them
//! sets ([`Rule::more_restrictive`](crate::policy::catalog::Rule::more_restrictive)).
//!
//! A resolved policy serializes canonically (JSON, keys sorted, no spaces)
//! for signing with the [domain key](crate::policy::signing).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::db::ids::{GroupId, ItPolicyId, UserId};
use crate::db::models::it_policy::{AssignmentTarget, ItPolicy, PolicyAssignment};
use crate::db::{Conn, DbResult};
use crate::policy::catalog::{self, RULES};
use crate::policy::signing::DomainKey;

/// How several policies that concern a user combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeMode {
    /// One policy wins: the user's, else the highest-ranked group's, else
    /// the default.
    #[default]
    Precedence,
    /// Per rule, the most restrictive value of every assigned policy.
    MostRestrictive,
}

/// Why a policy concerns the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Via {
    /// Assigned to the user.
    User,
    /// Assigned to a group the user is in, with the group's rank.
    Group { group_id: GroupId, rank: i32 },
    /// The default policy.
    Default,
}

/// A policy that took part in the resolution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicySource {
    pub policy_id: ItPolicyId,
    pub policy_name: String,
    pub via: Via,
}

/// Where a rule's value came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "from")]
pub enum RuleSource {
    Policy(PolicySource),
    /// No policy sets the rule: the catalog default.
    CatalogDefault,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedRule {
    pub value: Value,
    pub source: RuleSource,
}

/// The policy that applies to one user: every catalog rule with its value
/// and source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedPolicy {
    pub user_id: UserId,
    pub mode: MergeMode,
    /// The policies considered, winners first.
    pub policies: Vec<PolicySource>,
    pub rules: BTreeMap<String, ResolvedRule>,
}

/// A resolved policy as a device receives it: the canonical document and
/// the domain key's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignedPolicy {
    pub document: Vec<u8>,
    pub signature: Vec<u8>,
}

/// [`resolve_with`] in [`MergeMode::Precedence`].
pub fn resolve(conn: &mut Conn, user: UserId) -> DbResult<ResolvedPolicy> {
    resolve_with(conn, user, MergeMode::Precedence)
}

/// The policy that applies to `user` under `mode`.
pub fn resolve_with(conn: &mut Conn, user: UserId, mode: MergeMode) -> DbResult<ResolvedPolicy> {
    let mut candidates = candidates(conn, user)?;
    if mode == MergeMode::Precedence {
        candidates.truncate(1);
    }
    let mut sources = Vec::with_capacity(candidates.len());
    let mut rules: BTreeMap<String, ResolvedRule> = BTreeMap::new();
    for (policy, via) in candidates {
        let source = PolicySource {
            policy_id: policy.id,
            policy_name: policy.name.clone(),
            via,
        };
        for (name, value) in ItPolicy::rules(conn, policy.id)? {
            // A stored value the catalog no longer accepts is not applied.
            let Some(rule) = catalog::find(&name) else {
                continue;
            };
            if rule.validate(&value).is_err() {
                continue;
            }
            match rules.get_mut(&name) {
                None => {
                    rules.insert(
                        name,
                        ResolvedRule {
                            value,
                            source: RuleSource::Policy(source.clone()),
                        },
                    );
                }
                Some(current) => {
                    let merged = rule.more_restrictive(&current.value, &value);
                    if merged != current.value {
                        current.source = RuleSource::Policy(source.clone());
                        current.value = merged;
                    }
                }
            }
        }
        sources.push(source);
    }
    for rule in RULES {
        rules
            .entry(rule.name.to_owned())
            .or_insert_with(|| ResolvedRule {
                value: rule.default_value(),
                source: RuleSource::CatalogDefault,
            });
    }
    Ok(ResolvedPolicy {
        user_id: user,
        mode,
        policies: sources,
        rules,
    })
}

/// The policies that concern the user, in order of precedence: the user's
/// own, then groups by rank (1 first), or else the default policy.
fn candidates(conn: &mut Conn, user: UserId) -> DbResult<Vec<(ItPolicy, Via)>> {
    let mut assignments: Vec<PolicyAssignment> = ItPolicy::find_assignments_for_user(conn, user)?;
    // Users first, then groups by rank, then the earlier assignment.
    assignments.sort_by_key(|a| {
        (
            matches!(a.target, AssignmentTarget::Group(_)),
            a.rank,
            a.id.0,
        )
    });
    let mut found = Vec::new();
    for assignment in assignments {
        if let Some(policy) = ItPolicy::find_by_id(conn, assignment.policy_id)? {
            let via = match assignment.target {
                AssignmentTarget::User(_) => Via::User,
                AssignmentTarget::Group(group_id) => Via::Group {
                    group_id,
                    rank: assignment.rank,
                },
            };
            found.push((policy, via));
        }
    }
    if found.is_empty() {
        if let Some(policy) = ItPolicy::find_default(conn)? {
            found.push((policy, Via::Default));
        }
    }
    Ok(found)
}

/// `value` with every object's keys in sorted order, whatever map type
/// serde_json was built with.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Canonical JSON of any serializable value: keys sorted, no whitespace.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&sorted(&serde_json::to_value(value)?))
}

/// What the device receives: the rule values, without the server's notes
/// on where they came from.
#[derive(Serialize)]
struct Document<'a> {
    rules: BTreeMap<&'a str, &'a Value>,
}

impl ResolvedPolicy {
    /// The rule values alone.
    pub fn values(&self) -> BTreeMap<&str, &Value> {
        self.rules
            .iter()
            .map(|(name, rule)| (name.as_str(), &rule.value))
            .collect()
    }

    /// The canonical document a device receives and the signature covers.
    pub fn canonical_bytes(&self) -> DbResult<Vec<u8>> {
        canonical_json(&Document {
            rules: self.values(),
        })
        .map_err(|e| crate::db::DbError::Encoding {
            what: "encode the IT policy",
            message: e.to_string(),
        })
    }

    /// The canonical document signed with the domain key.
    pub fn sign(&self, key: &DomainKey) -> DbResult<SignedPolicy> {
        let document = self.canonical_bytes()?;
        let signature = key.sign(&document)?;
        Ok(SignedPolicy {
            document,
            signature,
        })
    }
}

impl SignedPolicy {
    /// Whether the document is unchanged and signed by `public_key`.
    pub fn verify(&self, public_key: &[u8]) -> bool {
        crate::policy::signing::verify(public_key, &self.document, &self.signature)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::group::Group;
    use crate::db::models::test_db;
    use crate::db::models::user::{NewUser, User};
    use serde_json::json;

    fn user(conn: &mut Conn, name: &str) -> User {
        NewUser {
            display_name: name.into(),
            email: format!("{name}@example.com"),
            mailbox_login: name.into(),
        }
        .save(conn)
        .unwrap()
    }

    fn policy(conn: &mut Conn, name: &str, rules: &[(&str, Value)]) -> ItPolicy {
        let policy = ItPolicy::create(conn, name, "").unwrap();
        for (rule, value) in rules {
            ItPolicy::set_rule(conn, policy.id, rule, value).unwrap();
        }
        policy
    }

    fn from(resolved: &ResolvedPolicy, rule: &str) -> (Value, Option<ItPolicyId>) {
        let r = &resolved.rules[rule];
        let id = match &r.source {
            RuleSource::Policy(source) => Some(source.policy_id),
            RuleSource::CatalogDefault => None,
        };
        (r.value.clone(), id)
    }

    #[test]
    fn user_beats_groups_beat_default() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let alice = user(conn, "alice");
            let nobody = user(conn, "nobody");
            // No policies at all: catalog defaults.
            let bare = resolve(conn, nobody.id)?;
            assert!(bare.policies.is_empty());
            assert_eq!(
                from(&bare, "MinimumPasswordLength"),
                (json!(4), None),
                "catalog default"
            );
            assert_eq!(bare.rules.len(), RULES.len());

            let default = policy(conn, "Default", &[("MinimumPasswordLength", json!(6))]);
            ItPolicy::set_default(conn, default.id)?;
            let sales_policy = policy(conn, "Sales", &[("MinimumPasswordLength", json!(8))]);
            let execs_policy = policy(
                conn,
                "Executives",
                &[
                    ("MinimumPasswordLength", json!(10)),
                    ("DisableCamera", json!(true)),
                ],
            );
            let own = policy(conn, "Alice", &[("MinimumPasswordLength", json!(12))]);

            assert_eq!(
                from(&resolve(conn, alice.id)?, "MinimumPasswordLength"),
                (json!(6), Some(default.id)),
                "the default policy"
            );

            let sales = Group::create(conn, "Sales", "")?;
            let execs = Group::create(conn, "Executives", "")?;
            Group::add_member(conn, sales.id, alice.id)?;
            Group::add_member(conn, execs.id, alice.id)?;
            ItPolicy::assign_to_group(conn, sales_policy.id, sales.id, 2)?;
            ItPolicy::assign_to_group(conn, execs_policy.id, execs.id, 1)?;
            let by_group = resolve(conn, alice.id)?;
            assert_eq!(
                from(&by_group, "MinimumPasswordLength"),
                (json!(10), Some(execs_policy.id)),
                "rank 1 beats rank 2"
            );
            assert_eq!(
                by_group.policies[0].via,
                Via::Group {
                    group_id: execs.id,
                    rank: 1
                }
            );
            assert_eq!(by_group.policies.len(), 1, "one policy wins");
            ItPolicy::assign_to_group(conn, execs_policy.id, execs.id, 3)?;
            assert_eq!(
                from(&resolve(conn, alice.id)?, "MinimumPasswordLength"),
                (json!(8), Some(sales_policy.id)),
                "now Sales ranks higher"
            );

            ItPolicy::assign_to_user(conn, own.id, alice.id)?;
            let mine = resolve(conn, alice.id)?;
            assert_eq!(
                from(&mine, "MinimumPasswordLength"),
                (json!(12), Some(own.id))
            );
            assert_eq!(
                from(&mine, "DisableCamera"),
                (json!(false), None),
                "rules the winning policy leaves unset take the catalog default"
            );
            assert_eq!(mine.policies[0].via, Via::User);
            assert_eq!(mine.policies[0].policy_name, "Alice");

            assert_eq!(
                from(&resolve(conn, nobody.id)?, "MinimumPasswordLength"),
                (json!(6), Some(default.id)),
                "others still get the default"
            );
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn merge_mode_takes_the_most_restrictive_value_per_rule() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let alice = user(conn, "alice");
            let default = policy(conn, "Default", &[("MaximumSecurityTimeout", json!(10))]);
            ItPolicy::set_default(conn, default.id)?;
            let own = policy(
                conn,
                "Alice",
                &[
                    ("MinimumPasswordLength", json!(6)),
                    ("MaximumSecurityTimeout", json!(60)),
                    ("AllowSms", json!(true)),
                ],
            );
            let group_policy = policy(
                conn,
                "Sales",
                &[
                    ("MinimumPasswordLength", json!(10)),
                    ("MaximumSecurityTimeout", json!(120)),
                    ("AllowSms", json!(false)),
                    ("DisallowedApplications", json!(["games"])),
                ],
            );
            let other_group_policy = policy(
                conn,
                "Field",
                &[("DisallowedApplications", json!(["maps"]))],
            );
            let sales = Group::create(conn, "Sales", "")?;
            let field = Group::create(conn, "Field", "")?;
            Group::add_member(conn, sales.id, alice.id)?;
            Group::add_member(conn, field.id, alice.id)?;
            ItPolicy::assign_to_user(conn, own.id, alice.id)?;
            ItPolicy::assign_to_group(conn, group_policy.id, sales.id, 1)?;
            ItPolicy::assign_to_group(conn, other_group_policy.id, field.id, 2)?;

            let merged = resolve_with(conn, alice.id, MergeMode::MostRestrictive)?;
            assert_eq!(merged.policies.len(), 3, "the default is not merged in");
            assert_eq!(
                from(&merged, "MinimumPasswordLength"),
                (json!(10), Some(group_policy.id))
            );
            assert_eq!(
                from(&merged, "MaximumSecurityTimeout"),
                (json!(60), Some(own.id))
            );
            assert_eq!(
                from(&merged, "AllowSms"),
                (json!(false), Some(group_policy.id))
            );
            assert_eq!(
                from(&merged, "DisallowedApplications").0,
                json!(["games", "maps"])
            );
            assert_eq!(from(&merged, "DisableBluetooth"), (json!(false), None));

            let plain = resolve(conn, alice.id)?;
            assert_eq!(
                from(&plain, "MinimumPasswordLength"),
                (json!(6), Some(own.id))
            );
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn the_resolved_policy_is_canonical_and_signed() {
        let (_dir, db) = test_db();
        let sealer = db.sealer();
        db.run_blocking(|conn| {
            let alice = user(conn, "alice");
            let own = policy(
                conn,
                "Alice",
                &[
                    ("MinimumPasswordLength", json!(12)),
                    ("AllowedApplications", json!(["mail"])),
                ],
            );
            ItPolicy::assign_to_user(conn, own.id, alice.id)?;
            let resolved = resolve(conn, alice.id)?;
            let bytes = resolved.canonical_bytes()?;
            let text = String::from_utf8(bytes.clone()).unwrap();
            assert!(text.starts_with(r#"{"rules":{"AllowSms":true,"AllowedApplications":["mail"],"ContentProtection":false,"#), "{text}");
            assert!(!text.contains(' '), "no whitespace: {text}");
            let keys: Vec<String> = serde_json::from_slice::<Value>(&bytes)
                .unwrap()
                .get("rules")
                .and_then(Value::as_object)
                .unwrap()
                .keys()
                .cloned()
                .collect();
            let mut sorted_keys = keys.clone();
            sorted_keys.sort();
            assert_eq!(keys, sorted_keys);
            assert_eq!(resolve(conn, alice.id)?.canonical_bytes()?, bytes, "stable");

            let key = DomainKey::load_or_create(conn, sealer)?;
            let signed = resolved.sign(&key)?;
            assert_eq!(signed.document, bytes);
            assert!(signed.verify(key.public_key()));

            let mut tampered = signed.clone();
            tampered.document = String::from_utf8(tampered.document)
                .unwrap()
                .replace(r#""MinimumPasswordLength":12"#, r#""MinimumPasswordLength":4"#)
                .into_bytes();
            assert_ne!(tampered.document, signed.document);
            assert!(!tampered.verify(key.public_key()), "a tampered policy fails");

            let other_domain = DomainKey::generate()?;
            let foreign = resolved.sign(&other_domain)?;
            assert!(
                !foreign.verify(key.public_key()),
                "a policy signed by another domain fails"
            );
            Ok(())
        })
        .unwrap();
    }
}
