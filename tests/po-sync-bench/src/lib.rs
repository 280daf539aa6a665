//! What po-sync's benchmarks and bench tools share: the three hot paths as plain functions and a seeded Komet
//! PO generator.

pub mod hot_paths;
pub mod po_generator;
