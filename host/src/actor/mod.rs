//! One actor: its manifest ([`manifest`]) and Secret keys ([`secrets`]), how it is assembled from a manifest and an executor
//! ([`builder`]), its queue loop ([`sidecar`]), and the built-in actors every namespace has: the
//! end actors ([`end_actors`]), the flow fan-in ([`fanin`]) and the human-in-the-loop pause
//! ([`pause`]).

pub mod builder;
pub mod end_actors;
pub mod fanin;
pub mod manifest;
pub mod pause;
pub mod secrets;
pub mod sidecar;
