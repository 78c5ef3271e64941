//! Data-parallel runs over MPI: `mpirun -np N recur train ...` (built with the `mpi` feature)
//! trains one model on N ranks through the training loop's seam (`recur::collective`). This
//! module starts MPI when an MPI launcher started the process, gives the loop its sums
//! (`MPI_Allreduce`) and ends the whole job when one rank fails. Without the feature, a run under
//! a launcher with several ranks is refused, rather than N copies of one run writing the same
//! files.

#[cfg(feature = "mpi")]
use anyhow::anyhow;
use anyhow::Result;

/// The ranks of this job, when it is data-parallel.
pub struct Ranks {
    #[cfg(feature = "mpi")]
    universe: mpi::environment::Universe,
    rank: usize,
    size: usize,
    // seconds spent in the gradients' sums, and their count
    reduced: std::rc::Rc<std::cell::Cell<(f64, u64)>>,
}

/// The number of ranks an MPI launcher (Open MPI, MPICH, Slurm's PMI) says it started, if any.
fn launched_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// Runs a command as this process's part of the job: `f` gets the job's ranks when an MPI
/// launcher started several (one data-parallel run), and a failure on any rank ends the whole
/// job with its one line.
pub fn run<T>(f: impl FnOnce(Option<&Ranks>) -> Result<T>) -> Result<T> {
    let ranks = Ranks::start()?;
    let result = f(ranks.as_ref());
    if let (Err(e), Some(r)) = (&result, &ranks) {
        r.fail(e);
    }
    result
}

/// Whether this process is rank 0 of the job (or the only process): it alone prints, logs,
/// plots and writes checkpoints.
pub fn root(ranks: Option<&Ranks>) -> bool {
    ranks.is_none_or(|r| r.rank() == 0)
}

/// The lock of a run's directory, held by rank 0 alone (the one process that writes there)
/// until the run ends: a second run on the directory is refused.
pub fn lock_run_dir(
    ranks: Option<&Ranks>,
    dir: &std::path::Path,
) -> Result<Option<recur::rundir::RunLock>> {
    Ok(match root(ranks) {
        true => Some(recur::rundir::RunLock::acquire(dir)?),
        false => None,
    })
}

impl Ranks {
    /// The job's ranks when an MPI launcher started more than one; `None` for a plain run.
    pub fn start() -> Result<Option<Ranks>> {
        let Some(n) = launched_size().filter(|&n| n > 1) else {
            return Ok(None);
        };
        Self::init(n)
    }

    #[cfg(feature = "mpi")]
    fn init(_n: usize) -> Result<Option<Ranks>> {
        use mpi::traits::Communicator;
        let universe = mpi::initialize().ok_or_else(|| anyhow!("MPI was already started"))?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        if size < 2 {
            return Ok(None);
        }
        Ok(Some(Ranks {
            universe,
            rank,
            size,
            reduced: Default::default(),
        }))
    }

    #[cfg(not(feature = "mpi"))]
    fn init(n: usize) -> Result<Option<Ranks>> {
        anyhow::bail!(
            "started as one of {n} MPI ranks, but this recur was built without MPI (build it \
             with `cargo build --release -p recur-cli --features mpi`)"
        )
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The training loop's sums over the ranks.
    pub fn collective(&self) -> Box<dyn recur::collective::Collective> {
        #[cfg(feature = "mpi")]
        {
            Box::new(Mpi {
                world: self.universe.world(),
                rank: self.rank,
                size: self.size,
                reduced: self.reduced.clone(),
            })
        }
        #[cfg(not(feature = "mpi"))]
        unreachable!("ranks exist only with the mpi feature")
    }

    /// The gradients' sums so far: their count and mean seconds on this rank (time waiting for
    /// the slowest rank included).
    pub fn reduced(&self) -> (u64, f64) {
        let (secs, n) = self.reduced.get();
        (n, secs / n.max(1) as f64)
    }

    /// Ends the whole job after `err` on this rank: its one line, naming the rank, then
    /// `MPI_Abort` (the other ranks may be waiting in a sum that this one will never join).
    pub fn fail(&self, err: &anyhow::Error) -> ! {
        say!("recur: error: rank {} of {}: {err:#}", self.rank, self.size);
        #[cfg(feature = "mpi")]
        {
            use mpi::traits::Communicator;
            self.universe.world().abort(2)
        }
        #[cfg(not(feature = "mpi"))]
        std::process::exit(2)
    }
}

/// Writes `line` and its newline to stderr in one write. `eprintln!` writes its pieces one by one
/// (stderr is unbuffered), and mpirun interleaves the ranks' output at the writes' boundaries: a
/// rank's line could land in the middle of another's. Every line the CLI writes to stderr goes
/// through here (or [`say!`], its `eprintln!`).
pub fn say_line(line: &str) {
    let _ = std::io::Write::write_all(
        &mut std::io::stderr().lock(),
        format!("{line}\n").as_bytes(),
    );
}

/// `eprintln!` written in one piece: [`say_line`] of the formatted line.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::ranks::say_line(&format!($($arg)*))
    };
}
pub(crate) use say;

/// `MPI_Allreduce` with `MPI_SUM` over the world communicator.
#[cfg(feature = "mpi")]
struct Mpi {
    world: mpi::topology::SimpleCommunicator,
    rank: usize,
    size: usize,
    reduced: std::rc::Rc<std::cell::Cell<(f64, u64)>>,
}

#[cfg(feature = "mpi")]
impl recur::collective::Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn sum_f32(&self, buf: &mut [f32]) -> recur::Result<()> {
        use mpi::collective::{CommunicatorCollectives, SystemOperation};
        let start = std::time::Instant::now();
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        let (secs, n) = self.reduced.get();
        self.reduced
            .set((secs + start.elapsed().as_secs_f64(), n + 1));
        Ok(())
    }
    fn sum_f64(&self, buf: &mut [f64]) -> recur::Result<()> {
        use mpi::collective::{CommunicatorCollectives, SystemOperation};
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }
}
