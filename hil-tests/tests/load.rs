//! Smoke test of `switchboard-load`: a short run against a real cluster loses nothing and
//! prints the JSON line it promises. No performance numbers are asserted.

use std::time::Duration;

use hil::harness::{bins, Cluster};

/// The unsigned number after `"key":` in a flat JSON line.
fn field(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\":");
    let start = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pat.len();
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {json}: {e}"))
}

#[tokio::test]
async fn a_short_load_run_loses_nothing() {
    let mut c = Cluster::start().await;
    let run = tokio::process::Command::new(&bins().load)
        .args(["--telnet", &c.telnet.to_string()])
        .args([
            "--users",
            "4",
            "--secs",
            "1",
            "--window",
            "2",
            "--drain-secs",
            "5",
        ])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("switchboard-load did not finish")
        .expect("running switchboard-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "switchboard-load failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let json = stdout.trim();
    assert!(json.starts_with('{') && json.ends_with('}') && !json.contains('\n'));
    assert!(field(json, "sent") > 0.0, "nothing sent: {json}");
    assert_eq!(field(json, "delivered"), field(json, "sent"), "{json}");
    assert_eq!(field(json, "lost"), 0.0, "{json}");
    assert_eq!(field(json, "errors"), 0.0, "{json}");
    for key in ["msgs_per_s", "p50_us", "p99_us", "max_us"] {
        field(json, key);
    }
    c.assert_alive();
}
