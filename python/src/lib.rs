//! `recur._recur`: the Python extension module. Python's `recur` package (python/recur/) wraps it:
//! `recur.Stack` (forward and BPTT on numpy arrays), `recur.torch` (torch.nn-compatible modules
//! built on it) and `recur.CharModel` (a character model loaded from a recur checkpoint).
//!
//! Every call checks its arguments before any work and raises a Python exception naming the
//! problem; the numbers are computed with the GIL released.

use pyo3::exceptions::{PyMemoryError, PyOSError, PyValueError};
use pyo3::prelude::*;

mod charmodel;
mod stack;

/// A recur error as the Python exception a caller expects: `MemoryError` for a plan too big for
/// the machine, `OSError` for a file, `ValueError` for everything else (a shape, a setting, a
/// checkpoint that does not fit).
pub(crate) fn to_py(e: recur::Error) -> PyErr {
    match e {
        recur::Error::OutOfMemory { .. } => PyMemoryError::new_err(e.to_string()),
        recur::Error::Io { .. } => PyOSError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// Sets the number of threads recur's products and cells run on (as `torch.set_num_threads`);
/// at least 1.
#[pyfunction]
fn set_num_threads(n: usize) {
    recur::set_threads(n);
}

/// The number of threads recur runs on (all the cores this process may use unless set).
#[pyfunction]
fn get_num_threads() -> usize {
    recur::threads()
}

#[pymodule]
fn _recur(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<stack::PyStack>()?;
    m.add_class::<stack::Run>()?;
    m.add_class::<charmodel::CharModel>()?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    Ok(())
}
