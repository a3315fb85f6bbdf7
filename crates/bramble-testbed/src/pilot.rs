//! A Bramble beside a testbed: the `[mail]` settings that reach its
//! servers, and its sample users enrolled with devices (tests, benchmarks).

use bramble_proto::Pin;

use bramble::db::ids::UserId;
use bramble::db::models::device::{Device, NewDevice};
use bramble::db::models::user::{NewUser, User};
use bramble::db::{Database, DbResult};
use bramble::messaging_agent::{MailSettings, Security};
use bramble::sync::SyncSettings;

use super::{TestUser, TestbedInfo};

/// `[mail]` for the testbed's Dovecot and Postfix (plain TCP on loopback),
/// with short delays suited to tests.
pub fn mail_settings(info: &TestbedInfo) -> MailSettings {
    MailSettings {
        imap: Some(info.imap_addr().to_string()),
        imap_security: Security::None,
        smtp: Some(info.smtp_addr().to_string()),
        smtp_security: Security::None,
        service_login: info.master_login.clone(),
        service_password: info.master_password.clone(),
        master_separator: info.master_separator.clone(),
        refresh_users_secs: 1,
        reconnect_min_ms: 100,
        reconnect_max_ms: 1_000,
        smtp_retry_secs: 1,
        ..MailSettings::default()
    }
}

/// `[sync]` for the testbed's Radicale, checked for changes every second.
pub fn sync_settings(info: &TestbedInfo) -> SyncSettings {
    SyncSettings {
        url: Some(info.dav_url.clone()),
        service_login: info.dav_service_login.clone(),
        service_password: info.dav_service_password.clone(),
        poll_secs: 1,
        request_timeout_secs: 10,
        ..SyncSettings::default()
    }
}

/// Creates a Bramble user for each testbed user (address and mailbox
/// login from the testbed) with a device, PINs counting up from
/// `first_pin`. Transport keys are provisioned separately.
pub fn enroll(db: &Database, users: &[TestUser], first_pin: u32) -> DbResult<Vec<(UserId, Pin)>> {
    db.run_blocking(|conn| {
        bramble::db::write_transaction(conn, |conn| {
            users
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    let user = match User::find_by_email(conn, &u.address)? {
                        Some(user) => user,
                        None => NewUser {
                            display_name: u.login.clone(),
                            email: u.address.clone(),
                            mailbox_login: u.login.clone(),
                        }
                        .save(conn)?,
                    };
                    let pin = Pin(first_pin + i as u32);
                    if Device::find_by_pin(conn, &pin)?.is_none() {
                        Device::create(
                            conn,
                            &NewDevice {
                                pin,
                                user_id: Some(user.id),
                                model: "Bramble reference".into(),
                                os_version: "5.0".into(),
                                carrier: "loopback".into(),
                            },
                        )?;
                    }
                    Ok((user.id, pin))
                })
                .collect()
        })
    })
}
