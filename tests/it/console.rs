//! The Administration Service as the `bramble` executable runs it.

use crate::fixture::{bramble, text};

/// `bramble bench console` ends with one JSON line of its figures, found
/// over HTTP against the real server core.
#[test]
fn bench_console_prints_one_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = bramble(
        dir.path(),
        &["bench", "console", "--users", "500", "--requests", "12"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "only the JSON line on standard output: {stdout}"
    );
    let figures: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(figures["users"], 500);
    assert_eq!(figures["requests"], 12);
    for key in ["p50_ms", "p99_ms", "limit_ms"] {
        assert!(figures[key].as_f64().unwrap() > 0.0, "{key}: {figures}");
    }
    assert!(
        figures["matches_p50"].as_f64().unwrap() > 0.0,
        "the searches found users: {figures}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("500 users written"));
}
