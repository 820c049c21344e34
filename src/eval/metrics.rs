//! Metric computations, unit-tested against hand-computed cases.
