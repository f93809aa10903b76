//! One module per command: its options (a clap `Args` struct with examples in its help)
//! and its `run`, which returns the exit code or a [`Failure`](crate::exit::Failure).

pub(crate) mod dlq;
pub(crate) mod doctor;
pub(crate) mod publish;
pub(crate) mod stats;
pub(crate) mod tail;
