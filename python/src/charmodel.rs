//! `recur.CharModel`: a character model trained by `recur train`, loaded from its checkpoint;
//! `sample` and `loss` compute what `recur sample` and `recur eval` print, with the same code.

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use recur::checkpoint::{self, Checkpoint};
use recur::engine::{CpuEngine, CpuStepper, Engine, Stepper};
use recur::model::Model;
use recur::rng::Rng;
use recur::Precision;
use recur_apps::charlm::data::Vocab;
use recur_apps::charlm::sample::{draw, SampleOptions};

use crate::to_py;

/// A character model: its network, weights and vocabulary.
#[pyclass(module = "recur._recur", name = "CharModel", frozen)]
pub struct CharModel {
    ckpt: Checkpoint,
    model: Model,
    vocab: Vocab,
    precision: Precision,
    path: String,
}

impl CharModel {
    fn ids(&self, text: &str, what: &str) -> PyResult<Vec<u32>> {
        self.vocab
            .encode(text)
            .map_err(|e| PyValueError::new_err(format!("{what}: {e}")))
    }
}

#[pymethods]
impl CharModel {
    /// Loads `path` (a checkpoint written by `recur train` or `recur quantize`); `precision`
    /// "f32", "bf16" or "int8" runs it in that number format (default: the checkpoint's own,
    /// as the command line does).
    #[new]
    #[pyo3(signature = (path, precision=None))]
    fn new(path: std::path::PathBuf, precision: Option<&str>) -> PyResult<Self> {
        if !path.exists() {
            return Err(PyOSError::new_err(format!(
                "cannot read '{}': no such file",
                path.display()
            )));
        }
        let ckpt = checkpoint::load(&path).map_err(to_py)?;
        let model = Model::new(ckpt.model.clone())
            .map_err(|e| PyValueError::new_err(format!("checkpoint {}: {e}", path.display())))?;
        let chars = ckpt.vocab.clone().ok_or_else(|| {
            PyValueError::new_err(format!(
                "checkpoint {}: no vocabulary (not a character model)",
                path.display()
            ))
        })?;
        let vocab = Vocab::from_chars(chars).map_err(to_py)?;
        let precision = match precision {
            Some(p) => Precision::parse(p).map_err(to_py)?,
            None => ckpt.precision,
        };
        Ok(CharModel {
            ckpt,
            model,
            vocab,
            precision,
            path: path.display().to_string(),
        })
    }

    /// The vocabulary, in id order.
    #[getter]
    fn vocab(&self) -> String {
        self.vocab.chars().iter().collect()
    }

    /// The number format it runs in: "f32", "bf16" or "int8".
    #[getter]
    fn precision(&self) -> &'static str {
        self.precision.name()
    }

    /// The number of parameters.
    #[getter]
    fn num_params(&self) -> usize {
        self.ckpt.weights().len()
    }

    /// `length` characters drawn after running `prime` through the model (the prime itself is
    /// not included), as `recur sample --prime P --length N --temperature T --top-k K --seed S`
    /// prints them after the prime.
    #[pyo3(signature = (prime="\n", length=1000, temperature=0.8, top_k=0, seed=1))]
    fn sample(
        &self,
        py: Python<'_>,
        prime: &str,
        length: usize,
        temperature: f64,
        top_k: usize,
        seed: u64,
    ) -> PyResult<String> {
        if !(temperature > 0.0) || !temperature.is_finite() {
            return Err(PyValueError::new_err(format!(
                "temperature must be a positive number, got {temperature}"
            )));
        }
        if prime.is_empty() {
            return Err(PyValueError::new_err(
                "prime must not be empty (it gives the model its first character)",
            ));
        }
        let prime = self.ids(prime, "prime")?;
        let mut stepper =
            CpuStepper::new(&self.model, self.ckpt.weights(), self.precision).map_err(to_py)?;
        let opts = SampleOptions { temperature, top_k };
        let v = self.model.cfg().output_size;
        py.detach(|| {
            let mut rng = Rng::new(seed);
            let (mut probs, mut order) = (vec![0.0f32; v], Vec::with_capacity(v));
            for &id in &prime {
                stepper.feed(id)?;
            }
            let mut out = String::with_capacity(length);
            for _ in 0..length {
                let id = draw(stepper.logits(), &opts, &mut rng, &mut probs, &mut order);
                out.push(self.vocab.char(id));
                stepper.feed(id)?;
            }
            Ok(out)
        })
        .map_err(to_py)
    }

    /// The mean loss in nats per character over `text` from a zero state (-ln p(c_t | c_0..
    /// c_(t-1)), t = 1..N-1), as `recur eval --chunk C` prints it (`loss_nats`); divide by
    /// ln 2 for bits per character.
    #[pyo3(signature = (text, chunk=256))]
    fn loss(&self, py: Python<'_>, text: &str, chunk: usize) -> PyResult<f64> {
        if chunk == 0 {
            return Err(PyValueError::new_err("chunk must be at least 1"));
        }
        let ids = self.ids(text, "text")?;
        if ids.len() < 2 {
            return Err(PyValueError::new_err(format!(
                "the text has {} character; at least 2 are needed for a loss",
                ids.len()
            )));
        }
        let mut eng = CpuEngine::new(self.model.clone(), self.ckpt.weights().to_vec(), None)
            .map_err(to_py)?;
        eng.set_precision(self.precision).map_err(to_py)?;
        let (sum, count) = py
            .detach(|| eng.stream_loss(&ids, chunk, 1))
            .map_err(to_py)?;
        Ok(sum / count as f64)
    }

    fn __repr__(&self) -> String {
        let s = &self.model.cfg().rnn;
        format!(
            "CharModel('{}': {} {}x{}, vocabulary {}, {} parameters, {})",
            self.path,
            s.cell.name(),
            s.num_layers,
            s.hidden_size,
            self.vocab.len(),
            self.ckpt.weights().len(),
            self.precision.name()
        )
    }
}
