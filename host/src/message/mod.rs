//! What happens to one envelope, as pure code (no I/O): the wire format ([`envelope`]), what a
//! handler call produced ([`outcome`]), where the envelope goes next ([`routing`]), the status
//! transitions every path shares ([`status`]), compiled-flow fan-out, fan-in and try/except
//! ([`flow`]), retry policies ([`resiliency`]), and the events a gateway task's hops report
//! ([`task_event`]).
//!
//! Dependencies point down: `routing` -> `flow` -> `status` -> `envelope`, `outcome`.

pub mod envelope;
pub mod flow;
pub mod outcome;
pub mod resiliency;
pub mod routing;
pub mod status;
pub mod task_event;
