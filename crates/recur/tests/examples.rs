//! The README shows `examples/lstm_forward_backward.rs`: the two must stay the same. (The
//! examples themselves are built by `cargo test` and run by `.ci/run`.)

#[test]
fn readme_shows_the_forward_backward_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("examples/lstm_forward_backward.rs")).unwrap();
    let readme = std::fs::read_to_string(root.join("../../README.md")).unwrap();
    // the example from its first `use` line, as the README's section quotes it
    let code = &example[example.find("use recur").expect("a use line")..];
    let section = &readme[readme
        .find("## Use it as a library")
        .expect("README section 'Use it as a library'")..];
    let block = section
        .split("```rust\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a rust block in the section");
    assert_eq!(
        block, code,
        "README's 'Use it as a library' code differs from examples/lstm_forward_backward.rs"
    );
}
