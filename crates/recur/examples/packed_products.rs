//! Times one step's recurrent product of an LSTM (`h W_hh^T`, W_hh 4H x H) on the packed
//! kernels of each number format (float32; bf16 and int8 on each of their kernels this CPU
//! runs) on one thread, side by side: the median of repeated runs, as GFLOP/s (2 per
//! multiply-add) and as GB/s of weights read.
//!
//! ```text
//! cargo run --release -p recur --example packed_products [H,B ...]
//! ```
//!
//! Defaults: 256,1 512,1 1024,1 1024,4 512,32. The operands are random; the int8 activations
//! are codes, the bf16 ones rounded, so every kernel does its format's real work.

use recur::ops::aligned::AVec;
use recur::ops::panel::{self, panels, Groups, OutPtr, NR};
use recur::ops::{bf16, int8};
use recur::rng::Rng;
use std::time::Instant;

fn median_secs(mut f: impl FnMut()) -> f64 {
    // repeat the product until a sample lasts 20 ms; 9 samples
    let mut reps = 1;
    loop {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        if t.elapsed().as_secs_f64() > 0.02 {
            break;
        }
        reps *= 2;
    }
    let mut v: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[4]
}

fn main() {
    let shapes: Vec<(usize, usize)> = {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.is_empty() {
            vec![(256, 1), (512, 1), (1024, 1), (1024, 4), (512, 32)]
        } else {
            args.iter()
                .map(|s| {
                    let (h, b) = s.split_once(',').expect("H,B");
                    (h.parse().expect("H"), b.parse().expect("B"))
                })
                .collect()
        }
    };
    recur::set_threads(1);
    let bf16_kernels: Vec<_> = bf16::KERNELS
        .into_iter()
        .filter(|&k| k.available() && k != recur::ops::cpu::Isa::Portable)
        .collect();
    let int8_kernels: Vec<_> = int8::KERNELS
        .into_iter()
        .filter(|&k| int8::available(k) && k != int8::Kernel::Portable)
        .collect();
    println!(
        "kernels: f32 {}, bf16 {}, int8 {} (one thread)",
        panel::kernel_for::<f32>().name(),
        bf16_kernels
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(" and "),
        int8_kernels
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(" and ")
    );
    print!("{:>5} {:>3} | {:>18} |", "H", "B", "f32 GFLOP/s GB/s");
    for k in &bf16_kernels {
        print!(" {:>18} |", format!("bf16 {} GFLOP/s GB/s", k.name()));
    }
    for k in &int8_kernels {
        print!(" {:>18} |", format!("int8 {} GOP/s GB/s", k.name()));
    }
    println!(" bf16/f32... int8/f32...");
    let mut rng = Rng::new(1);
    for (h, b) in shapes {
        let (g, k) = (4, h);
        let np = g * panels(h);
        let w: Vec<f32> = (0..g * h * k).map(|_| 0.1 * rng.normal() as f32).collect();
        let a: Vec<f32> = (0..b * k)
            .map(|_| bf16::round(rng.normal() as f32))
            .collect();
        let ld = np * NR;
        let flops = 2.0 * (b * g * h * k) as f64;

        let mut p32 = AVec::<f32>::zeroed(np * k * NR);
        panel::pack_gates_t(&mut p32, &w, g, h, k);
        let mut c = AVec::<f32>::zeroed(b * ld);
        let t32 = median_secs(|| panel::panel_gemm(b, k, &a, k, &p32, 0..np, &mut c, ld, ld));

        let mut p16 = AVec::<u16>::zeroed(bf16::packed_len(np, k));
        bf16::from_panels(&mut p16, &p32, np, k);
        let t16: Vec<f64> = bf16_kernels
            .iter()
            .map(|&kern| {
                median_secs(|| {
                    let out = OutPtr {
                        ptr: c.as_mut_ptr(),
                        ld,
                        n: ld,
                    };
                    // SAFETY: `c` holds b rows of ld columns, borrowed for the call.
                    unsafe {
                        bf16::panel_gemm_with(kern, b, Groups::ONE, k, &a, k, &p16, 0..np, out)
                    }
                })
            })
            .collect();

        let (q, _) = int8::quantize_rows(&w, g * h, k);
        let mut p8 = AVec::<i8>::zeroed(int8::packed_len(np, k));
        int8::pack_gates_t(&mut p8, &q, g, h, k);
        let lq = int8::padded(k);
        let mut qa = AVec::<u8>::zeroed(b * lq);
        int8::quantize_activations(&a, b, k, k, &mut qa, lq);
        let mut ci = AVec::<i32>::zeroed(b * ld);
        let t8: Vec<f64> = int8_kernels
            .iter()
            .map(|&kern| {
                median_secs(|| {
                    let out = OutPtr {
                        ptr: ci.as_mut_ptr(),
                        ld,
                        n: ld,
                    };
                    // SAFETY: `ci` holds b rows of ld columns, borrowed for the call.
                    unsafe {
                        int8::panel_gemm_with(kern, b, Groups::ONE, k, &qa, lq, &p8, 0..np, out)
                    }
                })
            })
            .collect();
        let gb = |bytes: usize, t: f64| bytes as f64 / t / 1e9;
        print!(
            "{h:>5} {b:>3} | {:>8.1} {:>9.1} |",
            flops / t32 / 1e9,
            gb(p32.len() * 4, t32)
        );
        for &t in &t16 {
            print!(" {:>8.1} {:>9.1} |", flops / t / 1e9, gb(p16.len() * 2, t));
        }
        for &t in &t8 {
            print!(" {:>8.1} {:>9.1} |", flops / t / 1e9, gb(p8.len(), t));
        }
        for &t in t16.iter().chain(&t8) {
            print!(" {:>5.2}", t32 / t);
        }
        println!();
    }
}
