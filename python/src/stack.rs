//! `recur.Stack`: a recurrent stack's forward and backward on numpy arrays, float32 or float64.
//!
//! Arrays are read in place when C-contiguous (no copy); the weights are copied once per forward
//! into recur's flat buffer, which the [`Run`] keeps for its backward.

use numpy::{
    Element, PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use recur::cell::{CellKind, LayerInput};
use recur::ops::Float;
use recur::rng::Rng;
use recur::stack::{check_lengths, DropoutMode, SeqShape, Stack, StackConfig, StackWorkspace};
use std::sync::{Arc, Mutex};

use crate::to_py;

/// A stack of recurrent layers x directions (torch.nn.LSTM / GRU / RNN's arguments); holds no
/// numbers: the weights are given to each forward.
#[pyclass(module = "recur._recur", name = "Stack", frozen)]
pub struct PyStack {
    stack: Stack,
    pool: Pool,
}

/// The dtype of a float array: float32 or float64, else a `TypeError` naming `what`.
fn dtype_of(a: &Bound<'_, PyAny>, what: &str) -> PyResult<Dtype> {
    if a.cast::<PyArrayDyn<f32>>().is_ok() {
        Ok(Dtype::F32)
    } else if a.cast::<PyArrayDyn<f64>>().is_ok() {
        Ok(Dtype::F64)
    } else if let Ok(u) = a.cast::<numpy::PyUntypedArray>() {
        Err(PyTypeError::new_err(format!(
            "{what} has dtype {}; recur computes in float32 or float64",
            u.dtype()
        )))
    } else {
        Err(PyTypeError::new_err(format!(
            "{what} must be a numpy array, got {}",
            a.get_type().name()?
        )))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dtype {
    F32,
    F64,
}

/// `a` as a read-only array of `F`, C-contiguous, with `shape`; a `ValueError`/`TypeError`
/// naming `what` otherwise.
fn array<'py, F: Float + Element>(
    a: &Bound<'py, PyAny>,
    what: &str,
    shape: &[usize],
) -> PyResult<PyReadonlyArrayDyn<'py, F>> {
    let arr = a.cast::<PyArrayDyn<F>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a {} array like the input",
            std::any::type_name::<F>()
                .replace("f32", "float32")
                .replace("f64", "float64")
        ))
    })?;
    if arr.shape() != shape {
        return Err(PyValueError::new_err(format!(
            "{what} has shape {:?}, {shape:?} expected",
            arr.shape()
        )));
    }
    if !arr.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{what} must be C-contiguous (call .contiguous() or numpy.ascontiguousarray first)"
        )));
    }
    arr.try_readonly()
        .map_err(|_| PyValueError::new_err(format!("{what} is being written elsewhere")))
}

/// A new numpy array of `shape` that owns `v` (no copy).
fn owned<'py, F: Float + Element>(
    py: Python<'py>,
    v: Vec<F>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyArray1::from_vec(py, v).reshape(shape)?.into_any())
}

/// A forward's workspace and its copy of the weights: kept by a [`Run`] for its backward, then
/// handed back to the stack's pool for the next forward of the same shape (a fresh workspace
/// costs page faults and zeroing on every call).
enum Saved {
    F32(StackWorkspace<f32>, Vec<f32>),
    F64(StackWorkspace<f64>, Vec<f64>),
}

/// The element types recur computes in from Python: float32 and float64.
trait Elem: Float + Element {
    fn wrap(ws: StackWorkspace<Self>, params: Vec<Self>) -> Saved;
    fn unwrap(s: Saved) -> Option<(StackWorkspace<Self>, Vec<Self>)>;
    /// The shape of a saved workspace of this type (None for the other type).
    fn peek(s: &Saved) -> Option<SeqShape>;
}

impl Elem for f32 {
    fn wrap(ws: StackWorkspace<f32>, params: Vec<f32>) -> Saved {
        Saved::F32(ws, params)
    }
    fn unwrap(s: Saved) -> Option<(StackWorkspace<f32>, Vec<f32>)> {
        match s {
            Saved::F32(w, p) => Some((w, p)),
            _ => None,
        }
    }
    fn peek(s: &Saved) -> Option<SeqShape> {
        match s {
            Saved::F32(w, _) => Some(w.shape),
            _ => None,
        }
    }
}

