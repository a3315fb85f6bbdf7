//! The floors of the server core, checked: every `crate::…` path in
//! `src/` (outside `src/bin`) may name only a module on a lower floor, or
//! its own module. The floors are read from `docs/architecture.md` (the
//! fenced block marked `floors`), so the document and the check cannot
//! drift apart. Items at the crate root that are not modules (`VERSION`)
//! are ground; the root's re-exports count as the module they come from.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crate root's re-exports and the module each stands for.
const ROOT_REEXPORTS: &[(&str, &str)] = &[
    ("Settings", "config"),
    ("Server", "server"),
    ("ServerHandle", "server"),
];

fn floors(doc: &str) -> BTreeMap<String, usize> {
    let block = doc
        .split("```floors\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/architecture.md has a ```floors block");
    let mut floors = BTreeMap::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let (floor, modules) = line
            .split_once(':')
            .expect("floor lines read `N: module …`");
        let floor: usize = floor.trim().parse().expect("a floor is a number");
        for module in modules.split_whitespace() {
            floors.insert(module.to_owned(), floor);
        }
    }
    floors
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first segment of every `crate::` path in `source`, comments
/// removed; `crate::{a, b::c}` names `a` and `b`.
fn named_modules(source: &str) -> BTreeSet<String> {
    let code: String = source
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item, mut end) = (1, String::new(), group.len());
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = i;
                    break;
                }
                if c == ',' && depth == 1 {
                    names.insert(ident(&item));
                    item.clear();
                } else {
                    item.push(c);
                }
            }
            names.insert(ident(&item));
            rest = &group[end..];
        } else {
            names.insert(ident(rest));
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

#[test]
fn no_module_imports_a_higher_floor_or_a_sibling() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let floors = floors(&doc);
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.starts_with("bin/") || rel == "lib.rs" || rel == "floors.rs" {
            continue;
        }
        let module = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_owned();
        let Some(&own) = floors.get(&module) else {
            wrong.push(format!(
                "src/{rel}: module `{module}` has no floor in docs/architecture.md"
            ));
            continue;
        };
        let source = std::fs::read_to_string(&file).unwrap();
        for named in named_modules(&source) {
            let target = ROOT_REEXPORTS
                .iter()
                .find(|(item, _)| *item == named)
                .map(|(_, m)| (*m).to_owned())
                .unwrap_or(named);
            if target == module {
                continue;
            }
            // Not a module of the crate (a constant at the root): ground.
            let Some(&theirs) = floors.get(&target) else {
                continue;
            };
            if theirs >= own {
                wrong.push(format!(
                    "src/{rel}: `{module}` (floor {own}) imports `{target}` (floor {theirs})"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "a module imports one on its own or a higher floor (see docs/architecture.md):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_reader_finds_grouped_and_plain_paths() {
    let names = named_modules(
        "use crate::db::{Conn, DbError};\nuse crate::{clock::Clock, router::{Via, RouterHandle}};\n// crate::server::x\nlet x = crate::policy::signing::f();",
    );
    let names: Vec<_> = names.into_iter().collect();
    assert_eq!(names, ["clock", "db", "policy", "router"]);
}
