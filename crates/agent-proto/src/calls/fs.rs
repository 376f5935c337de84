//! The filesystem methods' params and results.
