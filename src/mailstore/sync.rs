//! One sync run: read the whole picture from the directory first, then write
//! it in one transaction, so a run that fails part-way changes nothing but
//! its own record.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use diesel::Connection;
use serde::Serialize;
use tokio::sync::watch;

use super::ldap::{self, Snapshot, Watermark};
use super::settings::DirectorySettings;
use super::{DirectoryError, Phase, Progress};
use crate::db::ids::{GroupId, UserId};
use crate::db::models::directory::{dn_key, Directory, SyncFigures, SyncRun};
use crate::db::models::group::Group;
use crate::db::models::user::{AccountStatus, DirectoryLink, NewUser, User};
use crate::db::{Conn, Database, DbError, DbResult};

/// What `sync` reports: the run as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub directory: String,
    pub run: SyncRun,
    /// Entries that could not be copied, with why (at most 20 shown).
    pub skipped: Vec<String>,
    pub timings: SyncTimings,
}

/// Where a run's time went, for sizing and benchmarks.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SyncTimings {
    /// Connecting, binding and reading the directory.
    pub read_ms: f64,
    /// Writing to the Configuration Database (one transaction).
    pub write_ms: f64,
}

fn millis(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Syncs one directory into the Configuration Database. `full` forces a
/// full read; the first sync of a directory is always full. Progress is
/// published on `progress` while it runs.
pub async fn sync(
    db: &Database,
    settings: &DirectorySettings,
    full: bool,
    progress: &watch::Sender<Progress>,
) -> Result<SyncReport, DirectoryError> {
    progress.send_replace(Progress::default());
    let name = settings.name.clone();
    let directory = db
        .run(move |conn| Directory::find_or_create(conn, &name))
        .await?;
    // No usable mark (the first sync, or the change attribute changed):
    // a full read.
    let since = directory
        .high_water_mark
        .as_deref()
        .and_then(|mark| Watermark::for_attribute(mark, &settings.attributes().changed))
        .filter(|_| !full);
    let full = since.is_none();
    let run = db
        .run(move |conn| SyncRun::start(conn, directory.id, full))
        .await?;
    tracing::info!(target: "bramble::mailstore", directory = %settings.name, full, "directory sync started");

    let started = Instant::now();
    let mut timings = SyncTimings::default();
    let outcome = match ldap::read(settings, since.as_ref(), progress).await {
        Ok(snapshot) => {
            timings.read_ms = millis(started);
            progress.send_modify(|p| p.phase = Phase::Writing);
            let directory_id = directory.id;
            let snapshot = std::sync::Arc::new(snapshot);
            let shared = snapshot.clone();
            let written = db
                .run(move |conn| {
                    conn.transaction::<_, DbError, _>(|conn| {
                        let figures = apply(conn, directory_id, &shared)?;
                        Directory::save_progress(
                            conn,
                            directory_id,
                            shared.high_water_mark.as_deref(),
                            full,
                        )?;
                        Ok(figures)
                    })
                })
                .await;
            timings.write_ms = millis(started) - timings.read_ms;
            tracing::debug!(target: "bramble::mailstore", directory = %settings.name,
                read_ms = timings.read_ms, write_ms = timings.write_ms, "directory read and written");
            written
                .map_err(DirectoryError::from)
                .map(|figures| (figures, snapshot))
        }
        Err(e) => Err(e),
    };

    match outcome {
        Ok((figures, snapshot)) => {
            let message = snapshot
                .skipped
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ");
            let run = db
                .run(move |conn| SyncRun::finish(conn, run.id, &figures, "succeeded", &message))
                .await?;
            progress.send_modify(|p| p.phase = Phase::Done);
            tracing::info!(target: "bramble::mailstore", directory = %settings.name,
                read = run.entries_read, created = run.created, updated = run.updated,
                removed = run.removed, errors = run.errors, "directory sync finished");
            Ok(SyncReport {
                directory: settings.name.clone(),
                run,
                timings,
                skipped: snapshot.skipped.iter().take(20).cloned().collect(),
            })
        }
        Err(e) => {
            let message = format!("{}: {e}", e.code());
            let figures = SyncFigures {
                entries_read: i64::try_from(progress.borrow().entries_read).unwrap_or(i64::MAX),
                errors: 1,
                ..SyncFigures::default()
            };
            progress.send_modify(|p| p.phase = Phase::Failed);
            tracing::error!(target: "bramble::mailstore", directory = %settings.name, code = e.code(), "{e}");
            // The run's record is best effort: the directory error matters more.
            let _ = db
                .run(move |conn| SyncRun::finish(conn, run.id, &figures, "failed", &message))
                .await;
            Err(e)
        }
    }
}

/// Writes a snapshot. Never deletes a user: one that left the directory or
/// was disabled there becomes `removed_in_directory`. Touches only what the
/// snapshot holds: on an incremental sync the changed users and the groups
/// read, found by indexed lookups rather than by loading every link.
fn apply(conn: &mut Conn, directory: i64, snap: &Snapshot) -> DbResult<SyncFigures> {
    let mut figures = SyncFigures {
        entries_read: i64::try_from(snap.entries_read).unwrap_or(i64::MAX),
        errors: i64::try_from(snap.skipped.len()).unwrap_or(i64::MAX),
        ..SyncFigures::default()
    };
    // Every link on a complete read (a missing one means removal), else the
    // links of the entries read.
    let links = if snap.complete {
        User::find_directory_links(conn, directory)?
    } else {
        let guids: Vec<&str> = snap.users.iter().map(|u| u.guid.as_str()).collect();
        User::find_by_directory_guids(conn, directory, &guids)?
    };
    let linked: HashMap<String, DirectoryLink> = links
        .into_iter()
        .filter_map(|link| link.user.directory_guid.clone().map(|g| (g, link)))
        .collect();
    // The user each entry read became, for memberOf below.
    let mut by_entry: HashMap<String, UserId> = HashMap::new();
    for entry in &snap.users {
        let (existing, known) = match linked.get(&entry.guid) {
            Some(link) => (Some(link.user.clone()), Some(link)),
            // A user added by hand before the directory was connected is
            // adopted by e-mail rather than duplicated.
            None => match User::find_by_email(conn, &entry.email)? {
                Some(user) if user.directory_id.is_none() => (Some(user), None),
                Some(_) => {
                    figures.errors += 1;
                    tracing::warn!(target: "bramble::mailstore", dn = %entry.dn,
                        "e-mail {} belongs to a user of another directory; entry skipped", entry.email);
                    continue;
                }
                None => (None, None),
            },
        };
        let id = match existing {
            Some(mut user) => {
                let status = if entry.disabled {
                    AccountStatus::RemovedInDirectory
                } else if user.account_status == AccountStatus::RemovedInDirectory {
                    AccountStatus::Active
                } else {
                    user.account_status
                };
                let newly_removed = status == AccountStatus::RemovedInDirectory
                    && user.account_status != AccountStatus::RemovedInDirectory;
                let changed = user.display_name != entry.display_name
                    || user.email != entry.email
                    || user.mailbox_login != entry.login
                    || user.directory_id != Some(directory)
                    || (user.account_status != status && !newly_removed);
                user.display_name = entry.display_name.clone();
                user.email = entry.email.clone();
                user.mailbox_login = entry.login.clone();
                user.account_status = status;
                if changed || newly_removed {
                    user.save(conn)?;
                }
                let dn_current = known.is_some_and(|link| {
                    link.dn.as_deref() == Some(entry.dn.as_str())
                        && link.dn_key.as_deref() == Some(dn_key(&entry.dn).as_str())
                });
                if !dn_current {
                    User::set_directory_link(
                        conn,
                        user.id,
                        Some((directory, &entry.guid, &entry.dn)),
                    )?;
                }
                if newly_removed {
                    figures.removed += 1;
                } else if changed {
                    figures.updated += 1;
                }
                user.id
            }
            None => {
                let mut user = NewUser {
                    display_name: entry.display_name.clone(),
                    email: entry.email.clone(),
                    mailbox_login: entry.login.clone(),
                }
                .save(conn)?;
                if entry.disabled {
                    user.account_status = AccountStatus::RemovedInDirectory;
                    user.save(conn)?;
                }
                User::set_directory_link(conn, user.id, Some((directory, &entry.guid, &entry.dn)))?;
                figures.created += 1;
                user.id
            }
        };
        if !entry.member_of.is_empty() {
            by_entry.insert(entry.guid.clone(), id);
        }
    }

    // Users whose entry is gone (only a complete read can tell); the users
    // read above are all present, so these links are as loaded.
    if snap.complete {
        let mut gone: Vec<&User> = linked
            .values()
            .map(|link| &link.user)
            .filter(|user| {
                user.directory_guid
                    .as_deref()
                    .is_some_and(|guid| !snap.present.contains(guid))
                    && user.account_status != AccountStatus::RemovedInDirectory
            })
            .collect();
        gone.sort_by_key(|user| user.id);
        for user in gone {
            let mut user = user.clone();
            user.account_status = AccountStatus::RemovedInDirectory;
            user.save(conn)?;
            figures.removed += 1;
        }
    }

    // Group members named by DN, found through the DNs users have now
    // (written above, in this transaction).
    let mut keys: Vec<String> = snap
        .groups
        .iter()
        .flat_map(|g| g.members.iter().map(|dn| dn_key(dn)))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    keys.sort();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let by_dn: HashMap<String, UserId> =
        User::find_ids_by_directory_dn_keys(conn, directory, &key_refs)?
            .into_iter()
            .collect();
    // Groups named on the users read (Active Directory's memberOf).
    let mut member_of: HashMap<String, Vec<UserId>> = HashMap::new();
    for entry in &snap.users {
        if let Some(id) = by_entry.get(&entry.guid) {
            for group in &entry.member_of {
                member_of.entry(dn_key(group)).or_default().push(*id);
            }
        }
    }
    for entry in &snap.groups {
        let mut is_new = false;
        let group = match Group::find_by_directory_guid(conn, directory, &entry.guid)? {
            Some(mut group) => {
                if group.name != entry.name {
                    group.name = entry.name.clone();
                    group.save(conn)?;
                    figures.updated += 1;
                }
                group
            }
            None => match Group::find_by_name(conn, &entry.name)? {
                Some(group) => group,
                None => {
                    is_new = true;
                    figures.created += 1;
                    Group::create(conn, &entry.name, "copied from the directory")?
                }
            },
        };
        Group::set_directory_link(conn, group.id, directory, &entry.guid, &entry.dn)?;
        let mut members: HashSet<UserId> = entry
            .members
            .iter()
            .filter_map(|dn| by_dn.get(&dn_key(dn)).copied())
            .collect();
        if let Some(extra) = member_of.remove(&dn_key(&entry.dn)) {
            members.extend(extra);
        }
        let members: Vec<UserId> = members.into_iter().collect();
        if Group::set_members(conn, group.id, &members)? && !is_new {
            figures.updated += 1;
        }
    }
    // memberOf naming a group not read now (an incremental sync reads only
    // changed groups): the user joins it; leaving it changes the group.
    if !member_of.is_empty() {
        let groups: HashMap<String, GroupId> = Group::find_directory_dns(conn, directory)?
            .into_iter()
            .map(|(id, dn)| (dn_key(&dn), id))
            .collect();
        let mut pending: Vec<(&String, &Vec<UserId>)> = member_of.iter().collect();
        pending.sort();
        for (dn, users) in pending {
            let Some(group) = groups.get(dn) else {
                continue;
            };
            let mut joined = false;
            for user in users {
                if !Group::has_member(conn, *group, *user)? {
                    Group::add_member(conn, *group, *user)?;
                    joined = true;
                }
            }
            if joined {
                figures.updated += 1;
            }
        }
    }
    // Groups gone from the directory (only a complete read can tell) are
    // kept (IT policies may be assigned to them) but lose their members,
    // as the directory says.
    if snap.complete {
        let present: HashSet<&str> = snap.groups.iter().map(|g| g.guid.as_str()).collect();
        for (group, guid) in Group::find_directory_links(conn, directory)? {
            if !present.contains(guid.as_str()) && Group::set_members(conn, group.id, &[])? {
                figures.updated += 1;
            }
        }
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::models::test_db;
    use crate::mailstore::ldap::{DirectoryGroup, DirectoryUser};

    fn entry(guid: &str, login: &str, disabled: bool, member_of: &[&str]) -> DirectoryUser {
        DirectoryUser {
            guid: guid.into(),
            dn: format!("CN={login},OU=Staff,DC=corp,DC=example"),
            login: login.into(),
            display_name: login.to_uppercase(),
            email: format!("{login}@corp.example"),
            disabled,
            member_of: member_of.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// An incremental snapshot touches only what it holds: members found by
    /// DN through the index (also users not read now), memberOf joining a
    /// group not read now, nobody removed, no group emptied.
    #[test]
    fn incremental_writes_only_what_was_read() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let dir = Directory::find_or_create(conn, "ad")?.id;
            let sales_dn = "CN=Sales,OU=Groups,DC=corp,DC=example";
            let ops_dn = "CN=Ops,OU=Groups,DC=corp,DC=example";
            let group = |guid: &str, dn: &str, name: &str, members: &[&str]| DirectoryGroup {
                guid: guid.into(),
                dn: dn.into(),
                name: name.into(),
                members: members.iter().map(|s| s.to_string()).collect(),
            };
            let alice = entry("g-alice", "alice", false, &[]);
            let bob = entry("g-bob", "bob", false, &[]);
            let mut full = Snapshot {
                users: vec![alice.clone(), bob.clone()],
                groups: vec![
                    group("g-sales", sales_dn, "Sales", &[&alice.dn]),
                    group("g-ops", ops_dn, "Ops", &[&bob.dn]),
                ],
                complete: true,
                ..Snapshot::default()
            };
            full.present = full.users.iter().map(|u| u.guid.clone()).collect();
            apply(conn, dir, &full)?;

            // Carol is new and named by Sales (spelt in another case);
            // Dave is new and names Ops himself (memberOf); Ops is not read.
            let carol = entry("g-carol", "carol", false, &[]);
            let dave = entry("g-dave", "dave", false, &[ops_dn]);
            let mut changes = Snapshot {
                users: vec![carol.clone(), dave],
                groups: vec![group(
                    "g-sales",
                    sales_dn,
                    "Sales",
                    &[&alice.dn, &carol.dn.to_uppercase()],
                )],
                complete: false,
                ..Snapshot::default()
            };
            changes.present = changes.users.iter().map(|u| u.guid.clone()).collect();
            let figures = apply(conn, dir, &changes)?;
            assert_eq!(
                (figures.created, figures.updated, figures.removed),
                (2, 2, 0),
                "carol and dave created; sales and ops changed; alice and bob not read but kept"
            );
            let id = |conn: &mut Conn, email: &str| -> DbResult<UserId> {
                Ok(User::find_by_email(conn, email)?.unwrap().id)
            };
            let sales = Group::find_by_name(conn, "Sales")?.unwrap();
            let mut want = vec![
                id(conn, "alice@corp.example")?,
                id(conn, "carol@corp.example")?,
            ];
            want.sort();
            assert_eq!(Group::find_member_ids(conn, sales.id)?, want);
            let ops = Group::find_by_name(conn, "Ops")?.unwrap();
            let mut want = vec![
                id(conn, "bob@corp.example")?,
                id(conn, "dave@corp.example")?,
            ];
            want.sort();
            assert_eq!(Group::find_member_ids(conn, ops.id)?, want);
            let bob = User::find_by_email(conn, "bob@corp.example")?.unwrap();
            assert_eq!(bob.account_status, AccountStatus::Active);

            // The same changes again change nothing.
            let figures = apply(conn, dir, &changes)?;
            assert_eq!(
                (figures.created, figures.updated, figures.removed),
                (0, 0, 0)
            );
            Ok(())
        })
        .unwrap();
    }

    /// Active Directory's shape: disabled accounts and `memberOf`, checked
    /// without a server.
    #[test]
    fn disabled_adopted_and_member_of() {
        let (_dir, db) = test_db();
        db.run_blocking(|conn| {
            let dir = Directory::find_or_create(conn, "ad")?.id;
            // Added by hand before the directory was connected.
            let hand = NewUser {
                display_name: "Carol".into(),
                email: "carol@corp.example".into(),
                mailbox_login: "carol".into(),
            }
            .save(conn)?;
            let sales = "CN=Sales, OU=Groups,DC=corp,DC=example";
            let mut snap = Snapshot {
                users: vec![
                    entry("g-alice", "alice", false, &[sales]),
                    entry("g-bob", "bob", true, &[]),
                    entry("g-carol", "carol", false, &[sales]),
                ],
                groups: vec![DirectoryGroup {
                    guid: "g-sales".into(),
                    dn: "cn=sales,ou=groups,dc=corp,dc=example".into(),
                    name: "Sales".into(),
                    members: vec![],
                }],
                entries_read: 4,
                complete: true,
                ..Snapshot::default()
            };
            snap.present = snap.users.iter().map(|u| u.guid.clone()).collect();
            let figures = apply(conn, dir, &snap)?;
            assert_eq!(
                figures.created, 3,
                "alice, bob and the group; carol adopted"
            );
            assert_eq!(figures.updated, 1, "carol linked and renamed");

            let carol = User::find_by_email(conn, "carol@corp.example")?.unwrap();
            assert_eq!(carol.id, hand.id);
            assert_eq!(carol.directory_guid.as_deref(), Some("g-carol"));
            let bob = User::find_by_email(conn, "bob@corp.example")?.unwrap();
            assert_eq!(bob.account_status, AccountStatus::RemovedInDirectory);
            let group = Group::find_by_name(conn, "Sales")?.unwrap();
            let alice = User::find_by_email(conn, "alice@corp.example")?.unwrap();
            let mut want = vec![alice.id, carol.id];
            want.sort();
            assert_eq!(Group::find_member_ids(conn, group.id)?, want);

            // Bob enabled again: active; nothing else changes.
            snap.users[1].disabled = false;
            let figures = apply(conn, dir, &snap)?;
            assert_eq!(
                (figures.created, figures.updated, figures.removed),
                (0, 1, 0)
            );
            let bob = User::find_by_email(conn, "bob@corp.example")?.unwrap();
            assert_eq!(bob.account_status, AccountStatus::Active);

            // Alice gone from the directory: kept, marked, once.
            snap.users.remove(0);
            snap.present.remove("g-alice");
            let figures = apply(conn, dir, &snap)?;
            assert_eq!(figures.removed, 1);
            assert_eq!(apply(conn, dir, &snap)?.removed, 0);
            let alice = User::find_by_id(conn, alice.id)?.unwrap();
            assert_eq!(alice.account_status, AccountStatus::RemovedInDirectory);

            // The group deleted in the directory: kept, emptied.
            snap.groups.clear();
            assert_eq!(apply(conn, dir, &snap)?.updated, 1);
            assert!(Group::find_member_ids(conn, group.id)?.is_empty());
            assert!(Group::find_by_id(conn, group.id)?.is_some());
            Ok(())
        })
        .unwrap();
    }
}
