//! Load generators and benchmark reports. Each benchmark prints the figures
//! that `docs/benchmarks.md` records, beside a peer measured in the same run.
#![deny(missing_docs)]