impl Elem for f64 {
    fn wrap(ws: StackWorkspace<f64>, params: Vec<f64>) -> Saved {
        Saved::F64(ws, params)
    }
    fn unwrap(s: Saved) -> Option<(StackWorkspace<f64>, Vec<f64>)> {
        match s {
            Saved::F64(w, p) => Some((w, p)),
            _ => None,
        }
    }
    fn peek(s: &Saved) -> Option<SeqShape> {
        match s {
            Saved::F64(w, _) => Some(w.shape),
            _ => None,
        }
    }
}

/// Workspaces no forward holds now, for reuse; at most [`POOL_MAX`], the most recent first out.
type Pool = Arc<Mutex<Vec<Saved>>>;
const POOL_MAX: usize = 2;

/// A workspace for (t, b) in `F` from the pool, or a new one (its memory checked first).
fn take<F: Elem>(
    stack: &Stack,
    pool: &Pool,
    t: usize,
    b: usize,
) -> PyResult<(StackWorkspace<F>, Vec<F>)> {
    {
        let mut p = pool.lock().unwrap_or_else(|e| e.into_inner());
        let want = Some(SeqShape { t, b });
        if let Some(k) = p.iter().rposition(|s| F::peek(s) == want) {
            if let Some(got) = F::unwrap(p.remove(k)) {
                return Ok(got);
            }
        }
    }
    recur::memory::check(
        &format!("a workspace for batches of {b} x {t} steps"),
        recur::memory::stack_workspace_bytes(stack.cfg(), t, b, std::mem::size_of::<F>()),
    )
    .map_err(to_py)?;
    Ok((stack.workspace::<F>(t, b), Vec::new()))
}

fn give_back(pool: &Pool, s: Saved) {
    let mut p = pool.lock().unwrap_or_else(|e| e.into_inner());
    if p.len() >= POOL_MAX {
        p.remove(0);
    }
    p.push(s);
}

/// One forward's memory of itself (its workspace and weights), for [`Run::backward`]: what
/// `recur.Stack.forward(..., keep=True)` returns beside the outputs.
#[pyclass(module = "recur._recur", name = "Run")]
pub struct Run {
    stack: Stack,
    saved: Option<Saved>,
    pool: Pool,
    lengths: Option<Vec<usize>>,
    t: usize,
    b: usize,
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(s) = self.saved.take() {
            give_back(&self.pool, s);
        }
    }
}

fn parse_cell(cell: &str, nonlinearity: &str) -> PyResult<CellKind> {
    let name = match (cell, nonlinearity) {
        ("rnn", "tanh") => "rnn_tanh",
        ("rnn", "relu") => "rnn_relu",
        ("rnn", other) => {
            return Err(PyValueError::new_err(format!(
                "unknown nonlinearity '{other}' (tanh or relu)"
            )))
        }
        (c, _) => c,
    };
    CellKind::parse(name).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown cell '{cell}' (lstm, gru, rnn, rnn_tanh or rnn_relu)"
        ))
    })
}

