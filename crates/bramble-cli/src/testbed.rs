//! `bramble testbed up|down`: real Dovecot, Postfix, slapd and Radicale on loopback
//! from one folder, left running for tests, benchmarks and pilots.

use std::path::PathBuf;

use clap::Subcommand;

use bramble_testbed::{stop_dir, Testbed, TestbedOptions, TestbedPorts};

use crate::Failure;

#[derive(Subcommand)]
pub enum TestbedCommand {
    /// Start Dovecot (IMAP, LMTP), Postfix (SMTP), slapd (LDAP, the same
    /// users) and Radicale (CalDAV/CardDAV, a calendar and an address book
    /// per user) from DIR and leave them running; writes DIR/testbed.toml
    /// and DIR/bramble.toml.
    Up {
        /// The testbed folder (created if missing).
        #[arg(long, value_name = "D")]
        dir: PathBuf,
        /// Sample users user1..userN.
        #[arg(long, default_value_t = 3)]
        users: usize,
        /// IMAP port (default: a free one).
        #[arg(long)]
        imap_port: Option<u16>,
        /// LMTP port (default: a free one).
        #[arg(long)]
        lmtp_port: Option<u16>,
        /// SMTP port (default: a free one).
        #[arg(long)]
        smtp_port: Option<u16>,
        /// LDAP port (default: a free one).
        #[arg(long)]
        ldap_port: Option<u16>,
        /// CalDAV/CardDAV (Radicale) port (default: a free one).
        #[arg(long)]
        radicale_port: Option<u16>,
    },
    /// Stop the servers started by `testbed up` from DIR (nothing running is
    /// not an error).
    Down {
        #[arg(long, value_name = "D")]
        dir: PathBuf,
    },
}

pub fn run(command: TestbedCommand) -> Result<(), Failure> {
    match command {
        TestbedCommand::Up {
            dir,
            users,
            imap_port,
            lmtp_port,
            smtp_port,
            ldap_port,
            radicale_port,
        } => {
            let options = TestbedOptions {
                dir,
                users,
                ports: TestbedPorts {
                    imap: imap_port,
                    lmtp: lmtp_port,
                    smtp: smtp_port,
                    ldap: ldap_port,
                    radicale: radicale_port,
                },
            };
            let testbed = Testbed::start(options).map_err(|e| Failure::new(e.code(), e))?;
            let info = testbed.detach();
            let dir = info.dir.display();
            println!("Testbed running in {dir}");
            println!(
                "  IMAP (IDLE)  {}   Dovecot PID {}, log {dir}/dovecot.log",
                info.imap_addr(),
                info.dovecot_pid
            );
            println!("  LMTP         {}", info.lmtp_addr());
            println!(
                "  SMTP         {}   Postfix, log {dir}/postfix.log",
                info.smtp_addr()
            );
            let logins: Vec<String> = info
                .users
                .iter()
                .map(|u| format!("{}/{}", u.address, u.password))
                .collect();
            println!("  users        {}", logins.join(", "));
            println!(
                "  master user  {} (log in as {}), password in {dir}/testbed.toml",
                info.master_login,
                info.master_login_for("user1")
            );
            println!(
                "  LDAP         {}   slapd, base {}, bind {} (password in {dir}/testbed.toml), log {dir}/slapd/slapd.log",
                info.ldap_url, info.ldap_base_dn, info.ldap_bind_dn
            );
            println!(
                "  CalDAV/CardDAV {} Radicale, service account {} (password in {dir}/testbed.toml), log {dir}/radicale/radicale.log",
                info.dav_url, info.dav_service_login
            );
            println!("  settings     {dir}/bramble.toml (with the directory as [[directories]] \"testbed\" and the organizer server as [sync])");
            println!("Stop it with: bramble testbed down --dir {dir}");
            Ok(())
        }
        TestbedCommand::Down { dir } => {
            let was_running = stop_dir(&dir).map_err(|e| Failure::new(e.code(), e))?;
            if was_running {
                println!("Testbed in {} stopped.", dir.display());
            } else {
                println!("No testbed running in {}.", dir.display());
            }
            Ok(())
        }
    }
}
