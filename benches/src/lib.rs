//! Benchmarks live in `benches/`; the tools of the benchmarks that need a running `sluice`
//! live here: [`xds_load`] (the xDS push benchmark, binary `xds-load`).

pub mod xds_load;
