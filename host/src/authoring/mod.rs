//! Tools for grain authors, behind `replica-host plugin new | build | test |
//! fixture`: build a plugin crate into a component with cargo
//! ([`build`]), write a plugin crate ([`scaffold`]), run golden fixtures
//! through a built plugin ([`golden`]), turn a snapshot of the live log
//! into a golden case ([`fixture`]), and try a candidate plugin against a
//! real log, read-only ([`dry_run`]). `crate::json_diff` shows where two states
//! differ.

pub mod build;
pub mod dry_run;
pub mod fixture;
pub mod golden;
pub mod scaffold;
