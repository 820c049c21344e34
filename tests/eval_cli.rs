//! `tessera eval` from the command line: input errors are clear messages, never crashes.
use tessera::data::demo::{write_demo, DemoOptions};

fn tessera(args: &[&str]) -> (bool, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Writes `count` demo images into `dir`/data and returns that path.
fn demo_data(dir: &std::path::Path, count: usize) -> String {
    let data = dir.join("data");
    write_demo(&data, &DemoOptions { count, ..DemoOptions::default() }).unwrap();
    data.to_str().unwrap().to_string()
}

#[test]
fn missing_or_wrong_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = demo_data(dir.path(), 10);
    let data = data.as_str();

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

/// `tessera eval … --json | head -c 1`: a reader that closes the pipe early ends the command quietly, as with any
/// command-line tool, instead of a panic trace about printing to stdout.
#[test]
fn a_closed_output_pipe_is_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data = demo_data(dir.path(), 10);
    let checkpoint = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/demo-detect");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["eval", checkpoint, &data, "--split", "train", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

/// `--flip-tta` on a detector trained without flips has no other view to look at: the CLI says so (once, on stderr)
/// instead of printing a figure that looks like a TTA result; with the default augmentation it says nothing.
#[test]
fn flip_tta_on_a_detector_trained_without_flips_says_it_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = demo_data(dir.path(), 12);
    let data = data.as_str();
    for (augment, expect_note) in [("none", true), ("default", false)] {
        let ckpt = dir.path().join(format!("det-{augment}.ckpt"));
        let ckpt = ckpt.to_str().unwrap();
        let (ok, err) = tessera(&["train", data, "--task", "detect", "--steps", "2", "--augment", augment, "--out", ckpt, "--json"]);
        assert!(ok, "{err}");
        let (ok, err) = tessera(&["eval", ckpt, data, "--flip-tta", "--json"]);
        assert!(ok, "{err}");
        assert_eq!(err.contains("--flip-tta changes nothing"), expect_note, "--augment {augment}: {err}");
    }
}

#[test]
fn a_model_with_the_convolutional_stem_saves_loads_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let data = demo_data(dir.path(), 12);
    let ckpt = dir.path().join("stem.ckpt");
    let ckpt = ckpt.to_str().unwrap();
    let (ok, err) = tessera(&["train", &data, "--task", "detect", "--steps", "2", "--stem-channels", "4", "--out", ckpt, "--json"]);
    assert!(ok, "{err}");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("stem.ckpt/checkpoint.json")).unwrap()).unwrap();
    assert_eq!(meta["model"]["stem_channels"], 4, "{meta}");
    let (ok, err) = tessera(&["eval", ckpt, &data, "--json"]);
    assert!(ok, "{err}");
    // Fine-tuning from it keeps the stem (the config comes from the checkpoint).
    let tuned = dir.path().join("tuned.ckpt");
    let (ok, err) = tessera(&["train", &data, "--task", "detect", "--init", ckpt, "--steps", "1", "--out", tuned.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tuned.join("checkpoint.json")).unwrap()).unwrap();
    assert_eq!(meta["model"]["stem_channels"], 4, "{meta}");
    // So does its input size: another one is an error that says so, not a setting silently ignored.
    let size = meta["model"]["image_size"].as_u64().unwrap();
    let (ok, err) = tessera(&["train", &data, "--task", "detect", "--init", ckpt, "--image-size", &(size * 2).to_string(), "--steps", "1", "--out", tuned.to_str().unwrap()]);
    assert!(!ok && err.contains(&format!("comes from the checkpoint it starts from ({size} px)")), "{err}");
    let (ok, err) = tessera(&["train", &data, "--task", "detect", "--init", ckpt, "--image-size", &size.to_string(), "--steps", "1", "--out", tuned.to_str().unwrap()]);
    assert!(ok, "the checkpoint's own size is fine: {err}");
}
