//! The device is chosen by one value: a `Backend` opened once from `--device` and handed to the
//! run. No code compares a device's name to decide what to do (`name() != "cpu"`,
//! `device == "cuda"` and the like); this test reads every Rust source of the workspace and fails
//! naming the line of any such comparison.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Whether `line` compares something with a device name.
fn compares_device_name(line: &str) -> bool {
    let code = line.split("//").next().unwrap_or("");
    ["\"cpu\"", "\"cuda\""].iter().any(|name| {
        code.contains(&format!("== {name}"))
            || code.contains(&format!("!= {name}"))
            || code.contains(&format!("{name} =>"))
            || code.contains(&format!("{name} ==",))
            || code.contains(&format!("{name} !=",))
            || code.contains(&format!("starts_with({name})"))
    })
}

#[test]
fn the_detector_sees_a_comparison() {
    assert!(compares_device_name(r#"    if backend.name() != "cpu" {"#));
    assert!(compares_device_name(r#"        "cuda" => open_cuda(),"#));
    assert!(!compares_device_name(r#"    "cpu".into()"#));
}

#[test]
fn no_code_compares_device_names() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for c in ["recur/src", "recur-cli/src", "recur-cuda/src"] {
        rust_files(&crates.join(c), &mut files);
    }
    assert!(files.len() > 20, "found only {} sources", files.len());
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().enumerate() {
            if compares_device_name(line) {
                found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "device names compared:\n{}",
        found.join("\n")
    );
}
