//! recur-study: tools for studying recurrent networks and the machine they run on, over recur's core:
//!
//! - [`lecture`]: the seed lecture's "hello" example, number for number;
//! - [`gradcheck`]: central finite differences in f64 against the analytic gradients;
//! - [`gradflow`]: how the gradient of a loss at the last step reaches each earlier step;
//! - [`peak`]: the machine's float32 FMA ceiling, to judge the kernels against;
//! - [`ceilings`]: the ceilings of every number format (float32 FMA, bf16 and int8 dot products,
//!   AMX tiles), or what the CPU lacks for each.

pub mod ceilings;
pub mod gradcheck;
pub mod gradflow;
pub mod lecture;
pub mod peak;
