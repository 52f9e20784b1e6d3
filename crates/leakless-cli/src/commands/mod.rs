pub mod build;
pub mod check;
pub mod demo;
pub mod generate;
