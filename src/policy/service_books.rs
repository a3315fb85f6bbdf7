//! The service books a user's device receives (seed: "What is a service
//! book?"): one per service enabled for the user — the user's own
//! exception if there is one, else the server's list (`[policy] services`).

use std::collections::BTreeMap;

use bramble_proto::policy::{ServiceBook, ServiceBooks};

use super::PolicySettings;
pub use crate::db::models::user_service::{service_enabled, SERVICES};

/// The service books for `email`: one per service enabled for the user.
pub fn service_books(
    settings: &PolicySettings,
    server: &str,
    email: &str,
    exceptions: &BTreeMap<String, bool>,
) -> ServiceBooks {
    let book = |cid: &str, name: &str, settings: &[(&str, &str)]| ServiceBook {
        cid: cid.to_owned(),
        name: name.to_owned(),
        uid: server.to_owned(),
        settings: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    };
    let books = SERVICES
        .iter()
        .filter(|cid| service_enabled(&settings.services, exceptions, cid))
        .filter_map(|cid| {
            Some(match *cid {
                "CMIME" => book(
                    "CMIME",
                    "Desktop email",
                    &[("email", email), ("send_through", "enterprise server")],
                ),
                "CICAL" => book("CICAL", "Desktop calendar", &[("email", email)]),
                "SYNC" => book(
                    "SYNC",
                    "Desktop synchronization",
                    &[
                        ("databases", "contacts,calendar,tasks,memos"),
                        ("backup", "on"),
                    ],
                ),
                "IPPP" => book(
                    "IPPP",
                    "Enterprise browsing",
                    &[("proxy", "MDS Connection Service")],
                ),
                "BrowserConfig" => book(
                    "BrowserConfig",
                    "Enterprise browser",
                    &[
                        ("homepage", &settings.browser_homepage),
                        ("transport", "IPPP"),
                    ],
                ),
                "ALP" => book("ALP", "Address lookup", &[("max_results", "20")]),
                "BBIM" => book("BBIM", "Enterprise messenger", &[("email", email)]),
                _ => return None,
            })
        })
        .collect();
    ServiceBooks {
        email: email.to_owned(),
        books,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_book_per_enabled_service_only() {
        let mut settings = PolicySettings::default();
        let none = BTreeMap::new();
        let all = service_books(&settings, "S1", "a@example.org", &none);
        let cids: Vec<&str> = all.books.iter().map(|b| b.cid.as_str()).collect();
        assert_eq!(cids, SERVICES);
        settings.services = vec!["CMIME".into(), "ALP".into()];
        let some = service_books(&settings, "S1", "a@example.org", &none);
        let cids: Vec<&str> = some.books.iter().map(|b| b.cid.as_str()).collect();
        assert_eq!(cids, ["CMIME", "ALP"]);
        assert_eq!(some.books[0].settings["email"], "a@example.org");
        assert_eq!(
            some.enabled_message(),
            "Services Received. Your email address, a@example.org is now enabled."
        );
        // A user's own exceptions win over the server's list.
        let exceptions = BTreeMap::from([("CMIME".to_owned(), false), ("BBIM".to_owned(), true)]);
        let own = service_books(&settings, "S1", "a@example.org", &exceptions);
        let cids: Vec<&str> = own.books.iter().map(|b| b.cid.as_str()).collect();
        assert_eq!(cids, ["ALP", "BBIM"]);
        settings.services.push("FAX".into());
        assert_eq!(settings.unknown_services(), ["FAX"]);
    }
}
