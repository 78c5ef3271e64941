//! Character-level language models: a text corpus cut into B streams x T steps, the training
//! loop with budgets, evaluation, checkpoints and resume, and sampling text one character at a
//! time.

pub mod data;
pub mod sample;
pub mod train;
