//! The IT policy rule catalog, defined with the wire in
//! [`bramble_proto::catalog`] (server and device must agree on it) and
//! re-exported here so the server's callers keep their path.

pub use bramble_proto::catalog::*;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_operations_guide_lists_every_rule() {
        let guide = include_str!("../../docs/operations.md");
        for rule in RULES {
            let row = guide
                .lines()
                .find(|line| line.starts_with(&format!("| `{}` |", rule.name)));
            assert!(
                row.is_some(),
                "{} is missing from the rules table",
                rule.name
            );
            let row = row.unwrap();
            assert!(row.contains(rule.title), "{row}");
            if let Kind::Int { min, max, .. } = rule.kind {
                let max = if max >= 10_000 {
                    format!("{},{:03}", max / 1000, max % 1000)
                } else {
                    max.to_string()
                };
                assert!(row.contains(&format!("{min}–{max}")), "{row}");
            }
        }
    }
}