#[pymethods]
impl PyStack {
    #[new]
    #[pyo3(signature = (cell, input_size, hidden_size, num_layers=1, bias=true, bidirectional=false, proj_size=0, dropout=0.0, nonlinearity="tanh", weight_drop=0.0, dropout_output=0.0, dropout_mode="step", dropout_input=0.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        cell: &str,
        input_size: usize,
        hidden_size: usize,
        num_layers: usize,
        bias: bool,
        bidirectional: bool,
        proj_size: usize,
        dropout: f64,
        nonlinearity: &str,
        weight_drop: f64,
        dropout_output: f64,
        dropout_mode: &str,
        dropout_input: f64,
    ) -> PyResult<Self> {
        let mode = match dropout_mode {
            "step" => DropoutMode::Step,
            "locked" => DropoutMode::Locked,
            other => {
                return Err(PyValueError::new_err(format!(
                    "dropout_mode must be 'step' or 'locked', got '{other}'"
                )))
            }
        };
        let cfg = StackConfig::new(parse_cell(cell, nonlinearity)?, input_size, hidden_size)
            .with_layers(num_layers)
            .with_bias(bias)
            .with_bidirectional(bidirectional)
            .with_proj_size(proj_size)
            .with_dropout(dropout)
            .with_weight_drop(weight_drop)
            .with_dropout_output(dropout_output)
            .with_dropout_input(dropout_input)
            .with_dropout_mode(mode);
        Ok(PyStack {
            stack: Stack::new(cfg).map_err(to_py)?,
            pool: Pool::default(),
        })
    }

    /// The parameters' names in recur's (and PyTorch's) order: `weight_ih_l0`, ...
    #[getter]
    fn param_names(&self) -> Vec<String> {
        let l = self.stack.layout();
        l.entries.iter().map(|e| e.name.clone()).collect()
    }

    /// The parameters' shapes, in the same order.
    #[getter]
    fn param_shapes(&self) -> Vec<Vec<usize>> {
        let l = self.stack.layout();
        l.entries.iter().map(|e| e.shape.clone()).collect()
    }

    /// The number of parameters in all.
    #[getter]
    fn num_params(&self) -> usize {
        self.stack.num_params()
    }

    /// Features of each output step: D * P.
    #[getter]
    fn output_size(&self) -> usize {
        self.stack.cfg().output_size()
    }

    /// (L*D, P) and (L*D, H): the state's leading dimension and widths (h, c).
    #[getter]
    fn state_sizes(&self) -> (usize, usize, usize) {
        let c = self.stack.cfg();
        (c.num_layers * c.dirs(), c.out_size(), c.hidden_size)
    }

    /// The cell's name: rnn_tanh, rnn_relu, lstm or gru.
    #[getter]
    fn cell(&self) -> &'static str {
        self.stack.kind().name()
    }

    /// Weights drawn as PyTorch draws them (U(-1/sqrt(H), 1/sqrt(H))) from recur's generator
    /// seeded with `seed`, one float32 (or float64) array per parameter.
    #[pyo3(signature = (seed=0, dtype="float32"))]
    fn init<'py>(&self, py: Python<'py>, seed: u64, dtype: &str) -> PyResult<Bound<'py, PyList>> {
        let mut p = vec![0.0f64; self.stack.num_params()];
        self.stack.init(&mut p, &mut Rng::new(seed));
        let layout = self.stack.layout();
        let out = PyList::empty(py);
        for e in &layout.entries {
            let v = &p[e.range()];
            match dtype {
                "float32" => {
                    out.append(owned(py, v.iter().map(|&x| x as f32).collect(), &e.shape)?)?
                }
                "float64" => out.append(owned(py, v.to_vec(), &e.shape)?)?,
                other => {
                    return Err(PyTypeError::new_err(format!(
                        "dtype '{other}': recur computes in float32 or float64"
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Forward of `x` (T, B, I) from `h0` (L*D, B, P) and `c0` (L*D, B, H; LSTM) (zeros when
    /// None), with `weights` a list of arrays in `param_names` order (or one flat array) of x's
    /// dtype; `lengths` (B) the sequences' lengths (all T when None); `dropout_seed`: training
    /// mode, the dropout, output-dropout and weight-drop masks drawn from that seed. Returns (y (T, B, D*P), h_n, c_n or
    /// None, run or None): with `keep`, the run whose `backward` gives the gradients.
    #[pyo3(signature = (weights, x, h0=None, c0=None, lengths=None, dropout_seed=None, keep=true))]
    fn forward<'py>(
        &self,
        py: Python<'py>,
        weights: &Bound<'py, PyAny>,
        x: &Bound<'py, PyAny>,
        h0: Option<&Bound<'py, PyAny>>,
        c0: Option<&Bound<'py, PyAny>>,
        lengths: Option<Vec<usize>>,
        dropout_seed: Option<u64>,
        keep: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        match dtype_of(x, "x")? {
            Dtype::F32 => forward::<f32>(self, py, weights, x, h0, c0, lengths, dropout_seed, keep),
            Dtype::F64 => forward::<f64>(self, py, weights, x, h0, c0, lengths, dropout_seed, keep),
        }
    }

    fn __repr__(&self) -> String {
        let c = self.stack.cfg();
        format!(
            "Stack(cell='{}', input_size={}, hidden_size={}, num_layers={}, bias={}, bidirectional={}, proj_size={}, dropout={}, weight_drop={}, dropout_output={}, dropout_input={}, dropout_mode='{}')",
            c.cell.name(),
            c.input_size,
            c.hidden_size,
            c.num_layers,
            if c.bias { "True" } else { "False" },
            if c.bidirectional { "True" } else { "False" },
            c.proj_size,
            c.dropout,
            c.weight_drop,
            c.dropout_output,
            c.dropout_input,
            c.dropout_mode.name()
        )
    }
}

/// The weights as one flat buffer in layout order: from a list of arrays (each checked against
/// its parameter's shape) or one flat array.
fn flat_weights<F: Float + Element>(
    stack: &Stack,
    weights: &Bound<'_, PyAny>,
    flat: &mut Vec<F>,
) -> PyResult<()> {
    let layout = stack.layout();
    flat.clear();
    if weights.cast::<numpy::PyUntypedArray>().is_ok() {
        let a = array::<F>(weights, "weights", &[layout.total])?;
        flat.extend_from_slice(a.as_slice()?);
        return Ok(());
    }
    let list: Vec<Bound<'_, PyAny>> = weights.extract().map_err(|_| {
        PyTypeError::new_err(
            "weights must be a list of arrays (one per parameter) or one flat array",
        )
    })?;
    if list.len() != layout.entries.len() {
        return Err(PyValueError::new_err(format!(
            "{} weights given, the stack has {} parameters ({})",
            list.len(),
            layout.entries.len(),
            layout
                .entries
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    for (w, e) in list.iter().zip(&layout.entries) {
        let a = array::<F>(w, &e.name, &e.shape)?;
        flat.extend_from_slice(a.as_slice()?);
    }
    Ok(())
}

fn forward<'py, F: Elem>(
    s: &PyStack,
    py: Python<'py>,
    weights: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    h0: Option<&Bound<'py, PyAny>>,
    c0: Option<&Bound<'py, PyAny>>,
    lengths: Option<Vec<usize>>,
    dropout_seed: Option<u64>,
    keep: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let stack = &s.stack;
    let cfg = stack.cfg();
    let xs = x.cast::<numpy::PyUntypedArray>()?.shape().to_vec();
    let &[t, b, i] = xs.as_slice() else {
        return Err(PyValueError::new_err(format!(
            "x must be (T, B, I), got shape {xs:?}"
        )));
    };
    if i != cfg.input_size {
        return Err(PyValueError::new_err(format!(
            "x has {i} features per step, the stack reads {}",
            cfg.input_size
        )));
    }
    if t == 0 || b == 0 {
        return Err(PyValueError::new_err(format!(
            "x must hold at least one step and one sequence, got shape {xs:?}"
        )));
    }
    let x = array::<F>(x, "x", &xs)?;
    let (ld, p, h) = (cfg.num_layers * cfg.dirs(), cfg.out_size(), cfg.hidden_size);
    let lstm = stack.kind() == CellKind::Lstm;
    let h0 = h0.map(|a| array::<F>(a, "h0", &[ld, b, p])).transpose()?;
    let c0 = match (c0, lstm) {
        (Some(a), true) => Some(array::<F>(a, "c0", &[ld, b, h])?),
        (Some(_), false) => {
            return Err(PyValueError::new_err(
                "c0 is given, but only an LSTM has a cell state",
            ))
        }
        (None, _) => None,
    };
    check_lengths(lengths.as_deref(), t, b).map_err(to_py)?;
    let (mut ws, mut params) = take::<F>(stack, &s.pool, t, b)?;
    if let Err(e) = flat_weights::<F>(stack, weights, &mut params) {
        give_back(&s.pool, F::wrap(ws, params));
        return Err(e);
    }
    ws.set_inference(!keep);
    let xv = x.as_slice()?;
    let h0v = h0.as_ref().map(|a| a.as_slice()).transpose()?;
    let c0v = c0.as_ref().map(|a| a.as_slice()).transpose()?;
    let mut rng = dropout_seed.map(Rng::new);
    py.detach(|| {
        stack.forward(
            &mut ws,
            &params,
            LayerInput::Dense { x: xv, ld: i },
            h0v,
            c0v,
            lengths.as_deref(),
            rng.as_mut(),
        )
    });
    let o = cfg.output_size();
    let y = owned(py, ws.output().to_vec(), &[t, b, o])?;
    let h_n = owned(py, ws.h_n.clone(), &[ld, b, p])?;
    let c_n = if lstm {
        owned(py, ws.c_n.clone(), &[ld, b, h])?
    } else {
        py.None().into_bound(py)
    };
    let run = if keep {
        let run = Run {
            stack: stack.clone(),
            saved: Some(F::wrap(ws, params)),
            pool: s.pool.clone(),
            lengths,
            t,
            b,
        };
        Bound::new(py, run)?.into_any()
    } else {
        give_back(&s.pool, F::wrap(ws, params));
        py.None().into_bound(py)
    };
    Ok((y, h_n, c_n, run).into_pyobject(py)?.into_any())
}

#[pymethods]
impl Run {
    /// BPTT of the forward that made this run: `x` is that forward's input (read again, not
    /// kept), `dy` (T, B, D*P), `dh_n`, `dc_n` the gradients of the outputs and final states
    /// (zeros when None). Returns (dx or None, dh0, dc0 or None, the weights' gradients as one
    /// flat array in `param_names` order). `want_dx=False` skips the input's gradient.
    #[pyo3(signature = (x, dy=None, dh_n=None, dc_n=None, want_dx=true))]
    fn backward<'py>(
        &mut self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        dy: Option<&Bound<'py, PyAny>>,
        dh_n: Option<&Bound<'py, PyAny>>,
        dc_n: Option<&Bound<'py, PyAny>>,
        want_dx: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.saved.as_mut().expect("held until the run is dropped") {
            Saved::F32(ws, params) => backward::<f32>(
                py,
                &self.stack,
                ws,
                params,
                self.lengths.as_deref(),
                self.t,
                self.b,
                x,
                dy,
                dh_n,
                dc_n,
                want_dx,
            ),
            Saved::F64(ws, params) => backward::<f64>(
                py,
                &self.stack,
                ws,
                params,
                self.lengths.as_deref(),
                self.t,
                self.b,
                x,
                dy,
                dh_n,
                dc_n,
                want_dx,
            ),
        }
    }
}

fn backward<'py, F: Float + Element>(
    py: Python<'py>,
    stack: &Stack,
    ws: &mut StackWorkspace<F>,
    params: &[F],
    lengths: Option<&[usize]>,
    t: usize,
    b: usize,
    x: &Bound<'py, PyAny>,
    dy: Option<&Bound<'py, PyAny>>,
    dh_n: Option<&Bound<'py, PyAny>>,
    dc_n: Option<&Bound<'py, PyAny>>,
    want_dx: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let cfg = stack.cfg();
    let (i, o) = (cfg.input_size, cfg.output_size());
    let (ld, p, h) = (cfg.num_layers * cfg.dirs(), cfg.out_size(), cfg.hidden_size);
    let lstm = stack.kind() == CellKind::Lstm;
    let x = array::<F>(x, "x", &[t, b, i])?;
    let dy = dy.map(|a| array::<F>(a, "dy", &[t, b, o])).transpose()?;
    let dh_n = dh_n
        .map(|a| array::<F>(a, "dh_n", &[ld, b, p]))
        .transpose()?;
    let dc_n = match (dc_n, lstm) {
        (Some(a), true) => Some(array::<F>(a, "dc_n", &[ld, b, h])?),
        (Some(_), false) => {
            return Err(PyValueError::new_err(
                "dc_n is given, but only an LSTM has a cell state",
            ))
        }
        (None, _) => None,
    };
    let xv = x.as_slice()?;
    let dyv = dy.as_ref().map(|a| a.as_slice()).transpose()?;
    let dhv = dh_n.as_ref().map(|a| a.as_slice()).transpose()?;
    let dcv = dc_n.as_ref().map(|a| a.as_slice()).transpose()?;
    let mut grads = vec![F::ZERO; params.len()];
    let mut dx = want_dx.then(|| vec![F::ZERO; t * b * i]);
    py.detach(|| {
        stack.backward(
            ws,
            params,
            &mut grads,
            LayerInput::Dense { x: xv, ld: i },
            lengths,
            dyv,
            dhv,
            dcv,
            dx.as_deref_mut(),
        )
    });
    let dx = match dx {
        Some(v) => owned(py, v, &[t, b, i])?,
        None => py.None().into_bound(py),
    };
    let dh0 = owned(py, ws.dh0.clone(), &[ld, b, p])?;
    let dc0 = if lstm {
        owned(py, ws.dc0.clone(), &[ld, b, h])?
    } else {
        py.None().into_bound(py)
    };
    let g = owned(py, grads, &[params.len()])?;
    Ok((dx, dh0, dc0, g).into_pyobject(py)?.into_any())
}
