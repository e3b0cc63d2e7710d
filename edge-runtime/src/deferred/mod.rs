//! Deferred work with a deadline: the persisted queue of jobs that `thermo train --when auto`
//! and `thermo index add --when auto` submit ([`queue`]), the board's heat model that turns
//! an hour's ambient into the steps it holds, their energy and their wear ([`rate`]), and the
//! decision the agent takes for a job at a given time ([`decide`]): start it, pause it, let
//! it run or let it wait; [`grid`] reads the grid intensity a broker sends, a device's own
//! topic over its region's. Everything here takes the time as an argument; the agent (`thermo
//! agent`) owns the clock, the child processes and the signals. It must not import the
//! session, the service or anything that loads a model.

pub mod decide;
pub mod grid;
pub mod queue;
pub mod rate;

pub use decide::{Action, Tick, decide, ended, plan_job};
pub use queue::{Decision, Job, JobKind, JobState, Queue, QueueError};
pub use rate::HeatModel;
