pub mod build;
pub mod demo;
pub mod generate;
