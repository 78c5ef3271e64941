//! End-to-end tests of the `recur` binary: run it, read what it prints, check the exit code.

mod common;
use common::{json_of, recur};

#[test]
fn hello_json_reproduces_the_lecture_and_trains_to_ello() {
    let j = json_of(&recur(&["hello", "--json"]));
    assert_eq!(j["vocab"], serde_json::json!(["h", "e", "l", "o"]));
    let steps = j["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 4);
    let s2 = &steps[1];
    assert_eq!(s2["t"], 2);
    assert_eq!(s2["input"], "e");
    assert_eq!(s2["target"], "l");
    assert_eq!(s2["pred"], "o");
    let probs: Vec<f64> = s2["probs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (g, w) in probs.iter().zip([0.0892, 0.3858, 0.1308, 0.3942]) {
        assert!((g - w).abs() <= 2e-4, "softmax(o2): {g} vs {w}");
    }
    for key in ["xw", "hw", "h"] {
        assert_eq!(s2[key].as_array().unwrap().len(), 3, "{key}");
    }
    assert_eq!(s2["logits"].as_array().unwrap().len(), 4);
    let tr = &j["trained"];
    assert_eq!(tr["preds"], "ello");
    let preds: Vec<&str> = tr["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pred"].as_str().unwrap())
        .collect();
    assert_eq!(preds, ["e", "l", "l", "o"]);
    assert!(tr["epochs"].as_u64().unwrap() > 0);
    assert!(tr["loss"].as_f64().unwrap() < 0.1);
}

