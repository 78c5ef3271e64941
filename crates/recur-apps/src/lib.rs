//! recur-apps: applications built on recur's core. Each uses the core's cells, models, engines and
//! optimizers, and none imports another.
//!
//! - [`charlm`]: character-level language models (corpus, training loop, sampling);
//! - [`tasks`]: synthetic long-memory tasks (adding, copy memory) for comparing the cells;
//! - [`speech`]: spoken-digit recognition (WAV reading, log-mel and MFCC features, classifier).

pub mod charlm;
pub mod speech;
pub mod tasks;
