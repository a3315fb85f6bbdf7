//! Named permissions and what a set of roles grants.
//!
//! A role stores a JSON list of grants: a permission's name
//! (`users.write`), every permission of an area (`users.*`) or everything
//! (`*`). An administrator holds the union of the grants of their roles and
//! of their administrator groups' roles.

use serde::Serialize;

use crate::db::models::administrator::Role;

macro_rules! permissions {
    ($($variant:ident => $name:literal, $words:literal;)*) => {
        /// Something an administrator may do in the console. Every API
        /// endpoint names the one it needs (see `endpoints`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Permission { $($variant),* }

        impl Permission {
            /// Every permission, in the order the console lists them.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant),*];

            /// The name roles store, e.g. `users.write`.
            pub fn as_str(self) -> &'static str {
                match self { $(Permission::$variant => $name),* }
            }

            /// What it allows, in an administrator's words.
            pub fn describe(self) -> &'static str {
                match self { $(Permission::$variant => $words),* }
            }

            pub fn parse(name: &str) -> Option<Permission> {
                match name { $($name => Some(Permission::$variant),)* _ => None }
            }
        }
    };
}

permissions! {
    UsersRead => "users.read", "view users and their groups";
    UsersWrite => "users.write", "create, change and delete users";
    UsersActivation => "users.activation", "set activation passwords for users";
    GroupsRead => "groups.read", "view groups and their members";
    GroupsWrite => "groups.write", "create and delete groups, change their members";
    DevicesRead => "devices.read", "view devices";
    DevicesWrite => "devices.write", "send IT admin commands to devices";
    PoliciesRead => "policies.read", "view IT policies";
    PoliciesWrite => "policies.write", "change and assign IT policies";
    SoftwareRead => "software.read", "view software configurations";
    SoftwareWrite => "software.write", "change and assign software configurations";
    FiltersRead => "filters.read", "view global message filters";
    FiltersWrite => "filters.write", "change global message filters";
    ServersRead => "servers.read", "view servers and components";
    ServersWrite => "servers.write", "restart components, change the wireless network connection";
    AdministratorsRead => "administrators.read", "view administrators, their groups and roles";
    AdministratorsWrite => "administrators.write", "create administrators, assign roles, define custom roles";
    AuditRead => "audit.read", "view, export and verify the audit log";
}

impl Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Whether one stored grant covers `permission`.
fn covers(grant: &str, permission: Permission) -> bool {
    if grant == "*" {
        return true;
    }
    match grant.strip_suffix(".*") {
        Some(area) => permission
            .as_str()
            .split_once('.')
            .is_some_and(|(a, _)| a == area),
        None => grant == permission.as_str(),
    }
}

/// Checks a grant a custom role is to store: a permission, `area.*` for an
/// area that exists, or `*`.
pub fn valid_grant(grant: &str) -> bool {
    grant == "*"
        || Permission::parse(grant).is_some()
        || grant.strip_suffix(".*").is_some_and(|area| {
            Permission::ALL
                .iter()
                .any(|p| p.as_str().split_once('.').is_some_and(|(a, _)| a == area))
        })
}

/// The permissions a set of roles grants together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    permissions: std::collections::BTreeSet<Permission>,
}

impl Grants {
    pub fn of_roles(roles: &[Role]) -> Grants {
        let grants: Vec<String> = roles.iter().flat_map(Role::permission_list).collect();
        Grants {
            permissions: Permission::ALL
                .iter()
                .copied()
                .filter(|p| grants.iter().any(|g| covers(g, *p)))
                .collect(),
        }
    }

    pub fn allows(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    pub fn list(&self) -> Vec<Permission> {
        self.permissions.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::ids::RoleId;

    fn role(grants: &[&str]) -> Role {
        Role {
            id: RoleId(1),
            name: "r".into(),
            builtin: false,
            permissions: serde_json::to_string(grants).unwrap_or_default(),
        }
    }

    #[test]
    fn grants_cover_names_areas_and_everything() {
        let g = Grants::of_roles(&[role(&["users.*"]), role(&["audit.read"])]);
        assert!(g.allows(Permission::UsersRead));
        assert!(g.allows(Permission::UsersWrite));
        assert!(g.allows(Permission::AuditRead));
        assert!(!g.allows(Permission::GroupsRead));
        assert!(!g.allows(Permission::AdministratorsWrite));
        let all = Grants::of_roles(&[role(&["*"])]);
        assert_eq!(all.list(), Permission::ALL);
        assert!(Grants::of_roles(&[]).list().is_empty());
        // "users.*" is not a prefix match on the text.
        let g = Grants::of_roles(&[role(&["user.*"])]);
        assert!(!g.allows(Permission::UsersRead));
    }

    #[test]
    fn names_round_trip_and_grants_are_checked() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(*p));
        }
        assert!(valid_grant("*"));
        assert!(valid_grant("devices.*"));
        assert!(valid_grant("audit.read"));
        assert!(!valid_grant("audit.write"));
        assert!(!valid_grant("nothing.*"));
    }
}