#[test]
fn hello_prints_the_table_and_the_wrong_prediction() {
    let out = recur(&["hello"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("( 0.8350,  0.8964,  0.8791)"),
        "h2 row missing:\n{text}"
    );
    assert!(text.contains("the untrained model predicts 'o'"));
    assert!(text.contains("sgd with learning rate 0.5"));
    assert!(text.contains("Predictions: \"ello\""));
}

#[test]
fn gradcheck_json_reports_every_tensor_below_tolerance() {
    for cell in ["rnn", "rnn_relu"] {
        let j = json_of(&recur(&[
            "gradcheck",
            "--cell",
            cell,
            "--json",
            "--seq-length",
            "8",
        ]));
        let names: Vec<&str> = j["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        for want in [
            "rnn.weight_ih_l0",
            "rnn.weight_hh_l0",
            "rnn.bias_ih_l0",
            "rnn.bias_hh_l0",
            "decoder.weight",
            "decoder.bias",
            "input",
            "h0",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let worst = j["max_rel_err"].as_f64().unwrap();
        assert!(worst < 1e-6, "{cell}: {worst}");
    }
}

#[test]
fn bad_flags_are_one_line_errors_with_exit_code_2() {
    for args in [
        &["gradcheck", "--cell", "transformer"][..],
        &["gradcheck", "--cell", "gru", "--proj-size", "2"][..],
        &["hello", "--optim", "lbfgs"][..],
        &["hello", "--learning-rate", "-1"][..],
        &["bench", "--classes", "5"][..],
        &["bench", "--ctc", "--classes", "1"][..],
        &["bench", "--ctc", "--device", "cuda"][..],
    ] {
        let out = recur(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("recur: error: "), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
    let out = recur(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `recur bench --dispatch` names the instruction set this CPU has (detected here independently
/// of recur) and a per-step product kernel for it, and times nothing.
#[test]
fn bench_dispatch_names_the_kernel_this_cpu_runs() {
    #[cfg(target_arch = "x86_64")]
    let want = {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512vl") && has!("avx512dq") && has!("avx512bw") {
            "avx512"
        } else if has!("avx2") && has!("fma") {
            "avx2+fma"
        } else {
            "portable"
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let want = "portable";
    let j = json_of(&recur(&["bench", "--dispatch", "--json"]));
    assert_eq!(j["instruction set"], want, "{j}");
    let product = j["per-step product (packed panels)"].as_str().unwrap();
    assert!(product.starts_with(want), "{product}");
    for key in [
        "gate element-wise passes",
        "weight transpositions (packing)",
        "input products, weight gradients",
    ] {
        assert!(j[key].is_string(), "{key} missing: {j}");
    }
}

/// `recur bench --peak` measures each ceiling this CPU has (a positive rate) and, for each it
/// lacks, says what is missing, as checked here independently of recur; the dispatch table
/// names the same bf16 and int8 instructions.
#[test]
fn bench_peak_measures_or_explains_every_ceiling() {
    let out = recur(&[
        "bench",
        "--peak",
        "--json",
        "--threads",
        "1",
        "--repeats",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 7, "{rows:?}");
    #[cfg(target_arch = "x86_64")]
    let has = |f: &str| match f {
        "avx512_bf16" => std::arch::is_x86_feature_detected!("avx512bf16"),
        "avx512_vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
        "avx_vnni" => std::arch::is_x86_feature_detected!("avxvnni"),
        "avx2" => std::arch::is_x86_feature_detected!("avx2"),
        _ => unreachable!(),
    };
    #[cfg(not(target_arch = "x86_64"))]
    let has = |_: &str| false;
    let needs = [
        ("float32 FMA", None),
        ("bf16 dot product", Some("avx512_bf16")),
        ("int8 dot product", Some("avx512_vnni")),
        ("int8 dot product, 256-bit", Some("avx_vnni")),
        ("int8 without VNNI", Some("avx2")),
    ];
    for (row, (what, need)) in rows.iter().zip(needs) {
        assert_eq!(row["ceiling"], what);
        let present = need.is_none_or(has);
        if present {
            assert!(row["rate"].as_f64().unwrap() > 0.0, "{row}");
        } else {
            assert!(row["rate"].is_null(), "{row}");
            assert!(
                row["why"].as_str().unwrap().contains(need.unwrap()),
                "{row}"
            );
        }
    }
    for row in &rows[5..] {
        assert!(
            row["rate"].as_f64().is_some_and(|r| r > 0.0) || row["why"].is_string(),
            "{row}"
        );
    }
    let j = json_of(&recur(&["bench", "--dispatch", "--json"]));
    let listed = j["bf16 and int8 instructions"].as_str().unwrap();
    for f in ["avx512_bf16", "avx512_vnni", "avx_vnni"] {
        assert_eq!(listed.contains(f), has(f), "{f}: {listed}");
    }
    assert!(j["AMX tiles"].is_string(), "{j}");
}

/// `recur bench --tune` times every schedule of a shape: five in inference (the driver's, then
/// rows or units with one input product or chunks), three in training; the best is one of them
/// and the driver's own choice takes at least its time.
#[test]
fn bench_tune_times_every_schedule() {
    let out = recur(&[
        "bench",
        "--tune",
        "--cell",
        "lstm",
        "--rnn-size",
        "16",
        "--batch-size",
        "4",
        "--seq-length",
        "4",
        "--mode",
        "both",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--min-sample-ms",
        "0",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (j, n) in lines.iter().zip([5, 3]) {
        let c = j["candidates"].as_array().unwrap();
        assert_eq!(c.len(), n, "{j}");
        assert_eq!(c[0]["schedule"], "auto");
        assert!(c.iter().any(|x| x["schedule"] == j["best"]), "{j}");
        assert!(
            c.iter().all(|x| x["median_s"].as_f64().unwrap() > 0.0),
            "{j}"
        );
        assert!(j["auto_vs_best"].as_f64().unwrap() >= 1.0, "{j}");
    }
    let e = common::one_line_error(&recur(&["bench", "--tune", "--charlm"]), &["--tune"]);
    assert!(e.contains("--charlm"), "{e}");
}

/// `--html FILE` writes one self-contained page holding the example's numbers (the browser test
/// in tests/browser steps through it); a file that cannot be written is one line, exit code 2.
#[test]
fn hello_html_writes_a_self_contained_page() {
    let d = common::scratch("hello-html");
    let page = d.join("hello.html");
    let out = recur(&["hello", "--html", page.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(!html.contains("/*DATA*/"), "the data is embedded");
    assert!(html.contains("\"preds\":\"ello\""));
    assert!(!html.contains("<script src") && !html.contains("https://"));
    let bad = d.join("no-such-dir").join("hello.html");
    common::one_line_error(
        &recur(&["hello", "--html", bad.to_str().unwrap()]),
        &["cannot write", "no such file"],
    );
}

/// `recur bench --ctc` times the CTC loss with its gradient and reports the batch's mean loss.
#[test]
fn bench_ctc_times_the_loss() {
    let j = json_of(&recur(&[
        "bench",
        "--ctc",
        "--seq-length",
        "30",
        "--batch-size",
        "4",
        "--classes",
        "6",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--min-sample-ms",
        "0",
        "--json",
    ]));
    assert_eq!(
        (j["t"].as_u64(), j["b"].as_u64(), j["c"].as_u64()),
        (Some(30), Some(4), Some(6))
    );
    assert!(j["ms"].as_f64().unwrap() > 0.0);
    let loss = j["loss"].as_f64().unwrap();
    // random logits: a finite loss above 0
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
}
