//! Every CUDA source of recur-cuda compiles with NVRTC, with the options `Gpu::new` uses, for the
//! architectures recur targets (Ampere sm_80, Hopper sm_90, Blackwell sm_100). NVRTC needs no GPU
//! and no driver, so this catches syntax and type errors in the kernels (which are otherwise
//! compiled only at run time, on the GPU machine) on any machine with libnvrtc.
//!
//! Without libnvrtc the test prints `skipping ...` and passes (CI has no CUDA). To run it for
//! real here, `crates/recur-cuda/check-kernels.sh` installs NVRTC from PyPI into a git-ignored
//! virtual environment and runs this test with LD_LIBRARY_PATH set. With `RECUR_PTXAS` naming
//! a `ptxas` binary, each PTX is also assembled for its sm_XX (register and shared-memory
//! limits, `--warn-on-spills`); `RECUR_PTX_DIR` keeps the PTX files there.

use recur_cuda::{compile_ptx, nvrtc_present, SOURCES};
use std::path::PathBuf;
use std::process::Command;

/// (major, minor) compute capabilities every source must compile for.
const ARCHS: [(i32, i32); 3] = [(8, 0), (9, 0), (10, 0)];

#[test]
fn every_kernel_source_compiles_with_nvrtc() {
    let mut failures = Vec::new();
    let ptxas = std::env::var_os("RECUR_PTXAS").map(PathBuf::from);
    let dir = std::env::var_os("RECUR_PTX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("recur-ptx-{}", std::process::id())));
    if !nvrtc_present() {
        println!("skipping every_kernel_source_compiles_with_nvrtc: the NVRTC (libnvrtc) library could not be loaded (run crates/recur-cuda/check-kernels.sh)");
        return;
    }
    for (name, src) in SOURCES {
        for cc in ARCHS {
            match compile_ptx(name, src, cc) {
                Err(e) => failures.push(format!("{e}")),
                Ok(ptx) => {
                    let text = ptx.to_src();
                    // every extern "C" kernel of the source is in the PTX
                    for k in kernel_names(src) {
                        if !text.contains(&format!(".entry {k}(")) {
                            failures.push(format!(
                                "{name} sm_{}{}: no entry {k} in the PTX",
                                cc.0, cc.1
                            ));
                        }
                    }
                    println!(
                        "{name} for compute_{}{}: {} bytes of PTX",
                        cc.0,
                        cc.1,
                        text.len()
                    );
                    if let Some(ptxas) = &ptxas {
                        std::fs::create_dir_all(&dir).unwrap();
                        let file = dir.join(format!("{name}.sm_{}{}.ptx", cc.0, cc.1));
                        std::fs::write(&file, &text).unwrap();
                        let out = Command::new(ptxas)
                            .arg(format!("-arch=sm_{}{}", cc.0, cc.1))
                            .arg("--warn-on-spills")
                            .arg("-v")
                            .arg(&file)
                            .arg("-o")
                            .arg(dir.join(format!("{name}.sm_{}{}.cubin", cc.0, cc.1)))
                            .output()
                            .expect("RECUR_PTXAS runs");
                        let log = String::from_utf8_lossy(&out.stderr);
                        let spills = log
                            .lines()
                            .filter(|l| {
                                l.contains("bytes spill")
                                    && !l.contains(" 0 bytes spill stores, 0 bytes spill loads")
                            })
                            .count();
                        println!(
                            "  ptxas sm_{}{}: {}, {} kernel(s) reported, {spills} with spills",
                            cc.0,
                            cc.1,
                            out.status,
                            log.matches("Compiling entry function").count()
                        );
                        if !out.status.success() {
                            failures.push(format!("ptxas {}: {log}", file.display()));
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "NVRTC/ptxas failures:\n{}",
        failures.join("\n")
    );
}

/// The names of the `extern "C" __global__` kernels of a source.
fn kernel_names(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find("__global__") {
        rest = &rest[i + "__global__".len()..];
        // the name is the identifier before the first '(' (after void and __launch_bounds__(..))
        let head = &rest[..rest.find('{').unwrap_or(rest.len())];
        let head = match head.find("__launch_bounds__") {
            Some(j) => {
                let after = &head[j..];
                &after[after.find(')').map_or(0, |c| c + 1)..]
            }
            None => head,
        };
        let paren = head.find('(').expect("a kernel has a parameter list");
        let name = head[..paren].split_whitespace().last().unwrap_or("");
        if !name.is_empty() {
            out.push(name.to_string());
        }
    }
    out
}

#[test]
fn kernel_names_are_found_in_the_sources() {
    // guards the check above: it must see every kernel, including those with launch bounds
    let names: Vec<String> = SOURCES.iter().flat_map(|(_, s)| kernel_names(s)).collect();
    for k in ["lstm_fwd", "step_small", "fill", "xent_rows", "adam"] {
        assert!(names.iter().any(|n| n == k), "{k} not found in {names:?}");
    }
}
