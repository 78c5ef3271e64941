//! Checkpoints: a model's parameters, vocabulary, optimizer state and training position in one
//! safetensors file whose tensor names are the equivalent PyTorch module's state_dict.
//!
//! The format is documented in `docs/checkpoint-format.md` (tensor names and shapes, metadata
//! keys, version policy, and a Python snippet that loads a checkpoint into torch). In short:
//! - tensors (all F32, little-endian): the model's [`crate::params::ParamLayout`] entries under
//!   their own names (`embedding.weight`, `rnn.weight_ih_l0`, ..., `decoder.weight`,
//!   `decoder.bias`); an optimizer's moments as `optim.m.<name>` (and `optim.v.<name>` for Adam);
//!   a moving average of the weights, when the run kept one, as `ema.<name>`;
//! - metadata (strings): `format` = [`FORMAT`], `format_version` = [`FORMAT_VERSION`], `config`
//!   (the [`ModelConfig`] as JSON), and when present `vocab` (a JSON array of one-character
//!   strings), `optimizer` (JSON: `kind` and its hyper-parameters, `lr`, `step`) and
//!   `train_state` (JSON, opaque here).
//!
//! int8 checkpoints (`precision` = `int8` in the metadata, written by `recur quantize`) store
//! the two-dimensional tensors as I8 codes with an F32 `<name>.scale` per row; [`load`] gives
//! back their weights as `scale * code` and [`Checkpoint::precision`] `Int8`.
//!
//! Writes are atomic: a temporary file in the same directory, fsync, rename. Loading checks
//! everything (header, format and version, config, every tensor's presence, dtype and shape, no
//! extra tensors) and reports the first problem as one [`CheckpointError`]; it never panics.
//!
//! This module does not decide what `train_state` holds, and does not read or write f64.

use crate::model::{InputKind, Model, ModelConfig};
use crate::optim::{OptimKind, Optimizer};
use crate::params::ParamLayout;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The value of the `format` metadata key.
pub const FORMAT: &str = "recur-checkpoint";
/// The format version this build writes, and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Prefix of the optimizer's tensors.
pub const OPTIM_PREFIX: &str = "optim.";
/// Prefix of the weights' moving average.
pub const EMA_PREFIX: &str = "ema.";

/// Everything a run needs to continue, or a user needs to sample or evaluate.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The model; stored as JSON in the `config` metadata key.
    pub model: ModelConfig,
    /// Parameters in the model's layout order (`Model::new(model).layout`).
    pub params: Vec<f32>,
    /// Character models: the sorted vocabulary (token id = index).
    pub vocab: Option<Vec<char>>,
    /// Optimizer with its moments, for resuming exactly.
    pub optimizer: Option<Optimizer<f32>>,
    /// An exponential moving average of the parameters (same layout), when the run kept one:
    /// the weights its validation loss measured, and the ones [`Checkpoint::weights`] gives.
    pub ema: Option<Vec<f32>>,
    /// Training position, RNG state, flags: opaque to this module.
    pub train_state: Option<serde_json::Value>,
    /// How the weights are stored: float32, or int8 (each weight matrix's rows quantized on
    /// save, `crate::ops::int8::quantize_rows`; `params` then holds the float32 weights to
    /// quantize when saving, the dequantized ones after loading). bf16 is not a stored format.
    pub precision: crate::Precision,
}

pub use crate::error::CheckpointError;

impl Checkpoint {
    /// The weights to predict with: the moving average when the run kept one, else the
    /// parameters.
    pub fn weights(&self) -> &[f32] {
        self.ema.as_deref().unwrap_or(&self.params)
    }

    /// Whether training can continue from it: not from an int8 checkpoint, which holds rounded
    /// weights and no optimizer.
    pub fn check_trainable(&self) -> crate::Result<()> {
        if self.precision != crate::Precision::F32 {
            return Err(crate::Error::invalid(format!(
                "an {} checkpoint is for inference; training resumes from a float32 one",
                self.precision
            )));
        }
        Ok(())
    }
}

