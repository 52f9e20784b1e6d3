pub mod audit;
pub mod build;
pub mod check;
pub mod demo;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod generate;
pub mod report;
