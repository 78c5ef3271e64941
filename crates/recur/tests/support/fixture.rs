//! The PyTorch fixtures (tests/fixtures/*.safetensors, written by tests/fixtures/gen_torch.py)
//! and the one way a result is compared with a reference: the worst error relative to the
//! largest magnitude in either tensor. Shared by tests/torch_parity.rs, tests/nn.rs and
//! recur-cuda's tests (each uses part of it).
#![allow(dead_code)]

use recur::ops::Float;
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::PathBuf;

/// A fixture's path: in `RECUR_FIXTURES` when set (the GPU machine runs test executables from
/// another checkout path), else in crates/recur/tests/fixtures.
pub fn fixture_path(name: &str) -> PathBuf {
    std::env::var_os("RECUR_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../recur/tests/fixtures")
        })
        .join(name)
}

/// A fixture file held in memory.
pub struct Fixture {
    pub name: String,
    bytes: Vec<u8>,
    pub meta: HashMap<String, String>,
}

impl Fixture {
    pub fn open(name: &str) -> Fixture {
        let path = fixture_path(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (run tests/fixtures/gen_torch.py)", path.display())
        });
        let (_, header) = SafeTensors::read_metadata(&bytes).expect("safetensors header");
        let meta = header.metadata().clone().unwrap_or_default();
        Fixture {
            name: name.to_string(),
            bytes,
            meta,
        }
    }

    pub fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("safetensors")
    }

    pub fn has(&self, key: &str) -> bool {
        self.st().tensor(key).is_ok()
    }

    /// A float tensor (F32 or F64) as f64 values, with its shape.
    pub fn floats(&self, key: &str) -> (Vec<f64>, Vec<usize>) {
        let st = self.st();
        let t = st
            .tensor(key)
            .unwrap_or_else(|_| panic!("{}: no tensor {key}", self.name));
        let v = match t.dtype() {
            Dtype::F32 => t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            Dtype::F64 => t
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            d => panic!("{}: {key} has dtype {d}", self.name),
        };
        (v, t.shape().to_vec())
    }

    /// A float tensor in precision F.
    pub fn vec<F: Float>(&self, key: &str) -> Vec<F> {
        self.floats(key).0.into_iter().map(F::from_f64).collect()
    }

    /// An I64 tensor.
    pub fn ints(&self, key: &str) -> Vec<i64> {
        let st = self.st();
        let t = st
            .tensor(key)
            .unwrap_or_else(|_| panic!("{}: no tensor {key}", self.name));
        assert_eq!(t.dtype(), Dtype::I64, "{key}");
        t.data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// An I64 tensor of token ids.
    pub fn tokens(&self, key: &str) -> Vec<u32> {
        self.ints(key).into_iter().map(|v| v as u32).collect()
    }
}

/// One comparison: worst relative error (module docs), its flat index and the two values there.
#[derive(Debug, Clone)]
pub struct Cmp {
    pub what: String,
    pub rel: f64,
    pub index: usize,
    pub ours: f64,
    pub want: f64,
}

/// `ours` against the reference `want`: the worst |ours - want| over the largest magnitude in
/// either (a NaN in ours is the worst possible element).
pub fn compare<A: Float, B: Float>(what: &str, ours: &[A], want: &[B]) -> Cmp {
    assert_eq!(ours.len(), want.len(), "{what}: length");
    let (mut scale, mut worst, mut index) = (0.0f64, 0.0f64, 0usize);
    for (i, (&a, &w)) in ours.iter().zip(want).enumerate() {
        let (a, w) = (a.to_f64(), w.to_f64());
        scale = scale.max(a.abs()).max(w.abs());
        let d = (a - w).abs();
        if d > worst || d.is_nan() && !worst.is_nan() {
            worst = d;
            index = i;
        }
    }
    let rel = if scale > 0.0 { worst / scale } else { worst };
    Cmp {
        what: what.to_string(),
        rel: if worst.is_nan() { f64::INFINITY } else { rel },
        index,
        ours: ours.get(index).map_or(0.0, |v| v.to_f64()),
        want: want.get(index).map_or(0.0, |v| v.to_f64()),
    }
}

/// Asserts every comparison is within `tol`; the message lists every failing tensor with its
/// worst element and index. Returns the worst relative error.
pub fn check(cmps: &[Cmp], tol: f64, context: &str) -> f64 {
    let bad: Vec<String> = cmps
        .iter()
        .filter(|c| !(c.rel <= tol))
        .map(|c| {
            format!(
                "  {}: rel err {:.3e} > {tol:.0e} at flat index {} (ours {:.9e}, reference {:.9e})",
                c.what, c.rel, c.index, c.ours, c.want
            )
        })
        .collect();
    assert!(bad.is_empty(), "{context}:\n{}", bad.join("\n"));
    cmps.iter().map(|c| c.rel).fold(0.0, f64::max)
}

/// One case of the stack fixtures (stack_f32 / stack_f64), as gen_torch.py describes it.
#[derive(serde::Deserialize, Debug)]
pub struct StackCase {
    pub name: String,
    pub cell: String,
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    pub bias: bool,
    pub proj_size: usize,
    pub t: usize,
    pub b: usize,
    pub varlen: bool,
    pub zero_state: bool,
}

/// The cases listed in a stack fixture's metadata.
pub fn stack_cases(fx: &Fixture) -> Vec<StackCase> {
    serde_json::from_str(&fx.meta["cases"]).expect("the fixture's cases")
}