/// The `optimizer` metadata: the update rule with its hyper-parameters (flattened: `kind`,
/// then e.g. `beta1`, `beta2`, `eps`), the learning rate and the steps taken.
#[derive(Serialize, Deserialize)]
struct OptimMeta {
    #[serde(flatten)]
    kind: OptimKind,
    lr: f64,
    step: u64,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `ckpt` to `path` atomically: the file is either the old one or the complete new one.
///
/// ```rust
/// use recur::cell::CellKind;
/// use recur::checkpoint::{self, Checkpoint};
/// use recur::model::{Model, ModelConfig};
/// use recur::rng::Rng;
/// use recur::stack::StackConfig;
///
/// let cfg = ModelConfig::char_model(3, 0, StackConfig::new(CellKind::Gru, 0, 4));
/// let model = Model::new(cfg.clone()).unwrap();
/// let mut params = vec![0.0f32; model.num_params()];
/// model.init(&mut params, &mut Rng::new(0));
/// let ckpt = Checkpoint {
///     model: cfg,
///     params,
///     vocab: Some(vec!['a', 'b', 'c']),
///     optimizer: None,
///     ema: None,
///     train_state: None,
///     precision: recur::Precision::F32,
/// };
/// let dir = std::env::temp_dir().join(format!("recur-doc-save-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("model.safetensors");
/// checkpoint::save(&path, &ckpt).unwrap();
///
/// let back = checkpoint::load(&path).unwrap();
/// assert_eq!((back.model, back.params, back.vocab), (ckpt.model, ckpt.params, ckpt.vocab));
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn save(path: &Path, ckpt: &Checkpoint) -> crate::Result<()> {
    let err = |what: String| crate::Error::from(CheckpointError::new(path, what));
    let model = Model::new(ckpt.model.clone()).map_err(|e| err(format!("config: {e}")))?;
    let layout = &model.layout();
    if ckpt.params.len() != layout.total {
        return Err(err(format!(
            "params has {} values but the model has {}",
            ckpt.params.len(),
            layout.total
        )));
    }
    check_vocab(&ckpt.model, ckpt.vocab.as_deref()).map_err(err)?;

    // (name, dtype, shape, bytes) of every tensor
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut meta: HashMap<String, String> = HashMap::new();
    match ckpt.precision {
        crate::Precision::F32 => push_layout(&mut tensors, "", layout, &ckpt.params),
        crate::Precision::Int8 => {
            if ckpt.optimizer.is_some() {
                return Err(err("an int8 checkpoint holds no optimizer".to_string()));
            }
            push_int8(&mut tensors, layout, &ckpt.params);
            meta.insert("precision".into(), "int8".into());
        }
        crate::Precision::Bf16 => {
            return Err(err(
                "bf16 is not a stored format (save float32 or int8)".to_string()
            ))
        }
    }
    meta.insert("format".into(), FORMAT.into());
    meta.insert("format_version".into(), FORMAT_VERSION.to_string());
    meta.insert("config".into(), to_json(&ckpt.model).map_err(&err)?);
    if let Some(v) = &ckpt.vocab {
        meta.insert("vocab".into(), to_json(v).map_err(&err)?);
    }
    if let Some(o) = &ckpt.optimizer {
        let want_v = adam(&o.kind);
        if o.m.len() != layout.total || o.v.len() != if want_v { layout.total } else { 0 } {
            return Err(err(format!(
                "optimizer buffers have {} and {} values but the model has {} parameters",
                o.m.len(),
                o.v.len(),
                layout.total
            )));
        }
        let om = OptimMeta {
            kind: o.kind.clone(),
            lr: o.lr,
            step: o.step,
        };
        meta.insert("optimizer".into(), to_json(&om).map_err(&err)?);
        push_layout(&mut tensors, "optim.m.", layout, &o.m);
        if want_v {
            push_layout(&mut tensors, "optim.v.", layout, &o.v);
        }
    }
    if let Some(ema) = &ckpt.ema {
        if ema.len() != layout.total || ckpt.precision != crate::Precision::F32 {
            return Err(err(format!(
                "the weights' moving average has {} values for a {} model of {} parameters \
                 (float32 only)",
                ema.len(),
                ckpt.precision,
                layout.total
            )));
        }
        push_layout(&mut tensors, EMA_PREFIX, layout, ema);
    }
    if let Some(ts) = &ckpt.train_state {
        meta.insert("train_state".into(), to_json(ts).map_err(&err)?);
    }

    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| err(format!("tensor '{n}': {e}")))
        })
        .collect::<Result<_, _>>()?;
    let bytes =
        safetensors::serialize(views, Some(meta)).map_err(|e| err(format!("serializing: {e}")))?;
    Ok(write_atomic(path, &bytes)?)
}

