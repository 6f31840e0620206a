//! One module per client command; each has its clap arguments (with an example in its help) and
//! an async `run`.

pub mod bind;
pub mod declare;
pub mod delete;
pub mod get;
pub mod publish;
pub mod purge;
pub mod subscribe;
