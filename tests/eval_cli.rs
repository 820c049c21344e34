//! `tessera eval` from the command line: input errors are clear messages, never crashes.
use tessera::data::demo::{write_demo, DemoOptions};

fn tessera(args: &[&str]) -> (bool, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn missing_or_wrong_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    write_demo(&dir.path().join("data"), &DemoOptions { count: 10, ..DemoOptions::default() }).unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();

    let missing = dir.path().join("no-such-checkpoint");
    let (ok, err) = tessera(&["eval", missing.to_str().unwrap(), data]);
    assert!(!ok);
    assert!(err.contains("no-such-checkpoint"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A folder that is not a checkpoint (the data folder itself).
    let (ok, err) = tessera(&["eval", data, data, "--json"]);
    assert!(!ok);
    assert!(err.starts_with("error:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let (ok, err) = tessera(&["eval", data, data, "--split", "holdout"]);
    assert!(!ok);
    assert!(err.contains("holdout"), "{err}");
}