fn push_layout(
    out: &mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    prefix: &str,
    layout: &ParamLayout,
    values: &[f32],
) {
    for e in &layout.entries {
        out.push((
            format!("{prefix}{}", e.name),
            Dtype::F32,
            e.shape.clone(),
            f32_bytes(&values[e.range()]),
        ));
    }
}

/// The layout's tensors with every matrix as I8 codes plus an F32 scale per row.
fn push_int8(
    out: &mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    layout: &ParamLayout,
    values: &[f32],
) {
    for e in &layout.entries {
        let v = &values[e.range()];
        if e.shape.len() != 2 {
            out.push((e.name.clone(), Dtype::F32, e.shape.clone(), f32_bytes(v)));
            continue;
        }
        let (rows, cols) = (e.shape[0], e.shape[1]);
        let (q, scale) = crate::ops::int8::quantize_rows(v, rows, cols);
        let codes = q.iter().map(|&c| c as u8).collect();
        out.push((e.name.clone(), Dtype::I8, e.shape.clone(), codes));
        out.push((
            format!("{}.scale", e.name),
            Dtype::F32,
            vec![rows],
            f32_bytes(&scale),
        ));
    }
}

fn adam(kind: &OptimKind) -> bool {
    matches!(kind, OptimKind::Adam { .. })
}

/// Token models: the vocabulary, when given, has one symbol per input id, each once.
fn check_vocab(cfg: &ModelConfig, vocab: Option<&[char]>) -> Result<(), String> {
    let Some(v) = vocab else { return Ok(()) };
    if cfg.input != InputKind::Dense && v.len() != cfg.input_size {
        return Err(format!(
            "vocab has {} symbols but config.input_size is {}",
            v.len(),
            cfg.input_size
        ));
    }
    let mut seen = BTreeSet::new();
    if let Some(c) = v.iter().find(|c| !seen.insert(**c)) {
        return Err(format!("vocab: symbol {c:?} appears twice"));
    }
    Ok(())
}

/// Temporary file beside `path`, written and synced, then renamed over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| CheckpointError::new(path, "not a file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let io = |e: std::io::Error, doing: &str| {
        CheckpointError::new(path, format!("{doing}: {}", crate::error::io_reason(&e)))
    };
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io(e, "creating temporary file"))?;
        f.write_all(bytes).map_err(|e| io(e, "writing"))?;
        f.sync_all().map_err(|e| io(e, "syncing"))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| io(e, "renaming temporary file"))?;
        // Make the rename itself durable where the platform allows syncing a directory.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads and checks a checkpoint written by [`save`] (or by the Python snippet in the docs); see
/// [`save`] for a round trip. Every problem is an error that names the file and what is wrong:
///
/// ```rust
/// let path = std::env::temp_dir().join(format!("recur-doc-load-{}.safetensors", std::process::id()));
/// std::fs::write(&path, b"not a checkpoint").unwrap();
/// let err = recur::checkpoint::load(&path).unwrap_err();
/// assert!(err.to_string().contains("not a valid safetensors file"), "{err}");
/// std::fs::remove_file(&path).unwrap();
/// ```
pub fn load(path: &Path) -> crate::Result<Checkpoint> {
    let bytes =
        std::fs::read(path).map_err(|e| CheckpointError::new(path, format!("cannot read: {e}")))?;
    from_bytes(path, &bytes)
}

