//! The loaded functions of `model.cu` (embedding, decoder bias, last-step gather, losses,
//! reductions, clipping, optimizers); compiled with the stack's kernels in [`crate::kernels`].

use cudarc::driver::{CudaFunction, CudaModule, DriverError};
use std::sync::Arc;

pub(crate) struct ModelKernels {
    pub embed_gather: CudaFunction,
    pub embed_scatter: CudaFunction,
    pub add_row_bias: CudaFunction,
    pub gather_last: CudaFunction,
    pub scatter_last: CudaFunction,
    pub xent_rows: CudaFunction,
    pub mse_elems: CudaFunction,
    pub sum_rows: CudaFunction,
    pub sumsq_partial: CudaFunction,
    pub sum_partials: CudaFunction,
    pub scale_by: CudaFunction,
    pub clamp_value: CudaFunction,
    pub sgd_plain: CudaFunction,
    pub sgd_momentum: CudaFunction,
    pub adagrad: CudaFunction,
    pub rmsprop: CudaFunction,
    pub adam: CudaFunction,
}

impl ModelKernels {
    pub fn load(m: &Arc<CudaModule>) -> Result<ModelKernels, DriverError> {
        let f = |n: &str| m.load_function(n);
        Ok(ModelKernels {
            embed_gather: f("embed_gather")?,
            embed_scatter: f("embed_scatter")?,
            add_row_bias: f("add_row_bias")?,
            gather_last: f("gather_last")?,
            scatter_last: f("scatter_last")?,
            xent_rows: f("xent_rows")?,
            mse_elems: f("mse_elems")?,
            sum_rows: f("sum_rows")?,
            sumsq_partial: f("sumsq_partial")?,
            sum_partials: f("sum_partials")?,
            scale_by: f("scale_by")?,
            clamp_value: f("clamp_value")?,
            sgd_plain: f("sgd_plain")?,
            sgd_momentum: f("sgd_momentum")?,
            adagrad: f("adagrad")?,
            rmsprop: f("rmsprop")?,
            adam: f("adam")?,
        })
    }
}