/// [`load`] of a checkpoint file's bytes already in memory (every check the same); `path` only
/// names the file in errors.
pub fn from_bytes(path: &Path, bytes: &[u8]) -> crate::Result<Checkpoint> {
    let err = |what: String| crate::Error::from(CheckpointError::new(path, what));
    // read_metadata checks the header, every tensor's offsets and the file's length.
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| err(format!("not a valid safetensors file ({e})")))?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| err(format!("not a valid safetensors file ({e})")))?;
    let empty = HashMap::new();
    let meta = header.metadata().as_ref().unwrap_or(&empty);
    let field = |k: &str| -> crate::Result<&String> {
        meta.get(k)
            .ok_or_else(|| err(format!("metadata field '{k}' is missing")))
    };

    let format = meta.get("format").ok_or_else(|| {
        err("metadata field 'format' is missing: not a recur checkpoint".to_string())
    })?;
    if format != FORMAT {
        return Err(err(format!(
            "metadata field 'format' is '{format}', expected '{FORMAT}'"
        )));
    }
    let version = field("format_version")?;
    if version.trim() != FORMAT_VERSION.to_string() {
        return Err(err(format!(
            "unknown format_version '{version}' (this build reads version {FORMAT_VERSION})"
        )));
    }
    let model: ModelConfig = serde_json::from_str(field("config")?)
        .map_err(|e| err(format!("metadata field 'config': {e}")))?;
    let precision = match meta.get("precision").map(String::as_str) {
        None => crate::Precision::F32,
        Some("int8") => crate::Precision::Int8,
        Some(other) => {
            return Err(err(format!(
                "metadata field 'precision' is '{other}' (this build stores int8 or nothing)"
            )))
        }
    };
    // A config from a damaged or hostile file may imply more parameters than the file holds (or
    // than memory does): refuse it before building a layout or allocating anything. (int8
    // files hold at least a byte per parameter.)
    let implied = crate::memory::model_params(&model);
    let per = if precision == crate::Precision::Int8 {
        1
    } else {
        4
    };
    if implied.saturating_mul(per) > bytes.len() as u128 {
        return Err(err(format!(
            "metadata field 'config' implies {implied} parameters, more than the file's {} bytes hold",
            bytes.len()
        )));
    }
    let m = Model::new(model.clone()).map_err(|e| err(format!("metadata field 'config': {e}")))?;
    let layout = &m.layout();
    let vocab: Option<Vec<char>> = meta
        .get("vocab")
        .map(|s| serde_json::from_str(s))
        .transpose()
        .map_err(|e| err(format!("metadata field 'vocab': {e}")))?;
    check_vocab(&model, vocab.as_deref()).map_err(&err)?;
    let optim_meta: Option<OptimMeta> = meta
        .get("optimizer")
        .map(|s| serde_json::from_str(s))
        .transpose()
        .map_err(|e| err(format!("metadata field 'optimizer': {e}")))?;
    let train_state: Option<serde_json::Value> = meta
        .get("train_state")
        .map(|s| serde_json::from_str(s))
        .transpose()
        .map_err(|e| err(format!("metadata field 'train_state': {e}")))?;

    // Every expected tensor is read exactly once; whatever is left over is an error.
    let mut expected: BTreeSet<String> = BTreeSet::new();
    let mut read = |prefix: &str, int8: bool| -> crate::Result<Vec<f32>> {
        let mut out = vec![0.0f32; layout.total];
        for (i, e) in layout.entries.iter().enumerate() {
            let name = format!("{prefix}{}", e.name);
            // a second name of a tensor already read (tied weights): the file must hold the
            // same values under both
            let first = layout.is_alias(i).then(|| out[e.range()].to_vec());
            let tied = |now: &[f32]| -> crate::Result<()> {
                match &first {
                    Some(f) if f.iter().zip(now).any(|(a, b)| a.to_bits() != b.to_bits()) => {
                        Err(err(format!(
                            "tensor '{name}' differs from the tensor it is tied to in this model"
                        )))
                    }
                    _ => Ok(()),
                }
            };
            let t = st
                .tensor(&name)
                .map_err(|_| err(format!("tensor '{name}' is missing")))?;
            if int8 && e.shape.len() == 2 {
                let scale = format!("{name}.scale");
                let s = st
                    .tensor(&scale)
                    .map_err(|_| err(format!("tensor '{scale}' is missing")))?;
                if t.dtype() != Dtype::I8 || s.dtype() != Dtype::F32 {
                    return Err(err(format!(
                        "tensors '{name}' and '{scale}' have dtypes {} and {}, expected I8 and F32",
                        t.dtype(),
                        s.dtype()
                    )));
                }
                if t.shape() != e.shape.as_slice() || s.shape() != [e.shape[0]] {
                    return Err(err(format!(
                        "tensors '{name}' and '{scale}' have shapes {:?} and {:?}, expected {:?} and {:?}",
                        t.shape(),
                        s.shape(),
                        e.shape,
                        [e.shape[0]]
                    )));
                }
                let cols = e.shape[1];
                let scales: Vec<f32> = s
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                for (i, (o, &c)) in out[e.range()].iter_mut().zip(t.data()).enumerate() {
                    *o = scales[i / cols] * (c as i8) as f32;
                }
                check_finite(&scale, &scales).map_err(&err)?;
                tied(&out[e.range()])?;
                expected.insert(name);
                expected.insert(scale);
                continue;
            }
            if t.dtype() != Dtype::F32 {
                return Err(err(format!(
                    "tensor '{name}' has dtype {}, expected F32",
                    t.dtype()
                )));
            }
            if t.shape() != e.shape.as_slice() {
                return Err(err(format!(
                    "tensor '{name}' has shape {:?}, expected {:?}",
                    t.shape(),
                    e.shape
                )));
            }
            for (o, c) in out[e.range()].iter_mut().zip(t.data().chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            check_finite(&name, &out[e.range()]).map_err(&err)?;
            tied(&out[e.range()])?;
            expected.insert(name);
        }
        Ok(out)
    };
    let params = read("", precision == crate::Precision::Int8)?;
    let optimizer = match optim_meta {
        None => None,
        Some(om) => {
            if precision != crate::Precision::F32 {
                return Err(err("an int8 checkpoint with optimizer metadata".to_string()));
            }
            let mm = read("optim.m.", false)?;
            let vv = if adam(&om.kind) {
                read("optim.v.", false)?
            } else {
                Vec::new()
            };
            Some(Optimizer {
                kind: om.kind,
                lr: om.lr,
                step: om.step,
                m: mm,
                v: vv,
            })
        }
    };
    let has_ema = st.names().iter().any(|n| n.starts_with(EMA_PREFIX));
    let ema = if has_ema && precision == crate::Precision::F32 {
        Some(read(EMA_PREFIX, false)?)
    } else {
        None
    };
    let mut names: Vec<&str> = st.names();
    names.sort_unstable();
    if let Some(extra) = names.iter().find(|n| !expected.contains(**n)) {
        let why = if extra.starts_with(OPTIM_PREFIX) && optimizer.is_none() {
            " (optimizer tensors without 'optimizer' metadata)"
        } else {
            ""
        };
        return Err(err(format!(
            "unexpected tensor '{extra}' not in the model's layout{why}"
        )));
    }
    Ok(Checkpoint {
        model,
        params,
        vocab,
        optimizer,
        ema,
        train_state,
        precision,
    })
}

/// A tensor read from a file holds only finite numbers: a NaN or infinite weight (a diverged
/// run saved, a damaged file) would otherwise load and then produce nothing but NaN.
fn check_finite(name: &str, values: &[f32]) -> Result<(), String> {
    let Some(first) = values.iter().position(|v| !v.is_finite()) else {
        return Ok(());
    };
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    Err(format!(
        "tensor '{name}' holds {bad} non-finite value(s) of {} (the first, {}, at index {first})",
        values.len(),
        values[first]
    ))
}

fn to_json<T: Serialize>(v: &T) -> Result<String, String> {
    serde_json::to_string(v).map_err(|e| format!("JSON encoding: {e}"))
}
